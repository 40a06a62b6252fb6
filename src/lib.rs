#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]

// The layers, bottom to top (ARCHITECTURE.md): a module imports only from layers below it.

// 0. Kernel facts: page size, uname, sysfs choice files, meminfo.
pub mod kernel;

// 1. The evidence readers: pagemap, kpage, smaps, PAGEMAP_SCAN, privilege, system facts;
//    the perf-event reader (events, ring buffers, tracefs).
pub mod mem;
pub mod perf;

// 1b. Stacks: module maps, unwinding, symbols (used by the trace producer).
pub mod stacks;

// 2. The arena engine.
pub mod arena;

// 3. Errors, atomic output, progress on stderr.
pub mod error;
pub mod output;
pub mod progress;

// 4. The orchestrator and the other producers of document bodies.
pub mod baseline;
pub mod compare;
pub mod experiments;
pub mod fork;
pub mod inspect;
pub mod pages;
pub mod trace;

// 5. The documents: envelope, one alias per document, the schema registry.
pub mod doc;

// 6. The renderers: documents as tables, SVG, transcripts.
pub mod render;

// 7. The commands: options in, a document and an exit code out.
pub mod cmd;

pub use error::{Error, Result};
