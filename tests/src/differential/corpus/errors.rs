//! Errors with their SQLSTATE and every field, notices, and the transaction
//! status they leave behind — in the simple and the extended protocol.

use super::format_name;
use crate::differential::Case;
use crate::wire::Frontend;

/// (label, statement) pairs that fail with a server error.
const FAILING: &[(&str, &str)] = &[
    ("syntax error 42601", "SELEC 1"),
    ("division by zero 22012", "SELECT 1/0"),
    (
        "unique violation 23505",
        "INSERT INTO uniq VALUES (1, 'again')",
    ),
    ("undefined table 42P01", "SELECT * FROM no_such_table"),
    ("undefined column 42703", "SELECT no_such_column FROM uniq"),
    (
        "not null violation 23502",
        "INSERT INTO uniq VALUES (3, NULL)",
    ),
    ("check violation 23514", "INSERT INTO uniq VALUES (3, '')"),
    (
        "foreign key violation 23503",
        "INSERT INTO child VALUES (1, 999)",
    ),
    ("invalid text representation 22P02", "SELECT 'abc'::int"),
    ("integer out of range 22003", "SELECT 2147483647::int4 + 1"),
    ("undefined function 42883", "SELECT no_such_function(1)"),
    (
        "raise exception with detail and hint",
        "DO $$ BEGIN RAISE EXCEPTION 'custom failure %', 42 \
         USING ERRCODE = 'PGS01', DETAIL = 'the detail', HINT = 'the hint'; END $$",
    ),
    (
        "error after some rows",
        "SELECT 10 / (3 - g) AS q FROM generate_series(1, 5) g",
    ),
];

pub fn errors() -> Vec<Case> {
    let mut cases = Vec::new();
    for (label, sql) in FAILING {
        cases.push(Case::simple(format!("errors/{label}/simple"), sql));
        for format in [0, 1] {
            cases.push(
                Case::new(format!("errors/{label}/extended {}", format_name(format))).extended(
                    sql,
                    &[],
                    format,
                ),
            );
        }
    }
    cases.push(Case::simple(
        "errors/notices of every level in a DO block",
        "DO $$ BEGIN RAISE NOTICE 'first notice %', 1; RAISE WARNING 'a warning'; \
         RAISE INFO 'some info'; RAISE DEBUG 'not shown at default client_min_messages'; END $$",
    ));
    cases.push(Case::simple(
        "errors/notice from DROP IF EXISTS",
        "DROP TABLE IF EXISTS no_such_table_here",
    ));
    for format in [0, 1] {
        cases.push(
            Case::new(format!(
                "errors/notices interleaved with rows/extended {}",
                format_name(format)
            ))
            .extended("SELECT noisy(g) FROM generate_series(1, 3) g", &[], format),
        );
    }
    cases.push(Case::simple(
        "errors/notices interleaved with rows/simple",
        "SELECT noisy(g) FROM generate_series(1, 3) g",
    ));
    cases.push(
        Case::new("errors/failed transaction: 25P02 until ROLLBACK, status E")
            .query("BEGIN")
            .query("SELECT 1/0")
            .query("SELECT 1")
            .query("ROLLBACK")
            .query("SELECT 'after' AS state"),
    );
    cases.push(
        Case::new("errors/COMMIT of a failed transaction reports ROLLBACK")
            .query("BEGIN")
            .query("INSERT INTO uniq VALUES (1, 'dup')")
            .query("COMMIT"),
    );
    cases.push(
        Case::new("errors/savepoint recovers a failed transaction")
            .query("BEGIN")
            .query("SAVEPOINT before_error")
            .query("INSERT INTO items VALUES (1000, 'fresh', 1)")
            .query("SELECT 1/0")
            .query("ROLLBACK TO SAVEPOINT before_error")
            .query("SELECT count(*) FROM items WHERE id = 1000")
            .query("ROLLBACK"),
    );
    cases.push(
        Case::new("errors/statement_timeout 57014 inside a transaction")
            .query("BEGIN")
            .query("SET LOCAL statement_timeout = '100ms'")
            .query("SELECT pg_sleep(3)")
            .query("ROLLBACK"),
    );
    cases.push(
        Case::new("errors/extended error skips to Sync, then works again")
            .send([
                Frontend::parse("", "SELECT 1/0", &[]),
                Frontend::bind("", "", &[], 0),
                Frontend::execute("", 0),
                Frontend::parse("", "SELECT 'skipped'", &[]),
                Frontend::bind("", "", &[], 0),
                Frontend::execute("", 0),
                Frontend::Sync,
            ])
            .ready(1)
            .extended("SELECT 'recovered' AS state", &[], 0),
    );
    cases
}
