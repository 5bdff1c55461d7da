//! A bounded, thread-safe cache of analyses, so the parser runs once per
//! query shape and the scanner once per distinct text.
//!
//! Two levels:
//! - by exact text: a text up to [`MAX_SHORT_TEXT`] bytes is its own key
//!   (a hit costs one fast hash and one comparison); a longer one is keyed
//!   by its SHA-256, so long texts cost no memory. Either way no hash
//!   collision can hand one text another's analysis;
//! - by fingerprint: a new text of a known shape (new literal values) costs
//!   a scan but no parse; the statements part is shared.
//!
//! Both levels are `quick_cache` S3-FIFO caches bounded in entries, with a
//! `&self` API usable from any number of tokio tasks. Two tasks missing on
//! the same text at once both analyze it (analysis is pure); no lock is held
//! while parsing.
//!
//! # Performance
//! Texts longer than [`MAX_CACHED_TEXT`] (bulk INSERTs) skip the text level:
//! their literal lists are large and they rarely repeat. SHA-256 of a short
//! text was ~6% of a cache hit's instructions in a profile without SHA
//! instructions (valgrind hides them), hence the short-text level.

use std::sync::Arc;

use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use crate::analysis::{analyze_statements, Analysis, AnalyzeError};
use crate::fingerprint::{normalize, Fingerprint};
use crate::statement::Statement;

/// Texts longer than this (bytes) are not cached by text.
pub const MAX_CACHED_TEXT: usize = 64 * 1024;

/// Texts up to this long (bytes) are their own cache key.
pub const MAX_SHORT_TEXT: usize = 1024;

/// See the module documentation.
pub struct AnalysisCache {
    by_short_text: Cache<String, Arc<Analysis>>,
    by_text: Cache<[u8; 32], Arc<Analysis>>,
    by_fingerprint: Cache<Fingerprint, Arc<[Statement]>>,
}

impl AnalysisCache {
    /// A cache holding up to `capacity` texts and `capacity` shapes.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        AnalysisCache {
            by_short_text: Cache::new(capacity),
            by_text: Cache::new(capacity),
            by_fingerprint: Cache::new(capacity),
        }
    }

    /// The analysis of `sql`, from the cache when possible.
    /// Errors are not cached (unparsable text is rare and goes upstream).
    pub fn analyze(&self, sql: &str) -> Result<Arc<Analysis>, AnalyzeError> {
        if let Some(hit) = self.cached(sql) {
            return Ok(hit);
        }
        let short = sql.len() <= MAX_SHORT_TEXT;
        let text_key = (!short && sql.len() <= MAX_CACHED_TEXT).then(|| text_key(sql));
        if let Some(hit) = text_key.as_ref().and_then(|k| self.by_text.get(k)) {
            return Ok(hit);
        }
        let normalized = normalize(sql)?;
        let statements = match self.by_fingerprint.get(&normalized.fingerprint) {
            Some(shared) => shared,
            None => {
                let fresh: Arc<[Statement]> = analyze_statements(sql)?.into();
                self.by_fingerprint
                    .insert(normalized.fingerprint, Arc::clone(&fresh));
                fresh
            }
        };
        let analysis = Arc::new(Analysis::from_parts(normalized, statements));
        if short {
            self.by_short_text
                .insert(sql.to_owned(), Arc::clone(&analysis));
        } else if let Some(k) = text_key {
            self.by_text.insert(k, Arc::clone(&analysis));
        }
        Ok(analysis)
    }

    /// The analysis of `sql` if the short-text level holds it: one fast
    /// lookup that never scans, parses or computes a SHA-256.
    pub fn cached(&self, sql: &str) -> Option<Arc<Analysis>> {
        if sql.len() > MAX_SHORT_TEXT {
            return None;
        }
        self.by_short_text.get(sql)
    }

    /// The cached statements of a shape, if any (e.g. for a digest page).
    pub fn statements_for(&self, fingerprint: &Fingerprint) -> Option<Arc<[Statement]>> {
        self.by_fingerprint.get(fingerprint)
    }

    /// Number of texts cached.
    pub fn texts(&self) -> usize {
        self.by_short_text.len() + self.by_text.len()
    }

    /// Number of shapes cached.
    pub fn shapes(&self) -> usize {
        self.by_fingerprint.len()
    }

    /// Forgets everything (e.g. after DDL changed what names mean).
    pub fn clear(&self) {
        self.by_short_text.clear();
        self.by_text.clear();
        self.by_fingerprint.clear();
    }
}

fn text_key(sql: &str) -> [u8; 32] {
    Sha256::digest(sql.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_is_served_from_the_text_level() {
        let cache = AnalysisCache::new(16);
        let a = cache.analyze("select * from t where id = 1").unwrap();
        let b = cache.analyze("select * from t where id = 1").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!((cache.texts(), cache.shapes()), (1, 1));
    }

    #[test]
    fn same_shape_shares_statements_but_keeps_its_literals() {
        let cache = AnalysisCache::new(16);
        let a = cache.analyze("select * from t where id = 1").unwrap();
        let b = cache
            .analyze("SELECT * FROM t WHERE id = 2 -- other")
            .unwrap();
        assert!(Arc::ptr_eq(&a.statements, &b.statements));
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.literals, b.literals);
        assert_eq!(b.literals[0].text, "2");
        assert_eq!((cache.texts(), cache.shapes()), (2, 1));
    }

    #[test]
    fn parameters_are_counted_per_text() {
        let cache = AnalysisCache::new(16);
        let a = cache.analyze("select $1, 2").unwrap();
        let b = cache.analyze("select 1, 2").unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!((a.param_count, b.param_count), (1, 0));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = AnalysisCache::new(8);
        for i in 0..200 {
            cache.analyze(&format!("select c{i} from t")).unwrap();
        }
        assert!(cache.texts() <= 16 && cache.shapes() <= 16);
    }

    #[test]
    fn errors_are_returned_not_cached() {
        let cache = AnalysisCache::new(8);
        assert!(cache.analyze("selec 1").is_err());
        assert_eq!(cache.texts(), 0);
    }

    #[test]
    fn usable_from_many_threads() {
        let cache = Arc::new(AnalysisCache::new(64));
        let handles: Vec<_> = (0..4)
            .map(|n| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let sql = format!("select * from t{} where id = {}", i % 5, n);
                        assert!(cache.analyze(&sql).is_ok());
                    }
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().is_ok());
        }
        assert_eq!(cache.shapes(), 5);
    }
}
