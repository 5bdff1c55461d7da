//! How the scripts every read and write runs (lookup, fill, lease
//! release, invalidation, renewal) reach Redis: over the store's own
//! connections (`pipe/`) to one Redis or to a Cluster master
//! (`direct.rs`); through fred where there are none (Sentinel, a master
//! not known yet, a Cluster group asked again after a refusal).

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

    /// The fred client that loads scripts for the store's own connections:
    /// the pool's first, whose view of a Cluster's slots `direct.rs` routes
    /// by and relearns.
    pub(super) fn loader(&self) -> &Client {
        self.pool
            .clients()
            .first()
            .unwrap_or_else(|| self.pool.next())
    }

    /// `EVALSHA` of `script` over `keys` then `args`, within the store's
    /// timeout: on `pipes` (see [`RedisStore::pipes_for`]), or through
    /// fred's pool without them. Where Redis answers `NOSCRIPT` the script
    /// is loaded (by a Cluster client: on every master) and the call made
    /// again.
    pub(super) async fn eval(
        &self,
        pipes: Option<&Pipes>,
        script: &Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<Value, StoreError> {
        let reply = match pipes {
            Some(pipes) => {
                let loader = self.loader();
                self.bounded(scripts::run_piped(script, pipes, loader, keys, args))
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
                let client = self.pool.next();
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
