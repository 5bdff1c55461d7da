//! Whether caching a rule pays, measured while it runs. A rule that does
//! not pay is looked up only for a sample of its keys until it pays again.
//!
//! Looking a read up costs its client the lookup's time `L` on every
//! request; a hit saves the upstream round trip `U` and spares the
//! database a query. A window of lookups pays when either
//! - at least one lookup in [`OFFLOAD_SHARE`] hits: that share of the
//!   rule's queries no longer reaches the database, which is often why it
//!   was marked cacheable, even where a hit saves little time; or
//! - `hits × mean U ≥ Σ L`: the time the hits saved covers the time every
//!   lookup took. Expensive queries pay this way at a low hit ratio; a
//!   slow store needs a higher one than a fast one.
//!
//! A rule whose results are rarely read twice before a write invalidates
//! them, or whose keys are too many to repeat, fails both: every request
//! then pays a store round trip (with Redis: two commands, a lookup and a
//! fill) and gains nothing.
//!
//! Two windows are kept. One covers every lookup while the rule caches
//! (what caching gives now); the other covers a fixed sample of the keys
//! (one in [`SAMPLE`], by the key's base hash), which stays cached in both
//! states, so its entries are as warm as every key's would be with caching
//! always on. A caching rule starts to bypass only when neither pays:
//! - the whole window alone would miss a rule whose keys are warming up:
//!   judged against a warm sample after a bypass, it flapped every ~150 ms
//!   on a uniform read over 1M keys;
//! - the sample alone would miss a rule whose traffic is carried by a few
//!   hot keys, none of them in the sample.
//!
//! While a rule bypasses, only the sampled keys are looked up and filled;
//! the others go straight upstream (path `bypass`, reason `not_paying`).
//! It returns when the sample pays by [`RETURN_MARGIN`], so a hit ratio
//! near the bar does not flip it back and forth.
//!
//! Bypassing is always safe: upstream is the truth, and writes still
//! invalidate whatever the sample (or another instance) filled.
//!
//! # Performance
//! Two or three relaxed atomic adds per lookup, twice that for a sampled
//! one. A window is judged by the one lookup that completes it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus::IntGauge;

use super::key::KeyBase;

/// Sampled lookups judged together (`SAMPLE × WINDOW` = 8,192 requests
/// of the rule): enough that a few slow calls do not decide, few enough
/// to follow a change within seconds of busy traffic.
pub const WINDOW: u64 = 128;

/// Lookups of every key judged together while the rule caches.
pub const ALL_WINDOW: u64 = 512;

/// One key in `SAMPLE` is measured apart, and looked up while bypassing.
/// The sample costs its store calls even then: with Redis on the same two
/// cores as the clients, 1 in 16 cost a whole-miss workload 14% of its
/// throughput.
pub const SAMPLE: u8 = 64;

/// A window in which at least one lookup in `OFFLOAD_SHARE` hits pays.
pub const OFFLOAD_SHARE: u64 = 10;

/// A bypassing rule returns when its sample pays by this margin (one
/// lookup in five hits, or the hits saved twice the lookups' time).
pub const RETURN_MARGIN: u64 = 2;

/// Running totals of one window.
#[derive(Debug, Default)]
struct Meter {
    lookups: AtomicU64,
    hits: AtomicU64,
    lookup_nanos: AtomicU64,
    /// Fills completed in the window, with their upstream time.
    fills: AtomicU64,
    upstream_nanos: AtomicU64,
}

impl Meter {
    /// Counts a lookup; returns the window when this lookup completes one
    /// of `size` (exactly one caller does, however many race).
    fn lookup(&self, spent: Duration, hit: bool, size: u64) -> Option<Window> {
        self.lookup_nanos.fetch_add(nanos(spent), Ordering::Relaxed);
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        (self.lookups.fetch_add(1, Ordering::Relaxed) + 1 == size).then(|| self.take())
    }

    fn fill(&self, upstream: Duration) {
        self.upstream_nanos
            .fetch_add(nanos(upstream), Ordering::Relaxed);
        self.fills.fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self) -> Window {
        Window {
            lookups: self.lookups.swap(0, Ordering::Relaxed),
            hits: self.hits.swap(0, Ordering::Relaxed),
            lookup_nanos: self.lookup_nanos.swap(0, Ordering::Relaxed),
            fills: self.fills.swap(0, Ordering::Relaxed),
            upstream_nanos: self.upstream_nanos.swap(0, Ordering::Relaxed),
        }
    }
}

/// A rule's measurements and its state.
#[derive(Debug)]
pub struct Payoff {
    adaptive: bool,
    /// Every lookup, while the rule caches.
    all: Meter,
    /// Lookups of the sampled keys, in both states.
    sample: Meter,
    /// The verdict of the last complete sample window (true before one).
    sample_pays: AtomicBool,
    bypassing: AtomicBool,
    /// `pgstash_rule_bypassing{rule}`: 1 while the rule does not pay.
    gauge: IntGauge,
}

/// One window's figures, as judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Lookups counted (a coalesced wait for another client's fill is one).
    pub lookups: u64,
    /// Of those, answered from the cache.
    pub hits: u64,
    /// Time all the lookups took.
    pub lookup_nanos: u64,
    /// Fills completed, and the time their requests spent upstream.
    pub fills: u64,
    pub upstream_nanos: u64,
}

impl Window {
    /// Whether enough lookups hit to offload the database, or the
    /// upstream time the hits saved covers the time every lookup cost.
    /// With no fill measured there is no `U`: the window pays if anything
    /// hit (nothing missed, or every miss was coalesced).
    pub fn pays(&self) -> bool {
        self.pays_by(1)
    }

    /// [`Window::pays`] with both bars raised `margin` times.
    pub fn pays_by(&self, margin: u64) -> bool {
        if self.hits * OFFLOAD_SHARE >= self.lookups * margin && self.hits > 0 {
            return true;
        }
        if self.fills == 0 {
            return self.hits > 0;
        }
        let saved =
            u128::from(self.hits) * u128::from(self.upstream_nanos) / u128::from(self.fills);
        saved >= u128::from(self.lookup_nanos) * u128::from(margin)
    }
}

impl Payoff {
    /// `adaptive = false` (the rule's setting) never measures nor bypasses.
    pub fn new(adaptive: bool, gauge: IntGauge) -> Payoff {
        gauge.set(0);
        Payoff {
            adaptive,
            all: Meter::default(),
            sample: Meter::default(),
            sample_pays: AtomicBool::new(true),
            bypassing: AtomicBool::new(false),
            gauge,
        }
    }

    /// The rule's `adaptive` setting this was made under.
    pub fn adaptive(&self) -> bool {
        self.adaptive
    }

    /// Whether a request with key `base` skips the cache now.
    pub fn skips(&self, base: &KeyBase) -> bool {
        self.bypassing.load(Ordering::Relaxed) && !sampled(base)
    }

    /// A lookup of `base` took `spent` and hit (a coalesced wait counts as
    /// a hit) or not.
    pub fn lookup(&self, base: &KeyBase, spent: Duration, hit: bool, rule: &str) {
        if !self.adaptive {
            return;
        }
        if sampled(base) {
            if let Some(window) = self.sample.lookup(spent, hit, WINDOW) {
                self.judge_sample(&window, rule);
            }
        }
        if !self.is_bypassing() {
            if let Some(window) = self.all.lookup(spent, hit, ALL_WINDOW) {
                self.judge_all(&window, rule);
            }
        }
    }

    /// A fill of `base` spent `upstream` in its request's round trip.
    pub fn fill(&self, base: &KeyBase, upstream: Duration) {
        if !self.adaptive {
            return;
        }
        if sampled(base) {
            self.sample.fill(upstream);
        }
        if !self.is_bypassing() {
            self.all.fill(upstream);
        }
    }

    fn judge_sample(&self, window: &Window, rule: &str) {
        self.sample_pays.store(window.pays(), Ordering::Relaxed);
        if self.is_bypassing() && window.pays_by(RETURN_MARGIN) {
            // The whole window starts afresh: what it held is from before.
            self.all.take();
            self.switch(false, window, rule);
        }
    }

    fn judge_all(&self, window: &Window, rule: &str) {
        if !window.pays() && !self.sample_pays.load(Ordering::Relaxed) {
            self.switch(true, window, rule);
        }
    }

    fn switch(&self, bypass: bool, window: &Window, rule: &str) {
        if self.bypassing.swap(bypass, Ordering::Relaxed) == bypass {
            return;
        }
        self.gauge.set(i64::from(bypass));
        let mean = |total: u64, n: u64| Duration::from_nanos(total / n.max(1));
        let (lookup, upstream) = (
            mean(window.lookup_nanos, window.lookups),
            mean(window.upstream_nanos, window.fills),
        );
        let change = if bypass {
            "caching does not pay for this rule: only its key sample is looked up until it does"
        } else {
            "caching pays again for this rule: every key is looked up"
        };
        tracing::info!(
            rule,
            hits = window.hits,
            lookups = window.lookups,
            ?lookup,
            ?upstream,
            sample = SAMPLE,
            "{change}"
        );
    }

    /// Whether the rule bypasses all but its sampled keys now.
    pub fn is_bypassing(&self) -> bool {
        self.bypassing.load(Ordering::Relaxed)
    }
}

/// The fixed sample of keys that is measured apart, and looked up while a
/// rule bypasses.
pub fn sampled(base: &KeyBase) -> bool {
    base.0[0] % SAMPLE == 0
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN: KeyBase = KeyBase([0; 32]);
    const OUT: KeyBase = KeyBase([1; 32]);

    fn payoff() -> Payoff {
        Payoff::new(true, IntGauge::new("g", "g").unwrap())
    }

    /// `n` lookups of `key`: one in `hit_every` hits, each takes
    /// `lookup_us`, each miss's fill spends `upstream_us` upstream.
    fn feed(p: &Payoff, key: &KeyBase, n: u64, hit_every: u64, lookup_us: u64, upstream_us: u64) {
        let (lookup, upstream) = (
            Duration::from_micros(lookup_us),
            Duration::from_micros(upstream_us),
        );
        for i in 1..=n {
            let hit = i % hit_every == 0;
            if !hit {
                p.fill(key, upstream);
            }
            p.lookup(key, lookup, hit, "r");
        }
    }

    /// A sample window and then a whole window with these figures.
    fn windows(p: &Payoff, hit_every: u64, lookup_us: u64, upstream_us: u64) {
        feed(p, &IN, WINDOW, hit_every, lookup_us, upstream_us);
        feed(
            p,
            &OUT,
            ALL_WINDOW - WINDOW,
            hit_every,
            lookup_us,
            upstream_us,
        );
    }

    fn never_hit(p: &Payoff) {
        windows(p, u64::MAX, 100, 300);
        assert!(p.is_bypassing());
    }

    #[test]
    fn rarely_hit_cheap_reads_on_a_slow_store_do_not_pay() {
        let p = payoff();
        // 2% hits, lookup 100 µs, upstream 300 µs: saves 6 µs a lookup.
        feed(&p, &IN, WINDOW, 50, 100, 300);
        assert!(!p.is_bypassing(), "the whole window is not complete yet");
        feed(&p, &OUT, ALL_WINDOW - WINDOW, 50, 100, 300);
        assert!(p.is_bypassing());
        assert_eq!(p.gauge.get(), 1);
    }

    #[test]
    fn hot_keys_outside_the_sample_keep_a_rule_cached() {
        let p = payoff();
        // The sample never hits; the traffic's hot keys, all outside it, do.
        feed(&p, &IN, WINDOW, u64::MAX, 100, 300);
        feed(&p, &OUT, ALL_WINDOW * 2, 2, 100, 300);
        assert!(!p.is_bypassing());
    }

    #[test]
    fn a_warm_sample_keeps_a_rule_whose_keys_are_still_cold_cached() {
        let p = payoff();
        feed(&p, &IN, WINDOW, 2, 100, 300);
        feed(&p, &OUT, ALL_WINDOW * 2, u64::MAX, 100, 300);
        assert!(!p.is_bypassing());
    }

    #[test]
    fn the_same_hit_ratio_pays_for_an_expensive_query_or_a_fast_store() {
        let p = payoff();
        windows(&p, 50, 100, 9000);
        assert!(!p.is_bypassing());
        windows(&p, 50, 2, 300);
        assert!(!p.is_bypassing());
    }

    #[test]
    fn a_fair_share_of_hits_pays_even_when_a_hit_saves_no_time() {
        let p = payoff();
        // Half the lookups hit, but a lookup takes as long as upstream.
        windows(&p, 2, 300, 300);
        assert!(!p.is_bypassing());
        // One in eleven is under the offload share, and saves no time.
        windows(&p, 11, 300, 300);
        assert!(p.is_bypassing());
    }

    #[test]
    fn a_bypassing_rule_returns_only_when_its_sample_pays_twice_over() {
        let p = payoff();
        never_hit(&p);
        // While bypassing only sampled keys are looked up. One in eight
        // hits, and a hit saves no time: enough to stay, not to return.
        feed(&p, &IN, WINDOW, 8, 300, 300);
        assert!(p.is_bypassing());
        feed(&p, &IN, WINDOW, 4, 300, 300);
        assert!(!p.is_bypassing());
        assert_eq!(p.gauge.get(), 0);
        windows(&p, 8, 300, 300);
        assert!(!p.is_bypassing(), "one in eight still pays a caching rule");
    }

    #[test]
    fn only_sampled_keys_are_looked_up_while_bypassing() {
        let p = payoff();
        never_hit(&p);
        let keys: Vec<KeyBase> = (0..=255u8).map(|b| KeyBase([b; 32])).collect();
        let looked_up = keys.iter().filter(|k| !p.skips(k)).count();
        assert_eq!(looked_up, 256 / usize::from(SAMPLE));
        assert!(keys.iter().filter(|k| !p.skips(k)).all(sampled));
    }

    #[test]
    fn a_rule_that_is_not_adaptive_never_bypasses() {
        let p = Payoff::new(false, IntGauge::new("g", "g").unwrap());
        windows(&p, u64::MAX, 100, 300);
        windows(&p, u64::MAX, 100, 300);
        assert!(!p.is_bypassing());
        assert!(!p.skips(&OUT));
    }

    #[test]
    fn lookups_racing_past_a_window_do_not_judge_an_empty_one() {
        let m = Meter::default();
        for _ in 1..WINDOW {
            assert_eq!(m.lookup(Duration::from_micros(1), true, WINDOW), None);
        }
        // Thread A counts the window's last lookup (and will take it); B
        // counts one more before A has taken it: B must not take a second,
        // nearly empty window.
        m.lookups.fetch_add(1, Ordering::Relaxed);
        assert_eq!(m.lookup(Duration::from_micros(1), true, WINDOW), None);
        let w = m.take();
        assert_eq!(w.lookups, WINDOW + 1);
    }

    #[test]
    fn all_hits_pay_and_nothing_measured_does_not() {
        let all_hits = Window {
            lookups: 10,
            hits: 10,
            lookup_nanos: 1_000,
            fills: 0,
            upstream_nanos: 0,
        };
        assert!(all_hits.pays());
        assert!(!Window {
            hits: 0,
            ..all_hits
        }
        .pays());
    }
}
