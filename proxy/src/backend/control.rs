//! pgstash's own connections to Postgres for questions, not for clients'
//! traffic (catalog facts, replication heartbeats and relation names),
//! through `tokio-postgres`.

use std::time::Duration;

use pgstash_rules::TableRef;

use super::connect::ConnectTarget;
use crate::config::UpstreamHost;

/// Connects to `target`'s database as its user; the connection task runs
/// in the background until the client is dropped.
pub async fn connect(
    target: &ConnectTarget,
    application_name: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .user(&target.user)
        .dbname(&target.database)
        .port(target.upstream.port)
        .application_name(application_name)
        .connect_timeout(Duration::from_secs(5));
    if let Some(password) = &target.password {
        config.password(password);
    }
    match &target.upstream.host {
        UpstreamHost::Tcp(host) => config.host(host),
        UpstreamHost::Unix(dir) => config.host_path(dir),
    };
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
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
