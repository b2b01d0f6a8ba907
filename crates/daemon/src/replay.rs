//! Replay: committed entries → shadow model → effects → standby.
//!
//! The node loop hands committed entries over a bounded channel without ever
//! waiting (a slow or absent standby never slows the learner). Replay keeps
//! its own position: when the channel dropped entries, or at start-up, it
//! reads them back from the durable local WAL. A leader snapshot in the log
//! (entries that exist only in its db) triggers a reconcile by diff.
//!
//! Exactly once: every standby txn carries the checkpoint (source cluster,
//! index, term) and is guarded by the fencing epoch; on restart the standby's
//! checkpoint says where to resume. The model is rebuilt to that index from
//! the newest snapshot db at or below it (or from index 1) plus the WAL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_standby_decode::decode_entry;
use etcd_standby_model::{Model, ModelConfig, Outcome, SnapshotState};
use etcd_standby_proto::raftpb;
use etcd_standby_sink::{ReconcileOptions, Sink, SinkConfig, SinkError};
use etcd_standby_wal::{CommittedEnd, for_each_committed};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::node::Shared;
use super::store::Layout;

/// A batch of committed entries from the node loop, with when it committed.
pub type Committed = (Instant, Vec<raftpb::Entry>);

/// What replay needs.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// How to reach and write the standby (source cluster ID filled in later).
    pub sink: SinkConfig,
    /// The mass-delete guard for reconciles.
    pub reconcile: ReconcileOptions,
    /// Apply rules of the primary.
    pub model: ModelConfig,
    /// Skip undecodable entries instead of halting (operator opt-in).
    pub skip_undecodable: bool,
    /// Most entries per sink call.
    pub max_batch: usize,
    /// Save the shadow model every this many applied entries.
    pub model_save_every: u64,
}

/// Replay's part of `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayStatus {
    /// `starting`, `reconciling`, `replaying`, `waiting for standby`, `fenced`, `halted`.
    pub state: String,
    /// Last entry applied to the model.
    pub applied_index: u64,
    /// The standby's checkpoint.
    pub standby_checkpoint: u64,
    /// Commit index minus applied index.
    pub lag_entries: u64,
    /// Payload bytes of committed entries not yet applied (approximate).
    pub lag_bytes: u64,
    /// Age of the oldest committed entry not yet on the standby, in seconds.
    pub lag_seconds: f64,
    /// The standby's current revision.
    pub standby_revision: i64,
    /// Standby write batch latency, median and 99th percentile of recent ones (ms).
    pub txn_latency_ms_p50: f64,
    /// See `txn_latency_ms_p50`.
    pub txn_latency_ms_p99: f64,
    /// The last error.
    pub error: Option<String>,
    /// Sink counters.
    pub sink: Option<etcd_standby_sink::SinkStats>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// Replay metrics.
#[derive(Clone)]
pub struct ReplayMetrics {
    applied_index: Gauge,
    standby_checkpoint: Gauge,
    lag_entries: Gauge,
    lag_bytes: Gauge,
    standby_revision: Gauge,
    lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    outcomes: Family<OutcomeLabel, Counter>,
    txn_seconds: Histogram,
    leases_mirrored: Gauge,
    keepalive_failures: Gauge,
    reconciles: Counter,
    sink_errors: Counter,
}

impl ReplayMetrics {
    /// Creates and registers the metrics.
    pub fn new(reg: &mut Registry) -> Self {
        let m = ReplayMetrics {
            applied_index: Gauge::default(),
            standby_checkpoint: Gauge::default(),
            lag_entries: Gauge::default(),
            lag_bytes: Gauge::default(),
            standby_revision: Gauge::default(),
            lag_seconds: Gauge::default(),
            outcomes: Family::default(),
            txn_seconds: Histogram::new([
                0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            leases_mirrored: Gauge::default(),
            keepalive_failures: Gauge::default(),
            reconciles: Counter::default(),
            sink_errors: Counter::default(),
        };
        let r = reg.sub_registry_with_prefix("etcd_standby");
        r.register(
            "applied_index",
            "Last raft index applied to the shadow model",
            m.applied_index.clone(),
        );
        r.register(
            "standby_checkpoint_index",
            "Raft index checkpointed on the standby",
            m.standby_checkpoint.clone(),
        );
        r.register(
            "replay_lag_entries",
            "Committed entries not yet on the standby",
            m.lag_entries.clone(),
        );
        r.register(
            "replay_lag_seconds",
            "Age of the oldest committed entry not yet on the standby",
            m.lag_seconds.clone(),
        );
        r.register(
            "entries",
            "Committed entries by outcome on the primary",
            m.outcomes.clone(),
        );
        r.register(
            "standby_txn_duration_seconds",
            "Latency of standby write batches",
            m.txn_seconds.clone(),
        );
        r.register(
            "leases_mirrored",
            "Leases kept alive on the standby",
            m.leases_mirrored.clone(),
        );
        r.register(
            "keepalive_failures",
            "Lease keep-alive failures on the standby",
            m.keepalive_failures.clone(),
        );
        r.register(
            "reconciles",
            "Snapshot reconciles of the standby",
            m.reconciles.clone(),
        );
        r.register(
            "sink_errors",
            "Standby write errors (retried or fatal)",
            m.sink_errors.clone(),
        );
        m
    }
}

fn outcome_label(o: &Outcome) -> String {
    match o {
        Outcome::Rejected(_) => "rejected".into(),
        other => crate::walcmd::outcome_text(other),
    }
}

/// Newest `member/snap/<index>.snap.db` with index ≤ `max`.
fn newest_db(layout: &Layout, max: u64) -> Option<(u64, PathBuf)> {
    layout
        .snap_dbs()
        .ok()?
        .into_iter()
        .rfind(|(i, _)| *i <= max)
}

/// `<data-dir>/replay`: saved shadow models (`model-<index %016x>.bin`).
fn model_dir(layout: &Layout) -> PathBuf {
    layout.root.join("replay")
}

/// Newest saved model with index ≤ `max`.
fn newest_model(layout: &Layout, max: u64) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(model_dir(layout))
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let hex = name.strip_prefix("model-")?.strip_suffix(".bin")?;
            let idx = u64::from_str_radix(hex, 16).ok()?;
            (idx <= max).then(|| (idx, e.path()))
        })
        .max_by_key(|(i, _)| *i)
}

/// Saves the model (at an index the standby has confirmed): tmp file,
/// fsync, rename, fsync dir; older saves are removed.
fn save_model(layout: &Layout, model: &Model) -> Result<u64> {
    let dir = model_dir(layout);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let index = model.applied_index();
    let path = dir.join(format!("model-{index:016x}.bin"));
    let tmp = path.with_extension("bin.tmp");
    let state = model.to_snapshot_state();
    let write = || -> Result<()> {
        let f = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(f);
        state.write_to(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    };
    write().with_context(|| format!("saving the shadow model to {}", path.display()))?;
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p != path
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("model-"))
        {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(index)
}

fn load_model(path: &Path) -> Result<SnapshotState> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    SnapshotState::read_from(&mut std::io::BufReader::new(f))
        .with_context(|| format!("reading {}", path.display()))
}

fn load_db(path: &Path) -> Result<SnapshotState> {
    let db = etcd_standby_bolt::BoltFile::open(path)
        .with_context(|| format!("opening snapshot db {}", path.display()))?;
    SnapshotState::from_bolt(&db).with_context(|| format!("reading snapshot db {}", path.display()))
}

fn wal_has_index_one(layout: &Layout) -> bool {
    let mut first = None;
    let _ = for_each_committed(&layout.wal(), 0, 1, |e| {
        first = Some(e.index);
        false
    });
    first == Some(1)
}

struct Replay {
    opts: ReplayOptions,
    layout: Layout,
    shared: Arc<Shared>,
    metrics: ReplayMetrics,
    sink: Sink,
    model: Model,
    /// Pending (index, term, effects) not yet written.
    batch: Vec<(u64, u64, Vec<etcd_standby_model::Effect>)>,
    /// Commit time of the oldest entry in `batch`.
    oldest: Option<Instant>,
    /// Index of the last saved model, and when.
    saved: (u64, Instant),
    /// Payload bytes of entries applied to the model by this process.
    replayed_bytes: u64,
    /// Index of the snapshot db a restart would rebuild from (0: none);
    /// set at start and by each reconcile, the only times it changes.
    db_floor: u64,
}

impl Replay {
    /// Sets the state; an error is kept until replay is healthy again.
    fn set_state(&self, state: &str, error: Option<String>) {
        if let Ok(mut s) = self.shared.replay.lock() {
            s.state = state.into();
            if error.is_some() || state == "replaying" {
                s.error = error;
            }
        }
    }

    fn publish(&self) {
        let commit = self.shared.snapshot().commit_index;
        let applied = self.model.applied_index();
        let checkpoint = self.sink.checkpoint().map_or(0, |c| c.index);
        let mut stats = self.sink.stats();
        let mut lat: Vec<f64> = stats
            .txn_latency
            .iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        let (p50, p99) = (pct(0.5), pct(0.99));
        // /status carries the summary, not a thousand samples.
        stats.txn_latency.clear();
        let lag_s = self.oldest.map_or(0.0, |t| t.elapsed().as_secs_f64());
        self.metrics.applied_index.set(applied as i64);
        self.metrics.standby_checkpoint.set(checkpoint as i64);
        self.metrics
            .lag_entries
            .set(commit.saturating_sub(checkpoint) as i64);
        self.metrics.lag_seconds.set(lag_s);
        self.metrics
            .leases_mirrored
            .set(stats.leases_mirrored as i64);
        self.metrics
            .keepalive_failures
            .set(stats.keepalive_failures as i64);
        let lag_bytes = self
            .shared
            .committed_bytes
            .load(Ordering::Relaxed)
            .saturating_sub(self.replayed_bytes);
        self.metrics.lag_bytes.set(lag_bytes as i64);
        if let Ok(mut s) = self.shared.replay.lock() {
            s.lag_bytes = lag_bytes;
            s.applied_index = applied;
            s.standby_checkpoint = checkpoint;
            s.lag_entries = commit.saturating_sub(checkpoint);
            s.lag_seconds = lag_s;
            s.txn_latency_ms_p50 = p50;
            s.txn_latency_ms_p99 = p99;
            s.sink = Some(stats);
        }
        // The WAL must keep what a restart needs to rebuild the model.
        let floor = self.db_floor.max(self.saved.0.min(checkpoint));
        self.shared.keep_floor.store(floor, Ordering::Relaxed);
    }

    /// Applies one committed entry to the model and queues its effects.
    fn apply_entry(&mut self, e: &raftpb::Entry, at: Instant) -> Result<()> {
        if e.index <= self.model.applied_index() {
            return Ok(());
        }
        self.replayed_bytes += e.data.as_ref().map_or(0, |d| d.len() as u64);
        let decoded = decode_entry(e);
        let applied = self.model.apply(e.index, e.term, &decoded);
        self.metrics
            .outcomes
            .get_or_create(&OutcomeLabel {
                outcome: outcome_label(&applied.outcome),
            })
            .inc();
        if applied.outcome.is_halt() {
            let why = crate::walcmd::outcome_text(&applied.outcome);
            if !self.opts.skip_undecodable {
                bail!(
                    "raft entry {} (term {}) cannot be replayed ({why}); replay halted. \
                     Inspect it with `etcd-standby wal dump --start-index {0} --end-index {0}`; \
                     restart with --skip-undecodable to skip it",
                    e.index,
                    e.term
                );
            }
            tracing::error!(index = e.index, %why, "skipping an entry that cannot be replayed (--skip-undecodable)");
            // Advance the model past it as if it were the empty entry.
            self.model
                .apply(e.index, e.term, &etcd_standby_decode::Decoded::Empty);
        }
        let checkpoint = self.sink.checkpoint().map_or(0, |c| c.index);
        if e.index > checkpoint {
            self.oldest.get_or_insert(at);
            self.batch.push((e.index, e.term, applied.effects));
        }
        Ok(())
    }

    /// Writes the batch, retrying while the standby is unreachable.
    async fn flush(&mut self, stop: &watch::Receiver<bool>) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            let t = Instant::now();
            match self.sink.apply(&self.batch).await {
                Ok(_) => {
                    self.metrics.txn_seconds.observe(t.elapsed().as_secs_f64());
                    self.batch.clear();
                    self.oldest = None;
                    self.set_state("replaying", None);
                    self.maybe_save_model();
                    self.publish();
                    return Ok(());
                }
                Err(e @ SinkError::Fenced { .. }) => {
                    self.set_state("fenced", Some(e.to_string()));
                    return Err(anyhow::Error::new(e));
                }
                Err(e) if e.is_retryable() => {
                    self.metrics.sink_errors.inc();
                    tracing::warn!(error = %e, "standby write failed; retrying (the learner keeps receiving)");
                    self.set_state("waiting for standby", Some(e.to_string()));
                    self.publish();
                    if *stop.borrow() {
                        bail!("stopped while the standby was unavailable");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if let Err(e) = self.sink.resync().await {
                        tracing::warn!(error = %e, "re-reading the standby checkpoint");
                    }
                }
                Err(e) => {
                    self.metrics.sink_errors.inc();
                    self.set_state("halted", Some(e.to_string()));
                    return Err(
                        anyhow::Error::new(e).context("the standby refused a write; replay halted")
                    );
                }
            }
        }
    }

    /// Reads the standby's revision (a count-only range on our checkpoint key).
    async fn refresh_standby_revision(&self) {
        let req = etcd_standby_client::pb::RangeRequest {
            key: self.sink.checkpoint_key().clone(),
            count_only: true,
            ..Default::default()
        };
        if let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(2), self.sink.client().range(req)).await
            && let Some(h) = resp.header
        {
            self.metrics.standby_revision.set(h.revision);
            if let Ok(mut s) = self.shared.replay.lock() {
                s.standby_revision = h.revision;
            }
        }
    }

    /// Saves the model now and then, at the standby's checkpoint, so a
    /// restart replays only the WAL after it (and old WAL can be released).
    fn maybe_save_model(&mut self) {
        let checkpoint = self.sink.checkpoint().map_or(0, |c| c.index);
        let applied = self.model.applied_index();
        let due = applied >= self.saved.0 + self.opts.model_save_every.max(1)
            || (applied > self.saved.0 && self.saved.1.elapsed() > Duration::from_secs(300));
        if !due || applied != checkpoint || !self.batch.is_empty() {
            return;
        }
        let (layout, model) = (&self.layout, &self.model);
        match tokio::task::block_in_place(|| save_model(layout, model)) {
            Ok(i) => {
                self.saved = (i, Instant::now());
                tracing::info!(index = i, "shadow model saved");
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not save the shadow model; restarts replay more of the WAL")
            }
        }
    }

    /// Reconciles the standby to the snapshot db at `index` and reseeds the model.
    async fn reconcile(&mut self, index: u64) -> Result<()> {
        let Some((db_index, path)) = newest_db(&self.layout, u64::MAX).filter(|(i, _)| *i >= index)
        else {
            bail!(
                "the log jumps to a snapshot at {index}, but no snapshot db at or after it is in {}",
                self.layout.snap().display()
            );
        };
        self.set_state("reconciling", None);
        let mut state = load_db(&path)?;
        // The log continues after the snapshot's index.
        state.consistent_index = state.consistent_index.max(db_index);
        let term = state.term;
        tracing::info!(
            index = db_index,
            keys = state.keys.len(),
            "reconciling the standby with a leader snapshot"
        );
        let mut backoff = Duration::from_millis(200);
        let report = loop {
            match self
                .sink
                .reconcile(&state, db_index, term, self.opts.reconcile)
                .await
            {
                Ok(r) => break r,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "reconcile: standby unavailable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e @ SinkError::MassDelete { .. }) => {
                    self.set_state("halted", Some(e.to_string()));
                    return Err(anyhow::Error::new(e).context(
                        "reconcile paused by the mass-delete guard; check the primary, then restart with --accept-mass-delete",
                    ));
                }
                Err(e) => return Err(anyhow::Error::new(e).context("reconciling the standby")),
            }
        };
        tracing::info!(?report, "reconcile done");
        self.metrics.reconciles.inc();
        self.db_floor = db_index;
        self.model = Model::from_snapshot_with_config(self.opts.model.clone(), state);
        self.publish();
        Ok(())
    }

    /// Applies committed entries from the local WAL after the model's index
    /// up to `up_to`, reconciling when the log jumps over a snapshot.
    async fn catch_up_from_wal(&mut self, up_to: u64, stop: &watch::Receiver<bool>) -> Result<()> {
        loop {
            let after = self.model.applied_index();
            if after >= up_to {
                return Ok(());
            }
            let mut entries = Vec::new();
            let limit = self.opts.max_batch;
            let wal = self.layout.wal();
            let end = tokio::task::block_in_place(|| {
                for_each_committed(&wal, after, up_to, |e| {
                    entries.push(e);
                    entries.len() < limit
                })
            })
            .with_context(|| {
                format!(
                    "reading committed entries after {after} from {}",
                    wal.display()
                )
            })?;
            let now = Instant::now();
            for e in &entries {
                self.apply_entry(e, now)?;
            }
            self.flush(stop).await?;
            match end {
                CommittedEnd::NeedSnapshot { index, .. } => self.reconcile(index).await?,
                CommittedEnd::Done(last) if last == after => return Ok(()), // nothing more on disk yet
                _ => {}
            }
        }
    }
}

/// Runs replay until stopped or a fatal error (fenced, refused, undecodable).
pub async fn run(
    mut opts: ReplayOptions,
    layout: Layout,
    cluster_id: u64,
    shared: Arc<Shared>,
    metrics: ReplayMetrics,
    mut live: mpsc::Receiver<Committed>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    opts.sink.source_cluster_id = cluster_id;
    let set = |state: &str, err: Option<String>| {
        if let Ok(mut s) = shared.replay.lock() {
            s.state = state.into();
            s.error = err;
        }
    };
    set("connecting to standby", None);
    let mut backoff = Duration::from_millis(200);
    let sink = loop {
        match Sink::connect(opts.sink.clone()).await {
            Ok(s) => break s,
            Err(e) if e.is_retryable() => {
                set("waiting for standby", Some(e.to_string()));
                tracing::warn!(error = %e, "standby unreachable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                set("halted", Some(e.to_string()));
                return Err(anyhow::Error::new(e).context("connecting to the standby"));
            }
        }
    };
    let checkpoint = sink.checkpoint().map_or(0, |c| c.index);
    let mut r = Replay {
        model: Model::with_config(opts.model.clone()),
        opts,
        layout,
        shared: shared.clone(),
        metrics,
        sink,
        batch: Vec::new(),
        oldest: None,
        saved: (0, Instant::now()),
        replayed_bytes: 0,
        db_floor: 0,
    };
    // Rebuild the model at the standby's checkpoint: from the newest saved
    // model or snapshot db at or below it (or index 1), plus the WAL.
    let saved = newest_model(&r.layout, checkpoint);
    let db = newest_db(&r.layout, checkpoint);
    r.db_floor = db.as_ref().map_or(0, |(i, _)| *i);
    if checkpoint > 0 {
        match (saved, db) {
            (Some((mi, mpath)), db) if db.as_ref().is_none_or(|(di, _)| *di <= mi) => {
                let state = load_model(&mpath)?;
                r.model = Model::from_snapshot_with_config(r.opts.model.clone(), state);
                r.saved = (mi, Instant::now());
            }
            (_, Some((db_index, path))) => {
                let mut state = load_db(&path)?;
                state.consistent_index = state.consistent_index.max(db_index);
                r.model = Model::from_snapshot_with_config(r.opts.model.clone(), state);
            }
            (None, None) if wal_has_index_one(&r.layout) => {}
            (_, None) => {
                // Nothing to rebuild from: reconcile from the newest db.
                let newest = newest_db(&r.layout, u64::MAX).map(|(i, _)| i);
                match newest {
                    Some(i) => r.reconcile(i).await?,
                    None => bail!(
                        "the standby is at raft index {checkpoint}, but the local log can rebuild neither from index 1 nor from a snapshot db; \
                         wait for a leader snapshot or start over with a fresh standby"
                    ),
                }
            }
        }
        tracing::info!(
            checkpoint,
            from = r.model.applied_index(),
            "rebuilding the shadow model to the standby's checkpoint"
        );
        r.set_state("rebuilding model", None);
    } else if !wal_has_index_one(&r.layout)
        && let Some((i, _)) = newest_db(&r.layout, u64::MAX)
    {
        r.reconcile(i).await?;
    }
    r.publish();
    // Catch up with what is already committed, then follow the live channel.
    let commit = shared.snapshot().commit_index;
    r.catch_up_from_wal(commit, &stop).await?;
    r.set_state("replaying", None);
    r.publish();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_applied = (r.model.applied_index(), Instant::now());
    loop {
        tokio::select! {
            item = live.recv() => {
                let Some((at, entries)) = item else { return Ok(()) };
                let mut items = vec![(at, entries)];
                while let Ok(x) = live.try_recv() {
                    items.push(x);
                    if items.len() >= 64 { break; }
                }
                for (at, entries) in items {
                    let Some(first) = entries.first() else { continue };
                    if first.index > r.model.applied_index() + 1 {
                        // The channel dropped some: read them back from the WAL.
                        r.catch_up_from_wal(first.index - 1, &stop).await?;
                    }
                    for e in &entries {
                        if e.index == r.model.applied_index() + 1 {
                            r.apply_entry(e, at)?;
                        }
                    }
                    if r.batch.len() >= r.opts.max_batch {
                        r.flush(&stop).await?;
                    }
                }
                r.flush(&stop).await?;
                r.publish();
            }
            _ = tick.tick() => {
                // Entries dropped at the tail of the channel: nothing newer
                // arrives to reveal the gap, so look at the commit index.
                let applied = r.model.applied_index();
                if applied != last_applied.0 {
                    last_applied = (applied, Instant::now());
                } else if applied < shared.snapshot().commit_index
                    && last_applied.1.elapsed() > Duration::from_millis(400)
                {
                    let commit = shared.snapshot().commit_index;
                    r.catch_up_from_wal(commit, &stop).await?;
                }
                r.refresh_standby_revision().await;
                r.publish();
            }
            _ = stop.changed() => {
                r.flush(&stop).await.ok();
                return Ok(());
            }
        }
    }
}
