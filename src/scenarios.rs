//! The named scenario catalogue. Names are stable: tests, results and scripts use them.

/// Every scenario name with a one-line description.
pub fn list() -> Vec<(&'static str, &'static str)> {
    Vec::new()
}
