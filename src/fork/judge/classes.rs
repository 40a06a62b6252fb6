//! `classes`: every page of every process classified from its witnesses (classify.rs) and
//! compared with what the scenario's steps predict; the aggregate class per page.

use std::collections::BTreeSet;

use super::{Finding, Judgement, parent, unit};
use crate::fork::classify::{self, Basis, OtherVma, PageClass};
use crate::fork::evidence::{Evidence, ProcessSeen};
use crate::fork::scenarios::{ForkAdvice, Scenario, WriteUnit};

/// What comparing the classes with the scenario found, over every process.
#[derive(Debug, Default)]
struct Tally {
    /// The first 16 pages whose class is not the expected one.
    mismatches: Vec<String>,
    /// Pages whose class the witnesses could not decide.
    unproven: u64,
    /// Pages counted copied because the huge zero page was replaced whole on a write.
    whole_units: u64,
}

/// Classify every page of every process against the parent and compare with the scenario.
pub(super) fn classes_match_first_principles(s: &Scenario, e: &Evidence, j: &mut Judgement) {
    let Some(par) = parent(e) else { return };
    let unit = unit(s, e);
    let mut tally = Tally::default();
    for (idx, p) in e.procs.iter().enumerate().skip(1) {
        if !p.sampled {
            continue;
        }
        let cls = classify_pages(s, e, par, p, &mut j.bases);
        compare_with_the_scenario(s, unit, idx, p, &cls, j, &mut tally);
        j.classes[idx] = cls;
    }
    if e.procs.iter().skip(1).all(|p| !p.sampled) {
        j.aggregate = vec![PageClass::Unproven; e.before.len()];
    }
    file_what_the_classes_showed(e, j, tally);
    name_the_witnesses_that_decided(e, j);
}

/// One class per page of `p` (classify.rs), against the parent's page, or against the
/// parent's pre-fork frame where the parent unmapped it; records each class's basis.
fn classify_pages(
    s: &Scenario,
    e: &Evidence,
    par: &ProcessSeen,
    p: &ProcessSeen,
    bases: &mut BTreeSet<Basis>,
) -> Vec<PageClass> {
    let pages = e.before.len();
    let sampled = e.procs.iter().filter(|p| p.sampled).count();
    let mut cls = Vec::with_capacity(pages);
    for i in 0..pages {
        let pw = &par.pages[i];
        let ow = &p.pages[i];
        let parent_gone = !pw.mapped && e.before[i].present;
        let reference = if parent_gone { &e.before[i] } else { pw };
        let vma = OtherVma {
            exists: ow.mapped,
            parent_before_fork: parent_gone && ow.mapped,
            rss_zero: p.smaps.is_some_and(|f| f.rss_kb == 0),
            wipe_on_fork: s.advice == ForkAdvice::WipeOnFork,
            two_processes: sampled == 2,
            shared_mapping: p.shared_vma && par.shared_vma,
        };
        let (class, basis) = classify::classify(reference, ow, vma);
        bases.insert(basis);
        cls.push(class);
    }
    cls
}

/// Each page's class against the scenario's expectation (counting mismatches and unproven
/// pages), and into the aggregate over the processes.
fn compare_with_the_scenario(
    s: &Scenario,
    unit: usize,
    idx: usize,
    p: &ProcessSeen,
    cls: &[PageClass],
    j: &mut Judgement,
    tally: &mut Tally,
) {
    let want = s.expect_for(&p.path, unit);
    let pages = cls.len();
    // The huge zero page: a write may replace the whole huge page (6.13+). Accept that
    // only when every page of the written unit moved together.
    let unit_moved =
        |u: usize| (u * unit..((u + 1) * unit).min(pages)).all(|i| cls[i] == PageClass::Copied);
    for (i, &class) in cls.iter().enumerate() {
        let mut expected = want.class(i);
        if s.memory.write_unit() == WriteUnit::BaseOrHuge
            && expected == PageClass::Shared
            && want.wrote_in_unit_of(i)
            && unit_moved(i / unit)
        {
            expected = PageClass::Copied;
            tally.whole_units += 1;
        }
        if class == PageClass::Unproven {
            tally.unproven += 1;
        } else if class != expected && tally.mismatches.len() < 16 {
            tally.mismatches.push(format!(
                "{} page {i}: {}, expected {}",
                p.role,
                class.as_str(),
                expected.as_str()
            ));
        }
        j.aggregate[i] = aggregate(j.aggregate[i], class, idx);
    }
}

/// The page's class over every process so far (copied wins, then unproven; else the first
/// child's class), after process `idx` showed `class`.
fn aggregate(so_far: PageClass, class: PageClass, idx: usize) -> PageClass {
    match (so_far, class) {
        (_, PageClass::Copied) | (PageClass::Copied, _) => PageClass::Copied,
        (PageClass::Unproven, _) | (_, PageClass::Unproven) => PageClass::Unproven,
        (a, b) if idx == 1 || a == PageClass::Absent => b,
        (a, _) => a,
    }
}

/// The findings: the huge-zero-page quirk, each mismatch, the undecided pages.
fn file_what_the_classes_showed(e: &Evidence, j: &mut Judgement, tally: Tally) {
    let Tally {
        mismatches,
        unproven,
        whole_units,
    } = tally;
    if whole_units > 0 {
        j.whole_unit_moved = true;
        j.file(Finding::quirk(
            "classes",
            format!(
                "a write to the huge zero page gave the writer a whole new huge page ({whole_units} more pages than it wrote got new frames at once): the kernel replaced the huge zero page with a THP on the write fault (do_huge_zero_wp_pmd, after 6.12) instead of splitting the PMD to 4 KiB zero pages"
            ),
        ));
    }
    for m in mismatches {
        j.file(Finding::disagree("classes", m));
    }
    if unproven > 0 {
        j.file(Finding::unproven(
            "classes",
            format!(
                "{unproven} page class(es) could not be decided: {}",
                if e.pfn_visible {
                    "the witnesses do not decide them"
                } else {
                    "PFNs are hidden (no CAP_SYS_ADMIN) and the exclusive bit, bit 61 and smaps do not decide them"
                }
            ),
        ));
    }
}

/// The witnesses the classes rest on, as the verdict names them.
fn name_the_witnesses_that_decided(e: &Evidence, j: &mut Judgement) {
    for b in &j.bases.clone() {
        let name = match b {
            Basis::Pfn if e.pfn_visible => "pfn",
            Basis::ExclusiveBit => "exclusive_bit",
            Basis::SharedBit => "shared_bit",
            Basis::Smaps => "smaps",
            Basis::Kpageflags => "kpageflags",
            Basis::Vma | Basis::SharedMapping => "vma",
            Basis::SwapEntry => "swap_entry",
            _ => continue,
        };
        j.evidence.insert(name);
    }
    if e.pfn_visible {
        j.evidence.insert("pfn");
    }
}
