//! The walk over one statement's parse tree that finds what it touches:
//! relations read and written, functions called, locking clauses, `INTO`,
//! data-modifying CTEs, temp relations and system catalogs.
//!
//! The walk recurses into every field of every node (see `tree.rs`), so a
//! function call or subquery is found wherever the grammar allows it. Only
//! the nodes that matter are matched by type; CTE names are tracked with
//! Postgres' scoping rules so `WITH x AS (…) SELECT * FROM x` does not
//! count `x` as a table, while a non-recursive `WITH x AS (SELECT * FROM x)`
//! does read the table `x`.

use crate::catalog::Volatility;
use crate::names::{FunctionRef, TableRef};
use crate::statement::{push_unique, ImplicitCall, Statement};
use crate::tree::{Node, Value};

/// Node types that hold a statement whose target relation is written.
const DML: &[&str] = &["InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"];

/// Walks `root` (a statement) and records its findings into `out`.
pub fn walk_statement(root: &Node, out: &mut Statement) {
    let mut w = Walker {
        root,
        out,
        scope: Vec::new(),
    };
    w.node(root);
}

struct Walker<'a> {
    /// The top statement: DML anywhere else is a data-modifying CTE.
    root: &'a Node,
    out: &'a mut Statement,
    /// CTE names visible at the current point, innermost last.
    scope: Vec<String>,
}

impl Walker<'_> {
    fn value(&mut self, v: &Value) {
        match v {
            Value::Node(n) => self.node(n),
            Value::List(items) => items.iter().for_each(|i| self.value(i)),
            _ => {}
        }
    }

    fn node(&mut self, n: &Node) {
        match n.ty {
            "RangeVar" => self.read(n),
            "FuncCall" => {
                self.function(n);
                self.fields(n, &["funcname"]);
            }
            "SqlValueFunction" => self.sql_value_function(n),
            "RangeTableSample" => {
                // Without REPEATABLE the sample changes on every execution.
                if n.node("repeatable").is_none() {
                    push_unique(
                        &mut self.out.implicit_calls,
                        ImplicitCall {
                            name: "tablesample",
                            volatility: Volatility::Volatile,
                        },
                    );
                }
                self.fields(n, &["method"]);
            }
            // `FOR UPDATE OF t` names range-table aliases, not relations.
            "LockingClause" => self.out.locking = true,
            "IntoClause" => {
                if let Some(rel) = n.node("rel") {
                    self.write(rel);
                }
            }
            "SelectStmt" => {
                self.out.select_into |= n.node("into_clause").is_some();
                self.scoped(n, &[]);
            }
            ty if DML.contains(&ty) => {
                if !std::ptr::eq(n, self.root) {
                    self.out.data_modifying_cte = true;
                }
                if let Some(rel) = n.node("relation") {
                    self.write(rel);
                }
                self.scoped(n, &["relation"]);
            }
            "CopyStmt" => match n.node("relation") {
                Some(rel) if n.bool("is_from") => {
                    self.write(rel);
                    self.fields(n, &["relation"]);
                }
                _ => self.fields(n, &[]),
            },
            "TruncateStmt" => {
                for rel in n.nodes("relations") {
                    self.write(rel);
                }
            }
            // Column names, constants and parameters hold nothing of interest.
            "ColumnRef" | "AConst" | "ParamRef" | "String" | "TypeName" => {}
            _ => self.fields(n, &[]),
        }
    }

    /// Walks every field of `n` except those in `skip`.
    fn fields(&mut self, n: &Node, skip: &[&str]) {
        for (name, v) in &n.fields {
            if !skip.contains(name) {
                self.value(v);
            }
        }
    }

    /// Walks a statement that may carry a `WITH` clause, making its CTE
    /// names visible to the CTEs that may see them and to the statement body.
    fn scoped(&mut self, n: &Node, skip: &[&str]) {
        let mark = self.scope.len();
        if let Some(with) = n.node("with_clause") {
            let ctes: Vec<&Node> = with.nodes("ctes").collect();
            let recursive = with.bool("recursive");
            if recursive {
                self.scope
                    .extend(ctes.iter().map(|c| c.str("ctename").to_owned()));
            }
            for cte in &ctes {
                self.fields(cte, &[]);
                if !recursive {
                    // A non-recursive CTE sees only the CTEs before it.
                    self.scope.push(cte.str("ctename").to_owned());
                }
            }
        }
        let mut skip_with = skip.to_vec();
        skip_with.push("with_clause");
        self.fields(n, &skip_with);
        self.scope.truncate(mark);
    }

    fn table(&mut self, rv: &Node) -> TableRef {
        let schema = rv.str("schemaname");
        if rv.str("relpersistence") == "t" || schema == "pg_temp" {
            self.out.temp_tables = true;
        }
        let t = TableRef::new(Some(schema), rv.str("relname"));
        if t.is_system_catalog() {
            push_unique(&mut self.out.system_catalogs, t.clone());
        }
        t
    }

    fn read(&mut self, rv: &Node) {
        let is_cte =
            rv.str("schemaname").is_empty() && self.scope.iter().any(|c| c == rv.str("relname"));
        if is_cte {
            return;
        }
        let t = self.table(rv);
        push_unique(&mut self.out.reads, t);
    }

    fn write(&mut self, rv: &Node) {
        if rv.ty != "RangeVar" {
            return;
        }
        let t = self.table(rv);
        push_unique(&mut self.out.writes, t);
    }

    fn function(&mut self, call: &Node) {
        let names = call.names("funcname");
        let Some((name, qualifiers)) = names.split_last() else {
            return;
        };
        let f = FunctionRef {
            schema: qualifiers.last().map(|s| (*s).to_owned()),
            name: (*name).to_owned(),
        };
        push_unique(&mut self.out.functions, f);
    }

    fn sql_value_function(&mut self, n: &Node) {
        use pg_query::protobuf::SqlValueFunctionOp as Op;
        let name = match Op::try_from(n.int("op") as i32) {
            Ok(Op::SvfopCurrentDate) => "current_date",
            Ok(Op::SvfopCurrentTime | Op::SvfopCurrentTimeN) => "current_time",
            Ok(Op::SvfopCurrentTimestamp | Op::SvfopCurrentTimestampN) => "current_timestamp",
            Ok(Op::SvfopLocaltime | Op::SvfopLocaltimeN) => "localtime",
            Ok(Op::SvfopLocaltimestamp | Op::SvfopLocaltimestampN) => "localtimestamp",
            Ok(Op::SvfopCurrentRole) => "current_role",
            Ok(Op::SvfopCurrentUser) => "current_user",
            Ok(Op::SvfopUser) => "user",
            Ok(Op::SvfopSessionUser) => "session_user",
            Ok(Op::SvfopCurrentCatalog) => "current_catalog",
            Ok(Op::SvfopCurrentSchema) => "current_schema",
            _ => "unknown sql value function",
        };
        push_unique(
            &mut self.out.implicit_calls,
            ImplicitCall {
                name,
                volatility: Volatility::Stable,
            },
        );
    }
}
