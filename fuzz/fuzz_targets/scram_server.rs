//! SCRAM-SHA-256 with a client: SASLInitialResponse and client-final.
//! The input format is `pgstash::fuzzing::scram_server`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgstash::fuzzing::scram_server(data));
