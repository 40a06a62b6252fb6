//! Random alloc / alloc_aligned / alloc_layout / reset / release sequences against a model
//! computed in u128 (so the model itself cannot wrap). 800 cases x at least 125 operations = at
//! least 100,000 operations per run.
//!
//! Properties: an allocation succeeds exactly when the model says it fits in the *logical*
//! capacity (what was asked for, often not a page multiple: a block is refused at the logical
//! end even when the last page has room); blocks never overlap (checked geometrically and by a
//! fill pattern that later blocks would clobber), never leave the capacity and honour their
//! alignment; sizes and alignments near `usize::MAX` are errors, never wraps or panics; misuse
//! (double release, use after reset) is reported; the slack past the capacity stays untouched.
//!
//! A second property writes at random places, many of them around the logical end and the
//! end of the mapping, against a byte-for-byte model of the whole mapping: each write is
//! written (or refused past the mapping) exactly as the model says, with the exact bytes past
//! the block's end and past the capacity, and `check` reports exactly the overflows and the
//! slack damage the model predicts.

use std::alloc::Layout;

use cowscope::arena::{Arena, ArenaConfig, ArenaError, Block, OverflowSource};
use proptest::prelude::*;

const CASES: u32 = 800;
const WRITE_CASES: u32 = 400;
const MIN_OPS: usize = 125;
const MAX_OPS: usize = 200;

#[derive(Debug, Clone)]
enum Op {
    Alloc(usize),
    AllocAligned(usize, usize),
    /// `alloc_layout`, for the sizes and alignments a `Layout` can hold (others are skipped).
    AllocLayout(usize, usize),
    Reset(bool),
    ReleaseBlock(usize),
    WriteStale(usize),
}

fn len_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        20 => 1usize..=300,
        2 => 301usize..=5000,
        1 => Just(0usize),
        1 => (0usize..64).prop_map(|d| usize::MAX - d),
        1 => (0usize..64).prop_map(|d| (isize::MAX as usize).wrapping_add(d)),
        1 => (0u32..64).prop_map(|s| 1usize << s),
    ]
}

fn align_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        20 => (0u32..=13).prop_map(|s| 1usize << s),
        1 => Just(0usize),
        1 => Just(3usize),
        1 => Just(24usize),
        1 => (40u32..64).prop_map(|s| 1usize << s),
        1 => Just(usize::MAX),
    ]
}

/// A capacity of `pages` pages minus a shave: whole pages, one byte short, half a page short,
/// or one byte past the previous page.
fn capacity_strategy() -> impl Strategy<Value = usize> {
    let page = cowscope::kernel::page_size();
    (
        prop_oneof![Just(1usize), Just(4), Just(16)],
        prop_oneof![
            Just(0usize),
            Just(1),
            Just(page / 2),
            Just(page - 1),
            0..page
        ],
    )
        .prop_map(move |(pages, shave)| pages * page - shave)
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => len_strategy().prop_map(Op::Alloc),
        10 => (len_strategy(), align_strategy()).prop_map(|(l, a)| Op::AllocAligned(l, a)),
        10 => (len_strategy(), align_strategy()).prop_map(|(l, a)| Op::AllocLayout(l, a)),
        1 => any::<bool>().prop_map(Op::Reset),
        3 => any::<usize>().prop_map(Op::ReleaseBlock),
        1 => any::<usize>().prop_map(Op::WriteStale),
    ]
}

/// What the model predicts for an allocation, in u128 so it cannot wrap.
fn predict(base: usize, used: usize, cap: usize, len: usize, align: usize, rz: usize) -> bool {
    if len == 0 || !align.is_power_of_two() {
        return false;
    }
    let addr = base as u128 + used as u128;
    let a = align as u128;
    let aligned = addr.div_ceil(a) * a;
    aligned + len as u128 + rz as u128 <= base as u128 + cap as u128
}

struct Live {
    block: Block,
    fill: u8,
    released: bool,
}

fn fill_of(index: usize) -> u8 {
    (index % 251) as u8 + 1
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_sequences_keep_blocks_disjoint_aligned_and_inside(
        asked in capacity_strategy(),
        ledger in any::<bool>(),
        red_zone in prop_oneof![Just(0usize), Just(8)],
        ops in prop::collection::vec(op_strategy(), MIN_OPS..=MAX_OPS),
    ) {
        let page = cowscope::kernel::page_size();
        let mut a = Arena::new(ArenaConfig::new(asked).ledger(ledger).red_zone(red_zone))
            .expect("mapping a few pages");
        // The model's capacity is what was asked for; only the mapping is whole pages.
        let (base, cap) = (a.base_addr(), asked);
        prop_assert_eq!(a.capacity(), asked);
        prop_assert_eq!(a.mapped_len(), asked.div_ceil(page) * page);
        let mut live: Vec<Live> = Vec::new();
        let mut stale: Vec<Block> = Vec::new();
        let mut last_end = 0usize; // end of the last block + its red zone, this generation
        let mut double_releases = 0usize;
        let mut uses_after_reset = 0usize;
        // Blocks handed out so far: the next block's index (indices run on across resets).
        let mut allocated = 0usize;

        for op in &ops {
            match *op {
                Op::Alloc(len) | Op::AllocAligned(len, _) | Op::AllocLayout(len, _) => {
                    let align = match *op {
                        Op::AllocAligned(_, al) | Op::AllocLayout(_, al) => al,
                        _ => 1,
                    };
                    let used = a.used();
                    prop_assert_eq!(used, last_end);
                    let fits = predict(base, used, cap, len, align, red_zone);
                    let r = match *op {
                        Op::AllocAligned(..) => a.alloc_aligned(len, align),
                        Op::AllocLayout(..) => match Layout::from_size_align(len, align) {
                            Ok(layout) => a.alloc_layout(layout),
                            Err(_) => continue,
                        },
                        _ => a.alloc(len),
                    };
                    match r {
                        Ok(b) => {
                            prop_assert!(fits, "allocated {len} align {align} at used {used}");
                            prop_assert!(b.offset() >= last_end, "overlap with previous block");
                            prop_assert!(b.len() == len);
                            prop_assert!(b.end() + red_zone <= cap, "block leaves the capacity");
                            prop_assert_eq!((base + b.offset()) % align, 0);
                            prop_assert_eq!(a.used(), b.end() + red_zone);
                            last_end = a.used();
                            prop_assert_eq!(
                                a.index_of(&b),
                                ledger.then_some(allocated),
                                "the ledger derives the index; without it there is none"
                            );
                            let fill = fill_of(allocated);
                            allocated += 1;
                            let out = a.write(&b, 0, &vec![fill; len]).expect("in-bounds write");
                            prop_assert_eq!(out.bytes_past_end, 0);
                            live.push(Live { block: b, fill, released: false });
                        }
                        Err(e) => {
                            prop_assert!(!fits, "refused {len} align {align} at used {used}: {e}");
                            let kind_ok = match e {
                                ArenaError::ZeroLength { .. } => len == 0,
                                ArenaError::BadAlign { .. } => !align.is_power_of_two() && len != 0,
                                ArenaError::OutOfMemory { offset, capacity, .. } => {
                                    offset == used && capacity == cap
                                }
                                _ => false,
                            };
                            prop_assert!(kind_ok, "wrong error for len {len} align {align}");
                            prop_assert_eq!(a.used(), used, "a refusal moves nothing");
                        }
                    }
                }
                Op::Reset(zero) => {
                    let extent = a.extent();
                    a.reset(zero).expect("reset a live arena");
                    prop_assert_eq!(a.used(), 0);
                    if zero {
                        prop_assert!(a.bytes()[..extent].iter().all(|b| *b == 0));
                    }
                    stale.extend(live.drain(..).map(|l| l.block));
                    last_end = 0;
                }
                Op::ReleaseBlock(sel) => {
                    if live.is_empty() {
                        continue;
                    }
                    let i = sel % live.len();
                    let r = a.release_block(&live[i].block);
                    match (ledger, live[i].released) {
                        (false, _) => prop_assert!(matches!(r, Err(ArenaError::NoLedger { .. })), "{:?}", r),
                        (true, false) => {
                            prop_assert!(r.is_ok());
                            live[i].released = true;
                        }
                        (true, true) => {
                            prop_assert!(matches!(r, Err(ArenaError::DoubleRelease { .. })), "{:?}", r);
                            double_releases += 1;
                        }
                    }
                }
                Op::WriteStale(sel) => {
                    if stale.is_empty() {
                        continue;
                    }
                    let b = &stale[sel % stale.len()];
                    let index = a.index_of(b);
                    prop_assert_eq!(index.is_some(), ledger, "a stale block's index is derived too");
                    let r = a.write(b, 0, b"x");
                    prop_assert!(matches!(r, Err(ArenaError::UseAfterReset { index: i, .. }) if i == index), "{:?}", r);
                    uses_after_reset += 1;
                }
            }
        }

        // Every live block still holds its own fill: no later block or red zone overlapped it.
        for l in &live {
            let bytes = &a.bytes()[l.block.range()];
            prop_assert!(bytes.iter().all(|b| *b == l.fill), "block at {} clobbered", l.block.offset());
        }
        prop_assert!(a.slack().iter().all(|b| *b == 0), "nothing reached the slack");
        let f = a.check();
        prop_assert_eq!(f.ledger, ledger);
        prop_assert!(f.overflows.is_empty(), "no write ran past its block: {:?}", f.overflows);
        prop_assert_eq!(f.slack, None);
        if ledger {
            prop_assert_eq!(f.double_releases.len(), double_releases);
            prop_assert_eq!(f.use_after_reset.len(), uses_after_reset);
            prop_assert!(f.leaks.is_empty(), "every block was written");
        }
        a.release().expect("first release");
        prop_assert!(a.release().is_err(), "second release must be an error");
    }
}

/// Where a write starts: relative to its block, or near the logical end or the mapping's end
/// (clamped so it never starts before its block).
#[derive(Debug, Clone)]
enum Target {
    InBlock(usize),
    NearCapacity(i32),
    NearMappingEnd(i32),
}

fn target_strategy() -> impl Strategy<Value = Target> {
    prop_oneof![
        2 => (0usize..700).prop_map(Target::InBlock),
        3 => (-64i32..64).prop_map(Target::NearCapacity),
        2 => (-64i32..8).prop_map(Target::NearMappingEnd),
    ]
}

fn write_strategy() -> impl Strategy<Value = (prop::sample::Index, Target, usize, u8)> {
    (
        any::<prop::sample::Index>(),
        target_strategy(),
        prop_oneof![4 => 0usize..80, 1 => 80usize..700],
        any::<u8>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(WRITE_CASES))]

    #[test]
    fn writes_are_reported_exactly_past_the_block_past_the_capacity_and_refused_past_the_mapping(
        asked in capacity_strategy(),
        ledger in any::<bool>(),
        lens in prop::collection::vec(1usize..=700, 1..10),
        writes in prop::collection::vec(write_strategy(), 1..24),
    ) {
        let page = cowscope::kernel::page_size();
        let mut a = Arena::new(ArenaConfig::new(asked).ledger(ledger)).expect("mapping");
        let cap = asked;
        let mapped = asked.div_ceil(page) * page;
        prop_assert_eq!(a.mapped_len(), mapped);
        // The model: every byte of the mapping, zero as mmap hands it out.
        let mut model = vec![0u8; mapped];
        let mut used = 0usize;
        let mut blocks: Vec<Block> = Vec::new();
        for len in lens {
            match a.alloc(len) {
                Ok(b) => {
                    prop_assert!(used + len <= cap, "{len} at {used} crosses {cap}");
                    used += len;
                    blocks.push(b);
                }
                Err(e) => {
                    prop_assert!(used + len > cap, "{len} at {used} refused: {e}");
                    prop_assert!(
                        matches!(e, ArenaError::OutOfMemory { offset, .. } if offset == used),
                        "{e}"
                    );
                }
            }
        }
        prop_assume!(!blocks.is_empty());
        let mut overflows: Vec<(usize, usize, usize)> = Vec::new();
        for (sel, target, len, byte) in writes {
            // The i-th block handed out is block i.
            let pos = sel.index(blocks.len());
            let b = blocks[pos];
            prop_assert_eq!(a.index_of(&b), ledger.then_some(pos));
            let start = match target {
                Target::InBlock(at) => b.offset() + at,
                Target::NearCapacity(d) => (cap as i64 + d as i64).max(0) as usize,
                Target::NearMappingEnd(d) => (mapped as i64 + d as i64).max(0) as usize,
            }
            .max(b.offset());
            let at = start - b.offset();
            let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
            let end = start + len;
            match a.write(&b, at, &data) {
                Ok(out) => {
                    prop_assert!(end <= mapped, "wrote {start}..{end} past the mapping {mapped}");
                    model[start..end].copy_from_slice(&data);
                    let past_end = end.saturating_sub(start.max(b.end()));
                    let past_cap = end.saturating_sub(start.max(cap));
                    prop_assert_eq!(
                        (out.bytes_past_end, out.bytes_past_capacity),
                        (past_end, past_cap),
                        "write {}..{} through block {:?}", start, end, b.range()
                    );
                    if past_end > 0 {
                        overflows.push((pos, past_end, past_cap));
                    }
                }
                Err(e) => {
                    prop_assert!(end > mapped, "refused {start}..{end} inside the mapping: {e}");
                    prop_assert!(matches!(e, ArenaError::OutOfBounds { .. }), "{e}");
                }
            }
        }
        prop_assert_eq!(a.bytes(), &model[..cap]);
        prop_assert_eq!(a.slack(), &model[cap..]);
        let f = a.check();
        if !ledger {
            prop_assert!(!f.ledger && f.is_clean());
            return Ok(());
        }
        let found: Vec<(usize, usize, usize)> = f
            .overflows
            .iter()
            .map(|o| {
                assert_eq!(o.source, OverflowSource::Write);
                (o.index, o.bytes_past_end, o.bytes_past_capacity)
            })
            .collect();
        prop_assert_eq!(found, overflows);
        let slack = &model[cap..];
        match (slack.iter().position(|b| *b != 0), f.slack) {
            (None, None) => {}
            (Some(first), Some(d)) => {
                let last = slack.iter().rposition(|b| *b != 0).unwrap();
                prop_assert_eq!((d.capacity, d.mapped), (cap, mapped));
                prop_assert_eq!(d.first_offset, cap + first);
                prop_assert_eq!(d.bytes_past_capacity, last + 1);
                prop_assert_eq!(d.nonzero_bytes, slack.iter().filter(|b| **b != 0).count());
            }
            (want, got) => prop_assert!(false, "slack: model {:?}, check {:?}", want, got),
        }
    }
}
