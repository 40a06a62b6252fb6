//! The `trace` report as a table for a terminal (cowscope prints it on stderr, so the traced
//! program's own stdout stays clean).

use std::fmt::Write;

use crate::doc::TraceDoc;
use crate::trace::{Counts, ForkRecord};

fn mib(pages: u64, ps: u64) -> f64 {
    (pages * ps) as f64 / (1024.0 * 1024.0)
}

fn rows(c: &Counts) -> [(&'static str, u64); 14] {
    [
        ("shared", c.shared),
        ("zero", c.zero),
        ("copied_by_child", c.copied_by_child),
        ("copied_by_parent", c.copied_by_parent),
        ("copied_at_fork", c.copied_at_fork),
        ("released_by_child", c.released_by_child),
        ("released_by_parent", c.released_by_parent),
        ("released_by_both", c.released_by_both),
        ("moved", c.moved),
        ("diverged", c.diverged),
        ("only_parent", c.only_parent),
        ("only_child", c.only_child),
        ("absent", c.absent),
        ("unproven", c.unproven),
    ]
}

/// One sentence a person can act on.
fn sentence(f: &ForkRecord, ps: u64) -> Option<String> {
    let fin = f.final_sample.as_ref()?;
    let c = &fin.counts;
    let tracked = f.baseline.as_ref().map_or(c.total, |b| b.pages);
    let mut s = format!(
        "the child copied {:.1} MiB and the parent {:.1} MiB of the {:.1} MiB mapped at the fork",
        mib(c.copied_by_child, ps),
        mib(c.copied_by_parent, ps),
        mib(tracked, ps)
    );
    let copied = c.copied_by_child + c.copied_by_parent;
    if copied > 0
        && let Some(top) = fin
            .vmas
            .iter()
            .max_by_key(|v| v.counts.copied_by_child + v.counts.copied_by_parent)
    {
        let n = top.counts.copied_by_child + top.counts.copied_by_parent;
        let name = if top.vma.pathname.is_empty() {
            format!("anonymous memory at {}", top.vma.start)
        } else {
            top.vma.pathname.clone()
        };
        let _ = write!(
            s,
            "; {:.0}% of it in {name}",
            100.0 * n as f64 / copied as f64
        );
    }
    let rel = c.released_by_child + c.released_by_parent + c.released_by_both;
    if rel > 0 {
        let _ = write!(
            s,
            "; {:.1} MiB were released (child {:.1}, parent {:.1}), not copied",
            mib(rel, ps),
            mib(c.released_by_child, ps),
            mib(c.released_by_parent, ps)
        );
    }
    if c.diverged + c.unproven > 0 {
        let _ = write!(
            s,
            "; {:.1} MiB differ without proof of who copied",
            mib(c.diverged + c.unproven, ps)
        );
    }
    s.push('.');
    Some(s)
}

/// Render the report.
pub fn table(r: &TraceDoc) -> String {
    let b = &r.body;
    let ps = r.system.page_size;
    let mut s = String::new();
    let what = match &b.command {
        Some(c) => c.join(" "),
        None => format!("pid {}", b.pid),
    };
    let how = match (&b.exit.code, &b.exit.signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by {sig}"),
        _ => "still running".to_string(),
    };
    let _ = writeln!(
        s,
        "cowscope trace: {what}: {how}, ended by {}, {:.2} s",
        b.ended_by, b.duration_s
    );
    let _ = writeln!(
        s,
        "releases tracked by {} ({} syscall stops, {} releases); PFNs {}",
        b.release_tracking.method,
        b.release_tracking.stops,
        b.release_tracking.releases,
        if b.attribution.pfn_visible {
            "visible"
        } else {
            "hidden (who copied is unproven)"
        }
    );
    for (n, f) in b.forks.iter().enumerate() {
        let _ = writeln!(
            s,
            "\nfork {}: {} -> {} ({}{}) at {:.3} s, parent held {} µs, child held {} µs",
            n + 1,
            f.parent,
            f.child,
            f.kind,
            if f.shares_mm {
                ", shares the parent's memory: no copy-on-write"
            } else {
                ""
            },
            f.at,
            f.pause_us,
            f.child_hold_us
        );
        if let Some(bl) = &f.baseline {
            let _ = writeln!(
                s,
                "  baseline: {} pages ({:.1} MiB) in {} VMAs{}",
                bl.pages,
                mib(bl.pages, ps),
                bl.vmas,
                if bl.copied_at_fork > 0 {
                    format!(
                        ", {} already the child's own at its first instruction (its TID page, pinned pages)",
                        bl.copied_at_fork
                    )
                } else {
                    String::new()
                }
            );
        }
        if let Some(fin) = &f.final_sample {
            let _ = writeln!(
                s,
                "  final ({} at {:.3} s, {} samples):",
                fin.trigger,
                fin.at,
                f.samples.len()
            );
            for (name, v) in rows(&fin.counts) {
                if v > 0 {
                    let _ = writeln!(s, "    {name:<20} {v:>10} pages {:>10.1} MiB", mib(v, ps));
                }
            }
            let mut top: Vec<_> = fin
                .vmas
                .iter()
                .filter(|v| v.counts.total > v.counts.shared + v.counts.zero)
                .collect();
            top.sort_by_key(|v| {
                std::cmp::Reverse(v.counts.total - v.counts.shared - v.counts.zero)
            });
            if !top.is_empty() {
                let _ = writeln!(s, "  VMAs with most change:");
            }
            for v in top.iter().take(5) {
                let c = &v.counts;
                let _ = writeln!(
                    s,
                    "    {}-{} {} {:<28} copied c/p {}/{}  released c/p {}/{}  other {}",
                    v.vma.start,
                    v.vma.end,
                    v.vma.perms,
                    if v.vma.pathname.is_empty() {
                        "[anon]"
                    } else {
                        &v.vma.pathname
                    },
                    c.copied_by_child,
                    c.copied_by_parent,
                    c.released_by_child,
                    c.released_by_parent,
                    c.total
                        - c.shared
                        - c.zero
                        - c.copied_by_child
                        - c.copied_by_parent
                        - c.released_by_child
                        - c.released_by_parent
                );
            }
            if let Some(line) = sentence(f, ps) {
                let _ = writeln!(s, "  => {line}");
            }
        }
        if let Some(e) = &f.ended {
            let _ = writeln!(s, "  ended: {} at {:.3} s", e.by, e.at);
        }
        for n in &f.notes {
            let _ = writeln!(s, "  note: {n}");
        }
    }
    if b.forks.is_empty() {
        let _ = writeln!(s, "\nno forks seen");
    }
    if !b.attribution.unproven.is_empty() {
        let _ = writeln!(s);
        for u in &b.attribution.unproven {
            let _ = writeln!(s, "unproven: {u}");
        }
    }
    for n in &b.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}
