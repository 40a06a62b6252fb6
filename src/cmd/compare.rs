//! `cowscope compare`: fork reports from several kernels side by side. This module loads
//! and checks the inputs; `render::compare` draws the tables.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::render::compare::{columns, render};

/// Read each file and render the comparison table.
///
/// # Errors
/// [`Error::Io`] when a file cannot be read; [`Error::Usage`] when a file is not JSON or has no
/// `scenarios` list (not a fork report).
pub fn compare_files(files: &[PathBuf]) -> Result<String> {
    if files.is_empty() {
        return Err(Error::usage(
            "compare needs at least one fork-report.json file",
        ));
    }
    let mut docs = Vec::with_capacity(files.len());
    for path in files {
        docs.push((path.display().to_string(), load(path)?));
    }
    Ok(render(&columns(docs)))
}

fn load(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| Error::usage(format!("{} is not valid JSON: {e}", path.display())))?;
    if !doc.get("scenarios").is_some_and(Value::is_array) {
        return Err(Error::usage(format!(
            "{} is not a fork report: it has no 'scenarios' list",
            path.display()
        )));
    }
    Ok(doc)
}

/// `compare` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// fork-report.json files (one per kernel).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Run the command.
///
/// # Errors
/// Unreadable or invalid inputs.
pub fn run(args: Args) -> Result<i32> {
    let table = compare_files(&args.files)?;
    crate::output::emit(&table, None)?;
    Ok(crate::error::EXIT_OK)
}
