//! Logical replication CopyData payloads (XLogData, keepalive, pgoutput).
//! The input format is `pgstash::fuzzing::replication`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgstash::fuzzing::replication(data));
