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
//! 3. A side released the range since the fork (munmap, madvise DONTNEED/FREE/REMOVE, mremap,
//!    brk shrink, MAP_FIXED over it): `released_by_parent`, `released_by_child` or
//!    `released_by_both`. A release never overrides rule 1: a page still on the shared frame is
//!    shared, whatever syscall touched it (MADV_FREE skips pages mapped by two processes).
//! 4. A side maps nothing there (and did not release it): `absent`, `only_parent`,
//!    `only_child`.
//! 5. Both map different frames. With PFNs: the side whose frame left the shared frame got the
//!    new page; a new frame that no write makes (a KSM page, a THP built by khugepaged or
//!    MADV_COLLAPSE, a page-cache page read again) is `moved`; a write's copy is
//!    `copied_by_child` / `copied_by_parent` (`copied_at_fork` for what the child owned before
//!    its first instruction: pinned pages, its TID page). When both frames changed since the last sample, the history
//!    decides; with none, `diverged` (a copy by one side and a migration of the other cannot
//!    be told apart). Without PFNs: the exclusive bit proves the frames differ (`diverged`, who
//!    copied unproven); neither exclusive proves sharing only when no third process can map
//!    the frames (`shared`), else `unproven`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    /// The child released the range after the fork (and may have faulted a fresh page).
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
    /// Only the parent maps a frame there (the child dropped it without a tracked release).
    OnlyParent,
    /// Only the child maps a frame there.
    OnlyChild,
    /// Neither maps a frame there.
    Absent,
    /// PFNs are hidden and nothing else proves either way.
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
    /// The PFN (0 when hidden).
    pub pfn: u64,
    /// Pagemap bit 56: mapped exactly once.
    pub exclusive: bool,
    /// Pagemap bit 61: a page-cache page (private file mapping, not yet copied).
    pub file: bool,
    /// The frame is the zero page or part of the huge zero page (with PFNs only).
    pub zero: bool,
    /// The frame is one no write produces: KSM, part of a THP, or a page-cache page (with
    /// PFNs only; the caller checks kpageflags only for frames that just left the shared one).
    pub nonwrite: bool,
}

/// Facts that hold for a whole sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evidence {
    /// PFNs are real (CAP_SYS_ADMIN).
    pub pfn_visible: bool,
    /// Without PFNs: no process other than these two can map these frames (the pair is the
    /// whole live family of the address space, so "mapped twice" means "by both").
    pub pair_is_whole_family: bool,
    /// Without PFNs: the exclusive bit is unreliable here (PMD-mapped THP).
    pub exclusive_unreliable: bool,
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
pub fn baseline(parent: Seen, child: Seen, pfn_visible: bool) -> PageState {
    match (parent.present, child.present) {
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
            if parent.file {
                PageState {
                    frame: parent.pfn,
                    hist: Hist::Shared,
                }
            } else {
                PageState::default()
            }
        }
        (true, true) => {
            let own_copy = if pfn_visible {
                parent.pfn != child.pfn
            } else {
                // Right after fork every copied anon page is mapped twice; exclusive on both
                // sides means the child got its own copy.
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
    Some(if ev.pfn_visible {
        classify_with_pfns(st, p, c, released_by_parent, released_by_child)
    } else {
        classify_without_pfns(st, p, c, released_by_parent, released_by_child, ev)
    })
}

fn by_presence(p: Seen, c: Seen) -> Option<Class> {
    match (p.present, c.present) {
        (false, false) => Some(Class::Absent),
        (true, false) => Some(Class::OnlyParent),
        (false, true) => Some(Class::OnlyChild),
        (true, true) => None,
    }
}

fn by_release(rp: bool, rc: bool) -> Option<Class> {
    match (rp, rc) {
        (true, true) => Some(Class::ReleasedByBoth),
        (true, false) => Some(Class::ReleasedByParent),
        (false, true) => Some(Class::ReleasedByChild),
        (false, false) => None,
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

fn classify_with_pfns(st: &mut PageState, p: Seen, c: Seen, rp: bool, rc: bool) -> Class {
    if p.present && c.present && p.pfn == c.pfn {
        st.frame = p.pfn;
        st.hist = Hist::Shared;
        return if p.zero { Class::Zero } else { Class::Shared };
    }
    if let Some(r) = by_release(rp, rc) {
        return r;
    }
    if let Some(k) = by_presence(p, c) {
        return k;
    }
    let p_kept = p.pfn == st.frame;
    let c_kept = c.pfn == st.frame;
    let class = if p_kept {
        if st.hist == Hist::CopiedAtFork {
            Class::CopiedAtFork
        } else if st.hist != Hist::Shared {
            hist_class(st.hist)
        } else if c.nonwrite {
            Class::Moved
        } else {
            Class::CopiedByChild
        }
    } else if c_kept {
        if st.hist != Hist::Shared {
            hist_class(st.hist)
        } else if p.nonwrite {
            Class::Moved
        } else {
            Class::CopiedByParent
        }
    } else {
        match st.hist {
            // Both left the shared frame since the last look: if exactly one of the new frames
            // is one no write makes, the other side's is the copy.
            Hist::Shared => match (p.nonwrite, c.nonwrite) {
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

fn classify_without_pfns(
    st: &mut PageState,
    p: Seen,
    c: Seen,
    rp: bool,
    rc: bool,
    ev: Evidence,
) -> Class {
    if !rp && !rc && p.present && c.present && p.file && c.file {
        // The same file offset at the same address: the one page-cache page.
        return Class::Shared;
    }
    if let Some(r) = by_release(rp, rc) {
        return r;
    }
    if let Some(k) = by_presence(p, c) {
        return k;
    }
    if ev.exclusive_unreliable {
        return Class::Unproven;
    }
    if p.exclusive || c.exclusive {
        if st.hist == Hist::CopiedAtFork {
            return Class::CopiedAtFork;
        }
        return Class::Diverged;
    }
    if ev.pair_is_whole_family {
        Class::Shared
    } else {
        Class::Unproven
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
    /// Released by the child since the fork.
    pub released_by_child: u64,
    /// Released by the parent since the fork.
    pub released_by_parent: u64,
    /// Released by both.
    pub released_by_both: u64,
    /// A frame changed without a write (KSM, THP collapse, page cache read in again).
    pub moved: u64,
    /// Frames differ, who copied unknown.
    pub diverged: u64,
    /// Only the parent maps a frame.
    pub only_parent: u64,
    /// Only the child maps a frame.
    pub only_child: u64,
    /// Mapped by neither.
    pub absent: u64,
    /// Not provable without PFNs.
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
    const ROOT: Evidence = Evidence {
        pfn_visible: true,
        pair_is_whole_family: false,
        exclusive_unreliable: false,
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
        let z = Seen {
            zero: true,
            ..on(1)
        };
        assert_eq!(
            classify(&mut st, z, z, false, false, ROOT),
            Some(Class::Zero)
        );
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

    fn excl(file: bool) -> Seen {
        Seen {
            present: true,
            exclusive: true,
            file,
            ..Seen::default()
        }
    }
    fn twice() -> Seen {
        Seen {
            present: true,
            ..Seen::default()
        }
    }

    #[rstest]
    #[case::exclusive_bit_proves_a_difference(excl(false), excl(false), true, Class::Diverged)]
    #[case::mapped_twice_in_a_family_of_two_is_shared(twice(), twice(), true, Class::Shared)]
    #[case::mapped_twice_with_a_third_process_is_unproven(twice(), twice(), false, Class::Unproven)]
    #[case::one_exclusive_side_suffices(twice(), excl(false), false, Class::Diverged)]
    #[case::the_same_page_cache_page(excl(true), excl(true), false, Class::Shared)]
    fn without_pfns(
        #[case] p: Seen,
        #[case] c: Seen,
        #[case] family_of_two: bool,
        #[case] want: Class,
    ) {
        let ev = Evidence {
            pfn_visible: false,
            pair_is_whole_family: family_of_two,
            exclusive_unreliable: false,
        };
        let mut st = PageState {
            frame: 0,
            hist: Hist::Shared,
        };
        assert_eq!(classify(&mut st, p, c, false, false, ev), Some(want));
    }

    #[test]
    fn without_pfns_a_pmd_mapped_thp_proves_nothing() {
        let ev = Evidence {
            pfn_visible: false,
            pair_is_whole_family: true,
            exclusive_unreliable: true,
        };
        let mut st = PageState {
            frame: 0,
            hist: Hist::Shared,
        };
        assert_eq!(
            classify(&mut st, excl(false), twice(), false, false, ev),
            Some(Class::Unproven)
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
