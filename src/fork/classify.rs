//! Page classes: the verdict for one page of the arena in one process, compared with the
//! parent. Pure logic over per-page witnesses, so every rule is unit-tested.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What happened to one page between the parent and another process of the scenario.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PageClass {
    /// Both present, same physical page.
    Shared,
    /// Both present, different physical pages: copy-on-write copied it.
    Copied,
    /// MADV_WIPEONFORK: the other process sees zero (absent, or the shared zero page).
    Wiped,
    /// The other process has no mapping here at all (MADV_DONTFORK, or it unmapped the page
    /// after the fork).
    NotInherited,
    /// Present in neither.
    Absent,
    /// The kernel did not show enough to decide (e.g. PFNs hidden and the flags ambiguous).
    Unproven,
}

impl PageClass {
    /// The class's name as the JSON spells it (`not_inherited`).
    pub fn as_str(self) -> &'static str {
        match self {
            PageClass::Shared => "shared",
            PageClass::Copied => "copied",
            PageClass::Wiped => "wiped",
            PageClass::NotInherited => "not_inherited",
            PageClass::Absent => "absent",
            PageClass::Unproven => "unproven",
        }
    }

    /// The class's name for people (`not inherited`).
    pub fn label(self) -> &'static str {
        match self {
            PageClass::NotInherited => "not inherited",
            other => other.as_str(),
        }
    }

    /// A column heading of at most 6 characters (the table).
    pub fn short(self) -> &'static str {
        match self {
            PageClass::Shared => "shared",
            PageClass::Copied => "copied",
            PageClass::Wiped => "wiped",
            PageClass::NotInherited => "notin",
            PageClass::Absent => "absnt",
            PageClass::Unproven => "unprv",
        }
    }

    /// What the class means, one line (legends).
    pub fn meaning(self) -> &'static str {
        match self {
            PageClass::Shared => "same frame as the parent's",
            PageClass::Copied => "a different frame: copy-on-write (or a pin at fork) copied it",
            PageClass::Wiped => "MADV_WIPEONFORK: reads zero",
            PageClass::NotInherited => {
                "no mapping here (MADV_DONTFORK, or unmapped after the fork)"
            }
            PageClass::Absent => "mapped by neither",
            PageClass::Unproven => "the evidence available cannot decide",
        }
    }

    /// Every class, in report order.
    pub const ALL: [PageClass; 6] = [
        PageClass::Shared,
        PageClass::Copied,
        PageClass::Wiped,
        PageClass::NotInherited,
        PageClass::Absent,
        PageClass::Unproven,
    ];
}

/// Which witness decided a page's class.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// PFN equality from pagemap (needs CAP_SYS_ADMIN).
    Pfn,
    /// Pagemap's exclusively-mapped bit 56.
    ExclusiveBit,
    /// Pagemap's file/shared-anon bit 61 (a MAP_SHARED page is one page by construction).
    SharedBit,
    /// smaps of the VMA (e.g. Rss 0 while pagemap says present: the zero page).
    Smaps,
    /// kpageflags (e.g. the zero-page flag).
    Kpageflags,
    /// The VMA itself is missing in the other process.
    Vma,
    /// Swap entries: the same swap slot is the same page of data; kpageflags says whether a
    /// present page is the swap cache's.
    SwapEntry,
    /// Both VMAs are shared mappings (VmFlags `sh`).
    SharedMapping,
    /// Nothing decided it.
    None,
}

/// Everything the kernel told us about one page in one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageWitness {
    /// pagemap bit 63.
    pub present: bool,
    /// The PFN, when present and visible (None when hidden or not present).
    pub pfn: Option<u64>,
    /// pagemap bit 56.
    pub exclusive: bool,
    /// pagemap bit 61.
    pub file_or_shared: bool,
    /// kpagecount of the PFN, when readable.
    pub mapcount: Option<u64>,
    /// kpageflags says this is the shared zero page (None when unreadable).
    pub zero_page: Option<bool>,
    /// kpageflags says THP (None when unreadable).
    pub thp: Option<bool>,
    /// The page is mapped through a PMD (THP) in this process; bit 56 is not trustworthy
    /// per subpage there (some kernels report the head page's exclusivity for all 512).
    pub pmd_mapped: bool,
    /// A VMA of the process covers the page.
    pub mapped: bool,
    /// pagemap bit 62: the page is in swap.
    pub swapped: bool,
    /// The swap entry (type and offset), when swapped and visible (needs CAP_SYS_ADMIN).
    pub swap_entry: Option<u64>,
    /// kpageflags says the frame is in the swap cache (None when unreadable).
    pub swapcache: Option<bool>,
    /// kpageflags says hugetlb (None when unreadable).
    pub hugetlb: Option<bool>,
    /// pagemap bit 55: written since the soft-dirty bits were cleared.
    pub soft_dirty: bool,
}

/// Facts about the other process's VMA that some rules need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtherVma {
    /// The other process has a VMA covering this page.
    pub exists: bool,
    /// The parent unmapped this page itself after the fork, so `parent` is its witness from
    /// before the fork (only a PFN can then be compared: the bits described the parent's old
    /// mapping, not the page now).
    pub parent_before_fork: bool,
    /// The VMA's smaps Rss is 0 kB (the zero page is not counted in Rss).
    pub rss_zero: bool,
    /// The arena was advised MADV_WIPEONFORK.
    pub wipe_on_fork: bool,
    /// Only two processes of the scenario map the arena, so two non-exclusive mappings of a
    /// private page must be the same page.
    pub two_processes: bool,
    /// Both processes' VMAs are shared mappings (smaps VmFlags `sh`): one page cache object,
    /// so a page one side has not faulted in yet is still the same page.
    pub shared_mapping: bool,
}

/// Classify one page of `other` against the same page of `parent`.
pub fn classify(parent: &PageWitness, other: &PageWitness, vma: OtherVma) -> (PageClass, Basis) {
    if !vma.exists {
        return (PageClass::NotInherited, Basis::Vma);
    }
    if vma.parent_before_fork {
        return match (parent.pfn, other.pfn) {
            (Some(a), Some(b)) if other.present => {
                if a == b {
                    (PageClass::Shared, Basis::Pfn)
                } else {
                    (PageClass::Copied, Basis::Pfn)
                }
            }
            _ => (PageClass::Unproven, Basis::None),
        };
    }
    if parent.swapped && other.swapped {
        // fork() copies swap entries: the same slot is the same page of data.
        return match (parent.swap_entry, other.swap_entry) {
            (Some(a), Some(b)) if a == b => (PageClass::Shared, Basis::SwapEntry),
            (Some(_), Some(_)) => (PageClass::Copied, Basis::SwapEntry),
            _ => (PageClass::Unproven, Basis::None),
        };
    }
    if (parent.swapped && other.present && other.swapcache == Some(false))
        || (other.swapped && parent.present && parent.swapcache == Some(false))
    {
        // One side still has the data in swap, the other maps a frame that is not the swap
        // cache's: a copy (a read fault would have mapped the swap-cache page itself).
        return (PageClass::Copied, Basis::SwapEntry);
    }
    if !parent.present && !other.present && !parent.swapped && !other.swapped {
        return (PageClass::Absent, Basis::Pfn);
    }
    if vma.wipe_on_fork {
        if other.zero_page == Some(true) {
            return (PageClass::Wiped, Basis::Kpageflags);
        }
        if !other.present && parent.present {
            return (PageClass::Wiped, Basis::Pfn);
        }
        if other.present && other.pfn.is_none() && vma.rss_zero {
            return (PageClass::Wiped, Basis::Smaps);
        }
    }
    if vma.shared_mapping && parent.present && parent.file_or_shared && !other.present {
        // fork() does not copy the page tables of shared mappings; the child faults the same
        // page-cache page in on first access.
        return (PageClass::Shared, Basis::SharedMapping);
    }
    if !(parent.present && other.present) {
        // Present on one side only, without WIPEONFORK: not something fork produces.
        return (PageClass::Unproven, Basis::None);
    }
    if parent.zero_page == Some(true) && other.zero_page == Some(true) {
        // Both read a zero page (the huge zero page's subpage on one side, the 4 KiB zero page
        // after a PMD split on the other): different frames, yet nothing was copied.
        return (PageClass::Shared, Basis::Kpageflags);
    }
    if let (Some(a), Some(b)) = (parent.pfn, other.pfn) {
        return if a == b {
            (PageClass::Shared, Basis::Pfn)
        } else {
            (PageClass::Copied, Basis::Pfn)
        };
    }
    if parent.file_or_shared && other.file_or_shared {
        // A MAP_SHARED page: the page cache holds one page per offset, writes never copy.
        return (PageClass::Shared, Basis::SharedBit);
    }
    // Without PFNs: a page with bit 56 is mapped by one process only, so the other process
    // cannot map the same page: they differ (copied). Two non-exclusive mappings are the same
    // page only when no third process could hold either of them.
    let pe = (!parent.pmd_mapped).then_some(parent.exclusive);
    let oe = (!other.pmd_mapped).then_some(other.exclusive);
    match (pe, oe) {
        (Some(true), _) | (_, Some(true)) => (PageClass::Copied, Basis::ExclusiveBit),
        (Some(false), Some(false)) if vma.two_processes => (PageClass::Shared, Basis::ExclusiveBit),
        _ => (PageClass::Unproven, Basis::None),
    }
}

/// Counts of pages per class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClassCounts {
    /// Same physical page in both.
    pub shared: u64,
    /// Copied by copy-on-write.
    pub copied: u64,
    /// Wiped by MADV_WIPEONFORK.
    pub wiped: u64,
    /// Not inherited (MADV_DONTFORK).
    pub not_inherited: u64,
    /// Present in neither.
    pub absent: u64,
    /// Not decidable with the evidence available.
    pub unproven: u64,
}

impl ClassCounts {
    /// Add one page of class `c`.
    pub fn add(&mut self, c: PageClass) {
        *self.slot(c) += 1;
    }

    /// The count for class `c`.
    pub fn get(&self, c: PageClass) -> u64 {
        match c {
            PageClass::Shared => self.shared,
            PageClass::Copied => self.copied,
            PageClass::Wiped => self.wiped,
            PageClass::NotInherited => self.not_inherited,
            PageClass::Absent => self.absent,
            PageClass::Unproven => self.unproven,
        }
    }

    fn slot(&mut self, c: PageClass) -> &mut u64 {
        match c {
            PageClass::Shared => &mut self.shared,
            PageClass::Copied => &mut self.copied,
            PageClass::Wiped => &mut self.wiped,
            PageClass::NotInherited => &mut self.not_inherited,
            PageClass::Absent => &mut self.absent,
            PageClass::Unproven => &mut self.unproven,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn w(present: bool, pfn: Option<u64>, exclusive: bool) -> PageWitness {
        PageWitness {
            present,
            pfn,
            exclusive,
            ..Default::default()
        }
    }
    const VMA: OtherVma = OtherVma {
        exists: true,
        parent_before_fork: false,
        rss_zero: false,
        wipe_on_fork: false,
        shared_mapping: false,
        two_processes: true,
    };

    #[rstest]
    #[case::same_pfn_is_shared(
        w(true, Some(7), false),
        w(true, Some(7), false),
        VMA,
        PageClass::Shared,
        Basis::Pfn
    )]
    #[case::new_pfn_is_copied(
        w(true, Some(7), true),
        w(true, Some(9), true),
        VMA,
        PageClass::Copied,
        Basis::Pfn
    )]
    #[case::hidden_pfns_both_exclusive_is_copied(
        w(true, None, true),
        w(true, None, true),
        VMA,
        PageClass::Copied,
        Basis::ExclusiveBit
    )]
    #[case::hidden_pfns_neither_exclusive_is_shared(
        w(true, None, false),
        w(true, None, false),
        VMA,
        PageClass::Shared,
        Basis::ExclusiveBit
    )]
    #[case::hidden_pfns_one_exclusive_is_copied(
        w(true, None, true),
        w(true, None, false),
        VMA,
        PageClass::Copied,
        Basis::ExclusiveBit
    )]
    #[case::hidden_pfns_neither_exclusive_among_three_is_unproven(w(true, None, false), w(true, None, false), OtherVma { two_processes: false, ..VMA }, PageClass::Unproven, Basis::None)]
    #[case::hidden_pfns_pmd_mapped_bit_is_ignored(PageWitness { pmd_mapped: true, ..w(true, None, true) }, w(true, None, false), VMA, PageClass::Unproven, Basis::None)]
    #[case::neither_present_is_absent(
        w(false, None, false),
        w(false, None, false),
        VMA,
        PageClass::Absent,
        Basis::Pfn
    )]
    #[case::no_vma_is_not_inherited(w(true, Some(1), true), w(false, None, false), OtherVma { exists: false, ..VMA }, PageClass::NotInherited, Basis::Vma)]
    #[case::wiped_absent(w(true, Some(1), true), w(false, None, false), OtherVma { wipe_on_fork: true, ..VMA }, PageClass::Wiped, Basis::Pfn)]
    #[case::wiped_zero_page_hidden_pfn_rss_zero(w(true, None, true), w(true, None, false), OtherVma { wipe_on_fork: true, rss_zero: true, ..VMA }, PageClass::Wiped, Basis::Smaps)]
    #[case::one_side_missing_without_wipe_is_unproven(
        w(true, Some(1), true),
        w(false, None, false),
        VMA,
        PageClass::Unproven,
        Basis::None
    )]
    fn classify_rules(
        #[case] parent: PageWitness,
        #[case] other: PageWitness,
        #[case] vma: OtherVma,
        #[case] class: PageClass,
        #[case] basis: Basis,
    ) {
        assert_eq!(classify(&parent, &other, vma), (class, basis));
    }

    #[test]
    fn zero_page_flag_means_wiped() {
        let other = PageWitness {
            present: true,
            pfn: Some(5),
            zero_page: Some(true),
            ..Default::default()
        };
        let vma = OtherVma {
            rss_zero: true,
            wipe_on_fork: true,
            ..VMA
        };
        assert_eq!(
            classify(&w(true, Some(9), true), &other, vma),
            (PageClass::Wiped, Basis::Kpageflags)
        );
    }

    #[test]
    fn two_zero_pages_are_shared_although_the_frames_differ() {
        let z = |pfn| PageWitness {
            zero_page: Some(true),
            ..w(true, Some(pfn), false)
        };
        assert_eq!(
            classify(&z(0x1fc001), &z(0x3b34), VMA),
            (PageClass::Shared, Basis::Kpageflags)
        );
    }

    #[test]
    fn shared_mapping_with_hidden_pfns_is_shared_by_bit_61() {
        let p = PageWitness {
            present: true,
            file_or_shared: true,
            ..Default::default()
        };
        assert_eq!(classify(&p, &p, VMA), (PageClass::Shared, Basis::SharedBit));
    }

    #[test]
    fn shared_mapping_page_not_yet_faulted_in_child_is_shared() {
        let p = PageWitness {
            present: true,
            file_or_shared: true,
            ..Default::default()
        };
        let vma = OtherVma {
            shared_mapping: true,
            ..VMA
        };
        assert_eq!(
            classify(&p, &PageWitness::default(), vma),
            (PageClass::Shared, Basis::SharedMapping)
        );
    }

    fn swapped(entry: Option<u64>) -> PageWitness {
        PageWitness {
            swapped: true,
            swap_entry: entry,
            mapped: true,
            ..Default::default()
        }
    }

    #[rstest]
    #[case::same_swap_slot_is_shared(
        swapped(Some(0x20)),
        swapped(Some(0x20)),
        PageClass::Shared,
        Basis::SwapEntry
    )]
    #[case::different_swap_slots_are_copied(
        swapped(Some(0x20)),
        swapped(Some(0x40)),
        PageClass::Copied,
        Basis::SwapEntry
    )]
    #[case::hidden_swap_slots_are_unproven(
        swapped(None),
        swapped(None),
        PageClass::Unproven,
        Basis::None
    )]
    #[case::swapped_vs_frame_outside_swap_cache_is_copied(swapped(None), PageWitness { swapcache: Some(false), ..w(true, Some(9), true) }, PageClass::Copied, Basis::SwapEntry)]
    #[case::swapped_vs_swap_cache_frame_is_unproven(swapped(None), PageWitness { swapcache: Some(true), ..w(true, Some(9), true) }, PageClass::Unproven, Basis::None)]
    fn swap_rules(
        #[case] parent: PageWitness,
        #[case] other: PageWitness,
        #[case] class: PageClass,
        #[case] basis: Basis,
    ) {
        assert_eq!(classify(&parent, &other, VMA), (class, basis));
    }

    #[test]
    fn a_page_the_parent_unmapped_is_judged_against_its_frame_before_the_fork() {
        let vma = OtherVma {
            parent_before_fork: true,
            ..VMA
        };
        assert_eq!(
            classify(&w(true, Some(7), true), &w(true, Some(8), true), vma),
            (PageClass::Copied, Basis::Pfn)
        );
        assert_eq!(
            classify(&w(true, Some(7), true), &w(true, Some(7), true), vma),
            (PageClass::Shared, Basis::Pfn)
        );
        // Without PFNs the child's exclusive bit proves nothing: it may be the only mapper
        // of the very page the parent unmapped.
        assert_eq!(
            classify(&w(true, None, true), &w(true, None, true), vma),
            (PageClass::Unproven, Basis::None)
        );
    }

    #[test]
    fn class_names_are_spelled_once_and_match_the_json() {
        for c in PageClass::ALL {
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::Value::String(c.as_str().into())
            );
            assert!(c.short().len() <= 6);
        }
    }

    #[test]
    fn counts_add_up() {
        let mut c = ClassCounts::default();
        for cl in PageClass::ALL {
            c.add(cl);
        }
        c.add(PageClass::Copied);
        assert_eq!(c.get(PageClass::Copied), 2);
        assert_eq!(PageClass::ALL.iter().map(|&x| c.get(x)).sum::<u64>(), 7);
    }
}
