//! Tests of the testkit against real etcd (needs `cargo xtask install-etcd`
//! or the ETCD_STANDBY_ETCD_3_x variables; fails loudly otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use etcd_standby_testkit::{
    ClusterOptions, EtcdCluster, EtcdVersion, Etcdctl, TestkitError, free_port,
};

fn single_member_roundtrip(version: EtcdVersion) {
    let mut cluster = EtcdCluster::start(version, 1, ClusterOptions::default()).unwrap();
    assert_eq!(cluster.len(), 1);
    assert_eq!(cluster.member_name(0).unwrap(), "n1");
    assert!(cluster.client_endpoints().starts_with("http://127.0.0.1:"));

    let ctl = cluster.etcdctl();
    let version_out = ctl.run(&["version"]).unwrap();
    assert!(version_out.contains(version.as_str()), "{version_out}");

    ctl.put("/t/a", "1").unwrap();
    ctl.put("/t/b", "two words").unwrap();
    // Binary key starting with '-' and containing non-UTF-8 bytes.
    let odd_key: &[u8] = b"/t/-\xff\x01 key";
    ctl.put(odd_key, "-v").unwrap();
    ctl.put("/u/other", "x").unwrap();

    assert_eq!(ctl.get("/t/a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(ctl.get("/t/missing").unwrap(), None);
    assert_eq!(ctl.get(odd_key).unwrap().as_deref(), Some(&b"-v"[..]));
    let keys = ctl.get_prefix_keys("/t/").unwrap();
    assert_eq!(
        keys,
        vec![odd_key.to_vec(), b"/t/a".to_vec(), b"/t/b".to_vec()]
    );
    assert_eq!(ctl.get_prefix_keys("").unwrap().len(), 4);
    assert!(ctl.get_prefix_keys("/nothing/").unwrap().is_empty());
    let kvs = ctl.get_prefix("/t/b").unwrap();
    assert_eq!(kvs, vec![(b"/t/b".to_vec(), b"two words".to_vec())]);

    let lease = ctl.lease_grant(300).unwrap();
    assert!(lease > 0);
    assert!(ctl.revision().unwrap() >= 5);

    // Errors carry etcdctl's stderr.
    let err = ctl.run(&["no-such-command"]).unwrap_err();
    assert!(matches!(err, TestkitError::Command { .. }), "{err}");

    // Clean stop, data survives a restart.
    let data_dir = cluster.data_dir(0).unwrap();
    cluster.stop_member(0).unwrap();
    assert!(!cluster.is_running(0).unwrap());
    assert!(data_dir.join("member/wal").is_dir());
    assert!(data_dir.join("member/snap/db").is_file());
    cluster.restart_member(0).unwrap();
    assert_eq!(ctl.get("/t/a").unwrap().as_deref(), Some(&b"1"[..]));

    // Crash and restart.
    cluster.kill_member(0).unwrap();
    cluster.restart_member(0).unwrap();
    assert_eq!(ctl.get("/t/b").unwrap().as_deref(), Some(&b"two words"[..]));
    assert!(cluster.member_log(0).unwrap().contains("testkit: restart"));
}

#[test]
fn single_member_3_4() {
    single_member_roundtrip(EtcdVersion::V3_4);
}

#[test]
fn single_member_3_5() {
    single_member_roundtrip(EtcdVersion::V3_5);
}

#[test]
fn three_members_3_5() {
    let opts = ClusterOptions {
        snapshot_count: Some(100),
        enable_lease_checkpoint: true,
        ..ClusterOptions::default()
    };
    let mut cluster = EtcdCluster::start(EtcdVersion::V3_5, 3, opts).unwrap();
    assert_eq!(cluster.len(), 3);
    assert_eq!(cluster.peer_urls().len(), 3);
    assert_eq!(cluster.client_endpoints().split(',').count(), 3);
    assert!(
        cluster
            .initial_cluster()
            .starts_with("n1=http://127.0.0.1:")
    );

    let health = cluster
        .etcdctl()
        .run(&["endpoint", "health", "--cluster"])
        .unwrap();
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    let members = cluster.etcdctl().run(&["member", "list"]).unwrap();
    assert_eq!(members.lines().count(), 3, "{members}");

    cluster.etcdctl().put("k", "v1").unwrap();
    // Lose a follower (killing the leader would drop in-flight proposals
    // and make the next put time out): quorum remains.
    let leader = cluster.leader().unwrap();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    cluster.kill_member(follower).unwrap();
    cluster.etcdctl_for(other).unwrap().put("k", "v2").unwrap();
    cluster.restart_member(follower).unwrap();
    // Linearizable read through the restarted member sees the latest write.
    let v = cluster.etcdctl_for(follower).unwrap().get("k").unwrap();
    assert_eq!(v.as_deref(), Some(&b"v2"[..]));

    // Clean stop of the leader: etcd transfers leadership first.
    cluster.stop_member(leader).unwrap();
    let new_leader = cluster.leader().unwrap();
    assert_ne!(new_leader, leader);
    let err = cluster.stop_member(leader).unwrap_err();
    assert!(matches!(err, TestkitError::MemberState { .. }), "{err}");
    assert!(matches!(
        cluster.data_dir(3).unwrap_err(),
        TestkitError::NoSuchMember { index: 3, len: 3 }
    ));
    cluster.wait_healthy(Duration::from_secs(30)).unwrap();
}

#[test]
fn missing_binaries_fail_loudly() {
    let empty = tempfile::tempdir().unwrap();
    let opts = ClusterOptions {
        bin_dir: Some(empty.path().to_path_buf()),
        ..ClusterOptions::default()
    };
    let err = EtcdCluster::start(EtcdVersion::V3_5, 1, opts).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TestkitError::EtcdNotFound { .. }), "{msg}");
    assert!(msg.contains("cargo xtask test"), "{msg}");
}

#[test]
fn bin_dirs_resolve_for_every_version() {
    for v in EtcdVersion::ALL {
        let dir = v.bin_dir().unwrap();
        assert!(dir.join("etcd").is_file(), "{v}: {}", dir.display());
        Etcdctl::new(v, "http://127.0.0.1:1").unwrap();
    }
    assert!(EtcdVersion::V3_5.etcdutl_bin().unwrap().is_file());
    assert!(EtcdVersion::V3_4.etcdutl_bin().is_err());
}

#[test]
fn failing_start_reports_logs() {
    let opts = ClusterOptions {
        extra_args: vec!["--no-such-flag".into()],
        start_timeout: Duration::from_secs(10),
        ..ClusterOptions::default()
    };
    let err = EtcdCluster::start(EtcdVersion::V3_5, 1, opts).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TestkitError::Unhealthy { .. }), "{msg}");
    assert!(msg.contains("exited"), "{msg}");
    assert!(msg.contains("no-such-flag"), "{msg}");
    if let TestkitError::Unhealthy { dir, .. } = err {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn dir_is_kept_when_panicking() {
    let cluster = EtcdCluster::start(EtcdVersion::V3_5, 1, ClusterOptions::default()).unwrap();
    let dir = cluster.dir().to_path_buf();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _cluster = cluster;
        panic!("intentional panic to test dir retention");
    }));
    assert!(result.is_err());
    assert!(dir.join("n1.log").is_file(), "{} not kept", dir.display());
    std::fs::remove_dir_all(&dir).unwrap();

    let cluster = EtcdCluster::start(EtcdVersion::V3_4, 1, ClusterOptions::default()).unwrap();
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    assert!(!dir.exists(), "{} should be removed", dir.display());
}

#[test]
fn free_ports_are_distinct() {
    let a = free_port().unwrap();
    let b = free_port().unwrap();
    assert_ne!(a, b);
}
