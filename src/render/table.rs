//! Plain-text tables.

use std::fmt::Write;

use crate::doc::ForkReportDoc;

/// A human table of a fork report: one row per scenario with its page classes, the smaps
/// figures of parent and first child, timing and the verdict.
pub fn fork_report(r: &ForkReportDoc) -> String {
    let mut out = String::new();
    let sys = &r.system;
    let _ = writeln!(
        out,
        "cowscope {} on Linux {} (page {} B, THP {}, PFNs {}, kpage files {}, PAGEMAP_SCAN {})",
        r.tool.version,
        sys.kernel_release,
        sys.page_size,
        sys.thp_enabled,
        if sys.pfn_visible { "visible" } else { "hidden" },
        if sys.kpage_readable {
            "readable"
        } else {
            "unreadable"
        },
        if sys.pagemap_scan { "yes" } else { "no" },
    );
    let _ = writeln!(
        out,
        "{:<22} {:>6} {:>6} {:>6} {:>5} {:>5} {:>5} {:>5}  {:>13} {:>13}  {:>9} {:>9}  verdict",
        "scenario",
        "pages",
        "shared",
        "copied",
        "wiped",
        "notin",
        "absnt",
        "unprv",
        "parent P/S kB",
        "child P/S kB",
        "fork µs",
        "cow ns"
    );
    for s in &r.body.scenarios {
        let ps = |p: &Option<crate::fork::SmapsFigures>| match p {
            Some(f) => format!(
                "{}/{}",
                f.private_clean_kb + f.private_dirty_kb,
                f.shared_clean_kb + f.shared_dirty_kb
            ),
            None => "-".into(),
        };
        let child = s
            .child
            .as_ref()
            .map(|c| ps(&c.smaps))
            .unwrap_or_else(|| "-".into());
        let fork_us = s
            .timing
            .fork_ns
            .map(|n| format!("{:.1}", n as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        let cow = s
            .timing
            .cow_fault_ns
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into());
        let v = &s.verdict;
        let verdict = if let Some(reason) = &v.skipped {
            format!("SKIP ({reason})")
        } else if v.holds {
            format!("ok [{}]", v.evidence.join(","))
        } else {
            format!(
                "FAIL: {}",
                v.notes
                    .iter()
                    .chain(&v.disagreements)
                    .next()
                    .map(String::as_str)
                    .unwrap_or("see JSON")
            )
        };
        let c = &s.pages;
        let _ = writeln!(
            out,
            "{:<22} {:>6} {:>6} {:>6} {:>5} {:>5} {:>5} {:>5}  {:>13} {:>13}  {:>9} {:>9}  {}",
            s.name,
            s.config.pages,
            c.shared,
            c.copied,
            c.wiped,
            c.not_inherited,
            c.absent,
            c.unproven,
            ps(&s.parent.smaps),
            child,
            fork_us,
            cow,
            verdict
        );
    }
    out
}
