//! The `cowscope` command line: parse, call the library, print, map errors to exit codes.
//! No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use cowscope::error::{EXIT_OK, EXIT_VERDICT_FAILED, Error, Result};
use cowscope::output;

/// cowscope: makes process memory visible and proves copy-on-write page by page.
#[derive(Debug, Parser)]
#[command(name = "cowscope", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Output formats shared by the subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One JSON document.
    Json,
    /// A human table.
    Table,
    /// A transcript in the spirit of the seed's log.
    Text,
    /// An SVG page map (fork-report only).
    Svg,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the fork scenarios and print one JSON report proving where copy-on-write shared
    /// and where it copied.
    ForkReport {
        /// Run only this scenario (repeatable). Default: the whole catalogue.
        #[arg(long = "scenario", value_name = "NAME")]
        scenarios: Vec<String>,
        /// Scale the 16-page scenarios to N pages.
        #[arg(long, value_name = "N")]
        pages: Option<String>,
        /// Kill a child that has not reported after this many seconds.
        #[arg(long, value_name = "SECS", default_value = "10")]
        timeout: String,
        /// Timing runs per scenario (medians are reported).
        #[arg(long, value_name = "N", default_value = "5")]
        runs: String,
        /// Write the report here atomically instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// json (default), table, or svg (a page map).
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// List the scenario names with one line each and exit.
        #[arg(long)]
        list: bool,
    },
    /// Replay one of the seed's reference programs: 09a, 09b or 09b-overflow.
    Baseline {
        /// Which case: 09a, 09b, 09b-overflow.
        case: String,
        /// json (default) or text (a transcript).
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Write the result here atomically instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Read smaps, pagemap, kpagecount and kpageflags for a process's memory.
    Pages {
        /// The process to inspect.
        #[arg(long)]
        pid: String,
        /// START-END in hex (0x optional). Without it, every VMA is summarised.
        #[arg(long)]
        range: Option<String>,
        /// Add one row per page.
        #[arg(long)]
        per_page: bool,
        /// Never use the PAGEMAP_SCAN ioctl; read pagemap with plain preads.
        #[arg(long)]
        no_scan: bool,
        /// Write the result here atomically instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Run one of the seed's open questions as an experiment with a verdict.
    Experiment {
        /// The experiment's name (see --list).
        name: Option<String>,
        /// List the experiments with a one-line description.
        #[arg(long)]
        list: bool,
        /// Run every experiment.
        #[arg(long)]
        all: bool,
        /// Allow experiments that change (and then restore) system settings in /sys.
        #[arg(long)]
        allow_sysfs: bool,
        /// Write the result here atomically instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Compare fork-report JSON files from several kernels as a scenario x kernel table.
    Compare {
        /// fork-report.json files (one per kernel).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a command (or attach to a running process), follow its forks, forks of forks and
    /// vforks with ptrace, and prove page by page who copied what since each fork: the
    /// child, the parent, or neither (a release, or a frame that moved without a write).
    /// Exits with the traced program's status (128 + signal when a signal killed it).
    #[command(after_help = "Examples:\n  cowscope trace -- python3 server.py\n  \
        cowscope trace --out trace.json --interval 500ms -- redis-server --port 7777\n  \
        cowscope trace --pid 4242 --syscalls\n\n\
        Ctrl-C: with a command, the first one is passed to the program and cowscope waits \
        for it to exit; a second one kills it. With --pid, cowscope detaches and the target \
        runs on.")]
    Trace {
        /// Attach to this running process instead of running a command.
        #[arg(long, value_name = "PID")]
        pid: Option<String>,
        /// Also sample every live pair this often, e.g. 500ms or 2s.
        #[arg(long, value_name = "DURATION")]
        interval: Option<String>,
        /// Track releases with a ptrace stop at every syscall (needed with --pid; slower than
        /// the default seccomp filter of a command).
        #[arg(long)]
        syscalls: bool,
        /// Write the report here atomically (JSON unless --format table) instead of printing
        /// a table to stderr.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// json or table (default: json with --out, table on stderr without).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
    /// Print the JSON Schema of a document (fork-report, baseline, pages, experiment, trace),
    /// generated from the same types that write the documents.
    Schema {
        /// Which document.
        #[arg(default_value = "fork-report")]
        document: String,
    },
    /// Run as PID 1 in a test VM: mount /proc and /sys, collect, print between markers,
    /// power off. Used by scripts/kernel-matrix.sh.
    #[command(hide = true)]
    GuestInit,
}

fn parse_number<T: std::str::FromStr>(what: &str, s: &str) -> Result<T> {
    s.trim()
        .parse::<T>()
        .map_err(|_| Error::usage(format!("{what} must be a whole number, got '{s}'")))
}

/// `500ms`, `2s`, `1.5s`, `1m`.
fn parse_duration(what: &str, s: &str) -> Result<Duration> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let v: f64 = num.parse().map_err(|_| {
        Error::usage(format!("{what} must be a duration like 500ms or 2s, got '{s}'"))
    })?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => {
            return Err(Error::usage(format!(
                "{what} must be a duration like 500ms or 2s, got '{s}'"
            )));
        }
    };
    if !(secs.is_finite() && secs >= 0.001 && secs <= 86_400.0) {
        return Err(Error::usage(format!(
            "{what} must be between 1ms and 24h, got '{s}'"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::ForkReport {
            scenarios,
            pages,
            timeout,
            runs,
            out,
            format,
            list,
        } => {
            if list {
                let mut s = String::new();
                for (name, what) in cowscope::scenarios::list() {
                    s.push_str(&format!("{name:<24} {what}\n"));
                }
                output::emit(&s, None)?;
                return Ok(EXIT_OK);
            }
            let opts = cowscope::fork::ForkReportOptions {
                scenarios,
                pages: pages
                    .map(|p| parse_number::<usize>("--pages", &p))
                    .transpose()?,
                timeout: Duration::from_secs(parse_number::<u64>("--timeout", &timeout)?),
                runs: parse_number::<usize>("--runs", &runs)?,
            };
            let report = cowscope::fork::fork_report(&opts)?;
            let text = match format {
                Format::Table | Format::Text => cowscope::render::table::fork_report(&report),
                Format::Svg => cowscope::render::svg::fork_report(&report),
                Format::Json => output::to_json(&report)?,
            };
            output::emit(&text, out.as_deref())?;
            Ok(if report.body.all_verdicts_hold() {
                EXIT_OK
            } else {
                EXIT_VERDICT_FAILED
            })
        }
        Command::Baseline { case, format, out } => {
            let case: cowscope::baseline::BaselineCase = case.parse()?;
            let report = cowscope::baseline::run(case)?;
            let text = match format {
                Format::Json => output::to_json(&report)?,
                Format::Text | Format::Table => report.body.transcript(),
                Format::Svg => return Err(Error::usage("--format svg is only for fork-report")),
            };
            output::emit(&text, out.as_deref())?;
            Ok(EXIT_OK)
        }
        Command::Pages {
            pid,
            range,
            per_page,
            no_scan,
            out,
        } => {
            let req = cowscope::mem::report::PagesRequest {
                pid: parse_number::<i32>("--pid", &pid)?,
                range: range
                    .as_deref()
                    .map(cowscope::mem::report::parse_range)
                    .transpose()?,
                per_page,
                force_fallback: no_scan,
            };
            let report = cowscope::mem::report::pages(&req)?;
            output::emit(&output::to_json(&report)?, out.as_deref())?;
            Ok(EXIT_OK)
        }
        Command::Experiment {
            name,
            list,
            all,
            allow_sysfs,
            out,
        } => {
            if list {
                let mut s = String::new();
                for (name, what) in cowscope::experiments::list() {
                    s.push_str(&format!("{name:<20} {what}\n"));
                }
                output::emit(&s, None)?;
                return Ok(EXIT_OK);
            }
            let opts = cowscope::experiments::ExperimentOptions { allow_sysfs };
            let (json, ok) = match (name, all) {
                (Some(_), true) => {
                    return Err(Error::usage("give an experiment NAME or --all, not both"));
                }
                (None, false) => {
                    return Err(Error::usage(
                        "name an experiment (see --list) or pass --all",
                    ));
                }
                (Some(n), false) => {
                    let r = cowscope::experiments::run(&n, &opts)?;
                    let ok = r.body.holds();
                    (output::to_json(&r)?, ok)
                }
                (None, true) => {
                    let r = cowscope::experiments::run_all(&opts)?;
                    let ok = r.body.holds();
                    (output::to_json(&r)?, ok)
                }
            };
            output::emit(&json, out.as_deref())?;
            Ok(if ok { EXIT_OK } else { EXIT_VERDICT_FAILED })
        }
        Command::Compare { files } => {
            let table = cowscope::compare::compare_files(&files)?;
            output::emit(&table, None)?;
            Ok(EXIT_OK)
        }
        Command::Schema { document } => {
            let schema = cowscope::report::schema(&document)?;
            output::emit(&output::to_json(&schema)?, None)?;
            Ok(EXIT_OK)
        }
        Command::Trace {
            pid,
            interval,
            syscalls,
            out,
            format,
            command,
        } => {
            let target = match (pid, command.is_empty()) {
                (Some(_), false) => {
                    return Err(Error::usage("give either --pid or a command after --, not both"));
                }
                (None, true) => {
                    return Err(Error::usage(
                        "give a command after -- (cowscope trace -- CMD ARGS...) or --pid PID",
                    ));
                }
                (Some(p), true) => cowscope::trace::Target::Pid(parse_number::<i32>("--pid", &p)?),
                (None, false) => cowscope::trace::Target::Command(command),
            };
            let opts = cowscope::trace::TraceOptions {
                target,
                interval: interval
                    .as_deref()
                    .map(|s| parse_duration("--interval", s))
                    .transpose()?,
                syscalls,
            };
            let format = format.unwrap_or(if out.is_some() { Format::Json } else { Format::Table });
            let text = match format {
                Format::Json => None,
                Format::Table => Some(()),
                _ => return Err(Error::usage("trace writes --format json or table")),
            };
            let report = cowscope::trace::run(&opts)?;
            let rendered = match text {
                Some(()) => cowscope::render::trace::table(&report),
                None => output::to_json(&report)?,
            };
            match out {
                Some(p) => output::write_atomic(&p, rendered.as_bytes())?,
                None => eprint!("{rendered}"),
            }
            Ok(report.body.exit_status())
        }
        Command::GuestInit => cowscope::guest::run_as_init(),
    }
}

fn main() -> ExitCode {
    // A panic is a bug; still, the user gets one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("cowscope: internal error (please report): {info}");
    }));
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cowscope: {e}");
            e.exit_code()
        }
    };
    ExitCode::from(code as u8)
}
