//! pgstash logging in to Postgres with a password: md5 and SCRAM-SHA-256
//! against a throwaway Postgres whose `pg_hba.conf` demands them (the shared
//! test server trusts everyone), with the password from `[[auth.users]]` or
//! from the upstream URL. Postgres' log (`log_connections`) says which
//! method each login went through; a wrong password gets Postgres' 28P01.

use pgstash::config::{AuthMethod, Upstream, UserConfig};
use pgstash_tests::operate::throwaway::{Setup, ThrowawayPostgres};
use pgstash_tests::postgres::{describe, sqlstate, try_connect};
use pgstash_tests::{TestPostgres, TestProxy};

const HBA: &str = "\
local all all trust
host all md5_user 127.0.0.1/32 md5
host all scram_user 127.0.0.1/32 scram-sha-256
";

/// Stored as md5 (a SCRAM verifier would turn `md5` in pg_hba into SCRAM).
const MD5_PASSWORD: &str = "md5_secret_1";
const SCRAM_PASSWORD: &str = "scram_secret_2";

fn password_postgres() -> Option<ThrowawayPostgres> {
    let server = ThrowawayPostgres::start_setup(Setup {
        options: "-c log_connections=on",
        hba: Some(HBA),
        files: &[],
    })?;
    server.psql(&format!(
        "SET password_encryption = 'md5'; \
         CREATE ROLE md5_user LOGIN PASSWORD '{MD5_PASSWORD}'; \
         SET password_encryption = 'scram-sha-256'; \
         CREATE ROLE scram_user LOGIN PASSWORD '{SCRAM_PASSWORD}'"
    ));
    Some(server)
}

/// Logs in to `proxy` as `user` (with `password` if pgstash asks for one)
/// and returns who Postgres says the session is, or the error.
async fn who(proxy: &TestProxy, user: &str, password: Option<&str>) -> Result<String, String> {
    let auth = password.map(|p| format!(":{p}")).unwrap_or_default();
    let url = format!("postgres://{user}{auth}@{}/postgres", proxy.addr);
    let client = try_connect(&url).await.map_err(|e| describe(&e))?;
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| describe(&e))?;
    Ok(row.get(0))
}

fn authenticated_with(server: &ThrowawayPostgres, user: &str, method: &str) -> bool {
    server
        .log()
        .contains(&format!("identity=\"{user}\" method={method}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_and_scram_upstream_logins_use_the_passwords_of_auth_users() {
    let Some(server) = password_postgres() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let pg = TestPostgres::new().await;
    let url = format!("postgres://127.0.0.1:{}/postgres", server.port);
    let user = |name: &str, password: &str| UserConfig {
        name: name.into(),
        password: Some(password.into()),
        ..UserConfig::default()
    };
    let proxy = TestProxy::start(&pg, |c| {
        c.upstream = Upstream::parse(&url).expect("upstream URL");
        c.auth.method = AuthMethod::ScramSha256;
        c.auth.users = vec![
            user("md5_user", MD5_PASSWORD),
            user("scram_user", SCRAM_PASSWORD),
        ];
    })
    .await;
    assert_eq!(
        who(&proxy, "md5_user", Some(MD5_PASSWORD)).await,
        Ok("md5_user".into())
    );
    assert_eq!(
        who(&proxy, "scram_user", Some(SCRAM_PASSWORD)).await,
        Ok("scram_user".into())
    );
    assert!(
        authenticated_with(&server, "md5_user", "md5"),
        "no md5 login in the server log:\n{}",
        server.log()
    );
    assert!(
        authenticated_with(&server, "scram_user", "scram-sha-256"),
        "no SCRAM login in the server log:\n{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_urls_password_logs_in_users_that_have_none() {
    let Some(server) = password_postgres() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let pg = TestPostgres::new().await;
    for (name, password, method) in [
        ("md5_user", MD5_PASSWORD, "md5"),
        ("scram_user", SCRAM_PASSWORD, "scram-sha-256"),
    ] {
        let url = format!(
            "postgres://{name}:{password}@127.0.0.1:{}/postgres",
            server.port
        );
        let proxy = TestProxy::start(&pg, |c| {
            c.upstream = Upstream::parse(&url).expect("upstream URL");
        })
        .await;
        // pgstash asks the client for nothing (auth trust); Postgres asks
        // pgstash, which answers with the URL's password.
        assert_eq!(who(&proxy, name, None).await, Ok(name.to_owned()));
        assert!(
            authenticated_with(&server, name, method),
            "no {method} login of {name} in the server log:\n{}",
            server.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_upstream_password_gets_postgres_28p01() {
    let Some(server) = password_postgres() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let pg = TestPostgres::new().await;
    for name in ["md5_user", "scram_user"] {
        let url = format!("postgres://{name}:wrong@127.0.0.1:{}/postgres", server.port);
        let proxy = TestProxy::start(&pg, |c| {
            c.upstream = Upstream::parse(&url).expect("upstream URL");
        })
        .await;
        let client = format!("postgres://{name}@{}/postgres", proxy.addr);
        let err = try_connect(&client)
            .await
            .err()
            .unwrap_or_else(|| panic!("{name} logged in with a wrong password"));
        assert_eq!(
            sqlstate(&err).as_deref(),
            Some("28P01"),
            "{}",
            describe(&err)
        );
    }
}
