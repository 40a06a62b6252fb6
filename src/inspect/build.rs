//! Stage 6 of a snapshot, after the processes are resumed: what each pair's walk means
//! (built, or lost to an exit or an unreadable side: [`PairBuild::pairs`]), and each pair's
//! report ([`PairBuild::pair`]): rows per common VMA, the reason for each one-sided VMA
//! (smaps VmFlags `dc`, partial overlap, same file or frames elsewhere), and the accounting
//! of each side's Private_Dirty against its private anonymous pages by class (design
//! principle 7). Also the snapshot's process list and the notes the machine calls for.

use std::collections::{BTreeMap, HashMap};

use super::access;
use super::classify::{N_CLASSES, PairClass};
use super::model::{
    Accounting, OneSidedReason, OneSidedVma, PairReport, ProcessInfo, SideAccounting, SideName,
    SmapsRollup, VmaRow,
};
use super::pair_walk::{PairWalk, Walked};
use super::plan::{Losses, Plan};
use super::proc::Stat;
use super::request::{Context, InspectRequest};
use super::smaps_read::{SmapsOutcome, smaps_for};
use super::tally::{ClassCounts, PageRun, Tally};
use super::targets::Target;
use super::vma::{self, Mounts, Segment, VmaKind, kind_of};
use super::walk::Side;
use super::zero::ZeroPfns;
use crate::error::{Error, Result};
use crate::mem::pagemap::{PFN_MASK, PRESENT, Pagemap};
use crate::mem::smaps::{self, SmapsEntry};

fn kb(pages: u64) -> u64 {
    pages * crate::kernel::page_size() as u64 / 1024
}

/// What every pair's report is built with.
#[derive(Debug)]
pub struct PairBuild<'a> {
    /// What the machine lets the snapshot prove.
    pub ctx: &'a Context,
    /// What was asked.
    pub req: &'a InspectRequest,
    /// The mounts of the `--pid` process (VMA kinds).
    pub mounts: &'a Mounts,
    /// Whether the read was a frozen instant.
    pub frozen: bool,
}

/// One pair's processes and their full smaps.
struct Pair<'a> {
    pt: &'a Target,
    ct: &'a Target,
    psm: Option<&'a Vec<SmapsEntry>>,
    csm: Option<&'a Vec<SmapsEntry>>,
}

impl Pair<'_> {
    /// The process of `side` and its smaps.
    fn side(&self, side: Side) -> (&Target, Option<&Vec<SmapsEntry>>) {
        match side {
            Side::Parent => (self.pt, self.psm),
            Side::Child => (self.ct, self.csm),
        }
    }
}

/// The one-sided pieces of a pair and the VMAs that also have a common part: what the
/// "resized" and "moved" reasons compare with.
struct OneSidedPieces {
    pieces: Vec<(Side, SmapsEntry, u64, u64)>,
    common_idx: Vec<(usize, usize)>,
}

impl OneSidedPieces {
    fn of(walked: &[Walked], pair: &Pair<'_>) -> OneSidedPieces {
        let pieces = walked
            .iter()
            .filter_map(|w| match w.seg {
                Segment::ParentOnly { p, start, end } => {
                    Some((Side::Parent, pair.pt.maps[p].clone(), start, end))
                }
                Segment::ChildOnly { c, start, end } => {
                    Some((Side::Child, pair.ct.maps[c].clone(), start, end))
                }
                _ => None,
            })
            .collect();
        let common_idx = walked
            .iter()
            .filter_map(|w| match w.seg {
                Segment::Common { p, c, .. } => Some((p, c)),
                _ => None,
            })
            .collect();
        OneSidedPieces { pieces, common_idx }
    }

    /// Whether VMA `idx` of `side` also has a part in common with the other side.
    fn has_common(&self, side: Side, idx: usize) -> bool {
        self.common_idx.iter().any(|&(p, c)| match side {
            Side::Parent => p == idx,
            Side::Child => c == idx,
        })
    }
}

/// A pair's figures summed over its segments.
struct Sums {
    totals: ClassCounts,
    by_kind: BTreeMap<VmaKind, ClassCounts>,
    common: Tally,
    parent_only: Tally,
    child_only: Tally,
    runs: Option<Vec<PageRun>>,
}

impl Sums {
    fn new(per_page: bool) -> Sums {
        Sums {
            totals: ClassCounts::default(),
            by_kind: BTreeMap::new(),
            common: Tally::new(0, 0, 0, false),
            parent_only: Tally::new(0, 0, 0, false),
            child_only: Tally::new(0, 0, 0, false),
            runs: per_page.then(Vec::new),
        }
    }

    fn add(&mut self, kind: VmaKind, counts: &ClassCounts) {
        self.totals.add(counts);
        self.by_kind.entry(kind).or_default().add(counts);
    }
}

/// A segment's page-map cells, as a row carries them.
type Cells = (Option<u64>, Option<Vec<[u64; N_CLASSES]>>);

/// Whether two anonymous one-sided pieces of equal length hold the same frames (an
/// `mremap` moved them): the first present pages of both, compared by PFN.
fn same_frames(pa: &Pagemap, a: u64, pb: &Pagemap, b: u64, len: u64, zero: &ZeroPfns) -> bool {
    let ps = crate::kernel::page_size() as u64;
    let n = (len / ps).min(64) as usize;
    let (mut x, mut y) = (vec![0u64; n], vec![0u64; n]);
    if pa.read_into(a, &mut x).is_err() || pb.read_into(b, &mut y).is_err() {
        return false;
    }
    x.iter().zip(&y).any(|(&p, &c)| {
        p & c & PRESENT != 0 && p & PFN_MASK == c & PFN_MASK && !zero.contains(p & PFN_MASK)
    })
}

impl PairBuild<'_> {
    /// The report of every pair whose walk and smaps hold; a pair with a side that exited
    /// or could not be read is a note or skipped in `losses`.
    ///
    /// # Errors
    /// The `--pid` process exited, the `--pid` process or a named `--child` could not be
    /// read, or no pair was left.
    pub fn pairs(
        &self,
        plan: &Plan,
        targets: &HashMap<i32, Target>,
        walks: Vec<PairWalk>,
        smaps: &mut SmapsOutcome,
        losses: &mut Losses,
    ) -> Result<Vec<PairReport>> {
        let mut pairs = Vec::new();
        for ((p, c), r) in walks {
            let (pt, ct) = (&targets[&p], &targets[&c]);
            if let Some(walked) = usable(plan, (pt, ct), r, smaps, losses)? {
                let pair = Pair {
                    pt,
                    ct,
                    psm: smaps.ok.get(&p),
                    csm: smaps.ok.get(&c),
                };
                pairs.push(self.pair(&pair, walked));
            }
        }
        if smaps.gone.contains(&plan.root.pid) {
            return Err(Error::usage(access::exited(plan.root.pid)));
        }
        if pairs.is_empty() {
            let why = losses
                .notes
                .first()
                .cloned()
                .or_else(|| {
                    losses
                        .skipped
                        .first()
                        .map(|s| format!("{} {}", s.pid, s.reason))
                })
                .unwrap_or_else(|| "no pair could be read".into());
            return Err(Error::usage(why));
        }
        Ok(pairs)
    }

    /// Build the report of one pair from its walked segments.
    fn pair(&self, pair: &Pair<'_>, walked: Vec<Walked>) -> PairReport {
        let pieces = OneSidedPieces::of(&walked, pair);
        let mut sums = Sums::new(self.req.per_page);
        let (mut vmas, mut one_sided) = (Vec::new(), Vec::new());
        for mut w in walked {
            let counts = w.tally.counts();
            let grid = w.tally.take_grid();
            if let (Some(all), Some(mut r)) = (sums.runs.as_mut(), w.tally.take_runs()) {
                all.append(&mut r);
            }
            let cells: Cells = match grid {
                Some((n, c)) => (Some(n), Some(c)),
                None => (None, None),
            };
            match w.seg {
                Segment::Common { p, c, start, end } => {
                    let row = self.common_row(pair, (p, c), (start, end), counts, cells);
                    sums.add(row.kind, &row.counts);
                    sums.common.absorb(&w.tally);
                    vmas.push(row);
                }
                Segment::ParentOnly { p, start, end } => {
                    sums.parent_only.absorb(&w.tally);
                    let private = w.tally.parent_private[PairClass::OnlyParent as usize];
                    let seg = (Side::Parent, p, start, end);
                    let row =
                        self.one_sided_row(pair, &pieces, seg, counts.only_parent, private, cells);
                    sums.add(row.kind, &counts);
                    one_sided.push(row);
                }
                Segment::ChildOnly { c, start, end } => {
                    sums.child_only.absorb(&w.tally);
                    let private = w.tally.child_private[PairClass::OnlyChild as usize];
                    let seg = (Side::Child, c, start, end);
                    let row =
                        self.one_sided_row(pair, &pieces, seg, counts.only_child, private, cells);
                    sums.add(row.kind, &counts);
                    one_sided.push(row);
                }
            }
        }
        let accounting = self.accounting(&sums, pair);
        let notes = self.pair_notes(accounting.as_ref(), pair, vmas.is_empty());
        PairReport {
            parent: pair.pt.stat.pid,
            child: pair.ct.stat.pid,
            parent_comm: pair.pt.stat.comm.clone(),
            child_comm: pair.ct.stat.comm.clone(),
            totals: sums.totals,
            by_kind: sums.by_kind,
            vmas,
            one_sided,
            accounting,
            page_runs: sums.runs,
            notes,
        }
    }

    /// The row of a common VMA segment.
    fn common_row(
        &self,
        pair: &Pair<'_>,
        (p, c): (usize, usize),
        (start, end): (u64, u64),
        counts: ClassCounts,
        (cell_pages, cells): Cells,
    ) -> VmaRow {
        let (pv, cv) = (&pair.pt.maps[p], &pair.ct.maps[c]);
        VmaRow {
            start,
            end,
            perms: pv.perms.clone(),
            child_perms: (cv.perms != pv.perms).then(|| cv.perms.clone()),
            pathname: pv.pathname.clone(),
            kind: kind_of(pv, self.mounts),
            counts,
            cell_pages,
            cells,
        }
    }

    /// The row of a one-sided segment `(side, VMA index, start, end)` with `present` pages,
    /// `private_anon` of them private anonymous.
    fn one_sided_row(
        &self,
        pair: &Pair<'_>,
        pieces: &OneSidedPieces,
        (side, idx, start, end): (Side, usize, u64, u64),
        present: u64,
        private_anon: u64,
        (cell_pages, cells): Cells,
    ) -> OneSidedVma {
        let ps = crate::kernel::page_size() as u64;
        let (t, _) = pair.side(side);
        let v = &t.maps[idx];
        OneSidedVma {
            side: match side {
                Side::Parent => SideName::Parent,
                Side::Child => SideName::Child,
            },
            start,
            end,
            perms: v.perms.clone(),
            pathname: v.pathname.clone(),
            kind: kind_of(v, self.mounts),
            reason: self.one_sided_reason(pair, pieces, (side, idx, start, end)),
            pages: (end - start) / ps,
            present,
            private_anon,
            cell_pages,
            cells,
        }
    }

    /// Why a VMA (or part of one) is on one side only.
    fn one_sided_reason(
        &self,
        pair: &Pair<'_>,
        pieces: &OneSidedPieces,
        (side, idx, start, end): (Side, usize, u64, u64),
    ) -> OneSidedReason {
        let (t, smaps_all) = pair.side(side);
        let v = &t.maps[idx];
        let dontcopy = smaps_for(smaps_all, v).is_some_and(|s| s.has_flag("dc"));
        if side == Side::Parent && dontcopy {
            OneSidedReason::NotInherited
        } else if pieces.has_common(side, idx) {
            OneSidedReason::Resized
        } else if self.moved(pair, pieces, side, v, (start, end)) {
            OneSidedReason::Moved
        } else {
            OneSidedReason::MappedAfterForkOrUnmapped
        }
    }

    /// Whether a one-sided piece `v` at `[start, end)` of `side` is on the other side at
    /// another address: a piece of the same length of the same file at the same offset, or
    /// (with PFNs) of the same anonymous kind holding the same frames.
    fn moved(
        &self,
        pair: &Pair<'_>,
        pieces: &OneSidedPieces,
        side: Side,
        v: &SmapsEntry,
        (start, end): (u64, u64),
    ) -> bool {
        let len = end - start;
        let file_backed = v.inode != 0 || v.pathname.starts_with('/');
        pieces.pieces.iter().any(|&(os, ref ov, oa, ob)| {
            if os == side || ob - oa != len {
                return false;
            }
            if file_backed {
                ov.dev == v.dev
                    && ov.inode == v.inode
                    && ov.offset + (oa - ov.start) == v.offset + (start - v.start)
            } else {
                self.ctx.pfn_visible
                    && ov.inode == 0
                    && ov.pathname == v.pathname
                    && vma::is_shared(ov) == vma::is_shared(v)
                    && {
                        let (opm, mpm) = match side {
                            Side::Parent => (&pair.ct.pm, &pair.pt.pm),
                            Side::Child => (&pair.pt.pm, &pair.ct.pm),
                        };
                        same_frames(mpm, start, opm, oa, len, &self.ctx.zero)
                    }
            }
        })
    }

    /// Each side's Private_Dirty against its private anonymous pages by class; none with
    /// `--range` (smaps figures are whole processes).
    fn accounting(&self, sums: &Sums, pair: &Pair<'_>) -> Option<Accounting> {
        if self.req.range.is_some() {
            return None;
        }
        Some(Accounting {
            child: side_accounting(sums, pair.csm, false),
            parent: side_accounting(sums, pair.psm, true),
        })
    }

    /// The pair's notes: why the accounting does not balance, or why nothing is in common.
    fn pair_notes(
        &self,
        accounting: Option<&Accounting>,
        pair: &Pair<'_>,
        no_common: bool,
    ) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(a) = accounting {
            let thp = [pair.psm, pair.csm]
                .iter()
                .any(|s| s.is_some_and(|v| v.iter().any(smaps::has_pmd_mapped_memory)));
            if a.child.residual_kb != 0 || a.parent.residual_kb != 0 {
                let mut why = Vec::new();
                if !self.frozen {
                    why.push(if self.req.freeze {
                        "threads that did not stop ran between the pagemap and smaps reads"
                    } else {
                        "the processes ran between the pagemap and smaps reads (--freeze holds them still)"
                    });
                }
                if thp {
                    why.push(
                        "PMD-mapped THPs are present, whose exclusive bit follows the head page",
                    );
                }
                why.push(
                    "dirty file pages mapped once count in Private_Dirty but are not anonymous",
                );
                notes.push(format!(
                    "Private_Dirty and the private anonymous pages differ by {} kB (child) and {} kB \
                     (parent): {}.",
                    a.child.residual_kb,
                    a.parent.residual_kb,
                    why.join("; ")
                ));
            }
        }
        if no_common && self.req.range.is_none() {
            notes.push(
                "the two processes have no mapping in common: the child has probably exec'd a new \
                 program, so nothing is copy-on-write between them"
                    .into(),
            );
        }
        notes
    }
}

/// What a pair's walk means: its segments, or `None` when a side exited or could not be read
/// (a note or a skipped entry in `losses`).
///
/// # Errors
/// The `--pid` process exited, or it or a named `--child` could not be read.
fn usable(
    plan: &Plan,
    (pt, ct): (&Target, &Target),
    r: std::result::Result<Vec<Walked>, super::walk::SideError>,
    smaps: &mut SmapsOutcome,
    losses: &mut Losses,
) -> Result<Option<Vec<Walked>>> {
    let (p, c) = (pt.stat.pid, ct.stat.pid);
    if smaps.unreadable.contains(&p) || smaps.unreadable.contains(&c) {
        return Ok(None); // skipped[] says why
    }
    let walked = match r {
        Ok(w) => w,
        Err(e) => {
            let who = if e.side == Side::Parent { pt } else { ct };
            match plan.read_failure(&who.stat, "pagemap", e.error)? {
                None => losses.notes.push(access::exited(who.stat.pid)),
                Some(sk) => {
                    smaps.unreadable.push(who.stat.pid);
                    losses.skipped.push(sk);
                }
            }
            return Ok(None);
        }
    };
    if smaps.gone.contains(&p) || smaps.gone.contains(&c) {
        let who = if smaps.gone.contains(&c) { ct } else { pt };
        if who.stat.pid == plan.root.pid {
            return Err(Error::usage(access::exited(who.stat.pid)));
        }
        losses.notes.push(access::exited(who.stat.pid));
        return Ok(None);
    }
    Ok(Some(walked))
}

/// One side's accounting: Private_Dirty against the private anonymous pages the walk found
/// (common VMAs by class, plus its one-sided VMAs).
fn side_accounting(
    sums: &Sums,
    smaps_all: Option<&Vec<SmapsEntry>>,
    parent: bool,
) -> SideAccounting {
    let pick = |t: &Tally| {
        if parent {
            t.parent_private
        } else {
            t.child_private
        }
    };
    let common = pick(&sums.common);
    let own = if parent {
        pick(&sums.parent_only)
    } else {
        pick(&sums.child_only)
    };
    let here = if parent {
        PairClass::OnlyParent
    } else {
        PairClass::OnlyChild
    };
    let diverged = common[PairClass::Diverged as usize];
    let only_here = common[here as usize];
    let own_total: u64 = own.iter().sum();
    let all: u64 = common.iter().sum::<u64>() + own_total;
    let private_dirty_kb = smaps_all.map_or(0, |v| SmapsRollup::of(v).private_dirty_kb);
    SideAccounting {
        private_dirty_kb,
        private_anon_kb: kb(all),
        diverged_kb: kb(diverged),
        only_here_kb: kb(only_here),
        one_sided_vmas_kb: kb(own_total),
        other_kb: kb(all - diverged - only_here - own_total),
        residual_kb: private_dirty_kb as i64 - kb(all) as i64,
    }
}

/// The snapshot's processes that have smaps figures, in plan order.
pub fn processes(procs: &[Stat], smaps_ok: &HashMap<i32, Vec<SmapsEntry>>) -> Vec<ProcessInfo> {
    procs
        .iter()
        .filter_map(|s| {
            let v = smaps_ok.get(&s.pid)?;
            Some(ProcessInfo {
                pid: s.pid,
                ppid: s.ppid,
                comm: s.comm.clone(),
                state: s.state.to_string(),
                vmas: v.len(),
                smaps_rollup: SmapsRollup::of(v),
            })
        })
        .collect()
}

/// What the machine and the request leave out of every snapshot, as notes.
pub fn context_notes(ctx: &Context, req: &InspectRequest, notes: &mut Vec<String>) {
    if !ctx.pfn_visible {
        notes.push(
            "PFNs are hidden (no CAP_SYS_ADMIN): a page both map is diverged only when the \
             exclusive bit (or the zero page) proves it; the rest is unproven, never guessed. \
             Run as root for frame-level proof."
                .into(),
        );
        if !ctx.scan {
            notes.push(
                "PAGEMAP_SCAN is unavailable (Linux < 6.7): zero pages are unknown, and the \
                 exclusive bit is trusted only in VMAs whose smaps shows no PMD-mapped memory."
                    .into(),
            );
        }
    }
    if req.range.is_some() {
        notes.push(
            "--range: only the pages inside the range were walked; accounting against smaps \
             (whole processes) is left out."
                .into(),
        );
    }
}
