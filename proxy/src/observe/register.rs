//! Defining a metric and registering it, in one call: the constructors the
//! metric set in `metrics.rs` is built with.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[allow(
    clippy::expect_used,
    reason = "metric definitions are constants: a mistake fails at startup, in every test"
)]
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric =
        IntCounterVec::new(Opts::new(name, help), labels).expect("metric definitions are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

#[allow(
    clippy::expect_used,
    reason = "metric definitions are constants: a mistake fails at startup, in every test"
)]
pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("metric definitions are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

#[allow(
    clippy::expect_used,
    reason = "metric definitions are constants: a mistake fails at startup, in every test"
)]
pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("metric definitions are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}
