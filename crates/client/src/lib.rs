//! Typed gRPC client for etcd's v3 API (cluster, KV, lease, auth,
//! maintenance), for etcd 3.4.23 and 3.5.1.
//!
//! The service stubs are generated at build time from the project's own
//! `proto/etcdserverpb/rpc_service.proto` (protox, no `protoc`); every
//! message type is [`etcd_standby_proto`]'s, re-exported here as [`pb`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), etcd_standby_client::ClientError> {
//! use etcd_standby_client::{Client, ClientConfig, pb};
//! let client = Client::connect(ClientConfig::new(["http://127.0.0.1:2379"])).await?;
//! client.put(pb::PutRequest { key: "k".into(), value: "v".into(), ..Default::default() }).await?;
//! let got = client.range(pb::RangeRequest { key: "k".into(), ..Default::default() }).await?;
//! assert_eq!(got.kvs.len(), 1);
//! # Ok(()) }
//! ```
//!
//! # Failover and retries
//! Calls go to the endpoint that answered last. Idempotent reads (range,
//! status-free maintenance reads, lease queries, auth reads) and member
//! operations move on to the next endpoint when one is unavailable (gRPC
//! `Unavailable`, or no answer within the request timeout). Writes are not
//! retried, except when a learner refused them (`rpc not supported for
//! learner`: nothing was applied); the caller decides.
//!
//! # Authentication
//! With [`ClientConfig::user`], `connect` authenticates and every call
//! carries the token (gRPC metadata `token`). When etcd says the token is
//! invalid, stale or missing, the client authenticates again once and
//! repeats the call. Passwords and tokens are never logged.

mod error;
mod lease;
mod pages;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use error::{ClientError, EtcdError, Result};
pub use lease::{KeepAliveSender, KeepAliveStream};
pub use pages::RangePages;

/// Auth store messages (`Permission`, `UserAddOptions`).
pub use etcd_standby_proto::authpb;
/// etcd's protobuf messages (request, response, member, ...).
pub use etcd_standby_proto::etcdserverpb as pb;
/// `KeyValue`.
pub use etcd_standby_proto::mvccpb;
pub use etcd_standby_proto::mvccpb::KeyValue;

pub use pb::{
    AlarmResponse, AuthDisableResponse, AuthEnableResponse, AuthRoleAddResponse,
    AuthRoleDeleteResponse, AuthRoleGetResponse, AuthRoleGrantPermissionResponse,
    AuthRoleListResponse, AuthRoleRevokePermissionResponse, AuthStatusResponse,
    AuthUserAddResponse, AuthUserChangePasswordResponse, AuthUserDeleteResponse,
    AuthUserGetResponse, AuthUserGrantRoleResponse, AuthUserListResponse,
    AuthUserRevokeRoleResponse, AuthenticateResponse, CompactionResponse, DefragmentResponse,
    DeleteRangeRequest, DeleteRangeResponse, HashKvResponse, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse,
    Member, MemberAddResponse, MemberListResponse, MemberPromoteResponse, MemberRemoveResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, StatusResponse,
    TxnRequest, TxnResponse,
};

/// Generated tonic client stubs (`kv_client::KvClient`, `lease_client`,
/// `cluster_client`, `maintenance_client`, `auth_client`), for calls this
/// crate does not wrap. Attach the auth token yourself (metadata `token`).
#[allow(missing_docs, clippy::all)]
pub mod stubs {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

use stubs::auth_client::AuthClient;
use stubs::cluster_client::ClusterClient;
use stubs::kv_client::KvClient;
use stubs::lease_client::LeaseClient;
use stubs::maintenance_client::MaintenanceClient;

/// Largest response the client accepts (big ranges).
pub const MAX_DECODE_MESSAGE_SIZE: usize = 512 * 1024 * 1024;
/// Largest request the client sends.
pub const MAX_ENCODE_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// TLS files (PEM). `ca` is required for `https://` endpoints (this build has
/// no system roots); `cert` + `key` give a client identity for etcd's
/// `--client-cert-auth`.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// CA bundle that signed the server certificates.
    pub ca: Option<PathBuf>,
    /// Client certificate.
    pub cert: Option<PathBuf>,
    /// Private key of the client certificate.
    pub key: Option<PathBuf>,
}

/// How to reach and authenticate to an etcd cluster.
#[derive(Clone)]
pub struct ClientConfig {
    /// Client URLs, `http://host:port` or `https://host:port` (a bare
    /// `host:port` means http, or https when `tls` is set).
    pub endpoints: Vec<String>,
    /// TLS settings for `https://` endpoints.
    pub tls: Option<ClientTls>,
    /// `(user, password)` to authenticate with.
    pub user: Option<(String, String)>,
    /// Timeout of one TCP/TLS connection attempt.
    pub connect_timeout: Duration,
    /// Timeout of one unary call on one endpoint.
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// Config for `endpoints` with default timeouts (connect 5 s, request 30 s),
    /// no TLS and no user.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoints: Vec::new(),
            tls: None,
            user: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls)
            .field("user", &self.user.as_ref().map(|(u, _)| (u, "<redacted>")))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// A connection to an etcd cluster: one gRPC channel per endpoint. Cheap to
/// clone (shared state).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "endpoints",
                &self
                    .inner
                    .endpoints
                    .iter()
                    .map(|e| &e.url)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

struct Inner {
    endpoints: Vec<Ep>,
    preferred: AtomicUsize,
    tls: Option<ClientTlsConfig>,
    connect_timeout: Duration,
    request_timeout: Duration,
    user: Option<(String, String)>,
    token: RwLock<Option<AsciiMetadataValue>>,
    auth_lock: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Ep {
    url: String,
    channel: Channel,
}

/// Whether a failed call may move on to the next endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Idempotent: next endpoint on Unavailable / timeout.
    Failover,
    /// Non-idempotent write: only when a learner refused it.
    Write,
}

fn normalize_endpoint(raw: &str, tls: bool) -> Result<(String, bool)> {
    let s = raw.trim().trim_end_matches('/');
    if s.is_empty() {
        return Err(ClientError::InvalidEndpoint {
            endpoint: raw.to_owned(),
            reason: "empty".into(),
        });
    }
    let (url, https) = if let Some(rest) = s.strip_prefix("https://") {
        (format!("https://{rest}"), true)
    } else if let Some(rest) = s.strip_prefix("http://") {
        (format!("http://{rest}"), false)
    } else if s.contains("://") {
        return Err(ClientError::InvalidEndpoint {
            endpoint: raw.to_owned(),
            reason: "scheme must be http or https".into(),
        });
    } else if tls {
        (format!("https://{s}"), true)
    } else {
        (format!("http://{s}"), false)
    };
    Ok((url, https))
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ClientError::TlsFile {
        path: path.clone(),
        source,
    })
}

fn tls_config(tls: &ClientTls) -> Result<ClientTlsConfig> {
    let mut cfg = ClientTlsConfig::new();
    match &tls.ca {
        Some(ca) => cfg = cfg.ca_certificate(Certificate::from_pem(read_file(ca)?)),
        None => {
            return Err(ClientError::Tls {
                message: "https endpoints need ClientTls.ca (no system roots in this build)".into(),
            });
        }
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            cfg = cfg.identity(Identity::from_pem(read_file(cert)?, read_file(key)?));
        }
        (None, None) => {}
        _ => {
            return Err(ClientError::Tls {
                message: "ClientTls.cert and ClientTls.key go together".into(),
            });
        }
    }
    Ok(cfg)
}

/// The error and its causes on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn build_endpoint(
    url: &str,
    https: bool,
    tls: Option<&ClientTlsConfig>,
    connect_timeout: Duration,
) -> Result<Endpoint> {
    let invalid = |e: &dyn std::error::Error| ClientError::InvalidEndpoint {
        endpoint: url.to_owned(),
        reason: e.to_string(),
    };
    let mut ep = Endpoint::from_shared(url.to_owned())
        .map_err(|e| invalid(&e))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if https {
        let Some(tls) = tls else {
            return Err(ClientError::Tls {
                message: format!("{url}: https endpoint but no ClientConfig.tls"),
            });
        };
        ep = ep.tls_config(tls.clone()).map_err(|e| ClientError::Tls {
            message: format!("{url}: {}", error_chain(&e)),
        })?;
    }
    Ok(ep)
}

macro_rules! call {
    ($self:ident, $retry:expr, $stub:ident, $method:ident, $req:expr) => {
        $self
            .unary($retry, $req, |ch, r| async move {
                $stub::new(ch)
                    .max_decoding_message_size(MAX_DECODE_MESSAGE_SIZE)
                    .max_encoding_message_size(MAX_ENCODE_MESSAGE_SIZE)
                    .$method(r)
                    .await
            })
            .await
    };
}

impl Client {
    /// Connects to every endpoint (a failed endpoint is retried lazily by
    /// later calls) and, with a user, authenticates. Fails if no endpoint
    /// answers, or authentication fails (an auth-disabled cluster is fine:
    /// calls then go without a token until etcd asks for one).
    pub async fn connect(cfg: ClientConfig) -> Result<Client> {
        if cfg.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let tls = match &cfg.tls {
            Some(t) => Some(tls_config(t)?),
            None => None,
        };
        let mut endpoints = Vec::with_capacity(cfg.endpoints.len());
        let mut errors = Vec::new();
        let mut first_ok = None;
        for raw in &cfg.endpoints {
            let (url, https) = normalize_endpoint(raw, cfg.tls.is_some())?;
            let ep = build_endpoint(&url, https, tls.as_ref(), cfg.connect_timeout)?;
            let channel = match ep.connect().await {
                Ok(ch) => {
                    first_ok.get_or_insert(endpoints.len());
                    ch
                }
                Err(e) => {
                    tracing::debug!(endpoint = %url, error = %error_chain(&e), "connect failed");
                    errors.push(format!("{url}: {}", error_chain(&e)));
                    ep.connect_lazy()
                }
            };
            endpoints.push(Ep { url, channel });
        }
        let Some(first_ok) = first_ok else {
            return Err(ClientError::Connect {
                endpoint: cfg.endpoints.join(","),
                message: errors.join("; "),
            });
        };
        let client = Client {
            inner: Arc::new(Inner {
                endpoints,
                preferred: AtomicUsize::new(first_ok),
                tls,
                connect_timeout: cfg.connect_timeout,
                request_timeout: cfg.request_timeout,
                user: cfg.user,
                token: RwLock::new(None),
                auth_lock: tokio::sync::Mutex::new(()),
            }),
        };
        if client.inner.user.is_some() {
            client.refresh_token(None).await?;
        }
        Ok(client)
    }

    /// The endpoint URLs in use (normalised).
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    /// Whether the client currently holds an auth token.
    pub fn has_token(&self) -> bool {
        self.current_token().is_some()
    }

    fn current_token(&self) -> Option<AsciiMetadataValue> {
        match self.inner.token.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_token(&self, token: Option<AsciiMetadataValue>) {
        match self.inner.token.write() {
            Ok(mut t) => *t = token,
            Err(poisoned) => *poisoned.into_inner() = token,
        }
    }

    /// Authenticates again with the configured user unless another task did
    /// so since `stale` was read.
    async fn refresh_token(&self, stale: Option<&AsciiMetadataValue>) -> Result<()> {
        let Some((name, password)) = self.inner.user.clone() else {
            return Ok(());
        };
        let _guard = self.inner.auth_lock.lock().await;
        let now = self.current_token();
        if stale.is_some() && now.as_ref() != stale {
            return Ok(());
        }
        let req = pb::AuthenticateRequest { name, password };
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let ep = self.inner.endpoints[idx].clone();
            let res = self
                .attempt(&ep, req.clone(), None, |ch, r| async move {
                    AuthClient::new(ch).authenticate(r).await
                })
                .await;
            match res {
                Ok(resp) => {
                    let token = AsciiMetadataValue::try_from(resp.token.as_str())
                        .map_err(|_| ClientError::BadToken)?;
                    self.set_token(Some(token));
                    return Ok(());
                }
                Err(e) if e.etcd_error() == Some(EtcdError::AuthNotEnabled) => {
                    self.set_token(None);
                    return Ok(());
                }
                Err(e) if e.is_unavailable() || e.is_timeout() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ClientError::NoEndpoints))
    }

    /// One call on one endpoint with the request timeout.
    async fn attempt<T, R, F, Fut>(
        &self,
        ep: &Ep,
        req: T,
        token: Option<&AsciiMetadataValue>,
        call: F,
    ) -> Result<R>
    where
        F: FnOnce(Channel, tonic::Request<T>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut r = tonic::Request::new(req);
        r.set_timeout(self.inner.request_timeout);
        if let Some(t) = token {
            r.metadata_mut().insert("token", t.clone());
        }
        match tokio::time::timeout(self.inner.request_timeout, call(ep.channel.clone(), r)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            // tonic enforces the grpc-timeout header itself.
            Ok(Err(status))
                if status.code() == tonic::Code::Cancelled
                    && status.message() == "Timeout expired" =>
            {
                Err(ClientError::Timeout {
                    endpoint: ep.url.clone(),
                    after: self.inner.request_timeout,
                })
            }
            Ok(Err(status)) => Err(ClientError::from_status(&ep.url, &status)),
            Err(_) => Err(ClientError::Timeout {
                endpoint: ep.url.clone(),
                after: self.inner.request_timeout,
            }),
        }
    }

    /// A unary call with auth refresh and the failover policy `retry`.
    async fn unary<T, R, F, Fut>(&self, retry: Retry, req: T, call: F) -> Result<R>
    where
        T: Clone,
        F: Fn(Channel, tonic::Request<T>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed);
        let mut reauthed = false;
        let mut i = 0;
        loop {
            let idx = (start + i) % n;
            let ep = self.inner.endpoints[idx].clone();
            let token = self.current_token();
            match self.attempt(&ep, req.clone(), token.as_ref(), &call).await {
                Ok(r) => {
                    if idx != start {
                        self.inner.preferred.store(idx, Ordering::Relaxed);
                    }
                    return Ok(r);
                }
                Err(e) => {
                    if !reauthed && self.inner.user.is_some() && e.needs_reauth() {
                        reauthed = true;
                        self.refresh_token(token.as_ref()).await?;
                        continue;
                    }
                    let next = match retry {
                        Retry::Failover => e.is_unavailable() || e.is_timeout(),
                        Retry::Write => e.etcd_error() == Some(EtcdError::NotSupportedForLearner),
                    } || e.etcd_error() == Some(EtcdError::NotSupportedForLearner);
                    if next && i + 1 < n {
                        tracing::debug!(endpoint = %ep.url, error = %e, "trying next endpoint");
                        i += 1;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// A unary call on one given endpoint (no failover), with auth refresh.
    async fn unary_on<T, R, F, Fut>(&self, endpoint: &str, req: T, call: F) -> Result<R>
    where
        T: Clone,
        F: Fn(Channel, tonic::Request<T>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let ep = self.endpoint_for(endpoint)?;
        let token = self.current_token();
        match self.attempt(&ep, req.clone(), token.as_ref(), &call).await {
            Err(e) if self.inner.user.is_some() && e.needs_reauth() => {
                self.refresh_token(token.as_ref()).await?;
                let token = self.current_token();
                self.attempt(&ep, req, token.as_ref(), &call).await
            }
            other => other,
        }
    }

    /// The configured endpoint matching `endpoint`, or a new lazy channel to it.
    fn endpoint_for(&self, endpoint: &str) -> Result<Ep> {
        let (url, https) = normalize_endpoint(endpoint, self.inner.tls.is_some())?;
        if let Some(ep) = self.inner.endpoints.iter().find(|e| e.url == url) {
            return Ok(ep.clone());
        }
        let ep = build_endpoint(
            &url,
            https,
            self.inner.tls.as_ref(),
            self.inner.connect_timeout,
        )?;
        Ok(Ep {
            url,
            channel: ep.connect_lazy(),
        })
    }

    // ----------------------------------------------------------------- KV

    /// Range (get). Idempotent: fails over.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        call!(self, Retry::Failover, KvClient, range, req)
    }

    /// Put. Not retried on another endpoint.
    pub async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        call!(self, Retry::Write, KvClient, put, req)
    }

    /// Delete a key or range. Not retried on another endpoint.
    pub async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        call!(self, Retry::Write, KvClient, delete_range, req)
    }

    /// Transaction. Fails over only when every operation in it (nested
    /// included) is a range; otherwise not retried.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        let retry = if txn_is_read_only(&req) {
            Retry::Failover
        } else {
            Retry::Write
        };
        call!(self, retry, KvClient, txn, req)
    }

    /// Compacts the key-value history up to `revision` (`physical`: wait
    /// until the compaction is on disk). Not retried.
    pub async fn compact(&self, revision: i64, physical: bool) -> Result<CompactionResponse> {
        let req = pb::CompactionRequest { revision, physical };
        call!(self, Retry::Write, KvClient, compact, req)
    }

    /// Paged read of `[key, range_end)` at one revision (the revision of the
    /// first page), `page_size` keys per page, ascending by key. See
    /// [`RangePages`].
    pub fn range_pages(
        &self,
        key: impl Into<Bytes>,
        range_end: impl Into<Bytes>,
        page_size: i64,
        keys_only: bool,
    ) -> RangePages {
        RangePages::new(
            self.clone(),
            key.into(),
            range_end.into(),
            page_size,
            keys_only,
            0,
        )
    }

    /// Like [`range_pages`](Self::range_pages) at a given `revision` (0 =
    /// current at the first page).
    pub fn range_pages_at(
        &self,
        key: impl Into<Bytes>,
        range_end: impl Into<Bytes>,
        page_size: i64,
        keys_only: bool,
        revision: i64,
    ) -> RangePages {
        RangePages::new(
            self.clone(),
            key.into(),
            range_end.into(),
            page_size,
            keys_only,
            revision,
        )
    }

    // -------------------------------------------------------------- Lease

    /// Grants a lease with a caller-chosen `id` (0 = etcd picks) and `ttl`
    /// seconds. Not retried.
    pub async fn lease_grant(&self, id: i64, ttl: i64) -> Result<LeaseGrantResponse> {
        let req = pb::LeaseGrantRequest { ttl, id };
        call!(self, Retry::Write, LeaseClient, lease_grant, req)
    }

    /// Revokes a lease (deleting its keys). Not retried.
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse> {
        let req = pb::LeaseRevokeRequest { id };
        call!(self, Retry::Write, LeaseClient, lease_revoke, req)
    }

    /// Remaining TTL of a lease (`ttl == -1`: no such lease), and its keys
    /// when `keys`.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse> {
        let req = pb::LeaseTimeToLiveRequest { id, keys };
        call!(self, Retry::Failover, LeaseClient, lease_time_to_live, req)
    }

    /// All lease IDs.
    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse> {
        call!(
            self,
            Retry::Failover,
            LeaseClient,
            lease_leases,
            pb::LeaseLeasesRequest {}
        )
    }

    /// Opens one keep-alive stream for any number of leases. Send IDs with
    /// [`KeepAliveSender::keep_alive`], read answers from
    /// [`KeepAliveStream::message`] (a TTL of 0 means the lease is gone).
    pub async fn lease_keep_alive(&self) -> Result<(KeepAliveSender, KeepAliveStream)> {
        let idx = self.inner.preferred.load(Ordering::Relaxed) % self.inner.endpoints.len();
        let ep = self.inner.endpoints[idx].clone();
        Ok(lease::open(ep.url, ep.channel, self.current_token()))
    }

    // ------------------------------------------------------------ Cluster

    /// All members (learners included).
    pub async fn member_list(&self) -> Result<MemberListResponse> {
        let req = pb::MemberListRequest {
            linearizable: false,
        };
        call!(self, Retry::Failover, ClusterClient, member_list, req)
    }

    /// Adds a learner with `peer_urls` (etcd allows one learner at a time:
    /// `TooManyLearners`).
    pub async fn member_add_learner(&self, peer_urls: Vec<String>) -> Result<MemberAddResponse> {
        let req = pb::MemberAddRequest {
            peer_ur_ls: peer_urls,
            is_learner: true,
        };
        call!(self, Retry::Failover, ClusterClient, member_add, req)
    }

    /// Adds a voting member with `peer_urls`.
    pub async fn member_add_voter(&self, peer_urls: Vec<String>) -> Result<MemberAddResponse> {
        let req = pb::MemberAddRequest {
            peer_ur_ls: peer_urls,
            is_learner: false,
        };
        call!(self, Retry::Failover, ClusterClient, member_add, req)
    }

    /// Removes member `id`.
    pub async fn member_remove(&self, id: u64) -> Result<MemberRemoveResponse> {
        let req = pb::MemberRemoveRequest { id };
        call!(self, Retry::Failover, ClusterClient, member_remove, req)
    }

    /// Promotes learner `id` to a voting member (`LearnerNotReady` until it
    /// has caught up).
    pub async fn member_promote(&self, id: u64) -> Result<MemberPromoteResponse> {
        let req = pb::MemberPromoteRequest { id };
        call!(self, Retry::Failover, ClusterClient, member_promote, req)
    }

    // -------------------------------------------------------- Maintenance

    /// Status of one member, asked at `endpoint` (a configured endpoint or
    /// any other URL of the cluster): version, db size, leader, raft index /
    /// term / applied index, errors, learner flag.
    pub async fn status(&self, endpoint: &str) -> Result<StatusResponse> {
        self.unary_on(endpoint, pb::StatusRequest {}, |ch, r| async move {
            MaintenanceClient::new(ch).status(r).await
        })
        .await
    }

    /// Hash of the MVCC key space of the member at `endpoint` up to
    /// `revision` (0 = current).
    pub async fn hash_kv(&self, endpoint: &str, revision: i64) -> Result<HashKvResponse> {
        self.unary_on(
            endpoint,
            pb::HashKvRequest { revision },
            |ch, r| async move { MaintenanceClient::new(ch).hash_kv(r).await },
        )
        .await
    }

    /// Streams the backend of the member at `endpoint` (`Maintenance.Snapshot`,
    /// what `etcdctl snapshot save` reads: the db followed by its SHA-256)
    /// into `out`. No overall deadline (a large db takes a while); each
    /// chunk must come within the request timeout. Returns the bytes
    /// written and the header of the first message (cluster and member ID,
    /// the revision when the snapshot started).
    pub async fn snapshot_to<W>(
        &self,
        endpoint: &str,
        out: &mut W,
    ) -> Result<(u64, Option<pb::ResponseHeader>)>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;
        let ep = self.endpoint_for(endpoint)?;
        let timeout = || ClientError::Timeout {
            endpoint: ep.url.clone(),
            after: self.inner.request_timeout,
        };
        let mut r = tonic::Request::new(pb::SnapshotRequest {});
        if let Some(t) = self.current_token() {
            r.metadata_mut().insert("token", t);
        }
        let mut stream = tokio::time::timeout(
            self.inner.request_timeout,
            MaintenanceClient::new(ep.channel.clone()).snapshot(r),
        )
        .await
        .map_err(|_| timeout())?
        .map_err(|s| ClientError::from_status(&ep.url, &s))?
        .into_inner();
        let (mut written, mut header) = (0u64, None);
        loop {
            let msg = tokio::time::timeout(self.inner.request_timeout, stream.message())
                .await
                .map_err(|_| timeout())?
                .map_err(|s| ClientError::from_status(&ep.url, &s))?;
            let Some(msg) = msg else { break };
            if header.is_none() {
                header = msg.header;
            }
            out.write_all(&msg.blob)
                .await
                .map_err(|source| ClientError::Io {
                    what: "writing the snapshot".into(),
                    source,
                })?;
            written += msg.blob.len() as u64;
        }
        out.flush().await.map_err(|source| ClientError::Io {
            what: "writing the snapshot".into(),
            source,
        })?;
        Ok((written, header))
    }

    /// Defragments the backend of the member at `endpoint`.
    pub async fn defragment(&self, endpoint: &str) -> Result<DefragmentResponse> {
        self.unary_on(endpoint, pb::DefragmentRequest {}, |ch, r| async move {
            MaintenanceClient::new(ch).defragment(r).await
        })
        .await
    }

    /// Active alarms of the cluster.
    pub async fn alarm_list(&self) -> Result<AlarmResponse> {
        let req = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Get as i32,
            member_id: 0,
            alarm: pb::AlarmType::None as i32,
        };
        call!(self, Retry::Failover, MaintenanceClient, alarm, req)
    }

    /// Deactivates `alarm` on `member_id` (0 = all members).
    pub async fn alarm_disarm(
        &self,
        member_id: u64,
        alarm: pb::AlarmType,
    ) -> Result<AlarmResponse> {
        let req = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Deactivate as i32,
            member_id,
            alarm: alarm as i32,
        };
        call!(self, Retry::Write, MaintenanceClient, alarm, req)
    }

    /// Activates `alarm` for `member_id` through raft (etcd 3.4 and 3.5 both
    /// apply it cluster-wide: CORRUPT makes every member refuse writes,
    /// NOSPACE refuses puts and lease grants; both survive restarts until
    /// disarmed). `promote --fence-old-primary` uses CORRUPT.
    pub async fn alarm_activate(
        &self,
        member_id: u64,
        alarm: pb::AlarmType,
    ) -> Result<AlarmResponse> {
        let req = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Activate as i32,
            member_id,
            alarm: alarm as i32,
        };
        call!(self, Retry::Write, MaintenanceClient, alarm, req)
    }

    // --------------------------------------------------------------- Auth

    /// Checks `name` / `password` and returns a token (the client keeps using
    /// its own token; this is for checking credentials).
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<AuthenticateResponse> {
        let req = pb::AuthenticateRequest {
            name: name.to_owned(),
            password: password.to_owned(),
        };
        call!(self, Retry::Failover, AuthClient, authenticate, req)
    }

    /// Enables authentication (needs user `root` with role `root`).
    pub async fn auth_enable(&self) -> Result<AuthEnableResponse> {
        call!(
            self,
            Retry::Failover,
            AuthClient,
            auth_enable,
            pb::AuthEnableRequest {}
        )
    }

    /// Disables authentication.
    pub async fn auth_disable(&self) -> Result<AuthDisableResponse> {
        call!(
            self,
            Retry::Failover,
            AuthClient,
            auth_disable,
            pb::AuthDisableRequest {}
        )
    }

    /// Whether auth is enabled, and the auth revision (etcd 3.5; 3.4 answers
    /// `Unimplemented`).
    pub async fn auth_status(&self) -> Result<AuthStatusResponse> {
        call!(
            self,
            Retry::Failover,
            AuthClient,
            auth_status,
            pb::AuthStatusRequest {}
        )
    }

    /// Adds a user with a plaintext password (etcd hashes it), or without a
    /// password when `no_password` (etcd 3.4+; such a user cannot
    /// authenticate with a password).
    pub async fn user_add(
        &self,
        name: &str,
        password: &str,
        no_password: bool,
    ) -> Result<AuthUserAddResponse> {
        let req = pb::AuthUserAddRequest {
            name: name.to_owned(),
            password: password.to_owned(),
            options: Some(authpb::UserAddOptions { no_password }),
            hashed_password: String::new(),
        };
        self.user_add_request(req).await
    }

    /// Adds a user whose password is a precomputed hash, etcd 3.5 only.
    ///
    /// `hashed_password` is the value of etcd 3.5's `hashedPassword` field:
    /// the **base64** of a bcrypt hash (as in 3.5 WAL entries; see
    /// [`hashed_password_field`]). etcd 3.5.1's API layer overwrites
    /// `hashedPassword` of a `UserAdd` with the hash of the (empty) plaintext
    /// `password`, so one `UserAdd` cannot carry a hash. This therefore makes
    /// two requests: `UserAdd` with a random throwaway password, then
    /// `UserChangePassword` with `hashedPassword` (which etcd passes through
    /// when `password` is empty). Do not use on 3.4 (no such field: the
    /// user would end up with the password "").
    pub async fn user_add_hashed(
        &self,
        name: &str,
        hashed_password: &str,
    ) -> Result<AuthUserAddResponse> {
        let added = self.user_add(name, &throwaway_password(), false).await?;
        self.user_change_password_hashed(name, hashed_password)
            .await?;
        Ok(added)
    }

    /// Sends an `AuthUserAddRequest` as given.
    pub async fn user_add_request(
        &self,
        req: pb::AuthUserAddRequest,
    ) -> Result<AuthUserAddResponse> {
        call!(self, Retry::Write, AuthClient, user_add, req)
    }

    /// A user's roles.
    pub async fn user_get(&self, name: &str) -> Result<AuthUserGetResponse> {
        let req = pb::AuthUserGetRequest {
            name: name.to_owned(),
        };
        call!(self, Retry::Failover, AuthClient, user_get, req)
    }

    /// All user names.
    pub async fn user_list(&self) -> Result<AuthUserListResponse> {
        call!(
            self,
            Retry::Failover,
            AuthClient,
            user_list,
            pb::AuthUserListRequest {}
        )
    }

    /// Deletes a user.
    pub async fn user_delete(&self, name: &str) -> Result<AuthUserDeleteResponse> {
        let req = pb::AuthUserDeleteRequest {
            name: name.to_owned(),
        };
        call!(self, Retry::Write, AuthClient, user_delete, req)
    }

    /// Changes a user's password (plaintext; etcd hashes it).
    pub async fn user_change_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<AuthUserChangePasswordResponse> {
        let req = pb::AuthUserChangePasswordRequest {
            name: name.to_owned(),
            password: password.to_owned(),
            hashed_password: String::new(),
        };
        call!(self, Retry::Write, AuthClient, user_change_password, req)
    }

    /// Changes a user's password to a precomputed hash, etcd 3.5 only:
    /// `hashed_password` is the `hashedPassword` field value, base64 of a
    /// bcrypt hash (see [`hashed_password_field`]).
    pub async fn user_change_password_hashed(
        &self,
        name: &str,
        hashed_password: &str,
    ) -> Result<AuthUserChangePasswordResponse> {
        let req = pb::AuthUserChangePasswordRequest {
            name: name.to_owned(),
            password: String::new(),
            hashed_password: hashed_password.to_owned(),
        };
        call!(self, Retry::Write, AuthClient, user_change_password, req)
    }

    /// Grants `role` to `user`.
    pub async fn user_grant_role(
        &self,
        user: &str,
        role: &str,
    ) -> Result<AuthUserGrantRoleResponse> {
        let req = pb::AuthUserGrantRoleRequest {
            user: user.to_owned(),
            role: role.to_owned(),
        };
        call!(self, Retry::Write, AuthClient, user_grant_role, req)
    }

    /// Revokes `role` from `user`.
    pub async fn user_revoke_role(
        &self,
        user: &str,
        role: &str,
    ) -> Result<AuthUserRevokeRoleResponse> {
        let req = pb::AuthUserRevokeRoleRequest {
            name: user.to_owned(),
            role: role.to_owned(),
        };
        call!(self, Retry::Write, AuthClient, user_revoke_role, req)
    }

    /// Adds a role.
    pub async fn role_add(&self, name: &str) -> Result<AuthRoleAddResponse> {
        let req = pb::AuthRoleAddRequest {
            name: name.to_owned(),
        };
        call!(self, Retry::Write, AuthClient, role_add, req)
    }

    /// A role's permissions.
    pub async fn role_get(&self, role: &str) -> Result<AuthRoleGetResponse> {
        let req = pb::AuthRoleGetRequest {
            role: role.to_owned(),
        };
        call!(self, Retry::Failover, AuthClient, role_get, req)
    }

    /// All role names.
    pub async fn role_list(&self) -> Result<AuthRoleListResponse> {
        call!(
            self,
            Retry::Failover,
            AuthClient,
            role_list,
            pb::AuthRoleListRequest {}
        )
    }

    /// Deletes a role.
    pub async fn role_delete(&self, role: &str) -> Result<AuthRoleDeleteResponse> {
        let req = pb::AuthRoleDeleteRequest {
            role: role.to_owned(),
        };
        call!(self, Retry::Write, AuthClient, role_delete, req)
    }

    /// Grants `perm` to role `name`.
    pub async fn role_grant_permission(
        &self,
        name: &str,
        perm: authpb::Permission,
    ) -> Result<AuthRoleGrantPermissionResponse> {
        let req = pb::AuthRoleGrantPermissionRequest {
            name: name.to_owned(),
            perm: Some(perm),
        };
        call!(self, Retry::Write, AuthClient, role_grant_permission, req)
    }

    /// Revokes the permission on `[key, range_end)` from `role`.
    pub async fn role_revoke_permission(
        &self,
        role: &str,
        key: impl Into<Bytes>,
        range_end: impl Into<Bytes>,
    ) -> Result<AuthRoleRevokePermissionResponse> {
        let req = pb::AuthRoleRevokePermissionRequest {
            role: role.to_owned(),
            key: key.into(),
            range_end: range_end.into(),
        };
        call!(self, Retry::Write, AuthClient, role_revoke_permission, req)
    }
}

/// etcd 3.5's `hashedPassword` field value for a bcrypt hash
/// (`$2a$10$...`): its standard base64 (etcd's auth store base64-decodes the
/// field before storing the hash).
pub fn hashed_password_field(bcrypt_hash: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bcrypt_hash)
}

/// A random password nobody knows (OS-seeded hasher keys, 128 bits).
fn throwaway_password() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut s = String::from("throwaway-");
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0);
        s.push_str(&format!("{:016x}", h.finish()));
    }
    s
}

/// Whether a transaction only reads (safe to send again elsewhere).
fn txn_is_read_only(t: &TxnRequest) -> bool {
    use pb::request_op::Request;
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => true,
            Some(Request::RequestTxn(inner)) => txn_is_read_only(inner),
            Some(Request::RequestPut(_) | Request::RequestDeleteRange(_)) => false,
        })
}

/// The smallest key greater than every key starting with `prefix` (etcd's
/// `range_end` for a prefix read; `[0]` = to the end for an empty prefix or
/// all-0xff prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_normalize() {
        let ok = |s, tls| normalize_endpoint(s, tls).ok();
        assert_eq!(
            ok("http://127.0.0.1:2379/", false),
            Some(("http://127.0.0.1:2379".to_owned(), false))
        );
        assert_eq!(
            ok("127.0.0.1:2379", true),
            Some(("https://127.0.0.1:2379".to_owned(), true))
        );
        assert!(normalize_endpoint("unix://x", false).is_err());
        assert!(normalize_endpoint(" ", false).is_err());
    }

    #[test]
    fn base64_of_hash() {
        assert_eq!(hashed_password_field(""), "");
        assert_eq!(hashed_password_field("f"), "Zg==");
        assert_eq!(hashed_password_field("fo"), "Zm8=");
        assert_eq!(hashed_password_field("foo"), "Zm9v");
        assert_eq!(hashed_password_field("foobar"), "Zm9vYmFy");
        assert_ne!(throwaway_password(), throwaway_password());
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), b"\0");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn config_debug_redacts_password() {
        let mut c = ClientConfig::new(["http://x"]);
        c.user = Some(("u".into(), "hunter2".into()));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
