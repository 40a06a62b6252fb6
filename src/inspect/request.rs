//! What a snapshot is asked ([`InspectRequest`]) and what the machine lets it prove
//! ([`Context`]): the two inputs every stage of the pipeline reads.

use super::model::ZeroInfo;
use super::zero::ZeroPfns;
use crate::mem::scan;

/// What `inspect` was asked.
#[derive(Debug, Clone, Default)]
pub struct InspectRequest {
    /// The process whose descendants (or given children) are inspected.
    pub pid: i32,
    /// Explicit children (each must be a descendant of `pid`); empty: every live descendant.
    pub children: Vec<i32>,
    /// SIGSTOP every target for the read, and resume it.
    pub freeze: bool,
    /// Restrict the page walk to `[start, end)` (page aligned outward).
    pub range: Option<(u64, u64)>,
    /// Page-map cells per VMA (0: none). The SVG renderer asks for them.
    pub cells: usize,
    /// Add run-length rows per page class (`--per-page`; needs `range`).
    pub per_page: bool,
}

/// Most pages `--per-page` may cover.
pub const MAX_PER_PAGE: u64 = 1 << 20;

/// What the machine lets a snapshot prove.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// PFNs visible.
    pub pfn_visible: bool,
    /// kpagecount readable (pools).
    pub kpage_readable: bool,
    /// PAGEMAP_SCAN available.
    pub scan: bool,
    /// The zero page frames (with visible PFNs).
    pub zero: ZeroPfns,
}

impl Context {
    /// Probe privilege, PAGEMAP_SCAN and the zero page frames (cached after the first call).
    pub fn detect() -> Context {
        let p = crate::mem::privilege::detect();
        Context {
            pfn_visible: p.pfn_visible,
            kpage_readable: p.kpage_readable,
            scan: scan::available(),
            zero: super::zero::learn(),
        }
    }

    /// How zero pages were recognised, as the document says it.
    pub fn zero_info(&self) -> ZeroInfo {
        ZeroInfo {
            pfns: self.zero,
            by_pagemap_scan: !self.pfn_visible && self.scan,
        }
    }
}
