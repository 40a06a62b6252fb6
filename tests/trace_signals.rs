//! `cowscope trace` and a second signal (issue 17, part 2): whatever arrives while cowscope
//! detaches and writes its report, the report is written. With `--pid` the exit is 0 and the
//! target runs on untraced; with a command the exit is the program's (a second signal kills
//! it: `ended_by: killed`) and the report says so.
//!
//! Each case is repeated with random delays (the seed is printed, `COWSCOPE_SEED=N` replays
//! it): before the fix about half of the runs died of the second signal (130) with no report.
//!
//! Run with `--test-threads=1`: the tests signal processes by pid.

mod trace_support;
use trace_support::{children, field, kill, status, wait_exit, wait_until};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rstest::rstest;
use serde_json::Value;

/// cowscope as built, or `COWSCOPE_BIN` (to run these cases against another build, e.g. the
/// one before the fix).
fn bin() -> PathBuf {
    std::env::var_os("COWSCOPE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| assert_cmd::cargo::cargo_bin("cowscope"))
}

/// A small xorshift generator: the delays need no more, and the seed is printed.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("COWSCOPE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("seed {seed} (COWSCOPE_SEED={seed} replays it)");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn millis(&mut self, range: std::ops::Range<u64>) -> Duration {
        Duration::from_millis(range.start + self.below(range.end - range.start))
    }
}

/// Why the process is not clean (traced, stopped), or None when it is gone or runs clean.
fn unclean(pid: i32) -> Option<String> {
    let s = status(pid)?;
    let tracer = field(&s, "TracerPid:");
    let state = field(&s, "State:");
    if tracer != "0" {
        return Some(format!("pid {pid} still traced by {tracer}"));
    }
    if state.starts_with('T') || state.starts_with('t') {
        return Some(format!("pid {pid} left {state}"));
    }
    None
}

/// Whether `sig` is pending for process `pid` (its own or its threads' shared queue).
fn signal_pending(pid: i32, sig: Signal) -> bool {
    let Some(st) = status(pid) else {
        return false;
    };
    let bit = 1u64 << (sig as u64 - 1);
    ["ShdPnd:", "SigPnd:"]
        .iter()
        .any(|k| u64::from_str_radix(&field(&st, k), 16).unwrap_or(0) & bit != 0)
}

fn read_report(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The target: Python holding 128 MiB that forks a child every 50 ms (each sleeps 0.3 s), so
/// syscall stops, forks and live pairs keep coming while cowscope samples them at the end and
/// detaches (a window of tens to hundreds of milliseconds). Started outside cowscope.
const FORKER: &str = r#"
import os, sys, time
buf = bytearray(128 << 20)
for i in range(0, len(buf), 4096):
    buf[i] = 1
print("ready", flush=True)
while True:
    if os.fork() == 0:
        time.sleep(0.3)
        os._exit(0)
    time.sleep(0.05)
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
"#;

fn forking_target() -> Child {
    use std::io::BufRead;
    let mut c = Command::new("/usr/bin/python3")
        .args(["-c", FORKER])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("Debian's /usr/bin/python3 runs");
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    c
}

/// One `trace --pid --syscalls` run signalled twice; returns what went wrong, if anything.
fn attach_signalled_twice(
    target: i32,
    first: Signal,
    second: Signal,
    settle: Duration,
    gap: Duration,
) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let pid_s = target.to_string();
    let mut c = Command::new(bin())
        .args(["trace", "--syscalls", "--pid", &pid_s, "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let me = c.id().to_string();
    wait_until("cowscope to attach", Duration::from_secs(10), || {
        status(target).is_some_and(|s| field(&s, "TracerPid:") == me)
    });
    std::thread::sleep(settle);
    kill(c.id() as i32, first);
    std::thread::sleep(gap);
    kill(c.id() as i32, second);
    let code = wait_exit(&mut c, Duration::from_secs(15));
    let mut problems = Vec::new();
    if code != Some(0) {
        let mut err = String::new();
        if let Some(mut e) = c.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        problems.push(format!("exit {code:?} (stderr: {})", err.trim()));
    }
    match read_report(&out) {
        None => problems.push("no report written".into()),
        Some(v) if v["ended_by"] != "detached" => {
            problems.push(format!("ended_by {}", v["ended_by"]));
        }
        Some(_) => {}
    }
    if status(target).is_none() {
        problems.push("the target died".into());
    }
    // A thread being detached may need a moment to leave its stop.
    let t0 = Instant::now();
    let mut left = Vec::new();
    while t0.elapsed() < Duration::from_secs(2) {
        left = std::iter::once(target)
            .chain(children(target))
            .filter_map(unclean)
            .collect();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    problems.extend(left);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "t.json")
        .collect();
    if !leftovers.is_empty() {
        problems.push(format!("files left beside the report: {leftovers:?}"));
    }
    (!problems.is_empty())
        .then(|| format!("settle {settle:?}, gap {gap:?}: {}", problems.join("; ")))
}

/// `trace --pid X --syscalls` signalled twice (as `timeout -s INT` does, or two quick
/// SIGTERMs) at random moments: every run writes its report, exits 0 and leaves the target
/// running untraced.
#[rstest]
#[case::two_sigints(Signal::SIGINT, Signal::SIGINT, 20)]
#[case::two_sigterms(Signal::SIGTERM, Signal::SIGTERM, 15)]
#[case::sigint_then_sigterm(Signal::SIGINT, Signal::SIGTERM, 5)]
fn a_second_signal_while_detaching_loses_nothing(
    #[case] first: Signal,
    #[case] second: Signal,
    #[case] runs: usize,
) {
    let mut rng = Rng::new();
    let mut target = forking_target();
    let pid = target.id() as i32;
    let mut failed = Vec::new();
    for run in 0..runs {
        // The gap spans "both at once" (timeout's two) to "while the report is written".
        let gap = if run % 4 == 0 {
            Duration::ZERO
        } else {
            rng.millis(0..40)
        };
        let settle = rng.millis(50..300);
        if let Some(p) = attach_signalled_twice(pid, first, second, settle, gap) {
            failed.push(format!("run {run}: {p}"));
        }
    }
    target.kill().unwrap();
    target.wait().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The reported case itself: `timeout -s INT` sends SIGINT to cowscope and then to its
/// process group (cowscope again). `--preserve-status`: timeout exits with cowscope's status.
#[test]
fn timeout_s_int_writes_the_report_and_exits_0() {
    let mut rng = Rng::new();
    let mut target = forking_target();
    let pid = target.id() as i32;
    let pid_s = pid.to_string();
    let runs = 10;
    let mut failed = Vec::new();
    for run in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t.json");
        let after = format!("{:.3}", rng.millis(150..400).as_secs_f64());
        let o = Command::new("timeout")
            .args(["--preserve-status", "-s", "INT", &after])
            .arg(bin())
            .args(["trace", "--syscalls", "--pid", &pid_s, "--out"])
            .arg(&out)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let report = read_report(&out);
        if o.status.code() != Some(0) || report.is_none() {
            failed.push(format!(
                "run {run} (after {after}): exit {:?}, report {}: {}",
                o.status.code(),
                if report.is_some() {
                    "written"
                } else {
                    "missing"
                },
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        if let Some(p) = unclean(pid) {
            std::thread::sleep(Duration::from_millis(200));
            if let Some(p2) = unclean(pid) {
                failed.push(format!("run {run}: {p} / {p2}"));
            }
        }
    }
    target.kill().unwrap();
    target.wait().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// `trace -- CMD` signalled twice: the first signal is passed to the program, the second (if
/// the program is still alive) kills it. Either way the report is written and cowscope exits
/// with the status the report gives, and nothing of the program is left.
#[rstest]
#[case::a_program_that_dies_of_the_first("sleep 30")]
#[case::a_program_that_ignores_the_first("trap '' INT TERM; sleep 30; sleep 30")]
fn a_second_signal_to_a_traced_command_still_writes_the_report(#[case] script: &str) {
    let mut rng = Rng::new();
    let runs = 8;
    let mut failed = Vec::new();
    for run in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t.json");
        let mut c = Command::new(bin())
            .args(["trace", "--out"])
            .arg(&out)
            .args(["--", "/bin/sh", "-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let me = c.id() as i32;
        let mut tree = Vec::new();
        wait_until("sh and its sleep", Duration::from_secs(10), || {
            tree = children(me);
            let Some(&sh) = tree.first() else {
                return false;
            };
            let k = children(sh);
            let found = !k.is_empty();
            tree.extend(k);
            found
        });
        // The program runs with the signal mask cowscope was given (none blocked here),
        // not with the signals cowscope holds for itself. Asked of `sleep`, which never
        // changes its mask (sh blocks signals itself around its waits).
        for &p in &tree {
            let st = status(p).unwrap_or_default();
            if field(&st, "Name:") != "sleep" {
                continue;
            }
            let blocked = field(&st, "SigBlk:");
            let mask = u64::from_str_radix(&blocked, 16).unwrap_or(0);
            for s in [
                Signal::SIGINT,
                Signal::SIGTERM,
                Signal::SIGHUP,
                Signal::SIGQUIT,
            ] {
                if mask & (1 << (s as u64 - 1)) != 0 {
                    let name = status(p).map(|s| field(&s, "Name:")).unwrap_or_default();
                    failed.push(format!("run {run}: pid {p} ({name}) runs with {s} blocked"));
                }
            }
        }
        let sig = if run % 2 == 0 {
            Signal::SIGINT
        } else {
            Signal::SIGTERM
        };
        kill(me, sig);
        // Two standard signals sent before the first is taken are one signal (the kernel
        // merges a pending signal): the second must come after cowscope took the first, or
        // it never was a second signal.
        wait_until(
            "cowscope to take the first signal",
            Duration::from_secs(5),
            || !signal_pending(me, sig),
        );
        std::thread::sleep(rng.millis(0..40));
        kill(me, sig);
        let code = wait_exit(&mut c, Duration::from_secs(15));
        let problem = match read_report(&out) {
            None => Some(format!("exit {code:?}, no report")),
            Some(v) => {
                let want = v["exit"]["status"].as_i64().map(|s| s as i32);
                let ended = v["ended_by"].as_str().unwrap_or("").to_string();
                if code != want || !(ended == "interrupt" || ended == "killed") {
                    Some(format!("exit {code:?}, report {want:?} ended_by {ended}"))
                } else if script.contains("trap") && ended != "killed" {
                    Some(format!("a program ignoring the signal ended_by {ended}"))
                } else {
                    None
                }
            }
        };
        if let Some(p) = problem {
            failed.push(format!("run {run} ({sig}): {p}"));
        }
        for &p in &tree {
            if status(p).is_some_and(|s| !field(&s, "State:").starts_with('Z')) {
                failed.push(format!("run {run}: pid {p} is left over"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The traced command runs with the signal mask cowscope was started with, not with the
/// signals cowscope holds blocked for itself (or Ctrl-C could never reach it).
#[test]
fn the_traced_command_does_not_inherit_the_held_signals() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let mut c = Command::new(bin())
        .args(["trace", "--out"])
        .arg(&out)
        .args(["--", "/bin/sleep", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let me = c.id() as i32;
    let mut sleep = None;
    wait_until("sleep to run", Duration::from_secs(10), || {
        sleep = children(me)
            .into_iter()
            .find(|&p| status(p).is_some_and(|s| field(&s, "Name:") == "sleep"));
        sleep.is_some()
    });
    let st = status(sleep.unwrap()).unwrap();
    let mask = u64::from_str_radix(&field(&st, "SigBlk:"), 16).unwrap();
    kill(me, Signal::SIGINT);
    let code = wait_exit(&mut c, Duration::from_secs(10));
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        assert_eq!(
            mask & (1 << (s as u64 - 1)),
            0,
            "{s} blocked in the command"
        );
    }
    assert_eq!(code, Some(130), "sleep died of the SIGINT passed on");
}
