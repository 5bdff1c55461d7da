//! The metrics port: `/metrics` (Prometheus text), `/healthz` (the process
//! is up) and `/readyz` (upstream reachable, and the cache store reachable
//! unless deliberately absent).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::backend::connect::open_stream;
use crate::context::Context;

/// How long `/readyz` waits for the upstream to accept a connection.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub fn router(context: Arc<Context>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/queries", get(queries))
        .with_state(context)
}

/// Serves the metrics port until shutdown.
pub async fn serve(listener: TcpListener, context: Arc<Context>) {
    let shutdown = context.shutdown.clone();
    let app = router(context);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "metrics port stopped");
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn metrics(State(context): State<Arc<Context>>) -> impl IntoResponse {
    refresh_gauges(&context);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        context.metrics.render(),
    )
}

/// Gauges read from their sources at scrape time.
fn refresh_gauges(context: &Context) {
    let (mut idle, mut active) = (0i64, 0i64);
    for (_, state) in context.pools.states() {
        idle += i64::from(state.idle_connections);
        active += i64::from(state.connections.saturating_sub(state.idle_connections));
    }
    let m = &context.metrics;
    m.upstream_connections
        .with_label_values(&["idle"])
        .set(idle);
    m.upstream_connections
        .with_label_values(&["active"])
        .set(active);
    if let Some((entries, bytes)) = context.cache.as_ref().and_then(|c| c.store.memory_usage()) {
        m.cache_entries.set(entries as i64);
        m.cache_bytes.set(bytes as i64);
    }
}

/// The query digest as JSON, most total time first.
async fn queries(State(context): State<Arc<Context>>) -> impl IntoResponse {
    axum::Json(context.digest.report())
}

async fn ready(State(context): State<Arc<Context>>) -> impl IntoResponse {
    let upstream = context.config.load().upstream.clone();
    let upstream_ok = matches!(
        tokio::time::timeout(READY_PROBE_TIMEOUT, open_stream(&upstream)).await,
        Ok(Ok(_))
    );
    if !upstream_ok {
        return (StatusCode::SERVICE_UNAVAILABLE, "upstream unreachable\n");
    }
    if let Some(cache) = &context.cache {
        if !cache.store.ready().await {
            return (StatusCode::SERVICE_UNAVAILABLE, "cache store unavailable\n");
        }
    }
    (StatusCode::OK, "ready\n")
}
