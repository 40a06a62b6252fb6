//! `cowscope inspect` on subjects with known writes: exact counts from first principles,
//! checked against the kernel's own frames; freezing and resuming; watching; errors.
//!
//! Every subject is forked through `fork::subject::spawn` (a parent subject S maps and
//! touches memory, then forks children running fixed op programs), so `--pid S` has exactly
//! the children the test made.

mod inspect_support;

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cowscope::fork::child::ChildOp;
use inspect_support::*;
use rstest::rstest;
use serde_json::Value;

/// The zero page's frame, from first principles: read-fault a fresh private page of our own
/// and look at our own pagemap.
fn zero_pfn_seen_by_the_test() -> u64 {
    // SAFETY: a fresh private anonymous mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ps(),
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: readable page of our own.
    unsafe { std::ptr::read_volatile(p as *const u8) };
    let e = entries(std::process::id() as i32, p as usize, 1)[0];
    // SAFETY: our mapping.
    unsafe { libc::munmap(p, ps()) };
    pfn(e)
}

/// Layout of the known-writes reservation: guard pages keep every region its own VMA.
struct Layout {
    res: Reservation,
}

impl Layout {
    const R1: usize = 1; // 64 pages, written by S; the child writes pages 0..8
    const R2: usize = 66; // 16 pages: S writes page 0 and reads 1..16 (zero page)
    const R3: usize = 83; // 8 pages, untouched by S; the child writes pages 0..4
    const R4: usize = 92; // 8 pages, unmapped by S; the child maps it and writes 3 pages
    const R5: usize = 101; // 8 pages, written by S; the child unmaps pages 4..8
    const R6: usize = 110; // 4 pages, only read by S: no anon_vma, so fork copies no PTEs
    const PAGES: usize = 115;

    fn new() -> Layout {
        Layout {
            res: Reservation::new(Self::PAGES),
        }
    }
    fn at(&self, region: usize, page: usize) -> usize {
        self.res.page(region + page)
    }
}

fn known_writes_family(l: &Layout, devnull: i32, at_gate: impl FnOnce(i32)) -> Family {
    let mut s = vec![ChildOp::MapAnon {
        addr: l.at(Layout::R1, 0),
        len: 64 * ps(),
    }];
    s.extend(writes(l.at(Layout::R1, 0), 64));
    s.push(ChildOp::MapAnon {
        addr: l.at(Layout::R2, 0),
        len: 16 * ps(),
    });
    s.extend(writes(l.at(Layout::R2, 0), 1));
    s.push(ChildOp::ReadPages {
        addr: l.at(Layout::R2, 1),
        pages: 15,
        page_size: ps(),
    });
    s.push(ChildOp::MapAnon {
        addr: l.at(Layout::R6, 0),
        len: 4 * ps(),
    });
    s.push(ChildOp::ReadPages {
        addr: l.at(Layout::R6, 0),
        pages: 4,
        page_size: ps(),
    });
    s.push(ChildOp::MapAnon {
        addr: l.at(Layout::R3, 0),
        len: 8 * ps(),
    });
    s.push(ChildOp::Munmap {
        addr: l.at(Layout::R4, 0),
        len: 8 * ps(),
        fd: devnull,
    });
    s.push(ChildOp::MapAnon {
        addr: l.at(Layout::R5, 0),
        len: 8 * ps(),
    });
    s.extend(writes(l.at(Layout::R5, 0), 8));
    let mut c = writes(l.at(Layout::R1, 0), 8);
    c.extend(writes(l.at(Layout::R3, 0), 4));
    c.push(ChildOp::MapAnon {
        addr: l.at(Layout::R4, 0),
        len: 8 * ps(),
    });
    c.extend(writes(l.at(Layout::R4, 0), 3));
    c.push(ChildOp::Munmap {
        addr: l.at(Layout::R5, 4),
        len: 4 * ps(),
        fd: devnull,
    });
    Family::spawn(&s, &[c], &[], at_gate)
}

#[test]
fn pages_the_child_wrote_diverge_untouched_stay_shared_and_the_kernels_frames_agree() {
    if !is_root() {
        eprintln!("SKIP: PFNs are hidden without root; the non-root test covers that path");
        return;
    }
    let l = Layout::new();
    let devnull = std::fs::File::options()
        .write(true)
        .open("/dev/null")
        .unwrap();
    let mut baseline = Vec::new();
    let fam = known_writes_family(&l, devnull.as_raw_fd(), |s| {
        baseline = entries(s, l.at(Layout::R1, 0), 64);
    });
    let (s, c) = (fam.parent, fam.children[0]);

    // First principles, from the kernel: the parent kept every frame; the child has a new
    // frame exactly where it wrote; both map the zero page where S only read.
    let p_now = entries(s, l.at(Layout::R1, 0), 64);
    let c_now = entries(c, l.at(Layout::R1, 0), 64);
    for i in 0..64 {
        assert_eq!(
            pfn(p_now[i]),
            pfn(baseline[i]),
            "parent page {i} kept its frame"
        );
        assert_eq!(
            pfn(c_now[i]) != pfn(baseline[i]),
            i < 8,
            "child page {i}: new frame iff written"
        );
    }
    let zero = zero_pfn_seen_by_the_test();
    for e in entries(s, l.at(Layout::R2, 1), 15)
        .into_iter()
        .chain(entries(c, l.at(Layout::R2, 1), 15))
        .chain(entries(s, l.at(Layout::R6, 0), 4))
    {
        assert_eq!(pfn(e), zero, "a read-only fault maps the zero page");
    }
    // A kernel fact: an anonymous VMA that only ever had read faults has no anon_vma, and
    // fork copies no page tables for it, so the child maps nothing there until it faults.
    assert!(
        entries(c, l.at(Layout::R6, 0), 4)
            .iter()
            .all(|&e| e >> 63 == 0),
        "fork copied no PTE of a VMA without anon_vma"
    );

    let range = l.res.range_arg();
    let doc = inspect_json(&["--pid", &s.to_string(), "--range", &range], 0);
    assert_eq!(doc["pfn_visible"], true);
    assert_eq!(doc["basis"], "pfn");
    assert_eq!(doc["pairs"].as_array().unwrap().len(), 1);
    let p = pair(&doc, c);
    assert_eq!(p["parent"], s);
    //                                             shared diverged only_p only_c zero unproven
    assert_eq!(classes(row(p, l.at(Layout::R1, 0))), [56, 8, 0, 0, 0, 0]);
    assert_eq!(classes(row(p, l.at(Layout::R2, 0))), [1, 0, 0, 0, 15, 0]);
    assert_eq!(classes(row(p, l.at(Layout::R6, 0))), [0, 0, 4, 0, 0, 0]);
    assert_eq!(classes(row(p, l.at(Layout::R3, 0))), [0, 0, 0, 4, 0, 0]);
    assert_eq!(row(p, l.at(Layout::R3, 0))["neither"], 4);
    assert_eq!(classes(row(p, l.at(Layout::R5, 0))), [4, 0, 0, 0, 0, 0]);
    assert_eq!(row(p, l.at(Layout::R1, 0))["kind"], "anon");
    // One-sided: the child's new VMA, and the part of R5 the child unmapped.
    let one = p["one_sided"].as_array().unwrap();
    let r4 = format!("{:#x}", l.at(Layout::R4, 0));
    let r5b = format!("{:#x}", l.at(Layout::R5, 4));
    let child_vma = one
        .iter()
        .find(|o| o["start"] == r4.as_str())
        .expect("R4 row");
    assert_eq!(child_vma["side"], "child");
    assert_eq!(child_vma["present"], 3);
    assert_eq!(child_vma["private_anon"], 3);
    assert_eq!(child_vma["reason"], "mapped_after_fork_or_unmapped");
    let hole = one
        .iter()
        .find(|o| o["start"] == r5b.as_str())
        .expect("R5 tail");
    assert_eq!(hole["side"], "parent");
    assert_eq!(hole["present"], 4);
    assert_eq!(hole["reason"], "resized");
    assert_eq!(classes(&p["totals"]), [61, 8, 8, 7, 15, 0]);
    assert!(
        p["accounting"].is_null(),
        "no whole-process accounting with --range"
    );
    drop(fam);
}

#[test]
fn per_page_runs_name_exactly_the_pages_the_child_wrote() {
    if !is_root() {
        eprintln!("SKIP: needs visible PFNs");
        return;
    }
    let l = Layout::new();
    let devnull = std::fs::File::options()
        .write(true)
        .open("/dev/null")
        .unwrap();
    let fam = known_writes_family(&l, devnull.as_raw_fd(), |_| {});
    let r1 = format!("{:#x}-{:#x}", l.at(Layout::R1, 0), l.at(Layout::R1, 64));
    let doc = inspect_json(
        &[
            "--pid",
            &fam.parent.to_string(),
            "--range",
            &r1,
            "--per-page",
        ],
        0,
    );
    let runs = pair(&doc, fam.children[0])["page_runs"].clone();
    let want = serde_json::json!([
        {"start": format!("{:#x}", l.at(Layout::R1, 0)), "end": format!("{:#x}", l.at(Layout::R1, 8)), "class": "diverged"},
        {"start": format!("{:#x}", l.at(Layout::R1, 8)), "end": format!("{:#x}", l.at(Layout::R1, 64)), "class": "shared"},
    ]);
    assert_eq!(runs, want);
}

#[test]
fn frozen_the_childs_private_dirty_is_exactly_its_private_anonymous_pages_by_class() {
    if !is_root() {
        eprintln!("SKIP: needs root (the parent subject is root's; --freeze signals it)");
        return;
    }
    let l = Layout::new();
    let devnull = std::fs::File::options()
        .write(true)
        .open("/dev/null")
        .unwrap();
    let fam = known_writes_family(&l, devnull.as_raw_fd(), |_| {});
    let doc = inspect_json(&["--pid", &fam.parent.to_string(), "--freeze"], 0);
    let p = pair(&doc, fam.children[0]);
    let a = &p["accounting"]["child"];
    let kb = |k: &str| a[k].as_i64().unwrap_or_else(|| panic!("{k} in {a}"));
    // Design principle 7, held still: smaps Private_Dirty == 4 KiB x private anonymous pages.
    assert_eq!(kb("residual_kb"), 0, "{a}");
    assert_eq!(kb("private_dirty_kb"), kb("private_anon_kb"));
    assert_eq!(kb("other_kb"), 0, "a page mapped once is never shared: {a}");
    assert_eq!(
        kb("diverged_kb") + kb("only_here_kb") + kb("one_sided_vmas_kb"),
        kb("private_anon_kb")
    );
    let pk = ps() as i64 / 1024;
    assert!(
        kb("diverged_kb") >= 8 * pk,
        "at least the 8 pages written: {a}"
    );
    assert!(kb("only_here_kb") >= 4 * pk, "at least R3's 4 pages: {a}");
    assert_eq!(
        kb("one_sided_vmas_kb"),
        3 * pk,
        "R4 is the child's only new VMA"
    );
    // The document's child Private_Dirty is the smaps figure of processes[].
    let proc_c = doc["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["pid"] == fam.children[0])
        .unwrap();
    assert_eq!(
        proc_c["smaps_rollup"]["private_dirty_kb"].as_i64(),
        Some(kb("private_dirty_kb"))
    );
    assert_eq!(doc["freeze"]["stopped"].as_array().unwrap().len(), 2);
    for pid in [fam.parent, fam.children[0]] {
        assert_ne!(state(pid), Some('T'), "{pid} was resumed");
    }
}

#[test]
fn a_pool_of_three_children_shares_each_parent_frame_as_their_writes_predict() {
    if !is_root() {
        eprintln!("SKIP: sharing per frame needs visible PFNs");
        return;
    }
    let res = Reservation::new(66);
    let r = res.page(1);
    let mut s = vec![ChildOp::MapAnon {
        addr: r,
        len: 64 * ps(),
    }];
    s.extend(writes(r, 64));
    let a = writes(r, 8); // pages 0..8
    let b = writes(r + 8 * ps(), 8); // pages 8..16
    let c = writes(r, 4); // pages 0..4
    let fam = Family::spawn(&s, &[a, b, c], &[], |_| {});
    let range = format!("{:#x}-{:#x}", r, r + 64 * ps());
    let doc = inspect_json(&["--pid", &fam.parent.to_string(), "--range", &range], 0);
    let pools = doc["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 1);
    let pool = &pools[0];
    assert_eq!(pool["parent"], fam.parent);
    assert_eq!(pool["parent_pages"], 64);
    // Pages 0..4: A and C copied, B shares (1). 4..16: one of A, B copied (2). 16..64: all 3.
    assert_eq!(
        pool["sharing_histogram"],
        serde_json::json!({"0": 0, "1": 4, "2": 12, "3": 48})
    );
    // kpagecount counts every page table mapping the frame: S plus the sharing members.
    assert_eq!(
        pool["kpagecount_histogram"],
        serde_json::json!({"2": 4, "3": 12, "4": 48})
    );
    for (child, diverged) in fam.children.iter().zip([8, 8, 4]) {
        let t = &pair(&doc, *child)["totals"];
        assert_eq!(t["diverged"], diverged);
        assert_eq!(t["shared"], 64 - diverged);
    }
    // The pool view: A and B have identical pairs (8 of 64 diverged) and collapse; C is its
    // own group. 20 pages diverged in all.
    let view = &pool["view"];
    let ps = ps() as u64;
    assert_eq!(view["workers"], 3);
    assert_eq!(view["diverged_bytes"], 20 * ps);
    let groups = view["groups"].as_array().unwrap();
    let mut ab = vec![fam.children[0], fam.children[1]];
    ab.sort_unstable();
    assert_eq!(groups.len(), 2, "{view}");
    assert_eq!(groups[0]["members"], serde_json::json!(ab));
    assert_eq!(groups[0]["diverged_bytes"], 8 * ps);
    assert_eq!(groups[0]["shared_bytes"], 56 * ps);
    assert_eq!(groups[1]["members"], serde_json::json!([fam.children[2]]));
    assert_eq!(groups[1]["diverged_bytes"], 4 * ps);
    // Sizes as people read them: MiB with one decimal, kB below 0.05 MiB (4 KiB pages).
    if ps == 4096 {
        assert_eq!(
            view["summary"],
            "3 workers, 0.1 MiB diverged in all: 2 workers each 32 kB, 1 worker 16 kB"
        );
    }
    assert_eq!(pool["incomplete"], false);
    // Identical pairs only: one group, "each".
    let same = Family::spawn(
        &s,
        &[writes(r, 2), writes(r + 4 * ps as usize, 2)],
        &[],
        |_| {},
    );
    let doc = inspect_json(&["--pid", &same.parent.to_string(), "--range", &range], 0);
    if ps == 4096 {
        assert_eq!(
            doc["pools"][0]["view"]["summary"],
            "2 workers, each 8 kB diverged, 16 kB in all"
        );
    }
    let (rc, table, err) = inspect(&[
        "--pid",
        &same.parent.to_string(),
        "--range",
        &range,
        "--format",
        "table",
    ]);
    assert_eq!(rc, 0, "{err}");
    assert!(
        table.contains("2 workers, each 8 kB diverged, 16 kB in all"),
        "{table}"
    );
    assert!(table.contains("only_parent:"), "{table}");
}

/// A table watch prints one line per sample as it is taken (flushed), not everything at the
/// end: the first sample's line arrives while the watch still runs, and there is one per
/// sample, then the last sample's tables.
#[test]
fn a_table_watch_prints_each_sample_as_it_is_taken() {
    let (res, fam) = written_family(64, 4);
    let range = format!("{:#x}-{:#x}", res.page(1), res.page(1) + 64 * ps());
    let mut w = spawn_inspect(&[
        "--pid",
        &fam.parent.to_string(),
        "--range",
        &range,
        "--interval",
        "200ms",
        "--duration",
        "3s",
        "--format",
        "table",
    ]);
    let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    assert!(header.starts_with("watching "), "{header}");
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("#1"), "{first}");
    assert!(
        w.try_wait().unwrap().is_none(),
        "the first sample's line came while the watch still ran"
    );
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = w.wait().unwrap();
    assert!(status.code().is_some_and(|c| c == 0 || c == 3));
    let samples = 1 + rest.iter().take_while(|l| !l.is_empty()).count();
    let text = rest.join("\n");
    assert!(samples >= 10, "one line per sample: {samples}\n{text}");
    if is_root() && ps() == 4096 {
        let child = fam.children[0];
        assert!(
            first.contains(&format!("{child}: 16 kB")),
            "4 pages: {first}"
        );
    }
    assert!(
        text.contains(&format!("watched {samples} samples every 200 ms")),
        "{text}"
    );
}

/// Over whole address spaces a pool includes `[vsyscall]` among the VMAs parent and workers
/// share; it has no pagemap, so the pool walk skips it (it once stopped there, "pagemap of
/// pid ... ends before 0xffffffffff601000", and still exited 0).
#[test]
fn a_pool_over_whole_address_spaces_skips_what_has_no_pagemap() {
    if !is_root() {
        eprintln!("SKIP: sharing per frame needs visible PFNs");
        return;
    }
    if !std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("[vsyscall]")) {
        eprintln!("SKIP: this kernel maps no [vsyscall] page");
        return;
    }
    let res = Reservation::new(18);
    let r = res.page(1);
    let mut s = vec![ChildOp::MapAnon {
        addr: r,
        len: 16 * ps(),
    }];
    s.extend(writes(r, 16));
    let fam = Family::spawn(&s, &[writes(r, 2), writes(r, 3)], &[], |_| {});
    let (rc, out, err) = inspect(&["--pid", &fam.parent.to_string()]);
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {err}"));
    let pool = &doc["pools"][0];
    assert_eq!(pool["notes"], serde_json::json!([]), "{pool}");
    assert_eq!(pool["incomplete"], false);
    assert!(pool["sharing_histogram"].is_object(), "{pool}");
    assert_eq!(rc, 0, "{err}");
}

/// A VMA larger than the sparse-walk threshold (1 GiB of pages) is walked over its populated
/// ranges alone; the pages in between are empty, not classes. Three islands of 8 written
/// pages (start, middle, end) in a 1 GiB + 4 MiB mapping; the child writes 3 + 2 of them.
#[test]
fn a_vma_past_the_sparse_threshold_counts_exactly_its_populated_pages() {
    if !is_root() {
        eprintln!("SKIP: shared vs diverged needs visible PFNs");
        return;
    }
    let pages = (1usize << 18) + 1024;
    let res = Reservation::new(pages + 2);
    let r = res.page(1);
    let mid = r + 200_000 * ps();
    let last = r + (pages - 8) * ps();
    let mut s = vec![ChildOp::MapAnon {
        addr: r,
        len: pages * ps(),
    }];
    for island in [r, mid, last] {
        s.extend(writes(island, 8));
    }
    let mut child = writes(r, 3);
    child.extend(writes(last + 6 * ps(), 2));
    let fam = Family::spawn(&s, &[child], &[], |_| {});
    let doc = inspect_json(&["--pid", &fam.parent.to_string()], 0);
    let row = row(pair(&doc, fam.children[0]), r);
    assert_eq!(row["shared"], 24 - 5, "{row}");
    assert_eq!(row["diverged"], 5, "{row}");
    assert_eq!(
        row["neither"],
        pages - 24,
        "the gaps are empty pages: {row}"
    );
    for class in ["only_parent", "only_child", "zero", "unproven"] {
        assert_eq!(row[class], 0, "{class}: {row}");
    }
}

/// A 2 MiB-aligned THP region in the test process (`MADV_HUGEPAGE`), populated by reading
/// (huge zero page) or writing (a THP). `None` when THP cannot be had here.
struct Thp {
    base: usize,
    len: usize,
    pub addr: usize,
}

impl Thp {
    fn new(write: bool) -> Option<Thp> {
        let huge = cowscope::kernel::thp_pmd_size_kb()? as usize * 1024;
        let mode = cowscope::kernel::thp_enabled();
        if mode == "never" || mode == "unavailable" {
            return None;
        }
        let len = 2 * huge;
        // SAFETY: fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let addr = (p as usize).next_multiple_of(huge);
        let t = Thp {
            base: p as usize,
            len,
            addr,
        };
        // SAFETY: the aligned block is inside the mapping.
        if unsafe { libc::madvise(addr as *mut libc::c_void, huge, libc::MADV_HUGEPAGE) } != 0 {
            return None;
        }
        for off in (0..huge).step_by(ps()) {
            // SAFETY: inside our mapping.
            unsafe {
                if write {
                    std::ptr::write_volatile((addr + off) as *mut u8, 1);
                } else {
                    std::ptr::read_volatile((addr + off) as *const u8);
                }
            }
        }
        // Is it one PMD mapping? 512 consecutive frames.
        let e = entries(std::process::id() as i32, addr, huge / ps());
        let first = pfn(e[0]);
        let pmd = e
            .iter()
            .enumerate()
            .all(|(i, &x)| pfn(x) == first + i as u64);
        pmd.then_some(t)
    }
}

impl Drop for Thp {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

#[rstest]
#[case::huge_zero_page_read_by_both_is_zero(false, 0, 0, 512)]
#[case::one_write_into_a_shared_thp_copies_one_page(true, 1, 511, 0)]
fn thp_regions_classify_per_4k_page(
    #[case] populate_by_writing: bool,
    #[case] diverged: u64,
    #[case] shared: u64,
    #[case] zero: u64,
) {
    if !is_root() {
        eprintln!("SKIP: needs visible PFNs");
        return;
    }
    let Some(t) = Thp::new(populate_by_writing) else {
        eprintln!("SKIP: no PMD-mapped THP or huge zero page here");
        return;
    };
    let child = if populate_by_writing {
        writes(t.addr, 1)
    } else {
        vec![]
    };
    let fam = Family::spawn(&[], &[child], &[], |_| {});
    let range = format!("{:#x}-{:#x}", t.addr, t.addr + 512 * ps());
    let doc = inspect_json(&["--pid", &fam.parent.to_string(), "--range", &range], 0);
    let tot = &pair(&doc, fam.children[0])["totals"];
    assert_eq!(tot["diverged"], diverged, "{tot}");
    assert_eq!(tot["shared"], shared, "{tot}");
    assert_eq!(tot["zero"], zero, "{tot}");
}

#[test]
fn freeze_resumes_what_it_stopped_and_leaves_an_already_stopped_child_stopped() {
    if !is_root() {
        eprintln!("SKIP: needs root to read root's subjects");
        return;
    }
    let (_res, fam) = written_family(8, 2);
    let c = fam.children[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    assert!(
        wait_state(c, &['T'], Duration::from_secs(5)),
        "child stopped by the test"
    );
    let doc = inspect_json(&["--pid", &fam.parent.to_string(), "--freeze"], 0);
    assert_eq!(doc["freeze"]["stopped"], serde_json::json!([fam.parent]));
    assert_eq!(doc["freeze"]["already_stopped"], serde_json::json!([c]));
    assert_eq!(doc["freeze"]["all_threads_stopped"], true);
    assert!(
        wait_state(fam.parent, &['S', 'R'], Duration::from_secs(2)),
        "the parent was resumed: {:?}",
        state(fam.parent)
    );
    assert_eq!(state(c), Some('T'), "the child stays stopped as we left it");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    // The read itself was consistent: the child's 2 copies are there.
    assert_eq!(
        pair(&doc, c)["totals"]["diverged"].as_u64().map(|d| d >= 2),
        Some(true)
    );
}

fn small_family() -> (Reservation, Family) {
    written_family(1024, 16)
}

#[test]
fn ctrl_c_ends_a_frozen_watch_cleanly_with_what_it_collected_and_resumes_everything() {
    if !is_root() {
        eprintln!("SKIP: needs root to read root's subjects");
        return;
    }
    let (_res, fam) = small_family();
    let pid = fam.parent.to_string();
    let child = spawn_inspect(&["--pid", &pid, "--freeze", "--interval", "20ms"]);
    std::thread::sleep(Duration::from_millis(600));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("a whole document");
    assert_eq!(doc["watch"]["ended_by"], "interrupted");
    let n = doc["samples"].as_array().unwrap().len();
    assert!(n >= 2, "several samples before Ctrl-C: {n}");
    assert_eq!(doc["watch"]["samples"], n);
    for pid in [fam.parent, fam.children[0]] {
        assert!(
            wait_state(pid, &['S', 'R'], Duration::from_secs(2)),
            "{pid} left stopped: {:?}",
            state(pid)
        );
    }
}

#[test]
fn the_watchdog_resumes_the_targets_when_cowscope_is_killed_mid_freeze() {
    if !is_root() {
        eprintln!("SKIP: needs root to read root's subjects");
        return;
    }
    // A bigger parent so each frozen read lasts a while.
    let (_res, fam) = written_family(16384, 1);
    let mut caught = false;
    for _attempt in 0..20 {
        let mut cs = Command::new(cowscope_bin())
            .args([
                "inspect",
                "--pid",
                &fam.parent.to_string(),
                "--freeze",
                "--interval",
                "1ms",
                "--format",
                "jsonl",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if state(fam.parent) == Some('T') {
                let _ = cs.kill(); // SIGKILL: no handler runs
                caught = true;
                break;
            }
            std::thread::yield_now();
        }
        if !caught {
            let _ = cs.kill();
        }
        let _ = cs.wait();
        if caught {
            break;
        }
    }
    assert!(
        caught,
        "never caught cowscope while it held the targets stopped"
    );
    for pid in [fam.parent, fam.children[0]] {
        assert!(
            wait_state(pid, &['S', 'R'], Duration::from_secs(3)),
            "{pid} left stopped after cowscope was SIGKILLed: {:?}",
            state(pid)
        );
    }
}

#[test]
fn jsonl_streams_one_record_per_sample_and_ends_when_the_child_exits() {
    if !is_root() {
        eprintln!("SKIP: needs root to read root's subjects");
        return;
    }
    let (_res, fam) = small_family();
    let pid = fam.parent.to_string();
    let mut cs = spawn_inspect(&["--pid", &pid, "--interval", "50ms", "--format", "jsonl"]);
    let mut lines = BufReader::new(cs.stdout.take().unwrap()).lines();
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let l = lines.next().expect("a line").expect("utf-8");
        let v: Value = serde_json::from_str(&l).expect("each line is one JSON record");
        assert_eq!(v["schema_version"], 1);
        assert_eq!(
            v["pairs"][0]["totals"]["diverged"]
                .as_u64()
                .map(|d| d >= 16),
            Some(true)
        );
        seqs.push(v["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, [0, 1, 2], "records arrive as they are taken");
    // The child dies (a zombie until its parent reaps it): the watch has nothing left.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(fam.children[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let status = cs.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    for l in &rest {
        let _: Value = serde_json::from_str(l).expect("every line whole");
    }
}

#[test]
fn a_target_that_exits_before_it_is_read_is_named_in_one_sentence() {
    if !is_root() {
        eprintln!("SKIP: needs root to read root's subjects");
        return;
    }
    let (_res, fam) = small_family();
    let req = cowscope::inspect::InspectRequest {
        pid: fam.parent,
        ..Default::default()
    };
    let plan = cowscope::inspect::sample::plan(&req).expect("plan");
    let c = fam.children[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_state(c, &['Z'], Duration::from_secs(5)));
    let ctx = cowscope::inspect::sample::Context::detect();
    let err = cowscope::inspect::sample::take_snapshot(&plan, &req, &ctx)
        .expect_err("the only pair is gone");
    assert_eq!(err.exit_code(), 2);
    assert_eq!(
        err.to_string(),
        format!("process {c} exited while it was being read")
    );
}

#[rstest]
#[case::no_such_pid(&["--pid", "2147483646"], "no process with pid 2147483646")]
#[case::not_a_number(&["--pid", "abc"], "--pid must be a process id, got 'abc'")]
#[case::per_page_needs_a_range(&["--pid", "1", "--per-page"], "--per-page needs --range")]
#[case::duration_needs_interval(&["--pid", "1", "--duration", "2s"], "--duration needs --interval")]
#[case::bad_interval(&["--pid", "1", "--interval", "soon"], "--interval must be a duration")]
#[case::too_many_cells(&["--pid", "1", "--cells", "100000"], "--cells must be at most")]
fn bad_input_is_exit_2_with_one_sentence(#[case] args: &[&str], #[case] says: &str) {
    let (rc, out, err) = inspect(args);
    assert_eq!(rc, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains(says), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
}

#[test]
fn a_kernel_thread_has_no_user_memory() {
    let kthread = cowscope::inspect::proc::all()
        .into_iter()
        .find(|p| p.is_kernel_thread());
    let Some(k) = kthread else {
        eprintln!("SKIP: no kernel thread visible in this pid namespace");
        return;
    };
    let (rc, _, err) = inspect(&["--pid", &k.pid.to_string()]);
    assert_eq!(rc, 2);
    assert_eq!(
        err.trim(),
        format!(
            "cowscope: process {} ({}) is a kernel thread and has no user memory",
            k.pid, k.comm
        )
    );
}

#[test]
fn a_zombie_a_childless_process_and_a_stranger_child_are_refused() {
    use cowscope::fork::subject::{SubjectPipes, spawn};
    // A zombie: a subject that exits at once and is not reaped yet.
    let pipes = SubjectPipes::new().unwrap();
    let mut ops = pipes.prologue().to_vec();
    ops.push(ChildOp::Exit(0));
    let (zombie, _) = spawn(pipes, &ops).unwrap();
    let z = zombie.pid().as_raw();
    assert!(wait_state(z, &['Z'], Duration::from_secs(5)));
    let (rc, _, err) = inspect(&["--pid", &z.to_string()]);
    assert_eq!(rc, 2);
    assert!(
        err.contains(&format!("process {z} (")) && err.contains("is a zombie"),
        "{err}"
    );
    drop(zombie);

    // A process without children.
    let pipes = SubjectPipes::new().unwrap();
    let mut ops = pipes.prologue().to_vec();
    ops.extend(pipes.epilogue());
    let (mut lone, _) = spawn(pipes, &ops).unwrap();
    lone.wait_ready(Instant::now() + Duration::from_secs(10))
        .unwrap();
    let l = lone.pid().as_raw();
    let (rc, _, err) = inspect(&["--pid", &l.to_string()]);
    assert_eq!(rc, 2);
    assert!(
        err.contains("has no live child process to compare with"),
        "{err}"
    );

    // A --child that does not descend from --pid.
    let me = std::process::id();
    let (rc, _, err) = inspect(&["--pid", &l.to_string(), "--child", &me.to_string()]);
    assert_eq!(rc, 2);
    assert!(
        err.contains(&format!("process {me} ("))
            && err.contains(&format!("is not a descendant of process {l}")),
        "{err}"
    );
    lone.finish(Instant::now() + Duration::from_secs(10));
}

#[test]
fn another_users_process_is_refused_with_the_reason() {
    if !is_root() {
        eprintln!("SKIP: needs root to drop to uid 65534 with setpriv");
        return;
    }
    let (_res, fam) = small_family();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(cowscope_bin())
        .args(["inspect", "--pid", &fam.parent.to_string()])
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("permission denied")
            && err.contains("belongs to uid 0")
            && err.contains("CAP_SYS_PTRACE"),
        "{err}"
    );
}

#[test]
fn the_documents_match_their_schemas_and_renderings_carry_the_classes() {
    if !is_root() {
        eprintln!("SKIP: needs root to read root's subjects");
        return;
    }
    let (_res, fam) = small_family();
    let pid = fam.parent.to_string();
    let doc = inspect_json(&["--pid", &pid, "--cells", "32"], 0);
    let schema = cowscope::doc::schema("inspect").unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    assert!(v.is_valid(&doc), "{:?}", v.iter_errors(&doc).next());
    // The contract's field names.
    let p = &doc["pairs"][0];
    for k in ["parent", "child", "totals", "vmas"] {
        assert!(!p[k].is_null(), "pairs[].{k}");
    }
    for k in [
        "shared",
        "diverged",
        "only_parent",
        "only_child",
        "zero",
        "unproven",
    ] {
        assert!(p["totals"][k].is_u64(), "totals.{k}");
        assert!(p["vmas"][0][k].is_u64(), "vmas[].{k}");
    }
    for k in ["start", "end"] {
        assert!(p["vmas"][0][k].as_str().unwrap().starts_with("0x"));
    }
    for k in [
        "rss_kb",
        "pss_kb",
        "private_dirty_kb",
        "shared_dirty_kb",
        "anon_huge_kb",
        "swap_kb",
    ] {
        assert!(
            doc["processes"][0]["smaps_rollup"][k].is_u64(),
            "smaps_rollup.{k}"
        );
    }
    assert!(p["vmas"][0]["cells"].is_array());

    let (rc, line, _) = inspect(&["--pid", &pid, "--format", "jsonl"]);
    assert_eq!(rc, 0);
    let rec: Value = serde_json::from_str(line.trim()).unwrap();
    let s2 = cowscope::doc::schema("inspect-sample").unwrap();
    assert!(jsonschema::validator_for(&s2).unwrap().is_valid(&rec));

    let (rc, svg, _) = inspect(&["--pid", &pid, "--format", "svg"]);
    assert_eq!(rc, 0);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains("#D55E00") && svg.contains("#009E73"),
        "Okabe-Ito colours"
    );
    assert!(!svg.contains(" 1 pages"), "1 page, not 1 pages");
    assert!(svg.contains("one cell = up to"));

    let (rc, table, _) = inspect(&["--pid", &pid, "--format", "table"]);
    assert_eq!(rc, 0);
    assert!(
        table.contains("both processes map are no longer the same page"),
        "{table}"
    );
    assert!(table.contains("child Private_Dirty"), "{table}");
}

// ---- cowscope never inspects itself (review finding 1) ----

/// Resumes what a hung cowscope stopped and kills it, from outside the test's process tree
/// (so a freeze of the test's descendants cannot stop it too): a shell started through
/// `setsid -f`, reparented away from the test before cowscope starts. It gives up as soon as
/// the test is done (the directory it watches has a `done` file, or is gone).
struct SafetyNet {
    dir: tempfile::TempDir,
}

impl SafetyNet {
    fn arm(after: Duration, resume: &[i32]) -> SafetyNet {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let resume: Vec<String> = resume.iter().map(|p| p.to_string()).collect();
        let script = format!(
            "i=0; while [ $i -lt {ticks} ]; do \
               [ -d '{d}' ] || exit 0; [ -e '{d}/done' ] && exit 0; sleep 0.1; i=$((i+1)); \
             done; \
             kill -CONT {resume} 2>/dev/null; \
             p=$(cat '{d}/pid' 2>/dev/null); \
             [ -n \"$p\" ] && [ \"$(cat /proc/$p/comm 2>/dev/null)\" = cowscope ] && kill -KILL $p",
            ticks = after.as_millis() / 100,
            resume = resume.join(" "),
        );
        let st = Command::new("setsid")
            .args(["-f", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("setsid");
        assert!(st.success());
        SafetyNet { dir }
    }
    fn watch_pid(&self, pid: u32) {
        std::fs::write(self.dir.path().join("pid"), pid.to_string()).unwrap();
    }
}

impl Drop for SafetyNet {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.path().join("done"), b"");
    }
}

#[test]
fn inspecting_the_tests_own_process_with_freeze_returns_promptly_without_cowscope_in_a_pair() {
    // The test process has a child besides cowscope: the family's parent subject S.
    let (_res, fam) = small_family();
    let me = std::process::id() as i32;
    let mut resume = vec![me, fam.parent];
    resume.extend(&fam.children);
    let net = SafetyNet::arm(Duration::from_secs(20), &resume);
    let t0 = Instant::now();
    let cs = spawn_inspect(&["--pid", &me.to_string(), "--freeze"]);
    let cs_pid = cs.id() as i32;
    net.watch_pid(cs.id());
    let out = cs.wait_with_output().unwrap();
    let took = t0.elapsed();
    drop(net);
    assert!(
        took < Duration::from_secs(15),
        "cowscope froze itself (the safety net ended it after {took:?})"
    );
    let want = if is_root() { 0 } else { 3 };
    assert_eq!(
        out.status.code(),
        Some(want),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("a document");
    for p in doc["pairs"].as_array().unwrap() {
        assert_ne!(p["parent"], cs_pid, "cowscope is no pair's parent: {p}");
        assert_ne!(p["child"], cs_pid, "cowscope is no pair's child: {p}");
    }
    for p in doc["processes"].as_array().unwrap() {
        assert_ne!(p["pid"], cs_pid, "cowscope read itself");
        assert_ne!(p["ppid"], cs_pid, "cowscope read its watchdog");
    }
    let stopped: Vec<i64> = doc["freeze"]["stopped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(
        !stopped.contains(&(cs_pid as i64)),
        "cowscope stopped itself"
    );
    assert!(stopped.contains(&(me as i64)), "the --pid was frozen");
    // The pairs it should have: the test with S, S with its child.
    pair(&doc, fam.parent);
    pair(&doc, fam.children[0]);
    for pid in [me, fam.parent, fam.children[0]] {
        assert!(
            wait_state(pid, &['S', 'R'], Duration::from_secs(2)),
            "{pid} left stopped: {:?}",
            state(pid)
        );
    }
}

#[test]
fn cowscope_named_as_pid_or_child_is_a_usage_error() {
    // `exec` keeps the shell's pid, so $$ is cowscope's own pid and $PPID the test's.
    for (script, flag) in [
        (r#"exec "$0" inspect --pid $$"#, "--pid"),
        (r#"exec "$0" inspect --pid $PPID --child $$"#, "--child"),
    ] {
        let out = Command::new("sh")
            .args(["-c", script])
            .arg(cowscope_bin())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{script}: {err}");
        assert!(out.stdout.is_empty(), "{script}");
        assert!(
            err.contains(&format!("{flag} ")) && err.contains("is cowscope itself"),
            "{script}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    }
    // As a library, "cowscope" is the calling process.
    let req = cowscope::inspect::InspectRequest {
        pid: std::process::id() as i32,
        ..Default::default()
    };
    let e = cowscope::inspect::sample::plan(&req).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("is cowscope itself"), "{e}");
}

// ---- a freeze that could not stop every thread (finding 31) ----

#[test]
fn a_parent_whose_thread_cannot_stop_is_not_reported_as_a_frozen_instant() {
    // The parent vforks a child that waits in its address space: the parent's only thread
    // sleeps uninterruptibly (`D`) until the vfork child exits, and SIGSTOP cannot stop it.
    let mut fam = CFamily::start(&[], &["vfork"]);
    assert!(
        wait_state(fam.parent, &['D'], Duration::from_secs(5)),
        "the vfork parent waits in D: {:?}",
        state(fam.parent)
    );
    let pid = fam.parent.to_string();
    let want = if is_root() { 0 } else { 3 };
    let doc = inspect_json(
        &["--pid", &pid, "--child", &fam.c1.to_string(), "--freeze"],
        want,
    );
    assert_eq!(
        doc["freeze"]["all_threads_stopped"], false,
        "{}",
        doc["freeze"]
    );
    let notes: Vec<&str> = doc["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("not a frozen instant") && n.contains("uninterruptible")),
        "{notes:?}"
    );
    let (rc, table, _) = inspect(&[
        "--pid",
        &pid,
        "--child",
        &fam.c1.to_string(),
        "--freeze",
        "--format",
        "table",
    ]);
    assert_eq!(rc, want);
    let head = table.lines().next().unwrap();
    assert!(
        head.contains("not a frozen instant") && !head.contains("frozen for"),
        "{head}"
    );
    // Nothing left stopped: the SIGSTOP still pending on the parent was discarded by the
    // SIGCONT, the child runs, and the whole family ends when its stdin closes.
    assert!(wait_state(fam.c1, &['S', 'R'], Duration::from_secs(2)));
    assert_ne!(state(fam.parent), Some('T'));
    let status = fam.end().expect("the family ends: nothing is left stopped");
    assert!(status.success(), "{status:?}");
}

// ---- what could not be read, and when a watch ends (findings 7, 8, 9) ----

/// Wait until `pid` is not dumpable any more: its /proc files then belong to root.
fn wait_not_dumpable(pid: i32) {
    use std::os::unix::fs::MetadataExt;
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if std::fs::metadata(format!("/proc/{pid}/pagemap")).is_ok_and(|m| m.uid() == 0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{pid} never became non-dumpable");
}

#[test]
fn a_live_descendant_whose_memory_is_refused_is_listed_unreadable_and_exits_3() {
    let who = unprivileged();
    let fam = CFamily::start(&who, &["unreadable"]);
    let c2 = fam.c2.unwrap();
    wait_not_dumpable(c2);
    let out = cowscope_with(&who)
        .args(["inspect", "--pid", &fam.parent.to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(out.status.code(), Some(3), "{err}");
    pair(&doc, fam.c1);
    assert!(
        doc["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["child"] != c2)
    );
    let sk = doc["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["pid"] == c2)
        .unwrap_or_else(|| panic!("{c2} in skipped[]: {}", doc["skipped"]));
    assert_eq!(sk["unreadable"], true, "{sk}");
    let why = sk["reason"].as_str().unwrap();
    assert!(
        why.contains("permission denied") && why.contains("not dumpable"),
        "{why}"
    );
    let o = cowscope_with(&who)
        .args([
            "inspect",
            "--pid",
            &fam.parent.to_string(),
            "--format",
            "table",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3));
    assert!(table.contains(&format!("skipped {c2} (")), "{table}");
}

#[test]
fn a_watch_counts_every_incomplete_sample() {
    let who = unprivileged();
    let fam = CFamily::start(&who, &["unreadable"]);
    wait_not_dumpable(fam.c2.unwrap());
    let out = cowscope_with(&who)
        .args(["inspect", "--pid", &fam.parent.to_string()])
        .args(["--interval", "50ms", "--duration", "300ms"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(out.status.code(), Some(3), "{err}");
    let w = &doc["watch"];
    assert_eq!(w["ended_by"], "duration", "{w}");
    assert!(w["samples"].as_u64().unwrap() >= 2, "{w}");
    assert_eq!(w["incomplete_samples"], w["samples"], "{w}");
}

#[test]
fn a_watched_child_that_becomes_unreadable_is_an_error_not_an_exit() {
    let who = unprivileged();
    let fam = CFamily::start(&who, &[]);
    let mut cs = cowscope_with(&who)
        .args(["inspect", "--pid", &fam.parent.to_string()])
        .args(["--child", &fam.c1.to_string()])
        .args(["--interval", "50ms", "--format", "jsonl"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(cs.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["seq"], 0);
    // The child makes itself non-dumpable and lives on: its memory is no longer readable.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(fam.c1),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    wait_not_dumpable(fam.c1);
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let out = cs.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("/proc/{}/", fam.c1)) && err.contains("permission denied"),
        "{err}"
    );
    for l in &rest {
        let _: Value = serde_json::from_str(l).expect("every record whole");
    }
    assert!(
        wait_state(fam.c1, &['S', 'R'], Duration::from_secs(1)),
        "the child is alive: it did not exit"
    );
}

// ---- jsonl --out follows the --out rules (finding 15) ----

/// `inspect --pid PARENT --interval 20ms --format jsonl --out OUT`, running.
fn spawn_jsonl_watch(parent: i32, out: &std::path::Path) -> std::process::Child {
    let (pid, out) = (parent.to_string(), out.to_str().unwrap());
    spawn_inspect(&[
        "--pid",
        &pid,
        "--interval",
        "20ms",
        "--format",
        "jsonl",
        "--out",
        out,
    ])
}

/// The sizes of cowscope's temporary files in `dir`.
fn temp_sizes(dir: &std::path::Path) -> Vec<u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".cowscope-"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .collect()
}

#[test]
fn jsonl_out_to_a_regular_file_replaces_the_old_result_only_when_the_watch_ends() {
    let (_res, fam) = small_family();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("watch.jsonl");
    std::fs::write(&out, "old result\n").unwrap();
    let cs = spawn_jsonl_watch(fam.parent, &out);
    // Records stream into a temporary file beside the target...
    let temp_len = || temp_sizes(dir.path()).into_iter().max();
    let end = Instant::now() + Duration::from_secs(10);
    while temp_len().unwrap_or(0) == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(temp_len().unwrap_or(0) > 0, "records arrive in a temp file");
    // ...while the old result is untouched.
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "old result\n");
    // Ctrl-C ends the watch cleanly: the records take the old result's place.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cs.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = cs.wait_with_output().unwrap();
    let want = if is_root() { 0 } else { 3 };
    assert_eq!(
        o.status.code(),
        Some(want),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty(), "--out, not stdout");
    let text = std::fs::read_to_string(&out).unwrap();
    let seqs: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("whole records")["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(!seqs.is_empty());
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(temp_len(), None, "no temporary file left");
}

/// A second Ctrl-C means "now": cowscope `_exit`s from the signal handler, and still leaves
/// no temporary file beside the result, whose old content is either kept or wholly replaced.
#[test]
fn a_second_ctrl_c_mid_jsonl_out_leaves_no_temporary_file() {
    let (_res, fam) = small_family();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("watch.jsonl");
    let temps = || temp_sizes(dir.path()).len();
    let mut hard_exits = 0;
    for _ in 0..10 {
        std::fs::write(&out, "old result\n").unwrap();
        let cs = spawn_jsonl_watch(fam.parent, &out);
        let end = Instant::now() + Duration::from_secs(10);
        while temps() == 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(temps(), 1, "the records stream into one temp file");
        let pid = nix::unistd::Pid::from_raw(cs.id() as i32);
        // Two signals back to back: the second lands while the first is being honoured.
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let o = cs.wait_with_output().unwrap();
        assert_eq!(temps(), 0, "no temporary file left behind");
        let text = std::fs::read_to_string(&out).unwrap();
        if text != "old result\n" {
            for l in text.lines() {
                let _: Value = serde_json::from_str(l).expect("a replaced result is whole");
            }
        }
        match o.status.code() {
            // The handler of whichever signal came second `_exit`s with 128 + its number.
            Some(c) if c == 128 + libc::SIGTERM || c == 128 + libc::SIGINT => hard_exits += 1,
            Some(0 | 3) => {} // the first signal's clean ending won the race
            other => panic!(
                "unexpected exit {other:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
        }
        if hard_exits >= 3 {
            break;
        }
    }
    assert!(
        hard_exits > 0,
        "the second signal never arrived before the clean ending: the case was not exercised"
    );
}

#[test]
fn jsonl_out_refuses_a_directory_and_a_block_device_before_reading() {
    let (_res, fam) = small_family();
    let dir = tempfile::tempdir().unwrap();
    let pid = fam.parent.to_string();
    let d = dir.path().to_str().unwrap();
    let args = [
        "--pid",
        pid.as_str(),
        "--interval",
        "20ms",
        "--format",
        "jsonl",
    ];
    let (rc, out, err) = inspect(&[&args[..], &["--out", d]].concat());
    assert_eq!(rc, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("is a directory"), "{err}");
    if !is_root() {
        eprintln!("SKIP (block device): mknod needs root");
        return;
    }
    // A block device node (of a loop device that need not exist): refused by its type,
    // never opened.
    let blk = dir.path().join("blk");
    nix::sys::stat::mknod(
        &blk,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(7, 250),
    )
    .unwrap();
    let (rc, _, err) = inspect(&[&args[..], &["--out", blk.to_str().unwrap()]].concat());
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("is a block device"), "{err}");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&blk)
            .unwrap()
            .file_type()
            .is_block_device()
    );
}
