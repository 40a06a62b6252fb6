#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod arena;
pub mod baseline;
pub mod compare;
pub mod error;
pub mod experiments;
pub mod fork;
pub mod guest;
pub mod mem;
pub mod output;
pub mod render;
pub mod report;
pub mod scenarios;
pub mod system;
pub mod trace;

pub use error::{Error, Result};
