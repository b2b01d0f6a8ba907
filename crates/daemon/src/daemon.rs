//! `etcd-standby run | leave`: preflight, join, and the wiring of the
//! node loop, replay and the admin listener.
//!
//! `run` joins the primary as a learner (or re-uses the identity in its data
//! dir), serves etcd's peer protocol, and keeps the received raft log durable
//! in etcd's WAL format; with a standby configured, replay follows it. See
//! `ARCHITECTURE.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_standby_client::{Client, ClientConfig};
use etcd_standby_decode::Member;
use etcd_standby_follower::{Follower, Restored};
use etcd_standby_peer::{PeerConfig, PeerIdentity, Transport, VersionInfo};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

use crate::admin;
use crate::backoff::Backoff;
use crate::committed::{CommittedTail, TailLimits};
use crate::datadir;
use crate::error::{Context, Error, Result, bail};
use crate::ha;
use crate::metrics;
use crate::monitor::MonitorOptions;
use crate::node::{Exit, Node, NodeOptions};
use crate::replay;
use crate::status::{NodeState, NodeStatus, ReplayState, ReplayStatus, SourceStatus, StatusCell};
use crate::store::{Identity, Layout, LocalLog};
use crate::tls::PeerTlsFiles;

/// Exit code when the cluster removed this member.
pub const EXIT_REMOVED: i32 = 3;

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// How to reach the primary's client API (endpoints, TLS, user).
    pub source: ClientConfig,
    /// Address to bind the peer listener.
    pub peer_listen: SocketAddr,
    /// The peer URL registered with the cluster (others dial it).
    pub advertise_peer_url: String,
    /// Peer TLS files.
    pub peer_tls: PeerTlsFiles,
    /// `--peer-dial-via`: advertised member `host:port` → where to connect.
    pub peer_dial_via: Vec<(String, String)>,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Our name.
    pub name: String,
    /// Admin listener address.
    pub admin_listen: SocketAddr,
    /// Node tunables.
    pub node: NodeOptions,
    /// WAL segment size override (tests).
    pub wal_segment_bytes: Option<u64>,
    /// Replay to a standby (None: log-only learner).
    pub replay: Option<replay::ReplayOptions>,
    /// `--ha`: one active instance among several (needs `replay`).
    pub ha: Option<ha::HaOptions>,
}

/// The daemon's calls to the source fail fast (10 s) rather than hang.
fn source_client(cfg: &ClientConfig) -> ClientConfig {
    let mut cfg = cfg.clone();
    cfg.request_timeout = cfg.request_timeout.min(Duration::from_secs(10));
    cfg
}

/// A MemberList entry as the workspace's [`Member`].
fn member_from_client(m: &etcd_standby_client::Member) -> Member {
    Member {
        id: m.id,
        peer_urls: m.peer_ur_ls.clone(),
        name: m.name.clone(),
        client_urls: m.client_ur_ls.clone(),
        is_learner: m.is_learner,
    }
}

/// A learner that was added with exactly `url` and never started: the
/// member a join of ours created (a crashed join, or a retried MemberAdd
/// whose first try was applied after all).
fn is_our_unstarted_learner(m: &Member, url: &str) -> bool {
    m.is_learner && m.name.is_empty() && m.peer_urls == [url]
}

/// Source cluster facts gathered before joining.
struct Preflight {
    members: Vec<Member>,
    version: VersionInfo,
}

/// Checks the cluster can take us: versions 3.4/3.5, a free learner slot
/// (etcd allows one), our peer URL not taken. An unstarted learner with
/// exactly our peer URL is adopted (a join that crashed after MemberAdd).
async fn preflight(
    client: &Client,
    opts: &RunOptions,
    identity: Option<&Identity>,
) -> Result<(Preflight, Option<u64>)> {
    let list = client
        .member_list()
        .await
        .context("listing the source cluster's members")?;
    let members: Vec<Member> = list.members.iter().map(member_from_client).collect();
    let mut version = None;
    for ep in &opts.source.endpoints {
        match client.status(ep).await {
            Ok(st) => {
                let v = st.version.clone();
                let ok = v.starts_with("3.4.") || v.starts_with("3.5.");
                if !ok {
                    bail!("{ep} runs etcd {v}; etcd-standby supports 3.4 and 3.5");
                }
                version.get_or_insert(v);
            }
            Err(e) => tracing::warn!(endpoint = %ep, error = %e, "status failed"),
        }
    }
    let Some(server) = version else {
        bail!(
            "no source endpoint answered Status: {:?}",
            opts.source.endpoints
        );
    };
    let cluster = match server.split('.').take(2).collect::<Vec<_>>().as_slice() {
        [a, b] => format!("{a}.{b}.0"),
        _ => server.clone(),
    };
    let pre = Preflight {
        members,
        version: VersionInfo { server, cluster },
    };
    if let Some(id) = identity {
        if !pre.members.iter().any(|m| m.id == id.member_id) {
            bail!(
                "member {:x} (from {}) is no longer in the source cluster; it was removed. Wipe {} and run again to re-join with a new ID",
                id.member_id,
                opts.data_dir.join("standby.json").display(),
                opts.data_dir.display()
            );
        }
        return Ok((pre, None));
    }
    let url = &opts.advertise_peer_url;
    if let Some(m) = pre
        .members
        .iter()
        .find(|m| m.peer_urls.iter().any(|u| u == url))
    {
        if is_our_unstarted_learner(m, url) {
            let id = m.id;
            tracing::warn!(member = %format_args!("{id:x}"), %url, "adopting an unstarted learner registered with our peer URL (an earlier join did not finish)");
            return Ok((pre, Some(id)));
        }
        bail!(
            "peer URL {url} is already used by member {:x} ({}); choose another --advertise-peer-url",
            m.id,
            if m.name.is_empty() {
                "unstarted"
            } else {
                &m.name
            }
        );
    }
    if let Some(l) = pre.members.iter().find(|m| m.is_learner) {
        bail!(
            "the source cluster already has a learner ({:x} {} {:?}); etcd allows one. Remove it (`etcdctl member remove {:x}`) or promote it first",
            l.id,
            if l.name.is_empty() {
                "unstarted"
            } else {
                &l.name
            },
            l.peer_urls,
            l.id
        );
    }
    Ok((pre, None))
}

/// `etcd-standby run`.
pub async fn run(opts: RunOptions) -> Result<i32> {
    let layout = Layout {
        root: opts.data_dir.clone(),
        segment_bytes: opts.wal_segment_bytes,
    };
    // Refused for good after a promotion, and while one is under way.
    datadir::refuse_if_promoted(&layout)?;
    let lock = datadir::lock(&layout)?;
    let mut opts = opts;
    provision_standby_identity(&mut opts, &layout)?;
    if let Some(r) = &opts.replay {
        if r.preserve_revisions && opts.ha.is_some() {
            bail!(
                "--preserve-revisions and --ha cannot run together: the HA lock is a key on the \
                 standby, and every write of it would give the standby a revision the primary \
                 does not have"
            );
        }
        refuse_promoted_standby(r).await?;
    }
    let existing = layout.read_identity()?;
    if let Some(id) = &existing
        && id.removed
    {
        bail!(
            "member {:x} was removed from cluster {:x}; this data dir cannot rejoin. Move {} away and run again",
            id.member_id,
            id.cluster_id,
            opts.data_dir.display()
        );
    }
    let client = Client::connect(source_client(&opts.source))
        .await
        .context("connecting to the source cluster")?;
    let active = match &opts.ha {
        Some(h) => match become_active(&opts, h, &client).await? {
            Some(a) => Some(a),
            None => return Ok(0),
        },
        None => None,
    };
    let joined = join(&opts, &layout, existing, &client, active.as_ref()).await;
    let (identity, log, restored, pre) = match joined {
        Ok(j) => j,
        Err(e) => {
            if let Some(a) = active {
                // Give the lock up at once: another instance may do better.
                a.give_up().await;
            }
            return lost_lock_or(e);
        }
    };
    if let (Some(a), Some(r)) = (&active, opts.replay.as_mut()) {
        r.sink.lock = Some(a.held.fence.clone());
    }
    let code = serve(opts, layout, identity, log, restored, pre, active, client).await;
    drop(lock);
    code
}

/// With no standby user configured, replay uses an identity of its own
/// (saved in the data dir, 0600): the sink creates that user with the root
/// role on the standby before it mirrors an `AuthEnable`, so a primary that
/// turns auth on later does not halt replay. Not with `--ha`: instances have
/// their own data dirs, so they would not share the password.
fn provision_standby_identity(opts: &mut RunOptions, layout: &Layout) -> Result<()> {
    let ha = opts.ha.is_some();
    let Some(r) = opts.replay.as_mut() else {
        return Ok(());
    };
    if r.sink.client.user.is_some() || r.sink.standby_user.is_some() {
        return Ok(());
    }
    if ha {
        tracing::warn!(
            "--ha without --standby-user: if the primary enables auth, replay halts (ES-1106) \
             rather than lock the replicator out; give every instance the same --standby-user"
        );
        return Ok(());
    }
    let (id, path) = datadir::standby_identity(layout)?;
    tracing::info!(
        user = %id.user,
        file = %path.display(),
        "no --standby-user: replay uses its own standby identity (created with the root role on \
         the standby before auth is enabled there; the password is in the file, mode 0600)"
    );
    r.sink.client.user = Some((id.user, id.password));
    Ok(())
}

/// Joins the source as (or resumes) the learner: the identity from the data
/// dir, the standby's HA record or a new MemberAdd; preflight checks; the
/// local log. Holding the HA lock, it also registers the identity there.
async fn join(
    opts: &RunOptions,
    layout: &Layout,
    existing: Option<Identity>,
    client: &Client,
    active: Option<&Active>,
) -> Result<(Identity, LocalLog, Restored, Preflight)> {
    // Taking over: the member ID comes from the standby's record, our
    // (empty) local log starts fresh and the leader fills it.
    let takeover = match (&existing, active.and_then(|a| a.record.as_ref())) {
        (Some(id), Some(rec)) if rec.member() != Some(id.member_id) => bail!(
            "{} holds member {:x}, but the standby's HA record names member {} (instance {:?}); \
             this data dir belongs to an older learner. Move it away and run again",
            opts.data_dir.join("standby.json").display(),
            id.member_id,
            rec.member_id,
            rec.instance
        ),
        (None, Some(rec)) => Some(Identity {
            member_id: rec.member().unwrap_or_default(),
            cluster_id: rec.cluster().unwrap_or_default(),
            peer_urls: vec![opts.advertise_peer_url.clone()],
            name: opts.name.clone(),
            removed: false,
        }),
        _ => None,
    };
    let (pre, adopt) = preflight(client, opts, existing.as_ref().or(takeover.as_ref())).await?;
    let adopt = adopt.or(takeover.as_ref().map(|t| t.member_id));
    let (identity, log, restored) = match existing {
        Some(id) => {
            let (log, restored) = LocalLog::open(layout, &id)?;
            tracing::info!(member = %format_args!("{:x}", id.member_id), base = log.base().0, last = log.last().0, "restarting from the local log");
            (id, log, restored)
        }
        None => {
            let (member_id, cluster_id) = match adopt {
                Some(mid) => {
                    let st = client.member_list().await.context("member list")?;
                    (mid, st.header.map(|h| h.cluster_id).unwrap_or_default())
                }
                None => member_add_with_retry(client, &opts.advertise_peer_url).await?,
            };
            if cluster_id == 0 {
                bail!("the source cluster reported cluster ID 0");
            }
            let id = Identity {
                member_id,
                cluster_id,
                peer_urls: vec![opts.advertise_peer_url.clone()],
                name: opts.name.clone(),
                removed: false,
            };
            layout.write_identity(&id)?;
            let log = LocalLog::create(layout, &id)?;
            tracing::info!(member = %format_args!("{member_id:x}"), cluster = %format_args!("{cluster_id:x}"), "joined as a learner");
            (id, log, Restored::default())
        }
    };
    let identity = match active {
        Some(a) => a.register(layout, identity, &pre.members, opts).await?,
        None => identity,
    };
    if identity.peer_urls.first() != Some(&opts.advertise_peer_url) {
        bail!(
            "this data dir registered peer URL {:?}, but --advertise-peer-url is {}; the cluster dials the registered one",
            identity.peer_urls,
            opts.advertise_peer_url
        );
    }
    Ok((identity, log, restored, pre))
}

/// A start that failed because the HA lock was lost exits like a running
/// instance that lost it.
fn lost_lock_or(e: Error) -> Result<i32> {
    if e.is_lost_lock() {
        eprintln!("etcd-standby: {e}");
        return Ok(ha::EXIT_LOST_LOCK);
    }
    Err(e)
}

/// This instance, active: it holds the HA lock.
/// The lock is kept alive from the moment it is acquired (joining may
/// take longer than its TTL: MemberAdd waits while etcd says "unhealthy
/// cluster").
struct Active {
    standby: Client,
    keys: etcd_standby_sink::ReservedKeys,
    held: etcd_standby_sink::ha::HeldLock,
    /// The admin listener, bound while passive.
    admin: Arc<admin::Admin>,
    /// The learner identity on the standby (None: no instance joined yet).
    record: Option<etcd_standby_sink::ha::MemberRecord>,
    /// Set (by the keeper, or by replay on a failed lock compare) once
    /// the lock must be considered lost.
    lost_tx: watch::Sender<bool>,
    /// Held so the channel stays open: a `send` with no receiver is dropped.
    lost: watch::Receiver<bool>,
    /// Asks the keeper to give the lock up (nothing more is written).
    release: watch::Sender<bool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Active {
    /// Gives the lock up (bounded) so a passive instance takes over at once.
    async fn give_up(self) {
        let _ = self.release.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.keeper).await;
    }

    /// Checks that the primary dials us for `identity` and records the
    /// identity on the standby. All instances of one pair advertise the
    /// same peer URL (a VIP, DNS name or Service that routes to the active
    /// one): the learner's registered URL is never changed, because
    /// `MemberUpdate` on a learner makes etcd 3.4 and 3.5 forget that it is
    /// a learner (etcd-io/etcd#21694) — an implicit promotion.
    async fn register(
        &self,
        layout: &Layout,
        mut identity: Identity,
        members: &[Member],
        opts: &RunOptions,
    ) -> Result<Identity> {
        let url = opts.advertise_peer_url.clone();
        let registered = members
            .iter()
            .find(|m| m.id == identity.member_id)
            .map(|m| m.peer_urls.clone())
            .unwrap_or_default();
        // Absent: we added it just now, with our URL.
        if !registered.is_empty() && registered != [url.clone()] {
            return Err(Error::refusal(
                crate::codes::PEER_URL_MISMATCH,
                format!(
                    "the learner {:x} is registered on the primary with peer URL {:?}, but this instance \
                 advertises {url}. Every --ha instance must use the same --advertise-peer-url (a VIP, \
                 DNS name or Service that routes to the active instance): etcd-standby never changes a \
                 learner's peer URL, because MemberUpdate makes etcd 3.4/3.5 forget that the member \
                 is a learner (etcd-io/etcd#21694)",
                    identity.member_id, registered
                ),
            ));
        }
        if identity.peer_urls != [url.clone()] {
            identity.peer_urls = vec![url.clone()];
            layout.write_identity(&identity)?;
        }
        let rec = etcd_standby_sink::ha::MemberRecord::new(
            identity.member_id,
            identity.cluster_id,
            vec![url],
            &self.held.holder.instance,
        );
        etcd_standby_sink::ha::write_member(&self.standby, &self.keys, &self.held.fence, &rec)
            .await
            .context("recording the learner identity on the standby")?;
        Ok(identity)
    }
}

/// `--ha`: waits (passive) until this instance holds the lock on the
/// standby. `None` when stopped by a signal while passive.
async fn become_active(
    opts: &RunOptions,
    h: &ha::HaOptions,
    source: &Client,
) -> Result<Option<Active>> {
    let Some(r) = &opts.replay else {
        bail!("--ha needs --standby-endpoints: the HA lock lives on the standby");
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    // Passive instances serve the admin listener too: alive, not ready.
    let passive = Arc::new(admin::PassiveState {
        instance: h.instance.clone(),
        holder: Mutex::new(String::new()),
        stop: stop_tx.clone(),
    });
    let admin = admin::serve(opts.admin_listen, admin::View::Passive(passive.clone())).await?;
    tracing::info!(admin = %admin.addr, instance = %h.instance, "passive: waiting for the HA lock");
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let cluster_id = loop {
        match source.member_list().await {
            Ok(l) => break l.header.map(|h| h.cluster_id).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "HA: cannot reach the source to learn its cluster ID; retrying");
                let mut stop = stop_rx.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.changed() => return Ok(None),
                }
            }
        }
    };
    let standby = Client::connect(r.sink.client.clone())
        .await
        .context("connecting to the standby (for the HA lock)")?;
    let keys = etcd_standby_sink::ReservedKeys::new(&r.sink.keys, cluster_id);
    let me = etcd_standby_sink::ha::LockHolder {
        instance: h.instance.clone(),
        host: crate::promote::default_host(),
        pid: std::process::id(),
        peer_url: opts.advertise_peer_url.clone(),
        lease: String::new(),
        acquired_at: crate::clock::rfc3339(std::time::SystemTime::now()),
    };
    let got = ha::wait_for_lock(&standby, &keys, me, h, &passive.holder, stop_rx).await;
    signal.abort();
    let Some((held, acquired)) = got? else {
        return Ok(None);
    };
    let (lost_tx, lost) = watch::channel(false);
    let (release, release_rx) = watch::channel(false);
    let keeper = tokio::spawn(ha::keep_lock(
        standby.clone(),
        held.clone(),
        ha::LockClock::new(acquired, h.lock_ttl),
        lost_tx.clone(),
        release_rx,
    ));
    let active = Active {
        standby,
        keys,
        held,
        admin,
        record: None,
        lost_tx,
        lost,
        release,
        keeper,
    };
    match etcd_standby_sink::ha::read_member(&active.standby, &active.keys).await {
        Ok(record) => Ok(Some(Active { record, ..active })),
        Err(e) => {
            active.give_up().await;
            Err(Error::from(e).context("reading the learner identity on the standby"))
        }
    }
}

/// A standby that was promoted is a primary: `run` must not write to it.
/// Checked at start when the standby answers within a few seconds (replay
/// refuses it again at connect otherwise).
async fn refuse_promoted_standby(r: &replay::ReplayOptions) -> Result<()> {
    let mut cfg = r.sink.client.clone();
    cfg.connect_timeout = cfg.connect_timeout.min(Duration::from_secs(3));
    cfg.request_timeout = cfg.request_timeout.min(Duration::from_secs(3));
    let check = async {
        let client = Client::connect(cfg).await.ok()?;
        let mut key = r.sink.keys.reserved().to_vec();
        key.extend_from_slice(b"promoted");
        let got = client
            .range(etcd_standby_client::pb::RangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await
            .ok()?;
        got.kvs.first().map(|kv| kv.value.clone())
    };
    if let Ok(Some(record)) = tokio::time::timeout(Duration::from_secs(6), check).await {
        let v: serde_json::Value = serde_json::from_slice(&record).unwrap_or_default();
        return Err(Error::refusal(
            crate::codes::PROMOTED,
            format!(
                "the standby was promoted to primary at {} by {} (epoch {}); `run` never writes to a promoted standby. \
             To replicate again, seed a fresh standby",
                v["at"].as_str().unwrap_or("?"),
                v["by"].as_str().unwrap_or("?"),
                v["epoch"].as_u64().unwrap_or(0)
            ),
        ));
    }
    Ok(())
}

/// MemberAdd as a learner; returns (member ID, cluster ID). etcd refuses
/// membership changes until its leader has been connected to every voter
/// for 5 s ("unhealthy cluster", e.g. right after a restart); that and
/// unavailability are retried for a minute, anything else fails at once.
/// A retried MemberAdd whose first try was applied after all is answered
/// "member ID already exist" (etcd derives the ID from the peer URLs and the
/// second) or "Peer URLs already exists": then the unstarted learner
/// registered with exactly our URL is ours.
async fn member_add_with_retry(client: &Client, url: &str) -> Result<(u64, u64)> {
    let added = retry_membership("adding this process as a learner (MemberAdd)", || {
        client.member_add_learner(vec![url.to_owned()])
    })
    .await;
    match added {
        Ok(resp) => {
            let m = resp.member.context("MemberAdd returned no member")?;
            let h = resp.header.context("MemberAdd returned no header")?;
            Ok((m.id, h.cluster_id))
        }
        Err(e) => {
            let dup = match e.root() {
                Error::Client(c) => matches!(
                    c.etcd_error(),
                    Some(
                        etcd_standby_client::EtcdError::MemberExists
                            | etcd_standby_client::EtcdError::PeerUrlExists
                    )
                ),
                _ => false,
            };
            if !dup {
                return Err(e);
            }
            let list = client.member_list().await.context("member list")?;
            let cluster_id = list.header.map(|h| h.cluster_id).unwrap_or_default();
            match list
                .members
                .iter()
                .map(member_from_client)
                .find(|m| is_our_unstarted_learner(m, url))
            {
                Some(m) => {
                    tracing::warn!(member = %format_args!("{:x}", m.id), %url, "MemberAdd was applied by an earlier try; adopting that learner");
                    Ok((m.id, cluster_id))
                }
                None => Err(e),
            }
        }
    }
}

/// A membership call, retried for a minute while etcd says "unhealthy
/// cluster" or is unavailable; anything else fails at once with `what`.
async fn retry_membership<T, F, Fut>(what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = etcd_standby_client::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_millis(500));
    loop {
        match call().await {
            Ok(r) => return Ok(r),
            Err(e)
                if (e.etcd_error() == Some(etcd_standby_client::EtcdError::Unhealthy)
                    || e.is_unavailable())
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(error = %e, "{what}: refused for now; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e).context(what.to_owned()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    opts: RunOptions,
    layout: Layout,
    identity: Identity,
    mut log: LocalLog,
    restored: Restored,
    pre: Preflight,
    active: Option<Active>,
    source: Client,
) -> Result<i32> {
    let Preflight { members, version } = pre;
    let watchdog = watchdog_options();
    let follower = Follower::new(
        identity.member_id,
        restored,
        &etcd_standby_follower::raft_logger(),
    )
    .context("starting the raft core")?;
    let (server_tls, client_tls) = if opts.peer_tls.any() {
        (Some(opts.peer_tls.server()?), Some(opts.peer_tls.client()?))
    } else {
        (None, None)
    };
    let (in_tx, in_rx) = mpsc::channel(4096);
    let snapshot_dir = layout.snap();
    std::fs::create_dir_all(&snapshot_dir)
        .with_context(|| format!("creating {}", snapshot_dir.display()))?;
    let transport = Transport::start(
        PeerConfig {
            identity: PeerIdentity {
                member_id: identity.member_id,
                cluster_id: identity.cluster_id,
                peer_urls: identity.peer_urls.clone(),
            },
            listen: opts.peer_listen,
            server_tls,
            client_tls,
            snapshot_dir,
            initial_version: version,
            dial_via: opts.peer_dial_via.clone(),
        },
        in_tx,
    )
    .await
    .context("starting the peer listener")?;
    let mut registry = Registry::default();
    if opts.ha.is_some() {
        // 1 here; a passive instance's listener answers 0.
        metrics::register_ha_active(&mut registry).set(1);
    }
    let metrics = metrics::LearnerMetrics::new(&mut registry);
    transport.metrics().register(&mut registry);
    let node_status = StatusCell::<NodeStatus>::default();
    let replay_status = StatusCell::<ReplayStatus>::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    // HA: the lock is being kept; losing it stops everything at once.
    let (lost_tx, lost_rx) = match &active {
        Some(a) => (a.lost_tx.clone(), a.lost.clone()),
        None => watch::channel(false),
    };
    if active.is_some() {
        let (mut lost, stop) = (lost_rx.clone(), stop_tx.clone());
        tokio::spawn(async move {
            if lost.wait_for(|l| *l).await.is_ok() {
                let _ = stop.send(true);
            }
        });
    }
    let mut committed = None;
    let mut replay_task = None;
    if let Some(ropts) = opts.replay.clone() {
        let rmetrics = metrics::ReplayMetrics::new(&mut registry);
        let (tail, reader) = CommittedTail::new(TailLimits::default(), layout.wal());
        committed = Some(tail);
        tokio::spawn(watch_replay(
            reader.clone(),
            replay_status.clone(),
            rmetrics.clone(),
            watchdog,
            stop_rx.clone(),
        ));
        let retention = log.retain_for_replay();
        let times = log.receive_times();
        let (layout, status, stop) = (layout.clone(), replay_status.clone(), stop_rx.clone());
        let cluster_id = identity.cluster_id;
        let fence_stop = stop_tx.clone();
        replay_task = Some(tokio::spawn(async move {
            let links = replay::ReplayLinks {
                status: status.clone(),
                metrics: rmetrics.clone(),
                retention,
                reader,
                times,
            };
            let res = replay::run(ropts, layout, cluster_id, links, stop).await;
            if let Err(e) = &res {
                if e.is_lost_lock() {
                    let _ = lost_tx.send(true);
                }
                let state = if e.is_fenced() {
                    // The standby is someone else's now (promoted, or
                    // another replicator): following the primary is pointless.
                    tracing::error!(error = %e, "replay fenced; stopping the replicator");
                    let _ = fence_stop.send(true);
                    ReplayState::Fenced
                } else {
                    tracing::error!(error = %e, code = e.code().id, "replay stopped; the learner keeps receiving");
                    ReplayState::Halted
                };
                rmetrics.set_replay_state(state);
                status.update(|s| {
                    s.state = state;
                    s.error = Some(e.to_string());
                    s.error_code = Some(e.code().id);
                });
            }
            res
        }));
    }
    let source_status = StatusCell::<SourceStatus>::default();
    tokio::spawn(watch_source(
        SourceWatch {
            client: source,
            endpoints: opts.source.endpoints.clone(),
            node: node_status.clone(),
            transport: transport.clone(),
            status: source_status.clone(),
            metrics: metrics::SourceMetrics::new(&mut registry),
            opts: watchdog,
        },
        stop_rx.clone(),
    ));
    let admin_state = Arc::new(admin::AdminState {
        node: node_status.clone(),
        replay: opts.replay.is_some().then(|| replay_status.clone()),
        source: source_status,
        registry: Mutex::new(registry),
        transport: transport.clone(),
        ready_lag: 1000,
        stop: stop_tx.clone(),
        times: log.receive_times(),
        ha_instance: opts.ha.as_ref().map(|h| h.instance.clone()),
    });
    let admin_addr = match &active {
        Some(a) => {
            a.admin.set(admin::View::Active(admin_state));
            a.admin.addr
        }
        None => {
            admin::serve(opts.admin_listen, admin::View::Active(admin_state))
                .await?
                .addr
        }
    };
    datadir::write_admin_addr(&layout, &admin_addr.to_string())?;
    tracing::info!(peer = %transport.local_addr(), admin = %admin_addr, "serving");
    let node = Node {
        follower,
        log,
        outbound: transport.clone(),
        member_id: identity.member_id,
        cluster_id: identity.cluster_id,
        status: node_status.clone(),
        metrics,
        opts: opts.node.clone(),
        initial_members: members,
        committed,
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let result = node.run(in_rx, stop_rx).await;
    transport.shutdown().await;
    if let Some(t) = replay_task {
        // The node loop ended (stop or removal): give replay a moment to flush.
        if tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .is_err()
        {
            tracing::warn!(
                "replay did not finish within 10 s of the node loop; it resumes from the standby's checkpoint on restart"
            );
        }
    }
    if let Some(a) = active {
        // Replay has written its last txn: release the lock so a passive
        // instance takes over at once.
        a.give_up().await;
    }
    match result {
        Ok(Exit::Stopped) if *lost_rx.borrow() => {
            eprintln!(
                "etcd-standby: this instance lost the HA lock (another instance is active, or the \
                 standby was unreachable for longer than --ha-lock-ttl); it stopped writing. \
                 Restart it to wait as a passive instance."
            );
            Ok(ha::EXIT_LOST_LOCK)
        }
        Ok(Exit::Stopped) => {
            tracing::info!("stopped");
            Ok(0)
        }
        Ok(Exit::Removed(why)) => {
            eprintln!(
                "etcd-standby: this member was removed from the source cluster ({why}). \
                 The data dir cannot rejoin; move it away and run again to join with a new ID."
            );
            Ok(EXIT_REMOVED)
        }
        Err(e) => {
            node_status.update(|s| {
                s.state = NodeState::Failed;
                s.error = Some(e.to_string());
                s.error_code = Some(e.code().id);
            });
            Err(e)
        }
    }
}

/// The replay watchdog and progress log ([`crate::monitor`]), once a second.
async fn watch_replay(
    reader: crate::committed::CommittedReader,
    status: StatusCell<ReplayStatus>,
    metrics: metrics::ReplayMetrics,
    opts: MonitorOptions,
    mut stop: watch::Receiver<bool>,
) {
    use crate::monitor::{Monitor, Observation, Say};
    let mut monitor = Monitor::new(opts, std::time::Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let st = status.get();
        let now = std::time::Instant::now();
        let o = Observation {
            applied: st.applied_index,
            committed: reader.point().index,
            state: st.state,
        };
        for say in monitor.observe(o, now) {
            match say {
                Say::Stalled {
                    for_secs,
                    pending,
                    state,
                } => tracing::warn!(
                    stalled_seconds = for_secs,
                    pending,
                    applied = o.applied,
                    committed = o.committed,
                    %state,
                    error = st.error.as_deref().unwrap_or(""),
                    "replay is not moving while committed entries are pending"
                ),
                Say::Resumed { after_secs } => {
                    tracing::info!(
                        after_seconds = after_secs,
                        applied = o.applied,
                        "replay moves again"
                    )
                }
                Say::Progress {
                    applied,
                    committed,
                    rate,
                } => tracing::info!(
                    applied,
                    committed,
                    lag_entries = committed.saturating_sub(applied),
                    rate_per_second = format_args!("{rate:.0}"),
                    "replay progress"
                ),
            }
        }
        let stalled = monitor.stalled_for(&o, now).as_secs();
        metrics.stalled_seconds.set(stalled as i64);
        status.update(|s| s.stalled_seconds = stalled);
    }
}

/// Hidden: the watchdogs' threshold in seconds instead of 30 (tests cannot
/// wait for real stalls that long). Not a documented setting.
pub const WATCHDOG_STALL_AFTER_ENV: &str = "ETCD_STANDBY_WATCHDOG_STALL_AFTER";

/// The watchdogs' tunables: the defaults, or the threshold from
/// [`WATCHDOG_STALL_AFTER_ENV`].
fn watchdog_options() -> MonitorOptions {
    let mut o = MonitorOptions::default();
    let secs = std::env::var(WATCHDOG_STALL_AFTER_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0);
    if let Some(secs) = secs {
        o.stall_after = Duration::from_secs(secs);
        tracing::warn!(
            stall_after_seconds = secs,
            "watchdog threshold overridden by {WATCHDOG_STALL_AFTER_ENV} (meant for tests)"
        );
    }
    o
}

/// How often the primary is asked for its raft index: every 5 s, more
/// often with a threshold below 30 s (six looks per threshold).
fn primary_poll_every(opts: &MonitorOptions) -> Duration {
    (opts.stall_after / 6).clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// What the learner-behind-the-primary watch reads and writes.
struct SourceWatch {
    /// The primary's client API (the daemon's source client).
    client: Client,
    /// Its endpoints; one is asked per look, the next after a failure.
    endpoints: Vec<String>,
    /// Our commit index and what the node loop knows of the leader.
    node: StatusCell<NodeStatus>,
    /// The peer streams, for the reason.
    transport: Transport,
    /// `/status` → `source`.
    status: StatusCell<SourceStatus>,
    metrics: metrics::SourceMetrics,
    opts: MonitorOptions,
}

/// One answer (or failure) of the primary's `Status`, and when it came back.
type PrimaryLook = (
    String,
    std::result::Result<etcd_standby_client::StatusResponse, String>,
    std::time::Instant,
);

/// Asks one source endpoint for `Status` every `every` (the next endpoint
/// after a failure); never more than one call at a time, each bounded.
async fn poll_primary(
    client: Client,
    endpoints: Vec<String>,
    every: Duration,
    out: mpsc::Sender<PrimaryLook>,
) {
    let mut at = 0usize;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !endpoints.is_empty() {
        tick.tick().await;
        let ep = endpoints[at % endpoints.len()].clone();
        let answer =
            match tokio::time::timeout(every.max(Duration::from_secs(3)), client.status(&ep)).await
            {
                Ok(Ok(st)) => Ok(st),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("Status timed out".to_owned()),
            };
        if answer.is_err() {
            at += 1;
        }
        if out
            .send((ep, answer, std::time::Instant::now()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The "learner behind the primary" watchdog ([`crate::monitor::PrimaryWatch`]),
/// once a second: replay's stall watch cannot see a learner that stopped
/// learning commits (its commit point and replay are then equal); the
/// primary's own raft index can. The `Status` calls run in a task of their
/// own, so a hanging one delays nothing here, and nothing here waits on the
/// node loop or replay.
async fn watch_source(w: SourceWatch, mut stop: watch::Receiver<bool>) {
    use crate::monitor::{PrimaryWatch, SourceSay};
    let (tx, mut looks) = mpsc::channel(4);
    let poller = tokio::spawn(poll_primary(
        w.client.clone(),
        w.endpoints.clone(),
        primary_poll_every(&w.opts),
        tx,
    ));
    let mut watch = PrimaryWatch::new(w.opts, std::time::Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing = 0u64;
    w.status
        .update(|s| s.stall_after_seconds = w.opts.stall_after.as_secs());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            look = looks.recv() => {
                let Some((ep, answer, at)) = look else { break };
                match answer {
                    Ok(st) => {
                        if failing >= 3 {
                            tracing::info!(endpoint = %ep, after_failures = failing, "the primary answers Status again");
                        }
                        failing = 0;
                        watch.primary_at(st.raft_index, at);
                        w.metrics.primary_index.set(st.raft_index as i64);
                        w.status.update(|s| {
                            s.primary_index = st.raft_index;
                            s.primary_applied_index = st.raft_applied_index;
                            s.primary_leader_id = if st.leader == 0 { String::new() } else { format!("{:x}", st.leader) };
                            s.endpoint = ep.clone();
                            s.observed_at_unix_ms = crate::clock::unix_ms(std::time::SystemTime::now());
                            s.last_error = None;
                        });
                    }
                    Err(e) => {
                        failing += 1;
                        w.metrics.status_failures.inc();
                        if failing == 3 {
                            tracing::warn!(endpoint = %ep, error = %e, "the primary's Status keeps failing; the learner-behind watchdog only knows the primary's older reports");
                        } else {
                            tracing::debug!(endpoint = %ep, error = %e, "Status of the primary failed");
                        }
                        w.status.update(|s| {
                            s.status_failures += 1;
                            s.last_error = Some(format!("{ep}: {e}"));
                        });
                    }
                }
                continue;
            }
            _ = stop.changed() => break,
        }
        let node = w.node.get();
        let now = std::time::Instant::now();
        let commit = node.commit_index;
        for say in watch.observe(commit, now) {
            match say {
                SourceSay::Behind {
                    for_secs,
                    commit,
                    primary_index,
                    primary_latest,
                    commit_unchanged_secs,
                } => {
                    let endpoint = w.status.get().endpoint;
                    let streams = peer_streams(&w.transport.status());
                    let why = behind_reason(
                        &node,
                        &BehindFacts {
                            for_secs,
                            primary_index,
                            primary_latest,
                            commit_unchanged_secs,
                            endpoint: &endpoint,
                            streams: &streams,
                        },
                    );
                    tracing::warn!(
                        member = %node.member_id,
                        code = crate::codes::LEARNER_BEHIND.id,
                        behind_seconds = for_secs,
                        commit,
                        last_received = node.last_received_index,
                        leader_commit = node.leader_commit_index,
                        primary_index,
                        primary_latest,
                        leader = %node.leader_id,
                        node_state = %node.state,
                        peers = %streams,
                        "the learner is behind the primary: {why}"
                    );
                    w.status.update(|s| {
                        s.behind_reason = Some(why);
                        s.behind_code = Some(crate::codes::LEARNER_BEHIND.id);
                    });
                }
                SourceSay::CaughtUp { after_secs, commit } => {
                    tracing::info!(
                        member = %node.member_id,
                        after_seconds = after_secs,
                        commit,
                        primary_latest = watch.primary_latest(),
                        "the learner caught up with the primary's reported index again"
                    );
                    w.status.update(|s| {
                        s.behind_reason = None;
                        s.behind_code = None;
                    });
                }
            }
        }
        let behind = watch.behind_for(commit, now).as_secs();
        w.metrics.behind_seconds.set(behind as i64);
        w.status.update(|s| {
            s.behind_primary_seconds = behind;
            s.behind_primary = watch.is_behind();
        });
    }
    poller.abort();
}

/// What a "behind the primary" report is made of, besides the node status.
struct BehindFacts<'a> {
    for_secs: u64,
    primary_index: u64,
    primary_latest: u64,
    commit_unchanged_secs: u64,
    endpoint: &'a str,
    streams: &'a str,
}

/// One sentence for the log and `/status`: what we know, what the primary
/// said, and whether our commit is frozen or only slow.
fn behind_reason(node: &NodeStatus, f: &BehindFacts<'_>) -> String {
    let moving = if f.commit_unchanged_secs >= f.for_secs {
        format!(
            "it has not moved for {} s (the learner stopped learning commits)",
            f.commit_unchanged_secs
        )
    } else {
        "it moves, but slower than the primary commits (catching up)".to_owned()
    };
    let contact = if node.last_leader_contact_unix_ms == 0 {
        "never since start".to_owned()
    } else {
        let now = crate::clock::unix_ms(std::time::SystemTime::now());
        format!(
            "{} s ago",
            now.saturating_sub(node.last_leader_contact_unix_ms) / 1000
        )
    };
    format!(
        "our commit index {commit} has not reached {pi}, which the primary ({ep}) reported {s} s ago \
         (its newest report: {latest}); {moving}. Last received {recv}, leader commit as we know it {lc}, \
         node {state}, following leader {leader}, last leader contact {contact}; peer streams: {streams}",
        commit = node.commit_index,
        pi = f.primary_index,
        ep = if f.endpoint.is_empty() {
            "?"
        } else {
            f.endpoint
        },
        s = f.for_secs,
        latest = f.primary_latest,
        recv = node.last_received_index,
        lc = node.leader_commit_index,
        state = node.state,
        leader = if node.leader_id.is_empty() {
            "none"
        } else {
            &node.leader_id
        },
        streams = f.streams,
    )
}

/// The peer streams to the primary's voters, in a few words each.
fn peer_streams(t: &etcd_standby_peer::TransportStatus) -> String {
    let up = |b: bool| if b { "up" } else { "down" };
    let peers: Vec<String> = t
        .peers
        .iter()
        .filter(|p| p.member && !p.is_learner)
        .map(|p| {
            let mut s = format!(
                "{}{}: dialed msgapp {} message {}, attached msgapp {} message {}, reconnects {}",
                p.id_hex,
                if p.id == t.leader { " (leader)" } else { "" },
                up(p.msgapp_dialed.connected),
                up(p.message_dialed.connected),
                up(p.msgapp_attached),
                up(p.message_attached),
                p.reconnects
            );
            if let Some(e) = &p.last_error {
                s.push_str(&format!(", last error: {e}"));
            }
            s
        })
        .collect();
    let peers = if peers.is_empty() {
        "none".to_owned()
    } else {
        peers.join("; ")
    };
    // Dropped sends: acknowledgements that never left (the leader then
    // tells us only commits up to what it saw acknowledged).
    format!(
        "{peers}; sends dropped since start {}",
        t.totals.send_dropped
    )
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `etcd-standby leave`: removes our member from the source cluster.
pub async fn leave(data_dir: PathBuf, source: ClientConfig) -> Result<()> {
    let layout = Layout {
        root: data_dir.clone(),
        segment_bytes: None,
    };
    let Some(mut id) = layout.read_identity()? else {
        bail!(
            "{} has no standby.json: this data dir never joined",
            data_dir.display()
        );
    };
    let client = Client::connect(source_client(&source))
        .await
        .context("connecting to the source cluster")?;
    match client.member_remove(id.member_id).await {
        Ok(_) => println!(
            "removed member {:x} from cluster {:x}",
            id.member_id, id.cluster_id
        ),
        Err(e) if e.is_not_found() => {
            println!(
                "member {:x} was already gone from cluster {:x}",
                id.member_id, id.cluster_id
            )
        }
        Err(e) => return Err(Error::from(e).context("MemberRemove")),
    }
    id.removed = true;
    layout.write_identity(&id)?;
    Ok(())
}
