//! The Lua scripts the Redis store runs (each one round trip, atomic in
//! Redis), and the client builder with pgstash's TLS, timeouts and
//! reconnect policy. Every script touches the keys of one group only (see
//! `layout.rs`), hence of one slot, so it runs on Redis Cluster.

use std::time::Duration;

use fred::prelude::*;
use fred::types::config::TlsConnector;
use fred::types::scripts::Script;

use crate::cache::store::contract::StoreError;
use crate::config::RedisTarget;

/// Takes the fill lease `KEYS[n]` for this instance (`ARGV[1]`) for
/// `ARGV[2]` ms, unless another instance holds it: 1 if this instance
/// holds it now, 0 if another does. `ARGV[2]` empty: leases are off (1).
const CLAIM: &str = r#"
local function claim(lease)
  if ARGV[2] == '' then
    return 1
  end
  local holder = redis.call('GET', lease)
  if holder == false then
    redis.call('SET', lease, ARGV[1], 'PX', ARGV[2])
    return 1
  end
  if holder == ARGV[1] then
    return 1
  end
  return 0
end
"#;

/// The whole lookup in one script, in the entry's group. KEYS: the epoch,
/// one version key per table, the entry, its fill lease. ARGV: this instance's id, the
/// lease's time to live in ms. Returns `{stamp, framed entry, pttl}` on a
/// hit, `{stamp, false, claimed}` on a miss.
fn lookup_lua() -> String {
    format!(
        "{CLAIM}{}",
        r#"
local n = #KEYS - 2
local parts = {}
for i = 1, n do
  parts[i] = redis.call('GET', KEYS[i]) or '0'
end
local stamp = table.concat(parts, '.')
local value = redis.call('GET', KEYS[n + 1])
if value and string.sub(value, 1, #stamp + 1) == stamp .. '\n' then
  return {stamp, value, redis.call('PTTL', KEYS[n + 1])}
end
return {stamp, false, claim(KEYS[n + 2])}
"#
    )
}

/// KEYS: the entry, its fill lease. ARGV: the framed entry, its time to
/// live in ms, this instance's id. Stores the entry and gives up the lease.
const PUT_LUA: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1
"#;

/// KEYS[1]: a fill lease. ARGV[1]: this instance's id. Gives the lease up
/// if this instance holds it (its fill was abandoned).
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"#;

/// The keys a script works on: `KEYS`, or on a node serving several groups
/// `ARGV[3]…` (see [`across_slots`]).
const KEYS_OF_CALL: &str = r#"
local keys = KEYS
if #ARGV > 2 then
  keys = {unpack(ARGV, 3)}
end
"#;

/// Keys: version keys. ARGV[1]: the invalidation channel; ARGV[2]: `1` to
/// publish the new versions. One message for all the keys of the call (a
/// node's groups on Cluster, where every PUBLISH goes to every node): fast
/// mode mirrors every group's versions (`local.rs` parses it).
const INVALIDATE_LUA: &str = r#"
local versions = {}
local notice = {}
for i = 1, #keys do
  versions[i] = redis.call('INCR', keys[i])
  notice[i] = versions[i] .. ' ' .. #keys[i] .. ' ' .. keys[i]
end
if ARGV[2] == '1' then
  redis.call('PUBLISH', ARGV[1], 'vs ' .. table.concat(notice, ' '))
end
return versions
"#;

/// Keys: epoch keys. ARGV: the new epoch, the invalidation channel (empty:
/// do not publish).
const RENEW_LUA: &str = r#"
for i = 1, #keys do
  redis.call('SET', keys[i], ARGV[1])
end
if ARGV[2] ~= '' then
  redis.call('PUBLISH', ARGV[2], 'e ' .. ARGV[1])
end
return 1
"#;

/// A script over the groups of one node, in one call (Redis Cluster,
/// Redis ≥ 7). Cluster refuses a call whose `KEYS` span slots, so the call
/// declares one key (its node's route) and passes them all after its two
/// arguments; the flag lets the script touch the other slots of its node.
fn across_slots(lua: &str) -> String {
    format!("#!lua flags=allow-cross-slot-keys\n{KEYS_OF_CALL}{lua}")
}

/// The store's scripts, each loaded once per Redis node on first use.
pub struct Scripts {
    pub lookup: Script,
    pub put: Script,
    pub release: Script,
    pub invalidate: Script,
    pub renew: Script,
    pub invalidate_many: Script,
    pub renew_many: Script,
}

impl Default for Scripts {
    fn default() -> Scripts {
        Scripts {
            lookup: Script::from_lua(lookup_lua()),
            put: Script::from_lua(PUT_LUA),
            release: Script::from_lua(RELEASE_LUA),
            invalidate: Script::from_lua(format!("{KEYS_OF_CALL}{INVALIDATE_LUA}")),
            renew: Script::from_lua(format!("{KEYS_OF_CALL}{RENEW_LUA}")),
            invalidate_many: Script::from_lua(across_slots(INVALIDATE_LUA)),
            renew_many: Script::from_lua(across_slots(RENEW_LUA)),
        }
    }
}

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
    let cluster = redis_config.server.is_clustered();
    let mut builder = Builder::from_config(redis_config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            // One write per command: the store's timeout, not fred's
            // retries, bounds a call.
            c.max_command_attempts = 1;
            // Cluster: a redirection is not followed; the call fails (the
            // query goes upstream, an invalidation renews the epoch) and,
            // for `MOVED`, fred first relearns which node serves which
            // slot, so the next call goes to the right node. Following
            // `ASK` (a slot migrating) is what fred cannot do safely: it
            // sends `ASKING` and takes the connection's next reply as its
            // answer, which with other commands in flight is another
            // command's; the connection's replies then go out of step,
            // seen as every later call timing out.
            if cluster {
                c.max_redirections = 0;
            }
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
        // A redirection not followed (see `builder`): Redis answered.
        Ok(Err(e)) if *e.kind() == ErrorKind::Routing && e.details().contains("redirections") => {
            Err(StoreError::Refused(e.to_string()))
        }
        // A plain client's call to a node that does not serve the slot
        // (`direct.rs`): Redis answered.
        Ok(Err(e)) if *e.kind() == ErrorKind::Cluster && is_redirection(e.details()) => {
            Err(StoreError::Refused(e.to_string()))
        }
        // What fred makes of an error reply (`ERR …`, `TRYAGAIN …`,
        // `NOREPLICAS …`, `WRONGTYPE …`): Redis answered.
        Ok(Err(e))
            if matches!(
                e.kind(),
                ErrorKind::Unknown | ErrorKind::InvalidArgument | ErrorKind::InvalidCommand
            ) =>
        {
            Err(StoreError::Refused(e.to_string()))
        }
        Ok(Err(e)) => Err(StoreError::Backend(e.to_string())),
        Err(_) => Err(StoreError::Timeout(timeout)),
    }
}

/// Whether an error names a Cluster redirection (`MOVED`, `ASK`).
pub fn is_redirection(error: &str) -> bool {
    error.contains("MOVED ") || error.contains("ASK ")
}
