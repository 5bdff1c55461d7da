//! The SQL analysis, fingerprint and caching-decision path of a query's text.
//! The input format is `pgstash::fuzzing::sql`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgstash::fuzzing::sql(data));
