//! Request kinds: one name per thing an entry can ask etcd to do.
use crate::Decoded;
use crate::dispatch::{ApplyRules, apply_request};
use etcd_standby_proto::raftpb::ConfChangeType;

/// What an entry asks for. Names follow etcd's field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKind {
    /// Leader no-op (empty entry).
    Empty,
    /// `put`.
    Put,
    /// `delete_range`.
    DeleteRange,
    /// `txn`.
    Txn,
    /// `range` (never proposed by 3.4/3.5).
    Range,
    /// `compaction`.
    Compaction,
    /// `lease_grant`.
    LeaseGrant,
    /// `lease_revoke` (also leader-side expiry).
    LeaseRevoke,
    /// `lease_checkpoint`.
    LeaseCheckpoint,
    /// `alarm`.
    Alarm,
    /// `auth_enable`.
    AuthEnable,
    /// `auth_disable`.
    AuthDisable,
    /// `auth_status` (3.5).
    AuthStatus,
    /// `authenticate`.
    Authenticate,
    /// `auth_user_add`.
    AuthUserAdd,
    /// `auth_user_delete`.
    AuthUserDelete,
    /// `auth_user_get`.
    AuthUserGet,
    /// `auth_user_change_password`.
    AuthUserChangePassword,
    /// `auth_user_grant_role`.
    AuthUserGrantRole,
    /// `auth_user_revoke_role`.
    AuthUserRevokeRole,
    /// `auth_user_list`.
    AuthUserList,
    /// `auth_role_list`.
    AuthRoleList,
    /// `auth_role_add`.
    AuthRoleAdd,
    /// `auth_role_delete`.
    AuthRoleDelete,
    /// `auth_role_get`.
    AuthRoleGet,
    /// `auth_role_grant_permission`.
    AuthRoleGrantPermission,
    /// `auth_role_revoke_permission`.
    AuthRoleRevokePermission,
    /// `cluster_version_set` (3.5).
    ClusterVersionSet,
    /// `cluster_member_attr_set` (3.5).
    ClusterMemberAttrSet,
    /// `downgrade_info_set` (3.5).
    DowngradeInfoSet,
    /// An InternalRaftRequest wrapping a v2 request.
    InternalV2,
    /// An InternalRaftRequest with no request field set.
    InternalEmpty,
    /// Bare v2 request.
    V2,
    /// Conf change: AddNode.
    ConfAddNode,
    /// Conf change: RemoveNode.
    ConfRemoveNode,
    /// Conf change: UpdateNode.
    ConfUpdateNode,
    /// Conf change: AddLearnerNode.
    ConfAddLearnerNode,
    /// Conf change with a type etcd does not define.
    ConfUnknown,
    /// ConfChangeV2.
    ConfChangeV2,
    /// Undecodable entry.
    Unknown,
}

impl RequestKind {
    /// Every kind, for listing and filters.
    pub const ALL: &'static [RequestKind] = &[
        RequestKind::Empty,
        RequestKind::Put,
        RequestKind::DeleteRange,
        RequestKind::Txn,
        RequestKind::Range,
        RequestKind::Compaction,
        RequestKind::LeaseGrant,
        RequestKind::LeaseRevoke,
        RequestKind::LeaseCheckpoint,
        RequestKind::Alarm,
        RequestKind::AuthEnable,
        RequestKind::AuthDisable,
        RequestKind::AuthStatus,
        RequestKind::Authenticate,
        RequestKind::AuthUserAdd,
        RequestKind::AuthUserDelete,
        RequestKind::AuthUserGet,
        RequestKind::AuthUserChangePassword,
        RequestKind::AuthUserGrantRole,
        RequestKind::AuthUserRevokeRole,
        RequestKind::AuthUserList,
        RequestKind::AuthRoleList,
        RequestKind::AuthRoleAdd,
        RequestKind::AuthRoleDelete,
        RequestKind::AuthRoleGet,
        RequestKind::AuthRoleGrantPermission,
        RequestKind::AuthRoleRevokePermission,
        RequestKind::ClusterVersionSet,
        RequestKind::ClusterMemberAttrSet,
        RequestKind::DowngradeInfoSet,
        RequestKind::InternalV2,
        RequestKind::InternalEmpty,
        RequestKind::V2,
        RequestKind::ConfAddNode,
        RequestKind::ConfRemoveNode,
        RequestKind::ConfUpdateNode,
        RequestKind::ConfAddLearnerNode,
        RequestKind::ConfUnknown,
        RequestKind::ConfChangeV2,
        RequestKind::Unknown,
    ];

    /// Stable name used in output and filters.
    pub fn name(self) -> &'static str {
        use RequestKind::*;
        match self {
            Empty => "empty",
            Put => "put",
            DeleteRange => "delete_range",
            Txn => "txn",
            Range => "range",
            Compaction => "compaction",
            LeaseGrant => "lease_grant",
            LeaseRevoke => "lease_revoke",
            LeaseCheckpoint => "lease_checkpoint",
            Alarm => "alarm",
            AuthEnable => "auth_enable",
            AuthDisable => "auth_disable",
            AuthStatus => "auth_status",
            Authenticate => "authenticate",
            AuthUserAdd => "auth_user_add",
            AuthUserDelete => "auth_user_delete",
            AuthUserGet => "auth_user_get",
            AuthUserChangePassword => "auth_user_change_password",
            AuthUserGrantRole => "auth_user_grant_role",
            AuthUserRevokeRole => "auth_user_revoke_role",
            AuthUserList => "auth_user_list",
            AuthRoleList => "auth_role_list",
            AuthRoleAdd => "auth_role_add",
            AuthRoleDelete => "auth_role_delete",
            AuthRoleGet => "auth_role_get",
            AuthRoleGrantPermission => "auth_role_grant_permission",
            AuthRoleRevokePermission => "auth_role_revoke_permission",
            ClusterVersionSet => "cluster_version_set",
            ClusterMemberAttrSet => "cluster_member_attr_set",
            DowngradeInfoSet => "downgrade_info_set",
            InternalV2 => "internal_v2",
            InternalEmpty => "internal_empty",
            V2 => "v2",
            ConfAddNode => "conf_add_node",
            ConfRemoveNode => "conf_remove_node",
            ConfUpdateNode => "conf_update_node",
            ConfAddLearnerNode => "conf_add_learner_node",
            ConfUnknown => "conf_unknown",
            ConfChangeV2 => "conf_change_v2",
            Unknown => "unknown",
        }
    }

    /// Coarse group: `kv`, `lease`, `auth`, `cluster`, `alarm`, `noop`, `unknown`.
    pub fn group(self) -> &'static str {
        use RequestKind::*;
        match self {
            Put | DeleteRange | Txn | Range | Compaction => "kv",
            LeaseGrant | LeaseRevoke | LeaseCheckpoint => "lease",
            AuthEnable
            | AuthDisable
            | AuthStatus
            | Authenticate
            | AuthUserAdd
            | AuthUserDelete
            | AuthUserGet
            | AuthUserChangePassword
            | AuthUserGrantRole
            | AuthUserRevokeRole
            | AuthUserList
            | AuthRoleList
            | AuthRoleAdd
            | AuthRoleDelete
            | AuthRoleGet
            | AuthRoleGrantPermission
            | AuthRoleRevokePermission => "auth",
            ClusterVersionSet | ClusterMemberAttrSet | DowngradeInfoSet | InternalV2 | V2
            | ConfAddNode | ConfRemoveNode | ConfUpdateNode | ConfAddLearnerNode | ConfUnknown
            | ConfChangeV2 => "cluster",
            Alarm => "alarm",
            Empty | InternalEmpty => "noop",
            Unknown => "unknown",
        }
    }

    /// True for conf-change kinds.
    pub fn is_conf_change(self) -> bool {
        self.name().starts_with("conf_")
    }

    /// Classifies a decoded entry.
    pub fn of(decoded: &Decoded) -> RequestKind {
        use RequestKind::*;
        match decoded {
            Decoded::Empty => Empty,
            Decoded::V2(_) => V2,
            Decoded::ConfChangeV2(_) => ConfChangeV2,
            Decoded::Unknown { .. } => Unknown,
            Decoded::ConfChange(cc) => match cc.change_type() {
                Some(ConfChangeType::ConfChangeAddNode) => ConfAddNode,
                Some(ConfChangeType::ConfChangeRemoveNode) => ConfRemoveNode,
                Some(ConfChangeType::ConfChangeUpdateNode) => ConfUpdateNode,
                Some(ConfChangeType::ConfChangeAddLearnerNode) => ConfAddLearnerNode,
                None => ConfUnknown,
            },
            // etcd 3.5's precedence: the superset (3.4 ignores the 3.5-only
            // fields, which 3.4 proposers never set).
            Decoded::Internal(r) => apply_request(r, ApplyRules::V3_5).kind(),
        }
    }
}

/// Parses a `--type` filter: comma-separated kind names, groups (`kv`,
/// `lease`, `auth`, `cluster`, `alarm`, `noop`, `unknown`) or entry types
/// (`normal`, `conf`). Returns the accepted kinds.
pub fn parse_kind_filter(spec: &str) -> Result<Vec<RequestKind>, String> {
    let mut out = Vec::new();
    for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let w = word.to_ascii_lowercase();
        let matched: Vec<RequestKind> = RequestKind::ALL
            .iter()
            .copied()
            .filter(|k| match w.as_str() {
                "normal" => !k.is_conf_change(),
                "conf" | "confchange" => k.is_conf_change(),
                g => k.name() == g || k.group() == g,
            })
            .collect();
        if matched.is_empty() {
            let names: Vec<&str> = RequestKind::ALL.iter().map(|k| k.name()).collect();
            return Err(format!(
                "unknown type {word:?}; use normal, conf, a group (kv, lease, auth, cluster, alarm, noop, unknown) or one of: {}",
                names.join(", ")
            ));
        }
        out.extend(matched);
    }
    out.sort();
    out.dedup();
    Ok(out)
}
