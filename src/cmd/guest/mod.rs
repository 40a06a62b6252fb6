//! PID 1 inside a test VM (scripts/kernel-matrix.sh): mount /proc and /sys, collect, print the
//! JSON between markers on the console, power off.
//!
//! The kernel starts `/init` (this binary) with the arguments after `--` on its command line, so
//! the script boots with `... -- guest-init`. Each collection runs in a child process of its own
//! (this same binary re-executed with an ordinary subcommand such as `fork-report`), so a crash or
//! hang in one loses only that one document. PID 1 itself never exits on the success path: if it
//! did, the kernel would panic ("Attempted to kill init"), so it syncs and powers off instead.
//!
//! The console protocol, one marker per line:
//! ```text
//! ==COWSCOPE-BEGIN fork-report.json==
//! { ...one JSON document... }
//! ==COWSCOPE-END fork-report.json==
//! ==COWSCOPE-RESULT fork-report.json exit=0 secs=2.41==
//! ...
//! ==COWSCOPE-DONE==
//! ```
//! A collection that produced no valid JSON gets only its RESULT line (with `exit=`, `signal=`
//! or `timeout`, and `json=invalid` or `json=none`); its stderr is echoed, prefixed, outside the
//! markers.

mod collect;
pub mod facts;
mod init;

use crate::error::{Error, Result};

/// Prefix of the line that opens a document: `==COWSCOPE-BEGIN <file>==`.
pub const MARK_BEGIN: &str = "==COWSCOPE-BEGIN";
/// Prefix of the line that closes a document: `==COWSCOPE-END <file>==`.
pub const MARK_END: &str = "==COWSCOPE-END";
/// Prefix of the status line of each collection: `==COWSCOPE-RESULT <file> exit=N secs=S==`.
pub const MARK_RESULT: &str = "==COWSCOPE-RESULT";
/// The last line the guest prints before powering off.
pub const MARK_DONE: &str = "==COWSCOPE-DONE==";

/// Environment variable (set on the kernel command line before `--`) bounding each collection.
pub const TIMEOUT_ENV: &str = "COWSCOPE_GUEST_TIMEOUT";
/// Seconds each collection may take when [`TIMEOUT_ENV`] is not set.
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;

/// The line that opens `file`'s document.
pub fn begin_marker(file: &str) -> String {
    format!("{MARK_BEGIN} {file}==")
}

/// The line that closes `file`'s document.
pub fn end_marker(file: &str) -> String {
    format!("{MARK_END} {file}==")
}

/// One collection: a cowscope subcommand whose stdout is one JSON document, and the file the
/// host stores it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// File name under `results/<release>/`, e.g. `fork-report.json`.
    pub file: String,
    /// The subcommand and its arguments, e.g. `["baseline", "09a"]`. `{pid}` is replaced by
    /// the subject's pid; `{out}` by a file under /tmp, from which the document is then read
    /// (for `trace`, whose program owns stdout).
    pub args: Vec<String>,
    /// A program started first and held while the collection runs (`inspect`'s and `trace
    /// --pid`'s target): the collection starts when it printed its first line on stdout (its
    /// setup is done), and its process group is killed afterwards.
    pub subject: Option<Vec<String>>,
}

/// Where scripts/kernel-matrix.sh puts the live subjects in the initramfs (built from
/// scripts/matrix/cow_hold.c and tests/trace_programs/cow_exact.c, statically linked).
pub const SUBJECT_DIR: &str = "/bin";

/// The live-program collections, in the guest and (same arguments) in scripts/collect.sh:
/// `inspect` of a held family with known writes (scripts/matrix/cow_hold.c), `trace` of a
/// program with known copies and releases (cow_exact, arena at a fixed address), and the
/// same trace with `--stacks` (perf events: `recorded: false` with the reason where the
/// kernel has none), and `trace --pid` attached to it (releases from the syscall
/// tracepoints). scripts/check-live.sh checks every figure against the programs' writes.
pub fn live_collections(dir: &str) -> Vec<Collection> {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_string()).collect::<Vec<_>>();
    let exact = format!("{dir}/cow_exact");
    let exact_args = [
        "n=64",
        "a=3",
        "b=5",
        "c=7",
        "d=4",
        "e=2",
        "f=6",
        "z=8",
        "at=0x200000000000",
    ];
    let trace = |extra: &[&str]| {
        let mut v = s(&["trace"]);
        v.extend(s(extra));
        v.extend(s(&["--out", "{out}", "--", &exact]));
        v.extend(s(&exact_args));
        v
    };
    vec![
        Collection {
            file: "inspect.json".into(),
            args: s(&["inspect", "--pid", "{pid}", "--range", HOLD_RANGE]),
            subject: Some(vec![format!("{dir}/cow_hold")]),
        },
        Collection {
            file: "trace.json".into(),
            args: trace(&[]),
            subject: None,
        },
        Collection {
            file: "trace-stacks.json".into(),
            args: trace(&["--stacks"]),
            subject: None,
        },
        // Attached: releases from the syscall tracepoints (perf events), no stop per
        // syscall; the program sleeps before its fork so that cowscope attaches first.
        Collection {
            file: "trace-attach.json".into(),
            args: s(&["trace", "--pid", "{pid}", "--out", "{out}"]),
            subject: Some(
                std::iter::once(exact.clone())
                    .chain(s(&exact_args))
                    .chain(s(&[ATTACH_DELAY]))
                    .collect(),
            ),
        },
    ]
}

/// How long cow_exact waits before its fork in `trace-attach.json`: cowscope must have
/// attached by then (it takes well under a second, also under TCG).
pub const ATTACH_DELAY: &str = "delay=4000";

/// The arena and zero region of scripts/matrix/cow_hold.c (fixed address `HOLD_ADDR`).
pub const HOLD_RANGE: &str = "0x300000001000-0x300000052000";

/// What the guest collects, in order. The file names match `scripts/collect.sh`.
///
/// `experiment --all` is included only when this build has experiments. Inside the throwaway
/// VM both it and `fork-report` may change (and restore) /sys settings, hence `--allow-sysfs`.
pub fn collections() -> Vec<Collection> {
    let mut v = vec![Collection {
        file: "fork-report.json".into(),
        args: vec!["fork-report".into(), "--allow-sysfs".into()],
        subject: None,
    }];
    for (name, _) in crate::baseline::BaselineCase::ALL {
        v.push(Collection {
            file: format!("baseline-{name}.json"),
            args: vec!["baseline".into(), name.into()],
            subject: None,
        });
    }
    if !crate::experiments::list().is_empty() {
        v.push(Collection {
            file: "experiments.json".into(),
            args: vec!["experiment".into(), "--all".into(), "--allow-sysfs".into()],
            subject: None,
        });
    }
    v.extend(live_collections(SUBJECT_DIR));
    v
}

/// Run as init. Refuses (usage error, exit 2) unless this process is PID 1, so that running
/// `cowscope guest-init` by hand can never power off the host. As PID 1 it only returns if the
/// final power-off fails.
///
/// # Errors
/// [`Error::Usage`] when not PID 1; [`Error::Io`] if `reboot(RB_POWER_OFF)` fails.
pub fn run_as_init() -> Result<i32> {
    let pid = nix::unistd::getpid().as_raw();
    if pid != 1 {
        return Err(Error::usage(format!(
            "guest-init only runs as PID 1 inside a throwaway VM booted by \
             scripts/kernel-matrix.sh (it powers the machine off); this is PID {pid}, so it refuses"
        )));
    }
    init::prepare_filesystems();
    // Firmware output ends without a newline; start the protocol on a fresh line.
    init::say("");
    collect::collect_all();
    init::say(MARK_DONE);
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF) {
        Ok(never) => match never {},
        Err(e) => Err(Error::io("powering off with reboot(RB_POWER_OFF)", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::facts::system_facts;
    use super::*;
    use crate::doc::SCHEMA_VERSION;
    use serde_json::json;

    #[test]
    fn markers_name_the_file() {
        assert_eq!(
            begin_marker("fork-report.json"),
            "==COWSCOPE-BEGIN fork-report.json=="
        );
        assert_eq!(
            end_marker("baseline-09a.json"),
            "==COWSCOPE-END baseline-09a.json=="
        );
    }

    #[test]
    fn collections_cover_fork_report_and_every_baseline() {
        let c = collections();
        let files: Vec<&str> = c.iter().map(|c| c.file.as_str()).collect();
        assert_eq!(files[0], "fork-report.json");
        for (name, _) in crate::baseline::BaselineCase::ALL {
            assert!(files.contains(&format!("baseline-{name}.json").as_str()));
        }
        // Names are unique: each becomes one file on the host.
        let mut sorted = files.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), files.len());
    }

    #[test]
    fn live_collections_hold_their_subject_and_write_trace_documents_to_a_file() {
        let live = live_collections("/bin");
        let inspect = live.iter().find(|c| c.file == "inspect.json").unwrap();
        assert_eq!(inspect.subject, Some(vec!["/bin/cow_hold".to_string()]));
        assert!(inspect.args.contains(&"{pid}".to_string()));
        for c in live.iter().filter(|c| c.file.starts_with("trace")) {
            // The traced program owns stdout: the document goes to a file.
            assert!(c.args.contains(&"{out}".to_string()), "{c:?}");
        }
        let attach = live.iter().find(|c| c.file == "trace-attach.json").unwrap();
        assert!(attach.args.contains(&"--pid".to_string()));
        assert!(
            attach
                .subject
                .as_ref()
                .unwrap()
                .contains(&ATTACH_DELAY.to_string())
        );
        assert!(collections().iter().any(|c| c.file == "trace-stacks.json"));
    }

    #[test]
    fn system_facts_carry_the_envelope() {
        let v = system_facts("test");
        assert_eq!(v["schema_version"], json!(SCHEMA_VERSION));
        assert_eq!(v["tool"]["name"], json!("cowscope"));
        assert_eq!(
            v["uname"]["release"],
            json!(crate::kernel::kernel_release())
        );
        assert!(v["system"]["page_size"].as_u64().is_some_and(|p| p >= 4096));
    }
}
