//! Helpers shared by the `trace` test files (tests/trace*.rs): the binary, privilege, process
//! states from /proc, waiting, signals, and a Redis on a free local port.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// cowscope as built.
pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("cowscope")
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `/proc/<pid>/status`, or None when the process is gone.
pub fn status(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

/// The value of one `Name:` line of a status text ("" when absent).
pub fn field(s: &str, name: &str) -> String {
    s.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// The children of `pid`'s main thread.
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Poll `f` every 2 ms until it holds; fail after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn kill(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// The exit code of `child` (None: killed by a signal); kill it and fail after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("cowscope did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A free TCP port on the loopback address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `redis-cli -p PORT ARGS...`'s stdout.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into()
}

/// The final sample's row of the VMA that starts at `start` (a hex string, as the document
/// gives it).
pub fn vma_row<'a>(fork: &'a Value, start: &str) -> &'a Value {
    fork["final"]["vmas"]
        .as_array()
        .expect("a final sample with VMA rows")
        .iter()
        .find(|v| v["start"] == start)
        .unwrap_or_else(|| panic!("no row for {start} in {fork:#}"))
}

/// Every class of a trace row but `total`, as the document names them.
pub const CLASSES: [&str; 16] = [
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
pub fn assert_counts(row: &Value, want: &[(&str, u64)]) {
    let mut sum = 0;
    for c in CLASSES {
        let expected = want.iter().find(|(k, _)| *k == c).map_or(0, |(_, v)| *v);
        assert_eq!(row[c].as_u64(), Some(expected), "{c} in {row:#}");
        sum += expected;
    }
    assert_eq!(row["total"].as_u64(), Some(sum), "total in {row:#}");
}

/// `exe` (a copy of cowscope in a world-readable directory when `unprivileged`), run as uid
/// 65534 with no capabilities when `unprivileged`.
pub fn cowscope_as(unprivileged: bool, exe: &std::path::Path) -> Command {
    if unprivileged {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

/// Start `cmd` with its stdout piped, and read its first line's second word (the test
/// programs print `arena 0x<start> 0x<end>` first). The rest of stdout stays readable.
pub fn spawn_reading_arena(
    cmd: &mut Command,
) -> (
    Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    String,
) {
    use std::io::BufRead;
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let arena = lines
        .next()
        .unwrap()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    (child, lines, arena)
}

/// Whether Debian's redis-server is installed (`.ci/run` installs it); says so when not.
pub fn redis_installed() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        eprintln!("SKIP: redis-server is not installed (.ci/run installs it)");
    }
    ok
}

/// Fill the Redis at `port` with 100,000 keys of 4 KiB and slow its save to about 20 µs a key,
/// so a BGSAVE outlasts the write load of [`bgsave_under_set_load`].
pub fn redis_populate(port: u16) {
    assert!(redis_cli(port, &["DEBUG", "POPULATE", "100000", "key", "4096"]).contains("OK"));
    redis_cli(port, &["CONFIG", "SET", "rdb-key-save-delay", "20"]);
}

/// BGSAVE on the Redis at `port` and, while its child saves, 20,000 SETs of 4 KiB over the
/// 100,000 keys (redis-benchmark); returns when the save and the load are both done.
pub fn bgsave_under_set_load(port: u16) {
    assert!(redis_cli(port, &["BGSAVE"]).contains("started"));
    let port_s = port.to_string();
    let mut writer = Command::new("redis-benchmark")
        .args([
            "-p", &port_s, "-t", "set", "-n", "20000", "-r", "100000", "-d", "4096", "-q",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-benchmark runs");
    wait_until("BGSAVE to finish", Duration::from_secs(90), || {
        redis_cli(port, &["INFO", "persistence"]).contains("rdb_bgsave_in_progress:0")
    });
    let _ = writer.wait();
}

/// Whether a test can run cowscope as uid 65534 with the software page-fault event: it needs
/// root to switch (setpriv) and perf_event_paranoid at most 2; says why when not.
pub fn can_run_unprivileged_events() -> bool {
    if !is_root() {
        eprintln!("SKIP: runs the unprivileged case through setpriv (needs root to switch)");
        return false;
    }
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .unwrap_or_default()
        .trim()
        .parse::<i32>()
        .unwrap_or(2);
    if paranoid > 2 {
        eprintln!("SKIP: perf_event_paranoid {paranoid} refuses user events");
        return false;
    }
    true
}
