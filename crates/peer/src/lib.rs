//! etcd's rafthttp peer transport (HTTP/1.1 streams, pipeline, snapshot POST) for a learner.
//!
//! A non-voting learner joins a real etcd 3.4/3.5 cluster by speaking etcd's
//! peer protocol. This crate is that protocol and nothing else:
//!
//! * a **server** on our peer URL: `POST /raft` (pipeline), `POST /raft/snapshot`
//!   (streamed to disk), `GET /raft/stream/{msgapp,message}/{from}` (streams the
//!   remote dialled on us: we write link heartbeats and, on `message`, our
//!   outgoing messages), `GET /raft/probing`, `GET /version`, 404 for the rest;
//! * **stream dialers**: for every voting member we dial its `msgapp` and
//!   `message` streams and decode what it sends us;
//! * a **pipeline**: `POST /raft` for outgoing messages when the remote has not
//!   attached a `message` stream;
//! * a sans-IO [`codec`] module with every byte format.
//!
//! Everything received is handed to the daemon through one
//! `tokio::sync::mpsc::Sender<Inbound>` (awaited: a slow daemon slows the
//! streams instead of growing memory).

pub mod codec;
mod io;
mod metrics;
mod net;
mod server;
mod transport;
pub mod util;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use etcd_standby_proto::raftpb::Message;
pub use metrics::{PeerMetrics, StreamLabels};
pub use transport::{DialStatus, PeerStatus, Transport, TransportStatus, TransportTotals};

/// Who we are in the cluster (from the MemberAdd response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Our raft member ID.
    pub member_id: u64,
    /// The cluster ID (checked as a lowercase unpadded hex string on every request).
    pub cluster_id: u64,
    /// Our advertised peer URLs (sent as `X-PeerURLs`; must be what we registered).
    pub peer_urls: Vec<String>,
}

/// The version pair `/version` answers with (`etcdserver`, `etcdcluster`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionInfo {
    /// Server version, e.g. `3.5.1`. Also sent as `X-Server-Version`.
    pub server: String,
    /// Cluster version, e.g. `3.5.0` (or `not_decided`).
    pub cluster: String,
}

/// Everything the transport needs to start.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Our identity.
    pub identity: PeerIdentity,
    /// Bind address (port 0 allowed; see [`Transport::local_addr`]).
    pub listen: SocketAddr,
    /// Server TLS. HTTP/1.1 only: an `h2` ALPN entry is removed.
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
    /// Client TLS for dialling `https` peers. An `h2` ALPN entry is removed.
    pub client_tls: Option<Arc<rustls::ClientConfig>>,
    /// Where incoming snapshot databases are streamed (temporary names), fsynced.
    pub snapshot_dir: PathBuf,
    /// Versions reported until a leader's version is observed.
    pub initial_version: VersionInfo,
    /// Where to open the TCP connection for a member's advertised
    /// `host:port` when it differs (a tunnel, NAT or private link in front
    /// of the primary): advertised authority → authority to connect to.
    /// TLS still verifies the advertised host name, and the `Host` header
    /// carries it, so the member sees what it would from its peers.
    pub dial_via: Vec<(String, String)>,
}

/// What the transport hands to the daemon.
#[derive(Debug)]
pub enum Inbound {
    /// A raft message from a msgapp/message stream or a `POST /raft`.
    Message(Message),
    /// A `POST /raft/snapshot` whose database is already on disk and fsynced.
    /// The leader's request stays open until the daemon accepts or rejects it.
    Snapshot(IncomingSnapshot),
    /// The cluster told us we were removed: 410 on a stream dial, or 403 on one
    /// of our `POST /raft`. Reported once per transport.
    Removed {
        /// what was received (status, body, peer)
        detail: String,
    },
}

/// A received snapshot: the MsgSnap message plus the database file.
///
/// The HTTP handler waits for [`accept`](Self::accept) (→ `204`) or
/// [`reject`](Self::reject) (→ `500`). Dropping it counts as a rejection. On
/// accept the daemon owns `db_path` (rename it into place); on reject or drop
/// the transport deletes the file.
#[derive(Debug)]
pub struct IncomingSnapshot {
    /// The MsgSnap message (its `Snapshot.Data` is etcd's v2 store JSON).
    pub message: Message,
    /// The database file (temporary name in `snapshot_dir`).
    pub db_path: PathBuf,
    /// Its size in bytes.
    pub db_size: u64,
    reply: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

impl IncomingSnapshot {
    pub(crate) fn new(
        message: Message,
        db_path: PathBuf,
        db_size: u64,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    ) -> Self {
        Self {
            message,
            db_path,
            db_size,
            reply: Some(reply),
        }
    }

    /// The snapshot is durably saved and stepped: the leader gets `204`.
    pub fn accept(mut self) {
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(Ok(()));
        }
    }

    /// The snapshot could not be used: the leader gets `500` and retries later.
    pub fn reject(mut self, reason: String) {
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(Err(reason));
        }
    }
}

impl Drop for IncomingSnapshot {
    fn drop(&mut self) {
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(Err("snapshot dropped by the receiver".to_string()));
        }
    }
}

/// Transport errors.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The listen address could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// the address
        addr: SocketAddr,
        /// the OS error
        source: std::io::Error,
    },
    /// A peer URL is not `http(s)://host:port`.
    #[error("invalid peer URL {0:?}")]
    BadUrl(String),
    /// An `https` peer URL but no client TLS configuration.
    #[error("peer URL {0} needs TLS but no client TLS config was given")]
    NoClientTls(String),
    /// TCP connect, TLS handshake or another socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// what was being done
        what: String,
        /// the OS error
        source: std::io::Error,
    },
    /// A step did not complete in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// HTTP protocol error.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// A request could not be built (bad header value).
    #[error("building request: {0}")]
    Request(#[from] http::Error),
    /// The peer answered with an unexpected status.
    #[error("status {status}: {body}")]
    Status {
        /// HTTP status
        status: u16,
        /// (start of the) response body
        body: String,
    },
    /// The stream bytes did not decode.
    #[error("decode: {0}")]
    Codec(#[from] codec::CodecError),
    /// The peer closed the stream.
    #[error("stream closed by peer")]
    Closed,
    /// The daemon's inbound channel is closed.
    #[error("inbound channel closed")]
    InboundClosed,
}
