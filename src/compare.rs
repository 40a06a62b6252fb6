//! `compare`: fork reports, inspect and trace documents from several kernels as one
//! [`Comparison`]: per figure a row per scenario (fork reports), per pair and class (inspect)
//! or per fork and class (trace), and a cell per kernel. Documents are read as loose JSON
//! ([`serde_json::Value`]) after `cmd::compare` checked them against their schema, so a cell
//! shows `-` where a document has no such figure (a skipped scenario, a scenario, pair or
//! fork another kernel's document lacks, a kernel with no document of that kind).

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

/// The comparison as data: what the text tables show, cell by cell, and what
/// `compare --format json` prints.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Comparison {
    /// The reports compared, in column order.
    pub kernels: Vec<KernelColumn>,
    /// The sections: system facts, the THP write, then one per figure.
    pub sections: Vec<Section>,
    /// Verdict remarks (quirks, disagreements, notes) per kernel and scenario.
    pub remarks: Vec<Remark>,
}

/// One compared report.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct KernelColumn {
    /// The column heading (the kernel release, made unique).
    pub label: String,
    /// The file it came from.
    pub source: String,
}

/// One table.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Section {
    /// What the cells are.
    pub title: String,
    /// The heading of the first column (`scenario`, `fact`).
    pub heading: String,
    /// One row per scenario (or fact).
    pub rows: Vec<Row>,
}

/// One row: a cell per kernel.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Row {
    /// Scenario (or fact) name.
    pub name: String,
    /// One cell per kernel, in column order (`-` when the report has no such figure).
    pub cells: Vec<String>,
    /// Whether the cells are not all equal.
    pub differs: bool,
}

/// A verdict remark.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Remark {
    /// Column label of the report.
    pub kernel: String,
    /// Scenario name.
    pub scenario: String,
    /// `quirk`, `DISAGREEMENT` or `note`.
    pub kind: String,
    /// The text.
    pub text: String,
}

fn row(name: String, cells: Vec<String>) -> Row {
    let differs = cells.iter().any(|c| Some(c) != cells.first());
    Row {
        name,
        cells,
        differs,
    }
}

/// Build every section for `cols`.
pub fn build(cols: &[Column]) -> Comparison {
    let scenarios = scenario_names(cols);
    let figures: [(&str, CellFn); 8] = [
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
            |sc| parent_child(sc, "exclusive"),
        ),
        (
            "pages written since fork by soft-dirty (bit 55): parent/child",
            |sc| parent_child(sc, "written_since_fork"),
        ),
        ("verdict", verdict),
        ("evidence", evidence),
    ];
    // What each kernel let cowscope see: this explains most differences below.
    let mut sections = vec![system_section(cols)];
    // The THP figure next: it is the one that changed most visibly across kernels (5.8).
    sections.push(Section {
        title: format!("bytes copied by one THP write ({THP_SCENARIO}: child writes one byte)"),
        heading: "scenario".into(),
        rows: vec![row(
            "thp write".into(),
            cols.iter()
                .map(|c| thp_bytes(&c.doc, scenario(&c.doc, THP_SCENARIO)))
                .collect(),
        )],
    });
    for (title, cell) in figures {
        let rows = scenarios
            .iter()
            .map(|name| {
                let cells = cols
                    .iter()
                    .map(|c| match scenario(&c.doc, name) {
                        // A skipped scenario has no figures: every cell says so and why,
                        // never `none` or a zero it did not measure.
                        Some(sc) => skipped_cell(sc).unwrap_or_else(|| cell(sc)),
                        None => MISSING.to_string(),
                    })
                    .collect();
                row(name.clone(), cells)
            })
            .collect();
        sections.push(Section {
            title: title.into(),
            heading: "scenario".into(),
            rows,
        });
    }
    Comparison {
        kernels: cols
            .iter()
            .map(|c| KernelColumn {
                label: c.label.clone(),
                source: c.source.clone(),
            })
            .collect(),
        sections,
        remarks: remarks(cols, &scenarios),
    }
}

/// `parent/child` of one per-process figure of a scenario (`-` where neither has it).
fn parent_child(sc: &Value, figure: &str) -> String {
    let p = number(sc.pointer(&format!("/parent/{figure}")));
    let c = number(sc.pointer(&format!("/child/{figure}")));
    if p == MISSING && c == MISSING {
        MISSING.to_string()
    } else {
        format!("{p}/{c}")
    }
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

fn page_classes(sc: &Value) -> String {
    let Some(pages) = sc.get("pages").filter(|p| p.is_object()) else {
        return MISSING.to_string();
    };
    let parts: Vec<String> = crate::fork::classify::PageClass::ALL
        .iter()
        .map(|c| c.as_str())
        .filter_map(|k| {
            let n = pages.get(k)?.as_u64()?;
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

/// `skipped (reason)` for a skipped scenario, else None.
fn skipped_cell(sc: &Value) -> Option<String> {
    skipped(sc).map(|reason| {
        if reason.is_empty() {
            "skipped".to_string()
        } else {
            format!("skipped ({reason})")
        }
    })
}

fn verdict(sc: &Value) -> String {
    if let Some(s) = skipped_cell(sc) {
        return s;
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
fn remarks(cols: &[Column], scenarios: &[String]) -> Vec<Remark> {
    let mut out = Vec::new();
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
                    out.push(Remark {
                        kernel: c.label.clone(),
                        scenario: name.clone(),
                        kind: what.into(),
                        text,
                    });
                }
            }
        }
    }
    out
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
    if let Some(s) = skipped_cell(sc) {
        return s;
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

/// What a compared document is, told by its top-level keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    /// `cowscope fork-report` (`scenarios`).
    ForkReport,
    /// `cowscope inspect` (`pairs`).
    Inspect,
    /// `cowscope trace` (`forks`).
    Trace,
}

impl DocKind {
    /// The kind of `doc`, or `None` when it is none of the three.
    pub fn of(doc: &Value) -> Option<DocKind> {
        if doc.get("scenarios").is_some_and(Value::is_array) {
            Some(DocKind::ForkReport)
        } else if doc.get("pairs").is_some_and(Value::is_array) {
            Some(DocKind::Inspect)
        } else if doc.get("forks").is_some_and(Value::is_array) {
            Some(DocKind::Trace)
        } else {
            None
        }
    }
}

/// Compare documents of any of the three kinds: each kind is labelled by kernel on its own
/// (as [`columns`] does), the kernels are the union of those labels in order of first
/// appearance, and each kind's sections have a cell per kernel (`-` where that kernel has no
/// document of the kind). Documents of no known kind are left out (`cmd::compare` refuses
/// them before this).
pub fn build_any(docs: Vec<(String, Value)>) -> Comparison {
    let mut by_kind: [Vec<(String, Value)>; 3] = Default::default();
    for (source, doc) in docs {
        match DocKind::of(&doc) {
            Some(DocKind::ForkReport) => by_kind[0].push((source, doc)),
            Some(DocKind::Inspect) => by_kind[1].push((source, doc)),
            Some(DocKind::Trace) => by_kind[2].push((source, doc)),
            None => {}
        }
    }
    let [fork, inspect, trace] = by_kind.map(columns);
    let mut kernels: Vec<KernelColumn> = Vec::new();
    for c in fork.iter().chain(&inspect).chain(&trace) {
        match kernels.iter_mut().find(|k| k.label == c.label) {
            Some(k) => {
                k.source.push_str(", ");
                k.source.push_str(&c.source);
            }
            None => kernels.push(KernelColumn {
                label: c.label.clone(),
                source: c.source.clone(),
            }),
        }
    }
    let aligned = |cols: &[Column]| -> Vec<Column> {
        kernels
            .iter()
            .map(|k| {
                cols.iter()
                    .find(|c| c.label == k.label)
                    .cloned()
                    .unwrap_or_else(|| Column {
                        label: k.label.clone(),
                        source: String::new(),
                        doc: Value::Null,
                    })
            })
            .collect()
    };
    let mut out = if fork.is_empty() {
        Comparison {
            kernels: Vec::new(),
            sections: vec![system_section(&aligned(
                &inspect.iter().chain(&trace).cloned().collect::<Vec<_>>(),
            ))],
            remarks: Vec::new(),
        }
    } else {
        build(&aligned(&fork))
    };
    out.kernels = kernels.clone();
    if !inspect.is_empty() {
        out.sections.extend(inspect_sections(&aligned(&inspect)));
    }
    if !trace.is_empty() {
        out.sections.extend(trace_sections(&aligned(&trace)));
    }
    out
}

/// The system facts of each column's document.
fn system_section(cols: &[Column]) -> Section {
    Section {
        title: "system".into(),
        heading: "fact".into(),
        rows: SYSTEM_FACTS
            .iter()
            .map(|key| {
                let cells = cols
                    .iter()
                    .map(|c| scalar(c.doc.get("system").and_then(|s| s.get(*key))))
                    .collect();
                row(key.to_string(), cells)
            })
            .collect(),
    }
}

/// The classes of an inspect pair's totals.
const INSPECT_CLASSES: [&str; 6] = [
    "shared",
    "diverged",
    "only_parent",
    "only_child",
    "zero",
    "unproven",
];

/// A document's array `key`, sorted by the number at `by` (pairs by child pid, forks by
/// time): the N-th entry of one kernel's document is the N-th of another's when the same
/// program ran on both.
fn ordered<'a>(doc: &'a Value, key: &str, by: &str) -> Vec<&'a Value> {
    let mut v: Vec<&Value> = doc
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let key = |x: &Value| {
        x.pointer(by)
            .and_then(Value::as_f64)
            .unwrap_or(f64::INFINITY)
    };
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v
}

/// `inspect`: how it saw the pages, a row per pair and class, and each pool's sharing.
fn inspect_sections(cols: &[Column]) -> Vec<Section> {
    let how = ["pfn_visible", "basis"]
        .iter()
        .map(|k| {
            row(
                (*k).into(),
                cols.iter().map(|c| scalar(c.doc.get(*k))).collect(),
            )
        })
        .chain(std::iter::once(row(
            "zero page by PAGEMAP_SCAN".into(),
            cols.iter()
                .map(|c| scalar(c.doc.pointer("/zero_page/by_pagemap_scan")))
                .collect(),
        )))
        .collect();
    let pairs: Vec<Vec<&Value>> = cols
        .iter()
        .map(|c| ordered(&c.doc, "pairs", "/child"))
        .collect();
    let n = pairs.iter().map(Vec::len).max().unwrap_or(0);
    let mut rows = Vec::new();
    for i in 0..n {
        for class in INSPECT_CLASSES {
            let cells = pairs
                .iter()
                .map(|p| {
                    number(
                        p.get(i)
                            .and_then(|p| p.pointer(&format!("/totals/{class}"))),
                    )
                })
                .collect();
            rows.push(row(
                format!("pair {} (by child pid): {class}", i + 1),
                cells,
            ));
        }
    }
    let pools: Vec<Vec<&Value>> = cols
        .iter()
        .map(|c| ordered(&c.doc, "pools", "/parent"))
        .collect();
    let m = pools.iter().map(Vec::len).max().unwrap_or(0);
    let pool_rows = (0..m)
        .map(|i| {
            let cells = pools
                .iter()
                .map(|p| histogram(p.get(i).and_then(|p| p.get("sharing_histogram"))))
                .collect();
            row(format!("pool {}", i + 1), cells)
        })
        .collect();
    vec![
        Section {
            title: "inspect: how the pages were seen".into(),
            heading: "fact".into(),
            rows: how,
        },
        Section {
            title: "inspect: pages per pair and class (totals over the range inspected)".into(),
            heading: "pair: class".into(),
            rows,
        },
        Section {
            title: "inspect: pool sharing, members mapping each parent frame: pages".into(),
            heading: "pool".into(),
            rows: pool_rows,
        },
    ]
}

/// `{"0": 4, "2": 14}` as `0:4 2:14` (zero counts left out), or `-`.
fn histogram(v: Option<&Value>) -> String {
    let Some(m) = v.and_then(Value::as_object) else {
        return MISSING.to_string();
    };
    let parts: Vec<String> = m
        .iter()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(k, n)| format!("{k}:{}", number(Some(n))))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

/// The classes of a trace fork's final sample, in the document's order.
const TRACE_CLASSES: [&str; 17] = [
    "total",
    "shared",
    "zero",
    "copied_by_child",
    "copied_by_parent",
    "copied_at_fork",
    "copied_then_released_by_child",
    "copied_then_released_by_parent",
    "released_by_child",
    "released_by_parent",
    "released_by_both",
    "moved",
    "diverged",
    "only_parent",
    "only_child",
    "absent",
    "unproven",
];

/// `trace`: how releases and stacks were recorded, and a row per fork and class of its final
/// sample (whole process; classes that are 0 on every kernel are left out).
fn trace_sections(cols: &[Column]) -> Vec<Section> {
    let how = vec![
        row(
            "release tracking".into(),
            cols.iter()
                .map(|c| scalar(c.doc.pointer("/release_tracking/method")))
                .collect(),
        ),
        row(
            "stacks".into(),
            cols.iter().map(|c| stacks_cell(&c.doc)).collect(),
        ),
    ];
    let forks: Vec<Vec<&Value>> = cols
        .iter()
        .map(|c| ordered(&c.doc, "forks", "/at"))
        .collect();
    let n = forks.iter().map(Vec::len).max().unwrap_or(0);
    let mut rows = Vec::new();
    for i in 0..n {
        for class in TRACE_CLASSES {
            let cells: Vec<String> = forks
                .iter()
                .map(|f| number(f.get(i).and_then(|f| f.pointer(&format!("/final/{class}")))))
                .collect();
            if cells.iter().all(|c| c == "0" || c == MISSING) && class != "total" {
                continue;
            }
            let kind = forks
                .iter()
                .find_map(|f| f.get(i)?.get("kind")?.as_str())
                .unwrap_or("fork");
            rows.push(row(format!("{kind} {}: {class}", i + 1), cells));
        }
    }
    vec![
        Section {
            title: "trace: how it was recorded".into(),
            heading: "fact".into(),
            rows: how,
        },
        Section {
            title: "trace: pages per fork and class at the fork's final sample (whole process)"
                .into(),
            heading: "fork: class".into(),
            rows,
        },
    ]
}

/// `recorded (N samples)`, `skipped (reason)` or `-` (no --stacks).
fn stacks_cell(doc: &Value) -> String {
    let Some(st) = doc.get("stacks").filter(|s| s.is_object()) else {
        return MISSING.to_string();
    };
    if st.get("recorded").and_then(Value::as_bool) == Some(true) {
        format!("recorded ({} samples)", number(st.get("samples")))
    } else {
        format!(
            "skipped ({})",
            st.get("reason")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
        )
    }
}
