//! Where the Redis store keeps what, and how an entry records the versions
//! it was filled under.
//!
//! Two kinds of keys, so that a Redis Cluster spreads the cache over all its
//! masters while the versions stay consistent:
//! - *meta* keys share the hash tag `{prefix}`, hence one slot: the epoch
//!   (`{prefix}epoch`), one version per table (`{prefix}v:<table>`), the
//!   invalidation channel and the replication leases. One script can read
//!   or bump any of them atomically.
//! - *entry* keys are tagged with the entry's own base hash,
//!   `prefix e:{<base>}`, so entries land on slots all over the cluster.
//!   The entry's fill lease, `prefix f:{<base>}`, shares its slot.
//!
//! An entry is stored under its base alone, its value framed as
//! `<stamp>\n<answer>`, where the stamp is the epoch and table versions its
//! filler's lookup read (`epoch.v1.v2…`). A lookup reads the current stamp
//! and the entry (one script on one Redis, two commands sent together on
//! Cluster) and serves the entry only if the stamps are equal: an entry
//! filled before an invalidation names an older version and is a miss (G1).
//!
//! The *full key* a lookup hands the engine is `{prefix}e:<base>:<stamp>`:
//! one string per (base, versions), which the in-process coalescing and
//! fast mode's local tier key on.

use bytes::Bytes;

use crate::cache::key::{KeyBase, TableKey};

/// Key names under one configured prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `{prefix}`: the hash tag of every meta key.
    tag: String,
    /// The prefix as configured (no braces: the configuration refuses them).
    prefix: String,
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        Layout {
            tag: format!("{{{prefix}}}"),
            prefix: prefix.to_owned(),
        }
    }

    /// `{prefix}`, the hash tag meta keys start with.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn epoch(&self) -> String {
        format!("{}epoch", self.tag)
    }

    pub fn version(&self, table: &TableKey) -> String {
        format!("{}v:{}", self.tag, table.as_str())
    }

    /// Where invalidations and epoch renewals are published.
    pub fn channel(&self) -> String {
        format!("{}inv", self.tag)
    }

    /// `{prefix}e:<base>:`, the full keys of `base` up to their stamp.
    pub fn full_key_prefix(&self, base: &KeyBase) -> String {
        let mut prefix = String::with_capacity(self.tag.len() + 70);
        prefix.push_str(&self.tag);
        prefix.push_str("e:");
        base.push_hex(&mut prefix);
        prefix.push(':');
        prefix
    }

    /// The base's hex digits and the stamp of a full key this layout made.
    pub fn split<'a>(&self, full_key: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = full_key.strip_prefix(self.tag.as_str())?;
        let rest = rest.strip_prefix("e:")?;
        rest.split_once(':')
    }

    /// The Redis key of the entry of base `hex` (its own slot on Cluster).
    pub fn entry(&self, hex: &str) -> String {
        format!("{}e:{{{hex}}}", self.prefix)
    }

    /// The fill lease of base `hex`, in the entry's slot.
    pub fn fill_lease(&self, hex: &str) -> String {
        format!("{}f:{{{hex}}}", self.prefix)
    }
}

/// The stamp of a lookup: the epoch and the versions, in the order read.
pub fn stamp<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut stamp = String::with_capacity(64);
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            stamp.push('.');
        }
        stamp.push_str(part);
    }
    stamp
}

/// The versions a stamp names, after its epoch.
pub fn stamp_versions(stamp: &str) -> (&str, Vec<u64>) {
    let mut parts = stamp.split('.');
    let epoch = parts.next().unwrap_or_default();
    (epoch, parts.map(|v| v.parse().unwrap_or(0)).collect())
}

/// An answer framed with the stamp it was filled under.
pub fn frame(stamp: &str, answer: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(stamp.len() + 1 + answer.len());
    framed.extend_from_slice(stamp.as_bytes());
    framed.push(b'\n');
    framed.extend_from_slice(answer);
    Bytes::from(framed)
}

/// The answer in `framed` if it was filled under `stamp`, else `None` (a
/// stale entry, or one this version of pgstash did not write).
pub fn unframe(stamp: &str, framed: &Bytes) -> Option<Bytes> {
    let header = framed.get(..stamp.len() + 1)?;
    let (name, newline) = header.split_at(stamp.len());
    (name == stamp.as_bytes() && newline == b"\n").then(|| framed.slice(stamp.len() + 1..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_keys_share_one_hash_tag_and_entries_have_their_own() {
        let layout = Layout::new("app:");
        let table = TableKey::new("db", "public.users");
        assert!(layout.epoch().starts_with("{app:}"));
        assert!(layout.version(&table).starts_with("{app:}"));
        assert!(layout.channel().starts_with("{app:}"));
        assert_eq!(layout.entry("ab12"), "app:e:{ab12}");
        assert_eq!(layout.fill_lease("ab12"), "app:f:{ab12}");
    }

    #[test]
    fn a_full_key_splits_into_its_base_and_stamp() {
        let layout = Layout::new("p:");
        let base = KeyBase([7; 32]);
        let key = format!("{}{}", layout.full_key_prefix(&base), "e0.3.4");
        let (hex, stamp) = layout.split(&key).expect("split");
        assert_eq!(hex.len(), 64);
        assert_eq!(stamp, "e0.3.4");
        assert_eq!(stamp_versions(stamp), ("e0", vec![3, 4]));
        assert!(layout.split("other:e:x:y").is_none());
    }

    #[test]
    fn an_entry_is_served_only_under_the_stamp_it_was_filled_under() {
        let framed = frame("ep.1.2", b"rows");
        assert_eq!(
            unframe("ep.1.2", &framed),
            Some(Bytes::from_static(b"rows"))
        );
        assert_eq!(unframe("ep.1.3", &framed), None);
        assert_eq!(unframe("ep.1", &framed), None);
        assert_eq!(unframe("ep.1.2.0", &framed), None);
        assert_eq!(unframe("x", &Bytes::new()), None);
        assert_eq!(stamp(["e", "1", "2"]), "e.1.2");
    }
}
