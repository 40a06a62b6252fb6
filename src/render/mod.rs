//! Renderings for humans: a table and an SVG page map.

pub mod svg;
pub mod table;
pub mod trace;
