//! Writing results: stdout, or a file replaced atomically (tempfile in the same directory,
//! then rename), so a failed run never leaves a half-written or clobbered result.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// The temporary file of the [`StreamOut`] being written, as a C string, for
/// [`discard_pending_temp`] (null: none).
static PENDING_TMP: std::sync::atomic::AtomicPtr<libc::c_char> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// Remove the temporary file of an unfinished [`StreamOut`], if there is one. Meant for a
/// signal handler that is about to `_exit` (a second Ctrl-C): async-signal-safe (one atomic
/// swap and unlink(2); the name's memory is left to the exit).
pub fn discard_pending_temp() {
    let p = PENDING_TMP.swap(std::ptr::null_mut(), std::sync::atomic::Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: `p` came from CString::into_raw in `PendingTemp::new` and the swap made
        // this call its only user; unlink(2) reads the NUL-terminated name and is
        // async-signal-safe. A name already renamed away fails with ENOENT, harmlessly.
        unsafe { libc::unlink(p) };
    }
}

/// Registers a temporary file for [`discard_pending_temp`] while it lives.
#[derive(Debug)]
struct PendingTemp(*mut libc::c_char);

impl PendingTemp {
    fn new(path: &Path) -> PendingTemp {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            return PendingTemp(std::ptr::null_mut());
        };
        let raw = c.into_raw();
        // Only one stream is written at a time; a registration this replaces stays owned
        // (and freed) by its own guard.
        PENDING_TMP.store(raw, std::sync::atomic::Ordering::SeqCst);
        PendingTemp(raw)
    }
}

impl Drop for PendingTemp {
    fn drop(&mut self) {
        if self.0.is_null() {
            return;
        }
        // Unregister only our own name; a handler that already took it owns it now.
        let _ = PENDING_TMP.compare_exchange(
            self.0,
            std::ptr::null_mut(),
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        );
        // SAFETY: `self.0` came from CString::into_raw in `new` and is freed only here, once;
        // no handler can still be reading it (a handler that took it never returns: it
        // `_exit`s).
        drop(unsafe { std::ffi::CString::from_raw(self.0) });
    }
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT blocked in this thread while it lives; the mask it
/// found is restored on drop (a signal that came meanwhile is delivered then).
struct HeldStopSignals(Option<nix::sys::signal::SigSet>);

impl HeldStopSignals {
    fn new() -> HeldStopSignals {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
        let mut set = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            set.add(s);
        }
        let mut old = SigSet::empty();
        match pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)) {
            Ok(()) => HeldStopSignals(Some(old)),
            Err(_) => HeldStopSignals(None),
        }
    }
}

impl Drop for HeldStopSignals {
    fn drop(&mut self) {
        if let Some(old) = self.0.take() {
            let _ = nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&old),
                None,
            );
        }
    }
}

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
                let next = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
                // A /proc magic link (`/dev/stdout` -> `/proc/self/fd/1` -> `pipe:[N]`) names
                // no path, but the kernel follows it: what it reaches is what is there.
                if let (Err(_), Ok(m)) = (std::fs::symlink_metadata(&next), std::fs::metadata(&p))
                    && !m.is_file()
                {
                    return Ok((p, Some(m)));
                }
                p = next;
            }
            Ok(m) => return Ok((p, Some(m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((p, None)),
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::ELOOP))
}

/// Refuse a `--out` whose directory is a kernel interface (procfs, sysfs), where no file can
/// be created or replaced: say so in one sentence instead of the kernel's bare EACCES/ENOENT.
fn refuse_pseudo_fs(path: &Path, dir: &Path) -> Result<()> {
    use nix::sys::statfs::{PROC_SUPER_MAGIC, SYSFS_MAGIC, statfs};
    let Ok(st) = statfs(dir) else {
        return Ok(()); // the real attempt reports the directory's own error
    };
    let what = match st.filesystem_type() {
        t if t == PROC_SUPER_MAGIC => "/proc",
        t if t == SYSFS_MAGIC => "/sys",
        _ => return Ok(()),
    };
    Err(Error::usage(format!(
        "--out {}: {} is in {what}, a kernel interface where no result file can be created \
         or replaced; name a file on an ordinary file system",
        path.display(),
        dir.display()
    )))
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
    let ctx = || format!("writing {}", path.display());
    let (target, existing) = resolve(path).map_err(|e| Error::io(ctx(), e))?;
    if let Some(m) = &existing
        && written_through(m, path, &target)?
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .map_err(|e| Error::io(ctx(), e))?;
        return f
            .write_all(contents)
            .and_then(|()| f.flush())
            .map_err(|e| Error::io(ctx(), e));
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    refuse_pseudo_fs(path, dir)?;
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

/// Check `--out` before any work, by the rules of [`write_atomic`]: what is there must be a
/// regular file, a character device or a FIFO (or nothing yet), and not in /proc or /sys.
/// Nothing is created or written.
///
/// # Errors
/// [`Error::Usage`] or [`Error::Io`] naming the user's path, as [`write_atomic`] would.
pub fn check_out(path: &Path) -> Result<()> {
    let (target, existing) =
        resolve(path).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    if let Some(m) = &existing
        && written_through(m, path, &target)?
    {
        return Ok(());
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    refuse_pseudo_fs(path, dir)
}

/// The `--out` rule for what is at the path already: `Ok(true)` for a character device or a
/// FIFO (written through, never replaced), `Ok(false)` for a regular file (replaced), a usage
/// error for anything else (a directory, a socket, a block device), which is left untouched.
fn written_through(m: &std::fs::Metadata, path: &Path, target: &Path) -> Result<bool> {
    use std::os::unix::fs::FileTypeExt;
    let ft = m.file_type();
    if ft.is_char_device() || ft.is_fifo() {
        return Ok(true);
    }
    if ft.is_file() {
        return Ok(false);
    }
    let what = if ft.is_dir() {
        "a directory"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(Error::usage(format!(
        "--out {}: {} is {what}; cowscope writes only regular files (replaced \
         atomically), character devices and FIFOs",
        path.display(),
        target.display()
    )))
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

/// A result written record by record (`--format jsonl`), under the same `--out` rules as
/// [`write_atomic`]:
/// - no path: stdout, flushed per record;
/// - a character device or a FIFO (after following symbolic links): written through, each
///   record as it comes, so a reader of a named pipe follows the watch live;
/// - a regular file, or nothing yet: the records go to a temporary file beside it, which
///   [`StreamOut::finish`] renames into place (with the mode a plain create would give, or
///   the old file's). Until then an existing file keeps its old content; a run that fails
///   (the `StreamOut` is dropped unfinished) leaves it untouched and removes the temporary
///   file;
/// - a directory, a socket, a block device: refused before anything runs.
#[derive(Debug)]
pub struct StreamOut {
    sink: Sink,
    /// The user's `--out`, for messages.
    path: Option<std::path::PathBuf>,
}

#[derive(Debug)]
enum Sink {
    Stdout,
    Through(std::fs::File),
    Replace {
        /// Declared first, so it unregisters before `tmp` removes the file.
        _pending: PendingTemp,
        tmp: tempfile::NamedTempFile,
        target: std::path::PathBuf,
        dir: std::path::PathBuf,
        mode: u32,
    },
}

impl StreamOut {
    /// Open `out` (or stdout) by the rules above.
    ///
    /// # Errors
    /// [`Error::Usage`] for a path that is not a regular file, character device or FIFO;
    /// [`Error::Io`] naming the user's path when it cannot be opened or created.
    pub fn open(out: Option<&Path>) -> Result<StreamOut> {
        let Some(path) = out else {
            return Ok(StreamOut {
                sink: Sink::Stdout,
                path: None,
            });
        };
        let ctx = || format!("writing {}", path.display());
        let (target, existing) = resolve(path).map_err(|e| Error::io(ctx(), e))?;
        if let Some(m) = &existing
            && written_through(m, path, &target)?
        {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .map_err(|e| Error::io(ctx(), e))?;
            return Ok(StreamOut {
                sink: Sink::Through(f),
                path: Some(path.to_path_buf()),
            });
        }
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        refuse_pseudo_fs(path, &dir)?;
        // The temporary file exists before its name is registered for the signal handler:
        // hold the stop signals between the two, so a second Ctrl-C in that window is taken
        // after the registration (and its handler removes the file) instead of leaving it.
        let held = HeldStopSignals::new();
        let tmp = tempfile::Builder::new()
            .prefix(".cowscope-")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| Error::io(ctx(), plain(e, &dir)))?;
        let pending = PendingTemp::new(tmp.path());
        drop(held);
        let mode = match &existing {
            Some(m) => std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777,
            None => 0o666 & !umask(),
        };
        Ok(StreamOut {
            sink: Sink::Replace {
                _pending: pending,
                tmp,
                target,
                dir,
                mode,
            },
            path: Some(path.to_path_buf()),
        })
    }

    fn ctx(&self) -> String {
        match &self.path {
            Some(p) => format!("writing {}", p.display()),
            None => "writing stdout".into(),
        }
    }

    /// Write one record whole and flush it.
    ///
    /// # Errors
    /// [`Error::Io`] naming the user's path (or stdout).
    pub fn write_record(&mut self, bytes: &[u8]) -> Result<()> {
        let r = match &mut self.sink {
            Sink::Stdout => {
                let mut so = std::io::stdout().lock();
                so.write_all(bytes).and_then(|()| so.flush())
            }
            Sink::Through(f) => f.write_all(bytes).and_then(|()| f.flush()),
            Sink::Replace { tmp, dir, .. } => tmp
                .write_all(bytes)
                .and_then(|()| tmp.flush())
                .map_err(|e| plain(e, dir)),
        };
        r.map_err(|e| Error::io(self.ctx(), e))
    }

    /// The run is complete: put a regular file's records into place (fsync, rename).
    ///
    /// # Errors
    /// [`Error::Io`] naming the user's path.
    pub fn finish(self) -> Result<()> {
        let ctx = self.ctx();
        let Sink::Replace {
            _pending: pending,
            tmp,
            target,
            dir,
            mode,
        } = self.sink
        else {
            return Ok(());
        };
        tmp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(|e| Error::io(&ctx, plain(e, &dir)))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io(&ctx, plain(e, &dir)))?;
        tmp.persist(&target)
            .map_err(|e| Error::io(&ctx, plain(e.error, &dir)))?;
        // Unregistered only now: a last-moment unlink of the renamed-away name is harmless.
        drop(pending);
        Ok(())
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

    #[test]
    fn a_stream_into_a_regular_file_replaces_it_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("watch.jsonl");
        std::fs::write(&p, b"old result\n").unwrap();
        let mut s = StreamOut::open(Some(&p)).unwrap();
        s.write_record(b"{\"seq\":0}\n").unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            b"old result\n",
            "an unfinished run never truncates the old result"
        );
        s.finish().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"seq\":0}\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }

    #[test]
    fn a_stream_dropped_unfinished_leaves_the_old_result_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("watch.jsonl");
        std::fs::write(&p, b"old result\n").unwrap();
        let mut s = StreamOut::open(Some(&p)).unwrap();
        s.write_record(b"half\n").unwrap();
        drop(s);
        assert_eq!(std::fs::read(&p).unwrap(), b"old result\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_stream_refuses_a_directory_and_writes_through_a_character_device() {
        let dir = tempfile::tempdir().unwrap();
        let e = StreamOut::open(Some(dir.path())).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e}");
        assert!(e.to_string().contains("is a directory"), "{e}");
        let mut s = StreamOut::open(Some(Path::new("/dev/null"))).unwrap();
        s.write_record(b"x\n").unwrap();
        s.finish().unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &std::fs::metadata("/dev/null").unwrap().file_type()
        ));
    }
}
