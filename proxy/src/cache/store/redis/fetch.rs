//! The Redis half of a lookup: the current stamp (epoch and table
//! versions), the entry if it was filled under that stamp, and who fills it
//! when it was not (the fill lease).
//!
//! On one Redis this is one script, one round trip. On Redis Cluster the
//! meta keys and the entry live on different nodes: an `MGET` of the meta
//! slot and the entry's script are sent together and answered in parallel,
//! still one round trip of latency; an entry found stale costs a second
//! call for its lease, on the way to a miss that goes upstream anyway.

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;

use super::layout::{stamp, unframe};
use super::RedisStore;
use crate::cache::store::contract::{Filler, StoreError};

/// What Redis holds for one lookup.
pub struct Fetched {
    /// The epoch and versions read, `epoch.v1.v2…`.
    pub stamp: String,
    /// The answer, when its entry was filled under `stamp`.
    pub value: Option<Bytes>,
    /// The entry's remaining time to live, on a hit.
    pub remaining: Option<Duration>,
    pub filler: Filler,
}

impl RedisStore {
    /// Reads the stamp and the entry of base `hex` over the tables whose
    /// version keys are `version_keys`.
    pub(super) async fn fetch(
        &self,
        hex: &str,
        version_keys: &[String],
    ) -> Result<Fetched, StoreError> {
        let layout = &self.layout;
        let mut keys = Vec::with_capacity(version_keys.len() + 3);
        keys.push(layout.epoch());
        keys.extend_from_slice(version_keys);
        let entry_keys = vec![layout.entry(hex), layout.fill_lease(hex)];
        let args = vec![self.holder.clone(), self.lease_ms.clone()];
        let client = self.pool.next();
        if !self.cluster {
            keys.extend(entry_keys);
            // Every fred call is boxed in a statement of its own: its state
            // is ~16 KiB, which would otherwise size (and be copied with)
            // the caller's — every lookup's, up to the session's.
            let call = Box::pin(
                self.scripts
                    .lookup
                    .evalsha_with_reload::<Value, _, _>(client, keys, args),
            );
            let reply = self.bounded(call).await?;
            return self.decode_whole(reply);
        }
        // One client: the MGET is pipelined (fred writes it and goes on),
        // the entry's script follows at once; their replies come back on
        // the two nodes' connections. Redirections are not followed (see
        // `scripts::builder`), so a pipelined command cannot meet fred's
        // `ASK` handling.
        let meta = Box::pin(client.mget::<Vec<Value>, _>(keys));
        let entry = Box::pin(
            self.scripts
                .entry
                .evalsha_with_reload::<Value, _, _>(client, entry_keys, args),
        );
        let both = async move {
            let (meta, entry) = tokio::join!(meta, entry);
            Ok((meta?, entry?))
        };
        let (meta, entry) = self.bounded(Box::pin(both)).await?;
        let parts: Vec<String> = meta
            .into_iter()
            .map(|v| text(v).unwrap_or_else(|| "0".to_owned()))
            .collect();
        let stamp = stamp(parts.iter().map(String::as_str));
        let mut parts = array(entry)?.into_iter();
        let framed = parts.next().and_then(bytes);
        let second = parts.next();
        if let Some(framed) = framed {
            if let Some(value) = unframe(&stamp, &framed) {
                return Ok(Fetched {
                    stamp,
                    value: Some(value),
                    remaining: second.and_then(millis),
                    filler: Filler::Unclaimed,
                });
            }
            // Stale: filled under older versions. Its lease, for the miss.
            let filler = self.claim(hex).await?;
            return Ok(Fetched {
                stamp,
                value: None,
                remaining: None,
                filler,
            });
        }
        Ok(Fetched {
            stamp,
            value: None,
            remaining: None,
            filler: self.filler(second),
        })
    }

    /// Cluster: takes the fill lease of base `hex` for this instance.
    async fn claim(&self, hex: &str) -> Result<Filler, StoreError> {
        if self.lease_ms.is_empty() {
            return Ok(Filler::Unclaimed);
        }
        let call = Box::pin(self.scripts.claim.evalsha_with_reload::<Value, _, _>(
            self.pool.next(),
            vec![self.layout.fill_lease(hex)],
            vec![self.holder.clone(), self.lease_ms.clone()],
        ));
        let reply = self.bounded(call).await?;
        Ok(self.filler(Some(reply)))
    }

    /// One Redis: `{stamp, framed entry, pttl}` or `{stamp, false, claimed}`.
    fn decode_whole(&self, reply: Value) -> Result<Fetched, StoreError> {
        let mut parts = array(reply)?.into_iter();
        let stamp = parts
            .next()
            .and_then(text)
            .ok_or_else(|| unexpected("no stamp"))?;
        let framed = parts.next().and_then(bytes);
        let third = parts.next();
        match framed {
            Some(framed) => {
                // The script compared the stamps; a reply that does not
                // frame the same stamp is not served.
                let value = unframe(&stamp, &framed).ok_or_else(|| unexpected("entry"))?;
                Ok(Fetched {
                    stamp,
                    value: Some(value),
                    remaining: third.and_then(millis),
                    filler: Filler::Unclaimed,
                })
            }
            None => Ok(Fetched {
                stamp,
                value: None,
                remaining: None,
                filler: self.filler(third),
            }),
        }
    }

    /// A script's claim answer: 1 this instance fills, 0 another does.
    fn filler(&self, claimed: Option<Value>) -> Filler {
        if self.lease_ms.is_empty() {
            return Filler::Unclaimed;
        }
        match claimed {
            Some(Value::Integer(0)) => Filler::Other,
            _ => Filler::Us,
        }
    }
}

fn unexpected(what: &str) -> StoreError {
    StoreError::Backend(format!("unexpected lookup reply ({what})"))
}

fn array(value: Value) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(parts) => Ok(parts),
        _ => Err(unexpected("not an array")),
    }
}

fn bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::Bytes(b) => Some(b),
        Value::String(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        _ => None,
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.to_string()),
        Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Value::Integer(n) => Some(n.to_string()),
        _ => None,
    }
}

fn millis(value: Value) -> Option<Duration> {
    match value {
        Value::Integer(ms) if ms > 0 => Some(Duration::from_millis(ms as u64)),
        _ => None,
    }
}
