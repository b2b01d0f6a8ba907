//! The learner core: raft-rs `RawNode` behind an etcd-exact, sans-IO façade.

use std::collections::VecDeque;

use etcd_standby_decode::{Decoded, decode_entry};
use etcd_standby_proto::raftpb;
use raft::eraftpb;
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole, Storage};
use serde::Serialize;

use crate::FollowerError;
use crate::convert::{
    conf_state_to_raft, entry_from_raft, entry_to_raft, hard_state_from_raft, known_entry_type,
    message_from_raft, message_to_raft, snapshot_from_raft,
};
use crate::membership::{Change, Invalid, Membership};
use crate::v2store::membership_from_v2_store;

/// What the learner's durable log held at start-up.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// The base of the log: the last snapshot (index 0 for an empty log).
    pub base: raftpb::SnapshotMetadata,
    /// Membership as of `base`.
    pub membership: Membership,
    /// Entries after `base.index`, in order.
    pub entries: Vec<raftpb::Entry>,
    /// The last hard state saved.
    pub hard_state: raftpb::HardState,
}

/// Alarms: situations where the cluster treats us as something we are not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Alarm {
    /// Someone asked us to vote (only voters get vote requests): we refused.
    VoteRequested {
        /// Requesting member.
        from: u64,
        /// Its term.
        term: u64,
        /// Whether it was a pre-vote.
        pre_vote: bool,
    },
    /// A committed conf change promoted us to voter. We stay a learner inside
    /// (we never vote or campaign), but the cluster now counts us in quorum.
    Promoted {
        /// Raft index of the promotion entry.
        index: u64,
    },
    /// A leader asked us to take over leadership (`MsgTimeoutNow`): refused.
    TimeoutNow {
        /// Requesting member.
        from: u64,
    },
}

/// Something the daemon must react to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The membership changed: re-dial peers.
    Membership,
    /// A committed conf change removed us: stop.
    RemovedSelf {
        /// Raft index of the removal.
        index: u64,
    },
    /// A committed conf change was invalid and ignored, as etcd ignores it.
    IgnoredConfChange {
        /// Raft index.
        index: u64,
        /// etcd's error text.
        reason: &'static str,
    },
    /// An alarm was raised.
    Alarm(Alarm),
    /// A new leader or term was observed.
    Leader {
        /// Leader member ID.
        id: u64,
        /// Term.
        term: u64,
    },
}

/// Work produced by [`Follower::ready`]: persist first, then call
/// [`Follower::advance`].
#[derive(Debug, Default)]
pub struct Ready {
    /// A snapshot to persist (its db arrived out of band).
    pub snapshot: Option<raftpb::Snapshot>,
    /// Entries to append; they may overwrite a conflicting suffix.
    pub entries: Vec<raftpb::Entry>,
    /// A hard state to persist.
    pub hard_state: Option<raftpb::HardState>,
    /// Whether an fsync is required before [`Follower::advance`].
    pub must_sync: bool,
}

/// Output of [`Follower::advance`], valid once the [`Ready`] is durable.
#[derive(Debug, Default)]
pub struct Advanced {
    /// Responses to send now (acks of durable entries, heartbeat responses).
    pub messages: Vec<raftpb::Message>,
    /// Newly committed entries, in index order, each exactly once.
    pub committed: Vec<raftpb::Entry>,
    /// Things the daemon must react to.
    pub events: Vec<Event>,
}

/// A snapshot of the core's state for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct FollowerStatus {
    /// Our member ID.
    pub id: u64,
    /// Current term.
    pub term: u64,
    /// Leader as far as we know (0 = none).
    pub leader: u64,
    /// Commit index.
    pub commit: u64,
    /// Last index in the log (durable once the current Ready is persisted).
    pub last_index: u64,
    /// First index still held in memory.
    pub first_index: u64,
    /// Index of the base snapshot.
    pub snapshot_index: u64,
    /// Highest commit index a leader told us about (may exceed our log).
    pub leader_commit: u64,
    /// Messages refused (votes, messages for someone else, unknown types).
    pub refused: u64,
}

/// The learner: receives etcd raft messages, produces responses, entries to
/// persist and committed entries. Pure: no sockets, no files, no clock.
pub struct Follower {
    id: u64,
    node: RawNode<MemStorage>,
    membership: Membership,
    pending: Option<raft::Ready>,
    events: VecDeque<Event>,
    leader: (u64, u64),
    leader_commit: u64,
    refused: u64,
    promoted: bool,
    snapshot_index: u64,
    /// Messages we make ourselves (raft-rs would not send them).
    extra: Vec<raftpb::Message>,
}

fn raft_err(context: &str, e: raft::Error) -> FollowerError {
    FollowerError::Raft(format!("{context}: {e}"))
}

impl Follower {
    /// Creates the core for member `id` from what the durable log holds.
    pub fn new(id: u64, restored: Restored, logger: &slog::Logger) -> Result<Self, FollowerError> {
        if id == 0 {
            return Err(FollowerError::Config("member id 0".into()));
        }
        let storage = MemStorage::new();
        let base = restored.base.clone();
        {
            let mut core = storage.wl();
            if base.index > 0 {
                let mut snap = eraftpb::Snapshot::default();
                let meta = snap.mut_metadata();
                meta.index = base.index;
                meta.term = base.term;
                meta.set_conf_state(conf_state_to_raft(&restored.membership.conf_state()));
                core.apply_snapshot(snap)
                    .map_err(|e| raft_err("restore base", e))?;
            } else {
                core.set_conf_state(conf_state_to_raft(&restored.membership.conf_state()));
            }
            let mut expect = base.index + 1;
            let ents: Vec<eraftpb::Entry> = restored.entries.iter().map(entry_to_raft).collect();
            for e in &ents {
                if e.index != expect {
                    return Err(FollowerError::Restore(format!(
                        "entry {} follows {} in the local log",
                        e.index,
                        expect - 1
                    )));
                }
                expect += 1;
            }
            core.append(&ents)
                .map_err(|e| raft_err("restore entries", e))?;
            let mut hs = eraftpb::HardState::default();
            let last = expect - 1;
            hs.term = restored.hard_state.term.max(base.term);
            hs.vote = restored.hard_state.vote;
            // A hard state that claims more than the log holds (an unsynced
            // tail lost in a crash) is clamped: commit never exceeds the log.
            hs.commit = restored.hard_state.commit.clamp(base.index, last);
            core.set_hardstate(hs);
        }
        let cfg = Config {
            id,
            // A learner never campaigns; the daemon never calls tick() either.
            election_tick: 1_000_000,
            heartbeat_tick: 1,
            applied: base.index,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: false,
            pre_vote: false,
            max_committed_size_per_ready: 64 << 20,
            ..Config::default()
        };
        cfg.validate().map_err(|e| raft_err("config", e))?;
        let node = RawNode::new(&cfg, storage, logger).map_err(|e| raft_err("raw node", e))?;
        Ok(Follower {
            id,
            node,
            membership: restored.membership,
            pending: None,
            events: VecDeque::new(),
            leader: (0, 0),
            leader_commit: 0,
            refused: 0,
            promoted: false,
            snapshot_index: base.index,
            extra: Vec::new(),
        })
    }

    /// Our member ID.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The membership as applied so far.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Replaces the membership (after a snapshot whose data was not the v2 store).
    pub fn set_membership(&mut self, m: Membership) {
        self.membership = m;
        self.events.push_back(Event::Membership);
    }

    fn last_index(&self) -> u64 {
        self.node.raft.raft_log.last_index()
    }

    fn committed(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// Status for `/status` and metrics.
    pub fn status(&self) -> FollowerStatus {
        FollowerStatus {
            id: self.id,
            term: self.node.raft.term,
            leader: self.node.raft.leader_id,
            commit: self.committed(),
            last_index: self.last_index(),
            first_index: self.node.store().first_index().unwrap_or(0),
            snapshot_index: self.snapshot_index,
            leader_commit: self.leader_commit,
            refused: self.refused,
        }
    }

    fn refuse(&mut self) -> Result<(), FollowerError> {
        self.refused += 1;
        Ok(())
    }

    /// Steps one message from the cluster. Votes, pre-votes and leadership
    /// transfers are refused with an alarm; messages for another member,
    /// message types a learner does not take, and messages that would make
    /// raft-rs abort (an entry conflicting with a committed one, gaps) are
    /// refused with an error; a heartbeat commit beyond our log is clamped.
    pub fn step(&mut self, mut m: raftpb::Message) -> Result<(), FollowerError> {
        if self.pending.is_some() {
            return Err(FollowerError::Usage(
                "step while a Ready is outstanding".into(),
            ));
        }
        if m.to != self.id {
            self.refused += 1;
            return Err(FollowerError::Refused(format!(
                "message type {} from {:x} is addressed to {:x}, we are {:x}",
                m.r#type, m.from, m.to, self.id
            )));
        }
        let ty = raftpb::MessageType::try_from(m.r#type).ok();
        match ty {
            Some(raftpb::MessageType::MsgVote) | Some(raftpb::MessageType::MsgPreVote) => {
                self.events.push_back(Event::Alarm(Alarm::VoteRequested {
                    from: m.from,
                    term: m.term,
                    pre_vote: ty == Some(raftpb::MessageType::MsgPreVote),
                }));
                return self.refuse();
            }
            Some(raftpb::MessageType::MsgTimeoutNow) => {
                self.events
                    .push_back(Event::Alarm(Alarm::TimeoutNow { from: m.from }));
                return self.refuse();
            }
            Some(raftpb::MessageType::MsgApp) => self.check_append(&m)?,
            Some(raftpb::MessageType::MsgHeartbeat) => {
                self.leader_commit = self.leader_commit.max(m.commit);
                // etcd's leader sends min(match, commit); after a local loss it
                // may exceed our log, which raft-rs treats as fatal. Clamp.
                let last = self.last_index();
                if m.commit > last && m.term >= self.node.raft.term {
                    // The leader believes we hold entries we do not: another
                    // HA instance acked them for this member, or our tail was
                    // lost. It sends nothing until the next proposal, so a
                    // quiet primary would never send them. Reject an append
                    // at the index it believes we have: a leader probing us
                    // (it marks us unreachable once our old connection
                    // drops) then backs off to our log's end at once.
                    self.extra.push(self.reject_missing(&m, last));
                    m.commit = last;
                }
            }
            Some(raftpb::MessageType::MsgSnap) => {
                let Some(meta) = m.snapshot.as_ref().and_then(|s| s.metadata.as_ref()) else {
                    self.refused += 1;
                    return Err(FollowerError::Refused(
                        "MsgSnap without snapshot metadata".into(),
                    ));
                };
                if meta.index == 0 {
                    self.refused += 1;
                    return Err(FollowerError::Refused("MsgSnap at index 0".into()));
                }
            }
            // A learner takes nothing else from the cluster (ReadIndex
            // responses only follow our own requests, which we never send).
            _ => {
                self.refused += 1;
                return Err(FollowerError::Refused(format!(
                    "message type {} from {:x} is not for a learner",
                    m.r#type, m.from
                )));
            }
        }
        let msg = message_to_raft(&m)
            .ok_or_else(|| FollowerError::Refused(format!("message type {}", m.r#type)))?;
        self.node.step(msg).map_err(|e| raft_err("step", e))?;
        let (lid, term) = (self.node.raft.leader_id, self.node.raft.term);
        if (lid, term) != self.leader && lid != 0 {
            self.leader = (lid, term);
            self.events.push_back(Event::Leader { id: lid, term });
        }
        Ok(())
    }

    /// A rejected append at `hb.commit` (an index the leader believes we
    /// have) with our last index as the hint.
    fn reject_missing(&self, hb: &raftpb::Message, last: u64) -> raftpb::Message {
        raftpb::Message {
            r#type: raftpb::MessageType::MsgAppResp as i32,
            to: hb.from,
            from: self.id,
            term: hb.term,
            index: hb.commit,
            reject: true,
            reject_hint: last,
            log_term: self.node.raft.raft_log.term(last).unwrap_or(0),
            ..Default::default()
        }
    }

    /// Guards raft-rs's fatal paths for MsgApp.
    fn check_append(&mut self, m: &raftpb::Message) -> Result<(), FollowerError> {
        self.leader_commit = self.leader_commit.max(m.commit);
        if m.term < self.node.raft.term {
            // raft-rs ignores stale-term appends (no check_quorum, no pre_vote).
            return Ok(());
        }
        let committed = self.committed();
        for (i, e) in m.entries.iter().enumerate() {
            if e.index != m.index + 1 + i as u64 {
                self.refused += 1;
                return Err(FollowerError::Refused(format!(
                    "MsgApp from {:x}: entry {} at position {i} after index {}",
                    m.from, e.index, m.index
                )));
            }
            if !known_entry_type(e.r#type) {
                self.refused += 1;
                return Err(FollowerError::Refused(format!(
                    "MsgApp from {:x}: entry {} has unknown type {}",
                    m.from, e.index, e.r#type
                )));
            }
            if e.index <= committed
                && let Ok(t) = self.node.raft.raft_log.term(e.index)
                && t != e.term
                && t != 0
            {
                self.refused += 1;
                return Err(FollowerError::CommittedConflict {
                    index: e.index,
                    ours: t,
                    theirs: e.term,
                });
            }
        }
        Ok(())
    }

    /// Whether [`Follower::ready`] has work.
    pub fn has_ready(&self) -> bool {
        self.pending.is_none()
            && (self.node.has_ready() || !self.events.is_empty() || !self.extra.is_empty())
    }

    /// Takes the next batch of work. Persist it (fsync when `must_sync`),
    /// then call [`Follower::advance`].
    pub fn ready(&mut self) -> Result<Ready, FollowerError> {
        if self.pending.is_some() {
            return Err(FollowerError::Usage("ready twice without advance".into()));
        }
        if !self.node.has_ready() {
            return Ok(Ready::default());
        }
        let rd = self.node.ready();
        let mut out = Ready {
            must_sync: rd.must_sync(),
            ..Ready::default()
        };
        let store = self.node.store().clone();
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            out.snapshot = Some(snapshot_from_raft(&snap));
            if !snap.data.is_empty() {
                match membership_from_v2_store(&snap.data) {
                    Ok(m) => {
                        self.membership = m;
                        self.events.push_back(Event::Membership);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "snapshot data has no readable membership")
                    }
                }
            }
            store
                .wl()
                .apply_snapshot(snap)
                .map_err(|e| raft_err("apply snapshot", e))?;
        }
        if !rd.entries().is_empty() {
            out.entries = rd.entries().iter().map(entry_from_raft).collect();
            store
                .wl()
                .append(rd.entries())
                .map_err(|e| raft_err("append", e))?;
        }
        if let Some(hs) = rd.hs() {
            out.hard_state = Some(hard_state_from_raft(hs));
            store.wl().set_hardstate(hs.clone());
        }
        if let Some(s) = &out.snapshot {
            self.snapshot_index = s.metadata.as_ref().map_or(0, |m| m.index);
        }
        // Committed entries in this Ready were persisted by earlier Readies;
        // they are still handed out only in advance(), after this one.
        self.pending = Some(rd);
        Ok(out)
    }

    /// Call once the last [`Ready`] is durable: returns the responses that may
    /// now be sent and the newly committed entries. Committed conf changes
    /// are applied here with etcd's validation.
    pub fn advance(&mut self) -> Result<Advanced, FollowerError> {
        let mut out = Advanced::default();
        if let Some(mut rd) = self.pending.take() {
            let mut committed = rd.take_committed_entries();
            let mut msgs = rd.take_messages();
            msgs.extend(rd.take_persisted_messages());
            let mut light = self.node.advance(rd);
            msgs.extend(light.take_messages());
            committed.extend(light.take_committed_entries());
            out.committed.reserve(committed.len());
            for e in &committed {
                let entry = entry_from_raft(e);
                if e.entry_type == eraftpb::EntryType::EntryConfChange
                    || e.entry_type == eraftpb::EntryType::EntryConfChangeV2
                {
                    self.apply_conf_change(&entry);
                }
                out.committed.push(entry);
            }
            self.node.advance_apply();
            out.messages = msgs.iter().map(message_from_raft).collect();
        }
        out.messages.append(&mut self.extra);
        out.events = self.events.drain(..).collect();
        Ok(out)
    }

    fn apply_conf_change(&mut self, entry: &raftpb::Entry) {
        let index = entry.index;
        let cc = match decode_entry(entry) {
            Decoded::ConfChange(cc) => cc,
            _ => {
                // etcd would refuse to start on an unreadable conf change; we
                // keep going and say so loudly.
                self.events.push_back(Event::IgnoredConfChange {
                    index,
                    reason: Invalid::BadChange.etcd_error(),
                });
                return;
            }
        };
        let change = self.membership.apply(&cc.change, cc.context.as_ref());
        let raft_change = match &change {
            Change::Ignored(why) => {
                self.events.push_back(Event::IgnoredConfChange {
                    index,
                    reason: why.etcd_error(),
                });
                None
            }
            Change::Updated(_) => None,
            Change::Added(m) if m.is_learner => {
                Some((eraftpb::ConfChangeType::AddLearnerNode, m.id))
            }
            Change::Added(m) => Some((eraftpb::ConfChangeType::AddNode, m.id)),
            Change::Promoted(id) if *id == self.id => {
                // Never become a voter inside: we cannot vote safely.
                self.promoted = true;
                self.events
                    .push_back(Event::Alarm(Alarm::Promoted { index }));
                None
            }
            Change::Promoted(id) => Some((eraftpb::ConfChangeType::AddNode, *id)),
            Change::Removed(id) => {
                if *id == self.id {
                    self.events.push_back(Event::RemovedSelf { index });
                }
                Some((eraftpb::ConfChangeType::RemoveNode, *id))
            }
        };
        if !matches!(change, Change::Ignored(_)) {
            self.events.push_back(Event::Membership);
        }
        if let Some((ty, id)) = raft_change {
            let mut c = eraftpb::ConfChange::default();
            c.set_change_type(ty);
            c.node_id = id;
            if let Err(e) = self.node.apply_conf_change(&c) {
                tracing::warn!(index, node = %format_args!("{id:x}"), error = %e, "raft-rs refused a conf change etcd accepted");
            }
        }
    }

    /// Whether a committed conf change promoted us (an alarm state).
    pub fn promoted(&self) -> bool {
        self.promoted
    }

    /// Drops in-memory entries before `index` (they are durable in the WAL
    /// and were handed out as committed). Keeps memory flat on long logs.
    pub fn compact(&mut self, index: u64) {
        let applied = self.node.raft.raft_log.applied;
        let to = index.min(applied);
        let store = self.node.store().clone();
        let first = store.first_index().unwrap_or(0);
        let last = store.last_index().unwrap_or(0);
        if to > first
            && to <= last + 1
            && let Err(e) = store.wl().compact(to)
        {
            tracing::warn!(error = %e, "compacting the in-memory log");
        }
    }

    /// The term of the entry at `index`, when it is still in memory.
    pub fn term(&self, index: u64) -> Option<u64> {
        self.node.raft.raft_log.term(index).ok()
    }

    /// Whether raft-rs sees itself as leader (never expected).
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }
}
