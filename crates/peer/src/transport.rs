//! The shared transport state and the public [`Transport`] handle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use etcd_standby_decode::Member;
use etcd_standby_proto::raftpb::{Message, MessageType};
use serde::Serialize;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span, warn};

use crate::metrics::PeerMetrics;
use crate::util::{id_hex, major_minor};
use crate::{Inbound, PeerConfig, PeerError, VersionInfo, net, server};

/// Capacity of an attached stream's outgoing queue (etcd: 4096).
pub(crate) const STREAM_QUEUE: usize = 4096;
/// Capacity of a peer's pipeline queue (etcd: 64).
pub(crate) const PIPELINE_QUEUE: usize = 64;
/// Concurrent pipeline POSTs per peer (etcd: 4).
pub(crate) const PIPELINE_WORKERS: usize = 4;

/// The two stream types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum StreamKind {
    MsgApp,
    Message,
}

impl StreamKind {
    /// URL path segment (`/raft/stream/{name}/...`) and metric label.
    pub(crate) fn name(self) -> &'static str {
        match self {
            StreamKind::MsgApp => "msgapp",
            StreamKind::Message => "message",
        }
    }

    fn idx(self) -> usize {
        match self {
            StreamKind::MsgApp => 0,
            StreamKind::Message => 1,
        }
    }
}

/// State of one stream we dial.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DialStatus {
    /// A 200 response is being read right now.
    pub connected: bool,
    /// Dials that failed or ended.
    pub reconnects: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// A stream the remote dialled on us, that we write to.
#[derive(Debug)]
pub(crate) struct Attached {
    pub(crate) generation: u64,
    pub(crate) tx: mpsc::Sender<Message>,
    /// Closes the HTTP connection that carries the stream.
    pub(crate) kill: Arc<Notify>,
}

#[derive(Debug)]
pub(crate) struct PeerEntry {
    pub(crate) id: u64,
    /// Shared with the pipeline workers (they pick up URL changes).
    pub(crate) urls: Arc<Mutex<Vec<String>>>,
    /// In the last `set_members` (otherwise: an unknown sender we only reply to).
    pub(crate) member: bool,
    pub(crate) is_learner: bool,
    pub(crate) dialed: [DialStatus; 2],
    pub(crate) attached: [Option<Attached>; 2],
    pub(crate) dialers: Vec<JoinHandle<()>>,
    pub(crate) pipeline: Option<mpsc::Sender<Message>>,
    pub(crate) pipeline_workers: Vec<JoinHandle<()>>,
    pub(crate) pipeline_failures: u64,
    pub(crate) last_error: Option<String>,
    /// `X-Server-Version` seen on its responses/requests.
    pub(crate) server_version: Option<String>,
    /// Its `/version` answer (polled for the leader).
    pub(crate) version: Option<VersionInfo>,
}

impl PeerEntry {
    fn new(id: u64, urls: Vec<String>) -> Self {
        Self {
            id,
            urls: Arc::new(Mutex::new(urls)),
            member: false,
            is_learner: false,
            dialed: [DialStatus::default(), DialStatus::default()],
            attached: [None, None],
            dialers: Vec::new(),
            pipeline: None,
            pipeline_workers: Vec::new(),
            pipeline_failures: 0,
            last_error: None,
            server_version: None,
            version: None,
        }
    }

    pub(crate) fn dialed_mut(&mut self, kind: StreamKind) -> &mut DialStatus {
        &mut self.dialed[kind.idx()]
    }

    fn stop_dialers(&mut self) {
        for h in self.dialers.drain(..) {
            h.abort();
        }
        for d in &mut self.dialed {
            d.connected = false;
        }
    }

    fn stop_all(&mut self) {
        self.stop_dialers();
        for h in self.pipeline_workers.drain(..) {
            h.abort();
        }
        self.pipeline = None;
        for a in self.attached.iter_mut().filter_map(Option::take) {
            a.kill.notify_one();
        }
    }

    fn urls(&self) -> Vec<String> {
        lock(&self.urls).clone()
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) peers: HashMap<u64, PeerEntry>,
    pub(crate) leader: u64,
    pub(crate) shut_down: bool,
}

/// Everything shared by the server, dialers, pipeline workers and the handle.
pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) id_hex: String,
    pub(crate) cluster_hex: String,
    pub(crate) peer_urls_header: String,
    pub(crate) initial_version: VersionInfo,
    pub(crate) snapshot_dir: PathBuf,
    pub(crate) inbound: mpsc::Sender<Inbound>,
    pub(crate) metrics: PeerMetrics,
    pub(crate) client_tls: Option<tokio_rustls::TlsConnector>,
    /// [`crate::PeerConfig::dial_via`].
    pub(crate) dial_via: HashMap<String, String>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) state: Mutex<State>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) leader_changed: Notify,
    pub(crate) removed_reported: AtomicBool,
    pub(crate) next_generation: AtomicU64,
    pub(crate) snapshot_seq: AtomicU64,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Locks a std mutex, ignoring poisoning (the state stays usable: every
/// critical section leaves it consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The versions we report (`/version`, `X-Server-Version`): the leader's
    /// observed `/version` answer, else its `X-Server-Version` with our initial
    /// cluster version, else the initial pair. The server version is never
    /// reported below the cluster version (a lower one could make a 3.5 leader
    /// downgrade the cluster).
    pub(crate) fn current_version(&self) -> VersionInfo {
        let mut v = {
            let st = self.state();
            let leader = st.peers.get(&st.leader);
            match leader {
                Some(p) if p.version.is_some() => p.version.clone(),
                Some(p) => p.server_version.as_ref().map(|s| VersionInfo {
                    server: s.clone(),
                    cluster: self.initial_version.cluster.clone(),
                }),
                None => None,
            }
        }
        .unwrap_or_else(|| self.initial_version.clone());
        if major_minor(&v.server).is_none() {
            v.server = self.initial_version.server.clone();
        }
        if let (Some(s), Some(c)) = (major_minor(&v.server), major_minor(&v.cluster))
            && s < c
        {
            v.server = v.cluster.clone();
        }
        v
    }

    pub(crate) fn with_peer<R>(&self, id: u64, f: impl FnOnce(&mut PeerEntry) -> R) -> Option<R> {
        self.state().peers.get_mut(&id).map(f)
    }

    /// Makes sure an unknown sender can be replied to (pipeline to the URLs it
    /// advertised in `X-PeerURLs`), like etcd's `AddRemote`.
    pub(crate) fn note_sender(&self, id: u64, urls: &[String], server_version: Option<&str>) {
        if id == 0 || id == self.id {
            return;
        }
        let mut st = self.state();
        if st.shut_down {
            return;
        }
        let e = st.peers.entry(id).or_insert_with(|| {
            warn!(peer = %id_hex(id), ?urls, "request from a sender that is not a known member; accepting it");
            PeerEntry::new(id, urls.to_vec())
        });
        if !e.member && !urls.is_empty() {
            let mut u = lock(&e.urls);
            if *u != urls {
                *u = urls.to_vec();
            }
        }
        if let Some(v) = server_version {
            e.server_version = Some(v.to_string());
        }
    }

    /// Attaches a stream the remote dialled on us; replaces (and closes) the old one.
    /// Returns the generation the body's guard must present on detach.
    pub(crate) fn attach(
        &self,
        from: u64,
        kind: StreamKind,
        tx: mpsc::Sender<Message>,
        kill: Arc<Notify>,
    ) -> Option<u64> {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let mut st = self.state();
        if st.shut_down {
            return None;
        }
        let e = st
            .peers
            .entry(from)
            .or_insert_with(|| PeerEntry::new(from, Vec::new()));
        if let Some(old) = e.attached[kind.idx()].replace(Attached {
            generation,
            tx,
            kill,
        }) {
            old.kill.notify_one();
        }
        Some(generation)
    }

    pub(crate) fn detach(&self, from: u64, kind: StreamKind, generation: u64) {
        let mut st = self.state();
        if let Some(e) = st.peers.get_mut(&from)
            && e.attached[kind.idx()]
                .as_ref()
                .is_some_and(|a| a.generation == generation)
        {
            e.attached[kind.idx()] = None;
            info!(peer = %id_hex(from), stream = kind.name(), "stream dialled by peer detached");
        }
    }

    /// Reports removal to the daemon once.
    pub(crate) async fn report_removed(&self, detail: String) {
        if self.removed_reported.swap(true, Ordering::SeqCst) {
            warn!(%detail, "removal signal received again");
            return;
        }
        warn!(%detail, "this member was removed from the cluster");
        let _ = self.inbound.send(Inbound::Removed { detail }).await;
    }

    /// Resolves once shutdown has begun.
    pub(crate) async fn shut_down(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn spawn_dialers(self: &Arc<Self>, e: &mut PeerEntry) {
        e.stop_dialers();
        if e.is_learner {
            return;
        }
        let urls = e.urls();
        for kind in [StreamKind::MsgApp, StreamKind::Message] {
            let span = info_span!("peer_stream", member = %self.id_hex, peer = %id_hex(e.id), stream = kind.name());
            let fut = net::run_dialer(self.clone(), e.id, kind, urls.clone()).instrument(span);
            e.dialers.push(self.runtime.spawn(fut));
        }
    }

    fn pipeline_sender(self: &Arc<Self>, e: &mut PeerEntry) -> mpsc::Sender<Message> {
        if let Some(tx) = &e.pipeline {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(PIPELINE_QUEUE);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..PIPELINE_WORKERS {
            let span = info_span!("peer_pipeline", member = %self.id_hex, peer = %id_hex(e.id));
            let fut = net::run_pipeline_worker(self.clone(), e.id, e.urls.clone(), rx.clone())
                .instrument(span);
            e.pipeline_workers.push(self.runtime.spawn(fut));
        }
        e.pipeline = Some(tx.clone());
        tx
    }
}

/// Cheap, cloneable handle to a running transport.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("member_id", &self.inner.id_hex)
            .field("listen", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

/// Per-peer view for `status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerStatus {
    /// Member ID.
    pub id: u64,
    /// Member ID as on the wire (lowercase hex).
    pub id_hex: String,
    /// Peer URLs in use.
    pub urls: Vec<String>,
    /// In the current member list (false: an unknown sender we accepted).
    pub member: bool,
    /// A learner (not dialled).
    pub is_learner: bool,
    /// The msgapp stream we dial on it.
    pub msgapp_dialed: DialStatus,
    /// The message stream we dial on it.
    pub message_dialed: DialStatus,
    /// It has dialled our msgapp stream.
    pub msgapp_attached: bool,
    /// It has dialled our message stream (our messages to it go there).
    pub message_attached: bool,
    /// Failed pipeline POSTs.
    pub pipeline_failures: u64,
    /// Last error on any path to this peer.
    pub last_error: Option<String>,
    /// Dials that failed or ended (both streams).
    pub reconnects: u64,
    /// Its `X-Server-Version`, when seen.
    pub server_version: Option<String>,
}

/// Transport-wide totals for `status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TransportTotals {
    /// Raft messages received (all paths).
    pub messages_received: u64,
    /// Raft messages sent (all paths).
    pub messages_sent: u64,
    /// Body bytes received.
    pub bytes_received: u64,
    /// Outgoing messages dropped.
    pub send_dropped: u64,
    /// Stream reconnects.
    pub stream_reconnects: u64,
    /// Snapshots received.
    pub snapshots_received: u64,
}

/// A serialisable snapshot of the transport's state.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TransportStatus {
    /// Our member ID (hex).
    pub member_id: String,
    /// The address we listen on.
    pub listen: String,
    /// The leader set by [`Transport::set_leader`] (0 = unknown).
    pub leader: u64,
    /// The versions `/version` reports now.
    pub version: VersionInfo,
    /// Peers, sorted by ID.
    pub peers: Vec<PeerStatus>,
    /// Totals.
    pub totals: TransportTotals,
}

fn strip_h2(alpn: &mut Vec<Vec<u8>>) {
    alpn.retain(|p| p.as_slice() != b"h2");
}

impl Transport {
    /// Binds the listener, starts serving, and starts the leader-version monitor.
    /// Dialers start with [`set_members`](Self::set_members).
    pub async fn start(
        cfg: PeerConfig,
        inbound: mpsc::Sender<Inbound>,
    ) -> Result<Transport, PeerError> {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| PeerError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| PeerError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let acceptor = cfg.server_tls.map(|c| {
            let mut c = (*c).clone();
            strip_h2(&mut c.alpn_protocols);
            tokio_rustls::TlsAcceptor::from(Arc::new(c))
        });
        let client_tls = cfg.client_tls.map(|c| {
            let mut c = (*c).clone();
            strip_h2(&mut c.alpn_protocols);
            tokio_rustls::TlsConnector::from(Arc::new(c))
        });
        let (shutdown, _) = watch::channel(false);
        let id = cfg.identity.member_id;
        let inner = Arc::new(Inner {
            id,
            id_hex: id_hex(id),
            cluster_hex: id_hex(cfg.identity.cluster_id),
            peer_urls_header: cfg.identity.peer_urls.join(","),
            initial_version: cfg.initial_version,
            snapshot_dir: cfg.snapshot_dir,
            inbound,
            metrics: PeerMetrics::default(),
            client_tls,
            dial_via: cfg.dial_via.into_iter().collect(),
            local_addr,
            runtime: tokio::runtime::Handle::current(),
            state: Mutex::new(State::default()),
            shutdown,
            leader_changed: Notify::new(),
            removed_reported: AtomicBool::new(false),
            next_generation: AtomicU64::new(1),
            snapshot_seq: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        let span = info_span!("peer_server", member = %inner.id_hex, listen = %local_addr);
        let accept =
            tokio::spawn(server::serve(inner.clone(), listener, acceptor).instrument(span));
        let span = info_span!("peer_version_monitor", member = %inner.id_hex);
        let monitor = tokio::spawn(net::run_version_monitor(inner.clone()).instrument(span));
        lock(&inner.tasks).extend([accept, monitor]);
        info!(member = %inner.id_hex, listen = %local_addr, "peer transport started");
        Ok(Transport { inner })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Replaces the member list (our own ID is ignored). Only `id`,
    /// `peer_urls` (dialled in turn after failures) and `is_learner` are
    /// read. Streams of every voting member are dialled; learners are not
    /// (only the leader ever talks to a learner). Removed members' dialers,
    /// pipelines and attached streams are stopped.
    pub fn set_members(&self, members: Vec<Member>) {
        let inner = &self.inner;
        let mut st = inner.state();
        if st.shut_down {
            return;
        }
        let mut keep = std::collections::HashSet::new();
        for m in members {
            if m.id == inner.id || m.id == 0 {
                continue;
            }
            keep.insert(m.id);
            let e = st
                .peers
                .entry(m.id)
                .or_insert_with(|| PeerEntry::new(m.id, m.peer_urls.clone()));
            let urls_changed = {
                let mut u = lock(&e.urls);
                let changed = *u != m.peer_urls;
                if changed {
                    *u = m.peer_urls.clone();
                }
                changed
            };
            let restart = !e.member || urls_changed || e.is_learner != m.is_learner;
            e.member = true;
            e.is_learner = m.is_learner;
            if restart {
                info!(peer = %id_hex(m.id), urls = ?m.peer_urls, learner = m.is_learner, "peer configured");
                inner.spawn_dialers(e);
            }
        }
        let gone: Vec<u64> = st
            .peers
            .iter()
            .filter(|(id, e)| e.member && !keep.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(mut e) = st.peers.remove(&id) {
                info!(peer = %id_hex(id), "peer removed from the member list");
                e.stop_all();
            }
        }
    }

    /// The current leader; `/version` mirrors its versions.
    pub fn set_leader(&self, id: u64) {
        let changed = {
            let mut st = self.inner.state();
            let changed = st.leader != id;
            st.leader = id;
            changed
        };
        if changed {
            self.inner.leader_changed.notify_one();
        }
    }

    /// Queues `msg` for `msg.to` without blocking: the `msgapp` stream the peer
    /// attached (MsgApp only), else its `message` stream, else a pipeline
    /// `POST /raft`. A full queue or an unknown peer drops the message (counted).
    pub fn send(&self, msg: Message) {
        let inner = &self.inner;
        let to = msg.to;
        let mut st = inner.state();
        if st.shut_down {
            return;
        }
        let Some(e) = st.peers.get_mut(&to) else {
            drop(st);
            inner.metrics.send_dropped.inc();
            warn!(peer = %id_hex(to), "dropping message to an unknown peer");
            return;
        };
        let ty = msg.r#type;
        // Returns the message back when that stream cannot take it.
        let try_stream = |kind: StreamKind, msg: Message| -> Option<Message> {
            let Some(a) = &e.attached[kind.idx()] else {
                return Some(msg);
            };
            match a.tx.try_send(msg) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    inner.metrics.send_dropped.inc();
                    warn!(peer = %id_hex(to), stream = kind.name(), "stream queue full, dropping message");
                    None
                }
                Err(mpsc::error::TrySendError::Closed(m)) => Some(m),
            }
        };
        let mut msg = Some(msg);
        if ty == MessageType::MsgApp as i32 {
            msg = msg.and_then(|m| try_stream(StreamKind::MsgApp, m));
        }
        if ty != MessageType::MsgSnap as i32 {
            msg = msg.and_then(|m| try_stream(StreamKind::Message, m));
        }
        let Some(msg) = msg else {
            return;
        };
        let tx = inner.pipeline_sender(e);
        drop(st);
        if tx.try_send(msg).is_err() {
            inner.metrics.send_dropped.inc();
            warn!(peer = %id_hex(to), "pipeline queue full, dropping message");
        }
    }

    /// A serialisable view of peers, streams and totals.
    pub fn status(&self) -> TransportStatus {
        let inner = &self.inner;
        let version = inner.current_version();
        let st = inner.state();
        let mut peers: Vec<PeerStatus> = st
            .peers
            .values()
            .map(|e| PeerStatus {
                id: e.id,
                id_hex: id_hex(e.id),
                urls: e.urls(),
                member: e.member,
                is_learner: e.is_learner,
                msgapp_dialed: e.dialed[0].clone(),
                message_dialed: e.dialed[1].clone(),
                msgapp_attached: e.attached[0].is_some(),
                message_attached: e.attached[1].is_some(),
                pipeline_failures: e.pipeline_failures,
                last_error: e.last_error.clone(),
                reconnects: e.dialed[0].reconnects + e.dialed[1].reconnects,
                server_version: e.server_version.clone(),
            })
            .collect();
        let leader = st.leader;
        drop(st);
        peers.sort_by_key(|p| p.id);
        let m = &inner.metrics;
        let sum = |f: &crate::metrics::CounterFamily| -> u64 {
            ["msgapp", "message", "pipeline", "snapshot"]
                .iter()
                .map(|s| f.get_or_create(&crate::metrics::label(s)).get())
                .sum()
        };
        TransportStatus {
            member_id: inner.id_hex.clone(),
            listen: inner.local_addr.to_string(),
            leader,
            version,
            peers,
            totals: TransportTotals {
                messages_received: sum(&m.messages_received),
                messages_sent: sum(&m.messages_sent),
                bytes_received: m.bytes_received.get(),
                send_dropped: m.send_dropped.get(),
                stream_reconnects: m.stream_reconnects.get(),
                snapshots_received: m.snapshots_received.get(),
            },
        }
    }

    /// The transport's metrics (register them with `metrics().register(&mut reg)`).
    pub fn metrics(&self) -> &PeerMetrics {
        &self.inner.metrics
    }

    /// Stops serving, dialing and sending; closes attached streams. Idempotent.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutdown.send_replace(true);
        {
            let mut st = inner.state();
            st.shut_down = true;
            for (_, mut e) in st.peers.drain() {
                e.stop_all();
            }
        }
        let tasks: Vec<JoinHandle<()>> = lock(&inner.tasks).drain(..).collect();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        info!(member = %inner.id_hex, "peer transport stopped");
    }
}
