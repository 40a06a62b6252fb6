//! The seed's open questions as experiments, each with a verdict and evidence.
//!
//! Every experiment is one file in this folder exporting
//! `pub fn run(opts: &ExperimentOptions) -> crate::Result<Outcome>`, registered once in
//! [`REGISTRY`]. An experiment measures, then states a verdict backed by evidence; a missing
//! precondition is a skip with its reason, never a pass.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub mod double_release;
pub mod overlapping_arenas;
pub mod resize;
pub mod stale_reset;
pub mod threads;
pub mod use_after_unmap;

pub mod fork_with_threads;
pub mod ignored_error;
pub mod ksm;
pub mod overflow_tools;
pub mod stdio_at_fork;
pub mod thp_sizes;

/// Options shared by the experiments.
#[derive(Debug, Clone, Default)]
pub struct ExperimentOptions {
    /// Allow changing (and restoring) settings under /sys.
    pub allow_sysfs: bool,
}

/// The verdict of one experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExperimentVerdict {
    /// One sentence saying what was shown (or why it was skipped).
    pub sentence: String,
    /// `true` the claim held, `false` it did not; absent when skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds: Option<bool>,
    /// Why the experiment was skipped (a missing feature or setting), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Why the claim could not be proven with the evidence this user may read (PFNs and the
    /// kpage files need CAP_SYS_ADMIN), if so. Never a pass: the command exits 3.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unproven: Option<String>,
}

/// What an experiment returns: its verdict and its evidence (addresses, signals, PFNs,
/// bytes...) as free-form JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Outcome {
    /// The verdict.
    pub verdict: ExperimentVerdict,
    /// The evidence behind it.
    pub evidence: serde_json::Value,
}

impl Outcome {
    /// A verdict that held or not, with evidence.
    pub fn verdict(holds: bool, sentence: impl Into<String>, evidence: serde_json::Value) -> Self {
        Outcome {
            verdict: ExperimentVerdict {
                sentence: sentence.into(),
                holds: Some(holds),
                skipped: None,
                unproven: None,
            },
            evidence,
        }
    }

    /// A skip for a missing precondition.
    pub fn skipped(reason: impl Into<String>, evidence: serde_json::Value) -> Self {
        let reason = reason.into();
        Outcome {
            verdict: ExperimentVerdict {
                sentence: format!("skipped: {reason}"),
                holds: None,
                skipped: Some(reason),
                unproven: None,
            },
            evidence,
        }
    }

    /// Not provable here for lack of privilege (PFNs or kpage files hidden).
    pub fn unproven(reason: impl Into<String>, evidence: serde_json::Value) -> Self {
        let reason = reason.into();
        Outcome {
            verdict: ExperimentVerdict {
                sentence: format!("unproven: {reason}"),
                holds: None,
                skipped: None,
                unproven: Some(reason),
            },
            evidence,
        }
    }

    /// Whether this outcome counts as holding (a skip does; an unproven claim does not).
    pub fn holds(&self) -> bool {
        self.verdict
            .holds
            .unwrap_or(self.verdict.unproven.is_none())
    }
}

/// One experiment's result in a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExperimentResult {
    /// Stable name.
    pub name: String,
    /// One line describing it.
    pub description: String,
    /// The verdict.
    pub verdict: ExperimentVerdict,
    /// The evidence.
    pub evidence: serde_json::Value,
}

/// The body of an experiment document: one experiment's fields at the top level
/// (`cowscope experiment NAME`), or `experiments: [...]` for `--all`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ExperimentBody {
    /// A single experiment.
    One(ExperimentResult),
    /// Every experiment.
    All {
        /// The results, in registry order.
        experiments: Vec<ExperimentResult>,
    },
}

impl ExperimentBody {
    /// The results, one or all.
    pub fn results(&self) -> &[ExperimentResult] {
        match self {
            ExperimentBody::One(r) => std::slice::from_ref(r),
            ExperimentBody::All { experiments } => experiments,
        }
    }

    /// Whether every verdict held (a skip holds; an unproven claim does not).
    pub fn holds(&self) -> bool {
        self.results()
            .iter()
            .all(|r| r.verdict.holds.unwrap_or(r.verdict.unproven.is_none()))
    }

    /// The exit code: 1 when a verdict failed, else 3 when a claim was unproven, else 0.
    pub fn exit_code(&self) -> i32 {
        let rs = self.results();
        if rs.iter().any(|r| r.verdict.holds == Some(false)) {
            crate::error::EXIT_VERDICT_FAILED
        } else if rs.iter().any(|r| r.verdict.unproven.is_some()) {
            crate::error::EXIT_UNPROVEN
        } else {
            crate::error::EXIT_OK
        }
    }
}

/// An experiment's entry point.
pub type RunFn = fn(&ExperimentOptions) -> Result<Outcome>;

/// Every experiment: stable name, one-line description, entry point. Order is report order.
pub const REGISTRY: &[(&str, &str, RunFn)] = &[
    (
        "use-after-unmap",
        "a child touching a released arena dies of SIGSEGV at the arena's base (si_addr)",
        use_after_unmap::run,
    ),
    (
        "overlapping-arenas",
        "mmap MAP_FIXED over a live arena silently replaces its pages; MAP_FIXED_NOREPLACE refuses with EEXIST",
        overlapping_arenas::run,
    ),
    (
        "stale-reset",
        "reset without zeroing leaves old bytes readable through new blocks; with zeroing it does not",
        stale_reset::run,
    ),
    (
        "threads",
        "the single-threaded arena is !Sync; an atomic-offset arena never hands out overlapping blocks to 2 threads x 10^6 allocations",
        threads::run,
    ),
    (
        "resize",
        "growing the arena with mremap(MREMAP_MAYMOVE) can move it: old addresses dangle; the engine reports old and new base",
        resize::run,
    ),
    (
        "double-release",
        "releasing a block or the arena twice is detected and reported, not undefined behaviour",
        double_release::run,
    ),
    (
        "ignored-error",
        "allocation past capacity is an Err the caller cannot silently drop (#[must_use]); reports the error and its offset",
        ignored_error::run,
    ),
    (
        "overflow-tools",
        "the 09b-style overflow caught three ways: red zones, a guard page (SIGSEGV in a child), valgrind memcheck",
        overflow_tools::run,
    ),
    (
        "stdio-at-fork",
        "a buffered line written before fork appears twice when stdout is a pipe; flushing first prevents it",
        stdio_at_fork::run,
    ),
    (
        "fork-with-threads",
        "only the forking thread exists in the child; a lock another thread held at fork time stays locked there (shown with a timeout)",
        fork_with_threads::run,
    ),
    (
        "thp-sizes",
        "for each anonymous THP size, how many bytes one child write makes the kernel copy (needs --allow-sysfs)",
        thp_sizes::run,
    ),
    (
        "ksm",
        "two identical arenas merged by KSM share one PFN; a write un-merges it (a COW break)",
        ksm::run,
    ),
];

/// Every experiment name with a one-line description.
pub fn list() -> Vec<(&'static str, &'static str)> {
    REGISTRY.iter().map(|(n, d, _)| (*n, *d)).collect()
}

fn run_entry(
    name: &str,
    description: &str,
    f: RunFn,
    opts: &ExperimentOptions,
) -> Result<ExperimentResult> {
    let o = f(opts)?;
    Ok(ExperimentResult {
        name: name.into(),
        description: description.into(),
        verdict: o.verdict,
        evidence: o.evidence,
    })
}

/// Run one experiment.
///
/// # Errors
/// Unknown name (usage), or a setup failure the experiment could not turn into a verdict.
pub fn run(name: &str, opts: &ExperimentOptions) -> Result<ExperimentBody> {
    let (n, d, f) = REGISTRY
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| {
            let names: Vec<_> = REGISTRY.iter().map(|(n, _, _)| *n).collect();
            Error::usage(format!(
                "unknown experiment '{name}'; expected one of: {}",
                names.join(", ")
            ))
        })?;
    let r = run_entry(n, d, *f, opts)?;
    Ok(ExperimentBody::One(r))
}

/// Run every experiment.
///
/// # Errors
/// A setup failure an experiment could not turn into a verdict.
pub fn run_all(opts: &ExperimentOptions) -> Result<ExperimentBody> {
    run_all_with(opts, &crate::progress::Progress::hidden())
}

/// [`run_all`], saying on `progress` which experiment (i/N) runs.
///
/// # Errors
/// As [`run_all`].
pub fn run_all_with(
    opts: &ExperimentOptions,
    progress: &crate::progress::Progress,
) -> Result<ExperimentBody> {
    let mut experiments = Vec::new();
    for (i, (n, d, f)) in REGISTRY.iter().enumerate() {
        progress.line(format!("experiment {}/{} {n}", i + 1, REGISTRY.len()));
        experiments.push(run_entry(n, d, *f, opts)?);
    }
    Ok(ExperimentBody::All { experiments })
}
