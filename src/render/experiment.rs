//! The human form of an `experiment` document: one line per experiment with its verdict and
//! sentence; the evidence stays in the JSON.

use std::fmt::Write as _;

use crate::doc::ExperimentDoc;
use crate::experiments::{ExperimentBody, ExperimentResult};

/// `holds`, `FAILS`, `UNPROVEN` or `skipped`: the state of one verdict, as the table prints it.
pub fn state(r: &ExperimentResult) -> &'static str {
    if r.verdict.unproven.is_some() {
        return "UNPROVEN";
    }
    match (r.verdict.skipped.is_some(), r.verdict.holds) {
        (true, _) => "skipped",
        (false, Some(true)) => "holds",
        (false, Some(false)) => "FAILS",
        (false, None) => "?",
    }
}

/// A table: name, state, sentence.
pub fn table(doc: &ExperimentDoc) -> String {
    let results: Vec<&ExperimentResult> = match &doc.body {
        ExperimentBody::One(r) => vec![r],
        ExperimentBody::All { experiments } => experiments.iter().collect(),
    };
    let name_w = results
        .iter()
        .map(|r| r.name.len())
        .chain(std::iter::once("experiment".len()))
        .max()
        .unwrap_or(10);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "cowscope experiment on {} (pfn_visible: {})",
        doc.system.kernel_release, doc.system.pfn_visible
    );
    let _ = writeln!(
        s,
        "{:<name_w$}  {:<7}  what was shown",
        "experiment", "verdict"
    );
    for r in &results {
        let _ = writeln!(
            s,
            "{:<name_w$}  {:<7}  {}",
            r.name,
            state(r),
            r.verdict.sentence
        );
    }
    let held = results.iter().filter(|r| state(r) == "holds").count();
    let skipped = results.iter().filter(|r| state(r) == "skipped").count();
    let failed = results.iter().filter(|r| state(r) == "FAILS").count();
    let unproven = results.iter().filter(|r| state(r) == "UNPROVEN").count();
    let _ = writeln!(
        s,
        "{} experiment(s): {held} held, {failed} failed, {unproven} unproven, {skipped} skipped \
         (the evidence is in --format json)",
        results.len()
    );
    s
}
