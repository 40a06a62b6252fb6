//! The class of one page of a (parent, child) pair, from the two pagemap entries at the same
//! address. Pure functions: every rule is an rstest case below.
//!
//! With visible PFNs (CAP_SYS_ADMIN) frame equality decides: same frame `shared`, different
//! frames `diverged`, both a zero page `zero`. Without them the kernel reports PFN 0 for
//! everything, so equality is unknowable and only what is provable is used:
//! - the exclusive bit (56): a page mapped by exactly one page table cannot be the other
//!   process's page, so both present and either exclusive is `diverged`. Not trusted where
//!   that side maps the address with a PMD (a THP): on some kernels (6.1, 6.18) the bit of
//!   every subpage follows the head page's mapcount;
//! - the zero page, from PAGEMAP_SCAN's `PAGE_IS_PFNZERO` (no privilege needed): both zero
//!   is `zero`, exactly one zero is `diverged` (the zero page is never the other's real page);
//! - a `MAP_SHARED` mapping with the same identity maps the same page-cache page at the same
//!   address in both (fork copies the VMA, not the pages), so both present is `shared`.
//!
//! Everything else with both present is `unproven`, never guessed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::zero::ZeroPfns;
use crate::mem::pagemap::{EXCLUSIVE, FILE_OR_SHARED, PFN_MASK, PRESENT, SWAPPED};

/// The class of one page of a pair.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum PairClass {
    /// Both map the same frame (or, without PFNs, the same page of a shared mapping).
    Shared = 0,
    /// Both map a page here and the frames differ: one of them got a copy (or released and
    /// refaulted: without a fork-time baseline the two look alike).
    Diverged = 1,
    /// Only the parent maps a page here (in RAM or swap).
    OnlyParent = 2,
    /// Only the child maps a page here.
    OnlyChild = 3,
    /// Both map the shared zero page or the huge zero page: memory nobody paid for.
    Zero = 4,
    /// Both map a page, and without PFNs nothing proves whether it is the same one.
    Unproven = 5,
    /// Neither maps a page here.
    Neither = 6,
}

/// Number of classes (array sizes).
pub const N_CLASSES: usize = 7;

impl PairClass {
    /// Every class, in index order.
    pub const ALL: [PairClass; N_CLASSES] = [
        PairClass::Shared,
        PairClass::Diverged,
        PairClass::OnlyParent,
        PairClass::OnlyChild,
        PairClass::Zero,
        PairClass::Unproven,
        PairClass::Neither,
    ];

    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            PairClass::Shared => "shared",
            PairClass::Diverged => "diverged",
            PairClass::OnlyParent => "only_parent",
            PairClass::OnlyChild => "only_child",
            PairClass::Zero => "zero",
            PairClass::Unproven => "unproven",
            PairClass::Neither => "neither",
        }
    }
}

/// What PAGEMAP_SCAN (or smaps) says about one side's page when PFNs are hidden. `None` is
/// "unknown", which never supports a conclusion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HiddenFacts {
    /// The page is the zero page or part of the huge zero page (`PAGE_IS_PFNZERO`).
    pub zero: Option<bool>,
    /// The address is mapped by a PMD (THP or hugetlb, `PAGE_IS_HUGE`).
    pub pmd_mapped: Option<bool>,
}

/// Class when at most one side has the page present: only_parent, only_child, neither, or
/// for swap entries: the same swap slot is one page (`shared`, with visible swap offsets),
/// different slots are different pages; a page present on one side and swapped on the other
/// may still be one page (in the swap cache), so it is `unproven`.
#[inline(always)]
fn not_both_present(p: u64, c: u64, visible: bool) -> PairClass {
    let p_here = p & (PRESENT | SWAPPED) != 0;
    let c_here = c & (PRESENT | SWAPPED) != 0;
    match (p_here, c_here) {
        (false, false) => PairClass::Neither,
        (true, false) => PairClass::OnlyParent,
        (false, true) => PairClass::OnlyChild,
        (true, true) => {
            let both_swapped = p & c & SWAPPED != 0 && (p | c) & PRESENT == 0;
            if !both_swapped || !visible {
                PairClass::Unproven
            } else if p & PFN_MASK == c & PFN_MASK {
                PairClass::Shared
            } else {
                PairClass::Diverged
            }
        }
    }
}

/// The class of a page from raw pagemap entries of parent `p` and child `c` with real PFNs.
#[inline(always)]
pub fn classify_visible(p: u64, c: u64, zero: &ZeroPfns) -> PairClass {
    if p & c & PRESENT != 0 {
        let (a, b) = (p & PFN_MASK, c & PFN_MASK);
        if a == b {
            if zero.contains(a) {
                PairClass::Zero
            } else {
                PairClass::Shared
            }
        } else if zero.contains(a) && zero.contains(b) {
            // e.g. the parent still maps the huge zero page and the child split it into
            // small zero pages: different frames, both zero.
            PairClass::Zero
        } else {
            PairClass::Diverged
        }
    } else {
        not_both_present(p, c, true)
    }
}

/// The class of a page from raw entries without PFNs (see the module docs for the rules).
/// `shared_mapping`: the page lies in a `MAP_SHARED` mapping both processes have in common.
#[inline(always)]
pub fn classify_hidden(
    p: u64,
    c: u64,
    pf: HiddenFacts,
    cf: HiddenFacts,
    shared_mapping: bool,
) -> PairClass {
    if p & c & PRESENT == 0 {
        return not_both_present(p, c, false);
    }
    let exclusive = |e: u64, f: HiddenFacts| e & EXCLUSIVE != 0 && f.pmd_mapped == Some(false);
    if exclusive(p, pf) || exclusive(c, cf) {
        return PairClass::Diverged;
    }
    match (pf.zero, cf.zero) {
        (Some(true), Some(true)) => return PairClass::Zero,
        (Some(true), Some(false)) | (Some(false), Some(true)) => return PairClass::Diverged,
        _ => {}
    }
    if shared_mapping && p & c & FILE_OR_SHARED != 0 {
        return PairClass::Shared;
    }
    PairClass::Unproven
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const P: u64 = PRESENT;
    const X: u64 = EXCLUSIVE;
    const F: u64 = FILE_OR_SHARED;
    const S: u64 = SWAPPED;
    const ZERO: ZeroPfns = ZeroPfns {
        small: Some(7),
        huge: Some((0x200, 0x400)),
    };

    #[rstest]
    #[case::same_frame_is_shared(P | 100, P | 100, PairClass::Shared)]
    #[case::same_frame_with_exclusive_bits_is_still_shared_by_pfn(P | X | 100, P | 100, PairClass::Shared)]
    #[case::different_frames_diverged(P | 100, P | 101, PairClass::Diverged)]
    #[case::both_small_zero_page(P | 7, P | 7, PairClass::Zero)]
    #[case::both_in_the_huge_zero_page(P | 0x210, P | 0x210, PairClass::Zero)]
    #[case::huge_zero_in_parent_small_zero_in_child_is_zero(P | 0x210, P | 7, PairClass::Zero)]
    #[case::zero_page_against_a_written_page_diverged(P | 7, P | 100, PairClass::Diverged)]
    #[case::only_parent_present(P | 100, 0, PairClass::OnlyParent)]
    #[case::only_child_present(0, P | 100, PairClass::OnlyChild)]
    #[case::only_parent_in_swap(S | 0x55, 0, PairClass::OnlyParent)]
    #[case::neither(0, 0, PairClass::Neither)]
    #[case::same_swap_slot_is_one_page(S | 0x55, S | 0x55, PairClass::Shared)]
    #[case::different_swap_slots_are_different_pages(S | 0x55, S | 0x56, PairClass::Diverged)]
    #[case::present_against_swapped_may_be_the_swap_cache_page(P | 100, S | 0x55, PairClass::Unproven)]
    fn with_pfns_frame_equality_decides(#[case] p: u64, #[case] c: u64, #[case] want: PairClass) {
        assert_eq!(classify_visible(p, c, &ZERO), want);
    }

    const KNOWN_SMALL: HiddenFacts = HiddenFacts {
        zero: Some(false),
        pmd_mapped: Some(false),
    };
    const KNOWN_ZERO: HiddenFacts = HiddenFacts {
        zero: Some(true),
        pmd_mapped: Some(false),
    };
    const PMD: HiddenFacts = HiddenFacts {
        zero: Some(false),
        pmd_mapped: Some(true),
    };
    const UNKNOWN: HiddenFacts = HiddenFacts {
        zero: None,
        pmd_mapped: None,
    };

    #[rstest]
    #[case::exclusive_in_the_child_means_not_shared(P, KNOWN_SMALL, P | X, KNOWN_SMALL, false, PairClass::Diverged)]
    #[case::exclusive_in_the_parent_means_not_shared(P | X, KNOWN_SMALL, P, KNOWN_SMALL, false, PairClass::Diverged)]
    #[case::no_exclusive_bit_proves_nothing(
        P,
        KNOWN_SMALL,
        P,
        KNOWN_SMALL,
        false,
        PairClass::Unproven
    )]
    #[case::exclusive_bit_of_a_pmd_mapped_thp_is_not_trusted(P | X, PMD, P, KNOWN_SMALL, false, PairClass::Unproven)]
    #[case::exclusive_bit_with_unknown_mapping_size_is_not_trusted(P | X, UNKNOWN, P, UNKNOWN, false, PairClass::Unproven)]
    #[case::both_zero_page_by_pagemap_scan(P, KNOWN_ZERO, P, KNOWN_ZERO, false, PairClass::Zero)]
    #[case::zero_page_against_a_real_page(
        P,
        KNOWN_ZERO,
        P,
        KNOWN_SMALL,
        false,
        PairClass::Diverged
    )]
    #[case::shared_mapping_same_page_cache_page(P | F, KNOWN_SMALL, P | F, KNOWN_SMALL, true, PairClass::Shared)]
    #[case::private_file_page_is_unproven(P | F, KNOWN_SMALL, P | F, KNOWN_SMALL, false, PairClass::Unproven)]
    #[case::only_child_present(0, UNKNOWN, P, UNKNOWN, false, PairClass::OnlyChild)]
    #[case::both_swapped_without_offsets_is_unproven(
        S,
        UNKNOWN,
        S,
        UNKNOWN,
        false,
        PairClass::Unproven
    )]
    fn without_pfns_only_what_is_provable(
        #[case] p: u64,
        #[case] pf: HiddenFacts,
        #[case] c: u64,
        #[case] cf: HiddenFacts,
        #[case] shared_mapping: bool,
        #[case] want: PairClass,
    ) {
        assert_eq!(classify_hidden(p, c, pf, cf, shared_mapping), want);
    }

    #[test]
    fn class_indices_match_all_and_names() {
        for (i, c) in PairClass::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::Value::from(c.name())
            );
        }
    }
}
