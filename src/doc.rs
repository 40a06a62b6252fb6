//! The documents: the envelope every JSON document carries (`schema_version`, `tool`,
//! `system`), one alias per document (`XDoc = Envelope<XBody>`), and the registry behind
//! `cowscope schema`.
//!
//! Field names are snake_case; sizes the kernel reports in kB keep a `_kb` suffix; counts are
//! plain numbers. Each body is defined by the producer that computes it (fork/, pages,
//! baseline/, experiments/) and flattened into [`Envelope`] here; producers never build an
//! envelope themselves (the commands in `cmd/` do).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mem::system::SystemInfo;

/// Version of the JSON documents' shape. Bump on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Which program wrote the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Tool {
    /// Always `"cowscope"`.
    pub name: String,
    /// The crate version that produced the document.
    pub version: String,
}

impl Tool {
    /// This build of cowscope.
    pub fn current() -> Self {
        Tool {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// A document: the common envelope plus a command-specific body flattened beside it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Envelope<T> {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Which program wrote this.
    pub tool: Tool,
    /// The machine the evidence came from.
    pub system: SystemInfo,
    /// The command's own fields.
    #[serde(flatten)]
    pub body: T,
}

impl<T> Envelope<T> {
    /// Wrap `body` with the current tool and the given system facts.
    pub fn new(system: SystemInfo, body: T) -> Self {
        Envelope {
            schema_version: SCHEMA_VERSION,
            tool: Tool::current(),
            system,
            body,
        }
    }
}

/// The `fork-report` document.
pub type ForkReportDoc = Envelope<crate::fork::ForkReportBody>;
/// The `baseline` document.
pub type BaselineDoc = Envelope<crate::baseline::BaselineBody>;
/// The `pages` document.
pub type PagesDoc = Envelope<crate::pages::PagesBody>;
/// The `experiment` document.
pub type ExperimentDoc = Envelope<crate::experiments::ExperimentBody>;
/// The `compare --format json` document (its `system` is the machine that compared).
pub type CompareDoc = Envelope<crate::compare::Comparison>;
/// The `inspect` document.
pub type InspectDoc = Envelope<crate::inspect::InspectBody>;
/// One record of `inspect --format jsonl`.
pub type InspectSampleDoc = Envelope<crate::inspect::SampleLine>;

/// The `trace` document.
pub type TraceDoc = Envelope<crate::trace::TraceBody>;

/// Names of the documents whose JSON Schema `cowscope schema` prints.
pub const DOCUMENTS: [&str; 9] = [
    "fork-report",
    "baseline",
    "pages",
    "experiment",
    "compare",
    "scenario-file",
    "inspect",
    "inspect-sample",
    "trace",
];

/// The JSON Schema (draft 2020-12) of one document, generated from the serde types.
///
/// # Errors
/// An unknown document name (usage).
pub fn schema(document: &str) -> crate::Result<serde_json::Value> {
    let schema = match document {
        "fork-report" => schemars::schema_for!(ForkReportDoc),
        "baseline" => schemars::schema_for!(BaselineDoc),
        "pages" => schemars::schema_for!(PagesDoc),
        "experiment" => schemars::schema_for!(ExperimentDoc),
        "compare" => schemars::schema_for!(CompareDoc),
        "scenario-file" => schemars::schema_for!(crate::fork::scenario_file::ScenarioFile),
        "inspect" => schemars::schema_for!(InspectDoc),
        "inspect-sample" => schemars::schema_for!(InspectSampleDoc),
        "trace" => schemars::schema_for!(TraceDoc),
        other => {
            return Err(crate::Error::usage(format!(
                "unknown document '{other}'; expected one of: {}",
                DOCUMENTS.join(", ")
            )));
        }
    };
    Ok(serde_json::to_value(schema)?)
}
