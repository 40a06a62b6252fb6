//! One process as procfs describes it, one parser per file: `/proc/<pid>/stat` (name, state,
//! parent, kernel thread, start time), `/proc/<pid>/cmdline`, `/proc/<pid>/status` and `task/<tid>/status` (thread
//! group, state, pending signals, tracer, uids, capabilities), `/proc/<pid>/task` (threads),
//! `task/<tid>/children`, `/proc/<pid>/statm` (resident pages); `kcmp(KCMP_VM)` (do two
//! processes share one address space); and, when the kernel refuses access, the reason in
//! words.

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

/// `/proc/<pid>/cmdline` as one line: the arguments joined by spaces (a program that
/// rewrote its title, e.g. with setproctitle, shows that title). Empty for a zombie or a
/// kernel thread.
///
/// # Errors
/// `NotFound` when there is no such process; `PermissionDenied` when hidden (hidepid).
pub fn cmdline(pid: i32) -> io::Result<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(parse_cmdline(&raw))
}

/// The NUL-separated arguments of a `cmdline` file, joined by spaces (trailing NULs and a
/// title padded with NULs dropped).
pub fn parse_cmdline(raw: &[u8]) -> String {
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
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

/// The fields of `/proc/<pid>/status` (or `/proc/<pid>/task/<tid>/status`) cowscope uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// `Tgid:` the thread group (process) this task belongs to.
    pub tgid: i32,
    /// `State:` the state letter (R, S, D, T, t, Z, X...).
    pub state: char,
    /// `SigPnd:` signals pending for this thread (bit `n - 1` for signal `n`).
    pub sig_pending: u64,
    /// `ShdPnd:` signals pending for the whole thread group.
    pub shared_pending: u64,
    /// `TracerPid:` the pid tracing this task, 0 when none.
    pub tracer_pid: i32,
    /// `Uid:` real, effective, saved and filesystem uid.
    pub uid: [u32; 4],
    /// `CapEff:` the effective capability set (bit `n` for capability `n`).
    pub cap_eff: u64,
}

impl Status {
    /// Whether signal `sig` is pending for this thread or its group.
    pub fn has_pending(&self, sig: i32) -> bool {
        let bit = 1u64 << (sig - 1);
        (self.sig_pending | self.shared_pending) & bit != 0
    }

    /// A zombie or a dead task.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
}

/// Parse the text of a `status` file (missing fields keep their defaults).
pub fn parse_status(text: &str) -> Status {
    let mut s = Status {
        uid: [u32::MAX; 4],
        ..Status::default()
    };
    let hex = |v: &str| u64::from_str_radix(v.trim(), 16).unwrap_or(0);
    for line in text.lines() {
        let Some((key, v)) = line.split_once(':') else {
            continue;
        };
        match key {
            "Tgid" => s.tgid = v.trim().parse().unwrap_or(0),
            "State" => s.state = v.trim().chars().next().unwrap_or('?'),
            "SigPnd" => s.sig_pending = hex(v),
            "ShdPnd" => s.shared_pending = hex(v),
            "TracerPid" => s.tracer_pid = v.trim().parse().unwrap_or(0),
            "Uid" => {
                for (slot, u) in s.uid.iter_mut().zip(v.split_whitespace()) {
                    *slot = u.parse().unwrap_or(u32::MAX);
                }
            }
            "CapEff" => s.cap_eff = hex(v),
            _ => {}
        }
    }
    s
}

/// Read `/proc/<pid>/status`.
///
/// # Errors
/// `NotFound` when there is no such process.
pub fn status(pid: i32) -> io::Result<Status> {
    Ok(parse_status(&std::fs::read_to_string(format!(
        "/proc/{pid}/status"
    ))?))
}

/// Read `/proc/<pid>/task/<tid>/status`: one thread's state and pending signals.
///
/// # Errors
/// `NotFound` when the thread is gone.
pub fn task_status(pid: i32, tid: i32) -> io::Result<Status> {
    Ok(parse_status(&std::fs::read_to_string(format!(
        "/proc/{pid}/task/{tid}/status"
    ))?))
}

/// The thread ids of `pid` (`/proc/<pid>/task`), sorted. Threads that exit while the
/// directory is listed may or may not be included.
///
/// # Errors
/// When the task directory cannot be listed (the process is gone).
pub fn threads(pid: i32) -> io::Result<Vec<i32>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(tid) = e?.file_name().to_str().and_then(|s| s.parse().ok()) {
            v.push(tid);
        }
    }
    v.sort_unstable();
    Ok(v)
}

/// The children of thread `tid` of `pid` (`/proc/<pid>/task/<tid>/children`, CONFIG_PROC_CHILDREN):
/// the processes it forked that have not exited or been reparented.
///
/// # Errors
/// When the file cannot be read (the thread is gone, or the kernel lacks the file).
pub fn children(pid: i32, tid: i32) -> io::Result<Vec<i32>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children"))?;
    Ok(text
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// The fields of `/proc/<pid>/statm` cowscope uses, in pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statm {
    /// Field 1: the virtual size.
    pub size: u64,
    /// Field 2: resident pages (RSS: anonymous + file + shmem).
    pub resident: u64,
}

/// Parse one `statm` line.
pub fn parse_statm(text: &str) -> Option<Statm> {
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some(Statm {
        size: f.next()??,
        resident: f.next()??,
    })
}

/// Read `/proc/<pid>/statm` (no page-table walk: the kernel keeps these counters).
///
/// # Errors
/// `NotFound` when there is no such process; `InvalidData` when it does not parse.
pub fn statm(pid: i32) -> io::Result<Statm> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    parse_statm(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/statm does not parse"),
        )
    })
}

/// Whether two processes (or tasks) share one address space (`kcmp(KCMP_VM)`): a `vfork()`
/// child before it execs, or a `clone(CLONE_VM)` process. `None` when the kernel cannot say
/// (no CONFIG_KCMP, or no ptrace read access to both).
pub fn same_address_space(a: i32, b: i32) -> Option<bool> {
    const KCMP_VM: libc::c_long = 1;
    // SAFETY: kcmp takes five integers and touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            a as libc::c_long,
            b as libc::c_long,
            KCMP_VM,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    // 0: equal; 1, 2: ordered (different); 3: not equal, order unknown; -1: error.
    match r {
        0 => Some(true),
        1..=3 => Some(false),
        _ => None,
    }
}

/// The real and effective uid of a process (`Uid:` of `/proc/<pid>/status`).
pub fn uids(pid: i32) -> Option<(u32, u32)> {
    let s = status(pid).ok()?;
    (s.uid[0] != u32::MAX && s.uid[1] != u32::MAX).then_some((s.uid[0], s.uid[1]))
}

/// Whether this process has `cap` in its effective capability set (`CapEff:` of
/// `/proc/self/status`; bit numbers as in linux/capability.h, e.g. 19 = CAP_SYS_PTRACE,
/// 21 = CAP_SYS_ADMIN).
pub fn has_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|t| parse_status(&t))
        .is_ok_and(|s| s.cap_eff & (1u64 << cap) != 0)
}

/// CAP_SYS_PTRACE.
pub const CAP_SYS_PTRACE: u32 = 19;

/// Why reading `/proc/<pid>/<file>` was refused, in one clause, from what can be seen: the
/// kernel allows it only with ptrace read access to the process (PTRACE_MODE_READ_FSCREDS),
/// which needs the same uid (and a dumpable process) or CAP_SYS_PTRACE in its user namespace.
/// Yama's ptrace_scope only restricts attaching, never these reads.
pub fn why_denied(pid: i32) -> String {
    denied_because(pid, Access::Read).unwrap_or_else(|| {
        "the kernel's ptrace access check (PTRACE_MODE_READ_FSCREDS) refused it; a Linux \
         security module (SELinux, AppArmor) may forbid it"
            .into()
    })
}

/// What was asked of the kernel's ptrace access check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading `/proc/<pid>/{pagemap,smaps,...}` (PTRACE_MODE_READ_FSCREDS).
    Read,
    /// Attaching with ptrace (PTRACE_MODE_ATTACH_REALCREDS).
    Attach,
}

/// The credential reason the kernel's ptrace access check refuses `access` to `pid`, as far
/// as it can be seen from here (uids, dumpable, CAP_SYS_PTRACE, user namespaces); `None` when
/// none of these explains it (a security module, Yama for an attach, a tracer already
/// attached: callers that can see those add them).
pub fn denied_because(pid: i32, access: Access) -> Option<String> {
    let (what, whats) = match access {
        Access::Read => ("read its page tables", "reading another user's page tables"),
        Access::Attach => ("trace it", "tracing another user's process"),
    };
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
        return Some(match target {
            Some((_, euid)) if euid != me => format!(
                "process {pid} belongs to uid {euid} and cowscope runs as uid {me}; {whats} \
                 needs root (CAP_SYS_PTRACE)"
            ),
            _ => format!(
                "process {pid} is not dumpable (it changed credentials or called \
                 prctl(PR_SET_DUMPABLE, 0)), so only a process with CAP_SYS_PTRACE may {what}"
            ),
        });
    }
    if !has_capability(CAP_SYS_PTRACE) {
        return Some(format!(
            "cowscope runs as root but without CAP_SYS_PTRACE (dropped by a container, \
             setpriv or capsh), which {} needs",
            match access {
                Access::Read => "reading another process's page tables",
                Access::Attach => "tracing another process",
            }
        ));
    }
    if same_userns == Some(false) {
        return Some(format!(
            "process {pid} lives in another user namespace, where this root has no \
             CAP_SYS_PTRACE"
        ));
    }
    None
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_cmdline_is_its_arguments_joined_and_a_padded_title_loses_its_nuls() {
        assert_eq!(
            parse_cmdline(b"/bin/sh\0-c\0true; true\0"),
            "/bin/sh -c true; true"
        );
        assert_eq!(
            parse_cmdline(b"gunicorn: worker [app]\0\0\0\0"),
            "gunicorn: worker [app]"
        );
        assert_eq!(parse_cmdline(b""), "");
    }

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
    fn status_fields_parse() {
        let text = "Name:\tsleep\nState:\tS (sleeping)\nTgid:\t4242\nPid:\t4243\n\
                    TracerPid:\t17\nUid:\t1000\t1001\t1002\t1003\nSigPnd:\t0000000000000100\n\
                    ShdPnd:\t0000000000000000\nCapEff:\t0000000000080000\n";
        let s = parse_status(text);
        assert_eq!(s.tgid, 4242);
        assert_eq!(s.state, 'S');
        assert_eq!(s.tracer_pid, 17);
        assert_eq!(s.uid, [1000, 1001, 1002, 1003]);
        assert!(s.has_pending(libc::SIGKILL), "bit 8 is signal 9");
        assert!(!s.has_pending(libc::SIGTERM));
        assert_eq!(s.cap_eff, 1 << CAP_SYS_PTRACE);
    }

    #[test]
    fn statm_gives_resident_pages() {
        assert_eq!(
            parse_statm("2000 300 100 10 0 200 0\n"),
            Some(Statm {
                size: 2000,
                resident: 300
            })
        );
        assert_eq!(parse_statm("x"), None);
        let me = statm(std::process::id() as i32).unwrap();
        assert!(me.resident > 0 && me.size >= me.resident, "{me:?}");
    }

    #[test]
    fn this_process_lists_its_own_threads_and_shares_its_address_space_with_itself() {
        let me = std::process::id() as i32;
        let t = threads(me).unwrap();
        assert!(t.contains(&me), "{t:?}");
        assert_eq!(status(me).unwrap().tgid, me);
        assert_ne!(same_address_space(me, me), Some(false));
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
