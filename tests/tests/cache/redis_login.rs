//! One Redis, where lookups, fills and invalidations go over pgstash's own
//! connections (`pipe/`) rather than fred's: they log in as the URL's
//! ACL user, use the URL's database, and recover when Redis drops them.
//! A redis-server of the test's own, with the default user off, so every
//! connection must log in.

use pgstash_tests::cache::CachingProxy;
use pgstash_tests::fixture::caching;
use pgstash_tests::postgres::value;
use pgstash_tests::redis_process::{RedisOptions, RedisProcess};
use pgstash_tests::TestPostgres;

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one')";
const RULES: &str = "[[rule]]\nname = \"t\"\ntables = [\"t\"]\nttl = \"5m\"\n";
const READ: &str = "SELECT v FROM t WHERE id = 1";
const USER: &str = "pgstash";
const PASSWORD: &str = "redis_pw_9";
const DATABASE: &str = "3";

async fn through(redis: &RedisProcess, password: &str) -> (TestPostgres, CachingProxy) {
    let url = format!(
        "redis://{USER}:{password}@127.0.0.1:{}/{DATABASE}",
        redis.port
    );
    caching(&[TABLE], RULES, |c| {
        c.cache.key_prefix = pgstash_tests::unique_name("login");
        c.redis = Some(url);
    })
    .await
}

/// A Redis of the test's own where every connection must log in.
fn acl_redis() -> RedisProcess {
    RedisProcess::start_with(RedisOptions {
        user: Some((USER, PASSWORD)),
        ..Default::default()
    })
}

fn keys_in(redis: &RedisProcess, database: &str) -> u64 {
    let out = redis.cli(&["-n", database, "DBSIZE"]);
    out.trim().parse().expect("DBSIZE")
}

/// Reads until a read is a hit (the fill is written in the background).
async fn a_read_hits(proxy: &CachingProxy) -> bool {
    let client = proxy.connect().await;
    for _ in 0..50 {
        let hits = proxy.hits("t");
        assert_eq!(value(&client, READ, true).await, "one");
        if proxy.hits("t") > hits {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_log_in_as_the_acl_user_and_use_the_urls_database() {
    let redis = acl_redis();
    let (_pg, proxy) = through(&redis, PASSWORD).await;
    assert!(a_read_hits(&proxy).await, "a hit from the logged-in Redis");
    assert!(
        keys_in(&redis, DATABASE) > 0,
        "entries are in database {DATABASE}"
    );
    assert_eq!(keys_in(&redis, "0"), 0, "nothing is in database 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_sends_every_read_upstream() {
    let redis = acl_redis();
    let (_pg, proxy) = through(&redis, "not_the_password").await;
    let client = proxy.connect().await;
    for extended in [false, true, false, true] {
        assert_eq!(value(&client, READ, extended).await, "one");
    }
    assert_eq!(proxy.hits("t"), 0, "nothing was served from Redis");
    assert_eq!(keys_in(&redis, DATABASE), 0, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_come_back_and_serve_again() {
    let redis = acl_redis();
    let (_pg, proxy) = through(&redis, PASSWORD).await;
    assert!(
        a_read_hits(&proxy).await,
        "a hit before the connections drop"
    );
    // Every client connection, pgstash's own and fred's alike.
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    let client = proxy.connect().await;
    assert_eq!(value(&client, READ, true).await, "one");
    assert!(
        a_read_hits(&proxy).await,
        "hits again once the connections are back (and the epoch renewed)"
    );
}
