//! Client side: stream dialers, pipeline POSTs and the leader-version poll.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use etcd_standby_proto::raftpb::Message;
use http::header::{CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::codec::{MessageStreamDecoder, MsgAppV2Decoder, is_link_heartbeat};
use crate::server::{
    CONN_TIMEOUT, H_CLUSTER_ID, H_MIN_CLUSTER_VERSION, H_PEER_URLS, H_RAFT_TO, H_SERVER_FROM,
    H_SERVER_VERSION,
};
use crate::transport::{Inner, StreamKind, lock};
use crate::util::{PeerUrl, id_hex, parse_peer_url};
use crate::{Inbound, PeerError, VersionInfo};

/// etcd's PeerDialTimeout with default settings (1 s + election timeout).
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// TLS handshake limit when dialling (etcd: 10 s).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one dial per stream per this period (etcd: rate.Every(100ms)).
const DIAL_RETRY: Duration = Duration::from_millis(100);
/// Limit on a whole pipeline POST (etcd has none; we bound a stuck worker).
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the leader's `/version` is polled.
const VERSION_POLL: Duration = Duration::from_secs(5);

type ClientBody = Full<Bytes>;

/// Opens an HTTP/1.1 connection (TCP, optionally TLS) and spawns its driver.
pub(crate) async fn connect(
    inner: &Inner,
    url: &str,
) -> Result<(SendRequest<ClientBody>, PeerUrl), PeerError> {
    let pu = parse_peer_url(url).ok_or_else(|| PeerError::BadUrl(url.to_string()))?;
    let addr = inner.dial_via.get(&pu.authority).unwrap_or(&pu.authority);
    let tcp = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| PeerError::Timeout("connect"))?
        .map_err(|source| PeerError::Io {
            what: if *addr == pu.authority {
                format!("connect {url}")
            } else {
                format!("connect {url} via {addr}")
            },
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let sender = if pu.tls {
        let connector = inner
            .client_tls
            .as_ref()
            .ok_or_else(|| PeerError::NoClientTls(url.to_string()))?;
        let name = ServerName::try_from(pu.host.clone())
            .map_err(|_| PeerError::BadUrl(url.to_string()))?;
        let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| PeerError::Timeout("TLS handshake"))?
            .map_err(|source| PeerError::Io {
                what: format!("TLS handshake with {url}"),
                source,
            })?;
        handshake(tls).await?
    } else {
        handshake(tcp).await?
    };
    Ok((sender, pu))
}

async fn handshake<T>(io: T) -> Result<SendRequest<ClientBody>, PeerError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "client connection ended with an error");
        }
    });
    Ok(sender)
}

/// A request carrying etcd's peer headers.
fn peer_request(
    inner: &Inner,
    method: Method,
    pu: &PeerUrl,
    path: &str,
    body: Bytes,
    content_type: Option<&'static str>,
    raft_to: Option<u64>,
) -> Result<Request<ClientBody>, PeerError> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, &pu.authority)
        .header(H_SERVER_FROM, &inner.id_hex)
        .header(H_SERVER_VERSION, inner.current_version().server)
        .header(H_MIN_CLUSTER_VERSION, "3.0.0")
        .header(H_CLUSTER_ID, &inner.cluster_hex)
        .header(H_PEER_URLS, &inner.peer_urls_header);
    if let Some(ct) = content_type {
        b = b.header(CONTENT_TYPE, ct);
    }
    if let Some(to) = raft_to {
        b = b.header(H_RAFT_TO, id_hex(to));
    }
    Ok(b.body(Full::new(body))?)
}

/// Reads up to 1 KiB of an error response body (for logs / status), best effort.
async fn error_body(body: Incoming) -> String {
    let mut out = Vec::new();
    let mut body = body;
    while out.len() < 1024 {
        match tokio::time::timeout(CONN_TIMEOUT, body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d);
                }
            }
            _ => break,
        }
    }
    out.truncate(1024);
    String::from_utf8_lossy(&out).trim_end().to_string()
}

enum DialEnd {
    /// The peer said we were removed (410).
    Removed(String),
    /// Anything else: retry.
    Failed(PeerError),
}

/// One stream reader: dial, decode, forward; re-dial at most every 100 ms.
pub(crate) async fn run_dialer(inner: Arc<Inner>, peer: u64, kind: StreamKind, urls: Vec<String>) {
    if urls.is_empty() {
        warn!("peer has no URLs; not dialling");
        return;
    }
    let mut url_idx = 0usize;
    let mut last_attempt: Option<Instant> = None;
    loop {
        if let Some(t) = last_attempt {
            tokio::time::sleep_until(t + DIAL_RETRY).await;
        }
        if inner.is_shut_down() {
            return;
        }
        last_attempt = Some(Instant::now());
        let url = &urls[url_idx % urls.len()];
        let end = tokio::select! {
            e = dial_once(&inner, peer, kind, url) => e,
            _ = inner.shut_down() => return,
        };
        inner.metrics.stream_reconnects.inc();
        let err = match &end {
            DialEnd::Removed(d) => d.clone(),
            DialEnd::Failed(e) => e.to_string(),
        };
        let (was_connected, new_error) = inner
            .with_peer(peer, |e| {
                let d = e.dialed_mut(kind);
                let was = d.connected;
                let new = d.last_error.as_deref() != Some(err.as_str());
                d.connected = false;
                d.reconnects += 1;
                d.last_error = Some(err.clone());
                e.last_error = Some(format!("{} stream: {err}", kind.name()));
                (was, new)
            })
            .unwrap_or((false, false));
        // Warn on changes only: a down peer is re-dialled every 100 ms.
        if was_connected || new_error {
            warn!(%url, error = %err, "stream to peer lost or dial failed; retrying");
        }
        match end {
            DialEnd::Removed(detail) => {
                inner
                    .report_removed(format!("{detail} (from {} {url})", id_hex(peer)))
                    .await;
                return;
            }
            DialEnd::Failed(PeerError::InboundClosed) => return,
            DialEnd::Failed(_) => {
                url_idx = url_idx.wrapping_add(1);
            }
        }
    }
}

enum StreamDecoder {
    MsgApp(MsgAppV2Decoder),
    Message(MessageStreamDecoder),
}

impl StreamDecoder {
    fn feed(&mut self, d: &[u8]) {
        match self {
            StreamDecoder::MsgApp(x) => x.feed(d),
            StreamDecoder::Message(x) => x.feed(d),
        }
    }

    fn next(&mut self) -> Result<Option<Message>, crate::codec::CodecError> {
        match self {
            StreamDecoder::MsgApp(x) => x.next(),
            StreamDecoder::Message(x) => x.next(),
        }
    }
}

async fn dial_once(inner: &Inner, peer: u64, kind: StreamKind, url: &str) -> DialEnd {
    let run = async {
        let (mut sender, pu) = connect(inner, url).await?;
        let path = format!("/raft/stream/{}/{}", kind.name(), inner.id_hex);
        let req = peer_request(
            inner,
            Method::GET,
            &pu,
            &path,
            Bytes::new(),
            None,
            Some(peer),
        )?;
        let resp = tokio::time::timeout(CONN_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| PeerError::Timeout("stream response headers"))??;
        let status = resp.status();
        let server_version = resp
            .headers()
            .get(H_SERVER_VERSION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(v) = &server_version {
            inner.with_peer(peer, |e| e.server_version = Some(v.clone()));
        }
        if status == StatusCode::GONE {
            let body = error_body(resp.into_body()).await;
            return Ok(Err(format!("410 {body}")));
        }
        if status != StatusCode::OK {
            let body = error_body(resp.into_body()).await;
            return Err(PeerError::Status {
                status: status.as_u16(),
                body,
            });
        }
        info!(%url, ?server_version, "stream connected");
        inner.with_peer(peer, |e| e.dialed_mut(kind).connected = true);
        let mut dec = match kind {
            StreamKind::MsgApp => StreamDecoder::MsgApp(MsgAppV2Decoder::new(inner.id, peer)),
            StreamKind::Message => StreamDecoder::Message(MessageStreamDecoder::new()),
        };
        let mut body = resp.into_body();
        loop {
            let frame = tokio::time::timeout(CONN_TIMEOUT, body.frame())
                .await
                .map_err(|_| PeerError::Timeout("no bytes on the stream for 5 s"))?;
            let Some(frame) = frame else {
                return Err(PeerError::Closed);
            };
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            inner.metrics.bytes_received.inc_by(data.len() as u64);
            dec.feed(&data);
            while let Some(m) = dec.next()? {
                if is_link_heartbeat(&m) {
                    continue;
                }
                inner.metrics.received(kind.name());
                inner
                    .inbound
                    .send(Inbound::Message(m))
                    .await
                    .map_err(|_| PeerError::InboundClosed)?;
            }
        }
    };
    match run.await {
        Ok(Ok(())) => DialEnd::Failed(PeerError::Closed),
        Ok(Err(removed)) => DialEnd::Removed(removed),
        Err(e) => DialEnd::Failed(e),
    }
}

/// One of a peer's pipeline workers: takes queued messages and POSTs them to
/// `/raft`, keeping its own keep-alive connection.
pub(crate) async fn run_pipeline_worker(
    inner: Arc<Inner>,
    peer: u64,
    urls: Arc<Mutex<Vec<String>>>,
    rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Message>>>,
) {
    let mut conn: Option<(SendRequest<ClientBody>, PeerUrl)> = None;
    let mut url_idx = 0usize;
    loop {
        let msg = {
            let mut rx = rx.lock().await;
            rx.recv().await
        };
        let Some(msg) = msg else {
            return;
        };
        let url = {
            let u = lock(&urls);
            if u.is_empty() {
                None
            } else {
                Some(u[url_idx % u.len()].clone())
            }
        };
        let Some(url) = url else {
            inner.metrics.send_dropped.inc();
            warn!("no URL to POST to; message dropped");
            continue;
        };
        let result =
            tokio::time::timeout(POST_TIMEOUT, post_message(&inner, &mut conn, &url, &msg))
                .await
                .unwrap_or(Err(PeerError::Timeout("POST /raft")));
        match result {
            Ok(()) => inner.metrics.sent("pipeline"),
            Err(e) => {
                conn = None;
                url_idx = url_idx.wrapping_add(1);
                inner.metrics.send_dropped.inc();
                let err = e.to_string();
                debug!(%url, error = %err, "pipeline POST failed");
                inner.with_peer(peer, |p| {
                    p.pipeline_failures += 1;
                    p.last_error = Some(format!("pipeline: {err}"));
                });
                if let PeerError::Status { status: 403, body } = e {
                    inner
                        .report_removed(format!(
                            "403 {body} (POST /raft to {} {url})",
                            id_hex(peer)
                        ))
                        .await;
                }
            }
        }
    }
}

async fn post_message(
    inner: &Inner,
    conn: &mut Option<(SendRequest<ClientBody>, PeerUrl)>,
    url: &str,
    msg: &Message,
) -> Result<(), PeerError> {
    if conn.as_ref().is_none_or(|(s, _)| s.is_closed()) {
        *conn = Some(connect(inner, url).await?);
    }
    let Some((sender, pu)) = conn.as_mut() else {
        return Err(PeerError::Closed);
    };
    sender.ready().await?;
    let body = Bytes::from(msg.encode_to_vec());
    let req = peer_request(
        inner,
        Method::POST,
        pu,
        "/raft",
        body,
        Some("application/protobuf"),
        None,
    )?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    if status == StatusCode::NO_CONTENT {
        // Read to the end so the connection can be reused.
        let _ = error_body(resp.into_body()).await;
        return Ok(());
    }
    let body = error_body(resp.into_body()).await;
    Err(PeerError::Status {
        status: status.as_u16(),
        body,
    })
}

/// `GET {url}/version` → the peer's `{etcdserver, etcdcluster}`.
pub(crate) async fn fetch_version(inner: &Inner, url: &str) -> Result<VersionInfo, PeerError> {
    let (mut sender, pu) = connect(inner, url).await?;
    let req = Request::builder()
        .method(Method::GET)
        .uri("/version")
        .header(HOST, &pu.authority)
        .body(Full::new(Bytes::new()))?;
    let resp = tokio::time::timeout(CONN_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| PeerError::Timeout("GET /version"))??;
    let status = resp.status();
    let body = error_body(resp.into_body()).await;
    if status != StatusCode::OK {
        return Err(PeerError::Status {
            status: status.as_u16(),
            body,
        });
    }
    #[derive(serde::Deserialize)]
    struct V {
        etcdserver: String,
        etcdcluster: String,
    }
    let v: V = serde_json::from_str(&body).map_err(|e| PeerError::Status {
        status: 200,
        body: format!("bad /version body: {e}"),
    })?;
    Ok(VersionInfo {
        server: v.etcdserver,
        cluster: v.etcdcluster,
    })
}

/// Polls the leader's `/version` every 5 s (and at once when the leader changes).
pub(crate) async fn run_version_monitor(inner: Arc<Inner>) {
    loop {
        let target = {
            let st = inner.state();
            st.peers
                .get(&st.leader)
                .map(|e| (e.id, lock(&e.urls).clone()))
        };
        if let Some((leader, urls)) = target {
            for url in &urls {
                match fetch_version(&inner, url).await {
                    Ok(v) => {
                        if crate::util::major_minor(&v.server).is_some() {
                            inner.with_peer(leader, |e| {
                                if e.version.as_ref() != Some(&v) {
                                    info!(leader = %id_hex(leader), server = %v.server, cluster = %v.cluster, "leader version observed");
                                }
                                e.version = Some(v);
                            });
                        }
                        break;
                    }
                    Err(e) => debug!(%url, error = %e, "GET /version failed"),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(VERSION_POLL) => {},
            _ = inner.leader_changed.notified() => {},
        }
    }
}
