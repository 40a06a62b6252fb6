//! PID 1 inside a test VM (scripts/kernel-matrix.sh): mount /proc and /sys, collect, print the
//! JSON between markers on the console, power off.
//!
//! The kernel starts `/init` (this binary) with the arguments after `--` on its command line, so
//! the script boots with `... -- guest-init`. Each collection runs in a child process of its own
//! (this same binary re-executed with an ordinary subcommand such as `fork-report`), so a crash or
//! hang in one loses only that one document. PID 1 itself never exits on the success path: if it
//! did, the kernel would panic ("Attempted to kill init"), so it syncs and powers off instead.
//!
//! The console protocol, one marker per line:
//! ```text
//! ==COWSCOPE-BEGIN fork-report.json==
//! { ...one JSON document... }
//! ==COWSCOPE-END fork-report.json==
//! ==COWSCOPE-RESULT fork-report.json exit=0 secs=2.41==
//! ...
//! ==COWSCOPE-DONE==
//! ```
//! A collection that produced no valid JSON gets only its RESULT line (with `exit=`, `signal=`
//! or `timeout`, and `json=invalid` or `json=none`); its stderr is echoed, prefixed, outside the
//! markers.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::report::{SCHEMA_VERSION, Tool};

/// Prefix of the line that opens a document: `==COWSCOPE-BEGIN <file>==`.
pub const MARK_BEGIN: &str = "==COWSCOPE-BEGIN";
/// Prefix of the line that closes a document: `==COWSCOPE-END <file>==`.
pub const MARK_END: &str = "==COWSCOPE-END";
/// Prefix of the status line of each collection: `==COWSCOPE-RESULT <file> exit=N secs=S==`.
pub const MARK_RESULT: &str = "==COWSCOPE-RESULT";
/// The last line the guest prints before powering off.
pub const MARK_DONE: &str = "==COWSCOPE-DONE==";

/// Environment variable (set on the kernel command line before `--`) bounding each collection.
pub const TIMEOUT_ENV: &str = "COWSCOPE_GUEST_TIMEOUT";
/// Seconds each collection may take when [`TIMEOUT_ENV`] is not set.
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;

/// The line that opens `file`'s document.
pub fn begin_marker(file: &str) -> String {
    format!("{MARK_BEGIN} {file}==")
}

/// The line that closes `file`'s document.
pub fn end_marker(file: &str) -> String {
    format!("{MARK_END} {file}==")
}

/// One collection: a cowscope subcommand whose stdout is one JSON document, and the file the
/// host stores it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// File name under `results/<release>/`, e.g. `fork-report.json`.
    pub file: String,
    /// The subcommand and its arguments, e.g. `["baseline", "09a"]`.
    pub args: Vec<String>,
}

/// What the guest collects, in order. The file names match `scripts/collect.sh`.
///
/// `experiment --all` is included only when this build has experiments; inside the throwaway
/// VM it may change (and restores) /sys settings, hence `--allow-sysfs`.
pub fn collections() -> Vec<Collection> {
    let mut v = vec![Collection {
        file: "fork-report.json".into(),
        args: vec!["fork-report".into()],
    }];
    for (name, _) in crate::baseline::BaselineCase::ALL {
        v.push(Collection {
            file: format!("baseline-{name}.json"),
            args: vec!["baseline".into(), name.into()],
        });
    }
    if !crate::experiments::list().is_empty() {
        v.push(Collection {
            file: "experiments.json".into(),
            args: vec!["experiment".into(), "--all".into(), "--allow-sysfs".into()],
        });
    }
    v
}

/// Run as init. Refuses (usage error, exit 2) unless this process is PID 1, so that running
/// `cowscope guest-init` by hand can never power off the host. As PID 1 it only returns if the
/// final power-off fails.
///
/// # Errors
/// [`Error::Usage`] when not PID 1; [`Error::Io`] if `reboot(RB_POWER_OFF)` fails.
pub fn run_as_init() -> Result<i32> {
    let pid = nix::unistd::getpid().as_raw();
    if pid != 1 {
        return Err(Error::usage(format!(
            "guest-init only runs as PID 1 inside a throwaway VM booted by \
             scripts/kernel-matrix.sh (it powers the machine off); this is PID {pid}, so it refuses"
        )));
    }
    prepare_filesystems();
    // Firmware output ends without a newline; start the protocol on a fresh line.
    say("");
    collect_all();
    say(MARK_DONE);
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF) {
        Ok(never) => match never {},
        Err(e) => Err(Error::io("powering off with reboot(RB_POWER_OFF)", e)),
    }
}

/// Print one line to the console and flush; the console is all PID 1 has, so a failed write is
/// ignored rather than allowed to stop the collection.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Mount what the collections read. Failures are reported on the console and the run goes on:
/// the documents then say what could not be seen.
fn prepare_filesystems() {
    use nix::mount::{MsFlags, mount};
    let mounts: [(&str, &str, &str); 4] = [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("tmpfs", "/tmp", "tmpfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ];
    for (source, target, fstype) in mounts {
        if let Err(e) = std::fs::create_dir_all(target) {
            eprintln!("cowscope-guest: creating {target}: {e}");
            continue;
        }
        match mount(
            Some(source),
            target,
            Some(fstype),
            MsFlags::empty(),
            None::<&str>,
        ) {
            // EBUSY: the kernel (or an earlier init) already mounted it.
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => eprintln!("cowscope-guest: mounting {fstype} on {target}: {e}"),
        }
    }
    ensure_console();
    // Only emergencies on the console from now on: a kernel message printed in the middle of a
    // JSON document would corrupt it.
    if let Err(e) = std::fs::write("/proc/sys/kernel/printk", "1") {
        eprintln!("cowscope-guest: lowering the console log level: {e}");
    }
}

/// If the kernel could not give init a console (no /dev/console in the initramfs), open it from
/// devtmpfs and make it fds 0, 1 and 2.
fn ensure_console() {
    use std::os::fd::{AsRawFd, IntoRawFd};
    if Path::new("/proc/self/fd/1").exists() {
        return;
    }
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    let raw = console.as_raw_fd();
    // Failures leave that fd closed; nothing else can be done without a console.
    if raw != 0 {
        let _ = nix::unistd::dup2_stdin(&console);
    }
    if raw != 1 {
        let _ = nix::unistd::dup2_stdout(&console);
    }
    if raw != 2 {
        let _ = nix::unistd::dup2_stderr(&console);
    }
    if raw <= 2 {
        // The open itself landed on one of 0..=2: keep it open as that descriptor.
        let _ = console.into_raw_fd();
    }
}

fn collection_timeout() -> Duration {
    let secs = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    Duration::from_secs(secs)
}

fn collect_all() {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/init".into());
    let timeout = collection_timeout();
    for c in collections() {
        say(&format!("cowscope-guest: collecting {}", c.file));
        let outcome = run_collection(&exe, &c.args, timeout);
        publish(&c.file, &outcome);
    }
    // System facts last: they are computed in-process, and a panic here must not cost the
    // documents already printed.
    let facts = std::panic::catch_unwind(|| system_facts("guest-init"));
    let outcome = match facts.map(|v| crate::output::to_json(&v)) {
        Ok(Ok(json)) => Outcome {
            status: "exit=0".into(),
            stdout: json.into_bytes(),
            stderr: Vec::new(),
            secs: 0.0,
        },
        _ => Outcome {
            status: "error".into(),
            stdout: Vec::new(),
            stderr: b"computing system facts failed".to_vec(),
            secs: 0.0,
        },
    };
    publish("system.json", &outcome);
}

/// How one collection ended.
#[derive(Debug)]
struct Outcome {
    /// `exit=N`, `signal=N`, `timeout` or `spawn-failed`.
    status: String,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    secs: f64,
}

/// Print a collection's document between markers (when it is JSON), its stderr outside them,
/// and its RESULT line.
fn publish(file: &str, o: &Outcome) {
    for line in String::from_utf8_lossy(&o.stderr).lines() {
        say(&format!("cowscope-guest: [{file}] {line}"));
    }
    let json = if o.stdout.is_empty() {
        "none"
    } else if serde_json::from_slice::<Value>(&o.stdout).is_ok() {
        "ok"
    } else {
        "invalid"
    };
    if json == "ok" {
        let text = String::from_utf8_lossy(&o.stdout);
        say(&begin_marker(file));
        say(text.trim_end());
        say(&end_marker(file));
    }
    say(&format!(
        "{MARK_RESULT} {file} {} json={json} secs={:.2}==",
        o.status, o.secs
    ));
}

/// Run `exe args...` with stdout and stderr captured, killing it after `timeout`.
fn run_collection(exe: &Path, args: &[String], timeout: Duration) -> Outcome {
    let start = Instant::now();
    let spawned = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                status: "spawn-failed".into(),
                stdout: Vec::new(),
                stderr: format!("starting {}: {e}", exe.display()).into_bytes(),
                secs: 0.0,
            };
        }
    };
    // Drain both pipes on threads: a report larger than the pipe buffer would otherwise block
    // the child forever. Results come back over a channel so that a pipe kept open by an
    // orphaned grandchild cannot hang PID 1.
    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    for (is_stdout, pipe) in [
        (
            true,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            false,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send((is_stdout, buf));
        });
    }
    drop(tx);
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break describe_status(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break "timeout".to_string();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break format!("wait-failed({e})"),
        }
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok((true, b)) => stdout = b,
            Ok((false, b)) => stderr = b,
            Err(_) => break,
        }
    }
    Outcome {
        status,
        stdout,
        stderr,
        secs: start.elapsed().as_secs_f64(),
    }
}

fn describe_status(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(code), _) => format!("exit={code}"),
        (None, Some(sig)) => format!("signal={sig}"),
        (None, None) => "exit=unknown".into(),
    }
}

/// Facts about the machine the results came from, written as `system.json` (the same keys
/// `scripts/collect.sh` writes on the host): the usual envelope plus uname, THP settings
/// (including the per-size mTHP switches of 6.8+, as `sizes: [{size_kb, enabled}]`), cpu, memory, privileges and whether
/// soft-dirty tracking works.
pub fn system_facts(collected_by: &str) -> Value {
    let uname = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uname
            .as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let thp_dir = "/sys/kernel/mm/transparent_hugepage";
    let mut sizes = Vec::new();
    if let Ok(rd) = std::fs::read_dir(thp_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(kb) = name
                .strip_prefix("hugepages-")
                .and_then(|s| s.strip_suffix("kB"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                // Sizes without an `enabled` switch (shmem-only ones) are not anonymous THP sizes.
                if let Some(mode) =
                    crate::system::read_selected(&format!("{thp_dir}/{name}/enabled"))
                {
                    sizes.push((kb, mode));
                }
            }
        }
    }
    sizes.sort();
    let sizes: Vec<Value> = sizes
        .into_iter()
        .map(|(kb, mode)| json!({ "size_kb": kb, "enabled": mode }))
        .collect();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    json!({
        "schema_version": SCHEMA_VERSION,
        "tool": Tool::current(),
        "system": crate::system::detect(),
        "collected_by": collected_by,
        "uname": {
            "sysname": field(|u| u.sysname()),
            "release": field(|u| u.release()),
            "version": field(|u| u.version()),
            "machine": field(|u| u.machine()),
        },
        "thp": {
            "enabled": crate::system::read_selected(&format!("{thp_dir}/enabled")),
            "defrag": crate::system::read_selected(&format!("{thp_dir}/defrag")),
            "shmem_enabled": crate::system::read_selected(&format!("{thp_dir}/shmem_enabled")),
            "hpage_pmd_size_kb": crate::system::thp_pmd_size_kb(),
            "sizes": sizes,
        },
        "cpu": { "model": cpu_model, "count": cpus },
        "memory": { "mem_total_kb": kv_kb(&meminfo, "MemTotal:") },
        "privileges": {
            "uid": nix::unistd::getuid().as_raw(),
            "euid": nix::unistd::geteuid().as_raw(),
            "cap_eff": status.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .map(|s| s.trim().to_string()),
        },
        "soft_dirty": soft_dirty_works(),
        "ksm": Path::new("/sys/kernel/mm/ksm/run").exists(),
    })
}

/// `MemTotal:   1234 kB` -> 1234.
fn kv_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Whether soft-dirty tracking (pagemap bit 55) works: clear our soft-dirty bits
/// (`clear_refs` = 4), write a page, and see whether pagemap marks it. Without
/// CONFIG_MEM_SOFT_DIRTY bit 55 stays 0. `None` when the probe cannot run (no /proc, page not
/// present).
pub fn soft_dirty_works() -> Option<bool> {
    let ps = crate::system::page_size();
    let mut buf = vec![0u8; 3 * ps];
    let base = buf.as_ptr() as usize;
    let off = (ps - base % ps) % ps; // first page-aligned byte inside the buffer
    buf[off] = 1; // fault the page in before clearing
    std::fs::write("/proc/self/clear_refs", "4").ok()?;
    // black_box keeps the write from being optimised away or moved past the pagemap read.
    *std::hint::black_box(&mut buf[off]) = 2;
    let vaddr = base + off;
    let mut f = std::fs::File::open("/proc/self/pagemap").ok()?;
    let mut entry = [0u8; 8];
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start((vaddr / ps * 8) as u64)).ok()?;
    f.read_exact(&mut entry).ok()?;
    std::hint::black_box(&buf);
    let e = u64::from_le_bytes(entry);
    let present = e & (1 << 63) != 0;
    present.then_some(e & (1 << 55) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_name_the_file() {
        assert_eq!(
            begin_marker("fork-report.json"),
            "==COWSCOPE-BEGIN fork-report.json=="
        );
        assert_eq!(
            end_marker("baseline-09a.json"),
            "==COWSCOPE-END baseline-09a.json=="
        );
    }

    #[test]
    fn collections_cover_fork_report_and_every_baseline() {
        let c = collections();
        let files: Vec<&str> = c.iter().map(|c| c.file.as_str()).collect();
        assert_eq!(files[0], "fork-report.json");
        for (name, _) in crate::baseline::BaselineCase::ALL {
            assert!(files.contains(&format!("baseline-{name}.json").as_str()));
        }
        // Names are unique: each becomes one file on the host.
        let mut sorted = files.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), files.len());
    }

    #[test]
    fn system_facts_carry_the_envelope() {
        let v = system_facts("test");
        assert_eq!(v["schema_version"], json!(SCHEMA_VERSION));
        assert_eq!(v["tool"]["name"], json!("cowscope"));
        assert_eq!(
            v["uname"]["release"],
            json!(crate::system::kernel_release())
        );
        assert!(v["system"]["page_size"].as_u64().is_some_and(|p| p >= 4096));
    }
}
