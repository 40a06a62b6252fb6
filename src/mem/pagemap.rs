//! `/proc/<pid>/pagemap`: one 64-bit entry per virtual page, read in bulk.
//!
//! Bit layout (Documentation/admin-guide/mm/pagemap.rst):
//!
//! | bits  | meaning                                                         |
//! |-------|-----------------------------------------------------------------|
//! | 0-54  | PFN if present (zeroed without CAP_SYS_ADMIN); swap type/offset if swapped |
//! | 55    | pte is soft-dirty                                               |
//! | 56    | page exclusively mapped (since 4.2)                             |
//! | 57    | pte is uffd-wp write-protected (since 5.13)                     |
//! | 58    | pte is a guard region (since 6.15)                              |
//! | 61    | page is file-page or shared-anon (since 3.5)                    |
//! | 62    | page swapped                                                    |
//! | 63    | page present                                                    |
//!
//! A [`Pagemap`] is bound to the pid it was opened for: the kernel resolves the mm when the
//! file is opened, so a handle opened before `fork()` keeps reading the parent. Open one per
//! pid, after the fork.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bits 0-54: the page frame number when present.
pub const PFN_MASK: u64 = (1 << 55) - 1;
/// Bit 55: soft-dirty.
pub const SOFT_DIRTY: u64 = 1 << 55;
/// Bit 56: the page is mapped exactly once (exclusively).
pub const EXCLUSIVE: u64 = 1 << 56;
/// Bit 57: uffd-wp write-protected.
pub const UFFD_WP: u64 = 1 << 57;
/// Bit 58: guard region (MADV_GUARD_INSTALL).
pub const GUARD: u64 = 1 << 58;
/// Bit 61: file page or shared anonymous (shmem) page.
pub const FILE_OR_SHARED: u64 = 1 << 61;
/// Bit 62: swapped.
pub const SWAPPED: u64 = 1 << 62;
/// Bit 63: present in RAM.
pub const PRESENT: u64 = 1 << 63;

/// Size of one pagemap entry in bytes.
const ENTRY: u64 = 8;

/// One decoded pagemap entry.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PagemapEntry(pub u64);

impl PagemapEntry {
    /// Bit 63: the page is present in RAM.
    #[inline(always)]
    pub fn present(self) -> bool {
        self.0 & PRESENT != 0
    }
    /// Bit 62: the page is in swap.
    #[inline(always)]
    pub fn swapped(self) -> bool {
        self.0 & SWAPPED != 0
    }
    /// Bit 61: file-backed page or shared anonymous page.
    #[inline(always)]
    pub fn file_or_shared(self) -> bool {
        self.0 & FILE_OR_SHARED != 0
    }
    /// Bit 56: mapped by exactly one page table (since 6.15 with CONFIG_NO_PAGE_MAPCOUNT:
    /// "certainly exclusive").
    #[inline(always)]
    pub fn exclusive(self) -> bool {
        self.0 & EXCLUSIVE != 0
    }
    /// Bit 55: soft-dirty.
    #[inline(always)]
    pub fn soft_dirty(self) -> bool {
        self.0 & SOFT_DIRTY != 0
    }
    /// Bit 57: uffd-wp write-protected.
    #[inline(always)]
    pub fn uffd_wp(self) -> bool {
        self.0 & UFFD_WP != 0
    }
    /// Bit 58: the pte is a guard region.
    #[inline(always)]
    pub fn guard(self) -> bool {
        self.0 & GUARD != 0
    }
    /// Bits 0-54 when present, else 0. The kernel also reports 0 when the reader lacks
    /// CAP_SYS_ADMIN, so 0 means "unknown" unless
    /// [`Privilege::pfn_visible`](crate::mem::privilege::Privilege::pfn_visible) holds.
    #[inline(always)]
    pub fn pfn(self) -> u64 {
        if self.present() { self.0 & PFN_MASK } else { 0 }
    }
    /// Swap type (bits 0-4) when swapped.
    pub fn swap_type(self) -> Option<u64> {
        (self.swapped() && !self.present()).then_some(self.0 & 0x1f)
    }
    /// Swap offset (bits 5-54) when swapped.
    pub fn swap_offset(self) -> Option<u64> {
        (self.swapped() && !self.present()).then_some((self.0 & PFN_MASK) >> 5)
    }
    /// The whole swap entry (type and offset, bits 0-54) when swapped: two pages with the same
    /// entry are one page in swap. The kernel zeroes it without CAP_SYS_ADMIN (then 0 means
    /// "unknown", like a hidden PFN).
    pub fn swap_entry(self) -> Option<u64> {
        (self.swapped() && !self.present()).then_some(self.0 & PFN_MASK)
    }
}

/// An open `/proc/<pid>/pagemap`, bound to one process.
#[derive(Debug)]
pub struct Pagemap {
    pid: i32,
    file: File,
}

impl Pagemap {
    /// Open `/proc/<pid>/pagemap`.
    ///
    /// # Errors
    /// `NotFound` if the process does not exist, `PermissionDenied` if we may not inspect it
    /// (ptrace read access is required).
    pub fn open(pid: i32) -> io::Result<Pagemap> {
        let file = File::open(format!("/proc/{pid}/pagemap"))?;
        Ok(Pagemap { pid, file })
    }

    /// The pid this handle reads.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The open file, for ioctls such as PAGEMAP_SCAN.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// One entry per page of `[start, end)`.
    ///
    /// # Errors
    /// `InvalidInput` if `start`/`end` are not page aligned or reversed; otherwise the
    /// kernel's read error (e.g. `UnexpectedEof` beyond the user address space).
    pub fn read(&self, start: u64, end: u64) -> io::Result<Vec<PagemapEntry>> {
        let ps = crate::kernel::page_size() as u64;
        check_range(start, end, ps)?;
        let n = usize::try_from((end - start) / ps)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "range too large"))?;
        let mut raw = vec![0u64; n];
        self.read_into(start, &mut raw)?;
        // In-place collect: PagemapEntry is repr(transparent) over u64, so this reuses `raw`.
        Ok(raw.into_iter().map(PagemapEntry).collect())
    }

    /// Fill `out` with the raw entries of the `out.len()` pages starting at `start`, with as
    /// few `pread`s as the kernel allows (normally one).
    ///
    /// # Errors
    /// `InvalidInput` if `start` is not page aligned; `UnexpectedEof` if the range runs past
    /// the end of the user address space; other kernel read errors as they come.
    pub fn read_into(&self, start: u64, out: &mut [u64]) -> io::Result<()> {
        let ps = crate::kernel::page_size() as u64;
        if !start.is_multiple_of(ps) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pagemap start {start:#x} is not page aligned"),
            ));
        }
        let len = out.len() * ENTRY as usize;
        // SAFETY: `out` is a valid, exclusively borrowed region of `len` bytes (u64 has no
        // invalid bit patterns and u8 has alignment 1), and the byte view lives only inside
        // this function while `out` stays borrowed.
        let bytes = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), len) };
        let mut done = 0usize;
        let base = (start / ps) * ENTRY;
        while done < len {
            let n = self.file.read_at(&mut bytes[done..], base + done as u64)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "pagemap of pid {} ends before {:#x}",
                        self.pid,
                        start + (done as u64 / ENTRY + 1) * ps
                    ),
                ));
            }
            done += n;
        }
        debug_assert_eq!(done, len, "pagemap read overran its buffer");
        Ok(())
    }
}

fn check_range(start: u64, end: u64, ps: u64) -> io::Result<()> {
    if !start.is_multiple_of(ps) || !end.is_multiple_of(ps) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {start:#x}-{end:#x} is not page aligned"),
        ));
    }
    if end < start {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {start:#x}-{end:#x} is reversed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_decode_as_documented() {
        let e = PagemapEntry(PRESENT | EXCLUSIVE | 0x1234);
        assert!(e.present() && e.exclusive() && !e.swapped() && !e.file_or_shared());
        assert_eq!(e.pfn(), 0x1234);
        let s = PagemapEntry(SWAPPED | (7 << 5) | 3);
        assert_eq!(s.pfn(), 0, "a swapped page has no PFN");
        assert_eq!(s.swap_type(), Some(3));
        assert_eq!(s.swap_offset(), Some(7));
        let g = PagemapEntry(GUARD | UFFD_WP | SOFT_DIRTY | FILE_OR_SHARED);
        assert!(g.guard() && g.uffd_wp() && g.soft_dirty() && g.file_or_shared());
        assert!(!g.present());
    }

    #[test]
    fn misaligned_and_reversed_ranges_are_rejected() {
        let pm = Pagemap::open(std::process::id() as i32).expect("own pagemap");
        let ps = crate::kernel::page_size() as u64;
        assert!(pm.read(1, ps).is_err());
        assert!(pm.read(2 * ps, ps).is_err());
        assert_eq!(pm.read(ps, ps).expect("empty range").len(), 0);
    }
}
