//! Renderings for humans: tables (and later an SVG page map).

pub mod table;
