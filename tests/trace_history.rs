//! `cowscope trace` without `--interval`: the history of copies from the write-fault stream
//! (issue 16). A copy freed between two samples is still the side's peak, and still
//! `copied_then_released_by_*`; "before exit" is what a side held before its shutdown began.
//! Expected figures follow from tests/trace_programs/copy_release.c, never from cowscope's
//! output.
//!
//! Run with `--test-threads=1`.

mod trace_support;
use trace_support::{
    bin, can_run_unprivileged_events, cowscope_as, is_root, spawn_reading_arena, vma_row,
};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rstest::rstest;
use serde_json::Value;

/// Pages the program's own stack, libc and loader may add to a side's copies outside the
/// arena (a handful measured on Debian 13; bounded here, not guessed from the output).
const OWN_PAGES: u64 = 16;

/// copy_release and a copy of cowscope, in a world-readable directory (the unprivileged case
/// runs them as uid 65534).
fn programs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("cowscope-history-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/trace_programs/copy_release.c");
        let out = Command::new("cc")
            .args(["-O1", "-o"])
            .arg(dir.join("copy_release"))
            .arg(&src)
            .output()
            .expect("cc runs (install build-essential)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::copy(bin(), dir.join("cowscope")).unwrap();
        dir
    })
}

/// `cowscope trace --out <tmp> -- copy_release MODE N` (as uid 65534 when `unprivileged`):
/// the report and the arena's start.
fn trace(unprivileged: bool, mode: &str, n: u64) -> (Value, String) {
    trace_with(unprivileged, &[], mode, n)
}

/// [`trace`] with more of cowscope's flags.
fn trace_with(unprivileged: bool, flags: &[&str], mode: &str, n: u64) -> (Value, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out_path = dir.path().join("t.json");
    let mut cmd = cowscope_as(unprivileged, &programs().join("cowscope"));
    let out = cmd
        .arg("trace")
        .args(flags)
        .arg("--out")
        .arg(&out_path)
        .arg("--")
        .arg(programs().join("copy_release"))
        .args([mode, &n.to_string()])
        .output()
        .expect("cowscope runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let arena = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("the program prints its arena")
        .to_string();
    let v: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    (v, arena)
}

/// `--no-scan` (the paths of a kernel without PAGEMAP_SCAN) when `no_scan`.
fn scan_way(no_scan: bool) -> &'static [&'static str] {
    if no_scan { &["--no-scan"] } else { &[] }
}

fn the_fork(v: &Value) -> &Value {
    let forks = v["forks"].as_array().unwrap();
    assert_eq!(forks.len(), 1, "{forks:#?}");
    &forks[0]
}

fn pages(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("a number: {v}"))
}

/// The child copies N pages and releases them all before any sample: only the write
/// faults and the release show the copies. Without `--interval` the peak is still N (plus
/// the program's own few pages) and the N pages are copied, then released.
/// Both ways: with PAGEMAP_SCAN and with `--no-scan` (a kernel before 6.7).
#[rstest]
fn a_copy_freed_between_two_samples_is_not_lost(#[values(false, true)] no_scan: bool) {
    if !is_root() {
        eprintln!("SKIP: exact attribution needs root (PFNs)");
        return;
    }
    let n = 500;
    let (v, arena) = trace_with(false, scan_way(no_scan), "free", n);
    let h = &v["fault_history"];
    assert_eq!(h["recorded"], true, "{h:#}");
    assert!(
        h["event"].as_str().unwrap().contains("page_fault_user"),
        "{h:#}"
    );
    assert_eq!(h["lost"], 0, "{h:#}");
    let f = the_fork(&v);
    assert_eq!(
        f["samples"].as_array().unwrap().len(),
        1,
        "the exit sample only"
    );
    let row = vma_row(f, &arena);
    assert_eq!(pages(&row["copied_then_released_by_child"]), n, "{row:#}");
    assert_eq!(pages(&row["copied_by_child"]), 0, "{row:#}");
    assert_eq!(pages(&row["released_by_child"]), 0, "{row:#}");
    assert_eq!(pages(&row["shared"]), 64, "{row:#}");
    assert_eq!(pages(&row["total"]), n + 64, "{row:#}");
    let peak = &f["peak"]["child"];
    assert!(
        (n..=n + OWN_PAGES).contains(&pages(&peak["pages"])),
        "{:#}",
        f["peak"]
    );
    assert_eq!(peak["witness"], "faults", "no sample saw the copies");
    let fin = &f["final"];
    assert!(pages(&fin["copied_by_child"]) < n, "{fin:#}");
}

/// The same program with `--no-fault-history`: nothing records the faults, so the copies
/// freed before the only sample are not seen (the peak is what that sample saw), and the
/// report says why instead of claiming a history.
#[test]
fn without_the_fault_history_a_copy_freed_between_samples_is_not_claimed() {
    if !is_root() {
        eprintln!("SKIP: exact attribution needs root (PFNs)");
        return;
    }
    let n = 500;
    let (v, arena) = trace_with(false, &["--no-fault-history"], "free", n);
    let h = &v["fault_history"];
    assert_eq!(h["recorded"], false, "{h:#}");
    assert!(
        h["reason"].as_str().unwrap().contains("--no-fault-history"),
        "{h:#}"
    );
    let f = the_fork(&v);
    let row = vma_row(f, &arena);
    assert_eq!(pages(&row["copied_then_released_by_child"]), 0, "{row:#}");
    assert_eq!(pages(&row["released_by_child"]), n, "{row:#}");
    assert_eq!(pages(&row["total"]), n + 64, "{row:#}");
    let peak = &f["peak"]["child"];
    assert_eq!(peak["witness"], "samples", "{:#}", f["peak"]);
    assert!(pages(&peak["pages"]) < n, "{:#}", f["peak"]);
    let notes = v["notes"].to_string();
    assert!(notes.contains("--no-fault-history"), "{notes}");
}

#[test]
fn stacks_without_the_fault_history_is_a_usage_error() {
    let out = Command::new(bin())
        .args(["trace", "--stacks", "--no-fault-history", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-fault-history"), "{err}");
}

/// The child holds N copies while it "serves", then its shutdown releases 3N/4 and it exits:
/// the peak and "before exit" are N (the release storm began after its last copy), the exit
/// sample N/4.
#[rstest]
fn before_exit_is_what_a_side_held_before_its_shutdown_released_it(
    #[values(false, true)] no_scan: bool,
) {
    if !is_root() {
        eprintln!("SKIP: exact attribution needs root (PFNs)");
        return;
    }
    let n = 400;
    let (v, arena) = trace_with(false, scan_way(no_scan), "shutdown", n);
    let f = the_fork(&v);
    let row = vma_row(f, &arena);
    assert_eq!(pages(&row["copied_by_child"]), n / 4, "{row:#}");
    assert_eq!(
        pages(&row["copied_then_released_by_child"]),
        3 * n / 4,
        "{row:#}"
    );
    let peak = pages(&f["peak"]["child"]["pages"]);
    assert!((n..=n + OWN_PAGES).contains(&peak), "{:#}", f["peak"]);
    let before = &f["peak"]["before_exit"]["child"];
    assert_eq!(before["began"], "release_storm", "{before:#}");
    assert!(
        (n..=n + OWN_PAGES).contains(&pages(&before["pages"])),
        "{before:#}"
    );
    // The storm began after the last copy, before the exit stop.
    let exit_at = f["final"]["at"].as_f64().unwrap();
    assert!(
        before["at"].as_f64().unwrap() < exit_at - 0.25,
        "{before:#} vs exit {exit_at}"
    );
}

/// Without privilege the software page-fault event (one's own processes at
/// perf_event_paranoid 2): PFNs are hidden, yet the timeline still says the child copied N
/// pages and released them.
#[test]
fn without_privilege_the_software_event_still_gives_the_peak() {
    if !can_run_unprivileged_events() {
        return;
    }
    let n = 300;
    let (v, arena) = trace(true, "free", n);
    let h = &v["fault_history"];
    assert_eq!(h["recorded"], true, "{h:#}");
    assert!(h["event"].as_str().unwrap().contains("software"), "{h:#}");
    assert_eq!(h["lost"], 0, "{h:#}");
    assert_eq!(v["attribution"]["pfn_visible"], false);
    let f = the_fork(&v);
    let peak = &f["peak"]["child"];
    assert!(
        (n..=n + OWN_PAGES).contains(&pages(&peak["pages"])),
        "{:#}",
        f["peak"]
    );
    assert_eq!(peak["witness"], "faults");
    let row = vma_row(f, &arena);
    assert!(pages(&row["copied_then_released_by_child"]) >= n, "{row:#}");
}

/// A burst of release records overflows the child's ring (a LOST record) between its copies
/// of A and of B: only A, copied before the loss was found, may hide a lost release and is
/// `diverged`; B, seen shared at samples after the loss, is the child's copy. Attached
/// (`--pid`: releases from the syscall tracepoints), `--interval 50ms`.
#[test]
fn lost_release_records_make_diverged_only_the_pages_copied_before_the_loss() {
    if !is_root() {
        eprintln!("SKIP: the syscall tracepoints and exact attribution need root");
        return;
    }
    let n = 200;
    let (mut prog, _lines, arena) = spawn_reading_arena(
        Command::new(programs().join("copy_release")).args(["lost", &n.to_string()]),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let c = Command::new(bin())
        .args([
            "trace",
            "--pid",
            &prog.id().to_string(),
            "--interval",
            "50ms",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let _ = prog.wait();
    assert_eq!(
        c.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&c.stderr)
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let events = &v["release_tracking"]["events"];
    assert!(
        pages(&events["lost"]) > 0,
        "200,000 calls overflow a 1 MiB ring: {events:#}"
    );
    let f = the_fork(&v);
    assert!(
        f["notes"].to_string().contains("were lost"),
        "{:#}",
        f["notes"]
    );
    let row = vma_row(f, &arena);
    assert_eq!(
        pages(&row["diverged"]),
        n,
        "A: copied before the loss {row:#}"
    );
    assert_eq!(
        pages(&row["copied_by_child"]),
        n,
        "B: copied after it {row:#}"
    );
    assert_eq!(pages(&row["shared"]), 64, "{row:#}");
    assert_eq!(pages(&row["total"]), 2 * n + 64, "{row:#}");
}
