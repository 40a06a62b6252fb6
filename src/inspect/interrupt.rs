//! Ctrl-C and friends for long reads: SIGINT, SIGTERM and SIGHUP set a flag that the read
//! and watch loops poll, and wake a sleeping watch loop through a self-pipe. A second signal
//! means "now": the handler itself sends SIGCONT to every process cowscope stopped (kept in a
//! fixed table of atomics, so the handler needs no lock and no allocation), removes the
//! temporary file of an unfinished `--out` stream, and `_exit`s.
//!
//! [`install`] is called by the CLI only; as a library (tests) nothing is installed and
//! [`requested`] stays false.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

/// The signal that asked us to stop (0: none).
static REQUESTED: AtomicI32 = AtomicI32::new(0);
/// Write end of the self-pipe (-1: not installed).
static WAKE_W: AtomicI32 = AtomicI32::new(-1);
/// Read end of the self-pipe.
static WAKE_R: AtomicI32 = AtomicI32::new(-1);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Most processes one freeze can register for the emergency resume.
pub const MAX_STOPPED: usize = 1024;
/// Pids cowscope has stopped and not yet resumed (0: free slot).
static STOPPED: [AtomicI32; MAX_STOPPED] = [const { AtomicI32::new(0) }; MAX_STOPPED];

extern "C" fn on_signal(sig: libc::c_int) {
    if REQUESTED.swap(sig, Ordering::SeqCst) != 0 {
        // Second signal: do the essential cleanup here, then leave.
        resume_registered();
        crate::output::discard_pending_temp();
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) };
    }
    let fd = WAKE_W.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = [1u8];
        // SAFETY: write(2) of one byte from a local array to a non-blocking pipe is
        // async-signal-safe; a full pipe (EAGAIN) is fine, the flag is already set.
        unsafe { libc::write(fd, b.as_ptr().cast(), 1) };
    }
}

/// Send SIGCONT to every registered pid (async-signal-safe: atomics and kill(2) only).
fn resume_registered() {
    for slot in &STOPPED {
        let pid = slot.swap(0, Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) is async-signal-safe and takes plain integers.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
}

/// Install the handlers for SIGINT, SIGTERM and SIGHUP (once; later calls do nothing).
///
/// # Errors
/// When the self-pipe or `sigaction` fails.
pub fn install() -> std::io::Result<()> {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(std::io::Error::from)?;
    use std::os::fd::IntoRawFd;
    WAKE_R.store(r.into_raw_fd(), Ordering::SeqCst);
    WAKE_W.store(w.into_raw_fd(), Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with our handler (which only touches atomics and calls
        // async-signal-safe functions) and an empty mask; no SA_RESTART, so a blocking
        // syscall returns EINTR and the loops notice the flag.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signal that asked cowscope to stop, if any.
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Sleep for `d`, or less if a stop signal arrives. Returns true when interrupted.
pub fn sleep(d: Duration) -> bool {
    if requested().is_some() {
        return true;
    }
    let fd = WAKE_R.load(Ordering::SeqCst);
    if fd < 0 {
        std::thread::sleep(d);
        return requested().is_some();
    }
    let deadline = std::time::Instant::now() + d;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || requested().is_some() {
            return requested().is_some();
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: poll on one valid pollfd that lives on our stack.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }
}

/// Remember that cowscope stopped `pid`, for the emergency resume. Returns false when the
/// table is full (then only the watchdog and the normal path resume it).
pub fn register_stopped(pid: i32) -> bool {
    STOPPED.iter().any(|slot| {
        slot.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    })
}

/// Forget `pid` (it was resumed).
pub fn unregister_stopped(pid: i32) {
    for slot in &STOPPED {
        let _ = slot.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// End the process the way `sig` would have (default action), after cleanup: so a shell
/// sees "terminated by SIGINT", as conventions for interactive tools ask.
pub fn die_of(sig: i32) -> ! {
    // SAFETY: restoring the default action and raising the signal; if it does not
    // terminate us (it does for INT/TERM/HUP), exit with the shell's convention.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
        libc::_exit(128 + sig)
    }
}
