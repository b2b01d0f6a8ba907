//! One test per apply rule, through the public API (no etcd needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use etcd_standby_decode::{ConfChange, ConfContext, Decoded};
use etcd_standby_model::{
    AlarmKind, Applied, Effect, EtcdMinor, Model, ModelConfig, Outcome, Password, PermType,
    Rejection, SnapshotState, TxnRangeView,
};
use etcd_standby_proto::authpb;
use etcd_standby_proto::etcdserverpb::{
    self as pb, InternalRaftRequest as Irr, PutRequest, RequestHeader, TxnRequest, compare,
    request_op,
};
use etcd_standby_proto::raftpb;

struct H {
    m: Model,
    idx: u64,
}

impl H {
    fn new() -> H {
        H::with(ModelConfig::default())
    }
    fn with(c: ModelConfig) -> H {
        H {
            m: Model::with_config(c),
            idx: 0,
        }
    }
    fn apply(&mut self, r: Irr) -> Applied {
        self.idx += 1;
        self.m.apply(self.idx, 2, &Decoded::Internal(Box::new(r)))
    }
    fn ok(&mut self, r: Irr) -> Applied {
        let a = self.apply(r);
        assert!(
            matches!(
                a.outcome,
                Outcome::Applied | Outcome::NoChange | Outcome::TxnElse
            ),
            "{a:?}"
        );
        a
    }
    fn rejected(&mut self, r: Irr) -> Rejection {
        let before = self.m.revision();
        match self.apply(r).outcome {
            Outcome::Rejected(e) => {
                assert_eq!(self.m.revision(), before);
                e
            }
            o => panic!("expected a rejection, got {o:?}"),
        }
    }
    fn ks(&self, k: &str) -> (String, i64, i64, i64, i64) {
        let s = self.m.get(k.as_bytes()).expect(k);
        (
            String::from_utf8(self.m.value_bytes(&s.value).unwrap().to_vec()).unwrap(),
            s.create_revision,
            s.mod_revision,
            s.version,
            s.lease,
        )
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    }
}

fn p(req: PutRequest) -> Irr {
    Irr {
        put: Some(req),
        ..Default::default()
    }
}

fn del(k: &str, end: &[u8]) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest {
        key: b(k),
        range_end: Bytes::copy_from_slice(end),
        prev_kv: false,
    }
}

fn d(req: pb::DeleteRangeRequest) -> Irr {
    Irr {
        delete_range: Some(req),
        ..Default::default()
    }
}

fn op_put(req: PutRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestPut(req)),
    }
}
fn op_del(req: pb::DeleteRangeRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(req)),
    }
}
fn op_get(k: &str, rev: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestRange(pb::RangeRequest {
            key: b(k),
            revision: rev,
            ..Default::default()
        })),
    }
}
fn op_txn(t: TxnRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestTxn(t)),
    }
}

fn cmp(
    k: &str,
    end: &[u8],
    target: compare::CompareTarget,
    result: compare::CompareResult,
    v: compare::TargetUnion,
) -> pb::Compare {
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: b(k),
        range_end: Bytes::copy_from_slice(end),
        target_union: Some(v),
    }
}

fn t(compare: Vec<pb::Compare>, success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> Irr {
    Irr {
        txn: Some(TxnRequest {
            compare,
            success,
            failure,
        }),
        ..Default::default()
    }
}

fn grant(id: i64, ttl: i64) -> Irr {
    Irr {
        lease_grant: Some(pb::LeaseGrantRequest { ttl, id }),
        ..Default::default()
    }
}
fn revoke(id: i64) -> Irr {
    Irr {
        lease_revoke: Some(pb::LeaseRevokeRequest { id }),
        ..Default::default()
    }
}

fn as_user(mut r: Irr, user: &str, rev: u64) -> Irr {
    r.header = Some(RequestHeader {
        id: 1,
        username: user.into(),
        auth_revision: rev,
    });
    r
}

fn alarm(action: i32, member: u64, kind: pb::AlarmType) -> Irr {
    Irr {
        alarm: Some(pb::AlarmRequest {
            action,
            member_id: member,
            alarm: kind as i32,
        }),
        ..Default::default()
    }
}

use compare::CompareResult as R;
use compare::CompareTarget as T;
use compare::TargetUnion as U;

// ------------------------------------------------------------------ puts

#[test]
fn put_creates_then_updates_with_one_revision_each() {
    let mut h = H::new();
    assert_eq!(h.m.revision(), 1);
    let a = h.ok(p(put("k", "v1")));
    assert_eq!(a.outcome, Outcome::Applied);
    assert_eq!(a.revision, 2);
    assert_eq!(
        a.effects,
        vec![Effect::Put {
            key: b("k"),
            value: b("v1"),
            lease: 0
        }]
    );
    assert_eq!(h.ks("k"), ("v1".into(), 2, 2, 1, 0));
    // The same value again still creates a revision; prev_kv is irrelevant.
    let mut same = put("k", "v1");
    same.prev_kv = true;
    h.ok(p(same));
    assert_eq!(h.ks("k"), ("v1".into(), 2, 3, 2, 0));
    assert_eq!(h.m.revision(), 3);
    assert_eq!(h.m.applied_index(), 2);
}

#[test]
fn put_ignore_value_and_ignore_lease() {
    let mut h = H::new();
    h.ok(grant(7, 100));
    let mut r = put("k", "v");
    r.lease = 7;
    h.ok(p(r));
    let mut iv = put("k", "");
    iv.ignore_value = true;
    h.ok(p(iv));
    assert_eq!(
        h.ks("k"),
        ("v".into(), 2, 3, 2, 0),
        "lease dropped: not ignored"
    );
    let mut r = put("k", "v2");
    r.lease = 7;
    h.ok(p(r));
    let mut il = put("k", "v3");
    il.ignore_lease = true;
    let a = h.ok(p(il));
    assert_eq!(h.ks("k"), ("v3".into(), 2, 5, 4, 7));
    assert_eq!(
        a.effects,
        vec![Effect::Put {
            key: b("k"),
            value: b("v3"),
            lease: 7
        }]
    );
    // Missing key: ErrKeyNotFound, nothing changes.
    let mut iv = put("nope", "");
    iv.ignore_value = true;
    assert_eq!(h.rejected(p(iv)), Rejection::KeyNotFound);
    let mut il = put("nope", "x");
    il.ignore_lease = true;
    assert_eq!(h.rejected(p(il)), Rejection::KeyNotFound);
    assert!(h.m.get(b"nope").is_none());
}

#[test]
fn put_with_unknown_lease_is_rejected() {
    let mut h = H::new();
    let mut r = put("k", "v");
    r.lease = 42;
    assert_eq!(h.rejected(p(r)), Rejection::LeaseNotFound);
    assert!(h.m.get(b"k").is_none());
    assert_eq!(h.m.applied_index(), 1, "a rejected entry is still applied");
}

#[test]
fn reattaching_moves_a_key_between_leases() {
    let mut h = H::new();
    h.ok(grant(1, 60));
    h.ok(grant(2, 60));
    let mut r = put("k", "v");
    r.lease = 1;
    h.ok(p(r));
    assert!(h.m.leases()[&1].keys.contains(&b("k")));
    let mut r = put("k", "v");
    r.lease = 2;
    h.ok(p(r));
    assert!(h.m.leases()[&1].keys.is_empty());
    assert!(h.m.leases()[&2].keys.contains(&b("k")));
    h.ok(p(put("k", "plain")));
    assert!(h.m.leases()[&2].keys.is_empty());
    // Revoking lease 2 now deletes nothing.
    let rev = h.m.revision();
    h.ok(revoke(2));
    assert_eq!(h.m.revision(), rev);
    assert!(h.m.get(b"k").is_some());
}

// --------------------------------------------------------------- deletes

#[test]
fn delete_single_range_prefix_and_from_key() {
    let mut h = H::new();
    for k in ["a", "b/1", "b/2", "c", "d"] {
        h.ok(p(put(k, "x")));
    }
    assert_eq!(h.m.revision(), 6);
    // Delete of nothing: no bump, NoChange.
    let a = h.ok(d(del("zz", b"")));
    assert_eq!((a.outcome, h.m.revision()), (Outcome::NoChange, 6));
    let a = h.ok(d(del("b/", b"b0")));
    assert_eq!(
        a.effects,
        vec![
            Effect::Delete { key: b("b/1") },
            Effect::Delete { key: b("b/2") }
        ]
    );
    assert_eq!(h.m.revision(), 7, "one revision for the whole range");
    h.ok(d(del("a", b"")));
    assert_eq!(h.m.revision(), 8);
    h.ok(d(del("c", b"\0")));
    assert!(h.m.is_empty());
    assert_eq!(h.m.revision(), 9);
}

#[test]
fn version_and_create_revision_restart_after_delete() {
    let mut h = H::new();
    h.ok(p(put("k", "1")));
    h.ok(p(put("k", "2")));
    h.ok(d(del("k", b"")));
    h.ok(p(put("k", "3")));
    assert_eq!(h.ks("k"), ("3".into(), 5, 5, 1, 0));
}

// ------------------------------------------------------------------- txn

#[test]
fn txn_compares_every_target_and_result() {
    let mut h = H::new();
    h.ok(grant(9, 60));
    let mut r = put("k", "m");
    r.lease = 9;
    h.ok(p(r)); // rev 2: create 2, mod 2, version 1, lease 9
    let cases: Vec<(pb::Compare, bool)> = vec![
        (cmp("k", b"", T::Value, R::Equal, U::Value(b("m"))), true),
        (cmp("k", b"", T::Value, R::Greater, U::Value(b("a"))), true),
        (cmp("k", b"", T::Value, R::Less, U::Value(b("a"))), false),
        (
            cmp("k", b"", T::Value, R::NotEqual, U::Value(b("m"))),
            false,
        ),
        (cmp("k", b"", T::Version, R::Equal, U::Version(1)), true),
        (cmp("k", b"", T::Version, R::Greater, U::Version(0)), true),
        (
            cmp("k", b"", T::Create, R::Equal, U::CreateRevision(2)),
            true,
        ),
        (
            cmp("k", b"", T::Create, R::Less, U::CreateRevision(2)),
            false,
        ),
        (cmp("k", b"", T::Mod, R::Less, U::ModRevision(3)), true),
        (cmp("k", b"", T::Mod, R::NotEqual, U::ModRevision(2)), false),
        (cmp("k", b"", T::Lease, R::Equal, U::Lease(9)), true),
        (cmp("k", b"", T::Lease, R::Greater, U::Lease(9)), false),
        // Missing key: VALUE is always false, other targets compare 0.
        (
            cmp("no", b"", T::Value, R::NotEqual, U::Value(b("x"))),
            false,
        ),
        (cmp("no", b"", T::Version, R::Equal, U::Version(0)), true),
        (
            cmp("no", b"", T::Create, R::Equal, U::CreateRevision(0)),
            true,
        ),
        (cmp("no", b"", T::Mod, R::Less, U::ModRevision(1)), true),
        (cmp("no", b"", T::Lease, R::Equal, U::Lease(0)), true),
    ];
    for (i, (c, want)) in cases.into_iter().enumerate() {
        let a = h.ok(t(
            vec![c.clone()],
            vec![op_put(put("s", &i.to_string()))],
            vec![],
        ));
        let expect = if want {
            Outcome::Applied
        } else {
            Outcome::TxnElse
        };
        assert_eq!(a.outcome, expect, "case {i}: {c:?}");
    }
}

#[test]
fn txn_compare_with_range_end_applies_to_every_key() {
    let mut h = H::new();
    h.ok(p(put("r/1", "a")));
    h.ok(p(put("r/2", "b")));
    let all_gt = cmp("r/", b"r0", T::Value, R::Greater, U::Value(b("0")));
    assert_eq!(
        h.ok(t(vec![all_gt], vec![], vec![])).outcome,
        Outcome::NoChange
    );
    let all_a = cmp("r/", b"r0", T::Value, R::Equal, U::Value(b("a")));
    assert_eq!(
        h.ok(t(vec![all_a], vec![], vec![])).outcome,
        Outcome::TxnElse
    );
    let from = cmp("r/2", b"\0", T::Version, R::Equal, U::Version(1));
    assert_eq!(
        h.ok(t(vec![from], vec![], vec![])).outcome,
        Outcome::NoChange
    );
    // An empty range compares as a missing key.
    let empty = cmp("x/", b"x0", T::Create, R::Equal, U::CreateRevision(0));
    assert_eq!(
        h.ok(t(vec![empty], vec![], vec![])).outcome,
        Outcome::NoChange
    );
}

#[test]
fn txn_bumps_once_and_reads_do_not_bump() {
    let mut h = H::new();
    let a = h.ok(t(
        vec![],
        vec![op_put(put("a", "1")), op_put(put("b", "2")), op_get("a", 0)],
        vec![],
    ));
    assert_eq!((a.outcome, a.revision), (Outcome::Applied, 2));
    assert_eq!(h.ks("a").2, 2);
    assert_eq!(h.ks("b").2, 2);
    // Read-only chosen branch.
    let a = h.ok(t(vec![], vec![op_get("a", 0)], vec![op_put(put("c", "3"))]));
    assert_eq!(
        (a.outcome, a.revision, a.effects.len()),
        (Outcome::NoChange, 2, 0)
    );
    // Delete of nothing inside a txn.
    let a = h.ok(t(vec![], vec![op_del(del("zz", b""))], vec![]));
    assert_eq!((a.outcome, a.revision), (Outcome::NoChange, 2));
    // Else branch that writes.
    let never = cmp("a", b"", T::Value, R::Equal, U::Value(b("nope")));
    let a = h.ok(t(
        vec![never],
        vec![op_put(put("x", "1"))],
        vec![op_del(del("b", b""))],
    ));
    assert_eq!((a.outcome, a.revision), (Outcome::TxnElse, 3));
    assert_eq!(a.effects, vec![Effect::Delete { key: b("b") }]);
}

#[test]
fn txn_writing_a_key_twice_counts_both_writes_and_emits_the_final_state() {
    // The proposer rejects such txns; the model still follows mvcc: each
    // write is a sub-revision of the same main revision, version +1 each.
    let mut h = H::new();
    h.ok(p(put("k", "0")));
    let a = h.ok(t(
        vec![],
        vec![
            op_put(put("k", "1")),
            op_put(put("k", "2")),
            op_put(put("n", "1")),
        ],
        vec![],
    ));
    assert_eq!(h.ks("k"), ("2".into(), 2, 3, 3, 0));
    assert_eq!(
        a.effects,
        vec![
            Effect::Put {
                key: b("k"),
                value: b("2"),
                lease: 0
            },
            Effect::Put {
                key: b("n"),
                value: b("1"),
                lease: 0
            }
        ]
    );
    // Put then delete of a new key: a revision, no standby effect.
    let a = h.ok(t(
        vec![],
        vec![op_put(put("tmp", "1")), op_del(del("tmp", b""))],
        vec![],
    ));
    assert_eq!((a.outcome, a.revision), (Outcome::Applied, 4));
    assert!(a.effects.is_empty());
    // Delete then put: a new generation.
    h.ok(t(
        vec![],
        vec![op_del(del("k", b"")), op_put(put("k", "new"))],
        vec![],
    ));
    assert_eq!(h.ks("k"), ("new".into(), 5, 5, 1, 0));
}

#[test]
fn nested_txns_use_the_state_before_the_outer_txn() {
    let mut h = H::new();
    h.ok(p(put("flag", "0")));
    // Outer puts flag=1, the nested txn compares flag == 0: still true
    // because compares are evaluated up front.
    let nested = TxnRequest {
        compare: vec![cmp("flag", b"", T::Value, R::Equal, U::Value(b("0")))],
        success: vec![op_put(put("seen", "old"))],
        failure: vec![op_put(put("seen", "new"))],
    };
    let a = h.ok(t(
        vec![],
        vec![op_put(put("flag", "1")), op_txn(nested), op_get("flag", 0)],
        vec![],
    ));
    assert_eq!(a.outcome, Outcome::Applied);
    assert_eq!(h.ks("seen").0, "old");
    assert_eq!(h.ks("seen").2, 3);
    assert_eq!(h.ks("flag").2, 3);
    // A nested put with an unknown lease in the chosen path rejects everything.
    let mut bad = put("z", "z");
    bad.lease = 5;
    let nested = TxnRequest {
        compare: vec![],
        success: vec![op_put(bad)],
        failure: vec![],
    };
    let e = h.rejected(t(
        vec![],
        vec![op_put(put("y", "y")), op_txn(nested)],
        vec![],
    ));
    assert_eq!(e, Rejection::LeaseNotFound);
    assert!(h.m.get(b"y").is_none());
    // ... but not in the branch that is not taken.
    let mut bad = put("z", "z");
    bad.lease = 5;
    let nested = TxnRequest {
        compare: vec![cmp("nope", b"", T::Version, R::Greater, U::Version(0))],
        success: vec![op_put(bad)],
        failure: vec![op_put(put("z", "ok"))],
    };
    h.ok(t(vec![], vec![op_txn(nested)], vec![]));
    assert_eq!(h.ks("z").0, "ok");
}

#[test]
fn txn_apply_time_checks() {
    let mut h = H::new();
    h.ok(p(put("k", "v"))); // rev 2
    let mut iv = put("missing", "");
    iv.ignore_value = true;
    assert_eq!(
        h.rejected(t(vec![], vec![op_put(put("a", "1")), op_put(iv)], vec![])),
        Rejection::KeyNotFound
    );
    let mut lease = put("a", "1");
    lease.lease = 77;
    assert_eq!(
        h.rejected(t(vec![], vec![op_put(lease)], vec![])),
        Rejection::LeaseNotFound
    );
    // Range revisions in the chosen path.
    assert_eq!(
        h.rejected(t(
            vec![],
            vec![op_put(put("a", "1")), op_get("k", 3)],
            vec![]
        )),
        Rejection::FutureRev
    );
    // Read-only txns check ranges too (no bump anyway).
    assert_eq!(
        h.rejected(t(vec![], vec![op_get("k", 99)], vec![])),
        Rejection::FutureRev
    );
    h.ok(p(put("k", "w"))); // rev 3
    h.ok(Irr {
        compaction: Some(pb::CompactionRequest {
            revision: 3,
            physical: false,
        }),
        ..Default::default()
    });
    assert_eq!(
        h.rejected(t(
            vec![],
            vec![op_put(put("a", "1")), op_get("k", 2)],
            vec![]
        )),
        Rejection::Compacted
    );
    h.ok(t(
        vec![],
        vec![op_put(put("a", "1")), op_get("k", 3)],
        vec![],
    ));
    assert_eq!(h.m.revision(), 4);
}

#[test]
fn follower_view_drops_top_level_ranges() {
    let mut h = H::with(ModelConfig {
        txn_range_view: TxnRangeView::Follower,
        ..Default::default()
    });
    let a = h.ok(t(
        vec![],
        vec![op_put(put("a", "1")), op_get("k", 99)],
        vec![],
    ));
    assert_eq!(a.outcome, Outcome::Applied);
    // Nested ranges are kept.
    let nested = TxnRequest {
        compare: vec![],
        success: vec![op_get("k", 99)],
        failure: vec![],
    };
    let e = h.rejected(t(
        vec![],
        vec![op_put(put("b", "1")), op_txn(nested)],
        vec![],
    ));
    assert_eq!(e, Rejection::FutureRev);
}

// ---------------------------------------------------------------- leases

#[test]
fn lease_grant_rules() {
    let mut h = H::new();
    assert_eq!(h.rejected(grant(0, 10)), Rejection::LeaseNotFound);
    assert_eq!(
        h.rejected(grant(1, 9_000_000_001)),
        Rejection::LeaseTtlTooLarge
    );
    let a = h.ok(grant(1, 1));
    assert_eq!(
        a.effects,
        vec![Effect::LeaseGrant { id: 1, ttl: 2 }],
        "min TTL"
    );
    assert_eq!(h.rejected(grant(1, 10)), Rejection::LeaseExists);
    assert_eq!(h.m.revision(), 1, "lease grant never bumps");
    assert_eq!(ModelConfig::min_lease_ttl_for(100, 1000), 2);
    assert_eq!(ModelConfig::min_lease_ttl_for(50, 500), 1);
}

#[test]
fn lease_revoke_deletes_attached_keys_in_one_revision() {
    let mut h = H::new();
    h.ok(grant(5, 60));
    for k in ["z", "a", "m"] {
        let mut r = put(k, "v");
        r.lease = 5;
        h.ok(p(r));
    }
    h.ok(p(put("other", "v")));
    assert_eq!(h.m.revision(), 5);
    let a = h.ok(revoke(5));
    assert_eq!(a.revision, 6);
    assert_eq!(
        a.effects,
        vec![
            Effect::Delete { key: b("a") },
            Effect::Delete { key: b("m") },
            Effect::Delete { key: b("z") },
            Effect::LeaseRevoke { id: 5 },
        ]
    );
    assert!(h.m.leases().is_empty());
    assert_eq!(h.m.len(), 1);
    assert_eq!(h.rejected(revoke(5)), Rejection::LeaseNotFound);
}

#[test]
fn lease_checkpoint_sets_remaining_ttl_and_ignores_unknown_ids() {
    let mut h = H::new();
    h.ok(grant(5, 600));
    let a = h.ok(Irr {
        lease_checkpoint: Some(pb::LeaseCheckpointRequest {
            checkpoints: vec![
                pb::LeaseCheckpoint {
                    id: 5,
                    remaining_ttl: 300,
                },
                pb::LeaseCheckpoint {
                    id: 6,
                    remaining_ttl: 1,
                },
            ],
        }),
        ..Default::default()
    });
    assert_eq!(
        a.effects,
        vec![Effect::LeaseCheckpoint {
            id: 5,
            remaining_ttl: 300
        }]
    );
    assert_eq!(h.m.leases()[&5].remaining_ttl, 300);
}

#[test]
fn compaction_rules() {
    let mut h = H::new();
    h.ok(p(put("k", "1")));
    h.ok(p(put("k", "2"))); // rev 3
    let c = |rev| Irr {
        compaction: Some(pb::CompactionRequest {
            revision: rev,
            physical: true,
        }),
        ..Default::default()
    };
    assert_eq!(h.rejected(c(4)), Rejection::FutureRev);
    let a = h.ok(c(2));
    assert_eq!(a.effects, vec![Effect::Compact { revision: 2 }]);
    assert_eq!((h.m.compacted(), h.m.revision()), (2, 3));
    assert_eq!(h.rejected(c(2)), Rejection::Compacted);
    assert_eq!(h.rejected(c(1)), Rejection::Compacted);
    h.ok(c(3));
}

// ------------------------------------------------------------------ auth

fn user_add(name: &str, pw: &str, hashed: &str, no_password: bool) -> Irr {
    Irr {
        auth_user_add: Some(pb::AuthUserAddRequest {
            name: name.into(),
            password: pw.into(),
            options: Some(authpb::UserAddOptions { no_password }),
            hashed_password: hashed.into(),
        }),
        ..Default::default()
    }
}
fn role_add(name: &str) -> Irr {
    Irr {
        auth_role_add: Some(pb::AuthRoleAddRequest { name: name.into() }),
        ..Default::default()
    }
}
fn grant_role(user: &str, role: &str) -> Irr {
    Irr {
        auth_user_grant_role: Some(pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        }),
        ..Default::default()
    }
}
fn revoke_role(user: &str, role: &str) -> Irr {
    Irr {
        auth_user_revoke_role: Some(pb::AuthUserRevokeRoleRequest {
            name: user.into(),
            role: role.into(),
        }),
        ..Default::default()
    }
}
fn grant_perm(role: &str, t: i32, key: &str, end: &[u8]) -> Irr {
    Irr {
        auth_role_grant_permission: Some(pb::AuthRoleGrantPermissionRequest {
            name: role.into(),
            perm: Some(authpb::Permission {
                perm_type: t,
                key: b(key),
                range_end: Bytes::copy_from_slice(end),
            }),
        }),
        ..Default::default()
    }
}
fn enable() -> Irr {
    Irr {
        auth_enable: Some(pb::AuthEnableRequest {}),
        ..Default::default()
    }
}
fn disable() -> Irr {
    Irr {
        auth_disable: Some(pb::AuthDisableRequest {}),
        ..Default::default()
    }
}

/// root (role root) and alice (role r: READWRITE [a/, a0), READ k), auth enabled.
fn secured() -> H {
    let mut h = H::new();
    h.ok(user_add("root", "pw", "JDJhJDEwJGFiYw==", false));
    h.ok(grant_role("root", "root"));
    h.ok(user_add("alice", "pw", "JDJhJDEwJGFiYw==", false));
    h.ok(role_add("r"));
    h.ok(grant_perm("r", 2, "a/", b"a0"));
    h.ok(grant_perm("r", 0, "k", b""));
    h.ok(grant_role("alice", "r"));
    h.ok(enable());
    assert_eq!(h.m.auth().revision, 8);
    h
}

#[test]
fn user_add_passwords_3_4_and_3_5() {
    let mut h34 = H::with(ModelConfig {
        version: EtcdMinor::V3_4,
        ..Default::default()
    });
    let a = h34.ok(user_add("u", "secret", "", false));
    assert_eq!(
        a.effects,
        vec![Effect::UserAdd {
            name: "u".into(),
            password: Password::Plain(b("secret")),
            no_password: false
        }]
    );
    let mut h = H::new();
    let a = h.ok(user_add("u", "", "JDJhJDEwJGFiYw==", false));
    assert!(matches!(
        &a.effects[0],
        Effect::UserAdd { password: Password::Hashed(s), .. } if s == "JDJhJDEwJGFiYw=="
    ));
    // A 3.4 proposer's entry applied by 3.5: plaintext, hashed at apply.
    let a = h.ok(user_add("v", "plain", "", false));
    assert!(matches!(
        &a.effects[0],
        Effect::UserAdd {
            password: Password::Plain(_),
            ..
        }
    ));
    let a = h.ok(user_add("np", "", "", true));
    assert!(matches!(
        &a.effects[0],
        Effect::UserAdd {
            password: Password::None,
            no_password: true,
            ..
        }
    ));
    assert_eq!(
        h.rejected(user_add("bad", "", "not base64!", false)),
        Rejection::NoPasswordUser
    );
    assert_eq!(
        h.rejected(user_add("", "x", "", false)),
        Rejection::UserEmpty
    );
    assert_eq!(
        h.rejected(user_add("u", "x", "", false)),
        Rejection::UserAlreadyExist
    );
    assert_eq!(h.m.auth().revision, 4);
    // Change password: 3.5.1 skips no-password users, 3.4 hashes anyway.
    let cp = |name: &str| Irr {
        auth_user_change_password: Some(pb::AuthUserChangePasswordRequest {
            name: name.into(),
            password: "new".into(),
            hashed_password: String::new(),
        }),
        ..Default::default()
    };
    let a = h.ok(cp("np"));
    assert!(matches!(
        &a.effects[0],
        Effect::UserChangePassword {
            password: Password::None,
            ..
        }
    ));
    h34.ok(user_add("np", "", "", true));
    let a = h34.ok(cp("np"));
    assert!(matches!(
        &a.effects[0],
        Effect::UserChangePassword {
            password: Password::Plain(_),
            ..
        }
    ));
    assert_eq!(h.rejected(cp("ghost")), Rejection::UserNotFound);
    assert_eq!(h.m.auth().revision, 5);
}

#[test]
fn auth_store_mutations_and_revision_rules() {
    let mut h = H::new();
    assert_eq!(h.m.auth().revision, 1);
    assert_eq!(h.rejected(enable()), Rejection::RootUserNotExist);
    h.ok(user_add("root", "pw", "", false));
    assert_eq!(h.rejected(enable()), Rejection::RootRoleNotExist);
    // Granting root does not need the role to exist; other roles must.
    assert_eq!(
        h.rejected(grant_role("root", "nope")),
        Rejection::RoleNotFound
    );
    assert_eq!(
        h.rejected(grant_role("ghost", "root")),
        Rejection::UserNotFound
    );
    h.ok(grant_role("root", "root"));
    assert_eq!(h.ok(grant_role("root", "root")).outcome, Outcome::NoChange);
    assert_eq!(h.m.auth().revision, 3);
    let a = h.ok(enable());
    assert_eq!(
        (a.outcome, a.effects),
        (Outcome::Applied, vec![Effect::AuthEnable])
    );
    assert_eq!(h.m.auth().revision, 3, "enable does not bump");
    // While enabled: root can't be deleted or lose root.
    let root = |r: Irr| as_user(r, "root", 3);
    assert_eq!(
        h.rejected(root(revoke_role("root", "root"))),
        Rejection::InvalidAuthMgmt
    );
    assert_eq!(
        h.rejected(root(Irr {
            auth_user_delete: Some(pb::AuthUserDeleteRequest {
                name: "root".into()
            }),
            ..Default::default()
        })),
        Rejection::InvalidAuthMgmt
    );
    assert_eq!(
        h.rejected(root(Irr {
            auth_role_delete: Some(pb::AuthRoleDeleteRequest {
                role: "root".into()
            }),
            ..Default::default()
        })),
        Rejection::InvalidAuthMgmt
    );
    assert_eq!(h.ok(root(enable())).outcome, Outcome::NoChange);
    let a = h.ok(root(disable()));
    assert_eq!(a.effects, vec![Effect::AuthDisable]);
    assert_eq!(h.m.auth().revision, 4, "disable bumps");
    assert_eq!(h.ok(disable()).outcome, Outcome::NoChange);
    assert_eq!(h.m.auth().revision, 4);
    // Roles and permissions.
    h.ok(role_add("r"));
    assert_eq!(h.rejected(role_add("r")), Rejection::RoleAlreadyExist);
    assert_eq!(h.rejected(role_add("")), Rejection::RoleEmpty);
    h.ok(grant_perm("r", 0, "b", b""));
    h.ok(grant_perm("r", 0, "a", b"c"));
    h.ok(grant_perm("r", 2, "b", b"")); // same key and end: type updated
    h.ok(grant_perm("r", 1, "a", b"b")); // same key, other end: appended after
    let perms: Vec<(String, Vec<u8>, PermType)> = h.m.auth().roles["r"]
        .perms
        .iter()
        .map(|p| {
            (
                String::from_utf8(p.key.to_vec()).unwrap(),
                p.range_end.to_vec(),
                p.perm_type,
            )
        })
        .collect();
    assert_eq!(
        perms,
        vec![
            ("a".into(), b"c".to_vec(), PermType::Read),
            ("a".into(), b"b".to_vec(), PermType::Write),
            ("b".into(), vec![], PermType::ReadWrite),
        ]
    );
    let rp = |role: &str, key: &str, end: &[u8]| Irr {
        auth_role_revoke_permission: Some(pb::AuthRoleRevokePermissionRequest {
            role: role.into(),
            key: b(key),
            range_end: Bytes::copy_from_slice(end),
        }),
        ..Default::default()
    };
    assert_eq!(
        h.rejected(rp("r", "a", b"zz")),
        Rejection::PermissionNotGranted
    );
    assert_eq!(h.rejected(rp("x", "a", b"c")), Rejection::RoleNotFound);
    h.ok(rp("r", "a", b"c"));
    assert_eq!(h.m.auth().roles["r"].perms.len(), 2);
    assert_eq!(
        h.rejected(Irr {
            auth_role_grant_permission: Some(pb::AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: None
            }),
            ..Default::default()
        }),
        Rejection::PermissionNotGiven
    );
    // Role delete revokes it from every user.
    h.ok(user_add("u", "pw", "", false));
    h.ok(grant_role("u", "r"));
    assert_eq!(
        h.rejected(revoke_role("u", "zz")),
        Rejection::RoleNotGranted
    );
    h.ok(Irr {
        auth_role_delete: Some(pb::AuthRoleDeleteRequest { role: "r".into() }),
        ..Default::default()
    });
    assert!(h.m.auth().users["u"].roles.is_empty());
    // Reads change nothing.
    let before = h.m.auth().clone();
    for r in [
        Irr {
            auth_user_list: Some(pb::AuthUserListRequest {}),
            ..Default::default()
        },
        Irr {
            auth_role_get: Some(pb::AuthRoleGetRequest { role: "x".into() }),
            ..Default::default()
        },
        Irr {
            auth_status: Some(pb::AuthStatusRequest {}),
            ..Default::default()
        },
    ] {
        assert_eq!(h.ok(r).outcome, Outcome::NoChange);
    }
    assert_eq!(&before, h.m.auth());
}

#[test]
fn admin_requests_need_the_root_role_but_no_current_revision() {
    let mut h = secured();
    assert_eq!(h.rejected(role_add("x")), Rejection::UserEmpty);
    assert_eq!(
        h.rejected(as_user(role_add("x"), "alice", 8)),
        Rejection::PermissionDenied
    );
    assert_eq!(
        h.rejected(as_user(role_add("x"), "ghost", 8)),
        Rejection::UserNotFound
    );
    h.ok(as_user(role_add("x"), "root", 1));
    assert_eq!(h.m.auth().revision, 9);
}

#[test]
fn kv_requests_are_checked_against_auth_revision_and_permissions() {
    let mut h = secured();
    let alice = |r: Irr| as_user(r, "alice", 8);
    h.ok(alice(p(put("a/1", "x"))));
    assert_eq!(
        h.rejected(alice(p(put("b", "x")))),
        Rejection::PermissionDenied
    );
    assert_eq!(h.rejected(p(put("a/1", "x"))), Rejection::UserEmpty);
    assert_eq!(
        h.rejected(as_user(p(put("a/1", "x")), "alice", 7)),
        Rejection::AuthOldRevision
    );
    // Root bypasses permissions but not the revision check.
    h.ok(as_user(p(put("zzz", "x")), "root", 8));
    assert_eq!(
        h.rejected(as_user(p(put("zzz", "y")), "root", 7)),
        Rejection::AuthOldRevision
    );
    // prev_kv needs READ: k is READ only, so a put to k fails on WRITE first.
    let mut pk = put("a/2", "x");
    pk.prev_kv = true;
    h.ok(alice(p(pk)));
    // Delete ranges need WRITE on the whole range.
    assert_eq!(
        h.rejected(alice(d(del("a/", b"b")))),
        Rejection::PermissionDenied
    );
    h.ok(alice(d(del("a/", b"a0"))));
    assert!(h.m.get(b"a/1").is_none());
    let mut dp = del("k", b"");
    dp.prev_kv = true;
    assert_eq!(h.rejected(alice(d(dp))), Rejection::PermissionDenied);
    // Attaching a lease needs WRITE on the keys already attached to it.
    h.ok(grant(3, 60));
    let mut rp = put("zzz", "y");
    rp.lease = 3;
    h.ok(as_user(p(rp), "root", 8));
    let mut ap = put("a/3", "x");
    ap.lease = 3;
    assert_eq!(h.rejected(alice(p(ap))), Rejection::PermissionDenied);
    // ... and so does revoking it; a lease without keys is not checked at all.
    assert_eq!(h.rejected(alice(revoke(3))), Rejection::PermissionDenied);
    h.ok(grant(4, 60));
    h.ok(revoke(4));
    // When auth is disabled nothing is checked.
    h.ok(as_user(disable(), "root", 8));
    h.ok(p(put("b", "free")));
}

#[test]
fn txn_permissions() {
    let mut h = secured();
    let alice = |r: Irr| as_user(r, "alice", 8);
    // Compares need READ.
    let c = cmp("b", b"", T::Version, R::Equal, U::Version(0));
    assert_eq!(
        h.rejected(alice(t(vec![c], vec![op_put(put("a/1", "1"))], vec![]))),
        Rejection::PermissionDenied
    );
    // Both branches are checked, even the one not taken.
    let c = cmp("k", b"", T::Version, R::Equal, U::Version(0));
    assert_eq!(
        h.rejected(alice(t(
            vec![c.clone()],
            vec![op_put(put("a/1", "1"))],
            vec![op_put(put("b", "1"))]
        ))),
        Rejection::PermissionDenied
    );
    // Range ops need READ.
    assert_eq!(
        h.rejected(alice(t(
            vec![],
            vec![op_put(put("a/1", "1")), op_get("b", 0)],
            vec![]
        ))),
        Rejection::PermissionDenied
    );
    // Nested txns are not checked (3.4.23 / 3.5.1).
    let nested = TxnRequest {
        compare: vec![],
        success: vec![op_put(put("b", "sneaky"))],
        failure: vec![],
    };
    h.ok(alice(t(vec![c], vec![op_txn(nested)], vec![])));
    assert_eq!(h.ks("b").0, "sneaky");
}

#[test]
fn authenticate_changes_nothing() {
    let mut h = H::new();
    let auth = |n: &str| Irr {
        authenticate: Some(pb::InternalAuthenticateRequest {
            name: n.into(),
            password: String::new(),
            simple_token: "tok".into(),
        }),
        ..Default::default()
    };
    assert_eq!(h.rejected(auth("root")), Rejection::AuthNotEnabled);
    let mut h = secured();
    assert_eq!(h.ok(auth("alice")).outcome, Outcome::NoChange);
    assert_eq!(h.rejected(auth("ghost")), Rejection::AuthFailed);
}

// ---------------------------------------------------------------- alarms

#[test]
fn nospace_rejects_puts_txn_puts_and_grants_until_disarmed() {
    let mut h = H::new();
    h.ok(p(put("k", "v")));
    h.ok(grant(1, 60));
    let a = h.ok(alarm(1, 11, pb::AlarmType::Nospace));
    assert_eq!(
        a.effects,
        vec![Effect::AlarmActivate {
            member_id: 11,
            alarm: AlarmKind::NoSpace
        }]
    );
    assert_eq!(h.rejected(p(put("k", "w"))), Rejection::NoSpace);
    assert_eq!(h.rejected(grant(2, 60)), Rejection::NoSpace);
    assert_eq!(
        h.rejected(t(
            vec![],
            vec![op_del(del("k", b""))],
            vec![op_put(put("x", "1"))]
        )),
        Rejection::NoSpace,
        "a put in either branch"
    );
    // Deletes, revokes, delete-only txns and nested puts still apply.
    let nested = TxnRequest {
        compare: vec![],
        success: vec![op_put(put("n", "1"))],
        failure: vec![],
    };
    h.ok(t(vec![], vec![op_txn(nested)], vec![]));
    assert!(h.m.get(b"n").is_some());
    h.ok(d(del("k", b"")));
    h.ok(revoke(1));
    // A second member's alarm, then disarming one: still capped.
    h.ok(alarm(1, 12, pb::AlarmType::Nospace));
    assert_eq!(
        h.ok(alarm(1, 12, pb::AlarmType::Nospace)).outcome,
        Outcome::NoChange
    );
    h.ok(alarm(2, 11, pb::AlarmType::Nospace));
    assert_eq!(h.rejected(p(put("k", "w"))), Rejection::NoSpace);
    h.ok(alarm(2, 12, pb::AlarmType::Nospace));
    h.ok(p(put("k", "w")));
    assert_eq!(
        h.ok(alarm(0, 0, pb::AlarmType::None)).outcome,
        Outcome::NoChange
    );
}

#[test]
fn runtime_alarm_bypasses_auth_but_a_restarted_member_does_not() {
    let mut h = secured();
    let alice = |r: Irr| as_user(r, "alice", 8);
    h.ok(as_user(p(put("b", "x")), "root", 8));
    assert_eq!(
        h.rejected(alice(d(del("b", b"")))),
        Rejection::PermissionDenied
    );
    h.ok(alarm(1, 11, pb::AlarmType::Nospace));
    // Runtime activation wrapped only the backend: no auth checks.
    h.ok(alice(d(del("b", b""))));
    assert!(h.m.get(b"b").is_none());
    h.ok(role_add("while-capped"));
    // Seeded from a snapshot with the alarm: the full chain is wrapped.
    let s = SnapshotState {
        keys: vec![],
        revision: h.m.revision(),
        compacted: -1,
        leases: vec![],
        auth: h.m.auth().clone(),
        alarms: vec![(AlarmKind::NoSpace, 11)],
        consistent_index: h.idx,
        term: 2,
        extras: None,
    };
    let mut r = H {
        m: Model::from_snapshot(s),
        idx: h.idx,
    };
    let rev = r.m.auth().revision;
    assert_eq!(
        r.rejected(as_user(d(del("zzz", b"")), "alice", rev)),
        Rejection::PermissionDenied
    );
    assert_eq!(r.rejected(p(put("a/1", "x"))), Rejection::NoSpace);
    // Disarm restores the normal chain.
    h.ok(alarm(2, 11, pb::AlarmType::Nospace));
    h.ok(as_user(p(put("b", "y")), "root", h.m.auth().revision));
    assert_eq!(
        h.rejected(alice(d(del("b", b"")))),
        Rejection::AuthOldRevision
    );
}

#[test]
fn corrupt_rejects_kv_lease_and_compaction() {
    let mut h = H::new();
    h.ok(p(put("k", "v")));
    h.ok(grant(1, 60));
    h.ok(alarm(1, 11, pb::AlarmType::Corrupt));
    assert_eq!(h.rejected(p(put("k", "w"))), Rejection::Corrupt);
    assert_eq!(h.rejected(d(del("k", b""))), Rejection::Corrupt);
    assert_eq!(h.rejected(t(vec![], vec![], vec![])), Rejection::Corrupt);
    assert_eq!(h.rejected(grant(2, 60)), Rejection::Corrupt);
    assert_eq!(h.rejected(revoke(1)), Rejection::Corrupt);
    h.ok(role_add("r"));
    h.ok(alarm(2, 11, pb::AlarmType::Corrupt));
    h.ok(p(put("k", "w")));
}

// ------------------------------------------------------ cluster, control

#[test]
fn cluster_entries_are_tracked_not_replayed() {
    let mut m = Model::new();
    let cc = ConfChange {
        change: raftpb::ConfChange {
            id: 0,
            r#type: 3,
            node_id: 0xabc,
            context: None,
        },
        context: Some(ConfContext {
            id: Some(0xabc),
            peer_urls: vec!["http://p".into()],
            is_learner: true,
            ..Default::default()
        }),
    };
    let a = m.apply(1, 1, &Decoded::ConfChange(cc));
    assert_eq!((a.outcome, a.effects.len()), (Outcome::ClusterOnly, 0));
    assert!(m.cluster().members[&0xabc].is_learner);
    let v2 = pb::Request {
        method: "PUT".into(),
        path: "/0/members/abc/attributes".into(),
        val: r#"{"name":"n1","clientURLs":["http://c"]}"#.into(),
        ..Default::default()
    };
    assert_eq!(
        m.apply(2, 1, &Decoded::V2(Box::new(v2))).outcome,
        Outcome::ClusterOnly
    );
    assert_eq!(m.cluster().members[&0xabc].name, "n1");
    let ver = pb::Request {
        method: "PUT".into(),
        path: "/0/version".into(),
        val: "3.5.0".into(),
        ..Default::default()
    };
    m.apply(3, 1, &Decoded::V2(Box::new(ver)));
    assert_eq!(m.cluster().version.as_deref(), Some("3.5.0"));
    assert_eq!(m.apply(4, 2, &Decoded::Empty).outcome, Outcome::Empty);
    assert_eq!(m.revision(), 1);
    assert_eq!(m.applied_index(), 4);
}

#[test]
fn undecodable_and_unsupported_entries_halt_without_moving() {
    let mut m = Model::new();
    let u = Decoded::Unknown {
        entry_type: 0,
        raw: Bytes::from_static(b"\xff"),
        reason: "bad".into(),
    };
    let a = m.apply(1, 1, &u);
    assert!(a.outcome.is_halt());
    assert_eq!(m.applied_index(), 0);
    let empty = Decoded::Internal(Box::default());
    assert!(matches!(
        m.apply(1, 1, &empty).outcome,
        Outcome::Unsupported(_)
    ));
    let v2 = Decoded::ConfChangeV2(raftpb::ConfChangeV2::default());
    assert!(matches!(
        m.apply(1, 1, &v2).outcome,
        Outcome::Unsupported(_)
    ));
    let mut m34 = Model::with_config(ModelConfig {
        version: EtcdMinor::V3_4,
        ..Default::default()
    });
    let st = Decoded::Internal(Box::new(Irr {
        auth_status: Some(pb::AuthStatusRequest {}),
        ..Default::default()
    }));
    assert!(matches!(
        m34.apply(1, 1, &st).outcome,
        Outcome::Unsupported(_)
    ));
    assert_eq!(m.applied_index(), 0);
}

#[test]
fn entries_at_or_below_the_applied_index_are_skipped() {
    let mut m = Model::new();
    let e = Decoded::Internal(Box::new(p(put("k", "v"))));
    assert_eq!(m.apply(5, 1, &e).outcome, Outcome::Applied);
    assert_eq!(m.apply(5, 1, &e).outcome, Outcome::AlreadyApplied);
    assert_eq!(m.apply(3, 1, &e).outcome, Outcome::AlreadyApplied);
    assert_eq!(m.revision(), 2);
}

/// Several request fields set: etcd applies the first in its fixed order
/// (`etcd_standby_decode::APPLY_ORDER`), the model the same.
#[test]
fn several_fields_set_follow_etcds_precedence() {
    use etcd_standby_proto::membershippb;
    let both = || Irr {
        put: Some(put("k", "v")),
        cluster_version_set: Some(membershippb::ClusterVersionSetRequest {
            ver: "3.5.0".into(),
        }),
        ..Default::default()
    };
    // 3.5: the cluster requests are switched on first; the put is ignored.
    let mut h = H::new();
    let a = h.apply(both());
    assert_eq!(a.outcome, Outcome::ClusterOnly);
    assert!(a.effects.is_empty());
    assert!(h.m.get(b"k").is_none());
    assert_eq!(h.m.cluster().version.as_deref(), Some("3.5.0"));
    // 3.4 does not know the field: the put is applied.
    let mut h = H::with(ModelConfig {
        version: EtcdMinor::V3_4,
        ..ModelConfig::default()
    });
    assert_eq!(h.apply(both()).outcome, Outcome::Applied);
    assert!(h.m.get(b"k").is_some());
    assert_eq!(h.m.cluster().version, None);
    // A v2 request wins over everything.
    let mut h = H::new();
    let r = Irr {
        v2: Some(pb::Request {
            method: "PUT".into(),
            path: "/0/version".into(),
            val: "3.4.0".into(),
            ..Default::default()
        }),
        put: Some(put("k", "v")),
        ..Default::default()
    };
    assert_eq!(h.apply(r).outcome, Outcome::ClusterOnly);
    assert!(h.m.get(b"k").is_none());
    // auth_role_add is checked before auth_user_list.
    let mut h = H::new();
    let r = Irr {
        auth_user_list: Some(Default::default()),
        auth_role_add: Some(pb::AuthRoleAddRequest { name: "r".into() }),
        ..Default::default()
    };
    assert_eq!(h.apply(r).outcome, Outcome::Applied);
    assert!(h.m.auth().roles.contains_key("r"));
}

/// Long values live in the value store: equality compares need only their
/// digest, an ordering compare the prefix does not decide and an
/// `ignore_value` put need the bytes. When the store has lost them, the
/// entry halts with the state and index unchanged (never a guess).
#[test]
fn a_value_missing_from_the_store_halts_the_entry_that_needs_its_bytes() {
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    use etcd_standby_model::{MemValues, ValueStore};
    use std::sync::Arc;
    let long = "p".repeat(16) + "-the-rest";
    let store = Arc::new(MemValues::default());
    let mut h = H {
        m: Model::with_values(ModelConfig::default(), store.clone()),
        idx: 0,
    };
    h.ok(p(put("k", &long)));
    let digest = h.m.get(b"k").unwrap().value.digest();
    assert_eq!(h.m.value(b"k").unwrap().unwrap(), long.as_bytes());
    store.release(&digest);
    assert!(store.is_empty());

    // Equality and a prefix-decided ordering still apply.
    let eq = cmp("k", b"", T::Value, R::Equal, U::Value(b(&long)));
    let a = h.apply(t(vec![eq], vec![op_put(put("eq", "1"))], vec![]));
    assert_eq!(a.outcome, Outcome::Applied);
    let gt = cmp("k", b"", T::Value, R::Greater, U::Value(b("a")));
    let a = h.apply(t(vec![gt], vec![op_put(put("gt", "1"))], vec![]));
    assert_eq!(a.outcome, Outcome::Applied);

    let (index, revision) = (h.m.applied_index(), h.m.revision());
    // The compare operand shares the 16-byte prefix: the bytes are needed.
    let tie = cmp(
        "k",
        b"",
        T::Value,
        R::Less,
        U::Value(b(&(long.clone() + "x"))),
    );
    let a = h.apply(t(vec![tie], vec![op_put(put("lt", "1"))], vec![]));
    assert!(
        matches!(&a.outcome, Outcome::ValueUnavailable(why) if why.contains("no value with digest")),
        "{:?}",
        a.outcome
    );
    assert!(a.outcome.is_halt() && a.effects.is_empty());
    assert_eq!((h.m.applied_index(), h.m.revision()), (index, revision));
    h.idx -= 1;

    let ignore = PutRequest {
        ignore_value: true,
        ..put("k", "")
    };
    let a = h.apply(p(ignore.clone()));
    assert!(
        matches!(a.outcome, Outcome::ValueUnavailable(_)),
        "{:?}",
        a.outcome
    );
    h.idx -= 1;
    let a = h.apply(t(vec![], vec![op_put(ignore)], vec![]));
    assert!(
        matches!(a.outcome, Outcome::ValueUnavailable(_)),
        "{:?}",
        a.outcome
    );
    assert_eq!((h.m.applied_index(), h.m.revision()), (index, revision));
    assert!(h.m.get(b"lt").is_none());
}

/// The in-memory store counts references: it holds exactly the distinct
/// long values live keys hold, whatever the writes, deletes and txns did.
#[test]
fn the_memory_store_holds_exactly_the_live_long_values() {
    use etcd_standby_model::MemValues;
    use std::sync::Arc;
    let store = Arc::new(MemValues::default());
    let mut h = H {
        m: Model::with_values(ModelConfig::default(), store.clone()),
        idx: 0,
    };
    let long = |i: u32| format!("{i:04}-a-value-longer-than-sixteen-bytes");
    for i in 0..40 {
        h.ok(p(put(&format!("k{}", i % 10), &long(i % 7))));
    }
    h.ok(d(del("k3", b"")));
    h.ok(t(
        vec![],
        vec![op_put(put("k4", "short")), op_put(put("k5", &long(1)))],
        vec![],
    ));
    let mut live: Vec<_> =
        h.m.keys()
            .filter(|(_, s)| s.value.inline().is_none())
            .map(|(_, s)| s.value.digest())
            .collect();
    live.sort_unstable();
    live.dedup();
    assert_eq!(live, h.m.live_digests());
    assert_eq!(store.len(), live.len());
    h.ok(d(del("k", b"\0")));
    assert!(store.is_empty(), "{} values left", store.len());
}

// -------------------------------------------------- revision accounting

/// The rule revision-preserving replay rests on, observed on etcd 3.4.23
/// and 3.5.1 (docs/revision-preserving.md, table B): a request that changes
/// at least one key bumps the revision by exactly one, however many keys it
/// changes; nothing else bumps it. Each row is applied in turn to one model.
#[test]
fn revision_bumps_once_per_request_that_changes_a_key_and_never_otherwise() {
    let mut h = H::new();
    h.ok(grant(7, 600));
    h.ok(grant(8, 600));
    h.ok(grant(9, 600));
    let ignore_value = |k: &str| {
        p(PutRequest {
            ignore_value: true,
            ..put(k, "")
        })
    };
    let with_lease = |k: &str, lease| {
        p(PutRequest {
            lease,
            ..put(k, "v")
        })
    };
    let compaction = |revision| Irr {
        compaction: Some(pb::CompactionRequest {
            revision,
            physical: false,
        }),
        ..Default::default()
    };
    let rows: Vec<(&str, Irr, i64)> = vec![
        ("put of a new key", p(put("k1", "v")), 1),
        ("put of the same value", p(put("k1", "v")), 1),
        (
            "put --ignore-value of an existing key",
            ignore_value("k1"),
            1,
        ),
        (
            "put --ignore-value of a missing key",
            ignore_value("nokey"),
            0,
        ),
        ("put with a missing lease", with_lease("k2", 0x1234), 0),
        ("delete of a missing key", d(del("missing", b"")), 0),
        ("r/1 for the range delete", p(put("r/1", "v")), 1),
        ("r/2 for the range delete", p(put("r/2", "v")), 1),
        ("r/3 for the range delete", p(put("r/3", "v")), 1),
        ("delete of a 3-key range", d(del("r/", b"r0")), 1),
        ("empty txn", t(vec![], vec![], vec![]), 0),
        (
            "txn with only a get",
            t(vec![], vec![op_get("k1", 0)], vec![]),
            0,
        ),
        (
            "txn whose compare fails, empty failure",
            t(
                vec![cmp("k1", b"", T::Value, R::Equal, U::Value(b("nope")))],
                vec![op_put(put("k3", "x"))],
                vec![],
            ),
            0,
        ),
        (
            "txn whose compare fails, a put in failure",
            t(
                vec![cmp("k1", b"", T::Value, R::Equal, U::Value(b("nope")))],
                vec![op_put(put("k3", "x"))],
                vec![op_put(put("k4", "y"))],
            ),
            1,
        ),
        (
            "txn: a put and a delete of a missing key",
            t(
                vec![],
                vec![op_put(put("k5", "x")), op_del(del("missing", b""))],
                vec![],
            ),
            1,
        ),
        (
            "txn that only deletes a missing key",
            t(vec![], vec![op_del(del("missing", b""))], vec![]),
            0,
        ),
        (
            "txn with two puts and a delete",
            t(
                vec![],
                vec![
                    op_put(put("k8", "x")),
                    op_put(put("k9", "x")),
                    op_del(del("k5", b"")),
                ],
                vec![],
            ),
            1,
        ),
        ("lease grant", grant(10, 600), 0),
        ("revoke of a lease with no keys", revoke(7), 0),
        ("a1 on lease 8", with_lease("a1", 8), 1),
        ("a2 on lease 8", with_lease("a2", 8), 1),
        ("a3 on lease 8", with_lease("a3", 8), 1),
        ("revoke of a lease with 3 keys", revoke(8), 1),
        ("e1 on lease 9", with_lease("e1", 9), 1),
        ("expiry (the leader's revoke) with a key", revoke(9), 1),
        ("compaction", compaction(3), 0),
        ("user add", user_add("alice", "pw", "", false), 0),
        ("role add", role_add("r1"), 0),
        ("NOSPACE raised", alarm(1, 11, pb::AlarmType::Nospace), 0),
        ("put under NOSPACE", p(put("k10", "v")), 0),
        (
            "delete of an existing key under NOSPACE",
            d(del("k1", b"")),
            1,
        ),
        ("NOSPACE disarmed", alarm(2, 11, pb::AlarmType::Nospace), 0),
        ("put after the disarm", p(put("k10", "v")), 1),
    ];
    for (what, req, bump) in rows {
        let before = h.m.revision();
        let a = h.apply(req);
        assert_eq!(
            h.m.revision() - before,
            bump,
            "{what}: revision {before} -> {} ({:?})",
            h.m.revision(),
            a.outcome
        );
    }
}
