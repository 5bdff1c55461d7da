//! The cache: keys, stores, fill coalescing and invalidation.

pub mod catalog;
pub mod engine;
pub mod fill;
pub mod key;
pub mod store;

pub use engine::{Cache, Fill, Plan, Writes};
pub use key::{KeyBase, KeyBuilder, TableKey};
pub use store::{Lookup, Store, StoreError};
