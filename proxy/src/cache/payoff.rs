//! Whether caching a rule pays, measured while it runs. A rule that does
//! not pay is looked up only for a sample of its keys until it pays again.
//!
//! Looking a read up costs its client the lookup's time `L` on every
//! request; a hit saves the upstream round trip `U` and spares the
//! database a query. Over a window of lookups of a fixed sample of the
//! rule's keys (one in [`SAMPLE`], by the key's base hash) a rule pays
//! when either
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
//! While a rule does not pay, only the sampled keys are looked up and
//! filled; the others go straight upstream (path `bypass`, reason
//! `not_paying`). The sample is by key, not by request, and it is cached
//! in both states, so its entries are as warm as every key's would be with
//! caching always on: its hit ratio is the one the whole rule would have
//! once warm, whichever state the rule is in. Judging the whole population
//! instead would compare a warm sample with keys the bypass kept cold, and
//! flap between the states (it did, every ~150 ms, on a uniform read over
//! 1M keys whose sample had warmed up). When the sample pays, every key is
//! looked up again.
//!
//! Bypassing is always safe: upstream is the truth, and writes still
//! invalidate whatever the sample (or another instance) filled.
//!
//! # Performance
//! Nothing for a key outside the sample; two relaxed atomic adds per
//! sampled lookup (three on a hit). The window is judged by the lookup
//! that completes it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus::IntGauge;

use super::key::KeyBase;

/// Sampled lookups judged together (`SAMPLE × WINDOW` = 8,192 requests
/// of the rule): enough that a few slow calls do not decide, few enough
/// to follow a change within seconds of busy traffic.
pub const WINDOW: u64 = 128;

/// One key in `SAMPLE` is measured, and looked up while bypassing. The
/// sample costs its store calls even then: with Redis on the same two
/// cores as the clients, 1 in 16 cost a whole-miss workload 14% of its
/// throughput.
pub const SAMPLE: u8 = 64;

/// A window in which at least one lookup in `OFFLOAD_SHARE` hits pays.
pub const OFFLOAD_SHARE: u64 = 10;

/// A bypassing rule returns when its sample pays by this margin (one
/// lookup in five hits, or the hits saved twice the lookups' time).
pub const RETURN_MARGIN: u64 = 2;

/// A rule's measurements for the current window, and its state.
#[derive(Debug)]
pub struct Payoff {
    adaptive: bool,
    lookups: AtomicU64,
    hits: AtomicU64,
    lookup_nanos: AtomicU64,
    /// Fills completed in the window, with their upstream time.
    fills: AtomicU64,
    upstream_nanos: AtomicU64,
    bypassing: AtomicBool,
    /// `pgstash_rule_bypassing{rule}`: 1 while the rule does not pay.
    gauge: IntGauge,
}

/// One window's figures, as judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub lookups: u64,
    pub hits: u64,
    pub lookup_nanos: u64,
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
    /// `adaptive = false` (the rule's setting) never bypasses.
    pub fn new(adaptive: bool, gauge: IntGauge) -> Payoff {
        Payoff {
            adaptive,
            lookups: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            lookup_nanos: AtomicU64::new(0),
            fills: AtomicU64::new(0),
            upstream_nanos: AtomicU64::new(0),
            bypassing: AtomicBool::new(false),
            gauge,
        }
    }

    /// Whether a request with key `base` skips the cache now.
    pub fn skips(&self, base: &KeyBase) -> bool {
        self.bypassing.load(Ordering::Relaxed) && !sampled(base)
    }

    /// Whether lookups and fills of `base` are measured.
    pub fn measures(&self, base: &KeyBase) -> bool {
        self.adaptive && sampled(base)
    }

    /// A sampled lookup (see [`Payoff::measures`]) took `spent` and hit
    /// (a coalesced wait counts as a hit) or not. Returns the window it
    /// completed, if it completed one.
    pub fn lookup(&self, spent: Duration, hit: bool, rule: &str) -> Option<Window> {
        self.lookup_nanos.fetch_add(nanos(spent), Ordering::Relaxed);
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        if self.lookups.fetch_add(1, Ordering::Relaxed) + 1 < WINDOW {
            return None;
        }
        let window = self.take();
        self.judge(&window, rule);
        Some(window)
    }

    /// A sampled fill's upstream round trip took `upstream`.
    pub fn fill(&self, upstream: Duration) {
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

    fn judge(&self, window: &Window, rule: &str) {
        // Hysteresis: a bypassing rule must pay twice over to return, so a
        // hit ratio near the bar does not flip it back and forth.
        let bypass = if self.is_bypassing() {
            !window.pays_by(RETURN_MARGIN)
        } else {
            !window.pays()
        };
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

    pub fn is_bypassing(&self) -> bool {
        self.bypassing.load(Ordering::Relaxed)
    }
}

/// The fixed sample of keys that is measured, and looked up while a rule
/// bypasses.
pub fn sampled(base: &KeyBase) -> bool {
    base.0[0] % SAMPLE == 0
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payoff() -> Payoff {
        Payoff::new(true, IntGauge::new("g", "g").unwrap())
    }

    /// Lookups until a window is judged: one in `hit_every` hits, each
    /// takes `lookup_us`, each miss's fill `upstream_us` upstream.
    fn run(p: &Payoff, hit_every: u64, lookup_us: u64, upstream_us: u64) -> Window {
        let (lookup, upstream) = (
            Duration::from_micros(lookup_us),
            Duration::from_micros(upstream_us),
        );
        for i in 1.. {
            let hit = i % hit_every == 0;
            if !hit {
                p.fill(upstream);
            }
            if let Some(w) = p.lookup(lookup, hit, "r") {
                return w;
            }
        }
        unreachable!()
    }

    /// A window with no hit at all: the rule bypasses after it.
    fn never_hit(p: &Payoff) {
        run(p, u64::MAX, 100, 300);
        assert!(p.is_bypassing());
    }

    #[test]
    fn rarely_hit_cheap_reads_on_a_slow_store_do_not_pay() {
        let p = payoff();
        // 2% hits, lookup 100 µs, upstream 300 µs: saves 6 µs a lookup.
        let w = run(&p, 50, 100, 300);
        assert_eq!(w.lookups, WINDOW);
        assert!(!w.pays());
        assert!(p.is_bypassing());
        assert_eq!(p.gauge.get(), 1);
    }

    #[test]
    fn the_same_hit_ratio_pays_for_an_expensive_query_or_a_fast_store() {
        let p = payoff();
        run(&p, 50, 100, 9000);
        assert!(!p.is_bypassing());
        run(&p, 50, 2, 300);
        assert!(!p.is_bypassing());
    }

    #[test]
    fn a_fair_share_of_hits_pays_even_when_a_hit_saves_no_time() {
        let p = payoff();
        // Half the lookups hit, but a lookup takes as long as upstream.
        run(&p, 2, 300, 300);
        assert!(!p.is_bypassing());
        // One in eleven is under the offload share, and saves no time.
        run(&p, 11, 300, 300);
        assert!(p.is_bypassing());
    }

    #[test]
    fn a_bypassing_rule_returns_only_when_its_sample_pays_twice_over() {
        let p = payoff();
        never_hit(&p);
        // One in eight hits, and a hit saves no time: enough to stay, not
        // to return.
        run(&p, 8, 300, 300);
        assert!(p.is_bypassing());
        run(&p, 4, 300, 300);
        assert!(!p.is_bypassing());
        run(&p, 8, 300, 300);
        assert!(!p.is_bypassing(), "one in eight still pays a caching rule");
    }

    #[test]
    fn a_bypassing_rule_returns_once_its_sample_pays() {
        let p = payoff();
        never_hit(&p);
        let w = run(&p, 2, 100, 300);
        assert_eq!(w.lookups, WINDOW);
        assert!(!p.is_bypassing());
        assert_eq!(p.gauge.get(), 0);
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
        let keys: Vec<KeyBase> = (0..=255u8).map(|b| KeyBase([b; 32])).collect();
        assert!(keys.iter().all(|k| !p.measures(k) && !p.skips(k)));
        assert!(!p.is_bypassing());
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
