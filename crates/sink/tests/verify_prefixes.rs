//! End to end on real etcd: a primary's own WAL through the model into the
//! sink with include / exclude / dest prefixes, then `verify` finding no
//! difference, then every kind of difference.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use etcd_standby_client::{Client, ClientConfig};
use etcd_standby_decode::decode_entry;
use etcd_standby_model::{EtcdMinor, Model, ModelConfig, TxnRangeView};
use etcd_standby_sink::verify::{DifferenceKind, verify};
use etcd_standby_sink::{KeyMap, Sink};
use etcd_standby_testkit::{EtcdCluster, EtcdVersion};

both_versions!(prefixes_and_verify);

/// Every committed entry of member 0's WAL through the model.
fn effects_from_wal(cluster: &EtcdCluster, version: EtcdVersion) -> Batch {
    let wal = cluster.data_dir(0).unwrap().join("member/wal");
    let log = etcd_standby_wal::read_log(&wal, 0).expect("read wal");
    let commit = log.hard_state.map(|h| h.commit).unwrap_or(u64::MAX);
    let mut m = Model::with_config(ModelConfig {
        version: if version == EtcdVersion::V3_4 {
            EtcdMinor::V3_4
        } else {
            EtcdMinor::V3_5
        },
        min_lease_ttl: ModelConfig::min_lease_ttl_for(50, 500),
        txn_range_view: TxnRangeView::Proposer,
    });
    let mut out = Vec::new();
    for e in log.entries.iter().filter(|e| e.index <= commit) {
        let a = m.apply(e.index, e.term, &decode_entry(e));
        assert!(!a.outcome.is_halt(), "entry {}: {:?}", e.index, a.outcome);
        out.push((e.index, e.term, a.effects));
    }
    out
}

async fn prefixes_and_verify(version: EtcdVersion) {
    let primary = start(version);
    let standby = start(version);
    let p = primary.etcdctl();
    let run = |ctl: &etcd_standby_testkit::Etcdctl, args: &[&str]| {
        ctl.run(args).unwrap();
    };
    for (k, v) in [
        ("app/a", "1"),
        ("app/b", "2"),
        ("app/tmp/x", "3"),
        ("other/c", "4"),
        ("app/d", "5"),
        ("app/tmp/y", "6"),
    ] {
        run(&p, &["put", k, v]);
    }
    run(&p, &["del", "app/d"]);
    run(&p, &["del", "app/tmp/y"]);
    let lease = p.lease_grant(60).unwrap();
    run(
        &p,
        &["put", &format!("--lease={lease:x}"), "app/l", "leased"],
    );
    run(&p, &["role", "add", "reader"]);
    run(
        &p,
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "app/",
            "--prefix=true",
        ],
    );
    run(&p, &["user", "add", "bob:bobpw", "--interactive=false"]);
    run(&p, &["user", "grant-role", "bob", "reader"]);
    run(&p, &["put", "app/b", "22"]);
    // Trailing writes so every entry above is committed in the WAL.
    for i in 0..3 {
        run(&p, &["put", "zz/end", &i.to_string()]);
    }

    let keys = KeyMap::new()
        .include("app/")
        .exclude("app/tmp/")
        .dest_prefix("dr/");
    let batch = effects_from_wal(&primary, version);
    let mut sink = Sink::connect(config(&standby, keys.clone())).await.unwrap();
    sink.apply(&batch).await.unwrap();

    let src = client(&primary).await;
    let dst = client(&standby).await;
    assert_eq!(
        keys_prefix(&dst, "dr/").await,
        ["dr/app/a", "dr/app/b", "dr/app/l"]
    );
    assert_eq!(&get(&dst, "dr/app/b").await.unwrap().value[..], b"22");
    assert_eq!(get(&dst, "dr/app/l").await.unwrap().lease, lease);
    assert!(get(&dst, "app/a").await.is_none());
    assert!(get(&dst, "other/c").await.is_none());
    assert!(get(&dst, "dr/other/c").await.is_none());
    let perms = dst.role_get("reader").await.unwrap().perm;
    assert_eq!(&perms[0].key[..], b"dr/app/");
    // bob's password survived (3.5 hash, 3.4 plaintext).
    dst.user_add("root", "rootpw", false).await.unwrap();

    let diffs = verify(&src, &dst, &keys).await.unwrap();
    // Only the standby's root user (made above for the auth step below).
    assert_eq!(diffs.len(), 1, "{diffs:#?}");
    assert_eq!(diffs[0].kind, DifferenceKind::UserExtra);

    // Now break the standby (and the primary) in every way verify knows.
    let d = standby.etcdctl();
    run(&d, &["put", "dr/app/b", "X"]);
    run(&d, &["put", "dr/app/zz", "y"]);
    run(&d, &["lease", "revoke", &format!("{lease:x}")]);
    let extra = d.lease_grant(100).unwrap();
    run(&d, &["put", &format!("--lease={extra:x}"), "dr/app/a", "1"]);
    src.lease_grant(0x5555, 60).await.unwrap();
    dst.lease_grant(0x5555, 20).await.unwrap();
    run(&d, &["user", "add", "eve:x", "--interactive=false"]);
    run(&p, &["user", "add", "carol:x", "--interactive=false"]);
    run(&p, &["role", "add", "r2"]);
    run(&p, &["user", "grant-role", "bob", "r2"]);
    run(&d, &["role", "add", "extra"]);
    run(
        &d,
        &["role", "grant-permission", "reader", "write", "dr/app/z"],
    );
    run(&d, &["user", "grant-role", "root", "root"]);
    run(&d, &["auth", "enable"]);
    let mut cfg = ClientConfig::new(standby.client_urls());
    cfg.user = Some(("root".into(), "rootpw".into()));
    let dst_root = Client::connect(cfg).await.unwrap();

    let diffs = verify(&src, &dst_root, &keys).await.unwrap();
    let kinds: BTreeSet<DifferenceKind> = diffs.iter().map(|d| d.kind).collect();
    use DifferenceKind::*;
    let all: BTreeSet<DifferenceKind> = [
        KeyMissing,
        KeyExtra,
        ValueDiffers,
        KeyLeaseDiffers,
        LeaseMissing,
        LeaseExtra,
        LeaseTtlDiffers,
        UserMissing,
        UserExtra,
        UserRolesDiffer,
        RoleMissing,
        RoleExtra,
        RolePermissionsDiffer,
        AuthEnabledDiffers,
    ]
    .into_iter()
    .collect();
    assert_eq!(kinds, all, "{diffs:#?}");
    let missing: Vec<_> = diffs.iter().filter(|d| d.kind == KeyMissing).collect();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].key.as_deref(), Some("app/l"));
    let json = serde_json::to_string(&diffs).unwrap();
    assert!(json.contains(r#""kind":"value_differs""#), "{json}");
    assert!(!json.contains("bobpw") && !json.contains("rootpw"));
    drop(sink);
}
