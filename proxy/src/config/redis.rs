//! The Redis store's URL and its TLS: which schemes pgstash accepts (one
//! Redis, Redis Cluster, or Redis behind Sentinel), and the rustls
//! configuration a TLS URL is reached with (`[cache]` `redis_ca`,
//! `redis_cert`, `redis_key`). An ACL user and password travel in the URL
//! (`rediss://user:password@host:port`).
//!
//! TLS to Redis always checks the server's certificate and host name,
//! against `redis_ca` or, without it, the platform's trust store.

use std::sync::Arc;

use tokio_rustls::rustls;

use super::certs::{self, Roots};
use super::{CacheConfig, ConfigError};

/// The URL schemes pgstash accepts, whether each uses TLS, and the
/// deployment it names.
const SCHEMES: [(&str, Tls, Topology); 6] = [
    ("redis", Tls(false), Topology::Single),
    ("rediss", Tls(true), Topology::Single),
    ("redis-cluster", Tls(false), Topology::Cluster),
    ("rediss-cluster", Tls(true), Topology::Cluster),
    ("redis-sentinel", Tls(false), Topology::Sentinel),
    ("rediss-sentinel", Tls(true), Topology::Sentinel),
];

#[derive(Debug, Clone, Copy)]
struct Tls(bool);

/// How the Redis a URL names is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Single,
    /// Redis Cluster; more seed nodes as `node=host:port`.
    Cluster,
    /// The master of a Sentinel service: the URL's host and `node=` are
    /// sentinels, `sentinelServiceName=` the service, and
    /// `sentinelUsername=`/`sentinelPassword=` their credentials if any.
    Sentinel,
}

impl Topology {
    /// The query parameters a URL of this topology may carry.
    fn parameters(self) -> &'static [&'static str] {
        match self {
            Topology::Single => &[],
            Topology::Cluster => &["node"],
            Topology::Sentinel => &[
                "node",
                "sentinelServiceName",
                "sentinelUsername",
                "sentinelPassword",
            ],
        }
    }
}

/// A checked Redis URL and how to reach it.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    /// The URL as given.
    pub url: String,
    /// The URL with the password replaced, for messages.
    pub display: String,
    pub topology: Topology,
    /// Set for the TLS schemes (`rediss…://`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl RedisTarget {
    /// Checks `url` and builds its TLS configuration from `cache`'s files.
    pub fn new(url: &str, cache: &CacheConfig) -> Result<RedisTarget, ConfigError> {
        let parsed = url::Url::parse(url).map_err(|e| ConfigError::Invalid {
            key: "redis",
            reason: format!("not a URL: {e}"),
        })?;
        let mut shown = parsed.clone();
        if parsed.password().is_some() {
            let _ = shown.set_password(Some("****"));
        }
        let display = shown.to_string();
        let invalid = |reason: String| ConfigError::Invalid {
            key: "redis",
            reason: format!("{display}: {reason}"),
        };
        let Some(&(_, Tls(tls), topology)) =
            SCHEMES.iter().find(|(name, ..)| *name == parsed.scheme())
        else {
            let names: Vec<&str> = SCHEMES.iter().map(|(name, ..)| *name).collect();
            return Err(invalid(format!(
                "unsupported scheme {:?} ({})",
                parsed.scheme(),
                names.join(", ")
            )));
        };
        let allowed = topology.parameters();
        for (key, _) in parsed.query_pairs() {
            if !allowed.contains(&key.as_ref()) {
                let hint = match allowed {
                    [] => String::new(),
                    some => format!(" (only {})", some.join(", ")),
                };
                return Err(invalid(format!("unsupported parameter {key:?}{hint}")));
            }
        }
        if topology == Topology::Sentinel
            && !parsed
                .query_pairs()
                .any(|(key, value)| key == "sentinelServiceName" && !value.is_empty())
        {
            return Err(invalid(
                "a Sentinel URL names its service: ?sentinelServiceName=<name>".into(),
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host".into()));
        }
        let tls = if tls {
            Some(Arc::new(client_config(cache)?))
        } else {
            if let Some(key) = cache.tls_file_keys().first() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("{display} is not TLS: use rediss://"),
                });
            }
            None
        };
        Ok(RedisTarget {
            url: url.to_owned(),
            display,
            topology,
            tls,
        })
    }
}

/// Verifies Redis' certificate against `redis_ca` (or the platform's
/// store), and presents `redis_cert` when given.
fn client_config(cache: &CacheConfig) -> Result<rustls::ClientConfig, ConfigError> {
    let invalid = |key: &'static str| move |reason: String| ConfigError::Invalid { key, reason };
    let roots = match &cache.redis_ca {
        Some(path) => certs::root_store(Roots::File(path)).map_err(invalid("cache.redis_ca"))?,
        None => certs::root_store(Roots::System).map_err(invalid("cache.redis_ca"))?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("redis")(e.to_string()))?
        .with_root_certificates(roots);
    match (&cache.redis_cert, &cache.redis_key) {
        (Some(cert), Some(key)) => {
            let cert = certs::certificates(cert).map_err(invalid("cache.redis_cert"))?;
            let key = certs::private_key(key).map_err(invalid("cache.redis_key"))?;
            builder
                .with_client_auth_cert(cert, key)
                .map_err(|e| invalid("cache.redis_key")(e.to_string()))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(invalid("cache.redis_cert")(
            "redis_cert and redis_key go together".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_and_parameters_are_refused() {
        let cache = CacheConfig::default();
        for ok in [
            "redis://127.0.0.1:6379",
            "redis://user:pw@cache:6380/2",
            "redis-cluster://a:7000?node=b:7001",
            "redis-sentinel://s1:26379?sentinelServiceName=main&node=s2:26379",
        ] {
            let target = RedisTarget::new(ok, &cache).unwrap();
            assert!(target.tls.is_none() && !target.display.contains(":pw@"));
        }
        for refused in [
            "http://cache:6379",
            "redis-sentinel://cache:26379",
            "redis-sentinel://cache:26379?sentinelServiceName=",
            "redis-cluster://cache:7000?sentinelServiceName=main",
            "redis+unix:///tmp/redis.sock",
            "redis://cache:6379?timeout=3",
            "redis://user:hunter2@cache:6379?node=x:1",
        ] {
            let err = RedisTarget::new(refused, &cache).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn tls_files_need_a_rediss_url() {
        let cache = CacheConfig {
            redis_ca: Some("/ca.pem".into()),
            ..CacheConfig::default()
        };
        let err = RedisTarget::new("redis://cache:6379", &cache).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "cache.redis_ca",
                    ..
                }
            ),
            "{err}"
        );
        let err = RedisTarget::new("rediss://cache:6379", &cache)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/ca.pem"), "{err}");
    }
}
