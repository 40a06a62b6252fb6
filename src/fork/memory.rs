//! The first stage of a scenario: prepare the memory the scenario's [`MemoryKind`] asks for,
//! prove it formed, and apply the parent's before-fork steps ([`Prep`]). Everything a kind
//! needs from the machine (THP sizes, huge pages, swap, io_uring, a disk filesystem) is checked
//! here; a missing feature is a skip with a reason. With `--allow-sysfs` (root), a missing
//! setting is changed and restored when the scenario ends (also on error or panic):
//! [`SysfsGuard`] for /sys and /proc/sys, [`SwapFile`] for a temporary swap file.

use std::ffi::CString;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::child::{self, side};
use super::scenarios::{MemoryKind, Op, Prep, Scenario, ThpLayout};
use crate::arena::{Advice, Arena, ArenaConfig};
use crate::error::{Error, Result};
use crate::kernel::{AnonMap, SysfsGuard};
use crate::mem::pagemap::Pagemap;

const THP_DIR: &str = "/sys/kernel/mm/transparent_hugepage";

/// What the caller allows the prepare stage to change.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allow {
    /// Change (and restore) THP, hugetlb and swap settings.
    pub sysfs: bool,
}

/// The prepared memory of one scenario, alive until the scenario ends.
#[derive(Debug)]
pub struct Memory {
    /// First byte of the arena range.
    pub base: usize,
    /// Pages in the range.
    pub pages: usize,
    /// Base page size.
    pub page_size: usize,
    /// The arena, for anonymous kinds (and the seed's 09a arena).
    pub arena: Option<Arena>,
    /// A mapping made outside the arena engine (hugetlb, files, memfd): the whole PROT_NONE
    /// reservation around it, unmapped on drop.
    raw: Option<AnonMap>,
    /// The file or memfd behind the mapping.
    _backing_file: Option<File>,
    /// The pipe vmsplice steps write into: (read end, write end).
    pub pipe: Option<(OwnedFd, OwnedFd)>,
    /// The bytes the pipe must yield: the spliced pages as they were before the fork.
    pub pipe_expected: Option<Vec<u8>>,
    /// An O_DIRECT file on a disk filesystem for [`Op::ODirectRead`].
    pub direct_file: Option<File>,
    /// The io_uring instance holding the fixed-buffer pin.
    _ring: Option<OwnedFd>,
    /// AnonHugePages of the range before the fork (THP kinds).
    pub anon_huge_kb_before: Option<u64>,
    /// Why the kind could not be proven to have formed (no kpageflags), if so.
    pub unproven: Option<String>,
    /// What was changed for the scenario (restored on drop).
    pub changed: Vec<String>,
    /// Remarks for the report.
    pub notes: Vec<String>,
    sysfs: SysfsGuard,
    _swap: Option<SwapFile>,
}

impl Memory {
    /// Restore every setting the scenario changed; the failures, if any.
    pub fn restore(&mut self) -> Vec<String> {
        self.sysfs.restore();
        self.sysfs
            .failures
            .iter()
            .map(|(p, e)| format!("could not restore {p}: {e}"))
            .collect()
    }
}

/// The outcome of the prepare stage.
#[derive(Debug)]
pub enum Prepared {
    /// Ready to fork.
    Ready(Box<Memory>),
    /// The machine lacks what the scenario needs.
    Skip(String),
}

/// Map `len` bytes at an `align`-aligned address inside a PROT_NONE reservation that leaves at
/// least one guard page on each side: `flags` and `fd` as for mmap(2).
fn map_guarded(
    len: usize,
    align: usize,
    page: usize,
    flags: i32,
    fd: RawFd,
) -> Result<(AnonMap, usize)> {
    let total = len + 2 * align.max(page) + 2 * page;
    let res = AnonMap::new(total, libc::PROT_NONE, libc::MAP_NORESERVE)
        .map_err(|e| Error::io("reserving address space", e))?;
    let base = (res.addr() + page + align - 1) & !(align - 1);
    // SAFETY: [base, base + len) lies inside our own reservation (base >= start + page and
    // base + len <= start + total - page by the slack added above), so MAP_FIXED replaces only
    // pages we own.
    let p = unsafe {
        libc::mmap(
            base as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags | libc::MAP_FIXED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::io(
            "mapping the scenario's memory",
            std::io::Error::last_os_error(),
        ));
    }
    Ok((res, base))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// statfs magic numbers of filesystems without real direct I/O or swap files.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

fn fs_magic(dir: &Path) -> Option<i64> {
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs writes only into the zeroed local struct; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    (rc == 0).then_some(st.f_type as i64)
}

/// A writable directory on a disk filesystem (not tmpfs or ramfs), if there is one.
pub fn disk_dir() -> Option<PathBuf> {
    let mut candidates = vec![std::env::temp_dir(), PathBuf::from("/var/tmp")];
    if let Ok(d) = std::env::current_dir() {
        candidates.push(d);
    }
    candidates.into_iter().find(|d| {
        fs_magic(d).is_some_and(|m| m != TMPFS_MAGIC && m != RAMFS_MAGIC)
            && tempfile::tempfile_in(d).is_ok()
    })
}

/// A file of `pages` stamped pages (index + `marker`), unlinked, in `dir`.
fn stamped_file(dir: &Path, pages: usize, page: usize, marker: u8) -> Result<File> {
    let mut f = tempfile::tempfile_in(dir)
        .map_err(|e| Error::io(format!("creating a file in {}", dir.display()), e))?;
    let mut buf = vec![0u8; page];
    for i in 0..pages {
        buf[..8].copy_from_slice(&(i as u64).to_le_bytes());
        buf[8..].fill(marker);
        f.write_all(&buf)
            .map_err(|e| Error::io("writing the scenario's file", e))?;
    }
    f.sync_all()
        .map_err(|e| Error::io("syncing the scenario's file", e))?;
    Ok(f)
}

/// A temporary swap file, swapped on; swapoff and removed on drop.
#[derive(Debug)]
pub struct SwapFile {
    path: PathBuf,
}

impl SwapFile {
    /// Create `mib` MiB of swap in `dir` (root only).
    ///
    /// # Errors
    /// When the file cannot be written or the kernel refuses it (e.g. tmpfs).
    pub fn create(dir: &Path, mib: usize, page: usize) -> std::io::Result<SwapFile> {
        let path = dir.join(format!("cowscope-swap-{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        // Only a file this call created is ours to swapoff and remove (never a stale or
        // foreign one that happened to have the name).
        let guard = SwapFile { path: path.clone() };
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let pages = mib * (1 << 20) / page;
        // The swap header (what mkswap writes): version 1, last page, no bad pages, and the
        // "SWAPSPACE2" signature at the end of page 0.
        let mut first = vec![0u8; page];
        first[1024..1028].copy_from_slice(&1u32.to_le_bytes());
        first[1028..1032].copy_from_slice(&((pages - 1) as u32).to_le_bytes());
        first[page - 10..].copy_from_slice(b"SWAPSPACE2");
        f.write_all(&first)?;
        let zeros = vec![0u8; 1 << 20];
        let mut left = pages * page - page;
        while left > 0 {
            let n = left.min(zeros.len());
            f.write_all(&zeros[..n])?;
            left -= n;
        }
        f.sync_all()?;
        drop(f);
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: swapon(2) reads the C string only.
        let rc = unsafe { libc::swapon(c.as_ptr(), 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(guard)
    }
}

impl Drop for SwapFile {
    fn drop(&mut self) {
        if let Ok(c) = CString::new(self.path.as_os_str().as_encoded_bytes()) {
            // SAFETY: swapoff(2) reads the C string only; failing (never swapped on) is fine.
            unsafe { libc::swapoff(c.as_ptr()) };
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn swap_active() -> bool {
    std::fs::read_to_string("/proc/swaps").is_ok_and(|s| s.lines().count() > 1)
}

/// Why THP memory cannot be had here, after changing what `allow` permits.
fn thp_unavailable(sys: &SysfsGuard, allow: Allow) -> Option<String> {
    let _ = sys;
    let mode = crate::kernel::thp_enabled();
    if mode == "unavailable" {
        return Some("the kernel has no transparent huge pages".into());
    }
    if mode == "never" && !allow.sysfs {
        return Some(format!(
            "THP is 'never' on this machine ({THP_DIR}/enabled); pass --allow-sysfs (root) to enable it for this case"
        ));
    }
    None
}

/// Make a sysfs setting `want` (any of `ok`), or say why not.
fn ensure_setting(
    guard: &mut SysfsGuard,
    allow: Allow,
    path: &str,
    ok: &[&str],
    want: &str,
    what: &str,
    changed: &mut Vec<String>,
) -> std::result::Result<(), String> {
    let now = crate::kernel::read_setting(path).map_err(|e| format!("{what}: {e}"))?;
    if ok.contains(&now.as_str()) {
        return Ok(());
    }
    if !allow.sysfs {
        return Err(format!(
            "{what}: {path} is '{now}'; pass --allow-sysfs (root) to set it to '{want}' for this case"
        ));
    }
    if !is_root() {
        return Err(format!(
            "{what}: {path} is '{now}', and changing it needs root"
        ));
    }
    guard.set(path, want).map_err(|e| format!("{what}: {e}"))?;
    changed.push(format!("{path}: {now} -> {want}"));
    Ok(())
}

/// A stage of [`prepare`] that may find a feature missing: `Ok(Err(reason))` is a skip.
type Stage<T> = Result<std::result::Result<T, String>>;

/// Prepare the scenario's memory: map it, prove it formed, apply the before-fork steps.
///
/// # Errors
/// Only when memory cannot be set up at all; a missing feature is a [`Prepared::Skip`].
pub fn prepare(
    s: &Scenario,
    sys: &crate::mem::system::SystemInfo,
    allow: Allow,
) -> Result<Prepared> {
    let page = sys.page_size as usize;
    let pmd_kb = sys.thp_pmd_size_kb.unwrap_or(2048);
    let bytes = s
        .pages
        .checked_mul(page)
        .ok_or_else(|| Error::usage(format!("{} pages overflow the address space", s.pages)))?;
    if bytes > crate::arena::MAX_CAPACITY {
        return Err(Error::usage(format!(
            "{} pages of {page} bytes exceed the largest arena ({} bytes)",
            s.pages,
            crate::arena::MAX_CAPACITY
        )));
    }
    let mut guard = SysfsGuard::default();
    let mut changed = Vec::new();
    macro_rules! or_skip {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(reason) => return Ok(Prepared::Skip(reason)),
            }
        };
    }
    // ── what the kind needs from the machine ─────────────────────────────────────────────
    or_skip!(settle_the_settings(
        s,
        page,
        pmd_kb,
        allow,
        &mut guard,
        &mut changed
    ));
    let swap = or_skip!(swap_for_pageout(s, page, allow, &mut changed));
    let direct_dir = or_skip!(dir_for_direct_io(s));

    // ── map and populate ─────────────────────────────────────────────────────────────────
    let mut m = Memory {
        base: 0,
        pages: s.pages,
        page_size: page,
        arena: None,
        raw: None,
        _backing_file: None,
        pipe: None,
        pipe_expected: None,
        direct_file: None,
        _ring: None,
        anon_huge_kb_before: None,
        unproven: None,
        changed,
        notes: Vec::new(),
        sysfs: guard,
        _swap: swap,
    };
    let unit = s.unit(page, pmd_kb);
    or_skip!(map_the_kind(s, &mut m, bytes, pmd_kb, unit)?);

    // ── prove the kind formed ────────────────────────────────────────────────────────────
    if let Some(reason) = prove_formed(s, sys, &mut m, unit)? {
        return Ok(Prepared::Skip(reason));
    }
    if let MemoryKind::Thp { layout } = s.memory
        && let Some(reason) = apply_layout(s, &mut m, layout, unit)?
    {
        return Ok(Prepared::Skip(reason));
    }

    // ── the parent's before-fork steps ───────────────────────────────────────────────────
    if s.uses_pipe() {
        open_the_vmsplice_pipe(s, &mut m)?;
    }
    or_skip!(apply_the_before_fork_steps(s, &mut m, bytes)?);
    if let Some(dir) = direct_dir {
        or_skip!(open_the_direct_file(s, &mut m, &dir)?);
    }
    Ok(Prepared::Ready(Box::new(m)))
}

/// Make the sysfs settings the kind needs (THP enabled, the huge zero page, the PMD or mTHP
/// size enabled, enough free hugetlb pages), as `allow` permits, or say why not.
fn settle_the_settings(
    s: &Scenario,
    page: usize,
    pmd_kb: u64,
    allow: Allow,
    guard: &mut SysfsGuard,
    changed: &mut Vec<String>,
) -> std::result::Result<(), String> {
    if s.memory.is_thp() {
        if let Some(r) = thp_unavailable(guard, allow) {
            return Err(r);
        }
        if crate::kernel::thp_enabled() == "never" {
            ensure_setting(
                guard,
                allow,
                &format!("{THP_DIR}/enabled"),
                &["always", "madvise"],
                "madvise",
                "THP",
                changed,
            )?;
        }
    }
    match s.memory {
        MemoryKind::HugeZeroPage => ensure_setting(
            guard,
            allow,
            &format!("{THP_DIR}/use_zero_page"),
            &["1"],
            "1",
            "the huge zero page",
            changed,
        ),
        MemoryKind::Thp { .. } => {
            let f = format!("{THP_DIR}/hugepages-{pmd_kb}kB/enabled");
            if !Path::new(&f).exists() {
                return Ok(());
            }
            ensure_setting(
                guard,
                allow,
                &f,
                &["always", "madvise", "inherit"],
                "inherit",
                "PMD-sized THP",
                changed,
            )
        }
        MemoryKind::Mthp { size_kb } => {
            let f = format!("{THP_DIR}/hugepages-{size_kb}kB/enabled");
            if !Path::new(&f).exists() {
                return Err(format!(
                    "the kernel offers no {size_kb} kB anonymous THP size (no {f}; multi-size THP needs Linux 6.8+)"
                ));
            }
            ensure_setting(
                guard,
                allow,
                &f,
                &["always", "madvise"],
                "madvise",
                &format!("{size_kb} kB mTHP"),
                changed,
            )
        }
        MemoryKind::Hugetlb { size_kb } => {
            reserve_huge_pages(s, page, size_kb, allow, guard, changed)
        }
        _ => Ok(()),
    }
}

/// Enough free hugetlb pages of `size_kb` for the scenario and the copy a write makes,
/// reserved through `guard` when `allow` permits, or why not.
fn reserve_huge_pages(
    s: &Scenario,
    page: usize,
    size_kb: u64,
    allow: Allow,
    guard: &mut SysfsGuard,
    changed: &mut Vec<String>,
) -> std::result::Result<(), String> {
    let dir = format!("/sys/kernel/mm/hugepages/hugepages-{size_kb}kB");
    if !Path::new(&dir).exists() {
        return Err(format!(
            "the kernel has no {size_kb} kB hugetlb pages ({dir})"
        ));
    }
    let read = |f: &str| -> u64 {
        crate::kernel::read_setting(&format!("{dir}/{f}"))
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // The child's write needs a second huge page (cow.c: fewer can end in SIGBUS).
    let need = 2 * (s.pages * page).div_ceil(size_kb as usize * 1024) as u64;
    let free = read("free_hugepages");
    if free >= need {
        return Ok(());
    }
    if !allow.sysfs {
        return Err(format!(
            "needs {need} free {size_kb} kB huge pages, {dir}/free_hugepages is {free}; pass --allow-sysfs (root) to reserve them for this case"
        ));
    }
    if !is_root() {
        return Err(format!(
            "needs {need} free {size_kb} kB huge pages ({free} free), and reserving them needs root"
        ));
    }
    let nr = read("nr_hugepages");
    let want = nr + need - free;
    if let Err(e) = guard.set(&format!("{dir}/nr_hugepages"), &want.to_string()) {
        return Err(format!("reserving huge pages: {e}"));
    }
    changed.push(format!("{dir}/nr_hugepages: {nr} -> {want}"));
    if read("free_hugepages") < need {
        return Err(format!(
            "the kernel reserved fewer than {need} free {size_kb} kB huge pages (memory too fragmented)"
        ));
    }
    Ok(())
}

/// A temporary swap file when the scenario pages out and no swap is active (`allow`
/// permitting), or why MADV_PAGEOUT cannot work here.
fn swap_for_pageout(
    s: &Scenario,
    page: usize,
    allow: Allow,
    changed: &mut Vec<String>,
) -> std::result::Result<Option<SwapFile>, String> {
    if !s.prepare.contains(&Prep::PageOut) || swap_active() {
        return Ok(None);
    }
    if !allow.sysfs {
        return Err("no swap is active, so MADV_PAGEOUT cannot page anonymous memory out; pass --allow-sysfs (root) to add a temporary swap file for this case".into());
    }
    if !is_root() {
        return Err("no swap is active, and adding a swap file needs root".into());
    }
    let Some(dir) = disk_dir() else {
        return Err("no swap is active and no disk filesystem for a temporary swap file (tmpfs cannot hold one)".into());
    };
    match SwapFile::create(&dir, 16, page) {
        Ok(f) => {
            changed.push(format!(
                "swap file {}/cowscope-swap-{} (16 MiB), removed afterwards",
                dir.display(),
                std::process::id()
            ));
            Ok(Some(f))
        }
        Err(e) => Err(format!(
            "could not add a temporary swap file in {}: {e}",
            dir.display()
        )),
    }
}

/// The disk directory for the O_DIRECT file, when the scenario reads one.
fn dir_for_direct_io(s: &Scenario) -> std::result::Result<Option<PathBuf>, String> {
    if !s.uses_direct_file() {
        return Ok(None);
    }
    match disk_dir() {
        Some(d) => Ok(Some(d)),
        None => Err("O_DIRECT needs a disk filesystem and every candidate directory (TMPDIR, /var/tmp, the current one) is tmpfs or ramfs".into()),
    }
}

/// Map the scenario's kind of memory into `m` and populate it: hugetlb, a file or memfd,
/// else an arena.
fn map_the_kind(s: &Scenario, m: &mut Memory, bytes: usize, pmd_kb: u64, unit: usize) -> Stage<()> {
    let page = m.page_size;
    match s.memory {
        MemoryKind::Hugetlb { size_kb } => {
            let huge = size_kb as usize * 1024;
            let flags = libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_HUGETLB
                | ((huge.trailing_zeros() as i32) << libc::MAP_HUGE_SHIFT);
            let len = bytes.next_multiple_of(huge);
            match map_guarded(len, huge, page, flags, -1) {
                Ok((raw, base)) => {
                    m.raw = Some(raw);
                    m.base = base;
                }
                Err(e) => return Ok(Err(format!("hugetlb mapping refused: {e}"))),
            }
            stamp_all(m.base, s.pages, page, true);
        }
        MemoryKind::File | MemoryKind::Memfd => {
            let f = match backing_file(s, bytes, page)? {
                Ok(f) => f,
                Err(reason) => return Ok(Err(reason)),
            };
            let share = match s.mapping {
                super::scenarios::Mapping::Private => libc::MAP_PRIVATE,
                super::scenarios::Mapping::Shared => libc::MAP_SHARED,
            };
            let (raw, base) = map_guarded(bytes, page, page, share, f.as_raw_fd())?;
            m.raw = Some(raw);
            m.base = base;
            m._backing_file = Some(f);
            if s.memory == MemoryKind::Memfd {
                stamp_all(m.base, s.pages, page, true);
            } else {
                read_all(m.base, s.pages, page);
            }
        }
        _ => {
            let arena = Arena::new(arena_config(s, bytes, page, pmd_kb))?;
            m.base = arena.base_addr();
            m.arena = Some(arena);
            populate_arena(s, m, unit)?;
        }
    }
    Ok(Ok(()))
}

/// The file behind a file or memfd mapping: a stamped temporary file, or a memfd of `bytes`.
fn backing_file(s: &Scenario, bytes: usize, page: usize) -> Stage<File> {
    if s.memory == MemoryKind::File {
        let dir = std::env::temp_dir();
        return Ok(stamped_file(&dir, s.pages, page, side::PARENT_BEFORE)
            .map_err(|e| format!("no file for the mapping: {e}")));
    }
    let name = CString::new("cowscope").unwrap_or_default();
    // SAFETY: memfd_create reads the C string only.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Ok(Err(format!(
            "memfd_create failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(bytes as u64)
        .map_err(|e| Error::io("sizing the memfd", e))?;
    Ok(Ok(f))
}

/// The arena of an anonymous kind: shared or private, fork advice, alignment and THP advice
/// by the kind (seed-09a: the seed's plain arena).
fn arena_config(s: &Scenario, bytes: usize, page: usize, pmd_kb: u64) -> ArenaConfig {
    if s.memory == MemoryKind::Seed09a {
        return ArenaConfig::new(bytes);
    }
    let mut cfg = ArenaConfig::new(bytes);
    if s.mapping == super::scenarios::Mapping::Shared {
        cfg = cfg.shared();
    }
    match s.advice {
        super::scenarios::ForkAdvice::WipeOnFork => cfg = cfg.advise(Advice::WipeOnFork),
        super::scenarios::ForkAdvice::DontFork => cfg = cfg.advise(Advice::DontFork),
        super::scenarios::ForkAdvice::None => {}
    }
    if let Some(u) = s.memory.unit_pages(page, pmd_kb) {
        cfg = cfg.align(u * page).advise(Advice::HugePage);
    } else if s.memory == MemoryKind::ZeroPage {
        cfg = cfg.advise(Advice::NoHugePage);
    }
    cfg
}

/// The pipe the vmsplice step splices into, and the bytes it must yield later (the spliced
/// pages' pre-fork content).
fn open_the_vmsplice_pipe(s: &Scenario, m: &mut Memory) -> Result<()> {
    let page = m.page_size;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(|e| Error::io("creating the vmsplice pipe", e))?;
    // Only the read end is non-blocking (the parent drains it); a vmsplice must block
    // rather than splice part of a range.
    nix::fcntl::fcntl(
        &w,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(|e| Error::io("configuring the vmsplice pipe", e))?;
    let spliced = s.vmspliced();
    let mut want = Vec::with_capacity(spliced.len() * page);
    for &p in &spliced {
        // SAFETY: page p < pages (checked by `select`) lies in the mapped arena range.
        let bytes = unsafe { std::slice::from_raw_parts((m.base + p * page) as *const u8, page) };
        want.extend_from_slice(bytes);
    }
    m.pipe_expected = Some(want);
    m.pipe = Some((r, w));
    Ok(())
}

/// The parent's before-fork steps, in order: MADV_FREE, MADV_PAGEOUT (proven: every page
/// left for swap), vmsplice, an io_uring fixed buffer.
fn apply_the_before_fork_steps(s: &Scenario, m: &mut Memory, bytes: usize) -> Stage<()> {
    let page = m.page_size;
    for step in &s.prepare {
        match step {
            Prep::MadvFree => advise(m, libc::MADV_FREE, "MADV_FREE")?,
            Prep::PageOut => {
                advise(m, libc::MADV_PAGEOUT, "MADV_PAGEOUT")?;
                let pm = Pagemap::open(nix::unistd::getpid().as_raw())
                    .map_err(|e| Error::io("opening our pagemap", e))?;
                let e = pm
                    .read(m.base as u64, (m.base + bytes) as u64)
                    .map_err(|e| Error::io("reading our pagemap", e))?;
                let out = e.iter().filter(|x| x.swapped() && !x.present()).count();
                if out < s.pages {
                    return Ok(Err(format!(
                        "MADV_PAGEOUT left {} of {} pages in memory (swap full or unavailable)",
                        s.pages - out,
                        s.pages
                    )));
                }
            }
            Prep::Vmsplice { pages } => {
                let Some((_, w)) = &m.pipe else { continue };
                for &p in pages {
                    let iov = libc::iovec {
                        iov_base: (m.base + p * page) as *mut libc::c_void,
                        iov_len: page,
                    };
                    // SAFETY: vmsplice reads the local iovec; page p is mapped readable.
                    let n = unsafe { libc::vmsplice(w.as_raw_fd(), &iov, 1, 0) };
                    if n != page as isize {
                        return Err(Error::io(
                            "vmsplice before the fork",
                            std::io::Error::last_os_error(),
                        ));
                    }
                }
            }
            Prep::RegisterFixedBuffer => match register_fixed_buffer(m.base, bytes) {
                Ok(ring) => m._ring = Some(ring),
                Err(reason) => return Ok(Err(reason)),
            },
        }
    }
    Ok(Ok(()))
}

/// The stamped file the O_DIRECT read step reads, reopened with O_DIRECT.
fn open_the_direct_file(s: &Scenario, m: &mut Memory, dir: &Path) -> Stage<()> {
    let f = stamped_file(dir, s.pages, m.page_size, side::DIRECT_FILE)?;
    // Reopen the same inode with O_DIRECT through /proc/self/fd.
    let path = format!("/proc/self/fd/{}", f.as_raw_fd());
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(d) => {
            m.direct_file = Some(d);
            Ok(Ok(()))
        }
        Err(e) => Ok(Err(format!(
            "{} does not support O_DIRECT: {e}",
            dir.display()
        ))),
    }
}

fn advise(m: &Memory, advice: i32, name: &str) -> Result<()> {
    // SAFETY: the range is exactly the scenario's own mapping; MADV_FREE/MADV_PAGEOUT may drop
    // or page out its contents, which is the point of the step (nothing in Rust borrows them).
    let rc = unsafe { libc::madvise(m.base as *mut libc::c_void, m.pages * m.page_size, advice) };
    if rc != 0 {
        return Err(Error::io(name.to_string(), std::io::Error::last_os_error()));
    }
    Ok(())
}

fn stamp_all(base: usize, pages: usize, page: usize, whole: bool) {
    for i in 0..pages {
        if whole {
            // SAFETY: page i is inside the freshly mapped, writable range.
            unsafe { child::stamp_page(base + i * page, i, page, side::PARENT_BEFORE) };
        } else {
            // SAFETY: as above.
            unsafe { child::stamp_head(base + i * page, i, side::PARENT_BEFORE) };
        }
    }
}

fn read_all(base: usize, pages: usize, page: usize) {
    for i in 0..pages {
        // SAFETY: page i is inside the mapped, readable range.
        unsafe { std::ptr::read_volatile((base + i * page) as *const u8) };
    }
}

/// The 09a strings (the seed's 09a writes these into three 64-byte blocks).
pub const SEED_09A: [&str; 3] = [
    "Hello arena",
    "Scoped allocator is born",
    "This is not malloc",
];
/// The seed's block size.
pub const SEED_BLOCK: usize = 64;

fn populate_arena(s: &Scenario, m: &mut Memory, unit: usize) -> Result<()> {
    let (base, page) = (m.base, m.page_size);
    let Some(arena) = m.arena.as_mut() else {
        return Ok(());
    };
    if s.memory == MemoryKind::Seed09a {
        for text in SEED_09A {
            let b = arena.alloc(SEED_BLOCK)?;
            let mut bytes = text.as_bytes().to_vec();
            bytes.push(0);
            arena.write(&b, 0, &bytes)?;
        }
        return Ok(());
    }
    if !s.populate {
        return Ok(());
    }
    if s.memory.read_only_before_fork() {
        if s.memory == MemoryKind::HugeZeroPage {
            read_all(base, 1, page);
        } else {
            read_all(base, s.pages, page);
        }
        return Ok(());
    }
    let populated = match s.memory {
        // The mremap()ed half's destination stays empty until the move.
        MemoryKind::Thp {
            layout: ThpLayout::PartialMremap,
        } => unit,
        _ => s.pages,
    };
    if s.memory.is_thp() {
        // Whole pages, so the first touch of each huge range faults in a huge page.
        stamp_all(base, populated, page, true);
    } else {
        // SAFETY: the range is exactly the arena's own live read-write mapping;
        // POPULATE_WRITE only faults pages in (it never discards contents). Failure only
        // costs time: the stamping below faults the pages in itself.
        unsafe {
            libc::madvise(
                base as *mut libc::c_void,
                s.pages * page,
                libc::MADV_POPULATE_WRITE,
            )
        };
        stamp_all(base, populated, page, false);
    }
    Ok(())
}

/// Evidence that the memory is what the kind says, or the reason to skip.
fn prove_formed(
    s: &Scenario,
    sys: &crate::mem::system::SystemInfo,
    m: &mut Memory,
    unit: usize,
) -> Result<Option<String>> {
    let me = nix::unistd::getpid().as_raw();
    let page = m.page_size;
    let vma_huge = || {
        crate::mem::smaps::vma_containing(me, m.base as u64)
            .map(|v| v.anon_huge_pages_kb)
            .unwrap_or(0)
    };
    let pmd_kb = (unit * page / 1024) as u64;
    match s.memory {
        MemoryKind::Thp { .. } => {
            let huge = vma_huge();
            m.anon_huge_kb_before = Some(huge);
            if huge < pmd_kb {
                return Ok(Some(format!(
                    "no THP formed: AnonHugePages is {huge} kB after populating a {pmd_kb} kB-aligned MADV_HUGEPAGE range"
                )));
            }
        }
        MemoryKind::HugeZeroPage => {
            // One read mapped the whole PMD: every page is present.
            let pm = Pagemap::open(me).map_err(|e| Error::io("opening our pagemap", e))?;
            let e = pm
                .read(m.base as u64, (m.base + unit * page) as u64)
                .map_err(|e| Error::io("reading our pagemap", e))?;
            let present = e.iter().filter(|x| x.present()).count();
            if present < unit {
                return Ok(Some(format!(
                    "no huge zero page: reading one byte of a {pmd_kb} kB-aligned MADV_HUGEPAGE range mapped {present} page(s), not {unit}"
                )));
            }
        }
        MemoryKind::Mthp { size_kb } => {
            if !(sys.pfn_visible && sys.kpage_readable) {
                m.unproven = Some(format!(
                    "that a {size_kb} kB folio backs the arena needs /proc/kpageflags (root)"
                ));
                return Ok(None);
            }
            let pm = Pagemap::open(me).map_err(|e| Error::io("opening our pagemap", e))?;
            let e = pm
                .read(m.base as u64, (m.base + s.pages * page) as u64)
                .map_err(|e| Error::io("reading our pagemap", e))?;
            let pfns: Vec<u64> = e.iter().map(|x| x.pfn()).collect();
            let kp = crate::mem::kpage::Kpage::open()
                .map_err(|e| Error::io("opening /proc/kpageflags", e))?;
            let flags = kp
                .flags(&pfns)
                .map_err(|e| Error::io("reading /proc/kpageflags", e))?;
            let one_folio = pfns.first().is_some_and(|&p0| {
                p0 != 0
                    && pfns.iter().enumerate().all(|(i, &p)| p == p0 + i as u64)
                    && flags.iter().all(|f| f.thp())
                    && flags.first().is_some_and(|f| f.compound_head())
                    && flags.iter().skip(1).all(|f| f.compound_tail())
            });
            if !one_folio {
                return Ok(Some(format!(
                    "no {size_kb} kB folio formed (kpageflags show no compound THP over contiguous frames)"
                )));
            }
        }
        _ => {}
    }
    Ok(None)
}

/// Map a PMD THP as the layout asks (before the fork).
fn apply_layout(
    s: &Scenario,
    m: &mut Memory,
    layout: ThpLayout,
    unit: usize,
) -> Result<Option<String>> {
    let (base, page) = (m.base, m.page_size);
    let sys_err = |what: &str| Error::io(what.to_string(), std::io::Error::last_os_error());
    match layout {
        ThpLayout::Pmd => {}
        ThpLayout::PteMapped | ThpLayout::SinglePte => {
            // SAFETY: page 1 of our own arena; read-only and back changes no content.
            let rc = unsafe {
                libc::mprotect((base + page) as *mut libc::c_void, page, libc::PROT_READ)
                    | libc::mprotect(
                        (base + page) as *mut libc::c_void,
                        page,
                        libc::PROT_READ | libc::PROT_WRITE,
                    )
            };
            if rc != 0 {
                return Err(sys_err("mprotect to PTE-map the THP"));
            }
            if layout == ThpLayout::SinglePte {
                // SAFETY: subpages 1..unit of our own arena; dropping them is the point.
                let rc = unsafe {
                    libc::madvise(
                        (base + page) as *mut libc::c_void,
                        (unit - 1) * page,
                        libc::MADV_DONTNEED,
                    )
                };
                if rc != 0 {
                    return Err(sys_err("MADV_DONTNEED of the THP's other subpages"));
                }
            }
        }
        ThpLayout::PartialMremap => {
            let half = unit / 2 * page;
            // SAFETY: both ranges lie inside our own arena mapping ([unit/2, unit) pages moves
            // onto [unit, unit + unit/2), which the arena also owns); no Rust reference points
            // into either.
            let p = unsafe {
                libc::mremap(
                    (base + half) as *mut libc::c_void,
                    half,
                    half,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    (base + unit * page) as *mut libc::c_void,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(sys_err("mremap of the THP's upper half"));
            }
            // Refill the hole so nothing else lands inside the arena's range.
            // SAFETY: the hole is the range mremap just vacated; NOREPLACE never clobbers.
            let h = unsafe {
                libc::mmap(
                    (base + half) as *mut libc::c_void,
                    half,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if h == libc::MAP_FAILED {
                return Err(sys_err("refilling the mremap hole"));
            }
            // The moved pages carry their old indices; stamp their new ones (they are the
            // parent's exclusive pages before the fork: no copy, the folio stays).
            for i in unit..s.pages {
                // SAFETY: page i is in the moved, writable half.
                unsafe { child::stamp_head(base + i * page, i, side::PARENT_BEFORE) };
            }
        }
    }
    let _ = m;
    Ok(None)
}

const IORING_REGISTER_BUFFERS: u32 = 0;

/// Set up an io_uring instance and register `[base, base + len)` as a fixed buffer (FOLL_WRITE
/// | FOLL_PIN | FOLL_LONGTERM). The reason on failure.
fn register_fixed_buffer(base: usize, len: usize) -> std::result::Result<OwnedFd, String> {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        && v.trim() == "2"
    {
        return Err("io_uring is disabled (/proc/sys/kernel/io_uring_disabled is 2)".into());
    }
    // struct io_uring_params is 120 bytes; zeroed asks for the defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes the 120-byte params buffer we pass.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "io_uring_setup failed: {e} (io_uring unavailable or disabled)"
        ));
    }
    // SAFETY: a fresh descriptor we own.
    let ring = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let iov = libc::iovec {
        iov_base: base as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: io_uring_register reads one iovec describing our own mapped arena.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring.as_raw_fd(),
            IORING_REGISTER_BUFFERS,
            &iov as *const libc::iovec,
            1u32,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "registering the arena as an io_uring fixed buffer failed: {e} (RLIMIT_MEMLOCK too low?)"
        ));
    }
    Ok(ring)
}

/// The child ops of the parent-independent memory steps of `op` (fds from the prepared
/// memory). Used by the runner for children and grandchildren.
pub fn ops_for(op: &Op, m: &Memory, report_fd: RawFd, marker: u8) -> Vec<child::ChildOp<'static>> {
    use child::ChildOp;
    let (base, page) = (m.base, m.page_size);
    let mut v = Vec::new();
    match op {
        Op::Write { pages } => {
            for &p in pages {
                v.push(ChildOp::Stamp {
                    addr: base + p * page,
                    first_index: p,
                    pages: 1,
                    page_size: page,
                    side: marker,
                });
            }
        }
        Op::WriteByte { pages } => {
            for &p in pages {
                v.push(ChildOp::WriteByte {
                    addr: base + p * page + super::evidence::HEAD / 2,
                    byte: marker,
                });
            }
        }
        Op::ReadAll => v.push(ChildOp::ReadPages {
            addr: base,
            pages: m.pages,
            page_size: page,
        }),
        Op::MprotectCycle => {
            for prot in [libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE] {
                v.push(ChildOp::Mprotect {
                    addr: base,
                    len: m.pages * page,
                    prot,
                    fd: report_fd,
                });
            }
        }
        Op::Vmsplice { pages } => {
            if let Some((_, w)) = &m.pipe {
                for &p in pages {
                    v.push(ChildOp::Vmsplice {
                        pipe: w.as_raw_fd(),
                        addr: base + p * page,
                        len: page,
                        fd: report_fd,
                    });
                }
            }
        }
        Op::Munmap { pages } => {
            for &p in pages {
                v.push(ChildOp::Munmap {
                    addr: base + p * page,
                    len: page,
                    fd: report_fd,
                });
            }
        }
        Op::ODirectRead { pages } => {
            if let Some(f) = &m.direct_file {
                for &p in pages {
                    v.push(ChildOp::ReadFile {
                        file: f.as_raw_fd(),
                        addr: base + p * page,
                        len: page,
                        offset: (p * page) as i64,
                        fd: report_fd,
                    });
                }
            }
        }
        Op::OverwriteSecondMessage { text } => {
            let at = base + SEED_BLOCK;
            for (k, b) in text
                .bytes()
                .chain(std::iter::once(0))
                .enumerate()
                .take(SEED_BLOCK)
            {
                v.push(ChildOp::WriteByte {
                    addr: at + k,
                    byte: b,
                });
            }
        }
        Op::AfterParent | Op::Fork { .. } | Op::Hang | Op::TouchAfterRelease { .. } => {}
    }
    v
}

/// Do `op` in the parent itself (its after-fork steps). Returns a note when a syscall failed.
pub fn do_in_parent(op: &Op, m: &Memory) -> Option<String> {
    let (base, page) = (m.base, m.page_size);
    let fail = |what: &str| {
        Some(format!(
            "the parent's {what} failed: {}",
            std::io::Error::last_os_error()
        ))
    };
    match op {
        Op::Write { pages } => {
            for &p in pages {
                // SAFETY: page p < pages (checked by `select`), inside the writable arena.
                unsafe { child::stamp_page(base + p * page, p, page, side::PARENT_AFTER) };
            }
        }
        Op::WriteByte { pages } => {
            for &p in pages {
                // SAFETY: as above.
                unsafe {
                    std::ptr::write_volatile(
                        (base + p * page + super::evidence::HEAD / 2) as *mut u8,
                        side::PARENT_AFTER,
                    )
                };
            }
        }
        Op::ReadAll => read_all(base, m.pages, page),
        Op::MprotectCycle => {
            for prot in [libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE] {
                // SAFETY: our own arena range; the protection ends read-write as before.
                if unsafe { libc::mprotect(base as *mut libc::c_void, m.pages * page, prot) } != 0 {
                    return fail("mprotect");
                }
            }
        }
        Op::Munmap { pages } => {
            for &p in pages {
                // SAFETY: page p of our own arena; nothing borrows it, and the content check
                // skips pages the parent unmapped (reading them would fault).
                if unsafe { libc::munmap((base + p * page) as *mut libc::c_void, page) } != 0 {
                    return fail("munmap");
                }
            }
        }
        Op::Vmsplice { pages } => {
            let (_, w) = m.pipe.as_ref()?;
            for &p in pages {
                let iov = libc::iovec {
                    iov_base: (base + p * page) as *mut libc::c_void,
                    iov_len: page,
                };
                // SAFETY: vmsplice reads the local iovec; page p is mapped readable.
                if unsafe { libc::vmsplice(w.as_raw_fd(), &iov, 1, 0) } < 0 {
                    return fail("vmsplice");
                }
            }
        }
        Op::ODirectRead { pages } => {
            let f = m.direct_file.as_ref()?;
            for &p in pages {
                // SAFETY: pread writes one page into page p of our writable arena.
                let n = unsafe {
                    libc::pread(
                        f.as_raw_fd(),
                        (base + p * page) as *mut libc::c_void,
                        page,
                        (p * page) as i64,
                    )
                };
                if n != page as isize {
                    return fail("O_DIRECT read");
                }
            }
        }
        Op::OverwriteSecondMessage { .. }
        | Op::AfterParent
        | Op::Fork { .. }
        | Op::Hang
        | Op::TouchAfterRelease { .. } => {}
    }
    None
}
