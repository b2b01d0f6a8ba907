//! Arbitrary bytes as one client connection to the real peer server on
//! loopback: HTTP parsing, routing, header checks, pipeline and snapshot
//! bodies, stream set-up. The body is `etcd_standby_fuzzing::targets::PeerHttp`.
#![no_main]
use std::sync::OnceLock;

use etcd_standby_fuzzing::targets::PeerHttp;
use libfuzzer_sys::fuzz_target;

static SERVER: OnceLock<PeerHttp> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let server = SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("etcd-standby-fuzz-{}", std::process::id()));
        PeerHttp::start(&dir).expect("peer server on loopback")
    });
    server.run(data);
});
