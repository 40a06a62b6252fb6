//! `threads`: the seed asks "Is this thread-safe?". Its arena is not: `arena_alloc` reads the
//! offset, adds, and stores it back, so two threads can both read the same offset and be handed
//! the same bytes.
//!
//! In cowscope the single-threaded [`Arena`](crate::arena::Arena) allocates through `&mut self`
//! and is not `Sync`, so the compiler refuses to share it between threads (the compile-fail
//! doctest on [`ConcurrentArena`] shows it). [`ConcurrentArena`] is the shareable version: its
//! bump offset is one atomic advanced by a single read-modify-write with checked arithmetic.
//! The experiment runs 2 threads × 10^6 allocations of varying lengths on it, sorts all
//! 2 × 10^6 ranges and checks that none overlaps the next (and that together they tile
//! `0..used` exactly). For contrast it runs the seed's read-then-store bump on the same
//! workload (with atomic loads and stores, so the race is a logic race, not undefined
//! behaviour) and counts the blocks it handed out twice.

use std::ops::Range;
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::{ExperimentOptions, Outcome};
use crate::arena::ArenaError;
use crate::error::Result;

/// Threads allocating at once.
pub const THREADS: usize = 2;
/// Allocations per thread.
pub const PER_THREAD: usize = 1_000_000;
/// Block lengths cycle through `1..=MAX_LEN`, so a block handed out twice always overlaps.
const MAX_LEN: usize = 16;

/// A bump allocator that threads can share: the offset is one [`AtomicUsize`], advanced by a
/// single compare-and-swap loop ([`AtomicUsize::fetch_update`]) with checked arithmetic, so two
/// threads can never be handed the same bytes and the offset never passes the capacity or
/// wraps. It hands out offset ranges inside `0..capacity`; the memory they index is the
/// caller's (e.g. an [`Arena`](crate::arena::Arena)'s mapping).
///
/// The single-threaded [`Arena`](crate::arena::Arena) is not `Sync`, so it cannot be shared:
///
/// ```compile_fail,E0277
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<cowscope::arena::Arena>();
/// ```
///
/// while this one is:
///
/// ```
/// use cowscope::experiments::threads::ConcurrentArena;
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<ConcurrentArena>();
/// // The same path names a real type: the compile-fail above fails on the `Sync` bound
/// // (E0277; stable rustdoc does not check the code, hence this line).
/// fn assert_send<T: Send>() {}
/// assert_send::<cowscope::arena::Arena>();
///
/// let a = ConcurrentArena::new(64);
/// let (x, y) = std::thread::scope(|s| {
///     let t = s.spawn(|| a.alloc(32).unwrap());
///     (a.alloc(32).unwrap(), t.join().unwrap())
/// });
/// assert!(x.end <= y.start || y.end <= x.start);
/// assert!(a.alloc(1).is_err());
/// ```
#[derive(Debug)]
pub struct ConcurrentArena {
    capacity: usize,
    next: AtomicUsize,
}

impl ConcurrentArena {
    /// An allocator over `0..capacity`.
    pub fn new(capacity: usize) -> Self {
        ConcurrentArena {
            capacity,
            next: AtomicUsize::new(0),
        }
    }

    /// Hand out `len` bytes: the range `offset..offset + len`, disjoint from every other range
    /// this allocator handed out.
    ///
    /// # Errors
    /// [`ArenaError::ZeroLength`] for `len == 0`, [`ArenaError::OutOfMemory`] when `len` does
    /// not fit (including lengths near `usize::MAX`: the addition is checked).
    #[must_use = "an allocation nobody keeps is a leak; the error must be looked at too"]
    pub fn alloc(&self, len: usize) -> std::result::Result<Range<usize>, ArenaError> {
        let capacity = self.capacity;
        if len == 0 {
            return Err(ArenaError::ZeroLength {
                offset: self.next.load(Ordering::Relaxed),
                capacity,
            });
        }
        // Relaxed is enough: uniqueness comes from the read-modify-write itself (every RMW of
        // one atomic reads the value the previous RMW wrote, in one total order). Nothing else
        // is published through this atomic.
        self.next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |off| {
                off.checked_add(len).filter(|end| *end <= capacity)
            })
            .map(|off| off..off + len)
            .map_err(|offset| ArenaError::OutOfMemory {
                len,
                align: 1,
                red_zone: 0,
                offset,
                capacity,
            })
    }

    /// Bytes handed out so far.
    pub fn used(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The seed's bump, `off = arena->offset; arena->offset += size;`, as two separate atomic
/// operations: no data race in Rust's sense, but the same lost update the C code has.
fn seed_style_alloc(next: &AtomicUsize, len: usize) -> Range<usize> {
    let off = next.load(Ordering::Relaxed);
    next.store(off + len, Ordering::Relaxed);
    off..off + len
}

/// The seed's race with its schedule forced: both threads load the offset, wait for each
/// other, then store. Both are handed the same block, every time.
fn seed_style_forced(len: usize) -> (Range<usize>, Range<usize>, usize) {
    let next = AtomicUsize::new(0);
    let between = Barrier::new(2);
    let step = || {
        let off = next.load(Ordering::Relaxed);
        between.wait();
        next.store(off + len, Ordering::Relaxed);
        off..off + len
    };
    let (a, b) = std::thread::scope(|s| {
        let t = s.spawn(step);
        let a = step();
        (a, t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    });
    (a, b, next.into_inner())
}

fn len_of(i: usize) -> usize {
    1 + i % MAX_LEN
}

/// Run `alloc` on [`THREADS`] threads, [`PER_THREAD`] times each, started together; return
/// every range handed out (errors are returned as they happen).
fn hammer<F>(alloc: F) -> std::result::Result<Vec<Range<usize>>, ArenaError>
where
    F: Fn(usize) -> std::result::Result<Range<usize>, ArenaError> + Sync,
{
    let start = Barrier::new(THREADS);
    let per_thread: Vec<std::result::Result<Vec<Range<usize>>, ArenaError>> =
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (alloc, start) = (&alloc, &start);
                    s.spawn(move || {
                        let mut v = Vec::with_capacity(PER_THREAD);
                        start.wait();
                        for i in 0..PER_THREAD {
                            v.push(alloc(len_of(i + t))?);
                        }
                        Ok(v)
                    })
                })
                .collect();
            handles
                .into_iter()
                // A panic in a worker (only possible on allocation failure) is re-raised here.
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
    let mut all = Vec::with_capacity(THREADS * PER_THREAD);
    for v in per_thread {
        all.extend(v?);
    }
    Ok(all)
}

/// After sorting by start: how many ranges begin before the previous ones end (overlaps), and
/// whether the ranges tile `0..end` with no gap.
fn overlaps_and_tiling(ranges: &mut [Range<usize>]) -> (usize, bool, usize) {
    ranges.sort_unstable_by_key(|r| (r.start, r.end));
    let mut overlaps = 0;
    let mut reach = 0;
    let mut tiles = true;
    for r in ranges.iter() {
        if r.start < reach {
            overlaps += 1;
        } else if r.start > reach {
            tiles = false;
        }
        reach = reach.max(r.end);
    }
    (overlaps, tiles, reach)
}

/// Run the experiment.
///
/// # Errors
/// When the concurrent arena runs out of room (it is sized so that it does not).
pub fn run(_opts: &ExperimentOptions) -> Result<Outcome> {
    let capacity = THREADS * PER_THREAD * MAX_LEN;
    let arena = ConcurrentArena::new(capacity);
    let mut ranges = hammer(|len| arena.alloc(len))?;
    let allocations = ranges.len();
    let requested: usize = ranges.iter().map(|r| r.len()).sum();
    let (overlaps, tiles, reach) = overlaps_and_tiling(&mut ranges);
    drop(ranges);

    // Exhaustion under contention: a small arena, both threads allocating until refused.
    let small = ConcurrentArena::new(10_000);
    let handed = AtomicUsize::new(0);
    let refusals = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                while let Ok(r) = small.alloc(7) {
                    handed.fetch_add(r.len(), Ordering::Relaxed);
                }
                refusals.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    let handed = handed.into_inner();
    let exhaustion_ok = handed == small.used()
        && small.used() <= small.capacity()
        && small.capacity() - small.used() < 7;

    // The seed's bump on the same workload.
    let seed_next = AtomicUsize::new(0);
    let mut seed_ranges = hammer(|len| Ok(seed_style_alloc(&seed_next, len)))?;
    let (seed_overlaps, _, _) = overlaps_and_tiling(&mut seed_ranges);
    drop(seed_ranges);
    let (fa, fb, forced_offset) = seed_style_forced(32);
    let forced_same_block = fa == fb;

    let holds =
        allocations == THREADS * PER_THREAD && overlaps == 0 && tiles && reach == arena.used();
    let holds = holds && requested == arena.used() && exhaustion_ok && forced_same_block;
    let sentence = if holds {
        format!(
            "{THREADS} threads x {PER_THREAD} allocations on the atomic-offset arena: all \
             {allocations} ranges are disjoint and tile 0..{} exactly; the single-threaded \
             Arena is not Sync, so the compiler refuses to share it; the seed's read-then-store \
             bump hands both threads the same block {fa:?} when they interleave (forced), and \
             free-running on the same workload handed out {seed_overlaps} overlapping block(s)",
            arena.used()
        )
    } else {
        format!(
            "the atomic-offset arena handed out {overlaps} overlapping range(s) (tiling {tiles}, \
             {requested} bytes requested, offset {}; exhaustion consistent: {exhaustion_ok})",
            arena.used()
        )
    };
    Ok(Outcome::verdict(
        holds,
        sentence,
        json!({
            "arena_sync": false,
            "arena_sync_evidence": "compile_fail doctest on cowscope::experiments::threads::ConcurrentArena: assert_sync::<Arena>() does not compile (Arena is not Sync), while assert_send::<Arena>() does",
            "concurrent": {
                "threads": THREADS,
                "allocations_per_thread": PER_THREAD,
                "allocations": allocations,
                "block_lengths": format!("1..={MAX_LEN}"),
                "capacity": capacity,
                "bytes_requested": requested,
                "final_offset": arena.used(),
                "overlapping_ranges": overlaps,
                "ranges_tile_without_gaps": tiles,
            },
            "exhaustion": {
                "capacity": small.capacity(),
                "block_len": 7,
                "bytes_handed_out": handed,
                "final_offset": small.used(),
                "threads_refused": refusals.into_inner(),
            },
            "seed_style_forced_interleaving": {
                "schedule": "A loads, B loads, A stores, B stores",
                "thread_a": format!("{}..{}", fa.start, fa.end),
                "thread_b": format!("{}..{}", fb.start, fb.end),
                "same_block": forced_same_block,
                "final_offset": forced_offset,
            },
            "seed_style_load_then_store": {
                "allocations": THREADS * PER_THREAD,
                "overlapping_ranges": seed_overlaps,
                "final_offset": seed_next.into_inner(),
                "note": "a race: the count varies from run to run and may be 0 when the threads happen not to interleave",
            },
        }),
    ))
}
