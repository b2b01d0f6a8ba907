//! Errors of the sink, with the raft index, the key (escaped, truncated)
//! and the standby's own message.

use etcd_standby_client::ClientError;

/// Result of a sink operation.
pub type Result<T, E = SinkError> = std::result::Result<T, E>;

/// Anything that stops the sink. Messages never carry passwords, hashes or
/// tokens.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The fencing epoch on the standby is not ours any more: someone
    /// promoted the standby (or another replicator took over). Stop.
    #[error(
        "fenced at raft index {index}: the standby's epoch key {key} holds {found:?}, ours is {ours} \
         (the standby was promoted or another replicator took over); stopping"
    )]
    Fenced {
        /// Raft index of the first entry that could not be written.
        index: u64,
        /// The epoch key (escaped).
        key: String,
        /// Our epoch.
        ours: u64,
        /// What the standby holds (escaped; empty when the key is gone).
        found: String,
    },
    /// The HA lock is not ours (any more): another instance is active, or
    /// our lease expired. Nothing of the txn was written. Stop.
    #[error(
        "lost the HA lock: {key} holds {found:?}, not this instance's record (another instance \
         took over, or this one's lock lease expired); stopping, nothing more is written"
    )]
    LostLock {
        /// The lock key (escaped).
        key: String,
        /// What it holds now (escaped; empty when gone).
        found: String,
    },
    /// The standby was promoted to a primary (`<reserved>promoted` exists):
    /// no replicator may write to it again. Re-seed a standby to replicate.
    #[error(
        "the standby was promoted (key {key} holds the promotion record {record}); it is a primary \
         now and no replicator writes to it. To replicate again, seed a fresh standby"
    )]
    Promoted {
        /// The promotion key (escaped).
        key: String,
        /// The record (escaped, truncated).
        record: String,
    },
    /// The promotion txn found the standby changed since it was inspected
    /// (nothing was written).
    #[error("promotion not applied (nothing was written): {detail}")]
    PromoteConflict {
        /// What moved.
        detail: String,
    },
    /// The standby refused a write (NOSPACE, permission denied, too many
    /// operations, request too large, ...). Nothing of that txn was applied;
    /// the replicator must not skip it.
    #[error("standby refused the write of raft entries {first}..={last}: {source}")]
    Refused {
        /// First raft index in the refused txn.
        first: u64,
        /// Last raft index in the refused txn.
        last: u64,
        /// The client error with the standby's message.
        #[source]
        source: ClientError,
    },
    /// The standby could not be reached (unavailable, timeout). The write may
    /// or may not have happened: call [`Sink::resync`](crate::Sink::resync)
    /// and apply again from the checkpoint (replay is idempotent).
    #[error("standby unavailable at raft index {index}: {source}")]
    Unavailable {
        /// Raft index being written.
        index: u64,
        /// The client error.
        #[source]
        source: ClientError,
    },
    /// A lease RPC failed.
    #[error("raft index {index}: lease {id:#x} ({op}) on the standby: {source}")]
    Lease {
        /// Raft index of the entry.
        index: u64,
        /// Lease ID.
        id: i64,
        /// `grant` or `revoke`.
        op: &'static str,
        /// The client error.
        #[source]
        source: ClientError,
    },
    /// An auth RPC failed in a way that cannot be tolerated.
    #[error("raft index {index}: {what} on the standby: {source}")]
    Auth {
        /// Raft index of the entry.
        index: u64,
        /// The operation, with user / role names (never passwords).
        what: String,
        /// The client error.
        #[source]
        source: ClientError,
    },
    /// Mirroring this entry would lock the replicator out of the standby.
    #[error("raft index {index}: {message}")]
    SelfLockout {
        /// Raft index of the entry.
        index: u64,
        /// What would happen and how to fix it.
        message: String,
    },
    /// A 3.5 entry carries a bcrypt hash, but the standby runs etcd 3.4,
    /// which cannot store a given hash.
    #[error(
        "raft index {index}: user {user:?} has a hashed password (etcd 3.5 primary) but the standby \
         runs etcd {standby_version}, which cannot store a hash; run a 3.5 standby"
    )]
    HashUnsupported {
        /// Raft index of the entry.
        index: u64,
        /// User name.
        user: String,
        /// Standby's server version.
        standby_version: String,
    },
    /// Entries were given out of order.
    #[error("raft index {index} given after {previous}: entries must be in increasing index order")]
    OutOfOrder {
        /// The offending index.
        index: u64,
        /// The index before it.
        previous: u64,
    },
    /// A snapshot reconcile would delete more than the allowed share of the
    /// standby's keys; nothing was written. Re-run with `--accept-mass-delete`.
    #[error(
        "snapshot reconcile would delete {would_delete} of {total} standby keys (more than the \
         allowed share); nothing written; re-run with --accept-mass-delete if this is intended"
    )]
    MassDelete {
        /// Keys the reconcile would delete.
        would_delete: u64,
        /// Replicated keys on the standby.
        total: u64,
    },
    /// A chained write txn found the standby's checkpoint not where this
    /// sink left it, with every txn before it confirmed: something else
    /// wrote it. `ahead`: it moved on (an earlier txn of ours that landed
    /// after a timeout, or another replicator of this source): re-read it
    /// with [`Sink::resync`](crate::Sink::resync) and apply again, entries
    /// at or below it are skipped. Otherwise it went back or vanished (the
    /// standby restored from a backup?): replay stops.
    #[error(
        "raft index {index}: the standby's checkpoint {key} is not the one this replicator wrote (ours: {ours:?}, found: {found:?}){}",
        if *ahead { "; it moved on: re-reading it" } else { "; it went back or vanished: was the standby restored or written by someone else?" }
    )]
    CheckpointMoved {
        /// First raft index of the txn.
        index: u64,
        /// The checkpoint key (escaped).
        key: String,
        /// The index of the checkpoint this sink last confirmed.
        ours: Option<u64>,
        /// The value found (escaped), if any.
        found: Option<String>,
        /// Whether the found checkpoint is at or after ours.
        ahead: bool,
    },
    /// Revision-preserving replay: a standby txn did not land at the
    /// primary's revision (or the standby is not where the last one left
    /// it). Someone else wrote to the standby, a lease expired there, or the
    /// model and the standby disagree on what bumps a revision. The standby
    /// no longer mirrors the primary's revisions: replay halts; re-seed.
    #[error(
        "raft index {index}: revision-preserving replay expected the standby at revision {expected}, \
         found {found} ({detail}); the standby's revisions no longer equal the primary's: replay \
         halts. Find the foreign write (or expired lease) on the standby, then re-seed it \
         (etcd-standby seed)"
    )]
    RevisionMismatch {
        /// Raft index of the entry being written (or the checkpoint's).
        index: u64,
        /// The revision the primary had (the shadow model's).
        expected: i64,
        /// The standby's.
        found: i64,
        /// Where it was seen.
        detail: String,
    },
    /// Revision-preserving replay was asked for something that would give
    /// the standby revisions of its own (a reconcile by diff across a leader
    /// snapshot, a standby that was not seeded for the mode, or one
    /// replicated in the batched mode).
    #[error(
        "raft index {index}: revision-preserving replay cannot go on: {reason}. Re-seed the standby \
         from a primary snapshot at or after this index (etcd-standby seed), or run without \
         --preserve-revisions"
    )]
    RevisionsNotPreservable {
        /// Raft index where it stopped.
        index: u64,
        /// Why.
        reason: String,
    },
    /// Revision-preserving replay: the standby has no checkpoint and is not
    /// the seed's restore (yet): its revision or HashKV is not the seed's.
    /// Retried: the members may still be being restored from the seed.
    #[error(
        "revision-preserving replay waits for the standby to be the seed's restore (raft index \
         {index}): {detail}. Start every standby member on the data dir `etcd-standby seed` \
         restored for it"
    )]
    StandbyNotSeeded {
        /// The seed's raft index.
        index: u64,
        /// What differs.
        detail: String,
    },
    /// A bug: a task of the sink ended without an answer.
    #[error("internal: {0}")]
    Internal(String),
    /// The checkpoint or epoch key holds something we cannot read.
    #[error("reserved key {key}: {message}")]
    BadReservedKey {
        /// The key (escaped).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Invalid configuration.
    #[error("sink configuration: {0}")]
    Config(String),
    /// A value the standby must be given could not be read from the
    /// replicator's value store (a local fault; nothing more was written).
    #[error(
        "raft index {index}: reading the value of key {key} from the local value store: {source}"
    )]
    ValueStore {
        /// The checkpoint being written.
        index: u64,
        /// The key (escaped).
        key: String,
        /// The store's error.
        source: etcd_standby_model::ValueStoreError,
    },
    /// A client call outside of applying entries (connect, verify, reads).
    #[error("{what}: {source}")]
    Client {
        /// What was being done.
        what: String,
        /// The client error.
        #[source]
        source: ClientError,
    },
}

impl SinkError {
    /// Whether the standby refused a write because a lease it names is not
    /// there ("requested lease not found"): a mirrored lease the standby
    /// expired on its own while nobody kept it alive there.
    pub fn is_lease_not_found(&self) -> bool {
        match self {
            SinkError::Refused { source, .. } | SinkError::Lease { source, .. } => {
                source.etcd_error() == Some(etcd_standby_client::EtcdError::LeaseNotFound)
            }
            _ => false,
        }
    }

    /// Whether retrying later can help (the standby was unreachable).
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Unavailable { .. } => true,
            SinkError::CheckpointMoved { ahead, .. } => *ahead,
            SinkError::StandbyNotSeeded { .. } => true,
            SinkError::Client { source, .. }
            | SinkError::Lease { source, .. }
            | SinkError::Auth { source, .. } => source.is_unavailable() || source.is_timeout(),
            _ => false,
        }
    }

    pub(crate) fn client(what: impl Into<String>, source: ClientError) -> SinkError {
        SinkError::Client {
            what: what.into(),
            source,
        }
    }

    /// A failed write txn: unreachable (retryable) or refused.
    pub(crate) fn write(first: u64, last: u64, source: ClientError) -> SinkError {
        if source.is_unavailable() || source.is_timeout() {
            SinkError::Unavailable {
                index: first,
                source,
            }
        } else {
            SinkError::Refused {
                first,
                last,
                source,
            }
        }
    }
}

/// A key for messages: printable ASCII kept, everything else `\xNN`,
/// truncated after 96 bytes.
pub fn show_key(key: &[u8]) -> String {
    show_bytes(key, 96)
}

/// Bytes for messages: printable ASCII kept, everything else `\xNN`,
/// truncated after `max` bytes (with the full length noted).
pub fn show_bytes(b: &[u8], max: usize) -> String {
    let mut s = String::with_capacity(b.len().min(max) + 2);
    for &c in b.iter().take(max) {
        match c {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(c)),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    if b.len() > max {
        s.push_str(&format!("…({} bytes)", b.len()));
    }
    s
}
