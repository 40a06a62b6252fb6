//! The evidence of one scenario as the pipeline observed it, in the types both sampling
//! (`observe.rs`) and judging (`judge/`) speak: smaps figures, PFN-keyed maps, what was seen of
//! each process. Below both, so neither needs the other.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::classify::PageWitness;
use super::subject::ExitInfo;

/// Bytes of each page's head the pipeline reads back (stamp + marker + the one-byte write).
pub const HEAD: usize = 64;

/// smaps figures of the arena's VMAs in one process (summed over every VMA in the range).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SmapsFigures {
    /// Rss.
    pub rss_kb: u64,
    /// Pss.
    pub pss_kb: u64,
    /// Shared_Clean.
    pub shared_clean_kb: u64,
    /// Shared_Dirty.
    pub shared_dirty_kb: u64,
    /// Private_Clean.
    pub private_clean_kb: u64,
    /// Private_Dirty.
    pub private_dirty_kb: u64,
    /// AnonHugePages.
    pub anon_huge_kb: u64,
    /// Shared_Hugetlb (hugetlb pages are not in Rss).
    #[serde(default)]
    pub shared_hugetlb_kb: u64,
    /// Private_Hugetlb.
    #[serde(default)]
    pub private_hugetlb_kb: u64,
    /// Swap.
    #[serde(default)]
    pub swap_kb: u64,
    /// LazyFree (MADV_FREE pages not yet reclaimed or redirtied).
    #[serde(default)]
    pub lazy_free_kb: u64,
}

impl SmapsFigures {
    /// Shared_Clean + Shared_Dirty (+ Shared_Hugetlb).
    pub fn shared_kb(&self) -> u64 {
        self.shared_clean_kb + self.shared_dirty_kb + self.shared_hugetlb_kb
    }
    /// Private_Clean + Private_Dirty (+ Private_Hugetlb).
    pub fn private_kb(&self) -> u64 {
        self.private_clean_kb + self.private_dirty_kb + self.private_hugetlb_kb
    }
}

/// One process as observed.
#[derive(Debug, Clone, Default)]
pub struct ProcessSeen {
    /// `[]` parent, `[i]` child i, `[i, 0]` its grandchild.
    pub path: Vec<usize>,
    /// `parent`, `child`, `child-2`, ...
    pub role: String,
    /// Its pid.
    pub pid: i32,
    /// It reported ready and was sampled (the parent always is).
    pub sampled: bool,
    /// How it ended (None for the parent, or when not ours to see).
    pub exit: Option<ExitInfo>,
    /// Whether we see its exit at all (a grandchild is reaped by its own parent).
    pub exit_visible: bool,
    /// smaps of its VMAs in the arena range, if it has any.
    pub smaps: Option<SmapsFigures>,
    /// Every VMA of the range is a shared mapping (VmFlags `sh`).
    pub shared_vma: bool,
    /// One page witness per arena page (empty when not sampled).
    pub pages: Vec<PageWitness>,
    /// The first [`HEAD`] bytes of every page, when they could be read.
    pub heads: Option<Vec<u8>>,
    /// Pages whose PFN changed while the content was read; None when the page tables could
    /// not be read again afterwards (then nothing says the read left them alone).
    pub moved_by_reading: Option<u64>,
}

/// Everything the pipeline observed for one scenario.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Base page size in bytes.
    pub page_size: usize,
    /// Pages of a PMD-sized THP.
    pub pmd_pages: usize,
    /// PFNs are visible (CAP_SYS_ADMIN).
    pub pfn_visible: bool,
    /// kpagecount and kpageflags were read.
    pub kpage_readable: bool,
    /// Soft-dirty bits were cleared at the fork, so bit 55 says who wrote.
    pub soft_dirty_tracked: bool,
    /// The parent's witnesses before the fork.
    pub before: Vec<PageWitness>,
    /// Every process, the parent first.
    pub procs: Vec<ProcessSeen>,
    /// Bytes read back from the pipe the scenario vmspliced into, if any.
    pub pipe: Option<Vec<u8>>,
    /// The bytes the pipe must yield (the pre-fork content of the spliced pages).
    pub pipe_expected: Option<Vec<u8>>,
    /// seed-09c: the parent's and the child's dumps.
    pub dumps: Option<(String, String)>,
    /// Why the memory kind could not be proven to have formed (e.g. no kpageflags), if so.
    pub unproven_setup: Option<String>,
    /// Notes the pipeline made (e.g. a failed soft-dirty clear).
    pub pipeline_notes: Vec<String>,
}

/// A hasher for PFN keys: one multiply (Fibonacci hashing). PFNs are not attacker-chosen, and
/// SipHash showed up as the top cost of judging a 1 GiB arena.
#[derive(Debug, Default, Clone, Copy)]
pub struct PfnHasher(u64);

impl std::hash::Hasher for PfnHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by PFN.
pub type PfnMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<PfnHasher>>;
