//! Stage 1 of a snapshot: which pairs to read ([`plan`]), and what a failed read of one of
//! the plan's processes means for the snapshot ([`Plan::read_failure`], [`Losses`]).

use super::access;
use super::model::Skipped;
use super::proc::{self, Stat};
use super::request::InspectRequest;
use crate::error::{Error, Result};

/// The pairs to read.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The `--pid` process.
    pub root: Stat,
    /// (parent, child) pairs, parents before their children.
    pub pairs: Vec<(Stat, Stat)>,
    /// Found but not inspectable.
    pub skipped: Vec<Skipped>,
    /// Whether the children were given with `--child`.
    pub explicit: bool,
}

/// What a snapshot lost of its plan on the way: processes that exited while being read (a
/// note each) and live ones that could not be read (`skipped[]`).
#[derive(Debug, Default)]
pub struct Losses {
    /// Sentences for the snapshot's `notes[]`.
    pub notes: Vec<String>,
    /// The plan's skipped processes, then the unreadable ones.
    pub skipped: Vec<Skipped>,
}

impl Losses {
    /// Start from what the plan already skipped.
    pub fn of(plan: &Plan) -> Losses {
        Losses {
            notes: Vec::new(),
            skipped: plan.skipped.clone(),
        }
    }

    /// Record the outcome of [`Plan::read_failure`] for `pid`: an exit is a note, an
    /// unreadable process is skipped.
    pub fn record(&mut self, pid: i32, outcome: Option<Skipped>) {
        match outcome {
            None => self.notes.push(access::exited(pid)),
            Some(sk) => self.skipped.push(sk),
        }
    }
}

fn stat_or_explain(pid: i32, what: &str) -> Result<Stat> {
    if pid <= 0 {
        return Err(Error::usage(format!(
            "{what} must be a positive process id, got {pid}"
        )));
    }
    Ok(crate::mem::process::user_process(pid)?)
}

/// Whether `pid` is cowscope itself (the calling process, as a library) or a watchdog it
/// started for a freeze: never a target.
fn is_self(pid: i32) -> bool {
    pid == std::process::id() as i32 || super::freeze::is_our_watchdog(pid)
}

/// Refuse a pid that is cowscope itself or its watchdog: reading our own memory proves
/// nothing about the target, and freezing ourselves would never end.
fn refuse_self(pid: i32, what: &str) -> Result<()> {
    if is_self(pid) {
        return Err(Error::usage(format!(
            "{what} {pid} is cowscope itself{}: it cannot inspect its own memory",
            if pid == std::process::id() as i32 {
                ""
            } else {
                " (its watchdog)"
            }
        )));
    }
    Ok(())
}

/// Decide the pairs: every live descendant of `req.pid` (or each `--child`), each with the
/// process it was forked from (its parent). cowscope itself and its watchdog are never among
/// them, also when they descend from `--pid` (`--pid $$` from a shell).
///
/// # Errors
/// Usage errors (exit 2): no such pid, a kernel thread, a zombie, cowscope itself, a
/// `--child` that is not a descendant of `--pid`, no children at all.
pub fn plan(req: &InspectRequest) -> Result<Plan> {
    let plan = plan_pairs(req)?;
    if plan.pairs.is_empty() {
        let why = if plan.skipped.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                plan.skipped
                    .iter()
                    .map(|s| format!("{} {}", s.pid, s.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        return Err(Error::usage(format!(
            "process {} ({}) has no live child process to compare with{why}",
            plan.root.pid, plan.root.comm
        )));
    }
    Ok(plan)
}

/// [`plan`] without its last check: the pairs may be empty (every child has exited), which a
/// watch reads as its end rather than as an error.
///
/// # Errors
/// As [`plan`], except "no children".
pub fn plan_pairs(req: &InspectRequest) -> Result<Plan> {
    let root = stat_or_explain(req.pid, "--pid")?;
    refuse_self(root.pid, "--pid")?;
    let explicit = !req.children.is_empty();
    // With explicit children only their ancestor chains are read, not the whole table.
    let table = if explicit { Vec::new() } else { proc::all() };
    let mut skipped = Vec::new();
    let children: Vec<Stat> = if explicit {
        named_children(req, &root)?
    } else {
        live_descendants(&root, &table, &mut skipped)
    };
    let mut pairs = Vec::new();
    for c in children {
        let Some(parent) = parent_of(&c, &root, &table) else {
            continue;
        };
        if proc::same_address_space(parent.pid, c.pid) == Some(true) {
            skipped.push(Skipped {
                pid: c.pid,
                comm: c.comm.clone(),
                reason: format!(
                    "shares its address space with its parent {} (vfork or CLONE_VM): nothing \
                     is copy-on-write between them",
                    parent.pid
                ),
                unreadable: false,
            });
            continue;
        }
        pairs.push((parent, c));
    }
    Ok(Plan {
        root,
        pairs,
        skipped,
        explicit,
    })
}

/// The `--child`ren, each checked to be a descendant of `root`, without repeats.
fn named_children(req: &InspectRequest, root: &Stat) -> Result<Vec<Stat>> {
    let mut v = Vec::new();
    for &c in &req.children {
        let s = stat_or_explain(c, "--child")?;
        refuse_self(c, "--child")?;
        if !proc::ancestors_of(c).contains(&root.pid) {
            return Err(Error::usage(format!(
                "process {c} ({}) is not a descendant of process {} ({}): its parent is {}",
                s.comm, root.pid, root.comm, s.ppid
            )));
        }
        if !v.iter().any(|x: &Stat| x.pid == c) {
            v.push(s);
        }
    }
    Ok(v)
}

/// Every descendant of `root` that has memory to compare: zombies are skipped (with a
/// reason), kernel threads and cowscope itself left out.
fn live_descendants(root: &Stat, table: &[Stat], skipped: &mut Vec<Skipped>) -> Vec<Stat> {
    // cowscope and its watchdogs are never targets (`--pid $$` from a shell finds
    // cowscope among the shell's children); processes below cowscope are.
    proc::descendants(root.pid, table)
        .into_iter()
        .filter(|c| !is_self(c.pid))
        .filter(|c| {
            if c.is_zombie() {
                skipped.push(Skipped {
                    pid: c.pid,
                    comm: c.comm.clone(),
                    reason: "a zombie: it has exited and its memory is gone".into(),
                    unreadable: false,
                });
                return false;
            }
            !c.is_kernel_thread()
        })
        .collect()
}

/// The process `c` was forked from, when it can be read: not a zombie, not cowscope.
fn parent_of(c: &Stat, root: &Stat, table: &[Stat]) -> Option<Stat> {
    let parent = if c.ppid == root.pid {
        root.clone()
    } else {
        match table.iter().find(|p| p.pid == c.ppid) {
            Some(p) => p.clone(),
            None => proc::stat(c.ppid).ok()?,
        }
    };
    // A zombie has no memory; cowscope is never read, not even as a parent.
    if parent.is_zombie() || is_self(parent.pid) {
        return None;
    }
    Some(parent)
}

impl Plan {
    /// Every process of the plan once: the root first, then in pair order.
    pub fn processes(&self) -> Vec<Stat> {
        let mut procs: Vec<Stat> = vec![self.root.clone()];
        for (p, c) in &self.pairs {
            for s in [p, c] {
                if !procs.iter().any(|x| x.pid == s.pid) {
                    procs.push(s.clone());
                }
            }
        }
        procs
    }

    /// A read of `/proc/<pid>/<file>` failed: decide what it means for the snapshot.
    /// - the `--pid` process, or a `--child` the user named that is still alive: the error,
    ///   in [`Error::process_io`]'s words (exit 2);
    /// - the process has exited (gone, a zombie, or ESRCH: its memory is being torn down):
    ///   `Ok(None)`, the caller notes "process N exited while it was being read";
    /// - any other descendant that is alive but unreadable (permission, or another read
    ///   error): a [`Skipped`] entry with `unreadable`, which makes the exit code 3.
    ///
    /// # Errors
    /// The first case.
    pub fn read_failure(&self, s: &Stat, file: &str, e: std::io::Error) -> Result<Option<Skipped>> {
        let gone = !access::still_alive(s) || e.raw_os_error() == Some(libc::ESRCH);
        let root = s.pid == self.root.pid;
        if root || (self.explicit && !gone) {
            if gone {
                return Err(Error::usage(access::exited(s.pid)));
            }
            return Err(Error::process_io(s.pid, file, e));
        }
        if gone {
            return Ok(None);
        }
        Ok(Some(Skipped {
            pid: s.pid,
            comm: s.comm.clone(),
            reason: Error::process_io(s.pid, file, e).to_string(),
            unreadable: true,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn plan_with(root: Stat, explicit: bool) -> Plan {
        Plan {
            root,
            pairs: Vec::new(),
            skipped: Vec::new(),
            explicit,
        }
    }

    #[test]
    fn a_failed_read_of_a_live_process_is_never_called_an_exit() {
        let me = proc::stat(std::process::id() as i32).unwrap();
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let kid = proc::stat(sleeper.id() as i32).unwrap();
        let plan = plan_with(me.clone(), false);
        let denied = || io::Error::from_raw_os_error(libc::EACCES);

        // A descendant, alive: skipped as unreadable (exit 3), with the reason.
        let sk = plan
            .read_failure(&kid, "smaps", denied())
            .unwrap()
            .expect("alive: not an exit");
        assert!(sk.unreadable);
        assert!(
            sk.reason.starts_with(&format!(
                "cannot read /proc/{}/smaps: permission denied: ",
                kid.pid
            )),
            "{}",
            sk.reason
        );
        // Any other error of a live process keeps the OS error, and is not an exit either.
        let sk = plan
            .read_failure(&kid, "smaps", io::Error::from_raw_os_error(libc::EIO))
            .unwrap()
            .expect("alive: not an exit");
        assert!(sk.unreadable && sk.reason.contains(&format!("/proc/{}/smaps", kid.pid)));
        // ESRCH: the kernel found no memory: it is exiting.
        assert!(
            plan.read_failure(&kid, "smaps", io::Error::from_raw_os_error(libc::ESRCH))
                .unwrap()
                .is_none()
        );
        // The --pid process, or a --child the user named: an error, in one sentence.
        let e = plan.read_failure(&me, "smaps", denied()).unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{e}");
        let e = plan_with(me.clone(), true)
            .read_failure(&kid, "smaps", denied())
            .unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{e}");

        // Once it has really exited, the same error means "exited".
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert!(
            plan.read_failure(&kid, "smaps", denied())
                .unwrap()
                .is_none()
        );
    }
}
