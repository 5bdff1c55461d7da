//! `[client]`: what a client connection may cost pgstash — how many there
//! may be, how long each may take to log in, stay idle, hold a transaction
//! open or run one query. Each limit, when hit, answers the client with a
//! SQLSTATE and counts in `pgstash_client_limit_total{limit}`.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// Largest message a client may send before it has authenticated: the
/// startup packet has its own limit (10,000 bytes, as in Postgres); a
/// password or SASL message is capped here, as Postgres caps them
/// (`PG_MAX_AUTH_TOKEN_LENGTH`).
pub const PRE_AUTH_MESSAGE_BYTES: usize = 65_535;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Client connections open at once, logged in or not. One more gets
    /// `53300 sorry, too many clients already`; the others are unaffected.
    pub max_client_conn: usize,
    /// From accept to the end of authentication. A client still not logged
    /// in is disconnected (Postgres' `authentication_timeout`).
    #[serde(with = "humantime_serde")]
    pub login_timeout: Duration,
    /// A logged-in client with no transaction open that sends nothing for
    /// this long is disconnected with `57P05`. 0 (default) is off.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A client inside a transaction that sends nothing for this long is
    /// disconnected with `25P03`, and its server connection closed (Postgres
    /// rolls the transaction back). 0 (default) is off.
    #[serde(with = "humantime_serde")]
    pub idle_transaction_timeout: Duration,
    /// A query still running after this long is cancelled upstream; the
    /// client gets Postgres' `57014` and the connection stays usable. 0
    /// (default) is off.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Server-side prepared statements kept per server connection; beyond
    /// it the least recently used is closed (transaction pooling).
    pub max_prepared_statements: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            max_client_conn: 1000,
            login_timeout: Duration::from_secs(60),
            idle_timeout: Duration::ZERO,
            idle_transaction_timeout: Duration::ZERO,
            query_timeout: Duration::ZERO,
            max_prepared_statements: 200,
        }
    }
}

impl ClientConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        if self.max_client_conn == 0 {
            return Err(invalid("client.max_client_conn", "must be at least 1"));
        }
        if self.login_timeout.is_zero() {
            return Err(invalid("client.login_timeout", "must be positive"));
        }
        if self.max_prepared_statements == 0 {
            return Err(invalid(
                "client.max_prepared_statements",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The session timeouts in force, `None` where off.
    pub fn session_timeouts(&self) -> SessionTimeouts {
        let on = |d: Duration| (!d.is_zero()).then_some(d);
        SessionTimeouts {
            idle: on(self.idle_timeout),
            idle_transaction: on(self.idle_transaction_timeout),
            query: on(self.query_timeout),
        }
    }
}

/// The timeouts a session applies, read once at login.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionTimeouts {
    pub idle: Option<Duration>,
    pub idle_transaction: Option<Duration>,
    pub query: Option<Duration>,
}

impl SessionTimeouts {
    pub fn any(&self) -> bool {
        self.idle.is_some() || self.idle_transaction.is_some() || self.query.is_some()
    }
}
