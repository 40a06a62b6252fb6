//! PFN checks against the parent's frames before the fork: `new_frames` (the side that must
//! hold a new frame does) and `cost` (the bytes one write made the kernel copy).

use super::{Finding, Judgement, unit};
use crate::fork::evidence::Evidence;
use crate::fork::scenarios::{ForkAdvice, Mapping, Scenario};

/// Who got the new frame: the pages whose frame differs from the parent's before the fork,
/// per process, against [`Scenario::expects_new_frame`].
pub(super) fn the_expected_side_got_the_new_frame(s: &Scenario, e: &Evidence, j: &mut Judgement) {
    if !e.pfn_visible {
        return;
    }
    let unit = unit(s, e);
    let mut mismatches = Vec::new();
    for (idx, p) in e.procs.iter().enumerate() {
        if !p.sampled {
            continue;
        }
        let expect = s.expect_for(&p.path, unit);
        let mut moved_total = 0u64;
        for (i, w) in p.pages.iter().enumerate() {
            let before = &e.before[i];
            let moved = match (before.pfn, w.pfn) {
                // One zero page for another (a split huge zero page) is no new memory.
                _ if before.zero_page == Some(true) && w.zero_page == Some(true) => false,
                (Some(b), Some(now)) => b != now,
                // The parent's page was in swap before the fork: a frame now is a new one
                // (a write swaps in and copies; the judge's classes say which).
                (None, Some(_)) if before.swapped => true,
                _ => continue,
            };
            moved_total += u64::from(moved);
            let Some(mut want) = expect.new_frame(i) else {
                continue;
            };
            if j.whole_unit_moved && !want && expect.wrote_in_unit_of(i) {
                want = true;
            }
            if moved != want && mismatches.len() < 16 {
                mismatches.push(format!(
                    "{} page {i}: frame {} the parent's before the fork",
                    p.role,
                    if moved { "differs from" } else { "is still" }
                ));
            }
        }
        if s.advice == ForkAdvice::None {
            j.new_frames[idx] = Some(moved_total);
        }
    }
    for m in mismatches {
        j.file(Finding::disagree("new_frames", m));
    }
}

/// What one write cost: the new frames a writing process holds (against the parent's frames
/// before the fork), times the page size, divided by the pages it wrote; the largest over the
/// writers. Pinned pages copied at fork are counted apart.
pub(super) fn what_one_write_cost(s: &Scenario, e: &Evidence, j: &mut Judgement) {
    if !e.pfn_visible || s.advice != ForkAdvice::None || s.mapping == Mapping::Shared {
        return;
    }
    let ps = e.page_size as u64;
    let mut best: Option<u64> = None;
    let mut at_fork = 0u64;
    for (idx, p) in e.procs.iter().enumerate() {
        let Some(moved) = j.new_frames[idx] else {
            continue;
        };
        let writes = s.written_by(&p.path).len() as u64;
        if s.pinned() && !p.path.is_empty() {
            at_fork += moved * ps;
            continue;
        }
        if let Some(b) = (moved * ps).checked_div(writes) {
            best = Some(best.map_or(b, |x: u64| x.max(b)));
        }
    }
    j.bytes_copied_by_one_write = best;
    if s.pinned() {
        j.bytes_copied_at_fork = Some(at_fork);
    }
}
