//! fork-report: every scenario of the catalogue asserted against first principles, the
//! timeout path, zombies, the non-root path, bad input and the JSON Schema.
//!
//! Run with `cargo test -- --test-threads=1` (these tests fork).

use std::path::PathBuf;
use std::time::Duration;

use assert_cmd::Command;
use cowscope::cmd::fork_report::report as fork_report;
use cowscope::fork::scenarios::{ProcessPlan, by_name};
use cowscope::fork::{ForkReportOptions, ScenarioResult, run::run_scenario};
use rstest::rstest;

fn run_one(name: &str) -> (cowscope::mem::system::SystemInfo, ScenarioResult) {
    let opts = ForkReportOptions {
        scenarios: vec![name.into()],
        runs: 1,
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
        other => panic!("no first-principles check for {other}"),
    }
}

#[test]
fn a_hanging_child_is_killed_on_timeout_and_reaped() {
    let mut s = by_name("private-idle").unwrap();
    s.children = vec![ProcessPlan {
        hangs: true,
        ..Default::default()
    }];
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
            text.contains(name),
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
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
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
        // A page the kernel did not let us decide is unproven, and then the verdict fails.
        if s["pages"]["unproven"].as_u64().unwrap() > 0 {
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
    let copied_cells = svg.matches(": copied</title>").count();
    if r.system.pfn_visible {
        // The class row shows pages 0-3 copied; each child row shows its own page copied.
        assert_eq!(copied_cells, 4 + 4);
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
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
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
