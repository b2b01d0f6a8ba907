//! Auth mirroring and snapshot reconcile against real etcd standbys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use etcd_standby_client::{Client, ClientConfig, EtcdError, hashed_password_field, pb, prefix_end};
use etcd_standby_model::{
    AuthState, Effect, KeyState, MemValues, Password, PermType, Permission, Role, SnapshotKey,
    SnapshotLease, SnapshotState, User, Value,
};
use etcd_standby_sink::{KeyMap, ReconcileOptions, Sink, SinkError};
use etcd_standby_testkit::EtcdVersion;

/// A bcrypt hash (cost 10) of [`ALICE_PASSWORD`] (libxcrypt `crypt()`).
const ALICE_HASH: &str = "$2b$10$abcdefghijklmnopqrstuuEbloE03PUB1vMLOX94VQ/kTtzBJpngK";
const ALICE_PASSWORD: &str = "s3cret-alice";
const REPL_USER: &str = "etcd-standby";
const REPL_PASSWORD: &str = "repl-pw";

both_versions!(auth_mirror);

fn s(x: &str) -> String {
    x.to_owned()
}

fn alice_password(version: EtcdVersion) -> Password {
    match version {
        EtcdVersion::V3_5 => Password::Hashed(hashed_password_field(ALICE_HASH)),
        _ => Password::Plain(Bytes::from_static(ALICE_PASSWORD.as_bytes())),
    }
}

fn auth_batch(version: EtcdVersion) -> Batch {
    vec![
        (5, 2, vec![Effect::RoleAdd { name: s("reader") }]),
        (
            6,
            2,
            vec![Effect::RoleGrantPermission {
                role: s("reader"),
                perm: Permission {
                    perm_type: PermType::Read,
                    key: Bytes::from_static(b"pub/"),
                    range_end: Bytes::from(prefix_end(b"pub/")),
                },
            }],
        ),
        (
            7,
            2,
            vec![Effect::UserAdd {
                name: s("root"),
                password: Password::Plain(Bytes::from_static(b"rootpw")),
                no_password: false,
            }],
        ),
        (
            8,
            2,
            vec![Effect::UserGrantRole {
                user: s("root"),
                role: s("root"),
            }],
        ),
        (
            9,
            2,
            vec![Effect::UserAdd {
                name: s("alice"),
                password: alice_password(version),
                no_password: false,
            }],
        ),
        (
            10,
            2,
            vec![Effect::UserGrantRole {
                user: s("alice"),
                role: s("reader"),
            }],
        ),
        (
            11,
            2,
            vec![Effect::UserAdd {
                name: s("nopw"),
                password: Password::None,
                no_password: true,
            }],
        ),
        (12, 2, vec![Effect::AuthEnable]),
        (13, 2, vec![put("pub/x", "1")]),
    ]
}

fn repl_config(cluster: &etcd_standby_testkit::EtcdCluster) -> etcd_standby_sink::SinkConfig {
    let mut cfg = config(cluster, KeyMap::new());
    cfg.client.user = Some((s(REPL_USER), s(REPL_PASSWORD)));
    cfg
}

async fn auth_mirror(version: EtcdVersion) {
    let cluster = start(version);
    let mut sink = Sink::connect(repl_config(&cluster)).await.unwrap();
    let batch = auth_batch(version);
    sink.apply(&batch).await.unwrap();
    let c = sink.client().clone();
    // Auth is on, and the replicator still writes (entry 13 after 12).
    let anon = client(&cluster).await;
    let err = anon.user_list().await.unwrap_err();
    assert_eq!(err.etcd_error(), Some(EtcdError::UserEmpty), "{err}");
    assert!(get(&c, "pub/x").await.is_some());
    // The replicator's own user was created with root before enabling.
    assert_eq!(c.user_get(REPL_USER).await.unwrap().roles, ["root"]);
    // alice logs in with the plaintext (3.5: the hash was stored as is).
    c.authenticate("alice", ALICE_PASSWORD).await.unwrap();
    let mut cfg = ClientConfig::new(cluster.client_urls());
    cfg.user = Some((s("alice"), s(ALICE_PASSWORD)));
    let alice = Client::connect(cfg).await.unwrap();
    assert!(get(&alice, "pub/x").await.is_some());
    let err = alice
        .put(pb::PutRequest {
            key: "pub/x".into(),
            value: "no".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.is_permission_denied(), "{err}");

    // Simulate a crash after the auth RPCs but before the checkpoint: put
    // the checkpoint back and replay the same batch.
    c.put(pb::PutRequest {
        key: sink.checkpoint_key().clone(),
        value: format!(r#"{{"cluster_id":"{CLUSTER_ID:016x}","index":4,"term":2}}"#).into(),
        ..Default::default()
    })
    .await
    .unwrap();
    drop(sink);
    let mut sink = Sink::connect(repl_config(&cluster)).await.unwrap();
    assert_eq!(sink.checkpoint().unwrap().index, 4);
    sink.apply(&batch).await.unwrap();
    assert!(sink.stats().auth_tolerated >= 4, "{:?}", sink.stats());
    let mut users = c.user_list().await.unwrap().users;
    users.sort();
    assert_eq!(users, ["alice", REPL_USER, "nopw", "root"]);
    assert_eq!(c.role_get("reader").await.unwrap().perm.len(), 1);
    assert_eq!(c.user_get("alice").await.unwrap().roles, ["reader"]);
    c.authenticate("alice", ALICE_PASSWORD).await.unwrap();
    c.authenticate("root", "rootpw").await.unwrap();

    // Changes to the replicator's own user are refused.
    let err = sink
        .apply(&[(14, 2, vec![Effect::UserDelete { name: s(REPL_USER) }])])
        .await
        .unwrap_err();
    assert!(
        matches!(err, SinkError::SelfLockout { index: 14, .. }),
        "{err}"
    );

    // Revokes and deletes, then auth disable.
    sink.apply(&[
        (
            14,
            2,
            vec![Effect::UserRevokeRole {
                user: s("alice"),
                role: s("reader"),
            }],
        ),
        (
            15,
            2,
            vec![Effect::RoleRevokePermission {
                role: s("reader"),
                key: Bytes::from_static(b"pub/"),
                range_end: Bytes::from(prefix_end(b"pub/")),
            }],
        ),
        (16, 2, vec![Effect::UserDelete { name: s("nopw") }]),
        (17, 2, vec![Effect::AuthDisable]),
    ])
    .await
    .unwrap();
    assert!(anon.user_list().await.is_ok());
    assert!(c.user_get("alice").await.unwrap().roles.is_empty());
    assert!(c.role_get("reader").await.unwrap().perm.is_empty());

    // A 3.5 hash cannot be stored by a 3.4 standby.
    if version == EtcdVersion::V3_4 {
        let err = sink
            .apply(&[(
                18,
                2,
                vec![Effect::UserAdd {
                    name: s("bob"),
                    password: Password::Hashed(hashed_password_field(ALICE_HASH)),
                    no_password: false,
                }],
            )])
            .await
            .unwrap_err();
        assert!(
            matches!(err, SinkError::HashUnsupported { index: 18, .. }),
            "{err}"
        );
    }
}

fn key(k: &str, v: &str, lease: i64) -> SnapshotKey {
    key_v(k, Bytes::copy_from_slice(v.as_bytes()).into(), lease)
}

fn key_v(k: &str, value: Value, lease: i64) -> SnapshotKey {
    SnapshotKey {
        key: Bytes::copy_from_slice(k.as_bytes()),
        state: KeyState {
            value,
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            lease,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_v3_5() {
    let cluster = start(EtcdVersion::V3_5);
    let c = client(&cluster).await;
    // Replicate r/ only; a key outside it must survive.
    cluster.etcdctl().run(&["put", "x/other", "keep"]).unwrap();
    let mut cfg = config(&cluster, KeyMap::new().include("r/"));
    cfg.max_txn_ops = 4; // several reconcile txns
    let mut sink = Sink::connect(cfg).await.unwrap();
    let mut batch: Batch = (0..10u64)
        .map(|i| (i + 1, 2, vec![put(&format!("r/{i}"), "old")]))
        .collect();
    batch.push((11, 2, vec![Effect::LeaseGrant { id: 0x77, ttl: 60 }]));
    batch.push((12, 2, vec![put_lease("r/l", "l", 0x77)]));
    let big = "B".repeat(100);
    batch.push((13, 2, vec![put("r/big", &big)]));
    sink.apply(&batch).await.unwrap();
    assert_eq!(count_prefix(&c, "r/").await, 12);
    // Long values held by reference: compared by digest, the bytes read
    // from the store only for the key that must be written.
    let values = MemValues::default();
    let same_big = Value::intern(Bytes::from(big.clone()), &values);
    let new_big = Value::intern(Bytes::from("N".repeat(200)), &values);

    let mut auth = AuthState::default();
    auth.roles.insert(
        s("reader"),
        Role {
            perms: vec![Permission {
                perm_type: PermType::Read,
                key: Bytes::from_static(b"r/"),
                range_end: Bytes::from(prefix_end(b"r/")),
            }],
        },
    );
    auth.users.insert(
        s("alice"),
        User {
            password: Password::Hashed(hashed_password_field(ALICE_HASH)),
            roles: vec![s("reader")],
            no_password: false,
        },
    );
    let target = SnapshotState {
        keys: vec![
            key("r/0", "old", 0),
            key("r/1", "new", 0),
            key("r/l", "l", 0x88),
            key_v("r/big", same_big, 0),
            key_v("r/long", new_big, 0),
            key("r/new", "n", 0),
            key("x/not-replicated", "z", 0),
        ],
        revision: 50,
        compacted: -1,
        leases: vec![SnapshotLease {
            id: 0x88,
            ttl: 30,
            remaining_ttl: 0,
        }],
        auth,
        alarms: vec![],
        consistent_index: 500,
        term: 3,
        extras: None,
    };
    // 8 of 12 keys would go: the guard pauses, nothing written.
    let err = sink
        .reconcile(&target, &values, 500, 3, ReconcileOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SinkError::MassDelete {
                would_delete: 8,
                total: 12
            }
        ),
        "{err}"
    );
    assert_eq!(count_prefix(&c, "r/").await, 12);
    assert_eq!(sink.checkpoint().unwrap().index, 13);

    let rep = sink
        .reconcile(
            &target,
            &values,
            500,
            3,
            ReconcileOptions {
                accept_mass_delete: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((rep.deleted, rep.put, rep.unchanged), (8, 4, 2), "{rep:?}");
    assert_eq!((rep.leases_granted, rep.leases_revoked), (1, 1), "{rep:?}");
    assert!(rep.txns >= 3, "{rep:?}");
    assert_eq!(
        keys_prefix(&c, "r/").await,
        ["r/0", "r/1", "r/big", "r/l", "r/long", "r/new"]
    );
    assert_eq!(get(&c, "r/long").await.unwrap().value, "N".repeat(200));
    assert_eq!(&get(&c, "r/1").await.unwrap().value[..], b"new");
    assert_eq!(get(&c, "r/l").await.unwrap().lease, 0x88);
    assert!(get(&c, "x/other").await.is_some());
    assert!(get(&c, "x/not-replicated").await.is_none());
    assert_eq!(c.lease_time_to_live(0x77, false).await.unwrap().ttl, -1);
    assert!(get(&c, "__etcd_standby__/epoch").await.is_some());
    c.authenticate("alice", ALICE_PASSWORD).await.ok(); // auth is off: refused as not enabled
    assert_eq!(c.user_get("alice").await.unwrap().roles, ["reader"]);
    assert_eq!(c.role_get("reader").await.unwrap().perm.len(), 1);
    assert_eq!(sink.checkpoint().unwrap().index, 500);
    drop(sink);
    let sink = Sink::connect(config(&cluster, KeyMap::new().include("r/")))
        .await
        .unwrap();
    let cp = sink.checkpoint().unwrap();
    assert_eq!((cp.index, cp.term), (500, 3));
    assert!(sink.lease_keeper().is_tracked(0x88));
}
