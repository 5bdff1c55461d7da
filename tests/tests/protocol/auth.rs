//! Password authentication of clients by pgstash (SCRAM-SHA-256 and md5):
//! the right password gets in, a wrong one or an unknown user gets 28P01.

use pgstash::config::{AuthMethod, UserConfig};
use pgstash_tests::postgres::{describe, sqlstate, try_connect};
use pgstash_tests::wire::{RawClient, Startup, WireError};
use pgstash_tests::{TestPostgres, TestProxy};

const PASSWORD: &str = "s3cret_pass_42";

async fn password_auth(method: AuthMethod) {
    let pg = TestPostgres::new().await;
    let role = pg.create_role("auth_user", Some(PASSWORD)).await;
    let proxy = TestProxy::start(&pg, |c| {
        c.auth.method = method;
        c.auth.users = vec![UserConfig {
            name: role.clone(),
            password: Some(PASSWORD.into()),
            ..UserConfig::default()
        }];
    })
    .await;

    let right = try_connect(&proxy.url_with_password(&pg.database, &role, PASSWORD))
        .await
        .unwrap_or_else(|e| panic!("{method:?}: right password refused: {}", describe(&e)));
    let who: String = right
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query after login")
        .get(0);
    assert_eq!(who, role, "logged in upstream as the wrong user");

    let wrong = try_connect(&proxy.url_with_password(&pg.database, &role, "wrong"))
        .await
        .err()
        .unwrap_or_else(|| panic!("{method:?}: wrong password accepted"));
    assert_eq!(
        sqlstate(&wrong).as_deref(),
        Some("28P01"),
        "{method:?}: {}",
        describe(&wrong)
    );

    let unknown =
        try_connect(&proxy.url_with_password(&pg.database, "no_such_user_here", PASSWORD))
            .await
            .err()
            .unwrap_or_else(|| panic!("{method:?}: unknown user accepted"));
    assert_eq!(
        sqlstate(&unknown).as_deref(),
        Some("28P01"),
        "{method:?}: {}",
        describe(&unknown)
    );

    // The raw client speaks the same exchange by hand.
    let startup = Startup::new(&role, &pg.database).password(PASSWORD);
    let mut raw = RawClient::connect_with(proxy.addr, startup)
        .await
        .unwrap_or_else(|e| panic!("{method:?}: raw client refused: {e}"));
    assert!(raw.simple_query("SELECT 1").await.is_ok());
    let refused = RawClient::connect_with(
        proxy.addr,
        Startup::new(&role, &pg.database).password("nope"),
    )
    .await;
    match refused {
        Err(WireError::Startup(e)) => assert_eq!(e.sqlstate().as_deref(), Some("28P01"), "{e:?}"),
        Err(other) => panic!("{method:?}: wrong password: expected 28P01, got {other}"),
        Ok(_) => panic!("{method:?}: raw client with a wrong password got in"),
    }
}

#[tokio::test]
async fn scram_sha_256_accepts_the_right_password_and_refuses_a_wrong_one_with_28p01() {
    password_auth(AuthMethod::ScramSha256).await;
}

#[tokio::test]
async fn md5_accepts_the_right_password_and_refuses_a_wrong_one_with_28p01() {
    password_auth(AuthMethod::Md5).await;
}
