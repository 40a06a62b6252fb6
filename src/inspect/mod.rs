//! `cowscope inspect`: copy-on-write, page by page, in programs nobody here wrote.
//!
//! For a live process and its descendants, each pair (process, the process it was forked
//! from) is compared page by page over the VMAs they have in common: `shared` (same frame),
//! `diverged` (different frames), `only_parent`, `only_child`, `zero` (both map a zero page)
//! and `unproven` (PFNs hidden). Reading never disturbs the targets: pagemap, smaps, maps and
//! the kpage files only; never `/proc/<pid>/mem` and never `process_vm_readv` (which pins, and
//! so unshares, every page it reads). `--freeze` stops them for one consistent instant and
//! always resumes them.
//!
//! Module map (bottom to top):
//! - [`proc`]: the process table (`/proc/*/stat`): descendants, zombies, kernel threads.
//! - [`access`]: one sentence for every reason a process cannot be read.
//! - [`vma`]: VMA kinds and identity; [`vma::match_vmas`] splits a pair into common and
//!   one-sided segments. Reusable by `trace`.
//! - [`walk`]: the streaming pair walk ([`walk::PairReader`]): two pagemaps in bounded chunks.
//!   Reusable by `trace`.
//! - [`classify`]: the class of one page from the two entries (pure; rstest tables).
//! - [`zero`]: the zero page frames, learnt from cowscope's own read faults.
//! - [`tally`]: counts per class, private anonymous pages per side, page-map cells, runs.
//! - [`pool`]: how many pool members still share each parent frame.
//! - [`freeze`], [`interrupt`]: SIGSTOP/SIGCONT with a Drop guard, signal handling and a
//!   watchdog process.
//! - [`request`]: what a snapshot is asked and what the machine lets it prove.
//! - [`sample`]: one snapshot, a short pipeline over the stages below, each beside its data:
//!   [`plan`] (which pairs; what a failed read means) -> [`targets`] (freeze, open, resume)
//!   -> [`smaps_read`] (smaps beside the walk) -> [`pair_walk`] (the page walk per pair) ->
//!   [`pools`] (pool frame walks and reports) -> [`build`] (pair reports, accounting).
//! - [`mod@watch`]: snapshots over time.
//! - [`model`]: the JSON documents.

pub mod access;
pub mod build;
pub mod classify;
pub mod freeze;
pub mod interrupt;
pub mod model;
pub mod pair_walk;
pub mod plan;
pub mod pool;
pub mod pools;
pub mod proc;
pub mod request;
pub mod sample;
pub mod smaps_read;
pub mod tally;
pub mod targets;
pub mod vma;
pub mod walk;
pub mod watch;
pub mod zero;

pub use model::{InspectBody, SampleLine};
pub use sample::InspectRequest;
pub use watch::WatchOptions;

use crate::error::{Error, Result};
use model::hex_range;
use sample::Context;

/// Check and normalise a request: page-align the range outward, bound `--per-page`.
///
/// # Errors
/// Usage errors for `--per-page` without `--range` or over too many pages.
pub fn normalise(mut req: InspectRequest) -> Result<InspectRequest> {
    let ps = crate::kernel::page_size() as u64;
    if let Some((s, e)) = req.range {
        let end = e
            .checked_next_multiple_of(ps)
            .ok_or_else(|| Error::usage(format!("--range end {e:#x} is past the last page")))?;
        req.range = Some((s & !(ps - 1), end));
    }
    if req.per_page {
        let Some((s, e)) = req.range else {
            return Err(Error::usage(
                "--per-page needs --range (rows for whole address spaces would be huge)",
            ));
        };
        let pages = (e - s) / ps;
        if pages > sample::MAX_PER_PAGE {
            return Err(Error::usage(format!(
                "--per-page over {pages} pages is too many (limit {}); narrow --range",
                sample::MAX_PER_PAGE
            )));
        }
    }
    Ok(req)
}

/// Inspect once: plan the pairs, read them, return the document's body.
///
/// # Errors
/// Usage errors (exit 2) for bad pids, unreadable or vanished processes; see
/// [`sample::plan`] and [`sample::take_snapshot`].
pub fn inspect(req: &InspectRequest) -> Result<InspectBody> {
    let req = normalise(req.clone())?;
    let ctx = Context::detect();
    let plan = sample::plan(&req)?;
    let snapshot = sample::take_snapshot(&plan, &req, &ctx)?;
    Ok(InspectBody {
        snapshot,
        zero_page: ctx.zero_info(),
        range: req.range.map(hex_range),
        watch: None,
        samples: None,
    })
}

/// Watch over time; see [`watch::watch`].
///
/// # Errors
/// As [`watch::watch`].
pub fn watch(
    req: &InspectRequest,
    opts: &WatchOptions,
    on_sample: impl FnMut(&SampleLine) -> Result<()>,
) -> Result<InspectBody> {
    let req = normalise(req.clone())?;
    watch::watch(&req, opts, on_sample)
}
