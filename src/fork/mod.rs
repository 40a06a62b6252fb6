//! The fork orchestrator: scenario -> run -> observations -> page classes -> verdict.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::report::Envelope;

/// What `fork-report` was asked.
#[derive(Debug, Clone)]
pub struct ForkReportOptions {
    /// Scenario names; empty means the whole catalogue.
    pub scenarios: Vec<String>,
    /// Scale the 16-page scenarios.
    pub pages: Option<usize>,
    /// Kill a child that has not reported by then.
    pub timeout: Duration,
    /// Timing runs per scenario.
    pub runs: usize,
}

/// The body of a fork report.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ForkReportBody {}

impl ForkReportBody {
    /// Whether every scenario's verdict held (skips count as holding).
    pub fn all_verdicts_hold(&self) -> bool {
        false
    }
}

/// A whole fork report.
pub type ForkReport = Envelope<ForkReportBody>;

/// Run the scenarios.
///
/// # Errors
/// Not built yet.
pub fn fork_report(_opts: &ForkReportOptions) -> Result<ForkReport> {
    Err(Error::usage("fork-report is not built yet"))
}
