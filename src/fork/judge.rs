//! The judge: `judge(&Scenario, &Evidence) -> Judgement`, pure.
//!
//! The evidence is what the pipeline observed (page witnesses of every process, smaps figures,
//! exits, content); the scenario says what first principles predict. The judgement is built by
//! a table of small named checks ([`CHECKS`]); each looks at one thing and files typed
//! [`Finding`]s. The verdict follows from the findings alone: a [`Finding::Disagreement`]
//! fails it, a [`Finding::Unproven`] (and no disagreement) makes it `unproven`,
//! [`Finding::KernelQuirk`] and [`Finding::Note`] never change it. Nothing is decided by the
//! wording of a message.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::classify::{self, Basis, ClassCounts, OtherVma, PageClass};
use super::evidence::{Evidence, HEAD, PfnMap, ProcessSeen};
use super::scenarios::{ExpectedHead, ForkAdvice, Mapping, MemoryKind, Scenario, WriteUnit};
use super::subject::ExitInfo;

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

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A typed finding of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// A witness disagrees with another, or with what first principles predict: the verdict
    /// fails.
    Disagreement {
        /// The check that found it.
        check: String,
        /// What disagreed.
        detail: String,
    },
    /// A documented kernel behaviour that explains an otherwise surprising witness; never used
    /// to decide a class, never a failure.
    KernelQuirk {
        /// The check that found it.
        check: String,
        /// What the kernel does.
        detail: String,
    },
    /// Something the evidence available cannot prove (no privilege, a kernel feature
    /// missing): the verdict is `unproven`, not failed.
    Unproven {
        /// The check that could not decide.
        check: String,
        /// Why.
        reason: String,
    },
    /// A remark.
    Note {
        /// The check that made it.
        check: String,
        /// The remark.
        detail: String,
    },
}

impl Finding {
    fn disagree(check: &str, detail: impl Into<String>) -> Self {
        Finding::Disagreement {
            check: check.into(),
            detail: detail.into(),
        }
    }
    fn quirk(check: &str, detail: impl Into<String>) -> Self {
        Finding::KernelQuirk {
            check: check.into(),
            detail: detail.into(),
        }
    }
    fn unproven(check: &str, reason: impl Into<String>) -> Self {
        Finding::Unproven {
            check: check.into(),
            reason: reason.into(),
        }
    }
    fn note(check: &str, detail: impl Into<String>) -> Self {
        Finding::Note {
            check: check.into(),
            detail: detail.into(),
        }
    }
}

/// The state of a verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerdictState {
    /// Every expectation held and was proven.
    #[default]
    Held,
    /// Something disagreed.
    Failed,
    /// Nothing disagreed, but something could not be proven.
    Unproven,
    /// Not run (a feature or setting is missing); see `skipped`.
    Skipped,
}

impl VerdictState {
    /// The label the table prints.
    pub fn label(self) -> &'static str {
        match self {
            VerdictState::Held => "ok",
            VerdictState::Failed => "FAIL",
            VerdictState::Unproven => "UNPROVEN",
            VerdictState::Skipped => "SKIP",
        }
    }
}

/// The verdict of one scenario, derived from the findings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Verdict {
    /// held, failed, unproven or skipped.
    #[serde(default)]
    pub state: VerdictState,
    /// `state` is held or skipped.
    pub holds: bool,
    /// Every page's class was proven (no `unproven` page) and matches the expectation.
    pub cow_proven: bool,
    /// The witnesses consulted (never `pfn` or `kpagecount` when PFNs are hidden).
    pub evidence: Vec<String>,
    /// No witness disagreed.
    pub agree: bool,
    /// Disagreements, as `check: detail`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub disagreements: Vec<String>,
    /// Documented kernel behaviours that explain an otherwise surprising witness.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub kernel_quirks: Vec<String>,
    /// What could not be proven, and why.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub unproven: Vec<String>,
    /// Other remarks.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub notes: Vec<String>,
    /// Why the scenario was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl Verdict {
    /// A skip, with its reason.
    pub fn skip(reason: impl Into<String>) -> Self {
        Verdict {
            state: VerdictState::Skipped,
            holds: true,
            agree: true,
            skipped: Some(reason.into()),
            ..Default::default()
        }
    }

    /// The verdict the findings imply.
    pub fn from_findings(
        findings: &[Finding],
        evidence: Vec<String>,
        classes_proven: bool,
    ) -> Self {
        let mut v = Verdict {
            evidence,
            ..Default::default()
        };
        const MAX: usize = 32;
        for f in findings {
            let (list, text) = match f {
                Finding::Disagreement { check, detail } => {
                    (&mut v.disagreements, format!("{check}: {detail}"))
                }
                Finding::KernelQuirk { check, detail } => {
                    (&mut v.kernel_quirks, format!("{check}: {detail}"))
                }
                Finding::Unproven { check, reason } => {
                    (&mut v.unproven, format!("{check}: {reason}"))
                }
                Finding::Note { check, detail } => (&mut v.notes, format!("{check}: {detail}")),
            };
            if list.len() < MAX {
                list.push(text);
            }
        }
        let disagreed = findings
            .iter()
            .any(|f| matches!(f, Finding::Disagreement { .. }));
        let unproven = findings
            .iter()
            .any(|f| matches!(f, Finding::Unproven { .. }));
        v.agree = !disagreed;
        v.state = if disagreed {
            VerdictState::Failed
        } else if unproven {
            VerdictState::Unproven
        } else {
            VerdictState::Held
        };
        v.holds = v.state == VerdictState::Held;
        v.cow_proven = classes_proven && !disagreed;
        v
    }
}

/// What the judge concluded.
#[derive(Debug, Clone, Default)]
pub struct Judgement {
    /// Per process (index as in `Evidence::procs`; the parent's entry is empty), per page.
    pub classes: Vec<Vec<PageClass>>,
    /// The page's class over every process (copied wins, then unproven).
    pub aggregate: Vec<PageClass>,
    /// Which witnesses decided classes.
    pub bases: BTreeSet<Basis>,
    /// Per process: pages whose frame differs from the parent's before the fork.
    pub new_frames: Vec<Option<u64>>,
    /// Per process: smaps as the page witnesses predict it.
    pub expected_smaps: Vec<Option<ExpectedSmaps>>,
    /// Per process: pages written since the fork by soft-dirty.
    pub written_since_fork: Vec<Option<u64>>,
    /// Whether a write replaced a whole huge unit (the huge zero page on 6.13+).
    pub whole_unit_moved: bool,
    /// Content checks.
    pub content: super::ContentChecks,
    /// New memory one write made the kernel give the writer, in bytes.
    pub bytes_copied_by_one_write: Option<u64>,
    /// Bytes copied for the children at fork, before anyone wrote (pinned pages).
    pub bytes_copied_at_fork: Option<u64>,
    /// The witnesses consulted.
    pub evidence: BTreeSet<&'static str>,
    /// Every finding, in check order.
    pub findings: Vec<Finding>,
    /// PFN -> how many of our processes map it.
    mappers: PfnMap<u64>,
}

impl Judgement {
    /// The verdict the findings imply.
    pub fn verdict(&self) -> Verdict {
        let classes_proven = !self.aggregate.contains(&PageClass::Unproven)
            && !self
                .findings
                .iter()
                .any(|f| matches!(f, Finding::Disagreement { check, .. } if check == "classes" || check == "new_frames"));
        Verdict::from_findings(
            &self.findings,
            self.evidence.iter().map(|s| s.to_string()).collect(),
            classes_proven,
        )
    }

    fn file(&mut self, f: Finding) {
        self.findings.push(f);
    }
}

/// One check of the judge: a name and a function that files findings.
pub type Check = fn(&Scenario, &Evidence, &mut Judgement);

/// The judge's checks, in the order they run. Later checks may use what earlier ones
/// computed (classes, mappers).
pub const CHECKS: &[(&str, Check)] = &[
    ("memory", the_memory_kind_formed),
    ("processes", every_process_was_sampled),
    ("classes", classes_match_first_principles),
    ("new_frames", the_expected_side_got_the_new_frame),
    ("kpagecount", kpagecount_counts_our_mappings),
    ("exclusive_bit", exclusive_bit_means_one_mapper),
    ("smaps", smaps_matches_the_pages),
    ("soft_dirty", soft_dirty_names_the_writers),
    ("exits", every_process_ended_as_expected),
    ("content", every_page_reads_its_last_writer),
    ("pipe", the_pipe_keeps_the_pre_fork_bytes),
    ("cost", what_one_write_cost),
    ("privilege", say_what_hidden_pfns_cost),
];

/// Judge a scenario's evidence. Pure: no system access.
pub fn judge(s: &Scenario, e: &Evidence) -> Judgement {
    let mut j = Judgement {
        classes: vec![Vec::new(); e.procs.len()],
        aggregate: vec![PageClass::Absent; e.before.len()],
        new_frames: vec![None; e.procs.len()],
        expected_smaps: vec![None; e.procs.len()],
        written_since_fork: vec![None; e.procs.len()],
        ..Default::default()
    };
    for smp in e.procs.iter().filter(|p| p.sampled) {
        for w in &smp.pages {
            if let Some(pfn) = w.pfn.filter(|_| w.zero_page != Some(true)) {
                *j.mappers.entry(pfn).or_default() += 1;
            }
        }
    }
    for (_, check) in CHECKS {
        check(s, e, &mut j);
    }
    j
}

fn unit(s: &Scenario, e: &Evidence) -> usize {
    s.unit(e.page_size, (e.pmd_pages * e.page_size / 1024) as u64)
}

fn parent(e: &Evidence) -> Option<&ProcessSeen> {
    e.procs.first()
}

fn the_memory_kind_formed(_s: &Scenario, e: &Evidence, j: &mut Judgement) {
    if let Some(r) = &e.unproven_setup {
        j.file(Finding::unproven("memory", r.clone()));
    }
}

fn every_process_was_sampled(_s: &Scenario, e: &Evidence, j: &mut Judgement) {
    for p in e.procs.iter().skip(1).filter(|p| !p.sampled) {
        j.file(Finding::disagree(
            "processes",
            format!(
                "{} never reported ready (exit: {})",
                p.role,
                describe_exit(p.exit.as_ref())
            ),
        ));
    }
}

/// Classify every page of every process against the parent and compare with the scenario.
fn classes_match_first_principles(s: &Scenario, e: &Evidence, j: &mut Judgement) {
    let Some(par) = parent(e) else { return };
    let unit = unit(s, e);
    let pages = e.before.len();
    let sampled = e.procs.iter().filter(|p| p.sampled).count();
    let mut mismatches = Vec::new();
    let mut unproven = 0u64;
    let mut whole_units = 0u64;
    for (idx, p) in e.procs.iter().enumerate().skip(1) {
        if !p.sampled {
            continue;
        }
        let want = s.expect_for(&p.path, unit);
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
            j.bases.insert(basis);
            cls.push(class);
        }
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
                whole_units += 1;
            }
            if class == PageClass::Unproven {
                unproven += 1;
            } else if class != expected && mismatches.len() < 16 {
                mismatches.push(format!(
                    "{} page {i}: {}, expected {}",
                    p.role,
                    class.as_str(),
                    expected.as_str()
                ));
            }
            j.aggregate[i] = match (j.aggregate[i], class) {
                (_, PageClass::Copied) | (PageClass::Copied, _) => PageClass::Copied,
                (PageClass::Unproven, _) | (_, PageClass::Unproven) => PageClass::Unproven,
                (a, b) if idx == 1 || a == PageClass::Absent => b,
                (a, _) => a,
            };
        }
        j.classes[idx] = cls;
    }
    if e.procs.iter().skip(1).all(|p| !p.sampled) {
        j.aggregate = vec![PageClass::Unproven; pages];
    }
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

/// Who got the new frame: the pages whose frame differs from the parent's before the fork,
/// per process, against [`Scenario::expects_new_frame`].
fn the_expected_side_got_the_new_frame(s: &Scenario, e: &Evidence, j: &mut Judgement) {
    if !e.pfn_visible {
        return;
    }
    let unit = unit(s, e);
    let mut mismatches = Vec::new();
    for (idx, p) in e.procs.iter().enumerate() {
        if !p.sampled {
            continue;
        }
        let expect = s.expect_for(&p.path, unit);
        let mut moved_total = 0u64;
        for (i, w) in p.pages.iter().enumerate() {
            let before = &e.before[i];
            let moved = match (before.pfn, w.pfn) {
                // One zero page for another (a split huge zero page) is no new memory.
                _ if before.zero_page == Some(true) && w.zero_page == Some(true) => false,
                (Some(b), Some(now)) => b != now,
                // The parent's page was in swap before the fork: a frame now is a new one
                // (a write swaps in and copies; the judge's classes say which).
                (None, Some(_)) if before.swapped => true,
                _ => continue,
            };
            moved_total += u64::from(moved);
            let Some(mut want) = expect.new_frame(i) else {
                continue;
            };
            if j.whole_unit_moved && !want && expect.wrote_in_unit_of(i) {
                want = true;
            }
            if moved != want && mismatches.len() < 16 {
                mismatches.push(format!(
                    "{} page {i}: frame {} the parent's before the fork",
                    p.role,
                    if moved { "differs from" } else { "is still" }
                ));
            }
        }
        if s.advice == ForkAdvice::None {
            j.new_frames[idx] = Some(moved_total);
        }
    }
    for m in mismatches {
        j.file(Finding::disagree("new_frames", m));
    }
}

/// kpagecount: each PFN is mapped by exactly as many of our processes as the kernel counts.
fn kpagecount_counts_our_mappings(_s: &Scenario, e: &Evidence, j: &mut Judgement) {
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
fn exclusive_bit_means_one_mapper(_s: &Scenario, e: &Evidence, j: &mut Judgement) {
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

/// What smaps must say for one process, from its pages: a present page mapped by n processes
/// adds page_size to Rss (hugetlb pages and the zero page do not), to Shared (n > 1) or
/// Private (n == 1), and page_size / n to Pss.
fn expected_smaps_of(
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

fn smaps_matches_the_pages(s: &Scenario, e: &Evidence, j: &mut Judgement) {
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
        if let Some(pss) = x.pss_kb {
            if got.pss_kb.abs_diff(pss) > 1 {
                bad.push(format!("Pss {} kB vs {pss} kB", got.pss_kb));
            }
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

/// Soft-dirty (bit 55) names exactly the pages each process wrote after the fork. A write
/// into a THP can mark the whole huge page soft-dirty (6.12 carries the PMD's dirty bit to
/// every PTE on split): accepted as a quirk, exactly that.
fn soft_dirty_names_the_writers(s: &Scenario, e: &Evidence, j: &mut Judgement) {
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

fn describe_exit(e: Option<&ExitInfo>) -> String {
    match e {
        Some(ExitInfo {
            killed_on_timeout: true,
            ..
        }) => "killed after the timeout".into(),
        Some(ExitInfo {
            signal: Some(s), ..
        }) => format!("signal {s}"),
        Some(ExitInfo { code: Some(c), .. }) => format!("exit code {c}"),
        _ => "unknown".into(),
    }
}

/// Every child exits 0, except one that touches a DONTFORK page after release (SIGSEGV).
fn every_process_ended_as_expected(s: &Scenario, e: &Evidence, j: &mut Judgement) {
    for p in e.procs.iter().skip(1).filter(|p| p.exit_visible) {
        let want_segv = s.advice == ForkAdvice::DontFork
            && s.plan(&p.path).is_some_and(|pl| {
                pl.ops
                    .iter()
                    .any(|o| matches!(o, super::scenarios::Op::TouchAfterRelease { .. }))
            });
        let ok = match &p.exit {
            Some(x) if want_segv => x.signal.as_deref() == Some("SIGSEGV"),
            Some(x) => x.code == Some(0),
            None => false,
        };
        if !ok {
            j.file(Finding::disagree(
                "exits",
                format!(
                    "{} ended with {}, expected {}",
                    p.role,
                    describe_exit(p.exit.as_ref()),
                    if want_segv { "SIGSEGV" } else { "exit code 0" }
                ),
            ));
        }
    }
}

fn head_ok(head: &[u8], want: ExpectedHead) -> bool {
    head.len() >= HEAD
        && head[..8] == want.index.to_le_bytes()
        && head[super::child::STAMP_SIDE_OFFSET] == want.marker
        && want.byte32.is_none_or(|b| head[HEAD / 2] == b)
}

/// Content (read last): every page of every process carries the head its last writer left.
fn every_page_reads_its_last_writer(s: &Scenario, e: &Evidence, j: &mut Judgement) {
    let unit = unit(s, e);
    let mut mismatches = Vec::new();
    let mut checked = false;
    let mut moved = 0;
    let mut unread = Vec::new();
    let mut not_rechecked = Vec::new();
    for p in &e.procs {
        match p.moved_by_reading {
            Some(n) => moved += n,
            None if p.sampled && p.heads.is_some() && e.pfn_visible => {
                not_rechecked.push(p.role.clone())
            }
            None => {}
        }
        let expect = s.expect_for(&p.path, unit);
        let expects_content = p.sampled && (0..p.pages.len()).any(|i| expect.head(i).is_some());
        let Some(h) = &p.heads else {
            // A process whose pages should carry known bytes, but whose memory could not be
            // read (`/proc/<pid>/mem` refused, or it is gone): its content is unproven.
            if expects_content && p.smaps.is_some() {
                unread.push(p.role.clone());
            }
            continue;
        };
        for i in 0..h.len() / HEAD {
            let Some(want) = expect.head(i) else {
                continue;
            };
            checked = true;
            if !head_ok(&h[i * HEAD..(i + 1) * HEAD], want) {
                mismatches.push(format!("{}:{i}", p.role));
            }
        }
    }
    let c = &mut j.content;
    c.pages_moved_by_reading = e.pfn_visible.then_some(moved);
    if checked {
        c.stamps_match = Some(mismatches.is_empty());
    }
    // Which side sees whose writes (first child vs parent).
    let par = e.procs.first().and_then(|p| p.heads.as_ref());
    let first_child = e.procs.get(1).and_then(|p| p.heads.as_ref());
    let child_wrote: Vec<usize> = (0..s.children.len())
        .flat_map(|i| s.written_by(&[i]))
        .collect();
    if let Some(ph) = par {
        if !child_wrote.is_empty() && s.memory != MemoryKind::Seed09a {
            c.parent_sees_child_writes = Some(child_wrote.iter().any(|&pg| {
                pg * HEAD + HEAD <= ph.len()
                    && (ph[pg * HEAD + super::child::STAMP_SIDE_OFFSET]
                        == super::child::side::CHILD
                        || ph[pg * HEAD + HEAD / 2] == super::child::side::CHILD)
            }));
        }
    }
    let parent_wrote = s.written_by(&[]);
    if let Some(ch) = first_child {
        if !parent_wrote.is_empty() {
            c.child_sees_parent_writes = Some(parent_wrote.iter().any(|&pg| {
                pg * HEAD + HEAD <= ch.len()
                    && ch[pg * HEAD + super::child::STAMP_SIDE_OFFSET]
                        == super::child::side::PARENT_AFTER
            }));
        }
        if s.advice == ForkAdvice::WipeOnFork {
            c.child_reads_zero = Some(ch.iter().all(|&b| b == 0));
        }
    }
    if let Some((pd, cd)) = &e.dumps {
        let text = s
            .plan(&[0])
            .and_then(|pl| {
                pl.ops.iter().find_map(|o| match o {
                    super::scenarios::Op::OverwriteSecondMessage { text } => Some(text.clone()),
                    _ => None,
                })
            })
            .unwrap_or_default();
        c.parent_sees_child_writes = Some(pd.contains(&text));
        if !cd.contains(&text) || pd.contains(&text) {
            j.findings.push(Finding::disagree(
                "content",
                "seed-09c: the dumps do not show the child's rewrite on its side only",
            ));
        }
    }
    let private = s.mapping == Mapping::Private;
    let mut found = Vec::new();
    if c.parent_sees_child_writes == Some(private) {
        found.push(format!(
            "the parent {} the child's writes on a {} mapping",
            if private { "sees" } else { "does not see" },
            s.mapping.name()
        ));
    }
    if c.child_sees_parent_writes == Some(true) && private {
        found.push("the child sees the parent's after-fork writes on a private mapping".into());
    }
    if s.advice == ForkAdvice::WipeOnFork && c.child_reads_zero != Some(true) {
        found.push("the WIPEONFORK child does not read zero everywhere".into());
    }
    if !unread.is_empty() {
        j.file(Finding::unproven(
            "content",
            format!(
                "the bytes of {} could not be read (/proc/<pid>/mem refused or the process was gone), so the content check did not run there",
                unread.join(", ")
            ),
        ));
    }
    if !not_rechecked.is_empty() {
        j.file(Finding::unproven(
            "content",
            format!(
                "the page tables of {} could not be read again after the content, so nothing shows the read left them alone",
                not_rechecked.join(", ")
            ),
        ));
    }
    if moved > 0 && e.pfn_visible {
        // Either the read disturbed the evidence (it must not: /proc/<pid>/mem does not pin)
        // or the kernel migrated pages meanwhile (compaction): the sample is not of one
        // moment, so nothing can be proven from it.
        j.file(Finding::unproven(
            "content",
            format!(
                "{moved} page(s) changed frame while the content was read (page migration, or the read disturbed the evidence): the sample is not of one moment"
            ),
        ));
    }
    if !mismatches.is_empty() {
        found.push(format!(
            "pages that do not carry the head of their last writer: {}",
            mismatches
                .iter()
                .take(16)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    mismatches.truncate(16);
    j.content.mismatches = mismatches;
    for f in found {
        j.file(Finding::disagree("content", f));
    }
}

/// vmsplice cases: the pipe must still yield the bytes the pages held before the fork
/// (CVE-2020-29374: a missed COW break lets a write leak into the pipe).
fn the_pipe_keeps_the_pre_fork_bytes(_s: &Scenario, e: &Evidence, j: &mut Judgement) {
    let (Some(got), Some(want)) = (&e.pipe, &e.pipe_expected) else {
        return;
    };
    let same = got == want;
    j.content.pipe_reads_pre_fork_data = Some(same);
    if !same {
        j.file(Finding::disagree(
            "pipe",
            format!(
                "the pipe yields {} bytes that differ from the pre-fork bytes ({} read, {} expected)",
                got.iter().zip(want).filter(|(a, b)| a != b).count()
                    + got.len().abs_diff(want.len()),
                got.len(),
                want.len()
            ),
        ));
    }
}

/// What one write cost: the new frames a writing process holds (against the parent's frames
/// before the fork), times the page size, divided by the pages it wrote; the largest over the
/// writers. Pinned pages copied at fork are counted apart.
fn what_one_write_cost(s: &Scenario, e: &Evidence, j: &mut Judgement) {
    if !e.pfn_visible || s.advice != ForkAdvice::None || s.mapping == Mapping::Shared {
        return;
    }
    let ps = e.page_size as u64;
    let mut best: Option<u64> = None;
    let mut at_fork = 0u64;
    for (idx, p) in e.procs.iter().enumerate() {
        let Some(moved) = j.new_frames[idx] else {
            continue;
        };
        let writes = s.written_by(&p.path).len() as u64;
        if s.pinned() && !p.path.is_empty() {
            at_fork += moved * ps;
            continue;
        }
        if let Some(b) = (moved * ps).checked_div(writes) {
            best = Some(best.map_or(b, |x: u64| x.max(b)));
        }
    }
    j.bytes_copied_by_one_write = best;
    if s.pinned() {
        j.bytes_copied_at_fork = Some(at_fork);
    }
}

fn say_what_hidden_pfns_cost(_s: &Scenario, e: &Evidence, j: &mut Judgement) {
    if !e.pfn_visible {
        j.file(Finding::note(
            "privilege",
            "PFNs are hidden (no CAP_SYS_ADMIN): classes rest on the exclusive bit, bit 61 and smaps, not on PFN equality; who got the new frame and what a write cost are not measured",
        ));
    }
    for n in &e.pipeline_notes {
        j.file(Finding::note("pipeline", n.clone()));
    }
}

/// Class counts of one process's classes.
pub fn counts(classes: &[PageClass]) -> ClassCounts {
    let mut c = ClassCounts::default();
    for &x in classes {
        c.add(x);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fork::classify::PageWitness;
    use crate::fork::evidence::SmapsFigures;
    use crate::fork::scenarios::by_name;

    const PS: usize = 4096;

    /// The judge, on evidence whose content reads exactly what the scenario expects (every
    /// sampled process's heads as its last writer left them, nothing moved while reading):
    /// the tests below are about the page tables. Content itself is tested through
    /// `super::judge` directly.
    fn judge(s: &Scenario, e: &Evidence) -> Judgement {
        let mut e = e.clone();
        let unit = unit(s, &e);
        for p in e.procs.iter_mut().filter(|p| p.sampled) {
            let mut heads = vec![0u8; p.pages.len() * HEAD];
            let expect = s.expect_for(&p.path, unit);
            for i in 0..p.pages.len() {
                if let Some(w) = expect.head(i) {
                    let h = &mut heads[i * HEAD..(i + 1) * HEAD];
                    h[..8].copy_from_slice(&w.index.to_le_bytes());
                    h[crate::fork::child::STAMP_SIDE_OFFSET] = w.marker;
                    if let Some(b) = w.byte32 {
                        h[HEAD / 2] = b;
                    }
                }
            }
            p.heads.get_or_insert(heads);
            p.moved_by_reading.get_or_insert(0);
        }
        super::judge(s, &e)
    }

    #[test]
    fn content_that_could_not_be_read_is_unproven_not_held() {
        let s = by_name("private-child-writes").unwrap();
        let e = child_writes_evidence(true);
        // Every head read as the scenario expects (the wrapper fills them in): it holds.
        assert_eq!(judge(&s, &e).verdict().state, VerdictState::Held);
        // No bytes could be read (/proc/<pid>/mem refused): the content check never ran.
        let mut unread = e.clone();
        for p in &mut unread.procs {
            p.moved_by_reading = Some(0);
        }
        let v = super::judge(&s, &unread).verdict();
        assert_eq!(v.state, VerdictState::Unproven, "{v:?}");
        assert!(
            v.unproven.iter().any(|u| u.contains("could not be read (")),
            "{:?}",
            v.unproven
        );
        // The page tables could not be read again after the content: nothing shows the read
        // left them alone.
        let mut not_rechecked = e.clone();
        not_rechecked.procs[1].heads = Some(vec![0; 16 * HEAD]);
        not_rechecked.procs[1].moved_by_reading = None;
        let v = super::judge(&s, &not_rechecked).verdict();
        assert!(
            v.unproven
                .iter()
                .any(|u| u.contains("could not be read again")),
            "{:?}",
            v.unproven
        );
    }

    fn page(pfn: u64, exclusive: bool) -> PageWitness {
        PageWitness {
            present: true,
            mapped: true,
            pfn: Some(pfn),
            exclusive,
            ..Default::default()
        }
    }

    fn hidden(w: PageWitness) -> PageWitness {
        PageWitness {
            pfn: None,
            mapcount: None,
            ..w
        }
    }

    fn smaps(rss: u64, shared: u64, private: u64, pss: u64) -> Option<SmapsFigures> {
        Some(SmapsFigures {
            rss_kb: rss,
            pss_kb: pss,
            shared_dirty_kb: shared,
            private_dirty_kb: private,
            ..Default::default()
        })
    }

    fn proc_(path: &[usize], pages: Vec<PageWitness>, f: Option<SmapsFigures>) -> ProcessSeen {
        ProcessSeen {
            path: path.to_vec(),
            role: crate::fork::scenarios::role(path),
            pid: 100 + path.len() as i32,
            sampled: true,
            exit: (!path.is_empty()).then(|| ExitInfo {
                code: Some(0),
                ..Default::default()
            }),
            exit_visible: !path.is_empty(),
            smaps: f,
            pages,
            ..Default::default()
        }
    }

    /// private-child-writes on 4 pages: the child copied pages 0-3 of 16; made-up frames.
    fn child_writes_evidence(pfn_visible: bool) -> Evidence {
        let n = 16;
        let before: Vec<_> = (0..n).map(|i| page(1000 + i as u64, true)).collect();
        let parent: Vec<_> = (0..n)
            .map(|i| PageWitness {
                mapcount: Some(if i < 4 { 1 } else { 2 }),
                ..page(1000 + i as u64, i < 4)
            })
            .collect();
        let child: Vec<_> = (0..n)
            .map(|i| {
                if i < 4 {
                    PageWitness {
                        mapcount: Some(1),
                        ..page(2000 + i as u64, true)
                    }
                } else {
                    PageWitness {
                        mapcount: Some(2),
                        ..page(1000 + i as u64, false)
                    }
                }
            })
            .collect();
        let hide = |v: Vec<PageWitness>| -> Vec<PageWitness> {
            if pfn_visible {
                v
            } else {
                v.into_iter().map(hidden).collect()
            }
        };
        Evidence {
            page_size: PS,
            pmd_pages: 512,
            pfn_visible,
            kpage_readable: pfn_visible,
            before: hide(before),
            procs: vec![
                proc_(&[], hide(parent), smaps(64, 48, 16, 40)),
                proc_(&[0], hide(child), smaps(64, 48, 16, 40)),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_check_table_names_each_check_once() {
        let mut names: Vec<_> = CHECKS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CHECKS.len());
    }

    #[test]
    fn a_child_write_seen_by_every_witness_holds() {
        let s = by_name("private-child-writes").unwrap();
        let j = judge(&s, &child_writes_evidence(true));
        let v = j.verdict();
        assert_eq!(v.state, VerdictState::Held, "{:?}", j.findings);
        assert_eq!(counts(&j.classes[1]).copied, 4);
        assert_eq!(j.new_frames, vec![Some(0), Some(4)]);
        assert_eq!(j.bytes_copied_by_one_write, Some(4096));
        assert!(v.evidence.contains(&"kpagecount".to_string()));
    }

    #[test]
    fn hidden_pfns_prove_the_copies_by_the_exclusive_bit_and_note_it() {
        let s = by_name("private-child-writes").unwrap();
        let j = judge(&s, &child_writes_evidence(false));
        let v = j.verdict();
        assert_eq!(v.state, VerdictState::Held, "{:?}", j.findings);
        assert!(!v.evidence.contains(&"pfn".to_string()));
        assert_eq!(
            v.notes.len(),
            1,
            "the privilege note, which changes nothing"
        );
        assert_eq!(
            j.bytes_copied_by_one_write, None,
            "not measured without PFNs"
        );
    }

    #[test]
    fn a_copy_where_none_was_expected_fails() {
        let s = by_name("private-idle").unwrap();
        let j = judge(&s, &child_writes_evidence(true));
        let v = j.verdict();
        assert_eq!(v.state, VerdictState::Failed);
        assert!(
            v.disagreements
                .iter()
                .any(|d| d.starts_with("classes: child page 0"))
        );
        assert!(v.disagreements.iter().any(|d| d.starts_with("new_frames:")));
    }

    #[test]
    fn an_undecidable_page_is_unproven_not_failed() {
        let s = by_name("many-children").unwrap();
        // Three processes, PFNs hidden, no exclusive bits: shared cannot be proven.
        let w = hidden(page(1, false));
        let e = Evidence {
            page_size: PS,
            pmd_pages: 512,
            before: vec![w; 16],
            procs: vec![
                proc_(&[], vec![w; 16], None),
                proc_(&[0], vec![w; 16], None),
                proc_(&[1], vec![w; 16], None),
            ],
            ..Default::default()
        };
        let mut s3 = s.clone();
        s3.children.truncate(2);
        s3.children.iter_mut().for_each(|c| c.ops.clear());
        let v = judge(&s3, &e).verdict();
        assert_eq!(v.state, VerdictState::Unproven);
        assert!(!v.holds && v.agree);
        assert!(
            v.unproven[0].contains("could not be decided"),
            "{:?}",
            v.unproven
        );
    }

    #[test]
    fn a_kpagecount_that_does_not_count_our_mappings_disagrees() {
        let s = by_name("private-child-writes").unwrap();
        let mut e = child_writes_evidence(true);
        e.procs[0].pages[9].mapcount = Some(3);
        let v = judge(&s, &e).verdict();
        assert_eq!(v.state, VerdictState::Failed);
        assert!(v.disagreements[0].starts_with("kpagecount: kpagecount of PFN 0x3f1 is 3"));
    }

    #[test]
    fn smaps_off_by_a_page_disagrees() {
        let s = by_name("private-child-writes").unwrap();
        let mut e = child_writes_evidence(true);
        e.procs[1].smaps = smaps(64, 44, 20, 40);
        let v = judge(&s, &e).verdict();
        assert!(
            v.disagreements
                .iter()
                .any(|d| d.contains("child smaps disagrees"))
        );
    }

    /// thp-child-writes on a kernel whose bit 56 follows the head page: the same fact is a
    /// kernel quirk with PFNs (kpagecount says so) and without (smaps says so).
    fn thp_evidence(pfn_visible: bool) -> Evidence {
        let n = 512;
        let head_excl = true;
        let thp = |pfn: u64, exclusive: bool, mapcount: u64, pmd: bool| PageWitness {
            thp: pfn_visible.then_some(true),
            pmd_mapped: pmd,
            mapcount: pfn_visible.then_some(mapcount),
            pfn: pfn_visible.then_some(pfn),
            ..page(pfn, exclusive)
        };
        let before: Vec<_> = (0..n)
            .map(|i| thp(4096 + i as u64, true, 1, true))
            .collect();
        let parent: Vec<_> = (0..n)
            .map(|i| thp(4096 + i as u64, head_excl, if i == 0 { 1 } else { 2 }, true))
            .collect();
        let child: Vec<_> = (0..n)
            .map(|i| {
                if i == 0 {
                    PageWitness {
                        thp: pfn_visible.then_some(false),
                        mapcount: pfn_visible.then_some(1),
                        pfn: pfn_visible.then_some(9),
                        ..page(9, true)
                    }
                } else {
                    thp(4096 + i as u64, false, 2, false)
                }
            })
            .collect();
        Evidence {
            page_size: PS,
            pmd_pages: 512,
            pfn_visible,
            kpage_readable: pfn_visible,
            before,
            procs: vec![
                proc_(&[], parent, smaps(2048, 2044, 4, 1026)),
                proc_(&[0], child, smaps(2048, 2044, 4, 1026)),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn bit_56_following_the_head_page_is_the_same_quirk_with_and_without_pfns() {
        let s = by_name("thp-child-writes").unwrap();
        for visible in [true, false] {
            let j = judge(&s, &thp_evidence(visible));
            let v = j.verdict();
            assert_eq!(
                v.kernel_quirks.len(),
                1,
                "visible={visible}: {:?}",
                j.findings
            );
            assert!(v.kernel_quirks[0].contains("follows the THP's head page"));
            assert!(
                v.disagreements.is_empty(),
                "visible={visible}: {:?}",
                v.disagreements
            );
            if visible {
                assert_eq!(v.state, VerdictState::Held);
                assert_eq!(j.bytes_copied_by_one_write, Some(4096));
            } else {
                // The parent's PMD-mapped bits decide nothing: unproven, never failed.
                assert_eq!(v.state, VerdictState::Unproven);
            }
        }
    }

    #[test]
    fn a_write_to_the_huge_zero_page_may_replace_the_whole_unit() {
        let s = by_name("huge-zero-page-child-writes").unwrap();
        let n = 512;
        let zero = |i: usize| PageWitness {
            zero_page: Some(true),
            file_or_shared: true,
            mapcount: Some(0),
            pmd_mapped: true,
            ..page(77_000 + i as u64, false)
        };
        let mk = |child_new: &dyn Fn(usize) -> bool| Evidence {
            page_size: PS,
            pmd_pages: 512,
            pfn_visible: true,
            kpage_readable: true,
            before: (0..n).map(zero).collect(),
            procs: vec![
                proc_(&[], (0..n).map(zero).collect(), smaps(0, 0, 0, 0)),
                proc_(
                    &[0],
                    (0..n)
                        .map(|i| {
                            if child_new(i) {
                                PageWitness {
                                    mapcount: Some(1),
                                    zero_page: Some(false),
                                    ..page(5000 + i as u64, true)
                                }
                            } else {
                                PageWitness {
                                    pmd_mapped: false,
                                    ..zero(i)
                                }
                            }
                        })
                        .collect(),
                    None,
                ),
            ],
            ..Default::default()
        };
        // 6.13+: a whole new THP.
        let j = judge(&s, &mk(&|_| true));
        assert_eq!(j.verdict().state, VerdictState::Held, "{:?}", j.findings);
        assert_eq!(j.bytes_copied_by_one_write, Some(2 << 20));
        assert!(j.verdict().kernel_quirks[0].contains("whole new huge page"));
        // Older kernels: one page.
        let j = judge(&s, &mk(&|i| i == 0));
        assert_eq!(j.verdict().state, VerdictState::Held, "{:?}", j.findings);
        assert_eq!(j.bytes_copied_by_one_write, Some(4096));
        // What 6.1 and 6.12 do: split the PMD; the written page gets a frame, the other 511
        // map the one 4 KiB zero page (other frames than the huge zero page's, nothing copied).
        let mut split = mk(&|i| i == 0);
        for w in split.procs[1].pages.iter_mut().skip(1) {
            w.pfn = Some(0x3b34);
        }
        let j = judge(&s, &split);
        assert_eq!(j.verdict().state, VerdictState::Held, "{:?}", j.findings);
        assert_eq!(j.new_frames[1], Some(1));
        assert_eq!(j.bytes_copied_by_one_write, Some(4096));
        // Anything between is a disagreement.
        let j = judge(&s, &mk(&|i| i < 3));
        assert_eq!(j.verdict().state, VerdictState::Failed);
    }

    #[test]
    fn soft_dirty_names_the_writers_and_knows_two_kernel_behaviours() {
        let s = by_name("private-child-writes").unwrap();
        let mut e = child_writes_evidence(true);
        e.soft_dirty_tracked = true;
        for (i, w) in e.procs[1].pages.iter_mut().enumerate() {
            w.soft_dirty = i < 4;
        }
        let j = judge(&s, &e);
        assert_eq!(j.verdict().state, VerdictState::Held, "{:?}", j.findings);
        assert_eq!(j.written_since_fork, vec![Some(0), Some(4)]);
        e.procs[0].pages[7].soft_dirty = true;
        assert_eq!(judge(&s, &e).verdict().state, VerdictState::Failed);

        // clear_refs does not write-protect DMA-pinned pages: all stay soft-dirty.
        let s = by_name("iouring-fixed-buffer-fork").unwrap();
        let mut e = child_writes_evidence(true);
        e.soft_dirty_tracked = true;
        for w in e.procs[0].pages.iter_mut() {
            w.soft_dirty = true;
        }
        let j = judge(&s, &e);
        assert!(
            j.findings.iter().any(|f| matches!(f, Finding::KernelQuirk { check, detail } if check == "soft_dirty" && detail.contains("DMA-pinned"))),
            "{:?}",
            j.findings
        );
    }

    #[test]
    fn a_pipe_that_yields_the_parents_new_bytes_is_a_leak() {
        let s = by_name("private-child-writes").unwrap();
        let mut e = child_writes_evidence(true);
        e.pipe_expected = Some(vec![b'P'; 8]);
        e.pipe = Some(vec![b'Q'; 8]);
        let j = judge(&s, &e);
        assert_eq!(j.content.pipe_reads_pre_fork_data, Some(false));
        assert_eq!(j.verdict().state, VerdictState::Failed);
    }

    #[test]
    fn a_child_that_never_reported_fails_the_verdict() {
        let s = by_name("private-child-writes").unwrap();
        let mut e = child_writes_evidence(true);
        e.procs[1].sampled = false;
        e.procs[1].exit = Some(ExitInfo {
            killed_on_timeout: true,
            ..Default::default()
        });
        let v = judge(&s, &e).verdict();
        assert_eq!(v.state, VerdictState::Failed);
        assert!(v.disagreements[0].contains("never reported ready"));
    }

    #[test]
    fn findings_not_text_decide_the_verdict() {
        let f = vec![Finding::note("x", "PFNs are hidden? not important")];
        assert_eq!(
            Verdict::from_findings(&f, vec![], true).state,
            VerdictState::Held
        );
        let f = vec![Finding::quirk("x", "anything")];
        assert_eq!(
            Verdict::from_findings(&f, vec![], true).state,
            VerdictState::Held
        );
        let f = vec![Finding::unproven("x", "no"), Finding::note("y", "z")];
        assert_eq!(
            Verdict::from_findings(&f, vec![], true).state,
            VerdictState::Unproven
        );
        let f = vec![Finding::unproven("x", "no"), Finding::disagree("y", "z")];
        assert_eq!(
            Verdict::from_findings(&f, vec![], true).state,
            VerdictState::Failed
        );
    }
}
