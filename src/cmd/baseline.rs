//! `cowscope baseline`: replay one of the seed's reference programs on the arena engine.

use std::path::PathBuf;

use crate::baseline::BaselineCase;
use crate::doc::{BaselineDoc, Envelope};
use crate::error::Result;
use crate::output;

use super::DocFormat;

/// `baseline` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which case: 09a, 09b, 09b-overflow.
    pub case: String,
    /// json, or table (the seed's log replayed, then the engine's judgement).
    #[arg(long, value_enum, default_value_t = DocFormat::Json)]
    pub format: DocFormat,
    /// Write the result here atomically instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Replay `case` and build the document.
///
/// # Errors
/// Only if the kernel refuses the arena's mapping.
pub fn report(case: BaselineCase) -> Result<BaselineDoc> {
    let body = crate::baseline::run(case)?;
    Ok(Envelope::new(crate::mem::system::detect(), body))
}

/// Run the command.
///
/// # Errors
/// An unknown case (usage), a refused mapping, or a failure writing the output.
pub fn run(args: Args) -> Result<i32> {
    let case: BaselineCase = args.case.parse()?;
    let doc = report(case)?;
    let text = match args.format {
        DocFormat::Json => output::to_json(&doc)?,
        DocFormat::Table => crate::render::baseline::transcript(&doc.body),
    };
    output::emit(&text, args.out.as_deref())?;
    Ok(doc.body.exit_code())
}
