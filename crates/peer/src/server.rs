//! The peer HTTP/1.1 server: what etcd members call on our peer URL.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use etcd_standby_proto::raftpb::{Message, MessageType};
use http::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::codec::{self, MAX_MESSAGE_SIZE, MsgAppV2Encoder, SnapshotHeaderDecoder};
use crate::io::WriteDeadline;
use crate::transport::{Inner, STREAM_QUEUE, StreamKind};
use crate::util::{id_hex, major_minor, parse_id, rfc3339_nano_now};
use crate::{Inbound, IncomingSnapshot};

/// etcd's per-Read/Write deadline on peer connections (ConnReadTimeout / ConnWriteTimeout).
pub(crate) const CONN_TIMEOUT: Duration = Duration::from_secs(5);
/// TLS handshake limit on accepted connections.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an unwanted request body we read to keep the connection reusable.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;
/// Largest stream output frame we build before yielding it to hyper.
const MAX_OUT_FRAME: usize = 256 * 1024;

/// Header names (Go canonicalises them; HTTP/1.1 header names are case-insensitive).
pub(crate) const H_SERVER_FROM: &str = "x-server-from";
pub(crate) const H_SERVER_VERSION: &str = "x-server-version";
pub(crate) const H_MIN_CLUSTER_VERSION: &str = "x-min-cluster-version";
pub(crate) const H_CLUSTER_ID: &str = "x-etcd-cluster-id";
pub(crate) const H_PEER_URLS: &str = "x-peerurls";
pub(crate) const H_RAFT_TO: &str = "x-raft-to";

/// Accept loop: one task per connection until shutdown.
pub(crate) async fn serve(
    inner: Arc<Inner>,
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, remote)) => {
                    let span = info_span!("peer_conn", %remote);
                    tokio::spawn(serve_conn(inner.clone(), tcp, acceptor.clone()).instrument(span));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = inner.shut_down() => break,
        }
    }
}

async fn serve_conn(
    inner: Arc<Inner>,
    tcp: TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    let _ = tcp.set_nodelay(true);
    match acceptor {
        None => run_http(inner, tcp).await,
        Some(acc) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acc.accept(tcp)).await {
            Ok(Ok(tls)) => run_http(inner, tls).await,
            Ok(Err(e)) => warn!(error = %e, "TLS handshake failed"),
            Err(_) => warn!("TLS handshake timed out"),
        },
    }
}

async fn run_http<T>(inner: Arc<Inner>, io: T)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let io = TokioIo::new(WriteDeadline::new(io, CONN_TIMEOUT));
    let svc_inner = inner.clone();
    let svc_kill = kill.clone();
    let svc = service_fn(move |req| {
        let inner = svc_inner.clone();
        let kill = svc_kill.clone();
        async move { Ok::<_, Infallible>(handle(inner, kill, req).await) }
    });
    let conn = http1::Builder::new()
        // A client that shuts down its write side after its request still
        // gets the answer (hyper would otherwise drop a response still being
        // made when it reads EOF; the fuzz harness found it).
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(CONN_TIMEOUT)
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::select! {
        r = conn => if let Err(e) = r { debug!(error = %e, "peer connection ended with an error") },
        _ = kill.notified() => debug!("peer connection closed (stream replaced or peer removed)"),
        _ = inner.shut_down() => {},
    }
}

/// Response body: a fixed buffer or an endless stream writer.
pub(crate) enum ResBody {
    Full(Option<Bytes>),
    Stream(Box<StreamWriterBody>),
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResBody::Stream(s) => s.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ResBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// Removes the attachment when the connection carrying it goes away.
struct AttachGuard {
    inner: Weak<Inner>,
    from: u64,
    kind: StreamKind,
    generation: u64,
}

impl Drop for AttachGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.detach(self.from, self.kind, self.generation);
        }
    }
}

/// Writes a stream the remote dialled on us: a link heartbeat at once and
/// every ~1.67 s, plus queued outgoing messages (encoded per stream type).
pub(crate) struct StreamWriterBody {
    rx: mpsc::Receiver<Message>,
    kind: StreamKind,
    enc: MsgAppV2Encoder,
    heartbeat: tokio::time::Interval,
    inner: Weak<Inner>,
    closed: bool,
    _guard: AttachGuard,
}

impl StreamWriterBody {
    fn encode(&mut self, m: &Message, out: &mut BytesMut) -> bool {
        let r = match self.kind {
            StreamKind::Message => codec::encode_message_frame(m, out),
            StreamKind::MsgApp => self.enc.encode(m, out),
        };
        match r {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, stream = self.kind.name(), "cannot encode outgoing message; dropped");
                if let Some(inner) = self.inner.upgrade() {
                    inner.metrics.send_dropped.inc();
                }
                false
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut out = BytesMut::new();
        let mut sent = 0u64;
        while !self.closed && out.len() < MAX_OUT_FRAME {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(m)) => {
                    if self.encode(&m, &mut out) {
                        sent += 1;
                    }
                }
                Poll::Ready(None) => self.closed = true,
                Poll::Pending => break,
            }
        }
        if sent > 0
            && let Some(inner) = self.inner.upgrade()
        {
            inner
                .metrics
                .messages_sent
                .get_or_create(&crate::metrics::label(self.kind.name()))
                .inc_by(sent);
        }
        if self.heartbeat.poll_tick(cx).is_ready() {
            let hb = codec::link_heartbeat();
            self.encode(&hb, &mut out);
        }
        if !out.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
        }
        if self.closed {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

async fn handle(inner: Arc<Inner>, kill: Arc<Notify>, req: Request<Incoming>) -> Response<ResBody> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/raft" => handle_pipeline(inner, req).await,
        "/raft/snapshot" => handle_snapshot(inner, req).await,
        "/raft/probing" => handle_probing(req).await,
        "/version" => handle_version(inner, req).await,
        p if p.starts_with("/raft/stream/") => handle_stream(inner, kill, req, p).await,
        _ => {
            let drained = drain(req.into_body()).await;
            let mut r = text(StatusCode::NOT_FOUND, "404 page not found\n");
            if !drained {
                close_after(&mut r);
            }
            r
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<ResBody> {
    text_owned(status, body.to_string())
}

fn text_owned(status: StatusCode, body: String) -> Response<ResBody> {
    let mut r = Response::new(ResBody::Full(Some(Bytes::from(body))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn empty(status: StatusCode) -> Response<ResBody> {
    let mut r = Response::new(ResBody::Full(None));
    *r.status_mut() = status;
    r
}

fn close_after(r: &mut Response<ResBody>) {
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
}

fn method_not_allowed(allow: &'static str) -> Response<ResBody> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// Adds `X-Server-Version` and `X-Etcd-Cluster-ID`, as etcd does on every raft response.
fn raft_headers(inner: &Inner, r: &mut Response<ResBody>) {
    let v = inner.current_version();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&v.server) {
        h.insert(H_SERVER_VERSION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&inner.cluster_hex) {
        h.insert(H_CLUSTER_ID, v);
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// etcd's version and cluster-ID checks; `Err` carries the exact 412 body.
fn check_compat(inner: &Inner, h: &HeaderMap) -> Result<(), &'static str> {
    const INCOMPATIBLE: &str = "incompatible version\n";
    let remote = header_str(h, H_SERVER_VERSION).unwrap_or("2.0.0");
    let remote = major_minor(remote).ok_or(INCOMPATIBLE)?;
    if remote < (3, 0) {
        return Err(INCOMPATIBLE);
    }
    let remote_min = header_str(h, H_MIN_CLUSTER_VERSION).unwrap_or("2.0.0");
    let remote_min = major_minor(remote_min).ok_or(INCOMPATIBLE)?;
    let local = major_minor(&inner.current_version().server).unwrap_or((3, 0));
    if remote_min > local {
        return Err(INCOMPATIBLE);
    }
    if header_str(h, H_CLUSTER_ID) != Some(inner.cluster_hex.as_str()) {
        return Err("cluster ID mismatch\n");
    }
    Ok(())
}

fn sender_urls(h: &HeaderMap) -> Vec<String> {
    header_str(h, H_PEER_URLS)
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn note_sender(inner: &Inner, h: &HeaderMap) {
    if let Some(from) = header_str(h, H_SERVER_FROM).and_then(parse_id) {
        inner.note_sender(from, &sender_urls(h), header_str(h, H_SERVER_VERSION));
    }
}

/// Reads one data frame with etcd's per-read deadline. `Ok(None)` = end of body.
async fn read_data(body: &mut Incoming, inner: Option<&Inner>) -> Result<Option<Bytes>, String> {
    loop {
        match tokio::time::timeout(CONN_TIMEOUT, body.frame()).await {
            Err(_) => return Err("read timed out".to_string()),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    if let Some(inner) = inner {
                        inner.metrics.bytes_received.inc_by(d.len() as u64);
                    }
                    return Ok(Some(d));
                }
            }
        }
    }
}

/// Reads and discards a body (up to [`DRAIN_LIMIT`]); true if it was read to the end.
async fn drain(mut body: Incoming) -> bool {
    let mut total = 0usize;
    loop {
        match read_data(&mut body, None).await {
            Ok(Some(d)) => {
                total += d.len();
                if total > DRAIN_LIMIT {
                    return false;
                }
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// A rejection before the body was read: drain it so the connection stays usable.
async fn reject(inner: &Inner, body: Incoming, mut r: Response<ResBody>) -> Response<ResBody> {
    raft_headers(inner, &mut r);
    if !drain(body).await {
        close_after(&mut r);
    }
    r
}

async fn handle_pipeline(inner: Arc<Inner>, req: Request<Incoming>) -> Response<ResBody> {
    let (parts, mut body) = req.into_parts();
    if parts.method != Method::POST {
        return reject(&inner, body, method_not_allowed("POST")).await;
    }
    if let Err(msg) = check_compat(&inner, &parts.headers) {
        return reject(&inner, body, text(StatusCode::PRECONDITION_FAILED, msg)).await;
    }
    note_sender(&inner, &parts.headers);
    let mut buf = BytesMut::new();
    loop {
        match read_data(&mut body, Some(&inner)).await {
            Ok(Some(d)) => {
                if (buf.len() + d.len()) as u64 > MAX_MESSAGE_SIZE {
                    let mut r = text(StatusCode::BAD_REQUEST, "error reading raft message\n");
                    raft_headers(&inner, &mut r);
                    close_after(&mut r);
                    return r;
                }
                buf.extend_from_slice(&d);
            }
            Ok(None) => break,
            Err(e) => {
                warn!(error = %e, "failed to read pipeline body");
                let mut r = text(StatusCode::BAD_REQUEST, "error reading raft message\n");
                raft_headers(&inner, &mut r);
                close_after(&mut r);
                return r;
            }
        }
    }
    let m = match Message::decode(buf.freeze()) {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "failed to decode pipeline message");
            let mut r = text(
                StatusCode::BAD_REQUEST,
                "error unmarshalling raft message\n",
            );
            raft_headers(&inner, &mut r);
            return r;
        }
    };
    inner.metrics.received("pipeline");
    if inner.inbound.send(Inbound::Message(m)).await.is_err() {
        let mut r = text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "error processing raft message\n",
        );
        raft_headers(&inner, &mut r);
        close_after(&mut r);
        return r;
    }
    let mut r = empty(StatusCode::NO_CONTENT);
    raft_headers(&inner, &mut r);
    r
}

async fn remove_quietly(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "cannot remove snapshot file");
    }
}

async fn sync_dir(dir: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(std::io::Error::other)?
}

/// How often a snapshot being received is logged.
const SNAPSHOT_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Streams the database part of a snapshot body into `path`; returns its size.
async fn save_db(
    inner: &Inner,
    body: &mut Incoming,
    first: Bytes,
    path: &Path,
) -> Result<u64, String> {
    tokio::fs::create_dir_all(&inner.snapshot_dir)
        .await
        .map_err(|e| format!("create {}: {e}", inner.snapshot_dir.display()))?;
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    let mut size = first.len() as u64;
    f.write_all(&first)
        .await
        .map_err(|e| format!("write: {e}"))?;
    // A large db takes minutes over a WAN link: say how far it got.
    let started = std::time::Instant::now();
    let mut logged = started;
    while let Some(d) = read_data(body, Some(inner))
        .await
        .map_err(|e| format!("read: {e}"))?
    {
        size += d.len() as u64;
        f.write_all(&d).await.map_err(|e| format!("write: {e}"))?;
        if logged.elapsed() >= SNAPSHOT_PROGRESS_EVERY {
            logged = std::time::Instant::now();
            let secs = started.elapsed().as_secs_f64().max(0.001);
            info!(
                received_bytes = size,
                rate_mib_per_second = format_args!("{:.1}", size as f64 / secs / 1048576.0),
                "receiving snapshot"
            );
        }
    }
    f.flush().await.map_err(|e| format!("flush: {e}"))?;
    f.sync_all().await.map_err(|e| format!("fsync: {e}"))?;
    drop(f);
    sync_dir(inner.snapshot_dir.clone())
        .await
        .map_err(|e| format!("fsync dir: {e}"))?;
    Ok(size)
}

async fn handle_snapshot(inner: Arc<Inner>, req: Request<Incoming>) -> Response<ResBody> {
    let (parts, mut body) = req.into_parts();
    if parts.method != Method::POST {
        return reject(&inner, body, method_not_allowed("POST")).await;
    }
    if let Err(msg) = check_compat(&inner, &parts.headers) {
        return reject(&inner, body, text(StatusCode::PRECONDITION_FAILED, msg)).await;
    }
    note_sender(&inner, &parts.headers);
    let bad = |inner: &Inner, msg: String| {
        let mut r = text_owned(StatusCode::BAD_REQUEST, msg);
        raft_headers(inner, &mut r);
        close_after(&mut r);
        r
    };
    let mut dec = SnapshotHeaderDecoder::new();
    let message = loop {
        match dec.next() {
            Ok(Some(m)) => break m,
            Ok(None) => {}
            Err(e) => return bad(&inner, format!("failed to decode raft message ({e})\n")),
        }
        match read_data(&mut body, Some(&inner)).await {
            Ok(Some(d)) => dec.feed(&d),
            Ok(None) => {
                return bad(
                    &inner,
                    "failed to decode raft message (unexpected EOF)\n".into(),
                );
            }
            Err(e) => return bad(&inner, format!("failed to decode raft message ({e})\n")),
        }
    };
    if message.r#type != MessageType::MsgSnap as i32 {
        return bad(&inner, "wrong raft message type\n".into());
    }
    let index = message
        .snapshot
        .as_ref()
        .and_then(|s| s.metadata.as_ref())
        .map_or(0, |m| m.index);
    let seq = inner
        .snapshot_seq
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = inner.snapshot_dir.join(format!(
        "incoming-{index:016x}-{}-{seq}.snap.db.tmp",
        std::process::id()
    ));
    info!(from = %id_hex(message.from), index, path = %path.display(), "receiving snapshot");
    let db_size = match save_db(&inner, &mut body, dec.into_remainder(), &path).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "failed to save snapshot database");
            remove_quietly(&path).await;
            let mut r = text_owned(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to save KV snapshot ({e})\n"),
            );
            raft_headers(&inner, &mut r);
            close_after(&mut r);
            return r;
        }
    };
    info!(
        index,
        db_size, "snapshot database saved; handing it to the daemon"
    );
    inner.metrics.snapshots_received.inc();
    inner.metrics.received("snapshot");
    let (tx, rx) = oneshot::channel();
    let snap = IncomingSnapshot::new(message, path.clone(), db_size, tx);
    let outcome = if inner.inbound.send(Inbound::Snapshot(snap)).await.is_err() {
        Err("inbound channel closed".to_string())
    } else {
        rx.await
            .unwrap_or_else(|_| Err("snapshot dropped by the receiver".to_string()))
    };
    let mut r = match outcome {
        Ok(()) => empty(StatusCode::NO_CONTENT),
        Err(reason) => {
            warn!(%reason, "snapshot rejected");
            remove_quietly(&path).await;
            text_owned(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to process raft message ({reason})\n"),
            )
        }
    };
    raft_headers(&inner, &mut r);
    r
}

async fn handle_probing(req: Request<Incoming>) -> Response<ResBody> {
    let drained = drain(req.into_body()).await;
    let body = format!("{{\"OK\":true,\"Now\":\"{}\"}}\n", rfc3339_nano_now());
    let mut r = text_owned(StatusCode::OK, body);
    r.headers_mut().remove("x-content-type-options");
    if !drained {
        close_after(&mut r);
    }
    r
}

async fn handle_version(inner: Arc<Inner>, req: Request<Incoming>) -> Response<ResBody> {
    let is_get = req.method() == Method::GET;
    let drained = drain(req.into_body()).await;
    let mut r = if is_get {
        let v = inner.current_version();
        let body =
            serde_json::json!({"etcdserver": v.server, "etcdcluster": v.cluster}).to_string();
        let mut r = Response::new(ResBody::Full(Some(Bytes::from(body))));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    } else {
        method_not_allowed("GET")
    };
    if !drained {
        close_after(&mut r);
    }
    r
}

async fn handle_stream(
    inner: Arc<Inner>,
    kill: Arc<Notify>,
    req: Request<Incoming>,
    path: &str,
) -> Response<ResBody> {
    let (parts, body) = req.into_parts();
    if parts.method != Method::GET {
        return reject(&inner, body, method_not_allowed("GET")).await;
    }
    if let Err(msg) = check_compat(&inner, &parts.headers) {
        return reject(&inner, body, text(StatusCode::PRECONDITION_FAILED, msg)).await;
    }
    let rest = path.trim_start_matches("/raft/stream/");
    let (kind, from) = match rest.split_once('/') {
        Some(("msgapp", from)) => (StreamKind::MsgApp, from),
        Some(("message", from)) => (StreamKind::Message, from),
        _ => return reject(&inner, body, text(StatusCode::NOT_FOUND, "invalid path\n")).await,
    };
    let Some(from) = parse_id(from) else {
        return reject(&inner, body, text(StatusCode::NOT_FOUND, "invalid from\n")).await;
    };
    if header_str(&parts.headers, H_RAFT_TO) != Some(inner.id_hex.as_str()) {
        return reject(
            &inner,
            body,
            text(StatusCode::PRECONDITION_FAILED, "to field mismatch\n"),
        )
        .await;
    }
    // A GET body is unusual but allowed; drain it before we start streaming.
    if !drain(body).await {
        let mut r = text(StatusCode::BAD_REQUEST, "request body too large\n");
        raft_headers(&inner, &mut r);
        close_after(&mut r);
        return r;
    }
    inner.note_sender(
        from,
        &sender_urls(&parts.headers),
        header_str(&parts.headers, H_SERVER_VERSION),
    );
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let Some(generation) = inner.attach(from, kind, tx, kill) else {
        let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
        raft_headers(&inner, &mut r);
        return r;
    };
    info!(peer = %id_hex(from), stream = kind.name(), "peer attached a stream");
    // First tick fires immediately: the dialler sees bytes at once.
    let mut heartbeat = tokio::time::interval(codec::LINK_HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let writer = StreamWriterBody {
        rx,
        kind,
        enc: MsgAppV2Encoder::new(),
        heartbeat,
        inner: Arc::downgrade(&inner),
        closed: false,
        _guard: AttachGuard {
            inner: Arc::downgrade(&inner),
            from,
            kind,
            generation,
        },
    };
    let mut r = Response::new(ResBody::Stream(Box::new(writer)));
    raft_headers(&inner, &mut r);
    r
}
