//! Command-line tools that talk to a running pgstash through its metrics
//! port: `pgstash top`, `pgstash explain` and `pgstash rules suggest`.

pub mod explain;
pub mod suggest;
pub mod top;

use crate::observe::digest::ShapeReport;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot read {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("no single query shape with a fingerprint starting {fingerprint:?} (8 digits or more) on {url}")]
    NoShape { fingerprint: String, url: String },
}

/// Reads `/queries` from the metrics port at `base` (e.g. http://127.0.0.1:9930).
pub fn fetch_queries(base: &str) -> Result<Vec<ShapeReport>, ToolError> {
    let url = format!("{}/queries", base.trim_end_matches('/'));
    let fail = |reason: String| ToolError::Fetch {
        url: url.clone(),
        reason,
    };
    let mut response = ureq::get(&url).call().map_err(|e| fail(e.to_string()))?;
    response
        .body_mut()
        .read_json::<Vec<ShapeReport>>()
        .map_err(|e| fail(e.to_string()))
}
