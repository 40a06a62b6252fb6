//! `cowscope compare`: fork reports, inspect and trace documents from several kernels side by
//! side. This module loads and checks the inputs; `compare` builds the comparison and
//! `render::compare` draws the tables.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::compare::{DocKind, build_any};
use crate::doc::{CompareDoc, Envelope, SCHEMA_VERSION, Tool};
use crate::error::{EXIT_OK, Error, Result};
use crate::fork::ForkReportBody;
use crate::mem::system::SystemInfo;
use crate::output;
use crate::render::compare::text;

use super::DocFormat;

/// `compare` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// fork-report.json, inspect.json and trace.json files (one of each kind per kernel, e.g.
    /// results/*/fork-report.json results/*/inspect.json).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// table (default), or json (the same cells as one document).
    #[arg(long, value_enum, default_value_t = DocFormat::Table)]
    pub format: DocFormat,
    /// Write the result here atomically instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Read and check each file and build the comparison document.
///
/// # Errors
/// [`Error::Io`] when a file cannot be read; [`Error::Usage`] when a file is not JSON, was
/// written with another `schema_version`, is neither a fork report, an inspect nor a trace
/// document, or does not match its schema (the message names the file and the JSON path of
/// the problem).
pub fn compare(files: &[PathBuf]) -> Result<CompareDoc> {
    if files.is_empty() {
        return Err(Error::usage(
            "compare needs at least one fork-report.json, inspect.json or trace.json file",
        ));
    }
    let mut docs = Vec::with_capacity(files.len());
    for path in files {
        docs.push((path.display().to_string(), load(path)?));
    }
    Ok(Envelope::new(crate::mem::system::detect(), build_any(docs)))
}

/// Read each file and render the comparison as text tables.
///
/// # Errors
/// As [`compare`].
pub fn compare_files(files: &[PathBuf]) -> Result<String> {
    Ok(text(&compare(files)?.body))
}

/// Load one document: valid JSON, this build's `schema_version`, and every field of its
/// schema (fork report, inspect or trace) with the right type (checked by deserialising into
/// the document's own types, so the check cannot drift from what cowscope writes).
fn load(path: &Path) -> Result<Value> {
    let name = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {name}"), e))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| Error::usage(format!("{name} is not valid JSON: {e}")))?;
    check(&doc).map_err(|why| Error::usage(format!("{name} {why}")))?;
    Ok(doc)
}

/// Why `doc` is not a fork report this build can compare, as the end of a sentence.
fn check(doc: &Value) -> std::result::Result<(), String> {
    if !doc.is_object() {
        return Err("is not a fork report: not a JSON object".into());
    }
    match doc.get("schema_version").map(|v| (v, v.as_u64())) {
        None => return Err("is not a cowscope document: it has no schema_version".into()),
        Some((_, Some(v))) if v == u64::from(SCHEMA_VERSION) => {}
        Some((_, Some(v))) => {
            return Err(format!(
                "has schema_version {v}, but this cowscope reads schema_version \
                 {SCHEMA_VERSION}; re-run fork-report with this build (scripts/collect.sh)"
            ));
        }
        Some((v, None)) => return Err(format!("has a schema_version that is not a number: {v}")),
    }
    let Some(kind) = DocKind::of(doc) else {
        return Err(
            "is not a fork report, an inspect or a trace document: it has no \
                    'scenarios', 'pairs' or 'forks' list"
                .into(),
        );
    };
    // Part by part: serde's `flatten` (the envelope's body) would hide the path of an error.
    let null = Value::Null;
    let part = |key: &str| doc.get(key).unwrap_or(&null);
    typed::<Tool>(part("tool"), "tool.", kind)?;
    typed::<SystemInfo>(part("system"), "system.", kind)?;
    match kind {
        DocKind::ForkReport => typed::<ForkReportBody>(doc, "", kind),
        DocKind::Inspect => typed::<crate::inspect::InspectBody>(doc, "", kind),
        DocKind::Trace => typed::<crate::trace::TraceBody>(doc, "", kind),
    }
}

/// Deserialise `v` as `T`, naming the JSON path (under `prefix`) of the first problem.
fn typed<T: serde::de::DeserializeOwned>(
    v: &Value,
    prefix: &str,
    kind: DocKind,
) -> std::result::Result<(), String> {
    let schema = match kind {
        DocKind::ForkReport => "fork-report",
        DocKind::Inspect => "inspect",
        DocKind::Trace => "trace",
    };
    serde_path_to_error::deserialize::<_, T>(v)
        .map(|_| ())
        .map_err(|e| {
            let at = e.path().to_string();
            let at = if at == "." {
                prefix.trim_end_matches('.').to_string()
            } else {
                format!("{prefix}{at}")
            };
            format!(
                "does not match the {schema} schema at {}: {}",
                if at.is_empty() {
                    "the top level".into()
                } else {
                    at
                },
                e.inner()
            )
        })
}

/// Run the command.
///
/// # Errors
/// Unreadable or invalid inputs, or a failure writing the output.
pub fn run(args: Args) -> Result<i32> {
    let doc = compare(&args.files)?;
    let out = match args.format {
        DocFormat::Table => text(&doc.body),
        DocFormat::Json => output::to_json(&doc)?,
    };
    output::emit(&out, args.out.as_deref())?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn another_schema_version_is_refused_with_both_numbers() {
        let e = check(&json!({"schema_version": 2, "scenarios": []})).unwrap_err();
        assert!(e.contains("schema_version 2"), "{e}");
        assert!(
            e.contains(&format!("reads schema_version {SCHEMA_VERSION}")),
            "{e}"
        );
        let e = check(&json!({"scenarios": []})).unwrap_err();
        assert!(e.contains("no schema_version"), "{e}");
    }

    #[test]
    fn a_missing_system_fact_is_named_by_its_path() {
        let e = check(&json!({"schema_version": SCHEMA_VERSION, "scenarios": [],
                              "tool": {"name": "cowscope", "version": "1"},
                              "system": {"page_size": 4096}}))
        .unwrap_err();
        assert!(e.contains("at system"), "{e}");
        assert!(e.contains("kernel_release"), "{e}");
    }
}
