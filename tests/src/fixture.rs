//! The setups the integration tests share: a fresh database holding a
//! test's schema, and the pgstash the test talks to in front of it —
//! caching by the test's rules, pooling in a given mode, or watched the way
//! an operator watches it.
//!
//! A test states only what is its own (the schema, the rules, the config
//! lines it changes); everything else is the harness's defaults (see
//! [`TestProxy::base_config`]). Where the store is Redis, `configure` says
//! so with [`RedisPrefix::configure`](crate::cache::RedisPrefix::configure)
//! or [`RedisProcess::configure`](crate::redis_process::RedisProcess::configure).

use pgstash::config::PoolMode;
use pgstash::Config;

use crate::cache::CachingProxy;
use crate::operate::OpsProxy;
use crate::postgres::TestPostgres;
use crate::proxy::TestProxy;

/// A fresh database in which each of `schema` has run, in order.
pub async fn database(schema: &[&str]) -> TestPostgres {
    let pg = TestPostgres::new().await;
    for sql in schema {
        pg.execute(sql).await;
    }
    pg
}

/// A fresh database holding `schema`, and a pgstash caching it by `rules`
/// (TOML text) in the in-process store, unless `configure` changes that.
pub async fn caching(
    schema: &[&str],
    rules: &str,
    configure: impl FnOnce(&mut Config),
) -> (TestPostgres, CachingProxy) {
    let pg = database(schema).await;
    let proxy = CachingProxy::start(&pg, rules, configure).await;
    (pg, proxy)
}

/// A fresh database holding `schema`, and a pgstash without a cache that
/// pools `size` server connections in `mode`.
pub async fn pooled(schema: &[&str], mode: PoolMode, size: u32) -> (TestPostgres, TestProxy) {
    let pg = database(schema).await;
    let proxy = TestProxy::with_pool(&pg, mode, size).await;
    (pg, proxy)
}

/// A fresh database holding `schema`, and a pgstash reading `rules` from a
/// file of its own (see [`OpsProxy::rules`]), with its metrics port and
/// slow-query log where the test can watch them.
pub async fn operated(
    schema: &[&str],
    rules: &str,
    configure: impl FnOnce(&mut Config),
) -> (TestPostgres, OpsProxy) {
    let pg = database(schema).await;
    let proxy = OpsProxy::with_rules(&pg, rules, configure).await;
    (pg, proxy)
}
