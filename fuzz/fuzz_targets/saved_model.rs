//! A saved shadow-model file: read it; what reads writes back identically.
//! The body is `etcd_standby_fuzzing::targets::saved_model` (also run by the suite).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| etcd_standby_fuzzing::targets::saved_model(data));
