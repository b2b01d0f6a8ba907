//! Which request of an `InternalRaftRequest` etcd applies: the one table of
//! etcd's apply-order precedence, used by [`RequestKind::of`] and by the
//! model's apply loop.
//!
//! The protobuf has one optional field per request; a well-formed entry sets
//! exactly one, but etcd does not check that: it tests the fields in a fixed
//! order and applies the first one set, ignoring the rest. The order is
//! etcd's, from
//!
//! * `EtcdServer.applyEntryNormal` (`server/etcdserver/server.go` in 3.5,
//!   `etcdserver/server.go` in 3.4): `v2` first, before the v3 applier;
//! * `applierV3backend.Apply` (`server/etcdserver/apply.go`, 3.5.1): first a
//!   switch over `cluster_version_set`, `cluster_member_attr_set`,
//!   `downgrade_info_set`, then the switch `range`, `put`, …, `auth_role_list`;
//! * `applierV3backend.Apply` (`etcdserver/apply.go`, 3.4.23): the same second
//!   switch without `auth_status`; the four 3.5-only fields are unknown fields
//!   to 3.4 (dropped by its decoder), so they never win there.
//!
//! A request with none of the fields set (or, for 3.4, only 3.5-only fields)
//! is [`ApplyRequest::None`]: etcd panics on it ("not implemented apply").
use etcd_standby_proto::etcdserverpb::{self as pb, InternalRaftRequest};
use etcd_standby_proto::membershippb;

use crate::RequestKind;

/// Which etcd minor's apply switch to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyRules {
    /// etcd 3.4 (3.4.23): the 3.5-only fields are ignored.
    V3_4,
    /// etcd 3.5 (3.5.1).
    V3_5,
}

macro_rules! apply_table {
    ($( $kind:ident($field:ident: $ty:ty) $(, $since:ident)?; )*) => {
        /// The request etcd applies from an `InternalRaftRequest`: the first
        /// field set in [`APPLY_ORDER`]. Variants are named like [`RequestKind`].
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub enum ApplyRequest<'a> {
            $(
                #[doc = concat!("`", stringify!($field), "`.")]
                $kind(&'a $ty),
            )*
            /// No field this etcd version applies is set (etcd panics).
            None,
        }

        /// etcd's apply-order precedence, first checked first, with `true`
        /// for fields only etcd 3.5 knows.
        pub const APPLY_ORDER: &[(RequestKind, bool)] = &[
            $( (RequestKind::$kind, apply_table!(@since $($since)?)), )*
        ];

        /// The request etcd applies from `r` (see the module docs).
        pub fn apply_request(r: &InternalRaftRequest, rules: ApplyRules) -> ApplyRequest<'_> {
            let v3_5 = rules == ApplyRules::V3_5;
            $(
                if let Some(x) = &r.$field
                    && known(v3_5, apply_table!(@since $($since)?))
                {
                    return ApplyRequest::$kind(x);
                }
            )*
            ApplyRequest::None
        }

        impl ApplyRequest<'_> {
            /// The request's kind ([`RequestKind::InternalEmpty`] for `None`).
            pub fn kind(&self) -> RequestKind {
                match self {
                    $( ApplyRequest::$kind(_) => RequestKind::$kind, )*
                    ApplyRequest::None => RequestKind::InternalEmpty,
                }
            }
        }
    };
    (@since) => { false };
    (@since v3_5) => { true };
}

/// A field is applied unless it is 3.5-only and the rules are 3.4's.
const fn known(v3_5: bool, only_3_5: bool) -> bool {
    v3_5 || !only_3_5
}

// THE table. Order = etcd's; do not sort.
apply_table! {
    // applyEntryNormal: before the v3 applier.
    InternalV2(v2: pb::Request);
    // applierV3backend.Apply (3.5), first switch.
    ClusterVersionSet(cluster_version_set: membershippb::ClusterVersionSetRequest), v3_5;
    ClusterMemberAttrSet(cluster_member_attr_set: membershippb::ClusterMemberAttrSetRequest), v3_5;
    DowngradeInfoSet(downgrade_info_set: membershippb::DowngradeInfoSetRequest), v3_5;
    // applierV3backend.Apply (3.4 and 3.5), second switch.
    Range(range: pb::RangeRequest);
    Put(put: pb::PutRequest);
    DeleteRange(delete_range: pb::DeleteRangeRequest);
    Txn(txn: pb::TxnRequest);
    Compaction(compaction: pb::CompactionRequest);
    LeaseGrant(lease_grant: pb::LeaseGrantRequest);
    LeaseRevoke(lease_revoke: pb::LeaseRevokeRequest);
    LeaseCheckpoint(lease_checkpoint: pb::LeaseCheckpointRequest);
    Alarm(alarm: pb::AlarmRequest);
    Authenticate(authenticate: pb::InternalAuthenticateRequest);
    AuthEnable(auth_enable: pb::AuthEnableRequest);
    AuthDisable(auth_disable: pb::AuthDisableRequest);
    AuthStatus(auth_status: pb::AuthStatusRequest), v3_5;
    AuthUserAdd(auth_user_add: pb::AuthUserAddRequest);
    AuthUserDelete(auth_user_delete: pb::AuthUserDeleteRequest);
    AuthUserChangePassword(auth_user_change_password: pb::AuthUserChangePasswordRequest);
    AuthUserGrantRole(auth_user_grant_role: pb::AuthUserGrantRoleRequest);
    AuthUserGet(auth_user_get: pb::AuthUserGetRequest);
    AuthUserRevokeRole(auth_user_revoke_role: pb::AuthUserRevokeRoleRequest);
    AuthRoleAdd(auth_role_add: pb::AuthRoleAddRequest);
    AuthRoleGrantPermission(auth_role_grant_permission: pb::AuthRoleGrantPermissionRequest);
    AuthRoleGet(auth_role_get: pb::AuthRoleGetRequest);
    AuthRoleRevokePermission(auth_role_revoke_permission: pb::AuthRoleRevokePermissionRequest);
    AuthRoleDelete(auth_role_delete: pb::AuthRoleDeleteRequest);
    AuthUserList(auth_user_list: pb::AuthUserListRequest);
    AuthRoleList(auth_role_list: pb::AuthRoleListRequest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequestKind::*;

    /// etcd's order, transcribed by hand from the files named in the module
    /// docs (3.5.1 `server/etcdserver/apply.go` `applierV3backend.Apply`,
    /// `applyEntryNormal` for v2). Changing the table must break this.
    const ETCD_3_5_1: [RequestKind; 30] = [
        InternalV2,
        ClusterVersionSet,
        ClusterMemberAttrSet,
        DowngradeInfoSet,
        Range,
        Put,
        DeleteRange,
        Txn,
        Compaction,
        LeaseGrant,
        LeaseRevoke,
        LeaseCheckpoint,
        Alarm,
        Authenticate,
        AuthEnable,
        AuthDisable,
        AuthStatus,
        AuthUserAdd,
        AuthUserDelete,
        AuthUserChangePassword,
        AuthUserGrantRole,
        AuthUserGet,
        AuthUserRevokeRole,
        AuthRoleAdd,
        AuthRoleGrantPermission,
        AuthRoleGet,
        AuthRoleRevokePermission,
        AuthRoleDelete,
        AuthUserList,
        AuthRoleList,
    ];

    /// Sets the field of `kind` (a table entry) to its default.
    fn set(r: &mut InternalRaftRequest, kind: RequestKind) {
        match kind {
            InternalV2 => r.v2 = Some(Default::default()),
            ClusterVersionSet => r.cluster_version_set = Some(Default::default()),
            ClusterMemberAttrSet => r.cluster_member_attr_set = Some(Default::default()),
            DowngradeInfoSet => r.downgrade_info_set = Some(Default::default()),
            Range => r.range = Some(Default::default()),
            Put => r.put = Some(Default::default()),
            DeleteRange => r.delete_range = Some(Default::default()),
            Txn => r.txn = Some(Default::default()),
            Compaction => r.compaction = Some(Default::default()),
            LeaseGrant => r.lease_grant = Some(Default::default()),
            LeaseRevoke => r.lease_revoke = Some(Default::default()),
            LeaseCheckpoint => r.lease_checkpoint = Some(Default::default()),
            Alarm => r.alarm = Some(Default::default()),
            Authenticate => r.authenticate = Some(Default::default()),
            AuthEnable => r.auth_enable = Some(Default::default()),
            AuthDisable => r.auth_disable = Some(Default::default()),
            AuthStatus => r.auth_status = Some(Default::default()),
            AuthUserAdd => r.auth_user_add = Some(Default::default()),
            AuthUserDelete => r.auth_user_delete = Some(Default::default()),
            AuthUserChangePassword => r.auth_user_change_password = Some(Default::default()),
            AuthUserGrantRole => r.auth_user_grant_role = Some(Default::default()),
            AuthUserGet => r.auth_user_get = Some(Default::default()),
            AuthUserRevokeRole => r.auth_user_revoke_role = Some(Default::default()),
            AuthRoleAdd => r.auth_role_add = Some(Default::default()),
            AuthRoleGrantPermission => r.auth_role_grant_permission = Some(Default::default()),
            AuthRoleGet => r.auth_role_get = Some(Default::default()),
            AuthRoleRevokePermission => r.auth_role_revoke_permission = Some(Default::default()),
            AuthRoleDelete => r.auth_role_delete = Some(Default::default()),
            AuthUserList => r.auth_user_list = Some(Default::default()),
            AuthRoleList => r.auth_role_list = Some(Default::default()),
            other => panic!("{other:?} is not an InternalRaftRequest field"),
        }
    }

    fn with(kinds: &[RequestKind]) -> InternalRaftRequest {
        let mut r = InternalRaftRequest::default();
        for k in kinds {
            set(&mut r, *k);
        }
        r
    }

    #[test]
    fn table_is_etcds_order() {
        let kinds: Vec<RequestKind> = APPLY_ORDER.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, ETCD_3_5_1);
        let only_3_5: Vec<RequestKind> = APPLY_ORDER
            .iter()
            .filter(|(_, v3_5)| *v3_5)
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(
            only_3_5,
            [
                ClusterVersionSet,
                ClusterMemberAttrSet,
                DowngradeInfoSet,
                AuthStatus
            ]
        );
    }

    /// Every pair of fields: the earlier one in etcd's order wins (3.5), and
    /// under 3.4 rules a 3.5-only field never wins.
    #[test]
    fn earlier_field_wins_for_every_pair() {
        for (i, &a) in ETCD_3_5_1.iter().enumerate() {
            assert_eq!(apply_request(&with(&[a]), ApplyRules::V3_5).kind(), a);
            for &b in &ETCD_3_5_1[i + 1..] {
                let r = with(&[b, a]);
                assert_eq!(
                    apply_request(&r, ApplyRules::V3_5).kind(),
                    a,
                    "{a:?} vs {b:?}"
                );
                let a_35 = APPLY_ORDER.iter().any(|(k, v)| *k == a && *v);
                let b_35 = APPLY_ORDER.iter().any(|(k, v)| *k == b && *v);
                let want_3_4 = match (a_35, b_35) {
                    (false, _) => a,
                    (true, false) => b,
                    (true, true) => InternalEmpty,
                };
                assert_eq!(
                    apply_request(&r, ApplyRules::V3_4).kind(),
                    want_3_4,
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn nothing_set_is_none() {
        let r = InternalRaftRequest::default();
        assert_eq!(apply_request(&r, ApplyRules::V3_5), ApplyRequest::None);
        let r = with(&[AuthStatus, DowngradeInfoSet]);
        assert_eq!(apply_request(&r, ApplyRules::V3_4), ApplyRequest::None);
        assert_eq!(apply_request(&r, ApplyRules::V3_5).kind(), DowngradeInfoSet);
    }

    /// The v2 request and the cluster requests win over a put (the order
    /// the old `RequestKind::of` table had backwards).
    #[test]
    fn v2_and_cluster_requests_come_first() {
        let r = with(&[Put, InternalV2]);
        assert_eq!(
            RequestKind::of(&crate::Decoded::Internal(Box::new(r))),
            InternalV2
        );
        let r = with(&[Put, ClusterVersionSet]);
        assert_eq!(
            RequestKind::of(&crate::Decoded::Internal(Box::new(r))),
            ClusterVersionSet
        );
        let r = with(&[AuthRoleAdd, AuthUserList]);
        assert_eq!(
            RequestKind::of(&crate::Decoded::Internal(Box::new(r))),
            AuthRoleAdd
        );
    }
}
