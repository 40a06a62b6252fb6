//! `cowscope trace`: run a command (or attach to a process), follow its forks, and say page by
//! page who copied what since each fork.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use crate::doc::{Envelope, TraceDoc};
use crate::error::{Error, Result};
use crate::output;
use crate::progress::Progress;
use crate::trace::{Live, Target, TraceOptions};

use super::{parse_duration, parse_number};

/// `trace` arguments.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  cowscope trace -- python3 server.py\n  \
    cowscope trace --out trace.json --interval 500ms -- redis-server --port 7777\n  \
    cowscope trace --pid 4242\n\n\
    Output: the report goes to stderr when it ends (a table, or JSON with --format json), \
    after the program's own output, so the program's stdout stays its own; --out FILE \
    writes it to a file instead.\n\
    Exit status: the traced program's (128 + N when signal N killed it), 0 after --pid \
    detached from a target that runs on; 2 bad input, 3 not permitted to trace or the \
    program's end was not seen.\n\
    Ctrl-C: with a command, the first one is passed to the program and cowscope waits for it \
    to exit (a traced command never runs on untraced); a second one kills it. With --pid, \
    cowscope detaches and the target runs on.\n\
    Daemons: cowscope follows every process the command starts, also one that daemonizes \
    (forks, setsid, and its parent exits): tracing ends when the last of them exits, so \
    `trace -- redis-server --daemonize yes` runs until that server is shut down. Run daemons \
    in the foreground, or attach with --pid.")]
pub struct Args {
    /// Attach to this running process instead of running a command.
    #[arg(long, value_name = "PID")]
    pub pid: Option<String>,
    /// Also sample every live pair this often, e.g. 500ms or 2s.
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// Track releases with a ptrace stop at every syscall (slow): with --pid the fallback to
    /// the syscall tracepoints (used by default where they open: root or CAP_PERFMON); with
    /// a command it replaces the seccomp filter.
    #[arg(long)]
    pub syscalls: bool,
    /// Name the code behind every copied page: record the page faults after each fork
    /// (perf events) with their call stacks, and give each copy the stack of the write fault
    /// that made it. Exit 3 when the faults cannot be recorded (the page classes stand).
    #[arg(long)]
    pub stacks: bool,
    /// Do not record the write faults after each fork (recorded by default where the events
    /// open: the history of copies, so a copy released between two samples still counts in
    /// the peak). Every fault of a traced process passes the event; without it, peaks and
    /// `copied_then_released_*` come from the samples only (see --interval).
    #[arg(long, conflicts_with = "stacks")]
    pub no_fault_history: bool,
    /// With --stacks: bytes of user stack copied per fault for DWARF unwinding (deep stacks,
    /// e.g. an interpreter's, need more; at most 60000).
    #[arg(long, value_name = "BYTES", requires = "stacks")]
    pub stack_size: Option<String>,
    /// Write the report here atomically (JSON unless --format table) instead of printing it
    /// on stderr.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// json or table (default: json with --out, a table without); with --stacks also
    /// folded (folded stacks of copied pages, `comm;side;outermost;...;leaf PAGES`, for
    /// inferno, flamegraph.pl or speedscope) or flamegraph (an SVG). Without --out any of
    /// them goes to stderr, never stdout (the program's own).
    #[arg(long, value_enum)]
    pub format: Option<TraceFormat>,
    /// Never use the PAGEMAP_SCAN ioctl: take the paths of a kernel without it (before 6.7),
    /// plain pagemap reads. The classes and counts are the same.
    #[arg(long)]
    pub no_scan: bool,
    /// Table: a section for every fork, also for children that exec'd at once with nothing
    /// copied (by default one line counts those).
    #[arg(long)]
    pub all_forks: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `trace`'s formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceFormat {
    /// One JSON document.
    Json,
    /// A table for people.
    Table,
    /// Folded stacks of the copied pages (needs --stacks).
    Folded,
    /// An SVG flame graph of the copied pages (needs --stacks).
    Flamegraph,
}

/// Trace and build the document.
///
/// # Errors
/// See [`crate::trace::run`].
pub fn report(opts: &TraceOptions) -> Result<TraceDoc> {
    report_with(opts, &mut |_| {})
}

/// [`report`], telling `watch` about progress and each sample as it is taken.
///
/// # Errors
/// See [`crate::trace::run`].
pub fn report_with(opts: &TraceOptions, watch: &mut dyn FnMut(Live<'_>)) -> Result<TraceDoc> {
    let system = crate::mem::system::detect();
    let body = crate::trace::run_with(opts, &system, watch)?;
    Ok(Envelope::new(system, body))
}

/// `--out`'s directory exists (checked before the program runs, not after).
fn check_out_dir(out: Option<&std::path::Path>) -> Result<()> {
    if let Some(p) = out {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            return Err(Error::usage(format!(
                "--out {}: the directory does not exist",
                p.display()
            )));
        }
    }
    Ok(())
}

/// What the tracer tells while it runs, on stderr: the live status line, and each sample's
/// line when `sample_lines`.
fn show_live(progress: &Progress, sample_lines: bool, ev: Live<'_>) {
    match ev {
        Live::Status {
            processes,
            forks,
            samples,
            live_pairs,
        } => progress.line(format!(
            "tracing: {processes} process(es), {forks} fork(s), {live_pairs} live pair(s), \
             {samples} sample(s)"
        )),
        Live::Sample { fork, sample } if sample_lines => {
            progress.println(&crate::render::trace::sample_line(fork, sample));
            let _ = std::io::stderr().flush();
        }
        Live::Sample { .. } => {}
    }
}

/// Run the command; returns the traced program's exit status.
///
/// # Errors
/// Bad options, a program that cannot be run or attached to, a failure writing the report.
pub fn run(args: Args) -> Result<i32> {
    if args.no_scan {
        crate::mem::scan::turn_off();
    }
    let target = match (args.pid, args.command.is_empty()) {
        (Some(_), false) => {
            return Err(Error::usage(
                "give either --pid or a command after --, not both",
            ));
        }
        (None, true) => {
            return Err(Error::usage(
                "give a command after -- (cowscope trace -- CMD ARGS...) or --pid PID",
            ));
        }
        (Some(p), true) => Target::Pid(parse_number::<i32>("--pid", &p)?),
        (None, false) => Target::Command(args.command),
    };
    let opts = TraceOptions {
        target,
        interval: args
            .interval
            .as_deref()
            .map(|s| parse_duration("--interval", s))
            .transpose()?,
        syscalls: args.syscalls,
        fault_history: !args.no_fault_history,
        stacks: if args.stacks {
            let bytes = match args.stack_size.as_deref() {
                Some(s) => parse_number::<u32>("--stack-size", s)?,
                None => crate::trace::faults::DEFAULT_STACK_BYTES,
            };
            if !(64..=60_000).contains(&bytes) {
                return Err(Error::usage(format!(
                    "--stack-size {bytes}: give 64 to 60000 bytes"
                )));
            }
            Some(bytes)
        } else {
            None
        },
    };
    let format = args.format.unwrap_or(if args.out.is_some() {
        TraceFormat::Json
    } else {
        TraceFormat::Table
    });
    if matches!(format, TraceFormat::Folded | TraceFormat::Flamegraph) && opts.stacks.is_none() {
        return Err(Error::usage(
            "--format folded and --format flamegraph draw the stacks of --stacks: add --stacks",
        ));
    }
    // Check the output path before the program runs, not after.
    check_out_dir(args.out.as_deref())?;
    // SIGINT/SIGTERM/SIGHUP/SIGQUIT stay blocked from here to the exit: the tracer takes
    // them itself (sigtimedwait); one that arrives after it stopped listening (a second
    // Ctrl-C while it detaches, `timeout -s INT` signalling cowscope and then its process
    // group) stays pending and is discarded at the exit, so it can never kill cowscope with
    // the report unwritten.
    let held = crate::kernel::hold_stop_signals()
        .map_err(|e| Error::io("blocking SIGINT/SIGTERM while tracing", e))?;
    // A live line on a terminal (processes, forks, samples), and with --interval and a
    // table one line per sample per live pair as it is taken. Both go to stderr: the
    // program's stdout stays its own. Created after the hold (no ticking thread: see
    // Progress::untimed).
    let progress = Progress::untimed();
    let sample_lines = format == TraceFormat::Table && opts.interval.is_some();
    let mut watch = |ev: Live<'_>| show_live(&progress, sample_lines, ev);
    let doc = report_with(&opts, &mut watch);
    progress.finish();
    let doc = doc?;
    let text = match format {
        TraceFormat::Json => output::to_json(&doc)?,
        TraceFormat::Table => crate::render::trace::table_with(&doc, args.all_forks),
        TraceFormat::Folded => crate::render::trace::folded(&doc),
        TraceFormat::Flamegraph => crate::render::trace::flamegraph(&doc),
    };
    match &args.out {
        Some(p) => output::emit(&text, Some(p))?,
        None => eprint!("{text}"),
    }
    held.until_exit();
    let status = doc.body.exit_status();
    // --stacks asked for stacks the kernel would not give: could not prove (3), unless the
    // program's own status already says it failed.
    let stacks_missing = doc.body.stacks.as_ref().is_some_and(|s| !s.recorded);
    Ok(if stacks_missing && status == 0 {
        crate::error::EXIT_UNPROVEN
    } else {
        status
    })
}
