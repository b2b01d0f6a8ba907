//! `etcd-standby promote`: turn the standby into the primary, safely.
//!
//! Two phases. [`inspect`] gathers the [`Facts`] (data dir, local log,
//! standby, running replicator through its admin API, old primary) and
//! [`plan::plan`] decides, purely: checks, target index, RPO, actions.
//! [`execute`] then does it, in an order where every step before the epoch
//! txn can be repeated and the epoch txn is the one commit point:
//!
//! 1. (planned switchover, `--fence-old-primary`) fence the old primary with
//!    a CORRUPT alarm, so it refuses every write from now on;
//! 2. a running replicator: mark the data dir `promoting` (a supervisor
//!    restart then refuses to start), wait until it received everything the
//!    fenced primary committed, stop it through `POST /v1/stop`;
//! 3. take the data dir lock, inspect again offline (the facts moved while
//!    the replicator ran) and re-decide;
//! 4. drain: replay the local log up to the target (the same replay code,
//!    reading the WAL; the unconfirmed tail only if chosen);
//! 5. **the epoch txn**: compare epoch, checkpoint and "not promoted", put
//!    epoch+1 and the audit record. From here the standby is a primary and
//!    every replicator is fenced;
//! 6. lease hand-over: refresh every lease once, stop keeping them alive;
//! 7. remove our learner from the old primary when reachable;
//! 8. mark the data dir `promoted`, clear `promoting`, log the audit record.
//!
//! Killed before 5: nothing but replay progress happened (`promoting` makes
//! `run` refuse until `promote` runs again and finishes or gives up). Killed
//! after 5: the standby holds our promotion record, so the next `promote`
//! [`Decision::Resume`]s steps 6 to 8.

pub mod plan;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use etcd_standby_client::{Client, ClientConfig, pb};
use etcd_standby_sink::promotion::{self, ReservedKeys};
use etcd_standby_sink::{Sink, SinkError};
use etcd_standby_wal::{CommittedEnd, for_each_assuming_committed, for_each_committed};
use serde::Serialize;
use tokio::sync::watch;

pub use plan::{
    Check, Choices, DaemonFacts, Decision, Facts, LogFacts, Plan, PrimaryFacts, Rpo, StandbyFacts,
    Target, Verdict,
};

use crate::clock;
use crate::committed::{CommittedTail, TailLimits};
use crate::datadir::{self, Promoting};
use crate::error::{Context, Error, Result, bail};
use crate::metrics::ReplayMetrics;
use crate::replay::{self, RebuildFrom, Replay, ReplayOptions};
use crate::status::{ReplayStatus, StatusCell};
use crate::store::Layout;
use crate::times::ReceiveTimes;

/// Everything `promote` needs.
#[derive(Debug, Clone)]
pub struct PromoteOptions {
    /// The replicator's data dir.
    pub data_dir: PathBuf,
    /// The standby and replay settings (the same as `run`'s).
    pub replay: ReplayOptions,
    /// The old primary, when the operator gave its endpoints.
    pub source: Option<ClientConfig>,
    /// The operator's choices.
    pub choices: Choices,
    /// `--reason`, recorded in the audit record.
    pub reason: String,
    /// Who runs it (recorded).
    pub operator: String,
    /// Where it runs (recorded).
    pub host: String,
}

/// What [`inspect`] found and decided.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The facts.
    pub facts: Facts,
    /// The decision.
    pub plan: Plan,
}

/// What [`execute`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plan that was carried out (after the final offline inspection).
    pub plan: Plan,
    /// The new fencing epoch.
    pub epoch: u64,
    /// The standby's revision right after the epoch txn.
    pub standby_revision: i64,
    /// The raft index and term the standby ends at.
    pub applied_index: u64,
    /// Its term.
    pub applied_term: u64,
    /// The old primary was fenced (CORRUPT alarm) at this raft index.
    pub old_primary_fenced_at: Option<u64>,
    /// Leases refreshed to a full TTL.
    pub leases_refreshed: usize,
    /// Leases already gone at the hand-over.
    pub leases_gone: usize,
    /// Leases the primary had (model) that the standby does not.
    pub leases_missing: Vec<String>,
    /// What happened to our learner on the old primary.
    pub learner_removal: String,
    /// The audit record's key on the standby.
    pub audit_key: String,
    /// The audit record.
    pub audit: serde_json::Value,
    /// What the operator does next.
    pub next_steps: Vec<String>,
}

fn short(mut cfg: ClientConfig, secs: u64) -> ClientConfig {
    cfg.request_timeout = cfg.request_timeout.min(Duration::from_secs(secs));
    cfg.connect_timeout = cfg.connect_timeout.min(Duration::from_secs(secs));
    cfg
}

async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .ok()
}

fn layout_of(opts: &PromoteOptions) -> Layout {
    Layout {
        root: opts.data_dir.clone(),
        segment_bytes: None,
    }
}

/// The standby, as found (never an error: an unreachable standby is a fact).
async fn gather_standby(opts: &PromoteOptions, cluster_id: u64) -> StandbyFacts {
    let cfg = short(opts.replay.sink.client.clone(), 5);
    let mut f = StandbyFacts {
        endpoints: cfg.endpoints.clone(),
        ..Default::default()
    };
    let client = match within(10, Client::connect(cfg)).await {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            f.error = Some(e.to_string());
            return f;
        }
        None => {
            f.error = Some("connect timed out".into());
            return f;
        }
    };
    for ep in client.endpoints() {
        match within(5, client.status(&ep)).await {
            Some(Ok(st)) => {
                f.reachable = true;
                f.version = st.version;
                break;
            }
            Some(Err(e)) => f.error = Some(format!("{ep}: {e}")),
            None => f.error = Some(format!("{ep}: status timed out")),
        }
    }
    if !f.reachable {
        return f;
    }
    if let Some(Ok(a)) = within(5, client.alarm_list()).await {
        f.alarms = a
            .alarms
            .iter()
            .map(|m| format!("{}@{:x}", alarm_name(m.alarm), m.member_id))
            .collect();
    }
    if let Some(Ok(a)) = within(5, client.auth_status()).await {
        f.auth_enabled = a.enabled;
    }
    if let Some(Ok(l)) = within(5, client.lease_leases()).await {
        f.leases = l.leases.len() as u64;
    }
    let keys = ReservedKeys::new(&opts.replay.sink.keys, cluster_id);
    match within(5, promotion::read_state(&client, &keys)).await {
        Some(Ok(st)) => {
            f.epoch = st.epoch;
            f.checkpoint = st.checkpoint.map(|c| (c.index, c.term));
            f.revision = st.revision;
            // A revision-preserving standby restored from this data dir's
            // seed and not written since holds everything up to the
            // seed's index (its first checkpoint comes with the first
            // revision the primary makes after it).
            if f.checkpoint.is_none()
                && let Ok(Some(seed)) = crate::seed::read(&layout_of(opts))
                && seed.revision == st.revision
                && seed.cluster_id().is_ok_and(|c| c == cluster_id)
            {
                f.checkpoint = Some((seed.index, seed.term));
            }
            f.promoted = st.promoted.map(|b| {
                serde_json::from_slice(&b).unwrap_or_else(
                    |_| serde_json::json!({"raw": String::from_utf8_lossy(&b).into_owned()}),
                )
            });
        }
        Some(Err(e @ SinkError::BadReservedKey { .. })) => f.checkpoint_error = Some(e.to_string()),
        Some(Err(e)) => {
            f.reachable = false;
            f.error = Some(e.to_string());
        }
        None => {
            f.reachable = false;
            f.error = Some("reading the reserved keys timed out".into());
        }
    }
    f
}

fn alarm_name(alarm: i32) -> String {
    pb::AlarmType::try_from(alarm)
        .map_or_else(|_| alarm.to_string(), |k| k.as_str_name().to_owned())
}

/// The local log after `checkpoint` (blocking file IO).
fn gather_log(layout: &Layout, checkpoint: u64) -> LogFacts {
    let mut f = LogFacts::default();
    let wal = layout.wal();
    if let Ok(t) = ReceiveTimes::read_only(&layout.received_times()) {
        f.times = t
            .records()
            .into_iter()
            .map(|(i, at)| (i, clock::unix_ms(at)))
            .collect();
        f.last_received_ms = f.times.last().map_or(0, |r| r.1);
    }
    // Where the log ends, whatever the standby says (a data dir copied
    // earlier ends before the checkpoint).
    let end = match etcd_standby_wal::wal_end(&wal) {
        Ok(end) => end,
        Err(e) => {
            f.cannot_rebuild = Some(format!("reading {}: {e}", wal.display()));
            return f;
        }
    };
    if end.last_index < checkpoint {
        f.last_index = end.last_index;
        f.confirmed_commit = end.commit.min(end.last_index);
        return f;
    }
    let mut after = checkpoint;
    let mut entries = Vec::new();
    let committed = loop {
        let end = for_each_committed(&wal, after, u64::MAX, |e| {
            entries.push((e.index, e.data.as_ref().map_or(0, |d| d.len() as u64)));
            true
        });
        match end {
            Ok(CommittedEnd::NeedSnapshot { index, .. }) => {
                f.snapshot_jumps.push(index);
                after = index;
            }
            Ok(CommittedEnd::Done(i) | CommittedEnd::Stopped(i)) => break Ok(i),
            Err(e) => break Err(e),
        }
    };
    match committed {
        Ok(i) => {
            f.confirmed_commit = i
                .max(entries.last().map_or(0, |e| e.0))
                .max(end.commit.min(i));
        }
        Err(e) => {
            f.cannot_rebuild = Some(format!("reading {}: {e}", wal.display()));
            f.confirmed_commit = entries.last().map_or(checkpoint, |e| e.0);
        }
    }
    let tail_from = f.confirmed_commit;
    let _ = for_each_assuming_committed(&wal, tail_from, u64::MAX, u64::MAX, |e| {
        entries.push((e.index, e.data.as_ref().map_or(0, |d| d.len() as u64)));
        true
    });
    f.last_index = entries.last().map_or(f.confirmed_commit, |e| e.0);
    f.after_checkpoint = entries;
    if f.cannot_rebuild.is_none() {
        match replay::rebuildable(layout, checkpoint) {
            Ok(have) => {
                if replay::rebuild_plan(checkpoint, have) == RebuildFrom::Impossible {
                    f.cannot_rebuild = Some(format!(
                        "no saved model, snapshot db or index 1 at or below the checkpoint {checkpoint}"
                    ));
                }
            }
            Err(e) => f.cannot_rebuild = Some(e.to_string()),
        }
    }
    f
}

/// The old primary, as found.
async fn gather_primary(source: Option<&ClientConfig>, member_id: u64) -> PrimaryFacts {
    let Some(cfg) = source else {
        return PrimaryFacts::default();
    };
    let cfg = short(cfg.clone(), 3);
    let mut f = PrimaryFacts {
        checked: true,
        ..Default::default()
    };
    let client = match within(5, Client::connect(cfg)).await {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            f.detail = e.to_string();
            return f;
        }
        None => {
            f.detail = "connect timed out".into();
            return f;
        }
    };
    let mut seen = Vec::new();
    let mut errors = Vec::new();
    for ep in client.endpoints() {
        match within(3, client.status(&ep)).await {
            Some(Ok(st)) => {
                f.reachable = true;
                f.leader = f.leader.max(st.leader);
                f.raft_index = f.raft_index.max(st.raft_index);
                errors.extend(st.errors.iter().cloned());
                seen.push(format!("{ep} up"));
            }
            Some(Err(e)) => seen.push(format!("{ep}: {e}")),
            None => seen.push(format!("{ep}: timed out")),
        }
    }
    if f.reachable {
        if let Some(Ok(a)) = within(3, client.alarm_list()).await {
            for m in &a.alarms {
                errors.push(format!("alarm {}@{:x}", alarm_name(m.alarm), m.member_id));
            }
        }
        if let Some(Ok(list)) = within(3, client.member_list()).await {
            f.learner_present = list.members.iter().any(|m| m.id == member_id);
        }
    }
    f.healthy = f.reachable && f.leader != 0 && errors.is_empty();
    if !errors.is_empty() {
        seen.push(format!("errors: {}", errors.join(", ")));
    }
    f.detail = seen.join("; ");
    f
}

/// A running replicator on this data dir, through its admin API.
async fn gather_daemon(layout: &Layout, member_id: u64) -> Result<Option<DaemonFacts>> {
    if !datadir::is_locked(layout)? {
        return Ok(None);
    }
    let Some(admin) = datadir::read_admin_addr(layout) else {
        bail!(
            "another process holds {} but recorded no admin address; stop it before promoting",
            layout.root.display()
        );
    };
    let v = crate::admin::fetch_status(&admin).await.with_context(|| {
        format!(
            "the data dir is held by a running replicator, but its admin API at {admin} did not answer; stop it first"
        )
    })?;
    let n = &v["node"];
    let r = &v["replay"];
    if n["member_id"].as_str() != Some(&format!("{member_id:x}")) {
        bail!(
            "the admin API at {admin} belongs to member {}, not this data dir's {member_id:x}",
            n["member_id"].as_str().unwrap_or("?")
        );
    }
    let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    Ok(Some(DaemonFacts {
        admin,
        node_state: n["state"].as_str().unwrap_or("?").to_owned(),
        replay_state: r["state"].as_str().unwrap_or("off").to_owned(),
        replay_error: r["error"].as_str().map(str::to_owned),
        lag_entries: u(&r["lag_entries"]),
        lag_seconds: r["lag_seconds"].as_f64().unwrap_or(0.0),
        keepalive_failures: u(&r["sink"]["keepalive_failures"]),
        leases_lost: u(&r["sink"]["leases_lost"]),
        leader_commit_index: u(&n["leader_commit_index"]),
        last_leader_contact_ms: u(&n["last_leader_contact_unix_ms"]),
    }))
}

async fn gather(opts: &PromoteOptions, daemon: Option<DaemonFacts>) -> Result<Facts> {
    let layout = layout_of(opts);
    let identity = layout.read_identity()?;
    let (member_id, cluster_id) = identity
        .as_ref()
        .map_or((0, 0), |i| (i.member_id, i.cluster_id));
    let standby = gather_standby(opts, cluster_id).await;
    let checkpoint = standby.checkpoint.map_or(0, |c| c.0);
    let log = if identity.is_some() {
        crate::blocking(|| gather_log(&layout, checkpoint))
    } else {
        LogFacts::default()
    };
    let primary = gather_primary(opts.source.as_ref(), member_id).await;
    Ok(Facts {
        member_id,
        cluster_id,
        joined: identity.is_some(),
        data_dir_promoted: datadir::read_promoted(&layout)?,
        promoting: datadir::read_promoting(&layout)?,
        log,
        standby,
        daemon,
        primary,
        now_ms: clock::unix_ms(SystemTime::now()),
    })
}

/// Phase one: gather the facts and decide. Changes nothing.
pub async fn inspect(opts: &PromoteOptions) -> Result<Inspection> {
    let layout = layout_of(opts);
    let member_id = layout.read_identity()?.map_or(0, |i| i.member_id);
    let daemon = gather_daemon(&layout, member_id).await?;
    let facts = gather(opts, daemon).await?;
    let plan = plan::plan(&facts, &opts.choices);
    Ok(Inspection { facts, plan })
}

/// A hook for the crash tests: `ETCD_STANDBY_TEST_PROMOTE_CRASH=<step>`
/// ends the process abruptly at that step (`after_drain`, `after_epoch`).
fn crash_point(step: &str) {
    if std::env::var("ETCD_STANDBY_TEST_PROMOTE_CRASH").is_ok_and(|v| v == step) {
        eprintln!("etcd-standby: test crash at promote step {step}");
        std::process::abort();
    }
}

/// Removes the promotion hold on the standby; a failure is logged (the
/// promotion's outcome does not depend on it).
async fn release_hold(client: &Client, keys: &ReservedKeys) {
    if let Err(e) = etcd_standby_sink::ha::unhold(client, keys).await {
        tracing::warn!(error = %e, "could not remove the promotion hold on the standby");
    }
}

/// Test hook: `ETCD_STANDBY_TEST_PROMOTE_PAUSE=<step>:<ms>` waits at `step`
/// (widens a race window a test must show closed).
async fn test_pause(step: &str) {
    let Ok(v) = std::env::var("ETCD_STANDBY_TEST_PROMOTE_PAUSE") else {
        return;
    };
    if let Some((s, ms)) = v.split_once(':')
        && s == step
        && let Ok(ms) = ms.parse::<u64>()
    {
        eprintln!("etcd-standby: test pause of {ms} ms at promote step {step}");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Fences the old primary: a CORRUPT alarm makes every member refuse
/// writes (reads keep working) until `etcdctl alarm disarm`. Returns the
/// primary's raft index after the alarm (everything up to it must reach us).
async fn fence_primary(source: &ClientConfig, leader: u64) -> Result<u64> {
    let client = Client::connect(short(source.clone(), 10))
        .await
        .context("connecting to the old primary to fence it")?;
    client
        .alarm_activate(leader, pb::AlarmType::Corrupt)
        .await
        .context("activating a CORRUPT alarm on the old primary")?;
    let mut index = 0;
    for ep in client.endpoints() {
        if let Some(Ok(st)) = within(3, client.status(&ep)).await {
            index = index.max(st.raft_index);
        }
    }
    tracing::warn!(
        leader = %format_args!("{leader:x}"),
        raft_index = index,
        "old primary fenced: a CORRUPT alarm makes it refuse writes (undo with `etcdctl alarm disarm`)"
    );
    Ok(index)
}

/// Waits until the running replicator has the primary's entries up to
/// `index` durable and committed (so the final drain includes them).
async fn wait_received(admin: &str, index: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = crate::admin::fetch_status(admin).await?;
        let commit = v["node"]["commit_index"].as_u64().unwrap_or(0);
        if commit >= index {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the replicator reached commit {commit} but the fenced primary is at {index} after 60 s"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks the running replicator to stop and waits until it released the data dir.
async fn stop_daemon(layout: &Layout, admin: &str) -> Result<()> {
    crate::admin::post(admin, "/v1/stop")
        .await
        .with_context(|| format!("asking the replicator at {admin} to stop"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while datadir::is_locked(layout)? {
        if tokio::time::Instant::now() > deadline {
            bail!("the replicator at {admin} did not release the data dir within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Replays the local log up to `target` (promotion's drain).
async fn drain(
    opts: &PromoteOptions,
    layout: &Layout,
    cluster_id: u64,
    target: u64,
    assume_committed: u64,
) -> Result<(etcd_standby_model::Model, Sink)> {
    let mut ropts = opts.replay.clone();
    ropts.sink.source_cluster_id = cluster_id;
    ropts.apply_delay = None;
    // A seeded data dir replicates with preserved revisions: the drain
    // goes on in that mode (the batched mode would refuse the standby).
    match crate::seed::preserve_for(layout, cluster_id)? {
        Some(p) => ropts.sink.preserve = Some(p),
        None if ropts.preserve_revisions => {
            bail!("--preserve-revisions: the data dir has no seed (etcd-standby seed)")
        }
        None => {}
    }
    let sink = Sink::connect(ropts.sink.clone())
        .await
        .context("connecting to the standby")?;
    let (tail, reader) = CommittedTail::new(TailLimits::default(), layout.wal());
    tail.resume(target);
    let reader = reader.assuming_committed(assume_committed);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ReplayMetrics::new(&mut registry);
    let status = StatusCell::<ReplayStatus>::default();
    let (_stop_tx, stop) = watch::channel(false);
    let replay = Replay::new(
        ropts,
        layout.clone(),
        sink,
        status,
        metrics,
        crate::committed::Retention::keep_all(),
    )?;
    replay.run_to(&reader, &stop).await
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The operator's name: `$SUDO_USER`, else `$USER`, else `unknown`.
pub fn default_operator() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into())
}

/// This host's name (for the audit record).
pub fn default_host() -> String {
    hostname()
}

/// Phase two: carry out `inspection`'s plan. See the module docs for the
/// order of the steps and what an interruption leaves.
pub async fn execute(opts: &PromoteOptions, inspection: Inspection) -> Result<Report> {
    let layout = layout_of(opts);
    let Inspection { facts, plan } = inspection;
    if matches!(plan.decision, Decision::Refused | Decision::AlreadyPromoted) {
        bail!("promotion refused by its checks; run `etcd-standby promote --dry-run` to see them");
    }
    let by = format!("{}@{}", opts.operator, opts.host);
    let marker = Promoting {
        pid: std::process::id(),
        by: by.clone(),
        started_at: clock::rfc3339(SystemTime::now()),
    };
    // 1. Fence the old primary (planned switchover).
    let mut fenced_at = None;
    if plan.decision == Decision::Proceed
        && opts.choices.fence_old_primary
        && facts.primary.reachable
        && let Some(source) = &opts.source
    {
        fenced_at = Some(fence_primary(source, facts.primary.leader).await?);
    }
    // 2. Hold the standby so no passive HA instance takes the lock the
    //    stopped replicator releases; then stop a running replicator.
    let client = Client::connect(opts.replay.sink.client.clone())
        .await
        .context("connecting to the standby")?;
    let keys = ReservedKeys::new(&opts.replay.sink.keys, facts.cluster_id);
    // A revision-preserving standby has no HA instances (refused) and
    // must not move before the drain: no hold there.
    if crate::seed::read(&layout)?.is_none() {
        let hold = serde_json::json!({"by": by, "pid": marker.pid, "since": marker.started_at});
        etcd_standby_sink::ha::hold(&client, &keys, Bytes::from(hold.to_string()))
            .await
            .context("holding the standby for the promotion")?;
    }
    let mut daemon = facts.daemon.clone();
    if let Some(d) = &mut daemon {
        datadir::write_promoting(&layout, &marker)?;
        if let Some(index) = fenced_at {
            wait_received(&d.admin, index).await?;
        }
        stop_daemon(&layout, &d.admin).await?;
        test_pause("after_stop").await;
        d.replay_state = "stopped_for_promote".into();
        d.node_state = "stopped".into();
    }
    // 3. The lock, and the final decision on fresh facts.
    let _lock = datadir::lock(&layout)?;
    datadir::write_promoting(&layout, &marker)?;
    let mut facts = gather(opts, daemon).await?;
    facts.primary.fenced_at = fenced_at;
    let plan = plan::plan(&facts, &opts.choices);
    // Nothing changed: clear both markers (a running replicator was stopped;
    // start it again).
    let give_up = async |why: String| -> Error {
        if let Err(e) = datadir::clear_promoting(&layout) {
            tracing::warn!(error = %e, "could not clear the promoting marker");
        }
        release_hold(&client, &keys).await;
        Error::msg(why)
    };
    if matches!(plan.decision, Decision::Refused | Decision::AlreadyPromoted) {
        let failed: Vec<String> = plan
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        return Err(give_up(format!(
            "promotion refused on the final check (nothing changed): {}",
            failed.join("; ")
        ))
        .await);
    }
    let mut leases_missing = Vec::new();
    let (record, epoch, revision, audit_key, applied) = if plan.decision == Decision::Proceed {
        // 4. Drain.
        let target = plan.target_index;
        let assume = if opts.choices.apply_unconfirmed_tail {
            target
        } else {
            0
        };
        let drained = drain(opts, &layout, facts.cluster_id, target, assume).await;
        let (model, sink) = match drained {
            Ok(d) => d,
            Err(e) => {
                return Err(give_up(format!(
                    "replaying the local log up to {target} failed; the standby was NOT promoted \
                         (it keeps the whole entries written so far): {e}"
                ))
                .await);
            }
        };
        let applied = (model.applied_index(), model.applied_term());
        if applied.0 != target {
            return Err(give_up(format!(
                "replay reached raft index {} instead of {target}; the standby was NOT promoted",
                applied.0
            ))
            .await);
        }
        crash_point("after_drain");
        let state = promotion::read_state(&client, &keys).await?;
        let checkpoint = state.checkpoint.map_or(0, |c| c.index);
        // Revision-preserving replay checkpoints only entries that bump a
        // revision: the drain's own checkpoint, with everything after it
        // confirmed, is the target then.
        let ours = sink.checkpoint().map_or(0, |c| c.index);
        if checkpoint != ours || sink.confirmed_index() != target {
            return Err(give_up(format!(
                    "the standby's checkpoint is {checkpoint} after the drain to {target} (ours: {ours}); another writer? Not promoted"
                ),
            ).await);
        }
        let new_epoch = state.epoch.unwrap_or(0) + 1;
        let audit_id = format!("{:013}-{new_epoch}", clock::unix_ms(SystemTime::now()));
        let record = serde_json::json!({
            "kind": "etcd-standby promotion",
            "at": clock::rfc3339(SystemTime::now()),
            "by": by,
            "operator": opts.operator,
            "host": opts.host,
            "reason": opts.reason,
            "epoch": new_epoch,
            "previous_epoch": state.epoch.unwrap_or(0),
            "source_cluster_id": format!("{:x}", facts.cluster_id),
            "source_member_id": format!("{:x}", facts.member_id),
            "applied_index": applied.0,
            "applied_term": applied.1,
            "standby_revision_before": state.revision,
            "forced": opts.choices.force,
            "choices": opts.choices,
            "old_primary_fenced_at": fenced_at,
            "rpo": plan.rpo,
            "checks": plan.checks,
            "tool_version": env!("CARGO_PKG_VERSION"),
        });
        let body = Bytes::from(serde_json::to_vec(&record)?);
        // 5. The commit point.
        let done = match promotion::promote(&client, &keys, &state, body, &audit_id).await {
            Ok(p) => p,
            Err(e) => return Err(give_up(format!("the promotion txn failed: {e}")).await),
        };
        tracing::warn!(
            epoch = done.epoch,
            revision = done.revision,
            applied_index = applied.0,
            "standby promoted: the fencing epoch is bumped; every replicator is fenced"
        );
        crash_point("after_epoch");
        // The primary's leases the standby does not have (expired while
        // nobody kept them alive, or never mirrored).
        let on_standby: std::collections::BTreeSet<i64> = client
            .lease_leases()
            .await
            .map(|l| l.leases.iter().map(|l| l.id).collect())
            .unwrap_or_default();
        leases_missing = model
            .leases()
            .keys()
            .filter(|id| !on_standby.contains(id))
            .map(|id| format!("{id:x}"))
            .collect();
        drop(sink);
        (
            record,
            done.epoch,
            done.revision,
            String::from_utf8_lossy(&done.audit_key).into_owned(),
            applied,
        )
    } else {
        // Resume: the standby holds our record already.
        let record = facts.standby.promoted.clone().unwrap_or_default();
        let epoch = record["epoch"].as_u64().unwrap_or(0);
        let applied = (
            record["applied_index"].as_u64().unwrap_or(0),
            record["applied_term"].as_u64().unwrap_or(0),
        );
        tracing::warn!(epoch, "finishing an interrupted promotion");
        (
            record,
            epoch,
            facts.standby.revision,
            String::from_utf8_lossy(&keys.promoted).into_owned(),
            applied,
        )
    };
    // 6. Lease hand-over.
    let leases = promotion::refresh_leases(&client)
        .await
        .context("refreshing the standby's leases")?;
    // 7. Leave the old primary.
    let learner_removal = remove_learner(opts.source.as_ref(), facts.member_id).await;
    // 8. Mark the data dir.
    datadir::write_promoted(&layout, &record)?;
    datadir::clear_promoting(&layout)?;
    // Left behind, it would do no harm: `promoted` refuses every instance.
    release_hold(&client, &keys).await;
    tracing::info!(audit = %record, "promotion audit record");
    let endpoints = opts.replay.sink.client.endpoints.join(",");
    let next_steps = vec![
        format!("point clients at the new primary: {endpoints}"),
        "clients that held leases: keep them alive against the new primary (same lease IDs) within their TTL".to_owned(),
        format!(
            "when the old primary comes back: make sure learner {:x} is gone (`etcdctl member remove {:x}`){}",
            facts.member_id,
            facts.member_id,
            if fenced_at.is_some() {
                "; it refuses writes until `etcdctl alarm disarm`"
            } else {
                "; keep clients away from it, or fence it"
            }
        ),
        "failback: wipe the old primary (or use a fresh cluster), run `etcd-standby run` from it towards this new primary with an empty data dir, then promote back".to_owned(),
        format!(
            "this data dir ({}) is now marked promoted and will not replicate again",
            opts.data_dir.display()
        ),
    ];
    Ok(Report {
        plan,
        epoch,
        standby_revision: revision,
        applied_index: applied.0,
        applied_term: applied.1,
        old_primary_fenced_at: fenced_at,
        leases_refreshed: leases.refreshed.len(),
        leases_gone: leases.gone.len(),
        leases_missing,
        learner_removal,
        audit_key,
        audit: record,
        next_steps,
    })
}

/// MemberRemove of our learner on the old primary, when reachable.
async fn remove_learner(source: Option<&ClientConfig>, member_id: u64) -> String {
    let Some(cfg) = source else {
        return format!(
            "not attempted (no --source-endpoints): remove learner {member_id:x} when the old primary is back"
        );
    };
    let client = match within(5, Client::connect(short(cfg.clone(), 5))).await {
        Some(Ok(c)) => c,
        _ => {
            return format!(
                "the old primary is unreachable: remove learner {member_id:x} when it is back"
            );
        }
    };
    match within(10, client.member_remove(member_id)).await {
        Some(Ok(_)) => format!("learner {member_id:x} removed from the old primary"),
        Some(Err(e)) if e.is_not_found() => {
            format!("learner {member_id:x} was already gone from the old primary")
        }
        Some(Err(e)) => format!(
            "could not remove learner {member_id:x} from the old primary ({e}): remove it when it is back"
        ),
        None => format!(
            "the old primary did not answer MemberRemove: remove learner {member_id:x} when it is back"
        ),
    }
}
