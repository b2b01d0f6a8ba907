//! A rafthttp `msgappv2` stream body (per-connection implied term/index).
//! The body is `etcd_standby_fuzzing::targets::peer_msgappv2_stream` (also run by the suite).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| etcd_standby_fuzzing::targets::peer_msgappv2_stream(data));
