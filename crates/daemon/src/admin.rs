//! The admin listener: `/status` (JSON), `/metrics` (Prometheus text),
//! `/healthz`, `/readyz` (caught up), `/activez` (runs the learner: the
//! probe that routes the shared peer URL), and `POST /v1/stop` (loopback
//! only; `promote` stops a running replicator with it). A passive HA
//! instance serves it too ([`View::Passive`]): alive, neither ready nor
//! active (so a Service routes the peer port to the active instance only),
//! and who holds the lock.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use etcd_standby_peer::Transport;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::error::{Context, Error, Result};
use crate::status::{NodeState, NodeStatus, ReplayState, ReplayStatus, SourceStatus, StatusCell};
use crate::times::ReceiveTimes;

/// What the admin handlers read.
pub struct AdminState {
    /// The node loop's status.
    pub node: StatusCell<NodeStatus>,
    /// Replay's status, when replay to a standby runs (it is then part of readiness).
    pub replay: Option<StatusCell<ReplayStatus>>,
    /// Metrics registry (text-encoded on each scrape).
    pub registry: Mutex<Registry>,
    /// The primary as seen through its client API and the learner-behind
    /// watchdog (`/status` → `source`).
    pub source: StatusCell<SourceStatus>,
    /// The peer transport (its status is part of `/status`).
    pub transport: Transport,
    /// Readiness: commit within this many entries of the leader's.
    pub ready_lag: u64,
    /// Stops the daemon (`POST /v1/stop`, used by `promote`).
    pub stop: tokio::sync::watch::Sender<bool>,
    /// When entries were received (for the RPO report).
    pub times: ReceiveTimes,
    /// With `--ha`: this instance's name (it is the active one).
    pub ha_instance: Option<String>,
}

/// What a passive `--ha` instance shows while it waits for the lock.
pub struct PassiveState {
    /// This instance's name.
    pub instance: String,
    /// Who holds the lock, as last seen (empty: nobody, or not read yet).
    pub holder: Mutex<String>,
    /// Stops the waiting instance (`POST /v1/stop`).
    pub stop: tokio::sync::watch::Sender<bool>,
}

/// What the listener serves: a passive instance, then the running daemon.
pub enum View {
    /// Waiting for the HA lock.
    Passive(Arc<PassiveState>),
    /// Running (active, or without `--ha`).
    Active(Arc<AdminState>),
}

/// The bound admin listener; its view changes when a passive instance
/// becomes active (one port for the process's whole life).
pub struct Admin {
    view: std::sync::RwLock<Arc<View>>,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl Admin {
    /// Switches what the listener serves.
    pub fn set(&self, view: View) {
        if let Ok(mut v) = self.view.write() {
            *v = Arc::new(view);
        }
    }

    fn view(&self) -> Option<Arc<View>> {
        self.view.read().ok().map(|v| v.clone())
    }
}

/// The recovery point if the standby were promoted now (in `/status` at all
/// times, so a dashboard shows what a disaster would cost):
/// committed-but-unapplied entries (bytes, when the oldest was received),
/// the received-but-unconfirmed tail, the leader's last known commit and
/// the last contact with the leader.
pub fn rpo_now(
    st: &NodeStatus,
    replay: Option<&ReplayStatus>,
    times: &ReceiveTimes,
) -> serde_json::Value {
    let applied = replay.map_or(0, |r| r.standby_checkpoint);
    let unapplied = st.commit_index.saturating_sub(applied);
    let oldest = (unapplied > 0)
        .then(|| times.received_at(applied + 1))
        .flatten()
        .map(crate::clock::rfc3339);
    let contact = (st.last_leader_contact_unix_ms > 0)
        .then(|| crate::clock::rfc3339(crate::clock::from_unix_ms(st.last_leader_contact_unix_ms)));
    serde_json::json!({
        "standby_applied_index": applied,
        "committed_not_applied": unapplied,
        "committed_not_applied_bytes": replay.map_or(0, |r| r.lag_bytes),
        "oldest_not_applied_received_at": oldest,
        "unconfirmed_tail_entries": st.last_durable_index.saturating_sub(st.commit_index),
        "leader_commit_index": st.leader_commit_index,
        "committed_not_received_known": st.leader_commit_index.saturating_sub(st.last_durable_index),
        "last_leader_contact": contact,
    })
}

/// Readiness: following, caught up with the leader's commit, no alarm, and
/// (with a standby) replaying within `ready_lag` entries. `Err` says why not.
pub fn readiness(
    st: &NodeStatus,
    replay: Option<&ReplayStatus>,
    ready_lag: u64,
) -> std::result::Result<(), String> {
    let caught_up = !st.leader_id.is_empty()
        && st.leader_commit_index > 0
        && st.commit_index + ready_lag >= st.leader_commit_index;
    let replay_ok =
        replay.is_none_or(|r| r.state == ReplayState::Replaying && r.lag_entries <= ready_lag);
    if st.state == NodeState::Following && caught_up && st.alarms.is_empty() && replay_ok {
        Ok(())
    } else {
        Err(format!(
            "not ready: state={} commit={} leader_commit={} alarms={} replay={}",
            st.state,
            st.commit_index,
            st.leader_commit_index,
            st.alarms.len(),
            replay.map_or("off".to_owned(), |r| format!(
                "{} lag={}",
                r.state, r.lag_entries
            )),
        ))
    }
}

fn reply(code: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Stopping the replicator (what `promote` does first) is for the operator
/// on this host only, whatever address the listener binds (a Kubernetes
/// pod binds `0.0.0.0` for probes and scrapes).
fn stop_allowed_from(peer: SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V4(a) => a.is_loopback(),
        std::net::IpAddr::V6(a) => {
            a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// `POST /v1/stop` (loopback only) and the GET-only rule, for both views.
fn stop_or_refuse(
    stop: &tokio::sync::watch::Sender<bool>,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Option<Response<Full<Bytes>>> {
    if req.method() == hyper::Method::POST && req.uri().path() == "/v1/stop" {
        if !stop_allowed_from(peer) {
            return Some(reply(
                StatusCode::FORBIDDEN,
                "text/plain",
                "POST /v1/stop is accepted from loopback only\n",
            ));
        }
        tracing::warn!(%peer, "stop requested through the admin API");
        let _ = stop.send(true);
        return Some(reply(
            StatusCode::ACCEPTED,
            "application/json",
            "{\"stopping\":true}",
        ));
    }
    (req.method() != hyper::Method::GET)
        .then(|| reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n"))
}

fn handle_passive(
    state: &PassiveState,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    if let Some(r) = stop_or_refuse(&state.stop, req, peer) {
        return r;
    }
    let holder = state.holder.lock().map(|h| h.clone()).unwrap_or_default();
    match req.uri().path() {
        "/status" => {
            let body = serde_json::json!({
                "ha": {"role": "passive", "instance": state.instance, "holder": holder},
            });
            reply(StatusCode::OK, "application/json", body.to_string())
        }
        "/metrics" => {
            use crate::metrics::{HA_ACTIVE, HA_ACTIVE_HELP};
            reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                format!(
                    "# HELP {HA_ACTIVE} {HA_ACTIVE_HELP}.\n# TYPE {HA_ACTIVE} gauge\n{HA_ACTIVE} 0\n# EOF\n"
                ),
            )
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok (passive)\n"),
        "/readyz" | "/activez" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("not ready: passive, the HA lock is held by {holder}\n"),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn handle(state: &AdminState, req: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    if let Some(r) = stop_or_refuse(&state.stop, req, peer) {
        return r;
    }
    let st = state.node.get();
    let replay = state.replay.as_ref().map(StatusCell::get);
    match req.uri().path() {
        "/status" => {
            let body = serde_json::json!({
                "node": st,
                "replay": replay,
                "source": state.source.get(),
                "rpo": rpo_now(&st, replay.as_ref(), &state.times),
                "peers": state.transport.status(),
                "ha": state.ha_instance.as_ref().map(|i| serde_json::json!({"role": "active", "instance": i})),
            });
            reply(StatusCode::OK, "application/json", body.to_string())
        }
        "/metrics" => {
            let mut out = String::new();
            let enc = state
                .registry
                .lock()
                .map_err(|_| std::fmt::Error)
                .and_then(|r| prometheus_client::encoding::text::encode(&mut out, &r));
            match enc {
                Ok(()) => reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    out,
                ),
                Err(_) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "metrics encoding failed\n",
                ),
            }
        }
        "/healthz" => {
            if st.state.is_unhealthy() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("{}\n", st.state),
                )
            } else if st.state == NodeState::DiskFull {
                // Alive and recovering by itself: a restart frees no space.
                reply(
                    StatusCode::OK,
                    "text/plain",
                    "ok (disk_full: acknowledging nothing until space returns)\n",
                )
            } else {
                reply(StatusCode::OK, "text/plain", "ok\n")
            }
        }
        // The instance that runs the learner, caught up or not: the probe
        // that routes the shared peer URL (a lagging learner must still be
        // reachable by the leader, or it never catches up).
        "/activez" => {
            if st.state.is_unhealthy() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not active: {}\n", st.state),
                )
            } else {
                reply(StatusCode::OK, "text/plain", "active\n")
            }
        }
        "/readyz" => match readiness(&st, replay.as_ref(), state.ready_lag) {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n"),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Binds the admin listener's address; a failure carries its own code (it
/// is not the local log's IO, which a bare IO error would be called).
async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        crate::error::Error::refusal(
            crate::codes::ADMIN_LISTEN,
            format!("binding the admin listener on {addr}: {e}"),
        )
    })
}

/// Binds the admin listener and serves `view` in the background.
pub async fn serve(addr: SocketAddr, view: View) -> Result<Arc<Admin>> {
    let listener = bind(addr).await?;
    let local = listener.local_addr().context("admin listener address")?;
    let admin = Arc::new(Admin {
        view: std::sync::RwLock::new(Arc::new(view)),
        addr: local,
    });
    let served = admin.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let admin = served.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let resp = match admin.view().as_deref() {
                        Some(View::Active(state)) => handle(state, &req, peer),
                        Some(View::Passive(state)) => handle_passive(state, &req, peer),
                        None => reply(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "text/plain",
                            "admin state poisoned\n",
                        ),
                    };
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(admin)
}

/// One request to a running daemon's admin listener; the JSON body back.
async fn request(addr: &str, method: hyper::Method, path: &str) -> Result<serde_json::Value> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| {
            format!("connecting to the admin listener at {addr} (is `etcd-standby run` up?)")
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("admin HTTP handshake")?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(hyper::header::HOST, addr)
        .body(http_body_util::Empty::<Bytes>::new())
        .context("building the request")?;
    let what = format!("{method} {path}");
    let resp = sender.send_request(req).await.context(what.clone())?;
    let code = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .with_context(|| format!("reading the answer to {what}"))?
        .to_bytes();
    if !code.is_success() {
        return Err(Error::msg(format!(
            "{what}: {code}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    serde_json::from_slice(&body).with_context(|| format!("parsing the answer to {what}"))
}

/// `etcd-standby status`: fetches `/status` from a running daemon.
pub async fn fetch_status(addr: &str) -> Result<serde_json::Value> {
    request(addr, hyper::Method::GET, "/status").await
}

/// A POST to a running daemon's admin listener (`/v1/stop`).
pub async fn post(addr: &str, path: &str) -> Result<serde_json::Value> {
    request(addr, hyper::Method::POST, path).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_admin_address_in_use_is_reported_with_its_own_code_not_as_local_log_io() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = taken.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let Err(e) = bind(addr).await else {
            panic!("bound an address in use");
        };
        assert_eq!(e.code().id, "ES-4004", "{e}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }

    #[test]
    fn the_stop_endpoint_is_for_loopback_clients_only() {
        for ok in [
            "127.0.0.1:5",
            "127.9.9.9:5",
            "[::1]:5",
            "[::ffff:127.0.0.1]:5",
        ] {
            assert!(stop_allowed_from(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "10.0.0.7:5",
            "192.168.1.2:5",
            "[fe80::1]:5",
            "[::ffff:10.0.0.7]:5",
            "0.0.0.0:5",
        ] {
            assert!(!stop_allowed_from(no.parse().unwrap()), "{no}");
        }
    }
}
