//! `cowscope pages`: smaps, pagemap, kpagecount and kpageflags for a process's memory.

use std::path::PathBuf;

use crate::doc::{Envelope, PagesDoc};
use crate::error::{EXIT_OK, Result};
use crate::output;
use crate::pages::PagesRequest;

use super::{DocFormat, parse_number};

/// `pages` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The process to inspect.
    #[arg(long)]
    pub pid: String,
    /// START-END in hex (0x optional). Without it, every VMA is summarised.
    #[arg(long)]
    pub range: Option<String>,
    /// Add one row per page.
    #[arg(long)]
    pub per_page: bool,
    /// Never use the PAGEMAP_SCAN ioctl; read pagemap with plain preads.
    #[arg(long)]
    pub no_scan: bool,
    /// json, or table (one row per VMA).
    #[arg(long, value_enum, default_value_t = DocFormat::Json)]
    pub format: DocFormat,
    /// Write the result here atomically instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Collect the evidence and build the document.
///
/// # Errors
/// See [`crate::pages::pages`].
pub fn report(req: &PagesRequest) -> Result<PagesDoc> {
    let body = crate::pages::pages(req)?;
    Ok(Envelope::new(crate::mem::system::detect(), body))
}

/// Run the command.
///
/// # Errors
/// Bad options, an unreadable process, or a failure writing the output.
pub fn run(args: Args) -> Result<i32> {
    let req = PagesRequest {
        pid: parse_number::<i32>("--pid", &args.pid)?,
        range: args
            .range
            .as_deref()
            .map(crate::pages::parse_range)
            .transpose()?,
        per_page: args.per_page,
        force_fallback: args.no_scan,
    };
    let doc = report(&req)?;
    let text = match args.format {
        DocFormat::Json => output::to_json(&doc)?,
        DocFormat::Table => crate::render::pages::table(&doc),
    };
    output::emit(&text, args.out.as_deref())?;
    Ok(EXIT_OK)
}
