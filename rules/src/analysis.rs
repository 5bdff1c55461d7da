//! Static analysis of an SQL string: for each statement, what it is and what
//! it touches. This is the input of every caching decision.
//!
//! [`analyze`] runs the scanner (for the fingerprint and literals) and the
//! parser (for the statements). The statement part depends only on the
//! query shape, so [`crate::AnalysisCache`] shares it between texts with the
//! same fingerprint.

use std::sync::Arc;

use thiserror::Error;

use crate::classify::classify;
use crate::fingerprint::{normalize, Fingerprint, FingerprintError, Literal, Normalized};
use crate::names::TableRef;
use crate::statement::{push_unique, Statement};
use crate::tree::{self, Value};
use crate::walk::walk_statement;

/// Errors of this module.
#[derive(Debug, Error)]
pub enum AnalyzeError {
    /// The scanner rejected the text.
    #[error(transparent)]
    Fingerprint(#[from] FingerprintError),
    /// The parser rejected the text.
    #[error("cannot parse SQL: {0}")]
    Parse(#[from] tree::ParseError),
}

/// What one SQL string (one or more statements) is and touches.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub fingerprint: Fingerprint,
    /// Literals replaced by `$n`, comments dropped: safe to log.
    pub normalized: Arc<str>,
    /// The text's literals, in order: part of a cache key.
    pub literals: Arc<[Literal]>,
    /// The highest `$n` parameter in the text (0 if none).
    pub param_count: usize,
    /// One entry per statement, in order.
    pub statements: Arc<[Statement]>,
}

impl Analysis {
    /// Builds the analysis of a text from its scan and the (possibly shared)
    /// analysis of its shape.
    pub fn from_parts(normalized: Normalized, statements: Arc<[Statement]>) -> Self {
        Analysis {
            fingerprint: normalized.fingerprint,
            normalized: normalized.text.into(),
            literals: normalized.literals.into(),
            param_count: normalized.param_count,
            statements,
        }
    }

    /// True when the string is exactly one `SELECT`/`VALUES`/`TABLE` that
    /// writes nothing, locks no rows and names no temp relation. (Function
    /// volatility, RLS and rules are [`crate::decide`]'s business.)
    pub fn is_single_plain_read(&self) -> bool {
        match &*self.statements {
            [s] => s.is_plain_read(),
            _ => false,
        }
    }

    /// True when any statement writes (named relations or unknown ones).
    pub fn writes(&self) -> bool {
        self.statements
            .iter()
            .any(|s| s.writes_unknown || !s.writes.is_empty())
    }

    /// The union of the statements' reads, in order of appearance.
    pub fn tables_read(&self) -> Vec<TableRef> {
        union(self.statements.iter().flat_map(|s| &s.reads))
    }

    /// The union of the statements' writes, in order of appearance.
    pub fn tables_written(&self) -> Vec<TableRef> {
        union(self.statements.iter().flat_map(|s| &s.writes))
    }
}

fn union<'a>(tables: impl Iterator<Item = &'a TableRef>) -> Vec<TableRef> {
    let mut out = Vec::new();
    for t in tables {
        push_unique(&mut out, t.clone());
    }
    out
}

/// Analyzes `sql`: fingerprint, literals and every statement.
pub fn analyze(sql: &str) -> Result<Analysis, AnalyzeError> {
    let normalized = normalize(sql)?;
    let statements = analyze_statements(sql)?;
    Ok(Analysis::from_parts(normalized, statements.into()))
}

/// Parses `sql` and analyzes each statement (the shape-dependent part).
pub fn analyze_statements(sql: &str) -> Result<Vec<Statement>, AnalyzeError> {
    let trees = tree::parse_statements(sql)?;
    Ok(trees
        .iter()
        .filter_map(Value::as_node)
        .map(analyze_statement)
        .collect())
}

fn analyze_statement(stmt: &tree::Node) -> Statement {
    let mut out = Statement::default();
    // EXPLAIN's query is analyzed as if it were the statement itself (its
    // writes count: EXPLAIN ANALYZE runs them).
    let body = if stmt.ty == "ExplainStmt" {
        stmt.node("query").unwrap_or(stmt)
    } else {
        stmt
    };
    // A prepared statement runs (and is analyzed) only when executed.
    if stmt.ty != "PrepareStmt" {
        walk_statement(body, &mut out);
    }
    classify(stmt, &mut out);
    let writes = out.writes.clone();
    out.reads.retain(|t| !writes.contains(t));
    out
}

#[cfg(test)]
#[path = "analysis_tests.rs"]
mod tests;
