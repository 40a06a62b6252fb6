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

/// Output formats of `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InspectFormat {
    /// One JSON document.
    Json,
    /// Human tables.
    Table,
    /// An SVG page map, or a timeline with --interval.
    Svg,
    /// JSON Lines: one record per sample, flushed.
    Jsonl,
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
    /// Compare a live process with its forked children, page by page: which pages are still
    /// shared, which diverged (copied), which only one side maps, and what smaps says they
    /// cost. Reads pagemap and smaps only; never touches the targets' memory.
    ///
    /// Exit codes: 0 every page classified; 3 some pages unproven (PFNs hidden: run as root);
    /// 2 usage or input error.
    Inspect {
        /// The parent process.
        #[arg(long)]
        pid: String,
        /// Only these children (repeatable; each must descend from --pid). Default: every live
        /// descendant, each against the process it was forked from.
        #[arg(long = "child", value_name = "PID")]
        children: Vec<String>,
        /// Stop every target with SIGSTOP for one consistent read; always resumed (also on
        /// error, Ctrl-C, or if cowscope is killed: a watchdog process resumes them).
        #[arg(long)]
        freeze: bool,
        /// json (default), table, svg (a page map; with --interval a timeline), or jsonl
        /// (one record per sample).
        #[arg(long, value_enum, default_value_t = InspectFormat::Json)]
        format: InspectFormat,
        /// Write the result here (atomically; jsonl is streamed) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Walk only START-END (hex).
        #[arg(long)]
        range: Option<String>,
        /// Add runs of pages with one class (needs --range).
        #[arg(long)]
        per_page: bool,
        /// Add a page map of at most N cells per VMA to the JSON (svg uses 96).
        #[arg(long, value_name = "N")]
        cells: Option<String>,
        /// Sample repeatedly at this interval (500ms, 2s, ...) until the children exit.
        #[arg(long)]
        interval: Option<String>,
        /// With --interval: stop after this long.
        #[arg(long)]
        duration: Option<String>,
    },
    /// Compare fork-report JSON files from several kernels as a scenario x kernel table.
    Compare {
        /// fork-report.json files (one per kernel).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of a document (fork-report, baseline, pages, experiment,
    /// inspect, inspect-sample),
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
        Command::Inspect {
            pid,
            children,
            freeze,
            format,
            out,
            range,
            per_page,
            cells,
            interval,
            duration,
        } => {
            use cowscope::inspect::cmd::{Format as F, InspectArgs, run};
            run(InspectArgs {
                pid,
                children,
                freeze,
                format: match format {
                    InspectFormat::Json => F::Json,
                    InspectFormat::Table => F::Table,
                    InspectFormat::Svg => F::Svg,
                    InspectFormat::Jsonl => F::Jsonl,
                },
                out,
                range,
                per_page,
                cells,
                interval,
                duration,
            })
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
