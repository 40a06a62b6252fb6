//! The `compare` tables as text: a legend, one table per section of a
//! [`Comparison`](crate::compare::Comparison), then the verdict remarks. A row whose cells are
//! not all equal starts with `*`; each cell that differs from the first kernel's ends with `*`.

use std::fmt::Write as _;

use crate::compare::{Column, Comparison, Row, build};

/// Render every section for `cols` as text tables.
pub fn render(cols: &[Column]) -> String {
    text(&build(cols))
}

/// The comparison as text: a legend, then one table per section, then the remarks.
pub fn text(c: &Comparison) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "cowscope compare: {} report(s)", c.kernels.len());
    for k in &c.kernels {
        let _ = writeln!(s, "  {}  ({})", k.label, k.source);
    }
    let _ = writeln!(
        s,
        "A row starting with '*' differs across kernels; a cell ending in '*' differs from the \
         first kernel's ({}). '-' = not in that report.",
        c.kernels.first().map_or("", |k| k.label.as_str())
    );
    let labels: Vec<&str> = c.kernels.iter().map(|k| k.label.as_str()).collect();
    for sec in &c.sections {
        s.push('\n');
        s.push_str(&table_with_heading(
            &sec.title,
            &sec.heading,
            &labels,
            &sec.rows,
        ));
    }
    s.push('\n');
    let _ = writeln!(s, "verdict remarks (kernel, scenario: kind: text)");
    if c.remarks.is_empty() {
        s.push_str("  none\n");
    }
    for r in &c.remarks {
        let _ = writeln!(s, "  {} {}: {}: {}", r.kernel, r.scenario, r.kind, r.text);
    }
    s
}

/// One section as text: title, heading row, then one row per scenario with difference marks
/// (`*` before a row whose cells differ, after each cell that differs from the first).
fn table_with_heading(title: &str, heading: &str, labels: &[&str], rows: &[Row]) -> String {
    // Mark cells first, so widths account for the marks.
    let marked: Vec<(bool, &str, Vec<String>)> = rows
        .iter()
        .map(|r| {
            let reference = r.cells.first();
            let cells = r
                .cells
                .iter()
                .map(|c| {
                    if Some(c) != reference {
                        format!("{c} *")
                    } else {
                        c.clone()
                    }
                })
                .collect();
            (r.differs, r.name.as_str(), cells)
        })
        .collect();
    let name_w = marked
        .iter()
        .map(|(_, n, _)| n.len())
        .chain(std::iter::once(heading.len()))
        .max()
        .unwrap_or(8);
    let widths: Vec<usize> = labels
        .iter()
        .enumerate()
        .map(|(i, label)| {
            marked
                .iter()
                .filter_map(|(_, _, cells)| cells.get(i).map(|s| s.chars().count()))
                .chain(std::iter::once(label.chars().count()))
                .max()
                .unwrap_or(1)
        })
        .collect();
    let mut s = String::new();
    let _ = writeln!(s, "{title}");
    let _ = write!(s, "  {heading:<name_w$}");
    for (label, w) in labels.iter().zip(&widths) {
        let _ = write!(s, "  {label:<w$}");
    }
    trim_trailing_blanks(&mut s);
    s.push('\n');
    for (differs, name, cells) in &marked {
        let _ = write!(s, "{} {:<name_w$}", if *differs { '*' } else { ' ' }, name);
        for (cell, w) in cells.iter().zip(&widths) {
            let _ = write!(s, "  {cell:<w$}");
        }
        trim_trailing_blanks(&mut s);
        s.push('\n');
    }
    s
}

/// No trailing blanks from the padding of the last column.
fn trim_trailing_blanks(s: &mut String) {
    while s.ends_with(' ') {
        s.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{MISSING, THP_SCENARIO, columns};
    use serde_json::{Value, json};

    fn report(release: &str, copied: u64, thp_copied: u64) -> Value {
        json!({
            "schema_version": 1,
            "system": {"kernel_release": release, "page_size": 4096},
            "scenarios": [
                {"name": "private-child-writes",
                 "pages": {"shared": 16 - copied, "copied": copied, "wiped": 0},
                 "verdict": {"cow_proven": true, "agree": true, "evidence": ["pfn", "smaps"]}},
                {"name": THP_SCENARIO, "pages": {"copied": thp_copied}}
            ]
        })
    }

    #[test]
    fn equal_reports_mark_nothing() {
        let cols = columns(vec![
            ("a/fork-report.json".into(), report("6.1", 4, 1)),
            ("b/fork-report.json".into(), report("6.12", 4, 1)),
        ]);
        let out = render(&cols);
        assert!(!out.lines().any(|l| l.starts_with('*')), "{out}");
        assert!(out.contains("4096 B (4 KiB, 1 page(s) copied)"), "{out}");
    }

    #[test]
    fn a_different_cell_marks_its_row_and_itself() {
        let cols = columns(vec![
            ("a".into(), report("5.4", 4, 512)),
            ("b".into(), report("6.12", 4, 1)),
        ]);
        let out = render(&cols);
        let thp = out
            .lines()
            .find(|l| l.contains("thp write"))
            .expect("thp row");
        assert!(thp.starts_with('*'), "{thp}");
        assert!(
            thp.contains("2097152 B (2048 KiB, 512 page(s) copied)"),
            "{thp}"
        );
        assert!(thp.trim_end().ends_with('*'), "{thp}");
    }

    #[test]
    fn missing_figures_show_a_dash() {
        let cols = columns(vec![("x".into(), report("6.1", 4, 1))]);
        let out = render(&cols);
        let child = out
            .split("child smaps")
            .nth(1)
            .and_then(|s| s.lines().find(|l| l.contains("private-child-writes")))
            .expect("child smaps row");
        assert!(child.trim_end().ends_with(MISSING), "{child}");
    }

    #[test]
    fn repeated_releases_get_distinct_labels() {
        let cols = columns(vec![
            ("a".into(), report("6.1", 4, 1)),
            ("b".into(), report("6.1", 4, 1)),
        ]);
        assert_eq!(cols[0].label, "6.1");
        assert_eq!(cols[1].label, "6.1 #2");
    }

    #[test]
    fn label_falls_back_to_the_directory_name() {
        let cols = columns(vec![(
            "results/6.6.0-test/fork-report.json".into(),
            json!({"scenarios": []}),
        )]);
        assert_eq!(cols[0].label, "6.6.0-test");
    }
}
