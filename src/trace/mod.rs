//! `cowscope trace`: run (or attach to) an unmodified program, follow its forks with ptrace,
//! and say page by page who copied what since each fork.
//!
//! ```text
//!  cmd (-- CMD)   fork::subject::spawn ─ child ops: sigmask, SIGSTOP, seccomp filter, execve
//!  or --pid P     PTRACE_SEIZE every thread
//!        │
//!  tracer.rs      one thread: SIGCHLD/SIGINT/... blocked, sigtimedwait, waitpid(WNOHANG|__WALL)
//!        ├─ PTRACE_EVENT_FORK   relation.rs: parent's maps + pagemap while it is held, resume,
//!        │                      the child's pagemap before it runs = the fork-time baseline
//!        ├─ seccomp stop        syscalls.rs: a release (munmap, madvise DONTNEED...): PTRACE_SYSCALL
//!        │  / syscall stop      to its exit, then mark the released range for that side
//!        ├─ --pid: tracepoints  releases_perf.rs: the same releases from the syscall tracepoints
//!        │                      (perf rings, no stop), applied before every sample
//!        ├─ PTRACE_EVENT_EXIT   a sample while the exiting side's memory is still mapped
//!        ├─ execve (entry)      a sample before the address space is replaced
//!        └─ --interval          samples of every live pair
//!  classify.rs    one class per page: shared, copied_by_child, copied_then_released_by_child,
//!                 released_by_parent, moved...
//!  history.rs     per fork and side the peak of copied pages over the samples
//! ```
//!
//! Invariants: every ptrace request comes from the one tracer thread; a traced command is
//! never left running untraced (with a RET_TRACE filter and no tracer its releases would fail
//! with ENOSYS), so cowscope waits for it, and `PTRACE_O_EXITKILL` kills it if cowscope itself
//! dies; an attached (`--pid`) target is always detached, never killed, and keeps running.

pub mod attribute;
pub mod classify;
pub mod faults;
pub mod history;
pub mod mapcount;
pub mod ptrace;
pub mod relation;
pub mod releases_perf;
pub mod syscalls;
pub mod timeline;
mod tracer;

use std::ffi::OsString;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use classify::{Class, Counts};
pub use relation::BaseVma;

/// What to trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Run this command (program and arguments) and trace it from its first instruction.
    Command(Vec<OsString>),
    /// Attach to this running process.
    Pid(i32),
}

/// How `trace` runs.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// The program to run or attach to.
    pub target: Target,
    /// Sample every live pair this often (besides the exit and exec samples).
    pub interval: Option<Duration>,
    /// Track releases with PTRACE_SYSCALL stops on every syscall instead of a seccomp filter
    /// (a command) or the syscall tracepoints (`--pid`); measurably slower.
    pub syscalls: bool,
    /// Record the write faults after each fork for the history of copies (off with
    /// `--no-fault-history`; `--stacks` needs them).
    pub fault_history: bool,
    /// `--stacks`: record page faults after each fork and name the code behind each copy;
    /// the value is the bytes of user stack copied per fault (for DWARF unwinding).
    pub stacks: Option<u32>,
}

/// The `trace` document's own fields.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TraceBody {
    /// `command` (cowscope ran it) or `attach` (`--pid`).
    pub mode: String,
    /// The command line, in command mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The traced program's pid (the command's, or the `--pid`).
    pub pid: i32,
    /// How releases were tracked, and what that cost.
    pub release_tracking: ReleaseTracking,
    /// What the report can and cannot attribute on this run.
    pub attribution: Attribution,
    /// `--interval` in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// Wall time from start to the end of tracing, seconds.
    pub duration_s: f64,
    /// Why tracing ended: `exit` (every traced process exited), `interrupt` (Ctrl-C: a
    /// command was given the signal and exited), `killed` (a second Ctrl-C killed it),
    /// `detached` (`--pid`: cowscope let go, the target runs on).
    pub ended_by: String,
    /// How the traced program ended, and the status cowscope exits with.
    pub exit: ProgramExit,
    /// Every process seen.
    pub processes: Vec<ProcessRecord>,
    /// Every fork (and vfork, and clone of a process), in order.
    pub forks: Vec<ForkRecord>,
    /// Anything the reader should know about this run.
    pub notes: Vec<String>,
    /// `--stacks`: how page faults were recorded, or why they could not be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stacks: Option<StacksInfo>,
    /// The write-fault stream behind the peaks (every run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_history: Option<FaultHistory>,
}

/// How `--stacks` recorded the faults behind the copies.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StacksInfo {
    /// Faults were recorded (false: perf_event_open was refused; `reason` says why, the page
    /// classes stand, and cowscope exits 3 for the missing stacks).
    pub recorded: bool,
    /// The event: the `exceptions:page_fault_user` tracepoint (carries the write bit) or the
    /// software `page-faults` event (does not: the first fault at a copied page is taken).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Why faults could not be recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes of user stack copied per fault, for DWARF unwinding.
    pub stack_bytes: u32,
    /// Fault samples read, all processes (also faults outside every baseline).
    pub samples: u64,
    /// Of them, faults at pages outside every baseline or before a process's fork (first
    /// touches of new memory): counted, never kept.
    pub outside: u64,
    /// Distinct stacks kept.
    pub distinct_stacks: u64,
    /// Threads whose event could not be opened, and other problems.
    pub problems: Vec<String>,
}

/// One call path and the pages whose copy it made.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StackRecord {
    /// `child` or `parent`: whose fault it was.
    pub who: String,
    /// `copied_by_child`, `copied_by_parent`, `copied_at_fork`, or `diverged` (PFNs hidden:
    /// pagemap cannot say who copied; `who` is the side whose fault came first).
    pub class: Class,
    /// Pages this stack copied.
    pub pages: u64,
    /// Leaf first. The leaf is the faulting instruction; the others are call sites (an
    /// inlined call shows as frames of its own where debug information says so).
    pub frames: Vec<crate::stacks::symbols::Frame>,
}

/// Fault samples behind one fork's stacks.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct StackSamples {
    /// Fault samples of either side since the fork at baseline pages.
    pub recorded: u64,
    /// Records the kernel dropped (ring full) on either side's streams since the fork: a
    /// copy whose fault was lost is `unattributed`.
    pub lost: u64,
}

/// How releases were tracked.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseTracking {
    /// `seccomp` (a filter stops on exactly the releasing syscalls), `syscalls`
    /// (PTRACE_SYSCALL on every syscall), `tracepoints` (`--pid`: the kernel's syscall
    /// tracepoints read from perf ring buffers, no stop), or `none` (`--pid` where the
    /// tracepoints cannot be opened: a note says why).
    pub method: String,
    /// The filter needed `no_new_privs` (no CAP_SYS_ADMIN): setuid programs run by the traced
    /// command did not gain privileges.
    pub no_new_privs: bool,
    /// Syscall stops handled (seccomp stops plus syscall-entry/exit stops): the cost.
    pub stops: u64,
    /// Releasing syscalls recorded (successful ones by a process in a live pair).
    pub releases: u64,
    /// `tracepoints`: the records read and lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventCounts>,
}

/// The syscall records of the `tracepoints` method.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct EventCounts {
    /// Syscall entry and exit records read (all traced threads).
    pub records: u64,
    /// Records the kernel dropped because a ring buffer was full. On a pair whose side lost
    /// records, that side's new frames are `diverged`, never its copies.
    pub lost: u64,
}

/// What can be attributed on this run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Attribution {
    /// PFNs are visible: "same frame" and "who moved" are proven.
    pub pfn_visible: bool,
    /// Releases are known from the syscalls themselves (false without tracking, and when a
    /// traced process ran a 32-bit program, whose syscalls are not decoded).
    pub releases_tracked: bool,
    /// Statements that hold for this run's classes.
    pub proven: Vec<String>,
    /// What this run cannot tell apart.
    pub unproven: Vec<String>,
}

/// How the traced program ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ProgramExit {
    /// Its exit code, when it exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal that killed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The status cowscope exits with: the code, 128 + the signal number, 0 when it was
    /// detached and runs on, or 3 when its end was not seen (could not prove: never 0).
    pub status: i32,
}

/// One traced process.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ProcessRecord {
    /// Its pid.
    pub pid: i32,
    /// The traced process it was forked from (none for the traced program itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppid: Option<i32>,
    /// `/proc/<pid>/exe` when last seen (after its last exec).
    pub exe: String,
    /// Its `comm` when last seen (at its start, exec, and exit stop).
    #[serde(default)]
    pub comm: String,
    /// Its command line when last seen (a title set with setproctitle shows), where
    /// readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Seconds since start when it was first seen.
    pub first_seen: f64,
    /// Successful execs while traced.
    pub execs: u32,
    /// Seconds since start when it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exited_at: Option<f64>,
    /// Exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Killing signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

/// One fork and what became of its pages.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ForkRecord {
    /// The forking process.
    pub parent: i32,
    /// The new process.
    pub child: i32,
    /// The thread that forked.
    pub thread: i32,
    /// `fork`, `vfork`, or `clone` (a clone that made a process).
    pub kind: String,
    /// The child shares the parent's address space (vfork, CLONE_VM): no copy-on-write, no
    /// baseline; until it execs, its memory is the parent's.
    pub shares_mm: bool,
    /// Seconds since start.
    pub at: f64,
    /// How long the parent was held at its fork stop (reading its side of the baseline), µs.
    pub pause_us: u64,
    /// Of the pause, the time the parent's pagemap reads took, µs: the floor the pause is
    /// measured against (the rest is reading its maps and the ptrace round trips).
    pub parent_read_us: u64,
    /// How long the child was held before its first instruction (reading its side), µs.
    pub child_hold_us: u64,
    /// The fork-time record, when one was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineInfo>,
    /// Samples over time (totals only).
    pub samples: Vec<Sample>,
    /// The last sample before the pair ended (or before tracing ended), with per-VMA rows.
    #[serde(rename = "final", skip_serializing_if = "Option::is_none")]
    pub final_sample: Option<FinalSample>,
    /// Per side the most copied memory any sample saw (the final sample may come after the
    /// program's shutdown freed most of it), and the last sample before the pair's end began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak: Option<Peaks>,
    /// Releases each side made while the pair lived.
    pub releases: PairReleases,
    /// How the pair ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<PairEnd>,
    /// `--stacks`: the code behind the copies, most pages first: every page any sample
    /// called copied_by_child or copied_by_parent gets the stack of the first write fault at
    /// it in that process after the fork; copied_at_fork pages get the parent's stack at its
    /// fork stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stacks: Option<Vec<StackRecord>>,
    /// `--stacks`: copied pages with no recorded fault, per class (never guessed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unattributed: Option<std::collections::BTreeMap<String, u64>>,
    /// `--stacks`: the samples behind the stacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_samples: Option<StackSamples>,
    /// Notes about this pair.
    pub notes: Vec<String>,
}

/// The baseline's size.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BaselineInfo {
    /// Pages either side had at the fork (in RAM or swap), in the VMAs that can be copied on
    /// write.
    pub pages: u64,
    /// Of those, pages the child already had its own copy of before its first instruction
    /// (the page the kernel wrote its TID into; pinned pages fork copies eagerly).
    pub copied_at_fork: u64,
    /// VMAs compared.
    pub vmas: usize,
    /// Threads the parent had at the fork.
    pub parent_threads: usize,
}

/// One sample of a pair.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Sample {
    /// Seconds since start.
    pub at: f64,
    /// `interval`, `child_exit`, `parent_exit`, `child_exec`, `parent_exec`, `end`.
    pub trigger: String,
    /// Pages per class.
    #[serde(flatten)]
    pub counts: Counts,
}

/// The most copied memory of one side, over the samples and the write-fault stream.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Peak {
    /// Copied pages held at once, at their most: `copied_by_child` (or `copied_by_parent`)
    /// of a sample, or the fault stream's count of copies not yet released.
    pub pages: u64,
    /// Seconds since start of that sample (or fault).
    pub at: f64,
    /// What saw it: `samples` (a pagemap sample) or `faults` (the write-fault stream's
    /// timeline of copies and tracked releases, larger than every sample).
    #[serde(default)]
    pub witness: String,
}

/// Copied pages one side held just before it began to exit.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HeldBeforeExit {
    /// Pages (from the write-fault timeline).
    pub pages: u64,
    /// Seconds since start.
    pub at: f64,
    /// How the exit's beginning was found: `exit_stop` (PTRACE_EVENT_EXIT, after
    /// `exit_group`), `release_storm` (right after its last copy: it then released a quarter
    /// of its peak or more before the exit stop), `pair_end` (no exit stop seen).
    pub began: String,
}

/// Per side, what it held before it began to exit (the fault stream only).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BeforeExit {
    /// The child.
    pub child: HeldBeforeExit,
    /// The parent.
    pub parent: HeldBeforeExit,
}

/// The write-fault stream behind the peaks and the history of copies (opened on every run,
/// also without `--stacks`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct FaultHistory {
    /// Faults were recorded; false: `reason` says why, and peaks come from samples only.
    pub recorded: bool,
    /// The event (see [`StacksInfo::event`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Why the events could not be opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fault records read.
    pub faults: u64,
    /// Fault records lost (ring buffers full): a copy among them is missing from the
    /// timeline (the samples still see it if it was held at one).
    pub lost: u64,
}

/// A pair's peaks.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Peaks {
    /// The child's copies.
    pub child: Peak,
    /// The parent's copies.
    pub parent: Peak,
    /// The last sample before the end began (not an exit, exec or end sample): what the
    /// sides held while they still ran (`--interval` samples only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_end: Option<Sample>,
    /// From the write-fault timeline: what each side held just before it began to exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_exit: Option<BeforeExit>,
}

/// The final sample with per-VMA rows.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FinalSample {
    /// Seconds since start.
    pub at: f64,
    /// What triggered it (see [`Sample::trigger`]).
    pub trigger: String,
    /// Pages per class.
    #[serde(flatten)]
    pub counts: Counts,
    /// Per VMA of the parent at the fork (those with baseline pages).
    pub vmas: Vec<VmaRow>,
}

/// One VMA's counts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VmaRow {
    /// The VMA.
    #[serde(flatten)]
    pub vma: BaseVma,
    /// Its pages per class.
    #[serde(flatten)]
    pub counts: Counts,
}

/// Releases of both sides of a pair.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct PairReleases {
    /// The parent's.
    pub by_parent: SideReleases,
    /// The child's.
    pub by_child: SideReleases,
}

/// Releases of one side.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct SideReleases {
    /// Successful releasing calls.
    pub calls: u64,
    /// Baseline pages they covered (each counted once).
    pub pages: u64,
    /// Calls per syscall.
    pub by_syscall: std::collections::BTreeMap<String, u64>,
}

/// How a pair ended.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PairEnd {
    /// Seconds since start.
    pub at: f64,
    /// `child_exit`, `parent_exit`, `child_exec`, `parent_exec`, `detached`.
    pub by: String,
}

impl TraceBody {
    /// The status cowscope exits with (the traced program's, as `time` and `strace` do).
    pub fn exit_status(&self) -> i32 {
        self.exit.status
    }
}

/// Trace as `opts` says; `sys` is this machine (PFN visibility decides what can be proven).
///
/// # Errors
/// [`crate::Error::Usage`] for a command that cannot be found or run, a bad pid;
/// [`crate::Error::NotReadable`] for a pid that is no live user process;
/// [`crate::Error::Privilege`] when ptrace is refused.
pub fn run(opts: &TraceOptions, sys: &crate::mem::system::SystemInfo) -> crate::Result<TraceBody> {
    tracer::run(opts, sys, &mut |_| {})
}

/// What the tracer tells a watcher while it runs (for progress and live table lines).
#[derive(Debug, Clone, Copy)]
pub enum Live<'a> {
    /// Where tracing is: counts so far (sent often; a watcher throttles).
    Status {
        /// Processes seen.
        processes: usize,
        /// Forks seen.
        forks: usize,
        /// Samples taken.
        samples: usize,
        /// Pairs (parent, child) still alive.
        live_pairs: usize,
    },
    /// A sample of one pair was just taken.
    Sample {
        /// The fork it belongs to.
        fork: &'a ForkRecord,
        /// The sample (the fork's last).
        sample: &'a Sample,
    },
}

/// [`run`], telling `watch` about progress and every sample as it is taken. The watcher runs
/// in the tracer's thread, between ptrace stops: it must be quick (print a line, update a
/// progress bar).
///
/// # Errors
/// As [`run`].
pub fn run_with(
    opts: &TraceOptions,
    sys: &crate::mem::system::SystemInfo,
    watch: &mut dyn FnMut(Live<'_>),
) -> crate::Result<TraceBody> {
    tracer::run(opts, sys, watch)
}
