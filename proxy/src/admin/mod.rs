//! The admin port: `/metrics` (Prometheus text), `/healthz` (the process
//! is up), `/readyz` (upstream reachable, and the cache store reachable
//! unless deliberately absent), `/queries` (the digest), and the admin
//! actions `/admin/invalidate`, `/admin/flush` and `/admin/reload`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::backend::negotiate::open_stream;
use crate::cache::{CacheStore, Source};
use crate::context::Context;

/// How long `/readyz` waits for the upstream to accept a connection.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub fn router(context: Arc<Context>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/queries", get(queries))
        .route("/admin/invalidate", post(admin_invalidate))
        .route("/admin/flush", post(admin_flush))
        .route("/admin/reload", post(admin_reload))
        .with_state(context)
}

/// Serves the metrics port until shutdown.
pub async fn serve(listener: TcpListener, context: Arc<Context>) {
    let shutdown = context.shutdown.clone();
    let app = router(context).into_make_service_with_connect_info::<SocketAddr>();
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
    let states = context.pools.states();
    let size = i64::from(context.config.load().pool.size);
    // Per-worker runtimes split each (database, user)'s size over their pools.
    let keys: std::collections::HashSet<_> = states.iter().map(|(k, _)| k).collect();
    context.metrics.pool_size.set(size * keys.len() as i64);
    for (_, state) in states {
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
    let store = context.cache.as_ref().map(|c| c.store());
    if let Some((entries, bytes)) = store.and_then(|s| s.memory_usage()) {
        m.cache_entries.set(entries as i64);
        m.cache_bytes.set(bytes as i64);
    }
    if let Some(cache) = &context.cache {
        for (database, proof) in cache.invalidator().freshness().proofs() {
            let lag = proof.lag().map_or(f64::INFINITY, |l| l.as_secs_f64());
            m.replication_lag
                .with_label_values(&[database.as_str()])
                .set(lag);
            m.replication_caught_up
                .with_label_values(&[database.as_str()])
                .set(i64::from(proof.is_current()));
        }
    }
    if let Some(live) = store.and_then(|s| s.local_live()) {
        m.local_down.set(i64::from(!live));
    }
    let failed = crate::observe::logging::write_errors();
    m.log_write_errors
        .inc_by(failed.saturating_sub(m.log_write_errors.get()));
}

/// The query digest as JSON, most total time first, each shape judged
/// for caching with its database's catalog.
async fn queries(State(context): State<Arc<Context>>) -> impl IntoResponse {
    let mut report = context.digest.report();
    for shape in &mut report {
        let target = context.connect_target(&shape.database, &shape.user);
        let catalog = context.catalogs.get(&shape.database, &target).await;
        crate::observe::digest::judge(shape, &*catalog);
    }
    axum::Json(report)
}

/// Opens the upstream transport as connections do (TLS per `sslmode`) and
/// checks that Postgres is there: an answered SSLRequest (one byte, `S` or
/// `N`; a plain TCP listener that is not Postgres sends none) or a TLS
/// handshake proves it.
async fn speaks_postgres(
    upstream: &crate::config::Upstream,
) -> Result<bool, crate::backend::BackendError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Negotiated as every upstream connection is: with a TLS sslmode, a
    // server that cannot give it is not ready.
    let transport = open_stream(upstream).await?;
    if transport.answered {
        return Ok(true);
    }
    // A plain transport has exchanged nothing yet: ask, as libpq would.
    let mut stream = transport.stream;
    stream
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await?;
    let mut answer = [0u8; 1];
    let n = stream.read(&mut answer).await?;
    Ok(n == 1 && (answer[0] == b'N' || answer[0] == b'S'))
}

/// `?store=1` on `/readyz`: the cache store's health counts too.
#[derive(serde::Deserialize, Default)]
struct ReadyParams {
    #[serde(default)]
    store: Option<String>,
}

/// Ready means "can serve queries": the upstream answers. A cache store
/// that is down costs hits, not answers (queries go upstream), so it makes
/// the instance unready only when asked for (`/readyz?store=1`); either
/// way the body says how the store and the replication streams are.
async fn ready(
    State(context): State<Arc<Context>>,
    Query(params): Query<ReadyParams>,
) -> impl IntoResponse {
    let upstream = context.config.load().upstream.clone();
    let upstream_ok = matches!(
        tokio::time::timeout(READY_PROBE_TIMEOUT, speaks_postgres(&upstream)).await,
        Ok(Ok(true))
    );
    if !upstream_ok {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream unreachable\n".to_owned(),
        );
    }
    let mut body = String::from("ready\n");
    let Some(cache) = &context.cache else {
        return (StatusCode::OK, body);
    };
    let store_ok = cache.store().ready().await;
    let strict = matches!(params.store.as_deref(), Some("1" | "true" | "yes"));
    if !store_ok {
        if strict {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "cache store unavailable\n".to_owned(),
            );
        }
        body.push_str("cache store unavailable: cached queries go upstream\n");
    }
    // A replication stream behind its bound costs cache hits, not answers:
    // reads go upstream, so the instance stays ready.
    for (database, proof) in cache.invalidator().freshness().proofs() {
        let state = match proof.lag() {
            Some(lag) if proof.is_current() => format!("caught up (lag {lag:.3?})"),
            Some(lag) => format!("behind (lag {lag:.3?}): reads go upstream"),
            None => "not proven yet: reads go upstream".to_owned(),
        };
        body.push_str(&format!("replication {database}: {state}\n"));
    }
    (StatusCode::OK, body)
}

/// Whether an admin request may proceed; the error response otherwise.
fn admin_allowed(
    context: &Context,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, &'static str)> {
    let config = context.config.load();
    if !config.admin.enabled {
        return Err((
            StatusCode::NOT_FOUND,
            "admin actions are disabled ([admin] enabled = false)\n",
        ));
    }
    match &config.admin.token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(token.as_str()) {
                return Err((StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n"));
            }
        }
        None if !peer.ip().is_loopback() => {
            return Err((
                StatusCode::FORBIDDEN,
                "admin actions without a token are loopback-only\n",
            ));
        }
        None => {}
    }
    Ok(())
}

/// The cache an admin request acts on, or the response refusing it.
fn admin_cache(
    context: &Context,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Arc<crate::cache::Cache>, (StatusCode, String)> {
    admin_allowed(context, peer, headers).map_err(|(code, text)| (code, text.to_owned()))?;
    context.cache.clone().ok_or((
        StatusCode::CONFLICT,
        "caching is not configured\n".to_owned(),
    ))
}

#[derive(serde::Deserialize)]
struct InvalidateParams {
    database: String,
    table: String,
}

/// `POST /admin/invalidate?database=D&table=T`: entries that read T go.
async fn admin_invalidate(
    State(context): State<Arc<Context>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<InvalidateParams>,
) -> (StatusCode, String) {
    let cache = match admin_cache(&context, peer, &headers) {
        Ok(cache) => cache,
        Err(refused) => return refused,
    };
    let table: pgstash_rules::TableRef = match params.table.parse() {
        Ok(table) => table,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let writes = pgstash_rules::Writes {
        tables: vec![table],
        all: false,
        ddl: false,
    };
    let invalidator = cache.invalidator();
    if let Err(e) = invalidator
        .record(Source::ADMIN, &params.database, &writes)
        .await
    {
        let text = format!("invalidation not recorded: {e}\n");
        return (StatusCode::SERVICE_UNAVAILABLE, text);
    }
    tracing::info!(database = %params.database, table = %params.table, %peer, "admin: table invalidated");
    (
        StatusCode::OK,
        format!("invalidated {}.{}\n", params.database, params.table),
    )
}

/// `POST /admin/flush`: every entry goes.
async fn admin_flush(
    State(context): State<Arc<Context>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let cache = match admin_cache(&context, peer, &headers) {
        Ok(cache) => cache,
        Err(refused) => return refused,
    };
    match cache.invalidator().flush(Source::ADMIN).await {
        Ok(()) => {
            tracing::info!(%peer, "admin: cache flushed");
            (StatusCode::OK, "flushed\n".to_owned())
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("flush failed: {e}\n"),
        ),
    }
}

/// `POST /admin/reload`: re-reads rules.toml now.
async fn admin_reload(
    State(context): State<Arc<Context>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let cache = match admin_cache(&context, peer, &headers) {
        Ok(cache) => cache,
        Err(refused) => return refused,
    };
    match cache.decider().reload() {
        Ok(()) => (StatusCode::OK, "rules reloaded\n".to_owned()),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")),
    }
}
