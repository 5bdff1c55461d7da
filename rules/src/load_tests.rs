//! Unit tests of `load.rs`: valid files resolve, bad ones point at the value.

use super::*;

fn err(text: &str) -> String {
    match parse_rules(text, "rules.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_valid_file_resolves_defaults_into_rules() {
    let text = r#"
[defaults]
ttl = "5m"
max_entry_bytes = 2048
allow_stable_functions = true

[[rule]]
name = "user_by_id"
query = "SELECT * FROM users WHERE id = 1"
ttl = "30s"
invalidate_on = ["audit.user_changes"]

[[rule]]
name = "catalog"
tables = ["products", "public.categories"]
shared = true
allow_stable_functions = false

[[rule]]
name = "by_hash"
fingerprint = "446fb42fb33287d08030e2179ea69b8c005741b5f6c224b6304cc8cdd80ed215"
enabled = false
"#;
    let set = parse_rules(text, "rules.toml").unwrap();
    assert_eq!(set.defaults.ttl, Duration::from_secs(300));
    assert_eq!(set.rules().len(), 3);
    let r = set.get("user_by_id").unwrap();
    assert_eq!(r.ttl, Duration::from_secs(30));
    assert_eq!(r.max_entry_bytes, 2048);
    assert!(r.allow_stable_functions && !r.shared && r.enabled);
    assert_eq!(r.invalidate_on, vec!["audit.user_changes".parse().unwrap()]);
    assert_eq!(
        r.matcher.fingerprint(),
        Some(crate::fingerprint("select * from users where id = $1").unwrap())
    );
    assert_eq!(r.line, 8);
    let c = set.get("catalog").unwrap();
    assert_eq!(c.ttl, Duration::from_secs(300));
    assert!(c.shared && !c.allow_stable_functions);
    assert_eq!(
        c.matcher,
        Matcher::Tables(vec![
            TableRef::new(None, "products"),
            TableRef::new(Some("public"), "categories")
        ])
    );
    assert!(!set.get("by_hash").unwrap().enabled);
}

#[test]
fn adaptive_is_on_unless_the_defaults_or_the_rule_turn_it_off() {
    let text = r#"
[[rule]]
name = "a"
tables = ["a"]

[[rule]]
name = "b"
tables = ["b"]
adaptive = false
"#;
    let set = parse_rules(text, "rules.toml").unwrap();
    assert!(set.defaults.adaptive);
    assert!(set.get("a").unwrap().adaptive);
    assert!(!set.get("b").unwrap().adaptive);
    let off = format!("[defaults]\nadaptive = false\n{text}");
    let set = parse_rules(&off, "rules.toml").unwrap();
    assert!(!set.get("a").unwrap().adaptive);
    assert!(err("[defaults]\nadaptive = \"yes\"\n").contains("rules.toml:2:12"));
}

#[test]
fn an_empty_file_is_valid() {
    let set = parse_rules("", "rules.toml").unwrap();
    assert!(set.rules().is_empty());
    assert_eq!(set.defaults, Defaults::default());
}

#[test]
fn bad_ttl_points_at_the_value() {
    let text = "[[rule]]\nname = \"hot_users\"\ntables = [\"users\"]\nttl    = \"5 parsecs\"\n";
    assert_eq!(
        err(text),
        "rules.toml:4:10: rule \"hot_users\": ttl \"5 parsecs\" is not a duration (e.g. \"30s\", \"5m\")"
    );
    let text = "[defaults]\nttl = \"0s\"\n";
    assert_eq!(
        err(text),
        "rules.toml:2:7: defaults: ttl must be longer than zero"
    );
}

#[test]
fn syntax_errors_and_unknown_keys_carry_line_and_column() {
    let e = err("[[rule]]\nname = \"a\"\ntables = [\"t\"]\nttl = 5s\n");
    assert!(e.starts_with("rules.toml:4:8: "), "{e}");
    let e = err("[[rule]]\nname = \"a\"\ntables = [\"t\"]\nttll = \"5s\"\n");
    assert!(e.starts_with("rules.toml:4:1: unknown field `ttll`"), "{e}");
    let e = err("[defaults]\nshared = true\n");
    assert!(
        e.starts_with("rules.toml:2:1: unknown field `shared`"),
        "{e}"
    );
    let e = err("[[rule]]\nname = \"a\"\ntables = [\"t\"]\nenabled = \"yes\"\n");
    assert!(e.starts_with("rules.toml:4:11: "), "{e}");
}

#[test]
fn duplicate_names_point_at_the_second() {
    let text =
        "[[rule]]\nname = \"a\"\ntables = [\"t\"]\n\n[[rule]]\nname = \"a\"\ntables = [\"u\"]\n";
    assert_eq!(
        err(text),
        "rules.toml:6:8: rule \"a\": name already used by the rule at line 2"
    );
}

#[test]
fn matchers_must_be_exactly_one() {
    let text = "[[rule]]\nname = \"a\"\nquery = \"select 1\"\ntables = [\"t\"]\n";
    assert_eq!(
        err(text),
        "rules.toml:4:10: rule \"a\": has both query and tables; give exactly one matcher"
    );
    let text = "[[rule]]\nname = \"a\"\nttl = \"1s\"\n";
    assert_eq!(
        err(text),
        "rules.toml:2:8: rule \"a\": needs one matcher: query, fingerprint or tables"
    );
}

#[test]
fn queries_must_parse_and_be_reads() {
    let e = err("[[rule]]\nname = \"q\"\nquery = \"selec * from t\"\n");
    assert!(
        e.starts_with("rules.toml:3:9: rule \"q\": query does not parse: "),
        "{e}"
    );
    let e = err("[[rule]]\nname = \"q\"\nquery = \"delete from t\"\n");
    assert_eq!(
        e,
        "rules.toml:3:9: rule \"q\": query is not a single SELECT, so it can never be cached"
    );
}

#[test]
fn two_rules_may_not_share_a_fingerprint() {
    let text = "[[rule]]\nname = \"a\"\nquery = \"select * from t where id = 1\"\n\
                [[rule]]\nname = \"b\"\nquery = \"SELECT * FROM t WHERE id = 2\"\n";
    assert_eq!(
        err(text),
        "rules.toml:6:9: rule \"b\": matches the same fingerprint as rule \"a\""
    );
}

#[test]
fn bad_fingerprints_and_tables_are_rejected() {
    let e = err("[[rule]]\nname = \"f\"\nfingerprint = \"abc\"\n");
    assert_eq!(
        e,
        "rules.toml:3:15: rule \"f\": fingerprint \"abc\" is not 64 hexadecimal digits"
    );
    let e = err("[[rule]]\nname = \"t\"\ntables = [\"ok\", \"a b\"]\n");
    assert_eq!(
        e,
        "rules.toml:3:17: rule \"t\": \"a b\" is not a table name (expected name or schema.name)"
    );
    let e = err("[[rule]]\nname = \"t\"\ntables = []\n");
    assert_eq!(
        e,
        "rules.toml:3:10: rule \"t\": tables must list at least one table"
    );
    let e = err("[[rule]]\nname = \"t\"\ntables = [\"x\"]\ninvalidate_on = [\"x.y.z\"]\n");
    assert!(e.starts_with("rules.toml:4:18: "), "{e}");
}

#[test]
fn columns_count_characters_not_bytes() {
    assert_eq!(line_column("é = 1\nab", 8), (2, 2));
    assert_eq!(line_column("éx", 2), (1, 2));
    assert_eq!(line_column("", 10), (1, 1));
}

#[test]
fn load_rules_reports_unreadable_files() {
    let e = load_rules("/nonexistent/rules.toml").unwrap_err();
    assert!(e
        .to_string()
        .starts_with("/nonexistent/rules.toml: cannot read: "));
}

#[test]
fn the_example_file_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rules.toml");
    let set = load_rules(path).unwrap();
    assert!(!set.rules().is_empty());
}
