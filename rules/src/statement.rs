//! What one statement is and touches: the model the parse-tree walk
//! (`walk.rs`) and the statement classifier (`classify.rs`) fill in, and
//! that [`crate::Analysis`] holds one of per statement.

use crate::catalog::Volatility;
use crate::names::{FunctionRef, TableRef};

/// What one statement is and touches. Names are as written (see [`TableRef`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Statement {
    pub kind: StatementKind,
    /// Relations read (CTE names excluded, written relations excluded).
    pub reads: Vec<TableRef>,
    /// Relations written: DML targets (also inside CTEs), `SELECT INTO` /
    /// `CREATE TABLE AS` targets, `TRUNCATE`, `COPY FROM`, and the relations
    /// DDL changes.
    pub writes: Vec<TableRef>,
    /// The statement may change results it does not name (`DO`, `CALL`,
    /// `EXECUTE`, `… CASCADE`, function DDL…): invalidate everything.
    pub writes_unknown: bool,
    /// Functions called, schema-qualified when the text qualifies them.
    pub functions: Vec<FunctionRef>,
    /// Non-immutable constructs that are not function calls in the text
    /// (`CURRENT_TIMESTAMP`, `CURRENT_USER`, `TABLESAMPLE` without
    /// `REPEATABLE`).
    pub implicit_calls: Vec<ImplicitCall>,
    /// `FOR UPDATE` / `FOR NO KEY UPDATE` / `FOR SHARE` / `FOR KEY SHARE`.
    pub locking: bool,
    /// An `INSERT`/`UPDATE`/`DELETE`/`MERGE` inside a `WITH` clause.
    pub data_modifying_cte: bool,
    /// `SELECT … INTO table`.
    pub select_into: bool,
    /// Creates a temporary relation or names schema `pg_temp`. (Temp tables
    /// referenced without a schema are only visible to the catalog.)
    pub temp_tables: bool,
    /// System catalogs read or written (`pg_catalog.*`,
    /// `information_schema.*`, unqualified `pg_*`).
    pub system_catalogs: Vec<TableRef>,
}

/// A construct that behaves like a call to a non-immutable function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImplicitCall {
    pub name: &'static str,
    pub volatility: Volatility,
}

/// What kind of statement it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatementKind {
    /// `SELECT`, `VALUES`, `TABLE`.
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Truncate,
    CopyFrom,
    CopyTo,
    /// `CREATE`/`ALTER`/`DROP`/`GRANT`/`COMMENT`/`REFRESH`… of any object.
    Ddl,
    Transaction(TransactionKind),
    /// `SET`, `RESET`.
    Set,
    Show,
    Explain,
    #[default]
    Other,
}

/// The transaction-control statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionKind {
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`.
    Commit,
    /// `ROLLBACK`, `ABORT`.
    Rollback,
    Savepoint,
    Release,
    RollbackTo,
    /// `PREPARE TRANSACTION`.
    Prepare,
    CommitPrepared,
    RollbackPrepared,
}

impl Statement {
    /// See [`Analysis::is_single_plain_read`].
    pub fn is_plain_read(&self) -> bool {
        self.kind == StatementKind::Select
            && self.writes.is_empty()
            && !self.writes_unknown
            && !self.locking
            && !self.data_modifying_cte
            && !self.select_into
            && !self.temp_tables
    }
}

/// Appends `item` unless `v` already holds it (lists of names stay small).
pub fn push_unique<T: PartialEq>(v: &mut Vec<T>, item: T) {
    if !v.contains(&item) {
        v.push(item);
    }
}
