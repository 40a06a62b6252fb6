//! `cowscope compare`: fork reports from several kernels side by side.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// A scenario x kernel table of the figures that matter.
///
/// # Errors
/// Unreadable or invalid files.
pub fn compare_files(_files: &[PathBuf]) -> Result<String> {
    Err(Error::usage("compare is not built yet"))
}
