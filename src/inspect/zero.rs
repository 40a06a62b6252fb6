//! The frames of the shared zero page and the huge zero page, learnt once from cowscope's own
//! memory, so a pair walk recognises them by PFN without reading kpageflags per frame.
//!
//! A read fault on private anonymous memory maps the zero page (one frame for the whole
//! system on x86-64); with THP enabled for the VMA, a read fault on a PMD-aligned 2 MiB block
//! maps the huge zero page, whose 512 frames pagemap shows as consecutive PFNs. The huge zero
//! page is reference-counted per mm: once cowscope has faulted it in, this process holds it
//! until exit, so its frames cannot change while cowscope runs, and since only one exists at a
//! time, a target that maps the huge zero page maps these frames.

use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mem::pagemap::{Pagemap, PagemapEntry};

/// The zero page frames, where known (PFNs must be visible to learn them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ZeroPfns {
    /// The shared zero page's frame.
    pub small: Option<u64>,
    /// The huge zero page's frames, `[first, end)`.
    pub huge: Option<(u64, u64)>,
}

impl ZeroPfns {
    /// Whether `pfn` is a frame of the zero page or the huge zero page.
    #[inline(always)]
    pub fn contains(&self, pfn: u64) -> bool {
        self.small == Some(pfn) || self.huge.is_some_and(|(a, b)| a <= pfn && pfn < b)
    }
}

/// Learn the zero page frames once (later calls return the cached answer). Without visible
/// PFNs both are `None`.
pub fn learn() -> ZeroPfns {
    static CACHE: OnceLock<ZeroPfns> = OnceLock::new();
    *CACHE.get_or_init(|| {
        if !crate::mem::privilege::detect().pfn_visible {
            return ZeroPfns::default();
        }
        let small = probe(false);
        let huge = probe(true).and_then(|first| {
            let n = crate::kernel::thp_pmd_size_kb()? * 1024 / crate::kernel::page_size() as u64;
            (Some(first) != small).then_some((first, first + n))
        });
        ZeroPfns { small, huge }
    })
}

/// Map fresh private anonymous memory, read one byte (a read fault maps a zero page), and
/// return the frame pagemap shows for it. `huge`: a PMD-aligned block with `MADV_HUGEPAGE`,
/// accepted only if all its pages show consecutive frames (one PMD mapping).
fn probe(huge: bool) -> Option<u64> {
    let ps = crate::kernel::page_size();
    let pmd = if huge {
        crate::kernel::thp_pmd_size_kb()? as usize * 1024
    } else {
        ps
    };
    let len = if huge { 2 * pmd } else { ps };
    let map = crate::kernel::AnonMap::new(len, libc::PROT_READ | libc::PROT_WRITE, 0).ok()?;
    let base = map.addr();
    let addr = if huge {
        base.next_multiple_of(pmd)
    } else {
        base
    };
    if huge {
        // SAFETY: [addr, addr + pmd) lies inside our own mapping (len = 2 * pmd).
        let rc = unsafe { libc::madvise(addr as *mut libc::c_void, pmd, libc::MADV_HUGEPAGE) };
        if rc != 0 {
            return None;
        }
    }
    // SAFETY: addr is inside our readable mapping; a volatile read is a read fault.
    unsafe { std::ptr::read_volatile(addr as *const u8) };
    let pm = Pagemap::open(std::process::id() as i32).ok()?;
    let mut raw = vec![0u64; pmd / ps];
    pm.read_into(addr as u64, &mut raw).ok()?;
    let first = PagemapEntry(raw[0]);
    if !first.present() || first.pfn() == 0 {
        return None;
    }
    let consecutive = raw.iter().enumerate().all(|(i, &e)| {
        let e = PagemapEntry(e);
        e.present() && e.pfn() == first.pfn() + i as u64
    });
    consecutive.then_some(first.pfn())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_checks_both_pages() {
        let z = ZeroPfns {
            small: Some(5),
            huge: Some((512, 1024)),
        };
        assert!(z.contains(5) && z.contains(512) && z.contains(1023));
        assert!(!z.contains(6) && !z.contains(1024) && !z.contains(511));
        assert!(!ZeroPfns::default().contains(0));
    }

    #[test]
    fn root_learns_a_zero_page_frame_that_a_second_read_fault_maps_again() {
        if !crate::mem::privilege::detect().pfn_visible {
            eprintln!("SKIP: PFNs are hidden, the zero page frame cannot be learnt");
            return;
        }
        let z = learn();
        let small = z.small.expect("a read fault maps the zero page");
        // From first principles: another fresh mapping read-faulted maps the same frame.
        assert_eq!(probe(false), Some(small));
        if let Some((a, b)) = z.huge {
            assert_eq!(b - a, 512, "the huge zero page has 512 frames of 4 KiB");
            assert!(!z.contains(small + 1) || (a..b).contains(&(small + 1)));
        }
    }
}
