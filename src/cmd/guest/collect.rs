//! Running each collection in a child process of its own and printing its document between
//! the console markers.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::init::say;
use super::{
    Collection, DEFAULT_TIMEOUT_SECS, MARK_RESULT, TIMEOUT_ENV, begin_marker, collections,
    end_marker,
};

fn collection_timeout() -> Duration {
    let secs = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    Duration::from_secs(secs)
}

pub(super) fn collect_all() {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/init".into());
    let timeout = collection_timeout();
    for c in collections() {
        say(&format!("cowscope-guest: collecting {}", c.file));
        let outcome = run_with_subject(&exe, &c, timeout);
        publish(&c.file, &outcome);
    }
    // System facts last: they are computed in-process, and a panic here must not cost the
    // documents already printed.
    let facts = std::panic::catch_unwind(|| super::facts::system_facts("guest-init"));
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

/// Run one collection: start and hold its subject (if any), put the subject's pid and the
/// output file into the arguments, run it, read the document from the file when it went
/// there, and kill the subject's process group.
fn run_with_subject(exe: &Path, c: &Collection, timeout: Duration) -> Outcome {
    let out_file = format!("/tmp/{}", c.file);
    let mut subject = None;
    let mut pid = String::new();
    if let Some(cmd) = &c.subject {
        match start_subject(cmd) {
            Ok((child, p)) => {
                pid = p.to_string();
                subject = Some(child);
            }
            Err(why) => {
                return Outcome {
                    status: "subject-failed".into(),
                    stdout: Vec::new(),
                    stderr: why.into_bytes(),
                    secs: 0.0,
                };
            }
        }
    }
    let args: Vec<String> = c
        .args
        .iter()
        .map(|a| a.replace("{pid}", &pid).replace("{out}", &out_file))
        .collect();
    let mut o = run_collection(exe, &args, timeout);
    if c.args.iter().any(|a| a.contains("{out}")) {
        // The program's own output is not the document: echo it with the stderr lines.
        let program = std::mem::take(&mut o.stdout);
        for line in String::from_utf8_lossy(&program).lines() {
            o.stderr
                .extend_from_slice(format!("program: {line}\n").as_bytes());
        }
        o.stdout = std::fs::read(&out_file).unwrap_or_default();
    }
    if let Some(mut child) = subject {
        // The subject and its children form one process group (process_group(0)).
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
    }
    o
}

/// Start a subject in a process group of its own and wait (at most 20 s) for its first line
/// on stdout (its setup is done).
fn start_subject(cmd: &[String]) -> std::result::Result<(std::process::Child, u32), String> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let (prog, args) = cmd.split_first().ok_or("an empty subject command")?;
    let mut child = Command::new(prog)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the subject {prog}: {e}"))?;
    let stdout = child.stdout.take().ok_or("the subject has no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Drain the rest, so a later write by the subject never meets a closed pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    if line.is_empty() {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("the subject {prog} printed no line within 20 s"));
    }
    let id = child.id();
    Ok((child, id))
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
