//! `overflow-tools`: the seed's 09b-style overflow, caught three ways.
//!
//! The write is 09b-overflow's: `strcpy(c + 24, " 🤡 Oops!")` into a 32-byte block `c`, 12
//! bytes (space, the 4-byte U+1F921, space, `Oops!`, NUL) from offset 24, so the last 4 bytes
//! (`p`, `s`, `!`, NUL) land past the block's end.
//!
//! 1. **Red zones** (the engine): the write goes through the raw pointer, as C's `strcpy`
//!    would, so the ledger never hears of it; [`Arena::check`] still finds the damaged canary
//!    bytes after `c` and names the block, its offset and exactly how many bytes went past.
//! 2. **A guard page**: `c` is placed at the very end of the arena, and a forked child performs
//!    the same write byte by byte. The first byte past the end is in the PROT_NONE guard: the
//!    child dies of SIGSEGV, and its one-shot handler reports `si_addr`.
//! 3. **valgrind memcheck**, when installed: memcheck tracks heap blocks from `malloc`, not
//!    bytes inside an `mmap` it did not allocate, so the same write inside an mmap arena goes
//!    unseen (shown: 0 errors); on a `malloc`'d 32-byte block it reports `Invalid write of
//!    size 1` at 0..3 bytes after the block. The C program is compiled at run time with `cc`.

use crate::fork::subject::{FaultProbe, store_and_report_fault};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::{ExperimentOptions, Outcome};
use crate::arena::{Arena, ArenaConfig, ArenaError, OverflowSource};
use crate::error::{Error, Result};

/// The seed's block size.
const BLOCK: usize = 32;
/// Where 09b-overflow puts the clown.
const CLOWN_AT: usize = 24;
/// The clown string with strcpy's NUL: 12 bytes.
const CLOWN: &[u8] = b" \xF0\x9F\xA4\xA1 Oops!\0";
/// Bytes that land past a 32-byte block: 24 + 12 - 32.
const PAST_END: usize = CLOWN_AT + CLOWN.len() - BLOCK;
/// Red-zone bytes after each block (more than the overflow, so all of it is seen).
const RED_ZONE: usize = 16;

/// Run the experiment.
///
/// # Errors
/// When an arena cannot be mapped or the child cannot be forked.
pub fn run(_opts: &ExperimentOptions) -> Result<Outcome> {
    let (red_ok, red) = red_zones()?;
    let (guard_ok, guard) = guard_page()?;
    let (vg_ok, vg) = valgrind();
    let holds = red_ok && guard_ok && vg_ok != Some(false);
    let vg_part = match vg_ok {
        Some(true) => "valgrind memcheck reported the same write on a malloc'd block (and \
                       nothing inside an mmap arena)"
            .to_string(),
        Some(false) => "valgrind memcheck did not report as expected".to_string(),
        None => format!(
            "valgrind part skipped: {}",
            vg["skipped"].as_str().unwrap_or("unavailable")
        ),
    };
    let sentence = format!(
        "strcpy(c + {CLOWN_AT}, \" 🤡 Oops!\") into a {BLOCK}-byte block writes {PAST_END} \
         bytes past its end: red zones {}, the guard page {}, {vg_part}",
        if red_ok {
            "caught it (block c, all 4 bytes)"
        } else {
            "did not catch it"
        },
        if guard_ok {
            "caught it (SIGSEGV at the first byte past the arena)"
        } else {
            "did not catch it"
        },
    );
    Ok(Outcome::verdict(
        holds,
        sentence,
        json!({
            "write": {
                "call": format!("strcpy(c + {CLOWN_AT}, \" \u{1F921} Oops!\")"),
                "block_len": BLOCK,
                "offset_in_block": CLOWN_AT,
                "len_with_nul": CLOWN.len(),
                "bytes_past_end": PAST_END,
            },
            "red_zones": red,
            "guard_page": guard,
            "valgrind": vg,
        }),
    ))
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// 09b's layout with red zones; the clown written through the raw pointer.
fn red_zones() -> Result<(bool, Value)> {
    let mut arena = Arena::new(ArenaConfig::new(256).red_zone(RED_ZONE))?;
    let a = arena.alloc_labeled(BLOCK, "a")?;
    let b = arena.alloc_labeled(BLOCK, "b")?;
    let c = arena.alloc_labeled(BLOCK, "c")?;
    let d = arena.alloc_labeled(BLOCK, "d")?;
    arena.write(&a, 0, b"First block ok.\0")?;
    arena.write(&b, 0, b"Second block too.\0")?;
    arena.write(&c, 0, b"This will overwrite next\0")?;
    arena.write(&d, 0, b"Next block intact?\0")?;
    let start = c.offset() + CLOWN_AT;
    // Like C's strcpy: straight to memory, the ledger is not told.
    arena.bytes_mut()[start..start + CLOWN.len()].copy_from_slice(CLOWN);
    let findings = arena.check();
    let c_index = arena
        .index_of(&c)
        .ok_or(ArenaError::NoLedger { op: "index_of" })?;
    let found = findings
        .overflows
        .iter()
        .find(|o| o.index == c_index && o.source == OverflowSource::RedZone);
    let past = &arena.bytes()[c.end()..c.end() + PAST_END];
    let ok = findings.overflows.len() == 1
        && found.is_some_and(|o| o.offset == c.offset() && o.bytes_past_end == PAST_END)
        && past == &CLOWN[CLOWN.len() - PAST_END..];
    let evidence = json!({
        "red_zone": RED_ZONE,
        "block": {"label": "c", "index": c_index, "offset": c.offset(), "len": c.len()},
        "found": found,
        "overflows_found": findings.overflows.len(),
        "bytes_past_end_hex": hex_bytes(past),
        "dump": crate::arena::render_seed(&arena.bytes()[c.offset()..c.end() + RED_ZONE]),
    });
    Ok((ok, evidence))
}

/// `c` as the last 32 bytes of a one-page arena; a child writes the clown byte by byte.
fn guard_page() -> Result<(bool, Value)> {
    let page = crate::kernel::page_size();
    let mut arena = Arena::new(ArenaConfig::new(page))?;
    let _filler = arena.alloc_labeled(page - BLOCK, "filler")?;
    let c = arena.alloc_labeled(BLOCK, "c")?;
    arena.write(&c, 0, b"This will overwrite next\0")?;
    let base = arena.base_addr();
    let start = base + c.offset() + CLOWN_AT;
    let arena_end = base + arena.mapped_len();
    let FaultProbe {
        exit,
        signal,
        si_addr,
    } = store_and_report_fault(start, CLOWN, Duration::from_secs(10))?;
    let ok = exit.signal.as_deref() == Some("SIGSEGV")
        && signal.as_deref() == Some("SIGSEGV")
        && si_addr == Some(arena_end);
    let evidence = json!({
        "arena_base": format!("{base:#x}"),
        "arena_end": format!("{arena_end:#x}"),
        "guard_len": arena.guard_len(),
        "block": {"label": "c", "offset": c.offset(), "len": c.len()},
        "write_start": format!("{start:#x}"),
        "child_exit": exit,
        "fault_signal": signal,
        "si_addr": si_addr.map(|a| format!("{a:#x}")),
        "bytes_written_before_fault": si_addr.map(|a| a.saturating_sub(start)),
        "note": "a guard page only catches an overflow that leaves the mapping; inside the \
                 arena only red zones see it",
    });
    Ok((ok, evidence))
}

/// The C program: the same writes on a malloc'd block (`malloc`) or inside an mmap arena at
/// 09b's offset of `c` (`mmap`).
const C_PROGRAM: &str = r#"#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    char *c;
    if (argc > 1 && strcmp(argv[1], "mmap") == 0) {
        char *arena = mmap(NULL, 256, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (arena == MAP_FAILED) return 2;
        c = arena + 96;
    } else {
        c = malloc(32);
        if (!c) return 2;
    }
    strcpy(c, "This will overwrite next");
    strcpy(c + 24, " \xF0\x9F\xA4\xA1 Oops!");
    return 0;
}
"#;

fn skip(reason: impl Into<String>) -> (Option<bool>, Value) {
    (None, json!({"skipped": reason.into()}))
}

/// What memcheck said about one run.
#[derive(Debug, Default)]
struct Memcheck {
    errors: u64,
    invalid_write_lines: Vec<String>,
    /// (bytes after the block, write size, block size) per reported context.
    after_block: Vec<(u64, u64, u64)>,
}

fn parse_memcheck(stderr: &str) -> Option<Memcheck> {
    let mut m = Memcheck::default();
    let mut last_size = None;
    let mut summary = false;
    for line in stderr.lines() {
        // Lines look like "==123== Invalid write of size 1"; drop the pid prefix.
        let text = line.splitn(3, "==").nth(2).unwrap_or(line).trim();
        if let Some(n) = text.strip_prefix("Invalid write of size ") {
            last_size = n.trim().parse::<u64>().ok();
            m.invalid_write_lines.push(text.to_string());
        } else if let Some(rest) = text.strip_prefix("Address ")
            && let Some((_, tail)) = rest.split_once(" is ")
            && let Some((k, tail)) = tail.split_once(" bytes after a block of size ")
            && let Some(size) = last_size.take()
        {
            let block = tail.split_whitespace().next().and_then(|s| s.parse().ok());
            if let (Ok(k), Some(block)) = (k.trim().parse::<u64>(), block) {
                m.after_block.push((k, size, block));
            }
        } else if let Some(rest) = text.strip_prefix("ERROR SUMMARY: ") {
            m.errors = rest.split_whitespace().next()?.parse().ok()?;
            summary = true;
        }
    }
    summary.then_some(m)
}

fn run_memcheck(valgrind: &Path, prog: &Path, arg: &str) -> std::io::Result<(Memcheck, String)> {
    let out = Command::new(valgrind)
        .args(["--tool=memcheck", "--leak-check=no"])
        .arg(prog)
        .arg(arg)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let m = parse_memcheck(&stderr).ok_or_else(|| {
        std::io::Error::other(format!("no ERROR SUMMARY in valgrind's output: {stderr}"))
    })?;
    Ok((m, stderr))
}

/// The first executable file called `name` on `PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn valgrind() -> (Option<bool>, Value) {
    let Some(valgrind) = find_in_path("valgrind") else {
        return skip("valgrind is not installed (Debian package `valgrind`)");
    };
    let Some(cc) = find_in_path("cc") else {
        return skip("no C compiler (`cc`) to build the heap-overflow program for memcheck");
    };
    match valgrind_with(&valgrind, &cc) {
        Ok(v) => v,
        Err(e) => skip(format!("could not run the memcheck part: {e}")),
    }
}

fn valgrind_with(valgrind: &Path, cc: &Path) -> Result<(Option<bool>, Value)> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temp dir", e))?;
    let src = dir.path().join("overflow.c");
    let prog = dir.path().join("overflow");
    std::fs::write(&src, C_PROGRAM).map_err(|e| Error::io("writing overflow.c", e))?;
    // -fno-builtin keeps strcpy a call, so memcheck's own strcpy sees every byte.
    let out = Command::new(cc)
        .args(["-O0", "-g", "-fno-builtin", "-o"])
        .arg(&prog)
        .arg(&src)
        .output()
        .map_err(|e| Error::io("running cc", e))?;
    if !out.status.success() {
        return Ok(skip(format!(
            "cc could not build the overflow program: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let (heap, heap_log) =
        run_memcheck(valgrind, &prog, "malloc").map_err(|e| Error::io("running valgrind", e))?;
    let (mapped, _) =
        run_memcheck(valgrind, &prog, "mmap").map_err(|e| Error::io("running valgrind", e))?;
    // The furthest byte reported past the block: "K bytes after" plus the write's size.
    let furthest = heap.after_block.iter().map(|(k, n, _)| k + n).max();
    let block_sizes: Vec<u64> = heap.after_block.iter().map(|(_, _, b)| *b).collect();
    let ok = !heap.invalid_write_lines.is_empty()
        && block_sizes.iter().all(|b| *b == BLOCK as u64)
        && furthest == Some(PAST_END as u64)
        && mapped.errors == 0;
    let version = Command::new(valgrind)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    Ok((
        Some(ok),
        json!({
            "valgrind": valgrind.display().to_string(),
            "version": version,
            "program": "C, compiled with cc -O0 -fno-builtin: malloc(32), then \
                        strcpy(c, \"This will overwrite next\"); strcpy(c + 24, \" \u{1F921} Oops!\")",
            "malloc_block": {
                "invalid_write_lines": heap.invalid_write_lines,
                "bytes_after_block": heap.after_block.iter()
                    .map(|(k, n, b)| json!({"bytes_after": k, "write_size": n, "block_size": b}))
                    .collect::<Vec<_>>(),
                "error_count": heap.errors,
                "furthest_byte_past_end": furthest,
                "log_excerpt": heap_log.lines()
                    .filter(|l| l.contains("Invalid write") || l.contains("after a block")
                        || l.contains("ERROR SUMMARY"))
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            },
            "mmap_arena": {
                "error_count": mapped.errors,
                "note": "memcheck tracks malloc'd blocks; bytes inside an mmap it did not \
                         allocate are all addressable to it, so the same overflow at 09b's \
                         offset inside a 256-byte mmap arena is not reported",
            },
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_memcheck_reads_sizes_offsets_and_the_summary() {
        let log = "==1== Invalid write of size 1\n\
                   ==1==    at 0x1: strcpy (in vgpreload)\n\
                   ==1==  Address 0x4a43060 is 0 bytes after a block of size 32 alloc'd\n\
                   ==1== Invalid write of size 1\n\
                   ==1==  Address 0x4a43063 is 3 bytes after a block of size 32 alloc'd\n\
                   ==1== ERROR SUMMARY: 4 errors from 2 contexts (suppressed: 0 from 0)\n";
        let m = parse_memcheck(log).expect("parsed");
        assert_eq!(m.errors, 4);
        assert_eq!(m.after_block, vec![(0, 1, 32), (3, 1, 32)]);
        assert_eq!(m.invalid_write_lines.len(), 2);
        assert!(parse_memcheck("no summary").is_none());
    }

    #[test]
    fn the_clown_crosses_a_32_byte_block_by_4() {
        assert_eq!(CLOWN.len(), 12);
        assert_eq!(PAST_END, 4);
    }
}
