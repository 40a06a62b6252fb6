//! The human form of a `pages` document: one row per VMA with its page counts, the totals,
//! the histograms and the notes.

use std::fmt::Write as _;

use crate::doc::PagesDoc;
use crate::pages::{PageCounts, PageRow, VmaSummary};

fn huge(c: &PageCounts) -> String {
    c.huge.map_or_else(|| "?".to_string(), |h| h.to_string())
}

/// A table of the VMAs examined.
pub fn table(doc: &PagesDoc) -> String {
    let b = &doc.body;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "process {}: {} VMA(s){}; PFNs visible: {}, kpage files read: {}",
        b.pid,
        b.vmas.len(),
        b.range
            .map(|r| format!(" in {:#x}-{:#x}", r.start, r.end))
            .unwrap_or_default(),
        if b.pfn_visible { "yes" } else { "no" },
        if b.kpage_readable { "yes" } else { "no" },
    );
    let _ = writeln!(
        s,
        "{:<33} {:<5} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}  pathname",
        "range", "perms", "pages", "present", "exclusiv", "rss kB", "swapped", "huge"
    );
    for v in &b.vmas {
        vma_row(&mut s, v);
    }
    let c = &b.counts;
    let rss_kb: u64 = b.vmas.iter().map(|v| v.smaps.rss_kb).sum();
    let _ = writeln!(
        s,
        "{:<33} {:<5} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "total",
        "",
        c.pages,
        c.present,
        c.exclusive,
        rss_kb,
        c.swapped,
        huge(c)
    );
    if let Some(rows) = &b.per_page {
        page_rows(&mut s, rows);
    }
    if c.unmapped > 0 {
        let _ = writeln!(s, "{} page(s) of the range lie in no VMA", c.unmapped);
    }
    if let Some(h) = &b.mapcount_histogram {
        let parts: Vec<String> = h.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = writeln!(
            s,
            "mapcount (kpagecount) -> present pages: {}",
            parts.join(", ")
        );
    }
    if let Some(h) = &b.kpageflags_histogram {
        let _ = writeln!(s, "kpageflags -> present pages:");
        let mut rows: Vec<(&String, &u64)> = h.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (k, n) in rows {
            let _ = writeln!(s, "  {n:>9}  {k}");
        }
    }
    for n in &b.notes {
        let _ = writeln!(s, "note: {n}");
    }
    // No padding after the last column (anonymous VMAs have no pathname).
    s.lines().map(str::trim_end).collect::<Vec<_>>().join("\n") + "\n"
}

/// One VMA's row: its counts, or why it has none.
fn vma_row(s: &mut String, v: &VmaSummary) {
    let range = format!("{:#x}-{:#x}", v.examined_start, v.examined_end);
    match &v.counts {
        Some(c) => {
            let _ = writeln!(
                s,
                "{range:<33} {:<5} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}  {}",
                v.smaps.perms,
                c.pages,
                c.present,
                c.exclusive,
                v.smaps.rss_kb,
                c.swapped,
                huge(c),
                v.smaps.pathname
            );
        }
        None if v.no_pagemap => {
            let _ = writeln!(
                s,
                "{range:<33} {:<5} no pagemap (above the user address space) {:>9}  {}",
                v.smaps.perms, v.smaps.rss_kb, v.smaps.pathname
            );
        }
        None => {
            let _ = writeln!(
                s,
                "{range:<33} {:<5} unreadable: {}  {}",
                v.smaps.perms,
                v.error.as_deref().unwrap_or("?"),
                v.smaps.pathname
            );
        }
    }
}

/// The `--per-page` rows.
fn page_rows(s: &mut String, rows: &[PageRow]) {
    let _ = writeln!(
        s,
        "\n{:>7} {:<18} {:<7} {:<7} {:<9} {:<11} {:<5} {:>12} {:>8}  flags",
        "page",
        "address",
        "present",
        "swapped",
        "exclusive",
        "file/shared",
        "guard",
        "pfn",
        "mapcount"
    );
    let yes = |b: bool| if b { "yes" } else { "-" };
    let opt = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |n| n.to_string());
    for r in rows {
        let pfn = r.pfn.map_or_else(|| "?".to_string(), |p| format!("{p:#x}"));
        let _ = writeln!(
            s,
            "{:>7} {:<18} {:<7} {:<7} {:<9} {:<11} {:<5} {:>12} {:>8}  {}",
            r.index,
            format!("{:#x}", r.address),
            yes(r.present),
            yes(r.swapped),
            yes(r.exclusive),
            yes(r.file_or_shared),
            yes(r.guard),
            pfn,
            opt(r.mapcount),
            r.flags.as_ref().map(|f| f.join(",")).unwrap_or_default()
        );
    }
}
