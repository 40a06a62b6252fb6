//! Kernel facts at the bottom of the crate: the page size, `uname -r`, sysfs choice files,
//! `/proc/meminfo`, and the soft-dirty reset. Plain system calls and file reads; nothing here
//! depends on any other cowscope module.

/// The base page size in bytes.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions; _SC_PAGESIZE is always supported.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

/// A private anonymous mapping at a kernel-chosen address, unmapped on drop: the probes'
/// scratch memory and the reservations that scenario memory is placed in. (The arena keeps its
/// own, which it grows and moves.)
#[derive(Debug)]
pub struct AnonMap {
    base: usize,
    len: usize,
}

impl AnonMap {
    /// mmap(2) `len` bytes with `prot`, `MAP_PRIVATE | MAP_ANONYMOUS | extra_flags`.
    ///
    /// # Errors
    /// What mmap(2) said.
    pub fn new(len: usize, prot: i32, extra_flags: i32) -> std::io::Result<AnonMap> {
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address (no MAP_FIXED in the
        // callers' flags) aliases no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(AnonMap {
            base: p as usize,
            len,
        })
    }

    /// The first byte's address.
    pub fn addr(&self) -> usize {
        self.base
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: mmap refuses a zero length).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: [base, base + len) is the mapping `new` made and this value owns; its users
        // hold no reference into it past the value's life.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

/// The sysfs directory of transparent huge pages.
pub const THP_DIR: &str = "/sys/kernel/mm/transparent_hugepage";

/// The selected THP mode, e.g. `madvise`, or `unavailable` without THP support.
pub fn thp_enabled() -> String {
    read_selected(&format!("{THP_DIR}/enabled")).unwrap_or_else(|| "unavailable".into())
}

/// Read a sysfs "choice" file such as `always [madvise] never` and return the bracketed word.
pub fn read_selected(path: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    parse_selected(&s)
}

/// Parse `always [madvise] never` into `madvise`.
pub fn parse_selected(s: &str) -> Option<String> {
    s.split_whitespace()
        .find(|w| w.starts_with('[') && w.ends_with(']'))
        .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
}

/// PMD THP size in kB, if the kernel has THP.
pub fn thp_pmd_size_kb() -> Option<u64> {
    let s = std::fs::read_to_string(format!("{THP_DIR}/hpage_pmd_size")).ok()?;
    s.trim().parse::<u64>().ok().map(|b| b / 1024)
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Clear the soft-dirty bits of every page of `pid` (`echo 4 > /proc/<pid>/clear_refs`).
///
/// # Errors
/// When the file cannot be written (no permission, process gone).
pub fn clear_soft_dirty(pid: i32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), b"4")
}

/// One `/proc/meminfo` figure in kB, e.g. `meminfo_kb("MemAvailable")`.
pub fn meminfo_kb(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_kb(&text, key)
}

/// `MemTotal:   1234 kB` -> 1234 for key `MemTotal`.
pub fn parse_meminfo_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The signal (SIGINT, SIGTERM, SIGHUP) that asked cowscope to stop, once
/// [`defer_stop_signals`] is in force (0: none).
static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Turn SIGINT, SIGTERM and SIGHUP from "die now" into a request that the caller honours at
/// its next safe point ([`stop_requested`]): the signals are blocked in the calling thread
/// (and so in every thread and fork child it creates afterwards) and a helper thread takes
/// them with `sigwait`. Used by commands that change system settings, so a Ctrl-C still
/// runs the guards that restore them. Call before any other thread is started; later calls
/// do nothing.
///
/// # Errors
/// When the mask cannot be set or the thread cannot be started.
pub fn defer_stop_signals() -> std::io::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    static ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if ONCE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Ok(());
    }
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().map_err(std::io::Error::from)?;
    std::thread::Builder::new()
        .name("stop-signals".into())
        .spawn(move || {
            while let Ok(sig) = set.wait() {
                STOP_SIGNAL.store(sig as i32, std::sync::atomic::Ordering::SeqCst);
            }
        })?;
    Ok(())
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT held blocked in the calling thread (see
/// [`hold_stop_signals`]).
#[derive(Debug)]
pub struct StopSignalsHeld {
    old: nix::sys::signal::SigSet,
    set: nix::sys::signal::SigSet,
}

/// Block SIGINT, SIGTERM, SIGHUP and SIGQUIT in the calling thread until the returned hold is
/// dropped (or for good: [`StopSignalsHeld::until_exit`]). A signal that arrives meanwhile
/// stays pending: code that waits for them itself (`sigtimedwait`) still sees it, and one it
/// did not take cannot kill the process half-way through writing its result. `trace` holds
/// them from before the tracer starts until its report is written, so a second Ctrl-C (or
/// `timeout -s INT`, which signals cowscope and then its process group) arriving while it
/// detaches or writes is absorbed instead of killing it with the report unwritten. Call it
/// before any other thread starts (threads inherit the mask).
///
/// # Errors
/// When the mask cannot be set.
pub fn hold_stop_signals() -> std::io::Result<StopSignalsHeld> {
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
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
        .map_err(std::io::Error::from)?;
    let added = set
        .iter()
        .filter(|s| !old.contains(*s))
        .fold(0u64, |bits, s| bits | 1 << (s as i32));
    HELD_BY_US.fetch_or(added, std::sync::atomic::Ordering::SeqCst);
    Ok(StopSignalsHeld { old, set })
}

/// The signals [`hold_stop_signals`] blocked that were not blocked before (bit N: signal N).
static HELD_BY_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `mask` without the signals [`hold_stop_signals`] blocked: the mask a program started from
/// here must get (the caller's own, not cowscope's hold), so `trace -- CMD` runs CMD with
/// SIGINT deliverable as the user's shell gave it.
pub fn without_held(mut mask: libc::sigset_t) -> libc::sigset_t {
    let held = HELD_BY_US.load(std::sync::atomic::Ordering::SeqCst);
    for sig in 1..64 {
        if held & (1 << sig) != 0 {
            // SAFETY: sigdelset on an initialised set with a valid signal number.
            unsafe { libc::sigdelset(&mut mask, sig) };
        }
    }
    mask
}

impl StopSignalsHeld {
    /// Keep the signals blocked until the process exits: whatever arrives from now on is
    /// discarded with the process. For the very end of a command, after its result is
    /// written, so a late signal cannot turn a finished run into a death by signal.
    pub fn until_exit(self) {
        std::mem::forget(self);
    }
}

impl Drop for StopSignalsHeld {
    /// Discard the held signals that are pending (they were absorbed), then restore the mask.
    fn drop(&mut self) {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            // SAFETY: zeroed siginfo is a valid out-parameter.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: sigtimedwait reads the set and the zero timeout and writes `info`; it
            // only takes signals that are pending and blocked in this thread.
            let r = unsafe { libc::sigtimedwait(self.set.as_ref(), &mut info, &zero) };
            if r <= 0 {
                break;
            }
        }
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&self.old),
            None,
        );
    }
}

/// The stop signal received since [`defer_stop_signals`], if any.
pub fn stop_requested() -> Option<i32> {
    match STOP_SIGNAL.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Sysfs values changed by cowscope (with `--allow-sysfs`), restored in reverse order by
/// [`SysfsGuard::restore`] or on drop — also when the caller returns an error or panics.
#[derive(Debug, Default)]
pub struct SysfsGuard {
    saved: Vec<(String, String)>,
    /// Restores that failed (path, error), for the report; filled by [`SysfsGuard::restore`].
    pub failures: Vec<(String, String)>,
}

impl SysfsGuard {
    /// Write `value` to `path`, remembering the old value the first time `path` is set.
    ///
    /// # Errors
    /// When the file cannot be read or written.
    pub fn set(&mut self, path: &str, value: &str) -> std::io::Result<()> {
        if !self.saved.iter().any(|(p, _)| p == path) {
            let old = read_setting(path)?;
            self.saved.push((path.to_string(), old));
        }
        std::fs::write(path, value)
    }

    /// Restore every saved value now (the drop does the same for whatever is left).
    pub fn restore(&mut self) {
        while let Some((path, old)) = self.saved.pop() {
            if let Err(e) = std::fs::write(&path, &old) {
                self.failures.push((path, e.to_string()));
            }
        }
    }

    /// What was changed, as (path, original value).
    pub fn changed(&self) -> &[(String, String)] {
        &self.saved
    }
}

impl Drop for SysfsGuard {
    fn drop(&mut self) {
        self.restore();
    }
}

/// A sysfs setting's current value: the bracketed choice of `a [b] c` files, else the trimmed
/// contents.
///
/// # Errors
/// When the file cannot be read.
pub fn read_setting(path: &str) -> std::io::Result<String> {
    let s = std::fs::read_to_string(path)?;
    Ok(parse_selected(&s).unwrap_or_else(|| s.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_selected_picks_bracketed_word() {
        assert_eq!(
            parse_selected("always [madvise] never\n").as_deref(),
            Some("madvise")
        );
        assert_eq!(
            parse_selected("[always] madvise never").as_deref(),
            Some("always")
        );
        assert_eq!(parse_selected("always madvise never"), None);
    }

    #[test]
    fn meminfo_keys_match_whole_names() {
        let t = "MemTotal:       24000000 kB\nMemAvailable:   12345 kB\nMem: 1 kB\n";
        assert_eq!(parse_meminfo_kb(t, "MemAvailable"), Some(12345));
        assert_eq!(parse_meminfo_kb(t, "MemTotal"), Some(24_000_000));
        assert_eq!(parse_meminfo_kb(t, "Mem"), Some(1));
        assert_eq!(parse_meminfo_kb(t, "SwapTotal"), None);
    }

    #[test]
    fn sysfs_guard_restores_the_selected_value_even_when_the_code_panics() {
        let dir = tempfile::tempdir().expect("temp dir");
        let f = dir.path().join("enabled");
        std::fs::write(&f, "always inherit [madvise] never\n").expect("write");
        let path = f.display().to_string();
        let r = std::panic::catch_unwind(|| {
            let mut g = SysfsGuard::default();
            g.set(&path, "never").expect("set");
            g.set(&path, "always")
                .expect("set again keeps the first original");
            assert_eq!(
                std::fs::read_to_string(&path).ok().as_deref(),
                Some("always")
            );
            panic!("an experiment failing half-way");
        });
        assert!(r.is_err());
        // The kernel's file would show `[madvise]` again; the guard wrote the word back.
        assert_eq!(std::fs::read_to_string(&f).ok().as_deref(), Some("madvise"));
    }
}
