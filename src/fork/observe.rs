//! Sampling: the evidence of every process of a scenario, taken while all of them are alive.
//! Page tables first (pagemap, kpagecount, kpageflags, smaps); content last (reading bytes can
//! fault pages in).

use super::classify::PageWitness;
use super::evidence::{PfnMap, SmapsFigures};
use crate::mem::kpage::{Kpage, KpageFlags};
use crate::mem::pagemap::{Pagemap, PagemapEntry};
use crate::mem::smaps::{self, SmapsEntry};

/// One process's page-table evidence for the arena range.
#[derive(Debug, Clone)]
pub struct ProcessSample {
    /// The process.
    pub pid: i32,
    /// Raw pagemap entries, one per page.
    pub entries: Vec<PagemapEntry>,
    /// The smaps entries of every VMA that overlaps the arena range (a layout may split the
    /// arena into several: an mremap()ed half, a refilled hole, pages a process unmapped).
    pub vmas: Vec<SmapsEntry>,
    /// Start of the range.
    pub base: u64,
    /// Page size in bytes.
    pub page_size: usize,
}

impl ProcessSample {
    /// Whether a VMA of the process covers page `i`.
    pub fn mapped(&self, i: usize) -> bool {
        let a = self.base + (i * self.page_size) as u64;
        self.vmas.iter().any(|v| v.start <= a && a < v.end)
    }

    /// The VMA covering page `i`.
    pub fn vma_of(&self, i: usize) -> Option<&SmapsEntry> {
        let a = self.base + (i * self.page_size) as u64;
        self.vmas.iter().find(|v| v.start <= a && a < v.end)
    }

    /// smaps figures summed over the range's VMAs (None when the process maps none of it).
    pub fn figures(&self) -> Option<SmapsFigures> {
        if self.vmas.is_empty() {
            return None;
        }
        let mut f = SmapsFigures::default();
        for v in &self.vmas {
            f.rss_kb += v.rss_kb;
            f.pss_kb += v.pss_kb;
            f.shared_clean_kb += v.shared_clean_kb;
            f.shared_dirty_kb += v.shared_dirty_kb;
            f.private_clean_kb += v.private_clean_kb;
            f.private_dirty_kb += v.private_dirty_kb;
            f.anon_huge_kb += v.anon_huge_pages_kb;
            f.shared_hugetlb_kb += v.shared_hugetlb_kb;
            f.private_hugetlb_kb += v.private_hugetlb_kb;
            f.swap_kb += v.swap_kb;
            f.lazy_free_kb += v.lazy_free_kb;
        }
        Some(f)
    }

    /// Every accessible VMA of the range is a shared mapping (VmFlags `sh`).
    pub fn all_shared(&self) -> bool {
        let rw: Vec<_> = self
            .vmas
            .iter()
            .filter(|v| v.perms.starts_with('r'))
            .collect();
        !rw.is_empty() && rw.iter().all(|v| v.has_flag("sh"))
    }
}

/// Read pagemap and smaps of `pid` for `[base, base + pages*page_size)`.
///
/// # Errors
/// When the process's pagemap cannot be opened or read (it vanished, or no permission).
pub fn sample(pid: i32, base: u64, pages: usize, page_size: usize) -> crate::Result<ProcessSample> {
    let end = base + (pages * page_size) as u64;
    let pm = Pagemap::open(pid)
        .map_err(|e| crate::Error::io(format!("opening /proc/{pid}/pagemap"), e))?;
    let entries = pm
        .read(base, end)
        .map_err(|e| crate::Error::io(format!("reading /proc/{pid}/pagemap"), e))?;
    // A missing VMA is evidence (DONTFORK, an unmapped range), not an error.
    let vmas = smaps::all_vmas(pid)
        .map(|all| {
            all.into_iter()
                .filter(|v| v.start < end && v.end > base)
                .collect()
        })
        .unwrap_or_default();
    Ok(ProcessSample {
        pid,
        entries,
        vmas,
        base,
        page_size,
    })
}

/// kpagecount and kpageflags of every distinct PFN in `samples`, when the kernel lets us read
/// them; empty maps otherwise.
pub fn kpage_facts(samples: &[&ProcessSample], visible: bool) -> (PfnMap<u64>, PfnMap<KpageFlags>) {
    let mut counts = PfnMap::default();
    let mut flags = PfnMap::default();
    if !visible {
        return (counts, flags);
    }
    let Ok(kp) = Kpage::open() else {
        return (counts, flags);
    };
    let mut pfns: Vec<u64> = samples
        .iter()
        .flat_map(|s| s.entries.iter())
        .filter(|e| e.present() && e.pfn() != 0)
        .map(|e| e.pfn())
        .collect();
    pfns.sort_unstable();
    pfns.dedup();
    // Both files at once (two threads for large sets): the kpage reads dominate the evidence
    // phase of a large arena.
    if let Ok((c, f)) = kp.counts_and_flags(&pfns) {
        counts.extend(pfns.iter().copied().zip(c));
        flags.extend(pfns.iter().copied().zip(f));
    }
    (counts, flags)
}

/// The witness of page `i` of a sample.
pub fn witness(
    s: &ProcessSample,
    i: usize,
    pfn_visible: bool,
    counts: &PfnMap<u64>,
    flags: &PfnMap<KpageFlags>,
) -> PageWitness {
    let Some(e) = s.entries.get(i).copied() else {
        return PageWitness::default();
    };
    let pfn = (e.present() && pfn_visible && e.pfn() != 0).then(|| e.pfn());
    let fl = pfn.and_then(|p| flags.get(&p).copied());
    let vma = s.vma_of(i);
    PageWitness {
        present: e.present(),
        pfn,
        exclusive: e.exclusive(),
        file_or_shared: e.file_or_shared(),
        mapcount: pfn.and_then(|p| counts.get(&p).copied()),
        zero_page: fl.map(|f| f.zero_page()),
        thp: fl.map(|f| f.thp()),
        // A PMD maps it when its VMA has PMD-mapped anonymous memory and the frame is part of
        // a THP (kpageflags), or, without kpageflags, whenever the VMA has PMD-mapped memory.
        pmd_mapped: vma.is_some_and(|v| v.anon_huge_pages_kb > 0) && fl.is_none_or(|f| f.thp()),
        mapped: vma.is_some(),
        swapped: e.swapped() && !e.present(),
        swap_entry: e.swap_entry().filter(|&x| pfn_visible && x != 0),
        swapcache: fl.map(|f| f.has(crate::mem::kpage::bits::SWAPCACHE)),
        hugetlb: fl.map(|f| f.huge()),
        soft_dirty: e.soft_dirty(),
    }
}

/// Read the first `head` bytes of each of `pages` pages of another process's memory, through
/// `/proc/<pid>/mem` in large chunks. None when the memory cannot be read (no mapping, as under
/// DONTFORK).
///
/// Not `process_vm_readv`: it pins the pages it reads (FOLL_PIN), and since Linux 5.19 pinning a
/// shared anonymous page unshares it, i.e. every page read would be copied, destroying the very
/// sharing being observed. `/proc/<pid>/mem` reads without pinning.
pub fn read_heads(
    pid: i32,
    base: u64,
    pages: usize,
    page_size: usize,
    head: usize,
) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let head = head.min(page_size);
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut out = Vec::with_capacity(pages * head);
    const CHUNK_PAGES: usize = 256;
    let mut buf = vec![0u8; CHUNK_PAGES * page_size];
    let mut first = 0;
    let mut any = false;
    while first < pages {
        let n = (pages - first).min(CHUNK_PAGES);
        let bytes = &mut buf[..n * page_size];
        if f.read_exact_at(bytes, base + (first * page_size) as u64)
            .is_ok()
        {
            any = true;
            for k in 0..n {
                out.extend_from_slice(&bytes[k * page_size..k * page_size + head]);
            }
        } else {
            // Part of the chunk is not mapped (pages a process unmapped, a layout's hole):
            // read page by page, zeroes where nothing is mapped.
            for k in 0..n {
                let mut h = vec![0u8; head];
                any |= f
                    .read_exact_at(&mut h, base + ((first + k) * page_size) as u64)
                    .is_ok();
                out.extend_from_slice(&h);
            }
        }
        first += n;
    }
    any.then_some(out)
}

/// Read `len` bytes at `addr` of another process (through `/proc/<pid>/mem`, see
/// [`read_heads`]).
pub fn read_bytes(pid: i32, addr: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut out = vec![0u8; len];
    f.read_exact_at(&mut out, addr).ok()?;
    Some(out)
}
