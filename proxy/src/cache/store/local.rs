//! Fast mode's local tier: entries kept in process in front of Redis, and
//! a mirror of the Redis epoch and table versions that names them.
//!
//! A local entry lives under the same full key as in Redis (base, epoch,
//! one version per table read), so it is reachable only while the mirror
//! holds exactly those versions. The mirror learns versions from Redis
//! replies and from this instance's own invalidations (before the write is
//! acknowledged, so read-your-writes holds on this instance), and follows
//! other instances' invalidations over pub/sub. Versions only grow; the
//! mirror takes the larger of what it holds and what it hears.
//!
//! Whenever a message may have been missed — the subscription is down or
//! being re-established, the message buffer overflowed, the epoch changed —
//! the tier is *reset*: entries and mirror are dropped, and the generation
//! moves on so that Redis replies read before the reset teach nothing.
//! Until the subscription is live again, every lookup goes to Redis; a
//! confirmed SUBSCRIBE resets too, voiding replies that were in flight. As a
//! last bound, no local entry is served longer than `max_age` after it was
//! read from or written to Redis (for a fill: after the fill completed).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use prometheus::IntCounter;

use super::entries::Entries;
use crate::cache::key::TableKey;

/// What the tier knows of Redis' versions.
#[derive(Default)]
struct Mirror {
    epoch: Option<String>,
    /// By group, then by table (`TableKey`): on a Cluster each group of
    /// slots keeps its own versions (see `redis/layout.rs`), which need not
    /// be equal, so a key built from one group's versions never names
    /// another's entry. Empty until a group is first learned.
    versions: Vec<HashMap<String, u64>>,
}

impl Mirror {
    fn raise(&mut self, group: usize, table: &str, version: u64) {
        if self.versions.len() <= group {
            self.versions.resize_with(group + 1, HashMap::new);
        }
        let versions = &mut self.versions[group];
        match versions.get_mut(table) {
            Some(known) => *known = (*known).max(version),
            None => {
                versions.insert(table.to_owned(), version);
            }
        }
    }

    fn version(&self, group: usize, table: &TableKey) -> Option<u64> {
        self.versions.get(group)?.get(table.as_str()).copied()
    }
}

pub struct LocalTier {
    entries: Entries,
    mirror: Mutex<Mirror>,
    /// The subscription is up: messages are arriving.
    live: AtomicBool,
    /// Moves on at every reset.
    generation: AtomicU64,
    max_age: Duration,
    /// What each group's Redis version keys start with (`{tag}v:`), in
    /// group order.
    version_prefixes: Vec<String>,
    counters: LocalCounters,
}

/// The tier's metrics (see `Metrics::local_hits`, `Metrics::local_resets`).
#[derive(Clone)]
pub struct LocalCounters {
    pub hits: IntCounter,
    pub resets: IntCounter,
}

/// A message on the invalidation channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice<'a> {
    /// Tables were bumped: each version key with the version it reached.
    /// `vs <version> <key length> <key>[ <version> <key length> <key>…]`,
    /// one message per invalidation script (a node's groups together), or
    /// `v <version> <key>` (one key: instances before the batched form).
    Versions(Vec<(&'a str, u64)>),
    /// `e <epoch>`: the epoch was replaced; every entry is gone.
    Epoch,
}

impl<'a> Notice<'a> {
    pub fn parse(text: &'a str) -> Option<Notice<'a>> {
        if let Some(mut rest) = text.strip_prefix("vs ") {
            // Lengths, not separators: a key may hold any character.
            let mut versions = Vec::new();
            loop {
                let (version, after) = rest.split_once(' ')?;
                let (length, after) = after.split_once(' ')?;
                let length: usize = length.parse().ok()?;
                versions.push((after.get(..length)?, version.parse().ok()?));
                match after.get(length..)? {
                    "" => return Some(Notice::Versions(versions)),
                    more => rest = more.strip_prefix(' ')?,
                }
            }
        }
        if let Some(rest) = text.strip_prefix("v ") {
            let (version, key) = rest.split_once(' ')?;
            return Some(Notice::Versions(vec![(key, version.parse().ok()?)]));
        }
        text.strip_prefix("e ").map(|_| Notice::Epoch)
    }
}

/// Where a lookup stood when it began, to judge its reply later.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    generation: u64,
}

impl LocalTier {
    pub fn new(
        max_bytes: u64,
        max_age: Duration,
        version_prefixes: Vec<String>,
        counters: LocalCounters,
    ) -> LocalTier {
        LocalTier {
            entries: Entries::new(max_bytes),
            mirror: Mutex::new(Mirror::default()),
            live: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            max_age,
            version_prefixes,
            counters,
        }
    }

    /// `prefix` is the Redis key up to the versions (`{tag}e:<hex>:`) of an
    /// entry of `group`. Returns the full key and the value when every
    /// version is known and the entry is held.
    pub fn get(&self, prefix: &str, group: usize, tables: &[TableKey]) -> Option<(String, Bytes)> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let mut key = String::with_capacity(prefix.len() + 20 + tables.len() * 4);
        key.push_str(prefix);
        {
            let mirror = self.mirror.lock().unwrap_or_else(|e| e.into_inner());
            key.push_str(mirror.epoch.as_deref()?);
            for table in tables {
                let _ = write!(key, ".{}", mirror.version(group, table)?);
            }
        }
        let value = self.entries.get(&key)?;
        self.counters.hits.inc();
        Some((key, value))
    }

    /// Taken before a Redis call whose reply may teach the mirror.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            generation: self.generation.load(Ordering::Acquire),
        }
    }

    /// Whether nothing was reset since `ticket` was taken, while live.
    fn current(&self, ticket: Ticket) -> bool {
        self.live.load(Ordering::Acquire)
            && self.generation.load(Ordering::Acquire) == ticket.generation
    }

    /// A lookup's reply: the epoch and versions it read, and the entry
    /// with the time Redis still keeps it.
    pub fn learn(
        &self,
        ticket: Ticket,
        epoch: &str,
        version_keys: &[String],
        versions: &[u64],
        key: &str,
        entry: Option<(&Bytes, Duration)>,
    ) {
        let mut mirror = self.mirror.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock: a reset takes it too, so nothing learned
        // here survives a reset that began after the check.
        if !self.current(ticket) {
            return;
        }
        match &mirror.epoch {
            Some(known) if known != epoch => {
                // The epoch changed without its message having arrived yet
                // (or the message was lost): start over.
                drop(mirror);
                return self.reset("a reply under another epoch");
            }
            Some(_) => {}
            None => mirror.epoch = Some(epoch.to_owned()),
        }
        self.raise_all(&mut mirror, version_keys, versions);
        drop(mirror);
        if let Some((value, remaining)) = entry {
            self.entries
                .insert(key, value.clone(), remaining.min(self.max_age));
        }
    }

    /// Whether the mirror holds, for one of `tables` in `group`, a version
    /// newer than the one given for it (a fill keyed by those is
    /// unreachable).
    pub fn knows_newer(&self, group: usize, tables: &[TableKey], versions: &[u64]) -> bool {
        let mirror = self.mirror.lock().unwrap_or_else(|e| e.into_inner());
        tables.iter().zip(versions).any(|(table, version)| {
            mirror
                .version(group, table)
                .is_some_and(|known| known > *version)
        })
    }

    /// A fill written to Redis under `key`.
    pub fn store(&self, key: &str, value: Bytes, ttl: Duration) {
        if self.live.load(Ordering::Acquire) {
            self.entries.insert(key, value, ttl.min(self.max_age));
        }
    }

    /// Versions this instance's own invalidation moved tables to. Applied
    /// whatever happened meanwhile: raising a version can only hide
    /// entries, and the write's acknowledgement waits for it (G2).
    pub fn raise(&self, version_keys: &[String], versions: &[u64]) {
        let mut mirror = self.mirror.lock().unwrap_or_else(|e| e.into_inner());
        self.raise_all(&mut mirror, version_keys, versions);
    }

    fn raise_all(&self, mirror: &mut Mirror, version_keys: &[String], versions: &[u64]) {
        for (version_key, version) in version_keys.iter().zip(versions) {
            if let Some((group, table)) = self.split(version_key) {
                mirror.raise(group, table, *version);
            }
        }
    }

    /// The group and table of one of this store's version keys.
    fn split<'k>(&self, version_key: &'k str) -> Option<(usize, &'k str)> {
        self.version_prefixes
            .iter()
            .enumerate()
            .find_map(|(group, p)| Some((group, version_key.strip_prefix(p.as_str())?)))
    }

    /// A message from the invalidation channel.
    pub fn hear(&self, text: &str) {
        match Notice::parse(text) {
            Some(Notice::Versions(versions)) => {
                let mut mirror = self.mirror.lock().unwrap_or_else(|e| e.into_inner());
                for (key, version) in versions {
                    let Some((group, table)) = self.split(key) else {
                        drop(mirror);
                        return self.reset("an invalidation message for another prefix");
                    };
                    mirror.raise(group, table, version);
                }
            }
            Some(Notice::Epoch) => self.reset("the epoch was renewed"),
            None => {
                tracing::warn!(
                    message = text,
                    "unknown message on the invalidation channel"
                );
                self.reset("unknown invalidation message");
            }
        }
    }

    /// Forgets everything: a message may have been missed.
    pub fn reset(&self, why: &str) {
        self.forget();
        self.counters.resets.inc();
        tracing::debug!(why, "fast-mode local tier reset");
    }

    /// Drops entries and mirror, and voids every ticket taken before.
    fn forget(&self) {
        let mut mirror = self.mirror.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        *mirror = Mirror::default();
        drop(mirror);
        self.entries.clear();
    }

    /// The subscription went down (`false`) or was confirmed (`true`).
    /// Both reset: what was learned before a confirmed SUBSCRIBE may predate
    /// messages this instance never got, and so may any reply in flight.
    pub fn set_live(&self, live: bool) {
        if !live {
            self.live.store(false, Ordering::Release);
            self.reset("the invalidation subscription is down");
        } else {
            self.forget();
            self.live.store(true, Ordering::Release);
        }
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// (entries, bytes) held.
    pub fn usage(&self) -> (u64, u64) {
        self.entries.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "{p}e:ab:";

    fn tier() -> LocalTier {
        let counters = LocalCounters {
            hits: IntCounter::new("h", "h").unwrap(),
            resets: IntCounter::new("r", "r").unwrap(),
        };
        let tier = LocalTier::new(
            1 << 20,
            Duration::from_secs(60),
            vec!["{p}v:".into()],
            counters,
        );
        tier.set_live(true);
        tier
    }

    fn users() -> Vec<TableKey> {
        vec![TableKey::new("db", "users")]
    }

    fn version_keys() -> Vec<String> {
        vec!["{p}v:db.users".to_owned()]
    }

    /// A Redis hit under epoch `e0` and users at `version`.
    fn learn_hit(tier: &LocalTier, ticket: Ticket, version: u64) {
        let key = format!("{PREFIX}e0.{version}");
        let value = Bytes::from_static(b"rows");
        tier.learn(
            ticket,
            "e0",
            &version_keys(),
            &[version],
            &key,
            Some((&value, Duration::from_secs(60))),
        );
    }

    #[test]
    fn serves_what_redis_returned_under_the_same_versions() {
        let tier = tier();
        assert!(tier.get(PREFIX, 0, &users()).is_none());
        learn_hit(&tier, tier.ticket(), 3);
        let (key, value) = tier.get(PREFIX, 0, &users()).expect("a local hit");
        assert_eq!(key, "{p}e:ab:e0.3");
        assert_eq!(&value[..], b"rows");
    }

    #[test]
    fn own_invalidation_and_messages_hide_older_entries() {
        let tier = tier();
        learn_hit(&tier, tier.ticket(), 3);
        tier.raise(&version_keys(), &[4]);
        assert!(tier.get(PREFIX, 0, &users()).is_none(), "own write");
        learn_hit(&tier, tier.ticket(), 4);
        assert!(tier.get(PREFIX, 0, &users()).is_some());
        tier.hear("v 5 {p}v:db.users");
        assert!(tier.get(PREFIX, 0, &users()).is_none(), "another's write");
        // A reply read before that message cannot move the version back.
        learn_hit(&tier, tier.ticket(), 4);
        assert!(tier.get(PREFIX, 0, &users()).is_none());
    }

    #[test]
    fn nothing_learned_across_a_reset_or_while_down() {
        let tier = tier();
        let before = tier.ticket();
        tier.reset("test");
        learn_hit(&tier, before, 3);
        assert!(tier.get(PREFIX, 0, &users()).is_none(), "stale ticket");
        learn_hit(&tier, tier.ticket(), 3);
        assert!(tier.get(PREFIX, 0, &users()).is_some());
        tier.set_live(false);
        assert!(tier.get(PREFIX, 0, &users()).is_none(), "down");
        learn_hit(&tier, tier.ticket(), 3);
        let while_down = tier.ticket();
        tier.set_live(true);
        assert!(
            tier.get(PREFIX, 0, &users()).is_none(),
            "learned while down"
        );
        // A reply whose lookup began before the SUBSCRIBE was confirmed may
        // predate a message this instance never got.
        learn_hit(&tier, while_down, 3);
        assert!(
            tier.get(PREFIX, 0, &users()).is_none(),
            "in flight at confirm"
        );
    }

    #[test]
    fn an_epoch_message_drops_everything() {
        let tier = tier();
        learn_hit(&tier, tier.ticket(), 3);
        tier.hear("e 00ff");
        assert!(tier.get(PREFIX, 0, &users()).is_none());
        assert_eq!(tier.usage().0, 0);
    }

    #[test]
    fn parses_messages() {
        assert_eq!(
            Notice::parse("v 12 {p}v:db.a b"),
            Some(Notice::Versions(vec![("{p}v:db.a b", 12)]))
        );
        assert_eq!(
            Notice::parse("vs 12 11 {p}v:db.a b 3 10 {p}v:db.é"),
            Some(Notice::Versions(vec![
                ("{p}v:db.a b", 12),
                ("{p}v:db.é", 3)
            ]))
        );
        assert_eq!(Notice::parse("e 00ff"), Some(Notice::Epoch));
        assert_eq!(Notice::parse("v x {p}v:db.a"), None);
        assert_eq!(Notice::parse("hello"), None);
        // Lengths that overrun, split a character, or leave bytes behind.
        for broken in [
            "vs 12 12 {p}v:db.a",
            "vs 12 9 {p}v:db.é",
            "vs 12 8 {p}v:db.é",
            "vs 12 7 {p}v:db.a",
            "vs 12 9 {p}v:db.a ",
            "vs 12 x {p}v:db.a",
            "vs",
        ] {
            assert_eq!(Notice::parse(broken), None, "{broken}");
        }
    }

    /// On a Cluster two groups' versions of one table can differ (one lost
    /// a bump, then the epoch was renewed): each group's are mirrored apart,
    /// so one group's version never names another group's entry.
    #[test]
    fn groups_with_different_versions_do_not_share_entries() {
        let tier = LocalTier::new(
            1 << 20,
            Duration::from_secs(60),
            vec!["{p}v:".into(), "{p#7}v:".into()],
            LocalCounters {
                hits: IntCounter::new("h", "h").unwrap(),
                resets: IntCounter::new("r", "r").unwrap(),
            },
        );
        tier.set_live(true);
        let (a, b) = (
            vec!["{p}v:db.users".to_owned()],
            vec!["{p#7}v:db.users".to_owned()],
        );
        let value = Bytes::from_static(b"rows");
        // An entry of group b at 6; group a is at 9 (b lost bumps before an
        // epoch renewal).
        let entry = "{p}e:cd:e0.6";
        let ttl = Duration::from_secs(60);
        tier.learn(tier.ticket(), "e0", &b, &[6], entry, Some((&value, ttl)));
        tier.learn(tier.ticket(), "e0", &a, &[9], "{p}e:ef:e0.9", None);
        // a's 9 does not move b's 6, nor the other way round.
        assert!(tier.get("{p}e:cd:", 1, &users()).is_some());
        assert!(tier.knows_newer(0, &users(), &[6]));
        assert!(!tier.knows_newer(1, &users(), &[6]));
        // A write raises every group: b's entry is hidden.
        tier.raise(&b, &[7]);
        assert!(tier.get("{p}e:cd:", 1, &users()).is_none());
    }
}
