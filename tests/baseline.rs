//! `cowscope baseline`: the seed's 09a / 09b / 09b-overflow, through the real binary.
//!
//! The expected dumps are derived by hand from the seed's C (strcpy writes the string and a
//! NUL; mmap'd memory starts zeroed; `arena_dump` prints bytes 32..=126 as themselves and
//! everything else as '.'), not from cowscope's output.

use assert_cmd::Command;
use predicates::prelude::*;
use rstest::rstest;
use serde_json::Value;

fn cowscope() -> Command {
    Command::cargo_bin("cowscope").expect("the cowscope binary")
}

fn dots(n: usize) -> String {
    ".".repeat(n)
}

/// 09a: three 64-byte blocks, each holding its string, its NUL and zeroes.
fn dump_09a() -> String {
    let b1 = format!("Hello arena{}", dots(64 - 11));
    let b2 = format!("Scoped allocator is born{}", dots(64 - 24));
    let b3 = format!("This is not malloc{}", dots(64 - 18));
    format!("{b1}{b2}{b3}")
}

/// 09b: a, b, the unassigned block (never written: 32 zeroes), then c.
/// c: "This will overwrite next" (24 bytes + NUL), then " 🤡 Oops!" + NUL at c + 20:
/// c[20] ' ', c[21..25] the 4 bytes of U+1F921 (non-ASCII: "...."), c[25] ' ', c[26..31]
/// "Oops!", c[31] NUL. 20 + 12 = 32: the last byte written is c's last byte.
fn dump_09b_common() -> String {
    let a = format!("First block ok.{}", dots(32 - 15));
    let b = format!("Second block too.{}", dots(32 - 17));
    let unassigned = dots(32);
    format!("{a}{b}{unassigned}")
}

fn dump_09b() -> String {
    // c[0..20] "This will overwrite ", then ' ', the emoji's 4 bytes, " Oops!" and the NUL.
    let c = ["This will overwrite ", " ", "....", " Oops!", "."].concat();
    assert_eq!(c.len(), 32);
    format!("{}{c}", dump_09b_common())
}

/// 09b-overflow: d ("Next block intact?" + NUL) sits after c, and the clown goes to c + 24:
/// c[24] ' ', c[25..29] emoji, c[29] ' ', c[30..32] "Oo"; then d[0..4] = "ps!" + NUL, so d
/// reads "ps!" NUL " block intact?" NUL and 13 zeroes.
fn dump_09b_overflow() -> String {
    let c = ["This will overwrite next", " ", "....", " Oo"].concat();
    assert_eq!(c.len(), 32);
    let d = format!("ps!. block intact?.{}", dots(13));
    assert_eq!(d.len(), 32);
    format!("{}{c}{d}", dump_09b_common())
}

fn run_json(case: &str) -> Value {
    let out = cowscope()
        .args(["baseline", case])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).expect("stdout is one JSON document")
}

fn block(v: &Value, i: usize) -> (u64, u64, u64, String, bool) {
    let b = &v["blocks"][i];
    (
        b["index"].as_u64().unwrap(),
        b["offset"].as_u64().unwrap(),
        b["len"].as_u64().unwrap(),
        b["label"].as_str().unwrap().to_string(),
        b["written"].as_bool().unwrap(),
    )
}

#[rstest]
#[case::c09a("09a")]
#[case::c09b("09b")]
#[case::c09b_overflow("09b-overflow")]
fn every_baseline_carries_the_envelope(#[case] case: &str) {
    let v = run_json(case);
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["tool"]["name"], "cowscope");
    assert_eq!(
        v["system"]["page_size"].as_u64().unwrap() as usize,
        cowscope::kernel::page_size()
    );
    assert_eq!(v["case"], case);
    let page = cowscope::kernel::page_size();
    let cap = v["capacity"].as_u64().unwrap() as usize;
    let mapped = v["mapped_bytes"].as_u64().unwrap() as usize;
    assert_eq!(mapped % page, 0, "the mapping is whole pages");
    assert!(
        mapped >= cap && mapped - cap < page,
        "the capacity rounded up"
    );
    assert!(v.get("requested_capacity").is_none(), "the capacity is it");
    let used = v["used"].as_u64().unwrap() as usize;
    assert_eq!(
        v["dump"].as_str().unwrap().len(),
        used,
        "one char per used byte"
    );
}

#[test]
fn baseline_09a_replays_the_seed_byte_for_byte_and_finds_nothing() {
    let v = run_json("09a");
    // 09a: `#define ARENA_SIZE 4096`.
    assert_eq!(v["capacity"], 4096);
    assert_eq!(v["used"], 192);
    assert_eq!(v["dump"].as_str().unwrap(), dump_09a());
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 3);
    for (i, label) in ["msg1", "msg2", "msg3"].iter().enumerate() {
        assert_eq!(
            block(&v, i),
            (i as u64, 64 * i as u64, 64, label.to_string(), true)
        );
    }
    assert_eq!(v["leaks"].as_array().unwrap().len(), 0);
    assert_eq!(v["overflows"].as_array().unwrap().len(), 0);
}

#[test]
fn baseline_09b_finds_the_unassigned_block_and_no_crossing() {
    let v = run_json("09b");
    assert_eq!(v["used"], 128);
    assert_eq!(v["dump"].as_str().unwrap(), dump_09b());
    let expect = [
        (0, 0, 32, "a", true),
        (1, 32, 32, "b", true),
        (2, 64, 32, "unassigned", false),
        (3, 96, 32, "c", true),
    ];
    assert_eq!(v["blocks"].as_array().unwrap().len(), expect.len());
    for (i, (idx, off, len, label, written)) in expect.into_iter().enumerate() {
        assert_eq!(block(&v, i), (idx, off, len, label.to_string(), written));
    }
    let leaks = v["leaks"].as_array().unwrap();
    assert_eq!(leaks.len(), 1);
    assert_eq!(
        (&leaks[0]["index"], &leaks[0]["offset"], &leaks[0]["len"]),
        (&Value::from(2), &Value::from(64), &Value::from(32))
    );
    // " 🤡 Oops!" is 1 + 4 + 1 + 5 = 11 bytes, plus strcpy's NUL: 12; 20 + 12 = 32.
    assert_eq!(v["overflows"].as_array().unwrap().len(), 0);
    let clown = &v["writes"][3];
    assert_eq!(
        (
            &clown["offset_in_block"],
            &clown["len"],
            &clown["bytes_past_end"]
        ),
        (&Value::from(20), &Value::from(12), &Value::from(0))
    );
}

/// The seed's 09b: `#define ARENA_SIZE 256`, and `arena_alloc` checks
/// `a->offset + size > a->capacity` against it; the mapping behind it is one page.
#[rstest]
#[case::c09b("09b")]
#[case::c09b_overflow("09b-overflow")]
fn baseline_09b_reports_capacity_256(#[case] case: &str) {
    let v = run_json(case);
    assert_eq!(v["capacity"], 256);
    let page = cowscope::kernel::page_size() as u64;
    assert_eq!(v["mapped_bytes"], 256u64.div_ceil(page) * page);
    let log = v["log"][0].as_str().unwrap();
    assert!(log.contains("(256 bytes; mapped "), "{log}");
    // No write of the seed reaches past the logical end.
    for w in v["writes"].as_array().unwrap() {
        assert_eq!(w["bytes_past_capacity"], 0, "{w}");
    }
    assert_eq!(v["findings"]["slack"], Value::Null);
}

#[test]
fn baseline_09b_overflow_catches_exactly_four_bytes_past_the_end() {
    let v = run_json("09b-overflow");
    assert_eq!(v["used"], 160);
    assert_eq!(v["dump"].as_str().unwrap(), dump_09b_overflow());
    assert_eq!(block(&v, 4), (4, 128, 32, "d".to_string(), true));
    let o = v["overflows"].as_array().unwrap();
    assert_eq!(o.len(), 1);
    // 24 + 12 = 36 = 32 + 4: 'p', 's', '!' and the NUL land in d.
    assert_eq!(o[0]["index"], 3);
    assert_eq!(o[0]["offset"], 96);
    assert_eq!(o[0]["bytes_past_end"], 4);
    assert_eq!(o[0]["victims"], serde_json::json!([4]));
    assert_eq!(v["leaks"].as_array().unwrap().len(), 1);
}

#[test]
fn the_json_matches_its_schema() {
    let schema = serde_json::to_value(schemars::schema_for!(cowscope::doc::BaselineDoc)).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    for (case, _) in cowscope::baseline::BaselineCase::ALL {
        let v = run_json(case);
        assert!(validator.is_valid(&v), "{case} does not match the schema");
    }
}

#[test]
fn the_table_format_is_the_seed_log_plus_a_judgement() {
    cowscope()
        .args(["baseline", "09b", "--format", "table"])
        .assert()
        .success()
        .stdout(predicate::str::contains(dump_09b()))
        .stdout(predicate::str::contains(
            "Arena dump (128 used / 256 total)",
        ))
        .stdout(predicate::str::contains("leak: block 2 'unassigned'"))
        .stdout(predicate::str::contains("no write crossed a block end"));
}

#[rstest]
#[case::text_is_gone("text")]
#[case::baseline_has_no_picture("svg")]
fn a_format_baseline_does_not_have_is_refused(#[case] format: &str) {
    cowscope()
        .args(["baseline", "09b", "--format", format])
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains("invalid value"));
}

#[test]
fn out_to_a_full_device_fails_naming_it_and_leaves_the_device_alone() {
    use std::os::unix::fs::FileTypeExt;
    cowscope()
        .args(["baseline", "09a", "--out", "/dev/full"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "writing /dev/full: No space left on device",
        ));
    let ft = std::fs::metadata("/dev/full").unwrap().file_type();
    assert!(ft.is_char_device(), "/dev/full is still a device");
}

#[test]
fn out_writes_the_document_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.json");
    cowscope()
        .args(["baseline", "09a", "--out"])
        .arg(&path)
        .assert()
        .success()
        .stdout(predicate::str::is_empty());
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["dump"].as_str().unwrap(), dump_09a());
}

#[test]
fn an_unknown_case_is_a_usage_error_naming_it() {
    cowscope()
        .args(["baseline", "09z"])
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains("'09z'"))
        .stderr(predicate::str::contains("09b-overflow"))
        .stderr(predicate::str::contains("panicked").not());
}

#[test]
fn a_missing_case_is_a_usage_error() {
    cowscope()
        .arg("baseline")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("CASE").or(predicate::str::contains("case")));
}

#[test]
fn an_unknown_format_is_a_usage_error() {
    cowscope()
        .args(["baseline", "09a", "--format", "yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("yaml"));
}

#[test]
fn baseline_needs_no_privilege() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skip: dropping to uid 65534 needs root");
        return;
    }
    let bin = assert_cmd::cargo::cargo_bin("cowscope");
    let probe = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg("--version")
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "skip: uid 65534 cannot run {} ({})",
                bin.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("skip: setpriv unavailable: {e}");
            return;
        }
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["baseline", "09b"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["system"]["euid"], 65534);
    assert_eq!(v["dump"].as_str().unwrap(), dump_09b());
    assert_eq!(
        v["capacity"], 256,
        "the seed's ARENA_SIZE, with or without privilege"
    );
}

/// Every baseline document carries a verdict like every other document: the leaks and the
/// bytes past each block's end that the seed's own arithmetic gives (the clown string is 11
/// bytes of UTF-8 plus strcpy's NUL: at c + 20 it ends exactly at c's end, at c + 24 it
/// crosses by 4), and the engine found exactly those.
#[rstest]
#[case::c09a("09a", &[], &[0, 0, 0])]
#[case::c09b("09b", &["unassigned"], &[0, 0, 0, 20 + (" \u{1F921} Oops!".len() + 1) - 32])]
#[case::c09b_overflow("09b-overflow", &["unassigned"], &[0, 0, 0, 0, 24 + (" \u{1F921} Oops!".len() + 1) - 32])]
fn every_baseline_carries_a_verdict_that_holds(
    #[case] case: &str,
    #[case] leaks: &[&str],
    #[case] past_end: &[usize],
) {
    let v = run_json(case);
    let verdict = &v["verdict"];
    assert_eq!(verdict["state"], "held", "{verdict}");
    assert_eq!(verdict["holds"], true);
    assert_eq!(verdict["expected_leaks"], serde_json::json!(leaks));
    assert_eq!(
        verdict["expected_bytes_past_end"],
        serde_json::json!(past_end)
    );
    let seen: Vec<u64> = v["writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["bytes_past_end"].as_u64().unwrap())
        .collect();
    assert_eq!(seen, past_end.iter().map(|&n| n as u64).collect::<Vec<_>>());
}
