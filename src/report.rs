//! The JSON envelope every cowscope document carries: `schema_version`, `tool`, `system`.
//!
//! Field names are snake_case; sizes the kernel reports in kB keep a `_kb` suffix; counts are
//! plain numbers. Per-command bodies live with their commands and are flattened into
//! [`Envelope`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// Facts about the machine that decide what the evidence can prove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SystemInfo {
    /// `uname -r`.
    pub kernel_release: String,
    /// Base page size in bytes.
    pub page_size: u64,
    /// The selected mode of `/sys/kernel/mm/transparent_hugepage/enabled`
    /// (`always`, `madvise`, `never`), or `unavailable`.
    pub thp_enabled: String,
    /// PMD-sized THP in kB (`hpage_pmd_size`), when the kernel has THP.
    pub thp_pmd_size_kb: Option<u64>,
    /// Whether `/proc/<pid>/pagemap` shows real PFNs to us (needs CAP_SYS_ADMIN). When false,
    /// PFN 0 means "unknown" and PFN equality proves nothing.
    pub pfn_visible: bool,
    /// Whether `/proc/kpagecount` and `/proc/kpageflags` can be read.
    pub kpage_readable: bool,
    /// Whether the PAGEMAP_SCAN ioctl (Linux 6.7+) works here.
    pub pagemap_scan: bool,
    /// Whether soft-dirty tracking works (CONFIG_MEM_SOFT_DIRTY: `clear_refs` 4, then pagemap
    /// bit 55 marks pages written since). When true, fork-report also says which pages each
    /// process wrote after the fork.
    #[serde(default)]
    pub soft_dirty: bool,
    /// Effective user id of the process that collected the evidence.
    pub euid: u32,
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

/// Names of the documents whose JSON Schema `cowscope schema` prints.
pub const DOCUMENTS: [&str; 5] = ["fork-report", "baseline", "pages", "experiment", "trace"];

/// The JSON Schema (draft 2020-12) of one document, generated from the serde types.
///
/// # Errors
/// An unknown document name (usage).
pub fn schema(document: &str) -> crate::Result<serde_json::Value> {
    let schema = match document {
        "fork-report" => schemars::schema_for!(crate::fork::ForkReport),
        "baseline" => schemars::schema_for!(crate::baseline::BaselineReport),
        "pages" => schemars::schema_for!(crate::mem::report::PagesReport),
        "experiment" => schemars::schema_for!(crate::experiments::ExperimentReport),
        "trace" => schemars::schema_for!(crate::trace::TraceReport),
        other => {
            return Err(crate::Error::usage(format!(
                "unknown document '{other}'; expected one of: {}",
                DOCUMENTS.join(", ")
            )));
        }
    };
    Ok(serde_json::to_value(schema)?)
}
