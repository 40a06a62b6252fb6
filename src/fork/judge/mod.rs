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

use super::classify::{Basis, ClassCounts, PageClass};
use super::evidence::{Evidence, PfnMap, ProcessSeen};
use super::scenarios::Scenario;

mod classes;
mod content;
mod exits;
mod frames;
mod kpage;
mod smaps;
mod soft_dirty;

pub use smaps::ExpectedSmaps;

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
    ("processes", exits::every_process_was_sampled),
    ("classes", classes::classes_match_first_principles),
    ("new_frames", frames::the_expected_side_got_the_new_frame),
    ("kpagecount", kpage::kpagecount_counts_our_mappings),
    ("exclusive_bit", kpage::exclusive_bit_means_one_mapper),
    ("smaps", smaps::smaps_matches_the_pages),
    ("soft_dirty", soft_dirty::soft_dirty_names_the_writers),
    ("exits", exits::every_process_ended_as_expected),
    ("content", content::every_page_reads_its_last_writer),
    ("pipe", content::the_pipe_keeps_the_pre_fork_bytes),
    ("cost", frames::what_one_write_cost),
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
mod tests;
