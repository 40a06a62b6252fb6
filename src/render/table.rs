//! Plain-text tables.

use crate::fork::ForkReport;

/// A human table of a fork report.
pub fn fork_report(_r: &ForkReport) -> String {
    String::new()
}
