//! How the scripts every read and write runs (lookup, fill, lease
//! release, invalidation) reach Redis: over the store's own connections
//! (`pipe/`) on one Redis and for a Cluster's lookups (`direct.rs`),
//! through fred everywhere else (Sentinel, a Cluster's other calls).

use std::sync::Arc;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::scripts::Script;

use super::pipe::Pipes;
use super::scripts;
use super::RedisStore;
use crate::cache::store::contract::StoreError;

impl RedisStore {
    /// The store's own connections for a call over `group`'s keys: its
    /// master's on a Cluster, when `direct.rs` knows it; the one Redis's.
    pub(super) fn pipes_for(&self, group: usize) -> Option<Arc<Pipes>> {
        match &self.direct {
            Some(direct) => direct.pipes(group),
            None => self.pipes.clone(),
        }
    }

    /// `EVALSHA` of `script` over `keys` then `args`, within the store's
    /// timeout: on `pipes` (see [`RedisStore::pipes_for`]), or through
    /// fred's `client` without them. `client` also loads the script where
    /// Redis answers `NOSCRIPT` (a Cluster client loads it on every
    /// master).
    pub(super) async fn eval(
        &self,
        pipes: Option<&Pipes>,
        script: &Script,
        client: &Client,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<Value, StoreError> {
        let reply = match pipes {
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
        };
        // A master that no longer serves the slot: relearn the slots.
        if let (Err(StoreError::Refused(e)), Some(direct)) = (&reply, &self.direct) {
            if scripts::is_redirection(e) {
                direct.redirected();
            }
        }
        reply
    }
}
