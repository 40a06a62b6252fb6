//! What the whole-`Block` figure of `benches/alloc.rs` is made of: the same bump fast path
//! returning descriptors of different shapes, against bumpalo's `alloc_layout`, in one run.
//!
//! This is a model, not the engine: `Model` has the arena's hot fields and its ledger-off
//! fast path (flag, zero length, room; bump an address; offset from the base), and each bench
//! returns a different `Result<descriptor, error>` and hands the whole `Result` to `black_box`
//! (as `cowscope_ledger_off_whole_block` does).
//!
//! Two things decide the cost:
//!
//! * whether the slow path is a call handed the arena (`today_slow_takes_arena`, what the
//!   engine did until issue 18): then nothing in the caller's loop may keep the cursor or the
//!   index counter in a register, every allocation loads and stores them through memory, and
//!   the loop runs at 1.8x bumpalo. Handed only out-of-line state and values
//!   (`today_slow_takes_cold`, what the engine does now; the other shapes' slow paths take
//!   nothing), the same 4-word descriptor runs at 1.2x;
//! * then, the words the loop writes per allocation: the input length, the cursor, the index
//!   counter (when the descriptor carries an index), each word of the descriptor, the `Result`
//!   tag (unless the descriptor has a niche the error can use) and the reference `black_box`
//!   receives. Only a descriptor without an index (so without a counter) and without a tag
//!   gets to bumpalo's speed or below (`no_index_3_words`, `two_words`).
//!
//! See BENCHMARKS.md (allocation section).
//!
//! Run: `cargo bench --bench alloc_shapes`.

use std::alloc::Layout;
use std::num::NonZeroU64;

use bumpalo::Bump;
use divan::{Bencher, black_box};

const N: usize = 10_000;
const LEN: usize = 16;
const LAYOUT: Layout = match Layout::from_size_align(LEN, 1) {
    Ok(l) => l,
    Err(_) => panic!("16-byte layout"),
};

fn main() {
    divan::main();
}

/// An error as large as `ArenaError` (a tag and five words).
#[derive(Debug)]
#[allow(dead_code)]
enum WideError {
    OutOfMemory([usize; 5]),
    ZeroLength,
}

/// A one-word error (the payload boxed), so a descriptor's niche can hold `Err`'s tag.
#[derive(Debug)]
#[allow(dead_code)]
struct BoxedError(Box<WideError>);

/// The out-of-line state the slow path changes (the engine's ledger and labels).
struct ModelCold {
    log: Vec<usize>,
}

/// The arena's hot fields, as in `cowscope::arena::Arena`.
struct Model {
    cur: usize,
    end: usize,
    base: usize,
    next_index: usize,
    fast: bool,
    id: u32,
    generation: u32,
    stamp: NonZeroU64,
    cold: Box<ModelCold>,
    _mem: Vec<u8>,
}

impl Model {
    fn new() -> Model {
        let mut mem = vec![0u8; N * LEN];
        let base = mem.as_mut_ptr() as usize;
        Model {
            cur: base,
            end: base + N * LEN,
            base,
            next_index: 0,
            fast: true,
            id: 1,
            generation: 0,
            stamp: NonZeroU64::MIN,
            cold: Box::new(ModelCold { log: Vec::new() }),
            _mem: mem,
        }
    }

    /// The ledger-off fast path: the block's offset, or `None` for the slow path.
    #[inline(always)]
    fn bump(&mut self, len: usize) -> Option<usize> {
        let cur = self.cur;
        if self.fast && len != 0 && len <= self.end - cur {
            self.cur = cur + len;
            Some(cur - self.base)
        } else {
            None
        }
    }

    #[inline(always)]
    fn next_index(&mut self) -> usize {
        let i = self.next_index;
        self.next_index = i.wrapping_add(1);
        i
    }
}

#[cold]
#[inline(never)]
fn refused() -> WideError {
    WideError::ZeroLength
}

/// Today's `Block`: index, offset, len, arena id and generation (4 words), `ArenaError`.
#[allow(dead_code)]
struct Today {
    index: usize,
    offset: usize,
    len: usize,
    arena: u32,
    generation: u32,
}

/// Index, offset, len (3 words): no arena id or generation, so no stale or foreign detection.
#[allow(dead_code)]
struct NoStamp {
    index: usize,
    offset: usize,
    len: usize,
}

/// Index, offset, len, and one non-zero stamp (arena and generation in one word, drawn from a
/// global counter) whose niche holds a one-word error's tag.
#[allow(dead_code)]
struct Stamped {
    index: usize,
    offset: usize,
    len: usize,
    stamp: NonZeroU64,
}

/// Offset, len, stamp (3 words): no index, so no counter either.
#[allow(dead_code)]
struct NoIndex {
    offset: usize,
    len: usize,
    stamp: NonZeroU64,
}

/// Offset, and len and stamp packed in one non-zero word (2 words): no index.
#[allow(dead_code)]
struct TwoWords {
    offset: usize,
    len_stamp: NonZeroU64,
}

/// Run the loop with one descriptor shape.
fn run<T, E>(b: Bencher, alloc: impl Fn(&mut Model, usize) -> Result<T, E>) {
    b.with_inputs(Model::new).bench_local_refs(|m| {
        for _ in 0..N {
            let r = alloc(m, black_box(LEN));
            black_box(&r);
        }
    });
}

#[divan::bench]
fn bumpalo_alloc_layout(b: Bencher) {
    b.with_inputs(|| Bump::with_capacity(N * LEN))
        .bench_local_refs(|bump| {
            for _ in 0..N {
                black_box(bump.alloc_layout(black_box(LAYOUT)));
            }
        });
}

/// 4 words + tag + counter (today's `Result<Block, ArenaError>`, 48 bytes).
#[divan::bench]
fn today_4_words_tag_counter(b: Bencher) {
    run(b, |m, len| match m.bump(len) {
        Some(offset) => Ok(Today {
            index: m.next_index(),
            offset,
            len,
            arena: m.id,
            generation: m.generation,
        }),
        None => Err(refused()),
    });
}

/// 3 words + tag + counter (48 bytes; the previous session's experiment).
#[divan::bench]
fn no_stamp_3_words_tag_counter(b: Bencher) {
    run(b, |m, len| match m.bump(len) {
        Some(offset) => Ok(NoStamp {
            index: m.next_index(),
            offset,
            len,
        }),
        None => Err(refused()),
    });
}

/// 4 words + counter, no tag (32 bytes).
#[divan::bench]
fn stamped_4_words_counter(b: Bencher) {
    run(b, |m, len| match m.bump(len) {
        Some(offset) => Ok(Stamped {
            index: m.next_index(),
            offset,
            len,
            stamp: m.stamp,
        }),
        None => Err(BoxedError(Box::new(refused()))),
    });
}

/// 3 words, no counter, no tag (24 bytes).
#[divan::bench]
fn no_index_3_words(b: Bencher) {
    run(b, |m, len| match m.bump(len) {
        Some(offset) => Ok(NoIndex {
            offset,
            len,
            stamp: m.stamp,
        }),
        None => Err(BoxedError(Box::new(refused()))),
    });
}

/// 2 words, no counter, no tag (16 bytes).
#[divan::bench]
fn two_words(b: Bencher) {
    run(b, |m, len| match m.bump(len) {
        Some(offset) => Ok(TwoWords {
            offset,
            len_stamp: m.stamp.saturating_add((len as u64) << 32),
        }),
        None => Err(BoxedError(Box::new(refused()))),
    });
}

/// The slow path as the engine has it: a call that takes the whole arena.
#[cold]
#[inline(never)]
fn slow_with(m: &mut Model, len: usize) -> Result<usize, WideError> {
    if len == 0 || !m.fast {
        return Err(refused());
    }
    m.cur += 0;
    Err(refused())
}

/// Today's shape, with the slow path taking the arena.
#[divan::bench]
fn today_slow_takes_arena(b: Bencher) {
    run(b, |m, len| -> Result<Today, WideError> {
        let offset = match m.bump(len) {
            Some(o) => o,
            None => slow_with(m, len)?,
        };
        Ok(Today {
            index: m.next_index(),
            offset,
            len,
            arena: m.id,
            generation: m.generation,
        })
    });
}

/// Two words with the slow path taking the arena.
#[divan::bench]
fn two_words_slow_takes_arena(b: Bencher) {
    run(b, |m, len| -> Result<TwoWords, BoxedError> {
        let offset = match m.bump(len) {
            Some(o) => o,
            None => slow_with(m, len).map_err(|e| BoxedError(Box::new(e)))?,
        };
        Ok(TwoWords {
            offset,
            len_stamp: m.stamp.saturating_add((len as u64) << 32),
        })
    });
}

/// The slow path taking only the out-of-line state and values; the caller stores the cursor.
#[cold]
#[inline(never)]
fn slow_cold(cold: &mut ModelCold, cur: usize, len: usize) -> Result<usize, WideError> {
    if len == 0 {
        return Err(refused());
    }
    cold.log.push(cur);
    Err(refused())
}

/// Today's shape, the slow path taking only the boxed cold state.
#[divan::bench]
fn today_slow_takes_cold(b: Bencher) {
    run(b, |m, len| -> Result<Today, WideError> {
        let offset = match m.bump(len) {
            Some(o) => o,
            None => {
                let start = slow_cold(&mut m.cold, m.cur, len)?;
                m.cur = start + len;
                start
            }
        };
        Ok(Today {
            index: m.next_index(),
            offset,
            len,
            arena: m.id,
            generation: m.generation,
        })
    });
}
