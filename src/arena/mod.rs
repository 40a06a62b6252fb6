//! The arena engine: one anonymous mapping between guard regions, bump allocation with checked
//! arithmetic, a ledger of every block, red zones, dumps, snapshots and diffs.

/// Why the arena refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArenaError {
    /// Placeholder until the engine lands.
    #[error("the arena engine is not built yet")]
    NotBuilt,
}
