//! Who copied: one class per page of a (parent, child) pair, from the fork-time baseline, the
//! frames each side maps now, and the releases each side made since the fork.
//!
//! Pure functions over small values; the rules are rstest cases below.
//!
//! The rules (first match wins):
//! 1. Nothing was mapped there at the fork (`Hist::Unborn`): the page shared nothing and is
//!    outside the comparison (`None`).
//! 2. Both sides map the same frame: `zero` (the shared zero page or huge zero page) or
//!    `shared`. Frames that moved together (migration, compaction of a shared page) stay shared.
//!    Both on a zero frame, even different ones (the huge zero page on one side, small zero
//!    pages after a split on the other), is `zero`.
//! 3. A side released the range since the fork (munmap, madvise DONTNEED/FREE/REMOVE, mremap,
//!    brk shrink, MAP_FIXED over it): `copied_then_released_by_child` /
//!    `copied_then_released_by_parent` when an earlier sample saw that side's copy there (the
//!    history byte remembers it: a copy later freed was a copy), else `released_by_parent`,
//!    `released_by_child` or `released_by_both`. A release never overrides rule 2: a page
//!    still on the shared frame is shared, whatever syscall touched it (MADV_FREE skips pages
//!    mapped by two processes).
//! 4. A side has nothing there, in RAM or swap (and did not release it): `absent`,
//!    `only_parent`, `only_child`. A page in swap is still the side's page: the same swap slot
//!    on both sides is one page (`shared`, with visible swap offsets), different slots are
//!    different pages, and a page in RAM against one in swap may be the one swap-cache page
//!    (`unproven`, unless the two were already apart).
//! 5. Both map different frames. With PFNs: the side whose frame left the shared frame got the
//!    new page; a new frame that no write makes (a KSM page, a THP built by khugepaged or
//!    MADV_COLLAPSE, a page-cache page read again) is `moved`, except where the shared frame
//!    was a zero page: a new frame there is a write's (since Linux 6.13 a write into the huge
//!    zero page gives the writer a whole THP); a write's copy is `copied_by_child` /
//!    `copied_by_parent` (`copied_at_fork` for what the child owned before its first
//!    instruction: pinned pages, its TID page). When both frames changed since the last
//!    sample, the history decides; with none, `diverged` (a copy by one side and a migration
//!    of the other cannot be told apart).
//! 6. Without PFNs, `inspect`'s rule for a pair decides first
//!    ([`crate::inspect::classify::classify_hidden`]): bit 56 of a side not PMD-mapped proves
//!    the frames differ (`diverged`, who copied unproven), PAGEMAP_SCAN's zero page gives
//!    `zero`, and a page-cache page at one file offset of the same file on both sides is one
//!    page (`shared`; inspect claims this for MAP_SHARED mappings only, trace also for private
//!    file mappings whose VMA still matches the fork-time one on both sides). Then what only
//!    the baseline adds: releases, `copied_at_fork`, and the family rule: an anonymous small
//!    page mapped more than once on both sides is mapped by both only where bit 56 has its
//!    exact meaning (kernels before 6.15, or built with CONFIG_PAGE_MAPCOUNT: with
//!    CONFIG_NO_PAGE_MAPCOUNT a clear bit 56 only means "maybe shared"), no third process
//!    lives in the family, KSM is off and the VMA still matches the fork-time one. Everything
//!    else is `unproven`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::inspect::classify::{HiddenFacts, PairClass, classify_hidden};
use crate::mem::pagemap::{EXCLUSIVE, FILE_OR_SHARED, PFN_MASK, PRESENT, SWAPPED};

/// What happened to one page since the fork, as far as the evidence proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Both map the same frame.
    Shared,
    /// Both map the shared zero page (or the huge zero page): memory nobody paid for.
    Zero,
    /// The child's write got it a copy; the parent keeps the fork-time frame.
    CopiedByChild,
    /// The parent's write got it a copy; the child keeps the fork-time frame.
    CopiedByParent,
    /// The child had its own copy before its first instruction: the page where the kernel
    /// wrote the child's TID (CLONE_CHILD_SETTID, as glibc's fork asks), or a page that may
    /// be DMA-pinned (io_uring, O_DIRECT), which fork copies instead of sharing.
    CopiedAtFork,
    /// The child copied the page (a sample saw its copy) and released it later: memory the
    /// child held for a while, gone now.
    CopiedThenReleasedByChild,
    /// The parent copied the page (a sample saw its copy) and released it later.
    CopiedThenReleasedByParent,
    /// The child released the range after the fork without a copy seen first (and may have
    /// faulted a fresh page).
    ReleasedByChild,
    /// The parent released the range after the fork.
    ReleasedByParent,
    /// Both released it.
    ReleasedByBoth,
    /// One side's frame changed without a write: KSM merge, khugepaged/MADV_COLLAPSE, or a
    /// page-cache page read in again.
    Moved,
    /// The frames differ, and the evidence cannot say who copied (no PFNs, or both frames
    /// changed between two samples).
    Diverged,
    /// Only the parent has the page, in RAM or swap (the child dropped it without a tracked
    /// release).
    OnlyParent,
    /// Only the child has the page, in RAM or swap.
    OnlyChild,
    /// Neither has a page there (in RAM or swap).
    Absent,
    /// The evidence proves neither: PFNs are hidden and nothing else proves it, or one side's
    /// page is in swap and the other's in RAM (it may be the one swap-cache page).
    Unproven,
}

/// What is remembered about one page between samples (one byte per page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Hist {
    /// No frame at the fork.
    #[default]
    Unborn = 0,
    /// Last seen shared (or never seen apart since the fork).
    Shared = 1,
    /// Last attributed to a child's copy.
    CopiedByChild = 2,
    /// Last attributed to a parent's copy.
    CopiedByParent = 3,
    /// Copied by the kernel at fork.
    CopiedAtFork = 4,
    /// Moved without a write.
    Moved = 5,
    /// Diverged, unattributed.
    Diverged = 6,
}

impl Hist {
    /// From the stored byte (unknown bytes read as `Diverged`, the least committal).
    pub fn from_u8(b: u8) -> Hist {
        match b {
            0 => Hist::Unborn,
            1 => Hist::Shared,
            2 => Hist::CopiedByChild,
            3 => Hist::CopiedByParent,
            4 => Hist::CopiedAtFork,
            5 => Hist::Moved,
            _ => Hist::Diverged,
        }
    }
}

/// One side's view of a page now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    /// A frame is mapped (pagemap bit 63).
    pub present: bool,
    /// The page is in swap (bit 62, not present).
    pub swapped: bool,
    /// The swap entry (type and offset, bits 0-54) when swapped; 0 when hidden (the kernel
    /// shows swap offsets only to CAP_SYS_ADMIN, like PFNs).
    pub swap: u64,
    /// The PFN (0 when hidden).
    pub pfn: u64,
    /// Pagemap bit 56: mapped exactly once ("certainly exclusive" for pages of large folios
    /// on kernels built with CONFIG_NO_PAGE_MAPCOUNT, 6.15+: clear then only means "maybe
    /// shared").
    pub exclusive: bool,
    /// Pagemap bit 61: a page-cache page (private file mapping, not yet copied), or the huge
    /// zero page.
    pub file: bool,
    /// The frame is the zero page or part of the huge zero page: with PFNs from the known
    /// zero frames, without them from PAGEMAP_SCAN (`None`: unknown).
    pub zero: Option<bool>,
    /// Without PFNs: the address is mapped by a PMD (PAGEMAP_SCAN `PAGE_IS_HUGE`), where bit
    /// 56 follows the head page on some kernels (`None`: unknown).
    pub pmd_mapped: Option<bool>,
    /// The frame is one no write produces: KSM, part of a THP, or a page-cache page (with
    /// PFNs only; the caller checks kpageflags only for frames that just left the shared one).
    pub nonwrite: bool,
}

impl Seen {
    /// From a raw pagemap entry (zero, PMD and non-write facts are the caller's to add).
    pub fn from_entry(e: u64) -> Seen {
        let pe = crate::mem::pagemap::PagemapEntry(e);
        Seen {
            present: pe.present(),
            swapped: pe.swap_entry().is_some(),
            swap: pe.swap_entry().unwrap_or(0),
            pfn: pe.pfn(),
            exclusive: pe.exclusive(),
            file: pe.file_or_shared(),
            ..Seen::default()
        }
    }

    /// In RAM or in swap: the side still has the page.
    fn here(self) -> bool {
        self.present || self.swapped
    }

    fn is_zero(self) -> bool {
        self.zero == Some(true)
    }

    /// The raw entry again, for `inspect`'s rules.
    fn raw(self) -> u64 {
        let mut e = 0;
        if self.present {
            e |= PRESENT | (self.pfn & PFN_MASK);
        } else if self.swapped {
            e |= SWAPPED | (self.swap & PFN_MASK);
        }
        if self.exclusive {
            e |= EXCLUSIVE;
        }
        if self.file {
            e |= FILE_OR_SHARED;
        }
        e
    }

    fn facts(self) -> HiddenFacts {
        HiddenFacts {
            zero: self.zero,
            pmd_mapped: self.pmd_mapped,
        }
    }
}

/// Facts that hold for one page of a sample beyond the two entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Evidence {
    /// PFNs are real (CAP_SYS_ADMIN).
    pub pfn_visible: bool,
    /// With PFNs: the fork-time (last shared) frame is the zero page or the huge zero page.
    /// A new frame there is the side's own memory, got by a write (a read never replaces the
    /// zero page), even when it is a THP: since Linux 6.13 a write into the huge zero page
    /// gives the writer a whole new THP.
    pub base_zero: bool,
    /// Without PFNs: both sides still map the fork-time VMA here (same file and offset, or the
    /// same anonymous mapping name), checked against `/proc/<pid>/maps` at this sample.
    pub same_mapping: bool,
    /// Without PFNs: the mapping is a private *file* mapping, where a page-cache page on both
    /// sides at one file offset is one page.
    pub file_backed: bool,
    /// Without PFNs: "neither side has bit 56" proves "mapped by both": bit 56 has its exact
    /// meaning here (mapped exactly once: before 6.15, or CONFIG_PAGE_MAPCOUNT), no third
    /// process lives in the address space's family, and KSM does not run (it merges pages
    /// across unrelated processes).
    pub family_rule: bool,
    /// Release records of (parent, child) were lost in a window that ended after the
    /// previous sample began ([`lost_window_matters`]): a copy of that side seen now may
    /// follow a release nobody saw, so it is `diverged` (who is unknown), never that side's
    /// copy, and stays so.
    pub releases_lost: (bool, bool),
}

/// Per-page state kept between samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageState {
    /// The frame both sides share (the fork-time frame until it migrates); 0 = none/unknown.
    pub frame: u64,
    /// The last attribution.
    pub hist: Hist,
}

/// The baseline state of a page from both sides' pagemap at the fork stop (the parent's read
/// while it was held, the child's before its first instruction).
///
/// Both present with different frames: the child had its own copy before its first
/// instruction. Two causes, found on Linux 6.18: the kernel writes the child's TID into its
/// memory before it first returns to user space (`schedule_tail`, for glibc's
/// `CLONE_CHILD_SETTID`: one page per fork, the forking thread's TCB), and a page that may be
/// DMA-pinned (io_uring, O_DIRECT) is copied during fork itself (`copy_present_page`). With
/// several parent threads, a write by another parent thread between the fork and the reading
/// of the parent's side lands here too; the fork record says how many threads there were.
///
/// A page in swap at the fork is part of the baseline (fork duplicates the swap entry: both
/// sides hold the one page), with an unknown frame.
pub fn baseline(parent: Seen, child: Seen, pfn_visible: bool) -> PageState {
    match (parent.here(), child.here()) {
        (false, false) => PageState::default(),
        // The child maps it and the parent no longer does (another parent thread released it
        // before the baseline was read): the child's frame is the fork-time one.
        (false, true) => PageState {
            frame: child.pfn,
            hist: Hist::Shared,
        },
        // The kernel did not copy page tables here (no anon pages in the VMA: file pages the
        // child will fault from the page cache), or the VMA is WIPEONFORK.
        (true, false) => {
            if parent.file && parent.present {
                PageState {
                    frame: parent.pfn,
                    hist: Hist::Shared,
                }
            } else {
                PageState::default()
            }
        }
        (true, true) => {
            let own_copy = if !(parent.present && child.present) {
                false
            } else if pfn_visible {
                parent.pfn != child.pfn
            } else {
                // Right after fork every copied anon page is mapped twice; exclusive on both
                // sides means the child got its own copy ("certainly exclusive" suffices).
                parent.exclusive && child.exclusive && !parent.file && !child.file
            };
            PageState {
                frame: parent.pfn,
                hist: if own_copy {
                    Hist::CopiedAtFork
                } else {
                    Hist::Shared
                },
            }
        }
    }
}

/// Classify one page and update its state. `None` for a page no side mapped at the fork
/// (`Hist::Unborn`): it shared nothing, so it is outside the comparison.
pub fn classify(
    st: &mut PageState,
    p: Seen,
    c: Seen,
    released_by_parent: bool,
    released_by_child: bool,
    ev: Evidence,
) -> Option<Class> {
    if st.hist == Hist::Unborn {
        return None;
    }
    let class = if ev.pfn_visible {
        classify_with_pfns(st, p, c, released_by_parent, released_by_child, ev)
    } else {
        classify_without_pfns(st, p, c, released_by_parent, released_by_child, ev)
    };
    Some(match class {
        Class::CopiedByParent if ev.releases_lost.0 => {
            st.hist = Hist::Diverged;
            Class::Diverged
        }
        Class::CopiedByChild if ev.releases_lost.1 => {
            st.hist = Hist::Diverged;
            Class::Diverged
        }
        k => k,
    })
}

/// Whether a window of lost release records of one side (ending at `lost_until`, the drain
/// that found the LOST record) can hide a release behind a page that side's sample now calls
/// copied: only when the window ended after the previous sample began (`prev_sample_ns`).
/// A page seen shared at a sample that began after the window was not released in it (a
/// release unmaps the page); a page copied before is `diverged` from the first sample after
/// the window on (its history byte remembers it), so the rule applied at every sample
/// catches every page whose last sighting as shared came before a window's end.
pub fn lost_window_matters(lost_until: Option<u64>, prev_sample_ns: u64) -> bool {
    lost_until.is_some_and(|b| b > prev_sample_ns)
}

fn by_release(rp: bool, rc: bool, h: Hist) -> Option<Class> {
    match (rp, rc) {
        (_, true) if h == Hist::CopiedByChild => Some(Class::CopiedThenReleasedByChild),
        (true, _) if h == Hist::CopiedByParent => Some(Class::CopiedThenReleasedByParent),
        (true, true) => Some(Class::ReleasedByBoth),
        (true, false) => Some(Class::ReleasedByParent),
        (false, true) => Some(Class::ReleasedByChild),
        (false, false) => None,
    }
}

/// A side maps nothing there (in RAM or swap): `absent`, `only_parent`, `only_child`.
fn by_presence(p: Seen, c: Seen) -> Option<Class> {
    match (p.here(), c.here()) {
        (false, false) => Some(Class::Absent),
        (true, false) => Some(Class::OnlyParent),
        (false, true) => Some(Class::OnlyChild),
        (true, true) => None,
    }
}

fn hist_class(h: Hist) -> Class {
    match h {
        Hist::CopiedByChild => Class::CopiedByChild,
        Hist::CopiedByParent => Class::CopiedByParent,
        Hist::CopiedAtFork => Class::CopiedAtFork,
        Hist::Moved => Class::Moved,
        Hist::Unborn | Hist::Shared | Hist::Diverged => Class::Diverged,
    }
}

fn class_hist(c: Class) -> Hist {
    match c {
        Class::CopiedByChild => Hist::CopiedByChild,
        Class::CopiedByParent => Hist::CopiedByParent,
        Class::CopiedAtFork => Hist::CopiedAtFork,
        Class::Moved => Hist::Moved,
        _ => Hist::Diverged,
    }
}

/// Both sides still have the page and at least one has it in swap (with PFNs). The same swap
/// slot is one page; different slots are different pages; a page in RAM against one in swap
/// may be the one swap-cache page (unproven) unless the two were already apart.
fn with_swap(st: &mut PageState, p: Seen, c: Seen) -> Class {
    if p.swapped && c.swapped {
        if p.swap == c.swap {
            return Class::Shared;
        }
        return if st.hist == Hist::Shared {
            st.hist = Hist::Diverged;
            Class::Diverged
        } else {
            hist_class(st.hist)
        };
    }
    if st.hist == Hist::Shared {
        Class::Unproven
    } else {
        hist_class(st.hist)
    }
}

fn classify_with_pfns(
    st: &mut PageState,
    p: Seen,
    c: Seen,
    rp: bool,
    rc: bool,
    ev: Evidence,
) -> Class {
    if p.present && c.present {
        if p.pfn == c.pfn {
            st.frame = p.pfn;
            st.hist = Hist::Shared;
            return if p.is_zero() {
                Class::Zero
            } else {
                Class::Shared
            };
        }
        if p.is_zero() && c.is_zero() {
            // Different zero frames: one side split the huge zero page into small zero pages.
            // Memory nobody paid for, and no write: still as shared as before.
            return Class::Zero;
        }
    }
    if let Some(r) = by_release(rp, rc, st.hist) {
        return r;
    }
    if let Some(k) = by_presence(p, c) {
        return k;
    }
    if !(p.present && c.present) {
        return with_swap(st, p, c);
    }
    // A new frame where the zero page was is that side's write (even a whole THP).
    let (p_nonwrite, c_nonwrite) = if ev.base_zero {
        (false, false)
    } else {
        (p.nonwrite, c.nonwrite)
    };
    let p_kept = p.pfn == st.frame;
    let c_kept = c.pfn == st.frame;
    let class = if p_kept {
        if st.hist == Hist::CopiedAtFork {
            Class::CopiedAtFork
        } else if st.hist != Hist::Shared {
            hist_class(st.hist)
        } else if c_nonwrite {
            Class::Moved
        } else {
            Class::CopiedByChild
        }
    } else if c_kept {
        if st.hist != Hist::Shared {
            hist_class(st.hist)
        } else if p_nonwrite {
            Class::Moved
        } else {
            Class::CopiedByParent
        }
    } else {
        match st.hist {
            // Both left the shared frame since the last look: if exactly one of the new frames
            // is one no write makes, the other side's is the copy.
            Hist::Shared => match (p_nonwrite, c_nonwrite) {
                (true, true) => Class::Moved,
                (true, false) => Class::CopiedByChild,
                (false, true) => Class::CopiedByParent,
                (false, false) => Class::Diverged,
            },
            h => hist_class(h),
        }
    };
    st.hist = class_hist(class);
    class
}

/// Without PFNs: `inspect`'s rule for a pair ([`classify_hidden`]: the exclusive bit of a side
/// not PMD-mapped proves "not the other's page", PAGEMAP_SCAN's zero page, one object mapped
/// at one offset), then what only a fork-time baseline adds: releases from the syscalls, the
/// page the child owned at fork, and the family rule (see [`Evidence::family_rule`]).
fn classify_without_pfns(
    st: &mut PageState,
    p: Seen,
    c: Seen,
    rp: bool,
    rc: bool,
    ev: Evidence,
) -> Class {
    // A page-cache page of the one file offset both still map is one page (reclaim,
    // truncation and migration unmap or move every mapping of it together). inspect makes
    // this claim for MAP_SHARED mappings only; trace follows private file mappings, whose
    // not-yet-copied pages are page-cache pages too.
    let same_object = ev.same_mapping && ev.file_backed;
    let k = classify_hidden(p.raw(), c.raw(), p.facts(), c.facts(), same_object);
    match k {
        PairClass::Shared => return Class::Shared,
        PairClass::Zero => return Class::Zero,
        _ => {}
    }
    if let Some(r) = by_release(rp, rc, st.hist) {
        return r;
    }
    match k {
        PairClass::OnlyParent => Class::OnlyParent,
        PairClass::OnlyChild => Class::OnlyChild,
        PairClass::Neither => Class::Absent,
        PairClass::Diverged => {
            if st.hist == Hist::CopiedAtFork {
                Class::CopiedAtFork
            } else {
                Class::Diverged
            }
        }
        PairClass::Shared | PairClass::Zero | PairClass::Unproven => {
            let family_shared = ev.family_rule
                && ev.same_mapping
                && p.present
                && c.present
                && !p.exclusive
                && !c.exclusive
                && !p.file
                && !c.file
                && p.pmd_mapped == Some(false)
                && c.pmd_mapped == Some(false)
                && p.zero == Some(false)
                && c.zero == Some(false);
            if family_shared {
                Class::Shared
            } else {
                Class::Unproven
            }
        }
    }
}

/// Page counts per class (a partition: the fields after `total` sum to `total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Counts {
    /// Pages compared (the baseline's pages).
    pub total: u64,
    /// Same frame on both sides.
    pub shared: u64,
    /// Both on the zero page or the huge zero page.
    pub zero: u64,
    /// Copied by the child's writes.
    pub copied_by_child: u64,
    /// Copied by the parent's writes.
    pub copied_by_parent: u64,
    /// Copied by the kernel during fork (pinned pages).
    pub copied_at_fork: u64,
    /// Copied by the child (an earlier sample saw it), then released by it.
    pub copied_then_released_by_child: u64,
    /// Copied by the parent (an earlier sample saw it), then released by it.
    pub copied_then_released_by_parent: u64,
    /// Released by the child since the fork, without a copy seen first.
    pub released_by_child: u64,
    /// Released by the parent since the fork.
    pub released_by_parent: u64,
    /// Released by both.
    pub released_by_both: u64,
    /// A frame changed without a write (KSM, THP collapse, page cache read in again).
    pub moved: u64,
    /// Frames differ, who copied unknown.
    pub diverged: u64,
    /// Only the parent has the page (in RAM or swap).
    pub only_parent: u64,
    /// Only the child has the page (in RAM or swap).
    pub only_child: u64,
    /// Neither has it.
    pub absent: u64,
    /// Not provable: PFNs hidden, or one side's page in swap and the other's in RAM.
    pub unproven: u64,
}

impl Counts {
    /// Count one page.
    #[inline]
    pub fn add(&mut self, c: Class) {
        self.total += 1;
        *self.slot(c) += 1;
    }

    fn slot(&mut self, c: Class) -> &mut u64 {
        match c {
            Class::Shared => &mut self.shared,
            Class::Zero => &mut self.zero,
            Class::CopiedByChild => &mut self.copied_by_child,
            Class::CopiedByParent => &mut self.copied_by_parent,
            Class::CopiedAtFork => &mut self.copied_at_fork,
            Class::CopiedThenReleasedByChild => &mut self.copied_then_released_by_child,
            Class::CopiedThenReleasedByParent => &mut self.copied_then_released_by_parent,
            Class::ReleasedByChild => &mut self.released_by_child,
            Class::ReleasedByParent => &mut self.released_by_parent,
            Class::ReleasedByBoth => &mut self.released_by_both,
            Class::Moved => &mut self.moved,
            Class::Diverged => &mut self.diverged,
            Class::OnlyParent => &mut self.only_parent,
            Class::OnlyChild => &mut self.only_child,
            Class::Absent => &mut self.absent,
            Class::Unproven => &mut self.unproven,
        }
    }

    /// Add another count set.
    pub fn merge(&mut self, o: &Counts) {
        self.total += o.total;
        self.shared += o.shared;
        self.zero += o.zero;
        self.copied_by_child += o.copied_by_child;
        self.copied_by_parent += o.copied_by_parent;
        self.copied_at_fork += o.copied_at_fork;
        self.copied_then_released_by_child += o.copied_then_released_by_child;
        self.copied_then_released_by_parent += o.copied_then_released_by_parent;
        self.released_by_child += o.released_by_child;
        self.released_by_parent += o.released_by_parent;
        self.released_by_both += o.released_by_both;
        self.moved += o.moved;
        self.diverged += o.diverged;
        self.only_parent += o.only_parent;
        self.only_child += o.only_child;
        self.absent += o.absent;
        self.unproven += o.unproven;
    }

    /// The sum of the class fields (equals `total` by construction).
    pub fn sum_of_classes(&self) -> u64 {
        self.shared
            + self.zero
            + self.copied_by_child
            + self.copied_by_parent
            + self.copied_at_fork
            + self.copied_then_released_by_child
            + self.copied_then_released_by_parent
            + self.released_by_child
            + self.released_by_parent
            + self.released_by_both
            + self.moved
            + self.diverged
            + self.only_parent
            + self.only_child
            + self.absent
            + self.unproven
    }

    /// Pages that exist twice because of a copy (child's, parent's or the kernel's at fork).
    pub fn copied(&self) -> u64 {
        self.copied_by_child + self.copied_by_parent + self.copied_at_fork
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const F: u64 = 100; // the fork-time frame
    fn on(pfn: u64) -> Seen {
        Seen {
            present: true,
            pfn,
            ..Seen::default()
        }
    }
    fn gone() -> Seen {
        Seen::default()
    }
    fn nonwrite(pfn: u64) -> Seen {
        Seen {
            nonwrite: true,
            ..on(pfn)
        }
    }
    fn zero(pfn: u64) -> Seen {
        Seen {
            zero: Some(true),
            ..on(pfn)
        }
    }
    fn swapped(slot: u64) -> Seen {
        Seen {
            swapped: true,
            swap: slot,
            ..Seen::default()
        }
    }
    const ROOT: Evidence = Evidence {
        pfn_visible: true,
        base_zero: false,
        same_mapping: true,
        file_backed: false,
        family_rule: false,
        releases_lost: (false, false),
    };
    fn shared_state() -> PageState {
        PageState {
            frame: F,
            hist: Hist::Shared,
        }
    }

    #[rstest]
    #[case::untouched_page_is_shared(on(F), on(F), false, false, Class::Shared)]
    #[case::child_write_gives_the_child_a_new_frame(
        on(F),
        on(7),
        false,
        false,
        Class::CopiedByChild
    )]
    #[case::parent_write_gives_the_parent_a_new_frame(
        on(7),
        on(F),
        false,
        false,
        Class::CopiedByParent
    )]
    #[case::child_release_and_refault_is_no_copy(on(F), on(7), false, true, Class::ReleasedByChild)]
    #[case::parent_munmap_is_a_release(gone(), on(F), true, false, Class::ReleasedByParent)]
    #[case::both_released(gone(), gone(), true, true, Class::ReleasedByBoth)]
    #[case::a_release_that_left_the_frame_is_still_shared(on(F), on(F), false, true, Class::Shared)]
    #[case::frames_that_migrated_together_stay_shared(on(9), on(9), false, false, Class::Shared)]
    #[case::child_lost_the_page_without_a_tracked_release(
        on(F),
        gone(),
        false,
        false,
        Class::OnlyParent
    )]
    #[case::parent_lost_it(gone(), on(F), false, false, Class::OnlyChild)]
    #[case::neither_maps_it(gone(), gone(), false, false, Class::Absent)]
    #[case::ksm_or_collapse_in_the_child_is_no_copy(on(F), nonwrite(7), false, false, Class::Moved)]
    #[case::both_left_the_frame_unattributed(on(8), on(7), false, false, Class::Diverged)]
    #[case::both_left_but_one_only_by_a_collapse(
        nonwrite(8),
        on(7),
        false,
        false,
        Class::CopiedByChild
    )]
    #[case::a_page_the_child_swapped_out_is_still_the_childs(
        on(F),
        swapped(0x55),
        false,
        false,
        Class::Unproven
    )]
    #[case::a_page_the_parent_swapped_out_is_not_only_the_childs(
        swapped(0x55),
        on(F),
        false,
        false,
        Class::Unproven
    )]
    #[case::the_same_swap_slot_on_both_sides_is_one_page(
        swapped(0x55),
        swapped(0x55),
        false,
        false,
        Class::Shared
    )]
    #[case::different_swap_slots_are_different_pages(
        swapped(0x55),
        swapped(0x56),
        false,
        false,
        Class::Diverged
    )]
    #[case::a_page_only_the_parent_has_in_swap_is_only_parent(
        swapped(0x55),
        gone(),
        false,
        false,
        Class::OnlyParent
    )]
    #[case::a_swapped_page_the_child_released_is_a_release(
        swapped(0x55),
        gone(),
        false,
        true,
        Class::ReleasedByChild
    )]
    fn with_pfns_from_a_shared_page(
        #[case] p: Seen,
        #[case] c: Seen,
        #[case] rp: bool,
        #[case] rc: bool,
        #[case] want: Class,
    ) {
        let mut st = shared_state();
        assert_eq!(classify(&mut st, p, c, rp, rc, ROOT), Some(want));
    }

    #[test]
    fn a_page_the_child_copied_stays_its_copy_while_one_side_is_in_swap() {
        let mut st = shared_state();
        assert_eq!(
            classify(&mut st, on(F), on(7), false, false, ROOT),
            Some(Class::CopiedByChild)
        );
        assert_eq!(
            classify(&mut st, swapped(0x55), on(7), false, false, ROOT),
            Some(Class::CopiedByChild)
        );
    }

    #[test]
    fn history_attributes_a_copy_after_the_other_side_migrated() {
        let mut st = shared_state();
        assert_eq!(
            classify(&mut st, on(F), on(7), false, false, ROOT),
            Some(Class::CopiedByChild)
        );
        // The parent's now-exclusive frame migrates (compaction): still the child's copy.
        assert_eq!(
            classify(&mut st, on(55), on(7), false, false, ROOT),
            Some(Class::CopiedByChild)
        );
    }

    #[test]
    fn the_zero_page_on_both_sides_is_zero() {
        let mut st = shared_state();
        assert_eq!(
            classify(&mut st, zero(1), zero(1), false, false, ROOT),
            Some(Class::Zero)
        );
    }

    /// Linux 6.1/6.12: a write into the huge zero page splits the PMD into small zero pages
    /// (different frames, both zero) and copies only the written page.
    #[test]
    fn a_split_huge_zero_page_is_zero_not_a_copy() {
        let huge = 0x2000 + 5; // the parent's huge-zero-page frame for this page
        let mut st = PageState {
            frame: huge,
            hist: Hist::Shared,
        };
        let ev = Evidence {
            base_zero: true,
            ..ROOT
        };
        assert_eq!(
            classify(&mut st, zero(huge), zero(1), false, false, ev),
            Some(Class::Zero)
        );
    }

    /// Linux 6.13+: a write into the huge zero page gives the writer a whole new THP; its 512
    /// frames are THP pages (kpageflags), which elsewhere mark a collapse (`moved`). Here they
    /// replaced the zero page, so they are the writer's new memory.
    #[rstest]
    #[case::by_the_child(zero(0x2005), nonwrite(7), Class::CopiedByChild)]
    #[case::by_the_parent(nonwrite(7), zero(0x2005), Class::CopiedByParent)]
    fn a_thp_that_replaced_the_huge_zero_page_is_the_writers_copy(
        #[case] p: Seen,
        #[case] c: Seen,
        #[case] want: Class,
    ) {
        let mut st = PageState {
            frame: 0x2005,
            hist: Hist::Shared,
        };
        let ev = Evidence {
            base_zero: true,
            ..ROOT
        };
        assert_eq!(classify(&mut st, p, c, false, false, ev), Some(want));
    }

    #[rstest]
    #[case::nowhere_now(gone(), gone())]
    #[case::faulted_by_the_parent_only(on(5), gone())]
    #[case::faulted_by_both_separately(on(5), on(6))]
    #[case::same_page_cache_page(on(5), on(5))]
    fn pages_no_side_mapped_at_the_fork_are_outside_the_comparison(
        #[case] p: Seen,
        #[case] c: Seen,
    ) {
        let mut st = PageState::default();
        assert_eq!(classify(&mut st, p, c, true, true, ROOT), None);
    }

    #[test]
    fn a_page_the_child_owned_before_its_first_instruction_is_not_blamed_on_the_parent() {
        let mut st = baseline(on(F), on(7), true);
        assert_eq!(st.hist, Hist::CopiedAtFork);
        assert_eq!(
            classify(&mut st, on(F), on(7), false, false, ROOT),
            Some(Class::CopiedAtFork)
        );
    }

    #[test]
    fn a_page_in_swap_at_the_fork_is_part_of_the_baseline() {
        let st = baseline(swapped(0x55), swapped(0x55), true);
        assert_eq!(st.hist, Hist::Shared);
    }

    /// Without PFNs: a small page (not PMD-mapped, not the zero page, as PAGEMAP_SCAN says).
    fn small(exclusive: bool, file: bool) -> Seen {
        Seen {
            present: true,
            exclusive,
            file,
            zero: Some(false),
            pmd_mapped: Some(false),
            ..Seen::default()
        }
    }
    const HIDDEN: Evidence = Evidence {
        pfn_visible: false,
        base_zero: false,
        same_mapping: true,
        file_backed: false,
        family_rule: true,
        releases_lost: (false, false),
    };

    #[rstest]
    #[case::exclusive_bit_proves_a_difference(
        small(true, false),
        small(true, false),
        HIDDEN,
        Class::Diverged
    )]
    #[case::mapped_twice_in_a_family_of_two_is_shared(
        small(false, false),
        small(false, false),
        HIDDEN,
        Class::Shared
    )]
    #[case::mapped_twice_with_a_third_process_is_unproven(
        small(false, false),
        small(false, false),
        Evidence { family_rule: false, ..HIDDEN },
        Class::Unproven
    )]
    #[case::one_exclusive_side_suffices(
        small(false, false),
        small(true, false),
        HIDDEN,
        Class::Diverged
    )]
    #[case::the_same_page_cache_page_of_the_same_file_offset(
        small(false, true),
        small(false, true),
        Evidence { file_backed: true, family_rule: false, ..HIDDEN },
        Class::Shared
    )]
    #[case::page_cache_pages_of_another_file_mapped_there_since_are_not_shared(
        small(false, true),
        small(false, true),
        Evidence { file_backed: true, same_mapping: false, ..HIDDEN },
        Class::Unproven
    )]
    #[case::another_mapping_there_since_voids_the_family_rule(
        small(false, false),
        small(false, false),
        Evidence { same_mapping: false, ..HIDDEN },
        Class::Unproven
    )]
    #[case::the_family_rule_never_covers_page_cache_pages(
        small(false, true),
        small(false, true),
        Evidence { file_backed: false, ..HIDDEN },
        Class::Unproven
    )]
    #[case::both_on_the_zero_page(
        Seen { zero: Some(true), ..small(false, false) },
        Seen { zero: Some(true), ..small(false, false) },
        HIDDEN,
        Class::Zero
    )]
    #[case::a_page_in_swap_is_not_only_the_others(
        small(false, false),
        swapped(0),
        HIDDEN,
        Class::Unproven
    )]
    #[case::pages_in_swap_on_both_sides_are_unproven_without_swap_offsets(
        swapped(0),
        swapped(0),
        HIDDEN,
        Class::Unproven
    )]
    fn without_pfns(#[case] p: Seen, #[case] c: Seen, #[case] ev: Evidence, #[case] want: Class) {
        let mut st = PageState {
            frame: 0,
            hist: Hist::Shared,
        };
        assert_eq!(classify(&mut st, p, c, false, false, ev), Some(want));
    }

    #[rstest]
    #[case::the_exclusive_bit_of_a_pmd_mapped_thp(
        Seen { pmd_mapped: Some(true), ..small(true, false) },
        small(false, false)
    )]
    #[case::mapped_twice_but_pmd_mapped(
        Seen { pmd_mapped: Some(true), ..small(false, false) },
        Seen { pmd_mapped: Some(true), ..small(false, false) }
    )]
    #[case::mapped_twice_without_pagemap_scan(
        Seen { pmd_mapped: None, zero: None, ..small(false, false) },
        Seen { pmd_mapped: None, zero: None, ..small(false, false) }
    )]
    fn without_pfns_what_bit_56_cannot_prove_is_unproven(#[case] p: Seen, #[case] c: Seen) {
        let mut st = PageState {
            frame: 0,
            hist: Hist::Shared,
        };
        assert_eq!(
            classify(&mut st, p, c, false, false, HIDDEN),
            Some(Class::Unproven)
        );
    }

    /// History: a copy a sample saw and its side released later was a copy (the worker held
    /// that memory), not a plain release; a release without a copy seen first stays one.
    #[rstest]
    #[case::the_child_copied_then_released(on(F), on(7), gone(), (false, true), Class::CopiedThenReleasedByChild)]
    #[case::the_child_copied_released_and_refaulted(on(F), on(7), on(8), (false, true), Class::CopiedThenReleasedByChild)]
    #[case::the_parent_copied_then_released(on(7), on(F), gone(), (true, false), Class::CopiedThenReleasedByParent)]
    #[case::the_parent_copied_then_both_released(on(7), on(F), gone(), (true, true), Class::CopiedThenReleasedByParent)]
    #[case::the_other_side_released_its_original(on(F), on(7), gone(), (true, false), Class::ReleasedByParent)]
    #[case::the_child_released_a_page_it_never_copied(on(F), on(F), gone(), (false, true), Class::ReleasedByChild)]
    fn a_copy_released_later_keeps_its_history(
        #[case] p: Seen,
        #[case] first: Seen,
        #[case] later: Seen,
        #[case] released: (bool, bool),
        #[case] want: Class,
    ) {
        let mut st = shared_state();
        // The first sample: no release yet.
        classify(&mut st, p, first, false, false, ROOT);
        let (rp, rc) = released;
        let p_later = if rp { gone() } else { p };
        assert_eq!(classify(&mut st, p_later, later, rp, rc, ROOT), Some(want));
    }

    /// A release whose record was lost cannot be placed: the side's new frame is diverged.
    #[rstest]
    #[case::the_childs_records_were_lost(on(F), on(7), (false, true), Class::Diverged)]
    #[case::the_parents_records_were_lost(on(7), on(F), (true, false), Class::Diverged)]
    #[case::the_other_sides_loss_changes_nothing(on(F), on(7), (true, false), Class::CopiedByChild)]
    #[case::a_shared_page_stays_shared(on(F), on(F), (true, true), Class::Shared)]
    fn a_lost_release_record_never_makes_a_copy(
        #[case] p: Seen,
        #[case] c: Seen,
        #[case] lost: (bool, bool),
        #[case] want: Class,
    ) {
        let mut st = shared_state();
        let ev = Evidence {
            releases_lost: lost,
            ..ROOT
        };
        assert_eq!(classify(&mut st, p, c, false, false, ev), Some(want));
    }

    /// Only pages whose class depends on the lost window become diverged. A synthetic run of
    /// one pair: samples at 10, 20, 30, 40 (ns), a window of the child's lost release records
    /// found at 25. Page A: the child's copy seen at 20 (before the window): a lost release
    /// may hide behind it from the sample at 30 on. Page B: shared at 30 (a sample that
    /// began after the window), copied by the child by 40: not released in the window, its
    /// copy stands. Page C: the parent's copy: the child's loss does not touch it.
    #[test]
    fn a_lost_window_makes_diverged_only_the_pages_it_may_hide_a_release_of() {
        let mut a = shared_state();
        let mut b = shared_state();
        let mut c = shared_state();
        let lost_until = Some(25);
        let samples = [10u64, 20, 30, 40];
        let mut prev = 0u64;
        let mut seen: Vec<[Class; 3]> = Vec::new();
        for &at in &samples {
            let known = lost_until.filter(|&u| u <= at);
            let ev = Evidence {
                releases_lost: (false, lost_window_matters(known, prev)),
                ..ROOT
            };
            let child_a = if at >= 20 { on(7) } else { on(F) };
            let child_b = if at >= 40 { on(8) } else { on(F) };
            let parent_c = if at >= 20 { on(9) } else { on(F) };
            seen.push([
                classify(&mut a, on(F), child_a, false, false, ev).unwrap(),
                classify(&mut b, on(F), child_b, false, false, ev).unwrap(),
                classify(&mut c, parent_c, on(F), false, false, ev).unwrap(),
            ]);
            prev = at;
        }
        use Class::*;
        assert_eq!(
            seen,
            [
                [Shared, Shared, Shared],
                [CopiedByChild, Shared, CopiedByParent],
                [Diverged, Shared, CopiedByParent],
                [Diverged, CopiedByChild, CopiedByParent],
            ]
        );
        assert!(!lost_window_matters(None, 0), "nothing lost");
        assert!(
            !lost_window_matters(Some(25), 30),
            "found before the last sample began"
        );
    }

    #[test]
    fn counts_partition_the_pages() {
        let mut c = Counts::default();
        for k in [Class::Shared, Class::Zero, Class::Moved, Class::Unproven] {
            c.add(k);
        }
        assert_eq!(c.total, 4);
        assert_eq!(c.sum_of_classes(), c.total);
    }
}
