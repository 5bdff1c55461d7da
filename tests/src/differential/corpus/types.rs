//! Values of every common type, as SELECT results: in the simple protocol
//! (text) and through an unnamed extended-protocol statement in text and in
//! binary result format.

use super::format_name;
use crate::differential::Case;

/// (label, query) pairs; each becomes three cases.
const QUERIES: &[(&str, &str)] = &[
    (
        "integers",
        "SELECT 1::int2 AS i2, (-32768)::int2 AS i2_min, 2147483647::int4 AS i4_max, \
         (-2147483648)::int4 AS i4_min, 9223372036854775807::int8 AS i8_max, \
         (-9223372036854775808)::int8 AS i8_min, 0::int8 AS zero",
    ),
    (
        "numeric",
        "SELECT 0::numeric AS zero, 'NaN'::numeric AS nan, 'Infinity'::numeric AS inf, \
         '-Infinity'::numeric AS ninf, \
         123456789012345678901234567890.123456789012345678901234567890::numeric AS big, \
         -0.000000000000000000001::numeric AS tiny, (10::numeric ^ 300) AS huge, \
         1.50::numeric(10,2) AS scaled, 12345.678::numeric(8,3) AS typmod",
    ),
    (
        "floats",
        "SELECT 1.5::float4 AS f4, 0.1::float4 AS f4_inexact, 'Infinity'::float4 AS f4_inf, \
         '-Infinity'::float8 AS f8_ninf, 'NaN'::float8 AS f8_nan, 1e308::float8 AS f8_big, \
         2.2250738585072014e-308::float8 AS f8_min, 1.23456789012345678::float8 AS f8_digits, \
         '-0'::float8 AS neg_zero",
    ),
    (
        "text types",
        r#"SELECT 'hello'::text AS t, ''::text AS empty, 'ünïcødé ✓ 日本語'::text AS utf8,
           E'tab\there\nnewline \\ quote''' AS escapes, repeat('x', 10000) AS long,
           'abc'::varchar(10) AS vc, 'ab'::char(5) AS ch, 'x'::"char" AS one_char,
           'pg_class'::name AS nm"#,
    ),
    ("booleans", "SELECT true AS t, false AS f, NULL::bool AS n"),
    (
        "dates and times",
        "SELECT '2024-02-29'::date AS leap, 'infinity'::date AS inf, '4713-01-01 BC'::date AS bc, \
         '23:59:59.999999'::time AS tm, '12:00:00+05:30'::timetz AS tz, \
         '2024-01-01 12:34:56.789'::timestamp AS ts, '-infinity'::timestamp AS ts_ninf, \
         '2024-06-30 23:59:59.5+02'::timestamptz AS tstz, 'epoch'::timestamptz AS epoch",
    ),
    (
        "intervals",
        "SELECT '1 year 2 mons 3 days 04:05:06.789'::interval AS full_iv, '-1 day'::interval AS neg, \
         '0'::interval AS zero, '178000000 years'::interval AS big, '1.5 seconds'::interval AS frac",
    ),
    (
        "bytea",
        r"SELECT '\xdeadbeef'::bytea AS b, ''::bytea AS empty, decode(repeat('00ff', 1000), 'hex') AS long,
          'a\000b'::bytea AS nul",
    ),
    (
        "uuid",
        "SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u, \
         '00000000-0000-0000-0000-000000000000'::uuid AS nil",
    ),
    (
        "json and jsonb",
        r#"SELECT '{"a": [1, 2, {"b": null}]}'::json AS j, '{"b": 1, "a": [true, "x"]}'::jsonb AS jb,
           'null'::jsonb AS jnull, '[]'::json AS jarr, '"\u00e9"'::jsonb AS jstr,
           '  {"spaces" :  1 }  '::json AS jspaces"#,
    ),
    (
        "arrays",
        r#"SELECT ARRAY[1, 2, 3]::int4[] AS ints, ARRAY[[1, 2], [3, 4]]::int8[] AS nested,
           ARRAY['a', NULL, 'c d', '"q"']::text[] AS texts, '{}'::int4[] AS empty,
           ARRAY[NULL]::int4[] AS only_null, '[0:2]={1,2,3}'::int4[] AS lower_bound,
           ARRAY[1.5, NULL, 'NaN']::numeric[] AS nums, ARRAY['2024-01-01'::date] AS dates,
           ARRAY[[[true]], [[false]]] AS deep, ARRAY[[NULL, 1], [2, NULL]]::int2[] AS nested_nulls"#,
    ),
    (
        "enums",
        "SELECT 'happy'::mood AS m, ARRAY['sad', 'ok']::mood[] AS ms, NULL::mood AS none",
    ),
    (
        "composites",
        r#"SELECT ROW(1, 'one', '2024-01-01')::pair AS p, ROW(NULL, NULL, NULL)::pair AS nulls,
           ARRAY[ROW(2, 'two, "quoted"', NULL)::pair] AS arr, ROW(1, 'x') AS anonymous"#,
    ),
    (
        "ranges",
        "SELECT int4range(1, 10) AS i4, '[2024-01-01,2024-02-01)'::daterange AS d, \
         numrange(NULL, 5.5) AS unbounded, 'empty'::int8range AS empty, \
         tstzrange('2024-01-01 00:00+00', 'infinity') AS tstz, \
         '{[1,3), [5,7)}'::int4multirange AS multi",
    ),
    (
        "network, geometry, text search, oids",
        "SELECT '192.168.0.1/24'::inet AS ip, '10.0.0.0/8'::cidr AS net, '::1'::inet AS ip6, \
         '08:00:2b:01:02:03'::macaddr AS mac, point(1.5, -2) AS pt, \
         box(point(0, 0), point(1, 1)) AS bx, 'a fat cat'::tsvector AS tsv, 16384::oid AS o, \
         'pg_class'::regclass AS rc, 12.5::money AS cash",
    ),
    (
        "nulls",
        "SELECT NULL AS untyped, NULL::text AS t, NULL::int4[] AS arr, NULL::jsonb AS jb, \
         NULL::pair AS comp, NULL::numeric AS num",
    ),
    ("table rows", "SELECT * FROM typed_rows ORDER BY id"),
    ("table rows, some columns", "SELECT id, m, p, arr, r FROM typed_rows ORDER BY id DESC"),
    (
        "many rows",
        "SELECT g, md5(g::text) AS h, g * 0.5 AS half FROM generate_series(1, 3000) g",
    ),
    ("one big value", "SELECT repeat('y', 300000) AS big"),
    ("no rows", "SELECT id, t FROM typed_rows WHERE false"),
    ("no columns", "SELECT"),
    (
        "quoted column names",
        r#"SELECT 1 AS "ÄÖÜ column", 2 AS "with space", 3 AS "?column?", 4, 'x' || 'y'"#,
    ),
    ("values list", "VALUES (1, 'a', 1.5), (2, NULL, NULL)"),
    ("table command", "TABLE uniq"),
    (
        "window and cte",
        "WITH t AS (SELECT id, qty FROM items WHERE id <= 5) \
         SELECT id, sum(qty) OVER (ORDER BY id) AS running, rank() OVER (ORDER BY qty DESC) FROM t ORDER BY id",
    ),
];

/// Each query in the simple protocol, then extended in text and binary.
pub fn types() -> Vec<Case> {
    let mut cases = Vec::new();
    for (label, sql) in QUERIES {
        cases.push(Case::simple(format!("types/{label}/simple"), sql));
        for format in [0, 1] {
            cases.push(
                Case::new(format!("types/{label}/extended {}", format_name(format))).extended(
                    sql,
                    &[],
                    format,
                ),
            );
        }
    }
    cases
}
