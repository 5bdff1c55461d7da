//! What decisions need to know about the database that SQL text cannot say.
//!
//! The proxy implements [`Catalog`] from `pg_proc`, `pg_class`, `pg_depend`…
//! on its control connection. Every answer is an `Option`: `None` means
//! "unknown", and an unknown is never treated as safe (default-deny).

use crate::names::TableRef;

/// A function's volatility (`pg_proc.provolatile`), ordered from safest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Volatility {
    /// `i`: same result for the same arguments, forever.
    Immutable,
    /// `s`: same result within one statement (depends on settings, time, tables).
    Stable,
    /// `v`: may change on every call or have side effects.
    Volatile,
}

impl Volatility {
    /// From `pg_proc.provolatile` (`'i'`, `'s'`, `'v'`).
    pub fn from_provolatile(c: char) -> Option<Volatility> {
        match c {
            'i' => Some(Volatility::Immutable),
            's' => Some(Volatility::Stable),
            'v' => Some(Volatility::Volatile),
            _ => None,
        }
    }
}

/// Database facts the proxy looks up (and may cache, refreshing on DDL).
///
/// Names are passed as written in the query: `schema` is `None` for an
/// unqualified name, which the implementation resolves with the session's
/// `search_path` (or, failing that, answers for every schema conservatively).
pub trait Catalog {
    /// Volatility of function `name`. When several overloads share the name,
    /// return the *most* volatile of them. `None`: no such function known.
    fn function_volatility(&self, schema: Option<&str>, name: &str) -> Option<Volatility>;

    /// Whether row-level security is enabled on the relation
    /// (`pg_class.relrowsecurity`), or, for a view, on any relation it reads.
    fn table_has_rls(&self, schema: Option<&str>, name: &str) -> Option<bool>;

    /// Whether the name resolves to a temporary relation
    /// (`pg_class.relpersistence = 't'`) in the session.
    fn is_temp_table(&self, schema: Option<&str>, name: &str) -> Option<bool>;

    /// The *other* relations whose writes can change what reading this one
    /// returns: for a view, the relations it reads (recursively, through
    /// `pg_depend`/`pg_rewrite`); for a partitioned or inheritance parent,
    /// its partitions/children; for a partition or child, its ancestors.
    /// `Some(vec![])` for a plain table. `None`: relation unknown.
    fn read_dependencies(&self, schema: Option<&str>, name: &str) -> Option<Vec<TableRef>>;
}
