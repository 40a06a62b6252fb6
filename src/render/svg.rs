//! An SVG page map of a fork report: one block per scenario, one row per process, one cell per
//! page, coloured by what happened to that page relative to the parent.

use std::fmt::Write;

use crate::doc::ForkReportDoc;
use crate::fork::ScenarioResult;
use crate::fork::classify::PageClass;

const CELL: usize = 14;
const GAP: usize = 2;
const LABEL_W: usize = 250;
const ROLE_W: usize = 90;
/// Pages drawn per scenario; larger arenas show their first pages and a count.
const MAX_CELLS: usize = 64;

fn colour(c: PageClass) -> &'static str {
    match c {
        PageClass::Shared => "#4c9a2a",
        PageClass::Copied => "#d1495b",
        PageClass::Wiped => "#edae49",
        PageClass::NotInherited => "#7a7a7a",
        PageClass::Absent => "#e6e6e6",
        PageClass::Unproven => "#6a4c93",
    }
}

fn name(c: PageClass) -> &'static str {
    match c {
        PageClass::Shared => "shared",
        PageClass::Copied => "copied",
        PageClass::Wiped => "wiped",
        PageClass::NotInherited => "not inherited",
        PageClass::Absent => "absent",
        PageClass::Unproven => "unproven",
    }
}

/// The class of page `row` in process `k` (0 = the aggregate row): for shared/copied pages,
/// from this process's PFN against the parent's when visible; otherwise the page's aggregate
/// class.
fn cell_class(s: &ScenarioResult, row: &crate::fork::PageRow, k: usize) -> PageClass {
    if k == 0 || !matches!(row.class, PageClass::Shared | PageClass::Copied) {
        return row.class;
    }
    let (p, c) = (
        row.pfns.first().copied().unwrap_or(0),
        row.pfns.get(k).copied().unwrap_or(0),
    );
    match (p, c) {
        (0, _) | (_, 0) => match s.processes.get(k) {
            Some(pr) if !pr.vma_present => PageClass::NotInherited,
            _ => row.class,
        },
        (a, b) if a == b => PageClass::Shared,
        _ => PageClass::Copied,
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Render the report as a standalone SVG document.
pub fn fork_report(r: &ForkReportDoc) -> String {
    let cols = r
        .body
        .scenarios
        .iter()
        .map(|s| s.page_rows.len().min(MAX_CELLS))
        .max()
        .unwrap_or(16)
        .max(16);
    let width = (LABEL_W + ROLE_W + cols * (CELL + GAP) + 20)
        .max(PageClass::ALL.len() * 120 + 20)
        .max(700);
    let mut body = String::new();
    let mut y = 50;
    for s in &r.body.scenarios {
        let verdict = match (&s.verdict.skipped, s.verdict.holds) {
            (Some(reason), _) => format!("skipped: {reason}"),
            (None, true) => "verdict holds".to_string(),
            (None, false) => "verdict FAILED".to_string(),
        };
        let _ = writeln!(
            body,
            r#"<text x="10" y="{}" class="name">{}</text><text x="10" y="{}" class="small">{} pages · {}</text>"#,
            y + 11,
            esc(&s.name),
            y + 25,
            s.config.pages,
            esc(&verdict)
        );
        let rows: Vec<_> = s.page_rows.iter().take(MAX_CELLS).collect();
        let procs = if rows.is_empty() {
            0
        } else {
            s.processes.len()
        };
        for k in 0..procs {
            let ry = y + k * (CELL + GAP);
            let _ = writeln!(
                body,
                r#"<text x="{}" y="{}" class="small">{}</text>"#,
                LABEL_W,
                ry + 11,
                if k == 0 {
                    "all (class)".to_string()
                } else {
                    esc(&s.processes[k].role)
                }
            );
            for (i, row) in rows.iter().enumerate() {
                let c = cell_class(s, row, k);
                let _ = writeln!(
                    body,
                    r#"<rect x="{}" y="{}" width="{CELL}" height="{CELL}" fill="{}"><title>{} page {}: {}</title></rect>"#,
                    LABEL_W + ROLE_W + i * (CELL + GAP),
                    ry,
                    colour(c),
                    esc(&s.processes[k].role),
                    row.index,
                    name(c)
                );
            }
        }
        if rows.is_empty() {
            let p = &s.pages;
            let _ = writeln!(
                body,
                r#"<text x="{}" y="{}" class="small">{} shared, {} copied, {} wiped, {} not inherited, {} absent, {} unproven</text>"#,
                LABEL_W,
                y + 11,
                p.shared,
                p.copied,
                p.wiped,
                p.not_inherited,
                p.absent,
                p.unproven
            );
        }
        y += (procs.max(2)) * (CELL + GAP) + 14;
    }
    let mut legend = String::new();
    for (i, c) in PageClass::ALL.iter().enumerate() {
        let x = 10 + i * 120;
        let _ = write!(
            legend,
            r#"<rect x="{x}" y="{}" width="{CELL}" height="{CELL}" fill="{}"/><text x="{}" y="{}" class="small">{}</text>"#,
            y + 6,
            colour(*c),
            x + CELL + 5,
            y + 17,
            name(*c)
        );
    }
    let height = y + 40;
    let sys = &r.system;
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">
<style>text {{ font-family: sans-serif; fill: #222; }} .name {{ font-size: 13px; font-weight: bold; }} .small {{ font-size: 11px; }} .title {{ font-size: 15px; font-weight: bold; }}</style>
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" class="title">cowscope fork-report · Linux {} · PFNs {}</text>
<text x="10" y="38" class="small">each cell is one page of the arena; first row: the page's class; then each forked process: its page against the parent's</text>
{body}{legend}
</svg>
"#,
        esc(&sys.kernel_release),
        if sys.pfn_visible { "visible" } else { "hidden" }
    )
}
