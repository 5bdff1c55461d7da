//! The extended query protocol: named and unnamed statements and portals,
//! Describe, Close, binary parameters, per-column result formats, portal
//! suspension, Flush, and pipelined batches with errors in the middle.

use super::format_name;
use crate::differential::Case;
use crate::wire::Frontend;

const INT4: u32 = 23;
const INT8: u32 = 20;
const TEXT: u32 = 25;
const BYTEA: u32 = 17;
const BOOL: u32 = 16;
const FLOAT8: u32 = 701;

fn bind_formats(
    portal: &str,
    statement: &str,
    params: &[Option<&str>],
    result_formats: &[i16],
) -> Frontend {
    Frontend::Bind {
        portal: portal.into(),
        statement: statement.into(),
        param_formats: vec![],
        params: params
            .iter()
            .map(|p| p.map(|s| s.as_bytes().to_vec()))
            .collect(),
        result_formats: result_formats.to_vec(),
    }
}

/// Cases whose results come in the given format.
fn with_format(f: i16) -> Vec<Case> {
    let n = format_name(f);
    let pipeline_batch = |sql: &str| {
        vec![
            Frontend::parse("", sql, &[]),
            Frontend::bind("", "", &[], f),
            Frontend::execute("", 0),
            Frontend::Sync,
        ]
    };
    vec![
        Case::new(format!(
            "extended/unnamed statement with text parameters/{n}"
        ))
        .extended(
            "SELECT $1::int4 + 1 AS n, $2::text AS t, $3::numeric AS num",
            &[Some("41"), Some("hi"), Some("1.25")],
            f,
        ),
        Case::new(format!("extended/NULL parameters/{n}")).extended(
            "SELECT $1::int4 IS NULL AS is_null, $2::text AS t",
            &[None, None],
            f,
        ),
        Case::new(format!("extended/binary parameters/{n}"))
            .send([
                Frontend::parse(
                    "",
                    "SELECT $1 AS i4, $2 AS i8, $3 AS b, $4 AS t, $5 AS flag, $6 AS f8",
                    &[INT4, INT8, BYTEA, TEXT, BOOL, FLOAT8],
                ),
                Frontend::Bind {
                    portal: String::new(),
                    statement: String::new(),
                    param_formats: vec![1, 1, 1, 0, 1, 1],
                    params: vec![
                        Some(42i32.to_be_bytes().to_vec()),
                        Some((-7i64).to_be_bytes().to_vec()),
                        Some(vec![0, 1, 2, 255]),
                        Some(b"text param".to_vec()),
                        Some(vec![1]),
                        Some(2.5f64.to_be_bytes().to_vec()),
                    ],
                    result_formats: vec![f],
                },
                Frontend::describe_portal(""),
                Frontend::execute("", 0),
                Frontend::Sync,
            ])
            .ready(1),
        Case::new(format!(
            "extended/one binary format code for all parameters/{n}"
        ))
        .send([
            Frontend::parse("", "SELECT $1::int4 * $2::int4 AS product", &[INT4, INT4]),
            Frontend::Bind {
                portal: String::new(),
                statement: String::new(),
                param_formats: vec![1],
                params: vec![
                    Some(6i32.to_be_bytes().to_vec()),
                    Some(7i32.to_be_bytes().to_vec()),
                ],
                result_formats: vec![f],
            },
            Frontend::execute("", 0),
            Frontend::Sync,
        ])
        .ready(1),
        // The same statement name in every case that uses it: a name left
        // behind by an earlier client must not be visible to a later one.
        Case::new(format!(
            "extended/named statement reused across Syncs, then closed/{n}"
        ))
        .send([
            Frontend::parse("stmt_a", "SELECT $1::int4 * 10 AS tenfold", &[]),
            Frontend::Sync,
        ])
        .ready(1)
        .send([
            Frontend::bind("", "stmt_a", &[Some("1")], f),
            Frontend::execute("", 0),
            Frontend::Sync,
        ])
        .ready(1)
        .send([
            Frontend::bind("", "stmt_a", &[Some("2")], f),
            Frontend::describe_portal(""),
            Frontend::execute("", 0),
            Frontend::Sync,
        ])
        .ready(1)
        .send([Frontend::close_statement("stmt_a"), Frontend::Sync])
        .ready(1)
        .send([
            Frontend::bind("", "stmt_a", &[Some("3")], f),
            Frontend::execute("", 0),
            Frontend::Sync,
        ])
        .ready(1),
        Case::new(format!("extended/per-column result formats/{n}"))
            .send([
                Frontend::parse(
                    "",
                    "SELECT 1::int4 AS a, 'two'::text AS b, 3.5::float8 AS c",
                    &[],
                ),
                bind_formats("", "", &[], &[f, 1 - f, f]),
                Frontend::describe_portal(""),
                Frontend::execute("", 0),
                Frontend::Sync,
            ])
            .ready(1),
        Case::new(format!(
            "extended/portal suspended and resumed across Syncs in a transaction/{n}"
        ))
        .query("BEGIN")
        .send([
            Frontend::parse(
                "",
                "SELECT g, g * 1.5 AS x FROM generate_series(1, 10) g",
                &[],
            ),
            Frontend::bind("cur", "", &[], f),
            Frontend::execute("cur", 3),
            Frontend::Sync,
        ])
        .ready(1)
        .send([Frontend::execute("cur", 3), Frontend::Sync])
        .ready(1)
        .send([
            Frontend::describe_portal("cur"),
            Frontend::execute("cur", 0),
            Frontend::Sync,
        ])
        .ready(1)
        .send([Frontend::close_portal("cur"), Frontend::Sync])
        .ready(1)
        .query("COMMIT"),
        Case::new(format!("extended/portal suspended within one Sync/{n}"))
            .send([
                Frontend::parse("", "SELECT g FROM generate_series(1, 10) g", &[]),
                Frontend::bind("p", "", &[], f),
                Frontend::execute("p", 4),
                Frontend::execute("p", 4),
                Frontend::execute("p", 4),
                Frontend::execute("p", 4),
                Frontend::Sync,
            ])
            .ready(1),
        Case::new(format!("extended/Flush returns results before Sync/{n}"))
            .send([
                Frontend::parse("", "SELECT 'flushed' AS state", &[]),
                Frontend::bind("", "", &[], f),
                Frontend::execute("", 0),
                Frontend::Flush,
            ])
            .until(b'C')
            .send([Frontend::Sync])
            .ready(1),
        Case::new(format!("extended/Flush with a suspended portal/{n}"))
            .send([
                Frontend::parse("", "SELECT g FROM generate_series(1, 5) g", &[]),
                Frontend::bind("", "", &[], f),
                Frontend::execute("", 2),
                Frontend::Flush,
            ])
            .until(b's')
            .send([Frontend::execute("", 0), Frontend::Sync])
            .ready(1),
        Case::new(format!(
            "extended/pipelined batches, the middle one fails/{n}"
        ))
        .send(
            [
                pipeline_batch("SELECT 1 AS first"),
                pipeline_batch("SELECT 1/0 AS second"),
                pipeline_batch("SELECT 3 AS third"),
                pipeline_batch("SELECT id, label FROM uniq ORDER BY id"),
            ]
            .concat(),
        )
        .ready(4),
        Case::new(format!(
            "extended/pipeline with one Sync, error skips the rest/{n}"
        ))
        .send({
            let mut msgs = Vec::new();
            for sql in ["SELECT 'a' AS one", "SELECT 1/0", "SELECT 'c' AS three"] {
                msgs.push(Frontend::parse("", sql, &[]));
                msgs.push(Frontend::bind("", "", &[], f));
                msgs.push(Frontend::execute("", 0));
            }
            msgs.push(Frontend::Sync);
            msgs
        })
        .ready(1),
        Case::new(format!(
            "extended/named statements and portals pipelined/{n}"
        ))
        .send([
            Frontend::parse("pipe_s1", "SELECT $1::text AS s1", &[]),
            Frontend::parse("pipe_s2", "SELECT $1::int4 + 100 AS s2", &[]),
            Frontend::bind("pipe_p1", "pipe_s1", &[Some("one")], f),
            Frontend::bind("pipe_p2", "pipe_s2", &[Some("2")], f),
            Frontend::execute("pipe_p2", 0),
            Frontend::execute("pipe_p1", 0),
            Frontend::close_portal("pipe_p1"),
            Frontend::close_statement("pipe_s1"),
            Frontend::close_statement("pipe_s2"),
            Frontend::Sync,
        ])
        .ready(1),
        Case::new(format!("extended/DML with RETURNING in a transaction/{n}"))
            .query("BEGIN")
            .extended(
                "INSERT INTO copy_target VALUES ($1, $2, $3)",
                &[Some("1"), Some("x"), Some("2.5")],
                f,
            )
            .extended(
                "UPDATE copy_target SET c = c * 2 WHERE a = $1 RETURNING *",
                &[Some("1")],
                f,
            )
            .extended("DELETE FROM copy_target RETURNING a", &[], f)
            .query("ROLLBACK"),
        Case::new(format!(
            "extended/BEGIN and COMMIT as extended statements/{n}"
        ))
        .extended("BEGIN", &[], f)
        .extended("SELECT count(*) FROM items", &[], f)
        .extended("COMMIT", &[], f),
    ]
}

/// Cases without a result format to choose.
fn format_free() -> Vec<Case> {
    vec![
        Case::new("extended/Describe statement: parameters and row description")
            .send([
                Frontend::parse(
                    "stmt_d",
                    "SELECT $1::text AS a, $2::int8 AS b, $3::mood AS m, $4 + 1 AS inferred",
                    &[],
                ),
                Frontend::describe_statement("stmt_d"),
                Frontend::Sync,
            ])
            .ready(1)
            .send([Frontend::close_statement("stmt_d"), Frontend::Sync])
            .ready(1),
        Case::new("extended/Describe statement with declared parameter types")
            .send([
                Frontend::parse("", "SELECT $1 AS a, $2::text AS b", &[INT8, 0]),
                Frontend::describe_statement(""),
                Frontend::Sync,
            ])
            .ready(1),
        Case::new("extended/Describe statement without result: NoData")
            .send([
                Frontend::parse("stmt_i", "INSERT INTO copy_target VALUES ($1, $2, $3)", &[]),
                Frontend::describe_statement("stmt_i"),
                Frontend::close_statement("stmt_i"),
                Frontend::Sync,
            ])
            .ready(1),
        Case::new("extended/same statement name parsed twice: 42P05")
            .send([
                Frontend::parse("stmt_a", "SELECT 1", &[]),
                Frontend::parse("stmt_a", "SELECT 2", &[]),
                Frontend::Sync,
            ])
            .ready(1)
            .send([Frontend::close_statement("stmt_a"), Frontend::Sync])
            .ready(1),
        Case::new("extended/unnamed statement replaced by the next Parse")
            .send([
                Frontend::parse("", "SELECT 'old' AS v", &[]),
                Frontend::parse("", "SELECT 'new' AS v", &[]),
                Frontend::bind("", "", &[], 0),
                Frontend::execute("", 0),
                Frontend::Sync,
            ])
            .ready(1),
        Case::new("extended/Close of unknown statement and portal is not an error")
            .send([
                Frontend::close_statement("never_prepared"),
                Frontend::close_portal("never_bound"),
                Frontend::Sync,
            ])
            .ready(1),
        Case::new("extended/Execute of an unknown portal: 34000")
            .send([Frontend::execute("no_such_portal", 0), Frontend::Sync])
            .ready(1),
        Case::new("extended/Describe of an unknown portal: 34000")
            .send([Frontend::describe_portal("no_such_portal"), Frontend::Sync])
            .ready(1),
        Case::new("extended/Bind of an unknown statement: 26000")
            .send([
                Frontend::bind("", "no_such_statement", &[], 0),
                Frontend::Sync,
            ])
            .ready(1),
        Case::new("extended/Bind with the wrong number of parameters: 08P01")
            .send([
                Frontend::parse("", "SELECT $1::int4", &[]),
                Frontend::bind("", "", &[Some("1"), Some("2")], 0),
                Frontend::execute("", 0),
                Frontend::Sync,
            ])
            .ready(1),
        Case::new("extended/binary parameter of the wrong size: 08P01")
            .send([
                Frontend::parse("", "SELECT $1::int4", &[INT4]),
                Frontend::Bind {
                    portal: String::new(),
                    statement: String::new(),
                    param_formats: vec![1],
                    params: vec![Some(vec![0, 1])],
                    result_formats: vec![],
                },
                Frontend::execute("", 0),
                Frontend::Sync,
            ])
            .ready(1),
        Case::new("extended/text parameter that does not parse: 22P02").extended(
            "SELECT $1::int4",
            &[Some("abc")],
            0,
        ),
        Case::new("extended/two statements in one Parse: 42601")
            .send([
                Frontend::parse("", "SELECT 1; SELECT 2", &[]),
                Frontend::Sync,
            ])
            .ready(1),
        Case::new("extended/empty query: EmptyQueryResponse")
            .send([
                Frontend::parse("", "", &[]),
                Frontend::bind("", "", &[], 0),
                Frontend::describe_portal(""),
                Frontend::execute("", 0),
                Frontend::Sync,
            ])
            .ready(1),
        Case::new("extended/Sync alone")
            .send([Frontend::Sync])
            .ready(1),
        Case::new("extended/many Syncs in a row")
            .send([Frontend::Sync, Frontend::Sync, Frontend::Sync])
            .ready(3),
        Case::new("extended/SET through the extended protocol reports ParameterStatus")
            .extended("SET application_name = 'extended_app'", &[], 0)
            .extended("SELECT current_setting('application_name')", &[], 0)
            .extended("RESET application_name", &[], 0),
    ]
}

pub fn extended() -> Vec<Case> {
    let mut cases = with_format(0);
    cases.extend(with_format(1));
    cases.extend(format_free());
    cases
}
