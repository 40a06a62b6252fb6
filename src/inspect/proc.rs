//! The process table as `/proc/<pid>/stat` shows it: who forked whom, who is a zombie or a
//! kernel thread, and a start time that tells a pid apart from a later process reusing it.
//!
//! `/proc/<pid>/stat` is readable for every process (no ptrace check), so discovery works
//! without privilege; only reading a process's memory needs it. One process's stat is
//! [`crate::mem::process`]'s; this module adds the tree.

use std::io;

pub use crate::mem::process::{Stat, stat};

/// The state of every thread of `pid` (`/proc/<pid>/task/*/stat`), for checking that a
/// group stop has reached every thread.
///
/// # Errors
/// When the task directory cannot be listed (the process is gone).
pub fn thread_states(pid: i32) -> io::Result<Vec<char>> {
    let mut out = Vec::new();
    for tid in crate::mem::process::threads(pid)? {
        // A thread that exited between readdir and read is simply not counted.
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
            && let Some(s) = crate::mem::process::parse_stat(&t)
        {
            out.push(s.state);
        }
    }
    Ok(out)
}

/// Every process visible in `/proc` (thread-group leaders only), in pid order. Processes
/// that exit while the table is read are left out.
pub fn all() -> Vec<Stat> {
    let mut out: Vec<Stat> = std::fs::read_dir("/proc")
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
pub fn descendants(root: i32, table: &[Stat]) -> Vec<Stat> {
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
pub fn ancestors(pid: i32, table: &[Stat]) -> Vec<i32> {
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

/// The chain of ancestors of `pid` (its parent first), read from each one's stat.
pub fn ancestors_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut cur = pid;
    while let Ok(s) = stat(cur) {
        if s.ppid <= 0 || out.contains(&s.ppid) {
            break;
        }
        out.push(s.ppid);
        cur = s.ppid;
    }
    out
}

/// Whether two processes share one address space: [`crate::mem::process::same_address_space`].
pub use crate::mem::process::same_address_space;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_are_found_through_ppid_breadth_first() {
        let mk = |pid, ppid| Stat {
            pid,
            comm: String::new(),
            state: 'S',
            ppid,
            pgrp: pid,
            flags: 0,
            start_time: 0,
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
