//! An SVG page map of a fork report: one block per scenario, one row per process, coloured by
//! what happened to each page in that process relative to the parent. The classes come from
//! the report (`page_class_runs`); the renderer never classifies.
//!
//! Arenas of at most [`MAX_CELLS`] pages get one cell per page. Larger ones are aggregated:
//! each cell stands for N consecutive pages and is split into bands in proportion to the
//! classes of those pages, with the counts in the cell's tooltip. Colours are the Okabe-Ito
//! palette, which readers with the common colour-vision deficiencies can tell apart; unproven
//! pages are also hatched, so they never read as a colour of their own.

use std::fmt::Write;

use crate::doc::ForkReportDoc;
use crate::fork::classify::PageClass;
use crate::fork::{ClassRun, ScenarioResult, VerdictState};

const CELL: usize = 14;
const GAP: usize = 2;
const LABEL_W: usize = 250;
const ROLE_W: usize = 90;
/// Cells per row: arenas with more pages are drawn aggregated.
pub const MAX_CELLS: usize = 64;

/// Okabe & Ito (2008), "Color Universal Design": distinguishable with protanopia,
/// deuteranopia and tritanopia.
pub fn colour(c: PageClass) -> &'static str {
    match c {
        PageClass::Shared => "#0072B2",       // blue
        PageClass::Copied => "#D55E00",       // vermillion
        PageClass::Wiped => "#F0E442",        // yellow
        PageClass::NotInherited => "#56B4E9", // sky blue
        PageClass::Absent => "#E8E8E8",       // light grey
        PageClass::Unproven => "#CC79A7",     // reddish purple (+ hatching)
    }
}

/// "1 page", "2 pages".
pub fn pages(n: u64) -> String {
    if n == 1 {
        "1 page".into()
    } else {
        format!("{n} pages")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Per-class counts of pages `[lo, hi)` of a run-length encoded row.
fn counts_in(runs: &[ClassRun], lo: u64, hi: u64) -> Vec<(PageClass, u64)> {
    let mut out: Vec<(PageClass, u64)> = Vec::new();
    let mut at = 0u64;
    for r in runs {
        let (a, b) = (at, at + r.pages);
        at = b;
        let n = b.min(hi).saturating_sub(a.max(lo));
        if n == 0 {
            continue;
        }
        match out.iter_mut().find(|(c, _)| *c == r.class) {
            Some((_, k)) => *k += n,
            None => out.push((r.class, n)),
        }
        if at >= hi {
            break;
        }
    }
    out.sort_by_key(|(c, _)| PageClass::ALL.iter().position(|x| x == c));
    out
}

fn describe(counts: &[(PageClass, u64)]) -> String {
    counts
        .iter()
        .map(|(c, n)| format!("{n} {}", c.label()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One cell: the pages `[lo, hi)` of one row.
fn cell(out: &mut String, x: usize, y: usize, who: &str, runs: &[ClassRun], lo: u64, hi: u64) {
    let counts = counts_in(runs, lo, hi);
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let what = if hi - lo == 1 {
        format!("{who} page {lo}")
    } else {
        format!("{who} pages {}-{} ({})", lo, hi - 1, pages(hi - lo))
    };
    let _ = write!(
        out,
        r#"<g><title>{}: {}</title>"#,
        esc(&what),
        describe(&counts)
    );
    let mut done = 0u64;
    for (c, n) in &counts {
        // Bands stacked bottom-up, heights in proportion to the counts (at least 1 px each).
        let y0 = CELL as u64 * done / total.max(1);
        done += n;
        let y1 = CELL as u64 * done / total.max(1);
        let h = (y1 - y0).max(1);
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{}" width="{CELL}" height="{h}" fill="{}"/>"#,
            y + CELL - (y0 + h) as usize,
            colour(*c)
        );
        if *c == PageClass::Unproven {
            let _ = write!(
                out,
                r#"<rect x="{x}" y="{}" width="{CELL}" height="{h}" fill="url(#hatch)"/>"#,
                y + CELL - (y0 + h) as usize
            );
        }
    }
    out.push_str("</g>\n");
}

fn verdict_text(s: &ScenarioResult) -> String {
    match (&s.verdict.skipped, s.verdict.state) {
        (Some(reason), _) => format!("skipped: {reason}"),
        (None, VerdictState::Held | VerdictState::Skipped) => "verdict holds".into(),
        (None, VerdictState::Unproven) => "verdict unproven".into(),
        (None, VerdictState::Failed) => "verdict FAILED".into(),
    }
}

/// One scenario's block from `y` down: its name line, then a row of cells for the aggregate
/// class and one per forked process. Returns where the next block starts.
fn scenario_map(body: &mut String, s: &ScenarioResult, y: usize) -> usize {
    let n = s.config.pages;
    let per = n.div_ceil(MAX_CELLS as u64).max(1);
    let ncells = n.div_ceil(per);
    let scale = if per == 1 {
        "one cell per page".to_string()
    } else {
        format!("one cell per {}", pages(per))
    };
    let _ = writeln!(
        body,
        r#"<text x="10" y="{}" class="name">{}</text><text x="10" y="{}" class="small">{} · {} · {}</text>"#,
        y + 11,
        esc(&s.name),
        y + 25,
        pages(n),
        scale,
        esc(&verdict_text(s))
    );
    let mut rows: Vec<(String, &[ClassRun])> = Vec::new();
    if !s.page_class_runs.is_empty() {
        rows.push(("all (class)".into(), &s.page_class_runs));
        for p in s.processes.iter().skip(1) {
            if !p.page_class_runs.is_empty() {
                rows.push((p.role.clone(), &p.page_class_runs));
            }
        }
    }
    for (k, (who, runs)) in rows.iter().enumerate() {
        let ry = y + k * (CELL + GAP);
        let _ = writeln!(
            body,
            r#"<text x="{LABEL_W}" y="{}" class="small">{}</text>"#,
            ry + 11,
            esc(who)
        );
        for c in 0..ncells {
            let lo = c * per;
            let hi = (lo + per).min(n);
            cell(
                body,
                LABEL_W + ROLE_W + c as usize * (CELL + GAP),
                ry,
                who,
                runs,
                lo,
                hi,
            );
        }
    }
    y + rows.len().max(2) * (CELL + GAP) + 14
}

/// The legend from `y` down: each class's colour (unproven hatched), name and meaning, two
/// per line.
fn legend(y: usize) -> String {
    let mut legend = String::new();
    for (i, c) in PageClass::ALL.iter().enumerate() {
        let (col, row) = (i % 2, i / 2);
        let x = 10 + col * 370;
        let ly = y + 6 + row * 20;
        let _ = write!(
            legend,
            r#"<rect x="{x}" y="{ly}" width="{CELL}" height="{CELL}" fill="{}"/>{}<text x="{}" y="{}" class="small"><tspan font-weight="bold">{}</tspan>: {}</text>"#,
            colour(*c),
            if *c == PageClass::Unproven {
                format!(
                    r#"<rect x="{x}" y="{ly}" width="{CELL}" height="{CELL}" fill="url(#hatch)"/>"#
                )
            } else {
                String::new()
            },
            x + CELL + 5,
            ly + 11,
            c.label(),
            esc(c.meaning())
        );
        legend.push('\n');
    }
    legend
}

/// Render the report as a standalone SVG document.
pub fn fork_report(r: &ForkReportDoc) -> String {
    let cols = r
        .body
        .scenarios
        .iter()
        .map(|s| (s.config.pages as usize).min(MAX_CELLS))
        .max()
        .unwrap_or(16)
        .max(16);
    let width = (LABEL_W + ROLE_W + cols * (CELL + GAP) + 20).max(760);
    let mut body = String::new();
    let mut y = 50;
    for s in &r.body.scenarios {
        y = scenario_map(&mut body, s, y);
    }
    let legend = legend(y);
    let height = y + 20 * PageClass::ALL.len().div_ceil(2) + 20;
    let sys = &r.system;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">
<defs><pattern id="hatch" width="4" height="4" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="4" stroke="#000" stroke-opacity="0.45" stroke-width="1.5"/></pattern></defs>
<style>text {{ font-family: sans-serif; fill: #222; }} .name {{ font-size: 13px; font-weight: bold; }} .small {{ font-size: 11px; }} .title {{ font-size: 15px; font-weight: bold; }}</style>
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" class="title">cowscope fork-report · Linux {} · PFNs {}</text>
<text x="10" y="38" class="small">first row: each page's class over all processes; then each forked process: its own class of the page against the parent's</text>
{body}{legend}
</svg>
"##,
        esc(&sys.kernel_release),
        if sys.pfn_visible { "visible" } else { "hidden" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(v: &[(PageClass, u64)]) -> Vec<ClassRun> {
        v.iter()
            .map(|&(class, pages)| ClassRun { class, pages })
            .collect()
    }

    #[test]
    fn one_page_is_singular() {
        assert_eq!(pages(1), "1 page");
        assert_eq!(pages(0), "0 pages");
        assert_eq!(pages(512), "512 pages");
    }

    #[test]
    fn counts_of_a_cell_come_from_the_runs() {
        let r = runs(&[(PageClass::Copied, 1), (PageClass::Shared, 511)]);
        assert_eq!(
            counts_in(&r, 0, 8),
            vec![(PageClass::Shared, 7), (PageClass::Copied, 1)]
        );
        assert_eq!(counts_in(&r, 8, 16), vec![(PageClass::Shared, 8)]);
        assert_eq!(counts_in(&r, 510, 512), vec![(PageClass::Shared, 2)]);
    }

    #[test]
    fn the_palette_has_six_distinct_colours() {
        let mut c: Vec<_> = PageClass::ALL.iter().map(|&x| colour(x)).collect();
        c.sort_unstable();
        c.dedup();
        assert_eq!(c.len(), 6);
    }
}
