//! What operators watch: metrics (and, later, the slow-query log and digest).

pub mod digest;
pub mod http;
mod logline;
pub mod metrics;
pub mod record;
pub mod slowlog;

pub use metrics::Metrics;
