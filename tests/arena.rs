//! The arena engine, case by case. Each case is named after what it proves.

use cowscope::arena::{
    Advice, Arena, ArenaConfig, ArenaError, Block, CANARY, MAX_CAPACITY, OverflowSource,
    UncheckedAdvice,
};
use rstest::rstest;

fn page() -> usize {
    cowscope::kernel::page_size()
}

fn arena(cap: usize) -> Arena {
    Arena::new(ArenaConfig::new(cap)).expect("a small anonymous mapping")
}

/// The /proc/self/maps line whose range starts at `start`, as (start, end, perms).
fn vma_at(start: usize) -> Option<(usize, usize, String)> {
    vma_where(|a, _| a == start)
}

/// The /proc/self/maps line whose range contains `addr`.
fn vma_containing(addr: usize) -> Option<(usize, usize, String)> {
    vma_where(|a, b| a <= addr && addr < b)
}

fn vma_where(pick: impl Fn(usize, usize) -> bool) -> Option<(usize, usize, String)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let range = it.next()?;
        let perms = it.next()?.to_string();
        let (a, b) = range.split_once('-')?;
        let a = usize::from_str_radix(a, 16).ok()?;
        let b = usize::from_str_radix(b, 16).ok()?;
        pick(a, b).then_some((a, b, perms))
    })
}

#[rstest]
#[case::one_byte_is_one_page(1, 1)]
#[case::the_seed_09b_256_bytes_is_one_page(256, 1)]
#[case::exactly_one_page_stays_one(4096, 1)]
#[case::one_byte_more_is_two_pages(4097, 2)]
#[case::ten_pages(40960, 10)]
fn the_capacity_is_what_was_asked_and_only_the_mapping_is_rounded_up_to_whole_pages(
    #[case] asked: usize,
    #[case] pages_if_4k: usize,
) {
    // The table is written for 4 KiB pages; derive the expectation for other sizes.
    let expected = if page() == 4096 {
        pages_if_4k
    } else {
        asked.div_ceil(page())
    };
    let a = arena(asked);
    assert_eq!(a.capacity(), asked);
    assert_eq!(a.bytes().len(), asked);
    assert_eq!(a.page_count(), expected);
    assert_eq!(a.mapped_len(), expected * page());
    assert_eq!(a.slack().len(), expected * page() - asked);
    assert!(a.slack().iter().all(|b| *b == 0), "mmap hands out zeroes");
    // The kernel agrees: the arena's VMA is whole pages long.
    let (start, end, _) = vma_at(a.base_addr()).expect("the arena's VMA");
    assert_eq!(end - start, expected * page());
    assert_eq!(a.base_addr() % page(), 0);
}

#[rstest]
#[case::zero_capacity(ArenaConfig::new(0))]
#[case::capacity_that_cannot_round(ArenaConfig::new(usize::MAX))]
#[case::capacity_above_what_a_block_holds(ArenaConfig::new(MAX_CAPACITY + 1))]
#[case::non_power_of_two_alignment(ArenaConfig::new(4096).align(3 * 4096))]
#[case::guard_pages_overflowing(ArenaConfig::new(4096).guard_pages(usize::MAX))]
fn impossible_configurations_are_errors_not_panics(#[case] cfg: ArenaConfig) {
    let e = Arena::new(cfg).expect_err("must be refused");
    assert!(matches!(e, ArenaError::BadConfig { .. }), "{e:?}");
}

#[rstest]
#[case::zero_length(0)]
#[case::one_more_than_capacity(4097)]
#[case::isize_max(isize::MAX as usize)]
#[case::usize_max_minus_one(usize::MAX - 1)]
#[case::usize_max(usize::MAX)]
fn impossible_sizes_are_errors_that_name_offset_and_capacity(
    #[case] len: usize,
    #[values(true, false)] ledger: bool,
    #[values(0, 16)] red_zone: usize,
) {
    let mut a = Arena::new(ArenaConfig::new(4096).ledger(ledger).red_zone(red_zone)).unwrap();
    // Move the bump offset off zero so an addition could wrap if it were unchecked.
    let _first = a.alloc(8).unwrap();
    let used = a.used();
    let e = a.alloc(len).expect_err("must fail");
    match e {
        ArenaError::ZeroLength { offset, capacity } => {
            assert_eq!(len, 0);
            assert_eq!((offset, capacity), (used, a.capacity()));
        }
        ArenaError::OutOfMemory {
            offset, capacity, ..
        } => assert_eq!((offset, capacity), (used, a.capacity())),
        other => panic!("unexpected {other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains(&format!("offset {used}")), "{msg}");
    assert!(msg.contains(&format!("capacity {}", a.capacity())), "{msg}");
    assert_eq!(a.used(), used, "a refused allocation moves nothing");
    let e = a.alloc_aligned(len, 64).expect_err("must fail aligned too");
    if len == 0 {
        assert!(matches!(e, ArenaError::ZeroLength { .. }), "{e:?}");
    } else {
        assert!(matches!(e, ArenaError::OutOfMemory { .. }), "{e:?}");
    }
}

#[rstest]
fn the_seed_bump_order_has_no_padding(#[values(true, false)] ledger: bool) {
    let mut a = Arena::new(ArenaConfig::new(256).ledger(ledger)).unwrap();
    let blocks: Vec<Block> = (0..3).map(|_| a.alloc(64).unwrap()).collect();
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!((b.offset(), b.len()), (i * 64, 64));
        // The i-th block is block i, as the ledger derives it; without it there is no index.
        assert_eq!(a.index_of(b), ledger.then_some(i));
    }
    assert_eq!(a.used(), 192);
}

#[rstest]
fn an_allocation_fills_the_arena_exactly_then_runs_out(#[values(true, false)] ledger: bool) {
    let mut a = Arena::new(ArenaConfig::new(4096).ledger(ledger)).unwrap();
    let cap = a.capacity();
    let b = a.alloc(cap).unwrap();
    assert_eq!(b.range(), 0..cap);
    assert!(matches!(a.alloc(1), Err(ArenaError::OutOfMemory { .. })));
}

#[rstest]
#[case::byte(1)]
#[case::u16(2)]
#[case::u64(8)]
#[case::cache_line(64)]
#[case::page(4096)]
#[case::two_pages(8192)]
fn aligned_allocations_start_at_multiples_of_the_alignment(
    #[case] align: usize,
    #[values(true, false)] ledger: bool,
) {
    let mut a = Arena::new(ArenaConfig::new(64 * 1024).ledger(ledger)).unwrap();
    let _skew = a.alloc(3).unwrap();
    let b = a.alloc_aligned(5, align).unwrap();
    assert_eq!((a.base_addr() + b.offset()) % align, 0);
    assert!(b.offset() >= 3);
    assert!(b.offset() < 3 + align);
}

#[rstest]
#[case::zero(0)]
#[case::three(3)]
#[case::twelve(12)]
#[case::usize_max(usize::MAX)]
fn alignment_that_is_not_a_power_of_two_is_refused(
    #[case] align: usize,
    #[values(true, false)] ledger: bool,
) {
    let mut a = Arena::new(ArenaConfig::new(4096).ledger(ledger)).unwrap();
    let e = a.alloc_aligned(8, align).unwrap_err();
    assert!(matches!(e, ArenaError::BadAlign { .. }), "{e:?}");
}

#[rstest]
#[case::two_to_the_63(1usize << 63)]
#[case::two_to_the_40(1usize << 40)]
fn a_huge_alignment_is_out_of_memory_not_a_wrap(
    #[case] align: usize,
    #[values(true, false)] ledger: bool,
) {
    let mut a = Arena::new(ArenaConfig::new(4096).ledger(ledger)).unwrap();
    let _skew = a.alloc(1).unwrap();
    let e = a.alloc_aligned(1, align).unwrap_err();
    assert!(matches!(e, ArenaError::OutOfMemory { .. }), "{e:?}");
}

#[rstest]
fn base_alignment_and_guards_combine(
    #[values(0, 1, 3)] guards: usize,
    #[values(1, 16, 512)] align_pages: usize,
) {
    let align = align_pages * page();
    let a = Arena::new(
        ArenaConfig::new(2 * page())
            .guard_pages(guards)
            .align(align),
    )
    .unwrap();
    assert_eq!(a.base_addr() % align, 0);
    assert_eq!(a.guard_len(), guards * page());
    if guards > 0 {
        let (start, end) = (a.base_addr(), a.base_addr() + a.mapped_len());
        let (lo, lo_end, lo_perms) = vma_containing(start - 1).expect("lower guard");
        assert_eq!((lo_end, lo_perms.as_str()), (start, "---p"));
        assert!(start - lo >= a.guard_len());
        let (hi, hi_end, hi_perms) = vma_containing(end).expect("upper guard");
        assert_eq!((hi, hi_perms.as_str()), (end, "---p"));
        assert!(hi_end - end >= a.guard_len());
    }
}

#[test]
fn base_alignment_of_two_mib_is_honoured() {
    let mib2 = 2 << 20;
    let a = Arena::new(ArenaConfig::new(mib2).align(mib2)).unwrap();
    assert_eq!(a.base_addr() % mib2, 0);
    assert_eq!(a.capacity(), mib2);
}

#[rstest]
#[case::inside(0, b"Hello".as_slice(), 0)]
#[case::exactly_to_the_end(27, b"12345".as_slice(), 0)]
#[case::one_past(28, b"12345".as_slice(), 1)]
#[case::seed_clown_at_plus_24_with_nul(24, " \u{1F921} Oops!\0".as_bytes(), 4)]
#[case::starting_beyond_the_end(40, b"xy".as_slice(), 2)]
fn a_write_past_the_end_is_recorded_exactly(
    #[case] at: usize,
    #[case] bytes: &[u8],
    #[case] past: usize,
) {
    let mut a = arena(256);
    let b = a.alloc_labeled(32, "b").unwrap();
    let next = a.alloc_labeled(32, "next").unwrap();
    let out = a.write(&b, at, bytes).unwrap();
    assert_eq!(out.bytes_past_end, past);
    assert_eq!(&a.bytes()[at..at + bytes.len()], bytes);
    let f = a.check();
    if past == 0 {
        assert!(f.overflows.is_empty());
        assert!(out.victims.is_empty());
    } else {
        assert_eq!(f.overflows.len(), 1);
        let o = &f.overflows[0];
        assert_eq!((o.index, o.offset, o.bytes_past_end), (0, 0, past));
        assert_eq!(a.index_of(&b), Some(0));
        assert_eq!(o.source, OverflowSource::Write);
        assert_eq!(a.index_of(&next), Some(1));
        assert_eq!(o.victims, vec![1]);
        assert_eq!(out.victims, vec![1]);
    }
}

#[rstest]
#[case::one_byte_past_a_page_arena(4096, 4096 - 3, 4)]
#[case::offset_that_wraps(4096, usize::MAX, 1)]
#[case::offset_at_the_end_of_a_page_arena(4096, 4096, 1)]
#[case::one_byte_past_the_mapping_of_a_256_byte_arena(256, 4096 - 3, 4)]
#[case::from_inside_a_256_byte_arena_past_its_mapping(256, 200, 4000)]
fn a_write_past_the_mapping_is_refused_and_writes_nothing(
    #[case] capacity: usize,
    #[case] at: usize,
    #[case] len: usize,
) {
    if page() != 4096 {
        eprintln!("skip: table assumes 4 KiB pages, page size is {}", page());
        return;
    }
    let mut a = arena(capacity);
    let b = a.alloc(16).unwrap();
    let before = a.snapshot();
    let e = a.write(&b, at, &vec![0xAA; len]).unwrap_err();
    assert!(matches!(e, ArenaError::OutOfBounds { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("capacity {capacity}")), "{msg}");
    assert!(msg.contains("4096 bytes"), "{msg}");
    assert!(a.diff(&before).is_empty());
    assert!(
        a.slack().iter().all(|x| *x == 0),
        "nothing reached the slack"
    );
    let f = a.check();
    assert!(f.overflows.is_empty(), "a refused write is no overflow");
    assert_eq!(f.slack, None);
}

#[test]
fn a_block_never_written_nor_released_is_a_leak() {
    let mut a = arena(256);
    let used = a.alloc_labeled(32, "used").unwrap();
    let leaked = a.alloc_labeled(32, "leaked").unwrap();
    let released = a.alloc_labeled(32, "released").unwrap();
    a.write(&used, 0, b"x").unwrap();
    a.release_block(&released).unwrap();
    let f = a.check();
    assert_eq!(f.leaks.len(), 1);
    assert_eq!((f.leaks[0].index, a.index_of(&leaked)), (1, Some(1)));
    assert_eq!(f.leaks[0].label.as_deref(), Some("leaked"));
    assert!(f.ledger);
}

#[test]
fn a_second_release_of_a_block_is_a_double_release() {
    let mut a = arena(256);
    let b = a.alloc(32).unwrap();
    a.release_block(&b).unwrap();
    let e = a.release_block(&b).unwrap_err();
    assert!(matches!(
        e,
        ArenaError::DoubleRelease {
            index: 0,
            offset: 0,
            ..
        }
    ));
    assert_eq!(a.check().double_releases.len(), 1);
}

#[test]
fn writing_a_released_block_is_use_after_release() {
    let mut a = arena(256);
    let b = a.alloc(32).unwrap();
    a.release_block(&b).unwrap();
    assert!(matches!(
        a.write(&b, 0, b"x"),
        Err(ArenaError::UseAfterRelease { .. })
    ));
    assert_eq!(a.check().use_after_release.len(), 1);
}

#[rstest]
fn a_block_from_before_a_reset_is_use_after_reset(#[values(true, false)] zero: bool) {
    let mut a = arena(256);
    let old = a.alloc(32).unwrap();
    a.reset(zero).unwrap();
    let e = a.write(&old, 0, b"x").unwrap_err();
    assert!(matches!(e, ArenaError::UseAfterReset { .. }), "{e:?}");
    assert!(matches!(
        a.release_block(&old),
        Err(ArenaError::UseAfterReset { .. })
    ));
    assert_eq!(a.check().use_after_reset.len(), 2);
    let new = a.alloc(32).unwrap();
    assert_eq!(new.offset(), 0, "the reset starts over at offset 0");
    // The stale block's index is still derived (from its generation and offset).
    assert_eq!(a.index_of(&old), Some(0));
    assert_eq!(a.index_of(&new), Some(1), "indices are never reused");
}

#[test]
fn a_block_of_another_arena_is_refused() {
    let mut a = arena(256);
    let mut b = arena(256);
    let blk = a.alloc(8).unwrap();
    assert!(matches!(
        b.write(&blk, 0, b"x"),
        Err(ArenaError::ForeignBlock { .. })
    ));
}

#[test]
fn a_reset_without_zeroing_leaves_stale_bytes_that_check_reports() {
    let mut a = arena(256);
    let b = a.alloc(32).unwrap();
    a.write(&b, 0, b"secret\0").unwrap();
    let r = a.reset(false).unwrap();
    assert_eq!(r.previous_used, 32);
    assert_eq!(r.stale_bytes, 6, "s e c r e t are non-zero, the NUL is not");
    let c = a.alloc(32).unwrap();
    assert_eq!(a.dump(), format!("secret{}", ".".repeat(26)));
    // Overwrite the first three bytes: only "ret" stays stale.
    a.write(&c, 0, b"new").unwrap();
    let f = a.check();
    assert_eq!(f.stale.len(), 1);
    assert_eq!((f.stale[0].offset, f.stale[0].len), (3, 3));
}

#[test]
fn a_zeroing_reset_leaves_nothing_behind() {
    let mut a = arena(256);
    let b = a.alloc(32).unwrap();
    a.write(&b, 0, b"secret").unwrap();
    let r = a.reset(true).unwrap();
    assert_eq!(r.stale_bytes, 0);
    assert!(a.bytes()[..64].iter().all(|b| *b == 0));
    let _c = a.alloc(32).unwrap();
    assert!(a.check().stale.is_empty());
}

#[test]
fn red_zone_damage_through_a_raw_pointer_is_caught_with_its_extent() {
    let mut a = Arena::new(ArenaConfig::new(4096).red_zone(8)).unwrap();
    let b = a.alloc_labeled(16, "b").unwrap();
    let c = a.alloc_labeled(16, "c").unwrap();
    assert_eq!(c.offset(), 24, "block + red zone");
    assert!(a.bytes()[16..24].iter().all(|x| *x == CANARY));
    assert!(a.check().overflows.is_empty());
    // Bypass the ledger (as C code holding the pointer would): 3 bytes past b's end.
    a.bytes_mut()[16..19].copy_from_slice(b"abc");
    let f = a.check();
    assert_eq!(f.overflows.len(), 1);
    let o = &f.overflows[0];
    assert_eq!((o.index, o.bytes_past_end), (0, 3));
    assert_eq!(a.index_of(&b), Some(0));
    assert_eq!(o.source, OverflowSource::RedZone);
}

#[test]
fn releasing_twice_is_an_error_and_a_released_arena_refuses_work() {
    let mut a = arena(4096);
    let b = a.alloc(8).unwrap();
    a.release().unwrap();
    assert!(matches!(a.release(), Err(ArenaError::Released { .. })));
    assert!(matches!(a.alloc(8), Err(ArenaError::Released { .. })));
    assert!(matches!(
        a.write(&b, 0, b"x"),
        Err(ArenaError::Released { .. })
    ));
    assert!(a.bytes().is_empty());
    assert!(a.advise(Advice::DontFork).is_err());
}

#[rstest]
fn the_arena_is_a_vma_of_its_own_between_prot_none_guards(#[values(false, true)] shared: bool) {
    let mut cfg = ArenaConfig::new(3 * page());
    if shared {
        cfg = cfg.shared();
    }
    let a = Arena::new(cfg).unwrap();
    let (start, end, perms) = vma_at(a.base_addr()).expect("the arena's VMA");
    assert_eq!(end - start, a.mapped_len());
    assert_eq!(perms, if shared { "rw-s" } else { "rw-p" });
    let g = a.guard_len();
    assert_eq!(g, page());
    // The guards may merge with a neighbouring PROT_NONE mapping; what matters is that the
    // VMAs touching the arena on both sides are inaccessible and end exactly at its edges.
    let (_, lo_end, lo_perms) = vma_containing(start - 1).expect("lower guard VMA");
    assert_eq!((lo_end, lo_perms.as_str()), (start, "---p"));
    let (hi, _, hi_perms) = vma_containing(end).expect("upper guard VMA");
    assert_eq!((hi, hi_perms.as_str()), (end, "---p"));
}

#[test]
fn zero_guard_pages_map_only_the_arena() {
    let a = Arena::new(ArenaConfig::new(4096).guard_pages(0)).unwrap();
    assert_eq!(a.guard_len(), 0);
    let (s, e, _) = vma_at(a.base_addr()).expect("some VMA starts at the base, merged or not");
    assert!(e - s >= a.mapped_len());
}

#[rstest]
#[case::wipe_on_fork(Advice::WipeOnFork)]
#[case::keep_on_fork(Advice::KeepOnFork)]
#[case::dont_fork(Advice::DontFork)]
#[case::do_fork(Advice::DoFork)]
#[case::no_huge_page(Advice::NoHugePage)]
fn safe_advice_is_accepted_on_a_private_arena(#[case] advice: Advice) {
    let a = Arena::new(ArenaConfig::new(4096).advise(advice)).unwrap();
    assert_eq!(a.advice(), &[advice]);
    a.advise(advice).unwrap();
}

#[test]
fn huge_page_advice_needs_thp_in_the_kernel() {
    if cowscope::kernel::thp_enabled() == "unavailable" {
        eprintln!("skip: this kernel has no transparent huge pages");
        return;
    }
    let a = Arena::new(
        ArenaConfig::new(2 << 20)
            .align(2 << 20)
            .advise(Advice::HugePage),
    )
    .unwrap();
    a.advise(Advice::NoHugePage).unwrap();
}

#[test]
fn wipe_on_fork_is_refused_on_a_shared_arena_and_nothing_stays_mapped() {
    // madvise(2): MADV_WIPEONFORK "is only applicable to private anonymous pages" (EINVAL).
    let e = Arena::new(ArenaConfig::new(4096).shared().advise(Advice::WipeOnFork)).unwrap_err();
    match e {
        ArenaError::Advise { advice, errno, .. } => {
            assert_eq!(advice, Advice::WipeOnFork);
            assert_eq!(errno, nix::errno::Errno::EINVAL);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn dont_need_on_a_private_arena_reads_back_zeroes() {
    let mut a = arena(4096);
    let b = a.alloc(8).unwrap();
    a.write(&b, 0, b"abcdefgh").unwrap();
    // SAFETY: no slice of the arena is held across the call; we expect the contents to go.
    unsafe { a.advise_unchecked(UncheckedAdvice::DontNeed) }.unwrap();
    assert!(a.used_bytes().iter().all(|x| *x == 0));
}

/// Resident kB of the VMA starting at `start`, from /proc/self/smaps.
fn rss_kb(start: usize) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let head = format!("{start:x}-");
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
    lines.next()?;
    lines
        .find(|l| l.starts_with("Rss:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[rstest]
fn populate_faults_every_page_in_and_without_it_none_are(#[values(false, true)] populate: bool) {
    let a = Arena::new(ArenaConfig::new(8 * page()).populate(populate)).unwrap();
    let rss = rss_kb(a.base_addr()).expect("smaps entry of the arena");
    let expect = if populate {
        (a.mapped_len() / 1024) as u64
    } else {
        0
    };
    assert_eq!(rss, expect);
}

#[test]
fn snapshot_and_diff_name_exactly_the_changed_ranges() {
    let mut a = arena(256);
    let b = a.alloc(32).unwrap();
    a.write(&b, 0, b"Hello arena").unwrap();
    let s = a.snapshot();
    assert_eq!(s.bytes().len(), 32);
    assert!(a.diff(&s).is_empty());
    a.write(&b, 6, b"ARENA").unwrap(); // same length, all five differ
    a.write(&b, 20, b"\0\0x").unwrap(); // first two equal the old zeroes
    let c = a.alloc(8).unwrap();
    a.write(&c, 1, b"z").unwrap(); // beyond the snapshot: compared with zero
    assert_eq!(a.diff(&s), vec![6..11, 22..23, 33..34]);
}

#[test]
fn the_dump_renders_each_used_byte_like_the_seed() {
    let mut a = arena(64);
    let b = a.alloc(8).unwrap();
    a.write(&b, 0, &[b'H', b'i', 0, 31, 32, 126, 127, 0xF0])
        .unwrap();
    assert_eq!(a.dump(), "Hi.. ~..");
    assert!(
        a.dump_hex()
            .starts_with("00000000  48 69 00 1f 20 7e 7f f0")
    );
}

#[test]
fn finish_checks_then_releases() {
    let mut a = arena(64);
    let _leak = a.alloc(8).unwrap();
    let f = a.finish().unwrap();
    assert_eq!(f.leaks.len(), 1);
}

#[test]
fn without_the_ledger_nothing_is_judged_and_release_block_says_why() {
    let mut a = Arena::new(ArenaConfig::new(64).ledger(false)).unwrap();
    let b = a.alloc(8).unwrap();
    let out = a.write(&b, 6, b"abcd").unwrap();
    assert_eq!(
        out.bytes_past_end, 2,
        "the outcome is exact even without the ledger"
    );
    let f = a.check();
    assert!(!f.ledger && f.is_clean());
    let e = a.release_block(&b).unwrap_err();
    assert!(matches!(e, ArenaError::NoLedger { .. }));
    assert!(e.to_string().contains("ledger"));
}

/// Run a forked subject that does `ops` (through cowscope's one child interpreter) and then
/// exits; return its messages and how it ended.
fn child_doing(
    ops: impl FnOnce(std::os::fd::RawFd) -> Vec<cowscope::fork::child::ChildOp<'static>>,
) -> (
    Vec<cowscope::fork::subject::Msg>,
    cowscope::fork::subject::ExitInfo,
) {
    use cowscope::fork::subject::{SubjectPipes, spawn};
    let pipes = SubjectPipes::new().unwrap();
    let mut prog = pipes.prologue().to_vec();
    prog.extend(ops(pipes.child_report_fd()));
    prog.push(cowscope::fork::child::ChildOp::Exit(0));
    let (mut subj, _) = spawn(pipes, &prog).unwrap();
    subj.collect_until_exit(std::time::Instant::now() + std::time::Duration::from_secs(10))
}

/// A forked child writes one byte at `addr`; how did it end?
fn child_touching(addr: usize) -> cowscope::fork::subject::ExitInfo {
    use cowscope::fork::child::ChildOp;
    child_doing(|_| vec![ChildOp::WriteByte { addr, byte: 1 }]).1
}

#[rstest]
#[case::one_past_the_end(true)]
#[case::one_before_the_start(false)]
fn a_forked_child_touching_a_guard_page_dies_of_sigsegv(#[case] past_end: bool) {
    let a = arena(4096);
    let addr = if past_end {
        a.base_addr() + a.mapped_len()
    } else {
        a.base_addr() - 1
    };
    let e = child_touching(addr);
    assert_eq!(e.signal.as_deref(), Some("SIGSEGV"), "{e:?}");
    // Sanity: the last arena byte itself is fine in a child.
    let e = child_touching(a.base_addr() + a.mapped_len() - 1);
    assert_eq!(
        e.code,
        Some(0),
        "writing inside the arena must not fault: {e:?}"
    );
}

#[rstest]
#[case::private_child_sees_the_parents_byte(ArenaConfig::new(4096), Some(b'A'))]
#[case::wipe_on_fork_child_sees_zero(ArenaConfig::new(4096).advise(Advice::WipeOnFork), Some(0))]
#[case::shared_child_sees_the_parents_byte(ArenaConfig::new(4096).shared(), Some(b'A'))]
#[case::dont_fork_child_has_no_arena(ArenaConfig::new(4096).advise(Advice::DontFork), None)]
fn what_a_forked_child_reads_follows_the_fork_advice(
    #[case] cfg: ArenaConfig,
    #[case] expect: Option<u8>,
) {
    use cowscope::fork::child::{ChildOp, TAG_BYTE};
    let mut a = Arena::new(cfg).unwrap();
    let b = a.alloc(1).unwrap();
    a.write(&b, 0, b"A").unwrap();
    let addr = a.base_addr();
    let (msgs, exit) = child_doing(|fd| vec![ChildOp::ReadByte { addr, fd }]);
    let byte = msgs
        .iter()
        .find(|m| m.tag == TAG_BYTE)
        .map(|m| m.value as u8);
    match expect {
        Some(want) => {
            assert_eq!(byte, Some(want));
            assert_eq!(exit.code, Some(0));
        }
        None => {
            assert_eq!(byte, None, "nothing to read without the mapping");
            assert_eq!(exit.signal.as_deref(), Some("SIGSEGV"));
        }
    }
}

#[rstest]
#[case::private_write_stays_in_the_child(false, b'A')]
#[case::shared_write_reaches_the_parent(true, b'X')]
fn a_childs_write_reaches_the_parent_only_when_shared(#[case] shared: bool, #[case] seen: u8) {
    use cowscope::fork::child::ChildOp;
    let cfg = if shared {
        ArenaConfig::new(4096).shared()
    } else {
        ArenaConfig::new(4096)
    };
    let mut a = Arena::new(cfg).unwrap();
    let b = a.alloc(1).unwrap();
    a.write(&b, 0, b"A").unwrap();
    let addr = a.base_addr();
    let (_, exit) = child_doing(|_| vec![ChildOp::WriteByte { addr, byte: b'X' }]);
    assert_eq!(exit.code, Some(0), "{exit:?}");
    assert_eq!(a.bytes()[0], seen);
}

// The logical capacity: what the caller asked for (the seed's `ARENA_SIZE`), not the page.
// Only the mapping is rounded up; the slack between the two is watched like a red zone.

/// The seed's 09b: `#define ARENA_SIZE 256`, `#define BLOCK_SIZE 32`, and `arena_alloc` refuses
/// when `a->offset + size > a->capacity`: eight blocks fit, the ninth does not.
#[rstest]
fn the_seed_09b_arena_refuses_a_ninth_32_byte_block_at_offset_256(
    #[values(true, false)] ledger: bool,
) {
    let mut a = Arena::new(ArenaConfig::new(256).ledger(ledger)).unwrap();
    for i in 0..8 {
        let b = a.alloc(32).unwrap();
        assert_eq!(b.range(), i * 32..(i + 1) * 32);
    }
    let e = a.alloc(32).unwrap_err();
    assert!(
        matches!(
            e,
            ArenaError::OutOfMemory {
                len: 32,
                offset: 256,
                capacity: 256,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("at offset 256 of capacity 256"),
        "{e}"
    );
    assert!(
        a.mapped_len() >= 256 + 32,
        "the page had room: the refusal is the capacity's, not the mapping's"
    );
}

#[rstest]
#[case::one_byte_too_many_after_224(224, 33, 1)]
#[case::more_than_the_capacity_from_zero(0, 257, 1)]
#[case::one_byte_at_the_end(256, 1, 1)]
#[case::alignment_padding_pushes_it_across(250, 4, 8)]
#[case::aligned_to_the_logical_end(249, 1, 256)]
fn an_allocation_that_would_cross_the_logical_end_of_a_256_byte_arena_is_refused_at_offset_n(
    #[case] n: usize,
    #[case] len: usize,
    #[case] align: usize,
    #[values(true, false)] ledger: bool,
) {
    let mut a = Arena::new(ArenaConfig::new(256).ledger(ledger)).unwrap();
    if n > 0 {
        let _filler = a.alloc(n).unwrap();
    }
    let e = if align == 1 {
        a.alloc(len)
    } else {
        a.alloc_aligned(len, align)
    }
    .unwrap_err();
    match e {
        ArenaError::OutOfMemory {
            offset, capacity, ..
        } => assert_eq!((offset, capacity), (n, 256)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(a.used(), n, "a refusal moves nothing");
    // What is left up to the logical end is still there, to the byte.
    if n < 256 {
        let last = a.alloc(256 - n).unwrap();
        assert_eq!(last.end(), 256);
    }
    assert!(matches!(
        a.alloc(1),
        Err(ArenaError::OutOfMemory { offset: 256, .. })
    ));
}

#[test]
fn a_red_zone_that_would_cross_the_logical_end_is_refused_too() {
    let mut a = Arena::new(ArenaConfig::new(256).red_zone(16)).unwrap();
    let b = a.alloc(224).unwrap();
    assert_eq!(a.used(), b.end() + 16, "block and red zone: 240 bytes");
    // 240 + 1 + 16 = 257 > 256, although the page has room for all of it.
    let e = a.alloc(1).unwrap_err();
    assert!(
        matches!(
            e,
            ArenaError::OutOfMemory {
                offset: 240,
                capacity: 256,
                red_zone: 16,
                ..
            }
        ),
        "{e:?}"
    );
}

/// The 09b-overflow clown with its NUL: 12 bytes.
const CLOWN: &[u8] = " \u{1F921} Oops!\0".as_bytes();

#[rstest]
// Cases: (filler, block length, next block), offset in the block, the bytes, and (bytes past
// the block's end, bytes past the capacity, how far past the capacity the slack shows damage).
// The clown at c + 24 with c the last 32 bytes of the arena: 24 + 12 = 36, so 4 bytes ('p',
// 's', '!', NUL) go past c's end, which is the logical end; the NUL is zero, so the slack
// shows 3 damaged bytes.
#[case::the_clown_past_the_last_block((224, 32, None), 24, CLOWN, (4, 4, 3))]
// A block at 200..232 followed by one at 232..256; 30 bytes from 230 end at 260: 28 past the
// block (24 of them in the next block), 4 past the logical end.
#[case::through_the_next_block_into_the_slack((200, 32, Some(24)), 30, &[0xAB; 30], (28, 4, 4))]
// Starting beyond the logical end: 2 bytes at 264..266.
#[case::starting_inside_the_slack((224, 32, None), 40, &[0xAB; 2], (2, 2, 10))]
fn a_write_crossing_the_logical_end_inside_the_page_is_an_overflow_with_the_exact_bytes_past_the_end(
    // (filler before the block, the block's length, the length of a block after it)
    #[case] layout: (usize, usize, Option<usize>),
    #[case] at: usize,
    #[case] bytes: &[u8],
    // (bytes past the block's end, bytes past the capacity, reach of the slack damage)
    #[case] expect: (usize, usize, usize),
    #[values(true, false)] ledger: bool,
) {
    let (filler, block_len, next_len) = layout;
    let (past_end, past_capacity, slack_reach) = expect;
    let mut a = Arena::new(ArenaConfig::new(256).ledger(ledger)).unwrap();
    let _filler = a.alloc(filler).unwrap();
    let b = a.alloc_labeled(block_len, "c").unwrap();
    let next = next_len.map(|n| a.alloc_labeled(n, "next").unwrap());
    assert_eq!(a.used(), 256, "the arena is full to its logical end");
    let out = a.write(&b, at, bytes).expect("inside the mapping: written");
    assert_eq!(
        (out.bytes_past_end, out.bytes_past_capacity),
        (past_end, past_capacity)
    );
    // The bytes past the logical end really are in the slack (it is mapped: no fault).
    let end = b.offset() + at + bytes.len();
    let slack_start = (b.offset() + at).max(256) - 256;
    assert_eq!(
        &a.slack()[slack_start..end - 256],
        &bytes[bytes.len() - past_capacity..]
    );
    let f = a.check();
    if !ledger {
        assert!(
            !f.ledger && f.is_clean(),
            "without the ledger nothing is judged"
        );
        return;
    }
    assert_eq!(f.overflows.len(), 1, "{:?}", f.overflows);
    let o = &f.overflows[0];
    assert_eq!(o.source, OverflowSource::Write);
    assert_eq!(
        (o.index, o.bytes_past_end, o.bytes_past_capacity),
        (1, past_end, past_capacity),
        "the filler is block 0, b block 1"
    );
    assert_eq!(a.index_of(&b), Some(1));
    assert_eq!(o.victims, next.map(|_| 2).into_iter().collect::<Vec<_>>());
    let d = f
        .slack
        .expect("the bytes in the slack are seen as damage too");
    assert_eq!((d.capacity, d.mapped), (256, a.mapped_len()));
    assert_eq!(d.bytes_past_capacity, slack_reach);
}

#[test]
fn a_write_to_the_last_mapped_byte_of_a_256_byte_arena_is_written_and_reported() {
    let mut a = arena(256);
    let b = a.alloc(256).unwrap();
    let rest = a.mapped_len() - 256;
    let out = a.write(&b, 256, &vec![0x5A; rest]).unwrap();
    assert_eq!((out.bytes_past_end, out.bytes_past_capacity), (rest, rest));
    assert!(a.slack().iter().all(|x| *x == 0x5A));
    let d = a.check().slack.expect("a full slack is damage");
    assert_eq!((d.first_offset, d.bytes_past_capacity), (256, rest));
    assert_eq!(d.nonzero_bytes, rest);
    // One byte more would leave the mapping: refused, nothing written.
    let e = a.write(&b, 256, &vec![0x11; rest + 1]).unwrap_err();
    assert!(matches!(e, ArenaError::OutOfBounds { .. }), "{e:?}");
    assert!(a.slack().iter().all(|x| *x == 0x5A));
}

#[test]
fn check_finds_bytes_written_into_the_slack_through_the_raw_pointer() {
    let mut a = arena(256);
    let b = a.alloc_labeled(256, "all").unwrap();
    a.write(&b, 0, &[b'x'; 256]).unwrap();
    assert_eq!(
        a.check().slack,
        None,
        "a full arena with an untouched slack"
    );
    let last = a.mapped_len() - 1;
    // SAFETY: `as_ptr()` is valid for `mapped_len()` bytes and no slice of the arena is alive;
    // this is what C code holding the pointer does, unseen by the ledger.
    unsafe {
        a.as_ptr().add(256 + 10).write(0x41);
        a.as_ptr().add(last).write(0x42);
    }
    let f = a.check();
    assert!(f.overflows.is_empty(), "the ledger never heard of it");
    assert!(!f.is_clean());
    let d = f.slack.expect("the slack is damaged");
    assert_eq!((d.capacity, d.mapped), (256, a.mapped_len()));
    assert_eq!(d.first_offset, 256 + 10);
    assert_eq!(d.bytes_past_capacity, a.mapped_len() - 256);
    assert_eq!(d.nonzero_bytes, 2);
}

#[rstest]
fn a_reset_clears_what_an_overrun_left_in_the_slack_only_when_it_zeroes(
    #[values(true, false)] zero: bool,
) {
    let mut a = arena(256);
    let d = a.alloc(256).unwrap();
    // 10 bytes from 250: "abcdef" inside the capacity, "ghij" in the slack.
    let out = a.write(&d, 250, b"abcdefghij").unwrap();
    assert_eq!(out.bytes_past_capacity, 4);
    assert_eq!(a.slack()[..4], *b"ghij");
    let r = a.reset(zero).unwrap();
    let f = a.check();
    if zero {
        assert_eq!(r.stale_bytes, 0);
        assert!(a.slack().iter().all(|x| *x == 0));
        assert_eq!(f.slack, None);
    } else {
        // Stale is counted inside the capacity only ("abcdef"); "ghij" stays slack damage.
        assert_eq!(r.stale_bytes, 6);
        assert_eq!(f.slack.map(|s| s.bytes_past_capacity), Some(4));
    }
    assert_eq!(f.overflows.len(), 1, "the overflow itself stays on record");
}

#[rstest]
fn a_page_multiple_arena_behaves_exactly_as_before(#[values(1, 3)] pages: usize) {
    let cap = pages * page();
    let mut a = arena(cap);
    assert_eq!(
        (a.capacity(), a.mapped_len(), a.page_count()),
        (cap, cap, pages)
    );
    assert!(a.slack().is_empty());
    let _b = a.alloc(cap - 8).unwrap();
    let c = a.alloc(8).unwrap();
    assert_eq!(c.end(), cap);
    assert!(matches!(
        a.alloc(1),
        Err(ArenaError::OutOfMemory { offset, capacity, .. }) if offset == cap && capacity == cap
    ));
    // Up to the last byte is in bounds; one byte more has no slack to run into: refused.
    let out = a.write(&c, 0, &[1; 8]).unwrap();
    assert_eq!((out.bytes_past_end, out.bytes_past_capacity), (0, 0));
    let before = a.snapshot();
    assert!(matches!(
        a.write(&c, 1, &[2; 8]),
        Err(ArenaError::OutOfBounds { .. })
    ));
    assert!(a.diff(&before).is_empty());
    let f = a.check();
    assert!(f.overflows.is_empty() && f.slack.is_none(), "{f:?}");
    // The guard page starts right at the capacity.
    let e = child_touching(a.base_addr() + cap);
    assert_eq!(e.signal.as_deref(), Some("SIGSEGV"), "{e:?}");
}
