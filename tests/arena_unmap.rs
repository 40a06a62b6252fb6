//! release() and Drop really unmap the arena and its guards.
//!
//! Alone in its own test binary: with other tests mapping memory on parallel threads, the freed
//! range could be reused between the munmap and the look at /proc/self/maps.

use cowscope::arena::{Arena, ArenaConfig};

/// Whether any VMA of this process overlaps `[start, end)`.
fn mapped(start: usize, end: usize) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines().any(|l| {
        let range = l.split_whitespace().next().unwrap_or("");
        let Some((a, b)) = range.split_once('-') else {
            return false;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            return false;
        };
        a < end && start < b
    })
}

#[test]
fn release_and_drop_unmap_the_arena_and_both_guards() {
    for via_drop in [false, true] {
        let mut a = Arena::new(ArenaConfig::new(4 * 4096)).expect("mapping");
        let (lo, hi) = (
            a.base_addr() - a.guard_len(),
            a.base_addr() + a.mapped_len() + a.guard_len(),
        );
        assert!(mapped(lo, hi));
        if via_drop {
            drop(a);
        } else {
            a.release().expect("first release");
            assert!(a.release().is_err(), "a second release is an error");
        }
        assert!(
            !mapped(lo, hi),
            "something is still mapped in {lo:#x}..{hi:#x}"
        );
    }
}
