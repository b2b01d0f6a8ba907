//! Public result, effect and configuration types.
use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use etcd_standby_decode::Member;

use crate::auth::Permission;

/// Which etcd minor version the primary runs (apply rules differ in details).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EtcdMinor {
    /// etcd 3.4 (checked against 3.4.23).
    V3_4,
    /// etcd 3.5 (checked against 3.5.1).
    #[default]
    V3_5,
}

/// Whose view of a txn's top-level range ops to mirror.
///
/// etcd 3.4/3.5 strip the top-level `Range` ops of a txn on every member that
/// did not receive the client request (`removeNeedlessRangeReqs`). Those ops
/// can fail the whole txn (permission denied for the read, future or compacted
/// revision), so members can disagree (etcd-io/etcd#18667).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxnRangeView {
    /// The member that served the client: range ops are checked (a
    /// single-member primary always behaves like this).
    #[default]
    Proposer,
    /// Any other member (and any learner): range ops are removed first.
    Follower,
}

/// Primary-side configuration that changes apply outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// etcd minor version of the primary.
    pub version: EtcdMinor,
    /// The lessor's minimum TTL in seconds: `ceil(1.5 × election timeout)`
    /// rounded to heartbeat ticks (etcd default 2; see [`ModelConfig::min_lease_ttl_for`]).
    pub min_lease_ttl: i64,
    /// Whose view of txn range ops to mirror.
    pub txn_range_view: TxnRangeView,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            version: EtcdMinor::V3_5,
            min_lease_ttl: 2,
            txn_range_view: TxnRangeView::Proposer,
        }
    }
}

impl ModelConfig {
    /// The minimum lease TTL etcd derives from `--heartbeat-interval` and
    /// `--election-timeout` (both in ms): `(3 × electionTicks / 2) × heartbeat`,
    /// rounded up to whole seconds.
    pub fn min_lease_ttl_for(heartbeat_ms: u64, election_ms: u64) -> i64 {
        if heartbeat_ms == 0 {
            return 0;
        }
        let ticks = election_ms / heartbeat_ms;
        let ms = (3 * ticks / 2) * heartbeat_ms;
        ms.div_ceil(1000) as i64
    }
}

/// A user's password as the primary stored it.
///
/// `Debug` never shows the secret (only the variant and its length).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Password {
    /// No password (`no_password` users).
    #[default]
    None,
    /// A plaintext password from a 3.4-style entry; the primary stored a
    /// bcrypt hash it computed itself (random salt), so only the plaintext is
    /// known. A secret: never log it.
    Plain(Bytes),
    /// A bcrypt hash, base64 (standard alphabet, padded) as carried by 3.5
    /// entries' `hashedPassword`. A secret: never log it.
    Hashed(String),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Password::None => f.write_str("None"),
            Password::Plain(p) => write!(f, "Plain(<redacted, {} bytes>)", p.len()),
            Password::Hashed(h) => write!(f, "Hashed(<redacted, {} chars>)", h.len()),
        }
    }
}

/// Which of etcd's appliers wrap the backend.
///
/// Normally the auth applier is in the chain ([`ApplierChain::NORMAL`]).
/// When an entry *activates* a NOSPACE or CORRUPT alarm, etcd 3.4/3.5 put
/// the alarm applier around the bare backend, so auth checks are skipped
/// until the alarm is disarmed; a member that restarts with the alarm wraps
/// the full chain instead ([`ApplierChain::after_restart`]). This is state
/// the primary keeps only in memory, so a persisted model must carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApplierChain {
    /// The auth applier (admin and per-op permission checks) is in the chain.
    pub auth: bool,
    /// The NOSPACE ("capped") applier is in the chain.
    pub capped: bool,
    /// The CORRUPT applier is in the chain.
    pub corrupt: bool,
}

impl Default for ApplierChain {
    fn default() -> Self {
        ApplierChain::NORMAL
    }
}

impl ApplierChain {
    /// No alarm: auth applier around the backend.
    pub const NORMAL: ApplierChain = ApplierChain {
        auth: true,
        capped: false,
        corrupt: false,
    };

    /// The chain of a member that (re)starts with these active alarms: the
    /// alarm appliers wrap the full chain.
    pub fn after_restart<'a>(alarms: impl IntoIterator<Item = &'a (AlarmKind, u64)>) -> Self {
        let mut chain = ApplierChain::NORMAL;
        for (a, _) in alarms {
            match a {
                AlarmKind::NoSpace => chain.capped = true,
                AlarmKind::Corrupt => chain.corrupt = true,
                _ => {}
            }
        }
        chain
    }
}

/// Alarm types (etcd's `AlarmType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmKind {
    /// `NONE` (0).
    None,
    /// `NOSPACE` (1).
    NoSpace,
    /// `CORRUPT` (2).
    Corrupt,
    /// Any other value.
    Other(i32),
}

impl AlarmKind {
    /// From the wire value.
    pub fn from_i32(v: i32) -> Self {
        match v {
            0 => AlarmKind::None,
            1 => AlarmKind::NoSpace,
            2 => AlarmKind::Corrupt,
            o => AlarmKind::Other(o),
        }
    }

    /// The wire value.
    pub fn as_i32(self) -> i32 {
        match self {
            AlarmKind::None => 0,
            AlarmKind::NoSpace => 1,
            AlarmKind::Corrupt => 2,
            AlarmKind::Other(o) => o,
        }
    }
}

/// Why the primary rejected an entry; named after etcd's errors. A rejected
/// entry changed nothing on the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// `ErrAuthOldRevision`: the request's auth revision is older than the store's.
    AuthOldRevision,
    /// `ErrPermissionDenied`.
    PermissionDenied,
    /// `ErrUserEmpty`: no user (auth revision 0 or empty user name) while auth is enabled.
    UserEmpty,
    /// `ErrUserNotFound`.
    UserNotFound,
    /// `ErrUserAlreadyExist`.
    UserAlreadyExist,
    /// `ErrRoleEmpty`.
    RoleEmpty,
    /// `ErrRoleNotFound`.
    RoleNotFound,
    /// `ErrRoleAlreadyExist`.
    RoleAlreadyExist,
    /// `ErrRoleNotGranted`.
    RoleNotGranted,
    /// `ErrPermissionNotGranted`.
    PermissionNotGranted,
    /// `ErrPermissionNotGiven` (3.5: grant with no permission).
    PermissionNotGiven,
    /// `ErrInvalidAuthMgmt` (deleting root, revoking root from root while enabled).
    InvalidAuthMgmt,
    /// `ErrRootUserNotExist` (auth enable without a root user).
    RootUserNotExist,
    /// `ErrRootRoleNotExist` (auth enable while root lacks the root role).
    RootRoleNotExist,
    /// `ErrAuthNotEnabled` (authenticate while auth is disabled).
    AuthNotEnabled,
    /// `ErrAuthFailed` (authenticate as a missing or no-password user).
    AuthFailed,
    /// `ErrNoPasswordUser` (3.5: undecodable hashed password).
    NoPasswordUser,
    /// `lease.ErrLeaseNotFound` (also lease grant with ID 0).
    LeaseNotFound,
    /// `lease.ErrLeaseExists`.
    LeaseExists,
    /// `lease.ErrLeaseTTLTooLarge`.
    LeaseTtlTooLarge,
    /// `ErrKeyNotFound` (`ignore_value` / `ignore_lease` on a missing key).
    KeyNotFound,
    /// `mvcc.ErrFutureRev` (compaction or txn range beyond the current revision).
    FutureRev,
    /// `mvcc.ErrCompacted` (compaction at or below the compacted revision,
    /// txn range below it).
    Compacted,
    /// `ErrNoSpace`: the NOSPACE alarm is active.
    NoSpace,
    /// `ErrCorrupt`: the CORRUPT alarm is active.
    Corrupt,
}

/// What an entry did to the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The entry changed the primary (see the effects).
    Applied,
    /// A txn whose compare failed: the else branch ran (its effects, possibly none).
    TxnElse,
    /// Accepted but nothing changed (delete of nothing, read-only request,
    /// grant of an already granted role, ...).
    NoChange,
    /// The primary refused the request at apply time; nothing changed.
    Rejected(Rejection),
    /// Cluster bookkeeping only (v2 requests, conf changes, member attributes,
    /// cluster version, downgrade): tracked, never replayed.
    ClusterOnly,
    /// The empty entry a new leader appends.
    Empty,
    /// Index at or below the applied index (e.g. below a snapshot's
    /// consistent index): skipped like etcd does.
    AlreadyApplied,
    /// The entry could not be decoded. The state is unchanged and the applied
    /// index did not move: the caller must halt.
    Undecodable(String),
    /// A decoded entry the primary itself could not apply (etcd would panic:
    /// `ConfChangeV2`, an empty request, a request unknown to its version).
    /// The state is unchanged and the applied index did not move.
    Unsupported(String),
    /// A value the entry needs (an `ignore_value` put, an ordering compare
    /// on a long value) could not be read from the [`crate::ValueStore`].
    /// A local fault, not the primary's: the state is unchanged and the
    /// applied index did not move.
    ValueUnavailable(String),
}

impl Outcome {
    /// True if the caller must stop (state unchanged, index not advanced).
    pub fn is_halt(&self) -> bool {
        matches!(
            self,
            Outcome::Undecodable(_) | Outcome::Unsupported(_) | Outcome::ValueUnavailable(_)
        )
    }

    /// The outcome's kind without detail: a bounded set, fit for a
    /// Prometheus label (`applied`, `txn-else`, `no-change`, `rejected`,
    /// `cluster-only`, `empty`, `already-applied`, `undecodable`,
    /// `unsupported`, `value-unavailable`).
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::TxnElse => "txn-else",
            Outcome::NoChange => "no-change",
            Outcome::Rejected(_) => "rejected",
            Outcome::ClusterOnly => "cluster-only",
            Outcome::Empty => "empty",
            Outcome::AlreadyApplied => "already-applied",
            Outcome::Undecodable(_) => "undecodable",
            Outcome::Unsupported(_) => "unsupported",
            Outcome::ValueUnavailable(_) => "value-unavailable",
        }
    }
}

/// The label plus the detail, as dumps and halt messages print it:
/// `applied`, `rejected:{rejection:?}`, `undecodable:{why}`,
/// `unsupported:{why}`.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let label = self.label();
        match self {
            Outcome::Rejected(r) => write!(f, "{label}:{r:?}"),
            Outcome::Undecodable(why)
            | Outcome::Unsupported(why)
            | Outcome::ValueUnavailable(why) => write!(f, "{label}:{why}"),
            _ => f.write_str(label),
        }
    }
}

/// A fully resolved change for the standby. The effects of one entry must be
/// applied atomically (one standby txn): each key appears at most once, with
/// its final state after the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Write `key` with this final value and lease (0 = none).
    Put {
        /// Key.
        key: Bytes,
        /// Final value.
        value: Bytes,
        /// Final lease (0 = none).
        lease: i64,
    },
    /// Delete `key` (it existed before the entry).
    Delete {
        /// Key.
        key: Bytes,
    },
    /// Grant a lease with this ID and the TTL the primary stored (after its
    /// minimum-TTL adjustment).
    LeaseGrant {
        /// Lease ID.
        id: i64,
        /// Effective TTL in seconds.
        ttl: i64,
    },
    /// Revoke a lease (its keys are deleted by `Delete` effects of the same entry).
    LeaseRevoke {
        /// Lease ID.
        id: i64,
    },
    /// The leader checkpointed a lease's remaining TTL.
    LeaseCheckpoint {
        /// Lease ID.
        id: i64,
        /// Remaining TTL in seconds.
        remaining_ttl: i64,
    },
    /// Authentication was enabled.
    AuthEnable,
    /// Authentication was disabled.
    AuthDisable,
    /// A user was added.
    UserAdd {
        /// User name.
        name: String,
        /// Password as the primary stored it.
        password: Password,
        /// The user was added with `no_password`.
        no_password: bool,
    },
    /// A user was deleted.
    UserDelete {
        /// User name.
        name: String,
    },
    /// A user's password changed.
    UserChangePassword {
        /// User name.
        name: String,
        /// New password as the primary stored it.
        password: Password,
    },
    /// A role was granted to a user.
    UserGrantRole {
        /// User name.
        user: String,
        /// Role name.
        role: String,
    },
    /// A role was revoked from a user.
    UserRevokeRole {
        /// User name.
        user: String,
        /// Role name.
        role: String,
    },
    /// A role was added.
    RoleAdd {
        /// Role name.
        name: String,
    },
    /// A role was deleted (and revoked from every user).
    RoleDelete {
        /// Role name.
        name: String,
    },
    /// A permission was granted to a role (or its type updated).
    RoleGrantPermission {
        /// Role name.
        role: String,
        /// The permission as requested.
        perm: Permission,
    },
    /// Permissions with this key and range end were removed from a role.
    RoleRevokePermission {
        /// Role name.
        role: String,
        /// Key.
        key: Bytes,
        /// Range end.
        range_end: Bytes,
    },
    /// The primary compacted its history at this revision (tracked; replay
    /// is a policy decision of the sink).
    Compact {
        /// Compaction revision.
        revision: i64,
    },
    /// An alarm was raised (tracked, not replayed).
    AlarmActivate {
        /// Member that raised it.
        member_id: u64,
        /// Alarm type.
        alarm: AlarmKind,
    },
    /// An alarm was cleared (tracked, not replayed).
    AlarmDeactivate {
        /// Member.
        member_id: u64,
        /// Alarm type.
        alarm: AlarmKind,
    },
}

/// The result of applying one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// What happened.
    pub outcome: Outcome,
    /// What the standby must do (empty unless the primary changed).
    pub effects: Vec<Effect>,
    /// The primary's KV revision after the entry.
    pub revision: i64,
}

/// Cluster bookkeeping (tracked, never replayed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterState {
    /// Members by ID (each value's `id` is its key), as tracked from conf
    /// changes and attribute publishes.
    pub members: BTreeMap<u64, Member>,
    /// Removed member IDs.
    pub removed: BTreeSet<u64>,
    /// Cluster version (`/0/version` or `cluster_version_set`).
    pub version: Option<String>,
    /// Downgrade target and whether it is enabled (3.5).
    pub downgrade: Option<(String, bool)>,
    /// Number of v2 requests seen.
    pub v2_requests: u64,
}

#[cfg(test)]
mod tests {
    use super::{Outcome, Rejection};

    fn all() -> Vec<Outcome> {
        vec![
            Outcome::Applied,
            Outcome::TxnElse,
            Outcome::NoChange,
            Outcome::Rejected(Rejection::PermissionDenied),
            Outcome::ClusterOnly,
            Outcome::Empty,
            Outcome::AlreadyApplied,
            Outcome::Undecodable("bad proto".into()),
            Outcome::Unsupported("ConfChangeV2".into()),
            Outcome::ValueUnavailable("value store: gone".into()),
        ]
    }

    #[test]
    fn label_is_bounded_and_detail_free() {
        let labels: Vec<&str> = all().iter().map(Outcome::label).collect();
        assert_eq!(
            labels,
            [
                "applied",
                "txn-else",
                "no-change",
                "rejected",
                "cluster-only",
                "empty",
                "already-applied",
                "undecodable",
                "unsupported",
                "value-unavailable",
            ]
        );
        assert_eq!(
            Outcome::Undecodable("other detail".into()).label(),
            "undecodable"
        );
        assert_eq!(Outcome::Rejected(Rejection::NoSpace).label(), "rejected");
    }

    #[test]
    fn display_is_label_plus_detail() {
        let texts: Vec<String> = all().iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "applied",
                "txn-else",
                "no-change",
                "rejected:PermissionDenied",
                "cluster-only",
                "empty",
                "already-applied",
                "undecodable:bad proto",
                "unsupported:ConfChangeV2",
                "value-unavailable:value store: gone",
            ]
        );
    }
}
