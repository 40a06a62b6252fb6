//! The collection scripts: collect.sh on the running kernel, kernel-matrix.sh's extraction of
//! documents from a guest's serial log, and the guest init's refusal to run outside a VM.
//! (Booting kernels takes tens of seconds under TCG, so it runs in .ci/run, not here.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("cowscope")
}

fn script(name: &str) -> Command {
    Command::new(root().join("scripts").join(name))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn read_json(path: &Path) -> serde_json::Value {
    let s =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn assert_envelope(path: &Path) -> serde_json::Value {
    let v = read_json(path);
    assert_eq!(v["schema_version"], 1, "{}", path.display());
    assert_eq!(v["tool"]["name"], "cowscope", "{}", path.display());
    assert!(v["system"].is_object(), "{} has no system", path.display());
    v
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn collect_sh_writes_one_valid_document_per_collection() {
    if !have("jq") && !nix::unistd::geteuid().is_root() {
        eprintln!("skip: collect.sh needs jq, which is missing, and only root may install it");
        return;
    }
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out: Output = script("collect.sh")
        .arg("--out")
        .arg(out_dir.path())
        .env("COWSCOPE_BIN", bin())
        .output()
        .expect("collect.sh runs");
    let stderr = text(&out.stderr);
    if stderr.contains("not built yet") {
        eprintln!("skip: this build's fork-report/baseline are not built yet:\n{stderr}");
        return;
    }
    assert!(out.status.success(), "collect.sh failed:\n{stderr}");
    let release = nix::sys::utsname::uname()
        .expect("uname")
        .release()
        .to_string_lossy()
        .into_owned();
    let dest = out_dir.path().join(&release);
    let mut expected = vec!["fork-report.json".to_string(), "system.json".to_string()];
    for case in ["09a", "09b", "09b-overflow"] {
        expected.push(format!("baseline-{case}.json"));
    }
    let listed = Command::new(bin())
        .args(["experiment", "--list"])
        .output()
        .expect("experiment --list runs");
    if !listed.stdout.is_empty() {
        expected.push("experiments.json".to_string());
    }
    for f in &expected {
        let v = assert_envelope(&dest.join(f));
        assert_eq!(v["system"]["kernel_release"], release.as_str(), "{f}");
    }
    let report = read_json(&dest.join("fork-report.json"));
    assert!(
        report["scenarios"].is_array(),
        "fork-report.json has no scenarios"
    );
    let sys = read_json(&dest.join("system.json"));
    assert_eq!(sys["uname"]["release"], release.as_str());
    assert_eq!(sys["collected_by"], "collect.sh");
    assert_eq!(sys["privileges"]["euid"], nix::unistd::geteuid().as_raw());
    // Nothing half-written is left behind.
    for e in std::fs::read_dir(&dest).expect("dest dir") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".json") && !name.starts_with('.'),
            "stray file {name}"
        );
    }
}

#[test]
fn collect_sh_rejects_an_unknown_option() {
    let out = script("collect.sh").arg("--bogus").output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown argument '--bogus'"));
}

#[test]
fn kernel_matrix_rejects_a_bad_timeout() {
    let out = script("kernel-matrix.sh")
        .args(["--timeout", "soon"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--timeout must be a positive whole number"));
}

/// A serial log as qemu writes it: firmware escape codes, CRLF line ends, kernel lines, and the
/// guest's markers.
fn serial_log(documents: &[(&str, &str)], truncated: Option<&str>, done: bool) -> Vec<u8> {
    let mut s = String::from(
        "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version test)\r\n\r\nBooting from ROM..\x1bc\x1b[?7l\x1b[2J\r\n",
    );
    for (file, body) in documents {
        s.push_str(&format!("cowscope-guest: collecting {file}\r\n"));
        s.push_str(&format!("==COWSCOPE-BEGIN {file}==\r\n"));
        for line in body.lines() {
            s.push_str(line);
            s.push_str("\r\n");
        }
        s.push_str(&format!("==COWSCOPE-END {file}==\r\n"));
        s.push_str(&format!(
            "==COWSCOPE-RESULT {file} exit=0 json=ok secs=0.10==\r\n"
        ));
    }
    if let Some(file) = truncated {
        s.push_str(&format!(
            "==COWSCOPE-BEGIN {file}==\r\n{{\"schema_version\": 1,\r\n"
        ));
    }
    if done {
        s.push_str("==COWSCOPE-DONE==\r\n[    2.047473] reboot: Power down\r\n");
    }
    s.into_bytes()
}

const REPORT: &str = r#"{
  "schema_version": 1,
  "tool": {"name": "cowscope", "version": "0"},
  "system": {"kernel_release": "6.1.0-guest", "page_size": 4096},
  "scenarios": []
}"#;
const SYSTEM: &str = r#"{"schema_version": 1, "tool": {"name": "cowscope", "version": "0"},
  "system": {"kernel_release": "6.1.0-guest"}, "uname": {"release": "6.1.0-guest"}}"#;

fn extract(log: &[u8]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("serial.log");
    std::fs::write(&log_path, log).expect("write log");
    let out = script("kernel-matrix.sh")
        .arg("--from-log")
        .arg(&log_path)
        .args(["--release", "from-vmlinuz-name", "--out"])
        .arg(dir.path().join("results"))
        .output()
        .expect("kernel-matrix.sh runs");
    (out, dir)
}

#[test]
fn kernel_matrix_extracts_complete_documents_from_a_crlf_serial_log() {
    if !have("jq") {
        eprintln!(
            "skip: kernel-matrix.sh needs jq (it installs it when booting, not in --from-log)"
        );
        return;
    }
    let log = serial_log(
        &[
            ("fork-report.json", REPORT),
            ("baseline-09a.json", "{ not json"),
            ("system.json", SYSTEM),
        ],
        Some("baseline-09b.json"),
        true,
    );
    let (out, dir) = extract(&log);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The guest's own release (system.json) names the directory.
    let dest = dir.path().join("results/6.1.0-guest");
    let report = assert_envelope(&dest.join("fork-report.json"));
    assert_eq!(report["scenarios"], serde_json::json!([]));
    assert_envelope(&dest.join("system.json"));
    assert!(
        !dest.join("baseline-09a.json").exists(),
        "invalid JSON was written"
    );
    assert!(
        !dest.join("baseline-09b.json").exists(),
        "a truncated document was written"
    );
    assert!(!dir.path().join("results/from-vmlinuz-name").exists());
    let stray: Vec<_> = std::fs::read_dir(dir.path().join("results"))
        .expect("results dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(stray.len(), 1, "staging left behind: {stray:?}");
}

#[test]
fn kernel_matrix_fails_a_boot_without_the_done_marker_but_keeps_what_it_got() {
    if !have("jq") {
        eprintln!("skip: kernel-matrix.sh needs jq");
        return;
    }
    let log = serial_log(&[("fork-report.json", REPORT)], None, false);
    let (out, dir) = extract(&log);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no ==COWSCOPE-DONE== marker"));
    // Without system.json the release given on the command line names the directory.
    assert_envelope(
        &dir.path()
            .join("results/from-vmlinuz-name/fork-report.json"),
    );
}

#[test]
fn guest_init_refuses_to_run_outside_a_vm() {
    // The test process is never PID 1, so this must be a usage error, not a power-off.
    let out = Command::new(bin())
        .arg("guest-init")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("only runs as PID 1"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn committed_fork_reports_validate_against_the_schema() {
    let results = root().join("results");
    let schema_path = results.join("schema.json");
    if !schema_path.exists() {
        eprintln!("skip: results/schema.json is not generated yet");
        return;
    }
    let schema = read_json(&schema_path);
    let validator = jsonschema::validator_for(&schema).expect("results/schema.json is a schema");
    let mut checked = 0;
    for entry in std::fs::read_dir(&results).expect("results/") {
        let report = entry.expect("entry").path().join("fork-report.json");
        if !report.exists() {
            continue;
        }
        let doc = read_json(&report);
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{}:\n{}",
            report.display(),
            errors.join("\n")
        );
        checked += 1;
    }
    if checked == 0 {
        eprintln!("skip: no results/<release>/fork-report.json committed yet");
    }
}
