//! `smaps`: Rss, Shared, Private and Pss of each process against what its pages predict.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Finding, Judgement};
use crate::fork::evidence::{Evidence, PfnMap, ProcessSeen};
use crate::fork::scenarios::{ForkAdvice, Mapping, MemoryKind, Scenario};

/// What smaps should say, computed from the per-page witnesses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExpectedSmaps {
    /// Present pages counted in Rss (hugetlb pages and the zero page are not).
    pub rss_kb: u64,
    /// Pages mapped by more than one process (Shared_*), hugetlb included.
    pub shared_kb: u64,
    /// Pages mapped by this process alone (Private_*), hugetlb included.
    pub private_kb: u64,
    /// Sum over pages of page_size / mapcount, when every mapcount is known.
    pub pss_kb: Option<u64>,
    /// Pages that may or may not be in Rss (without kpageflags the zero page cannot be told
    /// from a shared page).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uncertain_rss_kb: u64,
    /// Pages in Rss whose sharing is not known (PFNs hidden and bit 56 not trustworthy, as for
    /// PMD-mapped THP subpages): they may count as shared or private.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uncertain_split_kb: u64,
}

pub(super) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What smaps must say for one process, from its pages: a present page mapped by n processes
/// adds page_size to Rss (hugetlb pages and the zero page do not), to Shared (n > 1) or
/// Private (n == 1), and page_size / n to Pss.
pub(super) fn expected_smaps_of(
    s: &Scenario,
    e: &Evidence,
    p: &ProcessSeen,
    mappers: &PfnMap<u64>,
) -> ExpectedSmaps {
    let kb = (e.page_size / 1024) as u64;
    let hugetlb = matches!(s.memory, MemoryKind::Hugetlb { .. });
    // Without kpageflags a non-exclusive page may be the zero page (pagemap sets bit 61 on the
    // huge zero page, since its page is not anonymous).
    let zero_kind = matches!(s.memory, MemoryKind::ZeroPage | MemoryKind::HugeZeroPage);
    let wipe = s.advice == ForkAdvice::WipeOnFork;
    let mut x = ExpectedSmaps::default();
    let mut pss_420 = 0u128; // in 1/420 kB: exact for 1..=7 mappers
    let mut pss_known = !hugetlb;
    for w in p.pages.iter().filter(|w| w.present) {
        if w.zero_page == Some(true) {
            continue;
        }
        let n = match w.pfn {
            Some(pfn) if e.pfn_visible => mappers.get(&pfn).copied(),
            _ if w.exclusive && !w.pmd_mapped => Some(1),
            _ => None,
        };
        if w.zero_page.is_none() && n != Some(1) && (zero_kind || (wipe && !w.file_or_shared)) {
            x.uncertain_rss_kb += kb;
            pss_known = false;
            continue;
        }
        if !hugetlb {
            x.rss_kb += kb;
        }
        match n {
            Some(1) => x.private_kb += kb,
            Some(_) => x.shared_kb += kb,
            None if w.pmd_mapped => x.uncertain_split_kb += kb,
            None if w.file_or_shared || s.mapping == Mapping::Shared => x.shared_kb += kb,
            None => x.uncertain_split_kb += kb,
        }
        match n {
            Some(n) if n > 0 => pss_420 += u128::from(kb) * 420 / u128::from(n),
            _ => pss_known = false,
        }
    }
    x.pss_kb = pss_known.then_some((pss_420 / 420) as u64);
    x
}

pub(super) fn smaps_matches_the_pages(s: &Scenario, e: &Evidence, j: &mut Judgement) {
    j.evidence.insert("smaps");
    for (idx, p) in e.procs.iter().enumerate() {
        if !p.sampled {
            continue;
        }
        let Some(got) = p.smaps else { continue };
        let x = expected_smaps_of(s, e, p, &j.mappers);
        j.expected_smaps[idx] = Some(x);
        let mut bad = Vec::new();
        let within = |v: u64, lo: u64, slack: u64| v >= lo && v <= lo + slack;
        if !within(got.rss_kb, x.rss_kb, x.uncertain_rss_kb) {
            bad.push(format!("Rss {} kB vs {} kB", got.rss_kb, x.rss_kb));
        }
        let slack = x.uncertain_split_kb + x.uncertain_rss_kb;
        if !within(got.shared_kb(), x.shared_kb, slack) {
            bad.push(format!(
                "Shared {} kB vs {} kB",
                got.shared_kb(),
                x.shared_kb
            ));
        }
        if !within(got.private_kb(), x.private_kb, slack) {
            bad.push(format!(
                "Private {} kB vs {} kB",
                got.private_kb(),
                x.private_kb
            ));
        }
        if let Some(pss) = x.pss_kb
            && got.pss_kb.abs_diff(pss) > 1
        {
            bad.push(format!("Pss {} kB vs {pss} kB", got.pss_kb));
        }
        if !bad.is_empty() {
            j.file(Finding::disagree(
                "smaps",
                format!(
                    "{} smaps disagrees with its pages: {}",
                    p.role,
                    bad.join(", ")
                ),
            ));
        }
    }
}
