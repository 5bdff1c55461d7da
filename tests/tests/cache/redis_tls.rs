//! The Redis store over TLS (`rediss://`) with an ACL user: a redis-server
//! of the test's own with a TLS port, a test CA and the default user off,
//! so every connection must log in. pgstash caches through it with the
//! right CA and password (and a client certificate when Redis asks for
//! one); with a wrong password, an unknown CA or no certificate, the store
//! is unavailable and every query goes upstream with the right answer.

use pgstash_tests::cache::CachingProxy;
use pgstash_tests::certs::{Issued, TestCa};
use pgstash_tests::fixture::caching;
use pgstash_tests::postgres::value;
use pgstash_tests::redis_process::{RedisOptions, RedisProcess, RedisTls};
use pgstash_tests::TestPostgres;

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one')";
const RULES: &str = "[[rule]]\nname = \"t\"\ntables = [\"t\"]\nttl = \"5m\"\n";
const READ: &str = "SELECT v FROM t WHERE id = 1";
const USER: &str = "pgstash";
const PASSWORD: &str = "redis_pw_7";

/// A TLS Redis, its CA, a CA it does not use, and a client certificate.
struct TlsRedis {
    redis: RedisProcess,
    ca: TestCa,
    other_ca: TestCa,
    client: Issued,
}

impl TlsRedis {
    fn start(client_certs: bool) -> TlsRedis {
        let ca = TestCa::new("redis");
        let other_ca = TestCa::new("other");
        let server = ca.server("redis-server", &["localhost", "127.0.0.1"]);
        let client = ca.client("redis-client", USER);
        let redis = RedisProcess::start_with(RedisOptions {
            tls: Some(RedisTls {
                cert: &server.cert,
                key: &server.key,
                ca: &ca.cert_path,
                client_certs,
            }),
            user: Some((USER, PASSWORD)),
        });
        TlsRedis {
            redis,
            ca,
            other_ca,
            client,
        }
    }

    fn tls_port(&self) -> u16 {
        self.redis.tls_port.expect("a TLS port")
    }

    fn url(&self, password: &str) -> String {
        format!("rediss://{USER}:{password}@127.0.0.1:{}", self.tls_port())
    }

    fn keys(&self) -> u64 {
        self.redis.cli(&["DBSIZE"]).trim().parse().expect("DBSIZE")
    }
}

/// Reads twice; true when the second read was a hit.
async fn second_read_hits(proxy: &CachingProxy) -> bool {
    let client = proxy.connect().await;
    assert_eq!(value(&client, READ, false).await, "one");
    proxy.wait_for_fills("t", 1).await;
    let hits = proxy.hits("t");
    assert_eq!(value(&client, READ, false).await, "one");
    proxy.hits("t") == hits + 1
}

/// Reads a few times: every answer is right and none comes from the store.
async fn reads_go_upstream(proxy: &CachingProxy, what: &str) {
    let client = proxy.connect().await;
    for extended in [false, true, false, true] {
        assert_eq!(value(&client, READ, extended).await, "one", "{what}");
    }
    assert_eq!(proxy.hits("t"), 0, "{what}: nothing was served from Redis");
}

async fn through(configure: impl FnOnce(&mut pgstash::Config)) -> (TestPostgres, CachingProxy) {
    caching(&[TABLE], RULES, |c| {
        c.cache.key_prefix = pgstash_tests::unique_name("tls");
        configure(c);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgstash_caches_through_rediss_as_an_acl_user() {
    let tls = TlsRedis::start(false);
    let (url, ca) = (tls.url(PASSWORD), tls.ca.cert_path.clone());
    let (_pg, proxy) = through(|c| {
        c.redis = Some(url);
        c.cache.redis_ca = Some(ca);
    })
    .await;
    assert!(second_read_hits(&proxy).await, "a hit from Redis over TLS");
    assert!(tls.keys() > 0, "entries are in the TLS Redis");
    assert!(
        tls.redis.clients_on(tls.tls_port()) > 0,
        "pgstash is connected to the TLS port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_when_redis_asks_for_one() {
    let tls = TlsRedis::start(true);
    let (url, ca) = (tls.url(PASSWORD), tls.ca.cert_path.clone());
    let (cert, key) = (tls.client.cert.clone(), tls.client.key.clone());
    let (_pg, proxy) = through(|c| {
        c.redis = Some(url.clone());
        c.cache.redis_ca = Some(ca.clone());
        c.cache.redis_cert = Some(cert);
        c.cache.redis_key = Some(key);
    })
    .await;
    assert!(
        second_read_hits(&proxy).await,
        "a hit with a client certificate"
    );

    let (_pg, without) = through(|c| {
        c.redis = Some(url);
        c.cache.redis_ca = Some(ca);
    })
    .await;
    reads_go_upstream(&without, "no client certificate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_an_unknown_ca_leaves_the_store_unavailable() {
    let tls = TlsRedis::start(false);
    let (wrong, ca) = (tls.url("not-the-password"), tls.ca.cert_path.clone());
    let (_pg, proxy) = through(|c| {
        c.redis = Some(wrong);
        c.cache.redis_ca = Some(ca);
    })
    .await;
    reads_go_upstream(&proxy, "wrong password").await;

    let (url, other) = (tls.url(PASSWORD), tls.other_ca.cert_path.clone());
    let (_pg, proxy) = through(|c| {
        c.redis = Some(url);
        c.cache.redis_ca = Some(other);
    })
    .await;
    reads_go_upstream(&proxy, "unknown CA").await;
    assert_eq!(tls.keys(), 0, "nothing was written to Redis");
}
