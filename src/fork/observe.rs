//! Sampling: the evidence of every process of a scenario, taken while all of them are alive.
//! Page tables first (pagemap, kpagecount, kpageflags, smaps); content last (reading bytes can
//! fault pages in).

use std::collections::HashMap;
use std::io::IoSliceMut;

use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

use super::classify::PageWitness;
use crate::mem::kpage::Kpage;
use crate::mem::pagemap::{Pagemap, PagemapEntry};
use crate::mem::smaps::{self, SmapsEntry};

/// One process's page-table evidence for the arena range.
#[derive(Debug, Clone)]
pub struct ProcessSample {
    /// The process.
    pub pid: i32,
    /// Raw pagemap entries, one per page.
    pub entries: Vec<PagemapEntry>,
    /// The smaps entry of the VMA at the arena's base, if the process has one.
    pub vma: Option<SmapsEntry>,
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
    // A missing VMA is evidence (DONTFORK), not an error.
    let vma = smaps::vma_containing(pid, base)
        .ok()
        .filter(|v| v.start <= base && base < v.end);
    Ok(ProcessSample { pid, entries, vma })
}

/// kpagecount and kpageflags of every distinct PFN in `samples`, when the kernel lets us read
/// them; empty maps otherwise.
pub fn kpage_facts(
    samples: &[&ProcessSample],
    visible: bool,
) -> (HashMap<u64, u64>, HashMap<u64, (bool, bool)>) {
    let mut counts = HashMap::new();
    let mut flags = HashMap::new();
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
    if let Ok(c) = kp.counts(&pfns) {
        counts.extend(pfns.iter().copied().zip(c));
    }
    if let Ok(f) = kp.flags(&pfns) {
        flags.extend(
            pfns.iter()
                .copied()
                .zip(f.into_iter().map(|f| (f.zero_page(), f.thp()))),
        );
    }
    (counts, flags)
}

/// The witness of page `i` of a sample.
pub fn witness(
    s: &ProcessSample,
    i: usize,
    pfn_visible: bool,
    counts: &HashMap<u64, u64>,
    flags: &HashMap<u64, (bool, bool)>,
) -> PageWitness {
    let Some(e) = s.entries.get(i).copied() else {
        return PageWitness::default();
    };
    let pfn = (e.present() && pfn_visible && e.pfn() != 0).then(|| e.pfn());
    let fl = pfn.and_then(|p| flags.get(&p).copied());
    PageWitness {
        present: e.present(),
        pfn,
        exclusive: e.exclusive(),
        file_or_shared: e.file_or_shared(),
        mapcount: pfn.and_then(|p| counts.get(&p).copied()),
        zero_page: fl.map(|f| f.0),
        thp: fl.map(|f| f.1),
        pmd_mapped: s.vma.as_ref().is_some_and(|v| v.anon_huge_pages_kb > 0),
    }
}

/// Read the first `head` bytes of each of `pages` pages of another process's memory
/// (process_vm_readv, in batches of IOV_MAX). None when the memory cannot be read (no
/// mapping, as under DONTFORK).
pub fn read_heads(
    pid: i32,
    base: u64,
    pages: usize,
    page_size: usize,
    head: usize,
) -> Option<Vec<u8>> {
    let head = head.min(page_size);
    let mut out = vec![0u8; pages * head];
    const BATCH: usize = 1024;
    for (chunk_idx, chunk) in out.chunks_mut(BATCH * head).enumerate() {
        let first = chunk_idx * BATCH;
        let n = chunk.len() / head;
        let remote: Vec<RemoteIoVec> = (0..n)
            .map(|k| RemoteIoVec {
                base: base as usize + (first + k) * page_size,
                len: head,
            })
            .collect();
        let mut local = [IoSliceMut::new(chunk)];
        match process_vm_readv(Pid::from_raw(pid), &mut local, &remote) {
            Ok(got) if got == n * head => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Read `len` bytes at `addr` of another process.
pub fn read_bytes(pid: i32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len];
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let mut local = [IoSliceMut::new(&mut out)];
    match process_vm_readv(Pid::from_raw(pid), &mut local, &remote) {
        Ok(got) if got == len => Some(out),
        _ => None,
    }
}
