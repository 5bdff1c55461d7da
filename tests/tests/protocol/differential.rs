//! G6 transparency: every corpus case gets byte-identical backend messages
//! directly from Postgres and through pgstash, in both pool modes.
//!
//! Each category runs on a fresh client connection per case (so state left
//! on a pooled server connection by one client must not leak to the next),
//! and the whole corpus also runs on one long-lived connection per side (so
//! state a client builds up — settings, statements — must survive pooling).

use pgstash::config::PoolMode;
use pgstash_tests::differential::{self, corpus, Case, Sides};
use pgstash_tests::wire::{BackendMessage, RawClient, Startup};

/// A pool smaller than the number of cases, so server connections are reused.
const POOL_SIZE: u32 = 2;

async fn each_case_identical(cases: Vec<Case>, mode: PoolMode) {
    let s = Sides::start(mode, POOL_SIZE).await;
    differential::compare(&s.direct, &s.through, &cases)
        .await
        .assert_identical();
}

#[tokio::test]
async fn types_are_byte_identical_in_transaction_mode() {
    each_case_identical(corpus::types(), PoolMode::Transaction).await;
}

#[tokio::test]
async fn types_are_byte_identical_in_session_mode() {
    each_case_identical(corpus::types(), PoolMode::Session).await;
}

#[tokio::test]
async fn errors_and_notices_are_byte_identical_in_transaction_mode() {
    each_case_identical(corpus::errors(), PoolMode::Transaction).await;
}

#[tokio::test]
async fn errors_and_notices_are_byte_identical_in_session_mode() {
    each_case_identical(corpus::errors(), PoolMode::Session).await;
}

#[tokio::test]
async fn simple_protocol_is_byte_identical_in_transaction_mode() {
    each_case_identical(corpus::simple(), PoolMode::Transaction).await;
}

#[tokio::test]
async fn simple_protocol_is_byte_identical_in_session_mode() {
    each_case_identical(corpus::simple(), PoolMode::Session).await;
}

#[tokio::test]
async fn copy_is_byte_identical_in_transaction_mode() {
    each_case_identical(corpus::copy(), PoolMode::Transaction).await;
}

#[tokio::test]
async fn copy_is_byte_identical_in_session_mode() {
    each_case_identical(corpus::copy(), PoolMode::Session).await;
}

#[tokio::test]
async fn extended_protocol_is_byte_identical_in_transaction_mode() {
    each_case_identical(corpus::extended(), PoolMode::Transaction).await;
}

#[tokio::test]
async fn extended_protocol_is_byte_identical_in_session_mode() {
    each_case_identical(corpus::extended(), PoolMode::Session).await;
}

#[tokio::test]
async fn whole_corpus_on_one_connection_is_byte_identical_in_transaction_mode() {
    let s = Sides::start(PoolMode::Transaction, POOL_SIZE).await;
    differential::compare_on_one_connection(&s.direct, &s.through, &corpus::all())
        .await
        .assert_identical();
}

#[tokio::test]
async fn whole_corpus_on_one_connection_is_byte_identical_in_session_mode() {
    let s = Sides::start(PoolMode::Session, POOL_SIZE).await;
    differential::compare_on_one_connection(&s.direct, &s.through, &corpus::all())
        .await
        .assert_identical();
}

/// Several clients run the read-only and rolled-back parts of the corpus at
/// once over a pool smaller than their number: answers must not be mixed up
/// between clients, and statement names they share (`stmt_a`) must not clash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_over_a_small_transaction_pool_get_their_own_answers() {
    let s = Sides::start(PoolMode::Transaction, POOL_SIZE).await;
    let mut cases = corpus::types();
    cases.extend(corpus::errors());
    cases.extend(corpus::extended());
    differential::compare_concurrently(&s.direct, &s.through, &cases, 4)
        .await
        .assert_identical();
}

/// ParameterStatus at startup, sorted by name (their order carries no meaning).
fn startup_parameters(c: &RawClient) -> Vec<(String, String)> {
    let mut params: Vec<_> = c
        .startup_messages()
        .iter()
        .filter_map(BackendMessage::parameter_status)
        .collect();
    params.sort();
    params
}

async fn startup_parameters_match(mode: PoolMode) {
    let s = Sides::start(mode, POOL_SIZE).await;
    let with_params = |base: &Startup| {
        base.clone()
            .param("application_name", "startup_check")
            .param("TimeZone", "Pacific/Auckland")
            .param("DateStyle", "SQL, DMY")
            .param("extra_float_digits", "1")
    };
    let query = "SELECT '2024-01-02 03:04:05+00'::timestamptz AS ts, 0.1::float8 AS f, \
                 current_setting('application_name') AS app";
    let mut direct = RawClient::connect_with(s.direct.addr, with_params(&s.direct.startup))
        .await
        .expect("direct connect");
    let mut through = RawClient::connect_with(s.through.addr, with_params(&s.through.startup))
        .await
        .expect("connect through pgstash");
    assert_eq!(
        startup_parameters(&through),
        startup_parameters(&direct),
        "ParameterStatus after startup differs (left: pgstash, right: postgres)"
    );
    assert!(
        through.backend_key().is_some(),
        "pgstash sent no BackendKeyData"
    );
    let first_ready = through
        .startup_messages()
        .last()
        .and_then(BackendMessage::ready_status);
    assert_eq!(first_ready, Some(b'I'), "first ReadyForQuery must say idle");
    let want = direct.simple_query(query).await.expect("direct query");
    let got = through
        .simple_query(query)
        .await
        .expect("query through pgstash");
    assert_eq!(
        got, want,
        "startup parameters did not reach the server session the same way"
    );
    // A second transaction: in transaction mode it may run on another server
    // connection, which must carry the client's startup parameters too.
    let got = through
        .simple_query(query)
        .await
        .expect("second query through pgstash");
    assert_eq!(
        got, want,
        "startup parameters lost on the second transaction"
    );
}

#[tokio::test]
async fn startup_parameters_and_parameter_status_match_direct_in_transaction_mode() {
    startup_parameters_match(PoolMode::Transaction).await;
}

#[tokio::test]
async fn startup_parameters_and_parameter_status_match_direct_in_session_mode() {
    startup_parameters_match(PoolMode::Session).await;
}
