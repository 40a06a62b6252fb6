//! One (parent, child) pair created by a fork: the fork-time baseline, the releases each side
//! made since, and the sampling that classifies every baseline page.
//!
//! The baseline is taken in two phases around the parent's PTRACE_EVENT_FORK stop:
//! 1. [`read_parent`], while the parent is held at its fork stop: its VMAs (`/proc/<pid>/maps`)
//!    and the pagemap entries of the pages that can take part in copy-on-write.
//! 2. [`Baseline::complete`], right after the parent is resumed: the child's pagemap over the
//!    same pages. The child has not run a single instruction yet (a traced fork child starts
//!    with a ptrace stop), so its page tables are still the copy the kernel made during fork:
//!    the fork-time record, whatever the parent (or its other threads) did meanwhile.
//!
//! Which pages: private VMAs only (MAP_SHARED memory is never copied on write), without the
//! kernel's special mappings (`[vdso]`, `[vvar]`...) and PROT_NONE reservations; of read-only
//! file mappings only the anonymous pages (RELRO, relocated text: pages once written), since
//! a read-only page-cache page can never be copied. Pages neither side had at the fork (in RAM
//! or swap) are outside the comparison (they share nothing). VMAs larger than [`SPARSE_VMA`]
//! (and than twice the resident memory) are first scanned with PAGEMAP_SCAN
//! ([`walk::populated`], the scan `inspect` uses), so a sparse reservation of terabytes costs
//! what its populated parts cost.
//!
//! Reading: the parent's side is read straight into the baseline's per-page array while the
//! parent is held (no chunk buffer in the pause); the child's side and every sample go through
//! [`walk::PairReader`], the one streaming pagemap walk of the crate (`inspect` uses it too).
//!
//! Memory grows with the target: the baseline is per page by nature (which frame each page
//! had at the fork, and what became of it). 8 bytes per baseline page hold the parent's
//! entries, then, rewritten in place, the frames; 1 byte per page the history; 2 bits the
//! release marks, 2 bits which pages a write could copy (anonymous / page cache) and 2 bits
//! which the last sample called released (for the fault timeline): 9.75 bytes per page at the
//! peak (0.24% of the memory compared), plus two chunk buffers of 512 KiB while a pagemap is
//! read. Samples keep totals only; an ended pair keeps its 4 timeline bits per page
//! ([`PageHistory`]) until the end of the run.

use std::io;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::classify::{self, Class, Counts, Evidence, Hist, PageState, Seen};
use crate::inspect::tally::Facts;
use crate::inspect::vma::{VmaKind, same_identity};
use crate::inspect::walk::{self, PairReader, Side, SideError};
use crate::inspect::zero::ZeroPfns;
use crate::mem::kpage::Kpage;
use crate::mem::pagemap::{Pagemap, PagemapEntry};
use crate::mem::scan::{PAGE_IS_HUGE, PAGE_IS_PFNZERO};
use crate::mem::smaps::SmapsEntry;

/// A VMA larger than this, and larger than twice the process's resident memory, is scanned
/// for present pages (PAGEMAP_SCAN) before its pagemap is read; others are read whole. A scan
/// costs about one read, so scanning dense memory would double the parent's pause, while
/// reading a sparse reservation of terabytes whole would take seconds and, unlike `inspect`'s
/// streaming walk (which scans only segments over [`walk::SPARSE_WALK_PAGES`]), gigabytes: the
/// baseline keeps 9 bytes for every page it reads.
pub const SPARSE_VMA: u64 = 64 << 20;

/// A VMA of the parent at the fork, as the per-VMA rows name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BaseVma {
    /// First byte, as hex ("0x7f...").
    pub start: String,
    /// One past the last byte, as hex.
    pub end: String,
    /// `rwxp` as in maps.
    pub perms: String,
    /// Path or pseudo-name, as in maps.
    pub pathname: String,
    /// heap, stack, anon, file-private, hugetlb (as `inspect` names them).
    pub kind: String,
    #[serde(skip)]
    lo: u64,
    #[serde(skip)]
    hi: u64,
    /// Only anonymous pages of this VMA take part (a read-only file mapping).
    #[serde(skip)]
    anon_only: bool,
}

/// The kind of a VMA, as `inspect` names it (the target's mounts are not needed: a private
/// mapping is never tmpfs shmem, and private hugetlb mappings are named `/anon_hugepage`).
fn kind(v: &SmapsEntry) -> VmaKind {
    crate::inspect::vma::kind_of(v, &crate::inspect::vma::Mounts::default())
}

/// Whether a VMA takes part in copy-on-write: private (heap, stack, anonymous, a private file
/// or hugetlb mapping), accessible, not a kernel special mapping.
fn cow_capable(v: &SmapsEntry) -> bool {
    let k = kind(v);
    let private = v.perms.as_bytes().get(3) == Some(&b'p');
    let accessible = !v.perms.starts_with("---");
    private && accessible && (k.is_private() || k == VmaKind::Hugetlb)
}

/// A contiguous run of pages whose state is kept.
#[derive(Debug, Clone, Copy)]
struct Seg {
    start: u64,
    pages: usize,
    vma: usize,
    /// Index of the run's first page in the per-page arrays.
    first: usize,
}

/// Phase 1 of a baseline: the parent's side, read while it is held.
#[derive(Debug)]
pub struct ParentSnapshot {
    vmas: Vec<BaseVma>,
    /// The fork-time maps line of each VMA (identity: device, inode, offset, name).
    idents: Vec<SmapsEntry>,
    segs: Vec<Seg>,
    /// The parent's raw pagemap entries; [`Baseline::complete`] turns them into frames in
    /// place (no second array).
    entries: Vec<u64>,
    read: std::time::Duration,
}

impl ParentSnapshot {
    /// Pages the snapshot covers.
    pub fn pages(&self) -> usize {
        self.entries.len()
    }

    /// How long the pagemap reads took (the floor the parent's pause is measured against).
    pub fn read_time(&self) -> std::time::Duration {
        self.read
    }

    /// The address ranges the baseline covers (one per segment), for the fault stream.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let ps = crate::kernel::page_size() as u64;
        self.segs
            .iter()
            .map(|s| (s.start, s.start + s.pages as u64 * ps))
            .collect()
    }
}

fn side_err(e: SideError) -> io::Error {
    e.error
}

/// Read the parent's VMAs and pagemap over the pages that can take part in copy-on-write.
///
/// # Errors
/// When `/proc/<pid>/maps` or the pagemap cannot be read (process gone, no permission).
pub fn read_parent(pid: i32, pm: &Pagemap) -> io::Result<ParentSnapshot> {
    let ps = crate::kernel::page_size() as u64;
    let maps = crate::mem::smaps::vma_bounds(pid)?;
    let mut vmas = Vec::new();
    let mut idents = Vec::new();
    let mut segs = Vec::new();
    let mut first = 0usize;
    // Resident memory from statm: cheap, no page walk.
    let resident = crate::mem::process::statm(pid).map_or(u64::MAX / 4, |s| s.resident * ps);
    let sparse = |len: u64| len > SPARSE_VMA && len > 2 * resident;
    for v in maps.iter().filter(|v| cow_capable(v)) {
        let idx = vmas.len();
        let anon_only = !v.pathname.is_empty()
            && !v.pathname.starts_with('[')
            && v.perms.as_bytes().get(1) != Some(&b'w');
        vmas.push(BaseVma {
            start: format!("{:#x}", v.start),
            end: format!("{:#x}", v.end),
            perms: v.perms.clone(),
            pathname: v.pathname.clone(),
            kind: kind(v).name().to_string(),
            lo: v.start,
            hi: v.end,
            anon_only,
        });
        idents.push(v.clone());
        let runs: Vec<(u64, u64)> = if sparse(v.end - v.start) {
            walk::populated(&[(pm, Side::Parent)], v.start, v.end)
                .map_err(side_err)?
                .unwrap_or_else(|| vec![(v.start, v.end)])
        } else {
            vec![(v.start, v.end)]
        };
        for (a, b) in runs {
            let (a, b) = (a.max(v.start), b.min(v.end));
            if a >= b {
                continue;
            }
            let pages = ((b - a) / ps) as usize;
            segs.push(Seg {
                start: a,
                pages,
                vma: idx,
                first,
            });
            first += pages;
        }
    }
    let mut entries = vec![0u64; first];
    let t0 = std::time::Instant::now();
    // Straight into the per-page array, in large reads: this is the parent's pause.
    for s in &segs {
        for (i, chunk) in entries[s.first..s.first + s.pages]
            .chunks_mut(walk::CHUNK_PAGES)
            .enumerate()
        {
            pm.read_into(s.start + (i * walk::CHUNK_PAGES) as u64 * ps, chunk)?;
        }
    }
    let read = t0.elapsed();
    // Read-only file mappings: only anonymous pages (once written) can be copied.
    for s in &segs {
        if vmas[s.vma].anon_only {
            for e in &mut entries[s.first..s.first + s.pages] {
                if PagemapEntry(*e).file_or_shared() {
                    *e = 0;
                }
            }
        }
    }
    Ok(ParentSnapshot {
        vmas,
        idents,
        segs,
        entries,
        read,
    })
}

/// A bit per baseline page.
#[derive(Debug, Clone, Default)]
pub struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    /// Whether bit `i` is set.
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    fn clear(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w &= !(1u64 << (i % 64));
        }
    }

    fn clear_all(&mut self) {
        self.0.iter_mut().for_each(|w| *w = 0);
    }

    /// Set bits `[a, b)`; returns how many were newly set.
    fn set_range(&mut self, a: usize, b: usize) -> u64 {
        let mut new = 0;
        for i in a..b {
            if let Some(w) = self.0.get_mut(i / 64) {
                let m = 1u64 << (i % 64);
                if *w & m == 0 {
                    *w |= m;
                    new += 1;
                }
            }
        }
        new
    }
}

/// The fork-time record of one pair and the per-page state since.
#[derive(Debug)]
pub struct Baseline {
    vmas: Vec<BaseVma>,
    idents: Vec<SmapsEntry>,
    segs: Vec<Seg>,
    frames: Vec<u64>,
    hist: Vec<u8>,
    released_by_parent: Bits,
    released_by_child: Bits,
    /// Pages with a frame at the fork (on either side).
    tracked: u64,
    /// Pages the child owned before its first instruction.
    copied_at_fork: u64,
    /// Pages attributed to a write whose new frame is a THP that replaced a zero page.
    thp_from_zero: u64,
    /// With `--stacks`: the pages any sample called copied_by_child, copied_by_parent,
    /// copied_at_fork or diverged (in that order), so a copy later released still gets its
    /// stack.
    copies: Option<Box<[Bits; 4]>>,
    /// Pages a write could copy, from the fork on: shared at the fork, anonymous (`[0]`) or
    /// a page-cache page of a private file mapping (`[1]`). The fault timeline's candidates.
    cow: [Bits; 2],
    /// Pages the last sample called released by the parent (`[0]`: released_by_parent or
    /// released_by_both) and by the child (`[1]`: released_by_child or released_by_both):
    /// the fault timeline may prove a copy came first.
    released_now: [Bits; 2],
}

/// What the fault timeline needs of an ended pair's baseline (4 bits per page, kept after
/// the pagemaps are closed): where each page is, which a write could copy, and which the
/// final sample called released.
#[derive(Debug, Clone, Default)]
pub struct PageHistory {
    segs: Vec<Seg>,
    cow: [Bits; 2],
    released_now: [Bits; 2],
}

/// One page a write could have copied (see [`PageHistory::pages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CowPage {
    /// Index in the per-page arrays.
    pub index: usize,
    /// Its address.
    pub addr: u64,
    /// The baseline VMA it lies in.
    pub vma: usize,
    /// A page-cache page at the fork (a private file mapping not yet written).
    pub file: bool,
    /// The final sample called it released by (parent, child).
    pub released_now: (bool, bool),
}

impl PageHistory {
    /// Build one by hand (tests): runs of `(start, pages, vma)`, which pages are anonymous /
    /// page-cache candidates, and which the final sample called released by each side.
    pub fn from_parts(
        runs: &[(u64, usize, usize)],
        file: &[usize],
        released_parent: &[usize],
        released_child: &[usize],
    ) -> PageHistory {
        let mut segs = Vec::new();
        let mut first = 0;
        for &(start, pages, vma) in runs {
            segs.push(Seg {
                start,
                pages,
                vma,
                first,
            });
            first += pages;
        }
        let mut h = PageHistory {
            segs,
            cow: [Bits::new(first), Bits::new(first)],
            released_now: [Bits::new(first), Bits::new(first)],
        };
        h.cow[0].set_range(0, first);
        for &i in file {
            h.cow[0].clear(i);
            h.cow[1].set_range(i, i + 1);
        }
        for &i in released_parent {
            h.released_now[0].set_range(i, i + 1);
        }
        for &i in released_child {
            h.released_now[1].set_range(i, i + 1);
        }
        h
    }

    /// Every page a write could have copied, in address order.
    pub fn pages(&self) -> impl Iterator<Item = CowPage> + '_ {
        let ps = crate::kernel::page_size() as u64;
        self.segs.iter().flat_map(move |s| {
            (0..s.pages).filter_map(move |j| {
                let i = s.first + j;
                let (anon, file) = (self.cow[0].get(i), self.cow[1].get(i));
                (anon || file).then(|| CowPage {
                    index: i,
                    addr: s.start + j as u64 * ps,
                    vma: s.vma,
                    file,
                    released_now: (self.released_now[0].get(i), self.released_now[1].get(i)),
                })
            })
        })
    }

    /// The index of the page at `addr`, if the baseline has it.
    pub fn index(&self, addr: u64) -> Option<usize> {
        let ps = crate::kernel::page_size() as u64;
        let k = self
            .segs
            .partition_point(|s| s.start + s.pages as u64 * ps <= addr);
        let s = self.segs.get(k)?;
        (s.start <= addr).then(|| s.first + ((addr - s.start) / ps) as usize)
    }

    /// The indexes of the baseline pages in `[start, end)`, run by run.
    pub fn ranges(&self, start: u64, end: u64) -> Vec<(usize, usize)> {
        let ps = crate::kernel::page_size() as u64;
        let from = self
            .segs
            .partition_point(|s| s.start + s.pages as u64 * ps <= start);
        let mut out = Vec::new();
        for s in &self.segs[from..] {
            if s.start >= end {
                break;
            }
            let a = start.max(s.start);
            let b = end.min(s.start + s.pages as u64 * ps);
            if a < b {
                out.push((
                    s.first + ((a - s.start) / ps) as usize,
                    s.first + ((b - s.start) / ps) as usize,
                ));
            }
        }
        out
    }

    /// Pages in the per-page arrays.
    pub fn len(&self) -> usize {
        self.segs.last().map_or(0, |s| s.first + s.pages)
    }

    /// No pages.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one sample found.
#[derive(Debug, Clone, Default)]
pub struct SampleOut {
    /// Pages per class, all VMAs.
    pub total: Counts,
    /// Pages per class, per baseline VMA.
    pub per_vma: Vec<Counts>,
    /// Without PFNs: baseline pages where a side no longer maps the fork-time VMA (unmapped,
    /// or another mapping there since): no `shared` from the file or family rules there.
    pub remapped: u64,
}

impl Baseline {
    /// Phase 2: read the child's pagemap over the parent's snapshot (the child has not run)
    /// and build the per-page state. The parent's entries become the frames in place, so the
    /// peak is the snapshot's 8 bytes per page plus 1 for the history.
    ///
    /// # Errors
    /// When the child's pagemap cannot be read.
    pub fn complete(
        snap: ParentSnapshot,
        child: &Pagemap,
        pfn_visible: bool,
    ) -> io::Result<Baseline> {
        let ParentSnapshot {
            vmas,
            idents,
            segs,
            entries,
            ..
        } = snap;
        let n = entries.len();
        let mut frames = entries;
        let mut hist = vec![0u8; n];
        let ps = crate::kernel::page_size() as u64;
        let mut tracked = 0;
        let mut copied_at_fork = 0;
        let mut cow = [Bits::new(n), Bits::new(n)];
        let mut reader = PairReader::new();
        for s in &segs {
            let anon_only = vmas[s.vma].anon_only;
            let end = s.start + s.pages as u64 * ps;
            reader
                .walk_one(child, Side::Child, s.start, end, |addr, ce| {
                    let base = s.first + ((addr - s.start) / ps) as usize;
                    for (j, &e) in ce.iter().enumerate() {
                        let i = base + j;
                        let mut c = Seen::from_entry(e);
                        if anon_only && c.file {
                            c = Seen::default();
                        }
                        let p = Seen::from_entry(frames[i]);
                        let st = classify::baseline(p, c, pfn_visible);
                        if st.hist == Hist::Shared {
                            cow[usize::from(p.file && p.present)].set_range(i, i + 1);
                        }
                        frames[i] = st.frame;
                        hist[i] = st.hist as u8;
                        if st.hist != Hist::Unborn {
                            tracked += 1;
                        }
                        if st.hist == Hist::CopiedAtFork {
                            copied_at_fork += 1;
                        }
                    }
                    Ok(())
                })
                .map_err(side_err)?;
        }
        Ok(Baseline {
            vmas,
            idents,
            segs,
            frames,
            hist,
            released_by_parent: Bits::new(n),
            released_by_child: Bits::new(n),
            tracked,
            copied_at_fork,
            thp_from_zero: 0,
            copies: None,
            cow,
            released_now: [Bits::new(n), Bits::new(n)],
        })
    }

    /// What the fault timeline needs once the pair has ended (see [`PageHistory`]).
    pub fn page_history(&self) -> PageHistory {
        PageHistory {
            segs: self.segs.clone(),
            cow: self.cow.clone(),
            released_now: self.released_now.clone(),
        }
    }

    /// Pages with a frame at the fork.
    pub fn tracked_pages(&self) -> u64 {
        self.tracked
    }

    /// Pages the child owned before its first instruction (its TID page, pinned pages).
    pub fn copied_at_fork(&self) -> u64 {
        self.copied_at_fork
    }

    /// Pages attributed to a side's write where its new frame is part of a THP that replaced
    /// a zero page (the huge zero page written: Linux 6.13+ gives the writer a whole THP).
    pub fn thp_from_zero(&self) -> u64 {
        self.thp_from_zero
    }

    /// Remember, from now on, every page a sample calls copied (see [`Self::copied_pages`]).
    pub fn track_copies(&mut self) {
        let n = self.hist.len();
        self.copies = Some(Box::new([
            Bits::new(n),
            Bits::new(n),
            Bits::new(n),
            Bits::new(n),
        ]));
    }

    /// Every page any sample since [`Self::track_copies`] called `copied_by_child`,
    /// `copied_by_parent`, `copied_at_fork` or `diverged`, with that class (address order; a
    /// page seen under two of them, e.g. diverged without PFNs and copied later, is listed
    /// once per class).
    pub fn copied_pages(&self) -> Vec<(u64, Class)> {
        let Some(bits) = &self.copies else {
            return Vec::new();
        };
        let ps = crate::kernel::page_size() as u64;
        let mut out = Vec::new();
        for s in &self.segs {
            for j in 0..s.pages {
                let i = s.first + j;
                for (b, class) in bits.iter().zip([
                    Class::CopiedByChild,
                    Class::CopiedByParent,
                    Class::CopiedAtFork,
                    Class::Diverged,
                ]) {
                    if b.get(i) {
                        out.push((s.start + j as u64 * ps, class));
                    }
                }
            }
        }
        out
    }

    /// The VMAs of the baseline.
    pub fn vmas(&self) -> &[BaseVma] {
        &self.vmas
    }

    /// Mark `[start, end)` released by one side; returns the baseline pages newly marked.
    pub fn mark_released(&mut self, start: u64, end: u64, by_child: bool) -> u64 {
        let ps = crate::kernel::page_size() as u64;
        // First segment that ends after `start`.
        let from = self
            .segs
            .partition_point(|s| s.start + s.pages as u64 * ps <= start);
        let mut new = 0;
        for s in &self.segs[from..] {
            if s.start >= end {
                break;
            }
            let s_end = s.start + s.pages as u64 * ps;
            let a = start.max(s.start);
            let b = end.min(s_end);
            if a >= b {
                continue;
            }
            let ia = s.first + ((a - s.start) / ps) as usize;
            let ib = s.first + ((b - s.start) / ps) as usize;
            let bits = if by_child {
                &mut self.released_by_child
            } else {
                &mut self.released_by_parent
            };
            new += bits.set_range(ia, ib);
        }
        new
    }

    /// Where both sides still map each baseline VMA's fork-time mapping (same identity at
    /// that address in both `/proc/<pid>/maps`), per baseline VMA.
    fn still_mapped(&self, parent: i32, child: i32) -> io::Result<Vec<Vec<(u64, u64)>>> {
        let pm = crate::mem::smaps::vma_bounds(parent)?;
        let cm = crate::mem::smaps::vma_bounds(child)?;
        Ok(self
            .idents
            .iter()
            .map(|base| intersect(&matching(base, &pm), &matching(base, &cm)))
            .collect())
    }

    /// Classify every baseline page from both sides' pagemaps now; per-VMA counts follow the
    /// baseline's VMAs.
    ///
    /// # Errors
    /// When a pagemap (or, without PFNs, a maps file) cannot be read (a side is gone).
    pub fn sample(&mut self, inp: &SampleInput<'_>) -> io::Result<SampleOut> {
        let ps = crate::kernel::page_size() as u64;
        let mut per_vma = vec![Counts::default(); self.vmas.len()];
        let kept = if inp.pfn_visible {
            None
        } else {
            Some(self.still_mapped(inp.parent.pid(), inp.child.pid())?)
        };
        let scan = !inp.pfn_visible && crate::mem::scan::available();
        let mut remapped = 0u64;
        let mut reader = PairReader::new();
        let mut flags = NonwriteFlags::default();
        self.released_now[0].clear_all();
        self.released_now[1].clear_all();
        let segs = std::mem::take(&mut self.segs);
        for s in &segs {
            let vma = VmaFacts {
                anon_only: self.vmas[s.vma].anon_only,
                file_backed: self.idents[s.vma].inode != 0,
            };
            let mut kept_cursor = Ranges::new(kept.as_ref().map(|k| k[s.vma].as_slice()));
            let end = s.start + s.pages as u64 * ps;
            let counts = &mut per_vma[s.vma];
            let walked = reader.walk(inp.parent, inp.child, s.start, end, |addr, bp, bc| {
                let base = s.first + ((addr - s.start) / ps) as usize;
                let chunk_end = addr + bp.len() as u64 * ps;
                let (mut pf, mut cf) = if inp.pfn_visible {
                    (
                        Facts::Fixed(Default::default()),
                        Facts::Fixed(Default::default()),
                    )
                } else {
                    (
                        scan_facts(scan, inp.parent, Side::Parent, addr, chunk_end)?,
                        scan_facts(scan, inp.child, Side::Child, addr, chunk_end)?,
                    )
                };
                flags.look_up(inp, &self.hist[base..], &self.frames[base..], bp, bc)?;
                for j in 0..bp.len() {
                    let i = base + j;
                    let a = addr + j as u64 * ps;
                    let (nw_p, nw_c) = flags.at(j);
                    if Hist::from_u8(self.hist[i]) == Hist::Unborn {
                        continue;
                    }
                    let (p, c, ev) = self.see_page(
                        inp,
                        i,
                        Seen::from_entry(bp[j]),
                        Seen::from_entry(bc[j]),
                        vma,
                        (nw_p, nw_c),
                        || (pf.at(a), cf.at(a), kept_cursor.contains(a)),
                    );
                    if !inp.pfn_visible && !ev.same_mapping {
                        remapped += 1;
                    }
                    self.classify_page(i, p, c, ev, counts);
                }
                Ok(())
            });
            if let Err(e) = walked {
                self.segs = segs;
                return Err(side_err(e));
            }
        }
        self.segs = segs;
        let mut total = Counts::default();
        for v in &per_vma {
            total.merge(v);
        }
        debug_assert_eq!(
            total.sum_of_classes(),
            total.total,
            "page classes must partition the baseline"
        );
        Ok(SampleOut {
            total,
            per_vma,
            remapped,
        })
    }

    /// Both sides' view of page `i` and what else holds there: read-only file VMAs keep
    /// anonymous pages only; with PFNs the zero frames and the frames no write makes
    /// (`nonwrite`: kpageflags); without, PAGEMAP_SCAN's facts and whether both sides still
    /// map the fork-time VMA (`hidden`: zero/PMD facts of each side, same mapping).
    #[allow(clippy::too_many_arguments)]
    fn see_page(
        &self,
        inp: &SampleInput<'_>,
        i: usize,
        mut p: Seen,
        mut c: Seen,
        vma: VmaFacts,
        nonwrite: (bool, bool),
        hidden: impl FnOnce() -> (
            crate::inspect::classify::HiddenFacts,
            crate::inspect::classify::HiddenFacts,
            bool,
        ),
    ) -> (Seen, Seen, Evidence) {
        if vma.anon_only {
            // Read-only file VMA: its page-cache pages are outside the comparison.
            if p.file {
                p = Seen::default();
            }
            if c.file {
                c = Seen::default();
            }
        }
        let frame = self.frames[i];
        let mut ev = Evidence {
            pfn_visible: inp.pfn_visible,
            releases_lost: inp.releases_lost,
            ..Evidence::default()
        };
        if inp.pfn_visible {
            p.zero = Some(p.present && inp.zero.contains(p.pfn));
            c.zero = Some(c.present && inp.zero.contains(c.pfn));
            p.nonwrite = (p.present && p.file && p.pfn != frame) || nonwrite.0;
            c.nonwrite = (c.present && c.file && c.pfn != frame) || nonwrite.1;
            ev.base_zero = Hist::from_u8(self.hist[i]) == Hist::Shared && inp.zero.contains(frame);
        } else {
            let (x, y, same_mapping) = hidden();
            p.zero = x.zero;
            p.pmd_mapped = x.pmd_mapped;
            c.zero = y.zero;
            c.pmd_mapped = y.pmd_mapped;
            ev.same_mapping = same_mapping;
            ev.file_backed = vma.file_backed;
            ev.family_rule = inp.family_rule;
        }
        (p, c, ev)
    }

    /// Classify page `i` and remember it: its state, its count, the last sample's released
    /// pages (for the fault timeline) and, with `--stacks`, every class of copy it had.
    fn classify_page(&mut self, i: usize, p: Seen, c: Seen, ev: Evidence, counts: &mut Counts) {
        let mut st = PageState {
            frame: self.frames[i],
            hist: Hist::from_u8(self.hist[i]),
        };
        let was_shared = st.hist == Hist::Shared;
        let Some(class) = classify::classify(
            &mut st,
            p,
            c,
            self.released_by_parent.get(i),
            self.released_by_child.get(i),
            ev,
        ) else {
            return;
        };
        if was_shared
            && ev.base_zero
            && ((class == Class::CopiedByChild && c.nonwrite)
                || (class == Class::CopiedByParent && p.nonwrite))
        {
            self.thp_from_zero += 1;
        }
        self.frames[i] = st.frame;
        self.hist[i] = st.hist as u8;
        counts.add(class);
        match class {
            Class::ReleasedByParent => self.released_now[0].set_range(i, i + 1),
            Class::ReleasedByChild => self.released_now[1].set_range(i, i + 1),
            Class::ReleasedByBoth => {
                self.released_now[0].set_range(i, i + 1) + self.released_now[1].set_range(i, i + 1)
            }
            _ => 0,
        };
        if let Some(bits) = self.copies.as_mut() {
            let which = match class {
                Class::CopiedByChild => Some(0),
                Class::CopiedByParent => Some(1),
                Class::CopiedAtFork => Some(2),
                Class::Diverged => Some(3),
                _ => None,
            };
            if let Some(w) = which {
                bits[w].set_range(i, i + 1);
            }
        }
    }
}

/// What a page's VMA says about it.
#[derive(Debug, Clone, Copy)]
struct VmaFacts {
    /// A read-only file mapping: only its anonymous pages take part.
    anon_only: bool,
    /// A file mapping (inode != 0).
    file_backed: bool,
}

/// Without PFNs: PAGEMAP_SCAN's zero-page and PMD facts over one chunk of one side (fixed
/// "unknown" facts where the scan is not available).
fn scan_facts(
    scan: bool,
    pm: &Pagemap,
    side: Side,
    addr: u64,
    chunk_end: u64,
) -> Result<Facts, SideError> {
    if scan
        && let Some(r) =
            crate::mem::scan::scan_matching(pm, addr, chunk_end, PAGE_IS_PFNZERO | PAGE_IS_HUGE)
                .map_err(|e| SideError::new(side, e))?
    {
        return Ok(Facts::regions(r));
    }
    Ok(Facts::Fixed(Default::default()))
}

/// With PFNs, per page of a chunk, whether each side's frame is one no write makes (KSM,
/// THP): kpageflags is read only for frames that just left the shared one, everything else is
/// decided by frame numbers alone.
#[derive(Debug, Default)]
struct NonwriteFlags {
    cands: Vec<u64>,
    /// (page in the chunk, the child's frame) per candidate, in page order.
    idx: Vec<(usize, bool)>,
    flags: Vec<crate::mem::kpage::KpageFlags>,
    next: usize,
}

impl NonwriteFlags {
    /// Read the flags of the chunk's candidates (`hist`, `frames`: from the chunk's first
    /// page on).
    fn look_up(
        &mut self,
        inp: &SampleInput<'_>,
        hist: &[u8],
        frames: &[u64],
        bp: &[u64],
        bc: &[u64],
    ) -> Result<(), SideError> {
        self.cands.clear();
        self.idx.clear();
        self.flags.clear();
        self.next = 0;
        let Some(kp) = inp.kpage.filter(|_| inp.pfn_visible) else {
            return Ok(());
        };
        for j in 0..bp.len() {
            if Hist::from_u8(hist[j]) != Hist::Shared {
                continue;
            }
            let (p, c) = (PagemapEntry(bp[j]), PagemapEntry(bc[j]));
            if !(p.present() && c.present()) || p.pfn() == c.pfn() {
                continue;
            }
            for (e, is_child) in [(p, false), (c, true)] {
                if e.pfn() != frames[j] && !e.file_or_shared() {
                    self.cands.push(e.pfn());
                    self.idx.push((j, is_child));
                }
            }
        }
        if !self.cands.is_empty() {
            self.flags = kp
                .flags(&self.cands)
                .map_err(|e| SideError::new(Side::Child, e))?;
        }
        Ok(())
    }

    /// Page `j`'s (parent, child) flags; pages are asked in increasing order.
    fn at(&mut self, j: usize) -> (bool, bool) {
        let mut out = (false, false);
        while self.next < self.idx.len() && self.idx[self.next].0 == j {
            let f = self.flags.get(self.next).copied().unwrap_or_default();
            // KPF_KSM counts only where it means merged (6.12.117/118 flag every anon page).
            let ksm = f.ksm() && crate::mem::kpage::ksm_flag_means_merged();
            let nw = ksm || f.thp() || f.compound_head() || f.compound_tail();
            if self.idx[self.next].1 {
                out.1 |= nw;
            } else {
                out.0 |= nw;
            }
            self.next += 1;
        }
        out
    }
}

/// The parts of `base`'s range where a VMA of `now` (sorted) has the same identity.
fn matching(base: &SmapsEntry, now: &[SmapsEntry]) -> Vec<(u64, u64)> {
    now.iter()
        .filter(|v| v.start < base.end && base.start < v.end && same_identity(base, v))
        .map(|v| (v.start.max(base.start), v.end.min(base.end)))
        .collect()
}

/// The intersection of two sorted lists of disjoint ranges.
fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let (lo, hi) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if lo < hi {
            out.push((lo, hi));
        }
        if a[i].1 <= b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// A cursor over sorted disjoint ranges, asked in increasing address order. `None` ranges:
/// every address is inside (the check is not needed).
struct Ranges<'a> {
    ranges: Option<&'a [(u64, u64)]>,
    next: usize,
}

impl<'a> Ranges<'a> {
    fn new(ranges: Option<&'a [(u64, u64)]>) -> Self {
        Ranges { ranges, next: 0 }
    }

    fn contains(&mut self, a: u64) -> bool {
        let Some(r) = self.ranges else {
            return true;
        };
        while self.next < r.len() && r[self.next].1 <= a {
            self.next += 1;
        }
        r.get(self.next).is_some_and(|&(lo, _)| lo <= a)
    }
}

/// What a sample needs besides the baseline.
#[derive(Debug)]
pub struct SampleInput<'a> {
    /// The parent's pagemap.
    pub parent: &'a Pagemap,
    /// The child's pagemap.
    pub child: &'a Pagemap,
    /// PFNs are real.
    pub pfn_visible: bool,
    /// kpageflags, when readable.
    pub kpage: Option<&'a Kpage>,
    /// The zero frames (root).
    pub zero: &'a ZeroPfns,
    /// Without PFNs: "neither side has bit 56" proves "mapped by both" (see
    /// [`Evidence::family_rule`]).
    pub family_rule: bool,
    /// Release records of (parent, child) were lost since the fork: a side's new frame may
    /// be a release it made, so none is called its copy (see [`Evidence::releases_lost`]).
    pub releases_lost: (bool, bool),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_intersection_keeps_only_what_both_sides_still_map() {
        assert_eq!(
            intersect(&[(0, 10), (20, 30)], &[(5, 25), (28, 40)]),
            [(5, 10), (20, 25), (28, 30)]
        );
        let mut r = Ranges::new(Some(&[(5, 10), (20, 25)]));
        let inside: Vec<u64> = (0..30).filter(|&a| r.contains(a)).collect();
        assert_eq!(inside, [5, 6, 7, 8, 9, 20, 21, 22, 23, 24]);
    }

    fn vma(start: u64, end: u64, inode: u64, offset: u64, path: &str) -> SmapsEntry {
        SmapsEntry {
            start,
            end,
            perms: "rw-p".into(),
            offset,
            dev: "fe:01".into(),
            inode,
            pathname: path.into(),
            ..SmapsEntry::default()
        }
    }

    #[test]
    fn another_file_mapped_over_part_of_a_vma_is_no_longer_the_same_mapping() {
        let base = vma(0x1000, 0x9000, 7, 0, "/a");
        let now = [
            vma(0x1000, 0x3000, 7, 0, "/a"),
            vma(0x3000, 0x5000, 8, 0, "/b"),
            vma(0x5000, 0x9000, 7, 0x4000, "/a"),
        ];
        assert_eq!(matching(&base, &now), [(0x1000, 0x3000), (0x5000, 0x9000)]);
        // The same file at another offset there is another page of it.
        let moved = [vma(0x1000, 0x9000, 7, 0x1000, "/a")];
        assert!(matching(&base, &moved).is_empty());
    }
}
