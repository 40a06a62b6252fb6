//! Writing results: stdout, or a file replaced atomically (tempfile in the same directory,
//! then rename), so a failed run never leaves a half-written or clobbered result.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Write `contents` to `path` atomically: a temporary file beside it, fsync, then rename.
///
/// # Errors
/// Returns [`Error::Io`] naming the path when the directory is missing or not writable.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let ctx = || format!("writing {}", path.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".cowscope-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(ctx(), e))?;
    tmp.write_all(contents).map_err(|e| Error::io(ctx(), e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(ctx(), e))?;
    tmp.persist(path).map_err(|e| Error::io(ctx(), e.error))?;
    Ok(())
}

/// Serialise `value` as pretty JSON with a trailing newline.
///
/// # Errors
/// Only if serialisation fails, which our own types never do.
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    Ok(s)
}

/// Emit `text` to `out` (atomically) or to stdout.
///
/// # Errors
/// I/O errors writing the file or stdout.
pub fn emit(text: &str, out: Option<&Path>) -> Result<()> {
    match out {
        Some(p) => write_atomic(p, text.as_bytes()),
        None => {
            let mut so = std::io::stdout().lock();
            so.write_all(text.as_bytes())
                .map_err(|e| Error::io("writing stdout", e))?;
            so.flush().map_err(|e| Error::io("writing stdout", e))
        }
    }
}
