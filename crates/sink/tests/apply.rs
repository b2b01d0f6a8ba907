//! Batching, checkpoint, fencing, leases and the lease keeper against real
//! etcd 3.4.23 and 3.5.1 standbys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use etcd_standby_model::Effect;
use etcd_standby_sink::{KeyMap, Sink, SinkError};
use etcd_standby_testkit::EtcdVersion;

both_versions!(batching_checkpoint_fencing);
both_versions!(leases);
both_versions!(pipelined_txns_land_in_order_and_exactly_once);

async fn batching_checkpoint_fencing(version: EtcdVersion) {
    let cluster = start(version);
    let c = client(&cluster).await;
    let mut s = sink(&cluster).await;
    assert_eq!(s.checkpoint(), None);
    assert_eq!(s.epoch(), 1);

    // 300 single-put entries: at least 3 txns (128 ops incl. the checkpoint).
    let batch: Batch = (1..=300u64)
        .map(|i| (i, 2, vec![put(&format!("k/{i:03}"), &i.to_string())]))
        .collect();
    let st = s.apply(&batch).await.unwrap();
    assert!(st.txns >= 3, "{st:?}");
    assert_eq!(st.entries, 300);
    assert_eq!(count_prefix(&c, "k/").await, 300);
    // Every txn put the checkpoint.
    assert_eq!(checkpoint_version(&c, &s).await, st.txns as i64);
    assert_eq!(s.checkpoint().unwrap().index, 300);

    // Whole entries are never split: three 100-put entries = three txns.
    let batch: Batch = (301..=303u64)
        .map(|i| {
            (
                i,
                2,
                (0..100)
                    .map(|j| put(&format!("w/{i}/{j:03}"), "v"))
                    .collect(),
            )
        })
        .collect();
    let before = checkpoint_version(&c, &s).await;
    let st = s.apply(&batch).await.unwrap();
    assert_eq!(st.txns, 3, "{st:?}");
    assert_eq!(checkpoint_version(&c, &s).await, before + 3);
    assert_eq!(count_prefix(&c, "w/").await, 300);

    // One entry larger than max-txn-ops stays atomic (nested txns).
    let big: Vec<Effect> = (0..200).map(|j| put(&format!("big/{j:03}"), "v")).collect();
    let st = s.apply(&[(304, 2, big)]).await.unwrap();
    assert_eq!(st.txns, 1);
    assert_eq!(count_prefix(&c, "big/").await, 200);

    // The same key in several entries of one batch: the final state wins.
    let batch: Batch = vec![
        (305, 2, vec![put("d", "1")]),
        (306, 2, vec![put("d", "2")]),
        (307, 3, vec![del("d")]),
        (308, 3, vec![put("d", "3"), put("e", "1")]),
        (309, 3, vec![del("e")]),
        (310, 3, vec![]),
        (311, 3, vec![]),
    ];
    let st = s.apply(&batch).await.unwrap();
    assert_eq!(st.txns, 1, "{st:?}");
    assert_eq!(&get(&c, "d").await.unwrap().value[..], b"3");
    assert!(get(&c, "e").await.is_none());
    let cp = s.checkpoint().unwrap();
    assert_eq!((cp.index, cp.term), (311, 3));

    // Entries without effects still advance the checkpoint.
    let st = s
        .apply(&[(312, 3, vec![]), (313, 4, vec![])])
        .await
        .unwrap();
    assert_eq!((st.txns, st.ops), (1, 0));
    assert_eq!(s.checkpoint().unwrap().index, 313);

    // Re-delivered entries are skipped; out-of-order ones refused.
    let st = s.apply(&batch).await.unwrap();
    assert_eq!((st.already_applied, st.txns), (7, 0));
    let err = s
        .apply(&[(315, 4, vec![]), (314, 4, vec![])])
        .await
        .unwrap_err();
    assert!(
        matches!(err, SinkError::OutOfOrder { index: 314, .. }),
        "{err}"
    );

    // A write the standby refuses: a clear error with the raft index.
    let huge = "x".repeat(3 * 1024 * 1024);
    let err = s
        .apply(&[(314, 4, vec![put("huge", &huge)])])
        .await
        .unwrap_err();
    assert!(
        matches!(err, SinkError::Refused { first: 314, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("314"), "{err}");
    assert_eq!(s.checkpoint().unwrap().index, 313);

    // Resume from the standby's checkpoint after reconnecting.
    drop(s);
    let mut s = sink(&cluster).await;
    let cp = s.checkpoint().unwrap();
    assert_eq!((cp.cluster_id, cp.index, cp.term), (CLUSTER_ID, 313, 4));
    s.apply(&[(314, 4, vec![put("after", "1")])]).await.unwrap();

    // Fencing: a promotion bumps the epoch; the next write is refused.
    cluster
        .etcdctl()
        .run(&["put", "__etcd_standby__/epoch", "2"])
        .unwrap();
    let err = s
        .apply(&[(315, 4, vec![put("fenced", "1")])])
        .await
        .unwrap_err();
    match &err {
        SinkError::Fenced {
            index, ours, found, ..
        } => {
            assert_eq!((*index, *ours, found.as_str()), (315, 1, "2"));
        }
        other => panic!("expected Fenced, got {other}"),
    }
    assert!(get(&c, "fenced").await.is_none());
    assert_eq!(s.checkpoint().unwrap().index, 314);
    let s2 = sink(&cluster).await;
    assert_eq!(s2.epoch(), 2);
}

/// Many small txns in flight at once: each compares the checkpoint the one
/// before it writes, so they land in index order and none twice, and a
/// second writer of the same source (or a checkpoint gone back) is caught by
/// that compare instead of applying an entry twice.
async fn pipelined_txns_land_in_order_and_exactly_once(version: EtcdVersion) {
    let cluster = start(version);
    let c = client(&cluster).await;
    let mut cfg = config(&cluster, KeyMap::new());
    cfg.max_txns_in_flight = 8;
    cfg.max_txn_ops = 4; // one entry (two puts and the checkpoint) per txn
    let mut s = Sink::connect(cfg.clone()).await.unwrap();

    // 600 entries: five keys overwritten in turn, and one key per entry.
    let batch: Batch = (1..=600u64)
        .map(|i| {
            (
                i,
                2,
                vec![
                    put(&format!("seq/{}", i % 5), &i.to_string()),
                    put(&format!("own/{i:04}"), &i.to_string()),
                ],
            )
        })
        .collect();
    let st = s.apply(&batch).await.unwrap();
    assert_eq!(st.entries, 600);
    assert_eq!(st.txns, 600, "{st:?}");
    // One checkpoint put per txn that landed: nothing was applied twice.
    assert_eq!(checkpoint_version(&c, &s).await, st.txns as i64);
    assert_eq!(s.checkpoint().unwrap().index, 600);
    for k in 0..5u64 {
        let last = (596..=600).find(|i| i % 5 == k).unwrap();
        let kv = get(&c, &format!("seq/{k}")).await.unwrap();
        assert_eq!(kv.value, last.to_string().as_bytes(), "seq/{k}");
        // 120 writes each, every one landed once.
        assert_eq!(kv.version, 120, "seq/{k}");
    }
    // In index order: the standby's revisions follow the raft indexes.
    let mut prev = 0;
    for i in 1..=600u64 {
        let kv = get(&c, &format!("own/{i:04}")).await.unwrap();
        assert!(
            kv.mod_revision > prev,
            "own/{i:04} landed before an earlier entry"
        );
        prev = kv.mod_revision;
    }

    // A second replicator of this source on this standby. Its copy of
    // entry 601 finds 601's checkpoint there: the entry landed (written by
    // the other), so it is confirmed and not written twice.
    let mut other = Sink::connect(cfg.clone()).await.unwrap();
    s.apply(&[(601, 2, vec![put("race", "a")])]).await.unwrap();
    other
        .apply(&[(601, 2, vec![put("race", "a")])])
        .await
        .unwrap();
    assert_eq!(other.checkpoint().unwrap().index, 601);
    assert_eq!(get(&c, "race").await.unwrap().version, 1);
    // The checkpoint moved on past its next entry: refused, retryable.
    s.apply(&[
        (602, 2, vec![put("race", "b")]),
        (603, 2, vec![put("race", "c")]),
    ])
    .await
    .unwrap();
    let err = other
        .apply(&[(602, 2, vec![put("race", "b")])])
        .await
        .unwrap_err();
    assert_checkpoint_moved(&err, true);
    // Re-reading the checkpoint, it skips what is applied and goes on.
    other.resync().await.unwrap();
    let st = other
        .apply(&[
            (602, 2, vec![put("race", "b")]),
            (603, 2, vec![put("race", "c")]),
            (604, 2, vec![put("race", "d")]),
        ])
        .await
        .unwrap();
    assert_eq!((st.already_applied, st.entries), (2, 1));
    let race = get(&c, "race").await.unwrap();
    // 601, 602+603 (one txn: one put of the final value), 604.
    assert_eq!((&race.value[..], race.version), (&b"d"[..], 3));

    // The checkpoint gone (the standby restored from a backup, or someone
    // deleted it): re-reading it does not adopt it (entries would be
    // skipped), and the next write stops, not retried.
    s.resync().await.unwrap(); // it moved on to 604: adopted
    let key = String::from_utf8(s.checkpoint_key().to_vec()).unwrap();
    cluster.etcdctl().run(&["del", &key]).unwrap();
    assert_checkpoint_moved(&s.resync().await.unwrap_err(), false);
    assert_eq!(s.checkpoint().unwrap().index, 604);
    let err = s
        .apply(&[(605, 2, vec![put("gone", "1")])])
        .await
        .unwrap_err();
    assert_checkpoint_moved(&err, false);
    assert!(get(&c, "gone").await.is_none());
}

/// `err` is [`SinkError::CheckpointMoved`], retryable exactly when the
/// checkpoint moved on (`ahead`).
fn assert_checkpoint_moved(err: &SinkError, ahead: bool) {
    assert!(
        matches!(err, SinkError::CheckpointMoved { ahead: a, .. } if *a == ahead),
        "{err}"
    );
    assert_eq!(err.is_retryable(), ahead, "{err}");
}

async fn leases(version: EtcdVersion) {
    let cluster = start(version);
    let c = client(&cluster).await;
    let mut s = sink(&cluster).await;
    let id = 0x1234_i64;
    // Grant and attach in one batch: the grant precedes the txn.
    let st = s
        .apply(&[
            (10, 2, vec![Effect::LeaseGrant { id, ttl: 5 }]),
            (11, 2, vec![put_lease("l/a", "1", id)]),
            (12, 2, vec![put_lease("l/b", "2", id), put("plain", "p")]),
        ])
        .await
        .unwrap();
    assert_eq!((st.txns, st.lease_grants), (1, 1));
    let t = c.lease_time_to_live(id, true).await.unwrap();
    assert_eq!(t.granted_ttl, 5);
    assert_eq!(t.keys.len(), 2);
    assert_eq!(get(&c, "l/a").await.unwrap().lease, id);

    // Revoke, then re-grant the same ID within one batch.
    let other = 0x99_i64;
    s.apply(&[
        (13, 2, vec![Effect::LeaseGrant { id: other, ttl: 30 }]),
        (14, 2, vec![put_lease("o/1", "x", other)]),
        (15, 2, vec![del("o/1"), Effect::LeaseRevoke { id: other }]),
        (16, 2, vec![Effect::LeaseGrant { id: other, ttl: 30 }]),
        (17, 2, vec![put_lease("o/2", "y", other)]),
    ])
    .await
    .unwrap();
    assert!(get(&c, "o/1").await.is_none());
    assert_eq!(get(&c, "o/2").await.unwrap().lease, other);
    assert!(c.lease_time_to_live(other, false).await.unwrap().ttl > 0);

    // Granting an existing lease again is fine (replay after a crash).
    s.apply(&[(18, 2, vec![Effect::LeaseGrant { id: other, ttl: 30 }])])
        .await
        .unwrap();

    // The keeper holds the 5 s lease for 12 s.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let t = c.lease_time_to_live(id, false).await.unwrap();
    assert!(t.ttl > 0, "lease expired: {t:?}");
    let stats = s.stats();
    assert!(stats.keepalive_ok >= 3, "{stats:?}");
    assert_eq!(stats.leases_mirrored, 2);
    assert_eq!(stats.keepalive_failures, 0, "{stats:?}");

    // Revoked after the txn deleting its keys.
    let st = s
        .apply(&[(
            19,
            3,
            vec![del("l/a"), del("l/b"), Effect::LeaseRevoke { id }],
        )])
        .await
        .unwrap();
    assert_eq!(st.lease_revokes, 1);
    assert_eq!(c.lease_time_to_live(id, false).await.unwrap().ttl, -1);
    assert_eq!(count_prefix(&c, "l/").await, 0);
    assert!(!s.lease_keeper().is_tracked(id));

    // A new sink adopts the standby's leases.
    drop(s);
    let s = sink(&cluster).await;
    assert_eq!(s.lease_keeper().leases(), vec![other]);
    let _: &Sink = &s;
}
