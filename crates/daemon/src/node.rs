//! The node loop: peer inbound → follower core → durable log → responses.
//!
//! One task owns the follower and the log. It takes a batch of inbound
//! messages, steps them all, then runs one Ready cycle: persist (one fsync
//! for the whole batch), then advance and send the acknowledgements. So an
//! `MsgAppResp` never leaves before its entries are durable.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_standby_follower::{Alarm, Event, Follower, FollowerError, MemberInfo};
use etcd_standby_peer::{Inbound, IncomingSnapshot, Member, Transport};
use etcd_standby_proto::raftpb;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::metrics::{AlarmLabel, LearnerMetrics};
use super::store::{Identity, Layout, LocalLog};

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

/// The state `/status` reports.
#[derive(Debug, Clone, Serialize, Default)]
pub struct NodeStatus {
    /// Our member ID (hex).
    pub member_id: String,
    /// Source cluster ID (hex).
    pub cluster_id: String,
    /// Leader member ID (hex, empty when unknown).
    pub leader_id: String,
    /// Raft term.
    pub term: u64,
    /// Highest index received.
    pub last_received_index: u64,
    /// Highest index fsynced locally.
    pub last_durable_index: u64,
    /// Commit index.
    pub commit_index: u64,
    /// Commit index the leader announced (our target).
    pub leader_commit_index: u64,
    /// Newest snapshot or marker index.
    pub snapshot_index: u64,
    /// `starting`, `following`, `removed`, `stopped` or `failed`.
    pub state: String,
    /// Alarms raised since start.
    pub alarms: Vec<Alarm>,
    /// Members as the log says.
    pub members: Vec<MemberInfo>,
    /// Leader snapshots received since start.
    pub snapshots_received: u64,
    /// The last error, if the loop failed.
    pub error: Option<String>,
}

/// Shared between the node loop, the admin listener and the CLI.
#[derive(Default)]
pub struct Shared {
    /// Latest status.
    pub status: Mutex<NodeStatus>,
    /// Index below which the WAL must be kept (replay progress); `u64::MAX`
    /// when nothing downstream needs old entries.
    pub keep_floor: AtomicU64,
    /// Payload bytes of committed entries handed out by this process.
    pub committed_bytes: AtomicU64,
    /// Replay state (when a standby is configured).
    pub replay: Mutex<super::replay::ReplayStatus>,
}

impl Shared {
    /// A copy of the status.
    pub fn snapshot(&self) -> NodeStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
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
pub struct Node {
    pub(crate) follower: Follower,
    pub(crate) log: LocalLog,
    pub(crate) layout: Layout,
    pub(crate) identity: Identity,
    pub(crate) transport: Transport,
    pub(crate) shared: Arc<Shared>,
    pub(crate) metrics: LearnerMetrics,
    pub(crate) opts: NodeOptions,
    /// Voters from MemberList at start: dialled until the log says otherwise.
    pub(crate) initial_members: Vec<MemberInfo>,
    pub(crate) committed_tx: Option<mpsc::Sender<super::replay::Committed>>,
}

impl Node {
    fn members_for_transport(&self) -> Vec<Member> {
        let m = self.follower.membership();
        let mut all: BTreeMap<u64, &MemberInfo> =
            self.initial_members.iter().map(|mi| (mi.id, mi)).collect();
        for (id, mi) in &m.members {
            all.insert(*id, mi);
        }
        all.into_values()
            .filter(|mi| mi.id != self.identity.member_id && !m.removed.contains(&mi.id))
            .map(|mi| Member {
                id: mi.id,
                peer_urls: mi.peer_urls.clone(),
                is_learner: mi.is_learner,
            })
            .collect()
    }

    fn publish_status(&self, state: &str) {
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
        if let Ok(mut s) = self.shared.status.lock() {
            s.member_id = format!("{:x}", self.identity.member_id);
            s.cluster_id = format!("{:x}", self.identity.cluster_id);
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
            s.state = state.to_owned();
            s.members = self
                .follower
                .membership()
                .members
                .values()
                .cloned()
                .collect();
        }
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
            .get_or_create(&AlarmLabel {
                kind: kind.to_owned(),
            })
            .inc();
        if let Ok(mut s) = self.shared.status.lock()
            && !s.alarms.contains(&alarm)
        {
            s.alarms.push(alarm);
        }
    }

    fn step(&mut self, m: raftpb::Message) -> Result<()> {
        match self.follower.step(m) {
            Ok(()) => Ok(()),
            Err(FollowerError::Refused(why)) => {
                self.metrics.refused_messages.inc();
                tracing::debug!(%why, "refused a raft message");
                Ok(())
            }
            Err(e @ FollowerError::CommittedConflict { .. }) => {
                Err(anyhow::Error::new(e).context("the leader contradicts our committed log; re-bootstrap this learner (leave, wipe, run)"))
            }
            Err(e) => Err(anyhow::Error::new(e).context("stepping a raft message")),
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
            let stats = tokio::task::block_in_place(|| log.persist(&rd, db.as_deref()))
                .context("persisting to the local log")?;
            if rd.snapshot.is_some() {
                self.metrics.snapshots.inc();
                if let Ok(mut s) = self.shared.status.lock() {
                    s.snapshots_received += 1;
                }
                if let Some(inc) = snapshot.take() {
                    tracing::info!(
                        index = self.log.base().0,
                        db_bytes = inc.db_size,
                        "leader snapshot saved"
                    );
                    inc.accept();
                }
            }
            self.metrics.entries_persisted.inc_by(stats.entries);
            self.metrics.bytes_persisted.inc_by(stats.bytes);
            if let Some(d) = stats.fsync {
                self.metrics.fsync_seconds.observe(d.as_secs_f64());
            }
            let adv = self.follower.advance().context("raft advance")?;
            for m in adv.messages {
                self.transport.send(m);
            }
            let bytes: u64 = adv
                .committed
                .iter()
                .map(|e| e.data.as_ref().map_or(0, |d| d.len() as u64))
                .sum();
            self.shared
                .committed_bytes
                .fetch_add(bytes, Ordering::Relaxed);
            if !adv.committed.is_empty()
                && let Some(tx) = &self.committed_tx
            {
                // Never wait for replay: when it lags, it reads the WAL instead.
                if let Err(mpsc::error::TrySendError::Closed(_)) =
                    tx.try_send((std::time::Instant::now(), adv.committed))
                {
                    self.committed_tx = None;
                }
            }
            for ev in adv.events {
                match ev {
                    Event::Membership => self.transport.set_members(self.members_for_transport()),
                    Event::Leader { id, term } => {
                        tracing::info!(leader = %format_args!("{id:x}"), term, "following leader");
                        self.transport.set_leader(id);
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
            let _ = std::fs::remove_file(path);
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
            tokio::task::block_in_place(|| log.mark(commit, term, &membership))
                .context("writing a restart marker")?;
            let floor = self.shared.keep_floor.load(Ordering::Relaxed);
            let keep_from = commit
                .saturating_sub(self.opts.retention_entries)
                .min(floor);
            let log = &mut self.log;
            let n = tokio::task::block_in_place(|| log.release(keep_from))
                .context("releasing old WAL segments")?;
            self.metrics.files_released.inc_by(n as u64);
        }
        self.follower
            .compact(st.commit.saturating_sub(self.opts.memory_window));
        Ok(())
    }

    /// Runs until removal, shutdown or an error.
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Exit> {
        self.transport.set_members(self.members_for_transport());
        // Entries committed before a restart are handed out again.
        let mut none = None;
        if let Some(exit) = self.cycle(&mut none).await? {
            return self.finish(exit);
        }
        self.publish_status("following");
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let first = tokio::select! {
                m = inbound.recv() => m,
                _ = tick.tick() => {
                    self.housekeeping()?;
                    self.publish_status("following");
                    continue;
                }
                _ = stop.changed() => {
                    self.publish_status("stopped");
                    return Ok(Exit::Stopped);
                }
            };
            let Some(first) = first else {
                return Ok(Exit::Stopped);
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
            for item in batch {
                match item {
                    Inbound::Message(m) => self.step(m)?,
                    Inbound::Snapshot(inc) => {
                        // Persist what came before, then the snapshot alone.
                        let mut none = None;
                        if let Some(exit) = self.cycle(&mut none).await? {
                            return self.finish(exit);
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
                        return self.finish(Exit::Removed(detail));
                    }
                }
            }
            if let Some(exit) = self.cycle(&mut snapshot).await? {
                return self.finish(exit);
            }
            self.publish_status("following");
        }
    }

    fn finish(&mut self, exit: Exit) -> Result<Exit> {
        if let Exit::Removed(why) = &exit {
            let mut id = self.identity.clone();
            id.removed = true;
            // The removal stands even if it cannot be recorded (it is re-checked at start).
            if let Err(e) = self.layout.write_identity(&id) {
                tracing::warn!(error = %format!("{e:#}"), "could not record the removal in standby.json");
            }
            tracing::error!(reason = %why, "this member was removed from the cluster");
            self.publish_status("removed");
        }
        Ok(exit)
    }
}
