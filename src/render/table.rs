//! Plain-text tables.

use std::fmt::Write;

use crate::doc::ForkReportDoc;
use crate::fork::classify::PageClass;
use crate::fork::{ScenarioResult, Verdict, VerdictState};

/// What the abbreviated columns mean, printed under the table.
pub const LEGEND: &str = "\
pages: arena pages; shared/copied/wiped/notin/absnt/unprv: pages per class (a page copied by any
process counts as copied): shared = same frame in both, copied = copy-on-write gave a new frame,
wiped = MADV_WIPEONFORK child reads zero, notin = not inherited (MADV_DONTFORK), absnt = present
in neither, unprv = not provable with the evidence this user may read (PFNs hidden).
verdict: ok (held, with the witnesses used), FAIL (a witness disagreed), UNPROVEN (nothing
disagreed, but something could not be proven: exit 3), SKIP (a feature or setting is missing).
P/S kB: the arena VMA's smaps Private (clean + dirty) / Shared (clean + dirty) in kB.
fork µs: median fork() latency of the timing runs; cow ns: median first store to a shared
private page (one copy-on-write fault) in the child.
";

/// A human table of a fork report: one row per scenario with its page classes, the smaps
/// figures of parent and first child, timing and the verdict.
pub fn fork_report(r: &ForkReportDoc) -> String {
    let mut out = system_line(r);
    let mut rows: Vec<Vec<String>> = vec![header_row()];
    rows.extend(r.body.scenarios.iter().map(scenario_row));
    let mut align = vec![super::Align::Left];
    align.extend([super::Align::Right; 11]);
    align.push(super::Align::Left);
    out.push_str(&super::aligned(&rows, &align));
    out.push('\n');
    out.push_str(LEGEND);
    out
}

/// The first line: the tool, the kernel and what the evidence can show here.
fn system_line(r: &ForkReportDoc) -> String {
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
    out
}

/// The column heads (the classes by their short names).
fn header_row() -> Vec<String> {
    [
        "scenario",
        "pages",
        PageClass::Shared.short(),
        PageClass::Copied.short(),
        PageClass::Wiped.short(),
        PageClass::NotInherited.short(),
        PageClass::Absent.short(),
        PageClass::Unproven.short(),
        "parent P/S kB",
        "child P/S kB",
        "fork µs",
        "cow ns",
        "verdict",
    ]
    .map(String::from)
    .to_vec()
}

/// One scenario's row: its page counts ('-' when skipped), smaps, timing and verdict.
fn scenario_row(s: &ScenarioResult) -> Vec<String> {
    let ps = |p: &Option<crate::fork::SmapsFigures>| match p {
        Some(f) => format!("{}/{}", f.private_kb(), f.shared_kb()),
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
    let c = &s.pages;
    // A skipped scenario has no page counts: '-', not a row of zeros.
    let count = |n: u64| {
        if v.state == VerdictState::Skipped {
            "-".to_string()
        } else {
            n.to_string()
        }
    };
    vec![
        s.name.clone(),
        s.config.pages.to_string(),
        count(c.shared),
        count(c.copied),
        count(c.wiped),
        count(c.not_inherited),
        count(c.absent),
        count(c.unproven),
        ps(&s.parent.smaps),
        child,
        fork_us,
        cow,
        verdict_cell(v),
    ]
}

/// The verdict's label with what matters most: the witnesses, the reason, or the first
/// disagreement.
fn verdict_cell(v: &Verdict) -> String {
    let label = v.state.label();
    match v.state {
        VerdictState::Skipped => format!(
            "{label} ({})",
            v.skipped.as_deref().unwrap_or("no reason given")
        ),
        VerdictState::Held => format!("{label} [{}]", v.evidence.join(",")),
        VerdictState::Unproven => format!(
            "{label}: {}",
            v.unproven.first().map(String::as_str).unwrap_or("see JSON")
        ),
        VerdictState::Failed => format!(
            "{label}: {}",
            v.disagreements
                .first()
                .map(String::as_str)
                .unwrap_or("see JSON")
        ),
    }
}
