//! Micro-benchmarks of what the proxy does to a query text before it can
//! decide anything: fingerprinting (Postgres' scanner), full analysis
//! (Postgres' parser), the analysis cache warm by text and warm by shape,
//! and the literal mask the query log uses to skip both.
//!
//! `cargo bench -p pgstash-rules`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pgstash_rules::{analyze, literal_mask, normalize, AnalysisCache};

const POINT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
const JOIN: &str = "SELECT b.bid, count(*), sum(a.abalance) FROM pgbench_accounts a \
                    JOIN pgbench_branches b ON b.bid = a.bid WHERE a.aid BETWEEN 1000 AND 21000 \
                    AND a.filler <> 'x' GROUP BY b.bid ORDER BY 2 DESC LIMIT 10";

fn texts(c: &mut Criterion) {
    for (name, sql) in [("point", POINT), ("join", JOIN)] {
        let mut group = c.benchmark_group(name);
        group.bench_function("fingerprint (scan, cold)", |b| {
            b.iter(|| normalize(black_box(sql)).map(|n| n.fingerprint))
        });
        group.bench_function("analysis (parse, cold)", |b| {
            b.iter(|| analyze(black_box(sql)))
        });
        let cache = AnalysisCache::new(10_000);
        group.bench_function("analysis cache, warm text", |b| {
            b.iter(|| cache.analyze(black_box(sql)))
        });
        // New literal values each time: the shape is cached, the text is not.
        let cache = AnalysisCache::new(1_000_000);
        let literal = if name == "point" { "48213" } else { "21000" };
        let mut n = 0u64;
        group.bench_function("analysis cache, warm shape", |b| {
            b.iter(|| {
                n += 1;
                let text = sql.replace(literal, &n.to_string());
                cache.analyze(&text)
            })
        });
        group.bench_function("literal mask", |b| b.iter(|| literal_mask(black_box(sql))));
        group.finish();
    }
}

criterion_group!(benches, texts);
criterion_main!(benches);
