//! The fuzz targets' bodies. Each takes arbitrary bytes and must end in data
//! or a typed error: a panic (or a failed consistency assertion) is a bug.
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use etcd_standby_bolt::{BoltFile, etcd};
use etcd_standby_decode::render::{RenderOptions, render_entry};
use etcd_standby_decode::{RequestKind, decode_payload, keys};
use etcd_standby_model::SnapshotState;
use etcd_standby_peer::codec::{
    MessageStreamDecoder, MsgAppV2Decoder, MsgAppV2Encoder, encode_message_frame,
};
use etcd_standby_peer::{Message, PeerConfig, PeerIdentity, Transport, VersionInfo};

/// Decoders are limited to this message size (as the transport is).
const LIMIT: u64 = 1 << 20;

/// Arbitrary bytes as the last WAL segment: every record read and decoded.
pub fn wal_reader(data: &[u8]) {
    let files = vec![(
        "0000000000000000-0000000000000000.wal".to_string(),
        Bytes::copy_from_slice(data),
    )];
    let mut reader = etcd_standby_wal::WalReader::from_memory(files);
    while let Ok(Some(rec)) = reader.next_record() {
        let _ = rec.decode();
    }
}

/// An entry payload (first byte: entry type): classification, keys, rendering.
pub fn entry_decode(data: &[u8]) {
    let Some((&t, payload)) = data.split_first() else {
        return;
    };
    let entry_type = i32::from(t % 4);
    let decoded = decode_payload(entry_type, Bytes::copy_from_slice(payload));
    let _ = RequestKind::of(&decoded);
    let _ = keys(&decoded);
    let node = render_entry(entry_type, payload, &decoded, RenderOptions::default());
    let _ = node.to_json().to_string();
    let _ = node.to_text_limited(64);
}

/// A bbolt file: meta pages, every bucket, the page map, etcd's schema.
pub fn bolt_walker(data: &[u8]) {
    let Ok(db) = BoltFile::from_bytes(Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = db.page_map();
    if let Ok(buckets) = db.buckets() {
        for b in &buckets {
            for e in db.iter(b).take(10_000) {
                if e.is_err() {
                    break;
                }
            }
        }
    }
    let _ = etcd::summarize(&db);
    if let Ok(keys) = etcd::live_keys(&db) {
        for k in keys.take(10_000) {
            if k.is_err() {
                break;
            }
        }
    }
    let _ = etcd_standby_bolt::model_state(&db);
}

/// Feeds `data` at once and byte by byte through a decoder; both must give
/// the same messages and the same verdict.
fn same_at_once_and_bytewise<D>(
    data: &[u8],
    new: impl Fn() -> D,
    feed: impl Fn(&mut D, &[u8]),
    next: impl Fn(&mut D) -> Result<Option<Message>, ()>,
) -> Vec<Message> {
    let drain = |d: &mut D, out: &mut Vec<Message>| -> Result<(), ()> {
        loop {
            match next(d)? {
                Some(m) => out.push(m),
                None => return Ok(()),
            }
        }
    };
    let mut whole = new();
    feed(&mut whole, data);
    let mut a = Vec::new();
    let ra = drain(&mut whole, &mut a);
    let mut bytewise = new();
    let mut b = Vec::new();
    let mut rb = Ok(());
    for byte in data {
        feed(&mut bytewise, std::slice::from_ref(byte));
        rb = drain(&mut bytewise, &mut b);
        if rb.is_err() {
            break;
        }
    }
    assert_eq!(ra, rb, "verdict differs when fed byte by byte");
    assert_eq!(a, b, "messages differ when fed byte by byte");
    a
}

/// A rafthttp `message` stream body; decoded messages re-encode to themselves.
pub fn peer_message_stream(data: &[u8]) {
    let msgs = same_at_once_and_bytewise(
        data,
        || MessageStreamDecoder::with_limit(LIMIT),
        |d, b| d.feed(b),
        |d| d.next().map_err(|_| ()),
    );
    for m in &msgs {
        let mut out = BytesMut::new();
        assert!(
            encode_message_frame(m, &mut out).is_ok(),
            "a decoded message re-encodes"
        );
        let mut again = MessageStreamDecoder::new();
        again.feed(&out);
        assert_eq!(again.next().ok().flatten().as_ref(), Some(m));
    }
}

/// A rafthttp `msgappv2` stream body (per-connection implied term/index).
pub fn peer_msgappv2_stream(data: &[u8]) {
    const LOCAL: u64 = 0x6ad828d59d630;
    const REMOTE: u64 = 0xaaa9_1111_2222_3333;
    let msgs = same_at_once_and_bytewise(
        data,
        || MsgAppV2Decoder::with_limit(LOCAL, REMOTE, LIMIT),
        |d, b| d.feed(b),
        |d| d.next().map_err(|_| ()),
    );
    let mut enc = MsgAppV2Encoder::new();
    for m in &msgs {
        let mut out = BytesMut::new();
        let _ = enc.encode(m, &mut out);
    }
}

/// A saved shadow-model file: read it; what reads writes back identically.
pub fn saved_model(data: &[u8]) {
    let Ok(state) = SnapshotState::read_from(&mut &data[..]) else {
        return;
    };
    let mut out = Vec::new();
    assert!(state.write_to(&mut out).is_ok(), "a read model writes");
    let again = SnapshotState::read_from(&mut &out[..]);
    assert_eq!(again.ok().as_ref(), Some(&state), "the model round-trips");
}

/// The member ID of the [`PeerHttp`] server.
pub const PEER_HTTP_MEMBER: u64 = 0x6ad828d59d630;
/// Its cluster ID.
pub const PEER_HTTP_CLUSTER: u64 = 0xcdf8_1a2b_0000_0042;

/// Set by the panic hook when a thread of the server's runtime panics (tokio
/// would otherwise swallow a panicking connection task).
static SERVER_PANICKED: AtomicBool = AtomicBool::new(false);
const SERVER_THREAD: &str = "fuzz-peer-server";

/// The real peer server on loopback; each input is written as one client
/// connection's bytes (HTTP request parsing, routing, header checks,
/// pipeline and snapshot bodies, stream set-up).
pub struct PeerHttp {
    addr: SocketAddr,
    // Dropped before the runtime it runs on.
    _transport: Transport,
    /// Keeps the server's runtime alive.
    _rt: tokio::runtime::Runtime,
}

impl PeerHttp {
    /// Starts the server; received snapshots go under `dir`.
    pub fn start(dir: &Path) -> std::io::Result<PeerHttp> {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if std::thread::current().name() == Some(SERVER_THREAD) {
                    SERVER_PANICKED.store(true, Ordering::SeqCst);
                }
                previous(info);
            }));
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(SERVER_THREAD)
            .enable_all()
            .build()?;
        let cfg = PeerConfig {
            identity: PeerIdentity {
                member_id: PEER_HTTP_MEMBER,
                cluster_id: PEER_HTTP_CLUSTER,
                peer_urls: vec!["http://127.0.0.1:2480".to_string()],
            },
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            server_tls: None,
            client_tls: None,
            snapshot_dir: dir.join("snap"),
            initial_version: VersionInfo {
                server: "3.5.1".to_string(),
                cluster: "3.5.0".to_string(),
            },
            dial_via: Vec::new(),
        };
        let transport = rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::channel(16);
            // Whatever arrives is dropped (a snapshot is then refused).
            tokio::spawn(async move { while rx.recv().await.is_some() {} });
            Transport::start(cfg, tx).await
        });
        let transport = transport.map_err(std::io::Error::other)?;
        Ok(PeerHttp {
            addr: transport.local_addr(),
            _rt: rt,
            _transport: transport,
        })
    }

    /// Sends `data` on a new connection, half-closes, reads the answer for
    /// a moment and returns its start. Panics if the server panicked.
    pub fn run(&self, data: &[u8]) -> Vec<u8> {
        let mut answer = Vec::new();
        SERVER_PANICKED.store(false, Ordering::SeqCst);
        if let Ok(mut c) = std::net::TcpStream::connect(self.addr) {
            // The server answers, or closes on the half-close, at once (give
            // a loaded machine 5 s for that); an accepted stream then stays
            // open: read it for 50 ms only.
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.write_all(data);
            let _ = c.shutdown(std::net::Shutdown::Write);
            let mut sink = [0u8; 4096];
            let mut deadline: Option<std::time::Instant> = None;
            while let Ok(n) = c.read(&mut sink) {
                if answer.len() < sink.len() {
                    answer.extend_from_slice(&sink[..n.min(sink.len() - answer.len())]);
                }
                let now = std::time::Instant::now();
                let end = *deadline.get_or_insert_with(|| {
                    let _ = c.set_read_timeout(Some(Duration::from_millis(50)));
                    now + Duration::from_millis(50)
                });
                if n == 0 || now >= end {
                    break;
                }
            }
        }
        assert!(
            !SERVER_PANICKED.load(Ordering::SeqCst),
            "the peer server panicked on this input"
        );
        answer
    }
}
