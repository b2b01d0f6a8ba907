//! Typed daemon and replay states and the status records `/status`,
//! `/healthz`, `/readyz` and the metrics are built from.
//!
//! The node loop owns [`NodeStatus`], replay owns [`ReplayStatus`]; each
//! publishes into its own [`StatusCell`] and the admin listener reads both.
//! Neither task reads the other's record.

use std::sync::{Arc, Mutex};

use etcd_standby_decode::Member;
use etcd_standby_follower::Alarm;
use serde::{Deserialize, Serialize};

/// Where the learner node loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Joined or restarted; the first Ready cycle has not finished.
    #[default]
    Starting,
    /// Receiving and acknowledging the leader's log.
    Following,
    /// A write to the data dir failed for lack of space (ENOSPC, EDQUOT):
    /// nothing more is acknowledged to the leader (everything acknowledged
    /// is durable), `error` / `error_code` (`ES-3002`) say what failed, and
    /// the learner retries on its own, back to `following` once space
    /// returns. Not unhealthy: a restart cannot free space, and replay of
    /// what is durable goes on.
    DiskFull,
    /// The cluster removed this member (exit code 3).
    Removed,
    /// Shut down on request.
    Stopped,
    /// The loop stopped on an error (see `error`).
    Failed,
}

impl NodeState {
    /// Every state, for bounded metric labels and docs.
    pub const ALL: [NodeState; 6] = [
        NodeState::Starting,
        NodeState::Following,
        NodeState::DiskFull,
        NodeState::Removed,
        NodeState::Stopped,
        NodeState::Failed,
    ];

    /// The serde / metric label name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Starting => "starting",
            NodeState::Following => "following",
            NodeState::DiskFull => "disk_full",
            NodeState::Removed => "removed",
            NodeState::Stopped => "stopped",
            NodeState::Failed => "failed",
        }
    }

    /// `/healthz` fails in these states: the process needs an operator.
    pub fn is_unhealthy(self) -> bool {
        matches!(self, NodeState::Removed | NodeState::Failed)
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where replay to the standby is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayState {
    /// Connecting to the standby and reading its checkpoint.
    #[default]
    ConnectingToStandby,
    /// Rebuilding the shadow model up to the standby's checkpoint.
    RebuildingModel,
    /// Reconciling the standby with a leader snapshot.
    Reconciling,
    /// Applying committed entries as they arrive.
    Replaying,
    /// The standby is unreachable; retrying (the learner keeps receiving).
    WaitingForStandby,
    /// `--preserve-revisions`: waiting for `etcd-standby seed` to record
    /// where the standby starts (the learner keeps the whole log meanwhile).
    WaitingForSeed,
    /// The standby's fencing epoch is not ours: it was promoted or another
    /// replicator took over. Replay stopped for good.
    Fenced,
    /// Replay stopped on an entry or a refusal that needs an operator.
    Halted,
}

impl ReplayState {
    /// Every state, for bounded metric labels and docs.
    pub const ALL: [ReplayState; 8] = [
        ReplayState::ConnectingToStandby,
        ReplayState::RebuildingModel,
        ReplayState::Reconciling,
        ReplayState::Replaying,
        ReplayState::WaitingForStandby,
        ReplayState::WaitingForSeed,
        ReplayState::Fenced,
        ReplayState::Halted,
    ];

    /// The serde / metric label name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayState::ConnectingToStandby => "connecting_to_standby",
            ReplayState::RebuildingModel => "rebuilding_model",
            ReplayState::Reconciling => "reconciling",
            ReplayState::Replaying => "replaying",
            ReplayState::WaitingForStandby => "waiting_for_standby",
            ReplayState::WaitingForSeed => "waiting_for_seed",
            ReplayState::Fenced => "fenced",
            ReplayState::Halted => "halted",
        }
    }
}

impl std::fmt::Display for ReplayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The node loop's part of `/status`.
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
    /// Where the loop is.
    pub state: NodeState,
    /// Alarms raised since start.
    pub alarms: Vec<Alarm>,
    /// Members as the log says.
    pub members: Vec<Member>,
    /// Leader snapshots received since start.
    pub snapshots_received: u64,
    /// When a raft message from the current leader was last stepped, in
    /// milliseconds since the Unix epoch (0: never since start). How stale
    /// our view of the source cluster may be, when the leader went quiet.
    pub last_leader_contact_unix_ms: u64,
    /// When the last batch of entries was made durable, in milliseconds
    /// since the Unix epoch (0: none since start).
    pub last_received_at_unix_ms: u64,
    /// The last error, if the loop failed or is waiting for disk space
    /// (cleared when it recovers).
    pub error: Option<String>,
    /// Its stable code ([`crate::codes`]).
    pub error_code: Option<&'static str>,
}

/// Replay's part of `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayStatus {
    /// Where replay is.
    pub state: ReplayState,
    /// Last entry applied to the model.
    pub applied_index: u64,
    /// The standby's checkpoint.
    pub standby_checkpoint: u64,
    /// Everything up to this raft index is on the standby: the checkpoint,
    /// or beyond it with entries that wrote nothing
    /// (`--preserve-revisions` checkpoints only entries that bump a revision).
    pub confirmed_index: u64,
    /// Commit index minus the confirmed index.
    pub lag_entries: u64,
    /// Payload bytes of committed entries not yet applied (approximate).
    pub lag_bytes: u64,
    /// Age of the oldest committed entry not yet on the standby, in seconds.
    pub lag_seconds: f64,
    /// The standby's current revision.
    pub standby_revision: i64,
    /// Standby write batch latency, median of recent ones (ms).
    pub txn_latency_ms_p50: f64,
    /// Standby write batch latency, 99th percentile of recent ones (ms).
    pub txn_latency_ms_p99: f64,
    /// The last error (kept until replay is healthy again).
    pub error: Option<String>,
    /// Its stable code ([`crate::codes`]).
    pub error_code: Option<&'static str>,
    /// Seconds without an applied entry while committed entries are
    /// pending (0: not stalled). Set by the watchdog.
    pub stalled_seconds: u64,
    /// `--apply-delay` in seconds (0: none).
    pub apply_delay_seconds: f64,
    /// Committed entries held back by `--apply-delay` (the pending window).
    pub delayed_entries: u64,
    /// Sink counters.
    pub sink: Option<etcd_standby_sink::SinkStats>,
}

/// The primary as seen through its client API, and the "learner behind
/// the primary" watchdog ([`crate::monitor::PrimaryWatch`]) that compares
/// it with our commit index: `/status` → `source`. Written by the daemon's
/// source watch only.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    /// The newest raft index a primary member reported (`Status.raftIndex`:
    /// its committed index; 0: none yet).
    pub primary_index: u64,
    /// That member's applied index (`Status.raftAppliedIndex`).
    pub primary_applied_index: u64,
    /// The leader that member reported (hex, empty when none).
    pub primary_leader_id: String,
    /// The endpoint that answered last.
    pub endpoint: String,
    /// When it answered, in milliseconds since the Unix epoch (0: never).
    pub observed_at_unix_ms: u64,
    /// `Status` calls to the primary that failed since start (they are
    /// tolerated: the watch asks the next endpoint next time).
    pub status_failures: u64,
    /// The last failure (cleared by the next answer).
    pub last_error: Option<String>,
    /// Seconds since the primary reported an index our commit index has
    /// not reached (0: we reached every report).
    pub behind_primary_seconds: u64,
    /// The watchdog's threshold: `behind_primary` is declared at this many
    /// seconds.
    pub stall_after_seconds: u64,
    /// The learner is declared behind the primary (it stopped learning
    /// commits, or catches up too slowly); `behind_reason` says why.
    pub behind_primary: bool,
    /// While behind: our commit, last received and leader commit as we know
    /// them, the primary's index, the leader we follow and its peer streams.
    pub behind_reason: Option<String>,
    /// While behind: [`crate::codes::LEARNER_BEHIND`].
    pub behind_code: Option<&'static str>,
}

/// A status record shared by its one writer and its readers.
#[derive(Debug, Default)]
pub struct StatusCell<T>(Arc<Mutex<T>>);

impl<T> Clone for StatusCell<T> {
    fn clone(&self) -> Self {
        StatusCell(self.0.clone())
    }
}

impl<T: Clone + Default> StatusCell<T> {
    /// A copy of the record (the default if a writer panicked mid-update).
    pub fn get(&self) -> T {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Changes the record in place.
    pub fn update(&self, f: impl FnOnce(&mut T)) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_the_serde_names_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for s in NodeState::ALL {
            let json = serde_json::to_string(&s).unwrap_or_default();
            assert_eq!(json, format!("\"{s}\""));
            assert!(seen.insert(s.as_str()));
        }
        for s in ReplayState::ALL {
            let json = serde_json::to_string(&s).unwrap_or_default();
            assert_eq!(json, format!("\"{s}\""));
            assert!(seen.insert(s.as_str()));
        }
    }
}
