//! The cache: keys, stores, fill coalescing and invalidation.

pub mod catalog;
pub mod decided;
pub mod engine;
pub mod entry;
pub mod fill;
pub mod key;
pub mod payoff;
pub mod store;

pub use decided::Read;
pub use engine::{Cache, Classified, Fill, Plan, ReadDecision, Writes};
pub use key::{KeyBase, KeyBuilder, TableKey};
pub use store::{Lookup, MemoryStore, Store, StoreError};
