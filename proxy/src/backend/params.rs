//! Session parameters a client expects its server connection to have.
//!
//! In transaction pooling a client's statements run on whichever server
//! connection is free, so the settings it made (at startup or with `SET`)
//! travel with the client and are applied to a server connection when the
//! two differ. Values are stored as Postgres reports them in
//! `pg_settings.setting`, and applied with `set_config()`, which parses them
//! exactly as Postgres printed them (list values such as `search_path`
//! included).

use std::collections::BTreeMap;
use std::fmt::Write;

/// Settings applied on top of a server connection's login defaults.
/// Names are lower-case. `role` and `session_authorization` are kept here too
/// and applied with their own commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionParams {
    pub settings: BTreeMap<String, String>,
}

/// Startup-packet keys that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

impl SessionParams {
    /// The settings a client asked for in its startup packet, including
    /// `-c name=value` / `--name=value` entries of `options`.
    pub fn from_startup(params: &BTreeMap<String, String>) -> SessionParams {
        let mut settings = BTreeMap::new();
        for (key, value) in params {
            if !NOT_SETTINGS.contains(&key.as_str()) && !key.starts_with("_pq_.") {
                settings.insert(key.to_lowercase(), value.clone());
            }
        }
        if let Some(options) = params.get("options") {
            for (key, value) in parse_options(options) {
                settings.insert(key.to_lowercase(), value);
            }
        }
        SessionParams { settings }
    }

    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
    }

    /// SQL that takes a server connection whose applied settings are `from`
    /// to these settings. `None` when nothing needs to run.
    pub fn transition_sql(&self, from: &SessionParams) -> Option<String> {
        if self == from {
            return None;
        }
        let mut sql = String::new();
        if !from.is_empty() {
            // Back to the login state first, so settings the previous client
            // made and this one did not are gone.
            sql.push_str("SET SESSION AUTHORIZATION DEFAULT; RESET ALL; ");
        }
        if let Some(user) = self.settings.get("session_authorization") {
            let _ = write!(sql, "SET SESSION AUTHORIZATION {}; ", quote_ident(user));
        }
        let generic: Vec<_> = self
            .settings
            .iter()
            .filter(|(k, _)| *k != "role" && *k != "session_authorization")
            .collect();
        if !generic.is_empty() {
            sql.push_str("SELECT ");
            for (i, (name, value)) in generic.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let _ = write!(
                    sql,
                    "pg_catalog.set_config({}, {}, false)",
                    quote_literal(name),
                    quote_literal(value)
                );
            }
            sql.push_str("; ");
        }
        if let Some(role) = self.settings.get("role") {
            let _ = write!(sql, "SET ROLE {}; ", quote_ident(role));
        }
        Some(sql)
    }
}

/// The query that reads a server connection's session-level settings back
/// after a client changed them; `login_user` is the user the connection
/// logged in as.
pub fn capture_sql(login_user: &str) -> String {
    format!(
        "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session' \
         UNION ALL SELECT 'role', r FROM (SELECT pg_catalog.current_setting('role') AS r) x WHERE r <> 'none' \
         UNION ALL SELECT 'session_authorization', session_user::text WHERE session_user <> {}",
        quote_literal(login_user)
    )
}

/// Splits a libpq `options` string into settings: `-c a=b`, `-ca=b`, `--a=b`.
/// Backslash escapes a space, as Postgres accepts.
fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut iter = words.into_iter();
    while let Some(w) = iter.next() {
        let setting = if w == "-c" {
            iter.next()
        } else if let Some(rest) = w.strip_prefix("-c") {
            Some(rest.to_owned())
        } else {
            w.strip_prefix("--").map(str::to_owned)
        };
        if let Some((k, v)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_owned()));
        }
    }
    out
}

/// Quotes a string literal so it reads the same whatever
/// `standard_conforming_strings` is.
pub fn quote_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_options_become_settings() {
        let mut p = BTreeMap::new();
        p.insert("user".into(), "app".into());
        p.insert("application_name".into(), "psql".into());
        p.insert(
            "options".into(),
            "-c search_path=a,b --statement-timeout=5s -cwork_mem=8MB".into(),
        );
        let s = SessionParams::from_startup(&p);
        assert_eq!(s.settings.get("application_name").unwrap(), "psql");
        assert_eq!(s.settings.get("search_path").unwrap(), "a,b");
        assert_eq!(s.settings.get("statement_timeout").unwrap(), "5s");
        assert_eq!(s.settings.get("work_mem").unwrap(), "8MB");
        assert!(!s.settings.contains_key("user"));
    }

    #[test]
    fn no_transition_between_equal_settings() {
        let a = SessionParams::default();
        assert_eq!(a.transition_sql(&SessionParams::default()), None);
    }

    #[test]
    fn transition_resets_before_applying_and_quotes_values() {
        let mut target = SessionParams::default();
        target
            .settings
            .insert("search_path".into(), "\"$user\", it's".into());
        let mut from = SessionParams::default();
        from.settings.insert("timezone".into(), "UTC".into());
        let sql = target.transition_sql(&from).unwrap();
        assert!(sql.starts_with("SET SESSION AUTHORIZATION DEFAULT; RESET ALL; "));
        assert!(sql.contains("set_config(E'search_path', E'\"$user\", it''s', false)"));
    }
}
