//! One error type for the whole tool, and the exit code each kind maps to.

use std::io;

/// Exit code: every verdict held.
pub const EXIT_OK: i32 = 0;
/// Exit code: the run completed but at least one verdict failed.
pub const EXIT_VERDICT_FAILED: i32 = 1;
/// Exit code: bad usage or bad input (unknown name, malformed range, unreadable pid...).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the run completed but a claim could not be proven: the kernel hides the
/// evidence from this user (PFNs need CAP_SYS_ADMIN) or lacks the feature. Never a pass.
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
    /// A pid that names no memory to read (no such process, a zombie, a kernel thread).
    #[error("{0}")]
    NotReadable(#[from] crate::mem::process::NotReadable),
    /// A privilege or kernel feature the command needs is missing (exit 3): e.g. ptrace
    /// refused for another user's process or by Yama.
    #[error("{0}")]
    Privilege(String),
    /// A stop signal (SIGINT, SIGTERM, SIGHUP) ended the run at a safe point; whatever the run
    /// changed was restored and no document was written. Exit code 128 + the signal.
    #[error(
        "stopped by signal {0} before the report was complete; every setting cowscope changed was restored and nothing was written"
    )]
    Interrupted(i32),
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

    /// A failure reading `/proc/<pid>/<file>` after the process was found, as one sentence a
    /// user can act on: the process exited while it was being read (ESRCH, ENOENT, or a
    /// pagemap read cut short), or the kernel refused access (and why); anything else keeps
    /// the OS error.
    pub fn process_io(pid: i32, file: &str, e: io::Error) -> Self {
        use crate::mem::process;
        // ESRCH: the kernel found the task but not its memory (exiting, or a zombie). ENOENT
        // or a short read: gone, unless the process is still there and alive (then it is
        // some other problem, kept as it is).
        let gone = e.raw_os_error() == Some(libc::ESRCH)
            || (matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof
            ) && !process::stat(pid).is_ok_and(|s| !s.is_zombie()));
        if gone {
            return Error::Usage(format!("process {pid} exited while it was being read"));
        }
        if e.kind() == io::ErrorKind::PermissionDenied {
            return Error::Usage(format!(
                "cannot read /proc/{pid}/{file}: permission denied: {}",
                process::why_denied(pid)
            ));
        }
        Error::io(format!("reading /proc/{pid}/{file}"), e)
    }

    /// Build an [`Error::Usage`].
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::NotReadable(_) => EXIT_USAGE,
            Error::Interrupted(sig) => 128 + sig,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esrch_from_a_reaped_process_reads_as_exited_mid_read() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("true runs");
        let pid = child.id() as i32;
        child.wait().expect("reaped");
        let e = Error::process_io(pid, "pagemap", io::Error::from_raw_os_error(libc::ESRCH));
        assert_eq!(
            e.to_string(),
            format!("process {pid} exited while it was being read")
        );
        assert_eq!(e.exit_code(), EXIT_USAGE);
    }

    #[test]
    fn permission_denied_says_why() {
        let me = std::process::id() as i32;
        let e = Error::process_io(me, "pagemap", io::Error::from_raw_os_error(libc::EACCES));
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "cannot read /proc/{me}/pagemap: permission denied: "
            )),
            "{msg}"
        );
        // The reason is a clause after the colon, whatever this machine's reason is.
        assert!(msg.len() > 60, "{msg}");
    }
}
