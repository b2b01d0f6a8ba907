//! Persisting the model: `to_snapshot_state` → `write_to` → `read_from` →
//! `from_snapshot_with_config` must give a model that behaves exactly like
//! the original on every further entry; damaged files are typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use etcd_standby_decode::{ConfChange, ConfContext, Decoded, Member, decode_entry};
use etcd_standby_model::{
    AlarmKind, ApplierChain, AuthState, ClusterState, EtcdMinor, KeyState, Model, ModelConfig,
    ModelExtras, ModelIoError, Password, PermType, Permission, Role, SnapshotKey, SnapshotLease,
    SnapshotState, StoredValue, TxnRangeView, User, Value,
};
use etcd_standby_proto::etcdserverpb::{
    self as pb, InternalRaftRequest as Irr, PutRequest, RequestHeader, TxnRequest, compare,
    request_op,
};
use etcd_standby_proto::{authpb, membershippb, raftpb};
use proptest::prelude::*;

// ------------------------------------------------------------ utilities

fn encode(s: &SnapshotState) -> Vec<u8> {
    let mut out = Vec::new();
    s.write_to(&mut out).unwrap();
    out
}

fn decode(b: &[u8]) -> Result<SnapshotState, ModelIoError> {
    SnapshotState::read_from(&mut &b[..])
}

/// Save → file bytes → load, as a restarting daemon would: written
/// straight from the model (the same bytes as its export), long values
/// left in the model's store.
fn save_load(m: &Model) -> Model {
    let bytes = encode(&m.to_snapshot_state());
    let mut direct = Vec::new();
    m.write_to(&mut direct).unwrap();
    assert_eq!(
        direct, bytes,
        "Model::write_to and the export's write_to differ"
    );
    let s = decode(&bytes).unwrap();
    Model::from_snapshot_in(m.config().clone(), s, m.values().clone())
}

fn assert_same_state(a: &Model, b: &Model, ctx: &str) {
    assert_eq!(a.config(), b.config(), "{ctx}: config");
    assert_eq!(a.applier_chain(), b.applier_chain(), "{ctx}: chain");
    assert_eq!(a.to_snapshot_state(), b.to_snapshot_state(), "{ctx}: state");
}

/// Feeds entries to `orig` and to copies saved and reloaded along the way:
/// every `k` entries a new copy is loaded from the original (and continues
/// to the end), and the oldest copy is reloaded from itself (a chain of
/// restarts). Every copy must return exactly what the original returns.
fn drive(
    mut orig: Model,
    k: usize,
    mut next: impl FnMut(&Model) -> Option<(u64, u64, Decoded)>,
) -> (Model, usize, BTreeMap<String, usize>) {
    let k = k.max(1);
    let mut seen = BTreeMap::new();
    let mut copies: Vec<(usize, Model)> = vec![(0, save_load(&orig))];
    let mut n = 0;
    while let Some((index, term, entry)) = next(&orig) {
        if n > 0 && n % k == 0 {
            for (from, c) in &copies {
                assert_same_state(&orig, c, &format!("before entry {n}, copy from {from}"));
            }
            let chained = save_load(&copies[0].1);
            copies[0].1 = chained;
            copies.push((n, save_load(&orig)));
            if copies.len() > 6 {
                copies.remove(1);
            }
        }
        let want = orig.apply(index, term, &entry);
        let mut kind = format!("{:?}", want.outcome);
        kind.truncate(kind.find(['(', ' ']).unwrap_or(kind.len()).max(
            if kind.starts_with("Rejected") {
                kind.len()
            } else {
                0
            },
        ));
        *seen.entry(kind).or_insert(0) += 1;
        for (from, c) in &mut copies {
            let got = c.apply(index, term, &entry);
            assert_eq!(
                got, want,
                "entry #{n} (index {index}): copy loaded before entry {from} diverged"
            );
        }
        n += 1;
    }
    for (from, c) in &copies {
        assert_same_state(&orig, c, &format!("at the end, copy from {from}"));
    }
    (orig, n, seen)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

const KEYS: &[&str] = &["a", "b", "c", "k", "p/1", "p/2", "p/3", "q", "z"];
const ENDS: &[&[u8]] = &[b"", b"", b"\0", b"p0", b"d", b"c"];
const USERS: &[&str] = &["root", "alice", "bob", "ghost", ""];
const ROLES: &[&str] = &["root", "ra", "rb", ""];
/// Lease IDs: granted ones, a negative one and ones only keys name (seeded).
const LEASES: &[i64] = &[1, 2, 3, -4, 77, 78, 0];
const HASH: &str = "JDJhJDEwJGFiYw==";

/// A random workload over every kind of entry the model handles, with auth
/// headers that are sometimes current, sometimes stale or missing.
struct Workload {
    rng: Rng,
    index: u64,
    term: u64,
    left: usize,
}

impl Workload {
    fn new(seed: u64, first_index: u64, entries: usize) -> Workload {
        Workload {
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            index: first_index,
            term: 2,
            left: entries,
        }
    }

    fn next(&mut self, m: &Model) -> Option<(u64, u64, Decoded)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        if self.rng.chance(3) {
            self.term += 1;
        }
        let entry = self.entry(m);
        // Now and then an entry at an old index (skipped) or a halting one
        // (index not consumed).
        let index = if self.rng.chance(1) {
            self.index.saturating_sub(self.rng.below(3))
        } else {
            self.index += 1;
            self.index
        };
        Some((index, self.term, entry))
    }

    fn key(&mut self) -> Bytes {
        b(self.rng.pick(KEYS))
    }

    fn value(&mut self) -> Bytes {
        if self.rng.chance(5) {
            Bytes::from(vec![b'v'; 256])
        } else {
            b(&format!("v{}", self.rng.below(5)))
        }
    }

    fn put(&mut self) -> PutRequest {
        PutRequest {
            key: self.key(),
            value: self.value(),
            lease: if self.rng.chance(40) {
                self.rng.pick(LEASES)
            } else {
                0
            },
            prev_kv: self.rng.chance(10),
            ignore_value: self.rng.chance(8),
            ignore_lease: self.rng.chance(8),
        }
    }

    fn del(&mut self) -> pb::DeleteRangeRequest {
        pb::DeleteRangeRequest {
            key: self.key(),
            range_end: Bytes::from_static(self.rng.pick(ENDS)),
            prev_kv: self.rng.chance(10),
        }
    }

    fn compare(&mut self) -> pb::Compare {
        use compare::TargetUnion as U;
        let target = self.rng.below(6) as i32;
        let v = self.rng.below(6) as i64;
        pb::Compare {
            result: self.rng.below(5) as i32,
            target,
            key: self.key(),
            range_end: Bytes::from_static(self.rng.pick(ENDS)),
            target_union: Some(match target {
                0 => U::Version(v),
                1 => U::CreateRevision(v * 3),
                2 => U::ModRevision(v * 3),
                3 => U::Value(b(&format!("v{v}"))),
                _ => U::Lease(self.rng.pick(LEASES)),
            }),
        }
    }

    fn ops(&mut self, m: &Model, depth: u32) -> Vec<pb::RequestOp> {
        (0..self.rng.below(4))
            .map(|_| {
                let r = match self.rng.below(if depth < 2 { 5 } else { 4 }) {
                    0 | 1 => request_op::Request::RequestPut(self.put()),
                    2 => request_op::Request::RequestDeleteRange(self.del()),
                    3 => request_op::Request::RequestRange(pb::RangeRequest {
                        key: self.key(),
                        range_end: Bytes::from_static(self.rng.pick(ENDS)),
                        revision: if self.rng.chance(50) {
                            0
                        } else {
                            m.revision() + 1 - self.rng.below(6) as i64
                        },
                        ..Default::default()
                    }),
                    _ => request_op::Request::RequestTxn(self.txn(m, depth + 1)),
                };
                pb::RequestOp { request: Some(r) }
            })
            .collect()
    }

    fn txn(&mut self, m: &Model, depth: u32) -> TxnRequest {
        TxnRequest {
            compare: (0..self.rng.below(3)).map(|_| self.compare()).collect(),
            success: self.ops(m, depth),
            failure: self.ops(m, depth),
        }
    }

    fn auth(&mut self) -> Irr {
        let user = self.rng.pick(USERS).to_owned();
        let role = self.rng.pick(ROLES).to_owned();
        let mut r = Irr::default();
        match self.rng.below(16) {
            0..=2 => {
                let (password, hashed) = match self.rng.below(4) {
                    0 => ("pw", ""),
                    1 => ("", HASH),
                    2 => ("pw", HASH),
                    _ => ("", "not base64!"),
                };
                r.auth_user_add = Some(pb::AuthUserAddRequest {
                    name: user,
                    password: password.into(),
                    options: Some(authpb::UserAddOptions {
                        no_password: self.rng.chance(20),
                    }),
                    hashed_password: hashed.into(),
                });
            }
            3 => r.auth_user_delete = Some(pb::AuthUserDeleteRequest { name: user }),
            4 => {
                r.auth_user_change_password = Some(pb::AuthUserChangePasswordRequest {
                    name: user,
                    password: "pw2".into(),
                    hashed_password: if self.rng.chance(50) {
                        HASH.into()
                    } else {
                        String::new()
                    },
                })
            }
            5 | 6 => r.auth_user_grant_role = Some(pb::AuthUserGrantRoleRequest { user, role }),
            7 => r.auth_user_revoke_role = Some(pb::AuthUserRevokeRoleRequest { name: user, role }),
            8 => r.auth_role_add = Some(pb::AuthRoleAddRequest { name: role }),
            9 | 10 => {
                r.auth_role_grant_permission = Some(pb::AuthRoleGrantPermissionRequest {
                    name: role,
                    perm: self.rng.chance(95).then(|| authpb::Permission {
                        perm_type: self.rng.below(4) as i32,
                        key: self.key(),
                        range_end: Bytes::from_static(self.rng.pick(ENDS)),
                    }),
                })
            }
            11 => {
                r.auth_role_revoke_permission = Some(pb::AuthRoleRevokePermissionRequest {
                    role,
                    key: self.key(),
                    range_end: Bytes::from_static(self.rng.pick(ENDS)),
                })
            }
            12 => r.auth_role_delete = Some(pb::AuthRoleDeleteRequest { role }),
            13 => r.auth_enable = Some(pb::AuthEnableRequest {}),
            14 => r.auth_disable = Some(pb::AuthDisableRequest {}),
            _ => {
                r.authenticate = Some(pb::InternalAuthenticateRequest {
                    name: user,
                    ..Default::default()
                })
            }
        }
        r
    }

    fn cluster(&mut self) -> Decoded {
        let id = 1 + self.rng.below(4);
        match self.rng.below(6) {
            0 | 1 => Decoded::ConfChange(ConfChange {
                change: raftpb::ConfChange {
                    id: 0,
                    r#type: self.rng.below(4) as i32,
                    node_id: id,
                    context: None,
                },
                context: Some(ConfContext {
                    id: Some(id),
                    peer_urls: vec![format!("http://p{}", self.rng.below(3))],
                    client_urls: vec![],
                    name: self.rng.chance(50).then(|| format!("n{id}")),
                    is_learner: self.rng.chance(30),
                    is_promote: self.rng.chance(20),
                }),
            }),
            2 => Decoded::V2(Box::new(pb::Request {
                method: "PUT".into(),
                path: format!("/0/members/{id:x}/attributes"),
                val: format!(r#"{{"name":"m{id}","clientURLs":["http://c{id}"]}}"#),
                ..Default::default()
            })),
            3 => Decoded::V2(Box::new(pb::Request {
                method: "PUT".into(),
                path: "/0/version".into(),
                val: format!("3.{}.0", self.rng.below(6)),
                ..Default::default()
            })),
            4 => Decoded::Internal(Box::new(Irr {
                cluster_version_set: Some(membershippb::ClusterVersionSetRequest {
                    ver: "3.5.0".into(),
                }),
                cluster_member_attr_set: self.rng.chance(50).then(|| {
                    membershippb::ClusterMemberAttrSetRequest {
                        member_id: id,
                        member_attributes: Some(membershippb::Attributes {
                            name: format!("x{id}"),
                            client_urls: vec!["http://x".into()],
                        }),
                    }
                }),
                ..Default::default()
            })),
            _ => Decoded::Internal(Box::new(Irr {
                downgrade_info_set: Some(membershippb::DowngradeInfoSetRequest {
                    enabled: self.rng.chance(50),
                    ver: "3.4.0".into(),
                }),
                ..Default::default()
            })),
        }
    }

    fn entry(&mut self, m: &Model) -> Decoded {
        let mut r = Irr::default();
        match self.rng.below(100) {
            0..=21 => r.put = Some(self.put()),
            22..=29 => r.delete_range = Some(self.del()),
            30..=43 => r.txn = Some(self.txn(m, 0)),
            44..=46 => {
                r.compaction = Some(pb::CompactionRequest {
                    revision: m.revision() - self.rng.below(8) as i64 + 1,
                    physical: false,
                })
            }
            47..=53 => {
                r.lease_grant = Some(pb::LeaseGrantRequest {
                    ttl: if self.rng.chance(5) {
                        10_000_000_000
                    } else {
                        self.rng.below(20) as i64
                    },
                    id: self.rng.pick(LEASES),
                })
            }
            54..=57 => {
                r.lease_revoke = Some(pb::LeaseRevokeRequest {
                    id: self.rng.pick(LEASES),
                })
            }
            58..=59 => {
                r.lease_checkpoint = Some(pb::LeaseCheckpointRequest {
                    checkpoints: (0..1 + self.rng.below(3))
                        .map(|_| pb::LeaseCheckpoint {
                            id: self.rng.pick(LEASES),
                            remaining_ttl: self.rng.below(30) as i64,
                        })
                        .collect(),
                })
            }
            60..=65 => {
                r.alarm = Some(pb::AlarmRequest {
                    action: self.rng.pick(&[0, 1, 2, 2, 2, 3]),
                    member_id: 1 + self.rng.below(2),
                    alarm: self.rng.pick(&[0, 1, 1, 2, 2, 5]),
                })
            }
            66..=84 => r = self.auth(),
            85..=91 => return self.cluster(),
            92..=94 => return Decoded::Empty,
            95 => {
                return Decoded::Unknown {
                    entry_type: 0,
                    raw: Bytes::from_static(b"\xff"),
                    reason: "garbage".into(),
                };
            }
            96 => {
                r.range = Some(pb::RangeRequest {
                    key: self.key(),
                    ..Default::default()
                })
            }
            97 => r.auth_status = Some(pb::AuthStatusRequest {}),
            98 => r.auth_user_list = Some(pb::AuthUserListRequest {}),
            _ => {}
        }
        if !self.rng.chance(25) {
            let cur = m.auth().revision;
            r.header = Some(RequestHeader {
                id: self.rng.next(),
                username: self
                    .rng
                    .pick(&["root", "root", "alice", "bob", "ghost", ""])
                    .into(),
                auth_revision: self
                    .rng
                    .pick(&[cur, cur, cur, cur.saturating_sub(1), 0, cur + 1]),
            });
        }
        Decoded::Internal(Box::new(r))
    }
}

fn configs() -> Vec<ModelConfig> {
    let mut out = Vec::new();
    for version in [EtcdMinor::V3_4, EtcdMinor::V3_5] {
        for (txn_range_view, min_lease_ttl) in
            [(TxnRangeView::Proposer, 2), (TxnRangeView::Follower, 5)]
        {
            out.push(ModelConfig {
                version,
                min_lease_ttl,
                txn_range_view,
            });
        }
    }
    out
}

/// A db-like seed (no extras, restart semantics): keys naming a missing
/// lease and a negative lease (dropped by 3.5), an active NOSPACE alarm,
/// auth with root.
fn seed_state() -> SnapshotState {
    let key = |k: &str, lease: i64| SnapshotKey {
        key: b(k),
        state: KeyState {
            value: b("seed").into(),
            create_revision: 3,
            mod_revision: 7,
            version: 2,
            lease,
        },
    };
    let mut auth = AuthState {
        revision: 4,
        ..Default::default()
    };
    auth.users.insert(
        "root".into(),
        User {
            password: Password::Hashed(HASH.into()),
            roles: vec!["root".into()],
            no_password: false,
        },
    );
    auth.roles.insert("ra".into(), Role::default());
    SnapshotState {
        keys: vec![
            key("a", 77),
            key("b", -4),
            key("c", 1),
            key("k", 0),
            key("q", 78),
            key("z", 77),
        ],
        revision: 9,
        compacted: 5,
        leases: vec![
            SnapshotLease {
                id: -4,
                ttl: 30,
                remaining_ttl: 0,
            },
            SnapshotLease {
                id: 1,
                ttl: 10,
                remaining_ttl: 4,
            },
        ],
        auth,
        alarms: vec![(AlarmKind::NoSpace, 1)],
        consistent_index: 20,
        term: 2,
        extras: None,
    }
}

// -------------------------------------------------- model round trips

#[test]
fn a_fresh_and_a_seeded_model_round_trip_exactly() {
    for cfg in configs() {
        let fresh = Model::with_config(cfg.clone());
        assert_same_state(&fresh, &save_load(&fresh), "fresh");
        let seeded = Model::from_snapshot_with_config(cfg.clone(), seed_state());
        let back = save_load(&seeded);
        assert_same_state(&seeded, &back, "seeded");
        // The restart semantics were applied once, on seeding.
        assert_eq!(
            back.applier_chain(),
            ApplierChain {
                auth: true,
                capped: true,
                corrupt: false
            }
        );
        assert_eq!(
            back.leases().contains_key(&-4),
            cfg.version == EtcdMinor::V3_4
        );
    }
}

#[test]
fn random_workloads_behave_identically_after_reloads() {
    let mut total = 0;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, cfg) in configs().into_iter().enumerate() {
        for start_kind in 0..3u64 {
            let start = match start_kind {
                0 => Model::with_config(cfg.clone()),
                1 => Model::from_snapshot_with_config(cfg.clone(), seed_state()),
                _ => Model::from_snapshot_with_config(
                    cfg.clone(),
                    SnapshotState {
                        alarms: vec![],
                        ..seed_state()
                    },
                ),
            };
            let mut w = Workload::new(i as u64 * 3 + start_kind + 1, 20, 2500);
            let (end, n, kinds) = drive(start, 37, |m| w.next(m));
            total += n;
            for (k, c) in kinds {
                *seen.entry(k).or_insert(0) += c;
            }
            // The workload reached the interesting states.
            assert!(end.revision() > 50, "{cfg:?}: revision {}", end.revision());
        }
    }
    assert_eq!(total, 12 * 2500);
    eprintln!("outcomes: {seen:#?}");
    for kind in [
        "Applied",
        "TxnElse",
        "NoChange",
        "ClusterOnly",
        "Empty",
        "AlreadyApplied",
        "Undecodable",
        "Unsupported",
        "Rejected(PermissionDenied)",
        "Rejected(AuthOldRevision)",
        "Rejected(NoSpace)",
        "Rejected(Corrupt)",
        "Rejected(LeaseNotFound)",
        "Rejected(KeyNotFound)",
        "Rejected(Compacted)",
        "Rejected(FutureRev)",
    ] {
        assert!(seen.contains_key(kind), "never saw {kind}: {seen:?}");
    }
}

/// The states the tricky rules depend on survive a reload: a runtime alarm
/// (auth bypassed), a key naming a lease granted after it was written (not
/// attached), cluster bookkeeping.
#[test]
fn runtime_only_state_survives_a_reload() {
    let cfg = ModelConfig::default();
    let mut m = Model::from_snapshot_with_config(
        cfg.clone(),
        SnapshotState {
            alarms: vec![],
            ..seed_state()
        },
    );
    let mut idx = 20;
    let mut apply = |m: &mut Model, r: Irr| {
        idx += 1;
        m.apply(idx, 3, &Decoded::Internal(Box::new(r)))
    };
    // Lease 77 is named by key "a" but did not exist: granting it does not attach "a".
    apply(
        &mut m,
        Irr {
            lease_grant: Some(pb::LeaseGrantRequest { ttl: 60, id: 77 }),
            ..Default::default()
        },
    );
    assert!(m.leases()[&77].keys.is_empty());
    // Runtime NOSPACE: the auth applier leaves the chain.
    apply(
        &mut m,
        Irr {
            alarm: Some(pb::AlarmRequest {
                action: 1,
                member_id: 9,
                alarm: 1,
            }),
            ..Default::default()
        },
    );
    assert!(!m.applier_chain().auth);
    m.apply(
        idx + 1,
        3,
        &Decoded::V2(Box::new(pb::Request {
            method: "PUT".into(),
            path: "/0/version".into(),
            val: "3.5.0".into(),
            ..Default::default()
        })),
    );
    let back = save_load(&m);
    assert_same_state(&m, &back, "reloaded");
    assert!(!back.applier_chain().auth);
    assert!(back.leases()[&77].keys.is_empty());
    assert_eq!(back.cluster().version.as_deref(), Some("3.5.0"));
    // A db-style restart would attach "a" and wrap the full chain; the
    // reloaded model does neither, so revoking 77 deletes nothing.
    let mut orig = m;
    let mut reloaded = back;
    let revoke = Decoded::Internal(Box::new(Irr {
        lease_revoke: Some(pb::LeaseRevokeRequest { id: 77 }),
        ..Default::default()
    }));
    let a = orig.apply(idx + 2, 3, &revoke);
    assert_eq!(reloaded.apply(idx + 2, 3, &revoke), a);
    assert!(
        a.effects
            .iter()
            .all(|e| !matches!(e, etcd_standby_model::Effect::Delete { .. }))
    );
    assert!(orig.get(b"a").is_some());
}

// ----------------------------------------------------- etcd fixtures

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

fn fixture_entries(version: &str) -> Vec<(u64, u64, Decoded)> {
    let wal = fixtures().join(version).join("data/member/wal");
    let log = etcd_standby_wal::read_log(&wal, 0).expect("read wal");
    log.entries
        .iter()
        .map(|e| (e.index, e.term, decode_entry(e)))
        .collect()
}

fn fixture_config(version: &str) -> ModelConfig {
    ModelConfig {
        version: if version.starts_with("etcd-3.4") {
            EtcdMinor::V3_4
        } else {
            EtcdMinor::V3_5
        },
        ..Default::default()
    }
}

#[test]
fn fixture_wals_behave_identically_after_reloads() {
    for version in ["etcd-3.4.23", "etcd-3.5.1"] {
        let entries = fixture_entries(version);
        assert!(entries.len() > 10, "{version}: {} entries", entries.len());
        let cfg = fixture_config(version);
        for k in [1, 2, 3, 7] {
            let mut it = entries.iter().cloned();
            let (end, n, _) = drive(Model::with_config(cfg.clone()), k, |_| it.next());
            assert_eq!(n, entries.len());
            assert!(end.revision() > 1, "{version}: nothing applied");
            assert!(!end.cluster().members.is_empty(), "{version}: no members");
        }
    }
}

#[test]
fn fixture_dbs_seed_persist_and_continue() {
    for version in ["etcd-3.4.23", "etcd-3.5.1"] {
        let db_path = fixtures().join(version).join("data/member/snap/db");
        let db = etcd_standby_bolt::BoltFile::open(&db_path).expect("open db");
        let state = etcd_standby_bolt::model_state(&db).expect("read db");
        assert!(state.extras.is_none());
        assert!(!state.keys.is_empty(), "{version}: no keys");
        // The db-shaped state itself round trips through the file, still
        // without extras (restart semantics on load).
        let back = decode(&encode(&state)).unwrap();
        assert_eq!(back, state, "{version}");
        let cfg = fixture_config(version);
        let seeded = Model::from_snapshot_with_config(cfg.clone(), state);
        let seeded_from_file = Model::from_snapshot_with_config(cfg.clone(), back);
        assert_same_state(&seeded, &seeded_from_file, version);
        // Then the log past the consistent index, with reloads.
        let entries = fixture_entries(version);
        let mut it = entries.into_iter();
        drive(seeded, 2, |_| it.next());
    }
}

// ------------------------------------------------------ file format

fn bytes_strategy(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn password_strategy() -> impl Strategy<Value = Password> {
    prop_oneof![
        Just(Password::None),
        bytes_strategy(12).prop_map(Password::Plain),
        ".{0,12}".prop_map(Password::Hashed),
    ]
}

/// Members by ID; each member's `id` is its key (the file stores it once).
fn members_strategy() -> impl Strategy<Value = BTreeMap<u64, Member>> {
    let member = (
        prop::collection::vec(".{0,8}", 0..3),
        ".{0,8}",
        prop::collection::vec(".{0,8}", 0..3),
        any::<bool>(),
    )
        .prop_map(|(peer_urls, name, client_urls, is_learner)| Member {
            id: 0,
            peer_urls,
            name,
            client_urls,
            is_learner,
        });
    prop::collection::btree_map(any::<u64>(), member, 0..3).prop_map(|members| {
        members
            .into_iter()
            .map(|(id, m)| (id, Member { id, ..m }))
            .collect()
    })
}

fn extras_strategy() -> impl Strategy<Value = ModelExtras> {
    (
        any::<(bool, bool, bool)>(),
        prop::collection::btree_map(
            any::<i64>(),
            prop::collection::btree_set(bytes_strategy(6), 1..4),
            0..4,
        ),
        members_strategy(),
        prop::collection::btree_set(any::<u64>(), 0..3),
        prop::option::of(".{0,8}"),
        prop::option::of((".{0,8}", any::<bool>())),
        any::<u64>(),
    )
        .prop_map(
            |((auth, capped, corrupt), lease_keys, members, removed, version, downgrade, v2)| {
                ModelExtras {
                    chain: ApplierChain {
                        auth,
                        capped,
                        corrupt,
                    },
                    lease_keys,
                    cluster: ClusterState {
                        members,
                        removed,
                        version,
                        downgrade,
                        v2_requests: v2,
                    },
                }
            },
        )
}

fn auth_strategy() -> impl Strategy<Value = AuthState> {
    let user = (
        password_strategy(),
        prop::collection::vec(".{0,6}", 0..3),
        any::<bool>(),
    )
        .prop_map(|(password, roles, no_password)| User {
            password,
            roles,
            no_password,
        });
    let perm =
        (any::<i32>(), bytes_strategy(6), bytes_strategy(6)).prop_map(|(t, key, end)| Permission {
            perm_type: PermType::from_i32(t),
            key,
            range_end: end,
        });
    let role = prop::collection::vec(perm, 0..4).prop_map(|perms| Role { perms });
    (
        any::<bool>(),
        any::<u64>(),
        prop::collection::btree_map(".{0,6}", user, 0..4),
        prop::collection::btree_map(".{0,6}", role, 0..4),
    )
        .prop_map(|(enabled, revision, users, roles)| AuthState {
            enabled,
            revision,
            users,
            roles,
        })
}

fn state_strategy() -> impl Strategy<Value = SnapshotState> {
    // Values in hand (any length) and held by reference (version 2's KEY_REF).
    let value = prop_oneof![
        bytes_strategy(40).prop_map(Value::Inline),
        (17u32..100_000, any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(len, digest, prefix)| {
            Value::Stored(StoredValue {
                len,
                digest,
                prefix,
            })
        }),
    ];
    let key = (bytes_strategy(10), value, any::<(i64, i64, i64, i64)>()).prop_map(
        |(key, value, (c, m, v, l))| SnapshotKey {
            key,
            state: KeyState {
                value,
                create_revision: c,
                mod_revision: m,
                version: v,
                lease: l,
            },
        },
    );
    let lease = any::<(i64, i64, i64)>().prop_map(|(id, ttl, remaining_ttl)| SnapshotLease {
        id,
        ttl,
        remaining_ttl,
    });
    (
        prop::collection::vec(key, 0..8),
        any::<(i64, i64, u64, u64)>(),
        prop::collection::vec(lease, 0..4),
        auth_strategy(),
        prop::collection::vec((any::<i32>(), any::<u64>()), 0..3),
        prop::option::of(extras_strategy()),
    )
        .prop_map(
            |(keys, (revision, compacted, ci, term), leases, auth, alarms, extras)| SnapshotState {
                keys,
                revision,
                compacted,
                leases,
                auth,
                alarms: alarms
                    .into_iter()
                    .map(|(a, m)| (AlarmKind::from_i32(a), m))
                    .collect(),
                consistent_index: ci,
                term,
                extras,
            },
        )
}

/// A small file with every record kind.
fn small_state() -> SnapshotState {
    let mut m = Model::from_snapshot_with_config(ModelConfig::default(), seed_state());
    let mut w = Workload::new(42, 20, 300);
    while let Some((i, t, e)) = w.next(&m) {
        m.apply(i, t, &e);
    }
    let mut s = m.to_snapshot_state();
    let x = s.extras.as_mut().unwrap();
    x.cluster.removed.insert(9);
    x.cluster
        .members
        .entry(3)
        .or_insert_with(|| Member {
            id: 3,
            ..Member::default()
        })
        .name = "m3".into();
    x.lease_keys.entry(1).or_default().insert(b("a"));
    s.alarms.push((AlarmKind::Corrupt, 2));
    s.auth.users.insert(
        "plain".into(),
        User {
            password: Password::Plain(b("secret")),
            roles: vec!["ra".into()],
            no_password: false,
        },
    );
    s
}

#[test]
fn the_small_file_has_every_record_kind() {
    let bytes = encode(&small_state());
    let n = bytes.len();
    let counts: Vec<u64> = bytes[n - 4 - 64..n - 4]
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(counts.iter().all(|&c| c > 0), "counts {counts:?}");
    assert!(n < 8192, "small file is {n} bytes");
}

#[test]
fn every_truncation_is_a_typed_error_at_its_offset() {
    let bytes = encode(&small_state());
    for len in 0..bytes.len() {
        match decode(&bytes[..len]) {
            Err(ModelIoError::Truncated { offset, .. }) => {
                assert_eq!(offset, len as u64, "truncated to {len}")
            }
            other => panic!("truncated to {len}: {other:?}"),
        }
    }
    assert_eq!(decode(&bytes).unwrap(), small_state());
}

#[test]
fn every_single_byte_change_is_detected() {
    let bytes = encode(&small_state());
    for pos in 0..bytes.len() {
        for x in [0x01u8, 0x80, 0xFF] {
            let mut b = bytes.clone();
            b[pos] ^= x;
            let e = decode(&b).expect_err(&format!("byte {pos} ^ {x:#x} went unnoticed"));
            assert!(e.offset() <= bytes.len() as u64, "{e}");
        }
    }
}

#[test]
fn a_huge_record_length_in_a_short_file_is_truncation() {
    let mut b = encode(&SnapshotState::default());
    // The meta record's length field.
    b[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode(&b), Err(ModelIoError::Truncated { .. })));
}

#[test]
fn records_out_of_place_are_malformed() {
    // A model-only record in a file without extras.
    let s = SnapshotState::default();
    let mut b = encode(&s);
    let n = b.len();
    let trailer_at = n - 4 - 64 - 5;
    let mut forged = b[..trailer_at].to_vec();
    forged.extend_from_slice(&[9, 8, 0, 0, 0]);
    forged.extend_from_slice(&5u64.to_le_bytes());
    forged.extend_from_slice(&b[trailer_at..n - 4]);
    let crc = crc32c::crc32c(&forged);
    forged.extend_from_slice(&crc.to_le_bytes());
    match decode(&forged) {
        Err(ModelIoError::Malformed { offset, record, .. }) => {
            assert_eq!((offset, record), (trailer_at as u64, "removed member"))
        }
        other => panic!("{other:?}"),
    }
    // A first record that is not meta.
    b[12] = 2;
    assert!(matches!(
        decode(&b),
        Err(ModelIoError::Malformed { offset: 12, .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_states_round_trip(s in state_strategy()) {
        let bytes = encode(&s);
        prop_assert_eq!(decode(&bytes).unwrap(), s);
    }

    #[test]
    fn random_corruption_is_an_error_never_a_panic(
        s in state_strategy(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..4),
    ) {
        let mut bytes = encode(&s);
        let orig = bytes.clone();
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        if bytes != orig {
            prop_assert!(decode(&bytes).is_err());
        }
    }

    #[test]
    fn arbitrary_input_never_panics(tail in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut b = b"ESBMODEL\x01\0\0\0".to_vec();
        b.extend_from_slice(&tail);
        let _ = decode(&b);
        let _ = decode(&tail);
    }

    #[test]
    fn random_workloads_survive_reloads_at_any_interval(
        seed in any::<u64>(),
        k in 1usize..40,
        cfg in 0usize..4,
    ) {
        let cfg = configs()[cfg].clone();
        let mut w = Workload::new(seed, 0, 300);
        drive(Model::with_config(cfg), k, |m| w.next(m));
    }
}

#[test]
fn debug_output_hides_passwords() {
    let s = small_state();
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("secret"));
    assert!(!dbg.contains(HASH));
}
