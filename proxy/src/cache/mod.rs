//! The cache: keys, stores, fill coalescing and invalidation.

pub mod catalog;
pub mod engine;
pub mod entry;
pub mod fill;
pub mod key;
pub mod store;

pub use engine::{Cache, Classified, Fill, Plan, Writes};
pub use key::{KeyBase, KeyBuilder, TableKey};
pub use store::{Lookup, MemoryStore, Store, StoreError};
