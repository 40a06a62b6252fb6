//! `--freeze`: stop the targets with SIGSTOP for one consistent read, and always resume them.
//!
//! Three layers make "always" true:
//! 1. [`Freeze`] resumes in `Drop`, so every return path and panic unwinding resumes;
//! 2. the CLI's signal handler ([`super::interrupt`]) lets SIGINT/SIGTERM/SIGHUP end the read
//!    through the normal path, and on a second signal resumes every registered pid itself;
//! 3. a watchdog process (forked through [`crate::fork::subject::spawn`], running
//!    [`ChildOp::ResumeOnOrphan`]) sends SIGCONT if cowscope dies without releasing it, even by
//!    SIGKILL, which no handler sees.
//!
//! Only what cowscope stopped is resumed: a target already stopped (`T`, or `t` in a ptrace
//! stop) is left alone, and stays stopped. Side effects the user accepts with `--freeze`: the
//! target's parent may get SIGCHLD for the stop and the continue, and a program with a SIGCONT
//! handler runs it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::interrupt;
use super::proc::{self, Stat};
use crate::error::{Error, Result};
use crate::fork::child::ChildOp;
use crate::fork::subject::{Subject, SubjectPipes, spawn};

/// What a freeze did, for the report (the observer's cost is measured, not assumed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FreezeInfo {
    /// Pids cowscope stopped (and resumed).
    pub stopped: Vec<i32>,
    /// Pids that were already stopped and were left as they were.
    pub already_stopped: Vec<i32>,
    /// Whether every thread of every stopped process reached the stopped state before the
    /// read began (a thread in uninterruptible sleep stops only when it wakes).
    pub all_threads_stopped: bool,
    /// Microseconds from the first SIGSTOP until every thread was stopped.
    pub stop_us: u64,
    /// Microseconds from the first SIGSTOP to the last SIGCONT: how long the targets were
    /// held.
    pub held_us: u64,
}

/// Processes stopped by cowscope; resumed on [`Freeze::resume`] or drop.
#[derive(Debug)]
pub struct Freeze {
    stopped: Vec<(Stat, Option<OwnedFd>)>,
    already: Vec<i32>,
    watchdog: Option<Subject>,
    t0: Instant,
    all_threads_stopped: bool,
    stop_us: u64,
    held_us: u64,
    resumed: bool,
}

/// Watchdogs of this process that are alive (0: free slot), so that a plan made meanwhile (a
/// library caller inspecting from several threads) never takes one for a target.
static WATCHDOGS: [std::sync::atomic::AtomicI32; 64] =
    [const { std::sync::atomic::AtomicI32::new(0) }; 64];

/// Whether `pid` is a watchdog this process started and has not yet released.
pub fn is_our_watchdog(pid: i32) -> bool {
    pid > 0
        && WATCHDOGS
            .iter()
            .any(|w| w.load(std::sync::atomic::Ordering::SeqCst) == pid)
}

fn remember_watchdog(pid: i32) {
    use std::sync::atomic::Ordering;
    // A full table only means a concurrent plan might see the watchdog; nothing is lost.
    let _ = WATCHDOGS.iter().any(|w| {
        w.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    });
}

fn forget_watchdog(pid: i32) {
    use std::sync::atomic::Ordering;
    for w in &WATCHDOGS {
        let _ = w.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// How long to wait for every thread to reach the stopped state.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes two integers; on success it returns a new descriptor that we
    // own (close-on-exec by default).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a fresh descriptor nobody else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn send(pid: i32, pidfd: Option<&OwnedFd>, sig: libc::c_int) -> bool {
    match pidfd {
        // SAFETY: pidfd_send_signal with a valid pidfd, a signal number and a null siginfo.
        Some(fd) => unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            ) == 0
        },
        // SAFETY: kill(2) with plain integers.
        None => unsafe { libc::kill(pid, sig) == 0 },
    }
}

/// Fork the watchdog for `pids` (see the module docs).
fn watchdog(pids: &[i32], pidfds: &[RawFd]) -> Result<Subject> {
    let pipes = SubjectPipes::new()?;
    let [a, b] = pipes.parent_fds();
    let release = pipes.child_release_fd();
    let mut ops = vec![ChildOp::Close(a), ChildOp::Close(b), ChildOp::NoCoreDump];
    // Do not hold cowscope's stdin/stdout/stderr open (a pipeline reading our output would
    // wait for the watchdog too).
    for fd in 0..3 {
        if fd != release && fd != pipes.child_report_fd() {
            ops.push(ChildOp::Close(fd));
        }
    }
    ops.push(ChildOp::ResumeOnOrphan {
        fd: release,
        pids,
        pidfds,
    });
    ops.push(ChildOp::Exit(0));
    let (subject, _) = spawn(pipes, &ops)?;
    remember_watchdog(subject.pid().as_raw());
    Ok(subject)
}

impl Freeze {
    /// Stop every process of `targets` that is running (not already stopped, not a zombie,
    /// still the same process), after starting the watchdog, and wait up to
    /// [`STOP_TIMEOUT`] until all their threads are stopped.
    ///
    /// # Errors
    /// When the watchdog cannot be forked (then nothing was stopped).
    pub fn stop(targets: &[Stat]) -> Result<Freeze> {
        let mut to_stop = Vec::new();
        let mut already = Vec::new();
        for t in targets {
            match proc::stat(t.pid) {
                Ok(now) if now.start_time == t.start_time && now.is_stopped() => {
                    already.push(t.pid)
                }
                Ok(now) if now.start_time == t.start_time && !now.is_zombie() => to_stop.push(now),
                _ => {}
            }
        }
        let fds: Vec<Option<OwnedFd>> = to_stop.iter().map(|t| pidfd_open(t.pid)).collect();
        let pids: Vec<i32> = to_stop.iter().map(|t| t.pid).collect();
        let raw: Vec<RawFd> = fds
            .iter()
            .map(|f| f.as_ref().map_or(-1, |f| f.as_raw_fd()))
            .collect();
        let wd = if to_stop.is_empty() {
            None
        } else {
            Some(watchdog(&pids, &raw).map_err(|e| {
                Error::usage(format!(
                    "--freeze: could not start the watchdog that guarantees the targets are resumed: {e}"
                ))
            })?)
        };
        let t0 = Instant::now();
        let mut f = Freeze {
            stopped: Vec::new(),
            already,
            watchdog: wd,
            t0,
            all_threads_stopped: true,
            stop_us: 0,
            held_us: 0,
            resumed: false,
        };
        for (t, fd) in to_stop.into_iter().zip(fds) {
            interrupt::register_stopped(t.pid);
            if send(t.pid, fd.as_ref(), libc::SIGSTOP) {
                f.stopped.push((t, fd));
            } else {
                interrupt::unregister_stopped(t.pid);
            }
        }
        // A group stop reaches each thread when it next returns to user mode.
        let deadline = t0 + STOP_TIMEOUT;
        loop {
            let all = f.stopped.iter().all(|(t, _)| {
                proc::thread_states(t.pid)
                    .map(|s| s.iter().all(|&c| matches!(c, 'T' | 't' | 'Z' | 'X')))
                    .unwrap_or(true) // gone: nothing left to wait for
            });
            if all {
                break;
            }
            if Instant::now() >= deadline || interrupt::requested().is_some() {
                f.all_threads_stopped = false;
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        f.stop_us = t0.elapsed().as_micros() as u64;
        Ok(f)
    }

    /// Pids stopped by this freeze.
    pub fn stopped_pids(&self) -> Vec<i32> {
        self.stopped.iter().map(|(t, _)| t.pid).collect()
    }

    /// Resume everything stopped here and release the watchdog; returns what happened.
    pub fn resume(mut self) -> FreezeInfo {
        self.resume_inner();
        FreezeInfo {
            stopped: self.stopped_pids(),
            already_stopped: self.already.clone(),
            all_threads_stopped: self.all_threads_stopped,
            stop_us: self.stop_us,
            held_us: self.held_us,
        }
    }

    fn resume_inner(&mut self) {
        if self.resumed {
            return;
        }
        self.resumed = true;
        for (t, fd) in &self.stopped {
            // Only the process we stopped: same start time (a pidfd cannot be reused anyway).
            let same =
                fd.is_some() || proc::stat(t.pid).is_ok_and(|now| now.start_time == t.start_time);
            if same {
                send(t.pid, fd.as_ref(), libc::SIGCONT);
            }
            interrupt::unregister_stopped(t.pid);
        }
        self.held_us = self.t0.elapsed().as_micros() as u64;
        if let Some(mut w) = self.watchdog.take() {
            let pid = w.pid().as_raw();
            w.finish(Instant::now() + Duration::from_secs(5));
            forget_watchdog(pid);
        }
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        self.resume_inner();
    }
}
