//! What operators watch: metrics, and the path of every finished query
//! (`event.rs`) to the slow-query log and the per-shape digest
//! (`record.rs`), and the N+1 bursts found among them (`nplusone.rs`).
//! Served on the admin port by `admin/`.

pub mod digest;
pub mod event;
mod json;
pub mod logging;
mod logline;
pub mod metrics;
pub mod nplusone;
pub mod record;
mod register;
pub mod slowlog;

pub use metrics::Metrics;
