//! Index hints from a plan: a sequential scan whose filter compares
//! columns with values, on a table big enough for an index to pay, becomes
//! a `CREATE INDEX CONCURRENTLY` — equality columns first (an index serves
//! them in any order), then range columns (one range column is used to
//! its full extent; later ones only filter within the index).

use pgstash_rules::{filter_predicates, PredicateKind};
use serde_json::Value;

use crate::observe::plans::IndexHint;

/// A sequential scan with a filter, found in a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct FilteredScan {
    pub schema: String,
    pub table: String,
    pub filter: String,
    /// The plan's estimate of the rows the filter keeps.
    pub rows_returned: f64,
}

/// Every sequential scan with a filter in `EXPLAIN (FORMAT JSON, VERBOSE)`'s
/// answer, outermost first.
pub fn filtered_scans(explained: &Value) -> Vec<FilteredScan> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = explained
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|top| top.get("Plan"))
        .collect();
    while let Some(node) = stack.pop() {
        let text = |key: &str| node.get(key).and_then(Value::as_str);
        if let (Some("Seq Scan"), Some(table), Some(filter)) =
            (text("Node Type"), text("Relation Name"), text("Filter"))
        {
            out.push(FilteredScan {
                schema: text("Schema").unwrap_or("public").to_owned(),
                table: table.to_owned(),
                filter: filter.to_owned(),
                rows_returned: node.get("Plan Rows").and_then(Value::as_f64).unwrap_or(0.0),
            });
        }
        if let Some(children) = node.get("Plans").and_then(Value::as_array) {
            stack.extend(children.iter().rev());
        }
    }
    out
}

/// The hint for `scan` of a table of `rows` rows, if one would help.
pub fn hint(scan: &FilteredScan, rows: f64, min_rows: u64) -> Option<IndexHint> {
    if rows <= min_rows as f64 {
        return None;
    }
    let mut predicates = filter_predicates(&scan.filter);
    if predicates.is_empty() {
        return None;
    }
    // Stable: columns keep the filter's order within each kind.
    predicates.sort_by_key(|p| p.kind);
    if let Some(first_range) = predicates
        .iter()
        .position(|p| p.kind == PredicateKind::Range)
    {
        predicates.truncate(first_range + 1);
    }
    let columns: Vec<String> = predicates.into_iter().map(|p| p.column).collect();
    let table = format!("{}.{}", quote_ident(&scan.schema), quote_ident(&scan.table));
    let list: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    Some(IndexHint {
        create: format!("CREATE INDEX CONCURRENTLY ON {table} ({})", list.join(", ")),
        table: format!("{}.{}", scan.schema, scan.table),
        columns,
        rows_scanned: rows,
        rows_returned: scan.rows_returned,
    })
}

/// `name` as an SQL identifier: as is when it is a plain lower-case name,
/// else double-quoted.
fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filtered_seq_scan_under_a_sort_gives_equality_then_one_range_column() {
        let explained: Value = serde_json::from_str(
            r#"[{"Plan": {"Node Type": "Sort", "Plans": [
                {"Node Type": "Seq Scan", "Relation Name": "Orders", "Schema": "shop",
                 "Plan Rows": 12, "Filter": "((orders.placed > $2) AND (orders.total < $3) AND (orders.customer = $1))"},
                {"Node Type": "Seq Scan", "Relation Name": "tiny", "Schema": "shop", "Plan Rows": 1}
            ]}}]"#,
        )
        .unwrap();
        let scans = filtered_scans(&explained);
        assert_eq!(scans.len(), 1, "{scans:?}");
        let hint = hint(&scans[0], 50_000.0, 10_000).expect("a hint");
        assert_eq!(hint.columns, ["customer", "placed"]);
        assert_eq!(
            hint.create,
            "CREATE INDEX CONCURRENTLY ON shop.\"Orders\" (customer, placed)"
        );
        assert_eq!((hint.rows_scanned, hint.rows_returned), (50_000.0, 12.0));
        assert!(
            super::hint(&scans[0], 10_000.0, 10_000).is_none(),
            "small table"
        );
    }
}
