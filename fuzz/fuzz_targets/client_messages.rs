//! Every client message pgstash decodes after startup, and the held requests the cache looks at.
//! The input format is `pgstash::fuzzing::client_messages`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgstash::fuzzing::client_messages(data));
