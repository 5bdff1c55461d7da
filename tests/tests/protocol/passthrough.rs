//! Logins without clear-text secrets in pgstash: SCRAM pass-through (the
//! key a client proves at its login to pgstash logs pgstash in upstream
//! as that user) and `auth_query` (Postgres' stored secret looked up
//! through a dedicated role, so the configuration lists no users).
//!
//! The throwaway Postgres has `ssl = on` with a test CA and lets TCP
//! logins in only over TLS with SCRAM (`hostssl … scram-sha-256`), md5
//! for `md5_user`; `log_connections` says how each login was
//! authenticated. pgstash's configuration and upstream URL carry no
//! password of the users logging in.

use std::time::Duration;

use pgstash::config::{AuthMethod, Upstream, UserConfig};
use pgstash::Config;
use pgstash_tests::cache::CachingProxy;
use pgstash_tests::certs::TestCa;
use pgstash_tests::operate::throwaway::{Setup, ThrowawayPostgres};
use pgstash_tests::postgres::{describe, try_connect};
use pgstash_tests::{TestPostgres, TestProxy};

const HBA: &str = "\
local all all trust
hostssl all md5_user 127.0.0.1/32 md5
hostssl all all 127.0.0.1/32 scram-sha-256
";

const ALICE_PASSWORD: &str = "alice_pw_31";
const BOB_PASSWORD: &str = "bob_md5_pw_7";
const AUTH_PASSWORD: &str = "lookup_pw_5";

/// The recommended `auth_query` setup: a SECURITY DEFINER function owned
/// by a superuser, callable by the lookup role only.
const LOOKUP_FUNCTION: &str = "\
CREATE FUNCTION public.pgstash_lookup(p_user text, OUT usename name, OUT passwd text) \
RETURNS SETOF record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS \
$$ SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = p_user $$; \
REVOKE ALL ON FUNCTION public.pgstash_lookup(text) FROM PUBLIC; \
GRANT EXECUTE ON FUNCTION public.pgstash_lookup(text) TO pgstash_auth";

struct ScramPostgres {
    server: ThrowawayPostgres,
    ca: TestCa,
}

impl ScramPostgres {
    fn start() -> Option<ScramPostgres> {
        let ca = TestCa::new("scram");
        let cert = ca.server("pg-server", &["localhost"]);
        let server = ThrowawayPostgres::start_setup(Setup {
            options: "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key \
                      -c password_encryption=scram-sha-256 -c log_connections=on",
            hba: Some(HBA),
            files: &[
                ("server.crt", &cert.cert_pem),
                ("server.key", &cert.key_pem),
            ],
        })?;
        server.psql(&format!(
            "CREATE ROLE alice LOGIN PASSWORD '{ALICE_PASSWORD}'; \
             CREATE ROLE pgstash_auth LOGIN PASSWORD '{AUTH_PASSWORD}'; \
             SET password_encryption = 'md5'; \
             CREATE ROLE md5_user LOGIN PASSWORD '{BOB_PASSWORD}'; \
             {LOOKUP_FUNCTION}"
        ));
        Some(ScramPostgres { server, ca })
    }

    /// The upstream URL, verified TLS, as `login` (`user:password@` or empty).
    fn upstream(&self, login: &str) -> Upstream {
        let url = format!(
            "postgres://{login}localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
            self.server.port,
            self.ca.cert_path.display()
        );
        Upstream::parse(&url).expect("upstream URL")
    }

    /// `pg_authid.rolpassword` of `role`, read as the superuser.
    async fn verifier(&self, role: &str) -> String {
        let (client, conn) = tokio_postgres::Config::new()
            .host_path(self.server.socket_dir())
            .port(self.server.port)
            .user("postgres")
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .expect("superuser over the socket");
        tokio::spawn(conn);
        client
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                &[&role],
            )
            .await
            .expect("read the verifier")
            .get(0)
    }

    /// How many of `user`'s logins Postgres authenticated with `method`.
    fn logins(&self, user: &str, method: &str) -> usize {
        self.server
            .log()
            .matches(&format!("identity=\"{user}\" method={method}"))
            .count()
    }
}

fn url(proxy: &TestProxy, user: &str, password: &str) -> String {
    format!("postgres://{user}:{password}@{}/postgres", proxy.addr)
}

/// Logs in to `proxy` and returns `current_user` and whether Postgres
/// sees the session's connection encrypted, or the error.
async fn who(proxy: &TestProxy, user: &str, password: &str) -> Result<(String, bool), String> {
    let client = try_connect(&url(proxy, user, password))
        .await
        .map_err(|e| describe(&e))?;
    let row = client
        .query_one(
            "SELECT current_user::text, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| describe(&e))?;
    Ok((row.get(0), row.get(1)))
}

/// The error of a refused login: (SQLSTATE, message).
async fn refusal(proxy: &TestProxy, user: &str, password: &str) -> (String, String) {
    let err = try_connect(&url(proxy, user, password))
        .await
        .err()
        .unwrap_or_else(|| panic!("{user} logged in with password {password:?}"));
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("no server error: {}", describe(&err)));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// pgstash in front of `pg_scram`, with `alice` known only by `verifier`
/// (no password anywhere in its configuration or upstream URL).
async fn alice_by_verifier(
    pg: &TestPostgres,
    pg_scram: &ScramPostgres,
    verifier: String,
) -> TestProxy {
    let upstream = pg_scram.upstream("");
    TestProxy::start(pg, |c| {
        c.upstream = upstream;
        c.auth.method = AuthMethod::ScramSha256;
        c.auth.users = vec![UserConfig {
            name: "alice".into(),
            scram_verifier: Some(verifier),
            ..UserConfig::default()
        }];
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_pass_through_logs_in_upstream_with_a_verifier_copied_from_pg_authid() {
    let Some(pg_scram) = ScramPostgres::start() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let pg = TestPostgres::new().await;
    let verifier = pg_scram.verifier("alice").await;
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let proxy = alice_by_verifier(&pg, &pg_scram, verifier).await;

    assert_eq!(
        who(&proxy, "alice", ALICE_PASSWORD).await,
        Ok(("alice".to_owned(), true))
    );
    assert_eq!(pg_scram.logins("alice", "scram-sha-256"), 1);

    // Two transactions at once need two server connections: the second is
    // opened after the login, with the key that login passed through.
    let first = try_connect(&url(&proxy, "alice", ALICE_PASSWORD))
        .await
        .expect("first client");
    let second = try_connect(&url(&proxy, "alice", ALICE_PASSWORD))
        .await
        .expect("second client");
    let pid = "SELECT pg_backend_pid()";
    first.batch_execute("BEGIN").await.expect("BEGIN");
    let a: i32 = first.query_one(pid, &[]).await.expect("pid").get(0);
    second.batch_execute("BEGIN").await.expect("BEGIN");
    let b: i32 = second.query_one(pid, &[]).await.expect("pid").get(0);
    assert_ne!(a, b, "both transactions ran on one server connection");
    first.batch_execute("COMMIT").await.expect("COMMIT");
    second.batch_execute("COMMIT").await.expect("COMMIT");
    assert_eq!(
        pg_scram.logins("alice", "scram-sha-256"),
        2,
        "{}",
        pg_scram.server.log()
    );

    // The wrong password gets no further than pgstash.
    let (code, _) = refusal(&proxy, "alice", "wrong").await;
    assert_eq!(code, "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_that_is_not_postgres_own_cannot_pass_through_and_says_why() {
    let Some(pg_scram) = ScramPostgres::start() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let pg = TestPostgres::new().await;
    // The same password, stored by another server: another salt.
    let other = ThrowawayPostgres::start().expect("second throwaway");
    other.psql(&format!(
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE alice LOGIN PASSWORD '{ALICE_PASSWORD}'"
    ));
    let (client, conn) = tokio_postgres::Config::new()
        .host_path(other.socket_dir())
        .port(other.port)
        .user("postgres")
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("superuser over the socket");
    tokio::spawn(conn);
    let verifier: String = client
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'alice'",
            &[],
        )
        .await
        .expect("verifier")
        .get(0);
    let proxy = alice_by_verifier(&pg, &pg_scram, verifier).await;
    let (code, message) = refusal(&proxy, "alice", ALICE_PASSWORD).await;
    assert_eq!(code, "28000", "{message}");
    assert!(message.contains("another salt"), "{message}");
    assert_eq!(pg_scram.logins("alice", "scram-sha-256"), 0);
}

/// No users; secrets looked up as `pgstash_auth` through the SECURITY
/// DEFINER function; its password is the upstream URL's.
fn auth_query_config(
    pg_scram: &ScramPostgres,
    method: AuthMethod,
    cache: Duration,
) -> impl FnOnce(&mut Config) {
    let upstream = pg_scram.upstream(&format!("pgstash_auth:{AUTH_PASSWORD}@"));
    move |c| {
        c.upstream = upstream;
        c.auth.method = method;
        c.auth.users = Vec::new();
        c.auth.auth_user = Some("pgstash_auth".into());
        c.auth.auth_query = "SELECT usename, passwd FROM public.pgstash_lookup($1)".into();
        c.auth.auth_query_cache = cache;
    }
}

async fn auth_query_proxy(
    pg: &TestPostgres,
    pg_scram: &ScramPostgres,
    method: AuthMethod,
    cache: Duration,
) -> TestProxy {
    TestProxy::start(pg, auth_query_config(pg_scram, method, cache)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_logs_in_users_the_configuration_does_not_list() {
    let Some(pg_scram) = ScramPostgres::start() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let pg = TestPostgres::new().await;
    let proxy = auth_query_proxy(
        &pg,
        &pg_scram,
        AuthMethod::ScramSha256,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        who(&proxy, "alice", ALICE_PASSWORD).await,
        Ok(("alice".to_owned(), true))
    );
    assert_eq!(pg_scram.logins("alice", "scram-sha-256"), 1);

    // A wrong password and a user that does not exist get the same answer.
    let wrong = refusal(&proxy, "alice", "wrong").await;
    let ghost = refusal(&proxy, "ghost", ALICE_PASSWORD).await;
    assert_eq!(wrong.0, "28P01");
    assert_eq!(ghost.0, "28P01");
    assert_eq!(
        wrong.1.replace("alice", "USER"),
        ghost.1.replace("ghost", "USER")
    );
    // So does an md5 hash under scram-sha-256, as in Postgres.
    let md5 = refusal(&proxy, "md5_user", BOB_PASSWORD).await;
    assert_eq!(md5.0, "28P01");
    assert_eq!(pg_scram.logins("alice", "scram-sha-256"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_md5_hashes_log_in_by_md5_and_pass_through_upstream() {
    let Some(pg_scram) = ScramPostgres::start() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let pg = TestPostgres::new().await;
    let proxy = auth_query_proxy(&pg, &pg_scram, AuthMethod::Md5, Duration::from_secs(5)).await;
    assert_eq!(
        who(&proxy, "md5_user", BOB_PASSWORD).await,
        Ok(("md5_user".to_owned(), true))
    );
    assert_eq!(pg_scram.logins("md5_user", "md5"), 1);
    // A SCRAM verifier under md5 runs SCRAM, as in Postgres.
    assert_eq!(
        who(&proxy, "alice", ALICE_PASSWORD).await,
        Ok(("alice".to_owned(), true))
    );
    let (code, _) = refusal(&proxy, "md5_user", "wrong").await;
    assert_eq!(code, "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_changed_in_postgres_takes_effect_within_auth_query_cache() {
    let Some(pg_scram) = ScramPostgres::start() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let pg = TestPostgres::new().await;
    let cache = Duration::from_secs(1);
    let proxy = auth_query_proxy(&pg, &pg_scram, AuthMethod::ScramSha256, cache).await;
    assert!(who(&proxy, "alice", ALICE_PASSWORD).await.is_ok());

    pg_scram
        .server
        .psql("ALTER ROLE alice PASSWORD 'alice_new_pw'");
    tokio::time::sleep(cache + Duration::from_millis(200)).await;
    let (code, _) = refusal(&proxy, "alice", ALICE_PASSWORD).await;
    assert_eq!(code, "28P01", "the old password still logs in");
    // A new server connection is needed upstream (the pooled one is busy)
    // and logs in with the new key.
    let holder = try_connect(&url(&proxy, "alice", "alice_new_pw"))
        .await
        .unwrap_or_else(|e| panic!("new password refused: {}", describe(&e)));
    holder.batch_execute("BEGIN").await.expect("BEGIN");
    let before = pg_scram.logins("alice", "scram-sha-256");
    assert_eq!(
        who(&proxy, "alice", "alice_new_pw").await,
        Ok(("alice".to_owned(), true))
    );
    assert_eq!(pg_scram.logins("alice", "scram-sha-256"), before + 1);
}

/// Caching needs the catalog, read on a control connection as the client's
/// user: it logs in by pass-through too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_read_as_a_pass_through_user_so_its_reads_are_cached() {
    let Some(pg_scram) = ScramPostgres::start() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    pg_scram
        .server
        .psql("CREATE TABLE t (v int); INSERT INTO t VALUES (7); GRANT SELECT ON t TO alice");
    let pg = TestPostgres::new().await;
    let rules = "[[rule]]\nname = \"t\"\ntables = [\"t\"]\nttl = \"60s\"\n";
    let configure = auth_query_config(&pg_scram, AuthMethod::ScramSha256, Duration::from_secs(5));
    let proxy = CachingProxy::start(&pg, rules, configure).await;
    let client = try_connect(&url(&proxy, "alice", ALICE_PASSWORD))
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    for _ in 0..2 {
        let row = client
            .query_one("SELECT v FROM t", &[])
            .await
            .expect("read t");
        assert_eq!(row.get::<_, i32>(0), 7);
    }
    assert_eq!(proxy.hits("t"), 1, "the second read is not a hit");
}
