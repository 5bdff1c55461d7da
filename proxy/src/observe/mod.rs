//! What operators watch: metrics (and, later, the slow-query log and digest).

pub mod http;
pub mod metrics;

pub use metrics::Metrics;
