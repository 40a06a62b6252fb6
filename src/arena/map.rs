//! The arena's mapping: one anonymous read-write mapping between PROT_NONE guard regions.
//!
//! Layout, low to high addresses:
//!
//! ```text
//! [ guard: guard_len bytes, PROT_NONE ][ arena: len bytes, RW ][ guard: guard_len, PROT_NONE ]
//! ```
//!
//! The guards are separate VMAs with different protection, so the kernel never merges the arena
//! with a neighbouring anonymous mapping (smaps then shows the arena alone), and an access one
//! byte outside the arena faults. `MADV_GUARD_INSTALL` (Linux 6.13+) was not used on purpose: its
//! guard markers live *inside* the VMA they protect, so smaps would fold them into the arena's
//! VMA and the arena would no longer be a VMA of its own on every kernel we compare.

use std::ptr::NonNull;

use nix::errno::Errno;

use super::ArenaError;

/// Where the arena landed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mapping {
    /// First byte of the read-write arena.
    pub base: NonNull<u8>,
    /// Mapped arena bytes (a whole number of pages; the arena's logical capacity may end
    /// earlier, inside the last page).
    pub len: usize,
    /// Bytes of PROT_NONE guard on each side.
    pub guard_len: usize,
}

impl Mapping {
    /// The whole reservation including both guards, as (start address, length).
    pub fn full_range(&self) -> (usize, usize) {
        // Cannot overflow: this exact range was mapped by `map`, which checked the sum.
        (
            self.base.as_ptr() as usize - self.guard_len,
            self.len + 2 * self.guard_len,
        )
    }
}

/// Map `len` bytes (a non-zero multiple of `page`) aligned to `align` (a power of two, at
/// least `page`) with `guard_len` bytes of PROT_NONE on each side.
pub(super) fn map(
    len: usize,
    guard_len: usize,
    align: usize,
    page: usize,
    shared: bool,
) -> Result<Mapping, ArenaError> {
    let share = if shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    let flags = share | libc::MAP_ANONYMOUS;
    let slack = align - page;
    if guard_len == 0 && slack == 0 {
        return map_unguarded(len, flags);
    }
    let total = reservation_len(len, guard_len, slack)?;
    let reserve = reserve(total)?;
    place(reserve, total, len, guard_len, align, flags)
}

/// Bytes to reserve for `len` arena bytes, two guards and `slack` bytes of alignment room;
/// refused when the sum overflows or exceeds `isize::MAX` (what mmap can map).
fn reservation_len(len: usize, guard_len: usize, slack: usize) -> Result<usize, ArenaError> {
    guard_len
        .checked_mul(2)
        .and_then(|g| g.checked_add(len))
        .and_then(|t| t.checked_add(slack))
        .filter(|t| *t <= isize::MAX as usize)
        .ok_or(ArenaError::BadConfig {
            reason: "the mapping plus guards and alignment overflows the address space",
            value: len,
        })
}

/// No guards and page alignment: one plain read-write mapping where the kernel chooses.
fn map_unguarded(len: usize, flags: libc::c_int) -> Result<Mapping, ArenaError> {
    // SAFETY: a fresh anonymous mapping at an address the kernel chooses (NULL hint, no
    // MAP_FIXED) cannot alias any existing Rust object; the result is checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    let base = check_mmap(p, len)?;
    Ok(Mapping {
        base,
        len,
        guard_len: 0,
    })
}

/// Reserve `total` bytes PROT_NONE (`MAP_NORESERVE`) where the kernel chooses; returns the
/// start. The arena is then placed inside with `MAP_FIXED`, which then only ever replaces pages
/// of our own reservation.
fn reserve(total: usize) -> Result<usize, ArenaError> {
    // SAFETY: fresh PROT_NONE anonymous mapping at a kernel-chosen address; nothing aliases it.
    let r = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    Ok(check_mmap(r, total)?.as_ptr() as usize)
}

/// Place the arena inside the reservation `[reserve, reserve + total)`: its base is the first
/// multiple of `align` leaving `guard_len` bytes below; what lies outside the two guards is
/// trimmed, and the arena's `len` bytes are mapped read-write over the reservation. On error
/// nothing of the reservation stays mapped.
fn place(
    reserve: usize,
    total: usize,
    len: usize,
    guard_len: usize,
    align: usize,
    flags: libc::c_int,
) -> Result<Mapping, ArenaError> {
    let reserve_end = reserve + total;
    // reserve + guard_len + slack <= reserve_end, and rounding up to `align` adds at most slack.
    let base = (reserve + guard_len + align - 1) & !(align - 1);
    let lo = base - guard_len;
    let hi = base + len + guard_len;
    debug_assert!(
        lo >= reserve && hi <= reserve_end,
        "arena must fit its reservation"
    );
    let undo = |e: ArenaError| {
        // Best effort: give back whatever is still mapped of the reservation.
        // SAFETY: the whole reservation is ours and nothing references it yet.
        let _ = unsafe { unmap_range(reserve, total) };
        e
    };
    // SAFETY: [reserve, lo) and [hi, reserve_end) are parts of the reservation mapped by
    // `reserve` and not yet handed out to anyone; unmapping them invalidates no reference.
    unsafe { unmap_range(reserve, lo - reserve) }.map_err(undo)?;
    // SAFETY: as above.
    unsafe { unmap_range(hi, reserve_end - hi) }.map_err(undo)?;

    // SAFETY: [base, base + len) lies inside our own PROT_NONE reservation (checked by the
    // arithmetic above), so MAP_FIXED replaces only pages we own and no Rust object lives there.
    let p = unsafe {
        libc::mmap(
            base as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    match check_mmap(p, len) {
        Ok(b) => Ok(Mapping {
            base: b,
            len,
            guard_len,
        }),
        Err(e) => {
            // SAFETY: [lo, hi) is what is left of our reservation, unreferenced.
            let _ = unsafe { unmap_range(lo, hi - lo) };
            Err(e)
        }
    }
}

fn check_mmap(p: *mut libc::c_void, len: usize) -> Result<NonNull<u8>, ArenaError> {
    if p == libc::MAP_FAILED {
        return Err(ArenaError::Map {
            len,
            errno: Errno::last(),
        });
    }
    NonNull::new(p.cast::<u8>()).ok_or(ArenaError::Map {
        len,
        errno: Errno::EFAULT,
    })
}

/// Unmap the arena and both guards.
///
/// # Safety
/// `m` must describe a live mapping made by [`map`] that nothing references any more.
pub(super) unsafe fn unmap(m: &Mapping) -> Result<(), ArenaError> {
    let (start, len) = m.full_range();
    // SAFETY: the caller guarantees the range is our live mapping and unreferenced.
    let rc = unsafe { libc::munmap(start as *mut libc::c_void, len) };
    Errno::result(rc)
        .map(|_| ())
        .map_err(|errno| ArenaError::Unmap { len, errno })
}

/// `madvise` over the arena (not the guards).
pub(super) fn madvise(m: &Mapping, advice: libc::c_int) -> Result<(), Errno> {
    // SAFETY: the range is exactly our live read-write mapping. The safe callers pass only
    // advice that cannot change what the parent process reads (fork inheritance, THP, KSM);
    // destructive advice goes through `Arena::advise_unchecked`, an `unsafe fn`.
    let rc = unsafe { libc::madvise(m.base.as_ptr().cast(), m.len, advice) };
    Errno::result(rc).map(|_| ())
}

/// Unmap `[start, start + len)` if `len > 0`.
///
/// # Safety
/// The range must be ours (part of a mapping made here) and unreferenced.
unsafe fn unmap_range(start: usize, len: usize) -> Result<(), ArenaError> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller guarantees the range is ours and unreferenced.
    let rc = unsafe { libc::munmap(start as *mut libc::c_void, len) };
    Errno::result(rc)
        .map(|_| ())
        .map_err(|errno| ArenaError::Unmap { len, errno })
}

/// What [`grow`] did.
#[derive(Debug, Clone, Copy)]
pub(super) struct Grown {
    /// The arena's new mapping.
    pub map: Mapping,
    /// Whether the kernel had to move it (`mremap` with `MREMAP_MAYMOVE | MREMAP_FIXED`).
    pub moved: bool,
    /// Whether both old guards could be unmapped after a move (always true otherwise).
    pub old_guards_unmapped: bool,
}

/// Grow a private arena to `new_len` bytes (a multiple of `page`, larger than the
/// current length), keeping a guard of `m.guard_len` bytes on each side.
///
/// In place when the `new_len - len` bytes right after the end guard are free
/// ([`grow_in_place`]); otherwise the arena moves ([`grow_by_moving`]). On error the arena is
/// left as it was.
///
/// # Safety
/// `m` must describe a live private mapping made by [`map`] that nothing references (no slice
/// of its bytes is alive); after success only the returned mapping may be used.
pub(super) unsafe fn grow(
    m: &Mapping,
    new_len: usize,
    align: usize,
    page: usize,
) -> Result<Grown, ArenaError> {
    debug_assert!(new_len > m.len && new_len.is_multiple_of(page));
    // SAFETY: the caller's guarantee, passed on.
    match unsafe { grow_in_place(m, new_len) }? {
        InPlace::Grown(g) => Ok(g),
        // SAFETY: the caller's guarantee; the arena is unchanged (only its end guard may be
        // gone, which `old_end_guard_ours` says).
        InPlace::Refused { old_end_guard_ours } => unsafe {
            grow_by_moving(m, new_len, align, page, old_end_guard_ours)
        },
    }
}

/// What [`grow_in_place`] managed.
enum InPlace {
    /// The arena grew where it is.
    Grown(Grown),
    /// It could not; the arena is as it was, except that its end guard is gone when
    /// `old_end_guard_ours` is false (the hole it left was taken meanwhile).
    Refused { old_end_guard_ours: bool },
}

/// Claim the `new_len - len` bytes after the end guard with `MAP_FIXED_NOREPLACE` (so nobody
/// else's mapping is ever touched), then grow the arena over its old end guard with `mremap`
/// (no flags: in place or fail); the claim's last `guard_len` bytes are the new end guard.
///
/// # Safety
/// As [`grow`].
unsafe fn grow_in_place(m: &Mapping, new_len: usize) -> Result<InPlace, ArenaError> {
    let base = m.base.as_ptr() as usize;
    let (len, guard_len) = (m.len, m.guard_len);
    let extra = new_len - len;
    let old_end = base + len;
    let claim_at = old_end + guard_len;
    // The end of the claim cannot overflow: `map` checked that base + len + guards fits, and
    // new_len was checked against isize::MAX by the caller; an address-space overflow makes the
    // kernel refuse (ENOMEM), which leads to a move.
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping (EEXIST instead); a fresh
    // PROT_NONE mapping aliases no Rust object.
    let claim = unsafe {
        libc::mmap(
            claim_at as *mut libc::c_void,
            extra,
            libc::PROT_NONE,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE
                | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if claim == libc::MAP_FAILED {
        return Ok(InPlace::Refused {
            old_end_guard_ours: true,
        });
    }
    let got = claim as usize;
    if got != claim_at {
        // A kernel before 4.17 treats the address as a hint: not where we asked. Give it back.
        // SAFETY: `claim` is the mapping just made, `extra` bytes, unreferenced.
        unsafe { unmap_range(got, extra) }?;
        return Ok(InPlace::Refused {
            old_end_guard_ours: true,
        });
    }
    // [old_end, claim_at + extra) is ours: old end guard + claim. The arena grows into its
    // first `extra` bytes; the last `guard_len` bytes stay as the new end guard.
    // SAFETY: that range is our old guard plus our claim, PROT_NONE, unreferenced.
    unsafe { unmap_range(old_end, extra) }?;
    // SAFETY: [base, old_end) is our live arena (caller's guarantee) and the range it grows
    // into was just freed by us. Without MREMAP_MAYMOVE the kernel grows it in place or fails.
    let r = unsafe { libc::mremap(base as *mut libc::c_void, len, new_len, 0) };
    if r != libc::MAP_FAILED {
        return Ok(InPlace::Grown(Grown {
            map: Mapping {
                base: m.base,
                len: new_len,
                guard_len,
            },
            moved: false,
            old_guards_unmapped: true,
        }));
    }
    // Another thread mapped into the hole in the meantime: give back the rest of the claim
    // (the would-be guard) and move instead. The old end guard is gone.
    // SAFETY: [old_end + extra, claim_at + extra) is the tail of our claim.
    unsafe { unmap_range(old_end + extra, guard_len) }?;
    Ok(InPlace::Refused {
        old_end_guard_ours: false,
    })
}

/// Move the arena: a fresh guarded region is mapped (aligned to `align`, like [`map`]) and
/// `mremap(MREMAP_MAYMOVE | MREMAP_FIXED)` moves the arena's pages over its read-write part,
/// growing them; the old guards (the end guard only when `old_end_guard_ours`) are then
/// unmapped.
///
/// # Safety
/// As [`grow`].
unsafe fn grow_by_moving(
    m: &Mapping,
    new_len: usize,
    align: usize,
    page: usize,
    old_end_guard_ours: bool,
) -> Result<Grown, ArenaError> {
    let base = m.base.as_ptr() as usize;
    let (len, guard_len) = (m.len, m.guard_len);
    let fresh = map(new_len, guard_len, align, page, false)?;
    // SAFETY: the source is our live arena, the destination the read-write part of the region
    // just mapped (ours, unreferenced); MREMAP_FIXED replaces only that. Afterwards the old
    // range is unmapped by the kernel and only `fresh` may be used, as the caller agreed.
    let r = unsafe {
        libc::mremap(
            base as *mut libc::c_void,
            len,
            new_len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            fresh.base.as_ptr() as *mut libc::c_void,
        )
    };
    if r == libc::MAP_FAILED {
        let errno = Errno::last();
        // SAFETY: `fresh` is ours and unreferenced; the arena stayed where it was.
        let _ = unsafe { unmap(&fresh) };
        return Err(ArenaError::Remap {
            old_mapped: len,
            new_mapped: new_len,
            errno,
        });
    }
    // The arena moved; its old guards are now strays of ours. Failing to unmap them leaks a
    // few PROT_NONE pages, not the arena, so it is reported, not an error.
    // SAFETY: both guards were made by `map` for this arena and nothing references them.
    let low = unsafe { unmap_range(base - guard_len, guard_len) };
    let high = if old_end_guard_ours {
        // SAFETY: as above.
        unsafe { unmap_range(base + len, guard_len) }
    } else {
        Ok(())
    };
    Ok(Grown {
        map: fresh,
        moved: true,
        old_guards_unmapped: low.is_ok() && high.is_ok(),
    })
}
