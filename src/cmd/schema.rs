//! `cowscope schema`: the JSON Schema of a document, generated from the types that write it.

use crate::error::{EXIT_OK, Result};
use crate::output;

/// `schema` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which document (see `crate::doc::DOCUMENTS`).
    #[arg(default_value = "fork-report")]
    pub document: String,
}

/// Run the command.
///
/// # Errors
/// An unknown document name (usage).
pub fn run(args: Args) -> Result<i32> {
    let schema = crate::doc::schema(&args.document)?;
    output::emit(&output::to_json(&schema)?, None)?;
    Ok(EXIT_OK)
}
