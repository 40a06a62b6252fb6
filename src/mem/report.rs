//! `cowscope pages`: the evidence for a range (or every VMA) of one process, as JSON.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::report::Envelope;

/// What `cowscope pages` was asked.
#[derive(Debug, Clone)]
pub struct PagesRequest {
    /// The process.
    pub pid: i32,
    /// `[start, end)` in bytes, or every VMA.
    pub range: Option<(u64, u64)>,
    /// Add a row per page.
    pub per_page: bool,
    /// Never use PAGEMAP_SCAN.
    pub force_fallback: bool,
}

/// The body of a pages document.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PagesBody {
    /// The process inspected.
    pub pid: i32,
}

/// A whole pages document.
pub type PagesReport = Envelope<PagesBody>;

/// Parse `START-END` (hex, `0x` optional).
///
/// # Errors
/// Malformed or reversed ranges are usage errors.
pub fn parse_range(s: &str) -> Result<(u64, u64)> {
    Err(Error::usage(format!("cannot parse range '{s}' yet")))
}

/// Collect the evidence.
///
/// # Errors
/// Not built yet.
pub fn pages(_req: &PagesRequest) -> Result<PagesReport> {
    Err(Error::usage("pages is not built yet"))
}
