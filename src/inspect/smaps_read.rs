//! Stage 3 of a snapshot: `/proc/<pid>/smaps` of every opened process (the kernel's second
//! page walk, ~3x the cost of the pagemap walk). Without PFNs and without PAGEMAP_SCAN the
//! walk needs them first (which VMAs have PMD-mapped memory); otherwise a side thread reads
//! them one by one while the main thread walks the pagemaps, and the main thread takes what
//! is left when its walk is done ([`SmapsRead`]). Then [`SmapsRead::resolve`] decides what
//! each result means: figures, an exit, or an unreadable process.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{Scope, ScopedJoinHandle};

use super::access;
use super::plan::{Losses, Plan};
use super::proc::Stat;
use super::request::Context;
use super::targets::Target;
use crate::error::{Error, Result};
use crate::mem::smaps::{self, SmapsEntry};

/// The smaps entry of `v` (same bounds) in a full smaps list.
pub fn smaps_for<'a>(all: Option<&'a Vec<SmapsEntry>>, v: &SmapsEntry) -> Option<&'a SmapsEntry> {
    all?.iter().find(|s| s.start == v.start && s.end == v.end)
}

/// The smaps reads of one snapshot.
#[derive(Debug)]
pub struct SmapsRead {
    /// Read before the walk (only when the walk needs them), by pid.
    before_walk: HashMap<i32, Vec<SmapsEntry>>,
    /// Every result read before the walk.
    read_first: HashMap<i32, io::Result<Vec<SmapsEntry>>>,
    /// Pids to read beside the walk (empty when read first).
    jobs: Vec<i32>,
    /// The next job to take, shared by both threads.
    next_job: AtomicUsize,
    /// The results of the jobs.
    done: Mutex<HashMap<i32, io::Result<Vec<SmapsEntry>>>>,
}

/// What the smaps reads showed, per process.
#[derive(Debug, Default)]
pub struct SmapsOutcome {
    /// The full smaps of every process that has VMAs.
    pub ok: HashMap<i32, Vec<SmapsEntry>>,
    /// Processes whose address space was gone (exiting).
    pub gone: Vec<i32>,
    /// Processes alive but unreadable (skipped; the pair walk adds pagemap failures).
    pub unreadable: Vec<i32>,
}

impl SmapsRead {
    /// Plan the reads for the opened processes of `procs` (in that order), and read them
    /// right away when the walk needs them first.
    pub fn start(ctx: &Context, procs: &[Stat], targets: &HashMap<i32, Target>) -> SmapsRead {
        // Without PFNs and without PAGEMAP_SCAN, the exclusive-bit rule needs smaps first
        // (which VMAs have PMD-mapped memory); otherwise smaps runs beside the page walk.
        let smaps_first = !ctx.pfn_visible && !ctx.scan;
        let live: Vec<i32> = procs
            .iter()
            .map(|s| s.pid)
            .filter(|p| targets.contains_key(p))
            .collect();
        let mut before_walk = HashMap::new();
        let mut read_first = HashMap::new();
        if smaps_first {
            for pid in &live {
                let r = smaps::all_vmas(*pid);
                if let Ok(v) = &r {
                    before_walk.insert(*pid, v.clone());
                }
                read_first.insert(*pid, r);
            }
        }
        SmapsRead {
            before_walk,
            read_first,
            jobs: if smaps_first { Vec::new() } else { live },
            next_job: AtomicUsize::new(0),
            done: Mutex::new(HashMap::new()),
        }
    }

    /// What was read before the walk (empty unless the walk needs it).
    pub fn before_walk(&self) -> &HashMap<i32, Vec<SmapsEntry>> {
        &self.before_walk
    }

    /// Take jobs one by one until none is left.
    fn work(&self) {
        loop {
            let i = self.next_job.fetch_add(1, Ordering::Relaxed);
            let Some(&pid) = self.jobs.get(i) else { break };
            let r = smaps::all_vmas(pid);
            if let Ok(mut d) = self.done.lock() {
                d.insert(pid, r);
            }
        }
    }

    /// Start the side thread, when there are jobs.
    pub fn spawn_side<'scope>(
        &'scope self,
        sc: &'scope Scope<'scope, '_>,
    ) -> Option<ScopedJoinHandle<'scope, ()>> {
        (!self.jobs.is_empty()).then(|| sc.spawn(|| self.work()))
    }

    /// Read what the side thread has not taken yet, and wait for it.
    pub fn finish(&self, side: Option<ScopedJoinHandle<'_, ()>>) {
        self.work();
        if let Some(h) = side {
            let _ = h.join();
        }
    }

    /// Decide what each result means: figures, an exit (`gone`), or an unreadable process
    /// (skipped in `losses`).
    ///
    /// # Errors
    /// The `--pid` process exited, or the `--pid` process or a named `--child` could not be
    /// read (see [`Plan::read_failure`]).
    pub fn resolve(self, plan: &Plan, procs: &[Stat], losses: &mut Losses) -> Result<SmapsOutcome> {
        let results = if self.jobs.is_empty() {
            self.read_first
        } else {
            self.done.into_inner().unwrap_or_default()
        };
        let mut out = SmapsOutcome::default();
        for (pid, r) in results {
            let Some(s) = procs.iter().find(|s| s.pid == pid) else {
                continue;
            };
            match r {
                Ok(v) if !v.is_empty() => {
                    out.ok.insert(pid, v);
                }
                // No VMA at all: the address space is gone (exiting).
                Ok(_) => {
                    if pid == plan.root.pid {
                        return Err(Error::usage(access::exited(pid)));
                    }
                    out.gone.push(pid);
                }
                Err(e) => match plan.read_failure(s, "smaps", e)? {
                    None => out.gone.push(pid),
                    Some(sk) => {
                        out.unreadable.push(pid);
                        losses.skipped.push(sk);
                    }
                },
            }
        }
        Ok(out)
    }
}
