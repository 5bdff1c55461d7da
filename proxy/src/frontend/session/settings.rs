//! The client's session settings and what its statements do to them: the
//! settings its server connection must have (carried to every connection it
//! gets, and part of every cache key), whether they must be read back
//! before the connection is released, and whether caching is off for the
//! session (a changed role, session-local objects: guarantee G5).

use pgstash_rules::{statement_reset, EffectsCache, SessionFacts, StatementReset};

use crate::backend::params::capture_sql;
use crate::backend::{ServerConn, SessionParams};
use crate::config::PoolMode;
use crate::Boxed;

/// What a statement text does beyond its transaction.
#[derive(Debug, Clone, Copy)]
pub struct StatementEffects {
    session: pgstash_rules::SessionEffects,
    /// Drops server-side statements in a way pgstash cannot map onto the
    /// client's own (transaction mode; see [`StatementReset::Other`]).
    pub resets_statements: bool,
}

impl StatementEffects {
    /// Leaves state on the server session beyond the transaction (see
    /// `pinning.rs`).
    pub fn binds_session(&self) -> bool {
        self.session.uses_session_objects || self.session.listen
    }
}

/// Whether the cache may serve the session.
///
/// Transitions only go up (`On` → `SessionObjects` → `RoleChanged`): what
/// turned caching off stays true for the rest of the session, and the
/// stronger reason is the one reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Caching {
    On,
    /// Temporary tables, LISTEN, session advisory locks…: the session's
    /// answers may depend on objects only it sees.
    SessionObjects,
    /// SET ROLE / SET SESSION AUTHORIZATION, or settings that could not be
    /// read back: keys would not describe who is asking.
    RoleChanged,
}

pub struct ClientSettings {
    /// The settings the client expects its server connection to have.
    pub params: SessionParams,
    /// The client ran something that may have changed them: they are read
    /// back before the server connection is released.
    read_back: bool,
    caching: Caching,
    mode: PoolMode,
}

impl ClientSettings {
    pub fn new(params: SessionParams, mode: PoolMode) -> ClientSettings {
        ClientSettings {
            params,
            read_back: false,
            caching: Caching::On,
            mode,
        }
    }

    pub fn application_name(&self) -> &str {
        self.params
            .settings
            .get("application_name")
            .map_or("", String::as_str)
    }

    /// What `sql` does to the session. A text the one-pass screen passes
    /// over (almost every one) does nothing, without the two scans.
    pub fn effects_of(&self, sql: &str, known: &EffectsCache) -> StatementEffects {
        if pgstash_rules::screen(sql.as_bytes()).plain() {
            return StatementEffects {
                session: pgstash_rules::SessionEffects::default(),
                resets_statements: false,
            };
        }
        StatementEffects {
            session: known.effects(sql),
            resets_statements: self.mode == PoolMode::Transaction
                && statement_reset(sql) == Some(StatementReset::Other),
        }
    }

    /// Applies a statement's effects to the session.
    pub fn apply(&mut self, effects: StatementEffects) {
        let session = effects.session;
        if session.changes_settings || session.changes_role {
            self.read_back = true;
        }
        if session.changes_role {
            self.caching = self.caching.max(Caching::RoleChanged);
        }
        if session.uses_session_objects || session.listen {
            self.caching = self.caching.max(Caching::SessionObjects);
        }
    }

    /// Whether the settings must be read back now (once).
    pub fn take_read_back(&mut self) -> bool {
        std::mem::take(&mut self.read_back)
    }

    /// Whether caching is on for the session.
    pub fn caching_on(&self) -> bool {
        self.caching == Caching::On
    }

    pub fn role_changed(&self) -> bool {
        self.caching == Caching::RoleChanged
    }

    pub fn facts(&self, in_transaction: bool) -> SessionFacts {
        SessionFacts {
            in_transaction,
            role_changed: self.role_changed(),
        }
    }

    /// Reads the server's session settings into the client's (they travel
    /// with the client to other server connections and into cache keys).
    /// Returns whether they were read; on failure the connection is marked
    /// broken and, in session mode, caching stops (the settings are unknown).
    pub fn read_back<'a>(&'a mut self, server: &'a mut ServerConn) -> Boxed<'a, bool> {
        Box::pin(async move {
            let user = server.user.clone();
            match server.run_internal(&capture_sql(&user)).await {
                Ok(result) => {
                    let mut settings = SessionParams::default();
                    for row in result.rows {
                        if let [Some(name), Some(value)] = row.as_slice() {
                            settings.settings.insert(name.to_lowercase(), value.clone());
                        }
                    }
                    server.applied = settings.clone();
                    self.params = settings;
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read session settings back; discarding the server connection");
                    server.broken = true;
                    if self.mode == PoolMode::Session {
                        self.caching = Caching::RoleChanged;
                    }
                    false
                }
            }
        })
    }
}
