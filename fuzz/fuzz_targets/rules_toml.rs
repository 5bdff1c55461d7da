//! rules.toml parsing and validation, then rule lookup.
//! The input format is `pgstash::fuzzing::rules_toml`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgstash::fuzzing::rules_toml(data));
