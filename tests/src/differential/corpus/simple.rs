//! The simple query protocol: multi-statement strings, empty queries, command
//! tags, transaction status, session settings and the ParameterStatus they
//! report, notifications.

use crate::differential::Case;

pub fn simple() -> Vec<Case> {
    vec![
        Case::simple("simple/three statements in one query", "SELECT 1 AS a; SELECT 2 AS b, 'x' AS c; SELECT 3"),
        Case::simple("simple/middle statement fails, third not run", "SELECT 1 AS a; SELECT 1/0; SELECT 3 AS c"),
        Case::simple(
            "simple/command tags of DDL and DML",
            "BEGIN; CREATE TABLE scratch_tags (a int); INSERT INTO scratch_tags SELECT generate_series(1, 3); \
             UPDATE scratch_tags SET a = a + 1; DELETE FROM scratch_tags WHERE a > 3; \
             SELECT count(*) FROM scratch_tags; CREATE INDEX ON scratch_tags (a); \
             ALTER TABLE scratch_tags ADD COLUMN b text; TRUNCATE scratch_tags; DROP TABLE scratch_tags; ROLLBACK",
        ),
        Case::new("simple/implicit transaction rolls back as a whole")
            .query("INSERT INTO items VALUES (500, 'gone', 1); SELECT 1/0")
            .query("SELECT count(*) FROM items WHERE id = 500"),
        Case::new("simple/RETURNING and SELECT tags inside a transaction")
            .query("BEGIN")
            .query("UPDATE items SET qty = qty + 1 WHERE id <= 3 RETURNING id, qty")
            .query("DELETE FROM items WHERE id = 20 RETURNING *")
            .query("INSERT INTO items VALUES (21, 'new', 0), (22, 'newer', 0)")
            .query("SELECT count(*) FROM items")
            .query("ROLLBACK"),
        Case::simple("simple/empty query string", ""),
        Case::simple("simple/only whitespace", "   \n\t "),
        Case::simple("simple/only a semicolon", ";"),
        Case::simple("simple/only a comment", "-- nothing to see"),
        Case::simple("simple/statements and empty statements", "SELECT 1;;; SELECT 2;"),
        Case::new("simple/transaction status I, T, I")
            .query("BEGIN")
            .query("SELECT 1")
            .query("COMMIT")
            .query("COMMIT"),
        Case::new("simple/application_name SET reports ParameterStatus")
            .query("SET application_name = 'diff_app'")
            .query("SHOW application_name")
            .query("RESET application_name")
            .query("SHOW application_name"),
        Case::new("simple/TimeZone persists across transactions")
            .query("SET TimeZone = 'America/New_York'")
            .query("SELECT '2024-01-01 00:00:00+00'::timestamptz AS ts")
            .query("SELECT '2024-07-01 12:00:00+00'::timestamptz AS ts")
            .query("RESET TimeZone")
            .query("SELECT '2024-01-01 00:00:00+00'::timestamptz AS ts"),
        Case::new("simple/DateStyle and IntervalStyle persist across transactions")
            .query("SET DateStyle = 'German, DMY'")
            .query("SELECT '2024-02-29'::date AS d, '2024-02-29 10:11:12'::timestamp AS ts")
            .query("SET IntervalStyle = 'iso_8601'")
            .query("SELECT '1 day 2 hours 3.5 seconds'::interval AS iv")
            .query("RESET DateStyle; RESET IntervalStyle"),
        Case::new("simple/extra_float_digits and bytea_output persist across transactions")
            .query("SET extra_float_digits = 0")
            .query("SELECT 0.1::float8 AS f, 1.1::float4 AS g")
            .query("SET bytea_output = 'escape'")
            .query(r"SELECT '\x616263ff'::bytea AS b")
            .query("RESET extra_float_digits; RESET bytea_output"),
        Case::new("simple/search_path persists across transactions")
            .query("SET search_path = pg_catalog")
            .query("SELECT count(*) FROM pg_namespace WHERE nspname = 'public'")
            .query("SELECT * FROM uniq")
            .query("RESET search_path")
            .query("SELECT * FROM uniq ORDER BY id"),
        Case::new("simple/SET LOCAL reverts at COMMIT")
            .query("BEGIN")
            .query("SET LOCAL application_name = 'local_only'")
            .query("SHOW application_name")
            .query("COMMIT")
            .query("SHOW application_name"),
        Case::simple(
            "simple/LISTEN and NOTIFY in one query deliver the notification",
            "LISTEN pgstash_diff; NOTIFY pgstash_diff, 'hello'; SELECT pg_notify('pgstash_diff', 'again')",
        )
        .query("UNLISTEN *"),
        Case::simple(
            "simple/notice between result sets",
            "SELECT 1 AS before; DO $$ BEGIN RAISE NOTICE 'between'; END $$; SELECT 2 AS after",
        ),
        Case::simple("simple/SHOW of a setting that is not reported", "SHOW work_mem"),
        Case::simple(
            "simple/EXPLAIN output",
            "EXPLAIN (COSTS OFF) SELECT * FROM uniq WHERE id = 1",
        ),
        Case::simple("simple/prepare, execute, deallocate in SQL", "PREPARE sql_stmt(int) AS SELECT $1 * 2; EXECUTE sql_stmt(21); DEALLOCATE sql_stmt"),
    ]
}
