//! The `cowscope` command line: parse, dispatch to `cowscope::cmd`, map errors to exit codes.
//! No logic lives here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cowscope::cmd;

/// cowscope: makes process memory visible and proves copy-on-write page by page.
#[derive(Debug, Parser)]
#[command(name = "cowscope", version, about, propagate_version = true)]
struct Cli {
    /// Show progress on stderr also where it is not a terminal (a pipe, a CI log). By
    /// default it shows on a terminal only, and never when CI is set.
    #[arg(long, global = true)]
    progress: bool,
    /// Show no progress at all (wins over --progress).
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the fork scenarios and print one JSON report proving where copy-on-write shared
    /// and where it copied.
    ForkReport(cmd::fork_report::Args),
    /// Replay one of the seed's reference programs: 09a, 09b or 09b-overflow.
    Baseline(cmd::baseline::Args),
    /// Read smaps, pagemap, kpagecount and kpageflags for a process's memory.
    Pages(cmd::pages::Args),
    /// Run one of the seed's open questions as an experiment with a verdict.
    Experiment(cmd::experiment::Args),
    /// Compare a live process with its forked children, page by page: which pages are still
    /// shared, which diverged (no longer the same page: copied, or released and refaulted),
    /// which only one side maps, and what smaps says they cost. Reads pagemap and smaps only; never touches the targets' memory. Exit codes: 0
    /// every page classified; 3 something unproven, in any sample (PFNs hidden: run as root;
    /// or a live descendant whose memory the kernel refused); 2 usage or input error.
    Inspect(cmd::inspect::Args),
    /// Compare fork-report JSON files from several kernels as a scenario x kernel table.
    Compare(cmd::compare::Args),
    /// Run a command (or attach to a running process), follow its forks, forks of forks and
    /// vforks with ptrace, and prove page by page who copied what since each fork.
    Trace(cmd::trace::Args),
    /// Print the JSON Schema of a document, generated from the same types that write the
    /// documents (the names: `cowscope schema --help`).
    Schema(cmd::schema::Args),
    /// Run as PID 1 in a test VM: mount /proc and /sys, collect, print between markers,
    /// power off. Used by scripts/kernel-matrix.sh.
    #[command(hide = true)]
    GuestInit,
}

fn main() -> ExitCode {
    // A panic is a bug; still, the user gets one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("cowscope: internal error (please report): {info}");
    }));
    let cli = Cli::parse();
    cowscope::progress::configure(cli.progress, cli.quiet);
    let result = match cli.command {
        Command::ForkReport(a) => cmd::fork_report::run(a),
        Command::Baseline(a) => cmd::baseline::run(a),
        Command::Pages(a) => cmd::pages::run(a),
        Command::Experiment(a) => cmd::experiment::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Compare(a) => cmd::compare::run(a),
        Command::Schema(a) => cmd::schema::run(a),
        Command::Trace(a) => cmd::trace::run(a),
        Command::GuestInit => cmd::guest::run_as_init(),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cowscope: {e}");
            e.exit_code()
        }
    };
    ExitCode::from(code as u8)
}
