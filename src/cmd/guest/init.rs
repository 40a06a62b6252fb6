//! PID 1 chores: the console, the filesystems the collections read.

use std::io::Write;
use std::path::Path;

/// Print one line to the console and flush; the console is all PID 1 has, so a failed write is
/// ignored rather than allowed to stop the collection.
pub(super) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Mount what the collections read. Failures are reported on the console and the run goes on:
/// the documents then say what could not be seen.
pub(super) fn prepare_filesystems() {
    use nix::mount::{MsFlags, mount};
    let mounts: [(&str, &str, &str); 4] = [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("tmpfs", "/tmp", "tmpfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ];
    for (source, target, fstype) in mounts {
        if let Err(e) = std::fs::create_dir_all(target) {
            eprintln!("cowscope-guest: creating {target}: {e}");
            continue;
        }
        match mount(
            Some(source),
            target,
            Some(fstype),
            MsFlags::empty(),
            None::<&str>,
        ) {
            // EBUSY: the kernel (or an earlier init) already mounted it.
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => eprintln!("cowscope-guest: mounting {fstype} on {target}: {e}"),
        }
    }
    ensure_console();
    // Only emergencies on the console from now on: a kernel message printed in the middle of a
    // JSON document would corrupt it.
    if let Err(e) = std::fs::write("/proc/sys/kernel/printk", "1") {
        eprintln!("cowscope-guest: lowering the console log level: {e}");
    }
}

/// If the kernel could not give init a console (no /dev/console in the initramfs), open it from
/// devtmpfs and make it fds 0, 1 and 2.
fn ensure_console() {
    use std::os::fd::{AsRawFd, IntoRawFd};
    if Path::new("/proc/self/fd/1").exists() {
        return;
    }
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    let raw = console.as_raw_fd();
    // Failures leave that fd closed; nothing else can be done without a console.
    if raw != 0 {
        let _ = nix::unistd::dup2_stdin(&console);
    }
    if raw != 1 {
        let _ = nix::unistd::dup2_stdout(&console);
    }
    if raw != 2 {
        let _ = nix::unistd::dup2_stderr(&console);
    }
    if raw <= 2 {
        // The open itself landed on one of 0..=2: keep it open as that descriptor.
        let _ = console.into_raw_fd();
    }
}
