//! The streaming pair walk: the pagemaps of two processes over the same address range, read
//! in bounded chunks and handed to a visitor as two equally long slices of raw entries, so
//! memory use never grows with the targets (design principle "Stream").
//!
//! This is the reusable core of `inspect` (and of `trace`, which compares the same two slices
//! against a fork-time baseline): it knows nothing about classes. [`PairReader`] owns the two
//! chunk buffers (`CHUNK_PAGES` entries each, 512 KiB), [`populated`] asks PAGEMAP_SCAN where
//! anything is mapped at all, so reservations of many GiB cost a page-table walk, not a read of
//! every entry.

use std::io;

use crate::mem::pagemap::Pagemap;
use crate::mem::scan::{self, PAGE_IS_PRESENT, PAGE_IS_SWAPPED};

/// Entries read per side per chunk: 64 Ki pages (256 MiB of address space, 512 KiB of
/// entries). Big enough that the per-`pread` cost vanishes, small enough to stay in L2/L3.
pub const CHUNK_PAGES: usize = 1 << 16;

/// Segments longer than this many pages are walked only where PAGEMAP_SCAN finds pages
/// (present or swapped) in either process; the rest is known empty without reading it.
pub const SPARSE_WALK_PAGES: u64 = 1 << 18;

/// Which process of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The process the other was forked from.
    Parent,
    /// The forked process.
    Child,
}

/// A read that failed, and for which process.
#[derive(Debug)]
pub struct SideError {
    /// Whose pagemap failed.
    pub side: Side,
    /// The kernel's error (`UnexpectedEof` when the process exited: its pagemap reads 0
    /// bytes once the mm is gone).
    pub error: io::Error,
}

impl SideError {
    /// Tag an error with its side.
    pub fn new(side: Side, error: io::Error) -> Self {
        SideError { side, error }
    }
}

/// Reusable chunk buffers for walking two pagemaps side by side.
///
/// Both sides live in ONE allocation of `2 * chunk` entries, sized in one place
/// ([`PairReader::buffers`]): every walk takes its slices from there, so no walk can find one
/// side's buffer shorter than the other's. (Two vectors grown by different walks once
/// panicked: a one-sided walk first sized only the parent's, and the next pair walk sliced
/// the child's empty one.)
#[derive(Debug)]
pub struct PairReader {
    /// `[parent chunk | child chunk]`, allocated on first use.
    buf: Vec<u64>,
    chunk: usize,
}

impl Default for PairReader {
    fn default() -> Self {
        PairReader::new()
    }
}

impl PairReader {
    /// Buffers of [`CHUNK_PAGES`] entries per side (allocated on first use).
    pub fn new() -> Self {
        PairReader::with_chunk(CHUNK_PAGES)
    }

    /// Buffers of `chunk_pages` entries per side (at least 1).
    pub fn with_chunk(chunk_pages: usize) -> Self {
        PairReader {
            buf: Vec::new(),
            chunk: chunk_pages.max(1),
        }
    }

    /// The two buffers of `n` entries each (`n <= chunk`): the only place that sizes them.
    fn buffers(&mut self, n: usize) -> (&mut [u64], &mut [u64]) {
        debug_assert!(
            n <= self.chunk,
            "a walk asks for at most one chunk ({n} > {})",
            self.chunk
        );
        if self.buf.len() != 2 * self.chunk {
            // Zeroed by the allocator (fresh pages): a half that is never read into (a reader
            // used for one-sided walks only) costs no resident memory.
            self.buf = vec![0; 2 * self.chunk];
        }
        let (a, b) = self.buf.split_at_mut(self.chunk);
        (&mut a[..n], &mut b[..n])
    }

    /// Read `[start, end)` of both processes chunk by chunk and call
    /// `visit(first_address, parent_entries, child_entries)` for each chunk (equal lengths,
    /// entry `i` is the page at `first_address + i * page_size`). The parent's chunk is read
    /// just before the child's, so the two views of one page are microseconds apart; freeze
    /// both (SIGSTOP) for an instant that is exactly consistent.
    ///
    /// # Errors
    /// The first failing read, with its side; or the visitor's error.
    pub fn walk(
        &mut self,
        parent: &Pagemap,
        child: &Pagemap,
        start: u64,
        end: u64,
        mut visit: impl FnMut(u64, &[u64], &[u64]) -> Result<(), SideError>,
    ) -> Result<(), SideError> {
        let ps = crate::kernel::page_size() as u64;
        debug_assert!(
            start.is_multiple_of(ps) && end.is_multiple_of(ps),
            "walk range must be page aligned"
        );
        let mut cur = start;
        while cur < end {
            let n = (((end - cur) / ps) as usize).min(self.chunk);
            let (a, b) = self.buffers(n);
            parent
                .read_into(cur, a)
                .map_err(|e| SideError::new(Side::Parent, e))?;
            child
                .read_into(cur, b)
                .map_err(|e| SideError::new(Side::Child, e))?;
            visit(cur, a, b)?;
            cur += n as u64 * ps;
        }
        Ok(())
    }

    /// Read `[start, end)` of one process chunk by chunk: `visit(first_address, entries)`.
    ///
    /// # Errors
    /// The first failing read (tagged `side`), or the visitor's error.
    pub fn walk_one(
        &mut self,
        pm: &Pagemap,
        side: Side,
        start: u64,
        end: u64,
        mut visit: impl FnMut(u64, &[u64]) -> Result<(), SideError>,
    ) -> Result<(), SideError> {
        let ps = crate::kernel::page_size() as u64;
        let mut cur = start;
        while cur < end {
            let n = (((end - cur) / ps) as usize).min(self.chunk);
            let (a, _) = self.buffers(n);
            pm.read_into(cur, a).map_err(|e| SideError::new(side, e))?;
            visit(cur, a)?;
            cur += n as u64 * ps;
        }
        Ok(())
    }
}

/// Where any of `pms` has a page (present or swapped) in `[start, end)`, per PAGEMAP_SCAN: a
/// sorted list of disjoint ranges, the union over the processes. `None` when PAGEMAP_SCAN
/// is unavailable (then walk everything).
///
/// # Errors
/// The first failing scan, tagged with the side at the same index in `sides`.
pub fn populated(
    pms: &[(&Pagemap, Side)],
    start: u64,
    end: u64,
) -> Result<Option<Vec<(u64, u64)>>, SideError> {
    let mut all: Vec<(u64, u64)> = Vec::new();
    for (pm, side) in pms {
        match scan::scan_matching(pm, start, end, PAGE_IS_PRESENT | PAGE_IS_SWAPPED)
            .map_err(|e| SideError::new(*side, e))?
        {
            Some(regions) => all.extend(regions.iter().map(|r| (r.start, r.end))),
            None => return Ok(None),
        }
    }
    Ok(Some(union(all)))
}

/// Sort and merge overlapping or touching ranges.
pub fn union(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_merges_overlapping_and_touching_ranges() {
        assert_eq!(
            union(vec![(10, 20), (0, 5), (5, 8), (15, 30), (40, 41)]),
            [(0, 8), (10, 30), (40, 41)]
        );
        assert!(union(Vec::new()).is_empty());
    }

    /// The order that panicked: a one-sided walk first, then a pair walk with the same reader.
    #[test]
    fn a_pair_walk_after_a_one_sided_walk_has_both_buffers() {
        let ps = crate::kernel::page_size();
        let v = vec![7u8; 5 * ps];
        let start = (v.as_ptr() as u64).next_multiple_of(ps as u64);
        let end = start + 3 * ps as u64;
        let me = std::process::id() as i32;
        let (a, b) = (Pagemap::open(me).unwrap(), Pagemap::open(me).unwrap());
        let mut r = PairReader::with_chunk(2);
        let mut one = 0;
        r.walk_one(&a, Side::Child, start, end, |_, e| {
            one += e.len();
            Ok(())
        })
        .unwrap();
        let mut both = 0;
        r.walk(&a, &b, start, end, |_, x, y| {
            assert_eq!(x.len(), y.len());
            both += x.len();
            Ok(())
        })
        .unwrap();
        assert_eq!((one, both), (3, 3));
        std::hint::black_box(&v);
    }

    #[test]
    fn walking_a_process_against_itself_sees_equal_chunks_of_the_asked_size() {
        let ps = crate::kernel::page_size();
        let v = vec![7u8; 5 * ps];
        let start = (v.as_ptr() as u64).next_multiple_of(ps as u64);
        let end = start + 3 * ps as u64;
        let me = std::process::id() as i32;
        let (a, b) = (Pagemap::open(me).unwrap(), Pagemap::open(me).unwrap());
        let mut r = PairReader::with_chunk(2);
        let mut seen = Vec::new();
        r.walk(&a, &b, start, end, |addr, x, y| {
            assert_eq!(x, y, "one process read twice shows the same entries");
            seen.push((addr, x.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [(start, 2), (start + 2 * ps as u64, 1)]);
        std::hint::black_box(&v);
    }
}
