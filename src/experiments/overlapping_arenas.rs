//! `overlapping-arenas`: the seed asks "What if two arenas overlap?". Two mappings cannot
//! overlap: `mmap` with `MAP_FIXED` at a live arena's address does not fail, it silently
//! *replaces* the arena's pages with fresh zero-filled ones (same base, data gone), and the
//! arena engine cannot notice (its ledger still lists the written block). `MAP_FIXED_NOREPLACE`
//! (Linux 4.17+) at the same address refuses with `EEXIST` instead.

use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use serde_json::json;

use super::{ExperimentOptions, Outcome};
use crate::arena::{Arena, ArenaConfig, render_seed};
use crate::error::{Error, Result};
use crate::mem::smaps;

/// What the first arena holds before the second mapping lands on it.
pub const STAMP: &[u8] = b"arena A: live data";

/// Run the experiment.
///
/// # Errors
/// When the arena cannot be mapped or `/proc/self/smaps` cannot be read.
pub fn run(_opts: &ExperimentOptions) -> Result<Outcome> {
    let pid = std::process::id() as i32;
    let mut arena = Arena::new(ArenaConfig::new(crate::kernel::page_size()))?;
    let base = arena.base_addr();
    // The mapping's length (page-level work); the arena is one page, so it is also the capacity.
    let mapped = arena.mapped_len();
    let block = arena.alloc_labeled(STAMP.len(), "A")?;
    arena.write(&block, 0, STAMP)?;
    let before = arena.bytes()[block.range()].to_vec();
    let rss_before = smaps::vma_containing(pid, base as u64)
        .map_err(|e| Error::process_io(pid, "smaps", e))?
        .rss_kb;

    // The NOREPLACE attempt first, while the arena is still the original mapping.
    // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping (EEXIST; before 4.17 the address
    // is only a hint and the mapping lands elsewhere).
    let noreplace = unsafe { map_at(base, mapped, MapFlags::MAP_FIXED_NOREPLACE) };
    let noreplace_errno = match noreplace {
        Ok(p) if p.as_ptr() as usize == base => {
            return Err(Error::io(
                "MAP_FIXED_NOREPLACE replaced a live mapping",
                std::io::Error::other("kernel contradicts mmap(2)"),
            ));
        }
        Ok(p) => {
            // A kernel before 4.17 ignores the flag and treats the address as a hint: the
            // mapping landed elsewhere. Give it back.
            // SAFETY: `p` is the mapping just made, elsewhere; nothing references it.
            unsafe { munmap(p.cast(), mapped) }.map_err(|e| Error::io("unmapping a probe", e))?;
            None
        }
        Err(e) => Some(e),
    };

    // The overlap. `arena` keeps believing it owns [base, base + mapped): that stays true in
    // the sense that matters for Drop — the replacement lies exactly inside the arena's own
    // range (between its guards), nothing else refers to it, so the arena's munmap of its full
    // range later unmaps the replacement, and nothing is leaked or unmapped twice.
    // SAFETY: [base, base + mapped) is exactly the arena's read-write part, which this
    // function owns (the arena is a local); the slices taken above were copied into Vecs, so
    // no reference into it is alive; afterwards it is a valid zero-filled rw mapping again.
    let replaced = unsafe { map_at(base, mapped, MapFlags::MAP_FIXED) }
        .map_err(|e| Error::io(format!("mmap MAP_FIXED at {base:#x}"), e))?;
    let replaced_at = replaced.as_ptr() as usize;
    let after = arena.bytes()[block.range()].to_vec();
    let vma_after =
        smaps::vma_containing(pid, base as u64).map_err(|e| Error::process_io(pid, "smaps", e))?;
    let engine_findings = arena.check();
    arena.release()?;

    let replaced_silently = replaced_at == base && before == STAMP && after.iter().all(|b| *b == 0);
    let refused = noreplace_errno == Some(Errno::EEXIST);
    let holds = replaced_silently && refused;
    let sentence = if holds {
        format!(
            "mmap(MAP_FIXED) at the live arena's base {base:#x} succeeded and returned the same \
             base; the arena's first bytes went from {:?} to zeroes without any error, and the \
             engine saw nothing; MAP_FIXED_NOREPLACE at the same address failed with EEXIST",
            render_seed(STAMP)
        )
    } else {
        format!(
            "expected a silent replacement at {base:#x} and EEXIST from MAP_FIXED_NOREPLACE; got \
             base {replaced_at:#x}, NOREPLACE errno {noreplace_errno:?}"
        )
    };
    Ok(Outcome::verdict(
        holds,
        sentence,
        json!({
            "arena_base": format!("{base:#x}"),
            "capacity": arena.capacity(),
            "map_fixed": {
                "returned": format!("{replaced_at:#x}"),
                "same_base": replaced_at == base,
                "bytes_before_hex": hex(&before),
                "bytes_before_seed": render_seed(&before),
                "bytes_after_hex": hex(&after),
                "bytes_after_seed": render_seed(&after),
                "rss_kb_before": rss_before,
                "rss_kb_after": vma_after.rss_kb,
                "vma_after": format!("{:#x}-{:#x} {}", vma_after.start, vma_after.end, vma_after.perms),
                "engine_findings_clean": engine_findings.is_clean(),
            },
            "map_fixed_noreplace": {
                "errno": noreplace_errno.map(|e| format!("{e:?}")),
                "message": noreplace_errno.map(|e| e.desc()),
            },
        }),
    ))
}

/// `mmap` one private anonymous read-write region at `addr` with `extra` flags.
///
/// # Safety
/// With `MAP_FIXED`, `[addr, addr + len)` must be memory the caller owns and no Rust reference
/// into it may be alive: its pages are replaced by zero-filled ones.
unsafe fn map_at(
    addr: usize,
    len: usize,
    extra: MapFlags,
) -> std::result::Result<NonNull<u8>, Errno> {
    let (Some(a), Some(l)) = (NonZeroUsize::new(addr), NonZeroUsize::new(len)) else {
        return Err(Errno::EINVAL);
    };
    // SAFETY: the caller's contract covers MAP_FIXED; without it the kernel never replaces.
    unsafe {
        mmap_anonymous(
            Some(a),
            l,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | extra,
        )
    }
    .map(NonNull::cast)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
