//! Writing results: stdout, or a file replaced atomically (tempfile in the same directory,
//! then rename), so a failed run never leaves a half-written or clobbered result.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Most symbolic links followed for one `--out` path (the kernel's own limit is 40).
const MAX_SYMLINKS: usize = 40;

/// Where `--out` really writes: `path` with every symbolic link followed (a dangling link
/// names the file to create), and what is there now.
fn resolve(path: &Path) -> std::io::Result<(std::path::PathBuf, Option<std::fs::Metadata>)> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            Ok(m) => return Ok((p, Some(m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((p, None)),
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::ELOOP))
}

/// The error without the temporary file's name, which tempfile adds to its messages and which
/// means nothing to the user (the message names the user's path instead): the OS error of the
/// directory when that is the problem, else the kind alone.
fn plain(e: std::io::Error, dir: &Path) -> std::io::Error {
    if e.raw_os_error().is_some() {
        return e;
    }
    match std::fs::metadata(dir) {
        Err(d) => d,
        Ok(_) => std::io::Error::from(e.kind()),
    }
}

/// Write `contents` to `path`, which the user named with `--out`:
/// - a regular file, or nothing yet: replaced atomically (a temporary file beside it,
///   fsync, rename), so a failed run never leaves a half-written or clobbered result;
/// - a symbolic link: followed, and its final target replaced atomically (the link stays);
/// - a character device or a FIFO (`/dev/null`, `/dev/stdout`, a named pipe): written
///   through, never replaced;
/// - anything else (a directory, a socket, a block device): refused, untouched.
///
/// # Errors
/// [`Error::Io`] or [`Error::Usage`] naming the user's path, never the temporary file.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let ctx = || format!("writing {}", path.display());
    let (target, existing) = resolve(path).map_err(|e| Error::io(ctx(), e))?;
    if let Some(m) = &existing {
        let ft = m.file_type();
        if ft.is_char_device() || ft.is_fifo() {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .map_err(|e| Error::io(ctx(), e))?;
            return f
                .write_all(contents)
                .and_then(|()| f.flush())
                .map_err(|e| Error::io(ctx(), e));
        }
        if !ft.is_file() {
            let what = if ft.is_dir() {
                "a directory"
            } else if ft.is_block_device() {
                "a block device"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            };
            return Err(Error::usage(format!(
                "--out {}: {} is {what}; cowscope writes only regular files (replaced \
                 atomically), character devices and FIFOs",
                path.display(),
                target.display()
            )));
        }
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".cowscope-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(ctx(), plain(e, dir)))?;
    tmp.write_all(contents)
        .map_err(|e| Error::io(ctx(), plain(e, dir)))?;
    // tempfile creates 0600; the result should have the mode a plain create would give it
    // (or keep the mode of the file it replaces).
    let mode = match &existing {
        Some(m) => std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777,
        None => 0o666 & !umask(),
    };
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| Error::io(ctx(), plain(e, dir)))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(ctx(), plain(e, dir)))?;
    tmp.persist(&target)
        .map_err(|e| Error::io(ctx(), plain(e.error, dir)))?;
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
    fn a_symlink_is_followed_and_its_target_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.json");
        let link = dir.path().join("link.json");
        std::fs::write(&target, b"old").unwrap();
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "the link stays a link"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // A dangling link names the file to create.
        let dangling = dir.path().join("dangling.json");
        std::os::unix::fs::symlink(dir.path().join("created.json"), &dangling).unwrap();
        write_atomic(&dangling, b"made").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("created.json")).unwrap(),
            b"made"
        );
    }

    #[test]
    fn a_character_device_is_written_through_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        write_atomic(Path::new("/dev/null"), b"{}").unwrap();
        assert!(
            std::fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
        // /dev/full refuses every write: the error names the user's path and the cause.
        let e = write_atomic(Path::new("/dev/full"), b"{}").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("writing /dev/full: "), "{msg}");
        assert!(msg.contains("No space left on device"), "{msg}");
        assert!(
            std::fs::metadata("/dev/full")
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }

    #[test]
    fn a_fifo_is_written_through() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut s = String::new();
                std::fs::File::open(&fifo)
                    .unwrap()
                    .read_to_string(&mut s)
                    .unwrap();
                s
            })
        };
        write_atomic(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), "through the pipe");
        assert!(
            std::os::unix::fs::FileTypeExt::is_fifo(
                &std::fs::symlink_metadata(&fifo).unwrap().file_type()
            ),
            "still a FIFO"
        );
    }

    #[test]
    fn a_directory_is_refused_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_atomic(dir.path(), b"{}").unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e}");
        assert!(e.to_string().contains("is a directory"), "{e}");
        assert!(dir.path().is_dir());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_directory_is_named_by_the_users_path_not_the_temp_file() {
        let e = write_atomic(Path::new("/nonexistent-dir/r.json"), b"{}").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("writing /nonexistent-dir/r.json: "),
            "{msg}"
        );
        assert!(!msg.contains(".cowscope-"), "{msg}");
    }

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
