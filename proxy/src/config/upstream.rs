//! The upstream Postgres address, parsed from a `postgres://` URL: host,
//! port, credentials, database, and the TLS parameters (`upstream_tls.rs`).
//! A parameter pgstash does not act on is an error, never ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use super::upstream_tls::{TlsParams, UpstreamTls};
use super::ConfigError;

/// The query parameters an upstream URL may carry, for error messages.
const PARAMETERS: &str = "host, port, sslmode, sslrootcert, sslcert, sslkey, sslnegotiation";

/// Where the upstream server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamHost {
    Tcp(String),
    /// A socket directory, as `host=/var/run/postgresql` in libpq.
    Unix(PathBuf),
}

/// A parsed `postgres://[user[:password]@]host[:port][/database][?param=value&…]` URL.
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
    /// How connections to it are encrypted (`sslmode` and friends).
    pub tls: UpstreamTls,
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
    /// Parses a URL given on the command line or in the environment: its
    /// file names are relative to the working directory.
    pub fn parse(text: &str) -> Result<Upstream, ConfigError> {
        Upstream::parse_in(text, None)
    }

    /// Parses a URL whose relative file names (`sslrootcert`, `sslcert`,
    /// `sslkey`) are taken from `folder` when given.
    fn parse_in(text: &str, folder: Option<&Path>) -> Result<Upstream, ConfigError> {
        let url = url::Url::parse(text).map_err(|e| ConfigError::Upstream {
            url: "(not shown: it does not parse)".into(),
            reason: e.to_string(),
        })?;
        let mut display = url.clone();
        if url.password().is_some() {
            let _ = display.set_password(Some("****"));
        }
        let display = display.to_string();
        let fail = |reason: &str| ConfigError::Upstream {
            url: display.clone(),
            reason: reason.to_owned(),
        };
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
        let mut tls = TlsParams::default();
        for (key, value) in url.query_pairs() {
            if tls.take(&key, &value).map_err(|e| fail(&e))? {
                continue;
            }
            match &*key {
                "host" => host = value.into_owned(),
                "port" => port = value.parse().map_err(|_| fail("port is not a number"))?,
                "connect_timeout" => {
                    return Err(fail(
                        "connect_timeout is not read from the URL: set [pool] connect_timeout",
                    ))
                }
                "application_name" => {
                    return Err(fail(
                        "application_name is not read from the URL: clients' own \
                         application_name is passed upstream",
                    ))
                }
                other => {
                    return Err(fail(&format!(
                        "unsupported parameter {other:?} (supported: {PARAMETERS})"
                    )))
                }
            }
        }
        let tls = tls.resolve(folder).map_err(|e| fail(&e))?;
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
        Ok(Upstream {
            host,
            port,
            user,
            password,
            database,
            tls,
            display,
        })
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // In a config file, file names are relative to its folder.
        Upstream::parse_in(&text, super::paths::base().as_deref()).map_err(serde::de::Error::custom)
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

    #[test]
    fn tls_parameters_are_read_and_others_refused() {
        use crate::config::upstream_tls::SslMode;
        let u = Upstream::parse("postgres://db/app?sslmode=require").unwrap();
        assert_eq!(u.tls.mode, SslMode::Require);
        assert_eq!(Upstream::default().tls.mode, SslMode::Prefer);
        for refused in [
            "postgres://db/app?sslmode=verify-full",
            "postgres://db/app?sslcompression=1",
            "postgres://db/app?connect_timeout=3",
            "postgres://db/app?application_name=x",
        ] {
            let err = Upstream::parse(refused).unwrap_err().to_string();
            assert!(err.contains(refused), "{err}");
        }
        let err = Upstream::parse("postgres://u:hunter2@db/app?gssencmode=disable")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gssencmode") && !err.contains("hunter2"),
            "{err}"
        );
    }
}
