//! The differential corpus: what a transparent proxy must relay unchanged.
//!
//! Every case runs on a database prepared with [`FIXTURES`]. Cases leave the
//! database as they found it (writes happen inside transactions that roll
//! back), so the direct run and the proxied run start from the same state,
//! and each case leaves its connection idle. Cases that return rows come in a
//! text and a binary result-format variant where the protocol allows a choice.

mod copy;
mod errors;
mod extended;
mod simple;
mod types;

pub use copy::copy;
pub use errors::errors;
pub use extended::extended;
pub use simple::simple;
pub use types::types;

use super::Case;

/// Schema and rows the corpus reads. Run once per test database.
pub const FIXTURES: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (n int4, label text, at date);
CREATE TABLE typed_rows (
    id int4 PRIMARY KEY, i2 int2, i8 int8, num numeric(30,5), f4 float4, f8 float8,
    t text, vc varchar(20), ch char(4), b bool, d date, tm time, ts timestamp,
    tstz timestamptz, iv interval, by bytea, u uuid, j json, jb jsonb,
    arr int4[], tarr text[], m mood, p pair, r int4range
);
INSERT INTO typed_rows VALUES
  (1, 7, 9000000000, 12345.6789, 1.25, 3.141592653589793, 'first', 'var', 'ch', true,
   '2024-02-29', '13:14:15.5', '2024-01-02 03:04:05.678', '2024-01-02 03:04:05.678+01',
   '1 day 02:03:04', '\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"k": [1, "v"]}',
   '{"z": 1, "a": {"b": null}}', '{1,NULL,3}', '{"a b","c,d",NULL}', 'happy', '(5,five,2020-05-05)', '[1,5)'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, -32768, -9223372036854775808, 'NaN', '-Infinity', 'NaN', '', '', '', false,
   'infinity', '00:00', '-infinity', 'infinity', '-178000000 years', '', '00000000-0000-0000-0000-000000000000',
   '[]', '{}', '{}', '{}', 'sad', '(,,)', 'empty');
CREATE TABLE uniq (id int PRIMARY KEY, label text NOT NULL CHECK (label <> ''));
INSERT INTO uniq VALUES (1, 'one'), (2, 'two');
CREATE TABLE child (id int PRIMARY KEY, uniq_id int REFERENCES uniq (id));
CREATE TABLE copy_target (a int, b text, c numeric);
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
INSERT INTO items SELECT g, 'item ' || g, g * 10 FROM generate_series(1, 20) g;
CREATE FUNCTION noisy(n int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'noisy %', n;
    RETURN n * 2;
END $$;
"#;

/// Every category, in one list.
pub fn all() -> Vec<Case> {
    let mut cases = types();
    cases.extend(errors());
    cases.extend(simple());
    cases.extend(copy());
    cases.extend(extended());
    cases
}

/// The name of a result format code, for case names.
pub(crate) fn format_name(format: i16) -> &'static str {
    if format == 0 {
        "text"
    } else {
        "binary"
    }
}
