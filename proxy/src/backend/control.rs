//! pgstash's own connections to Postgres for questions, not for clients'
//! traffic (catalog facts, replication heartbeats and relation names),
//! through `tokio-postgres`.
//!
//! The connection is pgstash's own (`connect.rs`): negotiated with libpq's
//! `sslmode` semantics (`tokio-postgres`' own TLS knows only
//! disable/prefer/require and none of libpq's fallbacks) and logged in
//! with pass-through too (`tokio-postgres` knows only passwords), then
//! handed to `tokio-postgres` already logged in (`greeted.rs`).

use std::sync::Arc;
use std::time::Duration;

use pgstash_rules::TableRef;

use super::connect::{connect_with, ConnectTarget};
use super::error::BackendError;
use super::greeted::Greeted;

/// How long opening a control connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `target`'s database as its user; the connection task runs
/// in the background until the client is dropped.
pub async fn connect(
    target: &ConnectTarget,
    application_name: &str,
) -> Result<tokio_postgres::Client, BackendError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, log_in(target, application_name)).await {
        Ok(client) => client,
        Err(_) => Err(BackendError::ConnectTimeout(CONNECT_TIMEOUT)),
    }
}

async fn log_in(
    target: &ConnectTarget,
    application_name: &str,
) -> Result<tokio_postgres::Client, BackendError> {
    let conn = connect_with(target, &[("application_name", application_name)]).await?;
    if conn.reader.has_buffered() {
        return Err(BackendError::Unexpected {
            tag: '?',
            during: "startup",
        });
    }
    let mut config = tokio_postgres::Config::new();
    config
        .user(&target.user)
        .dbname(&target.database)
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    let (client, connection) = config
        .connect_raw(Greeted::new(conn), tokio_postgres::NoTls)
        .await
        .map_err(|e| BackendError::Control(Arc::new(e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The partitioned tables `oid` is a partition of, nearest first (none
/// for a table that is not a partition).
pub async fn partition_ancestors(
    client: &tokio_postgres::Client,
    oid: u32,
) -> Result<Vec<TableRef>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text \
             FROM pg_partition_ancestors($1::oid::regclass) WITH ORDINALITY AS a(relid, depth) \
             JOIN pg_class c ON c.oid = a.relid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE a.relid <> $1::oid::regclass ORDER BY a.depth",
            &[&oid],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| TableRef::new(Some(row.get::<_, &str>(0)), row.get::<_, &str>(1)))
        .collect())
}
