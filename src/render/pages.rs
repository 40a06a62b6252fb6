//! The human form of a `pages` document: one row per VMA with its page counts, the totals,
//! the histograms and the notes.

use std::fmt::Write as _;

use crate::doc::PagesDoc;
use crate::pages::PageCounts;

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
    let c = &b.counts;
    let _ = writeln!(
        s,
        "{:<33} {:<5} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "total",
        "",
        c.pages,
        c.present,
        c.exclusive,
        "",
        c.swapped,
        huge(c)
    );
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
