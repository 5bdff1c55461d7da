//! Where a setting is written in a config file, so that an error found
//! after the file parsed (a validation, a file it names that cannot be
//! read) or a warning points at `file:line:column` as a TOML error does.
//!
//! The file is parsed a second time, with `toml_edit`, which keeps the
//! position of every key and value; this is done only when there is
//! something to report, never on the way to serving.

use std::ops::Range;
use std::path::Path;

use toml_edit::{ImDocument, Item, TableLike, Value};

use super::ConfigError;

/// `problem`, placed at byte `offset` of the file `path` that holds `text`.
pub(super) fn at(
    path: &Path,
    text: &str,
    offset: Option<usize>,
    problem: ConfigError,
) -> ConfigError {
    let path = path.to_owned();
    let problem = Box::new(problem);
    match offset {
        Some(offset) => {
            let (line, column) = line_column(text, offset);
            ConfigError::At {
                path,
                line,
                column,
                problem,
            }
        }
        None => ConfigError::In { path, problem },
    }
}

/// `problem`, found in the file `path` that holds `text`, placed where the
/// setting it is about is written.
pub(super) fn in_file(path: &Path, text: &str, problem: ConfigError) -> ConfigError {
    if matches!(problem, ConfigError::At { .. } | ConfigError::In { .. }) {
        return problem;
    }
    let offset = offset_of_error(text, &problem);
    at(path, text, offset, problem)
}

pub(super) use pgstash_rules::line_column;

/// Where in `text` the setting `problem` is about is written: its value,
/// or the nearest table it would be in when it is not written.
pub(super) fn offset_of_error(text: &str, problem: &ConfigError) -> Option<usize> {
    match problem {
        ConfigError::Invalid { key, .. } => offset_of_key(text, key),
        ConfigError::Upstream { .. } => offset_of_key(text, "upstream"),
        ConfigError::Password { user, .. } => {
            let sources = ["password_file", "password_env", "password"];
            let found = sources
                .iter()
                .map(|source| walk(text, &["auth", "users", source], Some(user)))
                .collect::<Vec<_>>();
            found
                .iter()
                .find(|(_, complete)| *complete)
                .or(found.first())
                .and_then(|(offset, _)| *offset)
        }
        _ => None,
    }
}

/// Where the dotted `key` (`cache.redis_ca`) is written in `text`; for a
/// key in an array of tables (`auth.users.name`), in the first entry that
/// has it.
pub(super) fn offset_of_key(text: &str, key: &str) -> Option<usize> {
    let segments: Vec<&str> = key.split('.').collect();
    walk(text, &segments, None).0
}

/// Follows `segments` down the document: the offset of the deepest item
/// found, and whether every segment was. In an array of tables, the entry
/// named `user` (by its `name` key), or else the first having the next
/// segment, is followed.
fn walk(text: &str, segments: &[&str], user: Option<&str>) -> (Option<usize>, bool) {
    let Ok(doc) = ImDocument::parse(text) else {
        return (None, false);
    };
    let mut table: &dyn TableLike = doc.as_table();
    let mut at = None;
    for (i, segment) in segments.iter().enumerate() {
        let Some((key, item)) = table.get_key_value(segment) else {
            return (at, false);
        };
        at = start(key.span()).or(at);
        let next = segments.get(i + 1).copied();
        match item {
            Item::Table(t) => {
                at = start(t.span()).or(at);
                table = t;
            }
            Item::ArrayOfTables(array) => {
                let entries: Vec<(&dyn TableLike, Option<Range<usize>>)> = array
                    .iter()
                    .map(|t| (t as &dyn TableLike, t.span()))
                    .collect();
                let Some((entry, span)) = pick(entries, next, user) else {
                    return (at, next.is_none());
                };
                at = start(span).or(at);
                table = entry;
            }
            Item::Value(Value::InlineTable(t)) => {
                at = start(t.span()).or(at);
                table = t;
            }
            Item::Value(Value::Array(array)) if next.is_some() => {
                let entries: Vec<(&dyn TableLike, Option<Range<usize>>)> = array
                    .iter()
                    .filter_map(|v| v.as_inline_table().map(|t| (t as &dyn TableLike, t.span())))
                    .collect();
                let Some((entry, span)) = pick(entries, next, user) else {
                    return (start(array.span()).or(at), false);
                };
                at = start(span).or(at);
                table = entry;
            }
            Item::Value(value) => return (start(value.span()).or(at), next.is_none()),
            Item::None => return (at, false),
        }
    }
    (at, true)
}

/// The entry of an array of tables a key is looked for in.
fn pick<'a>(
    entries: Vec<(&'a dyn TableLike, Option<Range<usize>>)>,
    next: Option<&str>,
    user: Option<&str>,
) -> Option<(&'a dyn TableLike, Option<Range<usize>>)> {
    let named = |t: &dyn TableLike| {
        t.get("name")
            .and_then(Item::as_str)
            .is_some_and(|name| Some(name) == user)
    };
    let has_next = |t: &dyn TableLike| next.is_some_and(|key| t.contains_key(key));
    let position = match user {
        Some(_) => entries.iter().position(|(t, _)| named(*t)),
        None => entries.iter().position(|(t, _)| has_next(*t)),
    };
    entries.into_iter().nth(position.unwrap_or(0))
}

fn start(span: Option<Range<usize>>) -> Option<usize> {
    span.map(|s| s.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, key: &str) -> Option<(usize, usize)> {
        offset_of_key(text, key).map(|offset| line_column(text, offset))
    }

    #[test]
    fn keys_are_found_in_tables_inline_tables_and_arrays_of_tables() {
        let text = "listen = \"127.0.0.1:1\"\n\n[cache]\nredis_ca = \"ca.pem\"\n\
                    [tls]\n\n[[auth.users]]\nname = \"a\"\n[[auth.users]]\nname = \"b\"\n\
                    password_env = \"B\"\n[pool]\nx = { y = 1 }\n";
        assert_eq!(at(text, "listen"), Some((1, 10)));
        assert_eq!(at(text, "cache.redis_ca"), Some((4, 12)));
        assert_eq!(at(text, "tls"), Some((5, 1)), "a table: its header");
        assert_eq!(at(text, "tls.required"), Some((5, 1)), "unset: its table");
        assert_eq!(
            at(text, "auth.users.password_env"),
            Some((11, 16)),
            "the entry that has it"
        );
        assert_eq!(at(text, "pool.x.y"), Some((13, 11)));
        assert_eq!(at(text, "workers"), None);
    }

    #[test]
    fn a_password_error_points_at_that_users_source() {
        let text = "[[auth.users]]\nname = \"a\"\npassword_file = \"a\"\n\
                    [[auth.users]]\nname = \"b\"\npassword_env = \"B\"\n";
        let problem = ConfigError::Password {
            user: "b".into(),
            reason: "not set".into(),
        };
        let offset = offset_of_error(text, &problem).unwrap();
        assert_eq!(line_column(text, offset), (6, 16));
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_column("a = \"é\"\nbé = 1", 12), (2, 3));
    }
}
