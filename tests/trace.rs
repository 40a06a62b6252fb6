//! `cowscope trace`: exact counts on programs whose writes, releases and refaults are known,
//! forks of forks, vfork+exec, a thread that forks, exit status passthrough, Ctrl-C, attach and
//! detach, and the unprivileged path. Expected figures come from the programs' definitions
//! (tests/trace_programs/cow_exact.c), never from cowscope's output.
//!
//! Run with `--test-threads=1`: the Ctrl-C tests signal processes by pid.

mod trace_support;
use trace_support::{
    assert_counts, bgsave_under_set_load, bin, children, field, free_port, is_root, kill,
    redis_cli, redis_installed, redis_populate, status, vma_row, wait_exit, wait_until,
};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rstest::rstest;
use serde_json::Value;

/// A world-readable directory holding the compiled test programs and a copy of cowscope
/// (so an unprivileged user can run both).
fn programs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cowscope-trace-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/trace_programs/cow_exact.c");
        let out = Command::new("cc")
            .args(["-O1", "-pthread", "-o"])
            .arg(dir.join("cow_exact"))
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

fn cow_exact() -> PathBuf {
    programs().join("cow_exact")
}

struct Traced {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    report: Value,
}

/// `cowscope trace --out <tmp> [extra] -- prog args`.
fn trace(extra: &[&str], prog: &Path, args: &[&str]) -> Traced {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("trace.json");
    let out = Command::new(bin())
        .arg("trace")
        .arg("--out")
        .arg(&out_path)
        .args(extra)
        .arg("--")
        .arg(prog)
        .args(args)
        .output()
        .expect("cowscope runs");
    let report = std::fs::read(&out_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    Traced {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
        report,
    }
}

/// The `start` address the program printed for `what` ("arena", "collapse").
fn printed_start(stdout: &str, what: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{what} ")))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("the program printed no {what} line: {stdout}"))
        .to_string()
}

/// The two ways every exact-count test runs: with PAGEMAP_SCAN where the kernel has it, and
/// with `--no-scan`, the paths of a kernel without it (before 6.7). Both must give the same
/// counts, asserted from first principles each time.
const WAYS: [bool; 2] = [false, true];

fn way(no_scan: bool) -> &'static [&'static str] {
    if no_scan { &["--no-scan"] } else { &[] }
}

/// A `--no-scan` report says PAGEMAP_SCAN was not used.
fn assert_scan_way(t: &Traced, no_scan: bool) {
    if no_scan {
        assert_eq!(t.report["system"]["pagemap_scan"], false, "{}", t.stderr);
    }
}

fn kv(args: &[(&str, u64)]) -> Vec<String> {
    args.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[rstest]
#[case::child_writes_are_copied_by_the_child(&[("n", 32), ("a", 7)], &[("shared", 25), ("copied_by_child", 7)])]
#[case::parent_writes_are_copied_by_the_parent(&[("n", 32), ("b", 6)], &[("shared", 26), ("copied_by_parent", 6)])]
#[case::child_dontneed_and_refault_is_a_release_not_a_copy(&[("n", 32), ("c", 9)], &[("shared", 23), ("released_by_child", 9)])]
#[case::parent_munmap_is_a_release(&[("n", 32), ("d", 5)], &[("shared", 27), ("released_by_parent", 5)])]
#[case::child_munmap_is_a_release(&[("n", 32), ("e", 4)], &[("shared", 28), ("released_by_child", 4)])]
#[case::parent_dontneed_and_refault_is_a_release(&[("n", 32), ("f", 3)], &[("shared", 29), ("released_by_parent", 3)])]
#[case::pages_only_read_stay_on_the_zero_page(&[("n", 32), ("z", 10)], &[("shared", 22), ("zero", 10)])]
#[case::madv_free_skips_shared_pages_so_they_stay_shared(&[("n", 32), ("c", 8), ("free", 1)], &[("shared", 32)])]
#[case::all_at_once(
    &[("n", 64), ("a", 3), ("b", 5), ("c", 7), ("d", 4), ("e", 2), ("f", 6), ("z", 8)],
    &[("shared", 29), ("zero", 8), ("copied_by_child", 3), ("copied_by_parent", 5), ("released_by_child", 9), ("released_by_parent", 10)]
)]
#[case::a_thread_that_forks(&[("n", 32), ("a", 5), ("b", 2), ("thread", 1)], &[("shared", 25), ("copied_by_child", 5), ("copied_by_parent", 2)])]
fn exact_counts_in_the_arena(
    #[case] args: &[(&str, u64)],
    #[case] want: &[(&str, u64)],
    #[values(false, true)] no_scan: bool,
) {
    if !is_root() {
        eprintln!("SKIP: exact frame attribution needs visible PFNs (root)");
        return;
    }
    let a = kv(args);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let t = trace(way(no_scan), &cow_exact(), &a);
    assert_scan_way(&t, no_scan);
    assert_eq!(t.status, Some(0), "stderr: {}", t.stderr);
    let forks = t.report["forks"].as_array().expect("forks[]");
    assert_eq!(forks.len(), 1, "one fork: {forks:#?}");
    let f = &forks[0];
    assert_eq!(f["kind"], "fork");
    assert_eq!(f["ended"]["by"], "child_exit");
    assert_eq!(
        f["final"]["trigger"], "child_exit",
        "final sample at the exit stop"
    );
    assert!(f["pause_us"].as_u64().is_some());
    assert_counts(vma_row(f, &printed_start(&t.stdout, "arena")), want);
    if args.iter().any(|(k, _)| *k == "thread") {
        assert_eq!(f["baseline"]["parent_threads"], 2);
        assert_ne!(f["thread"], f["parent"], "the second thread forked");
    }
}

/// A page that may be DMA-pinned (here: an io_uring fixed buffer, a long-term pin) is not
/// shared copy-on-write: fork gives the child a copy at once (`copy_present_page`), before
/// anybody writes.
#[test]
fn pinned_pages_are_copied_at_fork_not_by_a_write() {
    if !is_root() {
        eprintln!("SKIP: needs visible PFNs");
        return;
    }
    for no_scan in WAYS {
        let t = trace(way(no_scan), &cow_exact(), &["n=32", "a=2", "pin=5"]);
        if t.status == Some(96) {
            eprintln!("SKIP: io_uring is unavailable here (kernel.io_uring_disabled?)");
            return;
        }
        assert_eq!(t.status, Some(0), "{}", t.stderr);
        assert_scan_way(&t, no_scan);
        let f = &t.report["forks"][0];
        assert_counts(
            vma_row(f, &printed_start(&t.stdout, "arena")),
            &[
                ("shared", 25),
                ("copied_by_child", 2),
                ("copied_at_fork", 5),
            ],
        );
    }
}

#[test]
fn releases_are_counted_per_side_from_the_syscalls() {
    if !is_root() {
        eprintln!("SKIP: needs visible PFNs");
        return;
    }
    let t = trace(&[], &cow_exact(), &["n=32", "c=4", "d=3", "e=2", "f=5"]);
    assert_eq!(t.status, Some(0), "{}", t.stderr);
    let r = &t.report["forks"][0]["releases"];
    // The child: one madvise (c) and one munmap (e); the parent: one munmap (d), one madvise
    // (f). libc may release more of its own at exit: at least these.
    assert!(
        r["by_child"]["by_syscall"]["madvise"].as_u64() >= Some(1),
        "{r:#}"
    );
    assert!(
        r["by_child"]["by_syscall"]["munmap"].as_u64() >= Some(1),
        "{r:#}"
    );
    assert!(
        r["by_parent"]["by_syscall"]["munmap"].as_u64() >= Some(1),
        "{r:#}"
    );
    assert!(r["by_child"]["pages"].as_u64() >= Some(6), "{r:#}");
    assert!(r["by_parent"]["pages"].as_u64() >= Some(8), "{r:#}");
    assert_eq!(t.report["release_tracking"]["method"], "seccomp");
}

#[test]
fn forks_of_forks_are_each_a_pair_against_their_own_parent() {
    if !is_root() {
        eprintln!("SKIP: needs visible PFNs");
        return;
    }
    for no_scan in WAYS {
        let t = trace(way(no_scan), &cow_exact(), &["n=32", "a=4", "g=6"]);
        assert_eq!(t.status, Some(0), "{}", t.stderr);
        assert_scan_way(&t, no_scan);
        let forks = t.report["forks"].as_array().unwrap();
        assert_eq!(forks.len(), 2, "{forks:#?}");
        let (first, second) = (&forks[0], &forks[1]);
        assert_eq!(
            second["parent"], first["child"],
            "the grandchild's parent is the child"
        );
        let arena = printed_start(&t.stdout, "arena");
        assert_counts(
            vma_row(first, &arena),
            &[("shared", 28), ("copied_by_child", 4)],
        );
        // Against the child (whose pages 0-3 are its own copies by then): the grandchild
        // wrote 6.
        assert_counts(
            vma_row(second, &arena),
            &[("shared", 26), ("copied_by_child", 6)],
        );
    }
}

#[test]
fn vfork_then_exec_shares_the_memory_and_has_no_baseline() {
    let t = trace(&[], &cow_exact(), &["n=16", "a=1", "vfork=1"]);
    assert_eq!(t.status, Some(0), "{}", t.stderr);
    let forks = t.report["forks"].as_array().unwrap();
    let v = forks
        .iter()
        .find(|f| f["kind"] == "vfork")
        .expect("a vfork record");
    assert_eq!(v["shares_mm"], true);
    assert!(
        v.get("baseline").is_none() && v.get("final").is_none(),
        "{v:#}"
    );
    assert_eq!(v["ended"]["by"], "child_exec");
    let child = v["child"].as_i64().unwrap();
    let p = t.report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_i64() == Some(child))
        .expect("the vfork child is listed");
    assert_eq!(p["execs"], 1);
    assert!(p["exe"].as_str().unwrap().ends_with("/true"), "{p:#}");
    assert!(
        forks
            .iter()
            .any(|f| f["kind"] == "fork" && f["final"].is_object())
    );
}

#[test]
fn a_collapse_into_a_huge_page_moves_frames_without_a_write() {
    if !is_root() {
        eprintln!("SKIP: telling a collapse from a copy needs kpageflags (root)");
        return;
    }
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.is_empty() || thp.contains("[never]") {
        eprintln!("SKIP: THP is unavailable or disabled, MADV_COLLAPSE cannot work");
        return;
    }
    for no_scan in WAYS {
        let t = trace(way(no_scan), &cow_exact(), &["n=16", "collapse=1"]);
        if t.status == Some(97) {
            eprintln!(
                "SKIP: MADV_COLLAPSE failed in the child (kernel before 6.1?): {}",
                t.stdout
            );
            return;
        }
        assert_eq!(t.status, Some(0), "{}", t.stderr);
        assert_scan_way(&t, no_scan);
        let f = &t.report["forks"][0];
        assert_counts(
            vma_row(f, &printed_start(&t.stdout, "collapse")),
            &[("moved", 512)],
        );
        assert_counts(
            vma_row(f, &printed_start(&t.stdout, "arena")),
            &[("shared", 16)],
        );
    }
}

/// The huge zero page, written by the child: on Linux 6.13+ the write gives the child a
/// whole new THP (512 new frames, THP in kpageflags: the same flags a collapse leaves, which
/// is `moved` elsewhere), and those 512 pages are the child's copy; on older kernels the
/// kernel splits the huge zero page into small zero pages (different frames, both zero) and
/// copies one page. Which of the two happened, the child reads from its own smaps.
#[test]
fn a_write_into_the_huge_zero_page_is_the_writers_copy_and_a_split_stays_zero() {
    if !is_root() {
        eprintln!("SKIP: telling zero frames and THPs apart needs PFNs and kpageflags (root)");
        return;
    }
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let zero = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/use_zero_page")
        .unwrap_or_default();
    if thp.is_empty() || thp.contains("[never]") || zero.trim() != "1" {
        eprintln!("SKIP: THP or its huge zero page is disabled here");
        return;
    }
    for no_scan in WAYS {
        huge_zero_page_write(no_scan);
    }
}

fn huge_zero_page_write(no_scan: bool) {
    let t = trace(way(no_scan), &cow_exact(), &["n=4", "hzp=1"]);
    if t.status == Some(95) {
        eprintln!("SKIP: the read fault did not map the huge zero page");
        return;
    }
    assert_eq!(t.status, Some(0), "{}", t.stderr);
    assert_scan_way(&t, no_scan);
    let thp_kb: u64 = t
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("hzp_child_thp_kb "))
        .expect("the child reports its AnonHugePages")
        .trim()
        .parse()
        .unwrap();
    let f = &t.report["forks"][0];
    let row = vma_row(f, &printed_start(&t.stdout, "hzp"));
    if thp_kb == 2048 {
        assert_counts(row, &[("copied_by_child", 512)]);
        assert!(
            f["notes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().unwrap().contains("huge zero page until a write")),
            "the report says why 512 pages are the child's: {f:#}"
        );
    } else {
        assert_counts(row, &[("copied_by_child", 1), ("zero", 511)]);
    }
}

#[test]
fn interval_samples_are_taken_while_the_pair_lives() {
    let t = trace(
        &["--interval", "20ms"],
        &cow_exact(),
        &["n=16", "a=2", "hold=300"],
    );
    assert_eq!(t.status, Some(0), "{}", t.stderr);
    let f = &t.report["forks"][0];
    let samples = f["samples"].as_array().unwrap();
    let interval = samples
        .iter()
        .filter(|s| s["trigger"] == "interval")
        .count();
    assert!(interval >= 3, "300 ms at 20 ms: {samples:#?}");
    assert_eq!(samples.last().unwrap()["trigger"], "child_exit");
    assert_eq!(t.report["interval_ms"], 20);
}

#[rstest]
#[case::exit_zero("exit 0", 0)]
#[case::exit_code("exit 42", 42)]
#[case::killed_by_sigterm("kill -TERM $$", 128 + 15)]
#[case::killed_by_sigkill("kill -KILL $$", 128 + 9)]
fn cowscope_exits_with_the_programs_status(#[case] script: &str, #[case] want: i32) {
    let t = trace(&[], Path::new("/bin/sh"), &["-c", script]);
    assert_eq!(t.status, Some(want), "{}", t.stderr);
    assert_eq!(t.report["exit"]["status"], want);
}

#[test]
fn signals_reach_the_traced_program() {
    let t = trace(
        &[],
        Path::new("/bin/sh"),
        &["-c", "trap 'echo got USR1' USR1; kill -USR1 $$; echo after"],
    );
    assert_eq!(t.status, Some(0), "{}", t.stderr);
    assert_eq!(t.stdout, "got USR1\nafter\n");
}

/// Job control under the tracer: a program that stops itself stays stopped until SIGCONT,
/// then goes on (cowscope holds it in PTRACE_LISTEN, so /proc shows `t`, not `T`: a seized
/// tracee in group-stop is in a ptrace stop).
#[test]
fn a_stopped_program_stays_stopped_until_sigcont() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let mut c = Command::new(bin())
        .arg("trace")
        .arg("--out")
        .arg(&out)
        .args(["--", "/bin/sh", "-c", "kill -STOP $$; echo resumed"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let me = c.id() as i32;
    let mut sh = 0;
    wait_until("sh to stop itself", Duration::from_secs(10), || {
        sh = children(me).first().copied().unwrap_or(0);
        sh != 0
            && status(sh).is_some_and(|s| {
                let st = field(&s, "State:");
                st.starts_with('T') || st.starts_with('t')
            })
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(c.try_wait().unwrap().is_none(), "still stopped");
    kill(sh, nix::sys::signal::Signal::SIGCONT);
    assert_eq!(wait_exit(&mut c, Duration::from_secs(10)), Some(0));
    let mut so = String::new();
    std::io::Read::read_to_string(&mut c.stdout.take().unwrap(), &mut so).unwrap();
    assert_eq!(so, "resumed\n");
}

#[test]
fn a_missing_command_is_a_usage_error() {
    let out = Command::new(bin())
        .args(["trace", "--", "/nonexistent/cowscope-test-program"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    // Found, but not executable: execve fails in the child; the error comes back over the
    // close-on-exec pipe.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let out = Command::new(bin())
        .arg("trace")
        .arg("--")
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    let out = Command::new(bin())
        .args(["trace", "--", "cowscope-no-such-command-xyz"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("command not found"));
}

#[rstest]
#[case::no_such_pid(&["--pid", "999999999"], 2)]
#[case::pid_and_command(&["--pid", "1", "--", "true"], 2)]
#[case::neither(&[], 2)]
#[case::bad_interval(&["--interval", "soon", "--", "true"], 2)]
#[case::a_kernel_thread(&["--pid", "2"], 2)]
fn bad_input_is_refused_with_exit_2(#[case] args: &[&str], #[case] code: i32) {
    let out = Command::new(bin())
        .arg("trace")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(code), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("cowscope: ") || err.contains("error:"),
        "{err}"
    );
}

// ---- processes left behind ----

/// The process is gone, or it runs untraced and not stopped.
fn assert_clean(pid: i32) {
    let Some(s) = status(pid) else { return };
    assert_eq!(field(&s, "TracerPid:"), "0", "pid {pid} still traced: {s}");
    let state = field(&s, "State:");
    assert!(
        !state.starts_with('T') && !state.starts_with('t') && !state.starts_with('Z'),
        "pid {pid} left {state}"
    );
}

fn spawn_trace(args: &[&str], out: &Path) -> Child {
    Command::new(bin())
        .arg("trace")
        .arg("--out")
        .arg(out)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Ctrl-C (SIGINT sent to cowscope alone): the program gets it too, exits, and nothing is
/// left stopped, traced, zombie or orphaned.
#[test]
fn ctrl_c_mid_trace_passes_the_signal_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let prog = cow_exact();
    let mut c = spawn_trace(
        &["--", prog.to_str().unwrap(), "n=16", "a=1", "hold=60000"],
        &out,
    );
    let me = c.id() as i32;
    let mut tree = Vec::new();
    wait_until(
        "the program and its forked child",
        Duration::from_secs(10),
        || {
            tree = children(me);
            if let Some(&root) = tree.first() {
                let kids = children(root);
                if !kids.is_empty() {
                    tree.extend(kids);
                    return true;
                }
            }
            false
        },
    );
    std::thread::sleep(Duration::from_millis(100));
    kill(me, nix::sys::signal::Signal::SIGINT);
    let code = wait_exit(&mut c, Duration::from_secs(10));
    assert_eq!(code, Some(128 + 2), "the program died of SIGINT");
    for &p in &tree {
        assert!(status(p).is_none(), "pid {p} is left over: {:?}", status(p));
    }
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["ended_by"], "interrupt");
    assert_eq!(v["exit"]["signal"], "SIGINT");
}

/// A program that ignores SIGINT: the second Ctrl-C kills it (and its child).
#[test]
fn a_second_ctrl_c_kills_a_program_that_ignores_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let mut c = spawn_trace(
        &["--", "/bin/sh", "-c", "trap '' INT; sleep 60; sleep 60"],
        &out,
    );
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
    kill(me, nix::sys::signal::Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        c.try_wait().unwrap().is_none(),
        "the first SIGINT is ignored by the program"
    );
    kill(me, nix::sys::signal::Signal::SIGINT);
    let code = wait_exit(&mut c, Duration::from_secs(10));
    assert_eq!(code, Some(128 + 9));
    for &p in &tree {
        assert!(status(p).is_none(), "pid {p} is left over");
    }
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["ended_by"], "killed");
}

/// If cowscope itself dies (SIGKILL: no cleanup runs), the command it traced must not run on
/// untraced (its releases would fail with ENOSYS): PTRACE_O_EXITKILL kills it.
#[test]
fn a_killed_cowscope_takes_its_command_along() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let mut c = spawn_trace(&["--", "/bin/sh", "-c", "sleep 60; sleep 60"], &out);
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
    kill(me, nix::sys::signal::Signal::SIGKILL);
    c.wait().unwrap();
    wait_until(
        "the traced processes to die",
        Duration::from_secs(5),
        || {
            tree.iter()
                .all(|&p| status(p).is_none_or(|s| field(&s, "State:").starts_with('Z')))
        },
    );
}

/// A target that forks a child every 50 ms, started outside cowscope.
fn forking_target() -> Child {
    Command::new("/bin/sh")
        .args(["-c", "while :; do /bin/sleep 0.05; done"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

#[rstest]
#[case::without_syscall_tracking(&[])]
#[case::with_syscall_tracking(&["--syscalls"])]
fn attach_and_detach_leave_the_target_running(#[case] extra: &[&str]) {
    let mut target = forking_target();
    let pid = target.id() as i32;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let pid_s = pid.to_string();
    let mut args = vec!["--pid", pid_s.as_str(), "--interval", "10ms"];
    args.extend_from_slice(extra);
    let mut c = spawn_trace(&args, &out);
    wait_until("cowscope to attach", Duration::from_secs(10), || {
        status(pid).is_some_and(|s| field(&s, "TracerPid:") == c.id().to_string())
    });
    std::thread::sleep(Duration::from_millis(400));
    kill(c.id() as i32, nix::sys::signal::Signal::SIGINT);
    let code = wait_exit(&mut c, Duration::from_secs(10));
    assert_eq!(code, Some(0), "detached: the target runs on");
    assert!(
        target.try_wait().unwrap().is_none(),
        "the target still runs"
    );
    assert_clean(pid);
    for k in children(pid) {
        assert_clean(k);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_clean(pid);
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["mode"], "attach");
    assert_eq!(v["ended_by"], "detached");
    let forks = v["forks"].as_array().unwrap();
    assert!(!forks.is_empty(), "sh forked at least once in 400 ms");
    assert!(
        forks
            .iter()
            .all(|f| f["parent"].as_i64() == Some(i64::from(pid)))
    );
    let method = match (extra.is_empty(), is_root()) {
        (false, _) => "syscalls",
        (true, true) => "tracepoints",
        (true, false) => "none",
    };
    assert_eq!(v["release_tracking"]["method"], method);
    target.kill().unwrap();
    target.wait().unwrap();
}

#[test]
fn the_report_matches_its_schema() {
    let t = trace(&[], &cow_exact(), &["n=8", "a=1", "c=1"]);
    assert_eq!(t.status, Some(0));
    let out = Command::new(bin())
        .args(["schema", "trace"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let schema: Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = v.iter_errors(&t.report).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn without_out_a_table_goes_to_stderr_and_stdout_stays_the_programs() {
    let out = Command::new(bin())
        .args(["trace", "--"])
        .arg(cow_exact())
        .args(["n=8", "a=2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(so.starts_with("arena ") && !so.contains("cowscope"), "{so}");
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(
        se.contains("cowscope trace:") && se.contains("fork 1:"),
        "{se}"
    );
}

#[test]
fn json_without_out_goes_to_stderr_after_the_programs_output_and_stdout_stays_the_programs() {
    let out = Command::new(bin())
        .args(["trace", "--format", "json", "--"])
        .args([
            "/bin/sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "the program's status");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-stdout\n");
    let se = String::from_utf8_lossy(&out.stderr);
    let doc = se
        .strip_prefix("to-stderr\n")
        .unwrap_or_else(|| panic!("the program's stderr first: {se}"));
    let v: Value = serde_json::from_str(doc).expect("the rest of stderr is the JSON report");
    assert_eq!(v["exit"]["status"], 7);
}

/// A command that daemonizes (the daemon in a session of its own, its parent exiting at
/// once): cowscope keeps tracing the daemon until it exits (a traced process never runs on
/// untraced), says so, exits with the command's own status, and leaves nothing behind.
#[test]
fn a_daemonizing_command_is_followed_until_the_daemon_exits() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let t0 = Instant::now();
    let mut c = spawn_trace(
        &[
            "--",
            "/bin/sh",
            "-c",
            "setsid /bin/sleep 1 </dev/null & exit 5",
        ],
        &out,
    );
    let me = c.id() as i32;
    let code = wait_exit(&mut c, Duration::from_secs(20));
    assert_eq!(code, Some(5), "the command's status, not the daemon's");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "cowscope waited for the daemon's second"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let procs = v["processes"].as_array().unwrap();
    let sleep = procs
        .iter()
        .find(|p| p["exe"].as_str().is_some_and(|e| e.ends_with("/sleep")))
        .expect("the daemon was traced");
    assert!(sleep["exited_at"].as_f64().unwrap() >= 0.9, "{sleep:#}");
    assert!(
        v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("left 1 process(es) running")),
        "{:#}",
        v["notes"]
    );
    assert!(children(me).is_empty());
    for p in procs {
        assert_clean(p["pid"].as_i64().unwrap() as i32);
    }
}

/// A minimal static i386 ELF executable: `exit(0)` through `int 0x80`.
fn tiny_32bit_program(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let base: u32 = 0x0804_8000;
    let code = [0xb8, 1, 0, 0, 0, 0x31, 0xdb, 0xcd, 0x80]; // mov eax,1; xor ebx,ebx; int 0x80
    let size = 52 + 32 + code.len() as u32;
    let mut f: Vec<u8> = vec![0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let h16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
    let h32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
    h16(&mut f, 2); // ET_EXEC
    h16(&mut f, 3); // EM_386
    h32(&mut f, 1);
    h32(&mut f, base + 84); // entry: right after the headers
    h32(&mut f, 52); // phoff
    h32(&mut f, 0); // shoff
    h32(&mut f, 0); // flags
    h16(&mut f, 52); // ehsize
    h16(&mut f, 32); // phentsize
    h16(&mut f, 1); // phnum
    h16(&mut f, 40); // shentsize
    h16(&mut f, 0); // shnum
    h16(&mut f, 0); // shstrndx
    h32(&mut f, 1); // PT_LOAD
    h32(&mut f, 0); // offset
    h32(&mut f, base); // vaddr
    h32(&mut f, base); // paddr
    h32(&mut f, size); // filesz
    h32(&mut f, size); // memsz
    h32(&mut f, 5); // R+X
    h32(&mut f, 0x1000); // align
    f.extend_from_slice(&code);
    assert_eq!(f.len() as u32, size);
    std::fs::write(path, &f).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[rstest]
#[case::seccomp(&[])]
#[case::syscalls(&["--syscalls"])]
fn a_32bit_program_has_its_releases_reported_untracked(#[case] extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("tiny32");
    tiny_32bit_program(&prog);
    if Command::new(&prog).status().ok().and_then(|s| s.code()) != Some(0) {
        eprintln!("SKIP: this kernel does not run i386 programs (no IA32 emulation)");
        return;
    }
    let t = trace(extra, &prog, &[]);
    assert_eq!(t.status, Some(0), "{}", t.stderr);
    let a = &t.report["attribution"];
    assert_eq!(a["releases_tracked"], false, "{a:#}");
    assert!(
        !a["proven"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("released_by")),
        "no release is claimed proven: {a:#}"
    );
    assert!(
        a["unproven"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("32-bit")),
        "{a:#}"
    );
}

/// Whether pagemap bit 56 counts mappings per page is a kernel build option since 6.15
/// (CONFIG_PAGE_MAPCOUNT vs CONFIG_NO_PAGE_MAPCOUNT): the fork probe must say what the
/// kernel's own config says.
#[test]
fn the_bit_56_probe_agrees_with_the_kernel_config() {
    use cowscope::trace::mapcount::{Bit56, probe};
    let release = String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let config = Command::new("zcat")
        .arg("/proc/config.gz")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .or_else(|| std::fs::read_to_string(format!("/boot/config-{release}")).ok());
    let Some(config) = config else {
        eprintln!("SKIP: no kernel config to compare with (/proc/config.gz, /boot)");
        return;
    };
    let want = if config.lines().any(|l| l == "CONFIG_NO_PAGE_MAPCOUNT=y") {
        Bit56::CertainlyExclusive
    } else if config.lines().any(|l| l == "CONFIG_PAGE_MAPCOUNT=y")
        || !config.contains("NO_PAGE_MAPCOUNT")
    {
        Bit56::Exact
    } else {
        eprintln!("SKIP: the config says neither");
        return;
    };
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    match probe() {
        Some(got) => assert_eq!(got, want),
        None if thp.is_empty() || thp.contains("[never]") => {
            eprintln!("SKIP: no THP to probe with")
        }
        None => panic!("THP is enabled, yet the probe could not tell (want {want:?})"),
    }
}

// ---- without privilege ----

fn as_nobody(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(programs().join("cowscope"))
        .args(args)
        .current_dir("/")
        .output()
        .expect("setpriv runs")
}

#[test]
fn without_privilege_who_copied_is_unproven_but_releases_are_exact() {
    if !is_root() {
        eprintln!("SKIP: setpriv needs root to drop to uid 65534");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out_path = dir.path().join("t.json");
    let prog = cow_exact();
    let out = as_nobody(&[
        "trace",
        "--out",
        out_path.to_str().unwrap(),
        "--",
        prog.to_str().unwrap(),
        "n=32",
        "a=4",
        "b=3",
        "c=5",
        "z=6",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    assert_eq!(v["system"]["pfn_visible"], false);
    assert_eq!(v["attribution"]["pfn_visible"], false);
    assert_eq!(
        v["release_tracking"]["no_new_privs"], true,
        "seccomp without CAP_SYS_ADMIN"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = vma_row(&v["forks"][0], &printed_start(&stdout, "arena"));
    // The exclusive bit proves the 7 written pages differ, not who wrote them; the pair is
    // all that lives of its address space, so pages mapped twice are shared; the zero page
    // is seen by PAGEMAP_SCAN; the child's release is known from its syscall.
    assert_counts(
        row,
        &[
            ("shared", 14),
            ("zero", 6),
            ("diverged", 7),
            ("released_by_child", 5),
        ],
    );
}

#[test]
fn without_permission_to_attach_the_error_says_why_and_exits_3() {
    if !is_root() {
        eprintln!("SKIP: needs root to run a target nobody may not trace");
        return;
    }
    let mut target = Command::new("sleep").arg("30").spawn().unwrap();
    let out = as_nobody(&["trace", "--pid", &target.id().to_string()]);
    target.kill().unwrap();
    target.wait().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not permitted to trace"), "{err}");
}

/// Without PFNs, with `--pid` and no syscall tracking (the child's MAP_FIXED mmap is not
/// seen): the child maps another file where the parent's file mapping was. Page-cache pages
/// on both sides are no longer the same page (another file), so they must not be `shared`;
/// each is mapped once, and bit 56 proves the difference.
#[test]
fn without_pfns_another_file_mapped_there_since_is_not_shared() {
    if !is_root() {
        eprintln!("SKIP: setpriv needs root to drop to uid 65534");
        return;
    }
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out_path = dir.path().join("t.json");
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let mut target = Command::new("setpriv")
        .args(nobody)
        .arg(cow_exact())
        .args(["n=8", "remap=4", "wait=1"])
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = target.id() as i32;
    let mut lines = BufReader::new(target.stdout.take().unwrap()).lines();
    let remap = loop {
        let l = lines
            .next()
            .expect("the program prints its mappings")
            .unwrap();
        if let Some(r) = l.strip_prefix("remap ") {
            break r.split_whitespace().next().unwrap().to_string();
        }
    };
    let mut c = Command::new("setpriv")
        .args(nobody)
        .arg(programs().join("cowscope"))
        .args(["trace", "--pid", &pid.to_string(), "--out"])
        .arg(&out_path)
        .current_dir("/")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("cowscope to attach", Duration::from_secs(10), || {
        status(pid).is_some_and(|s| field(&s, "TracerPid:") == c.id().to_string())
    });
    target.stdin.take().unwrap().write_all(b"g").unwrap();
    let code = wait_exit(&mut c, Duration::from_secs(20));
    assert_eq!(target.wait().unwrap().code(), Some(0));
    assert_eq!(code, Some(0), "cowscope exits with the target's status");
    let v: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    assert_eq!(v["attribution"]["pfn_visible"], false);
    assert_eq!(v["release_tracking"]["method"], "none");
    assert_counts(vma_row(&v["forks"][0], &remap), &[("diverged", 4)]);
}

/// Root without CAP_SYS_PTRACE may not attach to a process with more capabilities: the error
/// names the missing capability (mem::process's reasons), exit 3.
#[test]
fn root_without_cap_sys_ptrace_is_told_why_it_may_not_attach() {
    if !is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let mut target = Command::new("sleep").arg("30").spawn().unwrap();
    let out = Command::new("setpriv")
        .args(["--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace"])
        .arg(programs().join("cowscope"))
        .args(["trace", "--pid", &target.id().to_string()])
        .output()
        .unwrap();
    target.kill().unwrap();
    target.wait().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without CAP_SYS_PTRACE"), "{err}");
}

#[test]
fn without_privilege_the_table_never_says_a_side_copied_nothing() {
    if !is_root() {
        eprintln!("SKIP: setpriv needs root to drop to uid 65534");
        return;
    }
    let prog = cow_exact();
    let out = as_nobody(&["trace", "--", prog.to_str().unwrap(), "n=32", "a=4", "b=3"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let table = String::from_utf8_lossy(&out.stderr);
    let line = table
        .lines()
        .find(|l| l.contains("=> "))
        .unwrap_or_else(|| panic!("a closing sentence: {table}"));
    assert!(!line.contains("copied 0.0"), "{line}");
    assert!(line.contains("who copied is unproven"), "{line}");
    assert!(
        line.contains("proven diverged") && line.contains("unproven"),
        "{line}"
    );
}

// ---- real programs ----

fn python() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

const PY_LIST: &str = r#"
import ctypes, gc, os, sys
N = 10**6
ba = bytearray(b"\x01") * (64 << 20)
ints = list(range(10**9, 10**9 + N))       # distinct int objects, not the small-int cache
if sys.argv[1] == "freeze":
    gc.freeze()
buf = (ctypes.c_char * len(ba)).from_buffer(ba)
# pymalloc hands ints out in 32-byte blocks (28 bytes rounded to 16-byte alignment).
block = (sys.getsizeof(ints[0]) + 15) // 16 * 16
print("bytearray", hex(ctypes.addressof(buf)), len(ba), flush=True)
print("int_pages", N * block // 4096, flush=True)
pid = os.fork()
if pid == 0:
    s = 0
    for x in ints:
        s += x
    os._exit(0)
os.waitpid(pid, 0)
"#;

fn python_case(mode: &str) -> (u64, u64, u64, u64) {
    let py = python().expect("python3");
    let t = trace(&[], &py, &["-c", PY_LIST, mode]);
    assert_eq!(t.status, Some(0), "{}", t.stderr);
    let line = |k: &str| -> Vec<String> {
        t.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k} ")))
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let ba = line("bytearray");
    let ba_start = u64::from_str_radix(ba[0].trim_start_matches("0x"), 16).unwrap();
    let ba_pages = ba[1].parse::<u64>().unwrap() / 4096;
    let int_pages: u64 = line("int_pages")[0].parse().unwrap();
    let f = t.report["forks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["final"]["copied_by_child"].as_u64() > Some(1000))
        .expect("the fork of the script");
    let row = f["final"]["vmas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| {
            let s = u64::from_str_radix(v["start"].as_str().unwrap().trim_start_matches("0x"), 16)
                .unwrap();
            let e = u64::from_str_radix(v["end"].as_str().unwrap().trim_start_matches("0x"), 16)
                .unwrap();
            s <= ba_start && ba_start < e
        })
        .expect("the bytearray's VMA");
    (
        f["final"]["copied_by_child"].as_u64().unwrap(),
        int_pages,
        row["shared"].as_u64().unwrap(),
        ba_pages,
    )
}

#[rstest]
#[case::plain("plain")]
#[case::after_gc_freeze("freeze")]
fn python_iterating_a_list_copies_the_pages_of_its_int_objects(#[case] mode: &str) {
    if !is_root() {
        eprintln!("SKIP: needs visible PFNs");
        return;
    }
    if python().is_none() {
        eprintln!("SKIP: python3 is not installed");
        return;
    }
    let (copied, int_pages, ba_shared, ba_pages) = python_case(mode);
    eprintln!(
        "{mode}: copied_by_child {copied}, int pages {int_pages}, bytearray {ba_shared}/{ba_pages} shared"
    );
    // Every page of int objects gets a refcount write; a few hundred more pages are the
    // interpreter's own (frames, the loop's new ints, allocator state).
    assert!(copied >= int_pages, "{copied} < {int_pages}");
    assert!(copied <= int_pages + 1500, "{copied} >> {int_pages}");
    // The bytearray is never written: all of it stays shared (its VMA also holds a little
    // malloc metadata).
    assert!(ba_shared >= ba_pages, "{ba_shared} < {ba_pages}");
}

const PY_GC: &str = r#"
import gc, os, sys
N = 10**6
objs = [[i] for i in range(N)]            # GC-tracked containers
if sys.argv[1] == "freeze":
    gc.freeze()
block = (sys.getsizeof(objs[0]) + 15) // 16 * 16
print("object_pages", N * block // 4096, flush=True)
pid = os.fork()
if pid == 0:
    gc.collect()    # a full collection writes gc_refs into every tracked object's header
    os._exit(0)
os.waitpid(pid, 0)
"#;

/// `gc.freeze()` moves every object to a generation the collector never visits, so a child's
/// full collection no longer writes (and copies) their headers.
#[test]
fn python_gc_freeze_spares_the_pages_a_childs_collection_would_copy() {
    if !is_root() {
        eprintln!("SKIP: needs visible PFNs");
        return;
    }
    let Some(py) = python() else {
        eprintln!("SKIP: python3 is not installed");
        return;
    };
    let run = |mode: &str| -> (u64, u64) {
        let t = trace(&[], &py, &["-c", PY_GC, mode]);
        assert_eq!(t.status, Some(0), "{}", t.stderr);
        let pages: u64 = t
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("object_pages "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let copied = t.report["forks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["final"]["copied_by_child"].as_u64())
            .max()
            .unwrap();
        (copied, pages)
    };
    let (plain, pages) = run("plain");
    let (frozen, _) = run("freeze");
    eprintln!(
        "gc.collect() in the child: copied_by_child {plain} plain, {frozen} after gc.freeze(); object pages {pages}"
    );
    assert!(
        plain >= pages,
        "every page of list objects is written: {plain} < {pages}"
    );
    assert!(
        frozen < pages / 20,
        "frozen objects are not visited: {frozen} vs {pages}"
    );
}

// ---- Redis BGSAVE ----

#[test]
fn redis_bgsave_child_releases_what_it_saved() {
    if !is_root() {
        eprintln!("SKIP: needs visible PFNs");
        return;
    }
    if !redis_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let port = free_port();
    let port_s = port.to_string();
    let dir_s = dir.path().to_str().unwrap().to_string();
    let mut c = spawn_trace(
        &[
            "--interval",
            "200ms",
            "--",
            "redis-server",
            "--port",
            &port_s,
            "--dir",
            &dir_s,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--enable-debug-command",
            "local",
        ],
        &out,
    );
    wait_until("redis to answer", Duration::from_secs(20), || {
        redis_cli(port, &["PING"]).trim() == "PONG"
    });
    let redis_pid: i32 = children(c.id() as i32)[0];
    redis_populate(port);
    // A write load on the parent while the child saves.
    bgsave_under_set_load(port);
    kill(redis_pid, nix::sys::signal::Signal::SIGTERM);
    let code = wait_exit(&mut c, Duration::from_secs(30));
    assert_eq!(code, Some(0), "redis exits 0 on SIGTERM");
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let f = v["forks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["final"]["total"].as_u64() > Some(50_000))
        .expect("the BGSAVE fork");
    let fin = &f["final"];
    eprintln!(
        "redis BGSAVE: total {} shared {} copied_by_child {} copied_by_parent {} \
         released_by_child {} released_by_parent {} moved {} samples {}",
        fin["total"],
        fin["shared"],
        fin["copied_by_child"],
        fin["copied_by_parent"],
        fin["released_by_child"],
        fin["released_by_parent"],
        fin["moved"],
        f["samples"].as_array().unwrap().len()
    );
    assert!(fin["released_by_child"].as_u64() > Some(0), "{fin:#}");
    assert!(
        fin["copied_by_child"].as_u64() < fin["released_by_child"].as_u64(),
        "the child's own copies stay small: {fin:#}"
    );
    assert!(
        fin["copied_by_parent"].as_u64() > Some(0),
        "the write load copies: {fin:#}"
    );
}

#[test]
fn reading_a_stdout_pipe_the_program_holds_does_not_block() {
    // cowscope's own report pipe to the program is close-on-exec: the program's output is
    // the only thing on stdout, and it reaches the reader line by line.
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(bin())
        .args(["trace", "--out"])
        .arg(dir.path().join("t.json"))
        .args(["--", "/bin/sh", "-c", "echo one; echo two"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines: Vec<String> = BufReader::new(c.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .collect();
    assert_eq!(lines, ["one", "two"]);
    assert_eq!(c.wait().unwrap().code(), Some(0));
}
