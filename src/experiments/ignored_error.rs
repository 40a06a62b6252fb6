//! `ignored-error`: what the seed's ignored NULL becomes.
//!
//! The seed's `arena_alloc` returns NULL when the arena is full, and 09b calls it without
//! looking at the result. Here allocation returns `Result<Block, ArenaError>`, marked
//! `#[must_use]`: dropping it unlooked-at is a compiler warning (the integration suite compiles
//! a tiny crate with `-D unused_must_use` to prove it). The experiment exhausts an arena with
//! 32-byte blocks (the seed's block size) and reports the error, its message and the offset at
//! which it came; then it asks for `usize::MAX` bytes at offset 0 to show the size check is
//! checked arithmetic, not a wrapping add.

use serde_json::json;

use super::{ExperimentOptions, Outcome};
use crate::arena::{Arena, ArenaConfig, ArenaError};
use crate::error::Result;

/// The seed's block size in 09b.
const BLOCK: usize = 32;

/// Run the experiment.
///
/// # Errors
/// When the arena cannot be mapped.
pub fn run(_opts: &ExperimentOptions) -> Result<Outcome> {
    let mut arena = Arena::new(ArenaConfig::new(crate::kernel::page_size()))?;
    let capacity = arena.capacity();
    let mut blocks = 0usize;
    let mut last_end = 0usize;
    let err = loop {
        match arena.alloc(BLOCK) {
            Ok(b) => {
                blocks += 1;
                last_end = b.end();
            }
            Err(e) => break e,
        }
    };
    let err_offset = match &err {
        ArenaError::OutOfMemory { offset, .. } => Some(*offset),
        _ => None,
    };
    let used_after = arena.used();

    // A length whose end would wrap a usize: the arena must refuse it, not hand out a block.
    let mut fresh = Arena::new(ArenaConfig::new(capacity))?;
    let huge = fresh.alloc(usize::MAX);
    let huge_refused = matches!(huge, Err(ArenaError::OutOfMemory { offset: 0, .. }));
    let huge_msg = match &huge {
        Ok(b) => format!("handed out a block of {} bytes", b.len()),
        Err(e) => e.to_string(),
    };

    let fits = capacity / BLOCK;
    let holds = matches!(err, ArenaError::OutOfMemory { .. })
        && err_offset == Some(capacity)
        && blocks == fits
        && last_end == capacity
        && used_after == capacity
        && huge_refused;
    let sentence = if holds {
        format!(
            "the seed's NULL is an Err the caller must look at: after {blocks} blocks of \
             {BLOCK} bytes the next alloc returned OutOfMemory at offset {capacity} of \
             {capacity}, the bump offset did not move, and a usize::MAX request was refused \
             at offset 0 instead of wrapping"
        )
    } else {
        format!(
            "exhausting a {capacity}-byte arena did not end as expected: {blocks} blocks, \
             error '{err}', bump offset {used_after}"
        )
    };
    Ok(Outcome::verdict(
        holds,
        sentence,
        json!({
            "capacity": capacity,
            "block_len": BLOCK,
            "blocks_allocated": blocks,
            "last_block_end": last_end,
            "error": {
                "kind": error_kind(&err),
                "message": err.to_string(),
                "offset": err_offset,
            },
            "used_after_error": used_after,
            "must_use": "Arena::alloc and friends are #[must_use]: `arena.alloc(32);` alone \
                         warns (unused_must_use); the test suite compiles it with \
                         -D unused_must_use and sees it fail",
            "usize_max_request": {
                "refused": huge_refused,
                "message": huge_msg,
            },
        }),
    ))
}

/// The variant's name, from its Debug form (robust to variants added later).
fn error_kind(e: &ArenaError) -> String {
    let d = format!("{e:?}");
    d.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}
