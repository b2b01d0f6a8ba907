//! Arbitrary bytes as the last WAL segment: every record read and decoded.
//! The body is `etcd_standby_fuzzing::targets::wal_reader` (also run by the suite).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| etcd_standby_fuzzing::targets::wal_reader(data));
