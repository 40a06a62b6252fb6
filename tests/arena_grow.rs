//! `Arena::grow`: in place when the pages after the end guard are free, a move otherwise; in
//! both cases contents survive and guards surround the arena.
//!
//! In its own test binary: the in-place case frees address space on purpose and looks at
//! /proc/self/maps, which tests mapping memory on parallel threads could disturb.

use cowscope::arena::{Arena, ArenaConfig, ArenaError, MAX_CAPACITY};

/// The VMA of this process containing `addr`, as (start, end, perms).
fn vma(addr: usize) -> Option<(usize, usize, String)> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (a, b) = f.next()?.split_once('-')?;
        let (a, b) = (
            usize::from_str_radix(a, 16).ok()?,
            usize::from_str_radix(b, 16).ok()?,
        );
        let perms = f.next()?.to_string();
        (a <= addr && addr < b).then_some((a, b, perms))
    })
}

/// The arena is one rw VMA of exactly its mapped length, with a PROT_NONE VMA on each side.
fn assert_guarded(a: &Arena) {
    let (base, end) = (a.base_addr(), a.base_addr() + a.mapped_len());
    let (s, e, p) = vma(base).expect("arena mapped");
    assert_eq!((s, e, p.as_str()), (base, end, "rw-p"));
    assert!(vma(base - 1).expect("low guard").2.starts_with("---"));
    assert!(vma(end).expect("high guard").2.starts_with("---"));
}

fn page() -> usize {
    cowscope::kernel::page_size()
}

#[test]
fn grow_moves_when_the_next_pages_are_taken_and_keeps_the_bytes() {
    let mut a = Arena::new(ArenaConfig::new(page())).unwrap();
    let b = a.alloc(5).unwrap();
    a.write(&b, 0, b"keep\0").unwrap();
    let old = a.base_addr();
    // Take the page right after the end guard (if it is free; if not, it is taken already).
    let at = old + a.capacity() + a.guard_len();
    // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping; a fresh PROT_NONE page aliases
    // nothing. Checked and unmapped below.
    let blocker = unsafe {
        libc::mmap(
            at as *mut libc::c_void,
            page(),
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    let g = a.grow(8 * page()).unwrap();
    if blocker != libc::MAP_FAILED {
        // SAFETY: the page mapped above, ours, unreferenced.
        assert_eq!(unsafe { libc::munmap(blocker, page()) }, 0);
    }
    assert!(
        g.moved,
        "the pages after the guard were taken, so growth had to move"
    );
    assert_eq!((g.old_base, g.new_base), (old, a.base_addr()));
    assert_ne!(old, a.base_addr());
    assert_eq!(a.capacity(), 8 * page());
    assert_eq!(&a.bytes()[b.range()], b"keep\0");
    assert_eq!(vma(old), None, "the old location is unmapped");
    assert_guarded(&a);
    // Blocks stay valid (offsets), and the new room is usable.
    a.write(&b, 0, b"new\0").unwrap();
    let big = a.alloc(6 * page()).unwrap();
    a.write(&big, 6 * page() - 1, b"z").unwrap();
}

#[test]
fn grow_in_place_when_the_next_pages_are_free() {
    // Mappings go top-down into the highest gap that fits: an arena made right after a bigger
    // one usually lands just below it. Dropping the upper one then frees the pages after the
    // lower one's end guard. Gaps fill up as we go, so a few tries find such a pair.
    let mut keep = Vec::new();
    let mut found = None;
    for _ in 0..16 {
        let upper = Arena::new(ArenaConfig::new(32 * page())).unwrap();
        let lower = Arena::new(ArenaConfig::new(page())).unwrap();
        let lower_top = lower.base_addr() + lower.capacity() + lower.guard_len();
        if lower_top == upper.base_addr() - upper.guard_len() {
            found = Some((upper, lower));
            break;
        }
        keep.push((upper, lower));
    }
    let Some((upper, mut a)) = found else {
        eprintln!("SKIP in-place growth: no arena landed right below another in 16 tries");
        return;
    };
    drop(upper);
    let b = a.alloc(3).unwrap();
    a.write(&b, 0, b"in\0").unwrap();
    let old = a.base_addr();
    let g = a.grow(16 * page()).unwrap();
    assert!(!g.moved, "the pages after the end guard were free");
    assert_eq!((g.old_base, g.new_base, a.base_addr()), (old, old, old));
    assert_eq!(&a.bytes()[b.range()], b"in\0");
    assert_guarded(&a);
}

#[test]
fn grow_refuses_what_it_cannot_do() {
    let mut a = Arena::new(ArenaConfig::new(2 * page())).unwrap();
    assert!(matches!(a.grow(page()), Err(ArenaError::BadConfig { .. })));
    assert!(matches!(
        a.grow(usize::MAX),
        Err(ArenaError::BadConfig { .. })
    ));
    // A block holds offsets and lengths in 40 bits: 1 TiB - 1 byte is the most.
    match a.grow(MAX_CAPACITY + 1) {
        Err(e @ ArenaError::BadConfig { value, .. }) => {
            assert_eq!(value, MAX_CAPACITY + 1);
            assert!(e.to_string().contains("1 TiB"), "{e}");
        }
        other => panic!("expected BadConfig, got {other:?}"),
    }
    let same = a.grow(2 * page()).unwrap();
    assert!(!same.moved && same.new_base == same.old_base);
    let mut s = Arena::new(ArenaConfig::new(page()).shared()).unwrap();
    assert!(matches!(
        s.grow(2 * page()),
        Err(ArenaError::BadConfig { .. })
    ));
    a.release().unwrap();
    assert!(matches!(
        a.grow(4 * page()),
        Err(ArenaError::Released { op: "grow", .. })
    ));
}

#[test]
fn a_moved_arena_keeps_its_base_alignment_and_advice() {
    const ALIGN: usize = 1 << 16;
    let mut a = Arena::new(
        ArenaConfig::new(page())
            .align(ALIGN)
            .advise(cowscope::arena::Advice::DontFork),
    )
    .unwrap();
    let b = a.alloc(2).unwrap();
    a.write(&b, 0, b"x\0").unwrap();
    // 64 MiB more than a one-page arena: the pages after its end guard are rarely all free.
    let g = a.grow(64 << 20).unwrap();
    assert_eq!(a.base_addr() % ALIGN, 0, "alignment kept ({g:?})");
    assert_eq!(&a.bytes()[b.range()], b"x\0");
    assert_guarded(&a);
    // MADV_DONTFORK is a VMA flag ("dc" in smaps): mremap carries it along.
    let v = cowscope::mem::smaps::vma_containing(std::process::id() as i32, a.base_addr() as u64)
        .unwrap();
    assert!(v.has_flag("dc"), "VmFlags {:?}", v.vm_flags);
}

#[test]
fn growing_within_the_last_page_moves_only_the_logical_end() {
    let mut a = Arena::new(ArenaConfig::new(256)).unwrap();
    let b = a.alloc(256).unwrap();
    a.write(&b, 0, b"seed\0").unwrap();
    assert!(matches!(
        a.alloc(1),
        Err(ArenaError::OutOfMemory { offset: 256, .. })
    ));
    let (base, mapped) = (a.base_addr(), a.mapped_len());
    let g = a.grow(1000).unwrap();
    assert!(!g.moved);
    assert_eq!((g.old_capacity, g.new_capacity), (256, 1000));
    assert_eq!((g.old_mapped, g.new_mapped), (mapped, mapped));
    assert_eq!(
        (a.base_addr(), a.mapped_len(), a.capacity()),
        (base, mapped, 1000)
    );
    assert_guarded(&a);
    // The new room is exactly up to the new logical end.
    let c = a.alloc(744).unwrap();
    assert_eq!(c.range(), 256..1000);
    assert!(matches!(
        a.alloc(1),
        Err(ArenaError::OutOfMemory {
            offset: 1000,
            capacity: 1000,
            ..
        })
    ));
    assert_eq!(&a.bytes()[b.range()][..5], b"seed\0");
}

#[test]
fn growing_past_the_last_page_maps_whole_pages_and_keeps_the_capacity_exact() {
    let mut a = Arena::new(ArenaConfig::new(256)).unwrap();
    let b = a.alloc(5).unwrap();
    a.write(&b, 0, b"keep\0").unwrap();
    let g = a.grow(page() + 1).unwrap();
    assert_eq!((g.new_capacity, g.new_mapped), (page() + 1, 2 * page()));
    assert_eq!((a.capacity(), a.mapped_len()), (page() + 1, 2 * page()));
    assert_eq!(a.slack().len(), page() - 1);
    assert_guarded(&a);
    assert_eq!(&a.bytes()[b.range()], b"keep\0");
    let rest = a.alloc(page() + 1 - 5).unwrap();
    assert_eq!(rest.end(), page() + 1);
    assert!(a.alloc(1).is_err());
}

#[test]
fn a_shared_arena_grows_within_its_last_page_but_not_past_it() {
    let mut s = Arena::new(ArenaConfig::new(256).shared()).unwrap();
    let g = s.grow(page()).unwrap();
    assert_eq!(
        (g.new_capacity, g.new_mapped, g.moved),
        (page(), page(), false)
    );
    assert!(matches!(
        s.grow(page() + 1),
        Err(ArenaError::BadConfig { .. })
    ));
    assert_eq!(s.capacity(), page());
}
