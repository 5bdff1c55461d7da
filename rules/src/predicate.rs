//! The columns a filter compares with values: what an index could serve.
//! Reads a boolean expression as Postgres prints it in a plan's `Filter`
//! (`((owner)::text = $1)`, `((a = 1) AND (b > $2))`), with `pg_query`.

use pg_query::protobuf::{AExprKind, BoolExprType};
use pg_query::NodeEnum;

/// How a filter compares a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PredicateKind {
    /// `=`, `IN (…)`, `= ANY (…)`.
    Equality,
    /// `<`, `<=`, `>`, `>=`, `BETWEEN`.
    Range,
}

/// One column of a filter, compared with something that is not a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predicate {
    pub column: String,
    pub kind: PredicateKind,
}

/// The column comparisons ANDed at the top of `filter`, in order, each
/// column once (equality wins over range). A filter that does not parse,
/// or whose top is an OR, gives none.
pub fn filter_predicates(filter: &str) -> Vec<Predicate> {
    let Ok(parsed) = pg_query::parse(
        &format!("SELECT WHERE {filter}"),
        pg_query::ParserOptions::DEFAULT,
    ) else {
        return Vec::new();
    };
    let Some(NodeEnum::SelectStmt(select)) = parsed
        .protobuf
        .stmts
        .first()
        .and_then(|s| s.stmt.as_ref())
        .and_then(|n| n.node.as_ref())
    else {
        return Vec::new();
    };
    let mut out: Vec<Predicate> = Vec::new();
    if let Some(node) = select.where_clause.as_deref().and_then(|n| n.node.as_ref()) {
        collect(node, &mut out);
    }
    out
}

fn collect(node: &NodeEnum, out: &mut Vec<Predicate>) {
    match node {
        NodeEnum::BoolExpr(b) if b.boolop() == BoolExprType::AndExpr => {
            for arg in &b.args {
                if let Some(n) = &arg.node {
                    collect(n, out);
                }
            }
        }
        NodeEnum::AExpr(a) => {
            let op = a
                .name
                .iter()
                .filter_map(|n| match &n.node {
                    Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                    _ => None,
                })
                .next_back()
                .unwrap_or("");
            let kind = match (a.kind(), op) {
                (AExprKind::AexprOp, "=") | (AExprKind::AexprIn, _) => PredicateKind::Equality,
                (AExprKind::AexprOpAny, "=") => PredicateKind::Equality,
                (AExprKind::AexprOp, "<" | "<=" | ">" | ">=") => PredicateKind::Range,
                (AExprKind::AexprBetween | AExprKind::AexprBetweenSym, _) => PredicateKind::Range,
                _ => return,
            };
            let left = a.lexpr.as_deref().and_then(|n| n.node.as_ref());
            let right = a.rexpr.as_deref().and_then(|n| n.node.as_ref());
            let column = match (left.and_then(column_of), right.and_then(column_of)) {
                (Some(c), None) => c,
                // `$1 = col`; a range flipped is still a range.
                (None, Some(c)) if !matches!(a.kind(), AExprKind::AexprIn) => c,
                _ => return,
            };
            match out.iter_mut().find(|p| p.column == column) {
                Some(seen) => seen.kind = seen.kind.min(kind),
                None => out.push(Predicate { column, kind }),
            }
        }
        _ => {}
    }
}

/// The column a side of a comparison is, through casts.
fn column_of(node: &NodeEnum) -> Option<String> {
    match node {
        NodeEnum::ColumnRef(c) => match c.fields.last().and_then(|f| f.node.as_ref()) {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        },
        NodeEnum::TypeCast(t) => t
            .arg
            .as_deref()
            .and_then(|n| n.node.as_ref())
            .and_then(column_of),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(filter: &str) -> Vec<(String, PredicateKind)> {
        filter_predicates(filter)
            .into_iter()
            .map(|p| (p.column, p.kind))
            .collect()
    }

    #[test]
    fn plan_filters_give_their_columns_equality_before_range_as_written() {
        use PredicateKind::*;
        assert_eq!(of("((owner)::text = $1)"), [("owner".into(), Equality)]);
        assert_eq!(
            of("((created_at > $2) AND (status = 'open'::text))"),
            [("created_at".into(), Range), ("status".into(), Equality)]
        );
        assert_eq!(of("($1 >= t.amount)"), [("amount".into(), Range)]);
        assert_eq!(of("(id = ANY ($1))"), [("id".into(), Equality)]);
        assert_eq!(of("((a = $1) OR (b = $2))"), []);
        assert_eq!(of("(a = b)"), []);
        assert_eq!(of("(lower(name) = $1)"), []);
        assert_eq!(of("not an ) expression"), []);
    }
}
