//! The Redis half of a lookup: the current stamp (epoch and table
//! versions), the entry if it was filled under that stamp, and who fills it
//! when it was not (the fill lease).
//!
//! One script on the node of the entry's group (`layout.rs`), on one Redis
//! as on Cluster (sent straight to that node, `direct.rs`): one round trip,
//! one command, whether it hits, finds the entry stale or finds none.

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;

use super::layout::unframe;
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
    /// Reads the stamp of `group` and the entry of base `hex` over the
    /// tables whose version keys (in that group) are `version_keys`.
    pub(super) async fn fetch(
        &self,
        group: usize,
        hex: &str,
        version_keys: &[String],
    ) -> Result<Fetched, StoreError> {
        let layout = &self.layout;
        let (epoch, entry, lease) = (
            layout.epoch(group),
            layout.entry(hex),
            layout.fill_lease(hex),
        );
        let mut keys: Vec<&[u8]> = Vec::with_capacity(version_keys.len() + 3);
        keys.push(epoch.as_bytes());
        keys.extend(version_keys.iter().map(|k| k.as_bytes()));
        keys.extend([entry.as_bytes(), lease.as_bytes()]);
        let args = [&self.holder[..], &self.lease_ms[..]];
        // Cluster: the group's master, when known (`direct.rs`).
        let pipes = self.pipes_for(group);
        let reply = self.eval(pipes.as_deref(), &self.scripts.lookup, &keys, &args);
        self.decode(reply.await?)
    }

    /// `{stamp, framed entry, pttl}` or `{stamp, false, claimed}`.
    fn decode(&self, reply: Value) -> Result<Fetched, StoreError> {
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
