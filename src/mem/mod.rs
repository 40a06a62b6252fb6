//! Evidence readers, one module per kernel format: smaps, pagemap, kpagecount/kpageflags,
//! PAGEMAP_SCAN, and the privilege probe that says what the evidence can prove.
//!
//! Every caller in cowscope goes through these readers; there is no second parser of any of
//! these formats. The layer's rules: mem/ depends only on `crate::kernel`; it returns
//! `std::io::Result` (callers add the context sentence) and never builds a document.

pub mod hex;
pub mod kpage;
pub mod pagemap;
pub mod privilege;
pub mod process;
pub mod scan;
pub mod smaps;
pub mod system;
