//! The PAGEMAP_SCAN ioctl (Linux 6.7+): page categories over a range as merged regions,
//! with a fallback to plain pagemap reads on older kernels or when forced.
//!
//! Neither libc nor nix defines it, so the UAPI is spelled out here from
//! `include/uapi/linux/fs.h`; a unit test pins the struct layouts and the request number.
//!
//! The two paths agree on `present`, `swapped`, `file`, `soft_dirty` and `guard` page by
//! page. `huge` and `pfnzero` differ in what they can see:
//! - PAGEMAP_SCAN's `PAGE_IS_HUGE` means "PMD-mapped THP or hugetlb". Pagemap has no such
//!   bit, so the fallback reads kpageflags: hugetlb pages, and THP pages whose 2 MiB-aligned
//!   block maps one whole, physically contiguous PMD-sized folio in order. A PMD-sized THP
//!   that was split into PTE mappings but is still intact would count as huge only here
//!   (large file folios and mTHPs do not). Without CAP_SYS_ADMIN, `huge` and `pfnzero` are
//!   unknown (`None`).
//! - `PAGE_IS_PFNZERO` is the shared zero page; the fallback uses kpageflags ZERO_PAGE.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::kpage::Kpage;
use super::pagemap::{Pagemap, PagemapEntry};

/// Async write-protection enabled (uffd).
pub const PAGE_IS_WPALLOWED: u64 = 1 << 0;
/// Written since write-protected.
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// File-backed (or shared anonymous: not `PageAnon`).
pub const PAGE_IS_FILE: u64 = 1 << 2;
/// Present in RAM.
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
/// Swapped out.
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// Maps the zero page.
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// PMD-mapped THP or hugetlb.
pub const PAGE_IS_HUGE: u64 = 1 << 6;
/// Soft-dirty.
pub const PAGE_IS_SOFT_DIRTY: u64 = 1 << 7;
/// Guard region (since 6.15).
pub const PAGE_IS_GUARD: u64 = 1 << 8;

/// The categories cowscope asks for.
pub const WANTED: u64 = PAGE_IS_FILE
    | PAGE_IS_PRESENT
    | PAGE_IS_SWAPPED
    | PAGE_IS_PFNZERO
    | PAGE_IS_HUGE
    | PAGE_IS_SOFT_DIRTY
    | PAGE_IS_GUARD;

/// `struct pm_scan_arg` (include/uapi/linux/fs.h): 12 x u64 = 96 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PmScanArg {
    /// `sizeof(struct pm_scan_arg)`.
    pub size: u64,
    /// `PM_SCAN_*` operation flags (0: get only).
    pub flags: u64,
    /// Start address (page aligned).
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Written by the kernel: where the walk stopped.
    pub walk_end: u64,
    /// User pointer to `struct page_region[vec_len]`.
    pub vec: u64,
    /// Length of `vec` in regions.
    pub vec_len: u64,
    /// Stop after this many pages (0: no limit).
    pub max_pages: u64,
    /// Categories inverted before matching.
    pub category_inverted: u64,
    /// All of these categories must be set.
    pub category_mask: u64,
    /// At least one of these must be set (0: no condition).
    pub category_anyof_mask: u64,
    /// Categories reported in `page_region.categories`.
    pub return_mask: u64,
}

/// `struct page_region`: 24 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PageRegion {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// `PAGE_IS_*` bits.
    pub categories: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
pub const PAGEMAP_SCAN: u64 =
    nix::request_code_readwrite!(b'f', 16, std::mem::size_of::<PmScanArg>()) as u64;

mod raw {
    nix::ioctl_readwrite!(
        /// `ioctl(pagemap_fd, PAGEMAP_SCAN, &mut pm_scan_arg)`; returns the regions filled.
        pagemap_scan_raw,
        b'f',
        16,
        super::PmScanArg
    );
}
use raw::pagemap_scan_raw;

/// Regions fetched per ioctl call.
const VEC_LEN: usize = 1024;
/// Pagemap entries read per `pread` in the fallback.
const CHUNK: usize = 1 << 16;

/// Which path produced a [`Scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScanMethod {
    /// The PAGEMAP_SCAN ioctl.
    PagemapScan,
    /// Plain pagemap reads (plus kpageflags for huge/pfnzero when readable).
    PagemapRead,
}

/// Categories of every page of `[start, end)`, as merged regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The path used.
    pub method: ScanMethod,
    /// First byte scanned.
    pub start: u64,
    /// One past the last byte scanned.
    pub end: u64,
    /// The `PAGE_IS_*` bits this scan can vouch for; others are unknown, not absent.
    pub known: u64,
    /// Sorted, non-overlapping; pages outside every region have no category (no VMA).
    pub regions: Vec<PageRegion>,
}

/// Page counts per category; `None` where the path cannot know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CategoryCounts {
    /// Pages in the range.
    pub pages: u64,
    /// Present.
    pub present: u64,
    /// Swapped.
    pub swapped: u64,
    /// File or shared anonymous.
    pub file: u64,
    /// Soft-dirty.
    pub soft_dirty: u64,
    /// Guard region (unknown before 6.15).
    pub guard: Option<u64>,
    /// Huge (see the module docs for what each path means).
    pub huge: Option<u64>,
    /// Mapped to the zero page.
    pub pfnzero: Option<u64>,
}

impl Scan {
    /// Count pages per category.
    pub fn counts(&self) -> CategoryCounts {
        let ps = crate::kernel::page_size() as u64;
        let mut c = CategoryCounts {
            pages: (self.end - self.start) / ps,
            ..CategoryCounts::default()
        };
        let (mut guard, mut huge, mut zero) = (0, 0, 0);
        for r in &self.regions {
            let n = (r.end - r.start) / ps;
            let has = |b: u64| r.categories & b != 0;
            c.present += if has(PAGE_IS_PRESENT) { n } else { 0 };
            c.swapped += if has(PAGE_IS_SWAPPED) { n } else { 0 };
            c.file += if has(PAGE_IS_FILE) { n } else { 0 };
            c.soft_dirty += if has(PAGE_IS_SOFT_DIRTY) { n } else { 0 };
            guard += if has(PAGE_IS_GUARD) { n } else { 0 };
            huge += if has(PAGE_IS_HUGE) { n } else { 0 };
            zero += if has(PAGE_IS_PFNZERO) { n } else { 0 };
        }
        let known = |b: u64, v: u64| (self.known & b != 0).then_some(v);
        c.guard = known(PAGE_IS_GUARD, guard);
        c.huge = known(PAGE_IS_HUGE, huge);
        c.pfnzero = known(PAGE_IS_PFNZERO, zero);
        c
    }

    /// The categories of every page (0 for pages in no region), masked to [`Scan::known`].
    pub fn per_page(&self) -> Vec<u64> {
        let ps = crate::kernel::page_size() as u64;
        let mut v = vec![0u64; ((self.end - self.start) / ps) as usize];
        for r in &self.regions {
            let a = ((r.start - self.start) / ps) as usize;
            let b = ((r.end - self.start) / ps) as usize;
            v[a..b].fill(r.categories & self.known);
        }
        v
    }
}

/// Set by [`turn_off`]: this process behaves as on a kernel without PAGEMAP_SCAN.
static TURNED_OFF: AtomicBool = AtomicBool::new(false);

/// Behave, for the rest of this process, as on a kernel without PAGEMAP_SCAN (before 6.7):
/// [`available`] is false, [`scan`] reads pagemap, [`scan_matching`] returns `None`, so every
/// caller takes the path such a kernel forces on it. This is `--no-scan` of `inspect` and
/// `trace` (one switch for the whole process, so no caller's path can be missed).
pub fn turn_off() {
    TURNED_OFF.store(true, Ordering::Relaxed);
}

/// The categories the running kernel accepts, probed once on our own pagemap: `None` when
/// PAGEMAP_SCAN is missing (before 6.7) or [`turn_off`] was called, `WANTED` without
/// `PAGE_IS_GUARD` before 6.15.
fn supported_mask() -> Option<u64> {
    static MASK: OnceLock<Option<u64>> = OnceLock::new();
    if TURNED_OFF.load(Ordering::Relaxed) {
        return None;
    }
    *MASK.get_or_init(|| {
        let pm = Pagemap::open(std::process::id() as i32).ok()?;
        let probe = [0u8; 16];
        let ps = crate::kernel::page_size() as u64;
        let page = (probe.as_ptr() as u64) & !(ps - 1);
        [WANTED, WANTED & !PAGE_IS_GUARD]
            .into_iter()
            .find(|&mask| ioctl_scan(&pm, page, page + ps, mask).is_ok_and(|r| r.is_some()))
    })
}

/// Whether PAGEMAP_SCAN works on this kernel (and was not [`turn_off`]ed).
pub fn available() -> bool {
    supported_mask().is_some()
}

/// Scan `[start, end)` of `pm`'s process: PAGEMAP_SCAN when available and not
/// `force_fallback`, else plain pagemap reads (kpageflags supply huge/pfnzero when readable).
/// A PAGEMAP_SCAN walk that stops before `end` is redone with pagemap reads, so no page is
/// left looking "no category" because the ioctl never reached it.
///
/// # Errors
/// `InvalidInput` for unaligned or reversed ranges; kernel errors from the ioctl or reads.
pub fn scan(pm: &Pagemap, start: u64, end: u64, force_fallback: bool) -> io::Result<Scan> {
    let ps = crate::kernel::page_size() as u64;
    if !start.is_multiple_of(ps) || !end.is_multiple_of(ps) || end < start {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("scan range {start:#x}-{end:#x} is unaligned or reversed"),
        ));
    }
    if let Some(mask) = supported_mask().filter(|_| !force_fallback)
        && let Some(regions) = ioctl_scan(pm, start, end, mask)?
    {
        return Ok(Scan {
            method: ScanMethod::PagemapScan,
            start,
            end,
            known: mask,
            regions,
        });
    }
    // No PAGEMAP_SCAN, or it stopped short: the whole range through pagemap reads, which
    // say what they cannot know (`known`).
    fallback_scan(pm, start, end)
}

/// The regions of `[start, end)` that have at least one category of `anyof`, with their
/// categories masked to `anyof` (pages matching none are not returned at all, so a walk over a
/// big range with few matches returns few regions). `None` when PAGEMAP_SCAN is unavailable,
/// does not know one of the categories asked for, or stopped before `end` (then the pages it
/// did not reach are unknown, and must not be read as "matching nothing").
///
/// This is the cheap question to ask before or beside a pagemap read: "where is anything
/// present?" (`PAGE_IS_PRESENT | PAGE_IS_SWAPPED`), "where is the zero page, where are PMD
/// mappings?" (`PAGE_IS_PFNZERO | PAGE_IS_HUGE`). Unlike PFNs, these categories need no
/// privilege.
///
/// # Errors
/// `InvalidInput` for unaligned or reversed ranges; kernel errors from the ioctl.
pub fn scan_matching(
    pm: &Pagemap,
    start: u64,
    end: u64,
    anyof: u64,
) -> io::Result<Option<Vec<PageRegion>>> {
    let ps = crate::kernel::page_size() as u64;
    if !start.is_multiple_of(ps) || !end.is_multiple_of(ps) || end < start {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("scan range {start:#x}-{end:#x} is unaligned or reversed"),
        ));
    }
    match supported_mask() {
        Some(mask) if mask & anyof == anyof && anyof != 0 => {
            ioctl_scan_filtered(pm, start, end, anyof, anyof)
        }
        _ => Ok(None),
    }
}

fn ioctl_scan(
    pm: &Pagemap,
    start: u64,
    end: u64,
    mask: u64,
) -> io::Result<Option<Vec<PageRegion>>> {
    ioctl_scan_filtered(pm, start, end, 0, mask)
}

/// PAGEMAP_SCAN over `[start, end)`: regions whose pages have a category of `anyof` (0: every
/// page), with categories masked to `mask`, merged where neighbours agree. `None` when the
/// kernel stopped before `end` without progress (see [`scan_loop`]).
fn ioctl_scan_filtered(
    pm: &Pagemap,
    start: u64,
    end: u64,
    anyof: u64,
    mask: u64,
) -> io::Result<Option<Vec<PageRegion>>> {
    let mut buf = vec![PageRegion::default(); VEC_LEN];
    scan_loop(start, end, |cur, out| {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: cur,
            end,
            vec: buf.as_mut_ptr() as u64,
            vec_len: buf.len() as u64,
            category_anyof_mask: anyof,
            return_mask: mask,
            ..PmScanArg::default()
        };
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points at `buf`, which holds
        // `vec_len` writable page_region slots and outlives the call; flags is 0, so the
        // ioctl only reads page tables and writes `arg.walk_end` and `buf`.
        let n = unsafe { pagemap_scan_raw(pm.file().as_raw_fd(), &mut arg) }
            .map_err(io::Error::from)?;
        let n = usize::try_from(n).unwrap_or(0).min(buf.len());
        out.extend_from_slice(&buf[..n]);
        Ok(arg.walk_end)
    })
}

/// The PAGEMAP_SCAN call loop: `call(cur, regions)` runs one ioctl from `cur`, appends the
/// regions it filled and returns the kernel's `walk_end`; the loop resumes there until `end`.
///
/// Pages a scan never reached would read as "no category" (not huge, not the zero page,
/// not present): a false answer, not an unknown one. So a walk that stops short of `end`
/// without progress (`walk_end <= cur`, which the kernel does not do today: with no
/// `max_pages` it stops early only when the buffer is full, after filling it) returns
/// `None`, "unknown", and the caller falls back to what it does without PAGEMAP_SCAN.
fn scan_loop(
    start: u64,
    end: u64,
    mut call: impl FnMut(u64, &mut Vec<PageRegion>) -> io::Result<u64>,
) -> io::Result<Option<Vec<PageRegion>>> {
    let mut out: Vec<PageRegion> = Vec::new();
    let mut filled = Vec::with_capacity(VEC_LEN);
    let mut cur = start;
    while cur < end {
        filled.clear();
        let walk_end = call(cur, &mut filled)?;
        for r in &filled {
            push_merged(&mut out, *r);
        }
        if walk_end <= cur {
            return Ok(None); // no progress: the tail is unknown, and we never spin
        }
        cur = walk_end;
    }
    Ok(Some(out))
}

fn push_merged(out: &mut Vec<PageRegion>, r: PageRegion) {
    if r.start >= r.end {
        return;
    }
    match out.last_mut() {
        Some(last) if last.end == r.start && last.categories == r.categories => last.end = r.end,
        _ => out.push(r),
    }
}

/// The categories pagemap itself shows for one entry.
#[inline(always)]
pub fn categories_of(e: PagemapEntry) -> u64 {
    let mut c = 0;
    if e.present() {
        c |= PAGE_IS_PRESENT;
    }
    if e.swapped() {
        c |= PAGE_IS_SWAPPED;
    }
    if e.file_or_shared() {
        c |= PAGE_IS_FILE;
    }
    if e.soft_dirty() {
        c |= PAGE_IS_SOFT_DIRTY;
    }
    if e.guard() {
        c |= PAGE_IS_GUARD;
    }
    c
}

fn fallback_scan(pm: &Pagemap, start: u64, end: u64) -> io::Result<Scan> {
    let ps = crate::kernel::page_size() as u64;
    let p = super::privilege::detect();
    let kpage = if p.pfn_visible && p.kpage_readable {
        Kpage::open().ok()
    } else {
        None
    };
    let mut known = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE | PAGE_IS_SOFT_DIRTY;
    known |= PAGE_IS_GUARD; // bit 58 reads 0 on kernels without guard regions: truly none
    if kpage.is_some() {
        known |= PAGE_IS_HUGE | PAGE_IS_PFNZERO;
    }
    let mut regions = Vec::new();
    let mut raw = vec![0u64; CHUNK];
    let mut pfns: Vec<u64> = Vec::new();
    let mut huge = HugeDetector::default();
    let mut cur = start;
    while cur < end {
        let n = (((end - cur) / ps) as usize).min(CHUNK);
        let chunk = &mut raw[..n];
        pm.read_into(cur, chunk)?;
        let flags = match &kpage {
            Some(k) => {
                pfns.clear();
                pfns.extend(chunk.iter().map(|&e| PagemapEntry(e).pfn()));
                Some(k.flags(&pfns)?)
            }
            None => None,
        };
        for (i, &e) in chunk.iter().enumerate() {
            let e = PagemapEntry(e);
            let mut c = categories_of(e);
            if let (Some(f), Some(k), true) = (&flags, &kpage, e.present()) {
                let f = f[i];
                if huge.is_huge(pm, k, cur + i as u64 * ps, f)? {
                    c |= PAGE_IS_HUGE;
                }
                if f.zero_page() {
                    c |= PAGE_IS_PFNZERO;
                }
            }
            let a = cur + i as u64 * ps;
            push_merged(
                &mut regions,
                PageRegion {
                    start: a,
                    end: a + ps,
                    categories: c,
                },
            );
        }
        cur += n as u64 * ps;
    }
    Ok(Scan {
        method: ScanMethod::PagemapRead,
        start,
        end,
        known,
        regions,
    })
}

/// The fallback's answer to "is this page PMD-mapped huge?" from kpageflags, remembering the
/// last 2 MiB block it examined so a THP costs one extra check per block, not per page.
#[derive(Debug, Default)]
pub struct HugeDetector {
    block: Option<(u64, bool)>,
}

impl HugeDetector {
    /// Whether the present page at `addr` with kpageflags `f` counts as `PAGE_IS_HUGE`.
    ///
    /// # Errors
    /// Kernel read errors from pagemap or kpageflags.
    pub fn is_huge(
        &mut self,
        pm: &Pagemap,
        k: &Kpage,
        addr: u64,
        f: super::kpage::KpageFlags,
    ) -> io::Result<bool> {
        if f.huge() {
            return Ok(true);
        }
        if !f.thp() {
            return Ok(false);
        }
        let block = addr & !(PMD_SIZE - 1);
        match self.block {
            Some((b, v)) if b == block => Ok(v),
            _ => {
                let v = pmd_sized_folio_at(pm, k, block)?;
                self.block = Some((block, v));
                Ok(v)
            }
        }
    }
}

/// PMD size on x86-64 and arm64 with 4 KiB pages.
const PMD_SIZE: u64 = 2 << 20;

/// Whether the 2 MiB-aligned virtual block at `block` maps one whole PMD-sized folio in order
/// (head first, 511 tails, physically contiguous and aligned): what PAGE_IS_HUGE reports when
/// that folio is PMD-mapped. A PTE-mapped but intact PMD-sized THP looks the same here.
fn pmd_sized_folio_at(pm: &Pagemap, k: &Kpage, block: u64) -> io::Result<bool> {
    let ps = crate::kernel::page_size() as u64;
    let n = (PMD_SIZE / ps) as usize;
    let mut raw = vec![0u64; n];
    if pm.read_into(block, &mut raw).is_err() {
        return Ok(false); // block runs past the address space: cannot be a whole PMD
    }
    let head = PagemapEntry(raw[0]).pfn();
    if head == 0 || !head.is_multiple_of(n as u64) {
        return Ok(false);
    }
    let contiguous = raw.iter().enumerate().all(|(i, &e)| {
        let e = PagemapEntry(e);
        e.present() && e.pfn() == head + i as u64
    });
    if !contiguous {
        return Ok(false);
    }
    let pfns: Vec<u64> = (head..head + n as u64).collect();
    let f = k.flags(&pfns)?;
    Ok(f[0].compound_head()
        && f[1..].iter().all(|f| f.compound_tail())
        && f.iter().all(|f| f.thp()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn uapi_layout_and_request_number_match_the_kernel() {
        // include/uapi/linux/fs.h: twelve __u64 fields, in this order.
        assert_eq!(size_of::<PmScanArg>(), 96);
        assert_eq!(offset_of!(PmScanArg, walk_end), 32);
        assert_eq!(offset_of!(PmScanArg, vec), 40);
        assert_eq!(offset_of!(PmScanArg, max_pages), 56);
        assert_eq!(offset_of!(PmScanArg, return_mask), 88);
        assert_eq!(size_of::<PageRegion>(), 24);
        assert_eq!(offset_of!(PageRegion, categories), 16);
        // _IOWR('f', 16, 96 bytes) with the asm-generic encoding:
        // dir (READ|WRITE = 3) << 30 | size << 16 | type << 8 | nr.
        assert_eq!(PAGEMAP_SCAN, (3 << 30) | (96 << 16) | (0x66 << 8) | 16);
        assert_eq!(PAGEMAP_SCAN, 0xC060_6610);
        assert_eq!(PAGE_IS_GUARD, 0x100);
        assert_eq!(PAGE_IS_HUGE, 0x40);
        assert_eq!(PAGE_IS_PRESENT, 0x8);
    }

    #[test]
    fn kernel_6_7_or_later_has_pagemap_scan() {
        let rel = crate::kernel::kernel_release();
        let mut it = rel.split(|c: char| !c.is_ascii_digit());
        let major: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let minor: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if (major, minor) < (6, 7) {
            eprintln!("SKIP: kernel {rel} predates PAGEMAP_SCAN");
            return;
        }
        assert!(available(), "PAGEMAP_SCAN should work on {rel}");
    }

    fn region(start: u64, end: u64, categories: u64) -> PageRegion {
        PageRegion {
            start,
            end,
            categories,
        }
    }

    #[test]
    fn a_scan_that_resumes_at_walk_end_covers_the_whole_range() {
        // Two calls: the first fills its buffer and stops at 0x3000, the second finishes.
        let mut calls = Vec::new();
        let r = scan_loop(0x1000, 0x6000, |cur, out| {
            calls.push(cur);
            if cur == 0x1000 {
                out.push(region(0x1000, 0x3000, PAGE_IS_HUGE));
                Ok(0x3000)
            } else {
                out.push(region(0x3000, 0x4000, PAGE_IS_HUGE));
                out.push(region(0x5000, 0x6000, PAGE_IS_PFNZERO));
                Ok(0x6000)
            }
        })
        .unwrap();
        assert_eq!(calls, [0x1000, 0x3000]);
        assert_eq!(
            r,
            Some(vec![
                region(0x1000, 0x4000, PAGE_IS_HUGE),
                region(0x5000, 0x6000, PAGE_IS_PFNZERO)
            ])
        );
    }

    #[test]
    fn a_scan_that_stops_short_without_progress_is_unknown_not_empty_at_the_tail() {
        // The kernel reports a huge page at the start, then stops at 0x2000 and makes no
        // progress from there: the pages 0x2000..0x8000 were never looked at. Reading them as
        // "no region" would call them known-not-huge and known-not-zero.
        let r = scan_loop(0x1000, 0x8000, |cur, out| {
            if cur == 0x1000 {
                out.push(region(0x1000, 0x2000, PAGE_IS_HUGE));
                Ok(0x2000)
            } else {
                Ok(cur)
            }
        })
        .unwrap();
        assert_eq!(r, None, "the tail is unknown");
    }

    #[test]
    fn a_scan_whose_call_fails_returns_the_error() {
        let r = scan_loop(0x1000, 0x2000, |_, _| {
            Err(io::Error::from_raw_os_error(libc::EIO))
        });
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EIO));
    }
}
