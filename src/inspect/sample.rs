//! One moment of a live process tree: the pipeline of a snapshot ([`take_snapshot`]). Each
//! stage lives beside its data:
//!
//! ```text
//! plan.rs        /proc/*/stat -> Plan: pairs (process, the process it was forked from)
//! targets.rs     [--freeze: watchdog forked, SIGSTOP each running target, wait until every
//!                thread stopped] per process: open pagemap, read /proc/<pid>/maps
//! smaps_read.rs  /proc/<pid>/smaps of every process: on a side thread beside the walk (or
//!                first, when the walk needs it: PFNs hidden and no PAGEMAP_SCAN)
//! pair_walk.rs   main thread, per pair: match_vmas -> per segment, stream both pagemaps in
//!                64 Ki-page chunks -> Tally
//! pools.rs       parent + members chunk by chunk -> sharing histogram (+ kpagecount)
//! targets.rs     [resume]
//! build.rs       what each walk means (built, exited, unreadable), rows, one-sided
//!                reasons (smaps VmFlags), accounting against smaps Private_Dirty
//! pools.rs       pool reports from the built pairs
//! ```

use std::time::Instant;

use super::build::{self, PairBuild};
use super::freeze::Freeze;
use super::model::{Basis, Snapshot};
use super::pair_walk::walk_pairs;
use super::plan::Losses;
use super::pools::{self, walk_pools};
use super::smaps_read::SmapsRead;
use super::targets;
use super::vma::Mounts;
use crate::error::Result;
use crate::mem::kpage::Kpage;

pub use super::plan::{Plan, plan, plan_pairs};
pub use super::request::{Context, InspectRequest, MAX_PER_PAGE};

/// Read one moment of every pair of `plan`.
///
/// # Errors
/// Usage errors (exit 2) when the root process cannot be read or exits mid-read, when an
/// explicitly given child cannot be read, or when every pair was lost.
pub fn take_snapshot(plan: &Plan, req: &InspectRequest, ctx: &Context) -> Result<Snapshot> {
    let t0 = Instant::now();
    let mut losses = Losses::of(plan);
    let procs = plan.processes();
    let freeze = req.freeze.then(|| Freeze::stop(&procs)).transpose()?;
    let targets = targets::open_all(plan, &procs, &mut losses)?;
    let mounts = Mounts::of(plan.root.pid);
    let smaps = SmapsRead::start(ctx, &procs, &targets);
    let kpage = (ctx.pfn_visible && ctx.kpage_readable)
        .then(|| Kpage::open().ok())
        .flatten();
    let (walks, pool_walks) = std::thread::scope(|sc| {
        let side = smaps.spawn_side(sc);
        let walks = walk_pairs(ctx, req, plan, &targets, smaps.before_walk());
        let pool_walks = walk_pools(ctx, &targets, &walks, kpage.as_ref());
        smaps.finish(side);
        (walks, pool_walks)
    });
    let (freeze, frozen) = targets::resume(freeze, &mut losses.notes);
    let read_us = t0.elapsed().as_micros() as u64;

    let mut smaps = smaps.resolve(plan, &procs, &mut losses)?;
    let builder = PairBuild {
        ctx,
        req,
        mounts: &mounts,
        frozen,
    };
    let pairs = builder.pairs(plan, &targets, walks, &mut smaps, &mut losses)?;
    let pools = pools::reports(pool_walks, &pairs, ctx);
    let processes = build::processes(&procs, &smaps.ok);
    build::context_notes(ctx, req, &mut losses.notes);
    Ok(Snapshot {
        pid: plan.root.pid,
        pfn_visible: ctx.pfn_visible,
        basis: if ctx.pfn_visible {
            Basis::Pfn
        } else {
            Basis::ExclusiveBit
        },
        freeze,
        read_us,
        pairs,
        pools,
        processes,
        skipped: losses.skipped,
        notes: losses.notes,
    })
}
