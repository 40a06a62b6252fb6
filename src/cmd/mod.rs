//! The commands. Each module holds one command's clap arguments and its `run`: check the
//! options, run the producer, wrap the body in an [`Envelope`](crate::doc::Envelope) with this
//! machine's [`SystemInfo`](crate::mem::system::SystemInfo), render it in the format asked,
//! emit it (stdout, or a file written atomically) and return the exit code
//! ([`crate::error`]'s `EXIT_*`). `main.rs` only parses and dispatches.

pub mod baseline;
pub mod compare;
pub mod experiment;
pub mod fork_report;
pub mod guest;
pub mod inspect;
pub mod pages;
pub mod schema;
pub mod trace;

use crate::error::{Error, Result};

/// Parse a whole number given as text, naming the option in the error.
///
/// # Errors
/// [`Error::Usage`] naming `what` and the text given.
pub fn parse_number<T: std::str::FromStr>(what: &str, s: &str) -> Result<T> {
    s.trim()
        .parse::<T>()
        .map_err(|_| Error::usage(format!("{what} must be a whole number, got '{s}'")))
}

/// The formats of a document with no picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DocFormat {
    /// One JSON document.
    Json,
    /// A table for people.
    Table,
}
