//! `thp-sizes`: for each anonymous THP size the kernel offers, how many bytes one child write
//! makes the kernel copy.
//!
//! Linux 6.8+ lists the anonymous (m)THP sizes as `/sys/kernel/mm/transparent_hugepage/
//! hugepages-<N>kB`. For each size, the experiment enables only that size (`madvise` for it,
//! `never` for every other), maps an arena of exactly that size aligned to it with
//! `MADV_HUGEPAGE`, populates it, checks from kpageflags that one large folio backs it (a
//! compound head followed by tails over contiguous PFNs, with the THP bit; for the PMD size also
//! smaps `AnonHugePages`), forks, lets the child write one byte, and counts the pages whose PFN
//! differs between child and parent: copied bytes = pages × page size. Every sysfs value it
//! changes is restored on the way out, also on error or panic (a Drop guard).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ExperimentOptions, Outcome};
use crate::arena::{Advice, Arena, ArenaConfig};
use crate::error::{Error, Result};
use crate::fork::child::ChildOp;
use crate::fork::subject::{SubjectPipes, spawn};
use crate::kernel::SysfsGuard;
use crate::mem::kpage::Kpage;
use crate::mem::pagemap::Pagemap;

const THP: &str = "/sys/kernel/mm/transparent_hugepage";

/// The anonymous THP sizes the kernel offers, in kB, ascending: the `hugepages-<N>kB`
/// directories with an `enabled` file (a size that has only `shmem_enabled`, such as 8 kB on
/// x86-64, is for shmem only).
fn sizes_kb() -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(THP)
        .map(|d| {
            d.flatten()
                .filter(|e| Path::new(&e.path()).join("enabled").is_file())
                .filter_map(|e| {
                    let n = e.file_name();
                    let n = n.to_str()?;
                    n.strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

fn enabled_file(kb: u64) -> String {
    format!("{THP}/hugepages-{kb}kB/enabled")
}

/// Run the experiment.
///
/// # Errors
/// When sysfs, pagemap or kpageflags cannot be read or written, an arena cannot be mapped or
/// a child cannot be forked.
pub fn run(opts: &ExperimentOptions) -> Result<Outcome> {
    if !opts.allow_sysfs {
        return Ok(Outcome::skipped(
            "needs --allow-sysfs: it enables one THP size at a time under \
             /sys/kernel/mm/transparent_hugepage (and restores every setting)",
            json!({}),
        ));
    }
    if !nix::unistd::geteuid().is_root() {
        return Ok(Outcome::unproven(
            "not root: changing THP settings and reading PFNs and kpageflags need root",
            json!({}),
        ));
    }
    let sizes = sizes_kb();
    if sizes.is_empty() {
        return Ok(Outcome::skipped(
            format!(
                "THP sizes are unavailable: no {THP}/hugepages-*kB (needs Linux 6.8+ with \
                 CONFIG_TRANSPARENT_HUGEPAGE)"
            ),
            json!({}),
        ));
    }
    let privilege = crate::mem::privilege::detect();
    if !privilege.pfn_visible || !privilege.kpage_readable {
        return Ok(Outcome::unproven(
            "PFNs or /proc/kpageflags are not visible to this process",
            json!({}),
        ));
    }
    let page = crate::kernel::page_size();
    let original: Vec<Value> = sizes
        .iter()
        .map(|kb| {
            json!({
                "size_kb": kb,
                "enabled": crate::kernel::read_setting(&enabled_file(*kb)).ok(),
            })
        })
        .collect();

    let mut guard = SysfsGuard::default();
    let rows = measure_all(&mut guard, &sizes, page);
    guard.restore();
    let restore_failures = guard.failures.clone();
    let rows = rows?;

    let measured: Vec<&Value> = rows.iter().filter(|r| r["folio_formed"] == true).collect();
    let sane = measured.iter().all(|r| {
        let copied = r["copied_bytes"].as_u64().unwrap_or(0);
        let size = r["size_kb"].as_u64().unwrap_or(0) * 1024;
        copied >= page as u64 && copied <= size && r["parent_pfns_unchanged"] == true
    });
    let holds = !measured.is_empty() && sane && restore_failures.is_empty();
    let table: Vec<String> = rows
        .iter()
        .map(|r| {
            if r["folio_formed"] == true {
                format!(
                    "{} kB → {} bytes",
                    r["size_kb"],
                    r["copied_bytes"].as_u64().unwrap_or(0)
                )
            } else {
                format!("{} kB → no large folio formed", r["size_kb"])
            }
        })
        .collect();
    let sentence = if holds {
        format!(
            "one child write into a freshly forked large folio copied: {} (page size {page})",
            table.join(", ")
        )
    } else if measured.is_empty() {
        "no THP size produced a large folio, so no copy could be measured".to_string()
    } else {
        format!(
            "unexpected copy sizes or restore failures: {}",
            table.join(", ")
        )
    };
    Ok(Outcome::verdict(
        holds,
        sentence,
        json!({
            "page_size": page,
            "sizes": rows,
            "settings_before": original,
            "restore_failures": restore_failures,
        }),
    ))
}

fn measure_all(guard: &mut SysfsGuard, sizes: &[u64], page: usize) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    for &kb in sizes {
        for &other in sizes {
            let want = if other == kb { "madvise" } else { "never" };
            guard
                .set(&enabled_file(other), want)
                .map_err(|e| Error::io(format!("setting {}", enabled_file(other)), e))?;
        }
        rows.push(measure_one(kb, page)?);
    }
    Ok(rows)
}

fn pfns(pm: &Pagemap, start: usize, len: usize) -> Result<Vec<u64>> {
    let e = pm
        .read(start as u64, (start + len) as u64)
        .map_err(|e| Error::io(format!("reading /proc/{}/pagemap", pm.pid()), e))?;
    Ok(e.iter()
        .map(|x| if x.present() { x.pfn() } else { 0 })
        .collect())
}

fn measure_one(kb: u64, page: usize) -> Result<Value> {
    let size = usize::try_from(kb * 1024)
        .map_err(|_| Error::usage(format!("THP size {kb} kB does not fit in memory")))?;
    if size < page || !size.is_power_of_two() {
        return Ok(json!({"size_kb": kb, "folio_formed": false,
                         "why": "not a power-of-two multiple of the page size"}));
    }
    let arena = Arena::new(
        ArenaConfig::new(size)
            .align(size)
            .advise(Advice::HugePage)
            .populate(true),
    )?;
    let base = arena.base_addr();
    let me = std::process::id() as i32;
    let pm = Pagemap::open(me).map_err(|e| Error::io("opening /proc/self/pagemap", e))?;
    let kp = Kpage::open().map_err(|e| Error::io("opening /proc/kpageflags", e))?;
    let before = pfns(&pm, base, size)?;
    let flags = kp
        .flags(&before)
        .map_err(|e| Error::io("reading /proc/kpageflags", e))?;
    let contiguous = before.first().is_some_and(|&p| p != 0)
        && before
            .iter()
            .enumerate()
            .all(|(i, &p)| p == before[0] + i as u64);
    let compound = flags.first().is_some_and(|f| f.compound_head())
        && flags.iter().skip(1).all(|f| f.compound_tail())
        && flags.iter().all(|f| f.thp());
    let smaps = crate::mem::smaps::vma_containing(me, base as u64).ok();
    let anon_huge_kb = smaps.as_ref().map(|s| s.anon_huge_pages_kb);
    let pmd_kb = crate::kernel::thp_pmd_size_kb();
    let pmd_ok = Some(kb) != pmd_kb || anon_huge_kb == Some(kb);
    let formed = size > page && contiguous && compound && pmd_ok;

    let pipes = SubjectPipes::new()?;
    let mut ops = pipes.prologue().to_vec();
    ops.push(ChildOp::WriteByte {
        addr: base,
        byte: 0xC0,
    });
    ops.extend(pipes.epilogue());
    let (mut subj, _) = spawn(pipes, &ops)?;
    let ready = subj.wait_ready(Instant::now() + Duration::from_secs(10));
    let sample = match &ready {
        Ok(_) => {
            let cpm = Pagemap::open(subj.pid().as_raw())
                .map_err(|e| Error::io("opening the child's pagemap", e))?;
            Some((pfns(&cpm, base, size)?, pfns(&pm, base, size)?))
        }
        Err(_) => None,
    };
    let exit = subj.finish(Instant::now() + Duration::from_secs(5));
    let Some((child, parent)) = sample else {
        return Ok(json!({"size_kb": kb, "folio_formed": formed,
                         "why": "the child did not report ready", "child_exit": exit}));
    };
    let copied_pages = child
        .iter()
        .zip(&parent)
        .filter(|(c, p)| **c != 0 && **p != 0 && c != p)
        .count();
    let child_absent = child.iter().filter(|c| **c == 0).count();
    let written_flags = kp
        .flags(&child[..1])
        .map_err(|e| Error::io("reading /proc/kpageflags", e))?;
    Ok(json!({
        "size_kb": kb,
        "arena": format!("{base:#x}"),
        "folio_formed": formed,
        "head_pfn": format!("{:#x}", before.first().copied().unwrap_or(0)),
        "pfns_contiguous": contiguous,
        "compound_head_then_tails_thp": compound,
        "smaps_anon_huge_pages_kb": anon_huge_kb,
        "copied_pages": copied_pages,
        "copied_bytes": copied_pages * page,
        "child_pages_absent": child_absent,
        "child_written_page_pfn": format!("{:#x}", child.first().copied().unwrap_or(0)),
        // For anonymous pages kpageflags' `mappedtodisk` bit is PG_anon_exclusive (the same
        // page flag): the child's fresh copy is exclusively its own.
        "child_written_page_flags": written_flags.first().map(|f| f.names()),
        "parent_pfns_unchanged": parent == before,
        "child_exit": exit,
    }))
}
