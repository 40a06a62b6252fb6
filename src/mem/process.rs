//! One process's identity from `/proc/<pid>/stat` and `/proc/<pid>/status`: name, state,
//! parent, whether it is a kernel thread; and, when the kernel refuses to show its memory,
//! the reason in words.

use std::io;

/// `PF_KTHREAD` in the `flags` field of `/proc/<pid>/stat` (include/linux/sched.h).
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// The fields of `/proc/<pid>/stat` cowscope uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Process id.
    pub pid: i32,
    /// The command name (`comm`, at most 15 bytes), without the parentheses.
    pub comm: String,
    /// The state letter: R, S, D, T (stopped), t (tracing stop), Z (zombie), X, I...
    pub state: char,
    /// Parent process id.
    pub ppid: i32,
    /// Process group id.
    pub pgrp: i32,
    /// The kernel's `PF_*` flags.
    pub flags: u64,
    /// Start time after boot, in clock ticks (with the pid, a process's identity: pids are
    /// reused, start times of one pid are not).
    pub start_time: u64,
}

impl Stat {
    /// A kernel thread: it has no user address space at all.
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    /// A zombie: it has exited, its memory is gone, only its exit status waits for its parent.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }

    /// Stopped by a signal (`T`) or in a ptrace stop (`t`).
    pub fn is_stopped(&self) -> bool {
        self.state == 'T' || self.state == 't'
    }
}

/// Parse one `/proc/<pid>/stat` line. The command name may contain spaces and parentheses,
/// so it is everything between the first `(` and the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line[..open].trim().parse().ok()?;
    let comm = line.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field n is rest[n - 3].
    let field = |n: usize| rest.get(n - 3).copied();
    Some(Stat {
        pid,
        comm,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        flags: field(9)?.parse().ok()?,
        start_time: field(22)?.parse().ok()?,
    })
}

/// Read `/proc/<pid>/stat`.
///
/// # Errors
/// `NotFound` when there is no such process; `InvalidData` when the line does not parse.
pub fn stat(pid: i32) -> io::Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat does not parse"),
        )
    })
}

/// Why a pid names no memory cowscope can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReadable {
    /// No process has this pid.
    NoSuchProcess(i32),
    /// The process has exited; only its exit status is left.
    Zombie(i32, String),
    /// A kernel thread: no user address space.
    KernelThread(i32, String),
}

impl std::error::Error for NotReadable {}

impl std::fmt::Display for NotReadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReadable::NoSuchProcess(pid) => write!(f, "no process with pid {pid}"),
            NotReadable::Zombie(pid, comm) => write!(
                f,
                "process {pid} ({comm}) is a zombie: it has exited and its memory is gone"
            ),
            NotReadable::KernelThread(pid, comm) => write!(
                f,
                "process {pid} ({comm}) is a kernel thread and has no user memory"
            ),
        }
    }
}

/// The stat of `pid` if it is a live user process (not gone, not a zombie, not a kernel
/// thread).
///
/// # Errors
/// The [`NotReadable`] reason.
pub fn user_process(pid: i32) -> Result<Stat, NotReadable> {
    let s = stat(pid).map_err(|_| NotReadable::NoSuchProcess(pid))?;
    if s.is_zombie() {
        return Err(NotReadable::Zombie(pid, s.comm));
    }
    if s.is_kernel_thread() {
        return Err(NotReadable::KernelThread(pid, s.comm));
    }
    Ok(s)
}

/// Every pid in `/proc` (processes, not threads), in no particular order.
///
/// # Errors
/// When `/proc` cannot be listed.
pub fn all_pids() -> io::Result<Vec<i32>> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc")? {
        if let Some(pid) = e?.file_name().to_str().and_then(|s| s.parse().ok()) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// The real and effective uid of a process (`Uid:` of `/proc/<pid>/status`).
pub fn uids(pid: i32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut it = line.split_whitespace().map(|v| v.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// Whether this process has `cap` in its effective capability set (`CapEff:` of
/// `/proc/self/status`; bit numbers as in linux/capability.h, e.g. 19 = CAP_SYS_PTRACE,
/// 21 = CAP_SYS_ADMIN).
pub fn has_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1u64 << cap) != 0)
}

/// CAP_SYS_PTRACE.
pub const CAP_SYS_PTRACE: u32 = 19;

/// Why reading `/proc/<pid>/<file>` was refused, in one clause, from what can be seen: the
/// kernel allows it only with ptrace read access to the process (PTRACE_MODE_READ_FSCREDS),
/// which needs the same uid (and a dumpable process) or CAP_SYS_PTRACE in its user namespace.
/// Yama's ptrace_scope only restricts attaching, never these reads.
pub fn why_denied(pid: i32) -> String {
    let me = nix::unistd::geteuid().as_raw();
    let target = uids(pid);
    let same_userns = match (
        std::fs::read_link("/proc/self/ns/user"),
        std::fs::read_link(format!("/proc/{pid}/ns/user")),
    ) {
        (Ok(a), Ok(b)) => Some(a == b),
        _ => None,
    };
    if me != 0 {
        return match target {
            Some((_, euid)) if euid != me => format!(
                "process {pid} belongs to uid {euid} and cowscope runs as uid {me}; reading \
                 another user's page tables needs root (CAP_SYS_PTRACE)"
            ),
            _ => format!(
                "process {pid} is not dumpable (it changed credentials or called \
                 prctl(PR_SET_DUMPABLE, 0)), so only a process with CAP_SYS_PTRACE may read its \
                 page tables"
            ),
        };
    }
    if !has_capability(CAP_SYS_PTRACE) {
        return "cowscope runs as root but without CAP_SYS_PTRACE (dropped by a container, \
                setpriv or capsh), which reading another process's page tables needs"
            .into();
    }
    if same_userns == Some(false) {
        return format!(
            "process {pid} lives in another user namespace, where this root has no \
             CAP_SYS_PTRACE"
        );
    }
    "the kernel's ptrace access check (PTRACE_MODE_READ_FSCREDS) refused it; a Linux security \
     module (SELinux, AppArmor) may forbid it"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_parses() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    123456 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "my (odd) name");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.flags, 4_194_560);
        assert_eq!(s.start_time, 123_456);
        assert!(!s.is_kernel_thread());
    }

    #[test]
    fn kthreadd_is_a_kernel_thread() {
        let s = stat(2).unwrap();
        assert!(s.is_kernel_thread(), "{s:?}");
        let me = stat(std::process::id() as i32).unwrap();
        assert!(!me.is_kernel_thread());
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw());
    }
}
