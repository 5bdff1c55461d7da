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
    /// fred's pool without them. A node that does not have the script
    /// (`NOSCRIPT`: restarted, or new) gets it loaded (by a Cluster client:
    /// on every master) and the call is made again.
    pub(super) async fn eval(
        &self,
        pipes: Option<&Pipes>,
        script: &Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<Value, StoreError> {
        let call = async {
            match self.evalsha(pipes, script, keys, args).await {
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    // Boxed: fred's call state would size every caller's
                    // future.
                    Box::pin(script.load(self.loader())).await?;
                    self.evalsha(pipes, script, keys, args).await
                }
                result => result,
            }
        };
        let reply = self.bounded(call).await;
        // A master that no longer serves the slot: relearn the slots.
        if let (Err(StoreError::Refused(e)), Some(direct)) = (&reply, &self.direct) {
            if scripts::is_redirection(e) {
                direct.redirected();
            }
        }
        reply
    }

    /// One `EVALSHA`. fred's `evalsha_with_reload` is not used: it clones
    /// the keys and arguments on every call for a `NOSCRIPT` retry that
    /// almost never comes, each key promoted to shared storage on the way
    /// (a tenth of a strict-mode hit's instructions).
    async fn evalsha(
        &self,
        pipes: Option<&Pipes>,
        script: &Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<Value, Error> {
        let sha = script.sha1();
        match pipes {
            Some(pipes) => {
                let mut count = itoa::Buffer::new();
                let mut command: Vec<&[u8]> = Vec::with_capacity(3 + keys.len() + args.len());
                command.extend([
                    &b"EVALSHA"[..],
                    sha.as_bytes(),
                    count.format(keys.len()).as_bytes(),
                ]);
                command.extend_from_slice(keys);
                command.extend_from_slice(args);
                pipes.call(&command).await
            }
            None => {
                let keys: Vec<Key> = keys.iter().map(|k| Key::from(*k)).collect();
                let args: Vec<Value> = args
                    .iter()
                    .map(|a| Value::Bytes(Bytes::copy_from_slice(a)))
                    .collect();
                // Boxed: fred's call state is ~16 KiB, which would size
                // (and be copied with) every caller's future.
                Box::pin(self.pool.next().evalsha(sha.clone(), keys, args)).await
            }
        }
    }
}
