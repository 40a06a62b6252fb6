//! `resize`: the seed asks "What if you realloc or resize this arena?". [`Arena::grow`]
//! grows it in place when the pages after its end guard are free, and otherwise moves it with
//! `mremap(MREMAP_MAYMOVE)`. The experiment forces the move: it first maps a page right after
//! the arena's end guard (`MAP_FIXED_NOREPLACE`, so nothing of anyone else is touched), then
//! grows the arena 16-fold. The engine reports old and new base; the bytes survive at the new
//! base (offsets stay valid), the old absolute address of a block dangles: no VMA of the parent
//! contains it, and a forked child that stores there dies of SIGSEGV with that `si_addr`. Both
//! guard regions exist again around the new location.

use crate::fork::subject::{FaultProbe, store_and_report_fault};
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use serde_json::json;

use super::{ExperimentOptions, Outcome};
use crate::arena::{Arena, ArenaConfig, GrowOutcome, render_seed};
use crate::error::{Error, Result};
use crate::mem::smaps::{self, SmapsEntry};

/// What the arena holds before it grows.
pub const CONTENT: &[u8] = b"resize: these bytes must survive";
/// The arena grows from one page to this many.
pub const GROW_PAGES: usize = 16;

/// How long the child may take to fault and die.
const CHILD_DEADLINE: Duration = Duration::from_secs(10);

/// Run the experiment.
///
/// # Errors
/// When the arena cannot be mapped or grown, `/proc/self/maps` cannot be read, or the fork
/// fails.
pub fn run(_opts: &ExperimentOptions) -> Result<Outcome> {
    let page = crate::kernel::page_size();
    let pid = std::process::id() as i32;
    let mut arena = Arena::new(ArenaConfig::new(page))?;
    let block = arena.alloc_labeled(CONTENT.len(), "survivor")?;
    arena.write(&block, 0, CONTENT)?;
    let old_base = arena.base_addr();
    let old_block_addr = old_base + block.offset();

    let (grown, blocker_note) = grow_past_a_blocker(&mut arena, page)?;
    let new_base = arena.base_addr();
    let survived = arena.bytes()[block.range()].to_vec();

    let Placement {
        old_addr_vma,
        arena_vma,
        arena_exact,
        guard_below,
        guard_above,
        guards_ok,
    } = placement(pid, &arena, old_block_addr)?;

    // The old address in a child: it dangles, so the store faults.
    let FaultProbe {
        exit,
        signal: fault_signal,
        si_addr,
    } = store_and_report_fault(old_block_addr, b"!", CHILD_DEADLINE)?;
    let dangles = old_addr_vma.is_none()
        && exit.signal.as_deref() == Some("SIGSEGV")
        && si_addr == Some(old_block_addr);

    let holds = grown.moved
        && new_base != old_base
        && grown.old_base == old_base
        && grown.new_base == new_base
        && survived == CONTENT
        && dangles
        && arena_exact
        && guards_ok;
    let sentence = if holds {
        format!(
            "with a page mapped right after its end guard, growing the arena from {} to {} \
             bytes moved it from {old_base:#x} to {new_base:#x} (reported by the engine); the \
             {} bytes survived at the new base, the old block address {old_block_addr:#x} is \
             in no VMA and a child storing there died of SIGSEGV at that address; guards \
             surround the new location",
            grown.old_capacity,
            grown.new_capacity,
            CONTENT.len()
        )
    } else {
        format!(
            "expected a move with surviving contents, a dangling old address and guards; moved \
             {}, {old_base:#x} -> {new_base:#x}, contents survived {}, old address dangles \
             {dangles}, guards {guards_ok}, arena VMA exact {arena_exact}",
            grown.moved,
            survived == CONTENT
        )
    };
    Ok(Outcome::verdict(
        holds,
        sentence,
        json!({
            "blocker": blocker_note,
            "grow": {
                "moved": grown.moved,
                "old_base": format!("{:#x}", grown.old_base),
                "new_base": format!("{:#x}", grown.new_base),
                "old_capacity": grown.old_capacity,
                "new_capacity": grown.new_capacity,
                "old_guards_unmapped": grown.old_guards_unmapped,
            },
            "contents": {
                "block_offset": block.offset(),
                "before_seed": render_seed(CONTENT),
                "after_seed": render_seed(&survived),
                "survived": survived == CONTENT,
            },
            "old_block_address": {
                "addr": format!("{old_block_addr:#x}"),
                "parent_vma": old_addr_vma,
                "child_exit": exit,
                "fault_signal": fault_signal,
                "si_addr": si_addr.map(|a| format!("{a:#x}")),
            },
            "new_location": {
                "arena_vma": arena_vma,
                "arena_vma_is_exactly_the_arena": arena_exact,
                "guard_below": guard_below,
                "guard_above": guard_above,
            },
        }),
    ))
}

/// Where the parent's VMAs put things after the move (each VMA as `start-end perms`).
struct Placement {
    /// The VMA holding the block's old address (none: it dangles).
    old_addr_vma: Option<String>,
    arena_vma: Option<String>,
    /// The arena's VMA is exactly its mapping.
    arena_exact: bool,
    guard_below: Option<String>,
    guard_above: Option<String>,
    /// No guards asked for, or `---p` VMAs on both sides.
    guards_ok: bool,
}

/// Read `/proc/<pid>/maps` and place the old block address, the arena and its guards.
fn placement(pid: i32, arena: &Arena, old_block_addr: usize) -> Result<Placement> {
    let (new_base, guard) = (arena.base_addr(), arena.guard_len());
    let vmas = smaps::vma_bounds(pid).map_err(|e| Error::process_io(pid, "maps", e))?;
    let find = |a: usize| vmas.iter().find(|v| v.contains(a as u64));
    let describe =
        |v: Option<&SmapsEntry>| v.map(|v| format!("{:#x}-{:#x} {}", v.start, v.end, v.perms));
    let arena_vma = find(new_base);
    let arena_exact = arena_vma.is_some_and(|v| {
        v.start == new_base as u64 && v.end == (new_base + arena.mapped_len()) as u64
    });
    let guard_below = find(new_base - guard);
    let guard_above = find(new_base + arena.mapped_len());
    let is_guard = |v: Option<&SmapsEntry>| v.is_some_and(|v| v.perms.starts_with("---"));
    Ok(Placement {
        old_addr_vma: describe(find(old_block_addr)),
        arena_vma: describe(arena_vma),
        arena_exact,
        guards_ok: guard == 0 || (is_guard(guard_below) && is_guard(guard_above)),
        guard_below: describe(guard_below),
        guard_above: describe(guard_above),
    })
}

/// Grow the arena by [`GROW_PAGES`] with a page mapped right after its end guard, so it
/// cannot grow in place; the blocker is unmapped again. The outcome and what the blocker was.
fn grow_past_a_blocker(arena: &mut Arena, page: usize) -> Result<(GrowOutcome, String)> {
    let blocker_at = arena.base_addr() + arena.mapped_len() + arena.guard_len();
    let blocker = place_blocker(blocker_at, page);
    let blocker_note = match &blocker {
        Ok(_) => format!("mapped one page at {blocker_at:#x}, right after the end guard"),
        Err(Errno::EEXIST) => {
            format!("{blocker_at:#x} was already mapped: growth in place is blocked anyway")
        }
        Err(e) => format!("could not map at {blocker_at:#x}: {e}"),
    };
    let grown = arena.grow(GROW_PAGES * page);
    if let Ok(p) = blocker {
        // SAFETY: `p` is the blocker page mapped above, ours and unreferenced.
        unsafe { munmap(p.cast(), page) }.map_err(|e| Error::io("unmapping the blocker", e))?;
    }
    Ok((grown?, blocker_note))
}

/// Map one PROT_NONE page exactly at `addr`, never replacing anything.
fn place_blocker(addr: usize, page: usize) -> std::result::Result<NonNull<u8>, Errno> {
    let (Some(a), Some(l)) = (NonZeroUsize::new(addr), NonZeroUsize::new(page)) else {
        return Err(Errno::EINVAL);
    };
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping (EEXIST instead); a fresh
    // PROT_NONE page aliases no Rust object.
    let p = unsafe {
        mmap_anonymous(
            Some(a),
            l,
            ProtFlags::PROT_NONE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED_NOREPLACE,
        )
    }?;
    if p.as_ptr() as usize != addr {
        // A kernel before 4.17 took the address as a hint; this page blocks nothing.
        // SAFETY: `p` is the page just mapped, ours and unreferenced.
        unsafe { munmap(p, page) }?;
        return Err(Errno::ENOTSUP);
    }
    Ok(p.cast())
}
