//! `cowscope experiment`: the seed's open questions, each run as an experiment with a verdict.

use std::path::PathBuf;

use crate::doc::{Envelope, ExperimentDoc};
use crate::error::{EXIT_OK, Error, Result};
use crate::experiments::ExperimentOptions;
use crate::output;

use super::DocFormat;

/// `experiment` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The experiment's name (see --list).
    pub name: Option<String>,
    /// List the experiments with a one-line description.
    #[arg(long)]
    pub list: bool,
    /// Run every experiment.
    #[arg(long)]
    pub all: bool,
    /// Allow experiments that change (and then restore) system settings in /sys.
    #[arg(long)]
    pub allow_sysfs: bool,
    /// json, or table (one line per experiment; the evidence is only in the JSON).
    #[arg(long, value_enum, default_value_t = DocFormat::Json)]
    pub format: DocFormat,
    /// Write the result here atomically instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Run one experiment (`Some(name)`) or all of them, and build the document.
///
/// # Errors
/// An unknown name (usage), or a setup failure an experiment could not turn into a verdict.
pub fn report(name: Option<&str>, opts: &ExperimentOptions) -> Result<ExperimentDoc> {
    let body = match name {
        Some(n) => crate::experiments::run(n, opts)?,
        None => {
            // No ticking thread: some experiments count or create threads themselves.
            let progress = crate::progress::Progress::untimed();
            let r = crate::experiments::run_all_with(opts, &progress);
            progress.finish();
            r?
        }
    };
    Ok(Envelope::new(crate::mem::system::detect(), body))
}

/// Run the command.
///
/// # Errors
/// Bad options, a setup failure, or a failure writing the output.
pub fn run(args: Args) -> Result<i32> {
    if args.list {
        let mut s = String::new();
        for (name, what) in crate::experiments::list() {
            s.push_str(&format!("{name:<20} {what}\n"));
        }
        output::emit(&s, None)?;
        return Ok(EXIT_OK);
    }
    let opts = ExperimentOptions {
        allow_sysfs: args.allow_sysfs,
    };
    let doc = match (args.name.as_deref(), args.all) {
        (Some(_), true) => {
            return Err(Error::usage("give an experiment NAME or --all, not both"));
        }
        (None, false) => {
            return Err(Error::usage(
                "name an experiment (see --list) or pass --all",
            ));
        }
        (name, _) => report(name, &opts)?,
    };
    let text = match args.format {
        DocFormat::Json => output::to_json(&doc)?,
        DocFormat::Table => crate::render::experiment::table(&doc),
    };
    output::emit(&text, args.out.as_deref())?;
    Ok(doc.body.exit_code())
}
