//! `cowscope trace --stacks`: the code behind every copied page, on programs whose writers
//! are known (tests/trace_programs/cow_stacks.c: named functions copy known page counts after
//! a populate loop), on CPython (Debian's /usr/bin/python3 with python3-dbg's symbols) and on
//! Redis (Debian's stripped redis-server). Expected figures come from the programs'
//! definitions, never from cowscope's output.
//!
//! Run with `--test-threads=1`.

mod trace_support;
use trace_support::{
    bgsave_under_set_load, bin, can_run_unprivileged_events, cowscope_as, free_port, is_root,
    redis_cli, redis_installed, redis_populate, wait_until,
};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use rstest::rstest;
use serde_json::Value;

/// The test programs, built three ways, and a copy of cowscope, in a world-readable
/// directory (the unprivileged case runs them as uid 65534).
fn programs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("cowscope-stacks-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/trace_programs/cow_stacks.c");
        for (name, flags) in [
            ("fp", &["-O2", "-g", "-fno-omit-frame-pointer"][..]),
            ("nofp", &["-O2", "-fomit-frame-pointer"][..]),
        ] {
            let out = Command::new("cc")
                .args(flags)
                .arg("-o")
                .arg(dir.join(format!("cow_stacks_{name}")))
                .arg(&src)
                .output()
                .expect("cc runs (install build-essential)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::copy(bin(), dir.join("cowscope")).unwrap();
        dir
    })
}

struct Traced {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    report: Value,
}

/// `cowscope trace --stacks --out <tmp> [extra] -- prog args`, optionally as uid 65534.
fn trace(unprivileged: bool, extra: &[&str], prog: &Path, args: &[&str]) -> Traced {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out_path = dir.path().join("trace.json");
    let exe = if unprivileged {
        programs().join("cowscope")
    } else {
        bin()
    };
    let mut cmd = cowscope_as(unprivileged, &exe);
    let out = cmd
        .args(["trace", "--stacks", "--out"])
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

fn functions(stack: &Value) -> Vec<String> {
    stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn leaf(stack: &Value) -> String {
    functions(stack).first().cloned().unwrap_or_default()
}

/// Pages of `who`'s stacks (all classes) whose leaf function is `name`.
fn pages_in(fork: &Value, who: &str, name: &str) -> u64 {
    fork["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["who"] == who && leaf(s) == name)
        .map(|s| s["pages"].as_u64().unwrap())
        .sum()
}

fn the_fork(r: &Value) -> &Value {
    let forks = r["forks"].as_array().expect("forks");
    assert_eq!(forks.len(), 1, "one fork: {r:#}");
    &forks[0]
}

/// The writers copy exactly the pages the program's arguments say, each in its own
/// function; the populate loop before the fork copied nothing; every writer's stack reaches
/// `main` through run() and child_work()/parent_work(), with and without frame pointers.
#[rstest]
#[case::frame_pointers("fp")]
#[case::no_frame_pointers("nofp")]
fn each_writer_function_is_named_with_exactly_the_pages_it_copied(
    #[case] build: &str,
    #[values(false, true)] no_scan: bool,
) {
    if !is_root() {
        eprintln!("SKIP: the copied_by_* classes need visible PFNs (root)");
        return;
    }
    let prog = programs().join(format!("cow_stacks_{build}"));
    // Both ways: with PAGEMAP_SCAN and with --no-scan (the paths of a kernel before 6.7).
    let way: &[&str] = if no_scan { &["--no-scan"] } else { &[] };
    let t = trace(false, way, &prog, &["n=2048", "a=250", "b=150", "p=200"]);
    assert_eq!(t.status, Some(0), "{}", t.stderr);
    let r = &t.report;
    assert_eq!(r["stacks"]["recorded"], true, "{:#}", r["stacks"]);
    assert!(
        r["stacks"]["event"]
            .as_str()
            .unwrap()
            .contains("page_fault_user"),
        "root uses the write-fault tracepoint: {:#}",
        r["stacks"]
    );
    let f = the_fork(r);
    assert_eq!(f["stack_samples"]["lost"], 0, "{:#}", f["stack_samples"]);
    assert_eq!(pages_in(f, "child", "child_writes_a"), 250, "{f:#}");
    assert_eq!(pages_in(f, "child", "child_writes_b"), 150, "{f:#}");
    assert_eq!(pages_in(f, "parent", "parent_writes"), 200, "{f:#}");
    for s in f["stacks"].as_array().unwrap() {
        let fns = functions(s);
        assert!(
            !fns.iter().any(|n| n == "populate"),
            "the populate loop copied nothing: {s:#}"
        );
        let l = leaf(s);
        if l.starts_with("child_writes") || l == "parent_writes" {
            let want_mid = if l == "parent_writes" {
                "parent_work"
            } else {
                "child_work"
            };
            assert!(
                fns.iter().any(|n| n == want_mid)
                    && fns.iter().any(|n| n == "run")
                    && fns.iter().any(|n| n == "main"),
                "{build}: the stack reaches main through {want_mid} and run: {fns:?}"
            );
            if build == "fp" {
                let leaf_frame = &s["frames"][0];
                assert!(
                    leaf_frame["file"]
                        .as_str()
                        .is_some_and(|f| f.ends_with("cow_stacks.c"))
                        && leaf_frame["line"].as_u64().is_some(),
                    "a -g build has file:line: {leaf_frame:#}"
                );
            }
        }
    }
    // Every page the partition calls copied has a stack or is counted unattributed.
    let fin = &f["final"];
    let attributed: u64 = f["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pages"].as_u64().unwrap())
        .sum();
    let unattributed: u64 = f["unattributed"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let copied = fin["copied_by_child"].as_u64().unwrap()
        + fin["copied_by_parent"].as_u64().unwrap()
        + fin["copied_at_fork"].as_u64().unwrap();
    assert_eq!(attributed + unattributed, copied, "{f:#}");
}

/// Pages the child released and wrote again, and new memory it touched, are faults but not
/// copies: neither function ever appears.
#[test]
fn refaults_after_a_release_and_first_touches_are_never_copies() {
    if !is_root() {
        eprintln!("SKIP: needs visible PFNs");
        return;
    }
    let prog = programs().join("cow_stacks_fp");
    let t = trace(
        false,
        &[],
        &prog,
        &["n=1024", "a=100", "b=0", "p=50", "r=100", "t=300"],
    );
    assert_eq!(t.status, Some(0), "{}", t.stderr);
    let f = the_fork(&t.report);
    assert_eq!(f["final"]["released_by_child"], 100, "{:#}", f["final"]);
    assert_eq!(pages_in(f, "child", "child_writes_a"), 100);
    assert_eq!(pages_in(f, "parent", "parent_writes"), 50);
    for s in f["stacks"].as_array().unwrap() {
        let fns = functions(s);
        assert!(
            !fns.iter()
                .any(|n| n == "child_refaults" || n == "child_first_touch"),
            "a refault or a first touch counted as a copy: {s:#}"
        );
    }
    assert!(
        t.report["stacks"]["outside"].as_u64() >= Some(300),
        "the first touches are counted outside the baseline: {:#}",
        t.report["stacks"]
    );
}

/// As a user without privilege (perf_event_paranoid 2): the software page-fault event on
/// one's own processes. PFNs are hidden, so pagemap says only `diverged`; the first fault at
/// each diverged page names the side and the code.
#[test]
fn without_privilege_the_software_event_names_the_writers_of_diverged_pages() {
    if !can_run_unprivileged_events() {
        return;
    }
    let prog = programs().join("cow_stacks_nofp");
    // A user's rings are bounded by the locked-memory limit (perf_event_mlock_kb plus
    // RLIMIT_MEMLOCK: 4 MiB a CPU here), about 250 samples of the default 16 KiB stack; the
    // child's 200 faults come in well under a millisecond, faster than the collector's
    // first unwinds of a new process, and 27 were lost once in CI. This program's stack is
    // a few frames deep: 4 KiB per sample reach main and hold 1,000 samples a ring.
    let t = trace(
        true,
        &["--stack-size", "4096"],
        &prog,
        &["n=1024", "a=120", "b=80", "p=60"],
    );
    assert_eq!(
        t.report["forks"][0]["stack_samples"]["lost"], 0,
        "{}",
        t.stderr
    );
    assert_eq!(t.status, Some(0), "{}", t.stderr);
    let r = &t.report;
    assert!(
        r["stacks"]["event"].as_str().unwrap().contains("software"),
        "{:#}",
        r["stacks"]
    );
    let f = the_fork(r);
    assert_eq!(
        f["final"]["copied_by_child"], 0,
        "PFNs hidden: who is unproven"
    );
    assert_eq!(pages_in(f, "child", "child_writes_a"), 120, "{f:#}");
    assert_eq!(pages_in(f, "child", "child_writes_b"), 80, "{f:#}");
    assert_eq!(pages_in(f, "parent", "parent_writes"), 60, "{f:#}");
    for s in f["stacks"].as_array().unwrap() {
        if leaf(s).ends_with("_writes_a") {
            assert_eq!(s["class"], "diverged", "{s:#}");
            assert!(functions(s).iter().any(|n| n == "main"), "{s:#}");
        }
    }
}

/// perf_event_open refused (no locked memory for a ring: perf_event_mlock_kb 0 and
/// RLIMIT_MEMLOCK 0, as a user): the page classes stand, the report says why, exit 3.
#[test]
fn refused_events_keep_the_classes_and_exit_3() {
    if !is_root() {
        eprintln!("SKIP: changes perf_event_mlock_kb (root)");
        return;
    }
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write("/proc/sys/kernel/perf_event_mlock_kb", &self.0);
        }
    }
    let old = std::fs::read_to_string("/proc/sys/kernel/perf_event_mlock_kb").unwrap();
    let _restore = Restore(old);
    std::fs::write("/proc/sys/kernel/perf_event_mlock_kb", "0").unwrap();
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out_path = dir.path().join("t.json");
    let out = Command::new("prlimit")
        .args(["--memlock=0", "--", "setpriv"])
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(programs().join("cowscope"))
        .args(["trace", "--stacks", "--out"])
        .arg(&out_path)
        .arg("--")
        .arg(programs().join("cow_stacks_fp"))
        .args(["n=256", "a=10", "b=0", "p=10"])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["stacks"]["recorded"], false, "{:#}", r["stacks"]);
    assert!(
        r["stacks"]["reason"]
            .as_str()
            .unwrap()
            .contains("perf_event_open"),
        "{:#}",
        r["stacks"]
    );
    let f = the_fork(&r);
    assert!(
        f["final"]["total"].as_u64() > Some(256),
        "classes stand: {f:#}"
    );
    assert!(f.get("stacks").is_none(), "no empty list: {f:#}");
}

// ---- CPython (Debian's interpreter; python3-dbg gives it symbols by build-id) ----

fn debian_python() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/python3");
    Command::new(&p)
        .arg("-c")
        .arg("pass")
        .output()
        .ok()?
        .status
        .success()
        .then_some(p)
}

const PY_LIST: &str = r#"
import os
ints = list(range(10**9, 10**9 + 10**6))   # distinct int objects
pid = os.fork()
if pid == 0:
    s = 0
    for x in ints:
        s += x
    os._exit(0)
os.waitpid(pid, 0)
"#;

fn stack_pages(f: &Value, who: &str, pred: impl Fn(&[String]) -> bool) -> (u64, u64) {
    let mut hit = 0;
    let mut all = 0;
    for s in f["stacks"].as_array().unwrap() {
        if s["who"] != who {
            continue;
        }
        let n = s["pages"].as_u64().unwrap();
        all += n;
        if pred(&functions(s)) {
            hit += n;
        }
    }
    (hit, all)
}

fn biggest_fork(r: &Value) -> &Value {
    r["forks"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|f| f["final"]["copied_by_child"].as_u64().unwrap_or(0))
        .expect("a fork")
}

/// Iterating a list of 10^6 ints in a child: the refcount increment in the list iterator
/// copies nearly every page of int objects.
#[test]
fn python_list_iteration_copies_are_the_list_iterators_refcount_writes() {
    if !is_root() {
        eprintln!("SKIP: needs visible PFNs");
        return;
    }
    let Some(py) = debian_python() else {
        eprintln!("SKIP: /usr/bin/python3 is not installed (.ci/run installs it)");
        return;
    };
    let t = trace(false, &[], &py, &["-c", PY_LIST]);
    assert_eq!(t.status, Some(0), "{}", t.stderr);
    let f = biggest_fork(&t.report);
    assert_eq!(f["stack_samples"]["lost"], 0, "{:#}", f["stack_samples"]);
    // The write is Py_INCREF inlined into listiter_next: with python3-dbg's DWARF the
    // inlined function is a frame of its own, leaf first.
    let (hit, all) = stack_pages(f, "child", |fns| {
        fns.iter().take(2).any(|l| l.starts_with("listiter_next"))
    });
    eprintln!(
        "python list iteration: {hit} of {all} child pages in listiter_next; unattributed {:#}",
        f["unattributed"]
    );
    assert!(all > 7000, "about 7,800 pages of ints are copied: {all}");
    assert!(
        hit * 10 >= all * 9,
        "at least 90% in listiter_next: {hit}/{all}\n{}",
        t.stdout
    );
}

const PY_GC: &str = r#"
import gc, os, sys
objs = [[i] for i in range(300000)]        # GC-tracked containers
if sys.argv[1] == "freeze":
    gc.freeze()
pid = os.fork()
if pid == 0:
    gc.collect()
    os._exit(0)
os.waitpid(pid, 0)
"#;

fn in_collector(fns: &[String]) -> bool {
    fns.iter().any(|f| {
        let f = f.split('.').next().unwrap_or(f);
        matches!(
            f,
            "gc_collect_main"
                | "gc_collect_impl"
                | "gc_collect_with_callback"
                | "collect"
                | "update_refs"
                | "subtract_refs"
                | "move_unreachable"
                | "deduce_unreachable"
                | "visit_decref"
                | "visit_reachable"
        )
    })
}

/// A child's gc.collect() over 300,000 small lists: its copies are the collector's (GC
/// header writes), and after gc.freeze() (nearly) none are left.
#[test]
fn python_gc_copies_are_the_collectors_and_gc_freeze_removes_them() {
    if !is_root() {
        eprintln!("SKIP: needs visible PFNs");
        return;
    }
    let Some(py) = debian_python() else {
        eprintln!("SKIP: /usr/bin/python3 is not installed");
        return;
    };
    let run = |mode: &str| -> (u64, u64) {
        let t = trace(false, &[], &py, &["-c", PY_GC, mode]);
        assert_eq!(t.status, Some(0), "{}", t.stderr);
        stack_pages(biggest_fork(&t.report), "child", in_collector)
    };
    let (gc_plain, all_plain) = run("plain");
    let (gc_frozen, all_frozen) = run("freeze");
    eprintln!(
        "gc.collect(): collector {gc_plain}/{all_plain} pages plain, {gc_frozen}/{all_frozen} frozen"
    );
    assert!(all_plain > 1000, "300,000 lists span thousands of pages");
    assert!(
        gc_plain * 10 >= all_plain * 9,
        "the copies are the collector's: {gc_plain}/{all_plain}"
    );
    assert!(
        gc_frozen * 20 < gc_plain,
        "gc.freeze() spares them: {gc_frozen} vs {gc_plain}"
    );
}

// ---- Redis BGSAVE under SET load (Debian's stripped redis-server) ----

#[test]
fn redis_bgsave_parent_copies_come_from_the_command_path_and_child_releases_are_no_copies() {
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
    let mut c = Command::new(bin())
        .args(["trace", "--stacks", "--out"])
        .arg(&out)
        .args(["--", "redis-server", "--port", &port_s, "--dir"])
        .arg(dir.path())
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--enable-debug-command",
            "local",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("redis to answer", Duration::from_secs(20), || {
        redis_cli(port, &["PING"]).trim() == "PONG"
    });
    redis_populate(port);
    bgsave_under_set_load(port);
    redis_cli(port, &["SHUTDOWN", "NOSAVE"]);
    let st = c.wait().unwrap();
    let err = std::io::read_to_string(c.stderr.take().unwrap()).unwrap_or_default();
    assert_eq!(st.code(), Some(0), "{err}");
    let r: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let f = r["forks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["final"]["total"].as_u64() > Some(50_000))
        .expect("the BGSAVE fork");
    let (cmd, parent_all) = stack_pages(f, "parent", |fns| {
        fns.iter().any(|n| {
            matches!(
                n.as_str(),
                "call" | "processCommand" | "setCommand" | "processInputBuffer"
            )
        })
    });
    let (released_as_copy, _) = stack_pages(f, "child", |fns| {
        fns.iter()
            .any(|n| n.starts_with("dismiss") || n.contains("madvise"))
    });
    let deep: u64 = f["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["frames"].as_array().unwrap().len() >= 3)
        .map(|s| s["pages"].as_u64().unwrap())
        .sum();
    let all: u64 = f["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pages"].as_u64().unwrap())
        .sum();
    eprintln!(
        "redis: parent {cmd}/{parent_all} pages in the command path; {deep}/{all} deeper than \
         2 frames; final {:#}",
        f["final"]["copied_by_parent"]
    );
    assert!(parent_all > 0, "the SET load copied pages in the parent");
    assert!(
        cmd * 2 > parent_all,
        "most parent copies come from the command path: {cmd}/{parent_all}"
    );
    assert_eq!(
        released_as_copy, 0,
        "dismissObject's releases are no copies"
    );
    assert!(
        deep * 2 > all,
        "most pages have stacks deeper than the leaf"
    );
}

/// The stack formats: folded lines sum to the stacks' pages; a flame graph is an SVG, also
/// when there is nothing to draw (it says why); both need --stacks (usage error, exit 2).
#[test]
fn folded_and_flamegraph_formats_draw_the_documents_stacks() {
    let no_stacks = Command::new(bin())
        .args(["trace", "--format", "folded", "--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(no_stacks.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_stacks.stderr).contains("--stacks"));
    let empty = Command::new(bin())
        .args([
            "trace",
            "--stacks",
            "--format",
            "flamegraph",
            "--",
            "/bin/true",
        ])
        .output()
        .unwrap();
    let svg = String::from_utf8_lossy(&empty.stderr);
    assert!(
        svg.starts_with("<svg") && svg.contains("never forked"),
        "{svg}"
    );
    if !is_root() {
        eprintln!("SKIP: the folded figures need the copied_by_* classes (root)");
        return;
    }
    let prog = programs().join("cow_stacks_nofp");
    let out = Command::new(bin())
        .args(["trace", "--stacks", "--format", "folded", "--"])
        .arg(&prog)
        .args(["n=512", "a=40", "b=30", "p=20"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stderr);
    let sum = |leaf: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.rsplit_once(' ')
                    .is_some_and(|(s, _)| s.ends_with(&format!(";{leaf}")))
            })
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(sum("child_writes_a"), 40, "{text}");
    assert_eq!(sum("child_writes_b"), 30, "{text}");
    assert_eq!(sum("parent_writes"), 20, "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("cow_stacks_nofp;child;")
            && l.contains(";main;run;child_work;child_writes_a ")),
        "outermost first, program and side first: {text}"
    );
}
