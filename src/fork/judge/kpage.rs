//! The mapper count of each PFN against the kernel's own counts: `kpagecount` (/proc/kpagecount)
//! and `exclusive_bit` (pagemap bit 56, with the PMD head-page quirk).

use std::collections::BTreeSet;

use super::{Finding, Judgement};
use crate::fork::evidence::Evidence;
use crate::fork::scenarios::Scenario;

/// kpagecount: each PFN is mapped by exactly as many of our processes as the kernel counts.
pub(super) fn kpagecount_counts_our_mappings(_s: &Scenario, e: &Evidence, j: &mut Judgement) {
    if !e.kpage_readable || !e.pfn_visible {
        return;
    }
    j.evidence.insert("kpagecount");
    let mut bad = BTreeSet::new();
    for p in e.procs.iter().filter(|p| p.sampled) {
        for w in &p.pages {
            if let (Some(pfn), Some(kc)) = (w.pfn, w.mapcount) {
                let n = j.mappers.get(&pfn).copied().unwrap_or(0);
                if w.zero_page != Some(true) && kc != n {
                    bad.insert((pfn, kc, n));
                }
            }
        }
    }
    for (pfn, kc, n) in bad.into_iter().take(16) {
        j.file(Finding::disagree(
            "kpagecount",
            format!("kpagecount of PFN {pfn:#x} is {kc}, but {n} of our processes map it"),
        ));
    }
}

/// Bit 56 is set exactly when one process maps the page. One documented exception: for a
/// PMD-mapped THP some kernels derive every subpage's bit from the head page
/// (`pagemap_pmd_range` uses the head page's mapcount before 6.10 and again since 6.15): a
/// kernel quirk, never a disagreement. The mapper count comes from PFNs when visible, else
/// from smaps (Shared vs Private kB): the same fact gets the same finding either way.
pub(super) fn exclusive_bit_means_one_mapper(_s: &Scenario, e: &Evidence, j: &mut Judgement) {
    j.evidence.insert("exclusive_bit");
    let pmd = e.pmd_pages.max(1);
    let mut head_rule = 0u64;
    for p in e.procs.iter().filter(|p| p.sampled) {
        let mut wrong = Vec::new();
        for (i, w) in p.pages.iter().enumerate() {
            let Some(pfn) = w.pfn.filter(|_| e.pfn_visible) else {
                continue;
            };
            if w.zero_page == Some(true) {
                continue;
            }
            let n = j.mappers.get(&pfn).copied().unwrap_or(0);
            if w.exclusive == (n == 1) {
                continue;
            }
            if w.pmd_mapped && w.thp == Some(true) {
                let head = &p.pages[i & !(pmd - 1)];
                let head_n = head
                    .pfn
                    .and_then(|h| j.mappers.get(&h).copied())
                    .unwrap_or(0);
                if w.exclusive == (head_n == 1) {
                    head_rule += 1;
                    continue;
                }
            }
            wrong.push(format!(
                "{} page {i}: exclusive bit {} but {n} of our processes map PFN {pfn:#x}",
                p.role,
                if w.exclusive { "set" } else { "clear" }
            ));
        }
        for w in wrong.into_iter().take(8) {
            j.file(Finding::disagree("exclusive_bit", w));
        }
        if !e.pfn_visible {
            // smaps as the mapper count: PMD-mapped pages flagged exclusive beyond what smaps
            // counts as private, all carrying their head page's bit.
            let Some(f) = p.smaps else { continue };
            let kb = (e.page_size / 1024) as u64;
            let pmd_excl = p
                .pages
                .iter()
                .filter(|w| w.present && w.pmd_mapped && w.exclusive)
                .count() as u64;
            let follows_head =
                p.pages.iter().enumerate().all(|(i, w)| {
                    !w.pmd_mapped || w.exclusive == p.pages[i & !(pmd - 1)].exclusive
                });
            if pmd_excl * kb > f.private_kb() && follows_head {
                head_rule += pmd_excl - (f.private_kb() / kb).min(pmd_excl);
            }
        }
    }
    if head_rule > 0 {
        j.file(Finding::quirk(
            "exclusive_bit",
            format!(
                "pagemap bit 56 of {head_rule} PMD-mapped THP subpages follows the THP's head page, not the subpage ({} shows the subpage's true sharing)",
                if e.pfn_visible { "kpagecount" } else { "smaps" }
            ),
        ));
    }
}
