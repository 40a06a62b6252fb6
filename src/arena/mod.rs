//! The arena engine: one anonymous mapping between guard regions, bump allocation with checked
//! arithmetic, a ledger of every block, red zones, dumps, snapshots and diffs.
//!
//! What the seed's 09a/09b do by hand, done so that every mistake they make is reported:
//!
//! * the arena's capacity is what the caller asked for (the seed's `ARENA_SIZE`); only its
//!   `mmap` is rounded up to whole pages, with PROT_NONE guard pages on both sides (its own VMA;
//!   an overrun of the mapping faults). The slack between the logical end and the end of the
//!   last page is mapped, so an overrun into it does not fault: the engine watches it instead,
//!   like a red zone;
//! * [`Arena::alloc`] bumps upwards like the seed and, like the seed's `arena_alloc`, refuses a
//!   block that would cross the logical end, even when the last page has room; every addition
//!   is checked, so a length near `usize::MAX` is an error, never a wrap; results are
//!   `#[must_use]` (the seed ignored a NULL);
//! * [`Arena::write`] is the seed's `strcpy`: it may run past the block's end and past the
//!   logical end into the slack (never past the mapping), and reports exactly how far past each;
//! * [`Arena::check`] reports leaks, overflows (including damaged red zones and a damaged
//!   slack), double releases, use after reset and stale bytes.
//!
//! The engine never prints: it returns data, and the CLI renders it.
//!
//! # Example
//! ```
//! use cowscope::arena::{Arena, ArenaConfig};
//!
//! let mut arena = Arena::new(ArenaConfig::new(256)).unwrap();
//! assert_eq!(arena.capacity(), 256); // the seed's ARENA_SIZE; the mapping is one whole page
//! assert!(arena.alloc(257).is_err()); // refused, although the page has room
//! let a = arena.alloc(32).unwrap();
//! let leaked = arena.alloc(32).unwrap();
//! arena.write(&a, 0, b"hi\0").unwrap();
//! let findings = arena.check();
//! assert_eq!(Some(findings.leaks[0].index), arena.index_of(&leaked));
//! assert!(arena.dump().starts_with("hi."));
//! ```

mod ledger;
mod map;

pub use ledger::{
    BlockRef, Findings, LedgerEntry, Misuse, Overflow, OverflowSource, SlackDamage, StaleRange,
};

use std::alloc::Layout;
use std::fmt;
use std::io;
use std::num::NonZeroU64;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use ledger::{Labels, Ledger, block_ref};
use map::Mapping;

/// The value written into red zones. Not printable, not zero, not a common fill byte.
pub const CANARY: u8 = 0xCB;

/// Source of arena ids, so a block presented to the wrong arena is recognised.
static NEXT_ARENA_ID: AtomicU32 = AtomicU32::new(1);

/// Why the arena refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArenaError {
    /// Zero-length allocations are refused: a zero-length block would share its offset with the
    /// next one and make the ledger ambiguous.
    #[error(
        "zero-length allocation refused at offset {offset} of capacity {capacity}: blocks are at least one byte"
    )]
    ZeroLength {
        /// The arena's bump offset at the time.
        offset: usize,
        /// The arena's capacity.
        capacity: usize,
    },
    /// The request does not fit in what is left.
    #[error(
        "arena out of memory: {len} bytes (align {align}, red zone {red_zone}) do not fit at offset {offset} of capacity {capacity}"
    )]
    OutOfMemory {
        /// Requested length.
        len: usize,
        /// Requested alignment.
        align: usize,
        /// Red-zone bytes that would follow the block.
        red_zone: usize,
        /// The bump offset at the time.
        offset: usize,
        /// The arena's capacity.
        capacity: usize,
    },
    /// The alignment is not a power of two.
    #[error(
        "alignment {align} is not a power of two (allocation at offset {offset} of capacity {capacity})"
    )]
    BadAlign {
        /// The alignment asked for.
        align: usize,
        /// The bump offset at the time.
        offset: usize,
        /// The arena's capacity.
        capacity: usize,
    },
    /// A write would run past the end of the arena's mapping (nothing was written). A write
    /// that crosses only the logical end (into the slack of the last page) is not refused: it
    /// is written and reported as an overflow.
    #[error(
        "write of {len} bytes at offset {block_offset}+{offset_in_block} runs past the end of the arena's mapping ({mapped} bytes for capacity {capacity}); nothing was written"
    )]
    OutOfBounds {
        /// The block's offset.
        block_offset: usize,
        /// Offset of the write inside the block.
        offset_in_block: usize,
        /// Bytes to write.
        len: usize,
        /// The arena's capacity.
        capacity: usize,
        /// Bytes mapped (the capacity rounded up to whole pages).
        mapped: usize,
    },
    /// The block was already released.
    #[error(
        "double release: block {index} at offset {offset} was already released (capacity {capacity})"
    )]
    DoubleRelease {
        /// Block index.
        index: usize,
        /// Block offset.
        offset: usize,
        /// The arena's capacity.
        capacity: usize,
    },
    /// The block belongs to a generation before the last reset.
    #[error(
        "use after reset: {} at offset {offset} is from generation {block_generation}, the arena (capacity {capacity}) is at generation {generation}",
        block_name(*index)
    )]
    UseAfterReset {
        /// Block index (`None` without the ledger, which is what derives it).
        index: Option<usize>,
        /// Block offset.
        offset: usize,
        /// The block's generation.
        block_generation: u32,
        /// The arena's generation.
        generation: u32,
        /// The arena's capacity.
        capacity: usize,
    },
    /// The block was released and then written.
    #[error(
        "use after release: block {index} at offset {offset} was released (capacity {capacity})"
    )]
    UseAfterRelease {
        /// Block index.
        index: usize,
        /// Block offset.
        offset: usize,
        /// The arena's capacity.
        capacity: usize,
    },
    /// The block was handed out by another arena (or forged).
    #[error(
        "{} at offset {offset} does not belong to this arena (capacity {capacity})",
        block_name(*index)
    )]
    ForeignBlock {
        /// Block index, when this arena's ledger knows it (`None` for a block of another
        /// arena: only its own arena can derive its index).
        index: Option<usize>,
        /// Block offset.
        offset: usize,
        /// This arena's capacity.
        capacity: usize,
    },
    /// The operation needs the ledger, which is off.
    #[error("{op} needs the ledger; build the arena with ArenaConfig::ledger(true)")]
    NoLedger {
        /// The operation.
        op: &'static str,
    },
    /// The arena was already released (munmapped).
    #[error("cannot {op}: the arena (capacity {capacity}) was already released")]
    Released {
        /// The operation.
        op: &'static str,
        /// The capacity it had.
        capacity: usize,
    },
    /// The configuration cannot be honoured.
    #[error("invalid arena configuration: {reason} (got {value})")]
    BadConfig {
        /// What is wrong.
        reason: &'static str,
        /// The offending value.
        value: usize,
    },
    /// `mmap` failed.
    #[error("mmap of {len} bytes for the arena failed: {errno}")]
    Map {
        /// Bytes asked for.
        len: usize,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `munmap` failed.
    #[error("munmap of {len} bytes of the arena failed: {errno}")]
    Unmap {
        /// Bytes being unmapped.
        len: usize,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `mremap` refused to grow the arena (it stayed where it was, unchanged).
    #[error(
        "mremap growing the arena's mapping from {old_mapped} to {new_mapped} bytes failed: {errno}"
    )]
    Remap {
        /// Bytes mapped before.
        old_mapped: usize,
        /// Bytes the mapping was to grow to.
        new_mapped: usize,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `madvise` refused advice given in the configuration.
    #[error("madvise({advice}) on the arena (offset 0, capacity {capacity}) failed: {errno}")]
    Advise {
        /// The advice.
        advice: Advice,
        /// The arena's capacity.
        capacity: usize,
        /// The kernel's answer.
        errno: Errno,
    },
}

/// "block N", or "a block" when its index is unknown (ledger off, or another arena's block).
fn block_name(index: Option<usize>) -> String {
    match index {
        Some(i) => format!("block {i}"),
        None => "a block".to_string(),
    }
}

/// Advice that cannot change what this process reads from the arena, so it is safe to give at
/// any time (memmap2's split: destructive advice is [`UncheckedAdvice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Advice {
    /// `MADV_WIPEONFORK`: a child sees zeroes (private mappings only).
    WipeOnFork,
    /// `MADV_KEEPONFORK`: undo WipeOnFork.
    KeepOnFork,
    /// `MADV_DONTFORK`: the child does not inherit the mapping at all.
    DontFork,
    /// `MADV_DOFORK`: undo DontFork.
    DoFork,
    /// `MADV_HUGEPAGE`: eligible for transparent huge pages (THP mode `madvise`).
    HugePage,
    /// `MADV_NOHUGEPAGE`: never back with huge pages.
    NoHugePage,
    /// `MADV_MERGEABLE`: let KSM merge identical pages.
    Mergeable,
    /// `MADV_UNMERGEABLE`: undo Mergeable.
    Unmergeable,
}

impl Advice {
    /// The `MADV_*` constant.
    pub fn as_raw(self) -> libc::c_int {
        match self {
            Advice::WipeOnFork => libc::MADV_WIPEONFORK,
            Advice::KeepOnFork => libc::MADV_KEEPONFORK,
            Advice::DontFork => libc::MADV_DONTFORK,
            Advice::DoFork => libc::MADV_DOFORK,
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::NoHugePage => libc::MADV_NOHUGEPAGE,
            Advice::Mergeable => libc::MADV_MERGEABLE,
            Advice::Unmergeable => libc::MADV_UNMERGEABLE,
        }
    }

    /// The constant's name, e.g. `MADV_WIPEONFORK`.
    pub fn name(self) -> &'static str {
        match self {
            Advice::WipeOnFork => "MADV_WIPEONFORK",
            Advice::KeepOnFork => "MADV_KEEPONFORK",
            Advice::DontFork => "MADV_DONTFORK",
            Advice::DoFork => "MADV_DOFORK",
            Advice::HugePage => "MADV_HUGEPAGE",
            Advice::NoHugePage => "MADV_NOHUGEPAGE",
            Advice::Mergeable => "MADV_MERGEABLE",
            Advice::Unmergeable => "MADV_UNMERGEABLE",
        }
    }
}

impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Advice that can change or discard the arena's contents; only through
/// [`Arena::advise_unchecked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UncheckedAdvice {
    /// `MADV_DONTNEED`: private pages are dropped and read back as zeroes.
    DontNeed,
    /// `MADV_FREE`: the kernel may drop pages lazily; contents become zero at an unknown time.
    Free,
}

impl UncheckedAdvice {
    /// The `MADV_*` constant.
    pub fn as_raw(self) -> libc::c_int {
        match self {
            UncheckedAdvice::DontNeed => libc::MADV_DONTNEED,
            UncheckedAdvice::Free => libc::MADV_FREE,
        }
    }
}

/// How to build an [`Arena`]. Builder; every setter takes and returns `self`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArenaConfig {
    capacity: usize,
    shared: bool,
    advice: Vec<Advice>,
    align: usize,
    populate: bool,
    guard_pages: usize,
    red_zone: usize,
    ledger: bool,
}

impl ArenaConfig {
    /// An arena of exactly `capacity` bytes (its mapping is rounded up to whole pages, the
    /// capacity is not): private, page-aligned, not populated, one guard page each side, no red
    /// zone, ledger on.
    pub fn new(capacity: usize) -> Self {
        ArenaConfig {
            capacity,
            shared: false,
            advice: Vec::new(),
            align: 0,
            populate: false,
            guard_pages: 1,
            red_zone: 0,
            ledger: true,
        }
    }

    /// Map `MAP_SHARED | MAP_ANONYMOUS` (a forked child then writes the same pages) instead of
    /// the default `MAP_PRIVATE`.
    pub fn shared(mut self) -> Self {
        self.shared = true;
        self
    }

    /// Give this advice right after mapping (before populating). Repeatable; applied in order.
    pub fn advise(mut self, a: Advice) -> Self {
        self.advice.push(a);
        self
    }

    /// Align the arena's base to `bytes` (a power of two; e.g. 2 MiB so THP can back it).
    /// Values below the page size mean page alignment.
    pub fn align(mut self, bytes: usize) -> Self {
        self.align = bytes;
        self
    }

    /// Fault every page in at creation. This is *not* `MAP_POPULATE`: after the advice is given,
    /// cowscope writes one zero byte at the start of each page, so the faults happen after
    /// `MADV_HUGEPAGE` (and can be served by a huge page) and every page is a real, written
    /// page rather than the shared zero page.
    pub fn populate(mut self, yes: bool) -> Self {
        self.populate = yes;
        self
    }

    /// PROT_NONE guard pages on each side (default 1; 0 allows the kernel to merge the arena
    /// with a neighbouring mapping and lets an overrun go unnoticed).
    pub fn guard_pages(mut self, n: usize) -> Self {
        self.guard_pages = n;
        self
    }

    /// Canary bytes ([`CANARY`]) placed after every block and checked by [`Arena::check`]
    /// (default 0). Needs the ledger to be checked.
    pub fn red_zone(mut self, bytes: usize) -> Self {
        self.red_zone = bytes;
        self
    }

    /// Keep the ledger (default on). Off gives the fastest allocation path, but no leak,
    /// overflow or misuse reports.
    pub fn ledger(mut self, on: bool) -> Self {
        self.ledger = on;
        self
    }

    /// The capacity asked for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// A block handed out by [`Arena::alloc`]. A plain description, 16 bytes (a slice's size): the
/// offset and the arena's id in one word, the non-zero length and the generation it was
/// allocated in in the other (offsets and lengths take the low [`SPAN_BITS`] bits, which is why
/// a capacity is below [`MAX_CAPACITY`]; the id and generation the high [`TAG_BITS`], kept
/// modulo 2^24). It does not borrow the arena. Writes go through [`Arena::write`], which checks
/// the id and generation (a stale or foreign block is refused). Its index and label, if any,
/// stay with the arena ([`Arena::index_of`], [`Arena::label`], [`Arena::generation_of`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// `offset | id << SPAN_BITS`.
    offset_id: u64,
    /// `len | generation << SPAN_BITS`; never zero because `len` is not.
    len_generation: NonZeroU64,
}

/// Bits of a [`Block`] word that hold its offset or length.
pub const SPAN_BITS: u32 = 40;
/// Bits of a [`Block`] word that hold its arena's id or its generation (modulo 2^24).
pub const TAG_BITS: u32 = 64 - SPAN_BITS;
const SPAN_MASK: u64 = (1 << SPAN_BITS) - 1;
const TAG_MASK: u32 = (1 << TAG_BITS) - 1;
/// The largest capacity an arena can have: one byte under 1 TiB, so that every offset and
/// length fits a [`Block`]'s [`SPAN_BITS`].
pub const MAX_CAPACITY: usize = (1 << SPAN_BITS) - 1;
const TOO_LARGE: &str = "the capacity is above 1 TiB - 1 byte (MAX_CAPACITY: a block holds offsets and lengths in 40 bits)";

impl Block {
    /// Offset of the first byte from the arena's base.
    pub fn offset(&self) -> usize {
        (self.offset_id & SPAN_MASK) as usize
    }
    /// Length in bytes (never zero).
    pub fn len(&self) -> usize {
        (self.len_generation.get() & SPAN_MASK) as usize
    }
    /// Always false: zero-length blocks are refused.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// One past the last byte.
    pub fn end(&self) -> usize {
        self.offset() + self.len()
    }
    /// `offset..end`.
    pub fn range(&self) -> Range<usize> {
        self.offset()..self.end()
    }
    /// The id of the arena that handed the block out (modulo 2^24).
    fn arena_tag(&self) -> u32 {
        (self.offset_id >> SPAN_BITS) as u32
    }
    /// The generation the block was allocated in, modulo 2^24 ([`Arena::generation_of`] gives
    /// it whole).
    fn generation_tag(&self) -> u32 {
        (self.len_generation.get() >> SPAN_BITS) as u32
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("offset", &self.offset())
            .field("len", &self.len())
            .field("arena", &self.arena_tag())
            .field("generation_tag", &self.generation_tag())
            .finish()
    }
}

/// What [`Arena::write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Absolute offset of the first byte written.
    pub offset: usize,
    /// Bytes written.
    pub len: usize,
    /// Bytes written past the block's end (0 for an in-bounds write).
    pub bytes_past_end: usize,
    /// Bytes written past the arena's logical end, into the slack of its last page (always at
    /// most `bytes_past_end`: a block never crosses the logical end).
    pub bytes_past_capacity: usize,
    /// Other blocks whose bytes the write reached (ledger on only).
    pub victims: Vec<usize>,
}

/// What [`Arena::reset`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResetOutcome {
    /// `used` before the reset.
    pub previous_used: usize,
    /// Non-zero bytes left inside the capacity (always 0 after a zeroing reset, which also
    /// zeroes whatever an overrun left in the slack).
    pub stale_bytes: usize,
    /// Whether the bytes were zeroed.
    pub zeroed: bool,
}

/// What [`Arena::grow`] did. Offsets (and so [`Block`]s) stay valid across a grow; absolute
/// addresses taken before a move (`base_addr() + offset`, `as_ptr()`) dangle afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GrowOutcome {
    /// Base address before.
    pub old_base: usize,
    /// Base address after (equal to `old_base` unless `moved`).
    pub new_base: usize,
    /// Capacity before.
    pub old_capacity: usize,
    /// Capacity after (what was asked for).
    pub new_capacity: usize,
    /// Bytes mapped before (whole pages).
    pub old_mapped: usize,
    /// Bytes mapped after (whole pages; equal to `old_mapped` when the new capacity still fits
    /// in the last page).
    pub new_mapped: usize,
    /// Whether the arena moved (the pages after its end guard were not free).
    pub moved: bool,
    /// After a move: whether the old guard regions were unmapped (a failure leaks only those
    /// PROT_NONE pages).
    pub old_guards_unmapped: bool,
}

/// A copy of the bytes the arena has touched, for [`Arena::diff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    bytes: Vec<u8>,
}

impl Snapshot {
    /// The copied bytes (offset 0 up to the arena's extent at the time).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Why the slow path refused; turned into an [`ArenaError`] by `refusal`.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Released,
    ZeroLength,
    BadAlign,
    OutOfMemory,
}

/// A bump arena over one anonymous mapping. See the [module docs](self).
#[derive(Debug)]
pub struct Arena {
    // Hot fields first: the allocation fast path reads only these.
    /// Address of the last byte in use: `base + used - 1` (`base - 1` when empty; the base is
    /// never 0). Kept one below the next free byte because rounding up is then one `or`
    /// (`(last | mask) + 1` is the next multiple of `mask + 1` at or after `last + 1`), so the
    /// next aligned allocation waits for two operations, not four (see [`Arena::bump`]).
    /// Invariant: `base - 1 <= last < base + capacity`.
    last: usize,
    /// Where the ledger-off fast path stops: `base + capacity` (the logical end, not the
    /// mapping's) while allocation needs no bookkeeping (ledger off, no red zone, not
    /// released), else 0, so that the path tests no flag: a closed path's room test fails.
    fast_end: usize,
    /// The same for the ledger-on fast path (ledger on, no red zone, not released), which
    /// appends one ledger record and nothing else.
    record_end: usize,
    /// What the caller asked for; `map.len` is this rounded up to whole pages.
    capacity: usize,
    /// The high bits of the blocks handed out now: `id << SPAN_BITS` (offset word) and
    /// `generation << SPAN_BITS` (length word), each modulo 2^24.
    id_bits: u64,
    generation_bits: u64,
    id: u32,
    generation: u32,
    map: Mapping,
    released: bool,
    /// Highest offset the engine ever handed out or wrote (before resets too; at most the
    /// mapping's length, past the capacity after a write into the slack). Beyond it the mapping
    /// still holds what mmap gave (zeroes), unless someone wrote through `as_ptr`.
    high_water: usize,
    red_zone: usize,
    shared: bool,
    align: usize,
    advice: Vec<Advice>,
    /// What only the slow path and the ledger-on path change, out of line: the slow path is
    /// handed this box (and values), never the arena, so a caller's allocation loop can keep
    /// the cursor in a register (see [`Arena::alloc_slow`]).
    cold: Box<Cold>,
}

/// The arena's state the ledger-off fast path never touches: the ledger (the ledger-on fast
/// path appends its record here) and the label table.
#[derive(Debug)]
struct Cold {
    ledger: Option<Ledger>,
    /// Labels of labeled blocks, kept over resets (ledger on or off).
    labels: Labels,
}

/// What the slow path reads from the arena, passed by value (see [`Arena::alloc_slow`]).
#[derive(Debug, Clone, Copy)]
struct SlowInput {
    base: *mut u8,
    used: usize,
    capacity: usize,
    red_zone: usize,
    released: bool,
    generation: u32,
}

// SAFETY: the arena exclusively owns its mapping (no thread-local or shared state); moving it to
// another thread moves that ownership.
unsafe impl Send for Arena {}
// Deliberately not `Sync`: the arena is single-threaded (the seed's question "Is this
// thread-safe?"); sharing one between threads is refused by the compiler, as the compile-fail
// doctest on `experiments::threads::ConcurrentArena` shows. That type is the shareable one.

impl Arena {
    /// Map a new arena.
    ///
    /// # Errors
    /// [`ArenaError::BadConfig`] for a zero capacity, a non-power-of-two alignment or sizes that
    /// overflow; [`ArenaError::Map`] when the kernel refuses the mapping;
    /// [`ArenaError::Advise`] when it refuses configured advice (e.g. WipeOnFork on a shared
    /// mapping), in which case nothing stays mapped.
    pub fn new(cfg: ArenaConfig) -> Result<Arena, ArenaError> {
        let page = crate::kernel::page_size();
        if cfg.capacity == 0 {
            return Err(ArenaError::BadConfig {
                reason: "the capacity must be at least one byte",
                value: 0,
            });
        }
        if cfg.capacity > MAX_CAPACITY {
            return Err(ArenaError::BadConfig {
                reason: TOO_LARGE,
                value: cfg.capacity,
            });
        }
        let capacity = cfg.capacity;
        let mapped = capacity
            .checked_next_multiple_of(page)
            .filter(|c| *c <= isize::MAX as usize)
            .ok_or(ArenaError::BadConfig {
                reason: "the capacity cannot be rounded up to whole pages",
                value: cfg.capacity,
            })?;
        if cfg.align != 0 && !cfg.align.is_power_of_two() {
            return Err(ArenaError::BadConfig {
                reason: "the base alignment is not a power of two",
                value: cfg.align,
            });
        }
        let align = cfg.align.max(page);
        let guard_len = cfg
            .guard_pages
            .checked_mul(page)
            .ok_or(ArenaError::BadConfig {
                reason: "the guard pages overflow the address space",
                value: cfg.guard_pages,
            })?;
        let map = map::map(mapped, guard_len, align, page, cfg.shared)?;
        let base_addr = map.base.as_ptr() as usize;
        // Linux maps user memory below TASK_SIZE (2^47, 2^56 with 5-level paging on x86-64;
        // at most 2^52 on arm64), far below isize::MAX: the fast path's rounding relies on it.
        debug_assert!(base_addr + mapped <= isize::MAX as usize);
        let id = NEXT_ARENA_ID.fetch_add(1, Ordering::Relaxed) & TAG_MASK;
        let mut arena = Arena {
            last: base_addr - 1,
            fast_end: 0,
            record_end: 0,
            capacity,
            id_bits: u64::from(id) << SPAN_BITS,
            generation_bits: 0,
            id,
            generation: 0,
            map,
            released: false,
            high_water: 0,
            red_zone: cfg.red_zone,
            shared: cfg.shared,
            align,
            advice: Vec::new(),
            cold: Box::new(Cold {
                ledger: cfg.ledger.then(|| Ledger::for_capacity(capacity)),
                labels: Labels::default(),
            }),
        };
        arena.set_fast_ends();
        // On error below, dropping `arena` unmaps everything.
        for &a in &cfg.advice {
            map::madvise(&arena.map, a.as_raw()).map_err(|errno| ArenaError::Advise {
                advice: a,
                capacity,
                errno,
            })?;
            arena.advice.push(a);
        }
        if cfg.populate {
            let base = arena.map.base.as_ptr();
            for off in (0..mapped).step_by(page) {
                // SAFETY: off < mapped, so base+off is inside our live read-write mapping;
                // no Rust reference to the arena's bytes exists yet. Volatile so the store (and
                // hence the fault) is not elided.
                unsafe { base.add(off).write_volatile(0) };
            }
        }
        Ok(arena)
    }

    /// Address of the first arena byte.
    pub fn base_addr(&self) -> usize {
        self.map.base.as_ptr() as usize
    }

    /// Pointer to the first arena byte. Writing through it bypasses the ledger (red zones and
    /// the slack still catch damage); it is valid for [`Arena::mapped_len`] bytes (the bytes
    /// past [`Arena::capacity`] are the slack) until the arena is released or dropped.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.base.as_ptr()
    }

    /// Usable bytes: exactly what the configuration asked for (the seed's `ARENA_SIZE`).
    /// Allocation stops here even when the last page has room.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes mapped: the capacity rounded up to whole pages. Everything page-level (madvise,
    /// munmap, populate, grow, [`Arena::page_count`], the VMA in smaps) covers this length.
    pub fn mapped_len(&self) -> usize {
        self.map.len
    }

    /// Bytes handed out so far (including alignment padding and red zones).
    #[inline(always)]
    pub fn used(&self) -> usize {
        self.last + 1 - self.base_addr()
    }

    /// Open the fast path the arena takes (ledger off or on; none with red zones or once
    /// released) up to the logical end, and close the other.
    fn set_fast_ends(&mut self) {
        let end = self.base_addr() + self.capacity;
        let plain = self.red_zone == 0 && !self.released;
        let ledger = self.cold.ledger.is_some();
        self.fast_end = if plain && !ledger { end } else { 0 };
        self.record_end = if plain && ledger { end } else { 0 };
    }

    fn set_used(&mut self, used: usize) {
        debug_assert!(used <= self.capacity, "invariant: used <= capacity");
        self.last = self.base_addr() + used - 1;
    }

    /// Pages in the arena's mapping (`mapped_len / page size`).
    pub fn page_count(&self) -> usize {
        self.map.len / crate::kernel::page_size()
    }

    /// Bytes of PROT_NONE guard on each side.
    pub fn guard_len(&self) -> usize {
        self.map.guard_len
    }

    /// Whether the mapping is `MAP_SHARED`.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Base alignment in bytes (at least the page size).
    pub fn alignment(&self) -> usize {
        self.align
    }

    /// Advice given so far through the configuration or [`Arena::advise`], in order.
    pub fn advice(&self) -> &[Advice] {
        &self.advice
    }

    /// Red-zone bytes after each block.
    pub fn red_zone(&self) -> usize {
        self.red_zone
    }

    /// Number of resets so far.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Whether [`Arena::release`] has unmapped the arena.
    pub fn is_released(&self) -> bool {
        self.released
    }

    /// Whether the ledger is on.
    pub fn has_ledger(&self) -> bool {
        self.cold.ledger.is_some()
    }

    /// The blocks of the current generation (empty without the ledger), built from the
    /// ledger's records.
    pub fn blocks(&self) -> Vec<LedgerEntry> {
        let Some(l) = self.cold.ledger.as_ref() else {
            return Vec::new();
        };
        l.indexed()
            .map(|(index, r)| LedgerEntry {
                index,
                offset: r.offset,
                len: r.len,
                red_zone: self.red_zone,
                label: self.cold.labels.get(self.generation, r.offset),
                written: r.written,
                released: r.released,
            })
            .collect()
    }

    /// The label `b` was allocated with ([`Arena::alloc_labeled`]), if any; also for a block
    /// of an earlier generation. `None` for a block of another arena.
    pub fn label(&self, b: &Block) -> Option<&'static str> {
        if b.arena_tag() != self.id {
            return None;
        }
        self.cold.labels.get(self.full_generation(b), b.offset())
    }

    /// The generation `b` was allocated in (the number of resets before it), or `None` for a
    /// block of another arena. A block keeps its generation modulo 2^24; this arena
    /// completes it from its own, so it is exact for any block less than 2^24 resets old.
    pub fn generation_of(&self, b: &Block) -> Option<u32> {
        (b.arena_tag() == self.id).then(|| self.full_generation(b))
    }

    /// [`Arena::generation_of`] for a block already known to be this arena's.
    fn full_generation(&self, b: &Block) -> u32 {
        let behind = self.generation.wrapping_sub(b.generation_tag()) & TAG_MASK;
        self.generation.wrapping_sub(behind)
    }

    /// The index of `b`: its place in allocation order over the arena's whole life (from 0,
    /// increasing, never reused, also across resets), derived by the ledger from the block's
    /// generation and offset (blocks of one generation are in offset order). `None` without the
    /// ledger (nothing counts allocations then, so the fast path stores only the cursor), for a
    /// block of another arena, and for a block this arena never handed out.
    pub fn index_of(&self, b: &Block) -> Option<usize> {
        if b.arena_tag() != self.id {
            return None;
        }
        let l = self.cold.ledger.as_ref()?;
        l.index_of(self.full_generation(b), self.generation, b.offset())
    }

    /// Give non-destructive advice for the whole arena.
    ///
    /// # Errors
    /// The kernel's refusal (e.g. `EINVAL` for WipeOnFork on a shared mapping), or an error
    /// when the arena was released.
    pub fn advise(&self, a: Advice) -> io::Result<()> {
        if self.released {
            return Err(io::Error::other("the arena was already released"));
        }
        map::madvise(&self.map, a.as_raw()).map_err(io::Error::from)
    }

    /// Give advice that may discard the arena's contents.
    ///
    /// # Safety
    /// After `DontNeed` a private arena reads back as zeroes; after `Free` its pages may become
    /// zero at any later time. The caller must hold no slice from [`Arena::bytes`] across the
    /// call and must not rely on the contents afterwards (see `madvise(2)`). The ledger is not
    /// told: written blocks stay marked written.
    ///
    /// # Errors
    /// The kernel's refusal, or an error when the arena was released.
    pub unsafe fn advise_unchecked(&self, a: UncheckedAdvice) -> io::Result<()> {
        if self.released {
            return Err(io::Error::other("the arena was already released"));
        }
        map::madvise(&self.map, a.as_raw()).map_err(io::Error::from)
    }

    /// Allocate `len` bytes at the bump offset (no alignment, like the seed).
    ///
    /// # Errors
    /// [`ArenaError::ZeroLength`], [`ArenaError::OutOfMemory`] when the block would cross the
    /// capacity, as the seed's `arena_alloc` refuses (even when the last page has room; also
    /// for `len` near `usize::MAX`: the arithmetic is checked, never wraps),
    /// [`ArenaError::Released`].
    #[must_use = "an allocation nobody keeps is the seed's 09b leak; the error must be looked at too"]
    #[inline(always)]
    pub fn alloc(&mut self, len: usize) -> Result<Block, ArenaError> {
        self.bump(len, 0)
    }

    /// Allocate `len` bytes whose address is a multiple of `align` (a power of two).
    ///
    /// # Errors
    /// As [`Arena::alloc`], plus [`ArenaError::BadAlign`].
    #[must_use = "an allocation nobody keeps is the seed's 09b leak; the error must be looked at too"]
    #[inline(always)]
    pub fn alloc_aligned(&mut self, len: usize, align: usize) -> Result<Block, ArenaError> {
        if align.is_power_of_two() {
            self.bump(len, align - 1)
        } else {
            // Refused there, with the arena's offset and capacity in the error.
            self.alloc_slow(len, align, None)
                .map(|start| self.hand_out(start, len))
        }
    }

    /// Allocate `layout.size()` bytes at a multiple of `layout.align()`: the same as
    /// [`Arena::alloc_aligned`], for callers that hold a [`Layout`] (bumpalo's `alloc_layout`);
    /// the alignment is a power of two by construction, so nothing checks it.
    ///
    /// # Errors
    /// As [`Arena::alloc`].
    #[must_use = "an allocation nobody keeps is the seed's 09b leak; the error must be looked at too"]
    #[inline(always)]
    pub fn alloc_layout(&mut self, layout: Layout) -> Result<Block, ArenaError> {
        self.bump(layout.size(), layout.align() - 1)
    }

    /// The fast paths: bump the cursor to the next multiple of `mask + 1` (a power of two) and
    /// past `len`, recording the block when the ledger is on; anything else (zero length, no
    /// room, red zones, released) goes to the slow path, which refuses or does the bookkeeping.
    ///
    /// `t = last | mask` is the block's first address minus one, and the new `last` is
    /// `next = t + len`: the next allocation waits for an `or` and an `add` (bumpalo, bumping
    /// down, for a `sub` and an `and`). Nothing wraps: `last < end <= isize::MAX` (user
    /// mappings lie below it, checked when the arena is made) and `mask < align <= 2^63`, so
    /// `t < 2^63`, and the path is only taken for `0 < len < 2^63` (`len as isize > 0`, which
    /// also refuses `len == 0`), so `t + len` fits a `usize`. The block's last byte is `next`,
    /// so it fits when `next < end`; `end` is the path's own end, 0 when the arena may not take
    /// it, so no flag is tested.
    #[inline(always)]
    fn bump(&mut self, len: usize, mask: usize) -> Result<Block, ArenaError> {
        debug_assert!(self.last < self.base_addr() + self.capacity, "invariant");
        let t = self.last | mask;
        let next = t.wrapping_add(len);
        let sane = (len as isize) > 0;
        let start = if sane && next < self.fast_end {
            self.last = next;
            t - (self.base_addr() - 1)
        } else if sane && next < self.record_end {
            self.last = next;
            let start = t - (self.base_addr() - 1);
            self.record(start, len);
            start
        } else {
            self.alloc_slow(len, mask + 1, None)?
        };
        Ok(self.hand_out(start, len))
    }

    /// [`Arena::alloc`] with a label for reports.
    ///
    /// # Errors
    /// As [`Arena::alloc`].
    #[must_use = "an allocation nobody keeps is the seed's 09b leak; the error must be looked at too"]
    pub fn alloc_labeled(&mut self, len: usize, label: &'static str) -> Result<Block, ArenaError> {
        self.alloc_aligned_labeled(len, 1, label)
    }

    /// [`Arena::alloc_aligned`] with a label for reports.
    ///
    /// # Errors
    /// As [`Arena::alloc_aligned`].
    #[must_use = "an allocation nobody keeps is the seed's 09b leak; the error must be looked at too"]
    pub fn alloc_aligned_labeled(
        &mut self,
        len: usize,
        align: usize,
        label: &'static str,
    ) -> Result<Block, ArenaError> {
        let start = self.alloc_slow(len, align, Some(label))?;
        Ok(self.hand_out(start, len))
    }

    /// The fast path's ledger entry: one fixed-size record appended (the buffer was reserved
    /// when the arena was made). The slow path records for itself.
    #[inline(always)]
    fn record(&mut self, offset: usize, len: usize) {
        if let Some(l) = self.cold.ledger.as_mut() {
            l.record(offset, len);
        }
    }

    #[inline(always)]
    fn hand_out(&self, offset: usize, len: usize) -> Block {
        debug_assert!(len != 0, "every path to hand_out refuses a zero length");
        debug_assert!(
            offset as u64 | len as u64 <= SPAN_MASK,
            "capacity <= MAX_CAPACITY"
        );
        Block {
            offset_id: offset as u64 | self.id_bits,
            // SAFETY: every caller has checked `len != 0`: the fast paths in their condition,
            // the slow path by refusing it (`Refusal::ZeroLength`) before returning a start;
            // `len` then stays non-zero under the `or`.
            len_generation: unsafe { NonZeroU64::new_unchecked(len as u64 | self.generation_bits) },
        }
    }

    /// Everything the fast path skips, for the inlined call sites: the cold part takes only the
    /// boxed [`Cold`] state and values, and the arena's cursor is stored here, inline. Were the
    /// arena itself handed to a call, a caller's loop could not keep the cursor (`last`) in a
    /// register across allocations (the call might change it): every allocation would load and
    /// store the arena's fields through memory (1.8x bumpalo instead of 1.2x in
    /// `benches/alloc.rs` when the block still carried an index).
    #[inline(always)]
    fn alloc_slow(
        &mut self,
        len: usize,
        align: usize,
        label: Option<&'static str>,
    ) -> Result<usize, ArenaError> {
        let input = SlowInput {
            base: self.as_ptr(),
            used: self.used(),
            capacity: self.capacity,
            red_zone: self.red_zone,
            released: self.released,
            generation: self.generation,
        };
        let (start, end) = alloc_cold(&mut self.cold, input, len, align, label)?;
        self.set_used(end);
        Ok(start)
    }

    /// The whole arena (`capacity()` bytes, not the slack); empty after release.
    pub fn bytes(&self) -> &[u8] {
        let m = self.mapped_bytes();
        &m[..self.capacity.min(m.len())]
    }

    /// The whole arena (`capacity()` bytes), writable. Writes through it bypass the ledger (red
    /// zones still catch damage).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let capacity = self.capacity;
        let m = self.mapped_bytes_mut();
        let n = capacity.min(m.len());
        &mut m[..n]
    }

    /// The slack: the mapped bytes past the logical end (`capacity()..mapped_len()`), which
    /// nothing may use. Zero unless something overran the arena (reported by
    /// [`Arena::check`]); empty after release and for a capacity of whole pages.
    pub fn slack(&self) -> &[u8] {
        let m = self.mapped_bytes();
        &m[self.capacity.min(m.len())..]
    }

    /// The whole mapping (`mapped_len()` bytes, slack included); empty after release.
    fn mapped_bytes(&self) -> &[u8] {
        if self.released {
            return &[];
        }
        // SAFETY: the mapping is live (not released), read-write and `map.len` long; it lives
        // as long as `self`, and all writes through the engine need `&mut self`.
        unsafe { std::slice::from_raw_parts(self.map.base.as_ptr(), self.map.len) }
    }

    /// The whole mapping, writable.
    fn mapped_bytes_mut(&mut self) -> &mut [u8] {
        if self.released {
            return &mut [];
        }
        // SAFETY: as in `mapped_bytes`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.map.base.as_ptr(), self.map.len) }
    }

    /// The bytes handed out so far (`0..used()`).
    pub fn used_bytes(&self) -> &[u8] {
        let b = self.bytes();
        &b[..self.used().min(b.len())]
    }

    /// Offset up to which the engine has handed out or written bytes (past resets too; past
    /// the capacity after a write that ran into the slack).
    pub fn extent(&self) -> usize {
        self.high_water.max(self.used())
    }

    /// Write `bytes` at `offset_in_block` inside `block`, like the seed's `strcpy`: the write
    /// may run past the block's end (into red zones or the next blocks) and past the logical
    /// end into the slack of the last page (mapped, so it would not fault in C either), but
    /// never past the mapping. An overrun is returned in the outcome and recorded by the ledger
    /// with the exact number of bytes past the block's end and past the capacity.
    ///
    /// # Errors
    /// [`ArenaError::OutOfBounds`] (nothing written), [`ArenaError::ForeignBlock`],
    /// [`ArenaError::UseAfterReset`], [`ArenaError::UseAfterRelease`] (both also recorded as
    /// findings), [`ArenaError::Released`].
    pub fn write(
        &mut self,
        block: &Block,
        offset_in_block: usize,
        bytes: &[u8],
    ) -> Result<WriteOutcome, ArenaError> {
        self.vet(block, "write")?;
        let (capacity, mapped) = (self.capacity, self.map.len);
        let oob = || ArenaError::OutOfBounds {
            block_offset: block.offset(),
            offset_in_block,
            len: bytes.len(),
            capacity,
            mapped,
        };
        let start = block
            .offset()
            .checked_add(offset_in_block)
            .ok_or_else(oob)?;
        let end = start
            .checked_add(bytes.len())
            .filter(|e| *e <= mapped)
            .ok_or_else(oob)?;
        self.mapped_bytes_mut()[start..end].copy_from_slice(bytes);
        self.high_water = self.high_water.max(end);
        let block_end = block.end();
        let past_start = start.max(block_end);
        let bytes_past_end = end.saturating_sub(past_start);
        let bytes_past_capacity = end.saturating_sub(start.max(capacity));
        let mut victims = Vec::new();
        let label = self
            .cold
            .labels
            .get(self.full_generation(block), block.offset());
        if let Some(ledger) = self.cold.ledger.as_mut() {
            let index = ledger.current_index(block.offset());
            if !bytes.is_empty()
                && let Some(e) = index.and_then(|i| ledger.record_mut(i))
            {
                e.written = true;
            }
            if !bytes.is_empty() {
                ledger.mark_fresh(start..end);
            }
            if bytes_past_end > 0
                && let Some(index) = index
            {
                victims = ledger.overlapping(&(past_start..end), index);
                ledger.overflows.push(Overflow {
                    index,
                    offset: block.offset(),
                    len: block.len(),
                    label: label.map(str::to_string),
                    bytes_past_end,
                    bytes_past_capacity,
                    write_offset: start,
                    write_len: bytes.len(),
                    victims: victims.clone(),
                    source: OverflowSource::Write,
                });
            }
        }
        Ok(WriteOutcome {
            offset: start,
            len: bytes.len(),
            bytes_past_end,
            bytes_past_capacity,
            victims,
        })
    }

    /// Check that `block` may be used now; record misuse in the ledger.
    fn vet(&mut self, block: &Block, op: &'static str) -> Result<(), ArenaError> {
        let capacity = self.capacity;
        if self.released {
            return Err(ArenaError::Released { op, capacity });
        }
        if block.arena_tag() != self.id {
            return Err(ArenaError::ForeignBlock {
                index: None,
                offset: block.offset(),
                capacity,
            });
        }
        let index = self.index_of(block);
        let misuse = |index: usize| Misuse {
            block: BlockRef {
                index,
                offset: block.offset(),
                len: block.len(),
                label: self
                    .cold
                    .labels
                    .get(self.full_generation(block), block.offset())
                    .map(str::to_string),
            },
            op: op.to_string(),
        };
        if self.full_generation(block) != self.generation {
            if let Some(i) = index {
                let m = misuse(i);
                if let Some(l) = self.cold.ledger.as_mut() {
                    l.use_after_reset.push(m);
                }
            }
            return Err(ArenaError::UseAfterReset {
                index,
                offset: block.offset(),
                block_generation: self.full_generation(block),
                generation: self.generation,
                capacity,
            });
        }
        if op == "write"
            && let Some(i) = index
            && let Some(l) = self.cold.ledger.as_ref()
            && l.record_at(i).is_some_and(|e| e.released)
        {
            let m = misuse(i);
            if let Some(l) = self.cold.ledger.as_mut() {
                l.use_after_release.push(m);
            }
            return Err(ArenaError::UseAfterRelease {
                index: i,
                offset: block.offset(),
                capacity,
            });
        }
        Ok(())
    }

    /// Mark `block` released. The bump arena never reuses its bytes; this is bookkeeping that
    /// lets the ledger tell a released block from a leak and catch a double release.
    ///
    /// # Errors
    /// [`ArenaError::DoubleRelease`] (also recorded as a finding), [`ArenaError::NoLedger`],
    /// [`ArenaError::UseAfterReset`], [`ArenaError::ForeignBlock`], [`ArenaError::Released`].
    pub fn release_block(&mut self, b: &Block) -> Result<(), ArenaError> {
        self.vet(b, "release_block")?;
        // Vetted: `b` is of the current generation.
        let (capacity, generation) = (self.capacity, self.generation);
        let Some(ledger) = self.cold.ledger.as_mut() else {
            return Err(ArenaError::NoLedger {
                op: "release_block",
            });
        };
        let found = ledger
            .current_index(b.offset())
            .and_then(|i| Some((i, ledger.record_mut(i)?)));
        let Some((index, e)) = found else {
            return Err(ArenaError::ForeignBlock {
                index: None,
                offset: b.offset(),
                capacity,
            });
        };
        if e.released {
            let r = block_ref(index, e, self.cold.labels.get(generation, b.offset()));
            ledger.double_releases.push(Misuse {
                block: r,
                op: "release_block".into(),
            });
            return Err(ArenaError::DoubleRelease {
                index,
                offset: b.offset(),
                capacity,
            });
        }
        e.released = true;
        Ok(())
    }

    /// Start over at offset 0. Blocks handed out before become invalid (using them is reported
    /// as use after reset). With `zero == false` the old bytes stay and are reported as stale
    /// by [`Arena::check`] until overwritten.
    ///
    /// # Errors
    /// [`ArenaError::Released`].
    pub fn reset(&mut self, zero: bool) -> Result<ResetOutcome, ArenaError> {
        if self.released {
            return Err(ArenaError::Released {
                op: "reset",
                capacity: self.capacity,
            });
        }
        let previous_used = self.used();
        let extent = self.extent();
        let stale_bytes = if zero {
            self.mapped_bytes_mut()[..extent].fill(0);
            0
        } else {
            // Stale means inside the capacity, where a new block can land; non-zero bytes in
            // the slack stay what `check` reports them as: damage.
            self.bytes()[..extent.min(self.capacity)]
                .iter()
                .filter(|b| **b != 0)
                .count()
        };
        self.set_used(0);
        self.high_water = if zero { 0 } else { extent };
        self.generation = self.generation.wrapping_add(1);
        self.generation_bits = u64::from(self.generation & TAG_MASK) << SPAN_BITS;
        if let Some(l) = self.cold.ledger.as_mut() {
            l.start_generation();
            l.fresh.clear();
            l.stale_limit = if zero { 0 } else { l.stale_limit.max(extent) };
        }
        Ok(ResetOutcome {
            previous_used,
            stale_bytes,
            zeroed: zero,
        })
    }

    /// Unmap the arena (the seed's `arena_free`).
    ///
    /// # Errors
    /// [`ArenaError::Released`] on a second release; [`ArenaError::Unmap`] if the kernel
    /// refuses.
    pub fn release(&mut self) -> Result<(), ArenaError> {
        if self.released {
            return Err(ArenaError::Released {
                op: "release",
                capacity: self.capacity,
            });
        }
        // SAFETY: the mapping is live (not yet released) and `&mut self` guarantees no slice
        // from `bytes()` is alive; after this the `released` flag stops every access.
        unsafe { map::unmap(&self.map) }?;
        self.released = true;
        self.set_fast_ends();
        self.set_used(0);
        Ok(())
    }

    /// Grow the arena to `new_capacity` bytes (its mapping to whole pages), the seed's
    /// "What if you realloc or resize this arena?". A new capacity that still fits in the last
    /// mapped page only moves the logical end into the slack (no system call; whatever an
    /// overrun left there becomes arena bytes, so [`Arena::check`] first if that matters).
    /// Otherwise the mapping grows: in place when the pages
    /// after its end guard are free, and otherwise moves (`mremap` with `MREMAP_MAYMOVE`,
    /// placed in a fresh guarded region so both guard regions exist again around the new
    /// location). Contents, blocks, the ledger and advice (VMA flags) are kept; the outcome
    /// says whether it moved and from where to where, because every absolute address taken
    /// before a move now dangles. After a move, blocks aligned to more than the arena's base
    /// alignment ([`Arena::alignment`]) may no longer be aligned.
    ///
    /// # Errors
    /// [`ArenaError::Released`]; [`ArenaError::BadConfig`] for a smaller capacity, a capacity
    /// that cannot be rounded up, or a shared arena whose mapping would have to grow (the shmem object behind
    /// `MAP_SHARED | MAP_ANONYMOUS` keeps its size, so grown pages would fault with SIGBUS);
    /// [`ArenaError::Map`] / [`ArenaError::Remap`] / [`ArenaError::Unmap`] when the kernel
    /// refuses, in which case the arena is unchanged.
    pub fn grow(&mut self, new_capacity: usize) -> Result<GrowOutcome, ArenaError> {
        if self.released {
            return Err(ArenaError::Released {
                op: "grow",
                capacity: self.capacity,
            });
        }
        if new_capacity > MAX_CAPACITY {
            return Err(ArenaError::BadConfig {
                reason: TOO_LARGE,
                value: new_capacity,
            });
        }
        if new_capacity < self.capacity {
            return Err(ArenaError::BadConfig {
                reason: "grow cannot shrink the arena below its capacity",
                value: new_capacity,
            });
        }
        let page = crate::kernel::page_size();
        let rounded = new_capacity
            .checked_next_multiple_of(page)
            .filter(|c| *c <= isize::MAX as usize)
            .ok_or(ArenaError::BadConfig {
                reason: "the new capacity cannot be rounded up to whole pages",
                value: new_capacity,
            })?;
        let old_mapped = self.map.len;
        if self.shared && rounded != old_mapped {
            return Err(ArenaError::BadConfig {
                reason: "a shared arena's mapping cannot grow: its shmem object keeps the size it was created with",
                value: new_capacity,
            });
        }
        let (old_base, old_capacity, used) = (self.base_addr(), self.capacity, self.used());
        let mut out = GrowOutcome {
            old_base,
            new_base: old_base,
            old_capacity,
            new_capacity,
            old_mapped,
            new_mapped: rounded,
            moved: false,
            old_guards_unmapped: true,
        };
        if rounded != old_mapped {
            // SAFETY: the mapping is live (not released), private (checked above), made by
            // `map::map`, and `&mut self` means no slice of its bytes is alive. On success only
            // the returned mapping is used from here on.
            let grown = unsafe { map::grow(&self.map, rounded, self.align, page) }?;
            self.map = grown.map;
            out.moved = grown.moved;
            out.old_guards_unmapped = grown.old_guards_unmapped;
        }
        self.capacity = new_capacity;
        let base = self.base_addr();
        debug_assert!(
            base + rounded <= isize::MAX as usize,
            "below TASK_SIZE, as in new"
        );
        self.set_fast_ends();
        self.set_used(used);
        out.new_base = base;
        Ok(out)
    }

    /// Check, then release: the end of an arena's scope.
    ///
    /// # Errors
    /// As [`Arena::release`].
    pub fn finish(mut self) -> Result<Findings, ArenaError> {
        let f = self.check();
        self.release()?;
        Ok(f)
    }

    /// The seed's rendering of the used bytes: one character per byte, printable ASCII
    /// (32..=126) as itself, anything else as `.`.
    pub fn dump(&self) -> String {
        render_seed(self.used_bytes())
    }

    /// A hex + ASCII view of the used bytes, 16 per line (`hexdump -C` style).
    pub fn dump_hex(&self) -> String {
        render_hex(self.used_bytes())
    }

    /// Copy the bytes the engine has touched so far (`0..extent()`, which reaches into the
    /// slack after a write that ran past the capacity).
    pub fn snapshot(&self) -> Snapshot {
        let b = self.mapped_bytes();
        Snapshot {
            bytes: b[..self.extent().min(b.len())].to_vec(),
        }
    }

    /// Byte ranges that differ from `s`, merged into maximal runs. Compares up to the larger of
    /// the snapshot's length and the current extent; bytes beyond the snapshot count as the
    /// zeroes a fresh mapping holds.
    pub fn diff(&self, s: &Snapshot) -> Vec<Range<usize>> {
        let now = self.mapped_bytes();
        let n = s.bytes.len().max(self.extent()).min(now.len());
        let mut out: Vec<Range<usize>> = Vec::new();
        for (i, &new) in now[..n].iter().enumerate() {
            let old = s.bytes.get(i).copied().unwrap_or(0);
            if old != new {
                match out.last_mut() {
                    Some(r) if r.end == i => r.end = i + 1,
                    _ => out.push(i..i + 1),
                }
            }
        }
        out
    }

    /// Judge the arena: leaks, overflows (recorded writes plus damaged red zones), damage in
    /// the slack past the capacity, double releases, use after reset or release, stale bytes.
    /// Without the ledger nothing can be judged and `Findings::ledger` is false.
    pub fn check(&self) -> Findings {
        let Some(l) = self.cold.ledger.as_ref() else {
            return Findings::default();
        };
        let bytes = self.bytes();
        let slack = self.slack_damage();
        let leaks = l
            .indexed()
            .filter(|(_, e)| !e.written && !e.released)
            .map(|(i, e)| block_ref(i, e, self.cold.labels.get(self.generation, e.offset)))
            .collect();
        let mut overflows = l.overflows.clone();
        for (index, e) in l.indexed() {
            let zone = e.end()..e.end() + self.red_zone;
            if let Some(last) = bytes
                .get(zone.clone())
                .and_then(|z| z.iter().rposition(|b| *b != CANARY))
            {
                let damaged = zone.start..zone.start + last + 1;
                overflows.push(Overflow {
                    index,
                    offset: e.offset,
                    len: e.len,
                    label: self
                        .cold
                        .labels
                        .get(self.generation, e.offset)
                        .map(str::to_string),
                    bytes_past_end: last + 1,
                    bytes_past_capacity: 0,
                    write_offset: damaged.start,
                    write_len: last + 1,
                    victims: Vec::new(),
                    source: OverflowSource::RedZone,
                });
            }
        }
        let mut stale: Vec<StaleRange> = Vec::new();
        // `bytes` ends at the capacity: what an overrun left in the slack is `slack`, not stale.
        let limit = l.stale_limit.min(bytes.len());
        for (i, b) in bytes[..limit].iter().enumerate() {
            if *b != 0 && !l.is_fresh(i) {
                match stale.last_mut() {
                    Some(r) if r.offset + r.len == i => r.len += 1,
                    _ => stale.push(StaleRange { offset: i, len: 1 }),
                }
            }
        }
        Findings {
            ledger: true,
            leaks,
            overflows,
            double_releases: l.double_releases.clone(),
            use_after_reset: l.use_after_reset.clone(),
            use_after_release: l.use_after_release.clone(),
            stale,
            slack,
        }
    }

    /// Non-zero bytes between the capacity and the end of the mapping. The kernel hands out
    /// anonymous pages zeroed, and nothing in the engine writes there except a
    /// [`Arena::write`] that overran the capacity, so any non-zero byte is damage, as in a red
    /// zone (a stray zero byte goes unseen, as a stray canary byte does in a red zone).
    fn slack_damage(&self) -> Option<SlackDamage> {
        let slack = self.slack();
        let first = slack.iter().position(|b| *b != 0)?;
        let last = slack.iter().rposition(|b| *b != 0)?;
        Some(SlackDamage {
            capacity: self.capacity,
            mapped: self.map.len,
            first_offset: self.capacity + first,
            bytes_past_capacity: last + 1,
            nonzero_bytes: slack.iter().filter(|b| **b != 0).count(),
        })
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if !self.released {
            // SAFETY: the mapping is live and, with `&mut self` in drop, unreferenced. A failure
            // cannot be reported from drop; the kernel reclaims the range at exit regardless.
            let _ = unsafe { map::unmap(&self.map) };
            self.released = true;
        }
    }
}

/// The seed's `arena_dump` loop: `c >= 32 && c < 127` prints as itself, else `.`.
pub fn render_seed(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (32..127).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

/// `hexdump -C` style: offset, 16 hex bytes (a gap after 8), `|ascii|`.
pub fn render_hex(bytes: &[u8]) -> String {
    let mut s = String::new();
    for (line, chunk) in bytes.chunks(16).enumerate() {
        s.push_str(&format!("{:08x} ", line * 16));
        for i in 0..16 {
            if i == 8 {
                s.push(' ');
            }
            match chunk.get(i) {
                Some(b) => s.push_str(&format!(" {b:02x}")),
                None => s.push_str("   "),
            }
        }
        s.push_str("  |");
        s.push_str(&render_seed(chunk));
        s.push_str("|\n");
    }
    s
}

/// The slow path's checks that name the refusal, red zones, the ledger and labels. Returns the
/// block's start and the new `used`; the caller sets the cursor and hands the block out. It is handed the [`Cold`] box and values, never the [`Arena`] (see
/// [`Arena::alloc_slow`]).
#[cold]
#[inline(never)]
fn alloc_cold(
    cold: &mut Cold,
    input: SlowInput,
    len: usize,
    align: usize,
    label: Option<&'static str>,
) -> Result<(usize, usize), ArenaError> {
    let SlowInput {
        base,
        used: offset,
        capacity,
        red_zone,
        released,
        generation,
    } = input;
    let refuse = |why| refusal(why, input, len, align);
    if released {
        return Err(refuse(Refusal::Released));
    }
    if len == 0 {
        return Err(refuse(Refusal::ZeroLength));
    }
    if !align.is_power_of_two() {
        return Err(refuse(Refusal::BadAlign));
    }
    let pad = (base as usize + offset).wrapping_neg() & (align - 1);
    let start = offset
        .checked_add(pad)
        .ok_or_else(|| refuse(Refusal::OutOfMemory))?;
    let end = start
        .checked_add(len)
        .and_then(|e| e.checked_add(red_zone))
        .filter(|e| *e <= capacity)
        .ok_or_else(|| refuse(Refusal::OutOfMemory))?;
    let block_end = start + len;
    if red_zone > 0 {
        // SAFETY: `base` is the arena's live read-write mapping (not released, checked above)
        // and block_end + red_zone = end <= capacity, so the range is inside it; the caller
        // holds `&mut Arena`, which excludes any outstanding slice of its bytes.
        unsafe {
            std::ptr::write_bytes(base.add(block_end), CANARY, red_zone);
        }
    }
    if let Some(ledger) = cold.ledger.as_mut() {
        if red_zone > 0 {
            ledger.mark_fresh(block_end..end);
        }
        ledger.record(start, len);
    }
    if let Some(label) = label {
        cold.labels.set(generation, start, label);
    }
    Ok((start, end))
}

/// The error for a refused allocation, with the arena's offset and capacity.
#[cold]
#[inline(never)]
fn refusal(why: Refusal, input: SlowInput, len: usize, align: usize) -> ArenaError {
    let (offset, capacity) = (input.used, input.capacity);
    match why {
        Refusal::Released => ArenaError::Released {
            op: "allocate",
            capacity,
        },
        Refusal::ZeroLength => ArenaError::ZeroLength { offset, capacity },
        Refusal::BadAlign => ArenaError::BadAlign {
            align,
            offset,
            capacity,
        },
        Refusal::OutOfMemory => ArenaError::OutOfMemory {
            len,
            align,
            red_zone: input.red_zone,
            offset,
            capacity,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_seed_matches_the_c_condition() {
        // 31 and 127 are the first values outside `c >= 32 && c < 127`; 0x80.. is negative as
        // a signed char.
        assert_eq!(
            render_seed(&[31, 32, b'A', 126, 127, 0, 0x80, 0xff]),
            ". A~...."
        );
    }

    #[test]
    fn a_block_is_two_words_and_a_ledger_record_three() {
        // The descriptor every allocation returns, and what the ledger appends per block:
        // their size is what the fast paths pay for (BENCHMARKS.md).
        assert_eq!(size_of::<Block>(), 2 * size_of::<usize>());
        assert_eq!(size_of::<ledger::Record>(), 3 * size_of::<usize>());
    }

    /// A fresh ledger-on arena whose generation is set to `g` as if `g` resets had happened
    /// (16M real resets would take minutes).
    fn arena_at_generation(g: u32) -> Arena {
        let mut a = Arena::new(ArenaConfig::new(4096)).unwrap();
        a.generation = g;
        a.generation_bits = u64::from(g & TAG_MASK) << SPAN_BITS;
        a
    }

    #[test]
    fn a_block_keeps_the_largest_offset_and_length_beside_its_tags() {
        let mut a = arena_at_generation(TAG_MASK);
        a.id = TAG_MASK;
        a.id_bits = u64::from(TAG_MASK) << SPAN_BITS;
        // Every bit of both spans and both tags set: nothing spills into a neighbour.
        let b = a.hand_out(MAX_CAPACITY, MAX_CAPACITY);
        assert_eq!((b.offset(), b.len()), (MAX_CAPACITY, MAX_CAPACITY));
        assert_eq!((b.arena_tag(), b.generation_tag()), (TAG_MASK, TAG_MASK));
        let b = a.hand_out(0, 1);
        assert_eq!((b.offset(), b.len(), b.end()), (0, 1, 1));
        assert_eq!(a.generation_of(&b), Some(TAG_MASK));
    }

    #[test]
    fn generations_past_2_pow_24_are_completed_from_the_arena() {
        // A block keeps its generation modulo 2^24; the arena completes it from its own.
        let wrap = 1u32 << TAG_BITS;
        let mut a = arena_at_generation(wrap - 2);
        let old = a.alloc(8).unwrap();
        a.reset(false).unwrap();
        a.reset(false).unwrap();
        a.reset(false).unwrap();
        assert_eq!(a.generation(), wrap + 1);
        assert_eq!(a.generation_of(&old), Some(wrap - 2));
        let new = a.alloc(8).unwrap();
        assert_eq!(a.generation_of(&new), Some(wrap + 1));
        // The stale block is still refused as stale, with its whole generation.
        match a.write(&old, 0, b"x") {
            Err(ArenaError::UseAfterReset {
                block_generation,
                generation,
                ..
            }) => assert_eq!((block_generation, generation), (wrap - 2, wrap + 1)),
            other => panic!("expected UseAfterReset, got {other:?}"),
        }
        a.write(&new, 0, b"y").unwrap();
    }

    #[test]
    fn render_hex_pads_the_last_line() {
        let s = render_hex(b"Hello arena\0");
        assert_eq!(
            s,
            "00000000  48 65 6c 6c 6f 20 61 72  65 6e 61 00              |Hello arena.|\n"
        );
    }
}
