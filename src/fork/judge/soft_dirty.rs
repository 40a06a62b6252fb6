//! `soft_dirty`: pagemap bit 55 against the pages each process wrote since the fork.

use super::{Finding, Judgement};
use crate::fork::evidence::Evidence;
use crate::fork::scenarios::{MemoryKind, Scenario};

/// Soft-dirty (bit 55) names exactly the pages each process wrote after the fork. A write
/// into a THP can mark the whole huge page soft-dirty (6.12 carries the PMD's dirty bit to
/// every PTE on split): accepted as a quirk, exactly that.
pub(super) fn soft_dirty_names_the_writers(s: &Scenario, e: &Evidence, j: &mut Judgement) {
    if !e.soft_dirty_tracked {
        return;
    }
    j.evidence.insert("soft_dirty");
    let pmd = e.pmd_pages.max(1);
    for (idx, p) in e.procs.iter().enumerate() {
        if !p.sampled {
            continue;
        }
        let dirty: Vec<usize> = (0..p.pages.len())
            .filter(|&i| p.pages[i].present && p.pages[i].soft_dirty)
            .collect();
        j.written_since_fork[idx] = Some(dirty.len() as u64);
        let mut wrote = s.written_by(&p.path);
        wrote.retain(|&w| p.pages.get(w).is_some_and(|x| x.present));
        if dirty == wrote {
            continue;
        }
        // Every page of each THP written (`wrote` is sorted: each unit is listed once).
        let mut units: Vec<usize> = wrote.iter().map(|&w| w / pmd).collect();
        units.dedup();
        let whole: Vec<usize> = units
            .iter()
            .flat_map(|&u| (u * pmd)..((u + 1) * pmd).min(p.pages.len()))
            .collect();
        let hugetlb = matches!(s.memory, MemoryKind::Hugetlb { .. });
        let pinned_untouched: Vec<usize> = (0..p.pages.len())
            .filter(|i| p.path.is_empty() && s.pinned() && p.pages[*i].present)
            .collect();
        if hugetlb && dirty.is_empty() {
            j.file(Finding::quirk(
                "soft_dirty",
                format!(
                    "{}'s copy-on-write of a hugetlb page left it without the soft-dirty bit (the hugetlb fault path does not set it)",
                    p.role
                ),
            ));
        } else if !pinned_untouched.is_empty() && dirty == pinned_untouched {
            j.file(Finding::quirk(
                "soft_dirty",
                format!(
                    "{}: clear_refs left the soft-dirty bit on all {} DMA-pinned pages (it does not write-protect pinned pages), so bit 55 cannot say which it wrote",
                    p.role,
                    dirty.len()
                ),
            ));
        } else if s.memory.is_thp() && dirty == whole {
            j.file(Finding::quirk(
                "soft_dirty",
                format!(
                    "{}'s write to {} page(s) of a THP marked all {} pages of that THP soft-dirty",
                    p.role,
                    wrote.len(),
                    dirty.len()
                ),
            ));
        } else {
            let shown: Vec<usize> = dirty.iter().copied().take(8).collect();
            j.file(Finding::disagree(
                "soft_dirty",
                format!(
                    "{}: soft-dirty pages {shown:?}{} but it wrote {wrote:?}",
                    p.role,
                    if dirty.len() > 8 { ".." } else { "" }
                ),
            ));
        }
    }
}
