//! The `compare` tables: fork reports from several kernels side by side.
//!
//! Reports are read as loose JSON ([`serde_json::Value`]) rather than as the current serde
//! types, so files written by older or newer builds still compare: a missing figure shows as
//! `-`, unknown fields are ignored. Each section is a scenario x kernel table; a row whose cells
//! are not all equal starts with `*`, and each cell that differs from the first kernel's cell
//! ends with `*`.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// The `system` facts shown first, since they decide what the evidence can show.
const SYSTEM_FACTS: [&str; 5] = [
    "thp_enabled",
    "pfn_visible",
    "kpage_readable",
    "pagemap_scan",
    "page_size",
];

/// The scenario whose one-byte child write shows how much one THP COW fault copies.
pub const THP_SCENARIO: &str = "thp-child-writes";

/// Computes one cell from one scenario object.
type CellFn = fn(&Value) -> String;

/// What a cell shows when the report has no such figure.
pub const MISSING: &str = "-";

/// One report to compare: a column label (the kernel release) and the document.
#[derive(Debug, Clone)]
pub struct Column {
    /// The column heading: the report's `system.kernel_release`, made unique.
    pub label: String,
    /// Where the report came from (for the legend).
    pub source: String,
    /// The whole document.
    pub doc: Value,
}

/// Label each document by its kernel release (falling back to the file's directory name, as in
/// `results/<release>/fork-report.json`), numbering repeats so every column is distinct.
pub fn columns(docs: Vec<(String, Value)>) -> Vec<Column> {
    let mut out: Vec<Column> = Vec::with_capacity(docs.len());
    for (source, doc) in docs {
        let base = doc
            .pointer("/system/kernel_release")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                Path::new(&source)
                    .parent()
                    .and_then(Path::file_name)
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| source.clone());
        let mut label = base.clone();
        let mut n = 1;
        while out.iter().any(|c| c.label == label) {
            n += 1;
            label = format!("{base} #{n}");
        }
        out.push(Column { label, source, doc });
    }
    out
}

/// Render every section for `cols`.
pub fn render(cols: &[Column]) -> String {
    let scenarios = scenario_names(cols);
    let mut s = String::new();
    let _ = writeln!(s, "cowscope compare: {} report(s)", cols.len());
    for c in cols {
        let _ = writeln!(s, "  {}  ({})", c.label, c.source);
    }
    let _ = writeln!(
        s,
        "A row starting with '*' differs across kernels; a cell ending in '*' differs from the \
         first kernel's ({}). '-' = not in that report.",
        cols.first().map_or("", |c| c.label.as_str())
    );

    let sections: [(&str, CellFn); 8] = [
        ("copied pages", |sc| number(sc.pointer("/pages/copied"))),
        ("page classes (non-zero counts)", page_classes),
        (
            "parent smaps of the arena, kB: rss/pss/shared_dirty/private_dirty/anon_huge",
            |sc| smaps(sc.pointer("/parent/smaps")),
        ),
        (
            "child smaps of the arena, kB: rss/pss/shared_dirty/private_dirty/anon_huge",
            |sc| smaps(sc.pointer("/child/smaps")),
        ),
        (
            "pages with pagemap bit 56 (exclusively mapped) set: parent/child",
            |sc| {
                let p = number(sc.pointer("/parent/exclusive"));
                let c = number(sc.pointer("/child/exclusive"));
                if p == MISSING && c == MISSING {
                    MISSING.to_string()
                } else {
                    format!("{p}/{c}")
                }
            },
        ),
        (
            "pages written since fork by soft-dirty (bit 55): parent/child",
            |sc| {
                let p = number(sc.pointer("/parent/written_since_fork"));
                let c = number(sc.pointer("/child/written_since_fork"));
                if p == MISSING && c == MISSING {
                    MISSING.to_string()
                } else {
                    format!("{p}/{c}")
                }
            },
        ),
        ("verdict", verdict),
        ("evidence", evidence),
    ];

    // What each kernel let cowscope see: this explains most differences below.
    let facts: Vec<(String, Vec<String>)> = SYSTEM_FACTS
        .iter()
        .map(|key| {
            let cells = cols
                .iter()
                .map(|c| scalar(c.doc.get("system").and_then(|s| s.get(*key))))
                .collect();
            (key.to_string(), cells)
        })
        .collect();
    s.push('\n');
    s.push_str(&table_with_heading("system", "fact", cols, &facts));

    // The THP figure next: it is the one that changed most visibly across kernels (5.8).
    let thp_row: Vec<String> = cols
        .iter()
        .map(|c| thp_bytes(&c.doc, scenario(&c.doc, THP_SCENARIO)))
        .collect();
    s.push('\n');
    s.push_str(&table(
        &format!("bytes copied by one THP write ({THP_SCENARIO}: child writes one byte)"),
        cols,
        &[("thp write".to_string(), thp_row)],
    ));

    for (title, cell) in sections {
        let rows: Vec<(String, Vec<String>)> = scenarios
            .iter()
            .map(|name| {
                let cells = cols
                    .iter()
                    .map(|c| match scenario(&c.doc, name) {
                        Some(sc) => cell(sc),
                        None => MISSING.to_string(),
                    })
                    .collect();
                (name.clone(), cells)
            })
            .collect();
        s.push('\n');
        s.push_str(&table(title, cols, &rows));
    }
    s.push('\n');
    s.push_str(&remarks(cols, &scenarios));
    s
}

/// Scenario names in order of first appearance across the reports.
fn scenario_names(cols: &[Column]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for c in cols {
        for sc in c
            .doc
            .get("scenarios")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = sc.get("name").and_then(Value::as_str)
                && !names.iter().any(|x| x == n)
            {
                names.push(n.to_string());
            }
        }
    }
    names
}

fn scenario<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
    doc.get("scenarios")?
        .as_array()?
        .iter()
        .find(|sc| sc.get("name").and_then(Value::as_str) == Some(name))
}

/// A string, number or boolean as the report gave it, or `-`.
fn scalar(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        other => number(other),
    }
}

/// A number as the report gave it, or `-`.
fn number(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Null) | None => MISSING.to_string(),
        Some(other) => other.to_string(),
    }
}

const CLASSES: [&str; 6] = [
    "shared",
    "copied",
    "wiped",
    "not_inherited",
    "absent",
    "unproven",
];

fn page_classes(sc: &Value) -> String {
    let Some(pages) = sc.get("pages").filter(|p| p.is_object()) else {
        return MISSING.to_string();
    };
    let parts: Vec<String> = CLASSES
        .iter()
        .filter_map(|k| {
            let n = pages.get(*k)?.as_u64()?;
            (n != 0).then(|| format!("{k} {n}"))
        })
        .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

fn smaps(v: Option<&Value>) -> String {
    let Some(m) = v.filter(|m| m.is_object()) else {
        return MISSING.to_string();
    };
    [
        "rss_kb",
        "pss_kb",
        "shared_dirty_kb",
        "private_dirty_kb",
        "anon_huge_kb",
    ]
    .iter()
    .map(|k| number(m.get(*k)))
    .collect::<Vec<_>>()
    .join("/")
}

/// The reason a scenario was skipped, wherever the report puts it: `skipped` on the scenario or
/// its verdict (a reason string, `true`, or an object with a `reason`), or `status: "skipped"`.
fn skipped(sc: &Value) -> Option<String> {
    let from = |v: &Value| -> Option<String> {
        match v {
            Value::String(r) => Some(r.clone()),
            Value::Bool(true) => Some(String::new()),
            Value::Object(o) => Some(
                o.get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            _ => None,
        }
    };
    sc.get("skipped")
        .and_then(from)
        .or_else(|| sc.pointer("/verdict/skipped").and_then(from))
        .or_else(|| {
            (sc.get("status").and_then(Value::as_str) == Some("skipped")).then(|| {
                sc.get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            })
        })
}

fn verdict(sc: &Value) -> String {
    if let Some(reason) = skipped(sc) {
        return if reason.is_empty() {
            "skipped".to_string()
        } else {
            format!("skipped: {reason}")
        };
    }
    let Some(v) = sc.get("verdict").filter(|v| v.is_object()) else {
        return MISSING.to_string();
    };
    let mut parts = Vec::new();
    match v.get("holds").and_then(Value::as_bool) {
        Some(true) => parts.push("holds"),
        Some(false) => parts.push("FAILS"),
        None => {}
    }
    match v.get("cow_proven").and_then(Value::as_bool) {
        Some(true) => parts.push("proven"),
        Some(false) => parts.push("NOT proven"),
        None => {}
    }
    match v.get("agree").and_then(Value::as_bool) {
        Some(true) => parts.push("witnesses agree"),
        Some(false) => parts.push("witnesses DISAGREE"),
        None => {}
    }
    if parts.is_empty() {
        MISSING.to_string()
    } else {
        parts.join(", ")
    }
}

/// Verdict remarks worth reading next to the tables: kernel quirks, disagreements and notes,
/// per kernel and scenario.
fn remarks(cols: &[Column], scenarios: &[String]) -> String {
    let mut s = String::new();
    for c in cols {
        for name in scenarios {
            let Some(v) = scenario(&c.doc, name).and_then(|sc| sc.get("verdict")) else {
                continue;
            };
            for (key, what) in [
                ("kernel_quirks", "quirk"),
                ("disagreements", "DISAGREEMENT"),
                ("notes", "note"),
            ] {
                for item in v.get(key).and_then(Value::as_array).into_iter().flatten() {
                    let text = item
                        .as_str()
                        .map_or_else(|| item.to_string(), str::to_string);
                    let _ = writeln!(s, "  {} {name}: {what}: {text}", c.label);
                }
            }
        }
    }
    if s.is_empty() {
        s.push_str("  none\n");
    }
    format!("verdict remarks (kernel, scenario: kind: text)\n{s}")
}

fn evidence(sc: &Value) -> String {
    match sc.pointer("/verdict/evidence").and_then(Value::as_array) {
        Some(list) if list.is_empty() => "none".to_string(),
        Some(list) => list
            .iter()
            .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join("+"),
        None => MISSING.to_string(),
    }
}

/// Bytes one THP write copied: the report's `thp.bytes_copied_by_one_write`, else the copied
/// pages of [`THP_SCENARIO`] times the page size.
fn thp_bytes(doc: &Value, sc: Option<&Value>) -> String {
    let Some(sc) = sc else {
        return MISSING.to_string();
    };
    if let Some(reason) = skipped(sc) {
        return if reason.is_empty() {
            "skipped".to_string()
        } else {
            format!("skipped: {reason}")
        };
    }
    let copied = sc.pointer("/pages/copied").and_then(Value::as_u64);
    let page = doc.pointer("/system/page_size").and_then(Value::as_u64);
    let bytes = sc
        .pointer("/thp/bytes_copied_by_one_write")
        .and_then(Value::as_u64)
        .or_else(|| copied?.checked_mul(page?));
    match (bytes, copied) {
        (Some(b), Some(c)) => format!("{b} B ({} KiB, {c} page(s) copied)", b / 1024),
        (Some(b), None) => format!("{b} B ({} KiB)", b / 1024),
        _ => MISSING.to_string(),
    }
}

/// One section: title, heading row, then one row per scenario with difference marks.
fn table(title: &str, cols: &[Column], rows: &[(String, Vec<String>)]) -> String {
    table_with_heading(title, "scenario", cols, rows)
}

/// [`table`] with another name for the first column.
fn table_with_heading(
    title: &str,
    heading: &str,
    cols: &[Column],
    rows: &[(String, Vec<String>)],
) -> String {
    // Mark cells first, so widths account for the marks.
    let marked: Vec<(bool, &str, Vec<String>)> = rows
        .iter()
        .map(|(name, cells)| {
            let reference = cells.first();
            let differs = cells.iter().any(|c| Some(c) != reference);
            let cells = cells
                .iter()
                .map(|c| {
                    if Some(c) != reference {
                        format!("{c} *")
                    } else {
                        c.clone()
                    }
                })
                .collect();
            (differs, name.as_str(), cells)
        })
        .collect();
    let name_w = marked
        .iter()
        .map(|(_, n, _)| n.len())
        .chain(std::iter::once(heading.len()))
        .max()
        .unwrap_or(8);
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            marked
                .iter()
                .filter_map(|(_, _, cells)| cells.get(i).map(|s| s.chars().count()))
                .chain(std::iter::once(c.label.chars().count()))
                .max()
                .unwrap_or(1)
        })
        .collect();
    let mut s = String::new();
    let _ = writeln!(s, "{title}");
    let _ = write!(s, "  {heading:<name_w$}");
    for (c, w) in cols.iter().zip(&widths) {
        let _ = write!(s, "  {:<w$}", c.label);
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
    use serde_json::json;

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
