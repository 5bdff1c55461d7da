//! What operators watch: metrics, and the path of every finished query
//! (`event.rs`) to the slow-query log and the per-shape digest
//! (`record.rs`), the N+1 bursts found among them (`nplusone.rs`) and the
//! plans of slow shapes (`plans.rs`, fetched by `explain/`).
//! Served on the admin port by `admin/`.

pub mod digest;
pub mod event;
mod json;
pub mod logging;
mod logline;
pub mod metrics;
mod names;
pub mod nplusone;
pub mod plans;
pub mod record;
mod register;
pub mod slowlog;

pub use metrics::Metrics;
