//! The allocation fast path against bumpalo 3, in the same run.
//!
//! Each iteration makes 10,000 allocations from a fresh arena or `Bump`; creating (mmap /
//! malloc) and dropping it happen outside the timed part (divan's `with_inputs`). Nothing is
//! written to the memory, so no page faults are timed either: this is the bump arithmetic and
//! the bookkeeping alone.
//!
//! What each iteration hands to `black_box` matters as much as the allocator: bumpalo returns a
//! pointer (one register), cowscope a `Block` descriptor (index, offset, len, and its arena id
//! and generation in one word: 32 bytes; the label stays in the arena). So cowscope is measured
//! three ways:
//!
//! * `cowscope_ledger_off`: `ArenaConfig::ledger(false)`, the inlined fast path; the caller
//!   keeps the block's address (`as_ptr() + offset`), the same thing bumpalo returns. The other
//!   `Block` fields are then dead and never materialised, as in a caller that only uses the
//!   memory.
//! * `cowscope_ledger_off_whole_block`: the same, but the whole `Result<Block, _>` goes to
//!   `black_box`, forcing every field to memory on every allocation.
//! * `cowscope_ledger_on`: the default, every block recorded in the ledger (the cost of leak,
//!   overflow and misuse detection: one 24-byte record appended to the buffer the arena
//!   reserved when it was made); the caller keeps the address.
//! * `bumpalo_alloc_layout`: `Bump::alloc_layout` (infallible; would grow a new chunk).
//! * `bumpalo_try_alloc_layout`: `Bump::try_alloc_layout` (fallible, like `Arena::alloc`).
//!
//! Run: `cargo bench --bench alloc`.

use std::alloc::Layout;

use bumpalo::Bump;
use cowscope::arena::{Arena, ArenaConfig};
use divan::{Bencher, black_box};

const N: usize = 10_000;

fn main() {
    divan::main();
}

fn arena(bytes: usize, ledger: bool) -> Arena {
    Arena::new(ArenaConfig::new(bytes).ledger(ledger)).expect("mapping the bench arena")
}

/// Keep only the address, as a bumpalo caller does.
#[inline(always)]
fn keep_addr(a: &Arena, r: Result<cowscope::arena::Block, cowscope::arena::ArenaError>) {
    match r {
        Ok(b) => {
            black_box(a.as_ptr().wrapping_add(b.offset()));
        }
        Err(e) => fail(e),
    }
}

#[cold]
#[inline(never)]
fn fail(e: cowscope::arena::ArenaError) -> ! {
    panic!("the bench arena is large enough: {e}")
}

fn bump(bytes: usize) -> Bump {
    // Pre-sized so no chunk is added during the timed loop.
    Bump::with_capacity(bytes)
}

/// 10,000 x 16 bytes, alignment 1 (the seed's unaligned bump).
mod bytes16 {
    use super::*;
    const LEN: usize = 16;
    const LAYOUT: Layout = match Layout::from_size_align(LEN, 1) {
        Ok(l) => l,
        Err(_) => panic!("16-byte layout"),
    };

    #[divan::bench]
    fn cowscope_ledger_off(b: Bencher) {
        b.with_inputs(|| arena(N * LEN, false))
            .bench_local_refs(|a| {
                for _ in 0..N {
                    let r = a.alloc(black_box(LEN));
                    keep_addr(a, r);
                }
            });
    }

    #[divan::bench]
    fn cowscope_ledger_off_whole_block(b: Bencher) {
        b.with_inputs(|| arena(N * LEN, false))
            .bench_local_refs(|a| {
                for _ in 0..N {
                    let r = a.alloc(black_box(LEN));
                    black_box(&r);
                }
            });
    }

    #[divan::bench]
    fn cowscope_ledger_on(b: Bencher) {
        b.with_inputs(|| arena(N * LEN, true))
            .bench_local_refs(|a| {
                for _ in 0..N {
                    let r = a.alloc(black_box(LEN));
                    keep_addr(a, r);
                }
            });
    }

    #[divan::bench]
    fn bumpalo_alloc_layout(b: Bencher) {
        b.with_inputs(|| bump(N * LEN)).bench_local_refs(|bump| {
            for _ in 0..N {
                black_box(bump.alloc_layout(black_box(LAYOUT)));
            }
        });
    }

    #[divan::bench]
    fn bumpalo_try_alloc_layout(b: Bencher) {
        b.with_inputs(|| bump(N * LEN)).bench_local_refs(|bump| {
            for _ in 0..N {
                let _ = black_box(bump.try_alloc_layout(black_box(LAYOUT)));
            }
        });
    }
}

/// 10,000 u64-sized allocations: 8 bytes, alignment 8.
mod u64s {
    use super::*;
    const LEN: usize = size_of::<u64>();
    const ALIGN: usize = align_of::<u64>();
    const LAYOUT: Layout = Layout::new::<u64>();

    #[divan::bench]
    fn cowscope_ledger_off(b: Bencher) {
        b.with_inputs(|| arena(N * LEN, false))
            .bench_local_refs(|a| {
                for _ in 0..N {
                    let r = a.alloc_aligned(black_box(LEN), black_box(ALIGN));
                    keep_addr(a, r);
                }
            });
    }

    #[divan::bench]
    fn cowscope_ledger_off_whole_block(b: Bencher) {
        b.with_inputs(|| arena(N * LEN, false))
            .bench_local_refs(|a| {
                for _ in 0..N {
                    let r = a.alloc_aligned(black_box(LEN), black_box(ALIGN));
                    black_box(&r);
                }
            });
    }

    #[divan::bench]
    fn cowscope_ledger_on(b: Bencher) {
        b.with_inputs(|| arena(N * LEN, true))
            .bench_local_refs(|a| {
                for _ in 0..N {
                    let r = a.alloc_aligned(black_box(LEN), black_box(ALIGN));
                    keep_addr(a, r);
                }
            });
    }

    #[divan::bench]
    fn bumpalo_alloc_layout(b: Bencher) {
        b.with_inputs(|| bump(N * LEN)).bench_local_refs(|bump| {
            for _ in 0..N {
                black_box(bump.alloc_layout(black_box(LAYOUT)));
            }
        });
    }

    #[divan::bench]
    fn bumpalo_try_alloc_layout(b: Bencher) {
        b.with_inputs(|| bump(N * LEN)).bench_local_refs(|bump| {
            for _ in 0..N {
                let _ = black_box(bump.try_alloc_layout(black_box(LAYOUT)));
            }
        });
    }
}
