//! Memory the tests control: anonymous mappings, and a forked child that only blocks.
#![allow(dead_code)]

/// The base page size.
pub fn page_size() -> usize {
    cowscope::kernel::page_size()
}

/// Whether we run as root (the kpage files and PFNs need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// An mmap'd region, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    pub ptr: *mut u8,
    pub len: usize,
}

impl Mapping {
    /// An anonymous mapping of `pages` pages; `flags` is MAP_PRIVATE or MAP_SHARED.
    pub fn anon(pages: usize, flags: libc::c_int) -> Mapping {
        let len = pages * page_size();
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap failed: {}",
            std::io::Error::last_os_error()
        );
        Mapping { ptr: p.cast(), len }
    }

    /// First byte's address.
    pub fn start(&self) -> u64 {
        self.ptr as u64
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start() + self.len as u64
    }

    /// Write one distinct byte into every page (faults each in as a private copy).
    pub fn touch_all(&self) {
        for i in (0..self.len).step_by(page_size()) {
            // SAFETY: i < len, inside our own writable mapping.
            unsafe { std::ptr::write_volatile(self.ptr.add(i), (i / page_size()) as u8 | 1) };
        }
    }
}

/// A 4 MiB mapping with a 2 MiB-aligned window inside it, advised `MADV_HUGEPAGE` and written
/// page by page with `fill`, and the window's start; `None` (said) where THP is off.
pub fn thp_window(fill: u8) -> Option<(Mapping, u64)> {
    let mode = cowscope::kernel::thp_enabled();
    if mode == "never" || mode == "unavailable" {
        eprintln!("SKIP: THP is {mode}");
        return None;
    }
    let huge = 2usize << 20;
    let m = Mapping::anon(2 * huge / page_size(), libc::MAP_PRIVATE);
    let aligned = (m.start() + huge as u64 - 1) & !(huge as u64 - 1);
    // SAFETY: the aligned 2 MiB window lies inside our 4 MiB mapping.
    let rc = unsafe { libc::madvise(aligned as *mut libc::c_void, huge, libc::MADV_HUGEPAGE) };
    assert_eq!(rc, 0);
    for off in (0..huge).step_by(page_size()) {
        // SAFETY: inside the aligned window.
        unsafe { std::ptr::write_volatile((aligned as *mut u8).add(off), fill) };
    }
    Some((m, aligned))
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from our own successful mmap and nothing borrows it any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A forked child that does nothing but block on a pipe read, then `_exit(0)`.
/// Dropping it releases and reaps the child, even when an assertion failed.
#[derive(Debug)]
pub struct BlockedChild {
    pub pid: i32,
    subject: cowscope::fork::subject::Subject,
}

impl BlockedChild {
    /// Fork now, through cowscope's one child interpreter. The child touches no memory at
    /// all: it reports ready and blocks until released (on drop).
    pub fn fork() -> BlockedChild {
        use cowscope::fork::subject::{SubjectPipes, spawn};
        let pipes = SubjectPipes::new().expect("pipes");
        let mut ops = pipes.prologue().to_vec();
        ops.extend(pipes.epilogue());
        let (mut subject, _) = spawn(pipes, &ops).expect("fork");
        subject
            .wait_ready(std::time::Instant::now() + std::time::Duration::from_secs(10))
            .expect("child ready");
        BlockedChild {
            pid: subject.pid().as_raw(),
            subject,
        }
    }
}

impl Drop for BlockedChild {
    fn drop(&mut self) {
        self.subject
            .finish(std::time::Instant::now() + std::time::Duration::from_secs(10));
    }
}
