//! Thin, raw `ptrace(2)` and `waitpid(2)` wrappers for the tracer.
//!
//! Raw libc rather than `nix::sys::ptrace`: nix 0.32 has no `PTRACE_LISTEN`, and its
//! `WaitStatus` refuses stop signals outside its `Signal` enum (real-time signals, which glibc
//! itself uses), so a traced program using them would break the loop. Signals stay plain
//! integers here. Every request must come from the one thread that attached (the tracer
//! thread); callers keep to that.

use std::io;

/// `PTRACE_EVENT_*` numbers (`status >> 16` of a stop).
pub mod event {
    /// fork(): a new process with its own copy of the address space.
    pub const FORK: i32 = 1;
    /// vfork(): the child borrows the parent's address space until it execs or exits.
    pub const VFORK: i32 = 2;
    /// clone(): a thread, or a process created with non-SIGCHLD exit signal.
    pub const CLONE: i32 = 3;
    /// A successful execve().
    pub const EXEC: i32 = 4;
    /// The vfork child released the parent's mm.
    pub const VFORK_DONE: i32 = 5;
    /// The task is exiting; its memory is still mapped.
    pub const EXIT: i32 = 6;
    /// A seccomp filter returned SECCOMP_RET_TRACE.
    pub const SECCOMP: i32 = 7;
    /// Group-stop, PTRACE_INTERRUPT, or the first stop of a seized child.
    pub const STOP: i32 = 128;
}

/// Options set on every tracee (children inherit them).
pub fn options(seccomp: bool, exit_kill: bool) -> libc::c_int {
    let mut o = libc::PTRACE_O_TRACESYSGOOD
        | libc::PTRACE_O_TRACEFORK
        | libc::PTRACE_O_TRACEVFORK
        | libc::PTRACE_O_TRACECLONE
        | libc::PTRACE_O_TRACEEXEC
        | libc::PTRACE_O_TRACEEXIT;
    if seccomp {
        o |= libc::PTRACE_O_TRACESECCOMP;
    }
    if exit_kill {
        o |= libc::PTRACE_O_EXITKILL;
    }
    o
}

fn check(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn request(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> io::Result<()> {
    // SAFETY: every request routed here (SEIZE, CONT, SYSCALL, LISTEN, INTERRUPT, DETACH,
    // SETOPTIONS) takes plain integers in `addr`/`data` and writes no memory of ours.
    check(unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    })
}

/// `PTRACE_SEIZE` with `options`: attach without stopping the task.
///
/// # Errors
/// `EPERM` (no permission: another user, Yama, already traced), `ESRCH` (no such task).
pub fn seize(tid: i32, options: libc::c_int) -> io::Result<()> {
    request(libc::PTRACE_SEIZE, tid, 0, options as usize)
}

/// Resume a stopped tracee, delivering `sig` (0 for none).
///
/// # Errors
/// `ESRCH` when the tracee is not stopped or is gone (e.g. killed meanwhile).
pub fn cont(tid: i32, sig: i32) -> io::Result<()> {
    request(libc::PTRACE_CONT, tid, 0, sig as usize)
}

/// Resume a stopped tracee until the next syscall entry or exit (or other stop).
///
/// # Errors
/// As [`cont`].
pub fn syscall(tid: i32, sig: i32) -> io::Result<()> {
    request(libc::PTRACE_SYSCALL, tid, 0, sig as usize)
}

/// Leave a tracee in group-stop but let it report the SIGCONT that ends it.
///
/// # Errors
/// As [`cont`].
pub fn listen(tid: i32) -> io::Result<()> {
    request(libc::PTRACE_LISTEN, tid, 0, 0)
}

/// Make a running (or listening) seized tracee stop with `PTRACE_EVENT_STOP`.
///
/// # Errors
/// `ESRCH` when the tracee is gone.
pub fn interrupt(tid: i32) -> io::Result<()> {
    request(libc::PTRACE_INTERRUPT, tid, 0, 0)
}

/// Detach from a stopped tracee, delivering `sig` (0 for none).
///
/// # Errors
/// `ESRCH` when it is not stopped or is gone.
pub fn detach(tid: i32, sig: i32) -> io::Result<()> {
    request(libc::PTRACE_DETACH, tid, 0, sig as usize)
}

/// `PTRACE_GETEVENTMSG`: the new pid at a fork event, the former tid at an exec event, the
/// exit status at an exit event, the filter's data at a seccomp event.
///
/// # Errors
/// `ESRCH` when the tracee is not stopped.
pub fn event_msg(tid: i32) -> io::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: GETEVENTMSG writes one unsigned long to `data`, which points to `msg`.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut msg as *mut libc::c_ulong as *mut libc::c_void,
        )
    };
    check(rc)?;
    Ok(msg as u64)
}

/// What `PTRACE_GET_SYSCALL_INFO` says about the syscall at a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallInfo {
    /// Syscall-entry stop (PTRACE_SYSCALL): number and arguments.
    Entry {
        /// AUDIT_ARCH_* of the syscall.
        arch: u32,
        /// Syscall number.
        nr: u64,
        /// Arguments.
        args: [u64; 6],
    },
    /// Seccomp stop: number, arguments and the filter's SECCOMP_RET_DATA.
    Seccomp {
        /// AUDIT_ARCH_* of the syscall.
        arch: u32,
        /// Syscall number.
        nr: u64,
        /// Arguments.
        args: [u64; 6],
        /// The filter's 16-bit data.
        ret_data: u32,
    },
    /// Syscall-exit stop: the return value.
    Exit {
        /// Return value (negative errno when `is_error`).
        rval: i64,
        /// The syscall failed.
        is_error: bool,
    },
    /// Not a syscall stop.
    None,
}

/// `PTRACE_GET_SYSCALL_INFO` (Linux 5.3+).
///
/// # Errors
/// `EIO`/`EINVAL` on kernels without it, `ESRCH` when the tracee is not stopped.
pub fn syscall_info(tid: i32) -> io::Result<SyscallInfo> {
    // SAFETY: an all-zero ptrace_syscall_info is a valid value (integers and a union of
    // integer structs).
    let mut info: libc::ptrace_syscall_info = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::ptrace_syscall_info>();
    // SAFETY: the kernel writes at most `size` bytes (addr) into `info` (data).
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GET_SYSCALL_INFO,
            tid,
            size as *mut libc::c_void,
            &mut info as *mut libc::ptrace_syscall_info as *mut libc::c_void,
        )
    };
    check(rc)?;
    Ok(match info.op {
        libc::PTRACE_SYSCALL_INFO_ENTRY => {
            // SAFETY: op ENTRY means the kernel filled the `entry` member of the union.
            let e = unsafe { info.u.entry };
            SyscallInfo::Entry {
                arch: info.arch,
                nr: e.nr,
                args: e.args,
            }
        }
        libc::PTRACE_SYSCALL_INFO_SECCOMP => {
            // SAFETY: op SECCOMP means the kernel filled the `seccomp` member.
            let s = unsafe { info.u.seccomp };
            SyscallInfo::Seccomp {
                arch: info.arch,
                nr: s.nr,
                args: s.args,
                ret_data: s.ret_data,
            }
        }
        libc::PTRACE_SYSCALL_INFO_EXIT => {
            // SAFETY: op EXIT means the kernel filled the `exit` member.
            let x = unsafe { info.u.exit };
            SyscallInfo::Exit {
                rval: x.sval,
                is_error: x.is_error != 0,
            }
        }
        _ => SyscallInfo::None,
    })
}

/// One decoded wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The task exited with this code.
    Exited(i32),
    /// A signal killed the task.
    Signaled(i32),
    /// A ptrace stop: the stop signal and the `PTRACE_EVENT_*` (0 for none).
    Stopped {
        /// WSTOPSIG (SIGTRAP | 0x80 for a syscall stop with TRACESYSGOOD).
        sig: i32,
        /// `status >> 16`.
        event: i32,
    },
    /// Continued (only with WCONTINUED, which the tracer never asks for).
    Continued,
}

impl Wait {
    /// Decode a raw `waitpid` status.
    pub fn decode(status: i32) -> Wait {
        if libc::WIFEXITED(status) {
            Wait::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            Wait::Signaled(libc::WTERMSIG(status))
        } else if libc::WIFSTOPPED(status) {
            Wait::Stopped {
                sig: libc::WSTOPSIG(status),
                event: (status >> 16) & 0xffff,
            }
        } else {
            Wait::Continued
        }
    }
}

/// `waitpid(pid, __WALL | flags)`. `Ok(None)` with WNOHANG when nothing is ready.
///
/// # Errors
/// `ECHILD` when there is nothing left to wait for; `EINTR` is retried.
pub fn wait(pid: i32, flags: libc::c_int) -> io::Result<Option<(i32, Wait)>> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to the local `status`.
        let r = unsafe { libc::waitpid(pid, &mut status, flags | libc::__WALL) };
        if r > 0 {
            return Ok(Some((r, Wait::decode(status))));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_decode_like_the_c_macros() {
        // exit(3): 0x0300; SIGKILL: 9; stopped by SIGSTOP: 0x137f; fork event: SIGTRAP | 1<<16.
        assert_eq!(Wait::decode(0x0300), Wait::Exited(3));
        assert_eq!(Wait::decode(9), Wait::Signaled(9));
        assert_eq!(
            Wait::decode(0x137f),
            Wait::Stopped {
                sig: libc::SIGSTOP,
                event: 0
            }
        );
        assert_eq!(
            Wait::decode((libc::SIGTRAP << 8) | 0x7f | (event::FORK << 16)),
            Wait::Stopped {
                sig: libc::SIGTRAP,
                event: event::FORK
            }
        );
        // A real-time signal (nix's WaitStatus would refuse it).
        assert_eq!(
            Wait::decode((40 << 8) | 0x7f),
            Wait::Stopped { sig: 40, event: 0 }
        );
    }
}
