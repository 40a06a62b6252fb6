//! Long work (issue 17): scenario files that name pages by range, a stop signal in the middle
//! of a scenario, and progress on stderr (shown where asked, silent where not).
//!
//! Run with `--test-threads=1`: the signal tests signal cowscope by pid and count its children.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rstest::rstest;
use serde_json::Value;

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("cowscope")
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A scenario whose one child writes `pages` (a page list in any form) of an arena.
fn one_writer(name: &str, arena: usize, pages: &str) -> String {
    format!(
        r#"{{"scenarios": [{{"name": "{name}", "summary": "the child writes some pages",
            "memory": {{"kind": "anon"}}, "pages": {arena},
            "children": [{{"ops": [{{"op": "write", "pages": {pages}}}]}}]}}]}}"#
    )
}

/// `cowscope [global] fork-report --scenario-file F --runs 1 [extra]`, stdin closed, stdout
/// and stderr captured (pipes: not a terminal), CI unset.
fn fork_report(global: &[&str], file: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(global)
        .args(["fork-report", "--runs", "1", "--scenario-file"])
        .arg(file)
        .args(extra)
        .env_remove("CI")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

// ---- page ranges, end to end ----

/// Every page written, named three ways: the same document (from first principles: a child
/// that writes a page of a private arena copies it; the others stay shared).
#[rstest]
#[case::all(64, r#""all""#, 64)]
#[case::inclusive_text(64, r#""0-31""#, 32)]
#[case::every_fourth(64, r#"{"from": 0, "to": 64, "step": 4}"#, 16)]
fn a_range_runs_like_the_list_it_names(
    #[case] arena: usize,
    #[case] pages: &str,
    #[case] copied: u64,
) {
    let dir = tempfile::tempdir().unwrap();
    let f = write_file(dir.path(), "s.json", &one_writer("ranged", arena, pages));
    let out = fork_report(&[], &f, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sc = &v["scenarios"][0];
    assert_eq!(sc["verdict"]["state"], "held", "{}", sc["verdict"]);
    assert_eq!(sc["pages"]["copied"], copied);
    assert_eq!(sc["pages"]["shared"], arena as u64 - copied);
}

#[rstest]
#[case::backwards(r#""9-2""#, "runs backwards")]
#[case::past_the_end(r#""0-64""#, "ends past the arena's 64 pages")]
#[case::unknown_word(r#""most""#, "a page list is an array of page indices")]
#[case::empty_span(r#"{"from": 3, "to": 3}"#, "names no page")]
fn a_bad_range_exits_2_naming_its_json_path(#[case] pages: &str, #[case] needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = write_file(dir.path(), "bad.json", &one_writer("bad", 64, pages));
    let out = fork_report(&[], &f, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("at scenarios[0].children[0].ops[0].pages: "),
        "{err}"
    );
    assert!(err.contains(needle), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
}

// ---- a stop signal inside a scenario ----

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // The state follows the command name in parentheses; a zombie is not alive.
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// SIGINT or SIGTERM while a scenario runs (a child holding up the scenario: `hang`; or a
/// child writing 256 MiB, signalled while the scenario works on it): cowscope kills and reaps
/// the scenario's children, unmaps, writes nothing and exits 128 + the signal, within a
/// couple of seconds.
#[rstest]
#[case::sigint_while_a_child_hangs(nix::sys::signal::Signal::SIGINT, r#"[{"op": "hang"}]"#, 8)]
#[case::sigterm_while_a_child_hangs(nix::sys::signal::Signal::SIGTERM, r#"[{"op": "hang"}]"#, 8)]
#[case::sigint_while_256_mib_are_written_and_judged(
    nix::sys::signal::Signal::SIGINT,
    r#"[{"op": "write", "pages": "all"}]"#,
    65536
)]
fn a_stop_signal_inside_a_scenario_leaves_nothing_behind(
    #[case] sig: nix::sys::signal::Signal,
    #[case] ops: &str,
    #[case] arena: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let f = write_file(
        dir.path(),
        "s.json",
        &format!(
            r#"{{"scenarios": [{{"name": "stopped", "summary": "stopped mid-scenario",
                "pages": {arena}, "children": [{{"ops": {ops}}}, {{"ops": {ops}}}]}}]}}"#
        ),
    );
    let mut c = Command::new(bin())
        .args([
            "fork-report",
            "--runs",
            "1",
            "--timeout",
            "60",
            "--scenario-file",
        ])
        .arg(&f)
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let me = c.id() as i32;
    // Wait for the scenario's first child, then signal in the middle of its work.
    let t0 = Instant::now();
    let mut seen = Vec::new();
    while seen.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(30), "no child forked");
        seen = children(me);
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(150));
    seen.extend(children(me));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(me), sig).unwrap();
    let signalled = Instant::now();
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        if signalled.elapsed() > Duration::from_secs(20) {
            let _ = c.kill();
            panic!("cowscope did not stop within 20 s of {sig}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = signalled.elapsed();
    let mut err = String::new();
    use std::io::Read;
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(128 + sig as i32), "{err}");
    assert!(
        err.contains("stopped by signal"),
        "one sentence says why: {err}"
    );
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to stop (goal: a second or two)"
    );
    for p in seen {
        assert!(!alive(p), "child {p} of the scenario is left");
    }
    assert!(!out.exists(), "nothing is written after a stop");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "s.json")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

// ---- progress on stderr ----

fn small_scenario(dir: &Path) -> PathBuf {
    write_file(dir, "s.json", &one_writer("small", 16, r#""0-3""#))
}

/// stderr is a pipe here: without `--progress` nothing is drawn on it.
#[test]
fn on_a_pipe_there_is_no_progress() {
    let dir = tempfile::tempdir().unwrap();
    let out = fork_report(&[], &small_scenario(dir.path()), &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn progress_asks_for_it_on_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let out = fork_report(&["--progress"], &small_scenario(dir.path()), &[]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scenario 1/1 small (16 pages)"), "{err}");
    // The document itself is untouched: stdout is JSON only.
    let _: Value = serde_json::from_slice(&out.stdout).unwrap();
}

#[rstest]
#[case::before_the_command(&["--quiet", "--progress"], &[])]
#[case::after_the_command(&[], &["--progress", "--quiet"])]
fn quiet_wins_over_progress(#[case] global: &[&str], #[case] extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = fork_report(global, &small_scenario(dir.path()), extra);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Python parent whose forked child lives 0.6 s.
const FORK_AND_WAIT: &str = "import os, time\npid = os.fork()\nif pid == 0:\n    time.sleep(0.6)\n    os._exit(0)\nos.waitpid(pid, 0)\n";

/// `trace --progress` shows its live line; `trace --interval --format table` prints one line
/// per sample of a live pair as it is taken (on stderr: the program's stdout stays its own).
#[test]
fn trace_shows_a_live_line_and_a_line_per_sample() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("t.txt");
    let out = Command::new(bin())
        .args([
            "--progress",
            "trace",
            "--interval",
            "100ms",
            "--format",
            "table",
        ])
        .arg("--out")
        .arg(&report)
        .args(["--", "/usr/bin/python3", "-c", FORK_AND_WAIT])
        .env_remove("CI")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "stdout is the program's");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tracing: "), "{err}");
    let samples: Vec<&str> = err.lines().filter(|l| l.contains(" interval ")).collect();
    // 0.6 s of a live pair sampled every 100 ms: at least 3 samples whatever the load.
    assert!(samples.len() >= 3, "{err}");
    assert!(samples.iter().all(|l| l.contains(" -> ")), "{err}");
    let table = std::fs::read_to_string(&report).unwrap();
    assert!(!table.contains("tracing: "), "no progress in the report");
}

#[test]
fn trace_on_a_pipe_without_progress_prints_no_progress() {
    let out = Command::new(bin())
        .args(["trace", "--format", "json", "--", "/bin/true"])
        .env_remove("CI")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("tracing: "), "{err}");
    // stderr holds the JSON report only.
    let _: Value = serde_json::from_str(&err).unwrap();
}
