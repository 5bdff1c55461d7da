//! pgstash's own connections to Postgres for questions, not for clients'
//! traffic (catalog facts, replication heartbeats and relation names),
//! through `tokio-postgres`.
//!
//! The transport is pgstash's own (`negotiate.rs`), handed to
//! `tokio-postgres` already encrypted: one negotiation, with libpq's
//! `sslmode` semantics, for every upstream connection (`tokio-postgres`'
//! own TLS knows only disable/prefer/require and none of libpq's
//! fallbacks).

use std::time::Duration;

use pgstash_rules::TableRef;

use super::connect::ConnectTarget;
use super::error::BackendError;
use super::negotiate::{self, LoginError};
use crate::net::Stream;

/// How long opening a control connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `target`'s database as its user; the connection task runs
/// in the background until the client is dropped.
pub async fn connect(
    target: &ConnectTarget,
    application_name: &str,
) -> Result<tokio_postgres::Client, BackendError> {
    let mut config = tokio_postgres::Config::new();
    config
        .user(&target.user)
        .dbname(&target.database)
        .application_name(application_name)
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    if let Some(password) = &target.password {
        config.password(password);
    }
    let login = negotiate::login(&target.upstream, |transport| {
        log_in(&config, transport.stream)
    });
    match tokio::time::timeout(CONNECT_TIMEOUT, login).await {
        Ok(client) => client,
        Err(_) => Err(BackendError::ConnectTimeout(CONNECT_TIMEOUT)),
    }
}

async fn log_in(
    config: &tokio_postgres::Config,
    stream: Stream,
) -> Result<tokio_postgres::Client, LoginError> {
    match config.connect_raw(stream, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(client)
        }
        // tokio-postgres does not say whether authentication had finished:
        // an error of class 28 (invalid authorization) is one of its
        // refusals; any other is taken as final (a retry of a class 28
        // refusal made after authentication, "role does not exist" under
        // trust, fails again the same way).
        Err(e) => {
            let refused = e.code().is_some_and(|c| c.code().starts_with("28"));
            let e = BackendError::Control(std::sync::Arc::new(e));
            Err(if refused {
                LoginError::Refused(e)
            } else {
                LoginError::Failed(e)
            })
        }
    }
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
