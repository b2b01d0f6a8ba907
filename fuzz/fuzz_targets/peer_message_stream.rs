//! A rafthttp `message` stream body; decoded messages re-encode to themselves.
//! The body is `etcd_standby_fuzzing::targets::peer_message_stream` (also run by the suite).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| etcd_standby_fuzzing::targets::peer_message_stream(data));
