//! `stale-reset`: the seed asks "What about memory leaks from non-zeroed offsets?". A bump
//! arena's reset only moves the offset back to 0: [`Arena::reset`]`(false)` leaves the old
//! bytes in place, and the next block handed out at the same offset reads them (an
//! information leak, the arena version of reading uninitialised `malloc` memory). The engine
//! reports them as stale bytes. [`Arena::reset`]`(true)` zeroes first, and the new block reads
//! zeroes.

use serde_json::json;

use super::{ExperimentOptions, Outcome};
use crate::arena::{Arena, ArenaConfig, render_seed};
use crate::error::Result;

/// What the first generation writes: a secret the next generation must not see.
pub const SECRET: &[u8] = b"password=hunter2";

/// Run the experiment.
///
/// # Errors
/// When an arena cannot be mapped or refuses an operation.
pub fn run(_opts: &ExperimentOptions) -> Result<Outcome> {
    let stale = one_mode(false)?;
    let zeroed = one_mode(true)?;
    let leaked = stale.new_bytes == SECRET && stale.stale_covers_block;
    let clean = zeroed.new_bytes.iter().all(|b| *b == 0) && zeroed.stale_ranges.is_empty();
    let holds = leaked && clean;
    let sentence = if holds {
        format!(
            "after reset(false) a new {}-byte block at offset {} reads the previous generation's \
             {:?} and the engine reports {} stale byte(s); after reset(true) the same block \
             reads zeroes and nothing is stale",
            SECRET.len(),
            stale.offset,
            render_seed(SECRET),
            stale.stale_bytes
        )
    } else {
        "stale bytes did not behave as expected (see evidence)".to_string()
    };
    Ok(Outcome::verdict(
        holds,
        sentence,
        json!({
            "written_before_reset": hex(SECRET),
            "reset_false": stale.to_json(),
            "reset_true": zeroed.to_json(),
        }),
    ))
}

struct Mode {
    zero: bool,
    offset: usize,
    stale_bytes: usize,
    new_bytes: Vec<u8>,
    stale_ranges: Vec<crate::arena::StaleRange>,
    stale_covers_block: bool,
    old_block_write: String,
}

impl Mode {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "zeroed": self.zero,
            "reset_outcome_stale_bytes": self.stale_bytes,
            "new_block_offset": self.offset,
            "new_block_bytes_hex": hex(&self.new_bytes),
            "new_block_bytes_seed": render_seed(&self.new_bytes),
            "engine_stale_findings": self.stale_ranges,
            "old_block_write_after_reset": self.old_block_write,
        })
    }
}

fn one_mode(zero: bool) -> Result<Mode> {
    let mut arena = Arena::new(ArenaConfig::new(crate::kernel::page_size()))?;
    let old = arena.alloc_labeled(SECRET.len(), "secret")?;
    arena.write(&old, 0, SECRET)?;
    let r = arena.reset(zero)?;
    let new = arena.alloc_labeled(SECRET.len(), "next generation")?;
    let new_bytes = arena.bytes()[new.range()].to_vec();
    // The old handle is refused after the reset (use after reset), in both modes.
    let old_block_write = match arena.write(&old, 0, b"x") {
        Ok(_) => "accepted".to_string(),
        Err(e) => e.to_string(),
    };
    let stale_ranges = arena.check().stale;
    let stale_covers_block = stale_ranges
        .iter()
        .any(|s| s.offset <= new.offset() && new.end() <= s.offset + s.len);
    Ok(Mode {
        zero,
        offset: new.offset(),
        stale_bytes: r.stale_bytes,
        new_bytes,
        stale_ranges,
        stale_covers_block,
        old_block_write,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
