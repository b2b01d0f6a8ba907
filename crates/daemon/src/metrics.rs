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
    /// Unix time (seconds) the leader was last heard from.
    pub leader_contact: Gauge<f64, std::sync::atomic::AtomicU64>,
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
    /// Times the data dir ran out of space (each starts a `disk_full`
    /// episode; counted so an episode shorter than a scrape still shows).
    pub disk_full: Counter,
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
            leader_contact: Gauge::default(),
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
            disk_full: Counter::default(),
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
            "leader_last_contact_timestamp_seconds",
            "Unix time the raft leader was last heard from (0: never)",
            m.leader_contact.clone(),
        );
        r.register(
            "wal_persisted_entries",
            "Raft entries made durable in the local WAL",
            m.entries_persisted.clone(),
        );
        r.register(
            "wal_persisted_bytes",
            "Raft entry payload bytes made durable in the local WAL",
            m.bytes_persisted.clone(),
        );
        r.register(
            "wal_fsync_duration_seconds",
            "fsync latency of the local WAL",
            m.fsync_seconds.clone(),
        );
        r.register(
            "snapshots_saved",
            "Leader snapshots received and saved in the data dir",
            m.snapshots.clone(),
        );
        r.register(
            "wal_files_released",
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
        r.register(
            "local_disk_full",
            "Writes to the local data dir that failed for lack of space (ENOSPC, EDQUOT); each starts a disk_full episode in which nothing is acknowledged",
            m.disk_full.clone(),
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
    /// Live keys in the shadow model.
    pub model_keys: Gauge,
    /// Bytes of the shadow model's packed key index.
    pub model_index_bytes: Gauge,
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
    /// Lease keep-alive failures (a counter fed from the sink's running
    /// count; see [`ReplayMetrics::count_keepalive_failures`]).
    pub keepalive_failures: Counter,
    /// The sink's count last added to `keepalive_failures`.
    keepalive_seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
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
            model_keys: Gauge::default(),
            model_index_bytes: Gauge::default(),
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
            keepalive_failures: Counter::default(),
            keepalive_seen: Default::default(),
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
            "model_keys",
            "Live keys in the shadow model",
            m.model_keys.clone(),
        );
        r.register(
            "model_index_bytes",
            "Bytes of the shadow model's key index (keys and per-key state, no values): most of the replicator's heap",
            m.model_index_bytes.clone(),
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
            "replay_entries",
            "Committed entries replayed, by their outcome on the primary",
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
            "lease_keepalive_failures",
            "Lease keep-alive failures on the standby",
            m.keepalive_failures.clone(),
        );
        r.register(
            "snapshot_reconciles",
            "Snapshot reconciles of the standby",
            m.reconciles.clone(),
        );
        r.register(
            "standby_write_errors",
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

    /// Adds to the keep-alive failure counter what the sink's running count
    /// grew by since the last call (a new sink starts again from 0).
    pub fn count_keepalive_failures(&self, sink_count: u64) {
        use std::sync::atomic::Ordering;
        let seen = self.keepalive_seen.swap(sink_count, Ordering::Relaxed);
        let grew = if sink_count >= seen {
            sink_count - seen
        } else {
            sink_count
        };
        self.keepalive_failures.inc_by(grew);
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

/// The primary as seen through its client API, and the "learner behind
/// the primary" watchdog ([`crate::monitor::PrimaryWatch`]).
#[derive(Clone)]
pub struct SourceMetrics {
    /// The newest raft index a primary member reported (its commit index).
    pub primary_index: Gauge,
    /// Seconds since the primary reported an index our commit has not reached.
    pub behind_seconds: Gauge,
    /// `Status` calls to the primary that failed.
    pub status_failures: Counter,
}

impl SourceMetrics {
    /// Creates and registers the metrics.
    pub fn new(reg: &mut Registry) -> Self {
        let m = SourceMetrics {
            primary_index: Gauge::default(),
            behind_seconds: Gauge::default(),
            status_failures: Counter::default(),
        };
        let r = reg.sub_registry_with_prefix("etcd_standby");
        r.register(
            "primary_raft_index",
            "Newest raft index (commit index) a primary member reported through its client API Status",
            m.primary_index.clone(),
        );
        r.register(
            "learner_behind_primary_seconds",
            "Seconds since the primary reported a raft index the learner's commit index has not reached (0: reached every report)",
            m.behind_seconds.clone(),
        );
        r.register(
            "primary_status_failures",
            "Status calls to the primary's client API that failed (the learner-behind watchdog tolerates them)",
            m.status_failures.clone(),
        );
        m
    }
}

/// Name of the HA role gauge (the passive listener writes it by hand).
pub const HA_ACTIVE: &str = "etcd_standby_ha_active";
/// Help text of [`HA_ACTIVE`].
pub const HA_ACTIVE_HELP: &str = "Whether this instance holds the HA lock (1) or waits passive (0)";

/// Registers the HA role gauge (only `run --ha` exports it).
pub fn register_ha_active(reg: &mut Registry) -> Gauge {
    let g = Gauge::default();
    reg.register(HA_ACTIVE, HA_ACTIVE_HELP, g.clone());
    g
}

/// One exported metric, as the documentation table lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricDoc {
    /// The series name as scraped (counters with `_total`).
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    /// Label names (histograms' `le` left out).
    pub labels: Vec<String>,
    /// The help text.
    pub help: String,
}

/// Every metric a running daemon can export, read back from a registry
/// holding all of them (so the documentation cannot drift from the code).
pub fn catalog() -> Vec<MetricDoc> {
    let mut reg = Registry::default();
    register_ha_active(&mut reg);
    let learner = LearnerMetrics::new(&mut reg);
    let replay = ReplayMetrics::new(&mut reg);
    SourceMetrics::new(&mut reg);
    etcd_standby_peer::PeerMetrics::default().register(&mut reg);
    // One series per family, so their label names show.
    learner.set_node_state(NodeState::Starting);
    replay.set_replay_state(ReplayState::Replaying);
    let _ = learner
        .alarms
        .get_or_create(&AlarmLabel { kind: "promoted" });
    let _ = replay
        .outcomes
        .get_or_create(&OutcomeLabel { outcome: "applied" });
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &reg);
    parse_exposition(&text)
}

/// Reads `# HELP`/`# TYPE` and series lines of an OpenMetrics text.
fn parse_exposition(text: &str) -> Vec<MetricDoc> {
    let mut out: Vec<MetricDoc> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push(MetricDoc {
                name: name.to_string(),
                kind: String::new(),
                labels: Vec::new(),
                help: help.trim_end_matches('.').to_string(),
            });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (_, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some(m) = out.last_mut() {
                m.kind = kind.to_string();
                if kind == "counter" {
                    m.name.push_str("_total");
                }
            }
        } else if !line.starts_with('#') {
            let (Some(m), Some((_, labels))) = (out.last_mut(), line.split_once('{')) else {
                continue;
            };
            let labels = labels.split('}').next().unwrap_or("");
            for pair in labels.split(',') {
                let key = pair.split('=').next().unwrap_or("").to_string();
                if !key.is_empty() && key != "le" && !m.labels.contains(&key) {
                    m.labels.push(key);
                }
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The catalog as a Markdown table (the generated part of `docs/metrics.md`).
pub fn catalog_markdown() -> String {
    let mut s = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for m in catalog() {
        let labels = if m.labels.is_empty() {
            "—".to_string()
        } else {
            m.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            m.name, m.kind, labels, m.help
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/metrics.md` lists exactly what the code exports: adding a metric
    /// without documenting it fails here. `ETCD_STANDBY_UPDATE_DOCS=1`
    /// rewrites the generated table.
    #[test]
    fn metrics_doc_table_matches_the_registered_metrics() {
        crate::docgen::check_generated("metrics.md", "metrics", &catalog_markdown());
    }

    /// Prometheus naming: one `etcd_standby_` namespace, `_total` only on
    /// counters, histograms in base units, a small fixed set of labels (no
    /// keys, IDs or errors as label values).
    #[test]
    fn metric_names_follow_prometheus_conventions() {
        let cat = catalog();
        assert!(cat.len() > 30, "catalog too small: {cat:?}");
        for m in &cat {
            let n = &m.name;
            assert!(n.starts_with("etcd_standby_"), "{n}");
            assert!(
                n.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
                "{n}"
            );
            match m.kind.as_str() {
                "counter" => {
                    assert!(n.ends_with("_total"), "{n}");
                    assert!(!n[..n.len() - 6].ends_with("_total"), "{n}");
                }
                "gauge" => assert!(!n.ends_with("_total"), "{n}: a gauge named like a counter"),
                "histogram" => assert!(
                    n.ends_with("_seconds") || n.ends_with("_bytes"),
                    "{n}: histograms carry their base unit"
                ),
                other => panic!("{n}: unexpected type {other:?}"),
            }
            assert!(
                !n.contains("_ms") && !n.contains("millis"),
                "{n}: use seconds"
            );
            for l in &m.labels {
                assert!(
                    ["state", "kind", "outcome", "stream"].contains(&l.as_str()),
                    "{n}: label {l} is not one of the bounded ones"
                );
            }
            assert!(!m.help.is_empty(), "{n} has no help");
        }
        let names: std::collections::BTreeSet<_> = cat.iter().map(|m| &m.name).collect();
        assert_eq!(names.len(), cat.len(), "duplicate metric names");
    }
}
