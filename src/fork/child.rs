//! ┌──────────────────────────────────────────────────────────────────────────────────────┐
//! │ CHILD CODE. Everything in this file runs in a process created by `fork()` from a      │
//! │ possibly multi-threaded parent (cargo test runs threads). Only async-signal-safe       │
//! │ operations are allowed here: plain loads and stores, `read`, `write`, `close`,        │
//! │ `clock_gettime`, `prctl`, `fork`, `waitpid`, `mmap`, `mprotect`, `munmap`,            │
//! │ `vmsplice`, `pread`, `setsid`, `sigaction`, `kill`, `pidfd_send_signal`, `_exit`,    │
//! │ and for a traced command `sigprocmask`, `seccomp`, `execve`.                          │
//! │ No allocation, no stdio, no locks, no panics (no indexing that can fail, no           │
//! │ unwrap), no /proc parsing.                                                            │
//! └──────────────────────────────────────────────────────────────────────────────────────┘
//!
//! A child's behaviour is data: the parent builds a slice of [`ChildOp`] before forking, and the
//! child walks it with [`run`]. The slice lives in memory the child inherited, so reading it
//! allocates nothing. Messages to the parent are fixed-size (`MSG_LEN` bytes: a tag and a
//! little-endian u64), so the child never formats anything.

use std::os::fd::RawFd;

/// Length of one message on a report pipe: 1 tag byte + 8 value bytes.
pub const MSG_LEN: usize = 9;
/// "I have done my work and am blocked waiting for release."
pub const TAG_READY: u8 = b'R';
/// "I forked a process; its pid is the value."
pub const TAG_PID: u8 = b'P';
/// Nanoseconds of a first store to a page the child did not own (a copy-on-write fault).
pub const TAG_COW_NS: u8 = b'C';
/// Nanoseconds of a second store to the same page, now owned (no fault).
pub const TAG_OWNED_NS: u8 = b'O';

/// The faulting address (`si_addr`) of a SIGSEGV/SIGBUS caught by [`ChildOp::ReportFaults`].
pub const TAG_FAULT_ADDR: u8 = b'F';
/// The signal number of that fault.
pub const TAG_FAULT_SIGNAL: u8 = b'S';

/// Result of a [`ChildOp::TryLockFor`]: 1 the mutex was taken, 0 it stayed locked until the
/// time ran out.
pub const TAG_LOCK_ACQUIRED: u8 = b'L';
/// How many `pthread_mutex_trylock` calls a [`ChildOp::TryLockFor`] made.
pub const TAG_LOCK_TRIES: u8 = b'Y';
/// Nanoseconds a [`ChildOp::TryLockFor`] spent trying.
pub const TAG_LOCK_WAITED_NS: u8 = b'W';

/// Result of a [`ChildOp::Munmap`]: 0 when `munmap` returned 0, else the errno.
pub const TAG_MUNMAP_RESULT: u8 = b'U';

/// The byte read by [`ChildOp::ReadByte`].
pub const TAG_BYTE: u8 = b'B';

/// Result of a [`ChildOp::Mprotect`], [`ChildOp::Vmsplice`] or [`ChildOp::ReadFile`]: the
/// syscall's return value when it succeeded, else `u64::MAX - errno`.
pub const TAG_SYSCALL_RESULT: u8 = b'X';
/// The errno of a failed [`ChildOp::Exec`] (sent just before the child exits).
pub const TAG_EXEC_ERRNO: u8 = b'E';
/// The errno of a failed [`ChildOp::InstallSeccomp`].
pub const TAG_SECCOMP_ERRNO: u8 = b'Z';
/// [`ChildOp::InstallSeccomp`] had to set `PR_SET_NO_NEW_PRIVS` first (value 1): the process
/// lacked CAP_SYS_ADMIN, and setuid programs it runs will not gain privileges.
pub const TAG_NO_NEW_PRIVS: u8 = b'N';

/// Exit code of a child whose pipe to the parent failed.
pub const EXIT_PIPE_FAILED: i32 = 120;
/// Exit code of a child whose `fork()` of a grandchild failed.
pub const EXIT_FORK_FAILED: i32 = 121;
/// Exit code of a child whose [`ChildOp::MapAnon`] failed.
pub const EXIT_MMAP_FAILED: i32 = 122;
/// Exit code of a child whose seccomp filter could not be installed.
pub const EXIT_SECCOMP_FAILED: i32 = 123;
/// Exit code of a child whose `execve` failed (as a shell's "command not found").
pub const EXIT_EXEC_FAILED: i32 = 127;

/// Side markers stamped into pages, so a content check names who wrote a page last.
pub mod side {
    /// The parent, before fork.
    pub const PARENT_BEFORE: u8 = b'P';
    /// The parent, after fork.
    pub const PARENT_AFTER: u8 = b'Q';
    /// A child.
    pub const CHILD: u8 = b'C';
    /// A grandchild.
    pub const GRANDCHILD: u8 = b'G';
    /// The disk file an O_DIRECT read copies from.
    pub const DIRECT_FILE: u8 = b'D';
}

/// Offset of the side marker inside a stamped page (after the 8-byte page index).
pub const STAMP_SIDE_OFFSET: usize = 8;

/// One step of a child's program.
#[derive(Debug, Clone, Copy)]
pub enum ChildOp<'a> {
    /// Close an inherited descriptor the child must not hold (so EOF semantics work).
    Close(RawFd),
    /// No core file if this process dies of a signal (the scenarios that fault on purpose
    /// would otherwise leave `core` files in the user's directory): RLIMIT_CORE = 0.
    NoCoreDump,
    /// Load one byte (volatile) and send it with [`TAG_BYTE`].
    ReadByte {
        /// Address to load from (a fault is the point where the mapping is missing).
        addr: usize,
        /// Report pipe.
        fd: RawFd,
    },
    /// Ask the kernel to SIGKILL this process when the forking thread of its parent exits, so
    /// an orphaned subject never lingers.
    DieWithParent,
    /// Install a one-shot SIGSEGV/SIGBUS handler that sends the signal number
    /// ([`TAG_FAULT_SIGNAL`]) and the faulting address ([`TAG_FAULT_ADDR`]) on `fd`, then
    /// lets the fault kill the process as usual (SA_RESETHAND: the faulting instruction
    /// re-executes under the default action). The parent thus sees both `si_addr` and the
    /// death by signal.
    ReportFaults {
        /// Report pipe.
        fd: RawFd,
    },
    /// Store one byte (volatile). Used for single-byte writes and for deliberate faults.
    WriteByte {
        /// Address to store to.
        addr: usize,
        /// The byte.
        byte: u8,
    },
    /// Stamp `pages` whole pages from `addr`: each page starts with its index (u64 LE), then
    /// the side marker, and the rest of the page is filled with the marker.
    Stamp {
        /// Address of the first page (page aligned).
        addr: usize,
        /// Index of the first page within the arena.
        first_index: usize,
        /// How many pages.
        pages: usize,
        /// Page size in bytes.
        page_size: usize,
        /// Side marker, see [`side`].
        side: u8,
    },
    /// Load one byte from each page (volatile), e.g. to fault in the zero page.
    ReadPages {
        /// Address of the first page.
        addr: usize,
        /// How many pages.
        pages: usize,
        /// Page size in bytes.
        page_size: usize,
    },
    /// For each page: time a first store (a COW fault when the page is shared) and a second
    /// store to the same page (owned by then), and send both as [`TAG_COW_NS`] and
    /// [`TAG_OWNED_NS`] messages.
    TimeWrites {
        /// Address of the first page.
        addr: usize,
        /// How many pages.
        pages: usize,
        /// Page size in bytes.
        page_size: usize,
        /// Report pipe.
        fd: RawFd,
    },
    /// Send one message.
    Send {
        /// Report pipe.
        fd: RawFd,
        /// Message tag.
        tag: u8,
        /// Message value.
        value: u64,
    },
    /// Block until one byte arrives (the parent's release) or EOF.
    Wait(RawFd),
    /// Fork a grandchild that runs `ops`, and send its pid with [`TAG_PID`] on `fd`.
    Fork {
        /// The grandchild's program.
        ops: &'a [ChildOp<'a>],
        /// Where to report the grandchild's pid.
        fd: RawFd,
    },
    /// Reap every child of this process (waitpid until ECHILD).
    ReapAll,
    /// `_exit` with this code.
    Exit(i32),
    /// Try to take a pthread mutex without ever blocking: `pthread_mutex_trylock` in a loop,
    /// 1 ms apart, for at most `timeout_ns`; then send [`TAG_LOCK_TRIES`],
    /// [`TAG_LOCK_WAITED_NS`] and [`TAG_LOCK_ACQUIRED`] (last) on `fd`. A mutex that another
    /// thread held at fork time stays locked here forever (that thread was not copied), and
    /// this op shows it with a timeout instead of a hang. A mutex taken is left locked.
    ///
    /// Why this is safe in a fork child: for a default (`PTHREAD_MUTEX_NORMAL`) mutex,
    /// glibc's and musl's trylock is one compare-and-swap on the lock word plus plain stores
    /// of the owner fields: no allocation, no blocking, no other lock.
    TryLockFor {
        /// Address of a `pthread_mutex_t` of the default type, in memory the child inherited.
        mutex: usize,
        /// Give up after this many nanoseconds.
        timeout_ns: u64,
        /// Report pipe.
        fd: RawFd,
    },
    /// `mprotect(addr, len, prot)`, then send the result ([`TAG_SYSCALL_RESULT`]) on `fd`.
    Mprotect {
        /// Start (page aligned).
        addr: usize,
        /// Length in bytes.
        len: usize,
        /// PROT_* bits.
        prot: i32,
        /// Report pipe.
        fd: RawFd,
    },
    /// `vmsplice(pipe, {addr, len}, 1, 0)`: hand the pages to a pipe (the pipe takes a
    /// reference to each page), then send the bytes spliced ([`TAG_SYSCALL_RESULT`]) on `fd`.
    Vmsplice {
        /// The pipe's write end.
        pipe: RawFd,
        /// Start of the range.
        addr: usize,
        /// Length in bytes (at most the pipe's capacity, or it blocks).
        len: usize,
        /// Report pipe.
        fd: RawFd,
    },
    /// `pread(file, addr, len, offset)` (an O_DIRECT file makes the kernel pin the pages and
    /// DMA into them), then send the bytes read ([`TAG_SYSCALL_RESULT`]) on `fd`.
    ReadFile {
        /// The file, opened before the fork.
        file: RawFd,
        /// Destination.
        addr: usize,
        /// Bytes.
        len: usize,
        /// File offset.
        offset: i64,
        /// Report pipe.
        fd: RawFd,
    },
    /// `munmap(addr, len)` in the child's own address space, then send the result
    /// ([`TAG_MUNMAP_RESULT`]: 0 or the errno) on `fd`. The child has one thread, so nothing
    /// can be mapped into the range between two such ops: repeating one is a safe way to ask
    /// the kernel what a double unmap does.
    Munmap {
        /// Start (page aligned).
        addr: usize,
        /// Length in bytes.
        len: usize,
        /// Report pipe.
        fd: RawFd,
    },
    /// `mmap(addr, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED)`: a fresh
    /// private anonymous VMA at a known address; `_exit(EXIT_MMAP_FAILED)` if the kernel
    /// refuses. The range must be the child's own: a reservation it inherited (which
    /// `MAP_FIXED` replaces) or a hole it made with [`ChildOp::Munmap`]; the child has one
    /// thread, so nothing else can map there meanwhile.
    MapAnon {
        /// Start (page aligned).
        addr: usize,
        /// Length in bytes.
        len: usize,
    },
    /// The `inspect --freeze` watchdog: leave cowscope's session and ignore terminal and
    /// termination signals (so a Ctrl-C to the process group cannot kill it first), then block
    /// reading `fd` (the release pipe). A byte means cowscope resumed its targets itself: exit.
    /// EOF means cowscope died without releasing us (even by SIGKILL, which no handler sees):
    /// send SIGCONT to every target, through its pidfd where one was opened (immune to pid
    /// reuse), else by pid, then exit.
    ResumeOnOrphan {
        /// Release pipe (read end).
        fd: RawFd,
        /// The targets' pids.
        pids: &'a [i32],
        /// Their pidfds, index for index (-1: none, use the pid).
        pidfds: &'a [RawFd],
    },
    /// Set this thread's signal mask (`sigprocmask(SIG_SETMASK)`). A blocked mask survives
    /// both `fork` and `execve`, so a parent that blocks signals for its own event loop must
    /// give a program it runs the mask it had before.
    SetSigmask(&'a libc::sigset_t),
    /// Reset a signal's disposition to the default. Rust's runtime ignores SIGPIPE, and an
    /// ignored signal stays ignored across `execve`; a program run for the user must get
    /// the default, as `std::process::Command` gives it.
    DefaultSignal(i32),
    /// Stop this process with SIGSTOP (`kill(getpid(), SIGSTOP)`): the parent attaches with
    /// `PTRACE_SEIZE` while it is stopped, then continues it.
    StopSelf,
    /// Install a seccomp filter (`seccomp(SECCOMP_SET_MODE_FILTER)`). Without CAP_SYS_ADMIN
    /// the kernel requires `no_new_privs` (EACCES): then set `PR_SET_NO_NEW_PRIVS`, send
    /// [`TAG_NO_NEW_PRIVS`] and retry. On failure send [`TAG_SECCOMP_ERRNO`] and exit with
    /// [`EXIT_SECCOMP_FAILED`].
    InstallSeccomp {
        /// The BPF program, built before the fork.
        prog: &'a libc::sock_fprog,
        /// Report pipe (close-on-exec: EOF there means the exec happened or the child died).
        fd: RawFd,
    },
    /// `execve(path, argv, envp)`. Both arrays end with a null pointer and point into
    /// `CString`s built before the fork. On failure send [`TAG_EXEC_ERRNO`] and exit with
    /// [`EXIT_EXEC_FAILED`].
    Exec {
        /// The program's path (resolved against PATH before the fork).
        path: &'a std::ffi::CStr,
        /// Null-terminated argument vector.
        argv: &'a [*const libc::c_char],
        /// Null-terminated environment.
        envp: &'a [*const libc::c_char],
        /// Report pipe.
        fd: RawFd,
    },
}

/// Run a child's program, then `_exit(0)` (or the code of an [`ChildOp::Exit`]).
///
/// Each op is one call: the functions below are what the op does, each as short as the
/// system calls it makes.
///
/// # Safety
/// Call only in the child, straight after `fork()`. Every address in `ops` must be mapped
/// for the access it names, except where the fault is the point of the scenario (then the
/// child dies of the signal, which the parent observes). Descriptors must be the child's own.
pub unsafe fn run(ops: &[ChildOp<'_>]) -> ! {
    for op in ops {
        // SAFETY (every call below): the caller's contract for `run` covers each op's
        // addresses, descriptors and pointers; each function's own contract is a part of it.
        match *op {
            ChildOp::Close(fd) => {
                // SAFETY: close(2) is async-signal-safe; a bad fd only yields EBADF.
                unsafe { libc::close(fd) };
            }
            ChildOp::NoCoreDump => no_core_dump(),
            // SAFETY: see above (addr readable, or the fault is the outcome).
            ChildOp::ReadByte { addr, fd } => unsafe { read_byte(addr, fd) },
            ChildOp::DieWithParent => die_with_parent(),
            ChildOp::ReportFaults { fd } => report_faults(fd),
            // SAFETY: see above (addr writable, or the fault is the outcome).
            ChildOp::WriteByte { addr, byte } => unsafe { write_byte(addr, byte) },
            ChildOp::Stamp {
                addr,
                first_index,
                pages,
                page_size,
                side,
            } => {
                // SAFETY: see above (the pages are mapped writable).
                unsafe { stamp_pages(addr, first_index, pages, page_size, side) }
            }
            ChildOp::ReadPages {
                addr,
                pages,
                page_size,
            } => {
                // SAFETY: see above (the pages are mapped readable).
                unsafe { read_pages(addr, pages, page_size) }
            }
            ChildOp::TimeWrites {
                addr,
                pages,
                page_size,
                fd,
            } => {
                // SAFETY: see above (the pages are mapped writable).
                unsafe { time_writes(addr, pages, page_size, fd) }
            }
            ChildOp::Send { fd, tag, value } => send(fd, tag, value),
            ChildOp::Wait(fd) => wait_for_byte(fd),
            // SAFETY: see above (`ops` obey the same contract).
            ChildOp::Fork { ops, fd } => unsafe { fork_and_run(ops, fd) },
            ChildOp::ReapAll => reap_all(),
            ChildOp::Exit(code) => exit(code),
            ChildOp::TryLockFor {
                mutex,
                timeout_ns,
                fd,
            } => {
                // SAFETY: see above (`mutex` is an initialised pthread mutex).
                unsafe { try_lock_for(mutex, timeout_ns, fd) }
            }
            // SAFETY: see above (the range is the child's own).
            ChildOp::MapAnon { addr, len } => unsafe { map_anon(addr, len) },
            ChildOp::ResumeOnOrphan { fd, pids, pidfds } => resume_on_orphan(fd, pids, pidfds),
            ChildOp::Mprotect {
                addr,
                len,
                prot,
                fd,
            } => {
                // SAFETY: see above (later ops access the range as `prot` allows).
                unsafe { mprotect(addr, len, prot, fd) }
            }
            ChildOp::Vmsplice {
                pipe,
                addr,
                len,
                fd,
            } => {
                // SAFETY: see above (the range is mapped readable).
                unsafe { vmsplice(pipe, addr, len, fd) }
            }
            ChildOp::ReadFile {
                file,
                addr,
                len,
                offset,
                fd,
            } => {
                // SAFETY: see above (the range is mapped writable).
                unsafe { read_file(file, addr, len, offset, fd) }
            }
            // SAFETY: see above (the range is no longer used by the rest of `ops`).
            ChildOp::Munmap { addr, len, fd } => unsafe { munmap(addr, len, fd) },
            ChildOp::SetSigmask(set) => set_sigmask(set),
            ChildOp::DefaultSignal(sig) => default_signal(sig),
            ChildOp::StopSelf => {
                // SAFETY: getpid and kill are async-signal-safe syscalls on plain integers.
                unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
            }
            ChildOp::InstallSeccomp { prog, fd } => install_seccomp(prog, fd),
            ChildOp::Exec {
                path,
                argv,
                envp,
                fd,
            } => {
                // SAFETY: see above (the vectors' pointers are alive, built before the fork).
                unsafe { exec(path, argv, envp, fd) }
            }
        }
    }
    exit(0)
}

/// [`ChildOp::NoCoreDump`]: RLIMIT_CORE 0.
fn no_core_dump() {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit only reads the local struct.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
}

/// [`ChildOp::ReadByte`]: read one byte and send it.
///
/// # Safety
/// `addr` is mapped readable, or the fault is the intended outcome.
unsafe fn read_byte(addr: usize, fd: RawFd) {
    // SAFETY: the caller guarantees addr is mapped readable, or that the fault is
    // the intended outcome.
    let b = unsafe { std::ptr::read_volatile(addr as *const u8) };
    send(fd, TAG_BYTE, u64::from(b));
}

/// [`ChildOp::DieWithParent`]: PR_SET_PDEATHSIG SIGKILL.
fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and touches no memory.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
}

/// [`ChildOp::ReportFaults`]: SIGSEGV and SIGBUS report their address on `fd`, then kill.
fn report_faults(fd: RawFd) {
    FAULT_FD.store(fd, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: sigaction with a zeroed struct plus handler and flags; the handler
    // only calls async-signal-safe `write`.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = fault_handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}

/// [`ChildOp::WriteByte`]: one store.
///
/// # Safety
/// `addr` is mapped writable, or the fault is the intended outcome.
unsafe fn write_byte(addr: usize, byte: u8) {
    // SAFETY: the caller guarantees addr is mapped writable, or that the fault is
    // the intended outcome (the child then dies of the signal).
    unsafe { std::ptr::write_volatile(addr as *mut u8, byte) };
}

/// [`ChildOp::Stamp`]: stamp `pages` pages from `addr` on.
///
/// # Safety
/// `[addr, addr + pages * page_size)` is mapped writable and `page_size >= 9`.
unsafe fn stamp_pages(addr: usize, first_index: usize, pages: usize, page_size: usize, side: u8) {
    for i in 0..pages {
        // SAFETY: the caller guarantees [addr, addr + pages*page_size) is mapped
        // writable; `stamp_page` stays within one page.
        unsafe { stamp_page(addr + i * page_size, first_index + i, page_size, side) };
    }
}

/// [`ChildOp::ReadPages`]: read the first byte of each page.
///
/// # Safety
/// The pages are mapped readable.
unsafe fn read_pages(addr: usize, pages: usize, page_size: usize) {
    for i in 0..pages {
        // SAFETY: the caller guarantees the pages are mapped readable.
        unsafe { std::ptr::read_volatile((addr + i * page_size) as *const u8) };
    }
}

/// [`ChildOp::TimeWrites`]: per page, the time of a first store (a copy-on-write fault) and
/// of a second one (owned).
///
/// # Safety
/// The pages are mapped writable and at least 25 bytes long.
unsafe fn time_writes(addr: usize, pages: usize, page_size: usize, fd: RawFd) {
    for i in 0..pages {
        let p = (addr + i * page_size) as *mut u8;
        let t0 = now_ns();
        // SAFETY: mapped writable (caller's guarantee); offsets 16 and 24 are
        // within the page.
        unsafe { std::ptr::write_volatile(p.add(16), 0xA5) };
        let t1 = now_ns();
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(p.add(24), 0x5A) };
        let t2 = now_ns();
        send(fd, TAG_COW_NS, t1.saturating_sub(t0));
        send(fd, TAG_OWNED_NS, t2.saturating_sub(t1));
    }
}

/// [`ChildOp::Wait`]: block until one byte (or EOF) arrives on `fd`.
fn wait_for_byte(fd: RawFd) {
    let mut b = 0u8;
    loop {
        // SAFETY: reads at most 1 byte into a local.
        let n = unsafe { libc::read(fd, (&raw mut b).cast(), 1) };
        if n >= 0 || errno() != libc::EINTR {
            break;
        }
    }
}

/// [`ChildOp::Fork`]: a grandchild that runs `ops`; its pid goes to `fd`.
///
/// # Safety
/// As [`run`] for `ops`.
unsafe fn fork_and_run(ops: &[ChildOp<'_>], fd: RawFd) {
    // SAFETY: we are single-threaded here (a fork child has one thread), and the
    // grandchild only runs this same async-signal-safe interpreter.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the grandchild, straight after fork; `ops` obey the caller's
        // contract for `run`.
        unsafe { run(ops) };
    }
    if pid < 0 {
        exit(EXIT_FORK_FAILED);
    }
    send(fd, TAG_PID, pid as u64);
}

/// [`ChildOp::ReapAll`]: wait for every child until none is left.
fn reap_all() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to the local `status`.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r < 0 && errno() != libc::EINTR {
            break;
        }
    }
}

/// [`ChildOp::TryLockFor`]: trylock every millisecond until taken or `timeout_ns` passed;
/// sends tries, time and the outcome.
///
/// # Safety
/// `mutex` points to an initialised default pthread mutex in inherited memory.
unsafe fn try_lock_for(mutex: usize, timeout_ns: u64, fd: RawFd) {
    let t0 = now_ns();
    let mut tries = 0u64;
    let acquired = loop {
        tries += 1;
        // SAFETY: the caller guarantees `mutex` points to an initialised default
        // pthread mutex in inherited memory; trylock never blocks (see the op's
        // docs for why it is fit for a fork child).
        let rc = unsafe { libc::pthread_mutex_trylock(mutex as *mut _) };
        if rc == 0 {
            break true;
        }
        if now_ns().saturating_sub(t0) >= timeout_ns {
            break false;
        }
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        // SAFETY: nanosleep is async-signal-safe; it reads the local `pause` and
        // may write nothing (null remainder). An EINTR just ends this pause early.
        unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
    };
    send(fd, TAG_LOCK_TRIES, tries);
    send(fd, TAG_LOCK_WAITED_NS, now_ns().saturating_sub(t0));
    send(fd, TAG_LOCK_ACQUIRED, u64::from(acquired));
}

/// [`ChildOp::MapAnon`]: fresh anonymous memory over `[addr, addr + len)` (MAP_FIXED).
///
/// # Safety
/// The range is the child's own and nothing the child still uses lives there.
unsafe fn map_anon(addr: usize, len: usize) {
    // SAFETY: MAP_FIXED over a range the caller guarantees is the child's own
    // (see the op's docs); mmap is a plain syscall.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if p as usize != addr {
        exit(EXIT_MMAP_FAILED);
    }
}

/// [`ChildOp::ResumeOnOrphan`]: a session of its own, deaf to the stop signals, waiting on
/// `fd`; at EOF (the parent died) SIGCONT to every process named.
fn resume_on_orphan(fd: RawFd, pids: &[i32], pidfds: &[RawFd]) {
    // SAFETY: setsid and sigaction with SIG_IGN are async-signal-safe syscalls
    // touching only a zeroed local struct.
    unsafe {
        libc::setsid();
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_IGN;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in [
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGHUP,
            libc::SIGTERM,
            libc::SIGPIPE,
            libc::SIGTSTP,
        ] {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    let mut b = 0u8;
    let n = loop {
        // SAFETY: reads at most 1 byte into a local.
        let n = unsafe { libc::read(fd, (&raw mut b).cast(), 1) };
        if n >= 0 || errno() != libc::EINTR {
            break n;
        }
    };
    if n == 0 {
        for (k, &pid) in pids.iter().enumerate() {
            let pidfd = pidfds.get(k).copied().unwrap_or(-1);
            // SAFETY: pidfd_send_signal and kill take plain integers (a null
            // siginfo); both are async-signal-safe syscalls.
            let sent = pidfd >= 0
                && unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd,
                        libc::SIGCONT,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                } == 0;
            if !sent && pidfd < 0 {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
        }
    }
}

/// [`ChildOp::Mprotect`]: mprotect, result sent.
///
/// # Safety
/// Later ops access the range only as `prot` allows (or the fault is the outcome).
unsafe fn mprotect(addr: usize, len: usize, prot: i32, fd: RawFd) {
    // SAFETY: mprotect(2) is a plain syscall on the child's own copy of the address
    // space; the caller names a range that later ops access as `prot` allows.
    let rc = unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) };
    send(fd, TAG_SYSCALL_RESULT, result(rc as i64));
}

/// [`ChildOp::Vmsplice`]: vmsplice the range into `pipe`, result sent.
///
/// # Safety
/// The range is mapped readable.
unsafe fn vmsplice(pipe: RawFd, addr: usize, len: usize, fd: RawFd) {
    let iov = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: vmsplice reads the one local iovec; the range is mapped readable
    // (caller's guarantee). The pipe only takes references to the pages.
    let n = unsafe { libc::vmsplice(pipe, &iov, 1, 0) };
    send(fd, TAG_SYSCALL_RESULT, result(n as i64));
}

/// [`ChildOp::ReadFile`]: pread into the range, result sent.
///
/// # Safety
/// `[addr, addr + len)` is mapped writable.
unsafe fn read_file(file: RawFd, addr: usize, len: usize, offset: i64, fd: RawFd) {
    // SAFETY: pread writes at most `len` bytes to [addr, addr + len), which the
    // caller guarantees is mapped writable.
    let n = unsafe { libc::pread(file, addr as *mut libc::c_void, len, offset) };
    send(fd, TAG_SYSCALL_RESULT, result(n as i64));
}

/// [`ChildOp::Munmap`]: munmap, 0 or the errno sent.
///
/// # Safety
/// Nothing the rest of the program uses lives in the range.
unsafe fn munmap(addr: usize, len: usize, fd: RawFd) {
    // SAFETY: munmap(2) is a plain syscall; the caller names a range of the child's
    // own copy of the address space that the rest of `ops` no longer uses.
    let rc = unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    let result = if rc == 0 { 0 } else { errno().max(1) as u64 };
    send(fd, TAG_MUNMAP_RESULT, result);
}

/// [`ChildOp::SetSigmask`]: the blocked-signal mask becomes `set`.
fn set_sigmask(set: &libc::sigset_t) {
    // SAFETY: sigprocmask reads the caller's sigset (inherited memory, built before
    // the fork) and writes nothing (null old set); async-signal-safe.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, set, std::ptr::null_mut()) };
}

/// [`ChildOp::DefaultSignal`]: `sig` back to SIG_DFL.
fn default_signal(sig: i32) {
    // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask and no flags;
    // sigaction only reads it.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// [`ChildOp::InstallSeccomp`]: the filter (PR_SET_NO_NEW_PRIVS first when unprivileged,
/// which is sent); a failure sends the errno and exits.
fn install_seccomp(prog: &libc::sock_fprog, fd: RawFd) {
    let install = || {
        // SAFETY: the kernel copies the BPF program that `prog` points to (built
        // before the fork, in inherited memory); nothing is written.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                0 as libc::c_ulong,
                prog as *const libc::sock_fprog,
            )
        }
    };
    let mut rc = install();
    if rc != 0 && errno() == libc::EACCES {
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) takes plain integers.
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        send(fd, TAG_NO_NEW_PRIVS, 1);
        rc = install();
    }
    if rc != 0 {
        send(fd, TAG_SECCOMP_ERRNO, errno().max(1) as u64);
        exit(EXIT_SECCOMP_FAILED);
    }
}

/// [`ChildOp::Exec`]: execve; on failure the errno is sent and the child exits 127.
///
/// # Safety
/// Every pointer in `argv` and `envp` but the last points to a NUL-terminated string alive
/// in inherited memory.
unsafe fn exec(
    path: &std::ffi::CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    fd: RawFd,
) -> ! {
    // A malformed vector must never reach execve: the kernel reads until the null.
    if argv.last().is_some_and(|p| p.is_null()) && envp.last().is_some_and(|p| p.is_null()) {
        // SAFETY: `path` is a NUL-terminated string and both vectors are
        // null-terminated arrays of pointers to NUL-terminated strings, all built
        // before the fork and alive in inherited memory (caller's contract).
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        send(fd, TAG_EXEC_ERRNO, errno().max(1) as u64);
    } else {
        send(fd, TAG_EXEC_ERRNO, libc::EINVAL as u64);
    }
    exit(EXIT_EXEC_FAILED);
}

/// Fill one page: index (u64 LE), side marker, then the marker repeated.
///
/// # Safety
/// `addr .. addr + page_size` must be mapped writable and `page_size >= 9`.
#[inline]
pub unsafe fn stamp_page(addr: usize, index: usize, page_size: usize, side: u8) {
    let p = addr as *mut u8;
    let idx = (index as u64).to_le_bytes();
    // SAFETY: 8 bytes at the page start, inside the page (caller's guarantee); a local source.
    unsafe { std::ptr::copy_nonoverlapping(idx.as_ptr(), p, 8) };
    // SAFETY: [STAMP_SIDE_OFFSET, page_size) is inside the page. write_bytes is a plain memset:
    // no allocation, no locks, safe to run in a fork child.
    unsafe {
        std::ptr::write_bytes(
            p.add(STAMP_SIDE_OFFSET),
            side,
            page_size - STAMP_SIDE_OFFSET,
        )
    };
}

static FAULT_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn fault_handler(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let fd = FAULT_FD.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize as u64;
    send(fd, TAG_FAULT_SIGNAL, sig as u64);
    send(fd, TAG_FAULT_ADDR, addr);
    // Returning re-executes the faulting access; SA_RESETHAND restored the default action,
    // so the process now dies of the signal, as it would have without this handler.
}

/// Write only a page's header: its index (u64 LE) and the side marker. Enough for the content
/// check, and an eighth of the cost of a whole stamp on a 1 GiB arena.
///
/// # Safety
/// `addr .. addr + 9` must be mapped writable.
#[inline]
pub unsafe fn stamp_head(addr: usize, index: usize, side: u8) {
    let p = addr as *mut u8;
    let idx = (index as u64).to_le_bytes();
    // SAFETY: 9 bytes from the page start, inside the page (caller's guarantee).
    unsafe {
        std::ptr::copy_nonoverlapping(idx.as_ptr(), p, 8);
        p.add(STAMP_SIDE_OFFSET).write(side);
    }
}

fn send(fd: RawFd, tag: u8, value: u64) {
    let v = value.to_le_bytes();
    let msg = [tag, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]];
    loop {
        // SAFETY: writes MSG_LEN bytes from a local array; MSG_LEN <= PIPE_BUF, so the write
        // is atomic and never partial on a pipe.
        let n = unsafe { libc::write(fd, msg.as_ptr().cast(), MSG_LEN) };
        if n == MSG_LEN as isize {
            return;
        }
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        exit(EXIT_PIPE_FAILED);
    }
}

/// A syscall's return as a message value: the value itself, or `u64::MAX - errno` on error.
fn result(rc: i64) -> u64 {
    if rc >= 0 {
        rc as u64
    } else {
        u64::MAX - errno().max(1) as u64
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime is async-signal-safe and writes only to the local `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and skips atexit handlers and stdio flushing, which
    // must not run in a fork child.
    unsafe { libc::_exit(code) }
}
