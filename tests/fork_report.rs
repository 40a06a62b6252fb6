//! fork-report: every scenario of the catalogue asserted against first principles, the
//! timeout path, zombies, the non-root path, bad input and the JSON Schema.
//!
//! Run with `cargo test -- --test-threads=1` (these tests fork).

use std::path::PathBuf;
use std::time::Duration;

use assert_cmd::Command;
use cowscope::cmd::fork_report::report as fork_report;
use cowscope::fork::scenarios::{Op, ProcessPlan, by_name};
use cowscope::fork::{ForkReportOptions, ScenarioResult, run::run_scenario};
use rstest::rstest;

fn run_one(name: &str) -> (cowscope::mem::system::SystemInfo, ScenarioResult) {
    let opts = ForkReportOptions {
        scenarios: vec![name.into()],
        runs: 1,
        // As root, the matrix cases may reserve huge pages, enable an mTHP size or add a
        // temporary swap file; every change is restored when the scenario ends.
        allow_sysfs: is_root(),
        ..Default::default()
    };
    let r = fork_report(&opts).expect("fork-report runs");
    let s = r.body.scenarios.into_iter().next().expect("one scenario");
    (r.system, s)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn page_kb() -> u64 {
    cowscope::kernel::page_size() as u64 / 1024
}

/// Children of this test process still not reaped (zombies or live).
fn our_children() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().map(String::from));
            }
        }
    }
    out
}

#[rstest]
#[case::private_idle_keeps_every_page_shared("private-idle")]
#[case::child_write_copies_into_the_child("private-child-writes")]
#[case::parent_write_copies_into_the_parent("private-parent-writes")]
#[case::second_writer_reuses_its_now_exclusive_page("private-both-write")]
#[case::map_shared_never_copies("shared-child-writes")]
#[case::wipeonfork_child_reads_zero("wipeonfork")]
#[case::dontfork_child_has_no_mapping("dontfork")]
#[case::thp_write_copies_one_base_page("thp-child-writes")]
#[case::each_of_four_children_copies_its_own_page("many-children")]
#[case::grandchild_write_copies_only_in_the_grandchild("fork-chain")]
#[case::seed_09c_child_rewrite_stays_in_the_child("seed-09c")]
#[case::zero_page_write_gets_a_fresh_page("zero-page-child-writes")]
#[case::huge_zero_page_write_gets_a_page_or_a_whole_thp("huge-zero-page-child-writes")]
#[case::thp_parent_write_copies_one_base_page_into_the_parent("thp-parent-writes")]
#[case::pte_mapped_thp_write_copies_one_base_page("thp-pte-mapped-child-writes")]
#[case::single_pte_of_a_thp_copies_one_page("thp-single-pte-child-writes")]
#[case::partially_mremapped_thp_copies_one_page_per_write("thp-partial-mremap-child-writes")]
#[case::mthp_64k_write_copies_one_base_page("mthp-64k-child-writes")]
#[case::hugetlb_write_copies_the_whole_huge_page("hugetlb-2m-child-writes")]
#[case::file_private_write_copies_the_page_cache_page("file-private-child-writes")]
#[case::memfd_shared_never_copies("memfd-shared-child-writes")]
#[case::madv_free_pages_are_shared_and_copied_like_any("madv-free-child-writes")]
#[case::swapped_page_write_swaps_in_a_copy("swapped-child-writes")]
#[case::mprotect_cycle_does_not_skip_the_copy("mprotect-cycle-child-writes")]
#[case::vmsplice_child_unmap_parent_write_copies_and_the_pipe_keeps_old_bytes(
    "vmsplice-child-unmap"
)]
#[case::vmsplice_before_fork_child_write_copies("vmsplice-before-fork-parent-unmap")]
#[case::pinned_pages_are_copied_at_fork("iouring-fixed-buffer-fork")]
#[case::a_pinned_thp_is_copied_at_fork_page_by_page("iouring-fixed-buffer-thp-fork")]
#[case::o_direct_read_lands_in_the_readers_copy("o-direct-read-after-fork")]
fn scenario_verdict_holds_and_first_principles_hold(#[case] name: &str) {
    let (sys, s) = run_one(name);
    if let Some(reason) = &s.verdict.skipped {
        eprintln!("SKIP {name}: {reason}");
        return;
    }
    assert!(s.verdict.holds, "{name}: verdict failed: {:#?}", s.verdict);
    assert!(
        s.verdict.agree,
        "{name}: witnesses disagree: {:?}",
        s.verdict.disagreements
    );
    assert_eq!(
        s.pages.unproven,
        0,
        "{name}: unproven pages with {}",
        if sys.pfn_visible { "PFNs" } else { "no PFNs" }
    );
    if !sys.pfn_visible {
        eprintln!("PFNs hidden: PFN-level assertions of {name} skipped");
        return;
    }
    check_first_principles(name, &s);
}

fn check_first_principles(name: &str, s: &ScenarioResult) {
    let rows = &s.page_rows;
    let kb = page_kb();
    let n = s.config.pages as usize;
    match name {
        "private-idle" => {
            for r in rows {
                assert_eq!(r.pfns[0], r.pfns[1], "page {} has one PFN in both", r.index);
                assert_eq!(r.mapcounts[0], Some(2), "page {} is mapped twice", r.index);
                assert!(!r.exclusive[0] && !r.exclusive[1]);
            }
        }
        "private-child-writes" => {
            for r in rows {
                if r.index < 4 {
                    assert_ne!(
                        r.pfns[1], r.pfns[0],
                        "the child's written page {} has a new PFN",
                        r.index
                    );
                    assert_eq!((r.mapcounts[0], r.mapcounts[1]), (Some(1), Some(1)));
                } else {
                    assert_eq!(
                        r.pfns[1], r.pfns[0],
                        "untouched page {} keeps one PFN",
                        r.index
                    );
                    assert_eq!(r.mapcounts[0], Some(2));
                }
            }
            assert_eq!(s.parent.new_pfns, Some(0), "the parent's PFNs did not move");
            assert_eq!(
                s.child.as_ref().unwrap().new_pfns,
                Some(4),
                "the child got the 4 copies"
            );
            let p = s.parent.smaps.unwrap();
            assert_eq!(
                p.private_dirty_kb,
                4 * kb,
                "parent Private_Dirty = the copied pages"
            );
            assert_eq!(p.shared_dirty_kb, (n as u64 - 4) * kb);
            assert_eq!(s.content.parent_sees_child_writes, Some(false));
        }
        "private-parent-writes" => {
            assert_eq!(
                s.parent.new_pfns,
                Some(4),
                "the parent's written pages moved"
            );
            assert_eq!(
                s.child.as_ref().unwrap().new_pfns,
                Some(0),
                "the child keeps the old pages"
            );
            assert_eq!(s.content.child_sees_parent_writes, Some(false));
        }
        "private-both-write" => {
            assert_eq!(s.pages.copied, 1);
            assert_eq!(
                s.parent.new_pfns,
                Some(0),
                "after the child's copy the parent's page is exclusive: reused"
            );
            assert_eq!(s.child.as_ref().unwrap().new_pfns, Some(1));
        }
        "shared-child-writes" => {
            assert_eq!(s.pages.copied, 0, "MAP_SHARED never copies");
            assert_eq!(s.content.parent_sees_child_writes, Some(true));
            for r in rows.iter().filter(|r| r.index < 4) {
                assert_eq!(r.pfns[0], r.pfns[1]);
                assert!(
                    !r.exclusive[0],
                    "a page mapped by two processes is not exclusive"
                );
            }
        }
        "wipeonfork" => {
            assert_eq!(s.pages.wiped, n as u64);
            assert_eq!(s.content.child_reads_zero, Some(true));
            assert_eq!(
                s.child.as_ref().unwrap().smaps.unwrap().rss_kb,
                0,
                "the zero page is not in Rss"
            );
        }
        "dontfork" => {
            let c = s.child.as_ref().unwrap();
            assert!(!c.vma_present, "the DONTFORK VMA is not in the child");
            assert_eq!(c.exit.as_ref().unwrap().signal.as_deref(), Some("SIGSEGV"));
            assert_eq!(s.pages.not_inherited, n as u64);
        }
        "thp-child-writes" => {
            let t = s.thp.as_ref().unwrap();
            assert_eq!(t.parent_anon_huge_kb_before, 2048);
            // Since Linux 5.8 a write to a shared THP splits the PMD and copies one base page.
            assert_eq!(s.pages.copied, 1);
            assert_eq!(
                t.bytes_copied_by_one_write,
                cowscope::kernel::page_size() as u64
            );
        }
        "many-children" => {
            assert_eq!(s.processes.len(), 5);
            for (i, p) in s.processes[1..].iter().enumerate() {
                assert_eq!(
                    p.pages.unwrap().copied,
                    1,
                    "child {i} copied only its own page"
                );
                assert_eq!(p.new_pfns, Some(1));
            }
            // An untouched page is mapped by all five processes.
            assert_eq!(rows[n - 1].mapcounts[0], Some(5));
        }
        "fork-chain" => {
            let roles: Vec<_> = s.processes.iter().map(|p| p.role.as_str()).collect();
            assert_eq!(roles, ["parent", "child", "grandchild"]);
            assert_eq!(s.processes[1].pages.unwrap().copied, 0);
            assert_eq!(s.processes[2].pages.unwrap().copied, 1);
            assert_eq!(
                rows[0].mapcounts[0],
                Some(2),
                "parent and child still share the old page 0"
            );
        }
        "seed-09c" => {
            let d = s.dumps.as_ref().unwrap();
            assert!(d.parent.contains("Scoped allocator is born"));
            assert!(
                d.child
                    .contains(cowscope::fork::scenarios::SEED_09C_CHILD_TEXT)
            );
            assert!(
                !d.parent
                    .contains(cowscope::fork::scenarios::SEED_09C_CHILD_TEXT)
            );
            assert_eq!(s.pages.copied, 1);
        }
        "zero-page-child-writes" => {
            // Every page of the parent is the one zero page (kpagecount 0, one PFN).
            let zero = rows[0].pfns[0];
            assert!(rows.iter().all(|r| r.pfns[0] == zero), "one zero page");
            for r in rows {
                if r.index < 4 {
                    assert_ne!(r.pfns[1], zero, "written page {} got a frame", r.index);
                    assert_eq!(r.mapcounts[1], Some(1));
                } else {
                    assert_eq!(r.pfns[1], zero, "read page {} is the zero page", r.index);
                }
            }
            assert_eq!(
                s.parent.smaps.unwrap().rss_kb,
                0,
                "the zero page is not in Rss"
            );
            assert_eq!(s.timing.bytes_copied_by_one_write, Some(kb * 1024));
        }
        "huge-zero-page-child-writes" => {
            assert_eq!(
                s.parent.new_pfns,
                Some(0),
                "the parent keeps the huge zero page"
            );
            let c = s.child.as_ref().unwrap();
            // 4 KiB (split, before 6.13) or a whole THP (6.13+), nothing between.
            let moved = c.new_pfns.unwrap();
            assert!(moved == 1 || moved == n as u64, "{moved} pages moved");
            assert_eq!(s.timing.bytes_copied_by_one_write, Some(moved * kb * 1024));
        }
        "thp-parent-writes" => {
            assert_eq!(s.parent.new_pfns, Some(1), "the parent's page 0 moved");
            assert_eq!(s.child.as_ref().unwrap().new_pfns, Some(0));
            assert_eq!(s.timing.bytes_copied_by_one_write, Some(kb * 1024));
            assert_eq!(
                s.child.as_ref().unwrap().smaps.unwrap().anon_huge_kb,
                2048,
                "the child's PMD stays"
            );
        }
        "thp-pte-mapped-child-writes" => {
            assert_eq!(s.thp.as_ref().unwrap().parent_anon_huge_kb_before, 2048);
            assert_eq!(s.parent.smaps.unwrap().anon_huge_kb, 0, "PTE-mapped");
            assert_eq!(s.pages.copied, 1);
            assert_eq!(s.timing.bytes_copied_by_one_write, Some(kb * 1024));
        }
        "thp-single-pte-child-writes" => {
            assert_eq!((s.pages.copied, s.pages.absent), (1, n as u64 - 1));
            assert_eq!(s.parent.present, 1);
        }
        "thp-partial-mremap-child-writes" => {
            assert_eq!((s.pages.copied, s.pages.absent), (2, 256));
            assert_eq!(s.child.as_ref().unwrap().new_pfns, Some(2));
            assert_eq!(s.timing.bytes_copied_by_one_write, Some(kb * 1024));
        }
        "mthp-64k-child-writes" => {
            assert_eq!(s.pages.copied, 1, "one base page of the 64 kB folio");
            assert_eq!(s.timing.bytes_copied_by_one_write, Some(kb * 1024));
        }
        "hugetlb-2m-child-writes" => {
            assert_eq!(s.child.as_ref().unwrap().new_pfns, Some(n as u64));
            assert_eq!(s.parent.new_pfns, Some(0));
            assert_eq!(s.timing.bytes_copied_by_one_write, Some(2 << 20));
            let p = s.parent.smaps.unwrap();
            assert_eq!(
                (p.rss_kb, p.private_hugetlb_kb),
                (0, 2048),
                "hugetlb is not in Rss"
            );
        }
        "file-private-child-writes" | "madv-free-child-writes" | "mprotect-cycle-child-writes" => {
            assert_eq!(s.parent.new_pfns, Some(0));
            assert_eq!(s.child.as_ref().unwrap().new_pfns, Some(4));
            assert_eq!(s.content.parent_sees_child_writes, Some(false));
        }
        "swapped-child-writes" => {
            assert_eq!(s.parent.present, 0, "the parent's pages stay in swap");
            assert_eq!(s.child.as_ref().unwrap().new_pfns, Some(4));
            assert_eq!(s.parent.smaps.unwrap().swap_kb, n as u64 * kb);
        }
        "memfd-shared-child-writes" => {
            assert_eq!(s.pages.copied, 0);
            assert_eq!(s.content.parent_sees_child_writes, Some(true));
        }
        "vmsplice-child-unmap" => {
            assert_eq!(s.content.pipe_reads_pre_fork_data, Some(true));
            assert_eq!(
                s.parent.new_pfns,
                Some(4),
                "the pipe's reference made the parent copy"
            );
            assert_eq!(s.pages.not_inherited, 4, "the child unmapped pages 0-3");
        }
        "vmsplice-before-fork-parent-unmap" => {
            assert_eq!(s.content.pipe_reads_pre_fork_data, Some(true));
            assert_eq!(s.child.as_ref().unwrap().new_pfns, Some(4));
        }
        "iouring-fixed-buffer-thp-fork" => {
            // fork splits the pinned THP's PMD in the parent and copies all 512 pages for the
            // child as 4 KiB pages, before anyone writes.
            let c = s.child.as_ref().unwrap();
            assert_eq!(c.new_pfns, Some(n as u64));
            assert_eq!(
                c.smaps.unwrap().anon_huge_kb,
                0,
                "the child's copies are 4 KiB pages"
            );
            assert_eq!(s.parent.new_pfns, Some(0));
            assert_eq!(s.timing.bytes_copied_at_fork, Some(2 << 20));
        }
        "iouring-fixed-buffer-fork" => {
            // Copied at fork, before anyone wrote: every child frame is new.
            assert_eq!(s.child.as_ref().unwrap().new_pfns, Some(n as u64));
            assert_eq!(
                s.parent.new_pfns,
                Some(0),
                "the pinned pages stay the parent's"
            );
            assert_eq!(s.timing.bytes_copied_at_fork, Some(n as u64 * kb * 1024));
        }
        "o-direct-read-after-fork" => {
            assert_eq!(s.child.as_ref().unwrap().new_pfns, Some(4));
            assert_eq!(s.parent.new_pfns, Some(0));
        }
        other => panic!("no first-principles check for {other}"),
    }
}

#[test]
fn a_hanging_child_is_killed_on_timeout_and_reaped() {
    let mut s = by_name("private-idle").unwrap();
    s.children = vec![ProcessPlan::of(vec![Op::Hang])];
    let sys = cowscope::mem::system::detect();
    let opts = ForkReportOptions {
        timeout: Duration::from_millis(300),
        runs: 1,
        ..Default::default()
    };
    let r = run_scenario(&s, &sys, &opts).unwrap();
    let exit = r
        .child
        .as_ref()
        .and_then(|c| c.exit.clone())
        .expect("exit recorded");
    assert!(exit.killed_on_timeout, "{exit:?}");
    assert_eq!(exit.signal.as_deref(), Some("SIGKILL"));
    assert!(!r.verdict.holds);
    assert!(
        our_children().is_empty(),
        "no zombie left: {:?}",
        our_children()
    );
}

#[test]
fn no_child_remains_after_the_whole_catalogue() {
    let opts = ForkReportOptions {
        runs: 2,
        ..Default::default()
    };
    let r = fork_report(&opts).unwrap();
    assert_eq!(
        r.body.scenarios.len(),
        cowscope::fork::scenarios::list().len()
    );
    assert!(
        our_children().is_empty(),
        "children left behind: {:?}",
        our_children()
    );
}

#[test]
fn pages_rescales_the_16_page_scenarios() {
    let opts = ForkReportOptions {
        scenarios: vec!["private-child-writes".into()],
        pages: Some(64),
        runs: 1,
        ..Default::default()
    };
    let s = &fork_report(&opts).unwrap().body.scenarios[0];
    assert_eq!(s.config.pages, 64);
    assert_eq!(s.pages.copied + s.pages.unproven, 4);
    assert_eq!(s.pages.shared + s.pages.copied + s.pages.unproven, 64);
}

#[test]
fn timing_reports_medians_of_the_cow_fault_and_the_owned_write() {
    let opts = ForkReportOptions {
        scenarios: vec!["private-child-writes".into()],
        runs: 3,
        ..Default::default()
    };
    let s = &fork_report(&opts).unwrap().body.scenarios[0];
    assert_eq!(s.timing.runs, 3);
    assert!(s.timing.fork_ns.is_some_and(|n| n > 0));
    let (cow, owned) = (
        s.timing.cow_fault_ns.unwrap(),
        s.timing.owned_write_ns.unwrap(),
    );
    // A COW fault allocates and copies a page; a store to an owned page does neither.
    assert!(cow > owned, "cow {cow} ns vs owned {owned} ns");
}

fn cowscope() -> Command {
    Command::cargo_bin("cowscope").unwrap()
}

#[rstest]
#[case::unknown_scenario(&["fork-report", "--scenario", "nope"], "unknown scenario 'nope'")]
#[case::zero_pages(&["fork-report", "--pages", "0"], "--pages must be between")]
#[case::absurd_pages(&["fork-report", "--pages", "99999999999"], "--pages must be between")]
#[case::pages_not_a_number(&["fork-report", "--pages", "lots"], "--pages must be a whole number")]
#[case::zero_runs(&["fork-report", "--runs", "0"], "--runs must be between")]
#[case::duplicate_scenario(&["fork-report", "--scenario", "dontfork", "--scenario", "dontfork"], "given twice")]
#[case::too_few_pages_for_the_writes(&["fork-report", "--scenario", "many-children", "--pages", "2"], "needs --pages of at least 4")]
#[case::unknown_flag(&["fork-report", "--bogus"], "--bogus")]
#[case::out_in_missing_dir(&["fork-report", "--scenario", "private-idle", "--out", "/nonexistent-dir/x.json"], "/nonexistent-dir/x.json")]
fn bad_input_exits_2_with_a_message_naming_it(#[case] args: &[&str], #[case] needle: &str) {
    let out = cowscope().args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(needle),
        "stderr {err:?} should name {needle:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn pages_beyond_the_available_memory_are_refused_before_anything_is_mapped() {
    let avail_kb = cowscope::kernel::meminfo_kb("MemAvailable").expect("/proc/meminfo");
    let page_kb = (cowscope::kernel::page_size() / 1024) as u64;
    // Twice what is available: no concurrent change of MemAvailable makes that fit.
    let pages = 2 * avail_kb / page_kb;
    let out = cowscope()
        .args(["fork-report", "--scenario", "private-idle", "--pages"])
        .arg(pages.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MemAvailable"), "{err}");
    assert!(err.contains(&format!("--pages {pages} needs")), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn out_writes_atomically_and_a_failed_run_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.json");
    cowscope()
        .args([
            "fork-report",
            "--scenario",
            "private-idle",
            "--runs",
            "1",
            "--out",
        ])
        .arg(&file)
        .assert()
        .success();
    let first = std::fs::read_to_string(&file).unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["scenarios"][0]["name"], "private-idle");
    cowscope()
        .args(["fork-report", "--scenario", "nope", "--out"])
        .arg(&file)
        .assert()
        .code(2);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        first,
        "the earlier report is intact"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
}

#[test]
fn table_format_names_every_scenario() {
    let out = cowscope()
        .args(["fork-report", "--format", "table", "--runs", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for (name, _) in cowscope::fork::scenarios::list() {
        assert!(
            text.contains(name.as_str()),
            "{name} missing from the table:\n{text}"
        );
    }
}

#[test]
fn list_names_the_catalogue() {
    let out = cowscope().args(["fork-report", "--list"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().count(),
        cowscope::fork::scenarios::list().len()
    );
}

/// The built binary, copied where an unprivileged user can execute it.
fn binary_for_nobody() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("cowscope");
    std::fs::copy(assert_cmd::cargo::cargo_bin("cowscope"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

#[test]
fn without_privilege_pfns_are_never_evidence() {
    if !is_root() {
        eprintln!("SKIP: setpriv needs root to drop to uid 65534");
        return;
    }
    let (_dir, bin) = binary_for_nobody();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["fork-report", "--runs", "1"])
        .current_dir("/")
        .output()
        .expect("setpriv runs");
    // Some claims cannot be proven without PFNs: exit 3, never 1 (nothing failed) and never 0.
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(v["system"]["pfn_visible"], false);
    assert_eq!(v["system"]["kpage_readable"], false);
    for s in v["scenarios"].as_array().unwrap() {
        let ev: Vec<_> = s["verdict"]["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(
            !ev.contains(&"pfn") && !ev.contains(&"kpagecount"),
            "{}: {ev:?}",
            s["name"]
        );
        // A page the kernel did not let us decide is unproven, and so is the verdict: it
        // neither holds nor fails.
        assert_ne!(
            s["verdict"]["state"], "failed",
            "{}: {}",
            s["name"], s["verdict"]
        );
        if s["pages"]["unproven"].as_u64().unwrap() > 0 {
            assert_eq!(s["verdict"]["state"], "unproven", "{}", s["name"]);
            assert_eq!(s["verdict"]["holds"], false, "{}", s["name"]);
        }
    }
    // What the exclusive bit can prove without PFNs: the child's 4 written pages differ.
    let pcw = v["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "private-child-writes")
        .unwrap();
    assert_eq!(pcw["pages"]["copied"], 4);
}

fn run_as_nobody(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let (_dir, bin) = binary_for_nobody();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(args)
        .current_dir("/")
        .output()
        .expect("setpriv runs");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), v)
}

/// The same fact (bit 56 of a PMD-mapped THP follows the head page) is a kernel quirk with
/// PFNs (kpagecount shows it) and without (smaps shows it); without PFNs the THP's shared
/// pages cannot be proven shared, so the verdict is unproven (exit 3), never a failure.
#[test]
fn thp_child_writes_without_privilege_is_unproven_with_the_same_quirk() {
    if !is_root() {
        eprintln!("SKIP: setpriv needs root to drop to uid 65534");
        return;
    }
    let (_, root) = run_one("thp-child-writes");
    if root.verdict.skipped.is_some() {
        eprintln!("SKIP: no THP here");
        return;
    }
    let (code, v) = run_as_nobody(&[
        "fork-report",
        "--runs",
        "1",
        "--scenario",
        "thp-child-writes",
    ]);
    let nv = &v["scenarios"][0]["verdict"];
    assert_eq!(code, Some(3), "{nv}");
    assert_eq!(nv["state"], "unproven");
    assert_eq!(nv["agree"], true, "no disagreement: {nv}");
    let quirk = |q: &serde_json::Value| {
        q.as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x.as_str()
                    .unwrap_or("")
                    .contains("follows the THP's head page")
            })
        })
    };
    let root_has = root
        .verdict
        .kernel_quirks
        .iter()
        .any(|q| q.contains("follows the THP's head page"));
    assert_eq!(
        quirk(&nv["kernel_quirks"]),
        root_has,
        "root and non-root classify the bit-56 fact the same way: {nv}"
    );
}

/// Issue 9: without PFNs each process's row shows its own class, and pages that cannot be
/// proven are drawn unproven (many-children: child-2 wrote page 1 only).
#[test]
fn svg_without_privilege_shows_each_process_its_own_class() {
    if !is_root() {
        eprintln!("SKIP: setpriv needs root to drop to uid 65534");
        return;
    }
    let (_dir, bin) = binary_for_nobody();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args([
            "fork-report",
            "--runs",
            "1",
            "--scenario",
            "many-children",
            "--format",
            "svg",
        ])
        .current_dir("/")
        .output()
        .unwrap();
    let svg = String::from_utf8_lossy(&out.stdout);
    assert!(
        svg.contains("<title>child-2 page 1: 1 copied</title>"),
        "{svg}"
    );
    for p in [0, 2, 3] {
        assert!(
            !svg.contains(&format!("<title>child-2 page {p}: 1 copied</title>")),
            "child-2 did not copy page {p}"
        );
    }
    assert!(svg.contains("<title>child-2 page 0: 1 unproven</title>"));
    assert!(svg.contains("url(#hatch)"), "unproven cells are hatched");
}

#[test]
fn svg_draws_large_arenas_aggregated_with_counts() {
    let opts = ForkReportOptions {
        scenarios: vec!["private-child-writes".into(), "thp-child-writes".into()],
        pages: Some(4096),
        runs: 1,
        ..Default::default()
    };
    let r = fork_report(&opts).unwrap();
    let svg = cowscope::render::svg::fork_report(&r);
    // 4096 pages in 64 cells of 64 pages; the first holds the 4 copies.
    assert!(svg.contains("one cell per 64 pages"), "{svg}");
    assert!(
        svg.contains("<title>child pages 0-63 (64 pages): 60 shared, 4 copied</title>"),
        "{svg}"
    );
    assert!(svg.contains("<title>child pages 4032-4095 (64 pages): 64 shared</title>"));
    if r.body.scenarios[1].verdict.skipped.is_none() && r.system.pfn_visible {
        // 512 pages in 64 cells of 8.
        assert!(svg.contains("<title>child pages 0-7 (8 pages): 7 shared, 1 copied</title>"));
    }
    assert!(!svg.contains("1 pages"), "singular: 1 page");
    // A legend names every class, in the colour-blind-safe palette.
    for c in cowscope::fork::classify::PageClass::ALL {
        assert!(
            svg.contains(&format!(">{}</tspan>", c.label())),
            "{}",
            c.label()
        );
        assert!(svg.contains(cowscope::render::svg::colour(c)));
    }
}

#[test]
fn schema_file_is_current_and_a_real_report_validates() {
    let generated = cowscope::doc::schema("fork-report").unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results/schema.json");
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("results/schema.json exists"))
            .unwrap();
    assert!(
        on_disk == generated,
        "results/schema.json is stale: regenerate with `cargo run -- schema fork-report > results/schema.json`"
    );
    let report = fork_report(&ForkReportOptions {
        runs: 1,
        ..Default::default()
    })
    .unwrap();
    let instance = serde_json::to_value(&report).unwrap();
    let validator = jsonschema::validator_for(&on_disk).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "report does not validate: {errors:?}");
    // The schema is not vacuous: a report without scenarios fails it.
    let mut broken = instance.clone();
    broken.as_object_mut().unwrap().remove("scenarios");
    assert!(!validator.is_valid(&broken));
}

#[test]
fn schema_rejects_an_unknown_document() {
    let out = cowscope().args(["schema", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_fault_in_a_subject_reports_its_address_and_signal() {
    use cowscope::fork::child::{ChildOp, TAG_FAULT_ADDR, TAG_FAULT_SIGNAL};
    use cowscope::fork::subject::{SubjectPipes, spawn};
    let arena = cowscope::arena::Arena::new(cowscope::arena::ArenaConfig::new(4096)).unwrap();
    let past_end = arena.base_addr() + arena.mapped_len();
    let pipes = SubjectPipes::new().unwrap();
    let mut ops = pipes.prologue().to_vec();
    ops.push(ChildOp::ReportFaults {
        fd: pipes.child_report_fd(),
    });
    ops.push(ChildOp::WriteByte {
        addr: past_end,
        byte: 1,
    });
    ops.extend(pipes.epilogue());
    let (mut subj, _) = spawn(pipes, &ops).unwrap();
    let (msgs, exit) = subj.collect_until_exit(std::time::Instant::now() + Duration::from_secs(10));
    assert_eq!(
        exit.signal.as_deref(),
        Some("SIGSEGV"),
        "the guard page faults"
    );
    let addr = msgs
        .iter()
        .find(|m| m.tag == TAG_FAULT_ADDR)
        .map(|m| m.value as usize);
    assert_eq!(
        addr,
        Some(past_end),
        "si_addr is the first byte past the arena"
    );
    let sig = msgs
        .iter()
        .find(|m| m.tag == TAG_FAULT_SIGNAL)
        .map(|m| m.value as i32);
    assert_eq!(sig, Some(libc::SIGSEGV));
}

/// Why content is read through /proc/<pid>/mem: process_vm_readv pins pages, and pinning a
/// shared anonymous page unshares (copies) it on kernels with anon-exclusive tracking (5.19+).
#[test]
fn process_vm_readv_unshares_but_proc_mem_does_not() {
    use cowscope::fork::child::stamp_page;
    use cowscope::fork::subject::{SubjectPipes, spawn};
    use cowscope::mem::pagemap::Pagemap;
    use std::os::unix::fs::FileExt;
    if !cowscope::mem::system::detect().pfn_visible {
        eprintln!("SKIP: PFNs hidden");
        return;
    }
    let ps = cowscope::kernel::page_size();
    let arena = cowscope::arena::Arena::new(cowscope::arena::ArenaConfig::new(2 * ps)).unwrap();
    let base = arena.base_addr();
    for i in 0..2 {
        // SAFETY: both pages are inside the arena's writable mapping.
        unsafe { stamp_page(base + i * ps, i, ps, b'P') };
    }
    let pipes = SubjectPipes::new().unwrap();
    let mut ops = pipes.prologue().to_vec();
    ops.extend(pipes.epilogue());
    let (mut subj, _) = spawn(pipes, &ops).unwrap();
    subj.wait_ready(std::time::Instant::now() + Duration::from_secs(10))
        .unwrap();
    let pid = subj.pid().as_raw();
    let pfns = || {
        Pagemap::open(pid)
            .unwrap()
            .read(base as u64, (base + 2 * ps) as u64)
            .unwrap()
    };
    let before = pfns();
    // Page 0 through /proc/<pid>/mem.
    let mut buf = vec![0u8; 16];
    std::fs::File::open(format!("/proc/{pid}/mem"))
        .unwrap()
        .read_exact_at(&mut buf, base as u64)
        .unwrap();
    // Page 1 through process_vm_readv.
    let mut buf2 = vec![0u8; 16];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: base + ps,
        len: 16,
    }];
    nix::sys::uio::process_vm_readv(
        subj.pid(),
        &mut [std::io::IoSliceMut::new(&mut buf2)],
        &remote,
    )
    .unwrap();
    let after = pfns();
    subj.finish(std::time::Instant::now() + Duration::from_secs(10));
    assert_eq!(buf[8], b'P');
    assert_eq!(buf2[8], b'P');
    assert_eq!(
        before[0].pfn(),
        after[0].pfn(),
        "/proc/<pid>/mem left page 0 shared"
    );
    assert_ne!(
        before[1].pfn(),
        after[1].pfn(),
        "process_vm_readv copied page 1 in the child"
    );
}

#[test]
fn svg_page_map_draws_one_cell_per_page_and_process() {
    let opts = ForkReportOptions {
        scenarios: vec!["many-children".into()],
        runs: 1,
        ..Default::default()
    };
    let r = fork_report(&opts).unwrap();
    let svg = cowscope::render::svg::fork_report(&r);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let s = &r.body.scenarios[0];
    let cells = svg.matches("<title>").count();
    // One row for the page classes plus one per process after the parent, 16 pages each.
    assert_eq!(cells, s.page_rows.len() * s.processes.len());
    let copied_cells = svg.matches(": 1 copied</title>").count();
    if r.system.pfn_visible {
        // The class row shows pages 0-3 copied; each child row shows its own page copied.
        assert_eq!(copied_cells, 4 + 4);
        for i in 0..4 {
            let who = if i == 0 {
                "child".to_string()
            } else {
                format!("child-{}", i + 1)
            };
            assert!(svg.contains(&format!("<title>{who} page {i}: 1 copied</title>")));
        }
    }
    let out = cowscope()
        .args([
            "fork-report",
            "--scenario",
            "private-idle",
            "--runs",
            "1",
            "--format",
            "svg",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("private-idle"));
}

/// The invariant "code run in a fork child lives in src/fork/child.rs" is enforced here: no
/// other Rust file of the crate or its tests calls fork (the forking call itself lives in
/// subject.rs, and child.rs forks grandchildren).
#[test]
fn every_fork_goes_through_the_one_child_interpreter() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut offenders = Vec::new();
    let mut stack = vec![
        root.join("src"),
        root.join("tests"),
        root.join("benches"),
        root.join("examples"),
    ];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs")
                || p.ends_with("fork/child.rs")
                || p.ends_with("fork/subject.rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                // Built from pieces so this file does not match itself.
                let calls = [
                    ["libc::", "fork("].concat(),
                    ["unistd::", "fork("].concat(),
                    ["{ ", "fork() }"].concat(),
                ];
                if calls.iter().any(|c| code.contains(c.as_str())) {
                    offenders.push(format!("{}:{}", p.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "fork outside src/fork/{{child,subject}}.rs: {offenders:?}"
    );
}

#[test]
fn a_scenario_file_runs_in_the_catalogue_vocabulary() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/scenario-file.json");
    let out = cowscope()
        .args(["fork-report", "--runs", "1", "--scenario-file"])
        .arg(&file)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let names: Vec<_> = v["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["two-children-one-page", "pte-mapped-thp-parent-writes"]
    );
    let s = &v["scenarios"][0];
    if v["system"]["pfn_visible"] == true {
        assert_eq!(out.status.code(), Some(0), "{}", s["verdict"]);
        // Both children copied page 2 (each its own frame); the parent's write to page 5
        // copied into the parent, whose page 2 is still the pre-fork frame.
        assert_eq!(s["processes"][1]["new_pfns"], 1);
        assert_eq!(s["processes"][2]["new_pfns"], 1);
        assert_eq!(s["parent"]["new_pfns"], 1);
        assert_eq!(s["content"]["child_sees_parent_writes"], false);
    }
}

#[rstest]
#[case::wrong_type(r#"{"scenarios": [{"name": "a", "summary": "b", "pages": 4, "children": [{"ops": [{"op": "write", "pages": "x"}]}]}]}"#, "at scenarios[0].children[0].ops[0]")]
#[case::page_past_the_end(r#"{"scenarios": [{"name": "a", "summary": "b", "pages": 4, "parent": {"ops": [{"op": "write", "pages": [4]}]}}]}"#, "at scenarios[0]: a step names page 4")]
#[case::unknown_kind(
    r#"{"scenarios": [{"name": "a", "summary": "b", "pages": 4, "memory": {"kind": "nvram"}}]}"#,
    "at scenarios[0].memory"
)]
fn a_bad_scenario_file_exits_2_naming_the_json_path(#[case] text: &str, #[case] needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.json");
    std::fs::write(&f, text).unwrap();
    let out = cowscope()
        .args(["fork-report", "--scenario-file"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{err}");
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");
}

#[test]
fn the_scenario_file_schema_accepts_the_catalogue_and_the_example() {
    let out = cowscope()
        .args(["schema", "scenario-file"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let catalogue = serde_json::to_value(cowscope::fork::scenario_file::ScenarioFile {
        scenarios: cowscope::fork::scenarios::catalogue(),
    })
    .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&catalogue)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let example: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/scenario-file.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(validator.is_valid(&example));
    assert!(!validator.is_valid(&serde_json::json!({"scenarios": [{"name": "x"}]})));
}

#[test]
fn the_table_keeps_its_columns_in_line_for_large_arenas_and_explains_them() {
    let out = cowscope()
        .args([
            "fork-report",
            "--format",
            "table",
            "--runs",
            "1",
            "--pages",
            "100000",
            "--scenario",
            "private-idle",
            "--scenario",
            "private-child-writes",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    // Heading and both rows: "verdict" and each row's verdict start in the same column.
    let at = lines[1].find("verdict").expect("heading");
    for row in &lines[2..4] {
        let col = row.chars().count() - row[row.find("ok [").expect(row)..].chars().count();
        assert_eq!(col, lines[1][..at].chars().count(), "{text}");
        assert!(row.contains("100000"), "{row}");
    }
    for word in [
        "notin = not inherited",
        "unprv = not provable",
        "P/S kB",
        "cow ns",
    ] {
        assert!(text.contains(word), "legend names {word}: {text}");
    }
}

/// `--allow-sysfs` changes what a case needs (an mTHP size, huge pages, a swap file) and puts
/// every setting back when the case ends.
/// Every setting `--allow-sysfs` may change, with its current value.
fn sysfs_snapshot() -> Vec<(String, String)> {
    let mut files = vec![
        "/proc/sys/vm/nr_hugepages".to_string(),
        "/sys/kernel/mm/transparent_hugepage/enabled".to_string(),
        "/sys/kernel/mm/transparent_hugepage/use_zero_page".to_string(),
        "/proc/swaps".to_string(),
    ];
    if let Ok(d) = std::fs::read_dir("/sys/kernel/mm/transparent_hugepage") {
        for e in d.flatten() {
            let f = e.path().join("enabled");
            if f.is_file() {
                files.push(f.display().to_string());
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let v = std::fs::read_to_string(&f).unwrap_or_default();
            (f, v)
        })
        .collect()
}

/// Swap files cowscope left behind (none, ever).
fn swap_leftovers() -> Vec<std::path::PathBuf> {
    ["/var/tmp", "/tmp"]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("cowscope-swap-")
        })
        .map(|e| e.path())
        .collect()
}

#[test]
fn allow_sysfs_restores_every_setting_it_changed() {
    if !is_root() {
        eprintln!("SKIP: changing sysfs needs root");
        return;
    }
    let snapshot = sysfs_snapshot;
    let before = snapshot();
    let opts = ForkReportOptions {
        scenarios: vec![
            "mthp-64k-child-writes".into(),
            "hugetlb-2m-child-writes".into(),
            "swapped-child-writes".into(),
        ],
        runs: 1,
        allow_sysfs: true,
        ..Default::default()
    };
    let r = fork_report(&opts).unwrap();
    for s in &r.body.scenarios {
        assert!(
            s.verdict.holds,
            "{}: {:?}",
            s.name,
            s.verdict
                .skipped
                .as_ref()
                .or(s.verdict.disagreements.first())
        );
    }
    assert_eq!(snapshot(), before, "every setting is back");
    let leftovers = swap_leftovers();
    assert!(
        leftovers.is_empty(),
        "the swap file is removed: {leftovers:?}"
    );
}

/// Ctrl-C (or SIGTERM) in the middle of `--allow-sysfs` cases ends the run at the next safe
/// point: every setting is restored, the swap file is gone, nothing is written, and the exit
/// code says which signal (128 + n). Signals land at several moments, some mid-case.
#[rstest]
#[case::sigterm_early(libc::SIGTERM, 20)]
#[case::sigint_mid_run(libc::SIGINT, 80)]
#[case::sighup_later(libc::SIGHUP, 160)]
fn a_stop_signal_during_allow_sysfs_cases_restores_everything(
    #[case] sig: i32,
    #[case] after_ms: u64,
) {
    if !is_root() {
        eprintln!("SKIP: changing sysfs needs root");
        return;
    }
    let before = sysfs_snapshot();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("cowscope"))
        .args([
            "fork-report",
            "--allow-sysfs",
            "--runs",
            "1",
            "--scenario",
            "swapped-child-writes",
            "--scenario",
            "hugetlb-2m-child-writes",
            "--scenario",
            "mthp-64k-child-writes",
            "--scenario",
            "mthp-16k-child-writes",
            "--scenario",
            "iouring-fixed-buffer-thp-fork",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(after_ms));
    // SAFETY: kill(2) with our own child's pid.
    unsafe { libc::kill(child.id() as i32, sig) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // It may also have finished before the signal: then it exits 0 with a report.
    if out.status.code() != Some(0) {
        assert_eq!(out.status.code(), Some(128 + sig), "{err}");
        assert!(out.stdout.is_empty(), "no partial report");
        assert!(err.contains("restored"), "{err}");
    }
    assert_eq!(sysfs_snapshot(), before, "every setting is back");
    assert!(swap_leftovers().is_empty(), "no swap file left");
}
