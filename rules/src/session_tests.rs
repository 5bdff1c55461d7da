//! Unit tests of `session.rs`.

use super::*;

fn settings_only() -> SessionEffects {
    SessionEffects {
        changes_settings: true,
        ..SessionEffects::default()
    }
}

fn role() -> SessionEffects {
    SessionEffects {
        changes_settings: true,
        changes_role: true,
        ..SessionEffects::default()
    }
}

fn objects() -> SessionEffects {
    SessionEffects {
        uses_session_objects: true,
        ..SessionEffects::default()
    }
}

#[test]
fn plain_queries_have_no_effect() {
    for sql in [
        "select * from users where id = 1",
        "SELECT a FROM t ORDER BY a LIMIT 10 OFFSET 20",
        "select * from assets, settings, datasets",
        "insert into t values (1)",
        "select template, temperature from t",
    ] {
        assert_eq!(session_effects(sql), SessionEffects::default(), "{sql}");
    }
}

#[test]
fn set_and_reset_change_settings() {
    for sql in [
        "SET search_path = app, public",
        "set TimeZone to 'UTC'",
        "SET SESSION statement_timeout = 1000",
        "reset search_path",
        "RESET ALL",
        "DISCARD ALL",
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "select set_config('search_path', 'x', false)",
        "select 1; SET datestyle = ISO",
    ] {
        assert!(session_effects(sql).changes_settings, "{sql}");
    }
    assert_eq!(session_effects("set search_path = x"), settings_only());
}

#[test]
fn transaction_scoped_settings_do_not_count() {
    for sql in [
        "SET LOCAL search_path = x",
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "select set_config('search_path', 'x', true)",
        "select pg_catalog.set_config('a.b', 'x', 'on')",
        "DISCARD PLANS",
    ] {
        assert_eq!(session_effects(sql), SessionEffects::default(), "{sql}");
    }
}

#[test]
fn set_clauses_of_other_statements_do_not_count() {
    for sql in [
        "UPDATE t SET x = 1 WHERE id = 2",
        "ALTER TABLE t ALTER COLUMN c SET DEFAULT 0",
        "ALTER TABLE t SET (fillfactor = 70)",
        "ALTER ROLE bob SET search_path = x",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = x AS 'select 1'",
        "insert into t values (1) on conflict (id) do update set x = 2",
    ] {
        assert_eq!(session_effects(sql), SessionEffects::default(), "{sql}");
    }
}

#[test]
fn role_changes_are_also_setting_changes() {
    for sql in [
        "SET ROLE admin",
        "set role none",
        "SET SESSION AUTHORIZATION bob",
        "RESET ROLE",
        "RESET SESSION AUTHORIZATION",
        "DISCARD ALL",
        "select set_config('role', 'admin', false)",
        "select set_config($1, $2, false)",
    ] {
        assert_eq!(session_effects(sql), role(), "{sql}");
    }
    assert!(!session_effects("RESET ALL").changes_role);
}

#[test]
fn listen_is_reported() {
    let fx = session_effects("LISTEN orders");
    assert!(fx.listen && !fx.changes_settings);
    assert!(!session_effects("NOTIFY orders").listen);
}

#[test]
fn session_objects_are_reported() {
    for sql in [
        "PREPARE q(int) AS SELECT $1",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "CREATE TEMP TABLE tmp (id int)",
        "create temporary table tmp as select 1",
        "SELECT 1 INTO TEMP tmp",
        "select * from pg_temp.tmp",
        "select pg_advisory_lock(42)",
        "SELECT pg_try_advisory_lock(1, 2)",
    ] {
        assert_eq!(session_effects(sql), objects(), "{sql}");
    }
    for sql in [
        "DECLARE c CURSOR FOR SELECT 1",
        "select pg_advisory_xact_lock(42)",
        "PREPARE TRANSACTION 'x'",
    ] {
        assert_eq!(session_effects(sql), SessionEffects::default(), "{sql}");
    }
}

#[test]
fn effects_of_every_statement_in_a_string_are_merged() {
    let fx = session_effects("SET ROLE a; LISTEN c; PREPARE p AS SELECT 1; SELECT 2");
    assert!(fx.changes_settings && fx.changes_role && fx.listen && fx.uses_session_objects);
}

#[test]
fn set_config_hidden_in_an_expression_is_found() {
    let sql = "select case when $1 then (select set_config('x.y', 'z', false)) end";
    assert!(session_effects(sql).changes_settings);
}

#[test]
fn do_blocks_are_judged_by_their_words() {
    let fx = session_effects("DO $$ BEGIN PERFORM set_config('role', 'x', false); END $$");
    assert_eq!(fx, role());
    assert!(!session_effects("DO $$ BEGIN PERFORM 1; END $$").any());
}

#[test]
fn unparsable_text_is_judged_conservatively() {
    assert!(session_effects("SET search_path = ").changes_settings);
    assert_eq!(session_effects("set role = ;"), role());
    assert_eq!(session_effects("selec 1"), SessionEffects::default());
}

#[test]
fn prefilter_matches_whole_words_case_insensitively() {
    assert!(contains_any_word(b"x;SeT a=1", &["set"]));
    assert!(contains_any_word(
        b"pg_catalog.set_config(",
        &["set_config"]
    ));
    assert!(!contains_any_word(
        b"offset reset_x settings",
        &["set", "reset"]
    ));
    assert!(!contains_any_word(b"", &["set"]));
}

#[test]
fn the_cache_gives_the_same_verdicts_as_a_fresh_look() {
    let cache = EffectsCache::new(16);
    let texts = [
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
        "SET search_path = app",
        "SET LOCAL statement_timeout = 5",
        "SELECT set_config('role', 'x', false)",
        "LISTEN jobs",
        "CREATE TEMP TABLE t (a int)",
        "SELECT 1",
        "SET ROLE admin; SELECT 1",
    ];
    for round in 0..2 {
        for sql in texts {
            assert_eq!(
                cache.effects(sql),
                session_effects(sql),
                "{sql} (round {round})"
            );
        }
    }
    // Only the texts that needed a parse are remembered.
    assert_eq!(cache.parsed.len(), texts.len() - 1);
}
