//! PID 1 inside a test VM (scripts/kernel-matrix.sh): mount /proc and /sys, collect, print the
//! JSON between markers on the console, power off.

use crate::error::{Error, Result};

/// Run as init. Only returns on error.
///
/// # Errors
/// Not built yet.
pub fn run_as_init() -> Result<i32> {
    Err(Error::usage("guest-init is not built yet"))
}
