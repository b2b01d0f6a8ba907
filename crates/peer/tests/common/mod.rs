#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]
//! Shared test helpers: a transport on loopback, a raw hyper client, a tiny
//! in-test HTTP server, and an rcgen CA for mTLS.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_standby_peer::codec::{self, MessageStreamDecoder, MsgAppV2Decoder};
use etcd_standby_peer::{Inbound, PeerConfig, PeerIdentity, Transport, VersionInfo};
use etcd_standby_proto::raftpb::Message;
use http::Request;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub const ME: u64 = 0x6ad828d59d630;
pub const CLUSTER: u64 = 0xcdf8_1a2b_0000_0042;
pub const LEADER: u64 = 0xaaa9_1111_2222_3333;

/// Liveness guard for waits (not a timing assertion: generous on purpose).
pub const WAIT: Duration = Duration::from_secs(30);

pub type TestBody = BoxBody<Bytes, Infallible>;

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).boxed()
}

pub fn empty() -> TestBody {
    full(Bytes::new())
}

pub struct Harness {
    pub transport: Transport,
    pub inbound: mpsc::Receiver<Inbound>,
    pub dir: tempfile::TempDir,
}

pub fn config(
    id: u64,
    server_tls: Option<Arc<rustls::ServerConfig>>,
    client_tls: Option<Arc<rustls::ClientConfig>>,
    dir: &std::path::Path,
) -> PeerConfig {
    PeerConfig {
        identity: PeerIdentity {
            member_id: id,
            cluster_id: CLUSTER,
            peer_urls: vec!["http://127.0.0.1:2480".to_string()],
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        server_tls,
        client_tls,
        snapshot_dir: dir.join("snap"),
        initial_version: VersionInfo {
            server: "3.5.1".to_string(),
            cluster: "3.5.0".to_string(),
        },
        dial_via: Vec::new(),
    }
}

pub async fn start_with(
    id: u64,
    server_tls: Option<Arc<rustls::ServerConfig>>,
    client_tls: Option<Arc<rustls::ClientConfig>>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel(16);
    let transport = Transport::start(config(id, server_tls, client_tls, dir.path()), tx)
        .await
        .unwrap();
    Harness {
        transport,
        inbound: rx,
        dir,
    }
}

pub async fn start() -> Harness {
    start_with(ME, None, None).await
}

pub async fn client(addr: SocketAddr) -> SendRequest<TestBody> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// A request with etcd's peer headers, as the leader would send it.
pub fn raft_req(method: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("X-Server-From", format!("{LEADER:x}"))
        .header("X-Server-Version", "3.5.1")
        .header("X-Min-Cluster-Version", "3.0.0")
        .header("X-Etcd-Cluster-ID", format!("{CLUSTER:x}"))
        .header("X-PeerURLs", "http://127.0.0.1:1")
}

/// Replaces (not appends) a header: overrides the defaults of [`raft_req`].
pub fn set(mut req: Request<TestBody>, name: &'static str, value: &str) -> Request<TestBody> {
    let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
    req.headers_mut().insert(name, value.parse().unwrap());
    req
}

pub async fn send(
    c: &mut SendRequest<TestBody>,
    req: Request<TestBody>,
) -> (http::StatusCode, http::HeaderMap, Bytes) {
    c.ready().await.unwrap();
    let resp = c.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

pub async fn recv(rx: &mut mpsc::Receiver<Inbound>) -> Inbound {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("inbound within the liveness limit")
        .expect("inbound channel open")
}

/// Polls `f` until it returns Some (liveness-guarded).
pub async fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within the liveness limit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a stream body until a message that is not a link heartbeat arrives.
pub struct StreamReader {
    pub body: Incoming,
    pub msgapp: Option<MsgAppV2Decoder>,
    pub message: MessageStreamDecoder,
    pub raw: Vec<u8>,
}

impl StreamReader {
    pub fn message(body: Incoming) -> Self {
        Self {
            body,
            msgapp: None,
            message: MessageStreamDecoder::new(),
            raw: Vec::new(),
        }
    }

    pub fn msgapp(body: Incoming, local: u64, remote: u64) -> Self {
        Self {
            body,
            msgapp: Some(MsgAppV2Decoder::new(local, remote)),
            message: MessageStreamDecoder::new(),
            raw: Vec::new(),
        }
    }

    /// Next message including link heartbeats; None at end of body.
    pub async fn next_any(&mut self) -> Option<Message> {
        loop {
            let m = match &mut self.msgapp {
                Some(d) => d.next().unwrap(),
                None => self.message.next().unwrap(),
            };
            if let Some(m) = m {
                return Some(m);
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("stream bytes within the liveness limit")?;
            let Ok(frame) = frame else {
                return None;
            };
            if let Ok(d) = frame.into_data() {
                self.raw.extend_from_slice(&d);
                match &mut self.msgapp {
                    Some(dec) => dec.feed(&d),
                    None => self.message.feed(&d),
                }
            }
        }
    }

    pub async fn next_real(&mut self) -> Option<Message> {
        loop {
            let m = self.next_any().await?;
            if !codec::is_link_heartbeat(&m) {
                return Some(m);
            }
        }
    }
}

/// A tiny HTTP/1.1 server running `handler` for every request.
pub async fn serve_fn<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let h = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// A CA plus one leaf certificate (server and client auth, IP SAN 127.0.0.1).
pub struct TestPki {
    pub ca_der: rustls_pki_types::CertificateDer<'static>,
    pub leaf_der: rustls_pki_types::CertificateDer<'static>,
    pub leaf_key_der: Vec<u8>,
}

pub fn pki() -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let leaf = p.signed_by(&leaf_key, &ca).unwrap();
    TestPki {
        ca_der: ca.der().clone(),
        leaf_der: leaf.der().clone(),
        leaf_key_der: leaf_key.serialize_der(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TestPki {
    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        roots
    }

    fn key(&self) -> rustls_pki_types::PrivateKeyDer<'static> {
        rustls_pki_types::PrivateKeyDer::Pkcs8(self.leaf_key_der.clone().into())
    }

    /// Server requiring client certificates; TLS 1.2 only (like etcd 3.5.1),
    /// advertising h2 like etcd does (the transport must strip it).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()),
            provider(),
        )
        .build()
        .unwrap();
        let mut c = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.leaf_der.clone()], self.key())
            .unwrap();
        c.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(c)
    }

    pub fn client_config(&self, with_cert: bool) -> Arc<rustls::ClientConfig> {
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots());
        let mut c = if with_cert {
            b.with_client_auth_cert(vec![self.leaf_der.clone()], self.key())
                .unwrap()
        } else {
            b.with_no_client_auth()
        };
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(c)
    }
}
