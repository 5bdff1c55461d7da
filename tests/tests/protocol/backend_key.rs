//! The BackendKeyData pgstash gives a client. In session mode its process
//! id is the client's own server's, so `pg_backend_pid()`, a notification's
//! sender pid and `pg_terminate_backend(<pid>)` all agree with it; the
//! secret is pgstash's, and a cancel sent to pgstash with the key stops
//! the client's query (see `cancel.rs`). In transaction mode the pid is
//! synthetic, above any real process id.

use std::time::Duration;

use bytes::Buf;
use pgstash::config::PoolMode;
use pgstash_tests::wire::{text_rows, Ending};
use pgstash_tests::{RawClient, TestPostgres, TestProxy};

/// The (pid, secret) a raw client got through `proxy`, and the pid its
/// own `pg_backend_pid()` reports.
async fn key_and_backend_pid(proxy: &TestProxy) -> (RawClient, (i32, i32), i32) {
    let mut raw = proxy.raw().await.expect("raw connect through pgstash");
    let key = raw.backend_key().expect("pgstash sent no BackendKeyData");
    let rows = text_rows(&raw.simple_query("SELECT pg_backend_pid()").await.unwrap());
    let pid: i32 = rows[0][0].as_deref().unwrap().parse().unwrap();
    (raw, key, pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_key_carries_the_clients_own_server_pid() {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::with_pool(&pg, PoolMode::Session, 2).await;
    let (mut raw, (pid, _), backend_pid) = key_and_backend_pid(&proxy).await;
    assert_eq!(pid, backend_pid, "BackendKeyData pid vs pg_backend_pid()");

    // A notification the session sends itself names the same pid.
    let msgs = raw
        .simple_query("LISTEN pgstash_key; NOTIFY pgstash_key, 'hi'")
        .await
        .unwrap();
    let notification = msgs
        .iter()
        .find(|m| m.tag == b'A')
        .unwrap_or_else(|| panic!("no NotificationResponse in {msgs:?}"));
    let sender = (&notification.body[..]).get_i32();
    assert_eq!(sender, pid, "NotificationResponse sender pid");

    // A second client gets its own server, hence its own pid and key.
    let (_other, (other_pid, _), other_backend) = key_and_backend_pid(&proxy).await;
    assert_eq!(other_pid, other_backend);
    assert_ne!(other_pid, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_pg_terminate_backend_of_the_key_pid_ends_that_clients_session() {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::with_pool(&pg, PoolMode::Session, 2).await;
    let (mut victim, (pid, _), _) = key_and_backend_pid(&proxy).await;

    let admin = proxy.connect().await;
    let terminated: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("pg_terminate_backend")
        .get(0);
    assert!(terminated, "pg_terminate_backend({pid}) found no backend");

    let (msgs, ending) = victim.read_to_end(Duration::from_secs(5)).await;
    assert_eq!(ending, Ending::Closed, "the victim's session is still open");
    assert!(
        msgs.iter()
            .any(|m| m.sqlstate().as_deref() == Some("57P01")),
        "the victim did not hear why: {msgs:?}"
    );
    // The terminating client is unharmed.
    admin.simple_query("SELECT 1").await.expect("admin session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_keys_carry_synthetic_pids_no_backend_has() {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::with_pool(&pg, PoolMode::Transaction, 2).await;
    let admin = pg.connect().await;
    for _ in 0..8 {
        let (_raw, (pid, _), backend_pid) = key_and_backend_pid(&proxy).await;
        assert!(pid >= 1 << 30, "pid {pid} is in the range of real pids");
        assert_ne!(pid, backend_pid);
        let live: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(live, 0, "synthetic pid {pid} names a real backend");
    }
}
