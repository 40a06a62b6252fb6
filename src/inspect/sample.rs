//! One moment of a live process tree: which pairs to read ([`plan`]), then everything read
//! for them ([`take_snapshot`]).
//!
//! Data flow of a snapshot:
//! ```text
//! plan: /proc/*/stat -> pairs (process, the process it was forked from)
//! [--freeze: watchdog forked, SIGSTOP each running target, wait until every thread stopped]
//! per process: open pagemap, read /proc/<pid>/maps (geometry, no page walk)
//! side thread: /proc/<pid>/smaps of every process (the kernel's second page walk)
//! main thread, per pair: match_vmas -> per segment, stream both pagemaps in 64 Ki-page
//!   chunks (PAGEMAP_SCAN first on segments > 1 GiB: read only where pages are) -> Tally
//!   (PFNs hidden: PAGEMAP_SCAN PFNZERO|HUGE per chunk and side for the proof rules)
//! pools: parent + members chunk by chunk -> sharing histogram (+ kpagecount)
//! [resume]
//! build rows, one-sided reasons (smaps VmFlags), accounting against smaps Private_Dirty
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::access;
use super::classify::{HiddenFacts, PairClass};
use super::freeze::Freeze;
use super::model::{
    Accounting, Basis, OneSidedReason, OneSidedVma, PairReport, PoolReport, PoolView, ProcessInfo,
    SideAccounting, SideName, Skipped, SmapsRollup, Snapshot, VmaRow,
};
use super::pool::{MemberError, PoolMember, pool_sharing};
use super::proc::{self, Stat};
use super::tally::{ClassCounts, Facts, Tally};
use super::vma::{self, Mounts, Segment, VmaKind, kind_of, match_vmas};
use super::walk::{PairReader, SPARSE_WALK_PAGES, Side, SideError, populated};
use super::zero::ZeroPfns;
use crate::error::{Error, Result};
use crate::mem::kpage::Kpage;
use crate::mem::pagemap::{PFN_MASK, PRESENT, Pagemap};
use crate::mem::scan::{self, PAGE_IS_HUGE, PAGE_IS_PFNZERO};
use crate::mem::smaps::{self, SmapsEntry};

/// What `inspect` was asked.
#[derive(Debug, Clone, Default)]
pub struct InspectRequest {
    /// The process whose descendants (or given children) are inspected.
    pub pid: i32,
    /// Explicit children (each must be a descendant of `pid`); empty: every live descendant.
    pub children: Vec<i32>,
    /// SIGSTOP every target for the read, and resume it.
    pub freeze: bool,
    /// Restrict the page walk to `[start, end)` (page aligned outward).
    pub range: Option<(u64, u64)>,
    /// Page-map cells per VMA (0: none). The SVG renderer asks for them.
    pub cells: usize,
    /// Add run-length rows per page class (`--per-page`; needs `range`).
    pub per_page: bool,
}

/// Most pages `--per-page` may cover.
pub const MAX_PER_PAGE: u64 = 1 << 20;

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

/// What the machine lets a snapshot prove.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// PFNs visible.
    pub pfn_visible: bool,
    /// kpagecount readable (pools).
    pub kpage_readable: bool,
    /// PAGEMAP_SCAN available.
    pub scan: bool,
    /// The zero page frames (with visible PFNs).
    pub zero: ZeroPfns,
}

impl Context {
    /// Probe privilege, PAGEMAP_SCAN and the zero page frames (cached after the first call).
    pub fn detect() -> Context {
        let p = crate::mem::privilege::detect();
        Context {
            pfn_visible: p.pfn_visible,
            kpage_readable: p.kpage_readable,
            scan: scan::available(),
            zero: super::zero::learn(),
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
        v
    } else {
        // cowscope and its watchdogs are never targets (`--pid $$` from a shell finds
        // cowscope among the shell's children); processes below cowscope are.
        proc::descendants(root.pid, &table)
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
    };
    let mut pairs = Vec::new();
    for c in children {
        let parent = if c.ppid == root.pid {
            root.clone()
        } else {
            match table.iter().find(|p| p.pid == c.ppid) {
                Some(p) => p.clone(),
                None => match proc::stat(c.ppid) {
                    Ok(p) => p,
                    Err(_) => continue,
                },
            }
        };
        // A zombie has no memory; cowscope is never read, not even as a parent.
        if parent.is_zombie() || is_self(parent.pid) {
            continue;
        }
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

/// One opened process.
struct Target {
    stat: Stat,
    pm: Pagemap,
    maps: Vec<SmapsEntry>,
}

fn open_target(s: &Stat) -> std::result::Result<Target, (&'static str, std::io::Error)> {
    let pm = Pagemap::open(s.pid).map_err(|e| ("pagemap", e))?;
    let maps = smaps::vma_bounds(s.pid).map_err(|e| ("maps", e))?;
    if maps.is_empty() && !access::still_alive(s) {
        return Err(("maps", std::io::Error::from_raw_os_error(libc::ESRCH)));
    }
    Ok(Target {
        stat: s.clone(),
        pm,
        maps,
    })
}

/// A walked segment.
struct Walked {
    seg: Segment,
    tally: Tally,
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
    let find = |pid: i32, v: &SmapsEntry| {
        pre_smaps
            .get(&pid)
            .and_then(|all| all.iter().find(|s| s.start == v.start && s.end == v.end))
    };
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

/// The smaps entry of `v` (same bounds) in a full smaps list.
fn smaps_for<'a>(all: Option<&'a Vec<SmapsEntry>>, v: &SmapsEntry) -> Option<&'a SmapsEntry> {
    all?.iter().find(|s| s.start == v.start && s.end == v.end)
}

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

/// A read of `/proc/<pid>/<file>` failed: decide what it means for the snapshot.
/// - the `--pid` process, or a `--child` the user named that is still alive: the error, in
///   [`Error::process_io`]'s words (exit 2);
/// - the process has exited (gone, a zombie, or ESRCH: its memory is being torn down):
///   `Ok(None)`, the caller notes "process N exited while it was being read";
/// - any other descendant that is alive but unreadable (permission, or another read error):
///   a [`Skipped`] entry with `unreadable`, which makes the exit code 3.
///
/// # Errors
/// The first case.
fn read_failure(plan: &Plan, s: &Stat, file: &str, e: std::io::Error) -> Result<Option<Skipped>> {
    let gone = !access::still_alive(s) || e.raw_os_error() == Some(libc::ESRCH);
    let root = s.pid == plan.root.pid;
    if root || (plan.explicit && !gone) {
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

/// Read one moment of every pair of `plan`.
///
/// # Errors
/// Usage errors (exit 2) when the root process cannot be read or exits mid-read, when an
/// explicitly given child cannot be read, or when every pair was lost.
pub fn take_snapshot(plan: &Plan, req: &InspectRequest, ctx: &Context) -> Result<Snapshot> {
    let t0 = Instant::now();
    let mut notes: Vec<String> = Vec::new();
    let mut skipped = plan.skipped.clone();

    // Every process once: the root first, then in pair order.
    let mut procs: Vec<Stat> = vec![plan.root.clone()];
    for (p, c) in &plan.pairs {
        for s in [p, c] {
            if !procs.iter().any(|x| x.pid == s.pid) {
                procs.push(s.clone());
            }
        }
    }
    let freeze = if req.freeze {
        Some(Freeze::stop(&procs)?)
    } else {
        None
    };

    let mut targets: HashMap<i32, Target> = HashMap::new();
    for s in &procs {
        match open_target(s) {
            Ok(t) => {
                targets.insert(s.pid, t);
            }
            Err((file, e)) => match read_failure(plan, s, file, e)? {
                None => notes.push(access::exited(s.pid)),
                Some(sk) => skipped.push(sk),
            },
        }
    }
    let mounts = Mounts::of(plan.root.pid);

    // Without PFNs and without PAGEMAP_SCAN, the exclusive-bit rule needs smaps first (which
    // VMAs have PMD-mapped memory); otherwise smaps runs beside the page walk.
    let smaps_first = !ctx.pfn_visible && !ctx.scan;
    let read_smaps = |pids: Vec<i32>| -> HashMap<i32, std::io::Result<Vec<SmapsEntry>>> {
        pids.into_iter()
            .map(|pid| (pid, smaps::all_vmas(pid)))
            .collect()
    };
    let live: Vec<i32> = procs
        .iter()
        .map(|s| s.pid)
        .filter(|p| targets.contains_key(p))
        .collect();
    let mut pre: HashMap<i32, Vec<SmapsEntry>> = HashMap::new();
    let mut smaps_results = HashMap::new();
    if smaps_first {
        for (pid, r) in read_smaps(live.clone()) {
            if let Ok(v) = &r {
                pre.insert(pid, v.clone());
            }
            smaps_results.insert(pid, r);
        }
    }

    let pairs_to_walk: Vec<(i32, i32)> = plan
        .pairs
        .iter()
        .map(|(p, c)| (p.pid, c.pid))
        .filter(|(p, c)| targets.contains_key(p) && targets.contains_key(c))
        .collect();
    let kpage = (ctx.pfn_visible && ctx.kpage_readable)
        .then(|| Kpage::open().ok())
        .flatten();

    type Walks = Vec<((i32, i32), std::result::Result<Vec<Walked>, SideError>)>;
    // smaps jobs are shared: the side thread takes them one by one while this thread walks
    // the pagemaps, and this thread takes what is left when its walk is done.
    let jobs: Vec<i32> = if smaps_first {
        Vec::new()
    } else {
        live.clone()
    };
    let next_job = std::sync::atomic::AtomicUsize::new(0);
    let done: std::sync::Mutex<HashMap<i32, std::io::Result<Vec<SmapsEntry>>>> =
        std::sync::Mutex::new(HashMap::new());
    let work = || {
        loop {
            let i = next_job.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&pid) = jobs.get(i) else { break };
            let r = smaps::all_vmas(pid);
            if let Ok(mut d) = done.lock() {
                d.insert(pid, r);
            }
        }
    };
    let (walks, pools_raw): (Walks, Vec<_>) = std::thread::scope(|sc| {
        let side = (!jobs.is_empty()).then(|| sc.spawn(work));
        let mut reader = PairReader::new();
        let walks: Walks = pairs_to_walk
            .iter()
            .map(|&(p, c)| {
                let r = walk_pair(&mut reader, ctx, req, &targets[&p], &targets[&c], &pre);
                ((p, c), r)
            })
            .collect();
        // Pools: parents with several children among the walked pairs (PFNs needed).
        let mut by_parent: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for ((p, c), r) in &walks {
            if r.is_ok() {
                by_parent.entry(*p).or_default().push(*c);
            }
        }
        let mut pools_raw = Vec::new();
        for (parent, members) in by_parent.into_iter().filter(|(_, m)| m.len() >= 2) {
            let commons: Vec<Vec<(u64, u64)>> = members
                .iter()
                .map(|c| {
                    walks
                        .iter()
                        .find(|((p, cc), _)| *p == parent && cc == c)
                        .and_then(|(_, r)| r.as_ref().ok())
                        .map(|ws| {
                            // Only what pagemap can read: never `[vsyscall]`.
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
                })
                .collect();
            // A member that exits during the pool walk (its pagemap reads EOF once its mm is
            // gone) is left out and the walk redone over the others: the pool of the live
            // workers stays complete. Fewer than two left: no pool any more.
            let (mut members, mut commons) = (members, commons);
            let mut left_out = Vec::new();
            let result = if ctx.pfn_visible {
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
                    let r = pool_sharing(&targets[&parent].pm, &ms, &ctx.zero, kpage.as_ref());
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
                                break None;
                            }
                        }
                        None => break Some(r),
                    }
                }
            } else {
                None
            };
            if ctx.pfn_visible && result.is_none() {
                continue; // every member but one exited during the walk: no pool
            }
            pools_raw.push((parent, members, result, left_out));
        }
        work();
        if let Some(h) = side {
            let _ = h.join();
        }
        (walks, pools_raw)
    });
    if !jobs.is_empty() {
        smaps_results = done.into_inner().unwrap_or_default();
    }
    let freeze_info = freeze.map(Freeze::resume);
    // A frozen instant only when every thread of every stopped process was stopped: a thread
    // in uninterruptible sleep (`D`) stops only when it wakes, and may run during the read.
    let frozen = freeze_info.as_ref().is_some_and(|f| f.all_threads_stopped);
    if let Some(f) = &freeze_info
        && !f.all_threads_stopped
    {
        notes.push(format!(
            "--freeze: not every thread had stopped after {} s (a thread in uninterruptible \
             sleep stops only when it wakes), so this is not a frozen instant: the unstopped \
             threads may have run during the read",
            super::freeze::STOP_TIMEOUT.as_secs()
        ));
    }
    let read_us = t0.elapsed().as_micros() as u64;

    // Which processes turned out to be gone, or alive but unreadable.
    let mut gone: Vec<i32> = Vec::new();
    let mut unreadable: Vec<i32> = Vec::new();
    let mut smaps_ok: HashMap<i32, Vec<SmapsEntry>> = HashMap::new();
    for (pid, r) in smaps_results {
        let Some(s) = procs.iter().find(|s| s.pid == pid) else {
            continue;
        };
        match r {
            Ok(v) if !v.is_empty() => {
                smaps_ok.insert(pid, v);
            }
            // No VMA at all: the address space is gone (exiting).
            Ok(_) => {
                if pid == plan.root.pid {
                    return Err(Error::usage(access::exited(pid)));
                }
                gone.push(pid);
            }
            Err(e) => match read_failure(plan, s, "smaps", e)? {
                None => gone.push(pid),
                Some(sk) => {
                    unreadable.push(pid);
                    skipped.push(sk);
                }
            },
        }
    }
    let mut pairs = Vec::new();
    for ((p, c), r) in walks {
        let (pt, ct) = (&targets[&p], &targets[&c]);
        if unreadable.contains(&p) || unreadable.contains(&c) {
            continue; // skipped[] says why
        }
        let walked = match r {
            Ok(w) => w,
            Err(e) => {
                let who = if e.side == Side::Parent { pt } else { ct };
                match read_failure(plan, &who.stat, "pagemap", e.error)? {
                    None => notes.push(access::exited(who.stat.pid)),
                    Some(sk) => {
                        unreadable.push(who.stat.pid);
                        skipped.push(sk);
                    }
                }
                continue;
            }
        };
        if gone.contains(&p) || gone.contains(&c) {
            let who = if gone.contains(&c) { ct } else { pt };
            if who.stat.pid == plan.root.pid {
                return Err(Error::usage(access::exited(who.stat.pid)));
            }
            notes.push(access::exited(who.stat.pid));
            continue;
        }
        pairs.push(build_pair(
            ctx,
            req,
            pt,
            ct,
            walked,
            (smaps_ok.get(&p), smaps_ok.get(&c)),
            &mounts,
            frozen,
        ));
    }
    if gone.contains(&plan.root.pid) {
        return Err(Error::usage(access::exited(plan.root.pid)));
    }
    if pairs.is_empty() {
        let why = notes
            .first()
            .cloned()
            .or_else(|| skipped.first().map(|s| format!("{} {}", s.pid, s.reason)))
            .unwrap_or_else(|| "no pair could be read".into());
        return Err(Error::usage(why));
    }

    let ps = crate::kernel::page_size() as u64;
    let pools = pools_raw
        .into_iter()
        .filter(|(parent, members, _, _)| {
            pairs
                .iter()
                .filter(|p| p.parent == *parent && members.contains(&p.child))
                .count()
                >= 2
        })
        .map(|(parent, members, result, left_out)| {
            let worker_pairs: Vec<&PairReport> = pairs
                .iter()
                .filter(|p| p.parent == parent && members.contains(&p.child))
                .collect();
            let view = PoolView::of(&worker_pairs, ps, ctx.pfn_visible);
            let mut r = PoolReport {
                parent,
                members,
                parent_pages: 0,
                sharing_histogram: None,
                kpagecount_histogram: None,
                notes: Vec::new(),
                incomplete: false,
                view,
            };
            for m in left_out {
                r.notes.push(format!(
                    "member {m} exited during the pool walk and is left out of the pool"
                ));
            }
            match result {
                None => {
                    r.incomplete = true;
                    r.notes.push(
                        "PFNs are hidden: how many members share each frame is unknowable".into(),
                    );
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
        })
        .collect();

    let processes = procs
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
        .collect();

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
    Ok(Snapshot {
        pid: plan.root.pid,
        pfn_visible: ctx.pfn_visible,
        basis: if ctx.pfn_visible {
            Basis::Pfn
        } else {
            Basis::ExclusiveBit
        },
        freeze: freeze_info,
        read_us,
        pairs,
        pools,
        processes,
        skipped,
        notes,
    })
}

fn kb(pages: u64) -> u64 {
    pages * crate::kernel::page_size() as u64 / 1024
}

/// Build the report of one pair from its walked segments.
#[allow(clippy::too_many_arguments)]
fn build_pair(
    ctx: &Context,
    req: &InspectRequest,
    pt: &Target,
    ct: &Target,
    walked: Vec<Walked>,
    (psm, csm): (Option<&Vec<SmapsEntry>>, Option<&Vec<SmapsEntry>>),
    mounts: &Mounts,
    frozen: bool,
) -> PairReport {
    let ps = crate::kernel::page_size() as u64;
    let mut totals = ClassCounts::default();
    let mut by_kind: BTreeMap<VmaKind, ClassCounts> = BTreeMap::new();
    let mut vmas = Vec::new();
    let mut one_sided = Vec::new();
    let mut common_tally = Tally::new(0, 0, 0, false);
    let mut parent_only_tally = Tally::new(0, 0, 0, false);
    let mut child_only_tally = Tally::new(0, 0, 0, false);
    let mut runs = req.per_page.then(Vec::new);
    let mut notes = Vec::new();

    // One-sided pieces, for the "moved" check.
    let pieces: Vec<(Side, &SmapsEntry, u64, u64)> = walked
        .iter()
        .filter_map(|w| match w.seg {
            Segment::ParentOnly { p, start, end } => Some((Side::Parent, &pt.maps[p], start, end)),
            Segment::ChildOnly { c, start, end } => Some((Side::Child, &ct.maps[c], start, end)),
            _ => None,
        })
        .collect();
    let common_idx: Vec<(usize, usize)> = walked
        .iter()
        .filter_map(|w| match w.seg {
            Segment::Common { p, c, .. } => Some((p, c)),
            _ => None,
        })
        .collect();
    let has_common = |side: Side, idx: usize| {
        common_idx.iter().any(|&(p, c)| match side {
            Side::Parent => p == idx,
            Side::Child => c == idx,
        })
    };
    let pieces: Vec<(Side, SmapsEntry, u64, u64)> = pieces
        .into_iter()
        .map(|(s, v, a, b)| (s, v.clone(), a, b))
        .collect();

    for mut w in walked {
        let counts = w.tally.counts();
        let grid = w.tally.take_grid();
        if let (Some(all), Some(mut r)) = (runs.as_mut(), w.tally.take_runs()) {
            all.append(&mut r);
        }
        let (cell_pages, cells) = match grid {
            Some((n, c)) => (Some(n), Some(c)),
            None => (None, None),
        };
        match w.seg {
            Segment::Common { p, c, start, end } => {
                let (pv, cv) = (&pt.maps[p], &ct.maps[c]);
                let kind = kind_of(pv, mounts);
                totals.add(&counts);
                by_kind.entry(kind).or_default().add(&counts);
                common_tally.absorb(&w.tally);
                vmas.push(VmaRow {
                    start,
                    end,
                    perms: pv.perms.clone(),
                    child_perms: (cv.perms != pv.perms).then(|| cv.perms.clone()),
                    pathname: pv.pathname.clone(),
                    kind,
                    counts,
                    cell_pages,
                    cells,
                });
            }
            Segment::ParentOnly { p, start, end } | Segment::ChildOnly { c: p, start, end } => {
                let side = if matches!(w.seg, Segment::ParentOnly { .. }) {
                    Side::Parent
                } else {
                    Side::Child
                };
                let (t, smaps_all) = match side {
                    Side::Parent => (pt, psm),
                    Side::Child => (ct, csm),
                };
                let v = &t.maps[p];
                let kind = kind_of(v, mounts);
                totals.add(&counts);
                by_kind.entry(kind).or_default().add(&counts);
                let (here, private) = match side {
                    Side::Parent => {
                        parent_only_tally.absorb(&w.tally);
                        (
                            counts.only_parent,
                            w.tally.parent_private[PairClass::OnlyParent as usize],
                        )
                    }
                    Side::Child => {
                        child_only_tally.absorb(&w.tally);
                        (
                            counts.only_child,
                            w.tally.child_private[PairClass::OnlyChild as usize],
                        )
                    }
                };
                let len = end - start;
                let dontcopy = smaps_for(smaps_all, v).is_some_and(|s| s.has_flag("dc"));
                let file_backed = v.inode != 0 || v.pathname.starts_with('/');
                let moved = pieces.iter().any(|&(os, ref ov, oa, ob)| {
                    if os == side || ob - oa != len {
                        return false;
                    }
                    if file_backed {
                        ov.dev == v.dev
                            && ov.inode == v.inode
                            && ov.offset + (oa - ov.start) == v.offset + (start - v.start)
                    } else {
                        ctx.pfn_visible
                            && ov.inode == 0
                            && ov.pathname == v.pathname
                            && vma::is_shared(ov) == vma::is_shared(v)
                            && {
                                let (opm, mpm) = match side {
                                    Side::Parent => (&ct.pm, &pt.pm),
                                    Side::Child => (&pt.pm, &ct.pm),
                                };
                                same_frames(mpm, start, opm, oa, len, &ctx.zero)
                            }
                    }
                });
                let reason = if side == Side::Parent && dontcopy {
                    OneSidedReason::NotInherited
                } else if has_common(side, p) {
                    OneSidedReason::Resized
                } else if moved {
                    OneSidedReason::Moved
                } else {
                    OneSidedReason::MappedAfterForkOrUnmapped
                };
                one_sided.push(OneSidedVma {
                    side: match side {
                        Side::Parent => SideName::Parent,
                        Side::Child => SideName::Child,
                    },
                    start,
                    end,
                    perms: v.perms.clone(),
                    pathname: v.pathname.clone(),
                    kind,
                    reason,
                    pages: len / ps,
                    present: here,
                    private_anon: private,
                    cell_pages,
                    cells,
                });
            }
        }
    }

    let accounting = if req.range.is_some() {
        None
    } else {
        let side_acc = |smaps_all: Option<&Vec<SmapsEntry>>, parent: bool| {
            let pick = |t: &Tally| {
                if parent {
                    t.parent_private
                } else {
                    t.child_private
                }
            };
            let common = pick(&common_tally);
            let own = if parent {
                pick(&parent_only_tally)
            } else {
                pick(&child_only_tally)
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
        };
        Some(Accounting {
            child: side_acc(csm, false),
            parent: side_acc(psm, true),
        })
    };
    if let Some(a) = &accounting {
        let thp = [psm, csm]
            .iter()
            .any(|s| s.is_some_and(|v| v.iter().any(smaps::has_pmd_mapped_memory)));
        if a.child.residual_kb != 0 || a.parent.residual_kb != 0 {
            let mut why = Vec::new();
            if !frozen {
                why.push(if req.freeze {
                    "threads that did not stop ran between the pagemap and smaps reads"
                } else {
                    "the processes ran between the pagemap and smaps reads (--freeze holds them still)"
                });
            }
            if thp {
                why.push("PMD-mapped THPs are present, whose exclusive bit follows the head page");
            }
            why.push("dirty file pages mapped once count in Private_Dirty but are not anonymous");
            notes.push(format!(
                "Private_Dirty and the private anonymous pages differ by {} kB (child) and {} kB \
                 (parent): {}.",
                a.child.residual_kb,
                a.parent.residual_kb,
                why.join("; ")
            ));
        }
    }
    if vmas.is_empty() && req.range.is_none() {
        notes.push(
            "the two processes have no mapping in common: the child has probably exec'd a new \
             program, so nothing is copy-on-write between them"
                .into(),
        );
    }
    PairReport {
        parent: pt.stat.pid,
        child: ct.stat.pid,
        parent_comm: pt.stat.comm.clone(),
        child_comm: ct.stat.comm.clone(),
        totals,
        by_kind,
        vmas,
        one_sided,
        accounting,
        page_runs: runs,
        notes,
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
        let sk = read_failure(&plan, &kid, "smaps", denied())
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
        let sk = read_failure(
            &plan,
            &kid,
            "smaps",
            io::Error::from_raw_os_error(libc::EIO),
        )
        .unwrap()
        .expect("alive: not an exit");
        assert!(sk.unreadable && sk.reason.contains(&format!("/proc/{}/smaps", kid.pid)));
        // ESRCH: the kernel found no memory: it is exiting.
        assert!(
            read_failure(
                &plan,
                &kid,
                "smaps",
                io::Error::from_raw_os_error(libc::ESRCH)
            )
            .unwrap()
            .is_none()
        );
        // The --pid process, or a --child the user named: an error, in one sentence.
        let e = read_failure(&plan, &me, "smaps", denied()).unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{e}");
        let e = read_failure(&plan_with(me.clone(), true), &kid, "smaps", denied()).unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{e}");

        // Once it has really exited, the same error means "exited".
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert!(
            read_failure(&plan, &kid, "smaps", denied())
                .unwrap()
                .is_none()
        );
    }
}
