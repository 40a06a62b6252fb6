//! The process table as `/proc/<pid>/stat` shows it: who forked whom, who is a zombie or a
//! kernel thread, and a start time that tells a pid apart from a later process reusing it.
//!
//! `/proc/<pid>/stat` is readable for every process (no ptrace check), so discovery works
//! without privilege; only reading a process's memory needs it.

use std::io;

/// `PF_KTHREAD` in the `flags` field (include/linux/sched.h).
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id (thread-group id).
    pub pid: i32,
    /// `comm`, without the parentheses (at most 15 bytes, may contain spaces and `)`).
    pub comm: String,
    /// State letter: `R` running, `S` sleeping, `D` disk sleep, `T` stopped, `t` tracing stop,
    /// `Z` zombie, `X` dead, `I` idle (kernel threads), `P` parked.
    pub state: char,
    /// Parent process id (the real parent; a reparented orphan shows its new parent).
    pub ppid: i32,
    /// `task->flags` (`PF_*`).
    pub flags: u64,
    /// Start time in clock ticks after boot: with `pid`, the identity of a process.
    pub starttime: u64,
}

impl ProcStat {
    /// A kernel thread (PF_KTHREAD): it has no user memory at all.
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
    /// Exited but not yet reaped (or being reaped): its memory is gone.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
    /// Stopped by a signal (`T`) or in a ptrace stop (`t`).
    pub fn is_stopped(&self) -> bool {
        matches!(self.state, 'T' | 't')
    }
}

/// Parse the text of `/proc/<pid>/stat`.
///
/// `comm` sits in parentheses and may itself contain `)` and spaces, so the fields after it
/// are found from the *last* `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid: i32 = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_string();
    // Fields after comm, numbered from 3 as in proc(5): state(3) ppid(4) ... flags(9) ...
    // starttime(22).
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    let state = field(3)?.chars().next()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid: field(4)?.parse().ok()?,
        flags: field(9)?.parse().ok()?,
        starttime: field(22)?.parse().ok()?,
    })
}

/// `/proc/<pid>/stat` of one process.
///
/// # Errors
/// `NotFound` when no such process exists (or `/proc` hides it); `InvalidData` if the file
/// does not parse.
pub fn stat(pid: i32) -> io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat does not parse"),
        )
    })
}

/// The state of every thread of `pid` (`/proc/<pid>/task/*/stat`), for checking that a
/// group stop has reached every thread.
///
/// # Errors
/// When the task directory cannot be listed (the process is gone).
pub fn thread_states(pid: i32) -> io::Result<Vec<char>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let e = e?;
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // A thread that exited between readdir and read is simply not counted.
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
            && let Some(s) = parse_stat(&t)
        {
            out.push(s.state);
        }
    }
    Ok(out)
}

/// Every process visible in `/proc` (thread-group leaders only), in pid order. Processes
/// that exit while the table is read are left out.
pub fn all() -> Vec<ProcStat> {
    let mut out: Vec<ProcStat> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| stat(pid).ok())
        .collect();
    out.sort_unstable_by_key(|p| p.pid);
    out
}

/// The descendants of `root` in `table` (children, grandchildren, ...), parents before
/// their children and siblings in pid order.
pub fn descendants(root: i32, table: &[ProcStat]) -> Vec<ProcStat> {
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for &p in &frontier {
            for c in table.iter().filter(|c| c.ppid == p && c.pid != p) {
                out.push(c.clone());
                next.push(c.pid);
            }
        }
        frontier = next;
    }
    out
}

/// The chain of ancestors of `pid` (its parent first), as far as `table` knows them.
pub fn ancestors(pid: i32, table: &[ProcStat]) -> Vec<i32> {
    let mut out = Vec::new();
    let mut cur = pid;
    while let Some(p) = table.iter().find(|p| p.pid == cur) {
        if p.ppid <= 0 || out.contains(&p.ppid) {
            break;
        }
        out.push(p.ppid);
        cur = p.ppid;
    }
    out
}

/// Whether two processes share one address space (`kcmp(KCMP_VM)`): a `vfork()` child
/// before it execs, or a `clone(CLONE_VM)` process. `None` when the kernel cannot say
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
    (r >= 0).then_some(r == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::plain(
        "42 (bash) S 1 42 42 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 777 0 0",
        "bash",
        'S',
        1
    )]
    #[case::comm_with_space_and_paren(
        "7 (a) b) R 3 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0",
        "a) b",
        'R',
        3
    )]
    #[case::kernel_thread(
        "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0",
        "kthreadd",
        'S',
        0
    )]
    fn stat_lines_parse_from_the_last_paren(
        #[case] line: &str,
        #[case] comm: &str,
        #[case] state: char,
        #[case] ppid: i32,
    ) {
        let s = parse_stat(line).expect("parses");
        assert_eq!((s.comm.as_str(), s.state, s.ppid), (comm, state, ppid));
    }

    #[test]
    fn kthreadd_flags_mark_a_kernel_thread_and_we_are_not_one() {
        let k = parse_stat("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0")
            .expect("parses");
        assert!(k.is_kernel_thread());
        let me = stat(std::process::id() as i32).expect("own stat");
        assert!(!me.is_kernel_thread() && !me.is_zombie());
        assert_eq!(me.pid, std::process::id() as i32);
    }

    #[test]
    fn descendants_are_found_through_ppid_breadth_first() {
        let mk = |pid, ppid| ProcStat {
            pid,
            comm: String::new(),
            state: 'S',
            ppid,
            flags: 0,
            starttime: 0,
        };
        let table = [
            mk(1, 0),
            mk(10, 1),
            mk(11, 10),
            mk(12, 10),
            mk(13, 11),
            mk(20, 1),
        ];
        let d: Vec<i32> = descendants(10, &table).iter().map(|p| p.pid).collect();
        assert_eq!(d, [11, 12, 13]);
        assert_eq!(ancestors(13, &table), [11, 10, 1]);
    }
}
