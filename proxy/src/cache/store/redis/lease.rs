//! Leases in Redis, for work one pgstash instance does for all that share
//! the store: following a database's replication stream. The holder renews
//! its lease (and publishes how current its work is) in one script call; a
//! holder that cannot renew in time has lost it, and the others take over
//! once it expires. What the holder publishes is fenced: a write by an
//! instance that no longer holds the lease does nothing.

use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;

use super::scripts::bounded;
use crate::cache::store::contract::StoreError;

/// KEYS[1]: the lease. ARGV: holder, ttl ms. 1 if taken (or already held).
const TAKE_LUA: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: the lease, the progress key. ARGV: holder, ttl ms, age of the
/// proof in ms (-1: nothing proven). 1 if still held; then the proof's
/// moment (Redis' clock minus its age) is the progress.
const RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local age = tonumber(ARGV[3])
if age >= 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('SET', KEYS[2], now - age, 'PX', 60000)
end
return 1
"#;

/// KEYS[1]: the progress key. Returns {now ms, proven ms or false}.
const PROGRESS_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {now, redis.call('GET', KEYS[1])}
"#;

/// The leases of one store (see [`super::RedisStore::leases`]).
pub struct Leases<'a> {
    pub(super) pool: &'a Pool,
    pub(super) tag: &'a str,
    pub(super) timeout: Duration,
}

impl Leases<'_> {
    fn keys(&self, name: &str) -> (String, String) {
        (
            format!("{}lease:{name}", self.tag),
            format!("{}progress:{name}", self.tag),
        )
    }

    /// Takes the lease `name` for `holder` if nobody holds it.
    pub async fn take(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let (lease, _) = self.keys(name);
        let ttl = ttl.as_millis().to_string();
        let script = Script::from_lua(TAKE_LUA);
        let call = Box::pin(script.evalsha_with_reload::<i64, _, _>(
            self.pool.next(),
            vec![lease],
            vec![holder.to_owned(), ttl],
        ));
        Ok(bounded(self.timeout, call).await? == 1)
    }

    /// Renews `holder`'s lease and publishes that its work is current up to
    /// `proven_age` ago. `false`: the lease is lost.
    pub async fn renew(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        proven_age: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let (lease, progress) = self.keys(name);
        let age = proven_age.map_or(-1, |a| a.as_millis() as i64);
        let script = Script::from_lua(RENEW_LUA);
        let call = Box::pin(script.evalsha_with_reload::<i64, _, _>(
            self.pool.next(),
            vec![lease, progress],
            vec![
                holder.to_owned(),
                ttl.as_millis().to_string(),
                age.to_string(),
            ],
        ));
        Ok(bounded(self.timeout, call).await? == 1)
    }

    /// How long ago the holder's work was last proven current (by Redis'
    /// clock: instances need not agree on the time); `None` if never.
    pub async fn progress(&self, name: &str) -> Result<Option<Duration>, StoreError> {
        let (_, progress) = self.keys(name);
        let script = Script::from_lua(PROGRESS_LUA);
        let call = Box::pin(script.evalsha_with_reload::<Value, _, _>(
            self.pool.next(),
            vec![progress],
            Vec::<String>::new(),
        ));
        let reply = bounded(self.timeout, call).await?;
        let Value::Array(parts) = reply else {
            return Err(StoreError::Backend("unexpected progress reply".into()));
        };
        let number = |v: Option<&Value>| match v {
            Some(Value::Integer(n)) => Some(*n),
            Some(Value::String(s)) => s.parse().ok(),
            Some(Value::Bytes(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        };
        let (Some(now), proven) = (number(parts.first()), number(parts.get(1))) else {
            return Err(StoreError::Backend("unexpected progress reply".into()));
        };
        Ok(proven.map(|p| Duration::from_millis(now.saturating_sub(p).max(0) as u64)))
    }
}
