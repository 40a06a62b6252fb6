//! `cowscope fork-report`: run the scenario catalogue and prove, page by page, where
//! copy-on-write shared and where it copied.

use std::path::PathBuf;
use std::time::Duration;

use crate::doc::{Envelope, ForkReportDoc};
use crate::error::{EXIT_OK, Result};
use crate::fork::ForkReportOptions;
use crate::output;

use super::parse_number;

/// The formats of a fork report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON document.
    Json,
    /// A table, one row per scenario.
    Table,
    /// An SVG page map.
    Svg,
}

/// `fork-report` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run only this scenario (repeatable). Default: the whole catalogue.
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// Scale the 16-page scenarios to N pages.
    #[arg(long, value_name = "N")]
    pub pages: Option<String>,
    /// Kill a child that has not reported after this many seconds.
    #[arg(long, value_name = "SECS", default_value = "10")]
    pub timeout: String,
    /// Timing runs per scenario (medians are reported).
    #[arg(long, value_name = "N", default_value = "5")]
    pub runs: String,
    /// Write the report here atomically instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// List the scenario names with one line each and exit.
    #[arg(long)]
    pub list: bool,
    /// Let scenarios change THP, hugetlb and swap settings they need (root); every change is
    /// restored when the scenario ends.
    #[arg(long)]
    pub allow_sysfs: bool,
    /// Run the scenarios of this JSON file (schema: `cowscope schema scenario-file`) instead
    /// of the built-in catalogue.
    #[arg(long, value_name = "FILE")]
    pub scenario_file: Option<PathBuf>,
}

/// Run the catalogue (or the chosen scenarios) and build the document.
///
/// # Errors
/// Bad options (usage) or a failure to set up memory.
pub fn report(opts: &ForkReportOptions) -> Result<ForkReportDoc> {
    report_with(opts, &crate::progress::Progress::hidden())
}

/// [`report`], with progress (scenario i/N, stage) on `progress`.
///
/// # Errors
/// As [`report`].
pub fn report_with(
    opts: &ForkReportOptions,
    progress: &crate::progress::Progress,
) -> Result<ForkReportDoc> {
    let system = crate::mem::system::detect();
    let body = crate::fork::fork_report_with(opts, &system, progress)?;
    Ok(Envelope::new(system, body))
}

/// Run the command.
///
/// # Errors
/// Bad options, memory setup failures, or failures writing the output.
pub fn run(args: Args) -> Result<i32> {
    if args.list {
        let all = match &args.scenario_file {
            Some(f) => crate::fork::scenario_file::load(f)?
                .into_iter()
                .map(|s| (s.name, s.summary))
                .collect(),
            None => crate::fork::scenarios::list(),
        };
        let w = all.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let mut s = String::new();
        for (name, what) in all {
            s.push_str(&format!("{name:<w$}  {what}\n"));
        }
        output::emit(&s, None)?;
        return Ok(EXIT_OK);
    }
    let opts = ForkReportOptions {
        scenarios: args.scenarios,
        pages: args
            .pages
            .map(|p| parse_number::<usize>("--pages", &p))
            .transpose()?,
        timeout: Duration::from_secs(parse_number::<u64>("--timeout", &args.timeout)?),
        runs: parse_number::<usize>("--runs", &args.runs)?,
        allow_sysfs: args.allow_sysfs,
        scenario_file: args.scenario_file,
    };
    // Ctrl-C must not skip the guards that restore THP, hugetlb and swap settings: take the
    // stop signals as a request honoured between scenarios (before any thread starts).
    crate::kernel::defer_stop_signals()
        .map_err(|e| crate::error::Error::io("deferring SIGINT/SIGTERM/SIGHUP", e))?;
    // After the deferral: the progress line's ticking thread inherits the blocked mask.
    let progress = crate::progress::Progress::new();
    let doc = report_with(&opts, &progress);
    progress.finish();
    let doc = doc?;
    for s in &doc.body.scenarios {
        for f in &s.restore_failures {
            eprintln!(
                "cowscope: warning: {}: a setting was NOT restored, the machine is left changed: {f}",
                s.name
            );
        }
    }
    let text = match args.format {
        Format::Table => crate::render::table::fork_report(&doc),
        Format::Svg => crate::render::svg::fork_report(&doc),
        Format::Json => output::to_json(&doc)?,
    };
    output::emit(&text, args.out.as_deref())?;
    Ok(doc.body.exit_code())
}
