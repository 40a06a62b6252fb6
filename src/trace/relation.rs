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
//! a read-only page-cache page can never be copied. Pages mapped by neither side at the fork
//! are outside the comparison (they share nothing). VMAs larger than [`SPARSE_VMA`] are first
//! scanned with PAGEMAP_SCAN for present pages, so a sparse reservation of terabytes costs
//! what its populated parts cost.
//!
//! Memory: 9 bytes per baseline page (a frame and a history byte) plus 2 bits of release
//! marks, i.e. 0.23% of the memory compared.

use std::io;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::classify::{self, Class, Counts, Evidence, Hist, PageState, Seen};
use crate::inspect::vma::VmaKind;
use crate::inspect::zero::ZeroPfns;
use crate::mem::kpage::Kpage;
use crate::mem::pagemap::{Pagemap, PagemapEntry};
use crate::mem::smaps::SmapsEntry;

/// A VMA larger than this, and larger than twice the process's resident memory, is scanned
/// for present pages (PAGEMAP_SCAN) before its pagemap is read; others are read whole. A scan
/// costs about one read, so scanning dense memory would double the parent's pause, while
/// reading a sparse reservation of terabytes whole would take seconds and gigabytes.
pub const SPARSE_VMA: u64 = 64 << 20;
/// Pagemap entries per read.
const CHUNK: usize = 1 << 16;

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
    segs: Vec<Seg>,
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
}

/// Read the parent's VMAs and pagemap over the pages that can take part in copy-on-write.
///
/// # Errors
/// When `/proc/<pid>/maps` or the pagemap cannot be read (process gone, no permission).
pub fn read_parent(pid: i32, pm: &Pagemap) -> io::Result<ParentSnapshot> {
    let ps = crate::kernel::page_size() as u64;
    let maps = crate::mem::smaps::vma_bounds(pid)?;
    let mut vmas = Vec::new();
    let mut segs = Vec::new();
    let mut first = 0usize;
    // Resident memory from statm (field 2, in pages): cheap, no page walk.
    let resident = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(u64::MAX / 4, |p| p * ps);
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
        let runs: Vec<(u64, u64)> = if sparse(v.end - v.start) {
            present_runs(pm, v.start, v.end)?
        } else {
            vec![(v.start, v.end)]
        };
        for (a, b) in runs {
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
    for s in &segs {
        read_seg(pm, s, &mut entries[s.first..s.first + s.pages])?;
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
        segs,
        entries,
        read,
    })
}

/// Present (or swapped) runs of `[start, end)`, from PAGEMAP_SCAN (or chunked reads).
fn present_runs(pm: &Pagemap, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    use crate::mem::scan::{PAGE_IS_PRESENT, PAGE_IS_SWAPPED};
    let s = crate::mem::scan::scan(pm, start, end, false)?;
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in s
        .regions
        .iter()
        .filter(|r| r.categories & (PAGE_IS_PRESENT | PAGE_IS_SWAPPED) != 0)
    {
        match out.last_mut() {
            Some(last) if last.1 == r.start => last.1 = r.end,
            _ => out.push((r.start, r.end)),
        }
    }
    Ok(out)
}

fn read_seg(pm: &Pagemap, s: &Seg, out: &mut [u64]) -> io::Result<()> {
    let ps = crate::kernel::page_size() as u64;
    for (i, chunk) in out.chunks_mut(CHUNK).enumerate() {
        pm.read_into(s.start + (i * CHUNK) as u64 * ps, chunk)?;
    }
    Ok(())
}

fn seen(e: u64) -> Seen {
    let e = PagemapEntry(e);
    Seen {
        present: e.present(),
        pfn: e.pfn(),
        exclusive: e.exclusive(),
        file: e.file_or_shared(),
        zero: false,
        nonwrite: false,
    }
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
    segs: Vec<Seg>,
    frames: Vec<u64>,
    hist: Vec<u8>,
    released_by_parent: Bits,
    released_by_child: Bits,
    /// Pages with a frame at the fork (on either side).
    tracked: u64,
    /// Pages the child owned before its first instruction.
    copied_at_fork: u64,
}

impl Baseline {
    /// Phase 2: read the child's pagemap over the parent's snapshot (the child has not run)
    /// and build the per-page state.
    ///
    /// # Errors
    /// When the child's pagemap cannot be read.
    pub fn complete(
        snap: ParentSnapshot,
        child: &Pagemap,
        pfn_visible: bool,
    ) -> io::Result<Baseline> {
        let n = snap.entries.len();
        let mut frames = vec![0u64; n];
        let mut hist = vec![0u8; n];
        let mut buf = vec![0u64; CHUNK.min(n.max(1))];
        let ps = crate::kernel::page_size() as u64;
        let mut tracked = 0;
        let mut copied_at_fork = 0;
        for s in &snap.segs {
            let anon_only = snap.vmas[s.vma].anon_only;
            let mut done = 0;
            while done < s.pages {
                let k = (s.pages - done).min(buf.len());
                child.read_into(s.start + done as u64 * ps, &mut buf[..k])?;
                for (j, &ce) in buf[..k].iter().enumerate() {
                    let i = s.first + done + j;
                    let mut c = seen(ce);
                    if anon_only && c.file {
                        c = Seen::default();
                    }
                    let st = classify::baseline(seen(snap.entries[i]), c, pfn_visible);
                    frames[i] = st.frame;
                    hist[i] = st.hist as u8;
                    if st.hist != Hist::Unborn {
                        tracked += 1;
                    }
                    if st.hist == Hist::CopiedAtFork {
                        copied_at_fork += 1;
                    }
                }
                done += k;
            }
        }
        Ok(Baseline {
            vmas: snap.vmas,
            segs: snap.segs,
            frames,
            hist,
            released_by_parent: Bits::new(n),
            released_by_child: Bits::new(n),
            tracked,
            copied_at_fork,
        })
    }

    /// Pages with a frame at the fork.
    pub fn tracked_pages(&self) -> u64 {
        self.tracked
    }

    /// Pages the child owned before its first instruction (its TID page, pinned pages).
    pub fn copied_at_fork(&self) -> u64 {
        self.copied_at_fork
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

    /// Classify every baseline page from both sides' pagemaps now; per-VMA counts follow the
    /// baseline's VMAs.
    ///
    /// # Errors
    /// When a pagemap cannot be read (a side is gone).
    pub fn sample(&mut self, inp: &SampleInput<'_>) -> io::Result<(Counts, Vec<Counts>)> {
        let ps = crate::kernel::page_size() as u64;
        let mut per_vma = vec![Counts::default(); self.vmas.len()];
        let max = self.segs.iter().map(|s| s.pages).max().unwrap_or(0);
        let mut bp = vec![0u64; CHUNK.min(max.max(1))];
        let mut bc = vec![0u64; bp.len()];
        let mut cands: Vec<u64> = Vec::new();
        let mut cand_idx: Vec<(usize, bool)> = Vec::new();
        let segs = self.segs.clone();
        for s in &segs {
            let anon_only = self.vmas[s.vma].anon_only;
            let mut done = 0;
            while done < s.pages {
                let k = (s.pages - done).min(bp.len());
                let addr = s.start + done as u64 * ps;
                inp.parent.read_into(addr, &mut bp[..k])?;
                inp.child.read_into(addr, &mut bc[..k])?;
                let (cat_p, cat_c) = if inp.pfn_visible {
                    (None, None)
                } else {
                    (
                        scan_categories(inp.parent, addr, k),
                        scan_categories(inp.child, addr, k),
                    )
                };
                // Which new frames need kpageflags (KSM, THP): only those that just left the
                // shared frame; everything else is decided by frame numbers alone.
                let mut flags: Vec<crate::mem::kpage::KpageFlags> = Vec::new();
                cands.clear();
                cand_idx.clear();
                if inp.pfn_visible
                    && let Some(kp) = inp.kpage
                {
                    for j in 0..k {
                        let i = s.first + done + j;
                        if Hist::from_u8(self.hist[i]) != Hist::Shared {
                            continue;
                        }
                        let (p, c) = (PagemapEntry(bp[j]), PagemapEntry(bc[j]));
                        if !(p.present() && c.present()) || p.pfn() == c.pfn() {
                            continue;
                        }
                        for (e, is_child) in [(p, false), (c, true)] {
                            if e.pfn() != self.frames[i] && !e.file_or_shared() {
                                cands.push(e.pfn());
                                cand_idx.push((j, is_child));
                            }
                        }
                    }
                    if !cands.is_empty() {
                        flags = kp.flags(&cands)?;
                    }
                }
                let mut next_cand = 0;
                for j in 0..k {
                    let i = s.first + done + j;
                    let mut p = seen(bp[j]);
                    let mut c = seen(bc[j]);
                    if anon_only {
                        // Read-only file VMA: its page-cache pages are outside the comparison.
                        if p.file {
                            p = Seen::default();
                        }
                        if c.file {
                            c = Seen::default();
                        }
                    }
                    let mut ev = Evidence {
                        pfn_visible: inp.pfn_visible,
                        pair_is_whole_family: inp.pair_is_whole_family,
                        exclusive_unreliable: false,
                    };
                    if inp.pfn_visible {
                        p.zero = p.present && inp.zero.contains(p.pfn);
                        c.zero = c.present && inp.zero.contains(c.pfn);
                        p.nonwrite = p.present && p.file && p.pfn != self.frames[i];
                        c.nonwrite = c.present && c.file && c.pfn != self.frames[i];
                        while next_cand < cand_idx.len() && cand_idx[next_cand].0 == j {
                            let f = flags.get(next_cand).copied().unwrap_or_default();
                            let nw = f.ksm() || f.thp() || f.compound_head() || f.compound_tail();
                            if cand_idx[next_cand].1 {
                                c.nonwrite |= nw;
                            } else {
                                p.nonwrite |= nw;
                            }
                            next_cand += 1;
                        }
                    } else {
                        use crate::mem::scan::{PAGE_IS_HUGE, PAGE_IS_PFNZERO};
                        let cp = cat_p.as_ref().and_then(|v| v.get(j)).copied();
                        let cc = cat_c.as_ref().and_then(|v| v.get(j)).copied();
                        p.zero = cp.is_some_and(|x| x & PAGE_IS_PFNZERO != 0);
                        c.zero = cc.is_some_and(|x| x & PAGE_IS_PFNZERO != 0);
                        // Without the scan we cannot rule out a PMD-mapped THP, whose
                        // exclusive bit follows the head page on some kernels.
                        ev.exclusive_unreliable = match (cp, cc) {
                            (Some(a), Some(b)) => (a | b) & PAGE_IS_HUGE != 0,
                            _ => true,
                        };
                    }
                    let mut st = PageState {
                        frame: self.frames[i],
                        hist: Hist::from_u8(self.hist[i]),
                    };
                    if st.hist == Hist::Unborn {
                        continue;
                    }
                    let class = if !inp.pfn_visible && p.zero && c.zero {
                        Class::Zero
                    } else {
                        let Some(class) = classify::classify(
                            &mut st,
                            p,
                            c,
                            self.released_by_parent.get(i),
                            self.released_by_child.get(i),
                            ev,
                        ) else {
                            continue;
                        };
                        class
                    };
                    self.frames[i] = st.frame;
                    self.hist[i] = st.hist as u8;
                    per_vma[s.vma].add(class);
                }
                done += k;
            }
        }
        let mut total = Counts::default();
        for v in &per_vma {
            total.merge(v);
        }
        debug_assert_eq!(
            total.sum_of_classes(),
            total.total,
            "page classes must partition the baseline"
        );
        Ok((total, per_vma))
    }
}

/// PAGEMAP_SCAN categories per page of `[addr, addr + pages)` (without PFNs: the zero page
/// and PMD mappings are visible only this way). `None` when the ioctl is missing.
fn scan_categories(pm: &Pagemap, addr: u64, pages: usize) -> Option<Vec<u64>> {
    if !crate::mem::scan::available() {
        return None;
    }
    let ps = crate::kernel::page_size() as u64;
    crate::mem::scan::scan(pm, addr, addr + pages as u64 * ps, false)
        .ok()
        .map(|s| s.per_page())
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
    /// No third process can map these frames (without PFNs, "mapped twice" then means "by both").
    pub pair_is_whole_family: bool,
}
