//! Arbitrary entry payloads (first byte = entry type): classification,
//! key extraction and rendering must never panic.
#![no_main]
use etcd_standby_decode::render::{RenderOptions, render_entry};
use etcd_standby_decode::{RequestKind, decode_payload, keys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&t, payload)) = data.split_first() else {
        return;
    };
    let entry_type = i32::from(t % 4);
    let decoded = decode_payload(entry_type, bytes::Bytes::copy_from_slice(payload));
    let _ = RequestKind::of(&decoded);
    let _ = keys(&decoded);
    let node = render_entry(entry_type, payload, &decoded, RenderOptions::default());
    let _ = node.to_json().to_string();
    let _ = node.to_text_limited(64);
});
