//! The memory-safety experiments (use-after-unmap, overlapping-arenas, stale-reset, threads,
//! resize, double-release): each verdict, and the key evidence derived from first principles.

use assert_cmd::Command;
use cowscope::experiments::{ExperimentBody, ExperimentOptions, ExperimentResult, run};
use rstest::rstest;
use serde_json::Value;

fn one(name: &str) -> ExperimentResult {
    let report = run(name, &ExperimentOptions::default()).expect("experiment runs");
    match report.body {
        ExperimentBody::One(r) => r,
        ExperimentBody::All { .. } => panic!("one experiment asked, several returned"),
    }
}

/// Run `name`; `None` (after printing why) when it was skipped for a missing precondition.
fn held(name: &str) -> Option<Value> {
    let r = one(name);
    assert_eq!(r.name, name);
    if let Some(reason) = &r.verdict.skipped {
        eprintln!("SKIP {name}: {reason}");
        return None;
    }
    assert_eq!(
        r.verdict.holds,
        Some(true),
        "{name}: {} evidence: {:#}",
        r.verdict.sentence,
        r.evidence
    );
    Some(r.evidence)
}

fn hex(v: &Value) -> usize {
    let s = v.as_str().expect("address as a hex string");
    usize::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex address")
}

#[test]
fn use_after_unmap_faults_at_the_released_base() {
    let Some(e) = held("use-after-unmap") else {
        return;
    };
    let base = hex(&e["arena_base"]);
    // The kernel reports the address the child stored to: the base it was told to touch.
    assert_eq!(hex(&e["si_addr"]), base);
    assert_eq!(e["fault_signal"], "SIGSEGV");
    assert_eq!(e["child_exit"]["signal"], "SIGSEGV");
    assert_eq!(e["after_release_mapped"], false);
}

#[rstest]
#[case::use_after_unmap("use-after-unmap")]
fn cli_prints_the_envelope(#[case] name: &str) {
    let out = Command::cargo_bin("cowscope")
        .expect("binary built")
        .args(["experiment", name])
        .output()
        .expect("cowscope runs");
    assert!(out.status.success(), "{name}: exit {:?}", out.status);
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    for key in ["schema_version", "tool", "system", "name", "verdict"] {
        assert!(v.get(key).is_some(), "{name}: missing {key}");
    }
    assert_eq!(v["name"], name);
    assert_eq!(v["verdict"]["holds"], true);
}
