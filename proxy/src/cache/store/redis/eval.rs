//! How the scripts every read runs (lookup, fill, lease release) reach
//! Redis: over the store's own connections on one Redis without TLS
//! (`pipe.rs`), through fred everywhere else (Cluster, Sentinel, TLS).

use bytes::Bytes;
use fred::prelude::*;
use fred::types::scripts::Script;

use super::scripts;
use super::RedisStore;
use crate::cache::store::contract::StoreError;

impl RedisStore {
    /// `EVALSHA` of `script` over `keys` then `args`, within the store's
    /// timeout. `client` carries it when fred does, and loads the script
    /// where Redis answers `NOSCRIPT`.
    pub(super) async fn eval(
        &self,
        script: &Script,
        client: &Client,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<Value, StoreError> {
        match &self.pipes {
            Some(pipes) => {
                self.bounded(scripts::run_piped(script, pipes, client, keys, args))
                    .await
            }
            None => {
                let call = || {
                    let keys = keys.iter().map(|k| Key::from(*k)).collect();
                    let args = args.iter().map(|a| Value::Bytes(Bytes::copy_from_slice(a)));
                    (keys, args.collect())
                };
                // Boxed: fred's call state is ~16 KiB, which would size
                // (and be copied with) every caller's future.
                self.bounded(Box::pin(scripts::run::<Value>(script, client, call)))
                    .await
            }
        }
    }
}
