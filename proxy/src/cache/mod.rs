//! The cache: keys, stores, fill coalescing and invalidation.

pub mod catalog;
pub mod fill;
pub mod key;
pub mod store;

pub use key::{KeyBase, KeyBuilder, TableKey};
pub use store::{Lookup, Store, StoreError};
