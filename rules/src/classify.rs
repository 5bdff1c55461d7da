//! The kind of a top-level statement, and what DDL and utility statements
//! write.
//!
//! Writes decide invalidation, so the rule here is: a statement that changes
//! relations it names lists them in `writes`; a statement whose effect on
//! cached results cannot be pinned to named relations (`DO`, `CALL`,
//! `EXECUTE`, `DROP … CASCADE`, `CREATE OR REPLACE FUNCTION`, `GRANT` on a
//! role, unknown statement types…) sets `writes_unknown`, which the proxy
//! treats as "invalidate everything". DDL is rare; over-invalidating it is
//! cheap, missing an invalidation is a correctness bug.

use pg_query::protobuf::{DropBehavior, GrantTargetType, ObjectType, TransactionStmtKind};

use crate::names::TableRef;
use crate::statement::{push_unique, Statement, StatementKind, TransactionKind};
use crate::tree::{Node, Value};

/// Utility statements that change no relation content, permissions or
/// function definitions.
const NO_WRITES: &[&str] = &[
    "VacuumStmt",
    "LockStmt",
    "ListenStmt",
    "UnlistenStmt",
    "NotifyStmt",
    "PrepareStmt",
    "DeallocateStmt",
    "DeclareCursorStmt",
    "FetchStmt",
    "ClosePortalStmt",
    "CheckPointStmt",
    "DiscardStmt",
    "LoadStmt",
    "ClusterStmt",
    "ReindexStmt",
    "ConstraintsSetStmt",
    "VariableSetStmt",
    "VariableShowStmt",
    "TransactionStmt",
    "ExplainStmt",
];

/// DDL that creates or changes objects no cached result depends on.
const HARMLESS_DDL: &[&str] = &[
    "CreateSeqStmt",
    "AlterSeqStmt",
    "CreatedbStmt",
    "DropdbStmt",
    "CommentStmt",
    "SecLabelStmt",
    "CreateStatsStmt",
    "AlterStatsStmt",
    "CreateRoleStmt",
    "DropRoleStmt",
    "CreateSchemaStmt",
];

/// Sets `out.kind` and the writes that the generic walk cannot see.
pub fn classify(stmt: &Node, out: &mut Statement) {
    out.kind = kind(stmt);
    match out.kind {
        StatementKind::Ddl => ddl_writes(stmt, out),
        StatementKind::Truncate => {
            out.writes_unknown |= stmt.int("behavior") == DropBehavior::DropCascade as i64;
        }
        StatementKind::Other if !NO_WRITES.contains(&stmt.ty) => out.writes_unknown = true,
        // A prepared transaction's writes become visible here, on whatever
        // connection commits it, and the statement names none of them.
        StatementKind::Transaction(TransactionKind::CommitPrepared) => out.writes_unknown = true,
        _ => {}
    }
}

fn kind(stmt: &Node) -> StatementKind {
    match stmt.ty {
        "SelectStmt" => StatementKind::Select,
        "InsertStmt" => StatementKind::Insert,
        "UpdateStmt" => StatementKind::Update,
        "DeleteStmt" => StatementKind::Delete,
        "MergeStmt" => StatementKind::Merge,
        "TruncateStmt" => StatementKind::Truncate,
        "CopyStmt" if stmt.bool("is_from") => StatementKind::CopyFrom,
        "CopyStmt" => StatementKind::CopyTo,
        "TransactionStmt" => StatementKind::Transaction(transaction_kind(stmt)),
        "VariableSetStmt" => StatementKind::Set,
        "VariableShowStmt" => StatementKind::Show,
        "ExplainStmt" => StatementKind::Explain,
        ty if is_ddl(ty) => StatementKind::Ddl,
        _ => StatementKind::Other,
    }
}

fn is_ddl(ty: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "Create",
        "Alter",
        "Drop",
        "Rename",
        "Grant",
        "Comment",
        "SecLabel",
        "Define",
        "Reassign",
        "Import",
        "Refresh",
        "Index",
        "View",
        "Rule",
        "Composite",
    ];
    PREFIXES.iter().any(|p| ty.starts_with(p))
}

fn transaction_kind(stmt: &Node) -> TransactionKind {
    use TransactionStmtKind as K;
    match K::try_from(stmt.int("kind") as i32) {
        Ok(K::TransStmtBegin | K::TransStmtStart) => TransactionKind::Begin,
        Ok(K::TransStmtCommit) => TransactionKind::Commit,
        Ok(K::TransStmtSavepoint) => TransactionKind::Savepoint,
        Ok(K::TransStmtRelease) => TransactionKind::Release,
        Ok(K::TransStmtRollbackTo) => TransactionKind::RollbackTo,
        Ok(K::TransStmtPrepare) => TransactionKind::Prepare,
        Ok(K::TransStmtCommitPrepared) => TransactionKind::CommitPrepared,
        Ok(K::TransStmtRollbackPrepared) => TransactionKind::RollbackPrepared,
        Ok(K::TransStmtRollback | K::Undefined) | Err(_) => TransactionKind::Rollback,
    }
}

fn ddl_writes(stmt: &Node, out: &mut Statement) {
    let write_rv = |out: &mut Statement, field: &str| match stmt.node(field) {
        Some(rv) if rv.ty == "RangeVar" => {
            push_unique(&mut out.writes, range_var(rv));
            true
        }
        _ => false,
    };
    match stmt.ty {
        "CreateStmt" | "AlterTableStmt" | "IndexStmt" | "RefreshMatViewStmt" | "CreateTrigStmt"
        | "RuleStmt" => {
            write_rv(out, "relation");
        }
        "ViewStmt" => {
            write_rv(out, "view");
        }
        "CreatePolicyStmt" | "AlterPolicyStmt" => {
            write_rv(out, "table");
        }
        // The walk already recorded the `INTO` target.
        "CreateTableAsStmt" => {}
        "AlterObjectSchemaStmt" => {
            if !write_rv(out, "relation") {
                out.writes_unknown = true;
            }
        }
        "RenameStmt" => rename_writes(stmt, out),
        "DropStmt" => drop_writes(stmt, out),
        "GrantStmt" => grant_writes(stmt, out),
        ty if HARMLESS_DDL.contains(&ty) => {}
        _ => out.writes_unknown = true,
    }
}

fn rename_writes(stmt: &Node, out: &mut Statement) {
    let Some(rv) = stmt.node("relation") else {
        out.writes_unknown = true;
        return;
    };
    let old = range_var(rv);
    let new = is_relation_type(stmt.int("rename_type"))
        .then(|| TableRef::new(old.schema.as_deref(), stmt.str("newname")));
    push_unique(&mut out.writes, old);
    if let Some(new) = new {
        push_unique(&mut out.writes, new);
    }
}

fn drop_writes(stmt: &Node, out: &mut Statement) {
    if stmt.int("behavior") == DropBehavior::DropCascade as i64 {
        out.writes_unknown = true;
    }
    let ty = stmt.int("remove_type");
    let names = stmt.list("objects").iter().map(|o| match o {
        Value::Node(list) if list.ty == "List" => list.names("items"),
        _ => Vec::new(),
    });
    if is_relation_type(ty) {
        for parts in names {
            match parts.as_slice() {
                [name] => push_unique(&mut out.writes, TableRef::new(None, name)),
                [.., schema, name] => {
                    push_unique(&mut out.writes, TableRef::new(Some(schema), name))
                }
                [] => out.writes_unknown = true,
            }
        }
    } else if [
        ObjectType::ObjectRule,
        ObjectType::ObjectTrigger,
        ObjectType::ObjectPolicy,
    ]
    .iter()
    .any(|t| *t as i64 == ty)
    {
        // `DROP POLICY p ON [schema.]table`: the last name is the object's own.
        for parts in names {
            match parts.as_slice() {
                [name, _] => push_unique(&mut out.writes, TableRef::new(None, name)),
                [.., schema, name, _] => {
                    push_unique(&mut out.writes, TableRef::new(Some(schema), name))
                }
                _ => out.writes_unknown = true,
            }
        }
    } else if ![
        ObjectType::ObjectIndex,
        ObjectType::ObjectSequence,
        ObjectType::ObjectStatisticExt,
        ObjectType::ObjectRole,
        ObjectType::ObjectDatabase,
    ]
    .iter()
    .any(|t| *t as i64 == ty)
    {
        out.writes_unknown = true;
    }
}

fn grant_writes(stmt: &Node, out: &mut Statement) {
    let on_tables = stmt.int("targtype") == GrantTargetType::AclTargetObject as i64
        && stmt.int("objtype") == ObjectType::ObjectTable as i64;
    if !on_tables {
        out.writes_unknown |= stmt.int("objtype") != ObjectType::ObjectSequence as i64;
        return;
    }
    for rv in stmt.nodes("objects").filter(|n| n.ty == "RangeVar") {
        push_unique(&mut out.writes, range_var(rv));
    }
}

/// Tables, views, materialized views and foreign tables.
fn is_relation_type(ty: i64) -> bool {
    [
        ObjectType::ObjectTable,
        ObjectType::ObjectView,
        ObjectType::ObjectMatview,
        ObjectType::ObjectForeignTable,
    ]
    .iter()
    .any(|t| *t as i64 == ty)
}

fn range_var(rv: &Node) -> TableRef {
    TableRef::new(Some(rv.str("schemaname")), rv.str("relname"))
}
