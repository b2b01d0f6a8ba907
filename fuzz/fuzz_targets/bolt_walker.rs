//! A bbolt file: meta pages, every bucket, the page map, etcd's schema.
//! The body is `etcd_standby_fuzzing::targets::bolt_walker` (also run by the suite).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| etcd_standby_fuzzing::targets::bolt_walker(data));
