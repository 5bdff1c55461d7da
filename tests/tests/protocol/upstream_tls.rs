//! TLS from pgstash to Postgres, as libpq's `sslmode` defines it: every
//! mode is tried against a throwaway Postgres with a test CA, through
//! pgstash (a real client running a query) and through libpq itself (psql
//! given the very same URL), and the two must agree on whether the
//! connection works and whether it is encrypted (`pg_stat_ssl`).
//!
//! The server logs in `app` over TLS only (`hostssl … scram-sha-256`),
//! `plain_user` without TLS only (`hostnossl`), and `cert_user` by client
//! certificate (`hostssl … cert`); its certificate names `localhost` only,
//! so `127.0.0.1` is a wrong host name for it.

use std::path::Path;
use std::process::Command;

use pgstash::config::Upstream;
use pgstash_tests::cache::CachingProxy;
use pgstash_tests::certs::TestCa;
use pgstash_tests::operate::throwaway::{Setup, ThrowawayPostgres};
use pgstash_tests::postgres::{describe, try_connect};
use pgstash_tests::{TestPostgres, TestProxy};

pub const PASSWORD: &str = "tls_pw_42";

/// Whether the session's own connection is encrypted, as Postgres sees it.
const SSL_OF_THIS_SESSION: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

const HBA: &str = "\
local all all trust
hostssl all cert_user 127.0.0.1/32 cert
hostssl all app 127.0.0.1/32 scram-sha-256
hostnossl all plain_user 127.0.0.1/32 scram-sha-256
";

/// A throwaway Postgres with TLS on, its CA, and a CA it does not use.
pub struct TlsPostgres {
    pub server: ThrowawayPostgres,
    pub ca: TestCa,
    pub other_ca: TestCa,
    /// A client certificate for `cert_user`, from `ca`.
    pub client: pgstash_tests::certs::Issued,
}

impl TlsPostgres {
    /// Starts one, or `None` when the server binaries are not installed.
    pub fn start() -> Option<TlsPostgres> {
        Self::start_with("")
    }

    /// Starts one with more `postgres` options.
    pub fn start_with(options: &str) -> Option<TlsPostgres> {
        let ca = TestCa::new("pg");
        let other_ca = TestCa::new("other");
        let cert = ca.server("pg-server", &["localhost"]);
        let client = ca.client("cert-user", "cert_user");
        let ca_pem = ca.cert_pem();
        let options = format!(
            "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key \
             -c ssl_ca_file=ca.crt -c log_connections=on {options}"
        );
        let server = ThrowawayPostgres::start_setup(Setup {
            options: &options,
            hba: Some(HBA),
            files: &[
                ("server.crt", &cert.cert_pem),
                ("server.key", &cert.key_pem),
                ("ca.crt", &ca_pem),
            ],
        })?;
        server.psql(&format!(
            "CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'; \
             CREATE ROLE plain_user LOGIN PASSWORD '{PASSWORD}'; \
             CREATE ROLE cert_user LOGIN"
        ));
        Some(TlsPostgres {
            server,
            ca,
            other_ca,
            client,
        })
    }

    /// `postgres://user:password@host:port/postgres?query`.
    pub fn url(&self, user: &str, host: &str, query: &str) -> String {
        let port = self.server.port;
        format!("postgres://{user}:{PASSWORD}@{host}:{port}/postgres?{query}")
    }
}

/// The outcome of one connection: encrypted or not, or the error.
pub type Outcome = Result<bool, String>;

/// pgstash with `upstream`, and a client logged in to it as `user` (no
/// password: pgstash logs in upstream with the URL's) running the query.
pub async fn through_pgstash(pg: &TestPostgres, upstream: &str, user: &str) -> Outcome {
    let upstream = Upstream::parse(upstream).map_err(|e| format!("config: {e}"))?;
    let proxy = TestProxy::start(pg, |c| c.upstream = upstream).await;
    ssl_through(&proxy, user).await
}

/// The query through `proxy` as `user`.
pub async fn ssl_through(proxy: &TestProxy, user: &str) -> Outcome {
    let url = format!("postgres://{user}@{}/postgres", proxy.addr);
    let client = try_connect(&url).await.map_err(|e| describe(&e))?;
    let row = client
        .query_one(SSL_OF_THIS_SESSION, &[])
        .await
        .map_err(|e| describe(&e))?;
    Ok(row.get(0))
}

/// psql (libpq) with the same URL, reading no default file from `$HOME`.
pub fn through_libpq(url: &str, home: &Path) -> Outcome {
    let out = Command::new("psql")
        .args([url, "-X", "-A", "-t", "-c", SSL_OF_THIS_SESSION])
        .env("HOME", home)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .output()
        .expect("psql runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    match String::from_utf8_lossy(&out.stdout).trim() {
        "t" => Ok(true),
        "f" => Ok(false),
        other => Err(format!("psql printed {other:?}")),
    }
}

/// Both sides agree: the same success and encryption, or both fail.
fn same(libpq: &Outcome, pgstash: &Outcome) -> bool {
    match (libpq, pgstash) {
        (Ok(a), Ok(b)) => a == b,
        (Err(_), Err(_)) => true,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sslmode_connects_through_pgstash_exactly_when_libpq_does() {
    let Some(tls) = TlsPostgres::start() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let pg = TestPostgres::new().await;
    let home = TestCa::new("home");
    let ca = tls.ca.cert_path.display().to_string();
    let other = tls.other_ca.cert_path.display().to_string();
    let (cert, key) = (tls.client.cert.display(), tls.client.key.display());
    // (user, host, query, expected): Some(ssl) connects, None fails.
    let cases: Vec<(&str, &str, String, Option<bool>)> = vec![
        ("app", "localhost", "sslmode=disable".into(), None),
        // Plain first; Postgres refuses it (hostssl only); then TLS.
        ("app", "localhost", "sslmode=allow".into(), Some(true)),
        ("app", "localhost", "sslmode=prefer".into(), Some(true)),
        ("app", "localhost", "sslmode=require".into(), Some(true)),
        // require with a root certificate checks the chain (verify-ca).
        (
            "app",
            "localhost",
            format!("sslmode=require&sslrootcert={other}"),
            None,
        ),
        // verify-ca does not look at the name.
        (
            "app",
            "127.0.0.1",
            format!("sslmode=verify-ca&sslrootcert={ca}"),
            Some(true),
        ),
        (
            "app",
            "localhost",
            format!("sslmode=verify-ca&sslrootcert={other}"),
            None,
        ),
        (
            "app",
            "localhost",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            Some(true),
        ),
        // The certificate names localhost only.
        (
            "app",
            "127.0.0.1",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            None,
        ),
        (
            "app",
            "localhost",
            format!("sslmode=verify-full&sslrootcert={other}"),
            None,
        ),
        // TLS is refused by the unknown CA, plain by pg_hba: nothing left.
        (
            "app",
            "localhost",
            format!("sslmode=prefer&sslrootcert={other}"),
            None,
        ),
        // TLS is offered but its login refused (hostnossl): prefer goes plain.
        (
            "plain_user",
            "localhost",
            "sslmode=prefer".into(),
            Some(false),
        ),
        (
            "plain_user",
            "localhost",
            "sslmode=allow".into(),
            Some(false),
        ),
        ("plain_user", "localhost", "sslmode=require".into(), None),
        // Client certificate authentication.
        (
            "cert_user",
            "localhost",
            format!("sslmode=verify-full&sslrootcert={ca}&sslcert={cert}&sslkey={key}"),
            Some(true),
        ),
        (
            "cert_user",
            "localhost",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            None,
        ),
    ];
    let mut disagreements = Vec::new();
    for (user, host, query, expected) in &cases {
        let url = tls.url(user, host, query);
        let libpq = through_libpq(&url, home.dir());
        let pgstash = through_pgstash(&pg, &url, user).await;
        let as_expected = match expected {
            Some(ssl) => pgstash.as_ref() == Ok(ssl),
            None => pgstash.is_err(),
        };
        if !same(&libpq, &pgstash) || !as_expected {
            disagreements.push(format!(
                "{user}@{host}?{query}: expected {expected:?}\n  libpq:   {libpq:?}\n  pgstash: {pgstash:?}"
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "pgstash and libpq disagree:\n{}",
        disagreements.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_why() {
    let Some(tls) = TlsPostgres::start() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let pg = TestPostgres::new().await;
    let ca = tls.ca.cert_path.display().to_string();
    let other = tls.other_ca.cert_path.display().to_string();
    let wrong_name = through_pgstash(
        &pg,
        &tls.url(
            "app",
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        "app",
    )
    .await
    .expect_err("a certificate for another name");
    assert!(
        wrong_name.contains("08006") && wrong_name.contains("certificate"),
        "{wrong_name}"
    );
    let unknown_ca = through_pgstash(
        &pg,
        &tls.url(
            "app",
            "localhost",
            &format!("sslmode=verify-ca&sslrootcert={other}"),
        ),
        "app",
    )
    .await
    .expect_err("a certificate from an unknown CA");
    assert!(unknown_ca.contains("UnknownIssuer"), "{unknown_ca}");
    // What Postgres says is passed on as it said it.
    let plain = through_pgstash(&pg, &tls.url("app", "localhost", "sslmode=disable"), "app")
        .await
        .expect_err("hostssl only");
    assert!(
        plain.contains("28000") && plain.contains("no encryption"),
        "{plain}"
    );
}

/// The other upstream connections: control connections (the catalog, which
/// caching needs) and the readiness probe are encrypted as the pool's are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_connections_and_the_readiness_probe_use_the_same_tls() {
    let Some(tls) = TlsPostgres::start() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    tls.server
        .psql("CREATE TABLE t (v int); INSERT INTO t VALUES (7); GRANT SELECT ON t TO app");
    let pg = TestPostgres::new().await;
    let ca = tls.ca.cert_path.display().to_string();
    let url = tls.url(
        "app",
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let upstream = Upstream::parse(&url).expect("upstream URL");
    let rules = "[[rule]]\nname = \"t\"\ntables = [\"t\"]\nttl = \"60s\"\n";
    let proxy = CachingProxy::start(&pg, rules, |c| c.upstream = upstream).await;
    let client = try_connect(&format!("postgres://app@{}/postgres", proxy.addr))
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    for _ in 0..2 {
        let row = client.query_one("SELECT v FROM t", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 7);
    }
    assert_eq!(
        proxy.hits("t"),
        1,
        "the second read is a hit: the catalog was read over TLS (plain is refused)"
    );
    let ready = readyz(&proxy).await;
    assert_eq!(ready.0, 200, "{}", ready.1);

    let other = tls.other_ca.cert_path.display().to_string();
    let url = tls.url(
        "app",
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    );
    let upstream = Upstream::parse(&url).expect("upstream URL");
    let untrusted = TestProxy::start(&pg, |c| c.upstream = upstream).await;
    let ready = readyz(&untrusted).await;
    assert_eq!(
        ready.0, 503,
        "a server whose certificate does not verify is not ready: {}",
        ready.1
    );
}

async fn readyz(proxy: &TestProxy) -> (u16, String) {
    let r = pgstash_tests::operate::http::request(proxy.metrics_addr, "GET", "/readyz", &[])
        .await
        .expect("GET /readyz");
    (r.status, r.body)
}

#[test]
fn unknown_or_contradictory_parameters_are_startup_errors() {
    for (url, says) in [
        ("postgres://h/db?sslmode=verify", "invalid sslmode value"),
        ("postgres://h/db?sslmode=verify-full", "needs sslrootcert"),
        (
            "postgres://h/db?sslrootcert=system&sslmode=require",
            "sslrootcert=system",
        ),
        (
            "postgres://h/db?sslnegotiation=direct",
            "sslnegotiation=direct",
        ),
        (
            "postgres://h/db?sslcrl=/x",
            "unsupported parameter \"sslcrl\"",
        ),
        (
            "postgres://h/db?sslmode=require&sslrootcert=/no/such.pem",
            "/no/such.pem",
        ),
    ] {
        let toml = format!("upstream = \"{url}\"\n");
        let err = pgstash::Config::from_toml(&toml, Path::new("pgstash.toml"))
            .expect_err(url)
            .to_string();
        assert!(err.contains(says), "{url}: {err}");
    }
    // A client key others may read is refused, as libpq refuses it.
    let ca = TestCa::new("perm");
    let client = ca.client("loose", "u");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&client.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = format!(
        "postgres://h/db?sslmode=require&sslcert={}&sslkey={}",
        client.cert.display(),
        client.key.display()
    );
    let err = Upstream::parse(&url)
        .expect_err("a world-readable key")
        .to_string();
    assert!(err.contains("group or world access"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_server_without_tls_prefer_goes_plain_and_require_fails() {
    let Some(server) = ThrowawayPostgres::start_setup(Setup {
        options: "",
        hba: Some("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"),
        files: &[],
    }) else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    server.psql(&format!("CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'"));
    let pg = TestPostgres::new().await;
    let home = TestCa::new("home");
    let url = |mode: &str| {
        format!(
            "postgres://app:{PASSWORD}@127.0.0.1:{}/postgres?sslmode={mode}",
            server.port
        )
    };
    for (mode, expected) in [
        ("disable", Some(false)),
        ("allow", Some(false)),
        ("prefer", Some(false)),
        ("require", None),
    ] {
        let libpq = through_libpq(&url(mode), home.dir());
        let pgstash = through_pgstash(&pg, &url(mode), "app").await;
        assert!(
            same(&libpq, &pgstash),
            "{mode}: libpq {libpq:?}, pgstash {pgstash:?}"
        );
        match expected {
            Some(ssl) => assert_eq!(pgstash, Ok(ssl), "{mode}"),
            None => {
                let err = pgstash.expect_err(mode);
                assert!(
                    err.contains("server does not support SSL, but SSL was required"),
                    "{err}"
                );
            }
        }
    }
}
