//! Whether a process is still the one we planned to read, and the one sentence for a process
//! that vanished. Refusals (permission) are explained by
//! [`Error::process_io`](crate::error::Error::process_io) and
//! [`mem::process::why_denied`](crate::mem::process::why_denied), the one place for them.

use crate::mem::process::{self, Stat};

/// "process N exited while it was being read" (the wording of
/// [`Error::process_io`](crate::error::Error::process_io)).
pub fn exited(pid: i32) -> String {
    format!("process {pid} exited while it was being read")
}

/// Whether the process `t` describes still exists and has memory: same pid and start time
/// (so not a reused pid), not a zombie.
pub fn still_alive(t: &Stat) -> bool {
    process::stat(t.pid).is_ok_and(|now| now.start_time == t.start_time && !now.is_zombie())
}
