//! The upstream login: Authentication requests, SCRAM server-first and server-final.
//! The input format is `pgstash::fuzzing::scram_client`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgstash::fuzzing::scram_client(data));
