//! Reading and validating rules.toml.
//!
//! Every error points at the offending value as `file:line:column`, so
//! `pgstash rules check` and a failed hot reload tell the user exactly what
//! to fix: syntax and type errors through `toml`'s spans, semantic errors
//! (duplicate names, two matchers, a `query` that does not parse, a bad
//! fingerprint or ttl) through `toml::Spanned` values.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::analysis::analyze;
use crate::fingerprint::Fingerprint;
use crate::model::{Defaults, Matcher, Rule, RuleSet};
use crate::names::TableRef;

/// Why a rules file was rejected.
#[derive(Debug, Error)]
pub enum RulesError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Line and column are 1-based; the column counts characters.
    #[error("{origin}:{line}:{column}: {problem}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        problem: Problem,
    },
}

/// What is wrong with a rules file, without its location.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    /// TOML syntax, an unknown key, or a value of the wrong type.
    #[error("{0}")]
    Toml(String),
    #[error("{subject}: ttl {value:?} is not a duration (e.g. \"30s\", \"5m\")")]
    BadTtl { subject: String, value: String },
    #[error("{subject}: ttl must be longer than zero")]
    ZeroTtl { subject: String },
    #[error("rule name must not be empty")]
    EmptyName,
    #[error("rule {name:?}: name already used by the rule at line {first_line}")]
    DuplicateName { name: String, first_line: usize },
    #[error("rule {rule:?}: needs one matcher: query, fingerprint or tables")]
    NoMatcher { rule: String },
    #[error("rule {rule:?}: has both {first} and {second}; give exactly one matcher")]
    TwoMatchers {
        rule: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("rule {rule:?}: query does not parse: {error}")]
    BadQuery { rule: String, error: String },
    #[error("rule {rule:?}: query is not a single SELECT, so it can never be cached")]
    NotARead { rule: String },
    #[error("rule {rule:?}: fingerprint {value:?} is not 64 hexadecimal digits")]
    BadFingerprint { rule: String, value: String },
    #[error("rule {rule:?}: matches the same fingerprint as rule {other:?}")]
    SameFingerprint { rule: String, other: String },
    #[error("{subject}: {value:?} is not a table name (expected name or schema.name)")]
    BadTable { subject: String, value: String },
    #[error("rule {rule:?}: tables must list at least one table")]
    EmptyTables { rule: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    defaults: Option<RawDefaults>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    ttl: Option<Spanned<String>>,
    max_entry_bytes: Option<u64>,
    allow_stable_functions: Option<bool>,
    allow_rls: Option<bool>,
    cache_in_transactions: Option<bool>,
    adaptive: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    query: Option<Spanned<String>>,
    fingerprint: Option<Spanned<String>>,
    tables: Option<Spanned<Vec<Spanned<String>>>>,
    ttl: Option<Spanned<String>>,
    #[serde(default)]
    invalidate_on: Vec<Spanned<String>>,
    shared: Option<bool>,
    enabled: Option<bool>,
    max_entry_bytes: Option<u64>,
    allow_stable_functions: Option<bool>,
    allow_rls: Option<bool>,
    cache_in_transactions: Option<bool>,
    adaptive: Option<bool>,
}

/// Reads and validates the rules file at `path`.
pub fn load_rules(path: impl AsRef<Path>) -> Result<RuleSet, RulesError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_rules(&text, &path.display().to_string())
}

/// Validates rules.toml `text`; `origin` names it in error messages.
pub fn parse_rules(text: &str, origin: &str) -> Result<RuleSet, RulesError> {
    let at = |span: Range<usize>, problem: Problem| {
        let (line, column) = line_column(text, span.start);
        RulesError::Invalid {
            origin: origin.to_owned(),
            line,
            column,
            problem,
        }
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        at(
            e.span().unwrap_or(0..0),
            Problem::Toml(e.message().to_owned()),
        )
    })?;
    let defaults = resolve_defaults(raw.defaults).map_err(|(span, problem)| at(span, problem))?;
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.rule.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut fingerprints: HashMap<Fingerprint, String> = HashMap::new();
    for raw_rule in raw.rule {
        let name = raw_rule.name.get_ref().clone();
        let name_span = raw_rule.name.span();
        let line = line_column(text, name_span.start).0;
        if name.trim().is_empty() {
            return Err(at(name_span, Problem::EmptyName));
        }
        if let Some(first_line) = names.get(&name) {
            let problem = Problem::DuplicateName {
                name,
                first_line: *first_line,
            };
            return Err(at(name_span, problem));
        }
        let fp_span = raw_rule
            .query
            .as_ref()
            .or(raw_rule.fingerprint.as_ref())
            .map(Spanned::span);
        let rule = resolve_rule(raw_rule, &defaults, line).map_err(|(s, p)| at(s, p))?;
        if let (Some(fp), Some(span)) = (rule.matcher.fingerprint(), fp_span) {
            if let Some(other) = fingerprints.get(&fp) {
                let problem = Problem::SameFingerprint {
                    rule: name,
                    other: other.clone(),
                };
                return Err(at(span, problem));
            }
            fingerprints.insert(fp, name.clone());
        }
        names.insert(name, line);
        rules.push(rule);
    }
    Ok(RuleSet::new(origin.to_owned(), defaults, rules))
}

type Located<T> = Result<T, (Range<usize>, Problem)>;

fn resolve_defaults(raw: Option<RawDefaults>) -> Located<Defaults> {
    let base = Defaults::default();
    let Some(raw) = raw else {
        return Ok(base);
    };
    let ttl = match raw.ttl {
        Some(ttl) => parse_ttl(&ttl, "defaults")?,
        None => base.ttl,
    };
    Ok(Defaults {
        ttl,
        max_entry_bytes: raw.max_entry_bytes.unwrap_or(base.max_entry_bytes),
        allow_stable_functions: raw
            .allow_stable_functions
            .unwrap_or(base.allow_stable_functions),
        allow_rls: raw.allow_rls.unwrap_or(base.allow_rls),
        cache_in_transactions: raw
            .cache_in_transactions
            .unwrap_or(base.cache_in_transactions),
        adaptive: raw.adaptive.unwrap_or(base.adaptive),
    })
}

fn resolve_rule(raw: RawRule, d: &Defaults, line: usize) -> Located<Rule> {
    let name_span = raw.name.span();
    let name = raw.name.into_inner();
    let subject = format!("rule {name:?}");
    let matcher = resolve_matcher(&name, name_span, raw.query, raw.fingerprint, raw.tables)?;
    let ttl = match raw.ttl {
        Some(ttl) => parse_ttl(&ttl, &subject)?,
        None => d.ttl,
    };
    let invalidate_on = raw
        .invalidate_on
        .iter()
        .map(|t| parse_table(t, &subject))
        .collect::<Located<Vec<_>>>()?;
    Ok(Rule {
        matcher,
        ttl,
        invalidate_on,
        shared: raw.shared.unwrap_or(false),
        enabled: raw.enabled.unwrap_or(true),
        max_entry_bytes: raw.max_entry_bytes.unwrap_or(d.max_entry_bytes),
        allow_stable_functions: raw
            .allow_stable_functions
            .unwrap_or(d.allow_stable_functions),
        allow_rls: raw.allow_rls.unwrap_or(d.allow_rls),
        cache_in_transactions: raw.cache_in_transactions.unwrap_or(d.cache_in_transactions),
        adaptive: raw.adaptive.unwrap_or(d.adaptive),
        line,
        name,
    })
}

fn resolve_matcher(
    rule: &str,
    name_span: Range<usize>,
    query: Option<Spanned<String>>,
    fingerprint: Option<Spanned<String>>,
    tables: Option<Spanned<Vec<Spanned<String>>>>,
) -> Located<Matcher> {
    let given: Vec<(&'static str, Range<usize>)> = [
        ("query", query.as_ref().map(Spanned::span)),
        ("fingerprint", fingerprint.as_ref().map(Spanned::span)),
        ("tables", tables.as_ref().map(Spanned::span)),
    ]
    .into_iter()
    .filter_map(|(key, span)| span.map(|s| (key, s)))
    .collect();
    let rule = rule.to_owned();
    if let [(first, _), (second, span), ..] = given.as_slice() {
        let problem = Problem::TwoMatchers {
            rule,
            first,
            second,
        };
        return Err((span.clone(), problem));
    }
    if let Some(query) = query {
        let text = query.get_ref().clone();
        let analysis = analyze(&text).map_err(|e| {
            let error = e.to_string();
            (
                query.span(),
                Problem::BadQuery {
                    rule: rule.clone(),
                    error,
                },
            )
        })?;
        if !analysis.is_single_plain_read() {
            return Err((query.span(), Problem::NotARead { rule }));
        }
        return Ok(Matcher::Query {
            text,
            fingerprint: analysis.fingerprint,
        });
    }
    if let Some(fp) = fingerprint {
        let value = fp.get_ref().trim();
        return match value.parse::<Fingerprint>() {
            Ok(parsed) => Ok(Matcher::Fingerprint(parsed)),
            Err(_) => {
                let value = value.to_owned();
                Err((fp.span(), Problem::BadFingerprint { rule, value }))
            }
        };
    }
    if let Some(tables) = tables {
        if tables.get_ref().is_empty() {
            return Err((tables.span(), Problem::EmptyTables { rule }));
        }
        let subject = format!("rule {rule:?}");
        let listed = tables
            .get_ref()
            .iter()
            .map(|t| parse_table(t, &subject))
            .collect::<Located<Vec<_>>>()?;
        return Ok(Matcher::Tables(listed));
    }
    Err((name_span, Problem::NoMatcher { rule }))
}

fn parse_ttl(ttl: &Spanned<String>, subject: &str) -> Located<Duration> {
    let value = ttl.get_ref().trim();
    let bad = || {
        let problem = Problem::BadTtl {
            subject: subject.to_owned(),
            value: value.to_owned(),
        };
        (ttl.span(), problem)
    };
    let d = humantime::parse_duration(value).map_err(|_| bad())?;
    if d.is_zero() {
        return Err((
            ttl.span(),
            Problem::ZeroTtl {
                subject: subject.to_owned(),
            },
        ));
    }
    Ok(d)
}

fn parse_table(t: &Spanned<String>, subject: &str) -> Located<TableRef> {
    t.get_ref().parse().map_err(|_| {
        let problem = Problem::BadTable {
            subject: subject.to_owned(),
            value: t.get_ref().clone(),
        };
        (t.span(), problem)
    })
}

/// 1-based line and column (in characters) of byte `offset` in `text` (a
/// rules file's here; the proxy locates config file errors with it too).
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
