//! COPY in both directions and formats, its failures, and COPY through the
//! extended protocol. COPY FROM runs inside a transaction that rolls back.

use crate::differential::Case;
use crate::wire::Frontend;

fn data(s: &str) -> Frontend {
    Frontend::CopyData(s.as_bytes().to_vec())
}

/// A binary COPY stream with two rows of (int4, text, numeric NULL).
fn binary_copy_stream() -> Vec<u8> {
    let mut out = b"PGCOPY\n\xff\r\n\0".to_vec();
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for (a, b) in [(7i32, "seven"), (8, "eight")] {
        out.extend_from_slice(&3i16.to_be_bytes());
        out.extend_from_slice(&4i32.to_be_bytes());
        out.extend_from_slice(&a.to_be_bytes());
        out.extend_from_slice(&(b.len() as i32).to_be_bytes());
        out.extend_from_slice(b.as_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes());
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// BEGIN; COPY … FROM STDIN with `rows`; read back; ROLLBACK.
fn copy_in(name: &str, copy_sql: &str, rows: Vec<Frontend>, finish: Frontend) -> Case {
    let mut msgs = rows;
    msgs.push(finish);
    Case::new(name)
        .query("BEGIN")
        .send([Frontend::query(copy_sql)])
        .until(b'G')
        .send(msgs)
        .ready(1)
        .query("SELECT * FROM copy_target ORDER BY a")
        .query("ROLLBACK")
}

pub fn copy() -> Vec<Case> {
    vec![
        Case::simple(
            "copy/TO STDOUT text",
            "COPY (SELECT g, g * 2, 'row ' || g FROM generate_series(1, 200) g) TO STDOUT",
        ),
        Case::simple(
            "copy/TO STDOUT csv with header",
            "COPY typed_rows TO STDOUT WITH (FORMAT csv, HEADER)",
        ),
        Case::simple(
            "copy/TO STDOUT binary",
            "COPY typed_rows TO STDOUT WITH (FORMAT binary)",
        ),
        Case::simple(
            "copy/TO STDOUT then a SELECT in the same query",
            "COPY (SELECT 1) TO STDOUT; SELECT 2 AS after",
        ),
        copy_in(
            "copy/FROM STDIN text",
            "COPY copy_target FROM STDIN",
            vec![data("1\tone\t1.5\n"), data("2\t\\N\t2.5\n3\tthree\t\\N\n")],
            Frontend::CopyDone,
        ),
        copy_in(
            "copy/FROM STDIN csv, rows split across CopyData",
            "COPY copy_target FROM STDIN WITH (FORMAT csv)",
            vec![data("4,\"quoted, comma\",3.5\n5,pla"), data("in,\n")],
            Frontend::CopyDone,
        ),
        copy_in(
            "copy/FROM STDIN binary",
            "COPY copy_target FROM STDIN WITH (FORMAT binary)",
            vec![Frontend::CopyData(binary_copy_stream())],
            Frontend::CopyDone,
        ),
        copy_in(
            "copy/FROM STDIN bad data 22P02 with context",
            "COPY copy_target FROM STDIN",
            vec![data("1\tone\t1.5\n"), data("2\ttwo\tnot_a_number\n")],
            Frontend::CopyDone,
        ),
        copy_in(
            "copy/FROM STDIN CopyFail 57014",
            "COPY copy_target FROM STDIN",
            vec![data("1\tone\t1.5\n")],
            Frontend::CopyFail("client gave up".into()),
        ),
        Case::new("copy/FROM STDIN outside a transaction, then rows counted and deleted")
            .send([Frontend::query("COPY copy_target FROM STDIN")])
            .until(b'G')
            .send([data("10\tten\t10\n11\televen\t11\n"), Frontend::CopyDone])
            .ready(1)
            .query("DELETE FROM copy_target WHERE a IN (10, 11)"),
        Case::new("copy/TO STDOUT through the extended protocol")
            .send([
                Frontend::parse(
                    "",
                    "COPY (SELECT g FROM generate_series(1, 5) g) TO STDOUT",
                    &[],
                ),
                Frontend::bind("", "", &[], 0),
                Frontend::describe_portal(""),
                Frontend::execute("", 0),
                Frontend::Sync,
            ])
            .ready(1),
        // As libpq does it: the first Sync arrives during copy-in and is
        // ignored; a second Sync follows CopyDone.
        Case::new("copy/FROM STDIN through the extended protocol")
            .query("BEGIN")
            .send([
                Frontend::parse("", "COPY copy_target FROM STDIN", &[]),
                Frontend::bind("", "", &[], 0),
                Frontend::describe_portal(""),
                Frontend::execute("", 0),
                Frontend::Sync,
            ])
            .until(b'G')
            .send([data("20\ttwenty\t20\n"), Frontend::CopyDone, Frontend::Sync])
            .ready(1)
            .query("SELECT * FROM copy_target ORDER BY a")
            .query("ROLLBACK"),
    ]
}
