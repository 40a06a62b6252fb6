//! Renderings of documents for humans: tables, SVG page maps, the seed transcript. A renderer
//! reads a document and draws what it carries; it never classifies or judges.

pub mod baseline;
pub mod compare;
pub mod experiment;
pub mod pages;
pub mod svg;
pub mod table;
pub mod trace;
