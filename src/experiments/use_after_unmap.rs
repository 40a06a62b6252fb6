//! `use-after-unmap`: the seed asks "Can you detect use-after-unmap?". After
//! [`Arena::release`] the arena's addresses belong to no mapping: the parent's own
//! `/proc/self/maps` no longer lists them, and a forked child that stores one byte at the old
//! base dies of SIGSEGV whose `si_addr` is exactly that base.
//!
//! The store happens in a child (through [`ChildOp::WriteByte`]), never in this process: a
//! fault here would kill cowscope, and the address could in principle be reused by a later
//! mapping of this process, which the child would then silently write into (its own copy).

use crate::fork::subject::{FaultProbe, store_and_report_fault};
use std::time::Duration;

use serde_json::json;

use super::{ExperimentOptions, Outcome};
use crate::arena::{Arena, ArenaConfig};
use crate::error::{Error, Result};
use crate::mem::smaps;

/// How long the child may take to fault and die.
const CHILD_DEADLINE: Duration = Duration::from_secs(10);

/// Run the experiment.
///
/// # Errors
/// When the arena cannot be mapped or released, `/proc/self/smaps` cannot be read, or the
/// fork fails.
pub fn run(_opts: &ExperimentOptions) -> Result<Outcome> {
    let pid = std::process::id() as i32;
    let mut arena = Arena::new(ArenaConfig::new(crate::kernel::page_size()))?;
    let base = arena.base_addr();
    let capacity = arena.capacity();
    let block = arena.alloc_labeled(6, "alive")?;
    arena.write(&block, 0, b"alive\0")?;

    let vma =
        smaps::vma_containing(pid, base as u64).map_err(|e| Error::process_io(pid, "smaps", e))?;
    let mapped_before = json!({
        "vma": format!("{:#x}-{:#x}", vma.start, vma.end),
        "perms": vma.perms,
    });

    arena.release()?;
    // The parent side: the address is in no VMA any more (NotFound), any other error is real.
    let mapped_after = match smaps::vma_containing(pid, base as u64) {
        Ok(v) => Some(format!("{:#x}-{:#x} {}", v.start, v.end, v.perms)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::process_io(pid, "smaps", e)),
    };
    let parent_lookup = match &mapped_after {
        None => format!("no VMA of /proc/{pid}/smaps contains {base:#x}"),
        Some(v) => format!("{base:#x} is mapped again: {v}"),
    };

    let FaultProbe {
        exit,
        signal: fault_signal,
        si_addr,
    } = store_and_report_fault(base, b"!", CHILD_DEADLINE)?;

    let died_of_segv = exit.signal.as_deref() == Some("SIGSEGV");
    let at_base = si_addr == Some(base);
    let holds = died_of_segv && at_base && mapped_after.is_none();
    let sentence = if holds {
        format!(
            "after release() the arena's base {base:#x} is in no VMA of the parent, and a child \
             storing one byte there died of SIGSEGV with si_addr {base:#x}: use after unmap is \
             detected by the kernel, not silently absorbed"
        )
    } else {
        format!(
            "expected the child to die of SIGSEGV at {base:#x} with the parent's maps free of \
             it; the child ended with {exit:?}, si_addr {si_addr:#x?}, parent: {parent_lookup}"
        )
    };
    Ok(Outcome::verdict(
        holds,
        sentence,
        json!({
            "arena_base": format!("{base:#x}"),
            "capacity": capacity,
            "before_release": mapped_before,
            "after_release_parent": parent_lookup,
            "after_release_mapped": mapped_after.is_some(),
            "child_write": { "addr": format!("{base:#x}"), "byte": "21" },
            "child_exit": exit,
            "fault_signal": fault_signal,
            "si_addr": si_addr.map(|a| format!("{a:#x}")),
            "si_addr_equals_base": at_base,
        }),
    ))
}
