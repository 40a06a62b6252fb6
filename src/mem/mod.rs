//! Evidence readers, one module per kernel format: smaps, pagemap, kpagecount/kpageflags,
//! PAGEMAP_SCAN, and the privilege probe that says what the evidence can prove.
//!
//! Every caller in cowscope goes through these readers; there is no second parser of any of
//! these formats.

pub mod kpage;
pub mod pagemap;
pub mod privilege;
pub mod report;
pub mod scan;
pub mod smaps;
