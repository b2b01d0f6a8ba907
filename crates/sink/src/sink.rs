//! The standby writer: batched checkpointed txns with fencing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use etcd_standby_client::{Client, ClientConfig, ClientError, EtcdError, pb};
use etcd_standby_model::Effect;
use prost::Message;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::error::{Result, SinkError, show_bytes, show_key};
use crate::ha::{self, LockFence};
use crate::keymap::KeyMap;
use crate::lease::LeaseKeeper;
use crate::promotion::{self, ReservedKeys, value_at};
use crate::stats::{Counters, SinkStats};

/// Default `max_txn_ops` (etcd's `--max-txn-ops` default).
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// Default `max_request_bytes`: etcd's 1.5 MiB `--max-request-bytes`
/// default minus 64 KiB of headroom for the compare, checkpoint and framing.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024 - 64 * 1024;

/// Default [`SinkConfig::max_txns_in_flight`]. One: etcd handles
/// concurrent requests in any order (it often runs the newest first), so
/// on loopback most txns sent behind another overtook it and were sent
/// again; with replay already overlapping the model's work with the
/// standby's, 2 in flight caught up no faster than 1 (docs/benchmarks.md).
/// More can pay on a long round trip.
pub const DEFAULT_MAX_TXNS_IN_FLIGHT: usize = 1;

/// How the sink reaches the standby and what it writes.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The standby cluster. When the standby has auth enabled, set `user`
    /// to a dedicated user with the `root` role, or use a client
    /// certificate whose CN is such a user (then set
    /// [`SinkConfig::standby_user`]).
    pub client: ClientConfig,
    /// The primary's cluster ID (names the checkpoint key).
    pub source_cluster_id: u64,
    /// Key filtering and mapping.
    pub keys: KeyMap,
    /// The standby's `--max-txn-ops` (the checkpoint put counts as one).
    pub max_txn_ops: usize,
    /// Budget for one txn request (keep below the standby's
    /// `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// At most this many raft entries per standby txn.
    pub max_batch_entries: usize,
    /// Write txns sent to the standby before the first of them is
    /// confirmed. Each compares the checkpoint the one before it writes, so
    /// they land in order and exactly once; more in flight hides the
    /// standby's round trip and commit latency during catch-up.
    pub max_txns_in_flight: usize,
    /// Lease keep-alive requests per second at most.
    pub keepalive_per_sec: u32,
    /// The user the replicator acts as on the standby when it
    /// authenticates with a client certificate (its CN). Defaults to the
    /// name in `client.user`. The sink refuses to mirror changes to this
    /// user and creates / checks it before mirroring `AuthEnable`.
    pub standby_user: Option<String>,
    /// The HA lock this instance holds (`run --ha`): compared in every
    /// write txn. `None` (a single instance) refuses a standby on which an
    /// HA lock is held, so the two modes never write side by side.
    pub lock: Option<LockFence>,
    /// Revision-preserving replay (`run --preserve-revisions`): the
    /// standby's revision sequence equals the primary's. `None`: the
    /// default batched mode.
    pub preserve: Option<PreserveRevisions>,
}

/// Revision-preserving replay: the standby was restored from a primary
/// snapshot (`etcd-standby seed`), so it starts at the primary's revision,
/// and from there every entry that bumps the primary's revision becomes
/// exactly one standby txn (the checkpoint rides in it) while entries that
/// bump nothing write nothing. The sink then checks every txn's revision
/// and halts on the first that is not the primary's
/// ([`SinkError::RevisionMismatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreserveRevisions {
    /// The raft index the standby was seeded at (the snapshot's).
    pub seed_index: u64,
    /// The primary's revision at that index (the restored standby's).
    pub seed_revision: i64,
    /// The primary's HashKV at `seed_revision`, when the seed recorded it:
    /// a standby with no checkpoint yet must have the same.
    pub seed_hash: Option<u32>,
}

impl SinkConfig {
    /// Defaults for everything but the standby and the source cluster ID.
    pub fn new(client: ClientConfig, source_cluster_id: u64) -> SinkConfig {
        SinkConfig {
            client,
            source_cluster_id,
            keys: KeyMap::default(),
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_batch_entries: 10_000,
            max_txns_in_flight: DEFAULT_MAX_TXNS_IN_FLIGHT,
            keepalive_per_sec: 200,
            standby_user: None,
            lock: None,
            preserve: None,
        }
    }
}

/// Where replication stands: written to the standby in every write txn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The primary's cluster ID.
    pub cluster_id: u64,
    /// Last raft index applied to the standby.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// The primary's revision after that entry, when replay knew it (the
    /// shadow model's): `verify --at-checkpoint` reads the primary there.
    pub source_revision: Option<i64>,
    /// Written by revision-preserving replay: the standby's revision equals
    /// the primary's (`source_revision`) at this checkpoint.
    pub revisions_preserved: bool,
}

#[derive(Serialize, Deserialize)]
struct CheckpointValue {
    cluster_id: String,
    index: u64,
    term: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_revision: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    revisions_preserved: bool,
}

impl Checkpoint {
    fn encode(&self) -> Bytes {
        let v = CheckpointValue {
            cluster_id: format!("{:016x}", self.cluster_id),
            index: self.index,
            term: self.term,
            source_revision: self.source_revision,
            revisions_preserved: self.revisions_preserved,
        };
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }

    /// [`Checkpoint::decode`] of a value that may be absent (no checkpoint).
    pub(crate) fn decode_stored(
        key: &[u8],
        cluster_id: u64,
        value: Option<&Bytes>,
    ) -> Result<Option<Checkpoint>> {
        value
            .map(|v| Checkpoint::decode(key, cluster_id, v))
            .transpose()
    }

    /// Reads a checkpoint value written for `cluster_id` under `key`.
    pub fn decode(key: &[u8], cluster_id: u64, value: &[u8]) -> Result<Checkpoint> {
        let bad = |message: String| SinkError::BadReservedKey {
            key: show_key(key),
            message,
        };
        let v: CheckpointValue = serde_json::from_slice(value)
            .map_err(|e| bad(format!("not a checkpoint ({e}): {}", show_bytes(value, 64))))?;
        let id = u64::from_str_radix(&v.cluster_id, 16)
            .map_err(|e| bad(format!("cluster_id {:?}: {e}", v.cluster_id)))?;
        if id != cluster_id {
            return Err(bad(format!(
                "cluster_id {id:016x} does not match {cluster_id:016x}"
            )));
        }
        Ok(Checkpoint {
            cluster_id,
            index: v.index,
            term: v.term,
            source_revision: v.source_revision,
            revisions_preserved: v.revisions_preserved,
        })
    }
}

/// What one [`Sink::apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Standby write txns.
    pub txns: u64,
    /// Entries checkpointed.
    pub entries: u64,
    /// Entries skipped because they were at or below the checkpoint.
    pub already_applied: u64,
    /// Put / delete ops written.
    pub ops: u64,
    /// Encoded bytes of the txns.
    pub bytes: u64,
    /// Leases granted.
    pub lease_grants: u64,
    /// Leases revoked.
    pub lease_revokes: u64,
    /// Auth RPCs.
    pub auth_rpcs: u64,
}

impl ApplyStats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &ApplyStats) {
        self.txns += other.txns;
        self.entries += other.entries;
        self.already_applied += other.already_applied;
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.lease_grants += other.lease_grants;
        self.lease_revokes += other.lease_revokes;
        self.auth_rpcs += other.auth_rpcs;
    }
}

/// One key's final state within a pending txn.
#[derive(Debug, Clone)]
pub(crate) enum KvOp {
    Put { value: Bytes, lease: i64 },
    Delete,
}

/// The txn being assembled: whole entries only.
#[derive(Debug, Default)]
struct Pending {
    ops: BTreeMap<Bytes, KvOp>,
    bytes: usize,
    entries: u64,
    first: u64,
    last: Option<(u64, u64)>,
}

/// Writes effects to the standby. See the crate docs.
pub struct Sink {
    pub(crate) client: Client,
    pub(crate) cfg: SinkConfig,
    pub(crate) epoch: u64,
    pub(crate) checkpoint: Option<Checkpoint>,
    /// The checkpoint's value as the standby holds it (what the next
    /// chained txn compares).
    checkpoint_raw: Option<Bytes>,
    pub(crate) standby_version: String,
    pub(crate) keeper: LeaseKeeper,
    keeper_task: tokio::task::JoinHandle<()>,
    pub(crate) counters: Arc<Mutex<Counters>>,
    pub(crate) epoch_key: Bytes,
    pub(crate) checkpoint_key: Bytes,
    /// Primary revisions after entries, from [`Sink::note_source_revision`]
    /// (taken by the checkpoint of exactly that index).
    source_revisions: BTreeMap<u64, i64>,
    /// Revision-preserving mode: the standby's revision after the last
    /// confirmed txn, and after the last one sent.
    standby_revision: i64,
    next_revision: i64,
    /// Entries given and not yet confirmed: the txn being filled and the
    /// txns in flight.
    stream: Stream,
    /// Answers still due for txns dropped by an error, awaited by
    /// [`Sink::resync`] before it reads the checkpoint.
    abandoned: Vec<TxnReply>,
}

/// What [`Sink::feed`] holds between calls.
#[derive(Default)]
struct Stream {
    /// The txn being filled.
    pending: Pending,
    /// Txns sent and not yet confirmed.
    pipe: Pipeline,
    /// The last index given (0: none since the last error or resync).
    fed: u64,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field(
                "source_cluster_id",
                &format_args!("{:016x}", self.cfg.source_cluster_id),
            )
            .field("epoch", &self.epoch)
            .field("checkpoint", &self.checkpoint)
            .field("standby_version", &self.standby_version)
            .finish_non_exhaustive()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.keeper_task.abort();
    }
}

fn op_put(key: Bytes, value: Bytes, lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key,
            value,
            lease,
            ..Default::default()
        })),
    }
}

fn op_delete(key: Bytes) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key,
                ..Default::default()
            },
        )),
    }
}

pub(crate) fn kv_op(key: &Bytes, op: &KvOp) -> pb::RequestOp {
    match op {
        KvOp::Put { value, lease } => op_put(key.clone(), value.clone(), *lease),
        KvOp::Delete => op_delete(key.clone()),
    }
}

/// Encoded size of a key's op (for the request-size budget).
fn op_len(key: &Bytes, op: &KvOp) -> usize {
    kv_op(key, op).encoded_len() + 4
}

pub(crate) fn lock(c: &Mutex<Counters>) -> MutexGuard<'_, Counters> {
    match c.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A range of the single key.
fn get_op(key: &Bytes) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
            key: key.clone(),
            ..Default::default()
        })),
    }
}

impl Sink {
    /// Connects to the standby, reads (or creates, as epoch 1) the fencing
    /// epoch key and the checkpoint for `source_cluster_id`, and starts the
    /// lease keeper with every lease the standby has.
    pub async fn connect(cfg: SinkConfig) -> Result<Sink> {
        if cfg.max_txn_ops < 2 {
            return Err(SinkError::Config("max_txn_ops must be at least 2".into()));
        }
        let client = Client::connect(cfg.client.clone())
            .await
            .map_err(|e| SinkError::client("connect to the standby", e))?;
        let mut standby_version = String::new();
        let mut last_err = None;
        for ep in client.endpoints() {
            match client.status(&ep).await {
                Ok(s) => {
                    standby_version = s.version;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        if standby_version.is_empty()
            && let Some(e) = last_err
        {
            return Err(SinkError::client("standby status", e));
        }
        let reserved = ReservedKeys::new(&cfg.keys, cfg.source_cluster_id);
        // A promoted standby is a primary now: never write to it again.
        let state = promotion::read_state(&client, &reserved).await?;
        if let Some(record) = &state.promoted {
            return Err(SinkError::Promoted {
                key: show_key(&reserved.promoted),
                record: show_bytes(record, 512),
            });
        }
        if cfg.lock.is_none()
            && let Some(h) = ha::holder(&client, &reserved).await?
        {
            return Err(SinkError::Config(format!(
                "the standby's HA lock {} is held by {h}: HA instances replicate this source; \
                 run with --ha too, or stop them first",
                show_key(&reserved.ha_lock)
            )));
        }
        let epoch_key = reserved.epoch.clone();
        let checkpoint_key = reserved.checkpoint.clone();
        let epoch = if cfg.preserve.is_some() {
            // Writing the epoch would give the standby a revision the
            // primary does not have: fence on the key as it is (absent: 0,
            // compared as absent; a promotion creates it).
            match state.epoch {
                None => 0,
                Some(0) => {
                    return Err(SinkError::BadReservedKey {
                        key: show_key(&epoch_key),
                        message: "epoch 0 is not a valid epoch".into(),
                    });
                }
                Some(e) => e,
            }
        } else {
            create_or_read_epoch(&client, &epoch_key).await?
        };
        let stored = read_checkpoint(&client, &checkpoint_key, cfg.source_cluster_id).await?;
        let standby_revision = check_mode(&client, &cfg, &stored).await?;
        let (keeper, keeper_task) = LeaseKeeper::spawn(client.clone(), cfg.keepalive_per_sec);
        let sink = Sink {
            client,
            cfg,
            epoch,
            checkpoint: stored.checkpoint,
            checkpoint_raw: stored.raw,
            standby_version,
            keeper,
            keeper_task,
            counters: Arc::new(Mutex::new(Counters::default())),
            epoch_key,
            checkpoint_key,
            source_revisions: BTreeMap::new(),
            standby_revision,
            next_revision: standby_revision,
            stream: Stream::default(),
            abandoned: Vec::new(),
        };
        sink.load_standby_leases().await?;
        tracing::info!(
            source_cluster = format_args!("{:016x}", sink.cfg.source_cluster_id),
            epoch = sink.epoch,
            checkpoint = ?sink.checkpoint.map(|c| c.index),
            standby_version = %sink.standby_version,
            leases = sink.keeper.leases().len(),
            "sink connected"
        );
        Ok(sink)
    }

    /// Tracks every lease the standby has (they were mirrored earlier).
    /// The IDs of the standby's leases.
    pub async fn standby_lease_ids(&self) -> Result<Vec<i64>> {
        let leases = self
            .client
            .lease_leases()
            .await
            .map_err(|e| SinkError::client("list the standby's leases", e))?;
        Ok(leases.leases.into_iter().map(|l| l.id).collect())
    }

    async fn load_standby_leases(&self) -> Result<()> {
        for id in self.standby_lease_ids().await? {
            match self.client.lease_time_to_live(id, false).await {
                Ok(t) if t.ttl > 0 => self.keeper.track(id, t.granted_ttl),
                Ok(_) => {}
                Err(e) => return Err(SinkError::client("standby lease TTL", e)),
            }
        }
        Ok(())
    }

    /// Re-reads the checkpoint and the epoch from the standby (after an
    /// [`SinkError::Unavailable`], when a write may or may not have landed).
    /// A checkpoint that went back from the one this sink confirmed (or
    /// vanished) is not adopted: [`SinkError::CheckpointMoved`], and the
    /// next write stops on it (entries between the two would be skipped).
    pub async fn resync(&mut self) -> Result<()> {
        // Nothing of ours may land after the read: drop the stream and wait
        // for every answer still due (each request has a deadline).
        let stream = std::mem::take(&mut self.stream);
        self.abandon(stream);
        self.await_abandoned().await;
        let stored = read_checkpoint(
            &self.client,
            &self.checkpoint_key,
            self.cfg.source_cluster_id,
        )
        .await?;
        if let Some(ours) = self.checkpoint
            && stored.checkpoint.is_none_or(|c| c.index < ours.index)
        {
            return Err(SinkError::CheckpointMoved {
                index: ours.index,
                key: show_key(&self.checkpoint_key),
                ours: Some(ours.index),
                found: stored.raw.as_ref().map(|v| show_bytes(v, 256)),
                ahead: false,
            });
        }
        self.standby_revision = check_mode(&self.client, &self.cfg, &stored).await?;
        self.next_revision = self.standby_revision;
        self.checkpoint = stored.checkpoint;
        self.checkpoint_raw = stored.raw;
        Ok(())
    }

    /// Drops a stream after an error: its partly filled txn is given again
    /// by the caller, the answers of its txns in flight are still due.
    fn abandon(&mut self, stream: Stream) {
        self.next_revision = self.standby_revision;
        self.abandoned
            .extend(stream.pipe.inflight.into_iter().filter_map(|f| f.reply));
    }

    /// Waits for the answer of every txn dropped by an error (each request
    /// has a deadline), so none lands after what follows.
    async fn await_abandoned(&mut self) {
        for reply in std::mem::take(&mut self.abandoned) {
            let _ = reply.await;
        }
    }

    /// Whether txns dropped by an error may still be answered (then only
    /// [`Sink::resync`] knows where the checkpoint stands).
    pub(crate) fn has_abandoned(&self) -> bool {
        !self.abandoned.is_empty()
    }

    /// Where to resume: the last applied entry (`None` = never replicated).
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        self.checkpoint
    }

    /// Our fencing epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The standby's etcd server version (e.g. `3.5.1`).
    pub fn standby_version(&self) -> &str {
        &self.standby_version
    }

    /// The standby client (shared).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The key map.
    pub fn keys(&self) -> &KeyMap {
        &self.cfg.keys
    }

    /// The epoch key on the standby.
    pub fn epoch_key(&self) -> &Bytes {
        &self.epoch_key
    }

    /// The checkpoint key on the standby.
    pub fn checkpoint_key(&self) -> &Bytes {
        &self.checkpoint_key
    }

    /// Tells the sink the primary's revision after entry `index` (the shadow
    /// model's); the checkpoint written for exactly that index records it.
    pub fn note_source_revision(&mut self, index: u64, revision: i64) {
        self.source_revisions.insert(index, revision);
    }

    /// The highest raft index everything up to which is on the standby:
    /// the checkpoint's, or in revision-preserving mode, when nothing is in
    /// flight, the last entry given (entries that bump no revision are
    /// never checkpointed on their own: a txn would bump one).
    pub fn confirmed_index(&self) -> u64 {
        let cp = self.floor();
        let idle = self.stream.pipe.inflight.is_empty() && self.stream.pending.entries == 0;
        if self.cfg.preserve.is_some() && idle {
            cp.max(self.stream.fed)
        } else {
            cp
        }
    }

    /// What the standby holds for sure: the checkpoint's index, and in
    /// revision-preserving mode at least the seed's (the restore put
    /// everything up to it there).
    fn floor(&self) -> u64 {
        let seed = self.cfg.preserve.map_or(0, |p| p.seed_index);
        self.checkpoint.map_or(0, |c| c.index).max(seed)
    }

    /// The standby's revision after the last confirmed txn
    /// (revision-preserving mode: the primary's at the checkpoint).
    pub fn standby_revision(&self) -> i64 {
        self.standby_revision
    }

    /// The lease keeper (runs as a task of the sink; stops when the sink is
    /// dropped or fenced).
    pub fn lease_keeper(&self) -> LeaseKeeper {
        self.keeper.clone()
    }

    /// Counters.
    pub fn stats(&self) -> SinkStats {
        let c = lock(&self.counters);
        let mut s = c.stats.clone();
        s.txn_latency = c.latency.iter().copied().collect();
        let k = self.keeper.stats();
        s.leases_mirrored = k.leases;
        s.keepalive_sent = k.sent;
        s.keepalive_ok = k.ok;
        s.keepalive_failures = k.failures;
        s.leases_lost = k.lost;
        s
    }

    pub(crate) fn is_v3_4(&self) -> bool {
        self.standby_version.starts_with("3.4") || self.standby_version.starts_with("3.3")
    }

    /// A txn guarded by our fence: the epoch compare and, for an HA
    /// instance, the lock compare. The failure branch reads both keys for
    /// [`Sink::fence_error`].
    pub(crate) fn fenced_txn(&self, success: Vec<pb::RequestOp>) -> pb::TxnRequest {
        let mut compare = vec![if self.epoch == 0 {
            promotion::absent(&self.epoch_key)
        } else {
            promotion::value_eq(&self.epoch_key, &self.epoch_value())
        }];
        let mut failure = vec![get_op(&self.epoch_key)];
        if let Some(l) = &self.cfg.lock {
            compare.push(l.compare());
            failure.push(get_op(&l.key));
        }
        pb::TxnRequest {
            compare,
            success,
            failure,
        }
    }

    /// A [`Sink::fenced_txn`] that also compares the checkpoint with
    /// `expect` (the raw value the txn before it writes; `None`: no
    /// checkpoint yet), so checkpointed txns land in order and exactly once
    /// however many are in flight. Its failure branch reads the checkpoint
    /// last.
    fn chained_txn(&self, success: Vec<pb::RequestOp>, expect: Option<&Bytes>) -> pb::TxnRequest {
        let mut txn = self.fenced_txn(success);
        txn.compare.push(match expect {
            Some(v) => promotion::value_eq(&self.checkpoint_key, v),
            None => promotion::absent(&self.checkpoint_key),
        });
        txn.failure.push(get_op(&self.checkpoint_key));
        txn
    }

    /// Whether a failed [`Sink::fenced_txn`] failed on the fence (the epoch
    /// or the HA lock), not on a checkpoint compare.
    fn fence_broken(&self, resp: &pb::TxnResponse) -> bool {
        let epoch = value_at(resp, 0).unwrap_or_default();
        if epoch != self.epoch_value() {
            return true;
        }
        self.cfg
            .lock
            .as_ref()
            .is_some_and(|l| value_at(resp, 1).unwrap_or_default() != l.value)
    }

    /// Why a [`Sink::fenced_txn`] did not succeed: the epoch moved
    /// ([`SinkError::Fenced`]) or the HA lock is someone else's
    /// ([`SinkError::LostLock`]). The sink stops either way.
    fn fence_error(&self, index: u64, resp: &pb::TxnResponse) -> SinkError {
        self.keeper.stop();
        let epoch = value_at(resp, 0).unwrap_or_default();
        if epoch != self.epoch_value() || self.cfg.lock.is_none() {
            return SinkError::Fenced {
                index,
                key: show_key(&self.epoch_key),
                ours: self.epoch,
                found: show_bytes(&epoch, 32),
            };
        }
        let lock_key = self.cfg.lock.as_ref().map(|l| l.key.clone());
        SinkError::LostLock {
            key: lock_key.map(|k| show_key(&k)).unwrap_or_default(),
            found: show_bytes(&value_at(resp, 1).unwrap_or_default(), 256),
        }
    }

    /// The epoch key's value while we hold `epoch` (empty: absent, epoch 0,
    /// a revision-preserving standby never promoted).
    fn epoch_value(&self) -> Bytes {
        if self.epoch == 0 {
            Bytes::new()
        } else {
            Bytes::from(self.epoch.to_string())
        }
    }

    /// Checks the fence without writing (before RPCs that cannot join a
    /// txn: auth changes).
    async fn check_fence(&self, index: u64) -> Result<()> {
        let resp = self
            .client
            .txn(self.fenced_txn(Vec::new()))
            .await
            .map_err(|e| SinkError::write(index, index, e))?;
        if resp.succeeded {
            Ok(())
        } else {
            Err(self.fence_error(index, &resp))
        }
    }

    /// Applies committed entries' effects, in index order, and waits until
    /// they are on the standby ([`Sink::feed`] then [`Sink::settle`]). See
    /// the crate docs for the batching, lease and auth rules.
    pub async fn apply(&mut self, batch: &[(u64, u64, Vec<Effect>)]) -> Result<ApplyStats> {
        let mut st = self.feed(batch).await?;
        let settled = self.settle().await?;
        st.add(&settled);
        Ok(st)
    }

    /// Takes committed entries' effects, in index order, and sends every
    /// txn they fill without waiting for more than the window allows: the
    /// last, partly filled txn waits for more entries or [`Sink::settle`].
    /// Entries at or below what was given before are skipped. After an
    /// error, what was given and not confirmed (above
    /// [`Sink::checkpoint`]) must be given again.
    pub async fn feed(&mut self, batch: &[(u64, u64, Vec<Effect>)]) -> Result<ApplyStats> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(ApplyStats::default());
        };
        let span = tracing::info_span!(
            "sink_apply",
            source_cluster = %format_args!("{:016x}", self.cfg.source_cluster_id),
            first = first.0,
            last = last.0,
        );
        self.await_abandoned().await;
        let mut stream = std::mem::take(&mut self.stream);
        let mut st = ApplyStats::default();
        let r = self
            .feed_inner(&mut stream, batch, &mut st)
            .instrument(span)
            .await;
        self.keep_or_abandon(stream, r.map(|()| st))
    }

    /// Writes the partly filled txn and waits for every txn in flight:
    /// then everything given is on the standby.
    pub async fn settle(&mut self) -> Result<ApplyStats> {
        let mut stream = std::mem::take(&mut self.stream);
        let mut st = ApplyStats::default();
        let r = async {
            self.flush(&mut stream.pending, &mut stream.pipe, &mut st)
                .await?;
            self.drain(&mut stream.pipe, &mut st).await
        }
        .await;
        self.keep_or_abandon(stream, r.map(|()| st))
    }

    /// After a call on the stream: keeps it, or on an error drops what it
    /// held (its txns in flight are awaited by [`Sink::resync`]).
    fn keep_or_abandon(&mut self, stream: Stream, r: Result<ApplyStats>) -> Result<ApplyStats> {
        match r {
            Ok(st) => {
                self.stream = stream;
                lock(&self.counters).stats.entries_already_applied += st.already_applied;
                Ok(st)
            }
            Err(e) => {
                self.abandon(stream);
                Err(e)
            }
        }
    }

    async fn feed_inner(
        &mut self,
        stream: &mut Stream,
        batch: &[(u64, u64, Vec<Effect>)],
        st: &mut ApplyStats,
    ) -> Result<()> {
        let Stream { pending, pipe, fed } = stream;
        let floor = self.floor().max(*fed);
        let mut prev = floor;
        for (index, term, effects) in batch {
            let (index, term) = (*index, *term);
            if index <= floor {
                st.already_applied += 1;
                tracing::debug!(index, checkpoint = floor, "entry already applied; skipped");
                continue;
            }
            if index <= prev && prev > floor {
                return Err(SinkError::OutOfOrder {
                    index,
                    previous: prev,
                });
            }
            prev = index;
            *fed = index;
            let mut kv: Vec<(Bytes, KvOp)> = Vec::new();
            let mut grants = Vec::new();
            let mut revokes = Vec::new();
            let mut auth = Vec::new();
            let mut compactions = Vec::new();
            // Revision-preserving: an entry with key changes bumped the
            // primary's revision once, so it is one standby txn of its own
            // (even when every key is filtered out: the checkpoint alone
            // bumps the standby's); any other entry writes no txn.
            let preserve = self.cfg.preserve.is_some();
            let bumps = preserve
                && effects
                    .iter()
                    .any(|e| matches!(e, Effect::Put { .. } | Effect::Delete { .. }));
            for e in effects {
                match e {
                    Effect::Put { key, value, lease } => {
                        if let Some(k) = self.cfg.keys.map(key) {
                            kv.push((
                                k,
                                KvOp::Put {
                                    value: value.clone(),
                                    lease: *lease,
                                },
                            ));
                        }
                    }
                    Effect::Delete { key } => {
                        if let Some(k) = self.cfg.keys.map(key) {
                            kv.push((k, KvOp::Delete));
                        }
                    }
                    Effect::LeaseGrant { id, ttl } => grants.push((*id, *ttl)),
                    Effect::LeaseRevoke { id } => revokes.push(*id),
                    Effect::AuthEnable
                    | Effect::AuthDisable
                    | Effect::UserAdd { .. }
                    | Effect::UserDelete { .. }
                    | Effect::UserChangePassword { .. }
                    | Effect::UserGrantRole { .. }
                    | Effect::UserRevokeRole { .. }
                    | Effect::RoleAdd { .. }
                    | Effect::RoleDelete { .. }
                    | Effect::RoleGrantPermission { .. }
                    | Effect::RoleRevokePermission { .. } => auth.push(e),
                    // Revision-preserving: the standby's history window
                    // follows the primary's (same revisions).
                    Effect::Compact { revision } if preserve => compactions.push(*revision),
                    // Tracked by the model, not replayed: the standby keeps
                    // its own compaction, alarms and lease clocks.
                    Effect::LeaseCheckpoint { .. }
                    | Effect::Compact { .. }
                    | Effect::AlarmActivate { .. }
                    | Effect::AlarmDeactivate { .. } => {}
                }
            }
            if !auth.is_empty() {
                // Auth RPCs cannot join a txn: flush what came before, make
                // the calls, then checkpoint this entry right away.
                self.flush(pending, pipe, st).await?;
                self.drain(pipe, st).await?;
                self.check_fence(index).await?;
                for e in auth {
                    self.apply_auth(index, e)
                        .instrument(tracing::debug_span!("auth", index))
                        .await?;
                    st.auth_rpcs += 1;
                }
            }
            for revision in compactions {
                self.flush(pending, pipe, st).await?;
                self.drain(pipe, st).await?;
                self.compact(index, revision).await?;
            }
            // A revoke reaches the standby once everything before its entry
            // is written and before any checkpoint covers its entry: a
            // checkpoint never claims a revoke that has not happened (a
            // crash between the two lost it for good, and `verify` right
            // after the checkpoint saw the lease still there).
            // Revision-preserving, a revoke that deletes keys comes after
            // its entry's txn instead (revoking first would delete them at
            // a revision of the standby's own); one a crash lost is
            // revoked at restart ([`Sink::revoke_leases`]).
            if !revokes.is_empty() && !bumps {
                self.flush(pending, pipe, st).await?;
                self.drain(pipe, st).await?;
                for id in std::mem::take(&mut revokes) {
                    self.revoke(index, id).await?;
                    st.lease_revokes += 1;
                }
            }
            for (id, ttl) in grants {
                self.grant(index, id, ttl).await?;
                st.lease_grants += 1;
            }
            if preserve {
                if bumps {
                    self.flush(pending, pipe, st).await?;
                    pending.first = index;
                    pending.bytes = kv.iter().map(|(k, op)| op_len(k, op)).sum();
                    pending.ops = kv.into_iter().collect();
                    pending.entries = 1;
                    pending.last = Some((index, term));
                    self.flush(pending, pipe, st).await?;
                    if !revokes.is_empty() {
                        self.drain(pipe, st).await?;
                        for id in revokes {
                            self.revoke(index, id).await?;
                            st.lease_revokes += 1;
                        }
                    }
                }
                continue;
            }
            // Fit the entry whole, or start a new txn.
            let new_keys = kv
                .iter()
                .filter(|(k, _)| !pending.ops.contains_key(k))
                .count();
            let bytes: usize = kv.iter().map(|(k, op)| op_len(k, op)).sum();
            if pending.entries > 0
                && (pending.ops.len() + new_keys + 1 > self.cfg.max_txn_ops
                    || pending.bytes + bytes > self.cfg.max_request_bytes
                    || pending.entries >= self.cfg.max_batch_entries as u64)
            {
                self.flush(pending, pipe, st).await?;
            }
            if pending.entries == 0 {
                pending.first = index;
            }
            for (k, op) in kv {
                pending.ops.insert(k, op);
            }
            pending.bytes += bytes;
            pending.entries += 1;
            pending.last = Some((index, term));
            if has_auth(effects) && !preserve {
                self.flush(pending, pipe, st).await?;
            }
        }
        Ok(())
    }

    /// Grants `(id, ttl)` leases again with their IDs (already existing is
    /// fine) and keeps them alive: mirrored leases the standby expired on
    /// its own while nobody kept them alive there (replicator paused,
    /// standby unreachable for longer than their TTL).
    pub async fn regrant_leases(&self, leases: &[(i64, i64)]) -> Result<()> {
        let index = self.checkpoint.map_or(0, |c| c.index);
        for &(id, ttl) in leases {
            self.grant(index, id, ttl).await?;
        }
        Ok(())
    }

    /// Revokes standby leases the primary no longer holds, those without
    /// keys only (revoking one with keys would delete them at a revision of
    /// the standby's own): revision-preserving replay's leftovers of a
    /// crash between a revoke's txn and the revoke. Returns how many.
    pub async fn revoke_leases(&self, ids: &[i64]) -> Result<usize> {
        let index = self.checkpoint.map_or(0, |c| c.index);
        let mut n = 0;
        for &id in ids {
            let keys = match self.client.lease_time_to_live(id, true).await {
                Ok(t) if t.ttl <= 0 => continue,
                Ok(t) => t.keys.len(),
                Err(e) if e.is_not_found() => continue,
                Err(source) => {
                    return Err(SinkError::Lease {
                        index,
                        id,
                        op: "time-to-live",
                        source,
                    });
                }
            };
            if keys > 0 {
                tracing::warn!(
                    lease = format_args!("{id:#x}"),
                    keys,
                    "a standby lease the primary does not hold still has keys; left alone"
                );
                continue;
            }
            self.revoke(index, id).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Revision-preserving: compacts the standby at the primary's
    /// compaction revision (once everything before it is written).
    /// Already compacted there (a repeat after a restart) is fine.
    async fn compact(&self, index: u64, revision: i64) -> Result<()> {
        match self.client.compact(revision, false).await {
            Ok(_) => {
                tracing::info!(
                    index,
                    revision,
                    "standby compacted at the primary's revision"
                );
                Ok(())
            }
            Err(e) if e.etcd_error() == Some(EtcdError::Compacted) => Ok(()),
            Err(e) if e.etcd_error() == Some(EtcdError::FutureRev) => {
                Err(SinkError::RevisionMismatch {
                    index,
                    expected: revision,
                    found: self.standby_revision,
                    detail: "the primary compacted at a revision the standby does not have yet"
                        .into(),
                })
            }
            Err(e) => Err(SinkError::write(index, index, e)),
        }
    }

    /// Grants a mirrored lease (already existing is fine) and tracks it.
    async fn grant(&self, index: u64, id: i64, ttl: i64) -> Result<()> {
        match self.client.lease_grant(id, ttl).await {
            Ok(_) => {}
            Err(e) if e.etcd_error() == Some(EtcdError::LeaseExists) => {
                tracing::debug!(
                    lease = format_args!("{id:#x}"),
                    "lease already on the standby"
                );
            }
            Err(source) => {
                return Err(SinkError::Lease {
                    index,
                    id,
                    op: "grant",
                    source,
                });
            }
        }
        lock(&self.counters).stats.lease_grants += 1;
        self.keeper.track(id, ttl);
        Ok(())
    }

    /// Revokes a mirrored lease (already gone is fine).
    pub(crate) async fn revoke(&self, index: u64, id: i64) -> Result<()> {
        self.keeper.untrack(id);
        match self.client.lease_revoke(id).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                tracing::debug!(
                    lease = format_args!("{id:#x}"),
                    "lease already gone on the standby"
                );
            }
            Err(source) => {
                return Err(SinkError::Lease {
                    index,
                    id,
                    op: "revoke",
                    source,
                });
            }
        }
        lock(&self.counters).stats.lease_revokes += 1;
        Ok(())
    }

    /// Sends the pending entries as one chained txn (the fence, the
    /// checkpoint before it, the ops, the new checkpoint) without waiting
    /// for its answer, once fewer than `max_txns_in_flight` are unconfirmed.
    async fn flush(
        &mut self,
        pending: &mut Pending,
        pipe: &mut Pipeline,
        st: &mut ApplyStats,
    ) -> Result<()> {
        let Some((index, term)) = pending.last else {
            return Ok(());
        };
        let p = std::mem::take(pending);
        let noted = self.source_revisions.get(&index).copied();
        // Revisions noted for entries up to this one are used or stale.
        self.source_revisions = self.source_revisions.split_off(&(index + 1));
        let revision = match self.cfg.preserve {
            None => None,
            Some(_) => {
                let next = self.next_revision + 1;
                if let Some(m) = noted
                    && m != next
                {
                    return Err(SinkError::RevisionMismatch {
                        index,
                        expected: m,
                        found: next,
                        detail: "the shadow model's revision after this entry is not the \
                                 standby's next one (nothing written)"
                            .into(),
                    });
                }
                self.next_revision = next;
                Some(next)
            }
        };
        let cp = Checkpoint {
            cluster_id: self.cfg.source_cluster_id,
            index,
            term,
            source_revision: revision.or(noted),
            revisions_preserved: revision.is_some(),
        };
        let ops: Vec<(Bytes, KvOp)> = p.ops.into_iter().collect();
        self.send(pipe, p.first, p.entries, &ops, cp, st).await
    }

    /// Sends one chained txn for entries `first..=cp.index`, first waiting
    /// for the oldest in flight while the window is full.
    async fn send(
        &mut self,
        pipe: &mut Pipeline,
        first: u64,
        entries: u64,
        ops: &[(Bytes, KvOp)],
        cp: Checkpoint,
        st: &mut ApplyStats,
    ) -> Result<()> {
        // Built while the txns before it are in flight. What it expects
        // stays right while waiting: the newest in flight's checkpoint, or
        // once that is confirmed, the same value as the sink's.
        let cp_raw = cp.encode();
        let expect = match pipe.inflight.back() {
            Some(f) => Some(f.cp_raw.clone()),
            None => self.checkpoint_raw.clone(),
        };
        let mut success = self.txn_ops(ops);
        success.push(op_put(self.checkpoint_key.clone(), cp_raw.clone(), 0));
        let txn = self.chained_txn(success, expect.as_ref());
        let bytes = txn.encoded_len();
        while pipe.inflight.len() >= self.cfg.max_txns_in_flight.max(1) {
            self.complete_oldest(pipe, st).await?;
        }
        let chased = !pipe.inflight.is_empty();
        let reply = self.start_txn(&txn).await;
        pipe.inflight.push_back(InFlight {
            first,
            entries,
            n_ops: ops.len(),
            bytes,
            revision: cp.source_revision.filter(|_| cp.revisions_preserved),
            cp,
            cp_raw,
            txn,
            chased,
            sent: Instant::now(),
            reply: Some(reply),
        });
        Ok(())
    }

    /// Waits for every txn in flight, in order.
    async fn drain(&mut self, pipe: &mut Pipeline, st: &mut ApplyStats) -> Result<()> {
        while !pipe.inflight.is_empty() {
            self.complete_oldest(pipe, st).await?;
        }
        Ok(())
    }

    /// Sends `txn` on its own task. Polled once here first, so requests are
    /// queued on the connection in the order of the calls (spawned tasks
    /// start in any order: tokio runs the newest first).
    async fn start_txn(&self, txn: &pb::TxnRequest) -> TxnReply {
        let client = self.client.clone();
        let req = txn.clone();
        let mut call = Box::pin(async move { client.txn(req).await });
        match std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
            Poll::Ready(answer) => tokio::spawn(std::future::ready(answer)),
            Poll::Pending => tokio::spawn(call),
        }
    }

    /// Waits for the oldest txn in flight, every txn before it being
    /// confirmed. A failed checkpoint compare means it overtook the txn
    /// before it on the way (the standby handles concurrent requests in any
    /// order), unless nothing was in flight when it was sent: then someone
    /// else moved the checkpoint ([`SinkError::CheckpointMoved`]).
    async fn complete_oldest(&mut self, pipe: &mut Pipeline, st: &mut ApplyStats) -> Result<()> {
        let Some(mut f) = pipe.inflight.pop_front() else {
            return Ok(());
        };
        let (first, last) = (f.first, f.cp.index);
        let resp = join_txn(f.reply.take(), first, last)
            .await?
            .map_err(|e| SinkError::write(first, last, e))?;
        if !resp.succeeded && self.fence_broken(&resp) {
            return Err(self.fence_error(first, &resp));
        }
        // A failed compare that finds this txn's own checkpoint means an
        // earlier copy of it (sent before an error) landed: it is confirmed
        // below like a success. Any other checkpoint:
        let found = (!resp.succeeded).then(|| found_checkpoint(&resp)).flatten();
        if !resp.succeeded && found.as_ref().is_none_or(|kv| kv.value != f.cp_raw) {
            if !f.chased {
                return Err(self.checkpoint_moved(first, &resp));
            }
            let rest: Vec<InFlight> = pipe.inflight.drain(..).collect();
            tracing::debug!(
                first,
                last,
                behind = rest.len(),
                "standby txn overtook the one before it; it and those behind it are sent again"
            );
            // Those behind it are chained to it, so they failed too: wait
            // until each is answered (an unanswered one could still land
            // after its resend), then send them all again, in order.
            let mut again = vec![f];
            for mut r in rest {
                // Any answer will do; a resend shows what stands.
                let _ = join_txn(r.reply.take(), r.first, r.cp.index).await;
                again.push(r);
            }
            lock(&self.counters).stats.txns_resent += again.len() as u64;
            for mut r in again {
                r.chased = !pipe.inflight.is_empty();
                r.reply = Some(self.start_txn(&r.txn).await);
                r.sent = Instant::now();
                pipe.inflight.push_back(r);
            }
            return Ok(());
        }
        if let Some(want) = f.revision {
            let (landed, detail) = match &found {
                Some(kv) => (kv.mod_revision, "an earlier copy of this txn"),
                None => (resp.header.as_ref().map_or(0, |h| h.revision), "the txn"),
            };
            if landed != want {
                return Err(SinkError::RevisionMismatch {
                    index: last,
                    expected: want,
                    found: landed,
                    detail: format!("{detail} landed at another revision"),
                });
            }
            self.standby_revision = want;
        }
        let took = f.sent.elapsed();
        self.checkpoint = Some(f.cp);
        self.checkpoint_raw = Some(f.cp_raw);
        st.txns += 1;
        st.entries += f.entries;
        st.ops += f.n_ops as u64;
        st.bytes += f.bytes as u64;
        lock(&self.counters).txn(f.n_ops, f.bytes, f.entries, took);
        tracing::debug!(
            first,
            last,
            ops = f.n_ops,
            bytes = f.bytes,
            took_us = took.as_micros() as u64,
            "standby txn"
        );
        Ok(())
    }

    /// The error for a chained txn whose checkpoint compare failed with
    /// every txn before it confirmed: the checkpoint in its failure branch
    /// (read last) is not the one this sink wrote.
    fn checkpoint_moved(&self, index: u64, resp: &pb::TxnResponse) -> SinkError {
        let found = found_checkpoint(resp).map(|kv| kv.value);
        let found_index = found.as_ref().and_then(|v| {
            Checkpoint::decode(&self.checkpoint_key, self.cfg.source_cluster_id, v)
                .ok()
                .map(|c| c.index)
        });
        let ours = self.checkpoint.map(|c| c.index);
        SinkError::CheckpointMoved {
            index,
            key: show_key(&self.checkpoint_key),
            ours,
            found: found.as_ref().map(|v| show_bytes(v, 256)),
            ahead: found_index.is_some_and(|f| ours.is_none_or(|o| f >= o)),
        }
    }

    /// The txn ops for `ops` (unique keys), leaving room for the checkpoint
    /// put. Ops beyond `max_txn_ops - 1` go into nested txns (one entry
    /// bigger than the limit: it must stay atomic).
    fn txn_ops(&self, ops: &[(Bytes, KvOp)]) -> Vec<pb::RequestOp> {
        let n_ops = ops.len();
        let success: Vec<pb::RequestOp> = ops.iter().map(|(k, op)| kv_op(k, op)).collect();
        if success.len() < self.cfg.max_txn_ops {
            return success;
        }
        // Nested txns, each within the limit. etcd counts a nested txn's
        // ops together with its parent's (observed on 3.4.23 and 3.5.1):
        // keep top-level + chunk within the limit.
        let max = self.cfg.max_txn_ops;
        let mut top = 2;
        let chunk = loop {
            let chunk = max.saturating_sub(top).max(1);
            if n_ops.div_ceil(chunk) < top || top >= max {
                break chunk;
            }
            top += 1;
        };
        tracing::debug!(
            ops = n_ops,
            nested = n_ops.div_ceil(chunk),
            "entry larger than max_txn_ops: nested txns"
        );
        success
            .chunks(chunk)
            .map(|c| pb::RequestOp {
                request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest {
                    success: c.to_vec(),
                    ..Default::default()
                })),
            })
            .collect()
    }

    /// Writes and waits for one txn: `ops` (unique keys) with the fence and,
    /// when `checkpoint` is given, the checkpoint chained to the one before
    /// it. Returns the encoded size.
    pub(crate) async fn write_txn(
        &mut self,
        first: u64,
        last: u64,
        ops: Vec<(Bytes, KvOp)>,
        checkpoint: Option<Checkpoint>,
    ) -> Result<usize> {
        if let Some(cp) = checkpoint {
            let mut pipe = Pipeline::default();
            let mut st = ApplyStats::default();
            self.send(&mut pipe, first, 0, &ops, cp, &mut st).await?;
            self.drain(&mut pipe, &mut st).await?;
            return Ok(st.bytes as usize);
        }
        let n_ops = ops.len();
        let txn = self.fenced_txn(self.txn_ops(&ops));
        let bytes = txn.encoded_len();
        let started = Instant::now();
        let resp = self
            .client
            .txn(txn)
            .await
            .map_err(|e| SinkError::write(first, last, e))?;
        let took = started.elapsed();
        if !resp.succeeded {
            return Err(self.fence_error(first, &resp));
        }
        lock(&self.counters).txn(n_ops, bytes, 0, took);
        tracing::debug!(
            first,
            last,
            ops = n_ops,
            bytes,
            took_us = took.as_micros() as u64,
            "standby txn"
        );
        Ok(bytes)
    }
}

/// A chained txn sent and not yet confirmed.
struct InFlight {
    first: u64,
    entries: u64,
    n_ops: usize,
    bytes: usize,
    /// Revision-preserving mode: the revision it must land at.
    revision: Option<i64>,
    cp: Checkpoint,
    /// `cp` encoded: what the next txn's compare expects.
    cp_raw: Bytes,
    /// Kept to send it again when it overtook the one before it.
    txn: pb::TxnRequest,
    /// Whether a txn before it was in flight when it was sent (so a failed
    /// checkpoint compare can mean it overtook that one).
    chased: bool,
    sent: Instant,
    /// `None` once awaited.
    reply: Option<TxnReply>,
}

/// The answer to a txn sent on its own task.
type TxnReply = tokio::task::JoinHandle<std::result::Result<pb::TxnResponse, ClientError>>;

/// The answer of a txn task (a task that ended without one is a bug).
async fn join_txn(
    reply: Option<TxnReply>,
    first: u64,
    last: u64,
) -> Result<std::result::Result<pb::TxnResponse, ClientError>> {
    let Some(reply) = reply else {
        return Err(SinkError::Internal(format!(
            "the txn of raft entries {first}..={last} was awaited twice"
        )));
    };
    reply.await.map_err(|e| {
        SinkError::Internal(format!(
            "the task writing raft entries {first}..={last} to the standby ended: {e}"
        ))
    })
}

/// Chained txns in flight, oldest first. Dropping it leaves the sent ones
/// running: their outcome is known only after [`Sink::resync`].
#[derive(Default)]
struct Pipeline {
    inflight: VecDeque<InFlight>,
}

/// Whether an entry has auth effects (it is checkpointed on its own, right
/// after its RPCs).
fn has_auth(effects: &[Effect]) -> bool {
    effects.iter().any(|e| {
        matches!(
            e,
            Effect::AuthEnable
                | Effect::AuthDisable
                | Effect::UserAdd { .. }
                | Effect::UserDelete { .. }
                | Effect::UserChangePassword { .. }
                | Effect::UserGrantRole { .. }
                | Effect::UserRevokeRole { .. }
                | Effect::RoleAdd { .. }
                | Effect::RoleDelete { .. }
                | Effect::RoleGrantPermission { .. }
                | Effect::RoleRevokePermission { .. }
        )
    })
}

/// The checkpoint a failed chained txn found (its failure branch reads it
/// last).
fn found_checkpoint(resp: &pb::TxnResponse) -> Option<etcd_standby_client::mvccpb::KeyValue> {
    let last = resp.responses.last()?;
    match &last.response {
        Some(pb::response_op::Response::ResponseRange(rr)) => rr.kvs.first().cloned(),
        _ => None,
    }
}

/// Reads the fencing epoch, creating it as 1 when absent (a
/// `create_revision == 0` compare, so two replicators agree).
async fn create_or_read_epoch(client: &Client, epoch_key: &Bytes) -> Result<u64> {
    let txn = pb::TxnRequest {
        compare: vec![promotion::absent(epoch_key)],
        success: vec![op_put(epoch_key.clone(), Bytes::from_static(b"1"), 0)],
        failure: vec![get_op(epoch_key)],
    };
    let resp = client
        .txn(txn)
        .await
        .map_err(|e| SinkError::client("read or create the epoch key", e))?;
    if resp.succeeded {
        tracing::info!(key = %show_key(epoch_key), "created fencing epoch 1 on the standby");
        return Ok(1);
    }
    let found = range_value(&resp).unwrap_or_default();
    promotion::parse_epoch(epoch_key, &found)
}

/// The checkpoint as the standby holds it.
struct StoredCheckpoint {
    /// Decoded (`None`: never written).
    checkpoint: Option<Checkpoint>,
    /// Its value as stored (what a chained txn compares).
    raw: Option<Bytes>,
    /// The revision of its last write (0: none).
    mod_revision: i64,
    /// The standby's revision when it was read.
    revision: i64,
}

/// Reads the checkpoint written for `cluster_id` under `key`.
async fn read_checkpoint(
    client: &Client,
    key: &Bytes,
    cluster_id: u64,
) -> Result<StoredCheckpoint> {
    let got = client
        .range(pb::RangeRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| SinkError::client("read the checkpoint", e))?;
    let revision = got.header.as_ref().map_or(0, |h| h.revision);
    let kv = got.kvs.into_iter().next();
    let mod_revision = kv.as_ref().map_or(0, |kv| kv.mod_revision);
    let raw = kv.map(|kv| kv.value);
    let checkpoint = Checkpoint::decode_stored(key, cluster_id, raw.as_ref())?;
    Ok(StoredCheckpoint {
        checkpoint,
        raw,
        mod_revision,
        revision,
    })
}

/// Checks that the standby suits the sink's mode and returns its revision.
///
/// The batched mode refuses a standby whose checkpoint says its revisions
/// are the primary's (the mode is chosen at seeding). Revision-preserving
/// replay needs a standby that is exactly where replication left it: with
/// no checkpoint yet, at the seed's revision (and, when the seed recorded
/// it, with the seed's HashKV there); with one, at the revision of the
/// checkpoint's own write, which must be the primary's revision it records.
async fn check_mode(client: &Client, cfg: &SinkConfig, stored: &StoredCheckpoint) -> Result<i64> {
    let Some(p) = cfg.preserve else {
        if let Some(cp) = stored.checkpoint.filter(|c| c.revisions_preserved) {
            return Err(SinkError::RevisionsNotPreservable {
                index: cp.index,
                reason: "this standby was seeded for revision-preserving replay and replicated \
                         in that mode; the batched mode would give it revisions of its own \
                         (run with --preserve-revisions)"
                    .into(),
            });
        }
        return Ok(stored.revision);
    };
    let not = |index: u64, reason: String| SinkError::RevisionsNotPreservable { index, reason };
    let not_seeded = |detail: String| SinkError::StandbyNotSeeded {
        index: p.seed_index,
        detail,
    };
    match stored.checkpoint {
        None => {
            if stored.revision != p.seed_revision {
                return Err(not_seeded(format!(
                    "the standby is at revision {}, not at the seed's {}: not restored from \
                     the seed snapshot (yet), or written since",
                    stored.revision, p.seed_revision
                )));
            }
            if let Some(want) = p.seed_hash {
                let mut last = None;
                for ep in client.endpoints() {
                    match client.hash_kv(&ep, p.seed_revision).await {
                        Ok(h) if h.hash == want => return Ok(stored.revision),
                        Ok(h) => {
                            return Err(not_seeded(format!(
                                "the standby's HashKV at revision {} is {} on {ep}, the seed's \
                                 is {want}: its keys are not the seed snapshot's",
                                p.seed_revision, h.hash
                            )));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                if let Some(e) = last {
                    return Err(SinkError::client("standby HashKV at the seed revision", e));
                }
            }
            Ok(stored.revision)
        }
        Some(cp) => {
            if !cp.revisions_preserved {
                return Err(not(
                    cp.index,
                    "the standby was replicated in the batched mode (its checkpoint does not \
                     preserve revisions)"
                        .into(),
                ));
            }
            if cp.source_revision != Some(stored.mod_revision) {
                return Err(SinkError::RevisionMismatch {
                    index: cp.index,
                    expected: cp.source_revision.unwrap_or(0),
                    found: stored.mod_revision,
                    detail: "the checkpoint's own write".into(),
                });
            }
            if stored.revision != stored.mod_revision {
                return Err(SinkError::RevisionMismatch {
                    index: cp.index,
                    expected: stored.mod_revision,
                    found: stored.revision,
                    detail: "the standby moved past the last checkpoint write: something else \
                             wrote to it"
                        .into(),
                });
            }
            Ok(stored.revision)
        }
    }
}

/// The value of the first range response in a txn's responses.
fn range_value(resp: &pb::TxnResponse) -> Option<Bytes> {
    resp.responses.iter().find_map(|r| match &r.response {
        Some(pb::response_op::Response::ResponseRange(rr)) => {
            rr.kvs.first().map(|kv| kv.value.clone())
        }
        _ => None,
    })
}
