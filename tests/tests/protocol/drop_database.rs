//! A client's `DROP DATABASE`, `ALTER DATABASE … RENAME` and `CREATE
//! DATABASE … TEMPLATE` run through pgstash as they would directly once
//! the database's own clients have left: the server connections pgstash
//! pooled for them are closed first instead of keeping the database busy
//! (Postgres' 55006, "is being accessed by other users"). asyncpg's suite
//! creates a database, uses it, then drops it.

use pgstash::config::PoolMode;
use pgstash_tests::postgres::{connect, describe};
use pgstash_tests::{TestPostgres, TestProxy};

/// Uses `database` through pgstash with a client that then leaves: the
/// server connection stays in pgstash's pool.
async fn visit(proxy: &TestProxy, database: &str) {
    let client = connect(&proxy.url(database, &proxy.user)).await;
    let row = client.query_one("SELECT current_database()", &[]).await;
    let name: String = row.unwrap().get(0);
    assert_eq!(name, database);
    // Also through an extended-protocol statement, as most drivers do.
    client.query_one("SELECT 1 + $1", &[&1i32]).await.unwrap();
}

async fn database_ddl_after_its_clients_left(mode: PoolMode) {
    let home = TestPostgres::new().await;
    let target = TestPostgres::new().await;
    let proxy = TestProxy::with_pool(&home, mode, 4).await;
    let admin = proxy.connect().await;
    let run = |sql: String| {
        let admin = &admin;
        async move {
            admin
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: {sql}: {}", describe(&e)))
        }
    };
    let (old, copy, renamed) = (
        target.database.clone(),
        format!("{}_copy", target.database),
        format!("{}_renamed", target.database),
    );

    visit(&proxy, &old).await;
    run(format!("CREATE DATABASE {copy} TEMPLATE {old}")).await;
    visit(&proxy, &old).await;
    run(format!("ALTER DATABASE {old} RENAME TO {renamed}")).await;
    visit(&proxy, &renamed).await;
    visit(&proxy, &copy).await;
    // The extended protocol too (pgjdbc sends every statement so).
    admin
        .execute(&format!("DROP DATABASE {renamed}"), &[])
        .await
        .unwrap_or_else(|e| panic!("{mode:?}: DROP DATABASE {renamed}: {}", describe(&e)));
    run(format!("DROP DATABASE {copy}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_database_ddl_runs_once_the_databases_clients_left() {
    database_ddl_after_its_clients_left(PoolMode::Session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_database_ddl_runs_once_the_databases_clients_left() {
    database_ddl_after_its_clients_left(PoolMode::Transaction).await;
}
