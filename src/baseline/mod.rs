//! The seed's reference programs (09a, 09b, 09b-overflow) replayed on the arena engine.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::report::Envelope;

/// One of the seed's reference cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BaselineCase {
    /// 09a: a 4096-byte arena and three 64-byte blocks.
    #[serde(rename = "09a")]
    A09,
    /// 09b: 256 bytes, 32-byte blocks, a leak and a near-overflow.
    #[serde(rename = "09b")]
    B09,
    /// 09b with a write that really crosses into the next block.
    #[serde(rename = "09b-overflow")]
    B09Overflow,
}

impl BaselineCase {
    /// Every case with its stable name.
    pub const ALL: [(&'static str, BaselineCase); 3] = [
        ("09a", BaselineCase::A09),
        ("09b", BaselineCase::B09),
        ("09b-overflow", BaselineCase::B09Overflow),
    ];
}

impl std::str::FromStr for BaselineCase {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                Error::usage(format!(
                    "unknown baseline case '{s}'; expected one of: 09a, 09b, 09b-overflow"
                ))
            })
    }
}

/// The body of a baseline document.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BaselineBody {
    /// The case's stable name.
    pub case: String,
}

impl BaselineBody {
    /// A transcript in the spirit of the seed's log.
    pub fn transcript(&self) -> String {
        String::new()
    }
}

/// A whole baseline document.
pub type BaselineReport = Envelope<BaselineBody>;

/// Replay `case`.
///
/// # Errors
/// Not built yet.
pub fn run(_case: BaselineCase) -> Result<BaselineReport> {
    Err(Error::usage("baseline is not built yet"))
}
