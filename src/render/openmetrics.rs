//! `inspect --format openmetrics`: the current pair and pool figures as gauges, for
//! Prometheus (fleet monitoring of prefork servers).
//!
//! The text is OpenMetrics 1.0 (`# HELP`, `# TYPE`, `# UNIT`, samples without timestamps,
//! `# EOF`) and at the same time valid Prometheus text exposition 0.0.4, which is what
//! node_exporter's textfile collector reads (`--collector.textfile.directory`, files named
//! `*.prom`): that parser takes `# UNIT` and `# EOF` as comments, and it refuses samples with
//! timestamps, so none are written (the read time is a metric of its own). HELP texts hold no
//! backslash or quote, so the two formats' different HELP escaping never matters; label
//! values are escaped as both require (`\\`, `\"`, `\n`).
//!
//! Everything is a gauge in bytes or seconds, read from the document.

use std::fmt::Write as _;

use crate::inspect::model::Snapshot;

/// A label value, escaped for both the Prometheus and the OpenMetrics text formats.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// One metric family: HELP, TYPE, UNIT, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, unit: &str, help: &str) -> Family<'a> {
        debug_assert!(
            !help.contains(['\\', '"', '\n']),
            "HELP text must need no escaping: {help}"
        );
        debug_assert!(
            unit.is_empty() || name.ends_with(&format!("_{unit}")),
            "an OpenMetrics name ends with its unit: {name}"
        );
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        if !unit.is_empty() {
            let _ = writeln!(out, "# UNIT {name} {unit}");
        }
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, String)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{name}");
        if !labels.is_empty() {
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// The exposition of one inspect snapshot (a document's, or one sample of a watch);
/// `page_size` from the document's system, `read_at_unix_s` when the sample was taken
/// (seconds since the epoch).
pub fn exposition(s: &Snapshot, ps: u64, read_at_unix_s: f64) -> String {
    let mut out = String::new();
    pair_families(&mut out, s, ps);
    pool_families(&mut out, s);
    read_families(&mut out, s, read_at_unix_s);
    out.push_str("# EOF\n");
    out
}

/// A family per pair figure, a sample per pair.
fn pair_families(out: &mut String, s: &Snapshot, ps: u64) {
    let pair_labels = |p: &crate::inspect::model::PairReport| {
        vec![
            ("parent_pid", p.parent.to_string()),
            ("parent_comm", p.parent_comm.clone()),
            ("child_pid", p.child.to_string()),
            ("child_comm", p.child_comm.clone()),
        ]
    };
    type Figure = fn(&crate::inspect::tally::ClassCounts) -> u64;
    let pair_figures: [(&str, &str, Figure); 5] = [
        (
            "cowscope_pair_diverged_bytes",
            "Memory no longer the same page in parent and child (a copy, or released and refaulted); without PFNs a lower bound.",
            |t| t.diverged,
        ),
        (
            "cowscope_pair_shared_bytes",
            "Memory parent and child still map as the same frame.",
            |t| t.shared,
        ),
        (
            "cowscope_pair_only_child_bytes",
            "Memory only the child has (pages or mappings the parent lacks).",
            |t| t.only_child,
        ),
        (
            "cowscope_pair_only_parent_bytes",
            "Memory only the parent has (mapped or touched after the fork, or dropped by the child).",
            |t| t.only_parent,
        ),
        (
            "cowscope_pair_unproven_bytes",
            "Memory both map whose sameness cannot be proven without PFNs (0 as root).",
            |t| t.unproven,
        ),
    ];
    for (name, help, figure) in pair_figures {
        let mut f = Family::new(out, name, "bytes", help);
        for p in &s.pairs {
            f.sample(name, &pair_labels(p), figure(&p.totals) * ps);
        }
    }
}

/// The pools' families, a sample per pool, labelled with the parent.
fn pool_families(out: &mut String, s: &Snapshot) {
    let comm_of = |pid: i32| {
        s.processes
            .iter()
            .find(|p| p.pid == pid)
            .map(|p| p.comm.clone())
            .or_else(|| {
                s.pairs
                    .iter()
                    .find(|p| p.parent == pid)
                    .map(|p| p.parent_comm.clone())
            })
            .unwrap_or_default()
    };
    let pool_labels = |parent: i32| {
        vec![
            ("parent_pid", parent.to_string()),
            ("parent_comm", comm_of(parent)),
        ]
    };
    {
        let name = "cowscope_pool_diverged_bytes";
        let mut f = Family::new(
            out,
            name,
            "bytes",
            "Memory diverged between a parent and its workers, summed over the workers.",
        );
        for pool in &s.pools {
            f.sample(name, &pool_labels(pool.parent), pool.view.diverged_bytes);
        }
    }
    {
        let name = "cowscope_pool_workers";
        let mut f = Family::new(
            out,
            name,
            "",
            "Workers (children with a pair) of a parent with several children.",
        );
        for pool in &s.pools {
            f.sample(name, &pool_labels(pool.parent), pool.view.workers);
        }
    }
}

/// How the last sample was read: its duration, when, and whether it is complete.
fn read_families(out: &mut String, s: &Snapshot, read_at_unix_s: f64) {
    {
        let name = "cowscope_read_duration_seconds";
        let mut f = Family::new(
            out,
            name,
            "seconds",
            "Time the last sample took to read (pagemaps, maps, smaps).",
        );
        f.sample(name, &[], format!("{:.6}", s.read_us as f64 / 1e6));
    }
    {
        let name = "cowscope_read_timestamp_seconds";
        let mut f = Family::new(
            out,
            name,
            "seconds",
            "When the last sample was read, in seconds since the Unix epoch.",
        );
        f.sample(name, &[], format!("{read_at_unix_s:.3}"));
    }
    {
        let name = "cowscope_incomplete";
        let mut f = Family::new(
            out,
            name,
            "",
            "1 when the last sample could not prove everything (exit code 3), else 0.",
        );
        f.sample(name, &[], u8::from(s.incomplete()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
        assert_eq!(escape("gunicorn: worker"), "gunicorn: worker");
    }
}
