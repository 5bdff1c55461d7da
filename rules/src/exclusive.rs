//! Which databases a SQL text needs without other connections: Postgres
//! refuses `DROP DATABASE x`, `ALTER DATABASE x RENAME TO …`, `ALTER
//! DATABASE x SET TABLESPACE …` and `CREATE DATABASE … TEMPLATE x` with
//! 55006 ("is being accessed by other users") while any session is
//! connected to `x`. A pooler keeps idle server connections to databases
//! its clients have left; before such a statement goes upstream it closes
//! those (the client, talking to Postgres directly, would have none).
//!
//! # Performance
//! Runs on statement texts the client sends: a text that starts with
//! none of the statements' first letters (and holds no `;`) is passed over
//! at once; then a byte scan for the word `database`, and only texts
//! containing it are parsed.

use pg_query::protobuf::ObjectType;

use crate::tree::{self, Node, Value};

/// The template `CREATE DATABASE` copies when it names none.
const DEFAULT_TEMPLATE: &str = "template1";

/// The databases `sql` needs no other session connected to (empty for
/// almost every text, and for a text that does not parse).
pub fn exclusive_databases(sql: &str) -> Vec<String> {
    // Such a statement starts with DROP, ALTER or CREATE: a text that
    // starts otherwise (and holds no second statement) is passed over.
    if !crate::starts::may_start_with(sql.as_bytes(), b"dac") {
        return Vec::new();
    }
    if !mentions_database(sql.as_bytes()) {
        return Vec::new();
    }
    let Ok(statements) = tree::parse_statements(sql) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for node in statements.iter().filter_map(Value::as_node) {
        if let Some(name) = exclusive_database(node) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

fn exclusive_database(stmt: &Node) -> Option<String> {
    let name = match stmt.ty {
        "DropdbStmt" => stmt.str("dbname"),
        "RenameStmt" if stmt.int("rename_type") == ObjectType::ObjectDatabase as i64 => {
            stmt.str("subname")
        }
        "AlterDatabaseStmt" if option(stmt, "tablespace").is_some() => stmt.str("dbname"),
        "CreatedbStmt" => match option(stmt, "template") {
            Some(template) => template.str("sval"),
            None => DEFAULT_TEMPLATE,
        },
        _ => return None,
    };
    (!name.is_empty()).then(|| name.to_owned())
}

/// The argument of the statement's option `name` (a `DefElem`), if given.
fn option<'a>(stmt: &'a Node, name: &str) -> Option<&'a Node> {
    stmt.nodes("options")
        .filter(|o| o.ty == "DefElem" && o.str("defname") == name)
        .find_map(|o| o.node("arg"))
}

/// Whether `sql` contains `database` anywhere, in any case.
fn mentions_database(bytes: &[u8]) -> bool {
    const WORD: &[u8] = b"database";
    bytes
        .windows(WORD.len())
        .any(|w| w[0] | 0x20 == b'd' && w.eq_ignore_ascii_case(WORD))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_need_a_database_alone_name_it() {
        let cases: &[(&str, &[&str])] = &[
            ("DROP DATABASE shop", &["shop"]),
            ("drop database if exists \"Shop\" with (force)", &["Shop"]),
            ("ALTER DATABASE shop RENAME TO store", &["shop"]),
            ("ALTER DATABASE shop SET TABLESPACE fast", &["shop"]),
            ("CREATE DATABASE copy TEMPLATE shop", &["shop"]),
            (
                "CREATE DATABASE copy WITH TEMPLATE = 'shop' OWNER = x",
                &["shop"],
            ),
            ("CREATE DATABASE fresh", &["template1"]),
            ("CREATE DATABASE fresh TEMPLATE template0", &["template0"]),
            ("ALTER DATABASE shop SET work_mem = '8MB'", &[]),
            ("ALTER DATABASE shop OWNER TO bob", &[]),
            ("ALTER DATABASE shop WITH CONNECTION LIMIT 5", &[]),
            ("SELECT current_database()", &[]),
            ("DROP TABLE database_log", &[]),
            ("DROP DATABASE", &[]),
            ("  -- comment\n DROP DATABASE shop", &["shop"]),
            (
                "BEGIN; ALTER DATABASE shop RENAME TO store; COMMIT",
                &["shop"],
            ),
            ("SELECT 1", &[]),
        ];
        for (sql, expected) in cases {
            assert_eq!(exclusive_databases(sql), *expected, "{sql}");
        }
    }
}
