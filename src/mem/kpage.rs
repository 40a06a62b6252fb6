//! `/proc/kpagecount` and `/proc/kpageflags`: one 64-bit value per physical frame, indexed by
//! PFN. Readable only with CAP_SYS_ADMIN (and only useful with real PFNs).
//!
//! Reads are batched: the requested PFNs are sorted, grouped into runs (PFNs closer than
//! [`RUN_GAP`] frames share one `pread`), and each run is read once. Reading both files for
//! many scattered frames is the dominant cost of `cowscope pages` as root (see
//! ARCHITECTURE.md); [`Kpage::counts_and_flags`] reads the two files on two threads.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Two PFNs at most this many frames apart are read by one `pread`. Each merge decision is
/// local: bridging a gap of `g` frames costs `g` frames of kernel work (~90 ns each on the
/// development VM, Linux 6.18: `snapshot_page` + one `put_user` per frame), splitting costs
/// one more `pread` (~0.7 µs). So the break-even gap is ~8 whatever the physical layout.
/// Measured over 262,144 scattered PFNs of a populated 1 GiB range: gap 4 -> 101 ms,
/// gap 16 -> 104 ms, gap 128 -> 337 ms, gap 512 -> 390 ms per file.
pub const RUN_GAP: u64 = 8;
/// Longest single `pread`, in entries (bounds the scratch buffer).
const MAX_RUN: u64 = 1 << 16;

/// Stable kpageflags bit numbers from `include/uapi/linux/kernel-page-flags.h`.
pub mod bits {
    /// Page is locked.
    pub const LOCKED: u32 = 0;
    /// IO error (now unused).
    pub const ERROR: u32 = 1;
    /// Recently referenced.
    pub const REFERENCED: u32 = 2;
    /// Contents are valid.
    pub const UPTODATE: u32 = 3;
    /// Dirty.
    pub const DIRTY: u32 = 4;
    /// On an LRU list.
    pub const LRU: u32 = 5;
    /// On the active LRU list.
    pub const ACTIVE: u32 = 6;
    /// Slab page.
    pub const SLAB: u32 = 7;
    /// Under writeback.
    pub const WRITEBACK: u32 = 8;
    /// To be reclaimed.
    pub const RECLAIM: u32 = 9;
    /// Free in the buddy allocator.
    pub const BUDDY: u32 = 10;
    /// Memory-mapped.
    pub const MMAP: u32 = 11;
    /// Anonymous.
    pub const ANON: u32 = 12;
    /// In the swap cache.
    pub const SWAPCACHE: u32 = 13;
    /// Swap-backed.
    pub const SWAPBACKED: u32 = 14;
    /// First page of a compound page.
    pub const COMPOUND_HEAD: u32 = 15;
    /// Non-first page of a compound page.
    pub const COMPOUND_TAIL: u32 = 16;
    /// HugeTLB page.
    pub const HUGE: u32 = 17;
    /// Unevictable.
    pub const UNEVICTABLE: u32 = 18;
    /// Hardware-poisoned.
    pub const HWPOISON: u32 = 19;
    /// No page frame exists at this PFN.
    pub const NOPAGE: u32 = 20;
    /// KSM-merged.
    pub const KSM: u32 = 21;
    /// Part of a transparent huge page.
    pub const THP: u32 = 22;
    /// Logically offline (was BALLOON before 4.17).
    pub const OFFLINE: u32 = 23;
    /// The zero page (or huge zero page).
    pub const ZERO_PAGE: u32 = 24;
    /// Idle (page_idle tracking).
    pub const IDLE: u32 = 25;
    /// A page-table page.
    pub const PGTABLE: u32 = 26;
}

const NAMES: [&str; 27] = [
    "locked",
    "error",
    "referenced",
    "uptodate",
    "dirty",
    "lru",
    "active",
    "slab",
    "writeback",
    "reclaim",
    "buddy",
    "mmap",
    "anon",
    "swapcache",
    "swapbacked",
    "compound_head",
    "compound_tail",
    "huge",
    "unevictable",
    "hwpoison",
    "nopage",
    "ksm",
    "thp",
    "offline",
    "zero_page",
    "idle",
    "pgtable",
];

/// Names of the kernel-hacking bits 32-39 ("subject to change", reported for completeness).
const HACK_NAMES: [&str; 8] = [
    "reserved",
    "mlocked",
    "mappedtodisk",
    "private",
    "private_2",
    "owner_private",
    "arch",
    "uncached",
];

/// One frame's kpageflags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct KpageFlags(pub u64);

impl KpageFlags {
    /// Whether bit `b` is set.
    #[inline(always)]
    pub fn has(self, b: u32) -> bool {
        self.0 & (1u64 << b) != 0
    }
    /// Anonymous page.
    pub fn anon(self) -> bool {
        self.has(bits::ANON)
    }
    /// Part of a transparent huge page.
    pub fn thp(self) -> bool {
        self.has(bits::THP)
    }
    /// Head page of a compound page.
    pub fn compound_head(self) -> bool {
        self.has(bits::COMPOUND_HEAD)
    }
    /// Tail page of a compound page.
    pub fn compound_tail(self) -> bool {
        self.has(bits::COMPOUND_TAIL)
    }
    /// KSM-merged page.
    pub fn ksm(self) -> bool {
        self.has(bits::KSM)
    }
    /// The shared zero page (or huge zero page).
    pub fn zero_page(self) -> bool {
        self.has(bits::ZERO_PAGE)
    }
    /// HugeTLB page.
    pub fn huge(self) -> bool {
        self.has(bits::HUGE)
    }
    /// On an LRU list.
    pub fn lru(self) -> bool {
        self.has(bits::LRU)
    }
    /// Dirty.
    pub fn dirty(self) -> bool {
        self.has(bits::DIRTY)
    }
    /// Memory-mapped.
    pub fn mmap(self) -> bool {
        self.has(bits::MMAP)
    }
    /// Swap-backed.
    pub fn swapbacked(self) -> bool {
        self.has(bits::SWAPBACKED)
    }
    /// No frame at this PFN.
    pub fn nopage(self) -> bool {
        self.has(bits::NOPAGE)
    }
    /// Names of every set bit, lowest first; bits without a stable name appear as `bit<N>`.
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        self.for_each_name(|n| v.push(n));
        v
    }
    /// The set bits' names joined with `|` (`"none"` when no bit is set): a histogram key.
    pub fn key(self) -> String {
        let mut s = String::new();
        self.for_each_name(|n| {
            if !s.is_empty() {
                s.push('|');
            }
            s.push_str(n);
        });
        if s.is_empty() {
            s.push_str("none");
        }
        s
    }
    fn for_each_name(self, mut f: impl FnMut(&'static str)) {
        for (b, name) in BITN.iter().enumerate() {
            if self.0 & (1u64 << b) == 0 {
                continue;
            }
            if b < NAMES.len() {
                f(NAMES[b]);
            } else if (32..40).contains(&b) {
                f(HACK_NAMES[b - 32]);
            } else {
                f(name);
            }
        }
    }
}

/// `bit<N>` for every bit, for flags without a stable name.
const BITN: [&str; 64] = [
    "bit0", "bit1", "bit2", "bit3", "bit4", "bit5", "bit6", "bit7", "bit8", "bit9", "bit10",
    "bit11", "bit12", "bit13", "bit14", "bit15", "bit16", "bit17", "bit18", "bit19", "bit20",
    "bit21", "bit22", "bit23", "bit24", "bit25", "bit26", "bit27", "bit28", "bit29", "bit30",
    "bit31", "bit32", "bit33", "bit34", "bit35", "bit36", "bit37", "bit38", "bit39", "bit40",
    "bit41", "bit42", "bit43", "bit44", "bit45", "bit46", "bit47", "bit48", "bit49", "bit50",
    "bit51", "bit52", "bit53", "bit54", "bit55", "bit56", "bit57", "bit58", "bit59", "bit60",
    "bit61", "bit62", "bit63",
];

/// Whether this kernel's KPF_KSM bit means "KSM-merged": probed once on a private anonymous
/// page of our own that KSM was never asked to merge, whose bit must be clear. 6.12.117/118
/// set it on every anonymous page (`stable_page_flags()` tests `mapping &
/// FOLIO_MAPPING_KSM`, true for any anonymous folio, since commit dee3d0bef2b0 "proc: rewrite
/// stable_page_flags()"; fixed by "fs/proc: fix KPF_KSM reported for all anonymous pages"):
/// there the bit proves nothing. True when the probe cannot run (PFNs hidden: the flag is then
/// never read).
pub fn ksm_flag_means_merged() -> bool {
    static PROBE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| {
        let ps = crate::kernel::page_size();
        let mut buf = vec![0u8; 2 * ps];
        let addr = (buf.as_ptr() as usize).next_multiple_of(ps);
        let off = addr - buf.as_ptr() as usize;
        // black_box: the write must happen, so the page is present and anonymous.
        *std::hint::black_box(&mut buf[off]) = 1;
        let flag = super::pagemap::Pagemap::open(std::process::id() as i32)
            .and_then(|pm| pm.read(addr as u64, (addr + ps) as u64))
            .ok()
            .and_then(|v| v.first().copied())
            .filter(|e| e.present() && e.pfn() != 0)
            .and_then(|e| Kpage::open().ok()?.flags(&[e.pfn()]).ok()?.first().copied());
        std::hint::black_box(&buf);
        flag.is_none_or(|f| !f.ksm())
    })
}

/// Open `/proc/kpagecount` and `/proc/kpageflags`.
#[derive(Debug)]
pub struct Kpage {
    count: File,
    flags: File,
}

impl Kpage {
    /// Open both files.
    ///
    /// # Errors
    /// `PermissionDenied` without CAP_SYS_ADMIN; `NotFound` without CONFIG_PROC_PAGE_MONITOR.
    pub fn open() -> io::Result<Kpage> {
        Ok(Kpage {
            count: File::open("/proc/kpagecount")?,
            flags: File::open("/proc/kpageflags")?,
        })
    }

    /// How many page tables map each frame (kpagecount), in the order of `pfns`.
    ///
    /// # Errors
    /// Kernel read errors; `UnexpectedEof` for a PFN beyond the last frame.
    pub fn counts(&self, pfns: &[u64]) -> io::Result<Vec<u64>> {
        read_indexed(&self.count, pfns)
    }

    /// The kpageflags of each frame, in the order of `pfns`.
    ///
    /// # Errors
    /// As for [`Kpage::counts`].
    pub fn flags(&self, pfns: &[u64]) -> io::Result<Vec<KpageFlags>> {
        let raw = read_indexed(&self.flags, pfns)?;
        Ok(raw.into_iter().map(KpageFlags).collect())
    }
}

impl Kpage {
    /// [`Kpage::counts`] and [`Kpage::flags`] together, the two files read concurrently on
    /// two threads when there are enough frames to pay for a thread.
    ///
    /// # Errors
    /// As for [`Kpage::counts`].
    pub fn counts_and_flags(&self, pfns: &[u64]) -> io::Result<(Vec<u64>, Vec<KpageFlags>)> {
        let order = sorted_order(pfns);
        let to_flags = |v: Vec<u64>| v.into_iter().map(KpageFlags).collect::<Vec<_>>();
        if pfns.len() < 4096 {
            let c = read_sorted(&self.count, &order)?;
            return Ok((c, to_flags(read_sorted(&self.flags, &order)?)));
        }
        std::thread::scope(|s| {
            let counts = s.spawn(|| read_sorted(&self.count, &order));
            let flags = read_sorted(&self.flags, &order);
            let counts = counts
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("kpagecount reader panicked")));
            Ok((counts?, to_flags(flags?)))
        })
    }
}

/// `(pfn, input index)` sorted by PFN.
fn sorted_order(pfns: &[u64]) -> Vec<(u64, usize)> {
    // Sort (pfn, index) packed into one u64 when both fit in 32 bits (16 TiB of RAM, 4 Gi
    // entries): sorting plain integers is several times faster than sorting pairs.
    let packed = pfns.len() <= u32::MAX as usize && pfns.iter().all(|&p| p <= u32::MAX as u64);
    if packed {
        let mut keys: Vec<u64> = pfns
            .iter()
            .enumerate()
            .map(|(i, &p)| (p << 32) | i as u64)
            .collect();
        keys.sort_unstable();
        keys.into_iter()
            .map(|k| (k >> 32, (k & 0xffff_ffff) as usize))
            .collect()
    } else {
        let mut o: Vec<(u64, usize)> = pfns.iter().copied().zip(0..).collect();
        o.sort_unstable();
        o
    }
}

/// Read the entries at `pfns` from a PFN-indexed file, sorting once and reading each run of
/// nearby PFNs with one `pread`.
fn read_indexed(file: &File, pfns: &[u64]) -> io::Result<Vec<u64>> {
    read_sorted(file, &sorted_order(pfns))
}

/// Read along `order` (from [`sorted_order`]), one `pread` per run of nearby PFNs; the
/// result is indexed like the original input.
fn read_sorted(file: &File, order: &[(u64, usize)]) -> io::Result<Vec<u64>> {
    let mut out = vec![0u64; order.len()];
    let mut scratch: Vec<u64> = Vec::new();
    let mut run_start = 0usize;
    while run_start < order.len() {
        let first = order[run_start].0;
        let mut last = first;
        let mut run_end = run_start + 1;
        while run_end < order.len() {
            let p = order[run_end].0;
            if p - last > RUN_GAP || p - first >= MAX_RUN {
                break;
            }
            last = p;
            run_end += 1;
        }
        let n = (last - first + 1) as usize;
        scratch.clear();
        scratch.resize(n, 0);
        pread_u64s(file, first, &mut scratch)?;
        for &(p, i) in &order[run_start..run_end] {
            out[i] = scratch[(p - first) as usize];
        }
        run_start = run_end;
    }
    Ok(out)
}

fn pread_u64s(file: &File, index: u64, out: &mut [u64]) -> io::Result<()> {
    let len = out.len() * 8;
    // SAFETY: `out` is a valid, exclusively borrowed region of `len` bytes; u64 accepts any
    // bit pattern and u8 has alignment 1; the view does not outlive this function.
    let bytes = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), len) };
    let offset = index
        .checked_mul(8)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "PFN out of range"))?;
    file.read_exact_at(bytes, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_uapi_bit_numbers() {
        let f = KpageFlags((1 << bits::ANON) | (1 << bits::THP) | (1 << bits::COMPOUND_HEAD));
        assert_eq!(f.names(), vec!["anon", "compound_head", "thp"]);
        assert!(f.anon() && f.thp() && f.compound_head() && !f.compound_tail());
        assert_eq!(KpageFlags(1 << bits::ZERO_PAGE).names(), vec!["zero_page"]);
        assert_eq!(KpageFlags(1 << bits::KSM).key(), "ksm");
        assert_eq!(KpageFlags(0).key(), "none");
        assert_eq!(KpageFlags(1 << 33).names(), vec!["mlocked"]);
        assert_eq!(KpageFlags(1 << 50).names(), vec!["bit50"]);
    }
}
