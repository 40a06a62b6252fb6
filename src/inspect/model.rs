//! The serde bodies of the `inspect` documents: one JSON document (`cowscope schema inspect`,
//! [`crate::doc::InspectDoc`]) and one JSON Lines record per sample (`cowscope schema
//! inspect-sample`, [`crate::doc::InspectSampleDoc`]).
//!
//! Field names of `pairs[]`, `totals`, `vmas[]` and `processes[].smaps_rollup` are a contract
//! (issue 10): scripts rely on them. Everything else is welcome extra.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::freeze::FreezeInfo;
use super::tally::{ClassCounts, PageRun};
use super::vma::VmaKind;
use super::zero::ZeroPfns;
use crate::mem::smaps::SmapsEntry;

/// How pages were told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Frame numbers (CAP_SYS_ADMIN): same PFN is the same page.
    Pfn,
    /// PFNs hidden: the exclusive bit, PAGEMAP_SCAN's zero page, and shared mappings; the rest
    /// is `unproven`.
    ExclusiveBit,
}

/// Why a VMA exists on one side only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OneSidedReason {
    /// The parent's VMA has `MADV_DONTFORK` (VmFlags `dc`): the child never got it.
    NotInherited,
    /// Part of a VMA the other side also has, but smaller or larger there (`brk`, stack
    /// growth, `mremap` in place, a partial `munmap`).
    Resized,
    /// The same mapping sits elsewhere on the other side (`mremap`): same file and offset, or
    /// anonymous memory whose first present frames are the same frames (PFNs needed).
    Moved,
    /// This side mapped it after the fork, or the other side unmapped it: without a
    /// fork-time baseline the two cannot be told apart.
    MappedAfterForkOrUnmapped,
}

/// Which process of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SideName {
    /// The process the other was forked from.
    Parent,
    /// The forked process.
    Child,
}

/// One common segment: a VMA both processes have (or the part where they overlap).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VmaRow {
    /// First byte, hex.
    #[serde(with = "crate::mem::hex")]
    #[schemars(with = "String")]
    pub start: u64,
    /// One past the last byte, hex.
    #[serde(with = "crate::mem::hex")]
    #[schemars(with = "String")]
    pub end: u64,
    /// The parent's permissions as in smaps (`rw-p`).
    pub perms: String,
    /// The child's permissions when they differ (`mprotect` after the fork).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub child_perms: Option<String>,
    /// Path or pseudo-name as in smaps; empty for anonymous memory.
    pub pathname: String,
    /// What the VMA is.
    pub kind: VmaKind,
    /// Pages per class.
    #[serde(flatten)]
    pub counts: ClassCounts,
    /// Pages per page-map cell (with `--format svg` or `--cells`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cell_pages: Option<u64>,
    /// Page-map cells: per cell the pages of each class, in the order shared, diverged,
    /// only_parent, only_child, zero, unproven, neither.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cells: Option<Vec<[u64; 7]>>,
}

/// A VMA (or the part of one) that only one process of the pair has.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct OneSidedVma {
    /// Who has it.
    pub side: SideName,
    /// First byte, hex.
    #[serde(with = "crate::mem::hex")]
    #[schemars(with = "String")]
    pub start: u64,
    /// One past the last byte, hex.
    #[serde(with = "crate::mem::hex")]
    #[schemars(with = "String")]
    pub end: u64,
    /// Permissions as in smaps.
    pub perms: String,
    /// Path or pseudo-name.
    pub pathname: String,
    /// What the VMA is.
    pub kind: VmaKind,
    /// Why only one side has it.
    pub reason: OneSidedReason,
    /// Pages in the range.
    pub pages: u64,
    /// Pages present or swapped (counted as only_parent / only_child in the totals).
    pub present: u64,
    /// Pages that are private anonymous memory of that side (present, exclusive, anon).
    pub private_anon: u64,
    /// Pages per page-map cell.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cell_pages: Option<u64>,
    /// Page-map cells, as in [`VmaRow::cells`].
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cells: Option<Vec<[u64; 7]>>,
}

/// One side's Private_Dirty, accounted page by page (design principle 7): smaps counts a
/// page in Private_Dirty when it is dirty and mapped once; anonymous pages are dirty, so the
/// process's private anonymous pages (present, pagemap bit 56, not bit 61) explain it, split
/// by the class each has in the pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SideAccounting {
    /// Private_Dirty of the whole process (sum over smaps).
    pub private_dirty_kb: u64,
    /// Private anonymous pages x page size, over the whole address space.
    pub private_anon_kb: u64,
    /// ... of which in pages that diverged between the two.
    pub diverged_kb: u64,
    /// ... of which in pages only this side has, inside VMAs both have.
    pub only_here_kb: u64,
    /// ... of which in VMAs only this side has.
    pub one_sided_vmas_kb: u64,
    /// ... of which in any other class (expected 0: a page mapped once cannot be shared;
    /// non-zero means the processes changed between the reads).
    pub other_kb: u64,
    /// `private_dirty_kb - private_anon_kb`: dirty file pages mapped once, PMD-mapped THPs
    /// (whose bit 56 follows the head page), and anything that changed between the pagemap
    /// and smaps reads (0 with `--freeze` on a program without those).
    pub residual_kb: i64,
}

/// Principle 7 for both sides of a pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Accounting {
    /// The child's Private_Dirty (what Redis reports as its copy-on-write size).
    pub child: SideAccounting,
    /// The parent's.
    pub parent: SideAccounting,
}

/// One (parent, child) pair.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PairReport {
    /// The process the child was forked from.
    pub parent: i32,
    /// The forked process.
    pub child: i32,
    /// The parent's comm.
    pub parent_comm: String,
    /// The child's comm.
    pub child_comm: String,
    /// Pages per class over both whole address spaces: common VMAs page by page, one-sided
    /// VMAs as only_parent / only_child.
    pub totals: ClassCounts,
    /// The totals per VMA kind.
    pub by_kind: BTreeMap<VmaKind, ClassCounts>,
    /// The common VMAs, in address order.
    pub vmas: Vec<VmaRow>,
    /// VMAs only one side has.
    pub one_sided: Vec<OneSidedVma>,
    /// Private_Dirty of each side accounted page by page (absent with `--range`).
    pub accounting: Option<Accounting>,
    /// Runs of pages with one class (`--per-page`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub page_runs: Option<Vec<PageRun>>,
    /// What this pair's evidence cannot show.
    pub notes: Vec<String>,
}

/// smaps summed over every VMA: the figures of `/proc/<pid>/smaps_rollup` (which is the
/// same walk; Pss here is the sum of per-VMA Pss, each rounded down to a kB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SmapsRollup {
    /// Resident.
    pub rss_kb: u64,
    /// Proportional set size.
    pub pss_kb: u64,
    /// Proportional dirty.
    pub pss_dirty_kb: u64,
    /// Resident, mapped elsewhere too, clean.
    pub shared_clean_kb: u64,
    /// Resident, mapped elsewhere too, dirty.
    pub shared_dirty_kb: u64,
    /// Resident, mapped once, clean.
    pub private_clean_kb: u64,
    /// Resident, mapped once, dirty: what a forked child has copied (Redis's COW size).
    pub private_dirty_kb: u64,
    /// Referenced.
    pub referenced_kb: u64,
    /// Anonymous.
    pub anonymous_kb: u64,
    /// Anonymous memory in PMD-mapped THPs.
    pub anon_huge_kb: u64,
    /// Shmem in PMD mappings.
    pub shmem_pmd_mapped_kb: u64,
    /// File memory in PMD mappings.
    pub file_pmd_mapped_kb: u64,
    /// Swapped out.
    pub swap_kb: u64,
    /// Proportional swap.
    pub swap_pss_kb: u64,
    /// mlocked.
    pub locked_kb: u64,
}

impl SmapsRollup {
    /// Sum the VMAs.
    pub fn of(vmas: &[SmapsEntry]) -> SmapsRollup {
        let mut r = SmapsRollup::default();
        for v in vmas {
            r.rss_kb += v.rss_kb;
            r.pss_kb += v.pss_kb;
            r.pss_dirty_kb += v.pss_dirty_kb;
            r.shared_clean_kb += v.shared_clean_kb;
            r.shared_dirty_kb += v.shared_dirty_kb;
            r.private_clean_kb += v.private_clean_kb;
            r.private_dirty_kb += v.private_dirty_kb;
            r.referenced_kb += v.referenced_kb;
            r.anonymous_kb += v.anonymous_kb;
            r.anon_huge_kb += v.anon_huge_pages_kb;
            r.shmem_pmd_mapped_kb += v.shmem_pmd_mapped_kb;
            r.file_pmd_mapped_kb += v.file_pmd_mapped_kb;
            r.swap_kb += v.swap_kb;
            r.swap_pss_kb += v.swap_pss_kb;
            r.locked_kb += v.locked_kb;
        }
        r
    }
}

/// One process of the report.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// comm.
    pub comm: String,
    /// State letter when discovered (`S`, `R`, `T`...).
    pub state: String,
    /// Number of VMAs.
    pub vmas: usize,
    /// smaps summed over every VMA.
    pub smaps_rollup: SmapsRollup,
}

/// A process found but not inspected, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Skipped {
    /// Process id.
    pub pid: i32,
    /// comm.
    pub comm: String,
    /// Why.
    pub reason: String,
    /// It is alive but its memory could not be read: the kernel refused (another user's
    /// process, a setuid or non-dumpable program; `reason` says which) or the read failed.
    /// Unlike a zombie or a `vfork` child, this leaves out a pair that exists: the report is
    /// incomplete, and the exit code is 3.
    #[serde(default)]
    pub unreadable: bool,
}

/// A pool: several children of one parent. How many of them still share each of the
/// parent's frames.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PoolReport {
    /// The parent.
    pub parent: i32,
    /// Its children in this report.
    pub members: Vec<i32>,
    /// The parent's present pages examined (zero pages excluded), in VMAs it shares with
    /// at least one member.
    pub parent_pages: u64,
    /// Number of members mapping the parent's frame at the same address -> pages (PFNs
    /// needed; absent without).
    pub sharing_histogram: Option<BTreeMap<String, u64>>,
    /// kpagecount of the parent's frames (every mapper in the system, the parent included)
    /// -> pages (kpagecount needed; absent without).
    pub kpagecount_histogram: Option<BTreeMap<String, u64>>,
    /// What this pool's evidence cannot show.
    pub notes: Vec<String>,
    /// A part of this pool is missing: the walk of the parent's frames stopped (a read
    /// failed) or PFNs are hidden, so `sharing_histogram` is absent. The exit code is 3.
    #[serde(default)]
    pub incomplete: bool,
    /// What the workers cost together, from their pairs (no PFNs needed).
    pub view: PoolView,
}

/// A pool at a glance: what its workers' pairs add up to, identical pairs collapsed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PoolView {
    /// Workers: members with a pair in this report.
    pub workers: u64,
    /// Bytes no longer the same page in the parent and a worker (`diverged` x page size),
    /// summed over the workers: one page each that the fork added (a copy, or released and
    /// refaulted). Without PFNs a lower bound (`unproven` pages are not in it).
    pub diverged_bytes: u64,
    /// Bytes only a worker has (`only_child`), summed over the workers.
    pub only_child_bytes: u64,
    /// Workers whose pairs have identical counts, one entry per distinct pair, most
    /// diverged first.
    pub groups: Vec<PoolGroup>,
    /// One sentence: "4 workers, each 24.1 MiB diverged, 96.4 MiB in all".
    pub summary: String,
    /// One sentence on `only_parent`: what the parent has that the workers do not.
    pub only_parent: String,
}

/// Workers whose pairs with the parent have the same counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PoolGroup {
    /// The workers.
    pub members: Vec<i32>,
    /// Each worker's diverged bytes.
    pub diverged_bytes: u64,
    /// Each worker's shared bytes.
    pub shared_bytes: u64,
    /// Each worker's only_parent bytes.
    pub only_parent_bytes: u64,
    /// Each worker's only_child bytes.
    pub only_child_bytes: u64,
}

/// A size for people: MiB with one decimal, kB below 0.05 MiB (the one formatter of sizes
/// in inspect's sentences and renderings).
pub fn human_size(bytes: u64) -> String {
    let m = bytes as f64 / (1u64 << 20) as f64;
    if bytes > 0 && m < 0.05 {
        format!("{} kB", bytes / 1024)
    } else {
        format!("{m:.1} MiB")
    }
}

impl PoolView {
    /// The view of the workers' pairs (`pairs`: the pairs of this pool's parent with its
    /// members). Pairs with identical class counts collapse into one group.
    pub fn of(pairs: &[&PairReport], page_size: u64, pfn_visible: bool) -> PoolView {
        let bytes = |pages: u64| pages * page_size;
        let groups = groups_of(pairs, page_size);
        let diverged_bytes: u64 = pairs.iter().map(|p| bytes(p.totals.diverged)).sum();
        let only_child_bytes = pairs.iter().map(|p| bytes(p.totals.only_child)).sum();
        PoolView {
            workers: pairs.len() as u64,
            diverged_bytes,
            only_child_bytes,
            summary: summary_sentence(&groups, pairs.len(), diverged_bytes, pfn_visible),
            only_parent: only_parent_sentence(&groups, pairs.len()),
            groups,
        }
    }
}

/// The workers' pairs with identical class counts as one group each, most diverged first.
fn groups_of(pairs: &[&PairReport], page_size: u64) -> Vec<PoolGroup> {
    let mut groups: Vec<(ClassCounts, Vec<i32>)> = Vec::new();
    for p in pairs {
        match groups.iter_mut().find(|(t, _)| *t == p.totals) {
            Some((_, m)) => m.push(p.child),
            None => groups.push((p.totals, vec![p.child])),
        }
    }
    groups.sort_by(|a, b| {
        b.0.diverged
            .cmp(&a.0.diverged)
            .then_with(|| a.1.first().cmp(&b.1.first()))
    });
    let bytes = |pages: u64| pages * page_size;
    groups
        .into_iter()
        .map(|(t, mut members)| {
            members.sort_unstable();
            PoolGroup {
                members,
                diverged_bytes: bytes(t.diverged),
                shared_bytes: bytes(t.shared),
                only_parent_bytes: bytes(t.only_parent),
                only_child_bytes: bytes(t.only_child),
            }
        })
        .collect()
}

/// "1 worker", "3 workers".
fn workers_phrase(k: usize) -> String {
    if k == 1 {
        "1 worker".to_string()
    } else {
        format!("{k} workers")
    }
}

/// The pool's summary sentence: how much the workers diverged, each and in all.
fn summary_sentence(
    groups: &[PoolGroup],
    workers: usize,
    diverged_bytes: u64,
    pfn_visible: bool,
) -> String {
    let at_least = if pfn_visible { "" } else { "at least " };
    // The sentence collapses workers whose diverged memory reads the same at its
    // precision (groups are sorted by diverged bytes, so those are neighbours); the
    // groups themselves stay exact.
    let mut shown: Vec<(u64, usize)> = Vec::new(); // (diverged bytes of the first, workers)
    for g in groups {
        match shown.last_mut() {
            Some((b, k)) if human_size(*b) == human_size(g.diverged_bytes) => {
                *k += g.members.len();
            }
            _ => shown.push((g.diverged_bytes, g.members.len())),
        }
    }
    match shown.as_slice() {
        [(b, k)] => format!(
            "{}, each {at_least}{} diverged, {} in all",
            workers_phrase(*k),
            human_size(*b),
            human_size(diverged_bytes)
        ),
        gs => {
            // At most SHOWN sizes by name; the rest as one range.
            const SHOWN: usize = 3;
            let named = if gs.len() > SHOWN + 1 {
                SHOWN
            } else {
                gs.len()
            };
            let mut parts: Vec<String> = gs[..named]
                .iter()
                .map(|&(b, k)| match k {
                    1 => format!("1 worker {}", human_size(b)),
                    k => format!("{k} workers each {}", human_size(b)),
                })
                .collect();
            if let Some(rest) = gs.get(named..).filter(|r| !r.is_empty()) {
                let k: usize = rest.iter().map(|g| g.1).sum();
                let lo = rest.iter().map(|g| g.0).min().unwrap_or(0);
                let hi = rest.iter().map(|g| g.0).max().unwrap_or(0);
                parts.push(format!(
                    "{} {} to {} each",
                    workers_phrase(k),
                    human_size(lo),
                    human_size(hi)
                ));
            }
            format!(
                "{}, {at_least}{} diverged in all: {}",
                workers_phrase(workers),
                human_size(diverged_bytes),
                parts.join(", ")
            )
        }
    }
}

/// The only_parent sentence: what the parent has that the workers lack, and why.
fn only_parent_sentence(groups: &[PoolGroup], workers: usize) -> String {
    let lo = groups
        .iter()
        .map(|g| g.only_parent_bytes)
        .min()
        .unwrap_or(0);
    let hi = groups
        .iter()
        .map(|g| g.only_parent_bytes)
        .max()
        .unwrap_or(0);
    if hi == 0 {
        "only_parent: every page the parent has, each worker has too.".to_string()
    } else {
        format!(
            "only_parent: the parent has {} that {}: pages the parent mapped or touched \
             after the fork, or the worker dropped (unmapped, released), and file pages \
             the worker has not touched since the fork (fork copies no page tables for a \
             mapping never written, so they appear when the worker faults them in).",
            if lo == hi {
                human_size(hi)
            } else {
                format!("{} to {}", human_size(lo), human_size(hi))
            },
            if workers == 1 {
                "the worker does not"
            } else {
                "each worker does not"
            }
        )
    }
}

/// A range as the documents write it: two hex addresses.
pub fn hex_range((a, b): (u64, u64)) -> [String; 2] {
    [crate::mem::hex::format(a), crate::mem::hex::format(b)]
}

/// The zero page frames cowscope learnt and how zero pages were recognised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ZeroInfo {
    /// Frames learnt from cowscope's own read faults (PFNs needed).
    pub pfns: ZeroPfns,
    /// Zero pages recognised by PAGEMAP_SCAN's `PAGE_IS_PFNZERO` (PFNs hidden).
    pub by_pagemap_scan: bool,
}

/// Everything read at one moment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Snapshot {
    /// The `--pid`.
    pub pid: i32,
    /// Whether PFNs were visible (CAP_SYS_ADMIN).
    pub pfn_visible: bool,
    /// How pages were told apart.
    pub basis: Basis,
    /// What `--freeze` did (absent without it).
    pub freeze: Option<FreezeInfo>,
    /// Microseconds spent reading (pagemaps, smaps, maps).
    pub read_us: u64,
    /// One per (parent, child) pair.
    pub pairs: Vec<PairReport>,
    /// One per parent with several children here.
    pub pools: Vec<PoolReport>,
    /// Every process of a pair.
    pub processes: Vec<ProcessInfo>,
    /// Processes found but not inspected.
    pub skipped: Vec<Skipped>,
    /// What the evidence cannot show, in plain words.
    pub notes: Vec<String>,
}

/// A sample in `samples[]` of a watch document: totals only, so hours of samples stay small.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SampleSummary {
    /// Sample number from 0.
    pub seq: u64,
    /// Milliseconds since the watch began.
    pub t_ms: u64,
    /// Per pair: totals and totals per kind.
    pub pairs: Vec<PairSummary>,
    /// Per process: Rss, Pss, Private_Dirty.
    pub processes: Vec<ProcessSummary>,
}

/// A pair in a [`SampleSummary`].
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PairSummary {
    /// Parent pid.
    pub parent: i32,
    /// Child pid.
    pub child: i32,
    /// Totals.
    pub totals: ClassCounts,
    /// Totals per kind.
    pub by_kind: BTreeMap<VmaKind, ClassCounts>,
}

/// A process in a [`SampleSummary`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
pub struct ProcessSummary {
    /// pid.
    pub pid: i32,
    /// Rss.
    pub rss_kb: u64,
    /// Pss.
    pub pss_kb: u64,
    /// Private_Dirty.
    pub private_dirty_kb: u64,
}

/// How a watch went.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WatchInfo {
    /// `--interval` in milliseconds.
    pub interval_ms: u64,
    /// `--duration` in milliseconds, if given.
    pub duration_ms: Option<u64>,
    /// Why it ended: `children_exited`, `parent_exited`, `duration`, `interrupted`.
    pub ended_by: String,
    /// Samples taken.
    pub samples: u64,
    /// Samples that could not prove everything (some page `unproven`, or a descendant whose
    /// memory the kernel refused to show): the exit code is 3 when any sample was, not only
    /// the last.
    #[serde(default)]
    pub incomplete_samples: u64,
}

/// The body of an `inspect` document.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InspectBody {
    /// The moment read (in a watch: the last sample).
    #[serde(flatten)]
    pub snapshot: Snapshot,
    /// Zero page frames and method.
    pub zero_page: ZeroInfo,
    /// `--range`, when the walk was restricted to it.
    pub range: Option<[String; 2]>,
    /// With `--interval`: how the watch went.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub watch: Option<WatchInfo>,
    /// With `--interval`: every sample, totals only.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub samples: Option<Vec<SampleSummary>>,
}

/// One line of `--format jsonl`: a sample with everything a single inspect reports.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SampleLine {
    /// Sample number from 0.
    pub seq: u64,
    /// Milliseconds since the watch began.
    pub t_ms: u64,
    /// The moment read.
    #[serde(flatten)]
    pub snapshot: Snapshot,
}

impl Snapshot {
    /// The totals-only form for `samples[]`.
    pub fn summary(&self, seq: u64, t_ms: u64) -> SampleSummary {
        SampleSummary {
            seq,
            t_ms,
            pairs: self
                .pairs
                .iter()
                .map(|p| PairSummary {
                    parent: p.parent,
                    child: p.child,
                    totals: p.totals,
                    by_kind: p.by_kind.clone(),
                })
                .collect(),
            processes: self
                .processes
                .iter()
                .map(|p| ProcessSummary {
                    pid: p.pid,
                    rss_kb: p.smaps_rollup.rss_kb,
                    pss_kb: p.smaps_rollup.pss_kb,
                    private_dirty_kb: p.smaps_rollup.private_dirty_kb,
                })
                .collect(),
        }
    }

    /// Pages no evidence could classify, over every pair.
    pub fn unproven(&self) -> u64 {
        self.pairs.iter().map(|p| p.totals.unproven).sum()
    }

    /// Whether this moment proves less than a complete read would: some page is
    /// `unproven`, a live descendant was left out because its memory could not be read, or
    /// a pool's walk is missing (exit code 3).
    pub fn incomplete(&self) -> bool {
        self.unproven() > 0
            || self.skipped.iter().any(|s| s.unreadable)
            || self.pools.iter().any(|p| p.incomplete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(child: i32, diverged: u64, only_parent: u64) -> PairReport {
        PairReport {
            parent: 1,
            child,
            parent_comm: "p".into(),
            child_comm: "w".into(),
            totals: ClassCounts {
                shared: 100,
                diverged,
                only_parent,
                ..Default::default()
            },
            by_kind: BTreeMap::new(),
            vmas: Vec::new(),
            one_sided: Vec::new(),
            accounting: None,
            page_runs: None,
            notes: Vec::new(),
        }
    }

    const MIB_PAGES: u64 = 256; // 1 MiB of 4 KiB pages

    #[test]
    fn identical_workers_collapse_into_each_and_in_all() {
        let ps: Vec<PairReport> = (2..6).map(|c| pair(c, 24 * MIB_PAGES, 0)).collect();
        let refs: Vec<&PairReport> = ps.iter().collect();
        let v = PoolView::of(&refs, 4096, true);
        assert_eq!(v.workers, 4);
        assert_eq!(v.groups.len(), 1);
        assert_eq!(v.groups[0].members, [2, 3, 4, 5]);
        assert_eq!(v.diverged_bytes, 96 << 20);
        assert_eq!(
            v.summary,
            "4 workers, each 24.0 MiB diverged, 96.0 MiB in all"
        );
        assert_eq!(
            v.only_parent,
            "only_parent: every page the parent has, each worker has too."
        );
    }

    #[test]
    fn different_workers_are_listed_most_diverged_first_and_many_as_a_range() {
        let ps = [
            pair(7, MIB_PAGES, 10),
            pair(3, 2 * MIB_PAGES, 20),
            pair(4, 2 * MIB_PAGES, 20),
        ];
        let refs: Vec<&PairReport> = ps.iter().collect();
        let v = PoolView::of(&refs, 4096, false);
        assert_eq!(
            v.summary,
            "3 workers, at least 5.0 MiB diverged in all: 2 workers each 2.0 MiB, 1 worker 1.0 MiB"
        );
        assert!(
            v.only_parent.starts_with(
                "only_parent: the parent has 40 kB to 0.1 MiB that each worker does not"
            ),
            "{}",
            v.only_parent
        );
        // 31.0 MiB and 31.0 MiB plus one page read the same: one "each" in the sentence, two
        // exact groups in the JSON.
        let near = [pair(2, 31 * MIB_PAGES, 0), pair(3, 31 * MIB_PAGES + 1, 0)];
        let refs: Vec<&PairReport> = near.iter().collect();
        let v = PoolView::of(&refs, 4096, true);
        assert_eq!(v.groups.len(), 2);
        assert_eq!(
            v.summary,
            "2 workers, each 31.0 MiB diverged, 62.0 MiB in all"
        );
        let many: Vec<PairReport> = (1..=6).map(|c| pair(c, c as u64 * MIB_PAGES, 0)).collect();
        let refs: Vec<&PairReport> = many.iter().collect();
        assert_eq!(
            PoolView::of(&refs, 4096, true).summary,
            "6 workers, 21.0 MiB diverged in all: 1 worker 6.0 MiB, 1 worker 5.0 MiB, 1 worker \
             4.0 MiB, 3 workers 1.0 MiB to 3.0 MiB each"
        );
    }
}
