//! `cowscope compare` on hand-made fork reports (tests/fixtures/compare/): which rows and cells
//! it marks as differing, how it shows missing figures, and how it refuses bad input.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Map, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compare")
        .join(name)
}

fn cowscope_json(args: &[&str]) -> Value {
    let out = Command::new(assert_cmd::cargo::cargo_bin("cowscope"))
        .args(args)
        .output()
        .expect("cowscope runs");
    serde_json::from_slice(&out.stdout).expect("a JSON document")
}

/// The fork-report schema, from the types that write reports.
fn schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(|| cowscope_json(&["schema", "fork-report"]))
}

/// A real report of this machine with the scenarios the fixtures name.
fn base() -> &'static Value {
    static B: OnceLock<Value> = OnceLock::new();
    B.get_or_init(|| {
        cowscope_json(&[
            "fork-report",
            "--runs",
            "1",
            "--scenario",
            "private-child-writes",
            "--scenario",
            "thp-child-writes",
            "--scenario",
            "wipeonfork",
        ])
    })
}

/// Follow `$ref` and pick the object branch of `anyOf` (an `Option`).
fn resolve(node: &Value) -> &Value {
    if let Some(r) = node.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        return resolve(&schema()["$defs"][name]);
    }
    if let Some(branches) = node.get("anyOf").or_else(|| node.get("oneOf"))
        && let Some(b) = branches
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b.get("$ref").is_some() || b.get("properties").is_some())
    {
        return resolve(b);
    }
    node
}

/// The fixtures are hand-made and say only what each test is about; a valid report needs
/// every required field. Complete `fix` with the required fields it lacks, taken from `real`
/// (a real report of this machine), guided by the schema; optional fields it lacks stay
/// absent (they then show as '-').
fn complete(fix: &Value, real: &Value, node: &Value) -> Value {
    let node = resolve(node);
    match fix {
        Value::Object(f) => {
            let props = node.get("properties").and_then(Value::as_object);
            let mut out = Map::new();
            for (k, v) in f {
                let sub = props.and_then(|p| p.get(k)).unwrap_or(&Value::Null);
                out.insert(
                    k.clone(),
                    complete(v, real.get(k).unwrap_or(&Value::Null), sub),
                );
            }
            for req in node
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let k = req.as_str().expect("names");
                if !out.contains_key(k) {
                    out.insert(k.to_string(), real.get(k).cloned().unwrap_or(Value::Null));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let item_schema = node.get("items").unwrap_or(&Value::Null);
            let reals = real.as_array().cloned().unwrap_or_default();
            Value::Array(
                items
                    .iter()
                    .map(|it| {
                        // Scenarios pair by name; other lists by position.
                        let name = it.get("name");
                        let r = reals
                            .iter()
                            .find(|r| name.is_some() && r.get("name") == name)
                            .or_else(|| reals.first())
                            .cloned()
                            .unwrap_or(Value::Null);
                        complete(it, &r, item_schema)
                    })
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

/// Write the completed fixtures into a temporary tree with the same relative paths (the
/// column label falls back to the directory name) and return their paths.
fn materialize(dir: &Path, files: &[&str]) -> Vec<PathBuf> {
    files
        .iter()
        .map(|f| {
            let src = fixture(f);
            let dst = dir.join(f);
            std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
            let text = std::fs::read_to_string(&src).unwrap_or_default();
            match serde_json::from_str::<Value>(&text) {
                Ok(v) if v.get("scenarios").is_some() => {
                    let full = complete(&v, base(), schema());
                    std::fs::write(&dst, serde_json::to_vec_pretty(&full).unwrap()).unwrap();
                }
                // Not a report (or not JSON, or missing): passed on as it is.
                _ if src.exists() => {
                    std::fs::copy(&src, &dst).expect("copy");
                }
                _ => return src,
            }
            dst
        })
        .collect()
}

/// `cowscope compare ARGS... FILES...`: exit code, stdout, stderr.
fn compare_paths(args: &[&str], paths: &[PathBuf]) -> (i32, String, String) {
    let out = Command::new(assert_cmd::cargo::cargo_bin("cowscope"))
        .arg("compare")
        .args(args)
        .args(paths)
        .output()
        .expect("cowscope runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn compare(files: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    compare_paths(&[], &materialize(dir.path(), files))
}

/// The line of `section` (a title substring) whose scenario column is `scenario`.
fn row<'a>(out: &'a str, section: &str, scenario: &str) -> &'a str {
    let body = out
        .split("\n\n")
        .find(|block| block.lines().next().is_some_and(|t| t.contains(section)))
        .unwrap_or_else(|| panic!("no section '{section}' in:\n{out}"));
    body.lines()
        .find(|l| l.get(2..).is_some_and(|rest| rest.starts_with(scenario)))
        .unwrap_or_else(|| panic!("no row '{scenario}' in section '{section}':\n{body}"))
}

const ALL: [&str; 3] = [
    "5.4.0-fixture/fork-report.json",
    "6.1.0-fixture/fork-report.json",
    "6.12.0-fixture/fork-report.json",
];

#[test]
fn identical_figures_are_not_marked() {
    let (code, out, err) = compare(&ALL);
    assert_eq!(code, 0, "{err}");
    let r = row(&out, "copied pages", "private-child-writes");
    assert!(r.starts_with(' '), "{r}");
    assert!(!r.contains('*'), "{r}");
}

#[test]
fn a_thp_write_copying_2_mib_versus_4_kib_is_marked() {
    let (code, out, err) = compare(&ALL);
    assert_eq!(code, 0, "{err}");
    let r = row(&out, "bytes copied by one THP write", "thp write");
    assert!(r.starts_with('*'), "{r}");
    // 512 pages x 4096 bytes on the first kernel; 1 page on the others, each marked.
    assert!(r.contains("2097152 B"), "{r}");
    assert_eq!(
        r.matches("4096 B (4 KiB, 1 page(s) copied) *").count(),
        2,
        "{r}"
    );
}

#[test]
fn only_cells_that_differ_from_the_first_kernel_are_marked() {
    let (_, out, _) = compare(&[
        "6.1.0-fixture/fork-report.json",
        "6.12.0-fixture/fork-report.json",
    ]);
    // Child smaps are missing from the 6.12 fixture's thp scenario: '-' and marked.
    let r = row(&out, "child smaps", "thp-child-writes");
    assert!(r.starts_with('*'), "{r}");
    assert!(r.trim_end().ends_with("- *"), "{r}");
    assert_eq!(r.matches('*').count(), 2, "row mark and one cell mark: {r}");
    // Parent smaps agree: no mark at all.
    let r = row(&out, "parent smaps", "thp-child-writes");
    assert!(!r.contains('*'), "{r}");
}

#[test]
fn a_scenario_missing_or_skipped_on_one_kernel_shows_why() {
    let (_, out, _) = compare(&ALL);
    let r = row(&out, "verdict", "wipeonfork");
    assert!(r.contains("skipped (fixture: pretend"), "{r}");
    assert!(r.contains(" - *"), "absent from the 6.1 report: {r}");
    // Every figure of a skipped scenario says so, never `none` (it measured nothing).
    for figure in ["page classes", "evidence"] {
        let r = row(&out, figure, "wipeonfork");
        assert!(r.contains("skipped (fixture: pretend"), "{figure}: {r}");
        assert!(!r.contains("none"), "{figure}: {r}");
    }
}

#[test]
fn a_truncated_file_is_a_usage_error_naming_it() {
    let (code, out, err) = compare(&["6.1.0-fixture/fork-report.json", "truncated.json"]);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("truncated.json is not valid JSON"), "{err}");
}

#[test]
fn a_document_without_scenarios_is_refused() {
    let (code, _, err) = compare(&["not-a-report.json"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("is not a fork report, an inspect or a trace document"),
        "{err}"
    );
}

#[test]
fn another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("v2.json");
    std::fs::write(&f, r#"{"schema_version": 2, "scenarios": []}"#).unwrap();
    let (code, out, err) = compare_paths(&[], &[f]);
    assert_eq!(code, 2);
    assert!(err.contains("v2.json has schema_version 2"), "{err}");
    assert!(out.is_empty());
}

#[test]
fn a_figure_of_the_wrong_type_is_refused_with_its_json_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut doc = complete(
        &serde_json::from_str(
            &std::fs::read_to_string(fixture("6.1.0-fixture/fork-report.json")).unwrap(),
        )
        .unwrap(),
        base(),
        schema(),
    );
    doc["scenarios"][0]["pages"]["copied"] = Value::from("four");
    let f = dir.path().join("typed.json");
    std::fs::write(&f, serde_json::to_vec(&doc).unwrap()).unwrap();
    let (code, _, err) = compare_paths(&[], &[f]);
    assert_eq!(code, 2);
    assert!(err.contains("scenarios[0].pages.copied"), "{err}");
    assert!(err.contains("\"four\""), "{err}");
}

#[test]
fn json_format_carries_the_same_cells_as_the_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = materialize(dir.path(), &ALL);
    let (code, out, err) = compare_paths(&["--format", "json"], &paths);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["kernels"].as_array().map(Vec::len), Some(3));
    let thp = v["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["title"].as_str().is_some_and(|t| t.contains("THP write")))
        .expect("thp section");
    assert_eq!(thp["rows"][0]["differs"], true);
    assert!(
        thp["rows"][0]["cells"][0]
            .as_str()
            .unwrap()
            .starts_with("2097152 B")
    );
}

#[test]
fn a_missing_file_is_refused() {
    let (code, _, err) = compare(&["no-such-dir/fork-report.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("no-such-dir/fork-report.json"), "{err}");
}

#[test]
fn system_facts_that_differ_are_marked() {
    let (_, out, _) = compare(&[
        "6.1.0-fixture/fork-report.json",
        "6.12.0-fixture/fork-report.json",
    ]);
    let r = row(&out, "system", "pagemap_scan");
    assert!(r.starts_with('*'), "{r}");
    assert!(r.trim_end().ends_with("true *"), "{r}");
    assert!(!row(&out, "system", "page_size").contains('*'));
}

#[test]
fn verdict_remarks_are_listed_per_kernel() {
    let (_, out, _) = compare(&ALL);
    let remarks = out
        .split("verdict remarks")
        .nth(1)
        .expect("remarks section");
    assert!(
        remarks.contains("5.4.0-fixture private-child-writes: note: no exclusive bit before 5.19"),
        "{remarks}"
    );
}

#[test]
fn exclusive_bit_counts_that_differ_are_marked() {
    let (_, out, _) = compare(&[
        "6.1.0-fixture/fork-report.json",
        "6.12.0-fixture/fork-report.json",
    ]);
    let r = row(&out, "bit 56", "thp-child-writes");
    assert!(r.starts_with('*'), "{r}");
    assert!(r.contains("512/1") && r.contains("1/1 *"), "{r}");
}

#[test]
fn soft_dirty_counts_that_differ_are_marked() {
    let (_, out, _) = compare(&[
        "6.1.0-fixture/fork-report.json",
        "6.12.0-fixture/fork-report.json",
    ]);
    let r = row(&out, "soft-dirty", "thp-child-writes");
    assert!(r.starts_with('*'), "{r}");
    assert!(r.contains("0/1") && r.contains("0/512 *"), "{r}");
    // A report without the field shows '-', not 0.
    let (_, out, _) = compare(&["5.4.0-fixture/fork-report.json"]);
    assert!(
        row(&out, "soft-dirty", "thp-child-writes")
            .trim_end()
            .ends_with(" -")
    );
}

// Inspect and trace documents (real documents of this machine's live programs, relabelled per
// kernel; the 6.1 ones changed by hand where a test is about a difference).

const LIVE: [&str; 4] = [
    "6.1.0-fixture/inspect.json",
    "6.12.0-fixture/inspect.json",
    "6.1.0-fixture/trace.json",
    "6.12.0-fixture/trace.json",
];

#[test]
fn inspect_documents_get_a_row_per_pair_and_class_and_mark_what_differs() {
    let (code, out, err) = compare(&LIVE);
    assert_eq!(code, 0, "{err}");
    let section = "inspect: pages per pair and class";
    // The fixture's second pair (by child pid) diverged 9 pages on 6.1, 8 on 6.12.
    let r = row(&out, section, "pair 2 (by child pid): diverged");
    assert!(r.starts_with('*'), "{r}");
    assert!(r.contains(" 9 ") && r.trim_end().ends_with("8 *"), "{r}");
    // Every other pair agrees: no mark.
    for name in [
        "pair 1 (by child pid): diverged",
        "pair 3 (by child pid): zero",
    ] {
        assert!(!row(&out, section, name).contains('*'), "{name}");
    }
    assert!(!row(&out, "inspect: how the pages were seen", "basis").contains('*'));
    assert!(row(&out, "system", "pagemap_scan").starts_with('*'));
    let r = row(&out, "inspect: pool sharing", "pool 1");
    assert!(r.contains("0:4 2:14 3:47") && !r.contains('*'), "{r}");
}

#[test]
fn trace_documents_get_a_row_per_fork_and_class_and_say_why_stacks_are_missing() {
    let (code, out, err) = compare(&LIVE);
    assert_eq!(code, 0, "{err}");
    let section = "trace: pages per fork and class";
    let r = row(&out, section, "fork 1: copied_by_child");
    assert!(r.starts_with('*'), "{r}");
    assert!(!row(&out, section, "fork 1: released_by_parent").contains('*'));
    let r = row(&out, "trace: how it was recorded", "stacks");
    assert!(
        r.contains("skipped (fixture: pretend perf_event_open was refused)"),
        "{r}"
    );
    assert!(r.contains("recorded (") && r.starts_with('*'), "{r}");
}

#[test]
fn documents_of_every_kind_share_one_column_per_kernel() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = vec![
        "6.1.0-fixture/fork-report.json",
        "6.12.0-fixture/fork-report.json",
    ];
    files.extend(LIVE);
    files.push("5.4.0-fixture/fork-report.json");
    let paths = materialize(dir.path(), &files);
    let (code, out, err) = compare_paths(&["--format", "json"], &paths);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let labels: Vec<&str> = v["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["6.1.0-fixture", "6.12.0-fixture", "5.4.0-fixture"]);
    // 5.4 has no inspect document: '-' in its cell of every inspect row.
    let pairs = v["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("inspect: pages"))
        })
        .expect("the inspect section");
    for r in pairs["rows"].as_array().unwrap() {
        assert_eq!(r["cells"][2], "-", "{r}");
        assert_eq!(r["cells"].as_array().unwrap().len(), 3);
    }
}

#[test]
fn an_inspect_document_of_the_wrong_shape_is_refused_with_its_json_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut doc: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("6.12.0-fixture/inspect.json")).unwrap(),
    )
    .unwrap();
    doc["pairs"][0]["totals"]["shared"] = Value::from("many");
    let f = dir.path().join("inspect.json");
    std::fs::write(&f, serde_json::to_vec(&doc).unwrap()).unwrap();
    let (code, _, err) = compare_paths(&[], &[f]);
    assert_eq!(code, 2);
    assert!(err.contains("does not match the inspect schema"), "{err}");
    assert!(err.contains("\"many\""), "{err}");
}
