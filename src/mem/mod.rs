//! Evidence readers, one module per kernel format: smaps, pagemap, kpagecount/kpageflags,
//! PAGEMAP_SCAN, and the privilege probe that says what the evidence can prove.

pub mod privilege;
pub mod report;
pub mod scan;
