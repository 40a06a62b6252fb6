//! `cowscope inspect` without privilege: uid 65534 cannot read another user's pagemap at all,
//! so the targets (a Python program with known writes) and cowscope both run as 65534. PFNs
//! are hidden: only the exclusive bit, PAGEMAP_SCAN's zero page and shared mappings prove
//! anything; everything else must be `unproven`, and the exit code says "could not prove".

mod inspect_support;

use std::process::Command;

use inspect_support::*;
use serde_json::Value;

const NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];

/// `[start, end)` of a key of the fixture's line, for `--range`.
fn range(s: &PySubject, key: &str) -> String {
    let r = &s.info[key];
    format!(
        "{:#x}-{:#x}",
        r[0].as_u64().unwrap(),
        r[1].as_u64().unwrap()
    )
}

fn inspect_as_nobody(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new("setpriv")
        .args(NOBODY)
        .arg(cowscope_bin())
        .arg("inspect")
        .args(args)
        .current_dir("/")
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), doc, err)
}

fn setup(args: &[&str]) -> Option<PySubject> {
    if !is_root() {
        eprintln!("SKIP: need root to run both sides as uid 65534 with setpriv");
        return None;
    }
    let s = PySubject::spawn("known_writes.py", args, true);
    if s.is_none() {
        eprintln!("SKIP: could not start the Python subject as nobody");
    }
    s
}

#[test]
fn without_pfns_written_pages_are_proven_diverged_and_the_rest_unproven() {
    let Some(s) = setup(&[]) else { return };
    let (rc, doc, err) = inspect_as_nobody(&["--pid", &s.pid(), "--range", &range(&s, "region")]);
    assert_eq!(rc, 3, "some pages could not be proven: exit 3 ({err})");
    assert_eq!(doc["pfn_visible"], false);
    assert_eq!(doc["system"]["euid"], 65534);
    assert_eq!(doc["basis"], "exclusive_bit");
    let t = &pair(&doc, s.child())["totals"];
    // The 8 pages the child wrote: both copies are mapped once (bit 56) -> diverged.
    // The other 56: mapped by both, so neither has bit 56 -> unproven, never "shared".
    assert_eq!(classes(t), [0, 8, 0, 0, 0, 56], "{t}");
    assert!(doc["notes"].to_string().contains("PFNs are hidden"));
}

#[test]
fn without_pfns_pagemap_scan_still_proves_the_zero_page() {
    let Some(s) = setup(&[]) else { return };
    if !cowscope::mem::scan::available() {
        eprintln!("SKIP: no PAGEMAP_SCAN (Linux < 6.7)");
        return;
    }
    let (rc, doc, err) = inspect_as_nobody(&["--pid", &s.pid(), "--range", &range(&s, "zero")]);
    assert_eq!(rc, 3, "{err}");
    assert_eq!(doc["zero_page"]["by_pagemap_scan"], true);
    let t = &pair(&doc, s.child())["totals"];
    // Page 0 was written before the fork (same page, mapped twice: unproven); pages 1..16
    // were only read: both map the zero page.
    assert_eq!(classes(t), [0, 0, 0, 0, 15, 1], "{t}");
}

/// The same two ranges with `--no-scan`, the paths of a kernel without PAGEMAP_SCAN (before
/// 6.7): the written pages are still proven diverged by the exclusive bit, but nothing can
/// tell the zero page from a shared page any more, so the 15 zero pages join the unproven
/// ones, and a note says why.
#[test]
fn without_pfns_and_without_pagemap_scan_the_zero_page_is_unproven() {
    let Some(s) = setup(&[]) else { return };
    let no_scan = |key: &str| {
        let (rc, doc, err) =
            inspect_as_nobody(&["--pid", &s.pid(), "--range", &range(&s, key), "--no-scan"]);
        assert_eq!(rc, 3, "{err}");
        assert_eq!(doc["system"]["pagemap_scan"], false);
        assert_eq!(doc["zero_page"]["by_pagemap_scan"], false);
        assert!(
            doc["notes"]
                .to_string()
                .contains("PAGEMAP_SCAN is unavailable"),
            "{}",
            doc["notes"]
        );
        classes(&pair(&doc, s.child())["totals"])
    };
    assert_eq!(no_scan("region"), [0, 8, 0, 0, 0, 56]);
    assert_eq!(no_scan("zero"), [0, 0, 0, 0, 0, 16]);
}

#[test]
fn without_pfns_the_exclusive_bit_of_a_pmd_mapped_thp_is_not_trusted() {
    let Some(s) = setup(&["--thp"]) else { return };
    let thp = s.info["thp"].as_array().unwrap();
    let start = thp[0].as_u64().unwrap() as usize;
    // Only meaningful if the parent really maps the block with one PMD (512 consecutive
    // frames; root reads them).
    let e = entries(s.info["parent"].as_i64().unwrap() as i32, start, 512);
    let first = pfn(e[0]);
    if !e
        .iter()
        .enumerate()
        .all(|(i, &x)| pfn(x) == first + i as u64)
    {
        eprintln!("SKIP: the parent's block is not PMD-mapped (no THP here)");
        return;
    }
    // The trap: the child copied the head page, so the head is mapped once, and on kernels
    // whose pagemap tests the head for every subpage all 512 entries carry bit 56 although
    // 511 pages are still shared.
    let exclusive = e.iter().filter(|&&x| x & (1 << 56) != 0).count();
    eprintln!("parent THP entries with bit 56: {exclusive} of 512");
    let (rc, doc, err) = inspect_as_nobody(&["--pid", &s.pid(), "--range", &range(&s, "thp")]);
    assert_eq!(rc, 3, "{err}");
    let t = &pair(&doc, s.child())["totals"];
    assert_eq!(
        t["diverged"], 1,
        "only the copied page is proven diverged: {t}"
    );
    assert_eq!(t["unproven"], 511, "{t}");
    // And with PFNs (root), the same pages are 1 diverged, 511 shared.
    let root = inspect_json(&["--pid", &s.pid(), "--range", &range(&s, "thp")], 0);
    let rt = &pair(&root, s.child())["totals"];
    assert_eq!(classes(rt), [511, 1, 0, 0, 0, 0], "{rt}");
}

#[test]
fn root_agrees_with_the_unprivileged_proofs_on_the_same_pages() {
    let Some(s) = setup(&[]) else { return };
    let doc = inspect_json(&["--pid", &s.pid(), "--range", &range(&s, "region")], 0);
    assert_eq!(
        classes(&pair(&doc, s.child())["totals"]),
        [56, 8, 0, 0, 0, 0]
    );
    let doc = inspect_json(&["--pid", &s.pid(), "--range", &range(&s, "zero")], 0);
    assert_eq!(
        classes(&pair(&doc, s.child())["totals"]),
        [1, 0, 0, 0, 15, 0]
    );
}
