//! The ledger: what happened to every block of the current generation, and the misuse seen so
//! far (overflowing writes, double releases, use after reset or release).
//!
//! The ledger is bookkeeping only; it never touches the arena's bytes. Its hot part is one
//! fixed-size [`Record`] (offset, length, two flags: 24 bytes) per block, appended to a buffer
//! reserved when the arena is made, so recording a block is a store and a length bump. What
//! a finding needs beyond that is derived: the index from the record's position, the red zone
//! from the arena (one size for every block), the label from the arena's label table.
//! [`Arena::check`](crate::arena::Arena::check) combines it with the bytes (red zones, the
//! slack past the capacity, stale bytes) into [`Findings`].

use std::collections::HashMap;
use std::ops::Range;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One block as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The block's index (unique per arena, increasing, never reused, also across resets).
    pub index: usize,
    /// Offset of the block's first byte from the arena's base.
    pub offset: usize,
    /// Length the caller asked for.
    pub len: usize,
    /// Red-zone bytes that follow the block (0 when red zones are off).
    pub red_zone: usize,
    /// The caller's label, if any.
    pub label: Option<&'static str>,
    /// Whether [`Arena::write`](crate::arena::Arena::write) ever wrote at least one byte
    /// through this block.
    pub written: bool,
    /// Whether the block was released with
    /// [`Arena::release_block`](crate::arena::Arena::release_block).
    pub released: bool,
}

impl LedgerEntry {
    /// One past the block's last byte.
    pub fn end(&self) -> usize {
        self.offset + self.len
    }
}

/// A block named in a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BlockRef {
    /// Block index.
    pub index: usize,
    /// Offset from the arena base.
    pub offset: usize,
    /// Block length.
    pub len: usize,
    /// The block's label, if any.
    pub label: Option<String>,
}

/// How an overflow was caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverflowSource {
    /// A write through [`Arena::write`](crate::arena::Arena::write) ran past the block's end;
    /// the count is exact.
    Write,
    /// The block's red zone was found damaged by [`Arena::check`](crate::arena::Arena::check);
    /// `bytes_past_end` counts up to the last damaged canary byte (a write that stored the
    /// canary value itself goes unseen, as with every canary).
    RedZone,
}

/// A write that ran past the end of its block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Overflow {
    /// The block written through.
    pub index: usize,
    /// The block's offset.
    pub offset: usize,
    /// The block's length.
    pub len: usize,
    /// The block's label, if any.
    pub label: Option<String>,
    /// Bytes stored past the block's end.
    pub bytes_past_end: usize,
    /// Of those, bytes stored past the arena's logical end (its capacity), into the slack of
    /// the last mapped page: a write the seed's C would not have faulted on either. Always 0
    /// for a red-zone finding (red zones lie inside the capacity).
    pub bytes_past_capacity: usize,
    /// Absolute offset where the offending write started.
    pub write_offset: usize,
    /// Length of the offending write.
    pub write_len: usize,
    /// Other blocks whose bytes the overflow landed in.
    pub victims: Vec<usize>,
    /// How it was caught.
    pub source: OverflowSource,
}

/// A misuse caught when it happened (double release, use after reset or release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Misuse {
    /// The block the caller presented.
    pub block: BlockRef,
    /// What was attempted: `write` or `release_block`.
    pub op: String,
}

/// A run of stale bytes: non-zero bytes left from before a non-zeroing reset that nothing has
/// written since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StaleRange {
    /// Offset of the first stale byte.
    pub offset: usize,
    /// Number of consecutive stale bytes.
    pub len: usize,
}

/// Non-zero bytes found in the slack: the mapped bytes between the arena's capacity and the end
/// of its last page. Nothing may use them, and the kernel hands them out zeroed, so any
/// non-zero byte there was written by an overrun (through
/// [`Arena::write`](crate::arena::Arena::write), which also records it as an [`Overflow`], or
/// through the raw pointer, which only this finding shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SlackDamage {
    /// The arena's capacity: where the slack starts.
    pub capacity: usize,
    /// The mapping's length: where the slack ends.
    pub mapped: usize,
    /// Offset of the first non-zero byte in the slack.
    pub first_offset: usize,
    /// Bytes from the capacity up to and including the last non-zero byte (how far the overrun
    /// reached, as a red zone's `bytes_past_end`).
    pub bytes_past_capacity: usize,
    /// Number of non-zero bytes in the slack.
    pub nonzero_bytes: usize,
}

/// Everything [`Arena::check`](crate::arena::Arena::check) found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Findings {
    /// Whether the ledger was on. Without it nothing can be judged and every list is empty.
    pub ledger: bool,
    /// Blocks allocated and never written nor released (the 09b "result not assigned" case).
    pub leaks: Vec<BlockRef>,
    /// Writes past a block's end, and damaged red zones.
    pub overflows: Vec<Overflow>,
    /// Blocks released twice.
    pub double_releases: Vec<Misuse>,
    /// Blocks used after the arena was reset.
    pub use_after_reset: Vec<Misuse>,
    /// Blocks written after they were released.
    pub use_after_release: Vec<Misuse>,
    /// Stale bytes from before a non-zeroing reset.
    pub stale: Vec<StaleRange>,
    /// Damage in the slack past the capacity (`None`: the slack is all zero, or there is none).
    pub slack: Option<SlackDamage>,
}

impl Findings {
    /// True when nothing at all was found.
    pub fn is_clean(&self) -> bool {
        self.leaks.is_empty()
            && self.overflows.is_empty()
            && self.double_releases.is_empty()
            && self.use_after_reset.is_empty()
            && self.use_after_release.is_empty()
            && self.stale.is_empty()
            && self.slack.is_none()
    }
}

/// What the ledger keeps per block of the current generation: fixed size, no label, no index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record {
    /// Offset of the block's first byte.
    pub offset: usize,
    /// The block's length.
    pub len: usize,
    /// Written at least once through `Arena::write`.
    pub written: bool,
    /// Released with `Arena::release_block`.
    pub released: bool,
}

impl Record {
    /// A block just handed out.
    #[inline(always)]
    pub fn new(offset: usize, len: usize) -> Self {
        Record {
            offset,
            len,
            written: false,
            released: false,
        }
    }

    /// One past the block's last byte.
    pub fn end(&self) -> usize {
        self.offset + self.len
    }
}

/// Records reserved up front: one per 8 bytes of capacity (a word, the usual allocation
/// granule), at most this many (1.5 MiB). An arena of smaller blocks grows the buffer.
const RESERVED_RECORDS_MAX: usize = 1 << 16;

/// The ledger proper.
#[derive(Debug, Clone, Default)]
pub(super) struct Ledger {
    /// Index of `records[0]`: the first block of the current generation.
    pub first_index: usize,
    /// Blocks of the current generation, in allocation order (so offsets increase); record `i`
    /// is block `first_index + i`.
    pub records: Vec<Record>,
    /// Offsets of the blocks of earlier generations, by index (`past_offsets[i]` is block
    /// `i`'s): what derives a stale block's index (8 bytes per block, kept over resets).
    pub past_offsets: Vec<usize>,
    /// Index of the first block of each generation so far (`generation_starts[g]`).
    pub generation_starts: Vec<usize>,
    /// Sorted, merged byte ranges written (or canary-filled) since the last reset.
    pub fresh: Vec<Range<usize>>,
    /// Bytes below this offset may hold content from before a non-zeroing reset.
    pub stale_limit: usize,
    /// Overflowing writes, in order.
    pub overflows: Vec<Overflow>,
    /// Double releases, in order.
    pub double_releases: Vec<Misuse>,
    /// Uses after reset, in order.
    pub use_after_reset: Vec<Misuse>,
    /// Uses after release, in order.
    pub use_after_release: Vec<Misuse>,
}

impl Ledger {
    /// An empty ledger for an arena of `capacity` bytes, its record buffer reserved.
    pub fn for_capacity(capacity: usize) -> Self {
        Ledger {
            records: Vec::with_capacity((capacity / 8).clamp(1, RESERVED_RECORDS_MAX)),
            generation_starts: vec![0],
            ..Ledger::default()
        }
    }

    /// Append the record of a block just handed out (its index is `first_index +
    /// records.len()`).
    #[inline(always)]
    pub fn record(&mut self, offset: usize, len: usize) {
        self.records.push(Record::new(offset, len));
    }

    /// Start the next generation (a reset): the current blocks' offsets move to
    /// `past_offsets`, the record buffer is emptied (its reservation kept).
    pub fn start_generation(&mut self) {
        self.past_offsets
            .extend(self.records.iter().map(|r| r.offset));
        self.first_index += self.records.len();
        self.generation_starts.push(self.first_index);
        self.records.clear();
    }

    /// The index of the block at `offset` of the current generation.
    pub fn current_index(&self, offset: usize) -> Option<usize> {
        let i = self
            .records
            .binary_search_by_key(&offset, |r| r.offset)
            .ok()?;
        Some(self.first_index + i)
    }

    /// The index of the block of generation `generation` at `offset`, the arena being at
    /// generation `current` (blocks of one generation are in offset order, so a binary search
    /// finds it; zero-length blocks are refused, so no two share an offset).
    pub fn index_of(&self, generation: u32, current: u32, offset: usize) -> Option<usize> {
        if generation == current {
            return self.current_index(offset);
        }
        let g = usize::try_from(generation).ok()?;
        let start = *self.generation_starts.get(g)?;
        let end = *self.generation_starts.get(g + 1)?;
        let i = self
            .past_offsets
            .get(start..end)?
            .binary_search(&offset)
            .ok()?;
        Some(start + i)
    }

    /// The record of block `index` of the current generation.
    pub fn record_mut(&mut self, index: usize) -> Option<&mut Record> {
        let i = index.checked_sub(self.first_index)?;
        self.records.get_mut(i)
    }

    /// The record of block `index` of the current generation.
    pub fn record_at(&self, index: usize) -> Option<&Record> {
        let i = index.checked_sub(self.first_index)?;
        self.records.get(i)
    }

    /// The blocks of the current generation as (index, record).
    pub fn indexed(&self) -> impl Iterator<Item = (usize, &Record)> {
        let first = self.first_index;
        self.records
            .iter()
            .enumerate()
            .map(move |(i, r)| (first + i, r))
    }

    /// Blocks (other than `except`) overlapping `r`.
    pub fn overlapping(&self, r: &Range<usize>, except: usize) -> Vec<usize> {
        self.indexed()
            .filter(|(i, e)| *i != except && e.offset < r.end && r.start < e.end())
            .map(|(i, _)| i)
            .collect()
    }

    /// Record `r` as written since the last reset, keeping `fresh` sorted and merged.
    pub fn mark_fresh(&mut self, r: Range<usize>) {
        if r.is_empty() {
            return;
        }
        // First range that ends at or after r.start (could touch or overlap r).
        let i = self.fresh.partition_point(|x| x.end < r.start);
        let mut j = i;
        let mut merged = r;
        while j < self.fresh.len() && self.fresh[j].start <= merged.end {
            merged.start = merged.start.min(self.fresh[j].start);
            merged.end = merged.end.max(self.fresh[j].end);
            j += 1;
        }
        self.fresh.splice(i..j, std::iter::once(merged));
    }

    /// Whether byte `off` was written since the last reset.
    pub fn is_fresh(&self, off: usize) -> bool {
        let i = self.fresh.partition_point(|x| x.end <= off);
        self.fresh.get(i).is_some_and(|x| x.start <= off)
    }
}

/// The block reference findings use, for block `index` whose record is `r`.
pub(super) fn block_ref(index: usize, r: &Record, label: Option<&'static str>) -> BlockRef {
    BlockRef {
        index,
        offset: r.offset,
        len: r.len,
        label: label.map(str::to_string),
    }
}

/// The labels given to blocks (`Arena::alloc_labeled`), over the arena's whole life: a label
/// names a block in findings also after a reset (a use after reset names the stale block's
/// label). A block is named by its generation and offset (unique: zero-length blocks are
/// refused), so labels work with the ledger off too. Each distinct label is stored once; each
/// labeled block costs one (generation, offset, label number) entry, and an unlabeled block
/// nothing.
#[derive(Debug, Clone, Default)]
pub(super) struct Labels {
    /// Distinct labels, in order of first use.
    names: Vec<&'static str>,
    /// Label number (position in `names`) of each distinct label.
    numbers: HashMap<&'static str, usize>,
    /// ((generation, offset), label number), keys increasing.
    by_block: Vec<((u32, usize), usize)>,
}

impl Labels {
    /// Give the block of `generation` at `offset` (after every block labeled before) the
    /// label `label`.
    pub fn set(&mut self, generation: u32, offset: usize, label: &'static str) {
        let key = (generation, offset);
        debug_assert!(self.by_block.last().is_none_or(|(k, _)| *k < key));
        let names = &mut self.names;
        let n = *self.numbers.entry(label).or_insert_with(|| {
            names.push(label);
            names.len() - 1
        });
        self.by_block.push((key, n));
    }

    /// The label of the block of `generation` at `offset`, if it was given one.
    pub fn get(&self, generation: u32, offset: usize) -> Option<&'static str> {
        let i = self
            .by_block
            .binary_search_by_key(&(generation, offset), |(k, _)| *k)
            .ok()?;
        self.names.get(self.by_block[i].1).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_found_by_generation_and_offset_and_stored_once() {
        let mut l = Labels::default();
        l.set(0, 0, "a");
        l.set(0, 3, "b");
        l.set(1, 0, "a");
        assert_eq!(
            (
                l.get(0, 0),
                l.get(0, 1),
                l.get(0, 3),
                l.get(1, 0),
                l.get(1, 3)
            ),
            (Some("a"), None, Some("b"), Some("a"), None)
        );
        assert_eq!(l.names, vec!["a", "b"]);
    }

    #[test]
    fn mark_fresh_merges_touching_and_overlapping_ranges() {
        let mut l = Ledger::default();
        l.mark_fresh(10..20);
        l.mark_fresh(30..40);
        l.mark_fresh(0..5);
        assert_eq!(l.fresh, vec![0..5, 10..20, 30..40]);
        l.mark_fresh(20..30);
        assert_eq!(l.fresh, vec![0..5, 10..40]);
        l.mark_fresh(3..12);
        assert_eq!(l.fresh, vec![0..40]);
        assert!(l.is_fresh(0) && l.is_fresh(39) && !l.is_fresh(40));
    }
}
