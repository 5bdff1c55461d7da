//! Where the Redis store keeps what, and how an entry records the versions
//! it was filled under.
//!
//! Keys live in *groups*. A group is one hash tag, hence one slot of a Redis
//! Cluster, and holds a whole copy of the store's meta keys — the epoch
//! (`{tag}epoch`) and one version per table (`{tag}v:<table>`) — beside the
//! entries that belong to it (`{tag}e:<base>`) and their fill leases
//! (`{tag}f:<base>`). An entry belongs to the group its base hash picks, so
//! a lookup reads the stamp and the entry in one script on one node, on
//! Cluster as on one Redis.
//!
//! One Redis (or Sentinel) has one group, the tag `{prefix}`. On Cluster
//! there are [`CLUSTER_GROUPS`]: group 0 is `{prefix}` and the others' tags
//! are picked so that their slots are evenly spaced over the 16384, so any
//! split of the slots between masters spreads the groups (and the entries)
//! between them. A write bumps its tables in every group before its
//! acknowledgement, and an epoch renewal sets the same new epoch in every
//! group (see `invalidations.rs`); group 0 also holds the invalidation
//! channel and the replication leases.
//!
//! An entry's value is framed `<stamp>\n<answer>`, the stamp being the
//! epoch and table versions its filler's lookup read in the entry's group
//! (`epoch.v1.v2…`). A lookup serves it only if the stamps are equal: an
//! entry filled before an invalidation names an older version and is a
//! miss (G1).
//!
//! The *full key* a lookup hands the engine is `{prefix}e:<base>:<stamp>`:
//! one string per (base, versions), which the in-process coalescing and
//! fast mode's local tier key on; the base names the group.

use bytes::Bytes;

use crate::cache::key::{KeyBase, TableKey};

/// Groups on a Redis Cluster: the most masters entries and strict-mode hits
/// spread over, and the number of version bumps a write makes (pipelined,
/// per node). Every instance sharing a store derives the same tags from the
/// prefix and this number.
pub const CLUSTER_GROUPS: usize = 16;

/// Slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// Key names under one configured prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The hash tag of each group, braces included; `{prefix}` first.
    tags: Vec<String>,
    /// The Cluster slot of each group's keys.
    slots: Vec<u16>,
}

impl Layout {
    /// One group (one Redis, or Sentinel), or [`CLUSTER_GROUPS`] on Cluster.
    pub fn new(prefix: &str, cluster: bool) -> Layout {
        let groups = if cluster { CLUSTER_GROUPS } else { 1 };
        let tags = tags(prefix, groups);
        let slots = tags
            .iter()
            .map(|t| fred::util::redis_keyslot(t.as_bytes()))
            .collect();
        Layout { tags, slots }
    }

    /// `{prefix}`, group 0's tag: the channel's and the replication leases'.
    pub fn tag(&self) -> &str {
        &self.tags[0]
    }

    pub fn groups(&self) -> usize {
        self.tags.len()
    }

    /// The Cluster slot of `group`'s keys.
    pub fn slot(&self, group: usize) -> u16 {
        self.slots[group]
    }

    /// Every group's slot, by group.
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }

    /// The group the entry of base `hex` belongs to (from its first four
    /// hex digits: the base is a SHA-256, so groups fill evenly).
    pub fn group_of(&self, hex: &str) -> usize {
        let head = hex.get(..4).and_then(|h| u16::from_str_radix(h, 16).ok());
        usize::from(head.unwrap_or(0)) % self.tags.len()
    }

    pub fn epoch(&self, group: usize) -> String {
        concat(&[&self.tags[group], "epoch"])
    }

    pub fn version(&self, group: usize, table: &TableKey) -> String {
        concat(&[&self.tags[group], "v:", table.as_str()])
    }

    /// `{tag}v:`, what `group`'s version keys start with.
    pub fn version_prefix(&self, group: usize) -> String {
        concat(&[&self.tags[group], "v:"])
    }

    /// Where invalidations and epoch renewals are published.
    pub fn channel(&self) -> String {
        format!("{}inv", self.tags[0])
    }

    /// `{prefix}e:<base>:`, the full keys of `base` up to their stamp.
    pub fn full_key_prefix(&self, base: &KeyBase) -> String {
        let tag = self.tag();
        let mut prefix = String::with_capacity(tag.len() + 70);
        prefix.push_str(tag);
        prefix.push_str("e:");
        base.push_hex(&mut prefix);
        prefix.push(':');
        prefix
    }

    /// The base's hex digits and the stamp of a full key this layout made.
    pub fn split<'a>(&self, full_key: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = full_key.strip_prefix(self.tag())?;
        let rest = rest.strip_prefix("e:")?;
        rest.split_once(':')
    }

    /// The Redis key of the entry of base `hex`, in its group's slot.
    pub fn entry(&self, hex: &str) -> String {
        concat(&[&self.tags[self.group_of(hex)], "e:", hex])
    }

    /// The fill lease of base `hex`, in the entry's slot.
    pub fn fill_lease(&self, hex: &str) -> String {
        concat(&[&self.tags[self.group_of(hex)], "f:", hex])
    }
}

/// `parts` end to end, in one allocation of the exact size. Key names are
/// built on every store call, where `format!` costs several times this.
fn concat(parts: &[&str]) -> String {
    let mut joined = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        joined.push_str(part);
    }
    joined
}

/// The tags of `groups` groups: `{prefix}`, then for each further group the
/// first `{prefix#n}` whose slot falls in that group's share of the slots,
/// counted from `{prefix}`'s own slot. Deterministic: every instance finds
/// the same tags.
fn tags(prefix: &str, groups: usize) -> Vec<String> {
    let first = format!("{{{prefix}}}");
    let origin = usize::from(fred::util::redis_keyslot(first.as_bytes()));
    let share = SLOTS / groups;
    let mut tags = vec![first];
    let mut n = 0u64;
    for group in 1..groups {
        let start = (origin + group * share) % SLOTS;
        let tag = loop {
            let tag = format!("{{{prefix}#{n}}}");
            n += 1;
            let slot = usize::from(fred::util::redis_keyslot(tag.as_bytes()));
            // Any tag is correct; the share only spreads the groups. A few
            // hundred tries find one (CRC16 spreads short strings evenly).
            if (slot + SLOTS - start) % SLOTS < share || n > 1_000_000 {
                break tag;
            }
        };
        tags.push(tag);
    }
    tags
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
    use sha2::Digest;

    use super::*;

    #[test]
    fn one_redis_has_one_group_under_the_prefix() {
        let layout = Layout::new("app:", false);
        let table = TableKey::new("db", "public.users");
        assert_eq!(layout.groups(), 1);
        assert_eq!(layout.epoch(0), "{app:}epoch");
        assert!(layout.version(0, &table).starts_with("{app:}v:"));
        assert_eq!(layout.channel(), "{app:}inv");
        assert_eq!(layout.entry("ab12"), "{app:}e:ab12");
        assert_eq!(layout.fill_lease("ab12"), "{app:}f:ab12");
    }

    #[test]
    fn cluster_groups_have_evenly_spaced_slots_and_entries_spread_over_them() {
        let layout = Layout::new("pgstash:", true);
        assert_eq!(layout.groups(), CLUSTER_GROUPS);
        assert_eq!(layout.tag(), "{pgstash:}");
        let slot = |key: &str| usize::from(fred::util::redis_keyslot(key.as_bytes()));
        let origin = slot(&layout.epoch(0));
        let share = SLOTS / CLUSTER_GROUPS;
        for group in 0..CLUSTER_GROUPS {
            let s = slot(&layout.epoch(group));
            assert_eq!((s + SLOTS - origin) % SLOTS / share, group, "group {group}");
            // Every key of a group is in its slot.
            let table = TableKey::new("db", "public.t");
            assert_eq!(slot(&layout.version(group, &table)), s);
            assert_eq!(usize::from(layout.slot(group)), s);
        }
        let mut per_group = vec![0usize; CLUSTER_GROUPS];
        for i in 0..1600u32 {
            let base = KeyBase(sha2::Sha256::digest(i.to_be_bytes()).into());
            let mut hex = String::new();
            base.push_hex(&mut hex);
            let group = layout.group_of(&hex);
            per_group[group] += 1;
            assert_eq!(slot(&layout.entry(&hex)), slot(&layout.epoch(group)));
            assert_eq!(slot(&layout.fill_lease(&hex)), slot(&layout.epoch(group)));
        }
        assert!(per_group.iter().all(|&n| n > 50), "{per_group:?}");
        // The same prefix gives the same tags (instances agree).
        assert_eq!(Layout::new("pgstash:", true).tags, layout.tags);
    }

    #[test]
    fn a_full_key_splits_into_its_base_and_stamp() {
        let layout = Layout::new("p:", true);
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
    }
}
