//! Every server message pgstash decodes, and the queue pairing answers with requests.
//! The input format is `pgstash::fuzzing::backend_messages`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgstash::fuzzing::backend_messages(data));
