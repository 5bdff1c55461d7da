//! Unit tests of `analysis.rs`: how tricky statements are classified.

use super::*;
use crate::names::FunctionRef;
use crate::statement::{StatementKind, TransactionKind};

fn one(sql: &str) -> Statement {
    let a = analyze(sql).unwrap();
    assert_eq!(a.statements.len(), 1, "{sql}");
    a.statements[0].clone()
}

fn t(s: &str) -> TableRef {
    s.parse().unwrap()
}

fn tables(list: &[&str]) -> Vec<TableRef> {
    list.iter().map(|s| t(s)).collect()
}

fn f(schema: Option<&str>, name: &str) -> FunctionRef {
    FunctionRef {
        schema: schema.map(str::to_owned),
        name: name.to_owned(),
    }
}

#[test]
fn simple_select_is_a_plain_read() {
    let a = analyze("SELECT id, name FROM users WHERE id = $1").unwrap();
    assert!(a.is_single_plain_read());
    assert_eq!(a.param_count, 1);
    let s = &a.statements[0];
    assert_eq!(s.kind, StatementKind::Select);
    assert_eq!(s.reads, tables(&["users"]));
    assert!(s.writes.is_empty() && s.functions.is_empty());
}

#[test]
fn values_and_table_are_selects() {
    assert_eq!(one("VALUES (1), (2)").kind, StatementKind::Select);
    let s = one("TABLE app.users");
    assert_eq!(
        (s.kind, s.reads),
        (StatementKind::Select, tables(&["app.users"]))
    );
}

#[test]
fn joins_subqueries_and_unions_read_every_table() {
    let s = one(
        "select * from a join b.c on a.id = c.id left join d using (x) \
         where a.y in (select y from e) and exists (select 1 from f where f.z = a.z) \
         union all select * from (select * from g) sub, lateral (select * from h) l",
    );
    assert_eq!(s.reads, tables(&["a", "b.c", "d", "e", "f", "g", "h"]));
    assert!(s.is_plain_read());
}

#[test]
fn schema_qualified_names_are_kept_as_written() {
    let s = one("select * from public.users u, \"Sales\".\"Orders\" o, users");
    assert_eq!(
        s.reads,
        vec![
            TableRef::new(Some("public"), "users"),
            TableRef::new(Some("Sales"), "Orders"),
            TableRef::new(None, "users"),
        ]
    );
}

#[test]
fn cte_names_are_not_tables() {
    let s = one("with recent as (select * from orders) select * from recent join users on true");
    assert_eq!(s.reads, tables(&["orders", "users"]));
    let s = one("with recursive r(n) as (select 1 union all select n + 1 from r) select * from r");
    assert!(s.reads.is_empty());
}

#[test]
fn non_recursive_cte_body_reads_the_table_of_the_same_name() {
    let s = one("with x as (select * from x) select * from x");
    assert_eq!(s.reads, tables(&["x"]));
    let s = one("with a as (select 1), b as (select * from a) select * from b");
    assert!(s.reads.is_empty());
}

#[test]
fn cte_scope_ends_with_its_statement() {
    let s = one("select * from (with x as (select 1) select * from x) s, x");
    assert_eq!(s.reads, tables(&["x"]));
}

#[test]
fn data_modifying_cte_is_a_write() {
    let a = analyze("with d as (update accounts set n = n + 1 returning *) select * from d, log")
        .unwrap();
    let s = &a.statements[0];
    assert!(s.data_modifying_cte);
    assert_eq!(s.writes, tables(&["accounts"]));
    assert_eq!(s.reads, tables(&["log"]));
    assert!(!a.is_single_plain_read());
    assert!(a.writes());
}

#[test]
fn select_for_update_is_locking() {
    for sql in [
        "select * from t where id = 1 for update",
        "select * from t for share of t nowait",
        "select * from (select * from t for key share) s",
    ] {
        let s = one(sql);
        assert!(s.locking, "{sql}");
        assert!(!s.is_plain_read());
        assert_eq!(s.reads, tables(&["t"]));
    }
}

#[test]
fn select_into_writes_its_target() {
    let s = one("select * into archive from orders");
    assert!(s.select_into);
    assert_eq!(s.writes, tables(&["archive"]));
    assert_eq!(s.reads, tables(&["orders"]));
    let s = one("create table x as select * from y");
    assert_eq!(s.kind, StatementKind::Ddl);
    assert_eq!((s.writes, s.reads), (tables(&["x"]), tables(&["y"])));
}

#[test]
fn dml_writes_its_target_and_reads_the_rest() {
    let s = one("insert into s.t (a) select a from u");
    assert_eq!(s.kind, StatementKind::Insert);
    assert_eq!((s.writes, s.reads), (tables(&["s.t"]), tables(&["u"])));
    let s = one("update t set a = u.a from u where t.id = u.id");
    assert_eq!((s.kind, s.writes), (StatementKind::Update, tables(&["t"])));
    let s = one("delete from t using u where t.id = u.id");
    assert_eq!((s.kind, s.writes), (StatementKind::Delete, tables(&["t"])));
    let s = one("merge into t using u on t.id = u.id when matched then update set a = u.a");
    assert_eq!(
        (s.kind, s.writes, s.reads),
        (StatementKind::Merge, tables(&["t"]), tables(&["u"]))
    );
    assert!(!s.data_modifying_cte);
}

#[test]
fn truncate_and_copy() {
    let s = one("truncate a, b.c");
    assert_eq!(
        (s.kind, s.writes),
        (StatementKind::Truncate, tables(&["a", "b.c"]))
    );
    assert!(!s.writes_unknown);
    assert!(one("truncate a cascade").writes_unknown);
    let s = one("copy t from stdin");
    assert_eq!(
        (s.kind, s.writes),
        (StatementKind::CopyFrom, tables(&["t"]))
    );
    let s = one("copy t to stdout");
    assert_eq!((s.kind, s.reads), (StatementKind::CopyTo, tables(&["t"])));
    assert!(s.writes.is_empty());
    let s = one("copy (select * from u) to stdout");
    assert_eq!((s.kind, s.reads), (StatementKind::CopyTo, tables(&["u"])));
}

#[test]
fn ddl_writes_the_relations_it_touches() {
    for (sql, written) in [
        ("alter table t add column c int", &["t"][..]),
        ("create index on s.t (a)", &["s.t"]),
        ("drop table a, s.b", &["a", "s.b"]),
        ("drop view v", &["v"]),
        ("create or replace view v as select * from t", &["v"]),
        ("alter table a rename to b", &["a", "b"]),
        ("alter table a rename column x to y", &["a"]),
        ("refresh materialized view m", &["m"]),
        ("create policy p on t using (true)", &["t"]),
        ("drop policy p on s.t", &["s.t"]),
        (
            "create trigger tr after insert on t for each row execute function f()",
            &["t"],
        ),
        ("grant select on t to bob", &["t"]),
        ("create table n (id int)", &["n"]),
    ] {
        let s = one(sql);
        assert_eq!(s.kind, StatementKind::Ddl, "{sql}");
        assert_eq!(s.writes, tables(written), "{sql}");
        assert!(!s.writes_unknown, "{sql}");
    }
}

#[test]
fn ddl_with_unattributable_effects_writes_unknown() {
    for sql in [
        "drop table t cascade",
        "drop schema s cascade",
        "create or replace function f() returns int language sql as 'select 1'",
        "drop function f",
        "grant admin to bob",
        "grant select on all tables in schema public to bob",
        "alter schema a rename to b",
        "do $$ begin delete from t; end $$",
        "call p()",
        "execute q(1)",
    ] {
        assert!(one(sql).writes_unknown, "{sql}");
    }
    for sql in [
        "create sequence s",
        "drop index i",
        "comment on table t is 'x'",
        "vacuum t",
        "lock table t",
        "prepare q as update t set a = 1",
        "listen c",
    ] {
        let s = one(sql);
        assert!(!s.writes_unknown && s.writes.is_empty(), "{sql}");
    }
}

#[test]
fn transaction_control_set_and_show() {
    let kinds: Vec<StatementKind> = analyze(
        "begin; savepoint a; release a; rollback to a; commit; rollback; \
         start transaction; end; set x = 1; show x",
    )
    .unwrap()
    .statements
    .iter()
    .map(|s| s.kind)
    .collect();
    use TransactionKind::*;
    assert_eq!(
        kinds,
        vec![
            StatementKind::Transaction(Begin),
            StatementKind::Transaction(Savepoint),
            StatementKind::Transaction(Release),
            StatementKind::Transaction(RollbackTo),
            StatementKind::Transaction(Commit),
            StatementKind::Transaction(Rollback),
            StatementKind::Transaction(Begin),
            StatementKind::Transaction(Commit),
            StatementKind::Set,
            StatementKind::Show,
        ]
    );
}

#[test]
fn commit_prepared_writes_what_is_unknown_and_the_rest_of_2pc_nothing() {
    use TransactionKind::*;
    for (sql, kind, unknown) in [
        ("prepare transaction 'g'", Prepare, false),
        ("commit prepared 'g'", CommitPrepared, true),
        ("rollback prepared 'g'", RollbackPrepared, false),
    ] {
        let s = one(sql);
        assert_eq!(s.kind, StatementKind::Transaction(kind), "{sql}");
        assert_eq!(s.writes_unknown, unknown, "{sql}");
        assert!(s.writes.is_empty(), "{sql}");
    }
}

#[test]
fn explain_counts_the_writes_of_its_statement() {
    let s = one("explain analyze delete from t");
    assert_eq!((s.kind, s.writes), (StatementKind::Explain, tables(&["t"])));
    assert!(!s.data_modifying_cte);
}

#[test]
fn functions_are_found_everywhere() {
    let s = one("select lower(name), count(*) over (partition by f1(x)), \
         case when g(y) then pg_catalog.h(1) end \
         from generate_series(1, 10) gs, users \
         where created_at > now() - interval '1 day' \
         group by 1 having max(z) > 0 order by random() limit abs($1)");
    for func in [
        f(None, "lower"),
        f(None, "count"),
        f(None, "f1"),
        f(None, "g"),
        f(Some("pg_catalog"), "h"),
        f(None, "generate_series"),
        f(None, "now"),
        f(None, "max"),
        f(None, "random"),
        f(None, "abs"),
    ] {
        assert!(
            s.functions.contains(&func),
            "{func} missing from {:?}",
            s.functions
        );
    }
}

#[test]
fn sql_value_functions_and_tablesample_are_implicit_calls() {
    let s = one("select current_timestamp, current_user from t tablesample bernoulli (10)");
    let names: Vec<&str> = s.implicit_calls.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        vec!["current_timestamp", "current_user", "tablesample"]
    );
    let s = one("select * from t tablesample system (10) repeatable (42)");
    assert!(s.implicit_calls.is_empty());
}

#[test]
fn system_catalogs_are_flagged() {
    let s = one("select * from pg_class");
    assert_eq!(s.system_catalogs, tables(&["pg_class"]));
    let s = one("select * from information_schema.tables t join users u on true");
    assert_eq!(s.system_catalogs, tables(&["information_schema.tables"]));
    assert!(one("select * from users").system_catalogs.is_empty());
}

#[test]
fn temp_relations_are_flagged_when_visible() {
    assert!(one("create temp table x (id int)").temp_tables);
    assert!(one("select * from pg_temp.x").temp_tables);
    assert!(one("select 1 into temp x").temp_tables);
    assert!(!one("select * from x").temp_tables);
}

#[test]
fn multi_statement_strings_analyze_each_statement() {
    let a = analyze("select * from a; update b set x = 1; select 1").unwrap();
    assert_eq!(a.statements.len(), 3);
    assert!(!a.is_single_plain_read());
    assert_eq!(a.tables_read(), tables(&["a"]));
    assert_eq!(a.tables_written(), tables(&["b"]));
}

#[test]
fn analysis_carries_fingerprint_literals_and_normalized_text() {
    let a = analyze("select * from t where id = 42 /* app */").unwrap();
    assert_eq!(&*a.normalized, "select * from t where id = $1");
    assert_eq!(a.literals.len(), 1);
    assert_eq!(
        a.fingerprint,
        crate::fingerprint("SELECT * FROM t WHERE id=7").unwrap()
    );
    assert_eq!(a.param_count, 0);
}

#[test]
fn unparsable_text_is_an_error() {
    assert!(matches!(analyze("selec 1"), Err(AnalyzeError::Parse(_))));
    assert!(matches!(
        analyze("select 'x"),
        Err(AnalyzeError::Fingerprint(_))
    ));
}
