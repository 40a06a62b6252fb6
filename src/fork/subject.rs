//! The parent's side of a forked subject: pipes, fork, readiness with a deadline, release,
//! reaping. A [`Subject`] that is dropped without being reaped is killed and reaped, so no
//! scenario leaves a zombie or a stray process behind.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::child::{self, ChildOp, MSG_LEN, TAG_READY};
use crate::error::{Error, Result};

/// How long a wait for a subject may go without looking for a deferred stop signal.
const STOP_POLL: Duration = Duration::from_millis(100);
/// The two pipes between the parent and one subject, created before the fork.
#[derive(Debug)]
pub struct SubjectPipes {
    release_read: OwnedFd,
    release_write: OwnedFd,
    report_read: OwnedFd,
    report_write: OwnedFd,
}

impl SubjectPipes {
    /// Create both pipes (close-on-exec, so nothing leaks into programs the tests exec).
    ///
    /// # Errors
    /// When the process is out of descriptors.
    pub fn new() -> Result<Self> {
        let (release_read, release_write) =
            pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("creating a pipe", e))?;
        let (report_read, report_write) =
            pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("creating a pipe", e))?;
        Ok(SubjectPipes {
            release_read,
            release_write,
            report_read,
            report_write,
        })
    }

    /// The descriptor the subject blocks on ([`ChildOp::Wait`]).
    pub fn child_release_fd(&self) -> RawFd {
        self.release_read.as_raw_fd()
    }

    /// The descriptor the subject reports on ([`ChildOp::Send`]).
    pub fn child_report_fd(&self) -> RawFd {
        self.report_write.as_raw_fd()
    }

    /// The parent's ends, which a subject must close first (so EOF means "subject gone").
    pub fn parent_fds(&self) -> [RawFd; 2] {
        [self.release_write.as_raw_fd(), self.report_read.as_raw_fd()]
    }

    /// Standard prologue of a subject's program: close the parent's ends, die with the
    /// parent, leave no core file when a fault is the point.
    pub fn prologue(&self) -> [ChildOp<'static>; 4] {
        let [a, b] = self.parent_fds();
        [
            ChildOp::Close(a),
            ChildOp::Close(b),
            ChildOp::DieWithParent,
            ChildOp::NoCoreDump,
        ]
    }

    /// Standard epilogue: report ready, block until released, reap own children, exit 0.
    pub fn epilogue(&self) -> [ChildOp<'static>; 4] {
        [
            ChildOp::Send {
                fd: self.child_report_fd(),
                tag: TAG_READY,
                value: 0,
            },
            ChildOp::Wait(self.child_release_fd()),
            ChildOp::ReapAll,
            ChildOp::Exit(0),
        ]
    }
}

/// How a subject ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExitInfo {
    /// Exit code, when it exited normally.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Signal name (e.g. `SIGSEGV`), when a signal ended it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// True when cowscope killed it because it did not report in time.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub killed_on_timeout: bool,
}

impl ExitInfo {
    fn from_status(s: WaitStatus) -> Option<Self> {
        match s {
            WaitStatus::Exited(_, code) => Some(ExitInfo {
                code: Some(code),
                ..Default::default()
            }),
            WaitStatus::Signaled(_, sig, _) => Some(ExitInfo {
                signal: Some(sig.as_str().to_string()),
                ..Default::default()
            }),
            _ => None,
        }
    }
}

/// One message from a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    /// Tag byte (see the `TAG_*` constants in `child`).
    pub tag: u8,
    /// Value.
    pub value: u64,
}

/// Why waiting for a subject ended without a READY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The subject's report pipe closed: it died (reaped, with its status).
    Died(ExitInfo),
    /// The deadline passed (the subject was killed and reaped).
    TimedOut(ExitInfo),
}

/// A forked process running a [`ChildOp`] program, seen from the parent.
#[derive(Debug)]
pub struct Subject {
    pid: Pid,
    release: Option<OwnedFd>,
    report: OwnedFd,
    buf: Vec<u8>,
    /// Messages read but not yet returned (kept when the subject dies before READY).
    pending: Vec<Msg>,
    exit: Option<ExitInfo>,
    /// False for a grandchild: its own parent reaps it, we can only signal it.
    ours: bool,
}

/// Fork a subject that runs `ops`; return it and the time `fork()` took in the parent.
///
/// # Errors
/// When fork fails (e.g. EAGAIN at the process limit).
pub fn spawn(pipes: SubjectPipes, ops: &[ChildOp<'_>]) -> Result<(Subject, Duration)> {
    // Buffered output would be duplicated into the child (design principle 9).
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let t0 = Instant::now();
    // SAFETY: after fork the child runs only `child::run`, which is async-signal-safe (no
    // allocation, no locks, no stdio) and ends in `_exit`; `ops` were built before the fork.
    let forked = unsafe { fork() }.map_err(|e| Error::io("fork()", e))?;
    match forked {
        ForkResult::Child => {
            // SAFETY: we are the fresh child; the caller built `ops` for this child's memory.
            unsafe { child::run(ops) }
        }
        ForkResult::Parent { child } => {
            let took = t0.elapsed();
            let SubjectPipes {
                release_read,
                release_write,
                report_read,
                report_write,
            } = pipes;
            // The child's ends are closed here, so EOF on `report` means the child is gone.
            drop(release_read);
            drop(report_write);
            Ok((
                Subject {
                    pid: child,
                    release: Some(release_write),
                    report: report_read,
                    buf: Vec::new(),
                    pending: Vec::new(),
                    exit: None,
                    ours: true,
                },
                took,
            ))
        }
    }
}

impl Subject {
    /// Adopt a process that is not our child (a grandchild, reaped by its own parent), given
    /// the pipes created for it before its parent was forked. Call after that fork: the
    /// subject's ends are closed here.
    pub fn adopt(pipes: SubjectPipes, pid: i32) -> Subject {
        let SubjectPipes {
            release_read,
            release_write,
            report_read,
            report_write,
        } = pipes;
        drop(release_read);
        drop(report_write);
        Subject {
            pid: Pid::from_raw(pid),
            release: Some(release_write),
            report: report_read,
            buf: Vec::new(),
            pending: Vec::new(),
            exit: None,
            ours: false,
        }
    }

    /// Stop tracking an adopted subject after releasing it: its own parent reaps it.
    pub fn forget(&mut self) {
        self.release();
        if self.exit.is_none() {
            self.exit = Some(ExitInfo::default());
        }
    }

    /// The subject's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Read messages until READY. Messages before it (pids, timings) are returned.
    ///
    /// # Errors
    /// `Err(NotReady)` when the subject died or the deadline passed (then it is reaped).
    pub fn wait_ready(&mut self, deadline: Instant) -> std::result::Result<Vec<Msg>, NotReady> {
        loop {
            while self.buf.len() >= MSG_LEN {
                let m: Vec<u8> = self.buf.drain(..MSG_LEN).collect();
                let mut v = [0u8; 8];
                v.copy_from_slice(&m[1..9]);
                let msg = Msg {
                    tag: m[0],
                    value: u64::from_le_bytes(v),
                };
                if msg.tag == TAG_READY {
                    return Ok(std::mem::take(&mut self.pending));
                }
                self.pending.push(msg);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NotReady::TimedOut(self.kill_and_reap(true)));
            }
            // A stop signal (deferred by the command: `kernel::stop_requested`) ends the
            // wait within STOP_POLL: the subject is killed and reaped, and the caller, which
            // checks for the signal too, ends the run.
            if crate::kernel::stop_requested().is_some() {
                return Err(NotReady::Died(self.kill_and_reap(false)));
            }
            let ms = u16::try_from(left.min(STOP_POLL).as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(
                std::os::fd::AsFd::as_fd(&self.report),
                PollFlags::POLLIN,
            )];
            match poll(&mut fds, PollTimeout::from(ms.max(1))) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(_) => return Err(NotReady::Died(self.kill_and_reap(false))),
            }
            let mut chunk = [0u8; 512];
            match nix::unistd::read(&self.report, &mut chunk) {
                Ok(0) => {
                    let info = self.reap_blocking();
                    return Err(NotReady::Died(info));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
                Err(_) => return Err(NotReady::Died(self.kill_and_reap(false))),
            }
        }
    }

    /// Let the subject pass one `Wait` (a gate) and keep it for the next.
    pub fn open_gate(&self) {
        if let Some(fd) = &self.release {
            let _ = nix::unistd::write(fd, b"o");
        }
    }

    /// Let the subject go on past its `Wait` (it then reaps its own children and exits).
    pub fn release(&mut self) {
        if let Some(fd) = self.release.take() {
            let _ = nix::unistd::write(&fd, b"g");
        }
    }

    /// Release (if not yet) and reap, killing the subject if it does not exit by `deadline`.
    pub fn finish(&mut self, deadline: Instant) -> ExitInfo {
        if let Some(e) = &self.exit {
            return e.clone();
        }
        self.release();
        self.reap(Some(deadline))
    }

    fn reap_blocking(&mut self) -> ExitInfo {
        self.reap(None)
    }

    /// Wait for the subject's exit and record it: blocking, or polling until `deadline` and
    /// then killing it. A subject that is not our child (an adopted grandchild) cannot be
    /// waited for; its own parent reaps it.
    fn reap(&mut self, deadline: Option<Instant>) -> ExitInfo {
        let info = loop {
            if !self.ours {
                break ExitInfo::default();
            }
            match waitpid(self.pid, deadline.map(|_| WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return self.kill_and_reap(true);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(s) => {
                    if let Some(info) = ExitInfo::from_status(s) {
                        break info;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => break ExitInfo::default(),
            }
        };
        self.exit = Some(info.clone());
        info
    }

    fn kill_and_reap(&mut self, timeout: bool) -> ExitInfo {
        let _ = kill(self.pid, Signal::SIGKILL);
        let mut info = self.reap_blocking();
        info.killed_on_timeout = timeout;
        self.exit = Some(info.clone());
        info
    }

    /// Read every message until the subject closes its pipe (it exited or died), then reap.
    /// For subjects whose program ends without READY, e.g. one that faults on purpose.
    pub fn collect_until_exit(&mut self, deadline: Instant) -> (Vec<Msg>, ExitInfo) {
        let mut msgs = Vec::new();
        loop {
            match self.wait_ready(deadline) {
                Ok(mut m) => msgs.append(&mut m),
                Err(NotReady::Died(e)) | Err(NotReady::TimedOut(e)) => {
                    // Complete records that arrived before EOF.
                    while self.buf.len() >= MSG_LEN {
                        let m: Vec<u8> = self.buf.drain(..MSG_LEN).collect();
                        let mut v = [0u8; 8];
                        v.copy_from_slice(&m[1..9]);
                        self.pending.push(Msg {
                            tag: m[0],
                            value: u64::from_le_bytes(v),
                        });
                    }
                    msgs.append(&mut self.pending);
                    return (msgs, e);
                }
            }
        }
    }

    /// How the subject ended, once reaped.
    pub fn exit_info(&self) -> Option<&ExitInfo> {
        self.exit.as_ref()
    }

    /// Hand the subject to a caller that waits for it itself (a tracer, which must see every
    /// wait status of the process, so no one else may `waitpid` it). Returns its pid and the
    /// read end of its report pipe; from here on `Drop` neither kills nor reaps it, and the
    /// caller owns both duties.
    ///
    /// # Errors
    /// When the report pipe's descriptor cannot be duplicated (out of descriptors); the
    /// subject is then killed and reaped as usual.
    pub fn hand_over(mut self) -> Result<(Pid, OwnedFd)> {
        let report = self
            .report
            .try_clone()
            .map_err(|e| Error::io("duplicating a subject's report pipe", e))?;
        self.exit = Some(ExitInfo::default());
        Ok((self.pid, report))
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.kill_and_reap(false);
        }
    }
}

/// How a subject that stored bytes, possibly faulting, ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultProbe {
    /// Its exit (a signal name when the fault killed it).
    pub exit: ExitInfo,
    /// The signal its fault handler saw (`SIGSEGV`, `SIGBUS`), if it faulted.
    pub signal: Option<String>,
    /// The faulting address (`si_addr`), if it faulted.
    pub si_addr: Option<usize>,
}

/// Fork a subject that installs the one-shot fault reporter, stores `bytes` one by one from
/// `addr`, and exits 0 if nothing faulted. The shared shape of every "does this address still
/// belong to us?" experiment.
///
/// # Errors
/// When the pipes or the fork fail.
pub fn store_and_report_fault(addr: usize, bytes: &[u8], timeout: Duration) -> Result<FaultProbe> {
    use super::child::{TAG_FAULT_ADDR, TAG_FAULT_SIGNAL};
    let pipes = SubjectPipes::new()?;
    let mut ops = pipes.prologue().to_vec();
    ops.push(ChildOp::ReportFaults {
        fd: pipes.child_report_fd(),
    });
    ops.extend(
        bytes
            .iter()
            .enumerate()
            .map(|(i, &byte)| ChildOp::WriteByte {
                addr: addr + i,
                byte,
            }),
    );
    ops.push(ChildOp::Exit(0));
    let (mut subject, _) = spawn(pipes, &ops)?;
    let (msgs, exit) = subject.collect_until_exit(Instant::now() + timeout);
    let si_addr = msgs
        .iter()
        .find(|m| m.tag == TAG_FAULT_ADDR)
        .map(|m| m.value as usize);
    let signal = msgs
        .iter()
        .find(|m| m.tag == TAG_FAULT_SIGNAL)
        .and_then(|m| i32::try_from(m.value).ok())
        .map(|n| {
            Signal::try_from(n)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {n}"))
        });
    Ok(FaultProbe {
        exit,
        signal,
        si_addr,
    })
}
