//! Names of relations and functions as a statement or rules.toml writes them.
//!
//! Names are kept *as written* (schema only when the text qualifies it),
//! after Postgres' folding: unquoted names are lower case, quoted names keep
//! their case. Resolving an unqualified name needs the session's
//! `search_path`, which only the proxy knows.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Errors of this module.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    /// Not `name` or `schema.name` (each part a plain or `"quoted"` name).
    #[error("{0:?} is not a table name (expected name or schema.name)")]
    Invalid(String),
}

/// A relation (table, view, materialized view…) as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    pub schema: Option<String>,
    pub name: String,
}

impl TableRef {
    pub fn new(schema: Option<&str>, name: &str) -> Self {
        TableRef {
            schema: schema.filter(|s| !s.is_empty()).map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// True when both names may denote the same relation: equal names and
    /// equal schemas, or a schema missing on either side (it then depends on
    /// `search_path`).
    pub fn may_be(&self, other: &TableRef) -> bool {
        self.name == other.name
            && match (&self.schema, &other.schema) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// The key under which writes and reads of this relation must meet.
    ///
    /// It is the bare relation name: a write to `public.users` and a read of
    /// `users` (or of `app.users`) agree without knowing the `search_path`.
    /// Relations of the same name in different schemas share the key, which
    /// over-invalidates but never misses an invalidation.
    pub fn invalidation_key(&self) -> &str {
        &self.name
    }

    /// True for system catalogs: schema `pg_catalog`, `information_schema`
    /// or `pg_toast`, or an unqualified name beginning with `pg_`.
    pub fn is_system_catalog(&self) -> bool {
        match &self.schema {
            Some(s) => matches!(s.as_str(), "pg_catalog" | "information_schema" | "pg_toast"),
            None => self.name.starts_with("pg_"),
        }
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write_ident(f, schema)?;
            f.write_str(".")?;
        }
        write_ident(f, &self.name)
    }
}

impl FromStr for TableRef {
    type Err = NameError;

    /// Parses `name`, `schema.name`, `"Quoted"."Name"` with Postgres folding.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NameError::Invalid(s.to_owned());
        let parts = split_qualified(s.trim()).ok_or_else(bad)?;
        match parts.as_slice() {
            [name] => Ok(TableRef::new(None, name)),
            [schema, name] => Ok(TableRef::new(Some(schema), name)),
            _ => Err(bad()),
        }
    }
}

/// A function as called, e.g. `now` or `pg_catalog.extract`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionRef {
    pub schema: Option<String>,
    pub name: String,
}

impl fmt::Display for FunctionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write_ident(f, schema)?;
            f.write_str(".")?;
        }
        write_ident(f, &self.name)
    }
}

/// Writes `s` bare when it reads back as the same name, quoted otherwise.
fn write_ident(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    let plain = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        f.write_str(s)
    } else {
        write!(f, "\"{}\"", s.replace('"', "\"\""))
    }
}

/// Splits a dotted name into parts, folding unquoted parts to lower case.
fn split_qualified(s: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_alphanumeric() || c == '_' || c == '$') {
                    return None;
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            return None;
        }
        parts.push(part);
        match chars.next() {
            None => return Some(parts),
            Some('.') => continue,
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TableRef {
        s.parse().unwrap()
    }

    #[test]
    fn table_names_parse_with_postgres_folding() {
        assert_eq!(t("Users"), TableRef::new(None, "users"));
        assert_eq!(t("public.users"), TableRef::new(Some("public"), "users"));
        assert_eq!(
            t("\"App\".\"My \"\"T\"\"\""),
            TableRef::new(Some("App"), "My \"T\"")
        );
        for bad in ["", "a.", ".a", "a.b.c", "a b", "\"open", "a;drop"] {
            assert!(bad.parse::<TableRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn display_quotes_only_when_needed() {
        assert_eq!(t("public.users").to_string(), "public.users");
        assert_eq!(TableRef::new(None, "Users").to_string(), "\"Users\"");
    }

    #[test]
    fn unqualified_names_may_be_any_schema() {
        assert!(t("users").may_be(&t("public.users")));
        assert!(t("public.users").may_be(&t("users")));
        assert!(!t("public.users").may_be(&t("app.users")));
        assert!(!t("users").may_be(&t("orders")));
    }

    #[test]
    fn system_catalogs_are_recognised() {
        assert!(t("pg_class").is_system_catalog());
        assert!(t("pg_catalog.pg_class").is_system_catalog());
        assert!(t("information_schema.tables").is_system_catalog());
        assert!(!t("public.pg_like_name").is_system_catalog());
        assert!(!t("users").is_system_catalog());
    }
}
