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
    // tempfile creates 0600; the result should have the mode a plain create would give it
    // (or keep the mode of the file it replaces).
    let mode = match std::fs::metadata(path) {
        Ok(m) => std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777,
        Err(_) => 0o666 & !umask(),
    };
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| Error::io(ctx(), e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(ctx(), e))?;
    tmp.persist(path).map_err(|e| Error::io(ctx(), e.error))?;
    Ok(())
}

/// This process's umask, from /proc/self/status (reading it with umask(2) would change it,
/// racing with other threads); 022 when unknown.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_gives_a_new_file_the_umask_mode_and_keeps_an_old_files_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        write_atomic(&p, b"{}").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask(), "not tempfile's 0600");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"[]").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"[]");
    }
}
