//! The startup packets a client opens a connection with.
//! The input format is `pgstash::fuzzing::startup`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgstash::fuzzing::startup(data));
