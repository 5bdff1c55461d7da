//! Database facts for caching decisions, read from `pg_catalog` on a control
//! connection (`tokio-postgres`): function volatility, row-level security,
//! temporary relations, and what a view or partitioned table really reads.
//!
//! One snapshot per database, loaded on first use and re-read every
//! `catalog_refresh`, and at once after DDL through pgstash (the snapshot is
//! dropped, so the next decision waits for a fresh one: a table that just
//! got row-level security is never cached on stale facts). Unqualified
//! names are answered for every schema at once, conservatively.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgstash_rules::{Catalog, TableRef, Volatility};

use crate::backend::connect::ConnectTarget;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("catalog connection failed: {0}")]
    Connect(#[from] crate::backend::BackendError),
    #[error("catalog load timed out")]
    Timeout,
}

#[derive(Debug, Clone)]
struct Relation {
    oid: u32,
    schema: String,
    name: String,
    rls: bool,
    temp: bool,
}

/// The facts of one database at one moment.
#[derive(Debug, Default)]
pub struct CatalogSnapshot {
    functions: HashMap<(String, String), Volatility>,
    /// Most volatile overload of each name across all schemas.
    functions_any_schema: HashMap<String, Volatility>,
    relations: HashMap<String, Vec<Relation>>,
    by_oid: HashMap<u32, Relation>,
    /// Relation → relations whose writes change what reading it returns.
    dependencies: HashMap<u32, Vec<u32>>,
    loaded: Option<Instant>,
}

impl CatalogSnapshot {
    fn matching(&self, schema: Option<&str>, name: &str) -> Vec<&Relation> {
        self.relations
            .get(name)
            .map(|all| {
                all.iter()
                    .filter(|r| schema.is_none_or(|s| s == r.schema))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every relation reachable through dependencies, the start excluded.
    fn closure(&self, start: &[u32]) -> Vec<u32> {
        let mut seen: HashSet<u32> = start.iter().copied().collect();
        let mut stack: Vec<u32> = start.to_vec();
        let mut out = Vec::new();
        while let Some(oid) = stack.pop() {
            for dep in self.dependencies.get(&oid).into_iter().flatten() {
                if seen.insert(*dep) {
                    out.push(*dep);
                    stack.push(*dep);
                }
            }
        }
        out
    }

    async fn load(target: &ConnectTarget) -> Result<CatalogSnapshot, CatalogError> {
        let client = crate::backend::control::connect(target, "pgstash-catalog").await?;
        let mut snapshot = CatalogSnapshot {
            loaded: Some(Instant::now()),
            ..Default::default()
        };
        for row in client
            .query(
                "SELECT n.nspname::text, p.proname::text, p.provolatile::text \
                 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace",
                &[],
            )
            .await?
        {
            let schema: String = row.get(0);
            let name: String = row.get(1);
            let volatility: String = row.get(2);
            let Some(v) = volatility.chars().next().and_then(Volatility::from_provolatile) else {
                continue;
            };
            let slot = snapshot.functions.entry((schema, name.clone())).or_insert(v);
            *slot = (*slot).max(v);
            let any = snapshot.functions_any_schema.entry(name).or_insert(v);
            *any = (*any).max(v);
        }
        for row in client
            .query(
                "SELECT c.oid, n.nspname::text, c.relname::text, c.relrowsecurity, c.relpersistence = 't' \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')",
                &[],
            )
            .await?
        {
            let relation = Relation {
                oid: row.get(0),
                schema: row.get(1),
                name: row.get(2),
                rls: row.get(3),
                temp: row.get(4),
            };
            snapshot.by_oid.insert(relation.oid, relation.clone());
            snapshot.relations.entry(relation.name.clone()).or_default().push(relation);
        }
        // Views read their base relations; partitioned and inherited tables
        // read their children, and writes to a parent reach its children.
        for row in client
            .query(
                "SELECT DISTINCT r.ev_class, d.refobjid FROM pg_catalog.pg_rewrite r \
                 JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid \
                 WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> r.ev_class \
                 UNION SELECT inhparent, inhrelid FROM pg_catalog.pg_inherits \
                 UNION SELECT inhrelid, inhparent FROM pg_catalog.pg_inherits",
                &[],
            )
            .await?
        {
            let from: u32 = row.get(0);
            let to: u32 = row.get(1);
            snapshot.dependencies.entry(from).or_default().push(to);
        }
        Ok(snapshot)
    }
}

impl Catalog for CatalogSnapshot {
    fn function_volatility(&self, schema: Option<&str>, name: &str) -> Option<Volatility> {
        match schema {
            Some(s) => self
                .functions
                .get(&(s.to_owned(), name.to_owned()))
                .copied(),
            None => self.functions_any_schema.get(name).copied(),
        }
    }

    fn table_has_rls(&self, schema: Option<&str>, name: &str) -> Option<bool> {
        let matching = self.matching(schema, name);
        if matching.is_empty() {
            return None;
        }
        let start: Vec<u32> = matching.iter().map(|r| r.oid).collect();
        let direct = matching.iter().any(|r| r.rls);
        let through = self
            .closure(&start)
            .iter()
            .any(|oid| self.by_oid.get(oid).is_some_and(|r| r.rls));
        Some(direct || through)
    }

    fn is_temp_table(&self, schema: Option<&str>, name: &str) -> Option<bool> {
        let matching = self.matching(schema, name);
        if matching.is_empty() {
            return None;
        }
        Some(matching.iter().any(|r| r.temp))
    }

    fn read_dependencies(&self, schema: Option<&str>, name: &str) -> Option<Vec<TableRef>> {
        let matching = self.matching(schema, name);
        if matching.is_empty() {
            return None;
        }
        let start: Vec<u32> = matching.iter().map(|r| r.oid).collect();
        Some(
            self.closure(&start)
                .iter()
                .filter_map(|oid| self.by_oid.get(oid))
                .map(|r| TableRef::new(Some(&r.schema), &r.name))
                .collect(),
        )
    }
}

/// Snapshots by database.
pub struct Catalogs {
    snapshots: Mutex<HashMap<String, Arc<CatalogSnapshot>>>,
    refresh: Duration,
    /// Serializes loads so a burst of first queries loads once.
    loading: tokio::sync::Mutex<()>,
}

/// An empty catalog: every name unknown, so nothing is cacheable.
pub fn unknown() -> Arc<CatalogSnapshot> {
    Arc::new(CatalogSnapshot::default())
}

impl Catalogs {
    pub fn new(refresh: Duration) -> Catalogs {
        Catalogs {
            snapshots: Mutex::new(HashMap::new()),
            refresh,
            loading: tokio::sync::Mutex::new(()),
        }
    }

    /// The snapshot for `database` if one is loaded and not due for refresh.
    pub fn current(&self, database: &str) -> Option<Arc<CatalogSnapshot>> {
        let snapshots = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = snapshots.get(database)?;
        let fresh = snapshot
            .loaded
            .is_some_and(|at| at.elapsed() < self.refresh);
        fresh.then(|| snapshot.clone())
    }

    /// The snapshot for `database`, loading it if missing or older than the
    /// refresh interval. On failure the unknown catalog (nothing cached).
    pub async fn get(&self, database: &str, target: &ConnectTarget) -> Arc<CatalogSnapshot> {
        if let Some(snapshot) = self.current(database) {
            return snapshot;
        }
        let _loading = self.loading.lock().await;
        if let Some(snapshot) = self.current(database) {
            return snapshot;
        }
        match tokio::time::timeout(Duration::from_secs(10), CatalogSnapshot::load(target)).await {
            Ok(Ok(snapshot)) => {
                let snapshot = Arc::new(snapshot);
                self.snapshots
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(database.to_owned(), snapshot.clone());
                snapshot
            }
            Ok(Err(e)) => {
                tracing::warn!(%database, error = %e, "cannot read the catalog; not caching for now");
                unknown()
            }
            Err(_) => {
                tracing::warn!(%database, error = %CatalogError::Timeout, "cannot read the catalog; not caching for now");
                unknown()
            }
        }
    }

    /// Forgets `database`'s snapshot (after DDL): the next decision reloads.
    pub fn invalidate(&self, database: &str) {
        self.snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(database);
    }
}
