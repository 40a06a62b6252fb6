//! `cowscope compare` on hand-made fork reports (tests/fixtures/compare/): which rows and cells
//! it marks as differing, how it shows missing figures, and how it refuses bad input.

use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compare")
        .join(name)
}

fn compare(files: &[&str]) -> (i32, String, String) {
    let out = Command::new(assert_cmd::cargo::cargo_bin("cowscope"))
        .arg("compare")
        .args(files.iter().map(|f| fixture(f)))
        .output()
        .expect("cowscope runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    assert!(r.contains("skipped: fixture: pretend"), "{r}");
    assert!(r.contains(" - *"), "absent from the 6.1 report: {r}");
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
    assert!(err.contains("is not a fork report"), "{err}");
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
    assert!(r.contains("512/-") && r.contains("1/- *"), "{r}");
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
