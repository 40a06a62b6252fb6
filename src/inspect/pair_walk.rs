//! Stage 4 of a snapshot: the page walk of every pair. Per pair, [`match_vmas`] splits the
//! two address spaces into common and one-sided segments (clipped to `--range`); each
//! segment streams both pagemaps through one [`PairReader`] into a [`Tally`] (read only
//! where PAGEMAP_SCAN finds pages when it is over [`SPARSE_WALK_PAGES`]; without PFNs,
//! PAGEMAP_SCAN for PFNZERO|HUGE per chunk and side feeds the proof rules).

use std::collections::HashMap;

use super::classify::HiddenFacts;
use super::plan::Plan;
use super::request::{Context, InspectRequest};
use super::smaps_read::smaps_for;
use super::tally::{Facts, Tally};
use super::targets::Target;
use super::vma::{self, Segment, match_vmas};
use super::walk::{PairReader, SPARSE_WALK_PAGES, Side, SideError, populated};
use crate::mem::pagemap::Pagemap;
use crate::mem::scan::{self, PAGE_IS_HUGE, PAGE_IS_PFNZERO};
use crate::mem::smaps::{self, SmapsEntry};

/// A walked segment.
#[derive(Debug)]
pub struct Walked {
    /// The segment (clipped to `--range`).
    pub seg: Segment,
    /// What its pages are.
    pub tally: Tally,
}

/// One pair's walk: `(parent, child)` and its segments, or the side whose read failed.
pub type PairWalk = ((i32, i32), std::result::Result<Vec<Walked>, SideError>);

/// Walk every pair of `plan` whose two processes were opened, in plan order.
pub fn walk_pairs(
    ctx: &Context,
    req: &InspectRequest,
    plan: &Plan,
    targets: &HashMap<i32, Target>,
    smaps_before: &HashMap<i32, Vec<SmapsEntry>>,
) -> Vec<PairWalk> {
    let pairs_to_walk: Vec<(i32, i32)> = plan
        .pairs
        .iter()
        .map(|(p, c)| (p.pid, c.pid))
        .filter(|(p, c)| targets.contains_key(p) && targets.contains_key(c))
        .collect();
    let mut reader = PairReader::new();
    pairs_to_walk
        .iter()
        .map(|&(p, c)| {
            let (pt, ct) = (&targets[&p], &targets[&c]);
            (
                (p, c),
                walk_pair(&mut reader, ctx, req, pt, ct, smaps_before),
            )
        })
        .collect()
}

/// Facts for the hidden-PFN rules over one chunk of one side.
fn hidden_facts(
    ctx: &Context,
    pm: &Pagemap,
    side: Side,
    start: u64,
    end: u64,
    vma_smaps: Option<&SmapsEntry>,
) -> std::result::Result<Facts, SideError> {
    if ctx.scan
        && let Some(regions) = scan::scan_matching(pm, start, end, PAGE_IS_PFNZERO | PAGE_IS_HUGE)
            .map_err(|e| SideError::new(side, e))?
    {
        return Ok(Facts::regions(regions));
    }
    // No PAGEMAP_SCAN: smaps says whether the VMA has any PMD-mapped memory at all.
    Ok(Facts::Fixed(HiddenFacts {
        zero: None,
        pmd_mapped: match vma_smaps {
            Some(v) if !smaps::has_pmd_mapped_memory(v) => Some(false),
            _ => None,
        },
    }))
}

/// Walk `[start, end)` of a common segment into `tally`, sparse when it is large.
#[allow(clippy::too_many_arguments)]
fn walk_common(
    reader: &mut PairReader,
    ctx: &Context,
    pt: &Target,
    ct: &Target,
    (start, end): (u64, u64),
    shared_mapping: bool,
    smaps_of: (Option<&SmapsEntry>, Option<&SmapsEntry>),
    tally: &mut Tally,
) -> std::result::Result<(), SideError> {
    let ps = crate::kernel::page_size() as u64;
    let sides = [(&pt.pm, Side::Parent), (&ct.pm, Side::Child)];
    walk_populated(&sides, (start, end), tally, |tally, a, b| {
        reader.walk(&pt.pm, &ct.pm, a, b, |addr, pe, ce| {
            if ctx.pfn_visible {
                tally.add_visible(addr, pe, ce, &ctx.zero);
            } else {
                let e = addr + pe.len() as u64 * ps;
                let mut pf = hidden_facts(ctx, &pt.pm, Side::Parent, addr, e, smaps_of.0)?;
                let mut cf = hidden_facts(ctx, &ct.pm, Side::Child, addr, e, smaps_of.1)?;
                tally.add_hidden(addr, pe, ce, &mut pf, &mut cf, shared_mapping);
            }
            Ok(())
        })
    })
}

/// Walk `[start, end)` with `walk(tally, a, b)`: over the populated ranges alone when the
/// segment is large (the gaps go into `tally` as empty), else over all of it.
fn walk_populated(
    sides: &[(&Pagemap, Side)],
    (start, end): (u64, u64),
    tally: &mut Tally,
    mut walk: impl FnMut(&mut Tally, u64, u64) -> std::result::Result<(), SideError>,
) -> std::result::Result<(), SideError> {
    let ps = crate::kernel::page_size() as u64;
    let ranges = if (end - start) / ps > SPARSE_WALK_PAGES {
        populated(sides, start, end)?
    } else {
        None
    };
    let ranges = ranges.unwrap_or_else(|| vec![(start, end)]);
    let mut cur = start;
    for (a, b) in ranges {
        let (a, b) = (a.max(start), b.min(end));
        if a >= b {
            continue;
        }
        if a > cur {
            tally.add_empty(cur, (a - cur) / ps);
        }
        walk(tally, a, b)?;
        cur = b;
    }
    if cur < end {
        tally.add_empty(cur, (end - cur) / ps);
    }
    Ok(())
}

/// Walk a one-sided segment of `t` into `tally`.
fn walk_one_sided(
    reader: &mut PairReader,
    t: &Target,
    side: Side,
    (start, end): (u64, u64),
    tally: &mut Tally,
) -> std::result::Result<(), SideError> {
    walk_populated(&[(&t.pm, side)], (start, end), tally, |tally, a, b| {
        reader.walk_one(&t.pm, side, a, b, |addr, e| {
            tally.add_one_sided(addr, e, side == Side::Parent);
            Ok(())
        })
    })
}

/// Clip a segment to the request's range; `None` when it lies outside.
fn clip(seg: Segment, range: Option<(u64, u64)>) -> Option<Segment> {
    let Some((rs, re)) = range else {
        return Some(seg);
    };
    let (s, e) = seg.range();
    let (a, b) = (s.max(rs), e.min(re));
    if a >= b {
        return None;
    }
    Some(match seg {
        Segment::Common { p, c, .. } => Segment::Common {
            p,
            c,
            start: a,
            end: b,
        },
        Segment::ParentOnly { p, .. } => Segment::ParentOnly {
            p,
            start: a,
            end: b,
        },
        Segment::ChildOnly { c, .. } => Segment::ChildOnly {
            c,
            start: a,
            end: b,
        },
    })
}

/// Walk every segment of one pair.
fn walk_pair(
    reader: &mut PairReader,
    ctx: &Context,
    req: &InspectRequest,
    pt: &Target,
    ct: &Target,
    pre_smaps: &HashMap<i32, Vec<SmapsEntry>>,
) -> std::result::Result<Vec<Walked>, SideError> {
    let ps = crate::kernel::page_size() as u64;
    let segs = match_vmas(&pt.maps, &ct.maps);
    let find = |pid: i32, v: &SmapsEntry| smaps_for(pre_smaps.get(&pid), v);
    let mut out = Vec::with_capacity(segs.len());
    for seg in segs {
        let Some(seg) = clip(seg, req.range) else {
            continue;
        };
        let (s, e) = seg.range();
        let mut tally = Tally::new(s, (e - s) / ps, req.cells, req.per_page);
        match seg {
            Segment::Common { p, c, .. } => {
                let (pv, cv) = (&pt.maps[p], &ct.maps[c]);
                if !pv.has_pagemap() {
                    // Above the user address space: in no page table, pagemap cannot read it.
                    tally.add_empty(s, (e - s) / ps);
                } else {
                    let shared_mapping = vma::is_shared(pv) && vma::is_shared(cv);
                    let sm = (find(pt.stat.pid, pv), find(ct.stat.pid, cv));
                    walk_common(reader, ctx, pt, ct, (s, e), shared_mapping, sm, &mut tally)?;
                }
            }
            Segment::ParentOnly { p, .. } => {
                if !pt.maps[p].has_pagemap() {
                    tally.add_empty(s, (e - s) / ps);
                } else {
                    walk_one_sided(reader, pt, Side::Parent, (s, e), &mut tally)?;
                }
            }
            Segment::ChildOnly { c, .. } => {
                if !ct.maps[c].has_pagemap() {
                    tally.add_empty(s, (e - s) / ps);
                } else {
                    walk_one_sided(reader, ct, Side::Child, (s, e), &mut tally)?;
                }
            }
        }
        out.push(Walked { seg, tally });
    }
    Ok(out)
}
