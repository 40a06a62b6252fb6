//! `inspect --format svg`: a page map of each pair's address space, and (with `--interval`)
//! a timeline of diverged MiB per child, stacked by VMA kind.
//!
//! The page map draws the cells the document carries (`vmas[].cells`, `one_sided[].cells`):
//! one row per VMA, one cell per N pages (N = `cell_pages`, so large regions are aggregated),
//! each cell a stacked bar of the classes of its pages, with the exact counts in a tooltip.
//! Colours are the Okabe-Ito palette, distinguishable with the common colour-vision
//! deficiencies. Nothing is classified here.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::inspect_table::{mib, plural, totals_line};
use crate::doc::InspectDoc;
use crate::inspect::classify::{N_CLASSES, PairClass};
use crate::inspect::model::{PairReport, SampleSummary, SideName, Snapshot};
use crate::inspect::vma::VmaKind;

/// Okabe-Ito colours per class (`neither` is a light grey background).
pub fn class_colour(c: PairClass) -> &'static str {
    match c {
        PairClass::Shared => "#009E73",
        PairClass::Diverged => "#D55E00",
        PairClass::OnlyParent => "#56B4E9",
        PairClass::OnlyChild => "#E69F00",
        PairClass::Zero => "#F0E442",
        PairClass::Unproven => "#CC79A7",
        PairClass::Neither => "#EEEEEE",
    }
}

/// Okabe-Ito colours per VMA kind (timeline).
pub fn kind_colour(k: VmaKind) -> &'static str {
    match k {
        VmaKind::Heap => "#D55E00",
        VmaKind::Anon => "#E69F00",
        VmaKind::Stack => "#56B4E9",
        VmaKind::FilePrivate => "#0072B2",
        VmaKind::FileShared => "#009E73",
        VmaKind::Shmem => "#CC79A7",
        VmaKind::Hugetlb => "#F0E442",
        _ => "#000000",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The last path component (a library's file name), or the pseudo-name as it is.
fn short_name(path: &str) -> &str {
    if path.starts_with('/') {
        path.rsplit('/').next().unwrap_or(path)
    } else {
        path
    }
}

const CELL_W: usize = 7;
const CELL_H: usize = 12;
const LABEL_W: usize = 400;
/// With more rows than this, VMAs with fewer pages in RAM than [`SMALL_ROW`] are left out.
const CROWDED: usize = 40;
/// See [`CROWDED`].
const SMALL_ROW: u64 = 16;
const MAX_ROWS: usize = 120;
const STYLE: &str = "<style>text{font-family:sans-serif;font-size:11px;fill:#222}\
.t{font-size:15px;font-weight:bold}.s{font-size:12px}.m{font-family:monospace;font-size:10px}</style>";

struct Row<'a> {
    start: u64,
    end: u64,
    title: String,
    cell_pages: u64,
    cells: &'a [[u64; N_CLASSES]],
    present: u64,
}

fn rows_of(p: &PairReport) -> (Vec<Row<'_>>, usize) {
    let mut rows: Vec<Row<'_>> = Vec::new();
    let mut empty = 0usize;
    for v in &p.vmas {
        let present = v.counts.pages() - v.counts.neither;
        match (&v.cells, v.cell_pages) {
            (Some(c), Some(n)) if present > 0 => rows.push(Row {
                start: v.start,
                end: v.end,
                title: format!("{:<12} {}", v.kind.name(), short_name(&v.pathname)),
                cell_pages: n,
                cells: c,
                present,
            }),
            _ => empty += 1,
        }
    }
    for o in &p.one_sided {
        match (&o.cells, o.cell_pages) {
            (Some(c), Some(n)) if o.present > 0 => rows.push(Row {
                start: o.start,
                end: o.end,
                title: format!(
                    "{:<12} {} (only {})",
                    o.kind.name(),
                    short_name(&o.pathname),
                    match o.side {
                        SideName::Parent => "parent",
                        SideName::Child => "child",
                    }
                ),
                cell_pages: n,
                cells: c,
                present: o.present,
            }),
            _ => empty += 1,
        }
    }
    if rows.len() > CROWDED {
        let before = rows.len();
        rows.retain(|r| r.present >= SMALL_ROW);
        empty += before - rows.len();
    }
    if rows.len() > MAX_ROWS {
        rows.sort_by_key(|r| std::cmp::Reverse(r.present));
        empty += rows.len() - MAX_ROWS;
        rows.truncate(MAX_ROWS);
    }
    rows.sort_by_key(|r| r.start);
    (rows, empty)
}

fn legend(out: &mut String, y: usize) {
    for (i, c) in PairClass::ALL.iter().enumerate() {
        let x = 10 + i * 130;
        let _ = write!(
            out,
            r##"<rect x="{x}" y="{y}" width="12" height="12" fill="{}" stroke="#999" stroke-width="0.5"/><text x="{}" y="{}">{}</text>"##,
            class_colour(*c),
            x + 16,
            y + 10,
            c.name().replace('_', " ")
        );
    }
    out.push('\n');
}

/// The page map of every pair of the document.
pub fn page_map(r: &InspectDoc) -> String {
    let s = &r.body.snapshot;
    let ps = r.system.page_size;
    let width = (LABEL_W + columns(s) * CELL_W + 20).max(940);
    let mut body = String::new();
    let mut y = 20;
    let _ = writeln!(
        body,
        r#"<text x="10" y="{}" class="t">cowscope inspect {} · Linux {} · {}</text>"#,
        y + 4,
        s.pid,
        esc(&r.system.kernel_release),
        if s.pfn_visible {
            "frames compared (PFNs visible)"
        } else {
            "PFNs hidden: unproven where the exclusive bit says nothing"
        }
    );
    y += 16;
    legend(&mut body, y);
    y += 26;
    for p in &s.pairs {
        y = pair_map(&mut body, p, ps, y);
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" viewBox=\"0 0 {width} {}\">{STYLE}<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n",
        y + 10,
        y + 10
    )
}

/// The most cells any row of the document has (at least 16): the map's width.
fn columns(s: &Snapshot) -> usize {
    s.pairs
        .iter()
        .flat_map(|p| {
            p.vmas
                .iter()
                .filter_map(|v| v.cells.as_ref().map(Vec::len))
                .chain(
                    p.one_sided
                        .iter()
                        .filter_map(|o| o.cells.as_ref().map(Vec::len)),
                )
        })
        .max()
        .unwrap_or(0)
        .max(16)
}

/// One pair's map at `y`: its title and totals, a row per VMA, a footer; returns the `y`
/// below it.
fn pair_map(body: &mut String, p: &PairReport, ps: u64, mut y: usize) -> usize {
    let t = &p.totals;
    let _ = writeln!(
        body,
        r#"<text x="10" y="{}" class="t">{} ({}) → {} ({})</text><text x="10" y="{}" class="s">{}</text>"#,
        y + 12,
        p.parent,
        esc(&p.parent_comm),
        p.child,
        esc(&p.child_comm),
        y + 28,
        totals_line(t, ps)
    );
    y += 38;
    let (rows, empty) = rows_of(p);
    for row in &rows {
        map_row(body, row, ps, y);
        y += CELL_H + 2;
    }
    let cell_note = rows
        .iter()
        .map(|r| r.cell_pages)
        .max()
        .map(|n| format!("one cell = up to {}", plural(n, "page")))
        .unwrap_or_default();
    let _ = writeln!(
        body,
        r#"<text x="10" y="{}" class="s">{}{}{}</text>"#,
        y + 12,
        if rows.is_empty() {
            "no cells in the document (inspect with --format svg or --cells N)".to_string()
        } else {
            cell_note
        },
        if empty > 0 {
            format!(
                " · {} with few or no pages in RAM not drawn",
                plural(empty as u64, "VMA")
            )
        } else {
            String::new()
        },
        if p.notes.is_empty() {
            ""
        } else {
            " · see notes in the JSON"
        }
    );
    y + 30
}

/// One VMA's row at `y`: its address, size and name, then its cells.
fn map_row(body: &mut String, row: &Row<'_>, ps: u64, y: usize) {
    let pages = (row.end - row.start) / ps;
    let _ = write!(
        body,
        r#"<text x="10" y="{}" class="m" xml:space="preserve">{:#014x} {:>9} {}</text>"#,
        y + 10,
        row.start,
        mib(pages, ps),
        esc(&truncate(&row.title, 40))
    );
    for (i, cell) in row.cells.iter().enumerate() {
        let total: u64 = cell.iter().sum();
        if total == 0 {
            continue;
        }
        let x = LABEL_W + i * CELL_W;
        let first = row.start + i as u64 * row.cell_pages * ps;
        let counts: Vec<String> = PairClass::ALL
            .iter()
            .filter(|c| cell[**c as usize] > 0)
            .map(|c| format!("{} {}", cell[*c as usize], c.name().replace('_', " ")))
            .collect();
        let _ = write!(
            body,
            r#"<g><title>{:#x}: {}: {}</title>"#,
            first,
            plural(total, "page"),
            counts.join(", ")
        );
        // A stacked bar: each class's share of the cell's height.
        let mut yy = y as f64;
        for c in PairClass::ALL {
            let n = cell[c as usize];
            if n == 0 {
                continue;
            }
            let h = CELL_H as f64 * n as f64 / total as f64;
            let _ = write!(
                body,
                r#"<rect x="{x}" y="{yy:.2}" width="{}" height="{h:.2}" fill="{}"/>"#,
                CELL_W - 1,
                class_colour(c)
            );
            yy += h;
        }
        body.push_str("</g>");
    }
    body.push('\n');
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n - 1).collect();
        format!("{t}…")
    }
}

/// One sample of one pair: time (ms) and diverged pages per kind.
type Point = (u64, BTreeMap<VmaKind, u64>);

/// The timeline of a watch: per child, diverged MiB over time, stacked by VMA kind.
pub fn timeline(r: &InspectDoc) -> String {
    let ps = r.system.page_size;
    let samples = r.body.samples.as_deref().unwrap_or(&[]);
    let series = series_of(samples);
    let t_max = samples.iter().map(|s| s.t_ms).max().unwrap_or(0).max(1);
    let width = CHART.left + CHART.w + 170;
    let mut body = String::new();
    let _ = writeln!(
        body,
        r#"<text x="10" y="20" class="t">cowscope inspect {} · diverged MiB over time, per child, stacked by VMA kind · {}</text>"#,
        r.body.snapshot.pid,
        plural(samples.len() as u64, "sample")
    );
    let mut y = CHART.top + 10;
    if series.is_empty() {
        let _ = writeln!(
            body,
            r#"<text x="10" y="{}" class="s">no samples in the document</text>"#,
            y + 10
        );
        y += 30;
    }
    for (pair, pts) in &series {
        chart(&mut body, *pair, pts, ps, t_max, y);
        y += CHART.h + 56;
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{y}\" viewBox=\"0 0 {width} {y}\">{STYLE}<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

/// A timeline chart's plot area: width, height, left margin, top margin.
struct Chart {
    w: usize,
    h: usize,
    left: usize,
    top: usize,
}

const CHART: Chart = Chart {
    w: 760,
    h: 170,
    left: 70,
    top: 30,
};

/// Series per (parent, child): t -> kind -> diverged pages.
fn series_of(samples: &[SampleSummary]) -> BTreeMap<(i32, i32), Vec<Point>> {
    let mut series: BTreeMap<(i32, i32), Vec<Point>> = BTreeMap::new();
    for smp in samples {
        for p in &smp.pairs {
            let by: BTreeMap<VmaKind, u64> = p
                .by_kind
                .iter()
                .filter(|(_, c)| c.diverged > 0)
                .map(|(k, c)| (*k, c.diverged))
                .collect();
            series
                .entry((p.parent, p.child))
                .or_default()
                .push((smp.t_ms, by));
        }
    }
    series
}

/// One pair's chart at `y`: its frame and axes, the stacked areas per kind, the legend.
fn chart(
    body: &mut String,
    (parent, child): (i32, i32),
    pts: &[Point],
    ps: u64,
    t_max: u64,
    y: usize,
) {
    let Chart { w, h, left, .. } = CHART;
    let kinds: Vec<VmaKind> = VmaKind::ALL
        .iter()
        .copied()
        .filter(|k| pts.iter().any(|(_, m)| m.contains_key(k)))
        .collect();
    let peak = pts
        .iter()
        .map(|(_, m)| m.values().sum::<u64>())
        .max()
        .unwrap_or(0);
    let peak_mib = (peak as f64 * ps as f64 / (1u64 << 20) as f64).max(0.1);
    let top = y + 10;
    let _ = writeln!(
        body,
        r#"<text x="10" y="{}" class="s">{parent} → {child}: peak {:.1} MiB diverged</text>"#,
        y + 4,
        peak_mib
    );
    let _ = writeln!(
        body,
        r##"<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/><text x="{}" y="{}" text-anchor="end">{:.1} MiB</text><text x="{}" y="{}" text-anchor="end">0</text><text x="{left}" y="{}">0 s</text><text x="{}" y="{}" text-anchor="end">{:.1} s</text>"##,
        left - 4,
        top + 8,
        peak_mib,
        left - 4,
        top + h,
        top + h + 14,
        left + w,
        top + h + 14,
        t_max as f64 / 1000.0
    );
    let sx = |t: u64| left as f64 + w as f64 * t as f64 / t_max as f64;
    let sy = |m: f64| (top + h) as f64 - h as f64 * m / peak_mib;
    // Stacked areas: for each kind, the band between the sum of the kinds below it and
    // that sum plus its own value.
    let mut below = vec![0f64; pts.len()];
    for k in &kinds {
        let vals: Vec<f64> = pts
            .iter()
            .map(|(_, m)| m.get(k).copied().unwrap_or(0) as f64 * ps as f64 / (1u64 << 20) as f64)
            .collect();
        let mut d = String::new();
        for (i, (t, _)) in pts.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if i == 0 { "M" } else { "L" },
                sx(*t),
                sy(below[i] + vals[i])
            );
        }
        for (i, (t, _)) in pts.iter().enumerate().rev() {
            let _ = write!(d, "L{:.1},{:.1} ", sx(*t), sy(below[i]));
        }
        let _ = writeln!(
            body,
            r#"<path d="{}Z" fill="{}" fill-opacity="0.85"><title>{}</title></path>"#,
            d,
            kind_colour(*k),
            k.name()
        );
        for (b, v) in below.iter_mut().zip(&vals) {
            *b += v;
        }
    }
    for (i, k) in kinds.iter().enumerate() {
        let ly = top + 4 + i * 16;
        let _ = writeln!(
            body,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            left + w + 12,
            ly,
            kind_colour(*k),
            left + w + 30,
            ly + 10,
            k.name()
        );
    }
}
