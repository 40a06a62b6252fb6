//! Counting classes over a segment as the pair walk streams it: totals, the private
//! anonymous pages of each side by class (for the smaps accounting), and optionally an
//! aggregated page map (cells of N pages) and run-length rows per page.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::classify::{HiddenFacts, N_CLASSES, PairClass, classify_hidden, classify_visible};
use super::zero::ZeroPfns;
use crate::mem::pagemap::{EXCLUSIVE, FILE_OR_SHARED, PRESENT, SWAPPED};
use crate::mem::scan::{PAGE_IS_HUGE, PAGE_IS_PFNZERO, PageRegion};

/// Pages per class. The first six are the contract of `inspect`'s JSON; `neither` (no page
/// in either process) makes the classes add up to the pages of the range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClassCounts {
    /// Same frame in both.
    pub shared: u64,
    /// Both present, different frames.
    pub diverged: u64,
    /// Present (or swapped) only in the parent.
    pub only_parent: u64,
    /// Present (or swapped) only in the child.
    pub only_child: u64,
    /// Both map a zero page.
    pub zero: u64,
    /// Both present, sameness not provable without PFNs.
    pub unproven: u64,
    /// Neither has a page here.
    pub neither: u64,
}

impl ClassCounts {
    /// From an array indexed by [`PairClass`].
    pub fn from_array(a: &[u64; N_CLASSES]) -> Self {
        ClassCounts {
            shared: a[0],
            diverged: a[1],
            only_parent: a[2],
            only_child: a[3],
            zero: a[4],
            unproven: a[5],
            neither: a[6],
        }
    }
    /// As an array indexed by [`PairClass`].
    pub fn to_array(&self) -> [u64; N_CLASSES] {
        [
            self.shared,
            self.diverged,
            self.only_parent,
            self.only_child,
            self.zero,
            self.unproven,
            self.neither,
        ]
    }
    /// Add another count.
    pub fn add(&mut self, o: &ClassCounts) {
        let (a, b) = (self.to_array(), o.to_array());
        *self = ClassCounts::from_array(&std::array::from_fn(|i| a[i] + b[i]));
    }
    /// Every page counted, `neither` included.
    pub fn pages(&self) -> u64 {
        self.to_array().iter().sum()
    }
    /// The count of one class.
    pub fn get(&self, c: PairClass) -> u64 {
        self.to_array()[c as usize]
    }
}

/// A run of consecutive pages with one class (`--per-page`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PageRun {
    /// First byte.
    #[serde(with = "crate::mem::hex")]
    #[schemars(with = "String")]
    pub start: u64,
    /// One past the last byte.
    #[serde(with = "crate::mem::hex")]
    #[schemars(with = "String")]
    pub end: u64,
    /// The class of every page in the run.
    pub class: PairClass,
}

/// Where a side's pagemap is private anonymous memory: present, exclusively mapped, not a
/// file or shmem page. These are the pages smaps counts in Private_Dirty (anonymous pages are
/// dirty), except inside PMD-mapped THPs, whose bit 56 follows the head page on some kernels.
#[inline(always)]
fn private_anon(e: u64) -> bool {
    e & (PRESENT | EXCLUSIVE | FILE_OR_SHARED) == PRESENT | EXCLUSIVE
}

/// Per-page facts for the hidden-PFN rules: PAGEMAP_SCAN regions of one chunk of one side,
/// or one answer for the whole segment.
#[derive(Debug, Clone)]
pub enum Facts {
    /// The same facts for every page (e.g. "not PMD-mapped, zero unknown" from smaps).
    Fixed(HiddenFacts),
    /// `PAGE_IS_PFNZERO | PAGE_IS_HUGE` regions from PAGEMAP_SCAN: pages outside every
    /// region are known to be neither. Only from a walk that reached the end of the chunk
    /// ([`crate::mem::scan::scan_matching`] returns `None` otherwise, and the caller uses
    /// [`Facts::Fixed`] with what smaps can prove).
    Regions {
        /// Sorted regions.
        regions: Vec<PageRegion>,
        /// Cursor.
        next: usize,
    },
}

impl Facts {
    /// From PAGEMAP_SCAN regions.
    pub fn regions(regions: Vec<PageRegion>) -> Facts {
        Facts::Regions { regions, next: 0 }
    }

    /// The facts at `addr`; addresses must be asked in increasing order.
    #[inline(always)]
    pub fn at(&mut self, addr: u64) -> HiddenFacts {
        match self {
            Facts::Fixed(f) => *f,
            Facts::Regions { regions, next } => {
                while *next < regions.len() && regions[*next].end <= addr {
                    *next += 1;
                }
                let cat = match regions.get(*next) {
                    Some(r) if r.start <= addr => r.categories,
                    _ => 0,
                };
                HiddenFacts {
                    zero: Some(cat & PAGE_IS_PFNZERO != 0),
                    pmd_mapped: Some(cat & PAGE_IS_HUGE != 0),
                }
            }
        }
    }
}

/// An aggregated page map of one segment: cell `k` covers pages `k*cell_pages ..`.
#[derive(Debug, Clone)]
struct Grid {
    origin: u64,
    cell_pages: u64,
    cells: Vec<[u64; N_CLASSES]>,
}

/// Counts for one segment (or a whole pair, by adding segments).
#[derive(Debug, Clone)]
pub struct Tally {
    /// Pages per class.
    pub classes: [u64; N_CLASSES],
    /// Parent pages that are private anonymous (present, exclusive, not file), by class.
    pub parent_private: [u64; N_CLASSES],
    /// Child pages that are private anonymous, by class.
    pub child_private: [u64; N_CLASSES],
    grid: Option<Grid>,
    runs: Option<Vec<PageRun>>,
    page_size: u64,
}

impl Tally {
    /// A tally for a segment starting at `origin` with `pages` pages; `max_cells` > 0 adds a
    /// page map of at most that many cells, `runs` adds run-length rows.
    pub fn new(origin: u64, pages: u64, max_cells: usize, runs: bool) -> Tally {
        let grid = (max_cells > 0 && pages > 0).then(|| {
            let cell_pages = pages.div_ceil(max_cells as u64).max(1);
            Grid {
                origin,
                cell_pages,
                cells: vec![[0; N_CLASSES]; pages.div_ceil(cell_pages) as usize],
            }
        });
        Tally {
            classes: [0; N_CLASSES],
            parent_private: [0; N_CLASSES],
            child_private: [0; N_CLASSES],
            grid,
            runs: runs.then(Vec::new),
            page_size: crate::kernel::page_size() as u64,
        }
    }

    /// The class counts.
    pub fn counts(&self) -> ClassCounts {
        ClassCounts::from_array(&self.classes)
    }

    /// Pages per cell and the cells, if a page map was asked for.
    pub fn take_grid(&mut self) -> Option<(u64, Vec<[u64; N_CLASSES]>)> {
        self.grid.take().map(|g| (g.cell_pages, g.cells))
    }

    /// The runs, if asked for.
    pub fn take_runs(&mut self) -> Option<Vec<PageRun>> {
        self.runs.take()
    }

    #[inline(always)]
    fn extras(&self) -> bool {
        self.grid.is_some() || self.runs.is_some()
    }

    /// Record `n` pages of class `k` from `addr` in the grid and runs.
    fn record(&mut self, addr: u64, n: u64, k: PairClass) {
        if let Some(g) = &mut self.grid {
            let mut i = (addr - g.origin) / self.page_size;
            let mut left = n;
            while left > 0 {
                let cell = (i / g.cell_pages) as usize;
                let room = g.cell_pages - i % g.cell_pages;
                let take = room.min(left);
                if let Some(c) = g.cells.get_mut(cell) {
                    c[k as usize] += take;
                }
                i += take;
                left -= take;
            }
        }
        if let Some(runs) = &mut self.runs {
            let end = addr + n * self.page_size;
            match runs.last_mut() {
                Some(r) if r.class == k && r.end == addr => r.end = end,
                _ => runs.push(PageRun {
                    start: addr,
                    end,
                    class: k,
                }),
            }
        }
    }

    /// `n` pages from `addr` known to be empty in both processes.
    pub fn add_empty(&mut self, addr: u64, n: u64) {
        self.classes[PairClass::Neither as usize] += n;
        if self.extras() {
            self.record(addr, n, PairClass::Neither);
        }
    }

    /// Count a chunk of a common segment with visible PFNs.
    #[inline]
    pub fn add_visible(&mut self, addr: u64, parent: &[u64], child: &[u64], zero: &ZeroPfns) {
        debug_assert_eq!(parent.len(), child.len(), "chunks of one range");
        if !self.extras() {
            for (&p, &c) in parent.iter().zip(child) {
                let k = classify_visible(p, c, zero) as usize;
                self.classes[k] += 1;
                self.parent_private[k] += private_anon(p) as u64;
                self.child_private[k] += private_anon(c) as u64;
            }
            return;
        }
        for (i, (&p, &c)) in parent.iter().zip(child).enumerate() {
            let k = classify_visible(p, c, zero);
            self.classes[k as usize] += 1;
            self.parent_private[k as usize] += private_anon(p) as u64;
            self.child_private[k as usize] += private_anon(c) as u64;
            self.record(addr + i as u64 * self.page_size, 1, k);
        }
    }

    /// Count a chunk of a common segment without PFNs, with per-side facts.
    pub fn add_hidden(
        &mut self,
        addr: u64,
        parent: &[u64],
        child: &[u64],
        pf: &mut Facts,
        cf: &mut Facts,
        shared_mapping: bool,
    ) {
        debug_assert_eq!(parent.len(), child.len(), "chunks of one range");
        for (i, (&p, &c)) in parent.iter().zip(child).enumerate() {
            let a = addr + i as u64 * self.page_size;
            let k = classify_hidden(p, c, pf.at(a), cf.at(a), shared_mapping);
            self.classes[k as usize] += 1;
            self.parent_private[k as usize] += private_anon(p) as u64;
            self.child_private[k as usize] += private_anon(c) as u64;
            if self.extras() {
                self.record(a, 1, k);
            }
        }
    }

    /// Count a chunk of a segment only `side` maps: its pages are only_parent/only_child.
    pub fn add_one_sided(&mut self, addr: u64, entries: &[u64], parent_side: bool) {
        let here = if parent_side {
            PairClass::OnlyParent
        } else {
            PairClass::OnlyChild
        };
        for (i, &e) in entries.iter().enumerate() {
            let k = if e & (PRESENT | SWAPPED) != 0 {
                here
            } else {
                PairClass::Neither
            };
            self.classes[k as usize] += 1;
            let private = private_anon(e) as u64;
            if parent_side {
                self.parent_private[k as usize] += private;
            } else {
                self.child_private[k as usize] += private;
            }
            if self.extras() {
                self.record(addr + i as u64 * self.page_size, 1, k);
            }
        }
    }

    /// Add another tally's counts (not its grid or runs).
    pub fn absorb(&mut self, o: &Tally) {
        for i in 0..N_CLASSES {
            self.classes[i] += o.classes[i];
            self.parent_private[i] += o.parent_private[i];
            self.child_private[i] += o.child_private[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_of_n_pages_add_up_to_the_segment() {
        let ps = crate::kernel::page_size() as u64;
        let mut t = Tally::new(0x10000, 10, 4, true);
        // 10 pages in at most 4 cells: 3 pages per cell, 4 cells (3+3+3+1).
        let zero = ZeroPfns::default();
        let p = [PRESENT | 1, PRESENT | 2, PRESENT | 3, 0, 0];
        let c = [PRESENT | 1, PRESENT | 9, PRESENT | 3, 0, PRESENT | 4];
        t.add_visible(0x10000, &p, &c, &zero);
        t.add_empty(0x10000 + 5 * ps, 5);
        let counts = t.counts();
        assert_eq!(
            (
                counts.shared,
                counts.diverged,
                counts.only_child,
                counts.neither
            ),
            (2, 1, 1, 6)
        );
        let (cell_pages, cells) = t.take_grid().unwrap();
        assert_eq!(cell_pages, 3);
        assert_eq!(cells.len(), 4);
        assert_eq!(cells.iter().flatten().sum::<u64>(), 10);
        assert_eq!(cells[0][PairClass::Shared as usize], 2);
        assert_eq!(cells[3], [0, 0, 0, 0, 0, 0, 1]);
        let runs = t.take_runs().unwrap();
        assert_eq!(runs.first().map(|r| r.class), Some(PairClass::Shared));
        assert_eq!(runs.last().map(|r| (r.end - r.start) / ps), Some(5));
    }

    #[test]
    fn private_anonymous_pages_are_counted_per_side_and_class() {
        let mut t = Tally::new(0, 3, 0, false);
        let zero = ZeroPfns::default();
        let x = PRESENT | EXCLUSIVE;
        // diverged: both exclusive; only_child: child exclusive; shared file page: neither.
        let p = [x | 1, 0, PRESENT | FILE_OR_SHARED | 5];
        let c = [x | 2, x | 3, PRESENT | FILE_OR_SHARED | 5];
        t.add_visible(0, &p, &c, &zero);
        assert_eq!(t.child_private[PairClass::Diverged as usize], 1);
        assert_eq!(t.child_private[PairClass::OnlyChild as usize], 1);
        assert_eq!(t.parent_private[PairClass::Diverged as usize], 1);
        assert_eq!(t.classes[PairClass::Shared as usize], 1);
        assert_eq!(t.child_private.iter().sum::<u64>(), 2);
    }
}
