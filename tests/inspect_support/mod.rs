//! Subjects for `inspect` tests: a parent subject S (forked from the test through
//! `fork::subject::spawn`) that maps and touches memory, then forks children running known
//! programs; plus helpers to run cowscope and read process states.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use cowscope::fork::child::{ChildOp, TAG_PID};
use cowscope::fork::subject::{Msg, Subject, SubjectPipes, spawn};
use cowscope::mem::pagemap::Pagemap;
use serde_json::Value;

/// The base page size.
pub fn ps() -> usize {
    cowscope::kernel::page_size()
}

/// Whether we run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A PROT_NONE reservation in the test process, unmapped on drop. Subjects forked later
/// inherit it and may `MapAnon` over parts of it.
#[derive(Debug)]
pub struct Reservation {
    pub addr: usize,
    pub len: usize,
    _map: cowscope::kernel::AnonMap,
}

impl Reservation {
    pub fn new(pages: usize) -> Reservation {
        let len = pages * ps();
        let map = cowscope::kernel::AnonMap::new(len, libc::PROT_NONE, libc::MAP_NORESERVE)
            .unwrap_or_else(|e| panic!("reserve {len} bytes: {e}"));
        Reservation {
            addr: map.addr(),
            len,
            _map: map,
        }
    }
    /// Address of page `i`.
    pub fn page(&self, i: usize) -> usize {
        assert!(i * ps() <= self.len);
        self.addr + i * ps()
    }
    /// `[start, end)` of the whole reservation, hex, for `--range`.
    pub fn range_arg(&self) -> String {
        format!("{:#x}-{:#x}", self.addr, self.addr + self.len)
    }
}

/// A write of one byte into each of `pages` pages from `addr`.
pub fn writes(addr: usize, pages: usize) -> Vec<ChildOp<'static>> {
    (0..pages)
        .map(|i| ChildOp::WriteByte {
            addr: addr + i * ps(),
            byte: 0x5a,
        })
        .collect()
}

/// A parent that maps and writes `pages` pages (page 1 of the reservation on), and one child
/// that writes the first `child_writes` of them.
pub fn written_family(pages: usize, child_writes: usize) -> (Reservation, Family) {
    let res = Reservation::new(pages + 2);
    let r = res.page(1);
    let mut s = vec![ChildOp::MapAnon {
        addr: r,
        len: pages * ps(),
    }];
    s.extend(writes(r, pages));
    let fam = Family::spawn(&s, &[writes(r, child_writes)], &[], |_| {});
    (res, fam)
}

/// `--range` over the `pages` pages [`written_family`] wrote.
pub fn written_range(res: &Reservation, pages: usize) -> String {
    format!("{:#x}-{:#x}", res.page(1), res.page(1) + pages * ps())
}

/// A parent subject and its children, all blocked until dropped.
#[derive(Debug)]
pub struct Family {
    pub parent: i32,
    pub children: Vec<i32>,
    parent_subject: Subject,
    kids: Vec<Subject>,
}

impl Family {
    /// Fork S running `parent_before`, then stop at a gate (where `at_gate(S's pid)` runs, e.g.
    /// to record S's frames before any fork), then fork one child per program in `children`,
    /// then run `parent_after`. Every process then blocks until the family is dropped.
    pub fn spawn(
        parent_before: &[ChildOp<'_>],
        children: &[Vec<ChildOp<'_>>],
        parent_after: &[ChildOp<'_>],
        at_gate: impl FnOnce(i32),
    ) -> Family {
        let p = SubjectPipes::new().expect("pipes");
        let kid_pipes: Vec<SubjectPipes> = children
            .iter()
            .map(|_| SubjectPipes::new().expect("pipes"))
            .collect();
        let kid_programs: Vec<Vec<ChildOp<'_>>> = children
            .iter()
            .enumerate()
            .map(|(i, ops)| {
                let mut g = vec![
                    ChildOp::Close(p.child_report_fd()),
                    ChildOp::Close(p.child_release_fd()),
                ];
                for (j, kp) in kid_pipes.iter().enumerate() {
                    if j != i {
                        g.push(ChildOp::Close(kp.child_report_fd()));
                        g.push(ChildOp::Close(kp.child_release_fd()));
                    }
                }
                g.push(ChildOp::DieWithParent);
                g.extend_from_slice(ops);
                g.extend(kid_pipes[i].epilogue());
                g
            })
            .collect();
        let mut s_ops: Vec<ChildOp<'_>> = p.prologue().to_vec();
        for kp in &kid_pipes {
            let [a, b] = kp.parent_fds();
            s_ops.push(ChildOp::Close(a));
            s_ops.push(ChildOp::Close(b));
        }
        s_ops.extend_from_slice(parent_before);
        // The gate: READY, then wait for one byte.
        let [ready, _, _, _] = p.epilogue();
        s_ops.push(ready);
        s_ops.push(ChildOp::Wait(p.child_release_fd()));
        for prog in &kid_programs {
            s_ops.push(ChildOp::Fork {
                ops: prog,
                fd: p.child_report_fd(),
            });
        }
        for kp in &kid_pipes {
            s_ops.push(ChildOp::Close(kp.child_report_fd()));
            s_ops.push(ChildOp::Close(kp.child_release_fd()));
        }
        s_ops.extend_from_slice(parent_after);
        s_ops.extend(p.epilogue());
        let (mut s, _) = spawn(p, &s_ops).expect("fork the parent subject");
        let deadline = || Instant::now() + Duration::from_secs(20);
        s.wait_ready(deadline())
            .expect("parent subject reaches the gate");
        let spid = s.pid().as_raw();
        at_gate(spid);
        s.open_gate();
        let msgs: Vec<Msg> = s.wait_ready(deadline()).expect("parent subject forked");
        let pids: Vec<i32> = msgs
            .iter()
            .filter(|m| m.tag == TAG_PID)
            .map(|m| m.value as i32)
            .collect();
        assert_eq!(pids.len(), children.len(), "one pid per child: {msgs:?}");
        let mut kids = Vec::new();
        for (kp, &pid) in kid_pipes.into_iter().zip(&pids) {
            let mut k = Subject::adopt(kp, pid);
            k.wait_ready(deadline()).expect("child ready");
            kids.push(k);
        }
        Family {
            parent: spid,
            children: pids,
            parent_subject: s,
            kids,
        }
    }
}

impl Drop for Family {
    fn drop(&mut self) {
        // Children first: the parent subject reaps them before it exits.
        for k in &mut self.kids {
            let _ = nix::sys::signal::kill(k.pid(), nix::sys::signal::Signal::SIGCONT);
            k.forget();
        }
        let _ =
            nix::sys::signal::kill(self.parent_subject.pid(), nix::sys::signal::Signal::SIGCONT);
        self.parent_subject
            .finish(Instant::now() + Duration::from_secs(10));
    }
}

/// Raw pagemap entries of `pid` over `pages` pages from `addr` (read by the test itself).
pub fn entries(pid: i32, addr: usize, pages: usize) -> Vec<u64> {
    let pm = Pagemap::open(pid).expect("open pagemap");
    let mut v = vec![0u64; pages];
    pm.read_into(addr as u64, &mut v).expect("read pagemap");
    v
}

/// PFN of a present entry.
pub fn pfn(e: u64) -> u64 {
    assert!(e >> 63 == 1, "page not present: {e:#x}");
    e & ((1 << 55) - 1)
}

/// The cowscope binary.
pub fn cowscope_bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("cowscope")
}

/// Start `cowscope inspect ARGS` with stdout and stderr piped.
pub fn spawn_inspect(args: &[&str]) -> std::process::Child {
    Command::new(cowscope_bin())
        .arg("inspect")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cowscope")
}

/// Run `cowscope inspect ARGS`; returns (exit code, stdout, stderr).
pub fn inspect(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(cowscope_bin())
        .arg("inspect")
        .args(args)
        .output()
        .expect("run cowscope");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `cowscope inspect ARGS` once, expecting exit `code` and a JSON document: for targets
/// that keep running (a Redis save), where two reads cannot be compared.
pub fn inspect_json_once(args: &[&str], code: i32) -> Value {
    let (rc, out, err) = inspect(args);
    assert_eq!(rc, code, "inspect {args:?}: stderr: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON ({e}): {out}"))
}

/// Run `cowscope inspect ARGS` both ways, with PAGEMAP_SCAN (where the kernel has it) and
/// with `--no-scan` (the paths of a kernel without it), expecting exit `code` from both, and
/// assert that the two documents agree page for page (every class, count, page run and smaps
/// figure; only timings and the switch itself may differ). Returns the first document.
pub fn inspect_json(args: &[&str], code: i32) -> Value {
    let with_scan = inspect_json_once(args, code);
    let without = inspect_json_once(&[args, &["--no-scan"]].concat(), code);
    assert_eq!(
        without["system"]["pagemap_scan"], false,
        "--no-scan: {without}"
    );
    assert_same_both_ways(&with_scan, &without, &format!("inspect {args:?}"));
    with_scan
}

/// Assert that a document taken with PAGEMAP_SCAN and one taken with `--no-scan` agree: equal
/// after dropping what is allowed to differ (timings: keys ending in `_us`, `_ms`, `_ns`;
/// whether PAGEMAP_SCAN was used: `pagemap_scan`, `by_pagemap_scan`; the note saying it was
/// not; the whole-process smaps figures, `smaps_rollup` and `accounting`, whose Pss moves
/// with every other process mapping the same pages, the test's own included, between two
/// reads; a process's `state`, running or sleeping at the moment it was read; and a pool's
/// `kpagecount_histogram`, which counts the mappings of every process in the system, e.g. of
/// a shared library's pages by processes that start and exit between the two reads). Every class count, VMA row, page run and pool histogram is compared.
pub fn assert_same_both_ways(with_scan: &Value, without: &Value, what: &str) {
    let (a, b) = (scan_blind(with_scan), scan_blind(without));
    if a != b {
        let (ta, tb) = (
            serde_json::to_string_pretty(&a).unwrap(),
            serde_json::to_string_pretty(&b).unwrap(),
        );
        let first = ta
            .lines()
            .zip(tb.lines())
            .enumerate()
            .find(|(_, (x, y))| x != y)
            .map(|(i, (x, y))| format!("line {i}: with scan {x:?}, --no-scan {y:?}"))
            .unwrap_or_else(|| "one document is longer".into());
        panic!("{what}: the documents with and without PAGEMAP_SCAN differ: {first}");
    }
}

fn scan_blind(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !(k.ends_with("_us")
                        || k.ends_with("_ms")
                        || k.ends_with("_ns")
                        || k.as_str() == "pagemap_scan"
                        || k.as_str() == "by_pagemap_scan"
                        || k.as_str() == "smaps_rollup"
                        || k.as_str() == "accounting"
                        || k.as_str() == "state"
                        || k.as_str() == "kpagecount_histogram")
                })
                .map(|(k, v)| (k.clone(), scan_blind(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|x| {
                    !x.as_str()
                        .is_some_and(|s| s.starts_with("PAGEMAP_SCAN is unavailable"))
                })
                .map(scan_blind)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The state letter of `pid` (`S`, `T`, `Z`...), or `None` when it is gone.
pub fn state(pid: i32) -> Option<char> {
    cowscope::inspect::proc::stat(pid).ok().map(|s| s.state)
}

/// Wait until `pid` is in one of `states` (true) or `timeout` passes (false).
pub fn wait_state(pid: i32, states: &[char], timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if state(pid).is_some_and(|s| states.contains(&s)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// The pair for `child` in a document.
pub fn pair(doc: &Value, child: i32) -> &Value {
    doc["pairs"]
        .as_array()
        .expect("pairs[]")
        .iter()
        .find(|p| p["child"] == child)
        .unwrap_or_else(|| panic!("no pair for child {child}: {doc}"))
}

/// The VMA row starting at `addr` in a pair.
pub fn row(pair: &Value, addr: usize) -> &Value {
    let key = format!("{addr:#x}");
    pair["vmas"]
        .as_array()
        .expect("vmas[]")
        .iter()
        .find(|v| v["start"] == key.as_str())
        .unwrap_or_else(|| panic!("no VMA row at {key}: {}", pair["vmas"]))
}

/// The counts of a row or totals: (shared, diverged, only_parent, only_child, zero, unproven).
pub fn classes(v: &Value) -> [u64; 6] {
    [
        "shared",
        "diverged",
        "only_parent",
        "only_child",
        "zero",
        "unproven",
    ]
    .map(|k| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}")))
}

/// A python3 that uid 65534 can run (Debian's, not a pyenv shim under /root).
pub fn system_python() -> Option<&'static str> {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// A Python fixture (`tests/fixtures/inspect/<script>`) that forks, prints one JSON line
/// (`{"parent": pid, "child": pid, ...}`) and holds until its stdin closes; stopped and its
/// child killed on drop.
pub struct PySubject {
    proc: std::process::Child,
    /// The fixture's JSON line.
    pub info: Value,
}

impl PySubject {
    /// Start `script` with `args`, as uid/gid 65534 when `as_nobody`; `None` when Python is
    /// missing or the fixture did not report.
    pub fn spawn(script: &str, args: &[&str], as_nobody: bool) -> Option<PySubject> {
        use std::io::BufRead;
        use std::process::Stdio;
        let py = system_python()?;
        let script = format!(
            "{}/tests/fixtures/inspect/{script}",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(py)
                .current_dir("/");
            c
        } else {
            Command::new(py)
        };
        let mut proc = cmd
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut line = String::new();
        std::io::BufReader::new(proc.stdout.take()?)
            .read_line(&mut line)
            .ok()?;
        let info = serde_json::from_str(&line).ok()?;
        Some(PySubject { proc, info })
    }
    /// The parent's pid, as an argument.
    pub fn pid(&self) -> String {
        self.info["parent"].to_string()
    }
    /// The child's pid.
    pub fn child(&self) -> i32 {
        self.info["child"].as_i64().unwrap() as i32
    }
}

impl Drop for PySubject {
    fn drop(&mut self) {
        drop(self.proc.stdin.take()); // the parent kills its child and exits
        if self.proc.try_wait().ok().flatten().is_none() {
            let _ = self.proc.kill();
        }
        let _ = self.proc.wait();
        // SAFETY: kill(2) with plain integers; the child may already be gone.
        unsafe { libc::kill(self.child(), libc::SIGKILL) };
    }
}

/// `tests/inspect_support/family.c`, compiled once per test binary into a world-readable
/// directory.
pub fn family_program() -> std::path::PathBuf {
    use std::sync::OnceLock;
    static PROG: OnceLock<std::path::PathBuf> = OnceLock::new();
    PROG.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("cowscope-inspect-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let src =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inspect_support/family.c");
        let exe = dir.join("family");
        let out = Command::new("cc")
            .args(["-O1", "-Wall", "-o"])
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
    .clone()
}

/// A prefix that runs a program as an unprivileged user: uid 65534 through `setpriv` when
/// the tests run as root, nothing when they already run unprivileged. Such a reader may read
/// its own uid's dumpable processes only (no CAP_SYS_PTRACE), and sees no PFNs.
pub fn unprivileged() -> Vec<&'static str> {
    if is_root() {
        vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
    } else {
        Vec::new()
    }
}

/// `cowscope` run through `prefix` (see [`unprivileged`]).
pub fn cowscope_with(prefix: &[&str]) -> Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(cowscope_bin());
            c
        }
        None => Command::new(cowscope_bin()),
    }
}

/// A running `family` program (see family.c): ended by closing its stdin on drop.
#[derive(Debug)]
pub struct CFamily {
    proc: Option<std::process::Child>,
    /// The parent.
    pub parent: i32,
    /// Child 1 (makes itself non-dumpable on SIGUSR1).
    pub c1: i32,
    /// Child 2 (non-dumpable from the start), with "unreadable".
    pub c2: Option<i32>,
}

impl CFamily {
    /// Start `family ARGS`, under `prefix` (e.g. [`unprivileged`]; empty: directly).
    pub fn start(prefix: &[&str], args: &[&str]) -> CFamily {
        use std::io::BufRead;
        let prog = family_program();
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&prog);
                c
            }
            None => Command::new(&prog),
        };
        let mut proc = cmd
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run family");
        let mut line = String::new();
        std::io::BufReader::new(proc.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut it = line.split_whitespace().map(|v| v.parse::<i32>().unwrap());
        let (c1, c2) = (it.next().expect("child 1"), it.next().expect("child 2"));
        CFamily {
            parent: proc.id() as i32,
            c1,
            c2: (c2 > 0).then_some(c2),
            proc: Some(proc),
        }
    }

    /// Close stdin and wait for the parent's exit status (every process ends at EOF; a
    /// process left stopped would keep the parent waiting, so this times out after 10 s).
    pub fn end(&mut self) -> Option<std::process::ExitStatus> {
        let mut p = self.proc.take()?;
        drop(p.stdin.take());
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(s)) = p.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for pid in [Some(self.c1), self.c2].into_iter().flatten() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = p.kill();
        let _ = p.wait();
        None
    }
}

impl Drop for CFamily {
    fn drop(&mut self) {
        self.end();
    }
}
