//! What pagemap bit 56 means on this kernel, for pages of large folios (THP, mTHP).
//!
//! Traditionally bit 56 is set when the page is mapped exactly once and clear when it is
//! mapped more than once. Linux 6.15 added CONFIG_NO_PAGE_MAPCOUNT (commit "fs/proc/task_mmu:
//! remove per-page mapcount dependency for PM_MMAP_EXCLUSIVE"): with it, for a page of a large
//! folio, bit 56 is set only when the whole folio is *certainly* mapped by one process, and
//! clear when any page of it is *maybe* mapped by another. Bit 56 set still proves "not the
//! other process's page" under both; only "clear, so mapped by both" needs the exact meaning,
//! and the kernel config is not always readable (no `/proc/config.gz`, no `/boot`). So ask
//! the kernel itself:
//!
//! 1. before 6.15 the meaning is exact;
//! 2. else probe: a PMD-aligned THP of our own, PTE-mapped (one page released), is shared
//!    with a forked child (through [`crate::fork::subject::spawn`]); the child unmaps page 0.
//!    Our page 0 is then mapped once while the child still maps the folio's other pages: bit
//!    56 set means exact per-page mapcounts, clear means the folio-level "maybe shared";
//! 3. when no THP can be made here, the answer is unknown (and trace does not use the rule).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::fork::child::ChildOp;
use crate::fork::subject::{SubjectPipes, spawn};
use crate::mem::pagemap::{Pagemap, PagemapEntry};

/// What a clear bit 56 proves on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bit56 {
    /// Clear means "mapped more than once" for every page (per-page mapcounts).
    Exact,
    /// For pages of large folios, clear only means "maybe mapped by another process"
    /// (CONFIG_NO_PAGE_MAPCOUNT).
    CertainlyExclusive,
    /// Could not be told (no THP to probe with).
    Unknown,
}

impl Bit56 {
    /// Whether "neither side has bit 56" may be read as "mapped more than once".
    pub fn clear_means_mapped_twice(self) -> bool {
        self == Bit56::Exact
    }

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Bit56::Exact => "exact",
            Bit56::CertainlyExclusive => "certainly_exclusive",
            Bit56::Unknown => "unknown",
        }
    }
}

/// `Some(Exact)` for kernels before 6.15 (no CONFIG_NO_PAGE_MAPCOUNT), `None` when a probe
/// is needed (6.15 and later, or an unreadable release string).
pub fn from_release(release: &str) -> Option<Bit56> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = it.next()?.parse().ok()?;
    let minor: u32 = it.next()?.parse().ok()?;
    ((major, minor) < (6, 15)).then_some(Bit56::Exact)
}

/// The meaning on this kernel: from the release, else probed once (cached).
pub fn semantics() -> Bit56 {
    static CACHE: OnceLock<Bit56> = OnceLock::new();
    *CACHE.get_or_init(|| {
        from_release(&crate::kernel::kernel_release())
            .unwrap_or_else(|| probe().unwrap_or(Bit56::Unknown))
    })
}

/// Run the fork probe; `None` when it cannot tell (no THP here, fork failed...).
pub fn probe() -> Option<Bit56> {
    let ps = crate::kernel::page_size();
    let pmd = crate::kernel::thp_pmd_size_kb()? as usize * 1024;
    if crate::kernel::thp_enabled().contains("never") {
        return None;
    }
    let len = 2 * pmd;
    let region = crate::kernel::AnonMap::new(len, libc::PROT_READ | libc::PROT_WRITE, 0).ok()?;
    let folio = region.addr().next_multiple_of(pmd);
    // SAFETY: [folio, folio + pmd) lies inside our own fresh mapping.
    unsafe { libc::madvise(folio as *mut libc::c_void, pmd, libc::MADV_HUGEPAGE) };
    for off in (0..pmd).step_by(ps) {
        // SAFETY: inside our own mapping, readable and writable.
        unsafe { std::ptr::write_volatile((folio + off) as *mut u8, 1) };
    }
    let me = std::process::id() as i32;
    let pm = Pagemap::open(me).ok()?;
    let huge = crate::mem::scan::scan_matching(
        &pm,
        folio as u64,
        (folio + pmd) as u64,
        crate::mem::scan::PAGE_IS_HUGE,
    )
    .ok()??;
    if huge.first().map(|r| (r.start, r.end)) != Some((folio as u64, (folio + pmd) as u64)) {
        return None; // no THP formed: nothing to probe with
    }
    // Release the last page: the PMD is split, the folio stays (511 pages PTE-mapped).
    // SAFETY: inside our own mapping; DONTNEED only drops our own anonymous page.
    unsafe {
        libc::madvise(
            (folio + pmd - ps) as *mut libc::c_void,
            ps,
            libc::MADV_DONTNEED,
        )
    };
    let pipes = SubjectPipes::new().ok()?;
    let fd = pipes.child_report_fd();
    let mut ops = pipes.prologue().to_vec();
    ops.push(ChildOp::Munmap {
        addr: folio,
        len: ps,
        fd,
    });
    ops.extend(pipes.epilogue());
    let (mut child, _) = spawn(pipes, &ops).ok()?;
    let ready = child.wait_ready(Instant::now() + Duration::from_secs(5));
    let mut e = [0u64; 2];
    let read = pm.read_into(folio as u64, &mut e);
    child.finish(Instant::now() + Duration::from_secs(5));
    drop(region);
    ready.ok()?;
    read.ok()?;
    let (only_ours, both) = (PagemapEntry(e[0]), PagemapEntry(e[1]));
    if !only_ours.present() || !both.present() || both.exclusive() {
        return None; // not the state the probe built: tell nothing
    }
    Some(if only_ours.exclusive() {
        Bit56::Exact
    } else {
        Bit56::CertainlyExclusive
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_before_6_15_count_mappings_per_page() {
        assert_eq!(
            from_release("6.12.48+deb13-cloud-amd64"),
            Some(Bit56::Exact)
        );
        assert_eq!(from_release("5.10.0"), Some(Bit56::Exact));
        assert_eq!(from_release("6.15.0"), None);
        assert_eq!(from_release("6.18.44-fc-v657"), None);
        assert_eq!(from_release("garbage"), None);
    }
}
