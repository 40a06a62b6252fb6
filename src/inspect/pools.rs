//! Stage 5 of a snapshot: the pools (parents with two or more walked children). Their frame
//! walk ([`walk_pools`], [`pool_sharing`] over the common segments the pair walk found) runs
//! while the processes are held; their reports ([`reports`]) are built after the pairs, from
//! the pairs' classes ([`PoolView::of`]) and the walk's histograms.

use std::collections::{BTreeMap, HashMap};

use super::access;
use super::model::{PairReport, PoolReport, PoolView};
use super::pair_walk::PairWalk;
use super::pool::{MemberError, PoolMember, PoolSharing, pool_sharing};
use super::request::Context;
use super::targets::Target;
use super::vma::Segment;
use crate::mem::kpage::Kpage;

/// One pool's frame walk.
#[derive(Debug)]
pub struct PoolWalk {
    parent: i32,
    /// The members left at the end of the walk.
    members: Vec<i32>,
    /// `None`: PFNs hidden, no walk.
    result: Option<Result<PoolSharing, MemberError>>,
    /// Members that exited during the walk.
    left_out: Vec<i32>,
}

/// Walk the frames of every pool among `walks`: parents with two or more children whose pair
/// walk succeeded (PFNs needed).
pub fn walk_pools(
    ctx: &Context,
    targets: &HashMap<i32, Target>,
    walks: &[PairWalk],
    kpage: Option<&Kpage>,
) -> Vec<PoolWalk> {
    let mut by_parent: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for ((p, c), r) in walks {
        if r.is_ok() {
            by_parent.entry(*p).or_default().push(*c);
        }
    }
    let mut pools = Vec::new();
    for (parent, members) in by_parent.into_iter().filter(|(_, m)| m.len() >= 2) {
        let commons: Vec<Vec<(u64, u64)>> = members
            .iter()
            .map(|c| common_ranges(targets, walks, parent, *c))
            .collect();
        let (members, result, left_out) = if ctx.pfn_visible {
            match share_while_members_exit(ctx, targets, parent, members, commons, kpage) {
                Some(walked) => walked,
                None => continue, // every member but one exited during the walk: no pool
            }
        } else {
            (members, None, Vec::new())
        };
        pools.push(PoolWalk {
            parent,
            members,
            result,
            left_out,
        });
    }
    pools
}

/// The common segments of `parent` and `member` that pagemap can read (never `[vsyscall]`).
fn common_ranges(
    targets: &HashMap<i32, Target>,
    walks: &[PairWalk],
    parent: i32,
    member: i32,
) -> Vec<(u64, u64)> {
    walks
        .iter()
        .find(|((p, cc), _)| *p == parent && *cc == member)
        .and_then(|(_, r)| r.as_ref().ok())
        .map(|ws| {
            ws.iter()
                .filter_map(|w| match w.seg {
                    Segment::Common { p, start, end, .. }
                        if targets[&parent].maps[p].has_pagemap() =>
                    {
                        Some((start, end))
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The members left, the walk's result and the members left out.
type Shared = (Vec<i32>, Option<Result<PoolSharing, MemberError>>, Vec<i32>);

/// [`pool_sharing`] over `members`. A member that exits during the pool walk (its pagemap
/// reads EOF once its mm is gone) is left out and the walk redone over the others: the pool
/// of the live workers stays complete. `None` when fewer than two are left: no pool any more.
fn share_while_members_exit(
    ctx: &Context,
    targets: &HashMap<i32, Target>,
    parent: i32,
    mut members: Vec<i32>,
    mut commons: Vec<Vec<(u64, u64)>>,
    kpage: Option<&Kpage>,
) -> Option<Shared> {
    let mut left_out = Vec::new();
    loop {
        let ms: Vec<PoolMember<'_>> = members
            .iter()
            .zip(&commons)
            .map(|(c, common)| PoolMember {
                pid: *c,
                pm: &targets[c].pm,
                common,
            })
            .collect();
        let r = pool_sharing(&targets[&parent].pm, &ms, &ctx.zero, kpage);
        let exited = match &r {
            Err(MemberError {
                pid: Some(m),
                error,
            }) => {
                let gone = error.kind() == std::io::ErrorKind::UnexpectedEof
                    || error.raw_os_error() == Some(libc::ESRCH)
                    || !access::still_alive(&targets[m].stat);
                gone.then_some(*m)
            }
            _ => None,
        };
        match exited.and_then(|m| members.iter().position(|&x| x == m)) {
            Some(i) => {
                left_out.push(members.remove(i));
                commons.remove(i);
                if members.len() < 2 {
                    return None;
                }
            }
            None => return Some((members, Some(r), left_out)),
        }
    }
}

/// The report of every pool that still has two or more members among the built `pairs`.
pub fn reports(pools: Vec<PoolWalk>, pairs: &[PairReport], ctx: &Context) -> Vec<PoolReport> {
    let ps = crate::kernel::page_size() as u64;
    pools
        .into_iter()
        .filter(|w| {
            pairs
                .iter()
                .filter(|p| p.parent == w.parent && w.members.contains(&p.child))
                .count()
                >= 2
        })
        .map(|w| {
            let worker_pairs: Vec<&PairReport> = pairs
                .iter()
                .filter(|p| p.parent == w.parent && w.members.contains(&p.child))
                .collect();
            let view = PoolView::of(&worker_pairs, ps, ctx.pfn_visible);
            report(w, view)
        })
        .collect()
}

/// One pool's report: its walk's histograms, or why they are missing.
fn report(w: PoolWalk, view: PoolView) -> PoolReport {
    let mut r = PoolReport {
        parent: w.parent,
        members: w.members,
        parent_pages: 0,
        sharing_histogram: None,
        kpagecount_histogram: None,
        notes: Vec::new(),
        incomplete: false,
        view,
    };
    for m in w.left_out {
        r.notes.push(format!(
            "member {m} exited during the pool walk and is left out of the pool"
        ));
    }
    match w.result {
        None => {
            r.incomplete = true;
            r.notes
                .push("PFNs are hidden: how many members share each frame is unknowable".into());
        }
        Some(Err(e)) => {
            r.incomplete = true;
            r.notes.push(format!(
                "the pool walk stopped, so how many members share each frame is \
                 missing: {} ({})",
                e.error,
                e.pid.map_or("parent".into(), |p| format!("member {p}"))
            ));
        }
        Some(Ok(s)) => {
            r.parent_pages = s.parent_pages;
            r.sharing_histogram = Some(
                s.histogram
                    .iter()
                    .enumerate()
                    .map(|(k, n)| (k.to_string(), *n))
                    .collect(),
            );
            r.kpagecount_histogram = s
                .kpagecount
                .map(|h| h.into_iter().map(|(k, n)| (k.to_string(), n)).collect());
            if r.kpagecount_histogram.is_none() {
                r.notes
                    .push("kpagecount is unreadable: no system-wide map counts".into());
            }
        }
    }
    r
}
