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
        // libFuzzer's C main leaves SIGPIPE fatal (a Rust main ignores it,
        // as the daemon does): a reset connection must not kill the run.
        // SAFETY: setting a signal disposition to SIG_IGN before any thread
        // of ours writes to a socket.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let dir = std::env::temp_dir().join(format!("etcd-standby-fuzz-{}", std::process::id()));
        PeerHttp::start(&dir).expect("peer server on loopback")
    });
    server.run(data);
});
