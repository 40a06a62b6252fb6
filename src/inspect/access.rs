//! One clear sentence for every reason a process's memory cannot be read.
//!
//! `/proc/<pid>/{maps,smaps,pagemap}` are opened under the kernel's ptrace access check in
//! read mode (`PTRACE_MODE_READ_FSCREDS`, `__ptrace_may_access`): the reader must have the
//! target's uids and gids, the target must be dumpable, and its permitted capabilities must be
//! a subset of the reader's, unless the reader has CAP_SYS_PTRACE. Yama's `ptrace_scope`
//! restricts ptrace *attach* only on mainline kernels, so it does not stop cowscope (which never
//! attaches); a security module (SELinux, AppArmor) can still refuse.

use std::io;

use super::proc::ProcStat;
use crate::error::Error;

/// `CAP_SYS_PTRACE` (include/uapi/linux/capability.h).
const CAP_SYS_PTRACE: u32 = 19;

/// The ids and capabilities `/proc/<pid>/status` shows (readable without privilege).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Creds {
    /// Real, effective, saved, filesystem uid.
    pub uids: [u32; 4],
    /// Real, effective, saved, filesystem gid.
    pub gids: [u32; 4],
    /// Permitted capabilities.
    pub cap_prm: u64,
    /// Effective capabilities.
    pub cap_eff: u64,
}

/// Parse the `Uid:`, `Gid:`, `CapPrm:` and `CapEff:` lines of a status file.
pub fn parse_creds(status: &str) -> Option<Creds> {
    let mut c = Creds::default();
    let ids = |v: &str| -> Option<[u32; 4]> {
        let n: Vec<u32> = v
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        n.get(..4)?.try_into().ok()
    };
    let (mut have_uid, mut have_gid) = (false, false);
    for line in status.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k {
            "Uid" => {
                c.uids = ids(v)?;
                have_uid = true;
            }
            "Gid" => {
                c.gids = ids(v)?;
                have_gid = true;
            }
            "CapPrm" => c.cap_prm = u64::from_str_radix(v.trim(), 16).ok()?,
            "CapEff" => c.cap_eff = u64::from_str_radix(v.trim(), 16).ok()?,
            _ => {}
        }
    }
    (have_uid && have_gid).then_some(c)
}

fn creds_of(pid: &str) -> Option<Creds> {
    parse_creds(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Why we may not read `pid`'s memory maps, as one sentence (without a trailing period).
/// `target` is its stat line when known.
pub fn why_denied(pid: i32, target: Option<&ProcStat>) -> String {
    let who = match target {
        Some(t) => format!("process {pid} ({})", t.comm),
        None => format!("process {pid}"),
    };
    let (Some(me), Some(it)) = (creds_of("self"), creds_of(&pid.to_string())) else {
        return format!(
            "cannot read the memory maps of {who}: permission denied by the kernel's ptrace access check"
        );
    };
    let ptrace_cap = me.cap_eff & (1 << CAP_SYS_PTRACE) != 0;
    let my_uid = me.uids[3]; // fsuid decides for PTRACE_MODE_FSCREDS
    if !ptrace_cap && it.uids[..3].iter().any(|&u| u != my_uid) {
        let owner = it.uids[1];
        return format!(
            "cannot read the memory maps of {who}: it belongs to another user (uid {owner}) and \
             cowscope runs as uid {my_uid} without CAP_SYS_PTRACE (the kernel's ptrace access \
             check lets only the same user or CAP_SYS_PTRACE read them; run as root)"
        );
    }
    if !ptrace_cap && it.gids[..3].iter().any(|&g| g != me.gids[3]) {
        return format!(
            "cannot read the memory maps of {who}: its group ids ({}/{}/{}) differ from \
             cowscope's ({}), which the kernel's ptrace access check refuses without \
             CAP_SYS_PTRACE (a setgid program?)",
            it.gids[0], it.gids[1], it.gids[2], me.gids[3]
        );
    }
    // A non-dumpable process's /proc files belong to root (task_dump_owner).
    let dir_owner = std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if !ptrace_cap && dir_owner == Some(0) && it.uids[1] != 0 {
        return format!(
            "cannot read the memory maps of {who}: it is not dumpable (a setuid program, or one \
             that called prctl(PR_SET_DUMPABLE, 0)), so the kernel's ptrace access check refuses \
             everyone without CAP_SYS_PTRACE"
        );
    }
    if !ptrace_cap && it.cap_prm & !me.cap_prm != 0 {
        return format!(
            "cannot read the memory maps of {who}: it holds capabilities cowscope lacks \
             (CapPrm {:#x} against {:#x}), which the kernel's ptrace access check refuses \
             without CAP_SYS_PTRACE",
            it.cap_prm, me.cap_prm
        );
    }
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&s| s > 0)
        .map(|s| {
            format!(
                "; Yama ptrace_scope is {s}, which on mainline kernels restricts ptrace attach, \
                 not reading /proc, unless this kernel extends it"
            )
        })
        .unwrap_or_default();
    format!(
        "cannot read the memory maps of {who}: the kernel's ptrace access check refused although \
         uids, gids and capabilities allow it, so a security module (SELinux, AppArmor) forbids \
         it{yama}"
    )
}

/// Why `pid` is not there: gone, or hidden by `/proc`'s `hidepid` mount option.
pub fn why_missing(pid: i32) -> String {
    // kill(pid, 0): EPERM means it exists but belongs to someone else.
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Err(nix::errno::Errno::EPERM) => format!(
            "process {pid} exists but /proc hides it from this user (proc mounted with hidepid); \
             run as root"
        ),
        _ => format!("no process with pid {pid}"),
    }
}

/// Turn an error from opening or reading `/proc/<pid>/<file>` into a usage error (exit 2)
/// with one sentence, or `None` when the process exited while it was being read (the caller
/// decides whether that is fatal).
pub fn explain(pid: i32, target: Option<&ProcStat>, e: &io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::PermissionDenied => Error::usage(why_denied(pid, target)),
        io::ErrorKind::NotFound => match target {
            Some(t) if still_alive(t) => Error::usage(format!(
                "process {pid} ({}) has no readable memory maps: {e}",
                t.comm
            )),
            Some(t) => Error::usage(exited(pid, &t.comm)),
            None => Error::usage(why_missing(pid)),
        },
        _ if e.raw_os_error() == Some(libc::ESRCH) || e.kind() == io::ErrorKind::UnexpectedEof => {
            match target {
                Some(t) if !still_alive(t) => Error::usage(exited(pid, &t.comm)),
                _ => Error::usage(format!("reading process {pid}'s memory maps failed: {e}")),
            }
        }
        _ => Error::usage(format!("reading process {pid}'s memory maps failed: {e}")),
    }
}

/// "process N (comm) exited while it was being read".
pub fn exited(pid: i32, comm: &str) -> String {
    format!("process {pid} ({comm}) exited while it was being read")
}

/// Whether the process `t` describes still exists and has memory: same pid and start time
/// (so not a reused pid), not a zombie.
pub fn still_alive(t: &ProcStat) -> bool {
    super::proc::stat(t.pid).is_ok_and(|now| now.starttime == t.starttime && !now.is_zombie())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_ids_and_capabilities() {
        let s = "Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t5\t6\t7\t8\nCapPrm:\t0000000000080000\nCapEff:\t0000000000000000\n";
        let c = parse_creds(s).expect("parses");
        assert_eq!(c.uids, [1000, 1001, 1002, 1003]);
        assert_eq!(c.gids, [5, 6, 7, 8]);
        assert_eq!(c.cap_prm, 1 << CAP_SYS_PTRACE);
        assert_eq!(c.cap_eff, 0);
        assert!(parse_creds("Name:\tx\n").is_none());
    }

    #[test]
    fn a_pid_that_cannot_exist_is_reported_missing() {
        // pid_max is at most 2^22, so this pid never exists.
        assert_eq!(
            why_missing(1 << 30),
            format!("no process with pid {}", 1 << 30)
        );
    }
}
