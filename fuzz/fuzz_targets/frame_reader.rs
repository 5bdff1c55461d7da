//! The frame reader of client and server connections, bytes arriving in pieces.
//! The input format is `pgstash::fuzzing::frame_reader`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgstash::fuzzing::frame_reader(data));
