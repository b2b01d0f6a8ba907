//! An entry payload (first byte: entry type): classification, keys, rendering.
//! The body is `etcd_standby_fuzzing::targets::entry_decode` (also run by the suite).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| etcd_standby_fuzzing::targets::entry_decode(data));
