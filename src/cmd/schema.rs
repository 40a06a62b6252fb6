//! `cowscope schema`: the JSON Schema of a document, generated from the types that write it.

use crate::error::{EXIT_OK, Result};
use crate::output;

/// `schema` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which document: one of `crate::doc::DOCUMENTS` (listed by `--help`).
    #[arg(default_value = "fork-report", help = documents_help())]
    pub document: String,
}

/// The help line of the document argument: every name of [`crate::doc::DOCUMENTS`].
fn documents_help() -> String {
    format!("Which document: {}", crate::doc::DOCUMENTS.join(", "))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn the_help_names_every_document() {
        let help = <Cli as clap::CommandFactory>::command()
            .render_help()
            .to_string();
        for d in crate::doc::DOCUMENTS {
            assert!(help.contains(d), "{d} missing from: {help}");
        }
    }
}
