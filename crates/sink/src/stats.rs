//! Counters the daemon exports as metrics.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

/// How many txn latency samples are kept.
pub const LATENCY_SAMPLES: usize = 1024;

/// Counters of a [`Sink`](crate::Sink) (monotonic unless noted).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkStats {
    /// Standby write txns committed.
    pub txns: u64,
    /// Raft entries applied (checkpointed).
    pub entries_applied: u64,
    /// Entries given at or below the checkpoint and skipped (already applied).
    pub entries_already_applied: u64,
    /// Put / delete operations written (after per-key coalescing).
    pub ops: u64,
    /// Encoded bytes of the write txns.
    pub bytes: u64,
    /// Latency of the most recent txns (up to [`LATENCY_SAMPLES`]), oldest first.
    pub txn_latency: Vec<Duration>,
    /// Leases currently mirrored (kept alive) on the standby (gauge).
    pub leases_mirrored: u64,
    /// Leases granted on the standby.
    pub lease_grants: u64,
    /// Leases revoked on the standby.
    pub lease_revokes: u64,
    /// Keep-alive requests sent.
    pub keepalive_sent: u64,
    /// Keep-alive answers with a live lease.
    pub keepalive_ok: u64,
    /// Keep-alive failures (stream errors, reopen attempts).
    pub keepalive_failures: u64,
    /// Leases the standby reported gone while we still mirrored them.
    pub leases_lost: u64,
    /// Auth RPCs made.
    pub auth_rpcs: u64,
    /// Auth RPC results tolerated as "already done" (exists / not found).
    pub auth_tolerated: u64,
    /// Snapshot reconciles completed.
    pub reconciles: u64,
    /// Write txns sent again because they reached the standby before the
    /// txn they are chained to.
    pub txns_resent: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub stats: SinkStats,
    pub latency: VecDeque<Duration>,
}

impl Counters {
    pub fn txn(&mut self, ops: usize, bytes: usize, entries: u64, took: Duration) {
        self.stats.txns += 1;
        self.stats.ops += ops as u64;
        self.stats.bytes += bytes as u64;
        self.stats.entries_applied += entries;
        if self.latency.len() == LATENCY_SAMPLES {
            self.latency.pop_front();
        }
        self.latency.push_back(took);
    }
}
