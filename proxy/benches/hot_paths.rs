//! Micro-benchmarks of pgstash's per-request work, apart from the network:
//! splitting client bytes into frames, building a cache key, and serving an
//! in-process hit (store lookup under current versions, copy to the
//! client's buffer, row count for the query log).
//!
//! `cargo bench -p pgstash`

#![allow(
    clippy::expect_used,
    reason = "a benchmark: a failure should say where"
)]

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pgstash::cache::{entry, KeyBuilder, MemoryStore, TableKey};
use pgstash::net::FrameReader;

fn frame(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

/// What `pgbench -M prepared -S` sends per transaction: Bind, Execute, Sync.
fn prepared_request() -> BytesMut {
    let mut out = BytesMut::new();
    frame(&mut out, b'B', b"\0P0_1\0\0\0\0\x01\0\0\0\x0548213\0\0");
    frame(&mut out, b'E', b"\0\0\0\0\0");
    frame(&mut out, b'S', b"");
    out
}

fn frame_decode(c: &mut Criterion) {
    let one = prepared_request();
    let mut many = BytesMut::new();
    for _ in 0..100 {
        many.extend_from_slice(&one);
    }
    let mut group = c.benchmark_group("frame decode");
    group.throughput(Throughput::Elements(300));
    group.bench_function("100 x Bind+Execute+Sync", |b| {
        b.iter_batched(
            || many.clone(),
            |bytes| {
                let mut reader = FrameReader::frontend(1 << 20);
                reader.prepend(bytes);
                let mut n = 0;
                while let Ok(Some(f)) = reader.next_frame() {
                    n += f.len();
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn key_build(c: &mut Criterion) {
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    let settings = [
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("IntervalStyle", "postgres"),
        ("TimeZone", "UTC"),
        ("extra_float_digits", "1"),
        ("search_path", "\"$user\", public"),
        ("bytea_output", "hex"),
    ];
    c.bench_function("cache key base (extended, 7 settings)", |b| {
        b.iter(|| {
            let mut key = KeyBuilder::new("extended/1");
            key.field(b"bench").field(b"postgres");
            for (name, value) in settings {
                key.field(name.as_bytes()).field(value.as_bytes());
            }
            key.field(black_box(sql).as_bytes())
                .field(b"\0\0")
                .field(b"\0\0\0\x01\0\0\0\x0548213\0\0")
                .field(&[1]);
            key.finish()
        })
    });
}

/// An answer of `rows` rows of ~100 bytes, framed as Postgres sends it.
fn answer(rows: usize) -> Bytes {
    let mut out = BytesMut::new();
    frame(
        &mut out,
        b'T',
        b"\0\x01abalance\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
    );
    for _ in 0..rows {
        let mut body = BytesMut::new();
        body.put_i16(1);
        body.put_i32(93);
        body.put_slice(&[b'x'; 93]);
        frame(&mut out, b'D', &body);
    }
    frame(&mut out, b'C', format!("SELECT {rows}\0").as_bytes());
    out.freeze()
}

fn hit(c: &mut Criterion) {
    let store = MemoryStore::new(64 << 20);
    let tables = [TableKey::new("bench", "pgbench_accounts")];
    let mut group = c.benchmark_group("in-process hit");
    for rows in [1usize, 90, 8700] {
        let base = KeyBuilder::new(&format!("bench {rows}")).finish();
        let miss = store.lookup(&base, &tables);
        let value = answer(rows);
        store.put(&miss.key, value.clone(), Duration::from_secs(600));
        group.throughput(Throughput::Bytes(value.len() as u64));
        group.bench_function(format!("{rows} rows ({} bytes)", value.len()), |b| {
            let mut out = BytesMut::new();
            b.iter(|| {
                out.clear();
                let found = store.lookup(black_box(&base), &tables);
                let value = found.value.expect("the entry was stored");
                out.extend_from_slice(&value);
                entry::rows(&value)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, frame_decode, key_build, hit);
criterion_main!(benches);
