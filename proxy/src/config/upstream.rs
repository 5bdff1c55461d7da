//! The upstream Postgres address, parsed from a `postgres://` URL.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::ConfigError;

/// Where the upstream server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamHost {
    Tcp(String),
    /// A socket directory, as `host=/var/run/postgresql` in libpq.
    Unix(PathBuf),
}

/// A parsed `postgres://[user[:password]@]host[:port][/database][?host=/dir]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: UpstreamHost,
    pub port: u16,
    /// User for the control connection (defaults to `postgres`).
    pub user: Option<String>,
    /// Password for the control connection, and the fallback upstream password.
    pub password: Option<String>,
    /// Database for the control connection (defaults to `postgres`).
    pub database: Option<String>,
    /// The URL as given, for messages (password removed).
    pub display: String,
}

impl Default for Upstream {
    #[allow(clippy::expect_used, reason = "a constant URL, parsed in the tests")]
    fn default() -> Self {
        Upstream::parse("postgres://127.0.0.1:5432").expect("the default upstream URL is valid")
    }
}

impl Upstream {
    pub fn parse(text: &str) -> Result<Upstream, ConfigError> {
        let fail = |reason: &str| ConfigError::Upstream {
            url: text.to_owned(),
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(text).map_err(|e| fail(&e.to_string()))?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(fail("scheme must be postgres:// or postgresql://"));
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let mut host = url.host_str().map(decode).unwrap_or_default();
        let mut port = url.port().unwrap_or(5432);
        for (key, value) in url.query_pairs() {
            match &*key {
                "host" => host = value.into_owned(),
                "port" => port = value.parse().map_err(|_| fail("port is not a number"))?,
                "sslmode" | "application_name" | "connect_timeout" => {}
                other => return Err(fail(&format!("unsupported parameter {other:?}"))),
            }
        }
        let host = if host.starts_with('/') {
            UpstreamHost::Unix(PathBuf::from(host))
        } else if host.is_empty() {
            UpstreamHost::Tcp("127.0.0.1".into())
        } else {
            UpstreamHost::Tcp(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            )
        };
        let user = (!url.username().is_empty()).then(|| decode(url.username()));
        let password = url.password().map(decode);
        let database = url
            .path()
            .strip_prefix('/')
            .filter(|d| !d.is_empty())
            .map(decode);
        let mut display = url.clone();
        if password.is_some() {
            let _ = display.set_password(Some("****"));
        }
        Ok(Upstream {
            host,
            port,
            user,
            password,
            database,
            display: display.to_string(),
        })
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Upstream::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Upstream {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Upstream::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_url_with_credentials() {
        let u = Upstream::parse("postgres://app:s%40cret@db.internal:6543/shop").unwrap();
        assert_eq!(u.host, UpstreamHost::Tcp("db.internal".into()));
        assert_eq!(u.port, 6543);
        assert_eq!(u.user.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!(u.database.as_deref(), Some("shop"));
        assert!(!u.display.contains("s%40cret"));
    }

    #[test]
    fn parses_unix_socket_host() {
        let u = Upstream::parse("postgres:///postgres?host=/var/run/postgresql").unwrap();
        assert_eq!(u.host, UpstreamHost::Unix("/var/run/postgresql".into()));
        let u = Upstream::parse("postgresql://%2Ftmp%2Fpg:5433").unwrap();
        assert_eq!(u.host, UpstreamHost::Unix("/tmp/pg".into()));
        assert_eq!(u.port, 5433);
    }

    #[test]
    fn rejects_other_schemes() {
        assert!(Upstream::parse("mysql://localhost").is_err());
    }
}
