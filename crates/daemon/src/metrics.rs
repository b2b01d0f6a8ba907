//! Typed `etcd_standby_*` metrics of the learner daemon.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label for alarms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlarmLabel {
    /// Alarm kind (`vote_requested`, `promoted`, `timeout_now`).
    pub kind: String,
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
        m
    }
}
