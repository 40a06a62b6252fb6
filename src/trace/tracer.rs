//! The tracer: one thread that starts or attaches to the program, waits for its ptrace stops,
//! takes baselines and samples, and always leaves every process as it should be: a command
//! runs to its end (it cannot run untraced: see the module docs of `trace`), an attached
//! target is detached and runs on.
//!
//! The loop: SIGCHLD, SIGINT, SIGTERM, SIGHUP and SIGQUIT are blocked in this thread, so none
//! interrupts a ptrace request half-way; `sigtimedwait` sleeps until one is pending or the
//! next `--interval` sample is due, then `waitpid(-1, WNOHANG | __WALL)` drains every stop.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::classify::Counts;
use super::ptrace::{self, Wait, event};
use super::relation::{self, Baseline, SampleInput};
use super::syscalls::{self, Traced};
use super::{
    Attribution, BaselineInfo, FinalSample, ForkRecord, Live, PairEnd, ProcessRecord, ProgramExit,
    ReleaseTracking, Sample, Target, TraceBody, TraceOptions, VmaRow,
};
use crate::error::{EXIT_UNPROVEN, Error, Result};
use crate::fork::child::{self, ChildOp};
use crate::fork::subject::{SubjectPipes, spawn};
use crate::mem::kpage::Kpage;
use crate::mem::pagemap::Pagemap;
use crate::mem::system::SystemInfo;

#[path = "tracer_events.rs"]
mod events;
#[path = "tracer_history.rs"]
mod history;
#[path = "tracer_stops.rs"]
mod stops;

const SYSCALL_STOP: i32 = libc::SIGTRAP | 0x80;
/// How long detaching (or killing, on error) may wait for tracees to stop or die.
const CLEANUP_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Command,
    Attach,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracking {
    Seccomp,
    Syscalls,
    /// `--pid`: the syscall tracepoints, read from perf rings (tracer_events.rs).
    Tracepoints,
    None,
}

/// A releasing syscall waiting for its exit stop.
#[derive(Debug, Clone, Copy)]
struct Pending {
    t: Traced,
    args: [u64; 6],
    old_brk: Option<u64>,
    /// The process whose address space the call changes.
    mm: i32,
}

#[derive(Debug, Default)]
struct Task {
    tgid: i32,
    /// In a ptrace stop we have not resumed yet; the signal to deliver when we do.
    held: Option<i32>,
    /// A new process that must not run before its fork-time baseline is read.
    awaiting_baseline: bool,
    pending: Option<Pending>,
    /// Interrupted for detaching.
    interrupted: bool,
    /// When a stop of a new process was first held waiting for its parent's fork event.
    held_since: Option<Instant>,
}

#[derive(Debug)]
struct Proc {
    rec: usize,
    threads: BTreeSet<i32>,
    family: u64,
    /// The process whose address space this one uses (a vfork child: its parent's).
    mm: i32,
    alive: bool,
}

#[derive(Debug)]
struct Pair {
    fork: usize,
    parent: i32,
    child: i32,
    base: Option<Baseline>,
    pm_parent: Option<Pagemap>,
    pm_child: Option<Pagemap>,
    live: bool,
    /// The fork stop's CLOCK_MONOTONIC time (the perf events' clock).
    at_ns: u64,
    last: Option<(f64, String, Counts, Vec<Counts>)>,
    /// Without PFNs, at the last sample: baseline pages no longer under their fork-time VMA.
    remapped: u64,
    /// A side's exit stop was sampled: its memory is being torn down from here on, so no
    /// later `--interval` sample may replace that one as the pair's last.
    exit_sampled: bool,
    /// The end of the latest window of lost release records of (parent, child) since the
    /// fork (CLOCK_MONOTONIC ns: the drain that found the LOST record).
    lost_until: (Option<u64>, Option<u64>),
    /// When the last sample began (after its releases were applied; the fork stop before
    /// the first).
    last_sample_ns: u64,
    /// With the fault stream: the tracked releases, for the timeline of copies.
    releases: Vec<super::timeline::Release>,
    /// Each side's exit stop (parent, child), CLOCK_MONOTONIC ns.
    exit_ns: (Option<u64>, Option<u64>),
}

struct SigmaskGuard(libc::sigset_t);

impl Drop for SigmaskGuard {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved at construction; reads a valid sigset.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

fn waited_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set; sigaddset adds valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGCHLD,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
        ] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Block the signals the loop waits for; the guard restores the old mask.
fn block_signals() -> SigmaskGuard {
    let set = waited_signals();
    // SAFETY: zeroed sigset is a valid out-parameter; pthread_sigmask reads `set` and writes
    // the previous mask into `old`.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    SigmaskGuard(old)
}

fn signal_name(n: i32) -> String {
    nix::sys::signal::Signal::try_from(n)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("SIG{n}"))
}

fn tgid_of(tid: i32) -> Option<i32> {
    crate::mem::process::status(tid)
        .ok()
        .map(|s| s.tgid)
        .filter(|&t| t > 0)
}

fn exe_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn thread_ids(tgid: i32) -> Vec<i32> {
    crate::mem::process::threads(tgid).unwrap_or_default()
}

/// The end of the `[heap]` VMA: the page-aligned program break (None without a heap).
fn heap_end(pid: i32) -> Option<u64> {
    crate::mem::smaps::vma_bounds(pid)
        .ok()?
        .into_iter()
        .find(|v| v.pathname == "[heap]")
        .map(|v| v.end)
}

/// At an exit stop of `tid`: is the whole process going (the last thread, or a group exit,
/// in which every other live thread has SIGKILL pending)? A lone `pthread_exit` is not.
fn process_is_ending(tgid: i32, tid: i32) -> bool {
    thread_ids(tgid).into_iter().filter(|&t| t != tid).all(|t| {
        crate::mem::process::task_status(tgid, t)
            .map_or(true, |s| s.is_zombie() || s.has_pending(libc::SIGKILL))
    })
}

fn is_32bit_elf(pid: i32) -> bool {
    use std::io::Read;
    let mut h = [0u8; 5];
    std::fs::File::open(format!("/proc/{pid}/exe"))
        .and_then(|mut f| f.read_exact(&mut h))
        .is_ok()
        && &h[..4] == b"\x7fELF"
        && h[4] == 1
}

/// Resolve a command name as `execvp` would.
fn resolve(cmd: &OsString) -> Result<PathBuf> {
    let p = PathBuf::from(cmd);
    if cmd.as_bytes().contains(&b'/') {
        if !p.exists() {
            return Err(Error::usage(format!(
                "cannot execute '{}': no such file",
                p.display()
            )));
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let cand = dir.join(&p);
        if let Ok(c) = CString::new(cand.as_os_str().as_bytes()) {
            // SAFETY: access reads the NUL-terminated path only.
            if cand.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
                return Ok(cand);
            }
        }
    }
    Err(Error::usage(format!(
        "command not found: '{}' is not an executable on PATH",
        p.display()
    )))
}

fn cstring(s: &std::ffi::OsStr, what: &str) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        Error::usage(format!(
            "{what} contains a NUL byte: {}",
            s.to_string_lossy()
        ))
    })
}

/// Start `argv` stopped, seize it, let it run: returns its pid and the read end of its
/// close-on-exec report pipe.
fn start_command(
    argv: &[OsString],
    seccomp: bool,
    orig_mask: &libc::sigset_t,
) -> Result<(i32, OwnedFd)> {
    let Some(first) = argv.first() else {
        return Err(Error::usage("trace needs a command after --, or --pid"));
    };
    let path = resolve(first)?;
    let cpath = cstring(path.as_os_str(), "the command's path")?;
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| cstring(a, "an argument"))
        .collect::<Result<_>>()?;
    let cenv: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| Error::usage("the environment contains a NUL byte"))
        })
        .collect::<Result<_>>()?;
    let mut argp: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = cenv.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let prog = syscalls::filter();
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).map_err(|_| Error::usage("seccomp filter too long"))?,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    let pipes = SubjectPipes::new()?;
    let [a, b] = pipes.parent_fds();
    let fd = pipes.child_report_fd();
    let mut ops = vec![
        ChildOp::Close(a),
        ChildOp::Close(b),
        ChildOp::DieWithParent,
        ChildOp::SetSigmask(orig_mask),
        ChildOp::DefaultSignal(libc::SIGPIPE),
        ChildOp::StopSelf,
    ];
    if seccomp {
        ops.push(ChildOp::InstallSeccomp { prog: &fprog, fd });
    }
    ops.push(ChildOp::Exec {
        path: &cpath,
        argv: &argp,
        envp: &envp,
        fd,
    });
    let (subject, _) = spawn(pipes, &ops)?;
    let (pid, report) = subject.hand_over()?;
    let pid = pid.as_raw();
    let kill_it = || {
        // SAFETY: kill takes plain integers; `pid` is our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = ptrace::wait(pid, 0);
    };
    match ptrace::wait(pid, libc::WUNTRACED) {
        Ok(Some((_, Wait::Stopped { sig, .. }))) if sig == libc::SIGSTOP => {}
        other => {
            kill_it();
            return Err(Error::io(
                "starting the command",
                std::io::Error::other(format!("it did not stop as expected ({other:?})")),
            ));
        }
    }
    if let Err(e) = ptrace::seize(pid, ptrace::options(seccomp, true)) {
        kill_it();
        return Err(ptrace_refused(pid, e));
    }
    // SAFETY: plain integers; ends the stop the child put itself in.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    Ok((pid, report))
}

/// Why PTRACE_SEIZE was refused: a tracer already attached, Yama, and the credential
/// reasons `mem::process` gives for every ptrace access check.
fn ptrace_refused(pid: i32, e: std::io::Error) -> Error {
    use crate::mem::process::{self, Access, CAP_SYS_PTRACE};
    if e.raw_os_error() == Some(libc::ESRCH) {
        return Error::usage(format!("no process with pid {pid}"));
    }
    if e.raw_os_error() != Some(libc::EPERM) {
        return Error::io(format!("attaching to pid {pid} with ptrace"), e);
    }
    let mut why = Vec::new();
    if let Some(t) = process::status(pid)
        .ok()
        .map(|s| s.tracer_pid)
        .filter(|&t| t != 0)
    {
        why.push(format!(
            "it is already traced by pid {t} (a debugger or strace?)"
        ));
    }
    let scope = crate::kernel::read_setting("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|y| y.trim().parse::<u8>().ok());
    let cap = process::has_capability(CAP_SYS_PTRACE);
    let ancestor = crate::inspect::proc::ancestors_of(pid).contains(&(std::process::id() as i32));
    let yama = match scope {
        Some(3) => Some("3: no process may attach"),
        Some(2) if !cap => Some("2: only CAP_SYS_PTRACE may attach"),
        Some(1) if !cap && !ancestor => Some("1: only an ancestor (or CAP_SYS_PTRACE) may attach"),
        _ => None,
    };
    if let Some(y) = yama {
        why.push(format!(
            "Yama's ptrace_scope is {y} (as root, `sysctl kernel.yama.ptrace_scope=0` \
             allows attaching; 3 needs a reboot)"
        ));
    }
    if let Some(r) = process::denied_because(pid, Access::Attach) {
        why.push(r);
    }
    if why.is_empty() {
        why.push(
            "the kernel refused PTRACE_SEIZE (EPERM); a Linux security module (SELinux, \
             AppArmor) may forbid it"
                .into(),
        );
    }
    Error::Privilege(format!(
        "not permitted to trace pid {pid}: {}",
        why.join("; ")
    ))
}

/// Check that `pid` names a live user process we could attach to.
fn check_target(pid: i32) -> Result<()> {
    if pid <= 0 {
        return Err(Error::usage(format!(
            "--pid must be a positive pid, got {pid}"
        )));
    }
    if pid == std::process::id() as i32 {
        return Err(Error::usage("cowscope cannot trace itself"));
    }
    crate::mem::process::user_process(pid)?;
    if let Some(tgid) = tgid_of(pid).filter(|&t| t != pid) {
        return Err(Error::usage(format!(
            "pid {pid} is a thread of process {tgid}; give the process's pid"
        )));
    }
    Ok(())
}

struct Tracer<'a> {
    opts: &'a TraceOptions,
    /// Told about progress and each sample (`trace::run_with`).
    watch: &'a mut dyn FnMut(Live<'_>),
    /// Samples taken so far, and when the watcher last heard the counts.
    samples_taken: usize,
    last_status: Option<Instant>,
    mode: Mode,
    tracking: Tracking,
    start: Instant,
    root: i32,
    tasks: HashMap<i32, Task>,
    procs: HashMap<i32, Proc>,
    pairs: Vec<Pair>,
    vforks: HashMap<i32, usize>,
    families: HashMap<u64, bool>,
    next_family: u64,
    body: TraceBody,
    root_exit: Option<ProgramExit>,
    report_pipe: Option<OwnedFd>,
    interrupts: u32,
    kpage: Option<Kpage>,
    zero: crate::inspect::zero::ZeroPfns,
    pfn_visible: bool,
    ps: u64,
    our_pgid: i32,
    finished: bool,
    /// What a clear bit 56 proves here (only asked without PFNs).
    bit56: super::mapcount::Bit56,
    /// KSM merges pages (it may merge them with unrelated processes').
    ksm_running: bool,
    /// Processes running a 32-bit program while releases were tracked (their releases were
    /// not).
    untracked_32bit: Vec<i32>,
    /// The fault stream (every run where it opens: the history of copies; with `--stacks`
    /// also their stacks), and each ended pair's copied pages (`--stacks`) and page history.
    faults: Option<super::faults::Recorder>,
    copies: Vec<super::attribute::PairCopies>,
    ended: Vec<history::Ended>,
    /// `--pid`: releases from the syscall tracepoints.
    rel: Option<super::releases_perf::ReleaseEvents>,
}

/// Run the trace described by `opts`.
pub fn run(
    opts: &TraceOptions,
    sys: &SystemInfo,
    watch: &mut dyn FnMut(Live<'_>),
) -> Result<TraceBody> {
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    return Err(Error::Privilege(
        "trace supports x86_64 and aarch64 only".into(),
    ));
    let guard = block_signals();
    let (mode, tracking) = match (&opts.target, opts.syscalls) {
        (Target::Command(_), false) => (Mode::Command, Tracking::Seccomp),
        (Target::Command(_), true) => (Mode::Command, Tracking::Syscalls),
        (Target::Pid(_), true) => (Mode::Attach, Tracking::Syscalls),
        (Target::Pid(_), false) => (Mode::Attach, Tracking::Tracepoints),
    };
    let (tracking, rel, rel_refused) = events::start(tracking);
    let privilege = crate::mem::privilege::detect();
    let mut t = Tracer {
        opts,
        watch,
        samples_taken: 0,
        last_status: None,
        mode,
        tracking,
        start: Instant::now(),
        root: 0,
        tasks: HashMap::new(),
        procs: HashMap::new(),
        pairs: Vec::new(),
        vforks: HashMap::new(),
        families: HashMap::new(),
        next_family: 1,
        body: initial_body(opts, mode, tracking, sys, rel_refused),
        root_exit: None,
        report_pipe: None,
        interrupts: 0,
        kpage: if privilege.kpage_readable {
            Kpage::open().ok()
        } else {
            None
        },
        zero: crate::inspect::zero::learn(),
        pfn_visible: sys.pfn_visible,
        ps: sys.page_size,
        // SAFETY: getpgrp has no preconditions.
        our_pgid: unsafe { libc::getpgrp() },
        finished: false,
        // Without PFNs only (the probe forks a child of cowscope: before any tracee exists).
        bit56: if sys.pfn_visible {
            super::mapcount::Bit56::Exact
        } else {
            super::mapcount::semantics()
        },
        ksm_running: crate::kernel::read_setting("/sys/kernel/mm/ksm/run")
            .is_ok_and(|r| r.trim() == "1"),
        untracked_32bit: Vec::new(),
        faults: None,
        copies: Vec::new(),
        ended: Vec::new(),
        rel,
    };
    t.start_fault_stream(opts.stacks, opts.fault_history);
    t.start_target(&guard)?;
    t.body.pid = t.root;
    let result = t.event_loop();
    if result.is_err() {
        t.cleanup();
    }
    result?;
    t.finish()?;
    drop(guard);
    Ok(std::mem::replace(&mut t.body, empty_body()))
}

impl Tracer<'_> {
    /// Start the command (seized at its first instruction) or attach to the running process.
    fn start_target(&mut self, guard: &SigmaskGuard) -> Result<()> {
        match &self.opts.target {
            Target::Command(argv) => {
                // Orphans of the traced tree are reparented to us and reaped here: nothing is
                // left behind as a zombie of an init that does not reap.
                // SAFETY: prctl with plain integers.
                unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
                let (pid, pipe) = start_command(
                    argv,
                    self.tracking == Tracking::Seccomp,
                    // The command gets the mask cowscope was started with, not cmd's hold.
                    &crate::kernel::without_held(guard.0),
                )?;
                self.report_pipe = Some(pipe);
                self.root = pid;
                self.add_process(pid, None, true, pid);
                self.tasks.insert(
                    pid,
                    Task {
                        tgid: pid,
                        ..Task::default()
                    },
                );
            }
            Target::Pid(pid) => {
                check_target(*pid)?;
                self.root = *pid;
                self.attach(*pid)?;
            }
        }
        Ok(())
    }
}

/// The report before anything was traced.
fn initial_body(
    opts: &TraceOptions,
    mode: Mode,
    tracking: Tracking,
    sys: &SystemInfo,
    rel_refused: Option<String>,
) -> TraceBody {
    TraceBody {
        mode: match mode {
            Mode::Command => "command".into(),
            Mode::Attach => "attach".into(),
        },
        command: match &opts.target {
            Target::Command(c) => Some(c.iter().map(|a| a.to_string_lossy().into()).collect()),
            Target::Pid(_) => None,
        },
        pid: 0,
        release_tracking: ReleaseTracking {
            method: match tracking {
                Tracking::Seccomp => "seccomp",
                Tracking::Syscalls => "syscalls",
                Tracking::Tracepoints => "tracepoints",
                Tracking::None => "none",
            }
            .into(),
            no_new_privs: false,
            stops: 0,
            releases: 0,
            events: None,
        },
        attribution: Attribution {
            pfn_visible: sys.pfn_visible,
            releases_tracked: tracking != Tracking::None,
            proven: Vec::new(),
            unproven: Vec::new(),
        },
        interval_ms: opts.interval.map(|d| d.as_millis() as u64),
        duration_s: 0.0,
        ended_by: "exit".into(),
        exit: ProgramExit::default(),
        processes: Vec::new(),
        forks: Vec::new(),
        notes: rel_refused.into_iter().collect(),
        stacks: None,
        fault_history: None,
    }
}

/// How the traced program ended, as cowscope reports it and exits: its own status when its
/// end was seen; 0 when cowscope detached and it runs on; else 3 (could not prove), never a
/// made-up 0.
fn program_exit(seen: Option<ProgramExit>, detached: bool) -> ProgramExit {
    match seen {
        Some(e) => e,
        None if detached => ProgramExit::default(),
        None => ProgramExit {
            code: None,
            signal: None,
            status: EXIT_UNPROVEN,
        },
    }
}

fn empty_body() -> TraceBody {
    TraceBody {
        mode: String::new(),
        command: None,
        pid: 0,
        release_tracking: ReleaseTracking {
            method: String::new(),
            no_new_privs: false,
            stops: 0,
            releases: 0,
            events: None,
        },
        attribution: Attribution {
            pfn_visible: false,
            releases_tracked: false,
            proven: Vec::new(),
            unproven: Vec::new(),
        },
        interval_ms: None,
        duration_s: 0.0,
        ended_by: String::new(),
        exit: ProgramExit::default(),
        processes: Vec::new(),
        forks: Vec::new(),
        notes: Vec::new(),
        stacks: None,
        fault_history: None,
    }
}

impl Drop for Tracer<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.cleanup();
        }
    }
}

impl Tracer<'_> {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn add_process(&mut self, pid: i32, ppid: Option<i32>, complete_family: bool, mm: i32) {
        let family = match ppid.and_then(|p| self.procs.get(&p)) {
            Some(p) => p.family,
            None => self.new_family(complete_family),
        };
        let rec = self.body.processes.len();
        self.body.processes.push(ProcessRecord {
            pid,
            ppid,
            exe: exe_of(pid),
            comm: String::new(),
            cmdline: None,
            first_seen: self.now(),
            execs: 0,
            exited_at: None,
            exit_code: None,
            signal: None,
        });
        self.procs.insert(
            pid,
            Proc {
                rec,
                threads: BTreeSet::from([pid]),
                family,
                mm,
                alive: true,
            },
        );
        self.refresh_name(pid);
    }

    /// Read a process's `comm` and command line again (a title set since shows).
    fn refresh_name(&mut self, pid: i32) {
        let Some(rec) = self.procs.get(&pid).map(|p| p.rec) else {
            return;
        };
        let r = &mut self.body.processes[rec];
        if let Ok(st) = crate::mem::process::stat(pid) {
            r.comm = st.comm;
        }
        if let Ok(c) = crate::mem::process::cmdline(pid)
            && !c.is_empty()
        {
            r.cmdline = Some(c);
        }
    }

    fn new_family(&mut self, complete: bool) -> u64 {
        let f = self.next_family;
        self.next_family += 1;
        self.families.insert(f, complete);
        f
    }

    /// Seize every thread of `pid` (threads may appear while we do: repeat until a pass
    /// finds none new).
    fn attach(&mut self, pid: i32) -> Result<()> {
        let opts = ptrace::options(false, false);
        ptrace::seize(pid, opts).map_err(|e| ptrace_refused(pid, e))?;
        self.add_process(pid, None, false, pid);
        self.tasks.insert(
            pid,
            Task {
                tgid: pid,
                ..Task::default()
            },
        );
        loop {
            let mut new = 0;
            for tid in thread_ids(pid) {
                if self.tasks.contains_key(&tid) {
                    continue;
                }
                match ptrace::seize(tid, opts) {
                    Ok(()) => {
                        new += 1;
                        self.tasks.insert(
                            tid,
                            Task {
                                tgid: pid,
                                ..Task::default()
                            },
                        );
                        if let Some(p) = self.procs.get_mut(&pid) {
                            p.threads.insert(tid);
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(ptrace_refused(tid, e)),
                }
            }
            if new == 0 {
                break;
            }
        }
        self.open_release_events(pid);
        if self.tracking == Tracking::Syscalls {
            // Each thread must stop once to be switched to PTRACE_SYSCALL resumes.
            for tid in self.tasks.keys().copied().collect::<Vec<_>>() {
                let _ = ptrace::interrupt(tid);
            }
        }
        let pre = crate::mem::process::children(pid, pid).unwrap_or_default();
        if !pre.is_empty() {
            let list: Vec<String> = pre.iter().map(i32::to_string).collect();
            self.body.notes.push(format!(
                "pid {pid} already had {} child process(es) when cowscope attached ({}); \
                 forks made before attaching have no fork-time baseline and are not traced \
                 (compare such pairs with `cowscope inspect`)",
                pre.len(),
                list.join(" ")
            ));
        }
        Ok(())
    }

    fn event_loop(&mut self) -> Result<()> {
        let set = waited_signals();
        let interval = self.opts.interval;
        let mut next_sample = interval.map(|d| Instant::now() + d);
        loop {
            loop {
                match ptrace::wait(-1, libc::WNOHANG) {
                    Ok(Some((tid, w))) => self.handle(tid, w),
                    Ok(None) => break,
                    Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                        self.tasks.clear();
                        break;
                    }
                    Err(e) => return Err(Error::io("waiting for the traced processes", e)),
                }
            }
            if self.tasks.is_empty() {
                return Ok(());
            }
            self.tell_status();
            self.release_orphaned_holds();
            self.sync_releases();
            if let (Some(d), Some(t)) = (interval, next_sample)
                && Instant::now() >= t
            {
                self.sample_all("interval");
                next_sample = Some(Instant::now() + d);
            }
            let wait_for = next_sample
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(1))
                .min(self.longest_wait());
            let ts = libc::timespec {
                tv_sec: wait_for.as_secs() as libc::time_t,
                tv_nsec: wait_for.subsec_nanos() as libc::c_long,
            };
            // SAFETY: zeroed siginfo is a valid out-parameter.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: sigtimedwait reads `set` and `ts` and writes `info`.
            let sig = unsafe { libc::sigtimedwait(&set, &mut info, &ts) };
            if sig > 0 && sig != libc::SIGCHLD && self.on_signal(sig, info.si_code) {
                return Ok(());
            }
        }
    }

    /// A signal for cowscope itself. Returns true when tracing is over (detached).
    fn on_signal(&mut self, sig: i32, code: i32) -> bool {
        self.interrupts += 1;
        match self.mode {
            Mode::Attach => {
                self.body.ended_by = "detached".into();
                self.sample_live_pairs("end");
                self.detach_all();
                true
            }
            Mode::Command if self.interrupts == 1 => {
                self.body.ended_by = "interrupt".into();
                let from_tty = code == libc::SI_KERNEL;
                for (&pid, p) in &self.procs {
                    if !p.alive {
                        continue;
                    }
                    // SAFETY: getpgid takes a plain pid.
                    let pgid = unsafe { libc::getpgid(pid) };
                    if from_tty && pgid == self.our_pgid {
                        continue; // the terminal's signal reached it already
                    }
                    // SAFETY: plain integers; a traced process of ours.
                    unsafe { libc::kill(pid, sig) };
                }
                eprintln!(
                    "cowscope: passed {} to the traced program and waits for it to exit \
                     (send it again to kill the program)",
                    signal_name(sig)
                );
                false
            }
            Mode::Command => {
                self.body.ended_by = "killed".into();
                self.kill_all();
                false
            }
        }
    }

    fn kill_all(&mut self) {
        for (&pid, p) in &self.procs {
            if p.alive {
                // SAFETY: plain integers; a traced process of ours.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    fn resume(&mut self, tid: i32, sig: i32) {
        let syscalls = self.tracking == Tracking::Syscalls;
        let Some(task) = self.tasks.get_mut(&tid) else {
            return;
        };
        if task.awaiting_baseline {
            task.held = Some(sig);
            task.held_since.get_or_insert_with(Instant::now);
            return;
        }
        task.held = None;
        // ESRCH: the task died meanwhile; its death is reported by waitpid.
        let _ = if syscalls {
            ptrace::syscall(tid, sig)
        } else {
            ptrace::cont(tid, sig)
        };
    }

    fn handle(&mut self, tid: i32, w: Wait) {
        match w {
            Wait::Exited(code) => self.on_death(tid, Some(code), None),
            Wait::Signaled(sig) => self.on_death(tid, None, Some(sig)),
            Wait::Continued => {}
            Wait::Stopped { sig, event } => {
                if !self.tasks.contains_key(&tid) && !self.adopt_unknown(tid) {
                    return;
                }
                match event {
                    event::FORK | event::VFORK | event::CLONE => self.on_fork(tid, event),
                    event::EXEC => self.on_exec(tid),
                    event::EXIT => self.on_exit_stop(tid),
                    event::SECCOMP => self.on_seccomp(tid),
                    event::STOP => {
                        if matches!(
                            sig,
                            libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                        ) {
                            // Group-stop: stay stopped, but report the SIGCONT that ends it.
                            let _ = ptrace::listen(tid);
                        } else {
                            self.resume(tid, 0);
                        }
                    }
                    0 if sig == SYSCALL_STOP => self.on_syscall_stop(tid),
                    0 => self.resume(tid, sig),
                    _ => self.resume(tid, 0),
                }
            }
        }
    }

    /// A stop of a task we have not seen: a new thread or process whose creator's event is
    /// still queued. A new process is held until its baseline is read.
    fn adopt_unknown(&mut self, tid: i32) -> bool {
        let Some(tgid) = tgid_of(tid) else {
            return false;
        };
        let new_process = tgid == tid;
        self.tasks.insert(
            tid,
            Task {
                tgid,
                awaiting_baseline: new_process && !self.procs.contains_key(&tid),
                ..Task::default()
            },
        );
        if let Some(p) = self.procs.get_mut(&tgid) {
            p.threads.insert(tid);
        }
        true
    }

    /// Without PFNs: can "mapped twice" mean "mapped by both"? Only when the pair is all that
    /// lives of its address space's family, and the family began under our eyes.
    fn pair_is_whole_family(&self, i: usize) -> bool {
        let pr = &self.pairs[i];
        let Some(fam) = self.procs.get(&pr.parent).map(|p| p.family) else {
            return false;
        };
        if !self.families.get(&fam).copied().unwrap_or(false) {
            return false;
        }
        let live = self
            .procs
            .iter()
            .filter(|&(&pid, p)| p.alive && p.family == fam && p.mm == pid)
            .count();
        live == 2
    }

    fn sample_pair(&mut self, i: usize, trigger: &str) {
        // Every release made before this sample, applied before it reads.
        self.sync_releases();
        let whole = self.pair_is_whole_family(i);
        let at = self.now();
        let now_ns = crate::perf::monotonic_ns();
        let pair = &mut self.pairs[i];
        // Only copies not seen shared since a lost window ended may hide a lost release.
        let releases_lost = (
            super::classify::lost_window_matters(pair.lost_until.0, pair.last_sample_ns),
            super::classify::lost_window_matters(pair.lost_until.1, pair.last_sample_ns),
        );
        pair.last_sample_ns = now_ns;
        let (Some(base), Some(pm_p), Some(pm_c)) = (
            pair.base.as_mut(),
            pair.pm_parent.as_ref(),
            pair.pm_child.as_ref(),
        ) else {
            return;
        };
        let inp = SampleInput {
            parent: pm_p,
            child: pm_c,
            pfn_visible: self.pfn_visible,
            kpage: self.kpage.as_ref(),
            zero: &self.zero,
            family_rule: whole && self.bit56.clear_means_mapped_twice() && !self.ksm_running,
            releases_lost,
        };
        match base.sample(&inp) {
            Ok(out) => {
                self.body.forks[pair.fork].samples.push(Sample {
                    at,
                    trigger: trigger.to_string(),
                    counts: out.total,
                });
                pair.remapped = out.remapped;
                pair.last = Some((at, trigger.to_string(), out.total, out.per_vma));
                let fork = pair.fork;
                self.tell_sample(fork);
            }
            Err(e) => {
                let fork = pair.fork;
                self.body.forks[fork]
                    .notes
                    .push(format!("a {trigger} sample failed: {e}"));
            }
        }
    }

    /// Tell the watcher about the sample just pushed to fork `fork`.
    fn tell_sample(&mut self, fork: usize) {
        self.samples_taken += 1;
        let f = &self.body.forks[fork];
        if let Some(sample) = f.samples.last() {
            (self.watch)(Live::Sample { fork: f, sample });
        }
    }

    /// Tell the watcher the counts so far, at most ten times a second.
    fn tell_status(&mut self) {
        if self
            .last_status
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last_status = Some(Instant::now());
        let status = Live::Status {
            processes: self.body.processes.len(),
            forks: self.body.forks.len(),
            samples: self.samples_taken,
            live_pairs: self.pairs.iter().filter(|p| p.live).count(),
        };
        (self.watch)(status);
    }

    fn sample_all(&mut self, trigger: &str) {
        for i in 0..self.pairs.len() {
            if self.pairs[i].live && !self.pairs[i].exit_sampled {
                self.sample_pair(i, trigger);
            }
        }
    }

    fn sample_live_pairs(&mut self, trigger: &str) {
        self.sample_all(trigger);
        for i in 0..self.pairs.len() {
            if self.pairs[i].live {
                self.end_pair(i, "detached");
            }
        }
    }

    fn end_pair(&mut self, i: usize, by: &str) {
        if !self.pairs[i].live {
            return;
        }
        // The releases it made up to its end, for the timeline.
        self.sync_releases();
        self.keep_history(i);
        let at = self.now();
        let pair = &mut self.pairs[i];
        pair.live = false;
        let rec = &mut self.body.forks[pair.fork];
        rec.ended = Some(PairEnd {
            at,
            by: by.to_string(),
        });
        rec.peak = super::history::peaks(&rec.samples);
        match (pair.last.take(), pair.base.as_ref()) {
            (Some((sat, trig, counts, per_vma)), Some(base)) => {
                let vmas = base
                    .vmas()
                    .iter()
                    .zip(per_vma)
                    .filter(|(_, c)| c.total > 0)
                    .map(|(v, c)| VmaRow {
                        vma: v.clone(),
                        counts: c,
                    })
                    .collect();
                rec.final_sample = Some(FinalSample {
                    at: sat,
                    trigger: trig,
                    counts,
                    vmas,
                });
                if base.thp_from_zero() > 0 {
                    rec.notes.push(format!(
                        "{} page(s) were the huge zero page until a write gave the writer a \
                         whole new THP (Linux 6.13+: a write into the huge zero page allocates \
                         2 MiB instead of splitting it): counted as copied by that side, which \
                         did get that memory, not as moved",
                        base.thp_from_zero()
                    ));
                }
                if pair.remapped > 0 {
                    rec.notes.push(format!(
                        "{} baseline page(s) lie where a side no longer maps the fork-time VMA \
                         (unmapped, or another mapping there since): without PFNs none of them \
                         is called shared",
                        pair.remapped
                    ));
                }
            }
            (None, Some(_)) => rec.notes.push(format!(
                "no sample before the pair ended ({by}): a process killed by SIGKILL makes \
                 no exit stop{}",
                match self.tracking {
                    Tracking::None | Tracking::Tracepoints =>
                        ", and without syscall tracking an exec is seen only \
                                       after the old memory is gone (use --syscalls or \
                                       --interval)",
                    _ => "",
                }
            )),
            _ => {}
        }
        if self.faults.is_some()
            && self.opts.stacks.is_some()
            && let Some(base) = pair.base.as_ref()
        {
            self.copies.push(super::attribute::PairCopies {
                fork: pair.fork,
                parent: pair.parent,
                child: pair.child,
                at_ns: pair.at_ns,
                pages: base.copied_pages(),
            });
        }
        pair.base = None;
        pair.pm_parent = None;
        pair.pm_child = None;
    }

    /// Detach from every tracee (attach mode): stop each, then PTRACE_DETACH with the signal
    /// it was about to receive, so nothing is lost and nothing stays stopped by us.
    fn detach_all(&mut self) {
        let tids: Vec<i32> = self.tasks.keys().copied().collect();
        for tid in tids {
            let held = self.tasks.get_mut(&tid).and_then(|t| {
                t.awaiting_baseline = false;
                t.held.take()
            });
            match held {
                Some(sig) => {
                    let _ = ptrace::detach(tid, sig);
                    self.tasks.remove(&tid);
                }
                None => {
                    if ptrace::interrupt(tid).is_err() {
                        self.tasks.remove(&tid);
                    } else if let Some(t) = self.tasks.get_mut(&tid) {
                        t.interrupted = true;
                    }
                }
            }
        }
        let deadline = Instant::now() + CLEANUP_WAIT;
        while !self.tasks.is_empty() && Instant::now() < deadline {
            match ptrace::wait(-1, libc::WNOHANG) {
                Ok(Some((tid, Wait::Stopped { sig, event }))) => {
                    if matches!(event, event::FORK | event::VFORK | event::CLONE)
                        && let Ok(new) = ptrace::event_msg(tid)
                    {
                        // Auto-attached just now: it reports its first stop, then goes.
                        self.tasks.entry(new as i32).or_default();
                    }
                    let deliver = if event == 0 && sig != SYSCALL_STOP {
                        sig
                    } else {
                        0
                    };
                    let _ = ptrace::detach(tid, deliver);
                    self.tasks.remove(&tid);
                }
                Ok(Some((tid, w @ (Wait::Exited(_) | Wait::Signaled(_))))) => {
                    if tid == self.root
                        && let Wait::Exited(c) | Wait::Signaled(c) = w
                    {
                        let (code, sig) = match w {
                            Wait::Exited(_) => (Some(c), None),
                            _ => (None, Some(c)),
                        };
                        self.root_exit = Some(ProgramExit {
                            code,
                            signal: sig.map(signal_name),
                            status: code.unwrap_or_else(|| 128 + sig.unwrap_or(0)),
                        });
                    }
                    self.tasks.remove(&tid);
                }
                Ok(Some(_)) => {}
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => break,
            }
        }
        if !self.tasks.is_empty() {
            self.body.notes.push(format!(
                "{} thread(s) did not stop within {} s to be detached; the kernel detaches \
                 them when cowscope exits",
                self.tasks.len(),
                CLEANUP_WAIT.as_secs()
            ));
            self.tasks.clear();
        }
    }

    /// On an error or a panic: a command is killed (it cannot run on untraced), an attached
    /// target is detached.
    fn cleanup(&mut self) {
        self.finished = true;
        match self.mode {
            Mode::Attach => self.detach_all(),
            Mode::Command => {
                self.kill_all();
                let deadline = Instant::now() + CLEANUP_WAIT;
                while !self.tasks.is_empty() && Instant::now() < deadline {
                    match ptrace::wait(-1, libc::WNOHANG) {
                        Ok(Some((tid, Wait::Exited(_) | Wait::Signaled(_)))) => {
                            self.tasks.remove(&tid);
                        }
                        Ok(Some((tid, Wait::Stopped { .. }))) => {
                            let _ = ptrace::cont(tid, 0);
                        }
                        Ok(_) => std::thread::sleep(Duration::from_millis(1)),
                        Err(_) => break,
                    }
                }
            }
        }
    }

    /// Close the report: end what is still open, fill the exit status and the attribution.
    ///
    /// # Errors
    /// When the command never ran: its exec failed (usage), or its seccomp filter could not
    /// be installed (privilege).
    fn finish(&mut self) -> Result<()> {
        self.finished = true;
        for i in 0..self.pairs.len() {
            if self.pairs[i].live {
                self.end_pair(i, "trace_end");
            }
        }
        let detached = self.body.ended_by == "detached";
        if self.root_exit.is_none() && !detached {
            self.body.notes.push(format!(
                "the traced program's exit status was not seen: cowscope exits {EXIT_UNPROVEN} \
                 (could not prove), not 0"
            ));
        }
        let root_exited = self
            .body
            .processes
            .first()
            .and_then(|p| p.exited_at)
            .unwrap_or(f64::INFINITY);
        let outlived: Vec<String> = self
            .body
            .processes
            .iter()
            .skip(1)
            .filter(|p| p.exited_at.is_some_and(|t| t > root_exited + 0.1))
            .map(|p| p.pid.to_string())
            .collect();
        if !outlived.is_empty() && !detached {
            self.body.notes.push(format!(
                "the program exited at {root_exited:.3} s and left {} process(es) running \
                 (a daemon?): {}; cowscope traced them until they exited (a traced process \
                 cannot run on untraced)",
                outlived.len(),
                outlived.join(", ")
            ));
        }
        if self.mode == Mode::Command && self.body.processes.first().is_some_and(|p| p.execs == 0) {
            let cmd = self
                .body
                .command
                .as_ref()
                .and_then(|c| c.first().cloned())
                .unwrap_or_default();
            for (tag, v) in self.read_report_pipe() {
                let err = std::io::Error::from_raw_os_error(v as i32);
                if tag == child::TAG_EXEC_ERRNO {
                    return Err(Error::usage(format!("cannot execute '{cmd}': {err}")));
                }
                if tag == child::TAG_SECCOMP_ERRNO {
                    return Err(Error::Privilege(format!(
                        "the seccomp filter that tracks releases could not be installed \
                         ({err}); --syscalls tracks them without it"
                    )));
                }
            }
        }
        self.body.exit = program_exit(self.root_exit.clone(), detached);
        self.body.duration_s = self.now();
        self.fill_attribution();
        self.finish_fault_stream();
        Ok(())
    }

    fn fill_attribution(&mut self) {
        let a = &mut self.body.attribution;
        a.proven.push(
            "pages not mapped at the fork (in RAM or swap) are outside the comparison; \
             `total` counts the pages either side had at the fork in private VMAs"
                .into(),
        );
        if self.pfn_visible {
            a.proven.push(
                "shared: both map the same frame (PFN equality) or the same swap slot; \
                 copied_by_child / copied_by_parent: that side's frame left the fork-time \
                 frame while the other still maps it"
                    .into(),
            );
            a.proven.push(
                "moved: a new frame no write makes (KSM, THP built by khugepaged or \
                 MADV_COLLAPSE, a page-cache page read again), told apart with kpageflags; a \
                 new frame where the zero page was is the writer's copy, even a whole THP \
                 (Linux 6.13+ gives a write into the huge zero page 2 MiB)"
                    .into(),
            );
        } else {
            let family = if self.bit56.clear_means_mapped_twice() && !self.ksm_running {
                "an anonymous page mapped more than once on both sides (bit 56 clear, exact \
                 per-page mapcounts on this kernel) is `shared` only while the pair is all \
                 that lives of its address space's family and both still map the fork-time \
                 VMA there, else `unproven`"
                    .to_string()
            } else {
                format!(
                    "a page mapped more than once on both sides is `unproven`: {}",
                    if self.ksm_running {
                        "KSM runs here and may merge pages with unrelated processes"
                    } else {
                        match self.bit56 {
                            super::mapcount::Bit56::CertainlyExclusive => {
                                "on this kernel (CONFIG_NO_PAGE_MAPCOUNT) a clear bit 56 only \
                                 means \"maybe shared\" for pages of large folios"
                            }
                            _ => {
                                "whether a clear bit 56 means \"mapped more than once\" on \
                                 this kernel (6.15+: CONFIG_NO_PAGE_MAPCOUNT) could not be \
                                 probed (no THP)"
                            }
                        }
                    }
                )
            };
            a.unproven.push(format!(
                "PFNs are hidden (no CAP_SYS_ADMIN): who copied cannot be told. A page with \
                 the exclusive bit on either side (not PMD-mapped) is `diverged` (proven not \
                 shared); {family}; a page-cache page is `shared` where both still map the \
                 same file offset; KSM merges and THP collapses cannot be told from copies"
            ));
        }
        let untracked: Vec<String> = self.untracked_32bit.iter().map(i32::to_string).collect();
        match self.tracking {
            Tracking::Tracepoints if untracked.is_empty() => {
                events::attribution(a, self.rel.as_ref())
            }
            Tracking::Seccomp | Tracking::Syscalls if untracked.is_empty() => a.proven.push(
                "released_by_child / released_by_parent come from the syscalls themselves \
                 (munmap, madvise DONTNEED/FREE/REMOVE/DONTNEED_LOCKED/GUARD_INSTALL, mremap, \
                 brk shrinking, MAP_FIXED mmap, remap_file_pages), recorded when they \
                 succeed; a page released and touched again is a release, not a copy"
                    .into(),
            ),
            Tracking::Seccomp | Tracking::Syscalls | Tracking::Tracepoints => {
                a.releases_tracked = false;
                a.unproven.push(format!(
                    "releases are tracked for 64-bit programs only: pid {} ran a 32-bit \
                     program whose syscalls are not decoded; there a page released and \
                     touched again counts as copied by that side, and one released and left \
                     as only_parent / only_child",
                    untracked.join(", ")
                ));
            }
            Tracking::None => a.unproven.push(
                "releases are not tracked (attached without --syscalls): a page a side \
                 released and touched again has a fresh frame and counts as copied by that \
                 side; one it released and left counts as only_parent / only_child. \
                 --syscalls tracks them at the cost measured in the README"
                    .into(),
            ),
        }
        if self.mode == Mode::Attach {
            a.unproven.push(
                "forks made before cowscope attached have no baseline and are not followed".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_whose_end_was_never_seen_makes_cowscope_exit_3_not_0() {
        assert_eq!(program_exit(None, false).status, EXIT_UNPROVEN);
        assert_eq!(program_exit(None, false).code, None);
        // Detached (--pid): the target runs on, nothing to report but success.
        assert_eq!(program_exit(None, true).status, 0);
        let seen = ProgramExit {
            code: Some(42),
            signal: None,
            status: 42,
        };
        assert_eq!(program_exit(Some(seen), false).status, 42);
    }
}
