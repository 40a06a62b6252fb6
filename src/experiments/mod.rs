//! The seed's open questions as experiments, each with a verdict and evidence.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::report::Envelope;

/// Options shared by the experiments.
#[derive(Debug, Clone, Default)]
pub struct ExperimentOptions {
    /// Allow changing (and restoring) settings under /sys.
    pub allow_sysfs: bool,
}

/// The body of an experiment document.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExperimentBody {}

impl ExperimentBody {
    /// Whether the verdict held (a skip holds).
    pub fn holds(&self) -> bool {
        false
    }
}

/// A whole experiment document.
pub type ExperimentReport = Envelope<ExperimentBody>;

/// Every experiment name with a one-line description.
pub fn list() -> Vec<(&'static str, &'static str)> {
    Vec::new()
}

/// Run one experiment.
///
/// # Errors
/// Unknown name (usage).
pub fn run(name: &str, _opts: &ExperimentOptions) -> Result<ExperimentReport> {
    Err(Error::usage(format!("unknown experiment '{name}'")))
}

/// Run every experiment.
///
/// # Errors
/// Not built yet.
pub fn run_all(_opts: &ExperimentOptions) -> Result<ExperimentReport> {
    Err(Error::usage("experiments are not built yet"))
}
