//! Unit tests of `decision.rs`, against an in-memory catalog.

use std::collections::HashMap;

use super::*;
use crate::analysis::analyze;
use crate::load::parse_rules;

/// A catalog that knows a few functions and relations.
struct FakeCatalog {
    functions: HashMap<&'static str, Volatility>,
    rls: Vec<&'static str>,
    temp: Vec<&'static str>,
    deps: HashMap<&'static str, Vec<TableRef>>,
    unknown: Vec<&'static str>,
}

impl FakeCatalog {
    fn new() -> Self {
        let functions = [
            ("lower", Volatility::Immutable),
            ("count", Volatility::Immutable),
            ("now", Volatility::Stable),
            ("random", Volatility::Volatile),
        ]
        .into_iter()
        .collect();
        let deps = [("active_users", vec!["users".parse().unwrap()])]
            .into_iter()
            .collect();
        FakeCatalog {
            functions,
            rls: vec!["secrets"],
            temp: vec!["scratch"],
            deps,
            unknown: vec!["ghost"],
        }
    }
}

impl Catalog for FakeCatalog {
    fn function_volatility(&self, _schema: Option<&str>, name: &str) -> Option<Volatility> {
        self.functions.get(name).copied()
    }
    fn table_has_rls(&self, _schema: Option<&str>, name: &str) -> Option<bool> {
        (!self.unknown.contains(&name)).then(|| self.rls.contains(&name))
    }
    fn is_temp_table(&self, _schema: Option<&str>, name: &str) -> Option<bool> {
        (!self.unknown.contains(&name)).then(|| self.temp.contains(&name))
    }
    fn read_dependencies(&self, _schema: Option<&str>, name: &str) -> Option<Vec<TableRef>> {
        (!self.unknown.contains(&name)).then(|| self.deps.get(name).cloned().unwrap_or_default())
    }
}

const RULES: &str = r#"
[[rule]]
name = "by_id"
query = "select * from users where id = 1"
invalidate_on = ["user_stats"]

[[rule]]
name = "catalog"
tables = ["products", "public.categories", "secrets", "scratch", "ghost", "active_users", "pg_class"]

[[rule]]
name = "stable_ok"
query = "select now(), count(*) from orders"
allow_stable_functions = true

[[rule]]
name = "in_tx"
query = "select * from settings_table"
cache_in_transactions = true

[[rule]]
name = "rls_ok"
query = "select * from secrets where owner = 1"
allow_rls = true

[[rule]]
name = "off"
query = "select * from disabled"
enabled = false
"#;

fn decide_with(sql: &str, session: SessionFacts) -> Decision {
    let rules = parse_rules(RULES, "rules.toml").unwrap();
    decide(
        &analyze(sql).unwrap(),
        &rules,
        &session,
        &FakeCatalog::new(),
    )
}

fn d(sql: &str) -> Decision {
    decide_with(sql, SessionFacts::default())
}

fn reason(sql: &str) -> BypassReason {
    match d(sql) {
        Decision::Bypass { reason } => reason,
        other => panic!("{sql}: expected a bypass, got {other:?}"),
    }
}

fn cached(sql: &str) -> (String, Vec<String>) {
    match d(sql) {
        Decision::CacheRead { rule, tables } => (
            rule.name.clone(),
            tables.iter().map(|t| t.to_string()).collect(),
        ),
        other => panic!("{sql}: expected a cache read, got {other:?}"),
    }
}

#[test]
fn a_matching_plain_read_is_cached_with_its_invalidation_tables() {
    let (rule, tables) = cached("SELECT * FROM users WHERE id = 42");
    assert_eq!(rule, "by_id");
    assert_eq!(tables, vec!["users", "user_stats"]);
}

#[test]
fn a_tables_rule_matches_only_when_every_table_is_listed() {
    let (rule, _) = cached("select * from products p join categories c on p.c = c.id");
    assert_eq!(rule, "catalog");
    assert_eq!(
        reason("select * from products join orders on true"),
        BypassReason::NoRule
    );
    assert_eq!(reason("select * from app.categories"), BypassReason::NoRule);
    assert_eq!(reason("select 1"), BypassReason::NoRule);
}

#[test]
fn views_bring_their_dependencies() {
    let (_, tables) = cached("select * from active_users");
    assert_eq!(tables, vec!["active_users", "users"]);
}

#[test]
fn writes_are_decided_before_anything_else() {
    let w = |sql: &str| match decide_with(
        sql,
        SessionFacts {
            in_transaction: true,
            role_changed: true,
        },
    ) {
        Decision::Write(Writes {
            tables,
            all: invalidate_all,
            ..
        }) => (
            tables.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            invalidate_all,
        ),
        other => panic!("{sql}: expected a write, got {other:?}"),
    };
    assert_eq!(
        w("update users set name = 'x' where id = 1"),
        (vec!["users".into()], false)
    );
    assert_eq!(
        w("with d as (delete from orders returning *) select * from d"),
        (vec!["orders".into()], false)
    );
    assert_eq!(
        w("select * into copy_t from users"),
        (vec!["copy_t".into()], false)
    );
    assert_eq!(
        w("select 1; truncate a; insert into b values (1)"),
        (vec!["a".into(), "b".into()], false)
    );
    assert_eq!(
        w("alter table products add column x int"),
        (vec!["products".into()], false)
    );
    assert_eq!(w("do $$ begin perform 1; end $$"), (vec![], true));
}

#[test]
fn non_reads_and_multi_statements_bypass() {
    assert_eq!(
        reason("begin"),
        BypassReason::NotPlainRead(StatementKind::Transaction(crate::TransactionKind::Begin))
    );
    assert_eq!(
        reason("show search_path"),
        BypassReason::NotPlainRead(StatementKind::Show)
    );
    assert_eq!(
        reason("explain select * from users"),
        BypassReason::NotPlainRead(StatementKind::Explain)
    );
    assert_eq!(
        reason("copy users to stdout"),
        BypassReason::NotPlainRead(StatementKind::CopyTo)
    );
    assert_eq!(
        reason("select * from users where id = 1; select 1"),
        BypassReason::MultiStatement
    );
}

#[test]
fn locking_catalogs_and_temp_tables_bypass() {
    assert_eq!(
        reason("select * from products for update"),
        BypassReason::LockingClause
    );
    assert_eq!(
        reason("select * from pg_class"),
        BypassReason::SystemCatalog("pg_class".parse().unwrap())
    );
    assert_eq!(
        reason("select * from scratch"),
        BypassReason::TempTable("scratch".parse().unwrap())
    );
}

#[test]
fn functions_must_be_immutable_unless_the_rule_allows_stable() {
    assert_eq!(
        reason("select lower(name), random() from products"),
        BypassReason::NonImmutableFunction("random".into())
    );
    assert_eq!(
        reason("select now() from products"),
        BypassReason::NonImmutableFunction("now".into())
    );
    assert_eq!(
        reason("select current_date from products"),
        BypassReason::NonImmutableFunction("current_date".into())
    );
    assert_eq!(
        reason("select mystery(1) from products"),
        BypassReason::UnknownFunction("mystery".into())
    );
    assert_eq!(cached("SELECT now(), count(*) FROM orders").0, "stable_ok");
    assert_eq!(cached("select lower(name) from products").0, "catalog");
}

#[test]
fn time_sensitive_literals_bypass() {
    assert_eq!(
        reason("select * from products where created > 'now'"),
        BypassReason::TimeSensitiveLiteral("'now'".into())
    );
}

#[test]
fn row_level_security_needs_allow_rls() {
    assert_eq!(
        reason("select * from secrets"),
        BypassReason::RowLevelSecurity("secrets".parse().unwrap())
    );
    assert_eq!(cached("select * from secrets where owner = 7").0, "rls_ok");
}

#[test]
fn unknown_relations_bypass() {
    assert_eq!(
        reason("select * from ghost"),
        BypassReason::UnknownRelation("ghost".parse().unwrap())
    );
}

#[test]
fn session_state_turns_caching_off() {
    let tx = SessionFacts {
        in_transaction: true,
        ..SessionFacts::default()
    };
    let role = SessionFacts {
        role_changed: true,
        ..SessionFacts::default()
    };
    let r = |sql: &str, s| match decide_with(sql, s) {
        Decision::Bypass { reason } => Some(reason),
        _ => None,
    };
    assert_eq!(
        r("select * from users where id = 1", tx),
        Some(BypassReason::InTransaction)
    );
    assert_eq!(
        r("select * from users where id = 1", role),
        Some(BypassReason::RoleChanged)
    );
    assert_eq!(r("select * from settings_table", tx), None);
}

#[test]
fn disabled_rules_never_match() {
    assert_eq!(reason("select * from disabled"), BypassReason::NoRule);
}

#[test]
fn reasons_have_log_text_and_metric_labels() {
    let r = BypassReason::NonImmutableFunction("random".into());
    assert_eq!(r.to_string(), "calls non-immutable random");
    assert_eq!(r.label(), "non_immutable_function");
    assert_eq!(BypassReason::NoRule.to_string(), "no rule matches");
}

#[test]
fn unparsable_strings_that_may_write_invalidate_everything() {
    let deep_update = format!("update t set x = 1{}", "+1".repeat(200));
    assert!(analyze(&deep_update).is_err());
    assert_eq!(
        decide_unparsable(&deep_update),
        Decision::Write(Writes {
            tables: vec![],
            all: true,
            ddl: true
        })
    );
    let deep_select = format!("select 1{} from t", "+1".repeat(200));
    assert_eq!(
        decide_unparsable(&deep_select),
        Decision::Bypass {
            reason: BypassReason::ParseError
        }
    );
    assert_eq!(
        decide_unparsable("select 'unterminated"),
        Decision::Bypass {
            reason: BypassReason::ParseError
        }
    );
}
