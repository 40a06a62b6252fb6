//! `ksm`: two identical arenas merged by KSM share one page frame; a write un-merges it.
//!
//! Both arenas get `MADV_MERGEABLE` and identical, non-zero, run-unique contents. ksmd (run
//! `1`; started only with `--allow-sysfs`, and then tuned to scan fast) merges equal pages into
//! one write-protected KSM page: pagemap then shows the same PFN for page *k* of both arenas,
//! and kpageflags has the KSM bit. A write to one arena is a copy-on-write break: the writer's
//! PFN changes to a fresh, non-KSM page; the other arena keeps the KSM page. Every sysfs value
//! changed is restored when the experiment ends, even on error or panic (`SysfsGuard`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{ExperimentOptions, Outcome};
use crate::arena::{Advice, Arena, ArenaConfig};
use crate::error::{Error, Result};
use crate::kernel::{SysfsGuard, read_setting};
use crate::mem::kpage::Kpage;
use crate::mem::pagemap::Pagemap;

const KSM: &str = "/sys/kernel/mm/ksm";
/// Pages per arena.
const PAGES: usize = 4;
/// How long to wait for ksmd to merge.
const MERGE_WAIT: Duration = Duration::from_secs(10);

fn ksm_file(name: &str) -> String {
    format!("{KSM}/{name}")
}

/// PFN and KSM bit of each page of `[start, start + pages * page)` in our own process.
fn frames(pm: &Pagemap, kp: &Kpage, start: usize, page: usize) -> Result<Vec<(u64, bool)>> {
    let e = pm
        .read(start as u64, (start + PAGES * page) as u64)
        .map_err(|e| Error::io("reading /proc/self/pagemap", e))?;
    let pfns: Vec<u64> = e
        .iter()
        .map(|x| if x.present() { x.pfn() } else { 0 })
        .collect();
    let flags = kp
        .flags(&pfns)
        .map_err(|e| Error::io("reading /proc/kpageflags", e))?;
    Ok(pfns
        .iter()
        .zip(flags)
        .map(|(&p, f)| (p, p != 0 && f.ksm()))
        .collect())
}

/// Run the experiment.
///
/// # Errors
/// When sysfs, pagemap or kpageflags cannot be read or written, or an arena cannot be mapped.
pub fn run(opts: &ExperimentOptions) -> Result<Outcome> {
    if !Path::new(KSM).exists() {
        return Ok(Outcome::skipped(
            format!("KSM is unavailable: {KSM} does not exist (kernel built without CONFIG_KSM)"),
            json!({}),
        ));
    }
    if !nix::unistd::geteuid().is_root() {
        return Ok(Outcome::unproven(
            "not root: PFNs and /proc/kpageflags (the KSM bit) are hidden without CAP_SYS_ADMIN",
            json!({}),
        ));
    }
    let privilege = crate::mem::privilege::detect();
    if !privilege.pfn_visible || !privilege.kpage_readable {
        return Ok(Outcome::unproven(
            "PFNs or /proc/kpageflags are not visible to this process",
            json!({"pfn_visible": privilege.pfn_visible, "kpage_readable": privilege.kpage_readable}),
        ));
    }
    let run_before =
        read_setting(&ksm_file("run")).map_err(|e| Error::io("reading the KSM run setting", e))?;
    if run_before != "1" && !opts.allow_sysfs {
        return Ok(Outcome::skipped(
            format!(
                "ksmd is not running ({KSM}/run = {run_before}) and starting it changes a \
                 system setting: pass --allow-sysfs"
            ),
            json!({"run": run_before}),
        ));
    }
    let mut guard = SysfsGuard::default();
    if opts.allow_sysfs {
        // Scan fast so the wait stays short; restored on the way out.
        guard
            .set(&ksm_file("pages_to_scan"), "2000")
            .map_err(|e| Error::io("changing a KSM setting", e))?;
        guard
            .set(&ksm_file("sleep_millisecs"), "10")
            .map_err(|e| Error::io("changing a KSM setting", e))?;
        if run_before != "1" {
            guard
                .set(&ksm_file("run"), "1")
                .map_err(|e| Error::io("changing a KSM setting", e))?;
        }
    }
    let changed: Vec<_> = guard
        .changed()
        .iter()
        .map(|(p, v)| json!({"path": p, "was": v}))
        .collect();
    let result = measure();
    guard.restore();
    let restore_failures = guard.failures.clone();
    let (holds, sentence, mut evidence) = result?;
    evidence["sysfs_changed_and_restored"] = json!(changed);
    evidence["restore_failures"] = json!(restore_failures);
    Ok(Outcome::verdict(
        holds && restore_failures.is_empty(),
        sentence,
        evidence,
    ))
}

/// Frames of an arena's pages: (PFN, kpageflags KSM bit).
type Frames = Vec<(u64, bool)>;

fn measure() -> Result<(bool, String, serde_json::Value)> {
    let page = crate::kernel::page_size();
    let cfg = ArenaConfig::new(PAGES * page)
        .advise(Advice::NoHugePage)
        .advise(Advice::Mergeable);
    let mut a = Arena::new(cfg.clone())?;
    let mut b = Arena::new(cfg)?;
    fill_identically(&mut a, &mut b, page);
    let pm = Pagemap::open(std::process::id() as i32)
        .map_err(|e| Error::io("opening /proc/self/pagemap", e))?;
    let kp = Kpage::open().map_err(|e| Error::io("opening /proc/kpageflags", e))?;
    let (a_base, b_base) = (a.base_addr(), b.base_addr());
    let before_a = frames(&pm, &kp, a_base, page)?;
    let before_b = frames(&pm, &kp, b_base, page)?;
    let (bit_ok, _control) = ksm_bit_is_reliable(&pm, &kp, page)?;
    // With a reliable bit, require it (or its absence); otherwise ignore it.
    let is_ksm = |k: bool| !bit_ok || k;
    let not_ksm = |k: bool| !bit_ok || !k;

    let (merged, waited_ms) = wait_for_the_merge(&pm, &kp, (a_base, b_base), page, bit_ok)?;
    let Some((merged_a, merged_b)) = merged else {
        return not_merged(&pm, &kp, (a_base, b_base), page);
    };
    let shared_pfn = merged_a[0].0;
    let count_merged = kp
        .counts(&[shared_pfn])
        .map_err(|e| Error::io("reading /proc/kpagecount", e))?;
    let smaps_b_ksm_kb =
        crate::mem::smaps::vma_containing(std::process::id() as i32, b_base as u64)
            .map(|v| v.ksm_kb)
            .ok();

    // The write: one byte into page 0 of arena a. The KSM page is write-protected, so this
    // faults and the kernel gives a its own copy.
    a.bytes_mut()[0] ^= 0xFF;
    let after_a = frames(&pm, &kp, a_base, page)?;
    let after_b = frames(&pm, &kp, b_base, page)?;
    let count_after = kp
        .counts(&[shared_pfn])
        .map_err(|e| Error::io("reading /proc/kpagecount", e))?;
    let content_ok = a.bytes()[1..] == b.bytes()[1..] && a.bytes()[0] != b.bytes()[0];

    let distinct_before = before_a
        .iter()
        .zip(&before_b)
        .all(|(x, y)| x.0 != 0 && x.0 != y.0 && not_ksm(x.1) && not_ksm(y.1));
    let unmerged = after_a[0].0 != shared_pfn && after_a[0].0 != 0 && not_ksm(after_a[0].1);
    let other_kept = after_b[0].0 == shared_pfn && is_ksm(after_b[0].1);
    // Without a trustworthy bit, smaps must still count KSM memory in b after the merge.
    let smaps_ok = bit_ok || smaps_b_ksm_kb.is_some_and(|kb| kb > 0);
    let rest_still_merged = after_a[1..] == merged_a[1..] && after_b[1..] == merged_b[1..];
    let holds =
        distinct_before && unmerged && other_kept && rest_still_merged && content_ok && smaps_ok;
    let sentence = if holds && !bit_ok {
        format!(
            "KSM merged page 0 of both arenas into PFN {shared_pfn:#x} (mapped {} times, smaps Ksm \
             {} kB) after {waited_ms} ms; one byte written into arena a broke the sharing: a's \
             page moved to PFN {:#x} while b kept the merged page. kpageflags' KSM bit was not \
             used: this kernel sets it on a page that was never mergeable",
            count_merged.first().copied().unwrap_or(0),
            smaps_b_ksm_kb.unwrap_or(0),
            after_a[0].0
        )
    } else if holds {
        format!(
            "KSM merged page 0 of both arenas into PFN {shared_pfn:#x} (KSM bit set, mapped \
             {} times) after {waited_ms} ms; one byte written into arena a broke the sharing: \
             a's page moved to PFN {:#x} (not KSM) while b kept the KSM page",
            count_merged.first().copied().unwrap_or(0),
            after_a[0].0
        )
    } else {
        "KSM merge and un-merge did not go as expected; see the evidence".to_string()
    };
    let pfns = |f: &[(u64, bool)]| f.iter().map(|x| format!("{:#x}", x.0)).collect::<Vec<_>>();
    let ksm = |f: &[(u64, bool)]| f.iter().map(|x| x.1).collect::<Vec<_>>();
    Ok((
        holds,
        sentence,
        json!({
            "pages": PAGES,
            "arena_a": format!("{a_base:#x}"),
            "arena_b": format!("{b_base:#x}"),
            "ksm_bit_reliable": bit_ok,
            "before_merge": {"pfns_a": pfns(&before_a), "pfns_b": pfns(&before_b),
                             "ksm_a": ksm(&before_a), "ksm_b": ksm(&before_b)},
            "merged": {"pfns_a": pfns(&merged_a), "pfns_b": pfns(&merged_b),
                       "ksm_a": ksm(&merged_a), "ksm_b": ksm(&merged_b),
                       "waited_ms": waited_ms,
                       "kpagecount_of_page0": count_merged.first(),
                       "smaps_ksm_kb_b": smaps_b_ksm_kb},
            "after_write": {"written": "arena a, page 0, byte 0",
                            "pfns_a": pfns(&after_a), "pfns_b": pfns(&after_b),
                            "ksm_a": ksm(&after_a), "ksm_b": ksm(&after_b),
                            "kpagecount_of_old_page0": count_after.first(),
                            "contents_differ_only_at_byte_0": content_ok},
        }),
    ))
}

/// Both arenas: identical, different per page, never zero, unique to this run.
fn fill_identically(a: &mut Arena, b: &mut Arena, page: usize) {
    let nonce = format!(
        "cowscope ksm pid {} t {:?} ",
        std::process::id(),
        std::time::SystemTime::now()
    );
    for arena in [a, b] {
        let bytes = arena.bytes_mut();
        for (k, chunk) in bytes.chunks_mut(page).enumerate() {
            let pattern = format!("{nonce}page {k} ");
            for (i, byte) in chunk.iter_mut().enumerate() {
                *byte = pattern.as_bytes()[i % pattern.len()];
            }
        }
    }
}

/// Whether kpageflags' KSM bit can be trusted here, from a control page that KSM must never
/// touch (not MADV_MERGEABLE); the control arena is returned to live as long as the rest.
/// If kpageflags calls it KSM, the bit is unreliable on this kernel: some kernels (seen on
/// Debian's 6.12.117) set KPF_KSM for every anonymous page ("fs/proc: fix KPF_KSM reported
/// for all anonymous pages" fixed it). Then only PFN equality and smaps judge the merge.
fn ksm_bit_is_reliable(pm: &Pagemap, kp: &Kpage, page: usize) -> Result<(bool, Arena)> {
    let mut control = Arena::new(ArenaConfig::new(page).advise(Advice::NoHugePage))?;
    control.bytes_mut()[0] = 1;
    let control_ksm = frames(pm, kp, control.base_addr(), page)?
        .first()
        .is_some_and(|f| f.1);
    Ok((!control_ksm, control))
}

/// Poll every 20 ms until ksmd merged every page of both arenas (same PFN, KSM bit when it
/// is reliable) or [`MERGE_WAIT`] passed; the frames at the merge and the milliseconds waited.
fn wait_for_the_merge(
    pm: &Pagemap,
    kp: &Kpage,
    (a_base, b_base): (usize, usize),
    page: usize,
    bit_ok: bool,
) -> Result<(Option<(Frames, Frames)>, u64)> {
    let is_ksm = |k: bool| !bit_ok || k;
    let t0 = Instant::now();
    let merged = loop {
        let fa = frames(pm, kp, a_base, page)?;
        let fb = frames(pm, kp, b_base, page)?;
        let all = fa
            .iter()
            .zip(&fb)
            .all(|(x, y)| x.0 != 0 && x.0 == y.0 && is_ksm(x.1) && is_ksm(y.1));
        if all {
            break Some((fa, fb));
        }
        if t0.elapsed() >= MERGE_WAIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((merged, t0.elapsed().as_millis() as u64))
}

/// The failed verdict when ksmd did not merge in time, with the frames as they are.
fn not_merged(
    pm: &Pagemap,
    kp: &Kpage,
    (a_base, b_base): (usize, usize),
    page: usize,
) -> Result<(bool, String, serde_json::Value)> {
    let fa = frames(pm, kp, a_base, page)?;
    let fb = frames(pm, kp, b_base, page)?;
    Ok((
        false,
        format!(
            "ksmd did not merge the two arenas within {} s",
            MERGE_WAIT.as_secs()
        ),
        json!({
            "pages": PAGES,
            "pfns_a": fa.iter().map(|f| f.0).collect::<Vec<_>>(),
            "pfns_b": fb.iter().map(|f| f.0).collect::<Vec<_>>(),
            "ksm_a": fa.iter().map(|f| f.1).collect::<Vec<_>>(),
            "ksm_b": fb.iter().map(|f| f.1).collect::<Vec<_>>(),
            "pages_sharing": read_setting(&ksm_file("pages_sharing")).ok(),
        }),
    ))
}
