//! `cowscope trace --pid` without `--syscalls` (issue 16): releases come from the kernel's
//! syscall tracepoints, read from perf ring buffers, with no ptrace stop per syscall.
//! Expected figures follow from tests/trace_programs/attach_history.c, never from
//! cowscope's output.
//!
//! Run with `--test-threads=1`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("cowscope")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn attach_history() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("cowscope-attach-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/trace_programs/attach_history.c");
        let exe = dir.join("attach_history");
        let out = Command::new("cc")
            .args(["-O1", "-o"])
            .arg(&exe)
            .arg(&src)
            .output()
            .expect("cc runs (install build-essential)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        exe
    })
}

const CLASSES: [&str; 16] = [
    "shared",
    "zero",
    "copied_by_child",
    "copied_by_parent",
    "copied_at_fork",
    "copied_then_released_by_child",
    "copied_then_released_by_parent",
    "released_by_child",
    "released_by_parent",
    "released_by_both",
    "moved",
    "diverged",
    "only_parent",
    "only_child",
    "absent",
    "unproven",
];

/// Every class of `row` equals `want` (missing names: 0), and the classes sum to `total`.
fn assert_counts(row: &Value, want: &[(&str, u64)]) {
    let mut sum = 0;
    for c in CLASSES {
        let expected = want.iter().find(|(k, _)| *k == c).map_or(0, |(_, v)| *v);
        assert_eq!(row[c].as_u64(), Some(expected), "{c} in {row:#}");
        sum += expected;
    }
    assert_eq!(row["total"].as_u64(), Some(sum), "total in {row:#}");
}

/// Start attach_history, attach `cowscope trace --pid` with `extra`, and return the report and
/// the arena's start address.
fn trace_attached(extra: &[&str]) -> (Value, String) {
    let mut prog = Command::new(attach_history())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(prog.stdout.take().unwrap()).lines();
    let arena = lines
        .next()
        .unwrap()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let mut c = Command::new(bin())
        .args(["trace", "--pid", &prog.id().to_string(), "--out"])
        .arg(&out)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = c.kill();
            let _ = prog.kill();
            panic!("cowscope did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut c.stderr.take().unwrap(), &mut err);
    assert_eq!(status.code(), Some(0), "the program exits 0: {err}");
    let _ = prog.wait();
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    (v, arena)
}

fn arena_row<'a>(fork: &'a Value, start: &str) -> &'a Value {
    fork["final"]["vmas"]
        .as_array()
        .expect("a final sample with VMA rows")
        .iter()
        .find(|v| v["start"] == start)
        .unwrap_or_else(|| panic!("no row for {start} in {fork:#}"))
}

/// Releases of an attached program come from the syscall tracepoints (no stop): a page
/// released and written again is a release, never a copy; the program was never stopped
/// for a syscall.
#[test]
fn attached_releases_are_tracked_without_syscall_stops() {
    if !is_root() {
        eprintln!("SKIP: exact attribution and the syscall tracepoints need root");
        return;
    }
    let (v, arena) = trace_attached(&["--interval", "100ms"]);
    let rt = &v["release_tracking"];
    assert_eq!(rt["method"], "tracepoints", "{v:#}");
    assert_eq!(rt["stops"], 0, "no ptrace stop per syscall");
    assert_eq!(rt["events"]["lost"], 0);
    assert_eq!(v["attribution"]["releases_tracked"], true);
    let forks = v["forks"].as_array().unwrap();
    assert_eq!(forks.len(), 1, "{forks:#?}");
    let f = &forks[0];
    assert_eq!(f["final"]["trigger"], "child_exit");
    assert_counts(
        arena_row(f, &arena),
        &[
            ("shared", 250),
            ("copied_by_child", 300),
            ("copied_then_released_by_child", 100),
            ("released_by_child", 50),
            ("copied_by_parent", 200),
            ("released_by_parent", 100),
        ],
    );
    // The peak: a sample during the child's hold saw its 400 copies of the arena (300 kept,
    // 100 released later); its own stack and libc add a few pages in other VMAs.
    let peak = f["peak"]["child"]["pages"].as_u64().expect("a child peak");
    assert!(
        (400..430).contains(&peak),
        "child peak {peak}: {:#}",
        f["peak"]
    );
    assert!(
        f["final"]["copied_by_child"].as_u64() < Some(peak),
        "the final sample comes after the child released 100 of its copies"
    );
    assert!(
        f["peak"]["before_end"]["trigger"] == "interval",
        "{:#}",
        f["peak"]
    );
    let r = &f["releases"];
    assert!(r["by_child"]["pages"].as_u64() >= Some(150), "{r:#}");
    assert!(r["by_parent"]["pages"].as_u64() >= Some(100), "{r:#}");
}

/// `--syscalls` stays the fallback and says so.
#[test]
fn syscalls_stays_the_ptrace_fallback() {
    if !is_root() {
        eprintln!("SKIP: exact attribution needs root");
        return;
    }
    let (v, arena) = trace_attached(&["--syscalls", "--interval", "100ms"]);
    assert_eq!(v["release_tracking"]["method"], "syscalls");
    assert!(v["release_tracking"]["stops"].as_u64() > Some(0));
    assert_counts(
        arena_row(&v["forks"][0], &arena),
        &[
            ("shared", 250),
            ("copied_by_child", 300),
            ("copied_then_released_by_child", 100),
            ("released_by_child", 50),
            ("copied_by_parent", 200),
            ("released_by_parent", 100),
        ],
    );
}

/// Fork lines name both processes (comm and command line); children that exec at once are
/// one line unless `--all-forks`.
#[test]
fn fork_lines_name_both_sides_and_fold_children_that_exec_at_once() {
    let run = |extra: &[&str]| -> String {
        let out = Command::new(bin())
            .arg("trace")
            .args(extra)
            .args(["--", "/bin/sh", "-c", "/bin/true; /bin/true; /bin/true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let folded = run(&[]);
    assert!(folded.contains("3 fork+exec children (true): "), "{folded}");
    assert!(!folded.contains("\nfork 1:"), "{folded}");
    let all = run(&["--all-forks"]);
    let lines: Vec<&str> = all.lines().filter(|l| l.starts_with("fork ")).collect();
    assert_eq!(lines.len(), 3, "{all}");
    for l in lines {
        assert!(
            l.contains(" sh (/bin/sh -c /bin/true; /bin/true; /bin/true) -> "),
            "the parent by comm and command line: {l}"
        );
        assert!(
            l.contains(" true (/bin/true) "),
            "the child after its exec: {l}"
        );
    }
    assert!(!all.contains("fork+exec"), "{all}");
}
