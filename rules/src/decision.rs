//! The caching decision for one SQL string: serve/fill from the cache,
//! invalidate after a write, or go upstream untouched — and why.
//!
//! Default-deny (DESIGN.md): a read is cached only when a rule matches it
//! *and* every eligibility check passes; anything unknown (a function or
//! relation the catalog cannot describe) means "do not cache". Writes are
//! decided first and regardless of rules or session state, because missing
//! an invalidation is a correctness bug while an extra one only costs a miss.

use std::fmt;
use std::sync::Arc;

use crate::analysis::Analysis;
use crate::catalog::{Catalog, Volatility};
use crate::fingerprint::{is_time_sensitive_input, LiteralKind};
use crate::model::{Rule, RuleSet};
use crate::names::TableRef;
use crate::statement::{push_unique, StatementKind};
use crate::writes::Writes;

/// What the proxy knows about the client session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SessionFacts {
    /// Inside `BEGIN … COMMIT` (ReadyForQuery status `T` or `E`).
    pub in_transaction: bool,
    /// The session ran `SET ROLE` / `SET SESSION AUTHORIZATION` (G5).
    pub role_changed: bool,
}

/// What to do with a SQL string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Serve from / fill the cache under `rule`. `tables` are every relation
    /// whose writes must invalidate the entry: the relations read, their
    /// catalog dependencies (view bases, partitions) and the rule's
    /// `invalidate_on`. Key them by [`TableRef::invalidation_key`].
    CacheRead {
        rule: Arc<Rule>,
        tables: Vec<TableRef>,
    },
    /// Forward, then invalidate what it writes (after COMMIT inside a
    /// transaction, not at all after ROLLBACK): see [`Writes`].
    Write(Writes),
    /// Forward untouched.
    Bypass { reason: BypassReason },
}

/// Why a string is not served from the cache. `Display` is for logs;
/// [`BypassReason::label`] is a fixed, low-cardinality metrics label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BypassReason {
    /// The text did not parse (the proxy builds this one itself).
    ParseError,
    /// More than one statement in a simple query.
    MultiStatement,
    /// Not a SELECT/VALUES/TABLE (e.g. SET, SHOW, BEGIN, EXPLAIN, COPY TO).
    NotPlainRead(StatementKind),
    /// No enabled rule matches.
    NoRule,
    /// `FOR UPDATE` / `FOR SHARE` …
    LockingClause,
    SystemCatalog(TableRef),
    TempTable(TableRef),
    /// A function (or construct) that is not IMMUTABLE and not allowed.
    NonImmutableFunction(String),
    /// A function the catalog does not know.
    UnknownFunction(String),
    /// A literal such as `'now'` whose value depends on when it is read.
    TimeSensitiveLiteral(String),
    RowLevelSecurity(TableRef),
    /// A relation the catalog cannot describe.
    UnknownRelation(TableRef),
    InTransaction,
    RoleChanged,
}

impl BypassReason {
    /// A stable label for metrics (never contains SQL or names).
    pub fn label(&self) -> &'static str {
        match self {
            BypassReason::ParseError => "parse_error",
            BypassReason::MultiStatement => "multi_statement",
            BypassReason::NotPlainRead(_) => "not_plain_read",
            BypassReason::NoRule => "no_rule",
            BypassReason::LockingClause => "locking_clause",
            BypassReason::SystemCatalog(_) => "system_catalog",
            BypassReason::TempTable(_) => "temp_table",
            BypassReason::NonImmutableFunction(_) => "non_immutable_function",
            BypassReason::UnknownFunction(_) => "unknown_function",
            BypassReason::TimeSensitiveLiteral(_) => "time_sensitive_literal",
            BypassReason::RowLevelSecurity(_) => "row_level_security",
            BypassReason::UnknownRelation(_) => "unknown_relation",
            BypassReason::InTransaction => "in_transaction",
            BypassReason::RoleChanged => "role_changed",
        }
    }
}

impl fmt::Display for BypassReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BypassReason::ParseError => f.write_str("does not parse"),
            BypassReason::MultiStatement => f.write_str("several statements"),
            BypassReason::NotPlainRead(kind) => write!(f, "not a plain read ({kind:?})"),
            BypassReason::NoRule => f.write_str("no rule matches"),
            BypassReason::LockingClause => f.write_str("locking clause (FOR UPDATE/SHARE)"),
            BypassReason::SystemCatalog(t) => write!(f, "reads system catalog {t}"),
            BypassReason::TempTable(t) => write!(f, "reads temporary table {t}"),
            BypassReason::NonImmutableFunction(n) => write!(f, "calls non-immutable {n}"),
            BypassReason::UnknownFunction(n) => write!(f, "calls unknown function {n}"),
            BypassReason::TimeSensitiveLiteral(l) => write!(f, "time-sensitive literal {l}"),
            BypassReason::RowLevelSecurity(t) => write!(f, "row-level security on {t}"),
            BypassReason::UnknownRelation(t) => write!(f, "unknown relation {t}"),
            BypassReason::InTransaction => f.write_str("inside a transaction"),
            BypassReason::RoleChanged => f.write_str("session changed role"),
        }
    }
}

fn bypass(reason: BypassReason) -> Decision {
    Decision::Bypass { reason }
}

/// Decides what to do with the string `analysis` describes.
pub fn decide(
    analysis: &Analysis,
    rules: &RuleSet,
    session: &SessionFacts,
    catalog: &dyn Catalog,
) -> Decision {
    if let Some(writes) = Writes::of(analysis) {
        return Decision::Write(writes);
    }
    let stmt = match &*analysis.statements {
        [stmt] => stmt,
        [] => return bypass(BypassReason::NotPlainRead(StatementKind::Other)),
        _ => return bypass(BypassReason::MultiStatement),
    };
    if stmt.kind != StatementKind::Select {
        return bypass(BypassReason::NotPlainRead(stmt.kind));
    }
    let Some(rule) = rules.find(analysis) else {
        return bypass(BypassReason::NoRule);
    };
    match eligible(analysis, rule, session, catalog) {
        Ok(tables) => Decision::CacheRead {
            rule: Arc::clone(rule),
            tables,
        },
        Err(reason) => bypass(reason),
    }
}

/// The decision for a string [`crate::analyze`] rejected.
///
/// `pg_query` refuses some texts Postgres accepts (e.g. expressions nested
/// deeper than its protobuf decoder allows), so an unparsable string may
/// still write. Its tokens decide: if any keyword that can start or imply a
/// write appears (`INSERT`, `UPDATE`, `CREATE`, `CALL`, `INTO`…), the
/// answer is a [`Decision::Write`] of [`Writes::everything`]; otherwise,
/// or when even the scanner rejects the text (Postgres will too), a
/// [`BypassReason::ParseError`] bypass.
pub fn decide_unparsable(sql: &str) -> Decision {
    use pg_query::protobuf::Token as T;
    const WRITE_KEYWORDS: &[T] = &[
        T::Insert,
        T::Update,
        T::DeleteP,
        T::Merge,
        T::Truncate,
        T::Copy,
        T::Create,
        T::Alter,
        T::Drop,
        T::Grant,
        T::Revoke,
        T::Comment,
        T::Security,
        T::Refresh,
        T::ImportP,
        T::Reassign,
        T::Call,
        T::Do,
        T::Execute,
        T::Into,
    ];
    let Ok(tokens) = crate::fingerprint::scan(sql) else {
        return bypass(BypassReason::ParseError);
    };
    let may_write = tokens
        .iter()
        .any(|t| WRITE_KEYWORDS.iter().any(|k| *k as i32 == t.token));
    if may_write {
        Decision::Write(Writes::everything())
    } else {
        bypass(BypassReason::ParseError)
    }
}

/// The default-deny checks for a single SELECT that a rule matched; on
/// success, the relations the entry depends on.
fn eligible(
    analysis: &Analysis,
    rule: &Rule,
    session: &SessionFacts,
    catalog: &dyn Catalog,
) -> Result<Vec<TableRef>, BypassReason> {
    let stmt = &analysis.statements[0];
    if stmt.locking {
        return Err(BypassReason::LockingClause);
    }
    if let Some(t) = stmt.system_catalogs.first() {
        return Err(BypassReason::SystemCatalog(t.clone()));
    }
    if stmt.temp_tables {
        let t = stmt
            .reads
            .iter()
            .find(|t| t.schema.as_deref() == Some("pg_temp"))
            .cloned()
            .unwrap_or_else(|| TableRef::new(Some("pg_temp"), "?"));
        return Err(BypassReason::TempTable(t));
    }
    if session.in_transaction && !rule.cache_in_transactions {
        return Err(BypassReason::InTransaction);
    }
    if session.role_changed {
        return Err(BypassReason::RoleChanged);
    }
    let allowed = |v: Volatility| {
        v == Volatility::Immutable || (v == Volatility::Stable && rule.allow_stable_functions)
    };
    for call in &stmt.implicit_calls {
        if !allowed(call.volatility) {
            return Err(BypassReason::NonImmutableFunction(call.name.to_owned()));
        }
    }
    for f in &stmt.functions {
        match catalog.function_volatility(f.schema.as_deref(), &f.name) {
            None => return Err(BypassReason::UnknownFunction(f.to_string())),
            Some(v) if !allowed(v) => {
                return Err(BypassReason::NonImmutableFunction(f.to_string()))
            }
            Some(_) => {}
        }
    }
    if !rule.allow_stable_functions {
        let time_literal = analysis.literals.iter().find(|l| {
            matches!(l.kind, LiteralKind::String | LiteralKind::UnicodeString)
                && is_time_sensitive_input(&l.text)
        });
        if let Some(l) = time_literal {
            return Err(BypassReason::TimeSensitiveLiteral(l.text.clone()));
        }
    }
    let mut tables = Vec::new();
    for t in &stmt.reads {
        let (schema, name) = (t.schema.as_deref(), t.name.as_str());
        match catalog.is_temp_table(schema, name) {
            Some(false) => {}
            Some(true) => return Err(BypassReason::TempTable(t.clone())),
            None => return Err(BypassReason::UnknownRelation(t.clone())),
        }
        match catalog.table_has_rls(schema, name) {
            Some(false) => {}
            Some(true) if rule.allow_rls => {}
            Some(true) => return Err(BypassReason::RowLevelSecurity(t.clone())),
            None => return Err(BypassReason::UnknownRelation(t.clone())),
        }
        let Some(deps) = catalog.read_dependencies(schema, name) else {
            return Err(BypassReason::UnknownRelation(t.clone()));
        };
        push_unique(&mut tables, t.clone());
        for d in deps {
            push_unique(&mut tables, d);
        }
    }
    for t in &rule.invalidate_on {
        push_unique(&mut tables, t.clone());
    }
    Ok(tables)
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
