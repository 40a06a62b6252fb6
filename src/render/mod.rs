//! Renderings for humans: a table and an SVG page map.

pub mod inspect_svg;
pub mod inspect_table;
pub mod svg;
pub mod table;
