//! `double-release`: the seed asks "Could you implement a double-free detector manually?".
//! The engine does: releasing a block twice is [`ArenaError::DoubleRelease`] (and a finding of
//! [`Arena::check`]), releasing the arena twice is [`ArenaError::Released`]; neither touches
//! memory, so neither is undefined behaviour.
//!
//! Why the engine has to keep the books itself: the kernel does not. `munmap(2)` of a range
//! that holds no mapping succeeds, so a second raw `munmap` of the same range returns 0 and
//! says nothing (and had the range been reused meanwhile, it would have unmapped the new
//! owner's memory). The experiment shows that on a scratch page, unmapped twice by a forked
//! child (one thread, so nothing can slip into the hole), beside the engine's answers.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use serde_json::json;

use super::{ExperimentOptions, Outcome};
use crate::arena::{Arena, ArenaConfig, ArenaError};
use crate::error::{Error, Result};
use crate::fork::child::{ChildOp, TAG_MUNMAP_RESULT};
use crate::fork::subject::{SubjectPipes, spawn};

/// Run the experiment.
///
/// # Errors
/// When an arena or the scratch page cannot be mapped.
pub fn run(_opts: &ExperimentOptions) -> Result<Outcome> {
    let page = crate::kernel::page_size();
    let mut arena = Arena::new(ArenaConfig::new(page))?;
    let a = arena.alloc_labeled(16, "a")?;
    let b = arena.alloc_labeled(16, "b")?;
    let a_index = arena
        .index_of(&a)
        .ok_or(ArenaError::NoLedger { op: "index_of" })?;
    arena.write(&b, 0, b"b stays in use\0")?;

    // A block released twice.
    let first_block = arena.release_block(&a);
    let second_block = arena.release_block(&a);
    let findings = arena.check();
    let block_detected = first_block.is_ok()
        && matches!(
            second_block,
            Err(ArenaError::DoubleRelease { index, offset, .. })
                if index == a_index && offset == a.offset()
        )
        && findings.double_releases.len() == 1
        && findings.double_releases[0].block.index == a_index;

    // The arena released twice; and a block released after its arena.
    let base = arena.base_addr();
    let first_arena = arena.release();
    let second_arena = arena.release();
    let block_after_arena = arena.release_block(&b);
    let arena_detected = first_arena.is_ok()
        && matches!(
            second_arena,
            Err(ArenaError::Released { op: "release", .. })
        )
        && matches!(block_after_arena, Err(ArenaError::Released { .. }));

    let raw = raw_double_munmap(page)?;
    let kernel_silent = raw.first.is_ok() && raw.second.is_ok();

    let holds = block_detected && arena_detected;
    let sentence = if holds {
        format!(
            "releasing block {} (offset {}) twice is DoubleRelease, releasing the arena twice is \
             Released, both reported before any memory is touched; the kernel alone would not \
             have noticed: a second munmap of the same page returned {}",
            a_index,
            a.offset(),
            outcome(&raw.second)
        )
    } else {
        "a double release went undetected by the engine (see evidence)".to_string()
    };
    Ok(Outcome::verdict(
        holds,
        sentence,
        json!({
            "block": {
                "index": a_index,
                "offset": a.offset(),
                "len": a.len(),
                "first_release": describe(&first_block),
                "second_release": describe(&second_block),
                "second_release_kind": kind(&second_block),
                "findings_double_releases": findings.double_releases,
            },
            "arena": {
                "base": format!("{base:#x}"),
                "first_release": describe(&first_arena),
                "second_release": describe(&second_arena),
                "second_release_kind": kind(&second_arena),
                "release_block_after_release": describe(&block_after_arena),
            },
            "kernel_munmap_twice": {
                "addr": format!("{:#x}", raw.addr),
                "len": page,
                "first": outcome(&raw.first),
                "second": outcome(&raw.second),
                "kernel_reports_nothing": kernel_silent,
            },
        }),
    ))
}

fn describe(r: &std::result::Result<(), ArenaError>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

/// The ArenaError variant's name, e.g. `DoubleRelease`.
fn kind(r: &std::result::Result<(), ArenaError>) -> Option<String> {
    let e = r.as_ref().err()?;
    let dbg = format!("{e:?}");
    Some(
        dbg.split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or_default()
            .to_string(),
    )
}

fn outcome(r: &std::result::Result<(), Errno>) -> String {
    match r {
        Ok(()) => "0 (success)".into(),
        Err(e) => format!("-1 ({})", e.desc()),
    }
}

struct RawMunmap {
    addr: usize,
    first: std::result::Result<(), Errno>,
    second: std::result::Result<(), Errno>,
}

/// Map a scratch page, then let a forked child `munmap` it twice and report both answers.
/// In the child (one thread) nothing can be mapped into the hole between the two calls, so
/// the second call can only meet an empty range; in this process another thread could.
fn raw_double_munmap(page: usize) -> Result<RawMunmap> {
    let len = NonZeroUsize::new(page).ok_or_else(|| Error::usage("page size 0"))?;
    // SAFETY: a fresh private anonymous mapping at a kernel-chosen address aliases nothing.
    let p = unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_NONE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_ANONYMOUS,
        )
    }
    .map_err(|e| Error::io("mapping a scratch page", e))?;
    let addr = p.as_ptr() as usize;
    let answers = ask_child(addr, page);
    // SAFETY: `p` is the page mapped above (the child unmapped only its own copy); nothing
    // references it.
    let parent = unsafe { munmap(p, page) };
    let answers = answers?;
    parent.map_err(|e| Error::io("unmapping the scratch page", e))?;
    let [first, second] = answers;
    Ok(RawMunmap {
        addr,
        first,
        second,
    })
}

fn ask_child(addr: usize, len: usize) -> Result<[std::result::Result<(), Errno>; 2]> {
    let pipes = SubjectPipes::new()?;
    let fd = pipes.child_report_fd();
    let mut ops = pipes.prologue().to_vec();
    ops.push(ChildOp::Munmap { addr, len, fd });
    ops.push(ChildOp::Munmap { addr, len, fd });
    ops.extend(pipes.epilogue());
    let (mut subject, _) = spawn(pipes, &ops)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let msgs = subject.wait_ready(deadline).map_err(|e| {
        Error::io(
            "waiting for the munmap child",
            std::io::Error::other(format!("{e:?}")),
        )
    })?;
    subject.finish(deadline);
    let mut results = msgs
        .iter()
        .filter(|m| m.tag == TAG_MUNMAP_RESULT)
        .map(|m| match m.value {
            0 => Ok(()),
            e => Err(Errno::from_raw(i32::try_from(e).unwrap_or(libc::EINVAL))),
        });
    match (results.next(), results.next()) {
        (Some(a), Some(b)) => Ok([a, b]),
        _ => Err(Error::io(
            "reading the munmap child's answers",
            std::io::Error::other("fewer than two answers"),
        )),
    }
}
