//! The Lua scripts the Redis store runs (each one round trip, atomic in
//! Redis) and the lookup script's reply, and the client builder with
//! pgstash's TLS, timeouts and reconnect policy.

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::config::TlsConnector;

use crate::cache::store::contract::StoreError;
use crate::config::RedisTarget;

/// KEYS: the epoch, then one version key per table. ARGV[1]: the entry key
/// up to the versions. Returns `{key}` on a miss, `{key, value, pttl}` on a
/// hit.
pub const LOOKUP_LUA: &str = r#"
local parts = {}
for i = 1, #KEYS do
  parts[i] = redis.call('GET', KEYS[i]) or '0'
end
local key = ARGV[1] .. table.concat(parts, '.')
local value = redis.call('GET', key)
if value then
  return {key, value, redis.call('PTTL', key)}
end
return {key}
"#;

/// KEYS: version keys. ARGV[1]: the invalidation channel.
pub const INVALIDATE_LUA: &str = r#"
local versions = {}
for i = 1, #KEYS do
  versions[i] = redis.call('INCR', KEYS[i])
  redis.call('PUBLISH', ARGV[1], 'v ' .. versions[i] .. ' ' .. KEYS[i])
end
return versions
"#;

/// KEYS[1]: the epoch key. ARGV: the new epoch, the invalidation channel.
pub const RENEW_LUA: &str = r#"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'e ' .. ARGV[1])
return 1
"#;

/// A client builder with pgstash's TLS, timeouts and reconnect policy.
pub fn builder(target: &RedisTarget, timeout: Duration) -> Result<Builder, StoreError> {
    let failed = |e: Error| StoreError::Connect(format!("{}: {e}", target.display));
    let mut redis_config = match &target.tls {
        // fred reads host, port, ACL user, password, database and cluster
        // nodes from the URL; given `rediss`, it would also build a TLS
        // client of its own (the platform's roots, no client certificate),
        // so it is handed the plain scheme and pgstash's TLS client.
        Some(tls) => {
            let plain = target.url.replacen("rediss", "redis", 1);
            let mut config = Config::from_url(&plain).map_err(failed)?;
            config.tls =
                Some(TlsConnector::Rustls(tokio_rustls::TlsConnector::from(tls.clone())).into());
            config
        }
        None => Config::from_url(&target.url).map_err(failed)?,
    };
    // Keep reconnecting even when Redis is down at startup.
    redis_config.fail_fast = false;
    let mut builder = Builder::from_config(redis_config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
        })
        // Reconnect forever, backing off from 100 ms to 2 s.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2000, 2));
    Ok(builder)
}

/// `call` within `timeout`: a slow Redis is an error the caller answers by
/// going upstream, never a wait longer than the store's bound.
pub async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if *e.kind() == ErrorKind::Timeout => Err(StoreError::Timeout(timeout)),
        Ok(Err(e)) => Err(StoreError::Backend(e.to_string())),
        Err(_) => Err(StoreError::Timeout(timeout)),
    }
}

/// What the lookup script answered: the full key it built, the entry under
/// it if any, and the entry's remaining time to live.
pub struct LookupReply {
    pub key: String,
    pub value: Option<Bytes>,
    pub remaining: Option<Duration>,
}

impl LookupReply {
    pub fn decode(reply: Value) -> Result<LookupReply, StoreError> {
        let Value::Array(parts) = reply else {
            return Err(StoreError::Backend(
                "unexpected reply to the lookup script".into(),
            ));
        };
        let mut parts = parts.into_iter();
        let key = match parts.next() {
            Some(Value::String(s)) => s.to_string(),
            Some(Value::Bytes(b)) => String::from_utf8_lossy(&b).into_owned(),
            _ => return Err(StoreError::Backend("lookup script returned no key".into())),
        };
        let value = match parts.next() {
            Some(Value::Bytes(b)) => Some(b),
            Some(Value::String(s)) => Some(Bytes::copy_from_slice(s.as_bytes())),
            _ => None,
        };
        let remaining = match parts.next() {
            Some(Value::Integer(ms)) if ms > 0 => Some(Duration::from_millis(ms as u64)),
            _ => None,
        };
        Ok(LookupReply {
            key,
            value,
            remaining,
        })
    }
}
