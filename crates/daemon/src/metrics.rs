//! Typed `etcd_standby_*` metrics of the learner daemon.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::status::{NodeState, ReplayState};

/// Label for alarms (a bounded set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlarmLabel {
    /// Alarm kind (`vote_requested`, `promoted`, `timeout_now`).
    pub kind: &'static str,
}

/// Label of a state gauge: one series per state, 1 for the current one.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The state's name ([`NodeState::as_str`] / [`ReplayState::as_str`]).
    pub state: &'static str,
}

/// Label of the outcome counter ([`etcd_standby_model::Outcome::label`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome's label.
    pub outcome: &'static str,
}

/// The daemon's metrics (the peer transport registers its own).
#[derive(Clone)]
pub struct LearnerMetrics {
    /// Highest index received (persisted or not).
    pub received_index: Gauge,
    /// Highest index durable in the local WAL.
    pub durable_index: Gauge,
    /// Commit index.
    pub commit_index: Gauge,
    /// Highest commit index the leader announced.
    pub leader_commit_index: Gauge,
    /// Index of the newest snapshot or marker.
    pub snapshot_index: Gauge,
    /// Current raft term.
    pub term: Gauge,
    /// Entries made durable.
    pub entries_persisted: Counter,
    /// Entry payload bytes made durable.
    pub bytes_persisted: Counter,
    /// fsync latency of the local WAL.
    pub fsync_seconds: Histogram,
    /// Leader snapshots received and saved.
    pub snapshots: Counter,
    /// WAL segments and snapshot files released.
    pub files_released: Counter,
    /// Messages refused by the learner core.
    pub refused_messages: Counter,
    /// Alarms raised, by kind.
    pub alarms: Family<AlarmLabel, Counter>,
    /// The node loop's state (1 for the current one).
    pub node_state: Family<StateLabel, Gauge>,
}

impl LearnerMetrics {
    /// Creates the metrics and registers them.
    pub fn new(reg: &mut Registry) -> Self {
        let m = LearnerMetrics {
            received_index: Gauge::default(),
            durable_index: Gauge::default(),
            commit_index: Gauge::default(),
            leader_commit_index: Gauge::default(),
            snapshot_index: Gauge::default(),
            term: Gauge::default(),
            entries_persisted: Counter::default(),
            bytes_persisted: Counter::default(),
            fsync_seconds: Histogram::new([
                0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            snapshots: Counter::default(),
            files_released: Counter::default(),
            refused_messages: Counter::default(),
            alarms: Family::default(),
            node_state: Family::default(),
        };
        let r = reg.sub_registry_with_prefix("etcd_standby");
        r.register(
            "received_index",
            "Highest raft index received",
            m.received_index.clone(),
        );
        r.register(
            "durable_index",
            "Highest raft index fsynced in the local WAL",
            m.durable_index.clone(),
        );
        r.register(
            "commit_index",
            "Raft commit index known to the learner",
            m.commit_index.clone(),
        );
        r.register(
            "leader_commit_index",
            "Highest commit index announced by the leader",
            m.leader_commit_index.clone(),
        );
        r.register(
            "snapshot_index",
            "Index of the newest local snapshot or marker",
            m.snapshot_index.clone(),
        );
        r.register("raft_term", "Current raft term", m.term.clone());
        r.register(
            "entries_persisted",
            "Raft entries made durable",
            m.entries_persisted.clone(),
        );
        r.register(
            "bytes_persisted",
            "Raft entry payload bytes made durable",
            m.bytes_persisted.clone(),
        );
        r.register(
            "wal_fsync_duration_seconds",
            "fsync latency of the local WAL",
            m.fsync_seconds.clone(),
        );
        r.register(
            "snapshots_received",
            "Leader snapshots saved",
            m.snapshots.clone(),
        );
        r.register(
            "files_released",
            "WAL segments and snapshot files released",
            m.files_released.clone(),
        );
        r.register(
            "refused_messages",
            "Raft messages refused by the learner",
            m.refused_messages.clone(),
        );
        r.register(
            "alarms",
            "Alarms raised (vote requests, promotion)",
            m.alarms.clone(),
        );
        r.register(
            "node_state",
            "State of the learner node loop (1 for the current state)",
            m.node_state.clone(),
        );
        m
    }

    /// Sets the state gauge: 1 for `state`, 0 for every other.
    pub fn set_node_state(&self, state: NodeState) {
        for s in NodeState::ALL {
            self.node_state
                .get_or_create(&StateLabel { state: s.as_str() })
                .set(i64::from(s == state));
        }
    }
}

/// Replay metrics.
#[derive(Clone)]
pub struct ReplayMetrics {
    /// Last raft index applied to the shadow model.
    pub applied_index: Gauge,
    /// Raft index checkpointed on the standby.
    pub standby_checkpoint: Gauge,
    /// Committed entries not yet on the standby.
    pub lag_entries: Gauge,
    /// Payload bytes of committed entries not yet applied.
    pub lag_bytes: Gauge,
    /// The standby's revision.
    pub standby_revision: Gauge,
    /// Age of the oldest committed entry not yet on the standby.
    pub lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Committed entries by outcome on the primary.
    pub outcomes: Family<OutcomeLabel, Counter>,
    /// Latency of standby write batches.
    pub txn_seconds: Histogram,
    /// Leases kept alive on the standby.
    pub leases_mirrored: Gauge,
    /// Lease keep-alive failures.
    pub keepalive_failures: Gauge,
    /// Snapshot reconciles.
    pub reconciles: Counter,
    /// Standby write errors.
    pub sink_errors: Counter,
    /// Replay's state (1 for the current one).
    pub replay_state: Family<StateLabel, Gauge>,
    /// Seconds without progress while entries are pending.
    pub stalled_seconds: Gauge,
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
            replay_state: Family::default(),
            stalled_seconds: Gauge::default(),
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
            "replay_lag_bytes",
            "Payload bytes of committed entries not yet applied",
            m.lag_bytes.clone(),
        );
        r.register(
            "standby_revision",
            "The standby's current revision",
            m.standby_revision.clone(),
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
        r.register(
            "replay_state",
            "State of replay to the standby (1 for the current state)",
            m.replay_state.clone(),
        );
        r.register(
            "replay_stalled_seconds",
            "Seconds without an applied entry while committed entries are pending (0 when not stalled)",
            m.stalled_seconds.clone(),
        );
        m
    }

    /// Sets the state gauge: 1 for `state`, 0 for every other.
    pub fn set_replay_state(&self, state: ReplayState) {
        for s in ReplayState::ALL {
            self.replay_state
                .get_or_create(&StateLabel { state: s.as_str() })
                .set(i64::from(s == state));
        }
    }
}
