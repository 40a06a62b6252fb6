//! The allocation fast path against bumpalo 3, in the same run.
//!
//! Each iteration makes 10,000 allocations from a fresh arena or `Bump`; creating (mmap /
//! malloc) and dropping it happen outside the timed part (divan's `with_inputs`). Nothing is
//! written to the memory, so no page faults are timed either: this is the bump arithmetic and
//! the bookkeeping alone.
//!
//! What each iteration hands to `black_box` matters as much as the allocator: bumpalo returns a
//! pointer (one register), cowscope a `Block` descriptor (two words, 16 bytes: the offset
//! with the arena id, the length with the generation; the index and label stay in the arena). The
//! sizes ask for the same thing both ways: `alloc(16)` and a 16-byte, align-1 `Layout`;
//! `alloc_layout(Layout::new::<u64>())` on both sides for u64s. So cowscope is measured:
//!
//! * `cowscope_ledger_off`: `ArenaConfig::ledger(false)`, the inlined fast path; the caller
//!   keeps the block's address (`as_ptr() + offset`), the same thing bumpalo returns. The other
//!   `Block` fields are then dead and never materialised, as in a caller that only uses the
//!   memory.
//! * `cowscope_whole_block`: the same, but the caller keeps the whole `Block` (`?` or a match
//!   on the result, then the block to `black_box`): every field goes to memory on every
//!   allocation. Its baseline is `bumpalo_alloc_layout`, which returns its pointer unwrapped.
//! * `cowscope_whole_result`: the `Result<Block, ArenaError>` itself to `black_box`, tag and
//!   all; its baseline is `bumpalo_try_alloc_layout`, whose `Result` is black-boxed the same way.
//! * `cowscope_ledger_on`: the default, every block recorded in the ledger (the cost of leak,
//!   overflow and misuse detection: one 24-byte record appended to the buffer the arena
//!   reserved when it was made); the caller keeps the address.
//! * `bumpalo_alloc_layout`: `Bump::alloc_layout` (infallible; would grow a new chunk).
//! * `bumpalo_try_alloc_layout`: `Bump::try_alloc_layout` (fallible, like `Arena::alloc`).
//!
//! u64s also run `cowscope_aligned_whole_block`: `alloc_aligned(len, align)` with plain
//! integers, whose alignment must be checked for a power of two on every call.
//!
//! Run: `cargo bench --bench alloc`.

use std::alloc::Layout;

use bumpalo::Bump;
use cowscope::arena::{Arena, ArenaConfig, ArenaError, Block};
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
fn keep_addr(a: &Arena, r: Result<Block, ArenaError>) {
    match r {
        Ok(b) => {
            black_box(a.as_ptr().wrapping_add(b.offset()));
        }
        Err(e) => fail(e),
    }
}

/// Keep the whole block, as a caller that unwraps it does.
#[inline(always)]
fn keep_block(r: Result<Block, ArenaError>) {
    match r {
        Ok(b) => {
            black_box(b);
        }
        Err(e) => fail(e),
    }
}

#[cold]
#[inline(never)]
fn fail(e: ArenaError) -> ! {
    panic!("the bench arena is large enough: {e}")
}

fn bump(bytes: usize) -> Bump {
    // Pre-sized so no chunk is added during the timed loop.
    Bump::with_capacity(bytes)
}

/// The four cowscope loops and the two bumpalo ones for one size; `$alloc` is how cowscope is
/// asked (`|a| a.alloc(..)`), `$layout` what bumpalo is asked for.
macro_rules! shapes {
    ($len:expr, $layout:expr, $alloc:expr) => {
        #[divan::bench]
        fn cowscope_ledger_off(b: Bencher) {
            b.with_inputs(|| arena(N * $len, false))
                .bench_local_refs(|a| {
                    for _ in 0..N {
                        let r = $alloc(&mut *a);
                        keep_addr(a, r);
                    }
                });
        }

        #[divan::bench]
        fn cowscope_whole_block(b: Bencher) {
            b.with_inputs(|| arena(N * $len, false))
                .bench_local_refs(|a| {
                    for _ in 0..N {
                        keep_block($alloc(&mut *a));
                    }
                });
        }

        #[divan::bench]
        fn cowscope_whole_result(b: Bencher) {
            b.with_inputs(|| arena(N * $len, false))
                .bench_local_refs(|a| {
                    for _ in 0..N {
                        let r = $alloc(&mut *a);
                        black_box(&r);
                    }
                });
        }

        #[divan::bench]
        fn cowscope_ledger_on(b: Bencher) {
            b.with_inputs(|| arena(N * $len, true))
                .bench_local_refs(|a| {
                    for _ in 0..N {
                        let r = $alloc(&mut *a);
                        keep_addr(a, r);
                    }
                });
        }

        #[divan::bench]
        fn bumpalo_alloc_layout(b: Bencher) {
            b.with_inputs(|| bump(N * $len)).bench_local_refs(|bump| {
                for _ in 0..N {
                    black_box(bump.alloc_layout(black_box($layout)));
                }
            });
        }

        #[divan::bench]
        fn bumpalo_try_alloc_layout(b: Bencher) {
            b.with_inputs(|| bump(N * $len)).bench_local_refs(|bump| {
                for _ in 0..N {
                    let _ = black_box(bump.try_alloc_layout(black_box($layout)));
                }
            });
        }
    };
}

/// 10,000 x 16 bytes, alignment 1 (the seed's unaligned bump).
mod bytes16 {
    use super::*;
    const LEN: usize = 16;
    const LAYOUT: Layout = match Layout::from_size_align(LEN, 1) {
        Ok(l) => l,
        Err(_) => panic!("16-byte layout"),
    };

    shapes!(LEN, LAYOUT, |a: &mut Arena| a.alloc(black_box(LEN)));
}

/// 10,000 u64-sized allocations: 8 bytes, alignment 8.
mod u64s {
    use super::*;
    const LEN: usize = size_of::<u64>();
    const LAYOUT: Layout = Layout::new::<u64>();

    shapes!(LEN, LAYOUT, |a: &mut Arena| a
        .alloc_layout(black_box(LAYOUT)));

    #[divan::bench]
    fn cowscope_aligned_whole_block(b: Bencher) {
        b.with_inputs(|| arena(N * LEN, false))
            .bench_local_refs(|a| {
                for _ in 0..N {
                    keep_block(a.alloc_aligned(black_box(LEN), black_box(align_of::<u64>())));
                }
            });
    }
}
