//! One error type for the whole tool, and the exit code each kind maps to.

use std::io;

/// Exit code: every verdict held.
pub const EXIT_OK: i32 = 0;
/// Exit code: the run completed but at least one verdict failed.
pub const EXIT_VERDICT_FAILED: i32 = 1;
/// Exit code: bad usage or bad input (unknown name, malformed range, unreadable pid...).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: could not prove: a privilege or kernel feature the evidence needs is missing.
pub const EXIT_UNPROVEN: i32 = 3;

/// Everything that can stop a cowscope command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user asked for something that cannot be done as asked (exit 2).
    #[error("{0}")]
    Usage(String),
    /// An operating-system call failed; `context` says what cowscope was doing.
    #[error("{context}: {source}")]
    Io {
        /// What was being attempted, e.g. "reading /proc/42/smaps".
        context: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// The arena engine refused an operation.
    #[error(transparent)]
    Arena(#[from] crate::arena::ArenaError),
    /// A privilege or kernel feature the command needs is missing (exit 3), e.g. ptrace
    /// refused by Yama or for another user's process.
    #[error("{0}")]
    Privilege(String),
    /// A serialisation step failed (should not happen for our own types).
    #[error("serialising JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// Build an [`Error::Io`] from a context sentence and an OS error.
    pub fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Build an [`Error::Usage`].
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Privilege(_) => EXIT_UNPROVEN,
            // Failing to read a process the user named is bad input; anything else is too,
            // since no verdict was reached. Verdict failures are not errors: they are reports
            // whose `verdict` says so, and the CLI maps them to EXIT_VERDICT_FAILED.
            Error::Io { .. } | Error::Arena(_) | Error::Json(_) => EXIT_USAGE,
        }
    }
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
