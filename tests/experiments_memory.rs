//! The memory-safety experiments (use-after-unmap, overlapping-arenas, stale-reset, threads,
//! resize, double-release): each verdict, and the key evidence derived from first principles.

use assert_cmd::Command;
use cowscope::experiments::{ExperimentBody, ExperimentOptions, ExperimentResult, run};
use rstest::rstest;
use serde_json::Value;

fn one(name: &str) -> ExperimentResult {
    let report = run(name, &ExperimentOptions::default()).expect("experiment runs");
    match report {
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

#[test]
fn overlapping_arenas_replace_silently_and_noreplace_refuses() {
    let Some(e) = held("overlapping-arenas") else {
        return;
    };
    let m = &e["map_fixed"];
    assert_eq!(
        m["returned"], e["arena_base"],
        "MAP_FIXED maps exactly where asked"
    );
    assert_eq!(
        m["bytes_before_seed"],
        std::str::from_utf8(cowscope::experiments::overlapping_arenas::STAMP).unwrap()
    );
    // A fresh anonymous mapping reads as zeroes.
    let after = m["bytes_after_hex"].as_str().unwrap();
    assert!(!after.is_empty() && after.chars().all(|c| c == '0'));
    assert_eq!(e["map_fixed_noreplace"]["errno"], "EEXIST");
}

#[test]
fn stale_reset_leaks_the_old_bytes_only_without_zeroing() {
    let Some(e) = held("stale-reset") else {
        return;
    };
    let secret: String = cowscope::experiments::stale_reset::SECRET
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // A bump arena restarts at offset 0, so the new block sits on the old one.
    assert_eq!(e["reset_false"]["new_block_offset"], 0);
    assert_eq!(e["reset_false"]["new_block_bytes_hex"], secret.as_str());
    assert!(
        !e["reset_false"]["engine_stale_findings"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        e["reset_true"]["new_block_bytes_hex"],
        "0".repeat(secret.len())
    );
    assert_eq!(
        e["reset_true"]["engine_stale_findings"],
        serde_json::json!([])
    );
}

#[test]
fn resize_moves_the_arena_and_the_old_address_dangles() {
    use cowscope::experiments::resize::{CONTENT, GROW_PAGES};
    let Some(e) = held("resize") else {
        return;
    };
    let g = &e["grow"];
    assert_eq!(g["moved"], true);
    assert_ne!(g["old_base"], g["new_base"]);
    let page = cowscope::kernel::page_size();
    assert_eq!(g["old_capacity"], page);
    assert_eq!(g["new_capacity"], GROW_PAGES * page);
    assert_eq!(
        e["contents"]["after_seed"],
        std::str::from_utf8(CONTENT).unwrap()
    );
    // The child stored to the block's old address: the kernel names exactly that address.
    let old = &e["old_block_address"];
    assert_eq!(old["si_addr"], old["addr"]);
    assert_eq!(old["child_exit"]["signal"], "SIGSEGV");
    assert_eq!(old["parent_vma"], Value::Null);
    assert_eq!(
        hex(&old["addr"]),
        hex(&g["old_base"]) + e["contents"]["block_offset"].as_u64().unwrap() as usize
    );
}

#[test]
fn double_release_is_reported_not_undefined() {
    let Some(e) = held("double-release") else {
        return;
    };
    assert_eq!(e["block"]["first_release"], "ok");
    assert_eq!(e["block"]["second_release_kind"], "DoubleRelease");
    assert_eq!(e["arena"]["first_release"], "ok");
    assert_eq!(e["arena"]["second_release_kind"], "Released");
    // munmap(2): unmapping a range with no mapping in it is not an error.
    assert_eq!(e["kernel_munmap_twice"]["second"], "0 (success)");
}

#[test]
fn threads_never_share_a_block() {
    use cowscope::experiments::threads::{PER_THREAD, THREADS};
    let Some(e) = held("threads") else {
        return;
    };
    let c = &e["concurrent"];
    assert_eq!(c["allocations"], THREADS * PER_THREAD);
    assert_eq!(c["overlapping_ranges"], 0);
    assert_eq!(c["ranges_tile_without_gaps"], true);
    // Disjoint ranges that tile 0..offset: the offset is the sum of the lengths.
    assert_eq!(c["final_offset"], c["bytes_requested"]);
    let x = &e["exhaustion"];
    let (cap, len) = (
        x["capacity"].as_u64().unwrap(),
        x["block_len"].as_u64().unwrap(),
    );
    // Blocks of `len` fill the arena up to the largest multiple of `len`, never past it.
    assert_eq!(x["final_offset"].as_u64().unwrap(), cap / len * len);
    assert_eq!(x["threads_refused"], THREADS);
    // Both loads happen before either store: both threads read offset 0.
    let f = &e["seed_style_forced_interleaving"];
    assert_eq!(f["thread_a"], "0..32");
    assert_eq!(f["thread_b"], "0..32");
}

#[test]
fn concurrent_arena_refuses_zero_and_overflowing_lengths() {
    use cowscope::arena::ArenaError;
    use cowscope::experiments::threads::ConcurrentArena;
    let a = ConcurrentArena::new(100);
    assert!(matches!(a.alloc(0), Err(ArenaError::ZeroLength { .. })));
    assert_eq!(a.alloc(60).unwrap(), 0..60);
    assert!(matches!(
        a.alloc(usize::MAX),
        Err(ArenaError::OutOfMemory { offset: 60, .. })
    ));
    assert!(matches!(a.alloc(41), Err(ArenaError::OutOfMemory { .. })));
    assert_eq!(a.alloc(40).unwrap(), 60..100);
    assert_eq!(a.used(), 100);
}

#[test]
fn child_munmap_reports_success_and_errno() {
    use cowscope::fork::child::{ChildOp, TAG_MUNMAP_RESULT};
    use cowscope::fork::subject::{SubjectPipes, spawn};
    use std::time::{Duration, Instant};
    let pipes = SubjectPipes::new().unwrap();
    let fd = pipes.child_report_fd();
    let mut ops = pipes.prologue().to_vec();
    // munmap(2): EINVAL when addr is not a multiple of the page size.
    ops.push(ChildOp::Munmap {
        addr: 1,
        len: 1,
        fd,
    });
    ops.extend(pipes.epilogue());
    let (mut subj, _) = spawn(pipes, &ops).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let msgs = subj.wait_ready(deadline).unwrap();
    assert_eq!(subj.finish(deadline).code, Some(0));
    let r: Vec<u64> = msgs
        .iter()
        .filter(|m| m.tag == TAG_MUNMAP_RESULT)
        .map(|m| m.value)
        .collect();
    assert_eq!(r, vec![libc::EINVAL as u64]);
}

#[rstest]
#[case::use_after_unmap("use-after-unmap")]
#[case::overlapping_arenas("overlapping-arenas")]
#[case::stale_reset("stale-reset")]
#[case::threads("threads")]
#[case::resize("resize")]
#[case::double_release("double-release")]
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

/// None of these experiments needs privilege: as nobody each verdict still holds.
#[rstest]
#[case::use_after_unmap("use-after-unmap")]
#[case::overlapping_arenas("overlapping-arenas")]
#[case::stale_reset("stale-reset")]
#[case::threads("threads")]
#[case::resize("resize")]
#[case::double_release("double-release")]
fn as_nobody_the_verdict_still_holds(#[case] name: &str) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP {name}: not root, cannot drop to nobody with setpriv");
        return;
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(assert_cmd::cargo::cargo_bin!("cowscope"))
        .args(["experiment", name])
        .output()
        .expect("setpriv runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["verdict"]["holds"], true, "{name}: {}", v["verdict"]);
}
