//! `cowscope trace --pid` without `--syscalls` (issue 16): releases come from the kernel's
//! syscall tracepoints, read from perf ring buffers, with no ptrace stop per syscall.
//! Expected figures follow from tests/trace_programs/attach_history.c, never from
//! cowscope's output.
//!
//! Run with `--test-threads=1`.

mod trace_support;
use trace_support::{
    assert_counts, bgsave_under_set_load, bin, free_port, is_root, redis_cli, redis_installed,
    redis_populate, spawn_reading_arena, vma_row, wait_until,
};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rstest::rstest;
use serde_json::Value;

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

/// `extra`, plus `--no-scan` when `no_scan`.
fn with_scan_way<'a>(extra: &[&'a str], no_scan: bool) -> Vec<&'a str> {
    let mut v = extra.to_vec();
    if no_scan {
        v.push("--no-scan");
    }
    v
}

/// Start attach_history, attach `cowscope trace --pid` with `extra`, and return the report and
/// the arena's start address.
fn trace_attached(extra: &[&str]) -> (Value, String) {
    let (mut prog, mut lines, arena) = spawn_reading_arena(&mut Command::new(attach_history()));
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

/// Releases of an attached program come from the syscall tracepoints (no stop): a page
/// released and written again is a release, never a copy; the program was never stopped
/// for a syscall.
/// Both ways: with PAGEMAP_SCAN and with `--no-scan` (the paths of a kernel before 6.7); the
/// counts are the program's either way.
#[rstest]
fn attached_releases_are_tracked_without_syscall_stops(#[values(false, true)] no_scan: bool) {
    if !is_root() {
        eprintln!("SKIP: exact attribution and the syscall tracepoints need root");
        return;
    }
    let (v, arena) = trace_attached(&with_scan_way(&["--interval", "100ms"], no_scan));
    if no_scan {
        assert_eq!(v["system"]["pagemap_scan"], false, "{:#}", v["system"]);
    }
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
        vma_row(f, &arena),
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

/// Without `--interval` only the exit samples are taken, after the child released [300, 400):
/// the write faults still show it copied those pages first (copied, then released) and held
/// 400 at once; the parent's release-then-rewrite is no copy (its release came first).
#[rstest]
fn attached_without_interval_the_write_faults_keep_the_history(
    #[values(false, true)] no_scan: bool,
) {
    if !is_root() {
        eprintln!("SKIP: exact attribution and the syscall tracepoints need root");
        return;
    }
    let (v, arena) = trace_attached(&with_scan_way(&[], no_scan));
    assert_eq!(
        v["fault_history"]["recorded"], true,
        "{:#}",
        v["fault_history"]
    );
    assert_eq!(v["fault_history"]["lost"], 0);
    let f = &v["forks"][0];
    assert!(
        f["samples"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["trigger"] != "interval"),
        "no interval sample"
    );
    assert_counts(
        vma_row(f, &arena),
        &[
            ("shared", 250),
            ("copied_by_child", 300),
            ("copied_then_released_by_child", 100),
            ("released_by_child", 50),
            ("copied_by_parent", 200),
            ("released_by_parent", 100),
        ],
    );
    let peak = &f["peak"]["child"];
    let pages = peak["pages"].as_u64().unwrap();
    assert!(
        (400..430).contains(&pages),
        "child peak {pages}: {:#}",
        f["peak"]
    );
    assert_eq!(peak["witness"], "faults", "no sample saw the 400");
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
        vma_row(&v["forks"][0], &arena),
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

/// A Redis started outside cowscope, attached during a BGSAVE under a write load: the
/// child's releases of what it saved (Redis 7 drops saved values' pages) are releases from
/// the tracepoints, not copies; the server is never stopped per syscall.
#[test]
fn redis_attached_during_bgsave_counts_the_childs_releases_as_releases() {
    if !is_root() {
        eprintln!("SKIP: needs visible PFNs and the syscall tracepoints (root)");
        return;
    }
    if !redis_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let port_s = port.to_string();
    /// Stops the server however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let redis = Kill(
        Command::new("redis-server")
            .args(["--port", &port_s, "--dir"])
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--enable-debug-command", "local"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("redis to answer", Duration::from_secs(20), || {
        redis_cli(port, &["PING"]).trim() == "PONG"
    });
    let pid = redis.0.id();
    redis_populate(port);
    let out = dir.path().join("t.json");
    let mut c = Command::new(bin())
        .args([
            "trace",
            "--pid",
            &pid.to_string(),
            "--interval",
            "200ms",
            "--out",
        ])
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("cowscope to attach", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| s.contains(&format!("TracerPid:\t{}", c.id())))
    });
    // The tracepoints are open once attach() returns; give it a moment beyond the seize.
    std::thread::sleep(Duration::from_millis(300));
    bgsave_under_set_load(port);
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "cowscope detaches");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "detached: the server runs on");
    assert_eq!(
        redis_cli(port, &["PING"]).trim(),
        "PONG",
        "redis still serves"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["release_tracking"]["method"], "tracepoints");
    assert_eq!(v["release_tracking"]["stops"], 0);
    let f = v["forks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["final"]["total"].as_u64() > Some(50_000))
        .unwrap_or_else(|| panic!("the BGSAVE fork: {v:#}"));
    let fin = &f["final"];
    eprintln!(
        "redis BGSAVE attached: total {} shared {} copied_by_child {} copied_by_parent {} \
         released_by_child {} copied_then_released_by_child {} records {} lost {}",
        fin["total"],
        fin["shared"],
        fin["copied_by_child"],
        fin["copied_by_parent"],
        fin["released_by_child"],
        fin["copied_then_released_by_child"],
        v["release_tracking"]["events"]["records"],
        v["release_tracking"]["events"]["lost"],
    );
    assert_eq!(fin["trigger"], "child_exit");
    assert!(fin["released_by_child"].as_u64() > Some(10_000), "{fin:#}");
    assert!(
        fin["copied_by_child"].as_u64() < fin["released_by_child"].as_u64(),
        "the child's own copies stay small: {fin:#}"
    );
    assert!(fin["copied_by_parent"].as_u64() > Some(0), "{fin:#}");
}

/// gunicorn from PyPI (`.ci/run` installs it into `.cache/venv-gunicorn` with Debian's
/// python3), `--preload -w 2`, traced with `--interval`: each worker's `peak` is the most it
/// copied while it served, within 5% of its largest interval sample (its shutdown frees what
/// it copied, so the exit sample is not the peak).
#[test]
fn gunicorn_workers_peak_is_their_largest_interval_sample() {
    if !is_root() {
        eprintln!("SKIP: who copied needs visible PFNs (root)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let gunicorn = root.join(".cache/venv-gunicorn/bin/gunicorn");
    if !gunicorn.exists() {
        eprintln!(
            "SKIP: {} is missing (.ci/run installs it)",
            gunicorn.display()
        );
        return;
    }
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let mut c = Command::new(bin())
        .args(["trace", "--interval", "100ms", "--out"])
        .arg(&out)
        .arg("--")
        .arg(&gunicorn)
        .args(["--preload", "-w", "2", "-b", &format!("127.0.0.1:{port}")])
        .arg("--chdir")
        .arg(root.join("tests/trace_programs"))
        .arg("prefork_app:app")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let get = || -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut r = String::new();
        s.read_to_string(&mut r).ok()?;
        Some(r)
    };
    wait_until("gunicorn to answer", Duration::from_secs(30), || {
        get().is_some_and(|r| r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"))
    });
    for _ in 0..20 {
        assert!(get().is_some());
    }
    // Interval samples while the workers hold their copies.
    std::thread::sleep(Duration::from_millis(600));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = c.kill();
            panic!("gunicorn did not stop within 30 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(status.code(), Some(101), "no panic");
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let largest_interval = |f: &Value| -> u64 {
        f["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["trigger"] == "interval")
            .filter_map(|s| s["copied_by_child"].as_u64())
            .max()
            .unwrap_or(0)
    };
    // The workers that served a request while the interval samples ran: a request walks all
    // 300,000 strings, each at least a 64-byte pymalloc block (`'000'` is 52 bytes), so its
    // refcount writes copy at least 19.2 MB, 4,687 pages. A worker the 20 requests never
    // reached copies ~1,400-1,900 pages while idle and ~2,300 at its shutdown; its peak is
    // its exit, and it proves nothing here.
    let workers: Vec<&Value> = v["forks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "fork" && largest_interval(f) > 4_000)
        .collect();
    assert!(
        !workers.is_empty(),
        "a worker that served and copied: {v:#}"
    );
    for f in workers {
        let largest = largest_interval(f);
        let peak = &f["peak"]["child"];
        let pages = peak["pages"].as_u64().unwrap();
        let fin = &f["final"];
        // Every page the child ever copied: held now, or copied and released since.
        let ever = fin["copied_by_child"].as_u64().unwrap()
            + fin["copied_then_released_by_child"].as_u64().unwrap();
        eprintln!(
            "worker {}: peak {pages} pages ({}), largest interval sample {largest}, final {}, \
             ever copied {ever}",
            f["child"], peak["witness"], fin["copied_by_child"]
        );
        assert!(pages >= largest, "the peak is never below a sample: {peak}");
        if peak["witness"] == "samples" {
            assert!(
                (pages - largest) * 20 <= largest,
                "peak {pages} within 5% of the largest interval sample {largest}"
            );
        } else {
            // The write faults saw more than any sample (copies freed between two samples):
            // never more than the pages the child copied at all.
            assert_eq!(peak["witness"], "faults", "{peak}");
            assert!(pages <= ever, "peak {pages} <= pages ever copied {ever}");
        }
    }
}
