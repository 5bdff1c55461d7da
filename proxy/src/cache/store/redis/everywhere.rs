//! What every group must hear (see `layout.rs`): a write's version bumps
//! and an epoch renewal. One script per node carries all the groups that
//! node serves, on a Redis Cluster as on one Redis (one group, one call).
//!
//! The nodes come from fred's cached view of which node serves which slot;
//! a batch's script goes over the store's own connections to its node
//! (`direct.rs`), the groups asked again through fred's cluster client.
//! A node that refuses (a view gone stale, a slot migrating: `ASK`,
//! `TRYAGAIN`, `MOVED`) is asked again for each of its groups alone, routed
//! by that group's own keys (fred relearns the slots from a `MOVED`), for
//! up to [`REFUSED_RETRY`]: a group left without the bump would serve what
//! the write changed once its slot has settled on its new node. What is
//! still refused after that fails the call, and the caller fails closed.

use std::future::Future;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::scripts::Script;

use super::RedisStore;
use crate::cache::key::TableKey;
use crate::cache::store::contract::StoreError;

/// How long groups whose node refused are asked again (a slot migration
/// moves a group's few meta keys within milliseconds).
const REFUSED_RETRY: Duration = Duration::from_millis(300);

/// The pause between two rounds of asking again.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// One group's bump: its version keys and the versions they reached.
pub(super) type GroupBump = Result<(Vec<String>, Vec<u64>), StoreError>;

/// Whether a batch is asked for the first time, or a group again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    First,
    Again,
}

/// What a call over a batch of groups answers, per group.
type PerGroup<T> = Vec<(usize, Result<T, StoreError>)>;

impl RedisStore {
    /// The store's groups, gathered by the node that serves their slot
    /// (each batch in group order, group 0's batch first). One batch per
    /// group when the cluster's layout is not known yet, or on one Redis.
    fn batches(&self) -> Vec<Vec<usize>> {
        let groups = self.layout.groups();
        let state = match groups {
            1 => None,
            // The view `direct.rs` routes by, and relearns after a `MOVED`.
            _ => self.loader().cached_cluster_state(),
        };
        let Some(state) = state else {
            return (0..groups).map(|g| vec![g]).collect();
        };
        let mut batches: Vec<(Option<&fred::types::config::Server>, Vec<usize>)> = Vec::new();
        for group in 0..groups {
            let server = state.get_server(self.layout.slot(group));
            match batches
                .iter_mut()
                .find(|(s, _)| s.is_some() && *s == server)
            {
                Some((_, batch)) => batch.push(group),
                None => batches.push((server, vec![group])),
            }
        }
        batches.into_iter().map(|(_, batch)| batch).collect()
    }

    /// Runs `one` over `keys` with `args`, or for a batch of several
    /// groups `many` (`allow-cross-slot-keys`, Redis ≥ 7: only when it has
    /// to), which takes its keys after `args` and declares only the first.
    /// A first attempt goes over the store's own connections to the batch's
    /// node (on a Cluster, as `direct.rs` routes its first group); a Cluster
    /// group asked again goes through fred's cluster client, which follows
    /// the slots anew after a `MOVED`.
    async fn call<R: FromValue>(
        &self,
        batch: &[usize],
        (one, many): (&Script, &Script),
        (keys, args): (&[String], &[String]),
        attempt: Attempt,
    ) -> Result<R, StoreError> {
        fn bytes(s: &String) -> &[u8] {
            s.as_bytes()
        }
        let (script, declared, argv): (_, Vec<&[u8]>, Vec<&[u8]>) = match batch.len() {
            1 => (
                one,
                keys.iter().map(bytes).collect(),
                args.iter().map(bytes).collect(),
            ),
            _ => (
                many,
                keys.first().map(bytes).into_iter().collect(),
                args.iter().chain(keys).map(bytes).collect(),
            ),
        };
        let pipes = match attempt {
            Attempt::First => batch.first().and_then(|&group| self.pipes_for(group)),
            Attempt::Again => self.pipes.clone(),
        };
        let reply = self
            .eval(pipes.as_deref(), script, &declared, &argv)
            .await?;
        R::from_value(reply).map_err(|e| StoreError::Backend(e.to_string()))
    }

    /// Runs `send` over every group, a batch per node, then asks again
    /// each group whose node refused, alone (see the top of this file).
    /// One result per group, in group order.
    async fn everywhere<T, F, Fut>(&self, send: F) -> Vec<Result<T, StoreError>>
    where
        F: Fn(Vec<usize>, Attempt) -> Fut,
        Fut: Future<Output = PerGroup<T>>,
    {
        let mut results: Vec<Option<Result<T, StoreError>>> =
            (0..self.layout.groups()).map(|_| None).collect();
        let batches = self.batches().into_iter();
        let first = futures_util::future::join_all(batches.map(|b| send(b, Attempt::First))).await;
        for (group, result) in first.into_iter().flatten() {
            results[group] = Some(result);
        }
        let started = Instant::now();
        loop {
            let refused: Vec<usize> = (0..results.len())
                .filter(|&g| matches!(results[g], None | Some(Err(StoreError::Refused(_)))))
                .collect();
            if refused.is_empty() || started.elapsed() >= REFUSED_RETRY {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            let again = refused
                .into_iter()
                .map(|group| send(vec![group], Attempt::Again));
            for (group, result) in futures_util::future::join_all(again)
                .await
                .into_iter()
                .flatten()
            {
                results[group] = Some(result);
            }
        }
        let lost = || Err(StoreError::Backend("no reply for a group".to_owned()));
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(lost))
            .collect()
    }

    /// Bumps `tables` in every group: each group's version keys and the
    /// versions they reached, in group order.
    pub(super) async fn bump_everywhere(&self, tables: &[TableKey]) -> Vec<GroupBump> {
        let per = tables.len();
        self.everywhere(|batch, attempt| async move {
            let keys: Vec<String> = batch
                .iter()
                .flat_map(|&group| tables.iter().map(move |t| self.layout.version(group, t)))
                .collect();
            // Every group's new versions are published, in one message
            // per node: fast-mode instances mirror each group's versions
            // apart (they need not be equal, see `local.rs`).
            let scripts = (&self.scripts.invalidate, &self.scripts.invalidate_many);
            let args = vec![self.channel.clone(), "1".to_owned()];
            match self
                .call::<Vec<i64>>(&batch, scripts, (&keys, &args), attempt)
                .await
            {
                Ok(versions) => {
                    let versions: Vec<u64> =
                        versions.into_iter().map(|v| v.max(0) as u64).collect();
                    let mut out = Vec::with_capacity(batch.len());
                    for (i, &group) in batch.iter().enumerate() {
                        let range = i * per..(i + 1) * per;
                        let bumped = match (keys.get(range.clone()), versions.get(range)) {
                            (Some(k), Some(v)) => Ok((k.to_vec(), v.to_vec())),
                            _ => Err(StoreError::Backend("short invalidation reply".to_owned())),
                        };
                        out.push((group, bumped));
                    }
                    out
                }
                Err(e) => batch.iter().map(|&g| (g, Err(e.clone()))).collect(),
            }
        })
        .await
    }

    /// Sets `epoch` in every group; the first failure if one failed.
    pub(super) async fn set_epoch_everywhere(&self, epoch: &str) -> Result<(), StoreError> {
        let results = self
            .everywhere(|batch, attempt| async move {
                let keys: Vec<String> = batch.iter().map(|&g| self.layout.epoch(g)).collect();
                // Group 0 tells fast-mode instances; one message is enough.
                let channel = match batch.first() {
                    Some(0) => self.channel.clone(),
                    _ => String::new(),
                };
                let scripts = (&self.scripts.renew, &self.scripts.renew_many);
                let args = vec![epoch.to_owned(), channel];
                let result = self
                    .call::<i64>(&batch, scripts, (&keys, &args), attempt)
                    .await;
                batch
                    .iter()
                    .map(|&g| (g, result.clone().map(|_| ())))
                    .collect()
            })
            .await;
        results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
    }
}
