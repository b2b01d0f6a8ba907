//! The node loop: peer inbound → follower core → durable log → responses.
//!
//! One task owns the follower and the log. It takes a batch of inbound
//! messages, steps them all, then runs one Ready cycle: persist (one fsync
//! for the whole batch), then advance and send the acknowledgements. So an
//! `MsgAppResp` never leaves before its entries are durable (Architecture
//! Invariant 1, guarded by `tests::acks_leave_only_after_their_entries_are_durable`).
//!
//! The loop works against two small traits, [`LogStore`] (the durable local
//! log) and [`Outbound`] (the peer transport), so it can be driven in unit
//! tests with in-memory fakes. Committed entries go to a [`CommittedTail`]
//! that replay reads; the loop never waits on replay.
//!
//! Besides the fsync per Ready, the loop flushes the log store's auxiliary
//! state ([`LogStore::flush_aux`]: the receive times, [`crate::times`]) at
//! most once per second and when it ends. It publishes when the current
//! leader was last heard from and when entries were last made durable.
//!
//! **A full disk** (a write of the log failing with ENOSPC or EDQUOT, see
//! [`Error::is_disk_full`]) does not end the loop. Nothing of the failed
//! Ready is acknowledged; the loop enters [`NodeState::DiskFull`] (status
//! with the error and its code, `etcd_standby_local_disk_full_total`), drops
//! what the leader sends meanwhile (the leader retries, as after a lost
//! message) and retries with backoff. A retry rebuilds the durable state as
//! a restart does ([`LogStore::reopen`]: space probe, WAL cut back to its
//! last fsync, re-opened, torn tail repaired) and a new raft core from what
//! it read, because after a failed write the core and the WAL writer may
//! believe in bytes that never became durable. Other errors still end the
//! loop. Guards: `tests/node_loop.rs` `a_full_disk_acknowledges_nothing_*`,
//! `tests/diskfull.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use etcd_standby_decode::Member;
use etcd_standby_follower::{Alarm, Event, Follower, FollowerError, Membership, Ready, Restored};
use etcd_standby_peer::{Inbound, IncomingSnapshot, Transport};
use etcd_standby_proto::raftpb;
use tokio::sync::{mpsc, watch};

use crate::backoff::Backoff;
use crate::blocking;
use crate::clock::unix_ms;
use crate::committed::CommittedTail;
use crate::error::{Context, Error, Result};
use crate::metrics::{AlarmLabel, LearnerMetrics};
use crate::status::{NodeState, NodeStatus, StatusCell};

/// Least time between two [`LogStore::flush_aux`] calls while the loop runs.
const AUX_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// While the disk is full: first and longest wait between two recovery tries.
const DISK_FULL_RETRY_FIRST: Duration = Duration::from_millis(250);
/// See [`DISK_FULL_RETRY_FIRST`].
const DISK_FULL_RETRY_MAX: Duration = Duration::from_secs(5);
/// While the disk stays full (or the auxiliary state keeps failing to
/// flush), a warning at most this often: a reminder, not a flood.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Counters the node loop publishes.
#[derive(Debug, Default, Clone, Copy)]
pub struct PersistStats {
    /// Entries written.
    pub entries: u64,
    /// Payload bytes written.
    pub bytes: u64,
    /// Time spent in fsync for this call.
    pub fsync: Option<Duration>,
}

/// The durable local log, as the node loop uses it.
pub trait LogStore: Send {
    /// Persists one Ready (snapshot with its db, entries, hard state) and
    /// fsyncs before returning. Nothing may be acknowledged before this returns.
    fn persist(&mut self, rd: &Ready, db: Option<&Path>) -> Result<PersistStats>;
    /// Writes a restart marker at a committed, durable `index`.
    fn mark(&mut self, index: u64, term: u64, membership: &Membership) -> Result<()>;
    /// Releases files wholly before `keep_from` (and before the retention
    /// floor replay set); returns how many were removed.
    fn release(&mut self, keep_from: u64) -> Result<usize>;
    /// Base snapshot or marker (index, term).
    fn base(&self) -> (u64, u64);
    /// Last durable entry (index, term).
    fn last(&self) -> (u64, u64);
    /// Commit index in the durable hard state.
    fn durable_commit(&self) -> u64;
    /// Records that the cluster removed us, so the data dir never rejoins.
    fn record_removal(&mut self) -> Result<()>;
    /// After a failed write: forgets whatever was not made durable and reads
    /// the log back exactly as a restart does (torn tail repaired), returning
    /// what the raft core is rebuilt from. Fails, with the file system's
    /// error, while the disk is still full. `base`, `last` and
    /// `durable_commit` describe the re-opened log afterwards.
    fn reopen(&mut self) -> Result<Restored>;
    /// Makes informational state the log keeps beside the WAL durable (the
    /// receive times): called at most once per second and when the loop
    /// ends, never per Ready, so it adds no fsync to the acknowledgement
    /// path. A failure is logged, not fatal. The default has nothing to flush.
    fn flush_aux(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Where responses go: the peer transport, or a fake in tests.
pub trait Outbound: Send {
    /// Sends a raft message (never blocks).
    fn send(&self, m: raftpb::Message);
    /// The members to dial.
    fn set_members(&self, members: Vec<Member>);
    /// The current leader.
    fn set_leader(&self, id: u64);
}

impl Outbound for Transport {
    fn send(&self, m: raftpb::Message) {
        Transport::send(self, m)
    }
    fn set_members(&self, members: Vec<Member>) {
        Transport::set_members(self, members)
    }
    fn set_leader(&self, id: u64) {
        Transport::set_leader(self, id)
    }
}

/// Tunables of the node loop.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Write a restart marker every this many committed entries.
    pub marker_every: u64,
    /// Keep at least this many entries of WAL before the newest marker.
    pub retention_entries: u64,
    /// Keep this many committed entries in memory (the rest is on disk).
    pub memory_window: u64,
    /// Most inbound messages stepped per fsync.
    pub max_batch: usize,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            marker_every: 10_000,
            retention_entries: 100_000,
            memory_window: 1_000,
            max_batch: 1024,
        }
    }
}

/// When the auxiliary state was last flushed, and whether flushing fails.
struct AuxFlush {
    last: Instant,
    failing_since: Option<Instant>,
    last_warn: Option<Instant>,
    failures: u64,
}

impl AuxFlush {
    fn new() -> AuxFlush {
        AuxFlush {
            last: Instant::now(),
            failing_since: None,
            last_warn: None,
            failures: 0,
        }
    }
}

/// How the loop ended.
#[derive(Debug)]
pub enum Exit {
    /// The cluster removed us.
    Removed(String),
    /// Shutdown was requested.
    Stopped,
}

/// The node loop's owned state.
pub struct Node<L: LogStore, T: Outbound> {
    /// The raft core.
    pub follower: Follower,
    /// The durable log.
    pub log: L,
    /// Where responses go.
    pub outbound: T,
    /// Our member ID.
    pub member_id: u64,
    /// The source cluster ID.
    pub cluster_id: u64,
    /// Published for `/status`.
    pub status: StatusCell<NodeStatus>,
    /// Metrics.
    pub metrics: LearnerMetrics,
    /// Tunables.
    pub opts: NodeOptions,
    /// Voters from MemberList at start: dialled until the log says otherwise.
    pub initial_members: Vec<Member>,
    /// Committed entries for replay (None: a log-only learner).
    pub committed: Option<CommittedTail>,
}

impl<L: LogStore, T: Outbound> Node<L, T> {
    fn members_for_transport(&self) -> Vec<Member> {
        let m = self.follower.membership();
        let mut all: BTreeMap<u64, &Member> =
            self.initial_members.iter().map(|mi| (mi.id, mi)).collect();
        for (id, mi) in &m.members {
            all.insert(*id, mi);
        }
        all.into_values()
            .filter(|mi| mi.id != self.member_id && !m.removed.contains(&mi.id))
            .cloned()
            .collect()
    }

    fn publish_status(&self, state: NodeState) {
        let st = self.follower.status();
        let (base, _) = self.log.base();
        let (durable, _) = self.log.last();
        self.metrics.received_index.set(st.last_index as i64);
        self.metrics.durable_index.set(durable as i64);
        self.metrics.commit_index.set(st.commit as i64);
        self.metrics
            .leader_commit_index
            .set(st.leader_commit as i64);
        self.metrics.snapshot_index.set(base as i64);
        self.metrics.term.set(st.term as i64);
        self.metrics.set_node_state(state);
        let members = self
            .follower
            .membership()
            .members
            .values()
            .cloned()
            .collect();
        self.status.update(|s| {
            s.member_id = format!("{:x}", self.member_id);
            s.cluster_id = format!("{:x}", self.cluster_id);
            s.leader_id = if st.leader == 0 {
                String::new()
            } else {
                format!("{:x}", st.leader)
            };
            s.term = st.term;
            s.last_received_index = st.last_index;
            s.last_durable_index = durable;
            s.commit_index = st.commit;
            s.leader_commit_index = st.leader_commit;
            s.snapshot_index = base;
            s.state = state;
            s.members = members;
        });
    }

    fn raise(&self, alarm: Alarm) {
        let kind = match &alarm {
            Alarm::VoteRequested { .. } => "vote_requested",
            Alarm::Promoted { .. } => "promoted",
            Alarm::TimeoutNow { .. } => "timeout_now",
        };
        tracing::error!(
            ?alarm,
            "ALARM: the cluster treats this learner as a voter; it never votes. Check `etcdctl member list` and remove or re-add it as a learner"
        );
        self.metrics
            .alarms
            .get_or_create(&AlarmLabel { kind })
            .inc();
        self.status.update(|s| {
            if !s.alarms.contains(&alarm) {
                s.alarms.push(alarm);
            }
        });
    }

    fn step(&mut self, m: raftpb::Message) -> Result<()> {
        match self.follower.step(m) {
            Ok(()) => Ok(()),
            Err(FollowerError::Refused(why)) => {
                self.metrics.refused_messages.inc();
                tracing::debug!(%why, "refused a raft message");
                Ok(())
            }
            Err(e @ FollowerError::CommittedConflict { .. }) => Err(Error::from(e).context(
                "the leader contradicts our committed log; re-bootstrap this learner (leave, wipe, run)",
            )),
            Err(e) => Err(Error::from(e).context("stepping a raft message")),
        }
    }

    /// One Ready cycle: persist, advance, send, react. Returns an exit when
    /// the core saw our own removal.
    async fn cycle(&mut self, snapshot: &mut Option<IncomingSnapshot>) -> Result<Option<Exit>> {
        while self.follower.has_ready() {
            let rd = self.follower.ready().context("raft ready")?;
            let db = if rd.snapshot.is_some() {
                snapshot.as_ref().map(|s| s.db_path.clone())
            } else {
                None
            };
            let log = &mut self.log;
            let stats = blocking(|| log.persist(&rd, db.as_deref()))
                .context("persisting to the local log")?;
            if let Some(snap) = &rd.snapshot {
                if let Some(tail) = &self.committed {
                    tail.snapshot(snap.metadata.as_ref().map_or(0, |m| m.index));
                }
                self.metrics.snapshots.inc();
                self.status.update(|s| s.snapshots_received += 1);
                if let Some(inc) = snapshot.take() {
                    tracing::info!(
                        index = self.log.base().0,
                        db_bytes = inc.db_size,
                        "leader snapshot saved"
                    );
                    inc.accept();
                }
            }
            if stats.entries > 0 {
                let now = unix_ms(SystemTime::now());
                self.status.update(|s| s.last_received_at_unix_ms = now);
            }
            self.metrics.entries_persisted.inc_by(stats.entries);
            self.metrics.bytes_persisted.inc_by(stats.bytes);
            if let Some(d) = stats.fsync {
                self.metrics.fsync_seconds.observe(d.as_secs_f64());
            }
            // Only now, with the Ready durable, may acknowledgements leave.
            let adv = self.follower.advance().context("raft advance")?;
            for m in adv.messages {
                self.outbound.send(m);
            }
            if let Some(tail) = &self.committed {
                tail.publish(adv.committed, self.log.durable_commit());
            }
            for ev in adv.events {
                match ev {
                    Event::Membership => self.outbound.set_members(self.members_for_transport()),
                    Event::Leader { id, term } => {
                        tracing::info!(leader = %format_args!("{id:x}"), term, "following leader");
                        self.outbound.set_leader(id);
                    }
                    Event::Alarm(a) => self.raise(a),
                    Event::IgnoredConfChange { index, reason } => {
                        tracing::info!(index, reason, "conf change ignored, as etcd ignores it")
                    }
                    Event::RemovedSelf { index } => {
                        return Ok(Some(Exit::Removed(format!(
                            "a committed conf change at index {index} removed this member"
                        ))));
                    }
                }
            }
        }
        // The snapshot was not newer than what we have: nothing to save.
        if let Some(inc) = snapshot.take() {
            tracing::info!(
                "leader snapshot not newer than our log; acknowledged without restoring"
            );
            let path = inc.db_path.clone();
            inc.accept();
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove an unused snapshot db");
            }
        }
        Ok(None)
    }

    fn housekeeping(&mut self) -> Result<()> {
        let st = self.follower.status();
        let (base, _) = self.log.base();
        let commit = self.log.durable_commit().min(st.commit);
        if commit >= base + self.opts.marker_every
            && let Some(term) = self.follower.term(commit)
        {
            let membership = self.follower.membership().clone();
            let log = &mut self.log;
            blocking(|| log.mark(commit, term, &membership)).context("writing a restart marker")?;
            let keep_from = commit.saturating_sub(self.opts.retention_entries);
            let log = &mut self.log;
            let n = blocking(|| log.release(keep_from)).context("releasing old WAL segments")?;
            self.metrics.files_released.inc_by(n as u64);
        }
        self.follower
            .compact(st.commit.saturating_sub(self.opts.memory_window));
        Ok(())
    }

    /// Flushes the log's auxiliary state when [`AUX_FLUSH_EVERY`] passed
    /// since the last flush (or always with `force`). Failures are only
    /// logged: the first at once, then at most every [`WARN_EVERY`], and
    /// when flushing works again.
    fn flush_aux(&mut self, aux: &mut AuxFlush, force: bool) {
        if !force && aux.last.elapsed() < AUX_FLUSH_EVERY {
            return;
        }
        aux.last = Instant::now();
        let log = &mut self.log;
        match blocking(|| log.flush_aux()) {
            Ok(()) => {
                if let Some(since) = aux.failing_since.take() {
                    tracing::info!(
                        after_seconds = since.elapsed().as_secs(),
                        failures = aux.failures,
                        "flushing the log's auxiliary state (receive times) works again"
                    );
                    aux.failures = 0;
                }
            }
            Err(e) => {
                aux.failures += 1;
                let warn = match aux.failing_since {
                    None => {
                        aux.failing_since = Some(Instant::now());
                        true
                    }
                    Some(_) => aux.last_warn.is_none_or(|w| w.elapsed() >= WARN_EVERY),
                };
                if warn {
                    aux.last_warn = Some(Instant::now());
                    tracing::warn!(error = %e, failures = aux.failures, "flushing the log's auxiliary state (receive times)");
                }
            }
        }
    }

    /// Publishes that the current leader was heard from, if one of `from` is it.
    fn note_contact(&self, from: &[u64]) {
        let leader = self.follower.status().leader;
        if leader != 0 && from.contains(&leader) {
            let now = unix_ms(SystemTime::now());
            self.status
                .update(|s| s.last_leader_contact_unix_ms = s.last_leader_contact_unix_ms.max(now));
            self.metrics.leader_contact.set(now as f64 / 1000.0);
        }
    }

    /// Runs until removal, shutdown or an error, then flushes the log's
    /// auxiliary state (whichever way the loop ended). A full disk is not an
    /// error that ends it (see the module docs).
    pub async fn run(
        mut self,
        inbound: mpsc::Receiver<Inbound>,
        stop: watch::Receiver<bool>,
    ) -> Result<Exit> {
        let mut aux = AuxFlush::new();
        let exit = self.run_loop(inbound, stop, &mut aux).await;
        self.flush_aux(&mut aux, true);
        exit
    }

    async fn run_loop(
        &mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut stop: watch::Receiver<bool>,
        aux: &mut AuxFlush,
    ) -> Result<Exit> {
        self.publish_status(NodeState::Starting);
        let mut res = self.start().await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // Ticks missed while waiting for disk space are not made up in a burst.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            match res {
                Ok(Some(exit)) => return Ok(exit),
                Ok(None) => {}
                Err(e) if e.is_disk_full() => {
                    if let Some(exit) = self.ride_out_disk_full(e, &mut inbound, &mut stop).await? {
                        return Ok(exit);
                    }
                }
                Err(e) => return Err(e),
            }
            res = self.turn(&mut inbound, &mut stop, &mut tick, aux).await;
        }
    }

    /// What a start (and a recovery) does before taking messages: publish
    /// the durable commit, dial the members, and hand out the entries
    /// committed before (a restart's core hands them out again).
    async fn start(&mut self) -> Result<Option<Exit>> {
        if let Some(tail) = &self.committed {
            tail.resume(self.log.durable_commit());
        }
        self.outbound.set_members(self.members_for_transport());
        let mut none = None;
        if let Some(exit) = self.cycle(&mut none).await? {
            return Ok(Some(self.finish(exit)));
        }
        self.publish_status(NodeState::Following);
        Ok(None)
    }

    /// One turn of the loop: a tick, a stop, or a batch of inbound messages
    /// stepped and made durable in one Ready cycle.
    async fn turn(
        &mut self,
        inbound: &mut mpsc::Receiver<Inbound>,
        stop: &mut watch::Receiver<bool>,
        tick: &mut tokio::time::Interval,
        aux: &mut AuxFlush,
    ) -> Result<Option<Exit>> {
        let first = tokio::select! {
            m = inbound.recv() => m,
            _ = tick.tick() => {
                self.housekeeping()?;
                self.flush_aux(aux, false);
                self.publish_status(NodeState::Following);
                return Ok(None);
            }
            _ = stop.changed() => {
                self.publish_status(NodeState::Stopped);
                return Ok(Some(Exit::Stopped));
            }
        };
        let Some(first) = first else {
            self.publish_status(NodeState::Stopped);
            return Ok(Some(Exit::Stopped));
        };
        let mut batch = vec![first];
        while batch.len() < self.opts.max_batch {
            match inbound.try_recv() {
                Ok(m) => {
                    let is_snap = matches!(m, Inbound::Snapshot(_));
                    batch.push(m);
                    if is_snap {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let mut snapshot = None;
        // Senders in this batch (a handful of members at most).
        let mut from: Vec<u64> = Vec::new();
        for item in batch {
            let sender = match &item {
                Inbound::Message(m) => Some(m.from),
                Inbound::Snapshot(inc) => Some(inc.message.from),
                Inbound::Removed { .. } => None,
            };
            if let Some(f) = sender.filter(|f| !from.contains(f)) {
                from.push(f);
            }
            match item {
                Inbound::Message(m) => self.step(m)?,
                Inbound::Snapshot(inc) => {
                    // Persist what came before, then the snapshot alone.
                    let mut none = None;
                    if let Some(exit) = self.cycle(&mut none).await? {
                        return Ok(Some(self.finish(exit)));
                    }
                    match self.follower.step(inc.message.clone()) {
                        Ok(()) => snapshot = Some(inc),
                        Err(e) => {
                            tracing::warn!(error = %e, "leader snapshot refused");
                            inc.reject(e.to_string());
                        }
                    }
                }
                Inbound::Removed { detail } => {
                    return Ok(Some(self.finish(Exit::Removed(detail))));
                }
            }
        }
        // After stepping, so the first message of a new leader counts.
        self.note_contact(&from);
        if let Some(exit) = self.cycle(&mut snapshot).await? {
            return Ok(Some(self.finish(exit)));
        }
        self.flush_aux(aux, false);
        self.publish_status(NodeState::Following);
        Ok(None)
    }

    /// Publishes the disk-full state with `err` and its code.
    fn publish_disk_full(&self, err: &Error) {
        self.publish_status(NodeState::DiskFull);
        let (msg, code) = (err.to_string(), err.code().id);
        self.status.update(|s| {
            s.error = Some(msg);
            s.error_code = Some(code);
        });
    }

    /// A write of the log failed for lack of space (`err`): acknowledges
    /// nothing more, drops what arrives (a snapshot is refused, so the
    /// leader sends it again later), and retries [`Node::recover`] with
    /// backoff until it works. Returns `None` once recovered (state
    /// `following` again), an exit on stop or removal, or an error that is
    /// not a full disk.
    async fn ride_out_disk_full(
        &mut self,
        err: Error,
        inbound: &mut mpsc::Receiver<Inbound>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Exit>> {
        let since = Instant::now();
        self.metrics.disk_full.inc();
        tracing::error!(
            error = %err,
            code = err.code().id,
            durable_index = self.log.last().0,
            "ALARM: the data dir is full; the learner acknowledges nothing more until space returns \
             (everything acknowledged is durable). Free space on its file system; it resumes by itself"
        );
        self.publish_disk_full(&err);
        let mut backoff = Backoff::new(DISK_FULL_RETRY_FIRST, DISK_FULL_RETRY_MAX);
        let retry = tokio::time::sleep(backoff.next_delay());
        tokio::pin!(retry);
        let mut last_warn = Instant::now();
        let mut dropped = 0u64;
        let mut tries = 0u64;
        loop {
            tokio::select! {
                m = inbound.recv() => match m {
                    None => {
                        self.publish_status(NodeState::Stopped);
                        return Ok(Some(Exit::Stopped));
                    }
                    Some(Inbound::Message(_)) => dropped += 1,
                    Some(Inbound::Snapshot(inc)) => {
                        dropped += 1;
                        inc.reject("the learner's data dir is full".to_owned());
                    }
                    Some(Inbound::Removed { detail }) => {
                        return Ok(Some(self.finish(Exit::Removed(detail))));
                    }
                },
                _ = stop.changed() => {
                    self.publish_status(NodeState::Stopped);
                    return Ok(Some(Exit::Stopped));
                }
                _ = &mut retry => {
                    tries += 1;
                    match self.recover().await {
                        Ok(Some(exit)) => return Ok(Some(exit)),
                        Ok(None) => {
                            self.status.update(|s| {
                                s.error = None;
                                s.error_code = None;
                            });
                            tracing::info!(
                                after_seconds = format_args!("{:.1}", since.elapsed().as_secs_f64()),
                                durable_index = self.log.last().0,
                                dropped_messages = dropped,
                                "space returned on the data dir: the log was re-opened from disk and the learner follows again"
                            );
                            return Ok(None);
                        }
                        Err(e) if e.is_disk_full() => {
                            if last_warn.elapsed() >= WARN_EVERY {
                                last_warn = Instant::now();
                                tracing::warn!(
                                    for_seconds = since.elapsed().as_secs(),
                                    tries,
                                    dropped_messages = dropped,
                                    code = e.code().id,
                                    error = %e,
                                    "the data dir is still full; nothing is acknowledged until space returns"
                                );
                            }
                            self.publish_disk_full(&e);
                            retry.as_mut().reset(tokio::time::Instant::now() + backoff.next_delay());
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Rebuilds the durable state and the raft core from disk, as a restart
    /// does, then starts again ([`Node::start`]). Fails while the disk is
    /// still full.
    async fn recover(&mut self) -> Result<Option<Exit>> {
        let log = &mut self.log;
        let restored = blocking(|| log.reopen()).context("re-opening the local log")?;
        self.follower = Follower::new(
            self.member_id,
            restored,
            &etcd_standby_follower::raft_logger(),
        )
        .context("rebuilding the raft core from the local log")?;
        self.start().await
    }

    fn finish(&mut self, exit: Exit) -> Exit {
        if let Exit::Removed(why) = &exit {
            // The removal stands even if it cannot be recorded (it is re-checked at start).
            if let Err(e) = self.log.record_removal() {
                tracing::warn!(error = %e, "could not record the removal in standby.json");
            }
            tracing::error!(reason = %why, "this member was removed from the cluster");
            self.publish_status(NodeState::Removed);
        }
        exit
    }
}
