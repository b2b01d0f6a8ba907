//! Replay: committed entries → shadow model → effects → standby.
//!
//! Replay follows the node loop's commit point (a `watch`) and reads
//! committed entries from one [`CommittedReader`] (the in-memory tail of
//! recent entries, backed by the durable local WAL). A leader snapshot in
//! the log (entries that exist only in its db) triggers a reconcile by diff.
//! Replay never slows the learner: the node loop never waits on it.
//!
//! Exactly once: every standby txn carries the checkpoint (source cluster,
//! index, term) and is guarded by the fencing epoch; on restart the
//! standby's checkpoint says where to resume, and the model is rebuilt to
//! that index ([`rebuild_plan`]). Replay writes to the standby through the
//! [`StandbySink`] trait, so it can be driven in unit tests with a fake.
//!
//! Overlap: during catch-up, replay gives the sink entries in groups of
//! `FEED_ENTRIES` (512) without waiting for them to land (the sink keeps a few
//! chained txns in flight), so the model works on the next group while the
//! standby writes this one. Groups given and not yet confirmed by the
//! checkpoint stay in `sent` and are given again after a failed write. Replay
//! waits for the standby (settles) when it has nothing more to read, before
//! a reconcile, before saving the model and at shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use etcd_standby_decode::{Decoded, decode_entry};
use etcd_standby_model::{Effect, Model, ModelConfig, SnapshotState, ValueStore};
use etcd_standby_proto::raftpb;
use etcd_standby_sink::{
    ReconcileOptions, ReconcileReport, Sink, SinkConfig, SinkError, SinkStats,
};
use etcd_standby_wal::for_each_committed;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::blocking;
use crate::committed::{CommittedReader, Read, Retention};
use crate::error::{Context, Error, Result, bail};
use crate::metrics::{OutcomeLabel, ReplayMetrics};
use crate::status::{ReplayState, ReplayStatus, StatusCell};
use crate::store::Layout;
use crate::times::ReceiveTimes;
use crate::values::{self, DiskValues};

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
    /// Keep this much of the newest received log unapplied (`--apply-delay`):
    /// the log stays durable, only replay waits.
    pub apply_delay: Option<Duration>,
    /// `--preserve-revisions`: replay from the data dir's seed
    /// ([`crate::seed`]) with the standby's revisions equal to the
    /// primary's (fills `sink.preserve`).
    pub preserve_revisions: bool,
}

/// Whole entries' effects, in index order: (index, term, effects).
pub type Batch = [(u64, u64, Vec<Effect>)];

/// The standby, as replay writes it. [`Sink`] is the real one.
pub trait StandbySink: Send {
    /// The raft index the standby has checkpointed (0: never written).
    fn checkpoint_index(&self) -> u64;
    /// The raft index up to which everything given is on the standby: the
    /// checkpoint's, or beyond it with entries that write nothing
    /// (revision-preserving mode checkpoints only entries that bump a
    /// revision).
    fn confirmed_index(&self) -> u64 {
        self.checkpoint_index()
    }
    /// Revokes standby leases the primary no longer holds, keyless ones
    /// only (revision-preserving mode, at restart). Returns how many.
    fn revoke_leases(
        &mut self,
        _ids: &[i64],
    ) -> impl Future<Output = Result<usize, SinkError>> + Send {
        async { Ok(0) }
    }
    /// Takes whole entries' effects, in index order, and writes them with
    /// the checkpoint, fenced by the epoch. A streaming sink may return
    /// once they are sent (some in flight, the last txn still filling);
    /// [`StandbySink::settle`] waits until all are on the standby. After an
    /// error, entries above [`StandbySink::checkpoint_index`] are given again.
    fn apply(&mut self, batch: &Batch) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Waits until everything given to [`StandbySink::apply`] is on the
    /// standby (checkpointed).
    fn settle(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
    /// Re-reads the checkpoint after an ambiguous failure.
    fn resync(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Makes the standby equal `state` by diff (deletions included); long
    /// values held by reference are read from `values`.
    fn reconcile(
        &mut self,
        state: &SnapshotState,
        values: &dyn ValueStore,
        index: u64,
        term: u64,
        opts: ReconcileOptions,
    ) -> impl Future<Output = Result<ReconcileReport, SinkError>> + Send;
    /// The standby's current revision, if it answers quickly.
    fn revision(&self) -> impl Future<Output = Option<i64>> + Send;
    /// Counters for `/status`.
    fn stats(&self) -> SinkStats;
    /// The primary's revision after entry `index` (recorded with the
    /// checkpoint of exactly that index; see `verify --at-checkpoint`).
    fn note_source_revision(&mut self, _index: u64, _revision: i64) {}
    /// The IDs of the standby's leases, when the sink can list them
    /// (`None`: it cannot, and lost leases are not looked for).
    fn lease_ids(&self) -> impl Future<Output = Result<Option<Vec<i64>>, SinkError>> + Send {
        async { Ok(None) }
    }
    /// Grants `(id, ttl)` leases again with their IDs (leases the standby
    /// expired on its own) and keeps them alive.
    fn regrant_leases(
        &mut self,
        _leases: &[(i64, i64)],
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
}

impl StandbySink for Sink {
    fn checkpoint_index(&self) -> u64 {
        self.checkpoint().map_or(0, |c| c.index)
    }
    fn confirmed_index(&self) -> u64 {
        Sink::confirmed_index(self)
    }
    async fn revoke_leases(&mut self, ids: &[i64]) -> Result<usize, SinkError> {
        Sink::revoke_leases(self, ids).await
    }
    async fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        Sink::feed(self, batch).await.map(|_| ())
    }
    async fn settle(&mut self) -> Result<(), SinkError> {
        Sink::settle(self).await.map(|_| ())
    }
    async fn resync(&mut self) -> Result<(), SinkError> {
        Sink::resync(self).await
    }
    async fn reconcile(
        &mut self,
        state: &SnapshotState,
        values: &dyn ValueStore,
        index: u64,
        term: u64,
        opts: ReconcileOptions,
    ) -> Result<ReconcileReport, SinkError> {
        Sink::reconcile(self, state, values, index, term, opts).await
    }
    fn note_source_revision(&mut self, index: u64, revision: i64) {
        Sink::note_source_revision(self, index, revision);
    }
    async fn lease_ids(&self) -> Result<Option<Vec<i64>>, SinkError> {
        self.standby_lease_ids().await.map(Some)
    }
    async fn regrant_leases(&mut self, leases: &[(i64, i64)]) -> Result<(), SinkError> {
        Sink::regrant_leases(self, leases).await
    }
    async fn revision(&self) -> Option<i64> {
        let req = etcd_standby_client::pb::RangeRequest {
            key: self.checkpoint_key().clone(),
            count_only: true,
            ..Default::default()
        };
        match tokio::time::timeout(Duration::from_secs(2), self.client().range(req)).await {
            Ok(Ok(resp)) => resp.header.map(|h| h.revision),
            _ => None,
        }
    }
    fn stats(&self) -> SinkStats {
        Sink::stats(self)
    }
}

/// Where the model is rebuilt from at start, given the standby's
/// checkpoint and what the data dir holds. Pure, so it is tested as a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildFrom {
    /// Replay the WAL from index 1 (it holds index 1).
    Start,
    /// Load the saved model at this index, then the WAL after it.
    SavedModel(u64),
    /// Load the snapshot db at this index, then the WAL after it.
    SnapshotDb(u64),
    /// Nothing below the checkpoint to rebuild from: reconcile the standby
    /// from the newest snapshot db (at this index).
    Reconcile(u64),
    /// Nothing to rebuild from and no snapshot db: wait for one or re-seed.
    Impossible,
}

/// What the data dir holds, for [`rebuild_plan`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Rebuildable {
    /// Newest saved model at or below the checkpoint.
    pub saved_model: Option<u64>,
    /// Newest snapshot db at or below the checkpoint.
    pub db_at_or_below: Option<u64>,
    /// Newest snapshot db of any index.
    pub newest_db: Option<u64>,
    /// The local WAL starts at index 1.
    pub wal_has_index_one: bool,
}

/// The model-rebuild decision (Architecture Invariant 3).
pub fn rebuild_plan(checkpoint: u64, have: Rebuildable) -> RebuildFrom {
    if checkpoint == 0 {
        return match have.newest_db {
            Some(i) if !have.wal_has_index_one => RebuildFrom::Reconcile(i),
            _ => RebuildFrom::Start,
        };
    }
    match (have.saved_model, have.db_at_or_below) {
        (Some(m), db) if db.is_none_or(|d| d <= m) => RebuildFrom::SavedModel(m),
        (_, Some(d)) => RebuildFrom::SnapshotDb(d),
        (None, None) if have.wal_has_index_one => RebuildFrom::Start,
        (_, None) => match have.newest_db {
            Some(i) => RebuildFrom::Reconcile(i),
            None => RebuildFrom::Impossible,
        },
    }
}

/// Revision-preserving mode: whether `plan` starts the model nearer the
/// checkpoint than the seed snapshot (a saved model or a leader snapshot
/// db at or after the seed); otherwise the model starts from the seed.
pub fn seeded_plan_is_newer(plan: RebuildFrom, checkpoint: u64, seed_index: u64) -> bool {
    match plan {
        RebuildFrom::SavedModel(i) | RebuildFrom::SnapshotDb(i) => {
            checkpoint > 0 && i >= seed_index
        }
        RebuildFrom::Start | RebuildFrom::Reconcile(_) | RebuildFrom::Impossible => false,
    }
}

/// Newest `member/snap/<index>.snap.db` with index ≤ `max`.
fn newest_db(layout: &Layout, max: u64) -> Result<Option<(u64, PathBuf)>> {
    let dbs = match layout.snap_dbs() {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("listing {}", layout.snap().display())),
    };
    Ok(dbs.into_iter().rfind(|(i, _)| *i <= max))
}

/// Newest saved model with index ≤ `max`.
fn newest_model(layout: &Layout, max: u64) -> Result<Option<(u64, PathBuf)>> {
    let models = match layout.saved_models() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("listing {}", layout.model_dir().display()));
        }
    };
    Ok(models.into_iter().rfind(|(i, _)| *i <= max))
}

/// Saves the model (at an index the standby has confirmed): the long values
/// committed durably first, then the model file (tmp file, fsync, rename,
/// fsync dir, written straight from the model); older saves are removed,
/// then values neither the model nor the new file holds.
fn save_model(layout: &Layout, model: &Model, values: &DiskValues) -> Result<u64> {
    let dir = layout.model_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let index = model.applied_index();
    let path = layout.saved_model(index);
    let tmp = path.with_extension("bin.tmp");
    values
        .flush()
        .context("committing the model's values before saving it")?;
    let write = || -> std::result::Result<(), Error> {
        let f = std::fs::File::create(&tmp)?;
        // A full disk fails this half way: the partial file must not stay
        // and keep the space (removed below).
        let mut w = std::io::BufWriter::new(f);
        model.write_to(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("saving the shadow model to {}", path.display()));
    }
    for (i, p) in layout.saved_models().unwrap_or_default() {
        if i != index
            && let Err(e) = std::fs::remove_file(&p)
        {
            tracing::warn!(path = %p.display(), error = %e, "could not remove an older saved model");
        }
    }
    match values.collect_garbage(&model.live_digests()) {
        Ok(n) if n > 0 => tracing::debug!(deleted = n, "value store: garbage collected"),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "value store: could not collect garbage (retried after the next save)")
        }
    }
    Ok(index)
}

fn load_model(path: &Path) -> Result<SnapshotState> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    SnapshotState::read_from(&mut std::io::BufReader::new(f))
        .with_context(|| format!("reading {}", path.display()))
}

/// The state in the snapshot db at raft `index`: the log continues after
/// that index even when the db's own consistent index is older.
///
/// Long values go to `values` as they are read (memory follows the keys).
fn load_db(path: &Path, index: u64, values: &dyn ValueStore) -> Result<SnapshotState> {
    let db = etcd_standby_bolt::BoltFile::open(path)
        .with_context(|| format!("opening snapshot db {}", path.display()))?;
    let mut state = etcd_standby_bolt::model_state_in(&db, values)
        .with_context(|| format!("reading snapshot db {}", path.display()))?;
    state.consistent_index = state.consistent_index.max(index);
    Ok(state)
}

/// Whether the local WAL still starts at raft index 1 (no segment released
/// yet). A WAL whose first segment starts later does not; reading errors of a
/// WAL that does are errors.
fn wal_has_index_one(layout: &Layout) -> Result<bool> {
    let wal = layout.wal();
    let segments = etcd_standby_wal::list_segments(&wal)
        .with_context(|| format!("listing {}", wal.display()))?;
    // A segment's name carries the index its entries follow on from.
    if segments.first().is_none_or(|s| s.index > 1) {
        return Ok(false);
    }
    let mut first = None;
    for_each_committed(&wal, 0, 1, |e| {
        first = Some(e.index);
        false
    })
    .with_context(|| format!("reading the first entry of {}", wal.display()))?;
    Ok(first == Some(1))
}

/// What the data dir holds to rebuild the model at `checkpoint`.
pub fn rebuildable(layout: &Layout, checkpoint: u64) -> Result<Rebuildable> {
    Ok(Rebuildable {
        saved_model: newest_model(layout, checkpoint)?.map(|(i, _)| i),
        db_at_or_below: newest_db(layout, checkpoint)?.map(|(i, _)| i),
        newest_db: newest_db(layout, u64::MAX)?.map(|(i, _)| i),
        wal_has_index_one: wal_has_index_one(layout)?,
    })
}

/// Replay's owned state.
pub struct Replay<S: StandbySink> {
    opts: ReplayOptions,
    layout: Layout,
    status: StatusCell<ReplayStatus>,
    metrics: ReplayMetrics,
    retention: Retention,
    sink: S,
    model: Model,
    /// Where the model keeps long values.
    values: std::sync::Arc<DiskValues>,
    /// Pending (index, term, effects) not yet written.
    batch: Vec<(u64, u64, Vec<Effect>)>,
    /// Payload bytes of the entries in `batch` (their effects hold the
    /// values): written once over [`crate::committed::DEFAULT_READ_BYTES`].
    batch_bytes: usize,
    /// Commit time of the oldest entry in `batch`.
    oldest: Option<Instant>,
    /// Entries given to the sink and not yet confirmed by its checkpoint,
    /// in groups with the commit time of each group's oldest: given again
    /// after an error.
    sent: std::collections::VecDeque<Sent>,
    /// When the status was last published from a write.
    published: Instant,
    /// Index of the last saved model, and when.
    saved: (u64, Instant),
    /// Payload bytes of entries applied to the model by this process.
    replayed_bytes: u64,
    /// Index of the snapshot db a restart would rebuild from (0: none);
    /// set at start and by each reconcile, the only times it changes.
    db_floor: u64,
    /// When entries were received (for `--apply-delay`).
    times: Option<ReceiveTimes>,
    /// Whether the standby was checked for lost leases at its checkpoint.
    leases_checked: bool,
    /// A write met a lease the standby had expired while replay ran; it
    /// was granted again, and once the standby is at the model's index its
    /// keys are written back ([`Replay::restore_lost_leases`]).
    restore_lease_keys: bool,
    /// The lease keeper's count of leases the standby lost, as last seen.
    leases_lost_seen: u64,
    /// When saving the model last failed (a full data dir), so it is tried
    /// again only after [`MODEL_SAVE_RETRY`], with one warning per try.
    save_failed_at: Option<Instant>,
}

/// Entries given to the sink together, not all confirmed yet.
struct Sent {
    /// Commit time of the oldest of them.
    at: Instant,
    /// (index, term, effects), in index order.
    entries: Vec<(u64, u64, Vec<Effect>)>,
}

/// Committed entries are given to the sink once this many are pending (or
/// [`FEED_BYTES`]), so the model works on the next ones while the
/// standby writes these.
const FEED_ENTRIES: usize = 512;
/// Payload bytes after which pending entries are given to the sink.
const FEED_BYTES: usize = 2 << 20;
/// The status is published from writes at most this often (and whenever
/// replay has written everything).
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// After a failed model save (typically a full data dir), the next try
/// waits this long: the save is an optimisation, never worth a flood of
/// retries and warnings.
const MODEL_SAVE_RETRY: Duration = Duration::from_secs(60);

/// How many times restoring lost leases grants leases again after its
/// reconcile was refused for a lease that ran out meanwhile.
const LEASE_RESTORE_TRIES: u32 = 3;

impl<S: StandbySink> Replay<S> {
    /// Replay over a connected sink; call [`Replay::run`]. Opens the
    /// model's value store in the data dir.
    pub fn new(
        opts: ReplayOptions,
        layout: Layout,
        sink: S,
        status: StatusCell<ReplayStatus>,
        metrics: ReplayMetrics,
        retention: Retention,
    ) -> Result<Replay<S>> {
        let values = DiskValues::open(&layout.model_dir().join(values::FILE_NAME))?;
        Ok(Replay {
            model: Model::with_values(opts.model.clone(), values.clone()),
            values,
            opts,
            layout,
            status,
            metrics,
            retention,
            sink,
            batch: Vec::new(),
            batch_bytes: 0,
            oldest: None,
            sent: std::collections::VecDeque::new(),
            published: Instant::now(),
            saved: (0, Instant::now()),
            replayed_bytes: 0,
            db_floor: 0,
            times: None,
            leases_checked: false,
            restore_lease_keys: false,
            leases_lost_seen: 0,
            save_failed_at: None,
        })
    }

    /// Gives replay the received-times index (needed by `--apply-delay`;
    /// without it a delay holds everything back).
    pub fn with_receive_times(mut self, times: ReceiveTimes) -> Replay<S> {
        self.times = Some(times);
        self
    }

    /// The highest index replay may apply now: everything, or with
    /// `--apply-delay D` only entries received at least D ago.
    fn release_limit(&self) -> u64 {
        let Some(delay) = self.opts.apply_delay else {
            return u64::MAX;
        };
        let Some(cutoff) = SystemTime::now().checked_sub(delay) else {
            return 0;
        };
        self.times
            .as_ref()
            .map_or(0, |t| t.last_index_received_by(cutoff))
    }

    /// How long until the next held-back entry may be applied (bounded, so
    /// a missing time record is retried).
    fn next_release_in(&self) -> Duration {
        let (Some(delay), Some(times)) = (self.opts.apply_delay, &self.times) else {
            return Duration::from_secs(1);
        };
        let next = self.model.applied_index() + 1;
        times
            .received_at(next)
            .and_then(|t| (t + delay).duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::from_millis(10))
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// Sets the state; an error is kept until replay is healthy again.
    fn set_state(&self, state: ReplayState, error: Option<&SinkError>) {
        self.metrics.set_replay_state(state);
        self.status.update(|s| {
            if s.state != state {
                tracing::info!(from = %s.state, to = %state, "replay state");
            }
            s.state = state;
            if error.is_some() || state == ReplayState::Replaying {
                s.error = error.map(ToString::to_string);
                s.error_code = error.map(|e| crate::codes::sink_code(e).id);
            }
        });
    }

    fn publish(&self, reader: &CommittedReader) {
        let point = reader.point();
        let commit = point.index;
        let applied = self.model.applied_index();
        let checkpoint = self.sink.checkpoint_index();
        let confirmed = self.sink.confirmed_index();
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
        let lag_s = self
            .sent
            .front()
            .map(|g| g.at)
            .or(self.oldest)
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        let lag_entries = commit.saturating_sub(confirmed);
        let lag_bytes = point.bytes_total.saturating_sub(self.replayed_bytes);
        let delayed = match self.opts.apply_delay {
            Some(_) => commit.saturating_sub(self.release_limit().max(applied)),
            None => 0,
        };
        self.metrics.applied_index.set(applied as i64);
        self.metrics.model_keys.set(self.model.len() as i64);
        self.metrics
            .model_index_bytes
            .set(self.model.index_bytes() as i64);
        self.metrics.standby_checkpoint.set(checkpoint as i64);
        self.metrics.lag_entries.set(lag_entries as i64);
        self.metrics.lag_seconds.set(lag_s);
        self.metrics
            .leases_mirrored
            .set(stats.leases_mirrored as i64);
        self.metrics
            .count_keepalive_failures(stats.keepalive_failures);
        self.metrics.lag_bytes.set(lag_bytes as i64);
        self.status.update(|s| {
            s.delayed_entries = delayed;
            s.apply_delay_seconds = self.opts.apply_delay.map_or(0.0, |d| d.as_secs_f64());
            s.lag_bytes = lag_bytes;
            s.applied_index = applied;
            s.standby_checkpoint = checkpoint;
            s.confirmed_index = confirmed;
            s.lag_entries = lag_entries;
            s.lag_seconds = lag_s;
            s.txn_latency_ms_p50 = p50;
            s.txn_latency_ms_p99 = p99;
            s.sink = Some(stats);
        });
        // The WAL must keep what a restart needs to rebuild the model.
        self.retention
            .set_floor(self.db_floor.max(self.saved.0.min(checkpoint)));
    }

    /// Applies one committed entry to the model and queues its effects.
    fn apply_entry(&mut self, e: &raftpb::Entry, at: Instant) -> Result<()> {
        if e.index <= self.model.applied_index() {
            return Ok(());
        }
        self.replayed_bytes += e.data.as_ref().map_or(0, |d| d.len() as u64);
        let before = self.model.revision();
        let decoded = decode_entry(e);
        let applied = self.model.apply(e.index, e.term, &decoded);
        self.metrics
            .outcomes
            .get_or_create(&OutcomeLabel {
                outcome: applied.outcome.label(),
            })
            .inc();
        if applied.outcome.is_halt() {
            let reason = applied.outcome.to_string();
            if !self.opts.skip_undecodable {
                return Err(Error::Halt {
                    index: e.index,
                    term: e.term,
                    reason,
                });
            }
            tracing::error!(index = e.index, %reason, "skipping an entry that cannot be replayed (--skip-undecodable)");
            // Advance the model past it as if it were the empty entry.
            let empty = self.model.apply(e.index, e.term, &Decoded::Empty);
            if empty.outcome.is_halt() || self.model.applied_index() != e.index {
                return Err(Error::Halt {
                    index: e.index,
                    term: e.term,
                    reason: format!("the model could not skip it ({})", empty.outcome),
                });
            }
        }
        if self.opts.sink.preserve.is_some() {
            self.check_revision_rule(e, before, &applied)?;
        }
        if e.index > self.sink.confirmed_index() {
            self.oldest.get_or_insert(at);
            self.batch_bytes += crate::committed::payload(e);
            self.batch.push((e.index, e.term, applied.effects));
        }
        Ok(())
    }

    /// Revision-preserving mode: an entry bumped the primary's revision
    /// exactly when it changed keys (then by one), which is what makes it
    /// one standby txn; the sink is told the revision to check the txn
    /// against. Anything else is a model bug and halts.
    fn check_revision_rule(
        &mut self,
        e: &raftpb::Entry,
        before: i64,
        applied: &etcd_standby_model::Applied,
    ) -> Result<()> {
        let writes = applied
            .effects
            .iter()
            .any(|x| matches!(x, Effect::Put { .. } | Effect::Delete { .. }));
        let step = applied.revision - before;
        if step != i64::from(writes) {
            return Err(Error::Halt {
                index: e.index,
                term: e.term,
                reason: format!(
                    "revision-preserving replay: the entry moved the primary's revision by {step} \
                     ({before} to {}) but {} keys; every revision must be exactly one standby txn",
                    applied.revision,
                    if writes { "changed" } else { "changed no" }
                ),
            });
        }
        // Only for entries still to write (a rebuild replays many below).
        if writes && e.index > self.sink.confirmed_index() {
            self.sink.note_source_revision(e.index, applied.revision);
        }
        Ok(())
    }

    /// Gives the batch to the sink, retrying while the standby is
    /// unreachable; with `settle` (or a model save due), waits until
    /// everything given is on the standby.
    async fn flush(
        &mut self,
        reader: &CommittedReader,
        stop: &watch::Receiver<bool>,
        settle: bool,
    ) -> Result<()> {
        if self.batch.is_empty() && (!settle || self.sent.is_empty()) {
            return Ok(());
        }
        let settle = settle || self.save_due();
        let mut backoff = Backoff::standby();
        if let Some(last) = self.batch.last()
            && last.0 == self.model.applied_index()
        {
            self.sink
                .note_source_revision(last.0, self.model.revision());
        }
        let mut regranted = false;
        loop {
            let t = Instant::now();
            let written = match self.sink.apply(&self.batch).await {
                Ok(()) if settle => self.sink.settle().await,
                other => other,
            };
            if written.is_err() {
                self.requeue_sent();
            }
            match written {
                Ok(()) => {
                    self.metrics.txn_seconds.observe(t.elapsed().as_secs_f64());
                    if !self.batch.is_empty() {
                        self.sent.push_back(Sent {
                            at: self.oldest.unwrap_or(t),
                            entries: std::mem::take(&mut self.batch),
                        });
                    }
                    self.batch_bytes = 0;
                    self.oldest = None;
                    self.trim_sent();
                    self.set_state(ReplayState::Replaying, None);
                    self.maybe_save_model();
                    if settle || self.published.elapsed() >= PUBLISH_EVERY {
                        self.published = Instant::now();
                        self.publish(reader);
                    }
                    if self.restore_lease_keys {
                        self.restore_lost_leases().await?;
                    }
                    return Ok(());
                }
                Err(e @ (SinkError::Fenced { .. } | SinkError::Promoted { .. })) => {
                    self.set_state(ReplayState::Fenced, Some(&e));
                    return Err(e.into());
                }
                // Once per batch: a second refusal after the re-grant halts.
                Err(e) if e.is_lease_not_found() && !regranted => {
                    regranted = true;
                    self.metrics.sink_errors.inc();
                    let n = self.regrant_lost_leases().await?;
                    tracing::warn!(
                        error = %e,
                        regranted = n,
                        "the standby expired leases the primary still holds while replay ran (nobody kept them alive there for longer than their TTL); granted them again, their keys are written back after this batch"
                    );
                    self.restore_lease_keys = true;
                }
                Err(e) if e.is_retryable() => {
                    self.metrics.sink_errors.inc();
                    tracing::warn!(error = %e, "standby write failed; retrying (the learner keeps receiving)");
                    self.set_state(ReplayState::WaitingForStandby, Some(&e));
                    self.publish(reader);
                    if *stop.borrow() {
                        bail!("stopped while the standby was unavailable");
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                    self.resync().await;
                }
                Err(e) => {
                    self.metrics.sink_errors.inc();
                    self.set_state(ReplayState::Halted, Some(&e));
                    return Err(
                        Error::from(e).context("the standby refused a write; replay halted")
                    );
                }
            }
        }
    }

    /// Re-reads the standby's checkpoint after a write whose outcome is
    /// unknown; a failure is only logged (the next write tells).
    async fn resync(&mut self) {
        if let Err(e) = self.sink.resync().await {
            tracing::warn!(error = %e, "re-reading the standby checkpoint");
        }
    }

    /// Drops from `sent` what the sink's checkpoint covers.
    fn trim_sent(&mut self) {
        let checkpoint = self.sink.confirmed_index();
        while let Some(group) = self.sent.front_mut() {
            if group.entries.last().is_none_or(|e| e.0 <= checkpoint) {
                self.sent.pop_front();
            } else {
                group.entries.retain(|e| e.0 > checkpoint);
                break;
            }
        }
    }

    /// After a failed write: what was given and not confirmed goes back in
    /// front of the batch, to be given again (the sink skips what its
    /// checkpoint covers).
    fn requeue_sent(&mut self) {
        if self.sent.is_empty() {
            return;
        }
        self.oldest = self.sent.front().map(|g| g.at).or(self.oldest);
        let mut entries: Vec<_> = self.sent.drain(..).flat_map(|g| g.entries).collect();
        entries.append(&mut self.batch);
        self.batch = entries;
    }

    async fn refresh_standby_revision(&self) {
        if let Some(rev) = self.sink.revision().await {
            self.metrics.standby_revision.set(rev);
            self.status.update(|s| s.standby_revision = rev);
        }
    }

    /// Saves the model now and then, at the standby's checkpoint, so a
    /// restart replays only the WAL after it (and old WAL can be released).
    fn maybe_save_model(&mut self) {
        let checkpoint = self.sink.checkpoint_index();
        let applied = self.model.applied_index();
        if !self.save_due()
            || applied != checkpoint
            || !self.batch.is_empty()
            || !self.sent.is_empty()
        {
            return;
        }
        let (layout, model, values) = (&self.layout, &self.model, &*self.values);
        match blocking(|| save_model(layout, model, values)) {
            Ok(i) => {
                self.saved = (i, Instant::now());
                self.save_failed_at = None;
                // Keys written in order since the last save left the index
                // half full: repack it (memory follows the keys' count).
                self.model.compact_memory();
                tracing::info!(index = i, "shadow model saved");
            }
            Err(e) => {
                self.save_failed_at = Some(Instant::now());
                tracing::warn!(
                    error = %e,
                    code = e.code().id,
                    retry_in_seconds = MODEL_SAVE_RETRY.as_secs(),
                    "could not save the shadow model; replay goes on (a restart replays more of the WAL)"
                )
            }
        }
    }

    /// Whether the model is due to be saved (so the next write settles).
    fn save_due(&self) -> bool {
        let applied = self.model.applied_index();
        let due = applied >= self.saved.0 + self.opts.model_save_every.max(1)
            || (applied > self.saved.0 && self.saved.1.elapsed() > Duration::from_secs(300));
        due && self
            .save_failed_at
            .is_none_or(|t| t.elapsed() >= MODEL_SAVE_RETRY)
    }

    /// Reconciles the standby to the snapshot db at `index` (or the newest
    /// after it) and reseeds the model.
    async fn reconcile(&mut self, index: u64, reader: &CommittedReader) -> Result<()> {
        if self.opts.sink.preserve.is_some() {
            let e = SinkError::RevisionsNotPreservable {
                index,
                reason: format!(
                    "the local log jumps from raft index {} to a leader snapshot at {index} (the \
                     entries between are not in it), and a reconcile by diff would give the \
                     standby revisions of its own",
                    self.model.applied_index()
                ),
            };
            self.set_state(ReplayState::Halted, Some(&e));
            return Err(e.into());
        }
        let Some((db_index, path)) =
            newest_db(&self.layout, u64::MAX)?.filter(|(i, _)| *i >= index)
        else {
            bail!(
                "the log jumps to a snapshot at {index}, but no snapshot db at or after it is in {}",
                self.layout.snap().display()
            );
        };
        self.set_state(ReplayState::Reconciling, None);
        let values = &*self.values;
        let state = blocking(|| load_db(&path, db_index, values))?;
        let term = state.term;
        tracing::info!(
            index = db_index,
            keys = state.keys.len(),
            "reconciling the standby with a leader snapshot"
        );
        let mut backoff = Backoff::standby();
        let report = loop {
            match self
                .sink
                .reconcile(&state, &*self.values, db_index, term, self.opts.reconcile)
                .await
            {
                Ok(r) => break r,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "reconcile: standby unavailable; retrying");
                    self.set_state(ReplayState::WaitingForStandby, Some(&e));
                    tokio::time::sleep(backoff.next_delay()).await;
                    // Its last write may have landed unanswered.
                    self.resync().await;
                }
                Err(e @ SinkError::MassDelete { .. }) => {
                    self.set_state(ReplayState::Halted, Some(&e));
                    return Err(Error::from(e).context(
                        "reconcile paused by the mass-delete guard; check the primary, then restart with --accept-mass-delete",
                    ));
                }
                Err(e @ SinkError::Fenced { .. }) => {
                    self.set_state(ReplayState::Fenced, Some(&e));
                    return Err(e.into());
                }
                Err(e) => {
                    self.set_state(ReplayState::Halted, Some(&e));
                    return Err(Error::from(e).context("reconciling the standby"));
                }
            }
        };
        tracing::info!(?report, "reconcile done");
        self.metrics.reconciles.inc();
        self.db_floor = db_index;
        let old = std::mem::replace(
            &mut self.model,
            Model::from_snapshot_in(self.opts.model.clone(), state, self.values.clone()),
        );
        // The replaced model's values go at the next save unless the new
        // one holds them too.
        for d in old.live_digests() {
            self.values.release(&d);
        }
        self.publish(reader);
        Ok(())
    }

    /// Makes the value store hold exactly the model's values (garbage left
    /// by a crash goes); returns how many the model holds that are missing.
    fn sweep_values(&self) -> Result<u64> {
        let live = self.model.live_digests();
        let values = &*self.values;
        let report = blocking(|| values.sweep(&live))?;
        tracing::info!(
            kept = report.kept,
            deleted = report.deleted,
            missing = report.missing,
            bytes = self.values.file_bytes(),
            "value store checked against the shadow model"
        );
        Ok(report.missing)
    }

    /// Rebuilds the model at the standby's checkpoint ([`rebuild_plan`]).
    async fn rebuild(&mut self, reader: &CommittedReader) -> Result<()> {
        let checkpoint = self.sink.checkpoint_index();
        let saved = newest_model(&self.layout, checkpoint)?;
        let db = newest_db(&self.layout, checkpoint)?;
        let have = rebuildable(&self.layout, checkpoint)?;
        self.db_floor = have.db_at_or_below.unwrap_or(0);
        let plan = rebuild_plan(checkpoint, have);
        if let Some(p) = self.opts.sink.preserve
            && !seeded_plan_is_newer(plan, checkpoint, p.seed_index)
        {
            return self.rebuild_from_seed(checkpoint, p.seed_index).await;
        }
        tracing::info!(
            checkpoint,
            ?plan,
            "rebuilding the shadow model to the standby's checkpoint"
        );
        // The saved model the rebuild starts from, if it does.
        let mut from_saved = None;
        match plan {
            RebuildFrom::Start => {}
            RebuildFrom::SavedModel(i) => {
                let Some((_, path)) = saved else {
                    bail!("saved model {i} vanished")
                };
                let state = blocking(|| load_model(&path))?;
                self.model =
                    Model::from_snapshot_in(self.opts.model.clone(), state, self.values.clone());
                from_saved = Some((i, path));
            }
            RebuildFrom::SnapshotDb(i) => {
                let Some((_, path)) = db else {
                    bail!("snapshot db {i} vanished")
                };
                let values = &*self.values;
                let state = blocking(|| load_db(&path, i, values))?;
                self.model =
                    Model::from_snapshot_in(self.opts.model.clone(), state, self.values.clone());
            }
            RebuildFrom::Reconcile(i) => self.reconcile(i, reader).await?,
            RebuildFrom::Impossible => bail!(
                "the standby is at raft index {checkpoint}, but the local log can rebuild neither from index 1 nor from a snapshot db; \
                 wait for a leader snapshot or start over with a fresh standby"
            ),
        }
        let missing = self.sweep_values()?;
        if let Some((i, path)) = from_saved {
            if missing > 0 {
                // A model whose values are gone cannot be replayed on:
                // without it, the plan falls back to a snapshot db, the
                // log from index 1 or a reconcile.
                tracing::error!(
                    path = %path.display(),
                    "the saved model refers to values missing from the value store; removing it and rebuilding without it"
                );
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
                self.model = Model::with_values(self.opts.model.clone(), self.values.clone());
                return Box::pin(self.rebuild(reader)).await;
            }
            self.saved = (i, Instant::now());
        }
        if checkpoint > 0 {
            self.set_state(ReplayState::RebuildingModel, None);
        }
        Ok(())
    }

    /// Revision-preserving mode: starts the model from the seed snapshot
    /// (the standby's state at the seed index, from which the WAL goes on).
    async fn rebuild_from_seed(&mut self, checkpoint: u64, seed_index: u64) -> Result<()> {
        if checkpoint != 0 && checkpoint < seed_index {
            let e = SinkError::RevisionsNotPreservable {
                index: checkpoint,
                reason: format!(
                    "the standby's checkpoint (raft index {checkpoint}) is older than the seed \
                     (raft index {seed_index}): it was not restored from this seed"
                ),
            };
            self.set_state(ReplayState::Halted, Some(&e));
            return Err(e.into());
        }
        let path = crate::seed::db_path(&self.layout);
        tracing::info!(
            checkpoint,
            seed_index,
            path = %path.display(),
            "rebuilding the shadow model from the seed snapshot"
        );
        let values = &*self.values;
        let state = blocking(|| load_db(&path, seed_index, values))?;
        self.model = Model::from_snapshot_in(self.opts.model.clone(), state, self.values.clone());
        self.db_floor = seed_index;
        let missing = self.sweep_values()?;
        if missing > 0 {
            bail!("the value store lost {missing} values of the seed snapshot just read");
        }
        if checkpoint > 0 {
            self.set_state(ReplayState::RebuildingModel, None);
        }
        Ok(())
    }

    /// Once, when the model reaches the standby's checkpoint after a
    /// (re)start: leases the primary holds there but the standby lacks were
    /// expired by the standby while nobody kept them alive (the replicator
    /// was stopped, paused or reconnecting for longer than their TTL; a
    /// restarted standby re-arms every lease with its TTL, which runs out
    /// before we reconnect). Writing on would fail with "lease not found"
    /// and the keys the standby deleted with them would stay missing, so
    /// the standby is reconciled to the model: the leases are granted again
    /// (same IDs) and their keys written back. The chaos suite found this
    /// (a standby outage, then 2 to 5 s leases). A lease the standby still
    /// listed may run out before the reconcile's write names it (its
    /// keep-alive not yet resumed): the refused reconcile grants the
    /// missing leases again and runs again, up to [`LEASE_RESTORE_TRIES`]
    /// times (the chaos suite found this too).
    ///
    /// While replay runs the same can happen (a pause or a standby
    /// partition longer than a lease's TTL): the write that names such a
    /// lease is refused, [`Replay::regrant_lost_leases`] grants the leases
    /// again, the write is retried, and then this reconcile writes their
    /// keys back (`restore_lease_keys`).
    async fn restore_lost_leases(&mut self) -> Result<()> {
        let checkpoint = self.sink.confirmed_index();
        if checkpoint == 0 || self.model.applied_index() != checkpoint {
            return Ok(());
        }
        let forced = std::mem::take(&mut self.restore_lease_keys);
        if self.leases_checked && !forced {
            return Ok(());
        }
        self.leases_checked = true;
        let have: std::collections::BTreeSet<i64> = match self.sink.lease_ids().await {
            Ok(Some(ids)) => ids.into_iter().collect(),
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the standby's leases to look for lost ones");
                return Ok(());
            }
        };
        let lost: Vec<i64> = self
            .model
            .leases()
            .keys()
            .filter(|id| !have.contains(id))
            .copied()
            .collect();
        if self.opts.sink.preserve.is_some() {
            return self.restore_leases_preserving(lost, &have).await;
        }
        if lost.is_empty() && !forced {
            return Ok(());
        }
        if let Some(first) = lost.first() {
            tracing::warn!(
                lost = lost.len(),
                first = format_args!("{first:#x}"),
                checkpoint,
                "the standby expired leases the primary still holds (nobody kept them alive there for longer than their TTL); restoring them and their keys"
            );
        } else {
            tracing::info!(
                checkpoint,
                "writing back the keys of leases the standby expired while replay ran"
            );
        }
        self.set_state(ReplayState::Reconciling, None);
        let state = self.model.to_snapshot_state();
        let term = self.model.applied_term();
        let mut regrants = 0;
        let report = loop {
            match self
                .sink
                .reconcile(&state, &*self.values, checkpoint, term, self.opts.reconcile)
                .await
            {
                // A lease the standby still listed ran out before the
                // reconcile's write named it (its keep-alive had not yet
                // resumed after the restart): grant the missing ones again
                // and reconcile again, which also writes back the keys the
                // standby deleted with it. A few times at most.
                Err(e) if e.is_lease_not_found() && regrants < LEASE_RESTORE_TRIES => {
                    regrants += 1;
                    self.metrics.sink_errors.inc();
                    let n = self.regrant_lost_leases().await?;
                    tracing::warn!(
                        error = %e,
                        regranted = n,
                        "a lease ran out on the standby while the lost ones were restored; granted again, reconciling again"
                    );
                }
                r => break r?,
            }
        };
        tracing::info!(?report, "lost leases restored");
        self.metrics.reconciles.inc();
        self.set_state(ReplayState::Replaying, None);
        Ok(())
    }

    /// Revision-preserving mode's lease restore: a reconcile would write
    /// keys at revisions of the standby's own, so only leases are mended:
    /// lost ones granted again (their keys, if the standby deleted them,
    /// moved its revision, and the next txn halts on it), and keyless ones
    /// the primary no longer holds revoked (a crash between a revoke's txn
    /// and the revoke).
    async fn restore_leases_preserving(
        &mut self,
        lost: Vec<i64>,
        have: &std::collections::BTreeSet<i64>,
    ) -> Result<()> {
        let leases = self.model.leases();
        let regrant: Vec<(i64, i64)> = lost
            .iter()
            .filter_map(|id| leases.get(id).map(|l| (*id, l.ttl)))
            .collect();
        let extra: Vec<i64> = have
            .iter()
            .filter(|id| !leases.contains_key(id))
            .copied()
            .collect();
        if !regrant.is_empty() {
            tracing::warn!(
                lost = regrant.len(),
                "the standby lost leases the primary holds; granting them again (revision-preserving: keys are not written back)"
            );
            self.sink.regrant_leases(&regrant).await?;
        }
        if !extra.is_empty() {
            let n = self.sink.revoke_leases(&extra).await?;
            tracing::info!(
                revoked = n,
                "revoked standby leases the primary no longer holds"
            );
        }
        Ok(())
    }

    /// When the lease keeper found a mirrored lease gone from the standby
    /// (expired there while nobody kept it alive), restores it and its keys
    /// without waiting for a write that names it: now when everything
    /// replayed is written, else after the pending batch.
    async fn watch_lost_leases(&mut self) -> Result<()> {
        let lost = self.sink.stats().leases_lost;
        if lost > self.leases_lost_seen {
            self.leases_lost_seen = lost;
            self.restore_lease_keys = true;
            if self.batch.is_empty() && self.sent.is_empty() {
                self.restore_lost_leases().await?;
            }
        }
        Ok(())
    }

    /// Grants again, with their IDs, the leases the standby lacks among
    /// those the model holds and those the pending batch attaches keys to
    /// (a lease revoked later in the batch is no longer in the model; it
    /// gets the TTL of its grant in the batch, or a minute, and the batch's
    /// revoke follows). Returns how many were granted.
    async fn regrant_lost_leases(&mut self) -> Result<usize> {
        let have: std::collections::BTreeSet<i64> = match self.sink.lease_ids().await? {
            Some(ids) => ids.into_iter().collect(),
            None => return Ok(0),
        };
        let mut want: BTreeMap<i64, i64> = self
            .model
            .leases()
            .iter()
            .map(|(id, l)| (*id, l.ttl))
            .collect();
        let mut granted_in_batch: BTreeMap<i64, i64> = BTreeMap::new();
        for (_, _, effects) in &self.batch {
            for e in effects {
                match e {
                    Effect::LeaseGrant { id, ttl } => {
                        granted_in_batch.insert(*id, *ttl);
                    }
                    Effect::Put { lease, .. } if *lease != 0 => {
                        let ttl = granted_in_batch.get(lease).copied().unwrap_or(60);
                        want.entry(*lease).or_insert(ttl);
                    }
                    _ => {}
                }
            }
        }
        let lost: Vec<(i64, i64)> = want
            .into_iter()
            .filter(|(id, _)| !have.contains(id))
            .collect();
        self.sink.regrant_leases(&lost).await?;
        Ok(lost.len())
    }

    /// Applies everything committed after the model's index: reads from
    /// the reader until it has nothing more, reconciling at snapshot jumps.
    async fn drain(
        &mut self,
        reader: &CommittedReader,
        stop: &watch::Receiver<bool>,
    ) -> Result<()> {
        loop {
            let after = self.model.applied_index();
            let limit = self.release_limit();
            if after >= limit {
                self.flush(reader, stop, true).await?;
                return Ok(());
            }
            let max = self
                .opts
                .max_batch
                .max(1)
                .min((limit - after).min(1 << 20) as usize);
            let (read, _) = blocking(|| reader.read(after, max))?;
            match read {
                Read::Entries(entries) => {
                    for (at, e) in &entries {
                        if e.index != self.model.applied_index() + 1 {
                            bail!(
                                "committed entries out of order: got {} after {} (local log damaged?)",
                                e.index,
                                self.model.applied_index()
                            );
                        }
                        self.restore_lost_leases().await?;
                        self.apply_entry(e, *at)?;
                        if self.batch.len() >= max.min(FEED_ENTRIES)
                            || self.batch_bytes >= FEED_BYTES
                        {
                            self.flush(reader, stop, false).await?;
                        }
                    }
                    // Applied: this replay reads after its model from now on.
                    reader.release_through(self.model.applied_index());
                }
                Read::NeedSnapshot { index } => {
                    self.flush(reader, stop, true).await?;
                    self.reconcile(index, reader).await?;
                }
                Read::Nothing => {
                    self.flush(reader, stop, true).await?;
                    return Ok(());
                }
            }
        }
    }

    /// Applies the committed entries up to the reader's commit point and
    /// stops (promotion's drain): rebuilds the model at the standby's
    /// checkpoint, writes everything after it, and returns the model and
    /// the sink. `Err` when replay cannot get there (the standby is then
    /// at whatever whole entries were written, as after any halt).
    pub async fn run_to(
        mut self,
        reader: &CommittedReader,
        stop: &watch::Receiver<bool>,
    ) -> Result<(Model, S)> {
        self.rebuild(reader).await?;
        self.publish(reader);
        self.drain(reader, stop).await?;
        self.publish(reader);
        Ok((self.model, self.sink))
    }

    /// Runs until stopped, the node loop ends, or a fatal error (fenced,
    /// refused, undecodable).
    pub async fn run(
        mut self,
        mut reader: CommittedReader,
        mut stop: watch::Receiver<bool>,
    ) -> Result<()> {
        if self.sink.checkpoint_index() > 0 && reader.point().index == 0 {
            // An empty local log (an HA instance taking over, or a data dir
            // started afresh) under a standby that was replicated to: the
            // leader is about to send the log from index 1 or a snapshot.
            // Decide how to rebuild once it started arriving.
            tracing::info!(
                checkpoint = self.sink.checkpoint_index(),
                "the local log is empty: waiting for the leader's first entries before rebuilding the model"
            );
            self.set_state(ReplayState::RebuildingModel, None);
            tokio::select! {
                more = reader.wait_beyond(0) => if !more { return Ok(()) },
                _ = stop.changed() => return Ok(()),
            }
        }
        self.rebuild(&reader).await?;
        self.publish(&reader);
        self.drain(&reader, &stop).await?;
        self.set_state(ReplayState::Replaying, None);
        self.publish(&reader);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let applied = self.model.applied_index();
            // With --apply-delay, committed entries may be waiting for their
            // time: then sleep until the next one is due instead of waking
            // on the commit point (which is already beyond).
            let held = self.opts.apply_delay.is_some() && reader.point().index > applied;
            tokio::select! {
                _ = tokio::time::sleep(self.next_release_in()), if held => {
                    self.drain(&reader, &stop).await?;
                    self.publish(&reader);
                }
                more = reader.wait_beyond(applied), if !held => {
                    if !more {
                        // The node loop is gone: write what we have and stop.
                        self.drain(&reader, &stop).await?;
                        return Ok(());
                    }
                    self.drain(&reader, &stop).await?;
                    self.publish(&reader);
                }
                _ = tick.tick() => {
                    self.watch_lost_leases().await?;
                    self.refresh_standby_revision().await;
                    self.publish(&reader);
                }
                _ = stop.changed() => {
                    if let Err(e) = self.flush(&reader, &stop, true).await {
                        tracing::warn!(error = %e, "final standby write at shutdown failed; it is replayed on restart");
                    }
                    return Ok(());
                }
            }
        }
    }
}

/// What replay shares with the rest of the daemon.
pub struct ReplayLinks {
    /// Replay's status record (replay writes it).
    pub status: StatusCell<ReplayStatus>,
    /// Replay's metrics.
    pub metrics: ReplayMetrics,
    /// The WAL retention floor (replay advances it).
    pub retention: Retention,
    /// Committed entries from the node loop.
    pub reader: CommittedReader,
    /// When entries were received (`--apply-delay`).
    pub times: ReceiveTimes,
}

/// Connects to the standby (retrying while it is unreachable) and runs
/// replay until stopped or a fatal error.
pub async fn run(
    mut opts: ReplayOptions,
    layout: Layout,
    cluster_id: u64,
    links: ReplayLinks,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let ReplayLinks {
        status,
        metrics,
        retention,
        reader,
        times,
    } = links;
    opts.sink.source_cluster_id = cluster_id;
    let set = |state: ReplayState, err: Option<&SinkError>| {
        metrics.set_replay_state(state);
        status.update(|s| {
            s.state = state;
            s.error = err.map(ToString::to_string);
            s.error_code = err.map(|e| crate::codes::sink_code(e).id);
        });
    };
    if opts.preserve_revisions {
        let mut told = false;
        let seed = loop {
            if let Some(p) = crate::seed::preserve_for(&layout, cluster_id)? {
                break p;
            }
            if !told {
                tracing::warn!(
                    path = %crate::seed::record_path(&layout).display(),
                    "--preserve-revisions: no seed yet; waiting for `etcd-standby seed --data-dir` (the learner keeps the whole log meanwhile)"
                );
                told = true;
            }
            set(ReplayState::WaitingForSeed, None);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return Ok(()),
            }
        };
        tracing::info!(
            seed_index = seed.seed_index,
            seed_revision = seed.seed_revision,
            "revision-preserving replay: the standby's revisions follow the primary's"
        );
        opts.sink.preserve = Some(seed);
    }
    set(ReplayState::ConnectingToStandby, None);
    let mut backoff = Backoff::standby();
    let sink = loop {
        match Sink::connect(opts.sink.clone()).await {
            Ok(s) => break s,
            Err(e) if e.is_retryable() => {
                set(ReplayState::WaitingForStandby, Some(&e));
                tracing::warn!(error = %e, "standby unreachable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
            Err(e) => {
                let state = if matches!(e, SinkError::Promoted { .. }) {
                    ReplayState::Fenced
                } else {
                    ReplayState::Halted
                };
                set(state, Some(&e));
                return Err(Error::from(e).context("connecting to the standby"));
            }
        }
    };
    Replay::new(opts, layout, sink, status, metrics, retention)?
        .with_receive_times(times)
        .run(reader, stop)
        .await
}
