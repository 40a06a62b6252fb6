//! Experiments about the system around the arena: ignored errors, overflow tools, stdio and
//! threads at fork, THP sizes, KSM. Each verdict is asserted with the evidence that makes it
//! true, derived from first principles; a missing precondition is a skip that prints its
//! reason.
//!
//! Run with `cargo test -- --test-threads=1` (these tests fork and some change /sys settings,
//! restoring them).

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use assert_cmd::Command;
use cowscope::experiments::{ExperimentBody, ExperimentOptions, ExperimentResult};
use rstest::rstest;
use serde_json::Value;

/// The experiments this suite covers, in registry order.
const MINE: &[&str] = &[
    "ignored-error",
    "overflow-tools",
    "stdio-at-fork",
    "fork-with-threads",
];

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn run(name: &str, allow_sysfs: bool) -> ExperimentResult {
    let opts = ExperimentOptions { allow_sysfs };
    let r = cowscope::experiments::run(name, &opts).expect("the experiment runs");
    match r {
        ExperimentBody::One(r) => r,
        ExperimentBody::All { .. } => panic!("one experiment asked, many returned"),
    }
}

/// Print the skip reason and return true when the experiment was skipped.
fn skipped(r: &ExperimentResult) -> bool {
    if let Some(reason) = &r.verdict.skipped {
        eprintln!("SKIP {}: {reason}", r.name);
        assert_eq!(r.verdict.holds, None, "a skip is not a verdict");
        return true;
    }
    false
}

fn ignored_error(r: &ExperimentResult) {
    let e = &r.evidence;
    let page = cowscope::kernel::page_size() as u64;
    // The arena is one page; 32-byte blocks fit exactly page/32 times, so the error comes at
    // offset == capacity, and nothing was handed out past it.
    assert_eq!(e["capacity"], page);
    assert_eq!(e["blocks_allocated"], page / 32);
    assert_eq!(e["error"]["kind"], "OutOfMemory");
    assert_eq!(e["error"]["offset"], page);
    assert_eq!(e["used_after_error"], page);
    let msg = e["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains(&format!("offset {page}")),
        "the message names the offset: {msg}"
    );
    assert_eq!(e["usize_max_request"]["refused"], true);
}

fn hex(v: &Value) -> u64 {
    let s = v.as_str().expect("a hex string");
    u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex")
}

/// The clown " 🤡 Oops!" plus strcpy's NUL is 1 + 4 + 1 + 5 + 1 = 12 bytes; written at +24
/// of a 32-byte block, 24 + 12 - 32 = 4 bytes land past the end: "ps!" and the NUL.
fn overflow_tools(r: &ExperimentResult) {
    let e = &r.evidence;
    let past = 24 + " \u{1F921} Oops!".len() + 1 - 32;
    assert_eq!(past, 4);
    let red = &e["red_zones"];
    assert_eq!(red["found"]["source"], "red_zone");
    assert_eq!(red["found"]["index"], red["block"]["index"]);
    assert_eq!(red["found"]["offset"], red["block"]["offset"]);
    assert_eq!(red["found"]["bytes_past_end"], past);
    assert_eq!(red["bytes_past_end_hex"], "70 73 21 00", "p s ! NUL");
    // The guard page: c is the last 32 bytes, so the write's 9th byte is the first past the
    // arena, and that is where the child faults.
    let g = &e["guard_page"];
    assert_eq!(g["child_exit"]["signal"], "SIGSEGV");
    assert_eq!(g["fault_signal"], "SIGSEGV");
    assert_eq!(hex(&g["si_addr"]), hex(&g["arena_end"]));
    assert_eq!(hex(&g["write_start"]) + 8, hex(&g["arena_end"]));
    let vg = &e["valgrind"];
    if let Some(reason) = vg.get("skipped") {
        eprintln!("SKIP overflow-tools/valgrind: {reason}");
        return;
    }
    assert_eq!(vg["malloc_block"]["furthest_byte_past_end"], past);
    for w in vg["malloc_block"]["bytes_after_block"]
        .as_array()
        .expect("contexts")
    {
        assert_eq!(w["block_size"], 32);
    }
    assert!(
        vg["malloc_block"]["invalid_write_lines"][0]
            .as_str()
            .is_some_and(|l| l.starts_with("Invalid write of size ")),
        "memcheck's line: {vg}"
    );
    assert_eq!(
        vg["mmap_arena"]["error_count"], 0,
        "memcheck is blind inside mmap"
    );
}

/// One printf before fork, two processes that each flush their copy of the buffer at exit:
/// the line arrives twice; flushed before the fork, the child's buffer is empty: once.
fn stdio_at_fork(r: &ExperimentResult) {
    let e = &r.evidence;
    let line = e["line"].as_str().expect("line");
    let count = |v: &Value| {
        v["stdout"]
            .as_str()
            .expect("stdout")
            .lines()
            .filter(|l| *l == line)
            .count()
    };
    assert_eq!(count(&e["without_flush"]), 2);
    assert_eq!(count(&e["with_flush"]), 1);
    assert_eq!(e["without_flush"]["exit_code"], 0);
    assert_eq!(e["with_flush"]["exit_code"], 0);
}

/// fork() copies only the calling thread: the child has one task, whose tid is its pid; a
/// mutex locked by another thread is never unlocked in the child; a free one is taken by the
/// first trylock.
fn fork_with_threads(r: &ExperimentResult) {
    let e = &r.evidence;
    let parent = e["parent_tasks_at_fork"].as_array().expect("tids");
    assert!(parent.len() >= 2, "the parent had a second thread: {e}");
    assert!(parent.contains(&e["holder_tid"]));
    assert!(parent.contains(&e["forking_tid"]));
    assert_eq!(e["child_tasks"], serde_json::json!([e["child_pid"]]));
    let held = &e["held_mutex"];
    assert_eq!(held["acquired_in_child"], false);
    assert!(held["tried_ns"].as_u64() >= held["timeout_ns"].as_u64());
    assert_eq!(held["parent_relocked_after_release"], true);
    assert_eq!(e["free_mutex"]["acquired_in_child"], true);
    assert_eq!(e["free_mutex"]["tries"], 1);
    assert_eq!(e["child_exit"]["code"], 0, "the child did not hang");
}

/// Two arenas, each mapping the merged frame once: kpagecount 2, both PFNs equal and KSM; the
/// write gives the writer a new, non-KSM frame and leaves the other on the KSM frame (count 1).
fn ksm(r: &ExperimentResult) {
    let e = &r.evidence;
    let pages = e["pages"].as_u64().expect("pages") as usize;
    let before = &e["before_merge"];
    let merged = &e["merged"];
    let after = &e["after_write"];
    for k in 0..pages {
        assert_ne!(before["pfns_a"][k], before["pfns_b"][k], "distinct before");
        assert_eq!(
            merged["pfns_a"][k], merged["pfns_b"][k],
            "one frame after merge"
        );
        assert_eq!(merged["ksm_a"][k], true);
        assert_eq!(merged["ksm_b"][k], true);
    }
    assert_eq!(merged["kpagecount_of_page0"], 2);
    assert_ne!(
        after["pfns_a"][0], merged["pfns_a"][0],
        "the writer got a copy"
    );
    assert_eq!(after["ksm_a"][0], false);
    assert_eq!(
        after["pfns_b"][0], merged["pfns_b"][0],
        "the other kept the KSM page"
    );
    assert_eq!(after["ksm_b"][0], true);
    assert_eq!(after["kpagecount_of_old_page0"], 1);
    for k in 1..pages {
        assert_eq!(
            after["pfns_a"][k], merged["pfns_a"][k],
            "unwritten pages stay merged"
        );
    }
    assert_eq!(e["restore_failures"], serde_json::json!([]));
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let rel = cowscope::kernel::kernel_release();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let (Some(a), Some(b)) = (it.next(), it.next()) else {
        return false;
    };
    (a.parse::<u32>().unwrap_or(0), b.parse::<u32>().unwrap_or(0)) >= (major, minor)
}

/// A shared large folio must have at least the written page copied for the child, and never
/// more than the folio; the parent keeps its frames. Since 5.8 a write to a shared PMD THP
/// splits the PMD and copies one base page (design.md, "Kernels").
fn thp_sizes(r: &ExperimentResult) {
    let e = &r.evidence;
    let page = e["page_size"].as_u64().expect("page size");
    let pmd_kb = cowscope::kernel::thp_pmd_size_kb();
    let rows = e["sizes"].as_array().expect("rows");
    assert!(!rows.is_empty());
    for row in rows {
        let kb = row["size_kb"].as_u64().expect("size");
        if row["folio_formed"] != true {
            eprintln!("thp-sizes: {kb} kB formed no large folio: {row}");
            continue;
        }
        assert_eq!(row["pfns_contiguous"], true);
        assert_eq!(row["compound_head_then_tails_thp"], true);
        let pages = row["copied_pages"].as_u64().expect("pages");
        assert_eq!(row["copied_bytes"].as_u64(), Some(pages * page));
        assert!(pages >= 1, "{kb} kB: the written page was copied");
        assert!(
            pages * page <= kb * 1024,
            "{kb} kB: never more than the folio"
        );
        assert_ne!(row["child_written_page_pfn"], row["head_pfn"]);
        assert_eq!(row["parent_pfns_unchanged"], true);
        assert_eq!(row["child_pages_absent"], 0, "fork copies anonymous PTEs");
        if Some(kb) == pmd_kb {
            assert_eq!(row["smaps_anon_huge_pages_kb"], kb);
            if kernel_at_least(5, 8) {
                assert_eq!(pages, 1, "a PMD THP COW copies one base page since 5.8");
            }
        }
    }
    assert_eq!(e["restore_failures"], serde_json::json!([]));
}

/// Every sysfs value an experiment of this suite may change.
fn sysfs_settings() -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = ["run", "pages_to_scan", "sleep_millisecs"]
        .iter()
        .map(|f| Path::new("/sys/kernel/mm/ksm").join(f))
        .collect();
    let thp = Path::new("/sys/kernel/mm/transparent_hugepage");
    files.push(thp.join("enabled"));
    if let Ok(dir) = std::fs::read_dir(thp) {
        for d in dir.flatten() {
            if d.file_name().to_string_lossy().starts_with("hugepages-") {
                files.push(d.path().join("enabled"));
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|f| Some((f.display().to_string(), std::fs::read_to_string(&f).ok()?)))
        .collect()
}

#[rstest]
#[case::ignored_error("ignored-error", ignored_error as fn(&ExperimentResult), false)]
#[case::overflow_tools("overflow-tools", overflow_tools as fn(&ExperimentResult), false)]
#[case::stdio_at_fork("stdio-at-fork", stdio_at_fork as fn(&ExperimentResult), false)]
#[case::fork_with_threads("fork-with-threads", fork_with_threads as fn(&ExperimentResult), false)]
#[case::thp_sizes("thp-sizes", thp_sizes as fn(&ExperimentResult), true)]
#[case::ksm("ksm", ksm as fn(&ExperimentResult), true)]
fn experiment_verdict_holds(
    #[case] name: &str,
    #[case] check: fn(&ExperimentResult),
    #[case] needs_sysfs: bool,
) {
    let allow = needs_sysfs && is_root();
    let settings_before = sysfs_settings();
    let r = run(name, allow);
    assert_eq!(
        sysfs_settings(),
        settings_before,
        "{name}: every sysfs setting is restored"
    );
    assert_eq!(r.name, name);
    if skipped(&r) {
        return;
    }
    assert_eq!(
        r.verdict.holds,
        Some(true),
        "{name}: {}\n{:#}",
        r.verdict.sentence,
        r.evidence
    );
    check(&r);
}

#[rstest]
#[case::ignored_error("ignored-error")]
#[case::overflow_tools("overflow-tools")]
#[case::stdio_at_fork("stdio-at-fork")]
#[case::fork_with_threads("fork-with-threads")]
#[case::thp_sizes("thp-sizes")]
#[case::ksm("ksm")]
fn cli_prints_the_experiment_document(#[case] name: &str) {
    let out = Command::new(assert_cmd::cargo::cargo_bin!("cowscope"))
        .args(["experiment", name])
        .output()
        .expect("cowscope runs");
    assert!(
        out.status.code() == Some(0),
        "{name}: exit {:?}, stderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    for k in [
        "schema_version",
        "tool",
        "system",
        "name",
        "verdict",
        "evidence",
    ] {
        assert!(v.get(k).is_some(), "{name}: missing {k}");
    }
    assert_eq!(v["name"], name);
}

#[test]
fn experiment_list_names_these_experiments() {
    let names: Vec<_> = cowscope::experiments::list()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for n in MINE {
        assert!(names.contains(n), "{n} is registered");
    }
}

// ---- #[must_use] on alloc: a compile test -----------------------------------------------

/// The cowscope rlib this test was linked against: the newest `libcowscope-*.rlib` next to
/// the test binary (cargo put both in `target/<profile>/deps`).
fn cowscope_rlib() -> Option<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?.to_path_buf();
    let newest = std::fs::read_dir(&deps)
        .ok()?
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("libcowscope-") && n.ends_with(".rlib")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()?
        .1;
    Some((deps, newest))
}

/// Compile `body` (a function body using `arena: &mut Arena`) as a library crate against
/// cowscope with `-D unused_must_use`; return (success, stderr).
fn compile_with_deny(deps: &Path, rlib: &Path, body: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("probe.rs");
    std::fs::write(
        &src,
        format!("pub fn probe(arena: &mut cowscope::arena::Arena) {{\n    {body}\n}}\n"),
    )
    .expect("write probe");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = StdCommand::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "lib",
            "--emit",
            "metadata",
        ])
        .arg("-D")
        .arg("unused_must_use")
        .arg("-L")
        .arg(format!("dependency={}", deps.display()))
        .arg("--extern")
        .arg(format!("cowscope={}", rlib.display()))
        .arg("--out-dir")
        .arg(dir.path())
        .arg(&src)
        .output()
        .expect("rustc runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ignoring_alloc_result_is_an_unused_must_use_error_under_deny() {
    let Some((deps, rlib)) = cowscope_rlib() else {
        eprintln!("SKIP: no libcowscope rlib next to the test binary");
        return;
    };
    if StdCommand::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: rustc not found on PATH");
        return;
    }
    // Control: the same crate compiles when the result is deliberately discarded, so a
    // failure below is the lint and nothing else (paths, editions, metadata).
    let (ok, err) = compile_with_deny(&deps, &rlib, "let _ = arena.alloc(32);");
    assert!(ok, "the control probe compiles: {err}");
    for (method, call) in [
        ("alloc", "arena.alloc(32);"),
        ("alloc_aligned", "arena.alloc_aligned(32, 8);"),
        ("alloc_labeled", "arena.alloc_labeled(32, \"c\");"),
    ] {
        let (ok, err) = compile_with_deny(&deps, &rlib, call);
        assert!(!ok, "`{call}` must not compile under -D unused_must_use");
        // The lint, and the method's own #[must_use] (not only Result's).
        assert!(
            err.contains("unused-must-use"),
            "`{call}`: the lint is named: {err}"
        );
        assert!(
            err.contains(&format!(
                "unused return value of `cowscope::arena::Arena::{method}` that must be used"
            )),
            "`{call}`: the method itself is #[must_use]: {err}"
        );
    }
}

// ---- skips ------------------------------------------------------------------------------

/// Without --allow-sysfs, experiments that would have to change /sys skip and say why
/// (unless the setting is already as needed, e.g. ksmd already running).
#[rstest]
#[case::thp_sizes("thp-sizes", "", "")]
#[case::ksm("ksm", "/sys/kernel/mm/ksm/run", "1")]
fn without_allow_sysfs_it_skips_with_the_reason(
    #[case] name: &str,
    #[case] setting: &str,
    #[case] already: &str,
) {
    if std::fs::read_to_string(setting).is_ok_and(|s| s.trim() == already) {
        eprintln!("SKIP: {setting} is already {already}; {name} needs no sysfs change");
        return;
    }
    let r = run(name, false);
    let reason = r.verdict.skipped.as_deref().expect("a skip");
    eprintln!("{name} skipped as expected: {reason}");
    assert!(
        reason.contains("--allow-sysfs")
            || reason.contains("not root")
            || reason.contains("unavailable"),
        "{reason}"
    );
    assert_eq!(r.verdict.holds, None);
}

/// Not root: the experiments that need PFNs are unproven (exit 3, never a pass or a failure),
/// unless the kernel lacks the feature altogether (a skip, exit 0).
#[rstest]
#[case::thp_sizes("thp-sizes")]
#[case::ksm("ksm")]
fn as_nobody_it_is_unproven_with_the_reason(#[case] name: &str) {
    if !is_root() {
        eprintln!("SKIP: not root, cannot drop to nobody with setpriv");
        return;
    }
    let bin = assert_cmd::cargo::cargo_bin!("cowscope");
    let out = StdCommand::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin)
        .args(["experiment", name, "--allow-sysfs"])
        .output()
        .expect("setpriv runs");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let err = String::from_utf8_lossy(&out.stderr);
    if let Some(reason) = v["verdict"]["skipped"].as_str() {
        assert!(reason.contains("unavailable"), "{reason}");
        assert_eq!(out.status.code(), Some(0), "{err}");
    } else {
        let reason = v["verdict"]["unproven"].as_str().expect("unproven");
        assert!(reason.contains("not root"), "{reason}");
        assert_eq!(
            v["verdict"]["holds"],
            Value::Null,
            "never a pass or a failure"
        );
        assert_eq!(out.status.code(), Some(3), "{err}");
    }
}
