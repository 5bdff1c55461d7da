//! Unit tests of `fingerprint.rs`.

use super::*;

fn fp(sql: &str) -> Fingerprint {
    fingerprint(sql).unwrap()
}

/// These values are referenced from users' rules.toml files: if this test
/// fails, fingerprints changed and every deployment's rules break.
#[test]
fn golden_fingerprints_never_change() {
    let golden = [
        (
            "SELECT * FROM users WHERE id = 1",
            "446fb42fb33287d08030e2179ea69b8c005741b5f6c224b6304cc8cdd80ed214",
        ),
        (
            "select name, email from public.users where id = $1",
            "b8d7d68ab0fe1e2abcb432c05c617d259cb39d8e41d187297a21f075178801e8",
        ),
        (
            "SELECT count(*) FROM orders WHERE status = 'paid' AND created_at > now() - interval '1 day'",
            "d4821a14cecd4a6d6cbf760cf3a071be0da4c383e8a50dfa7fb15ba1317802bf",
        ),
    ];
    for (sql, hex) in golden {
        assert_eq!(fp(sql).to_string(), hex, "{sql}");
    }
}

#[test]
fn literal_values_do_not_change_the_fingerprint() {
    assert_eq!(
        fp("select * from t where id = 1 and name = 'a'"),
        fp("select * from t where id = 20000 and name = 'bcd'")
    );
    assert_eq!(fp("select 1.5"), fp("select 'x'"));
    assert_eq!(fp("select $$a$$"), fp("select E'b\\n'"));
}

#[test]
fn comments_whitespace_and_case_do_not_change_the_fingerprint() {
    let base = fp("select a, b from t where id = 1");
    for sql in [
        "SELECT a,b FROM t WHERE id=1",
        "  select\n\ta ,  b\nfrom   T where ID = 7;",
        "/* traceparent='00-abc-01' */ select a, b from t where id = 1",
        "select a, b from t where id = 1 /*controller='users',action='show'*/",
        "select a, b -- trailing\nfrom t where id = 1",
        "select \"a\", b from \"t\" where id = 1",
        "SELECT A, B FROM T WHERE \"id\" = 1",
    ] {
        assert_eq!(fp(sql), base, "{sql}");
    }
}

#[test]
fn different_tables_columns_and_operators_change_the_fingerprint() {
    let base = fp("select a from t where id = 1");
    for sql in [
        "select a from u where id = 1",
        "select b from t where id = 1",
        "select a from t where id > 1",
        "select a from t where id = -1",
        "select a from \"T\" where id = 1",
        "select \"a b\" from t where id = 1",
        "select a from s.t where id = 1",
        "select \"a b\" from t where id = 1",
        "select a from t where id = 1; select 1",
    ] {
        assert_ne!(fp(sql), base, "{sql}");
    }
}

#[test]
fn literals_become_numbered_placeholders_after_existing_parameters() {
    let n =
        normalize("SELECT * FROM t WHERE a = $2 AND b = 'x' /* c */ AND c IN (1, 2.5)").unwrap();
    assert_eq!(
        n.text,
        "SELECT * FROM t WHERE a = $2 AND b = $3 AND c IN ($4, $5)"
    );
    assert_eq!(n.param_count, 2);
    let lits: Vec<(LiteralKind, &str)> = n
        .literals
        .iter()
        .map(|l| (l.kind, l.text.as_str()))
        .collect();
    assert_eq!(
        lits,
        vec![
            (LiteralKind::String, "'x'"),
            (LiteralKind::Integer, "1"),
            (LiteralKind::Numeric, "2.5"),
        ]
    );
}

#[test]
fn literal_values_keep_their_source_spelling() {
    let lits =
        literal_values("select '1', 1, E'\\x', B'01', X'1f', U&'d\\0061t', $q$z$q$").unwrap();
    let kinds: Vec<LiteralKind> = lits.iter().map(|l| l.kind).collect();
    assert_eq!(
        kinds,
        vec![
            LiteralKind::String,
            LiteralKind::Integer,
            LiteralKind::String,
            LiteralKind::BitString,
            LiteralKind::HexString,
            LiteralKind::UnicodeString,
            LiteralKind::String,
        ]
    );
    assert_eq!(lits[0].text, "'1'");
    assert_eq!(lits[1].text, "1");
    assert_eq!(lits[6].text, "$q$z$q$");
}

#[test]
fn quoted_keywords_keep_their_quotes() {
    // `"distinct"` is a column, `distinct` a clause: they must not collide.
    assert_ne!(
        fp("select \"distinct\" x from t"),
        fp("select distinct x from t")
    );
    assert_eq!(fp("select \"email\" from t"), fp("select email from t"));
    assert!(is_keyword("select") && is_keyword("begin") && is_keyword("name"));
    assert!(!is_keyword("users") && !is_keyword("ident"));
}

#[test]
fn display_and_from_str_round_trip() {
    let f = fp("select 1");
    let hex = f.to_string();
    assert_eq!(hex.len(), 64);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(hex.parse::<Fingerprint>().unwrap(), f);
    assert_eq!(hex.to_uppercase().parse::<Fingerprint>().unwrap(), f);
    assert!("abc".parse::<Fingerprint>().is_err());
    assert!("g".repeat(64).parse::<Fingerprint>().is_err());
}

#[test]
fn unscannable_text_is_an_error() {
    assert!(fingerprint("select 'unterminated").is_err());
    assert!(fingerprint("select 1\0").is_err());
}

#[test]
fn time_sensitive_inputs_are_recognised() {
    assert!(is_time_sensitive_input("'now'"));
    assert!(is_time_sensitive_input(" Today "));
    assert!(!is_time_sensitive_input("'2024-01-01'"));
}

#[test]
fn fingerprint_maps_find_what_they_hold() {
    let mut map = FingerprintMap::default();
    for i in 0..1000u32 {
        map.insert(fingerprint(&format!("SELECT {i} FROM t{i}")).unwrap(), i);
    }
    for i in 0..1000u32 {
        let key = fingerprint(&format!("SELECT {i} FROM t{i}")).unwrap();
        assert_eq!(map.get(&key), Some(&i));
    }
    assert!(!map.contains_key(&Fingerprint([7; 32])));
    let hashing = FingerprintHashing::default();
    let a = hashing.hash_one(Fingerprint([1; 32]));
    assert_ne!(a, hashing.hash_one(Fingerprint([2; 32])));
    assert_eq!(a, hashing.hash_one(Fingerprint([1; 32])));
}

#[test]
fn text_without_tokens_does_not_crash_the_scanner() {
    for sql in ["", "   ", "-- only a comment", "/* c */"] {
        let normalized = normalize(sql).unwrap();
        assert!(normalized.literals.is_empty(), "{sql:?}");
    }
    assert!(matches!(
        crate::decide_unparsable(""),
        crate::Decision::Bypass { .. } | crate::Decision::Write(_)
    ));
}
