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
    /// The subcommand and its arguments, e.g. `["baseline", "09a"]`.
    pub args: Vec<String>,
}

/// What the guest collects, in order. The file names match `scripts/collect.sh`.
///
/// `experiment --all` is included only when this build has experiments. Inside the throwaway
/// VM both it and `fork-report` may change (and restore) /sys settings, hence `--allow-sysfs`.
pub fn collections() -> Vec<Collection> {
    let mut v = vec![Collection {
        file: "fork-report.json".into(),
        args: vec!["fork-report".into(), "--allow-sysfs".into()],
    }];
    for (name, _) in crate::baseline::BaselineCase::ALL {
        v.push(Collection {
            file: format!("baseline-{name}.json"),
            args: vec!["baseline".into(), name.into()],
        });
    }
    if !crate::experiments::list().is_empty() {
        v.push(Collection {
            file: "experiments.json".into(),
            args: vec!["experiment".into(), "--all".into(), "--allow-sysfs".into()],
        });
    }
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
