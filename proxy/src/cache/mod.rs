//! The cache: the one entry point a session calls (`engine.rs`), the
//! decisions behind it (`decide.rs`), keys, stores, fill coalescing, and
//! the write path with its one invalidation sink (`write_path.rs`,
//! `invalidate.rs`).

pub mod catalog;
pub mod claim;
pub mod decide;
pub mod decided;
pub mod engine;
pub mod entry;
pub mod fill;
pub mod freshness;
pub mod invalidate;
pub mod key;
pub mod payoff;
pub mod rules;
pub mod store;
pub mod write_path;

pub use decided::Read;
pub use engine::{Ask, Cache, CacheError, Fill, Form, Gate, Route, Routing};
pub use invalidate::{Invalidator, Source};
pub use key::{Identity, KeyBase, KeyBuilder, KeyScope, TableKey};
pub use store::{CacheStore, Lookup, MemoryStore, Store, StoreError};
pub use write_path::WritePath;
