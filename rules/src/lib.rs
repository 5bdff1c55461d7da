//! # pgstash-rules
//!
//! Everything pgstash decides about SQL text, with no I/O except reading the
//! rules file:
//! - [`session_effects`]: what a string does to session state (for the
//!   transaction pooler) — cheap on the common path;
//! - [`statement_reset`]: how a string drops prepared statements (for the
//!   transaction pooler's mapping of `DEALLOCATE` / `DISCARD ALL`);
//! - [`exclusive_databases`]: the databases a string needs no other session
//!   connected to (`DROP DATABASE`…), whose idle pooled connections close;
//! - [`executed_statements`]: the prepared statements `EXECUTE name` runs,
//!   and where the names are written (for the transaction pooler's renaming);
//! - [`screen`]: one pass that tells whether any of the four scans above
//!   can find anything in a text (almost every text: none can);
//! - [`analyze`] / [`AnalysisCache`]: statement kinds, relations read and
//!   written, functions, locking, temp/system relations, parameters;
//! - [`normalize`] / [`Fingerprint`]: the stable SHA-256 identity of a query
//!   shape, its literal values and a loggable normalized text;
//! - [`literal_mask`]: a one-pass pre-key shared by texts that differ only
//!   in plain literals, so a shape is analyzed once, not once per text;
//! - [`load_rules`] / [`parse_rules`]: the validated rules.toml model
//!   ([`RuleSet`]), with `file:line:column` errors;
//! - [`Writes::of`]: whether a string writes, and what to invalidate once it
//!   commits — decided here once, for the proxy and for [`decide`];
//! - [`decide`]: cache read, write (what to invalidate), or bypass and why,
//!   given the session's state and a [`Catalog`] the proxy implements.
//!
//! SQL is understood by Postgres' own parser and scanner (`pg_query`).

mod analysis;
mod cache;
mod catalog;
mod classify;
mod decision;
mod exclusive;
mod execute;
mod fingerprint;
mod load;
mod model;
mod names;
mod predicate;
mod reset;
mod screen;
mod session;
mod shape;
mod starts;
mod statement;
mod tree;
mod walk;
mod writes;

pub use analysis::{analyze, Analysis, AnalyzeError};
pub use cache::{AnalysisCache, MAX_CACHED_TEXT};
pub use catalog::{Catalog, Volatility};
pub use decision::{decide, decide_unparsable, BypassReason, Decision, SessionFacts};
pub use exclusive::exclusive_databases;
pub use execute::{executed_statements, may_execute, Executed};
pub use fingerprint::{
    fingerprint, is_time_sensitive_input, literal_values, normalize, Fingerprint, FingerprintError,
    FingerprintHashing, FingerprintMap, Literal, LiteralKind, Normalized, CANONICAL_VERSION,
};
pub use load::{line_column, load_rules, parse_rules, Problem, RulesError};
pub use model::{Defaults, Matcher, Rule, RuleSet};
pub use names::{FunctionRef, NameError, TableRef};
pub use predicate::{filter_predicates, Predicate, PredicateKind};
pub use reset::{statement_reset, StatementReset};
pub use screen::{screen, Screen};
pub use session::{session_effects, EffectsCache, SessionEffects};
pub use shape::{literal_mask, literal_mask_into};
pub use statement::{ImplicitCall, Statement, StatementKind, TransactionKind};
pub use tree::{ParseError, TreeError};
pub use writes::Writes;
