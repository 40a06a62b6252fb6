//! TEMPORARY shim of the stacks stage (replaced by the stacks15 branch).
#![allow(missing_docs, clippy::new_without_default)]
pub mod modules;
pub mod symbols;
pub mod unwind;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Loc {
    pub module: ModuleId,
    pub offset: u64,
}
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ModuleId(pub u32);
