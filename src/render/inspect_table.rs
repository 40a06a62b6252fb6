//! `inspect --format table`: per pair the totals in MiB, the VMAs with the most divergence and
//! one sentence a person can act on; then pools and processes. Everything shown is in the
//! document; this only sorts, sums and formats.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::doc::InspectDoc;
use crate::inspect::model::{PairReport, PoolReport, SampleLine, SideName, Snapshot};
use crate::inspect::tally::ClassCounts;

/// Rows of "most diverged VMAs" per pair.
const TOP: usize = 5;

/// `n` with its noun, singular for 1.
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A pair's totals in one line: "shared 66.6 MiB · diverged 31.3 MiB · ...".
pub fn totals_line(t: &ClassCounts, ps: u64) -> String {
    format!(
        "shared {} · diverged {} · only parent {} · only child {} · zero {} · unproven {}",
        mib(t.shared, ps),
        mib(t.diverged, ps),
        mib(t.only_parent, ps),
        mib(t.only_child, ps),
        mib(t.zero, ps),
        mib(t.unproven, ps)
    )
}

/// A size for people: MiB with one decimal, kB below 0.05 MiB.
pub fn mib(pages: u64, ps: u64) -> String {
    crate::inspect::model::human_size(pages * ps)
}

fn kb_mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// Where divergence lives: the label of a VMA row (its path, or its kind for anonymous
/// memory).
fn label(pathname: &str, kind: &str) -> String {
    if pathname.is_empty() {
        format!("anonymous memory ({kind})")
    } else {
        pathname.to_string()
    }
}

/// The one sentence for a pair.
pub fn sentence(p: &PairReport, ps: u64, pfn_visible: bool) -> String {
    let t = &p.totals;
    let both = t.shared + t.diverged + t.zero + t.unproven;
    let mut by_label: BTreeMap<String, u64> = BTreeMap::new();
    for v in &p.vmas {
        *by_label
            .entry(label(&v.pathname, v.kind.name()))
            .or_default() += v.counts.diverged;
    }
    let top = by_label
        .iter()
        .max_by_key(|(_, n)| **n)
        .filter(|(_, n)| **n > 0);
    let place = match top {
        Some((l, n)) => format!(
            "; {}% of it is in {l}",
            ((*n as f64 / t.diverged.max(1) as f64) * 100.0).round()
        ),
        None => String::new(),
    };
    if !pfn_visible {
        return format!(
            "PFNs are hidden: of the {} both processes map, at least {} are no longer the same \
             page in both (the exclusive bit proves it: a copy, or released and refaulted){place}, \
             and {} are unproven; run as root to compare frames.",
            mib(both, ps),
            mib(t.diverged, ps),
            mib(t.unproven, ps)
        );
    }
    if t.diverged == 0 {
        return format!(
            "no page has diverged: all {} both processes map are still the same frames{}.",
            mib(both, ps),
            if t.zero > 0 {
                format!(
                    " ({} of it the zero page, which nobody paid for)",
                    mib(t.zero, ps)
                )
            } else {
                String::new()
            }
        );
    }
    format!(
        "{} of the {} both processes map are no longer the same page (a copy, or released and \
         refaulted){place}.",
        mib(t.diverged, ps),
        mib(both, ps)
    )
}

fn pair(out: &mut String, p: &PairReport, s: &Snapshot, ps: u64) {
    let _ = writeln!(
        out,
        "\npair {} ({}) -> {} ({})",
        p.parent, p.parent_comm, p.child, p.child_comm
    );
    let _ = writeln!(out, "  {}", sentence(p, ps, s.pfn_visible));
    let t = &p.totals;
    let _ = writeln!(out, "  {}", totals_line(t, ps));
    let mut rows: Vec<_> = p.vmas.iter().filter(|v| v.counts.diverged > 0).collect();
    rows.sort_by_key(|v| std::cmp::Reverse(v.counts.diverged));
    if !rows.is_empty() {
        let _ = writeln!(out, "  VMAs with the most divergence:");
        let _ = writeln!(
            out,
            "    {:>10} {:>10}  {:<12} {:<33}  pathname",
            "diverged", "shared", "kind", "range"
        );
        for v in rows.iter().take(TOP) {
            let _ = writeln!(
                out,
                "    {:>10} {:>10}  {:<12} {:<33}  {}",
                mib(v.counts.diverged, ps),
                mib(v.counts.shared, ps),
                v.kind.name(),
                format!("{:#x}-{:#x}", v.start, v.end),
                v.pathname
            );
        }
        if rows.len() > TOP {
            let _ = writeln!(
                out,
                "    ... plus {} with less divergence",
                plural((rows.len() - TOP) as u64, "VMA")
            );
        }
    }
    if let Some(a) = &p.accounting {
        let c = &a.child;
        let _ = writeln!(
            out,
            "  child Private_Dirty {} = {} diverged + {} only in the child + {} in child-only VMAs{}{}",
            kb_mib(c.private_dirty_kb),
            kb_mib(c.diverged_kb),
            kb_mib(c.only_here_kb),
            kb_mib(c.one_sided_vmas_kb),
            if c.other_kb > 0 {
                format!(" + {} other", kb_mib(c.other_kb))
            } else {
                String::new()
            },
            if c.residual_kb != 0 {
                format!(
                    " ({:+} kB not anonymous or changed meanwhile)",
                    c.residual_kb
                )
            } else {
                " (exactly)".to_string()
            }
        );
    }
    if !p.one_sided.is_empty() {
        let n = |side: SideName| p.one_sided.iter().filter(|o| o.side == side).count() as u64;
        let _ = writeln!(
            out,
            "  on one side only: {} of the parent, {} of the child",
            plural(n(SideName::Parent), "VMA"),
            plural(n(SideName::Child), "VMA")
        );
        let mut big: Vec<_> = p.one_sided.iter().filter(|o| o.present > 0).collect();
        big.sort_by_key(|o| std::cmp::Reverse(o.present));
        for o in big.iter().take(3) {
            let _ = writeln!(
                out,
                "    {:<6} {:>10} present  {:<12} {:#x}-{:#x}  {}  ({})",
                match o.side {
                    SideName::Parent => "parent",
                    SideName::Child => "child",
                },
                mib(o.present, ps),
                o.kind.name(),
                o.start,
                o.end,
                o.pathname,
                serde_json::to_value(o.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
                    .replace('_', " ")
            );
        }
    }
    for n in &p.notes {
        let _ = writeln!(out, "  note: {n}");
    }
}

/// The first line of a table watch: what is watched and how often.
pub fn watch_header(s: &Snapshot, interval: std::time::Duration) -> String {
    format!(
        "watching {} every {} ms: per sample the pairs and the memory no longer the same page \
         in each ({})\n",
        s.pid,
        interval.as_millis(),
        if s.pfn_visible {
            "frames compared"
        } else {
            "PFNs hidden: at least"
        }
    )
}

/// One line per sample of a table watch, printed as the sample is taken: its time, the
/// pairs' diverged memory (in all and per child) and what it could not prove.
pub fn sample_line(rec: &SampleLine, ps: u64) -> String {
    let s = &rec.snapshot;
    let diverged: u64 = s.pairs.iter().map(|p| p.totals.diverged).sum();
    let cells: Vec<String> = s
        .pairs
        .iter()
        .map(|p| format!("{}: {}", p.child, mib(p.totals.diverged, ps)))
        .collect();
    let mut line = format!(
        "{:>8.1} s  #{}  {}, diverged {} in all  {}",
        rec.t_ms as f64 / 1000.0,
        rec.seq + 1,
        plural(s.pairs.len() as u64, "pair"),
        mib(diverged, ps),
        cells.join("  ")
    );
    let unproven = s.unproven();
    if unproven > 0 {
        let _ = write!(line, "  ({} unproven)", mib(unproven, ps));
    }
    for sk in s.skipped.iter().filter(|k| k.unreadable) {
        let _ = write!(line, "  ({} unreadable)", sk.pid);
    }
    for pool in s.pools.iter().filter(|p| p.incomplete) {
        let _ = write!(line, "  (pool of {}: frames not walked)", pool.parent);
    }
    line.push('\n');
    line
}

/// Render the document.
pub fn report(r: &InspectDoc) -> String {
    let s = &r.body.snapshot;
    let ps = r.system.page_size;
    let mut out = String::new();
    heading(&mut out, r);
    for p in &s.pairs {
        pair(&mut out, p, s, ps);
    }
    for p in &s.pools {
        pool(&mut out, p, ps);
    }
    processes(&mut out, s);
    for sk in &s.skipped {
        let _ = writeln!(out, "skipped {} ({}): {}", sk.pid, sk.comm, sk.reason);
    }
    for n in &s.notes {
        let _ = writeln!(out, "note: {n}");
    }
    watch_summary(&mut out, r, ps);
    out
}

/// The first line: what was inspected where, how it was read and held.
fn heading(out: &mut String, r: &InspectDoc) {
    let s = &r.body.snapshot;
    let root = s
        .processes
        .iter()
        .find(|p| p.pid == s.pid)
        .map(|p| p.comm.as_str())
        .unwrap_or("?");
    let _ = writeln!(
        out,
        "cowscope {} inspect of {} ({}) on Linux {} · {} · {} · read in {:.1} ms",
        r.tool.version,
        s.pid,
        root,
        r.system.kernel_release,
        if s.pfn_visible {
            "PFNs visible: frames compared"
        } else {
            "PFNs hidden: exclusive bit only"
        },
        match &s.freeze {
            Some(f) if f.all_threads_stopped => {
                format!("frozen for {:.1} ms", f.held_us as f64 / 1000.0)
            }
            Some(f) => format!(
                "stopped for {:.1} ms but not every thread: not a frozen instant",
                f.held_us as f64 / 1000.0
            ),
            None => "not frozen".into(),
        },
        s.read_us as f64 / 1000.0
    );
}

/// One pool: its summary, its groups where they differ, and how many members share frames.
fn pool(out: &mut String, pool: &PoolReport, ps: u64) {
    let _ = writeln!(
        out,
        "\npool of {} under {}: {}",
        plural(pool.members.len() as u64, "member"),
        pool.parent,
        pool.view.summary
    );
    // The groups as they read: groups whose figures print the same share a row.
    let mut rows: Vec<(String, Vec<i32>)> = Vec::new();
    for g in &pool.view.groups {
        let h = crate::inspect::model::human_size;
        let figures = format!(
            "{:>10} diverged {:>10} shared {:>10} only parent {:>10} only child",
            h(g.diverged_bytes),
            h(g.shared_bytes),
            h(g.only_parent_bytes),
            h(g.only_child_bytes)
        );
        match rows.iter_mut().find(|(f, _)| *f == figures) {
            Some((_, m)) => m.extend(&g.members),
            None => rows.push((figures, g.members.clone())),
        }
    }
    if rows.len() > 1 {
        for (figures, mut members) in rows {
            members.sort_unstable();
            let pids: Vec<String> = members.iter().map(i32::to_string).collect();
            let _ = writeln!(out, "  {figures}  {}", pids.join(" "));
        }
    }
    let _ = writeln!(out, "  {}", pool.view.only_parent);
    let _ = write!(out, "  frames: ");
    match &pool.sharing_histogram {
        Some(h) => {
            let parts: Vec<String> = h
                .iter()
                .rev()
                .map(|(k, n)| format!("{} shared by {k}", mib(*n, ps)))
                .collect();
            let _ = writeln!(
                out,
                "of the parent's {} in RAM: {}",
                mib(pool.parent_pages, ps),
                parts.join(", ")
            );
        }
        None => {
            let _ = writeln!(out, "{}", pool.notes.join("; "));
        }
    }
    if pool.sharing_histogram.is_some() {
        for n in &pool.notes {
            let _ = writeln!(out, "  note: {n}");
        }
    }
}

/// The smaps_rollup table of every process read.
fn processes(out: &mut String, s: &Snapshot) {
    let _ = writeln!(
        out,
        "\n{:>8} {:>8}  {:<16} {:>10} {:>10} {:>14} {:>13} {:>8}",
        "pid", "ppid", "comm", "Rss", "Pss", "Private_Dirty", "Shared_Dirty", "Swap"
    );
    for p in &s.processes {
        let m = &p.smaps_rollup;
        let _ = writeln!(
            out,
            "{:>8} {:>8}  {:<16} {:>10} {:>10} {:>14} {:>13} {:>8}",
            p.pid,
            p.ppid,
            p.comm,
            kb_mib(m.rss_kb),
            kb_mib(m.pss_kb),
            kb_mib(m.private_dirty_kb),
            kb_mib(m.shared_dirty_kb),
            kb_mib(m.swap_kb)
        );
    }
}

/// After a watch: how it ran, and with its samples kept, diverged per pair over time.
fn watch_summary(out: &mut String, r: &InspectDoc, ps: u64) {
    if let (Some(w), None) = (&r.body.watch, &r.body.samples) {
        let _ = writeln!(
            out,
            "\nwatched {} every {} ms (ended: {}); the tables above are the last sample's",
            plural(w.samples, "sample"),
            w.interval_ms,
            w.ended_by.replace('_', " ")
        );
    }
    if let (Some(w), Some(samples)) = (&r.body.watch, &r.body.samples) {
        let _ = writeln!(
            out,
            "\nwatched {} every {} ms (ended: {}); diverged per pair:",
            plural(w.samples, "sample"),
            w.interval_ms,
            w.ended_by.replace('_', " ")
        );
        let step = samples.len().div_ceil(40).max(1);
        for smp in samples.iter().step_by(step) {
            let cells: Vec<String> = smp
                .pairs
                .iter()
                .map(|p| format!("{}: {}", p.child, mib(p.totals.diverged, ps)))
                .collect();
            let _ = writeln!(
                out,
                "  {:>8.1} s  {}",
                smp.t_ms as f64 / 1000.0,
                cells.join("  ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plural_says_1_page_not_1_pages() {
        assert_eq!(plural(1, "page"), "1 page");
        assert_eq!(plural(0, "page"), "0 pages");
        assert_eq!(plural(2, "VMA"), "2 VMAs");
    }

    fn pair_with(diverged: u64, shared: u64, unproven: u64) -> PairReport {
        PairReport {
            parent: 1,
            child: 2,
            parent_comm: "p".into(),
            child_comm: "c".into(),
            totals: crate::inspect::tally::ClassCounts {
                shared,
                diverged,
                unproven,
                ..Default::default()
            },
            by_kind: BTreeMap::new(),
            vmas: Vec::new(),
            one_sided: Vec::new(),
            accounting: None,
            page_runs: None,
            notes: Vec::new(),
        }
    }

    #[test]
    fn diverged_is_worded_as_no_longer_the_same_page_never_as_a_proven_copy() {
        // Different frames may be a copy-on-write copy or a release followed by a refault
        // (design principle 4): inspect has no baseline to tell them apart.
        for (p, visible) in [
            (pair_with(256, 512, 0), true),
            (pair_with(256, 0, 512), false),
        ] {
            let s = sentence(&p, 4096, visible);
            assert!(s.contains("no longer the same page"), "{s}");
            assert!(s.contains("a copy, or released and refaulted"), "{s}");
            for claim in ["are copies", "got a copy", "wrote"] {
                assert!(!s.contains(claim), "claims more than the evidence: {s}");
            }
        }
        let none = sentence(&pair_with(0, 512, 0), 4096, true);
        assert!(none.starts_with("no page has diverged"), "{none}");
    }
}
