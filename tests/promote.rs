//! `etcd-standby promote` against real etcd 3.4.23 and 3.5.1: the DR drill
//! (every primary member SIGKILLed), the planned switchover (old primary
//! fenced with a CORRUPT alarm), fencing of old replicators, the dry run
//! that changes nothing, a promote killed half-way, delayed apply with a
//! point-in-time promote, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etcd_standby_client::pb::{PutRequest, RangeRequest};
use etcd_standby_integration::fidelity::{Replicator, all_keys, connect, revision, verify};
use etcd_standby_integration::load::{block_on, cluster_raft_index, varied_writes};
use etcd_standby_integration::promote::{dir_listing, primary_state_at, promote};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion};

const EXIT_REFUSED: Option<i32> = Some(4);
const EXIT_ALREADY_PROMOTED: Option<i32> = Some(5);

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            // A live WAL may change under us: a torn copy is fine here.
            let _ = std::fs::copy(e.path(), dest);
        }
    }
}

fn promoted_record(standby: &EtcdCluster) -> Option<serde_json::Value> {
    let urls = standby.client_urls();
    let got = block_on(async {
        connect(urls, None)
            .await
            .range(RangeRequest {
                key: Bytes::from_static(b"__etcd_standby__/promoted"),
                ..Default::default()
            })
            .await
    })
    .unwrap();
    got.kvs
        .first()
        .map(|kv| serde_json::from_slice(&kv.value).unwrap())
}

fn audit_records(standby: &EtcdCluster) -> usize {
    let urls = standby.client_urls();
    let got = block_on(async {
        connect(urls, None)
            .await
            .range(RangeRequest {
                key: Bytes::from_static(b"__etcd_standby__/audit/"),
                range_end: Bytes::from_static(b"__etcd_standby__/audit0"),
                count_only: true,
                ..Default::default()
            })
            .await
    })
    .unwrap();
    got.count as usize
}

/// The DR drill: a 3-member primary under load with leases and auth data,
/// every member SIGKILLed, `promote` through the running replicator's
/// admin API. The standby equals what the dead members' own WALs say was
/// committed up to the reported applied index; clients write to it; a
/// lease granted on the primary is kept alive there with the same ID; old
/// replicators (same data dir, a copy of it) write nothing.
fn dr_drill(version: EtcdVersion) {
    let mut primary = EtcdCluster::start(version, 3, ClusterOptions::default()).unwrap();
    let standby = EtcdCluster::start(version, 1, ClusterOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("r");
    let mut r = Replicator::start(&primary, &standby, &data, &[]);
    r.wait_joined(Duration::from_secs(60));
    let ctl = primary.etcdctl();
    ctl.run(&["role", "add", "reader"]).unwrap();
    ctl.run_with_stdin(
        &["user", "add", "alice", "--interactive=false"],
        b"alice-pw\n",
    )
    .unwrap();
    ctl.run(&["user", "grant-role", "alice", "reader"]).unwrap();
    let lease = block_on(async {
        let c = connect(primary.client_urls(), None).await;
        let l = c.lease_grant(0, 600).await.unwrap();
        c.put(PutRequest {
            key: Bytes::from_static(b"/app/leased"),
            value: Bytes::from_static(b"held"),
            lease: l.id,
            ..Default::default()
        })
        .await
        .unwrap();
        l.id
    });
    block_on(varied_writes(primary.client_urls(), 600, 8, 7));
    // Load while every member dies.
    let urls = primary.client_urls();
    let load = std::thread::spawn(move || block_on(varied_writes(urls, 100_000, 8, 8)));
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..3 {
        primary.kill_member(i).unwrap();
    }
    load.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let source = primary.client_endpoints();
    let standby_ep = standby.client_endpoints();

    // Let replay finish what it received (the primary is gone, nothing new comes).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while r.replay_u64("lag_entries").unwrap_or(1) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "replay did not catch up: {:?}",
            r.replay()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The dry run reports and changes nothing.
    let keys_before =
        block_on(async { all_keys(&connect(standby.client_urls(), None).await).await });
    let rev_before =
        block_on(async { revision(&connect(standby.client_urls(), None).await).await });
    let listing_before = dir_listing(&data);
    let dry = promote(
        &data,
        &standby_ep,
        Some(&source),
        &["--dry-run", "-w", "json"],
        &[],
    );
    assert_eq!(dry.code, Some(0), "{dry}");
    let plan = &dry.json()["inspection"]["plan"];
    assert_eq!(plan["decision"], "proceed", "{dry}");
    let checks: Vec<&str> = plan["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in [
        "standby_reachable",
        "replay_state",
        "last_contact",
        "primary",
        "lease_keeper",
        "auth",
        "target",
    ] {
        assert!(checks.contains(&name), "check {name} missing: {checks:?}");
    }
    let keys_after =
        block_on(async { all_keys(&connect(standby.client_urls(), None).await).await });
    assert_eq!(
        keys_before, keys_after,
        "a dry run changed the standby's keys"
    );
    let rev_after = block_on(async { revision(&connect(standby.client_urls(), None).await).await });
    assert_eq!(rev_before, rev_after, "a dry run wrote to the standby");
    let listing_after = dir_listing(&data);
    let changed: Vec<_> = listing_before
        .keys()
        .chain(listing_after.keys())
        .filter(|k| !k.starts_with("member/") && !k.contains("received-times"))
        .filter(|k| listing_after.get(*k) != listing_before.get(*k))
        .collect();
    assert!(changed.is_empty(), "a dry run changed {changed:?}");
    assert!(!data.join("promoting.json").exists() && !data.join("promoted.json").exists());
    assert!(promoted_record(&standby).is_none(), "a dry run promoted");

    // A copy of the data dir, to play the stray replicator later.
    let copy = dir.path().join("copy");
    copy_dir(&data, &copy);

    // Promote for real, through the running replicator.
    let run = promote(
        &data,
        &standby_ep,
        Some(&source),
        &[
            "--yes",
            "--reason",
            "DR drill: primary city lost",
            "-w",
            "json",
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{run}\n{}", r.log_tail(40));
    let report = run.json()["report"].clone();
    let st = r.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "the replicator stopped for the promote: {st}");
    let applied = report["applied_index"].as_u64().unwrap();
    assert!(report["epoch"].as_u64().unwrap() >= 2, "{report}");
    assert!(
        report["leases_refreshed"].as_u64().unwrap() >= 1,
        "{report}"
    );
    let rpo = &report["plan"]["rpo"];
    assert_eq!(rpo["applied_index"].as_u64(), Some(applied), "{report}");
    assert!(
        rpo["summary"].as_str().unwrap().contains("last contact"),
        "{report}"
    );
    let audit = &report["audit"];
    assert_eq!(audit["reason"], "DR drill: primary city lost");
    assert!(audit["by"].as_str().unwrap().contains('@'));
    assert_eq!(audit["applied_index"].as_u64(), Some(applied));
    assert!(data.join("promoted.json").exists());
    assert!(!data.join("promoting.json").exists());
    assert_eq!(audit_records(&standby), 1);
    assert!(r.log().contains("stop requested through the admin API"));

    // The standby equals the primary's committed state at the applied index.
    let expected = primary_state_at(&primary, applied);
    let got = block_on(async { all_keys(&connect(standby.client_urls(), None).await).await });
    let diff: Vec<_> = expected
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .chain(
            got.keys()
                .filter(|k| !expected.contains_key(*k))
                .map(|k| String::from_utf8_lossy(k).into_owned()),
        )
        .take(10)
        .collect();
    assert!(
        diff.is_empty(),
        "standby differs from the primary at {applied}: {diff:?}"
    );
    assert!(got.len() > 100, "the drill wrote data ({} keys)", got.len());

    // Clients use the new primary; the primary's lease lives on, same ID.
    block_on(async {
        let c = connect(standby.client_urls(), None).await;
        c.put(PutRequest {
            key: Bytes::from_static(b"/after/promote"),
            value: Bytes::from_static(b"yes"),
            ..Default::default()
        })
        .await
        .expect("write to the promoted standby");
        let (tx, mut rx) = c.lease_keep_alive().await.unwrap();
        tx.keep_alive(lease).await.unwrap();
        let a = rx.message().await.unwrap().unwrap();
        assert!(
            a.ttl > 0,
            "the primary's lease {lease:x} is alive on the new primary"
        );
        let t = c.lease_time_to_live(lease, true).await.unwrap();
        assert_eq!(t.keys, vec![Bytes::from_static(b"/app/leased")]);
        let users = c.user_list().await.unwrap();
        assert!(users.users.contains(&"alice".to_owned()));
    });

    // Fencing: the old replicator (same data dir) and a copy write nothing.
    let rev = block_on(async { revision(&connect(standby.client_urls(), None).await).await });
    r.restart();
    let st = r.wait_exit(Duration::from_secs(30));
    assert!(!st.success());
    assert!(
        r.log().contains("never replicates again") && r.log().contains("ES-2003"),
        "{}",
        r.log_tail(10)
    );
    let mut stray = Replicator::start(&primary, &standby, &copy, &[]);
    let st = stray.wait_exit(Duration::from_secs(30));
    assert!(!st.success());
    assert!(
        stray.log().contains("promoted to primary") && stray.log().contains("ES-2003"),
        "{}",
        stray.log_tail(10)
    );
    let rev2 = block_on(async { revision(&connect(standby.client_urls(), None).await).await });
    assert_eq!(
        rev, rev2,
        "a fenced replicator wrote to the promoted standby"
    );

    // Anti-flap: a second promote is refused.
    let again = promote(
        &data,
        &standby_ep,
        Some(&source),
        &["--yes", "--reason", "again"],
        &[],
    );
    assert_eq!(again.code, EXIT_ALREADY_PROMOTED, "{again}");
    let other = promote(
        &copy,
        &standby_ep,
        Some(&source),
        &["--yes", "--reason", "again"],
        &[],
    );
    assert_eq!(other.code, EXIT_ALREADY_PROMOTED, "{other}");
}

#[test]
fn dr_drill_promotes_after_every_primary_member_is_killed_3_4() {
    dr_drill(EtcdVersion::V3_4);
}

#[test]
fn dr_drill_promotes_after_every_primary_member_is_killed_3_5() {
    dr_drill(EtcdVersion::V3_5);
}

/// The planned switchover: with the primary healthy `promote` refuses;
/// with `--fence-old-primary` it fences it (CORRUPT alarm: writes refused,
/// reads served, kept across a restart, undone by `alarm disarm`), drains
/// to zero lag, removes the learner, and reports RPO 0: every write the
/// old primary acknowledged is on the new one.
fn planned_switchover(version: EtcdVersion) {
    // A short start timeout: the restart below is meant to stay unhealthy.
    let opts = ClusterOptions {
        start_timeout: Duration::from_secs(20),
        ..ClusterOptions::default()
    };
    let mut primary = EtcdCluster::start(version, 1, opts).unwrap();
    let standby = EtcdCluster::start(version, 1, ClusterOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("r");
    let mut r = Replicator::start(&primary, &standby, &data, &[]);
    r.wait_joined(Duration::from_secs(60));
    block_on(varied_writes(primary.client_urls(), 300, 8, 3));
    let source = primary.client_endpoints();
    let standby_ep = standby.client_endpoints();
    let refused = promote(
        &data,
        &standby_ep,
        Some(&source),
        &["--yes", "--reason", "planned"],
        &[],
    );
    assert_eq!(refused.code, EXIT_REFUSED, "{refused}");
    assert!(refused.stdout.contains("--force gives up"), "{refused}");
    // The refusal's stable code (a healthy primary).
    assert!(refused.stdout.contains("[ES-5010]"), "{refused}");
    assert!(promoted_record(&standby).is_none());
    assert!(
        r.try_wait().is_none(),
        "a refused promote stopped the replicator"
    );

    // Writes keep coming while we switch over; record what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let urls = primary.client_urls();
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        block_on(async move {
            let c = connect(urls, None).await;
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let key = Bytes::from(format!("/switch/{i:06}"));
                i += 1;
                if c.put(PutRequest {
                    key: key.clone(),
                    value: Bytes::from_static(b"v"),
                    ..Default::default()
                })
                .await
                .is_ok()
                {
                    acked.push(key);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let run = promote(
        &data,
        &standby_ep,
        Some(&source),
        &[
            "--yes",
            "--fence-old-primary",
            "--reason",
            "planned switchover",
            "-w",
            "json",
        ],
        &[],
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert_eq!(run.code, Some(0), "{run}\n{}", r.log_tail(40));
    let report = run.json()["report"].clone();
    let rpo = &report["plan"]["rpo"];
    assert_eq!(rpo["committed_not_applied"].as_u64(), Some(0), "{report}");
    assert_eq!(
        rpo["committed_not_received_known"].as_u64(),
        Some(0),
        "{report}"
    );
    assert!(
        report["old_primary_fenced_at"].as_u64().is_some(),
        "{report}"
    );
    assert!(
        report["learner_removal"]
            .as_str()
            .unwrap()
            .contains("removed"),
        "{report}"
    );
    assert!(
        acked.len() > 10,
        "the writer got writes in ({})",
        acked.len()
    );
    let got = block_on(async { all_keys(&connect(standby.client_urls(), None).await).await });
    let lost: Vec<_> = acked.iter().filter(|k| !got.contains_key(*k)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes missing on the new primary: {lost:?}"
    );
    // The old primary is readable, equal, and refuses writes.
    let (ok, out) = verify(&primary, &standby, &[]);
    assert!(ok, "{out}");
    let members = primary.etcdctl().run(&["member", "list"]).unwrap();
    assert!(!members.contains("true"), "the learner is gone: {members}");
    let put = primary.etcdctl().run(&["put", "/after/fence", "x"]);
    assert!(put.is_err(), "the fenced primary accepted a write");
    assert!(
        format!("{put:?}").to_lowercase().contains("corrupt"),
        "{put:?}"
    );
    primary.stop_member(0).unwrap();
    // The alarm is in the backend: after a restart the member reports it.
    let restarted = primary.restart_member(0).err().map(|e| e.to_string());
    assert!(
        restarted.as_deref().is_some_and(|e| e.contains("CORRUPT")),
        "the restarted old primary should report the CORRUPT alarm: {restarted:?}"
    );
    let put = primary.etcdctl().run(&["put", "/after/fence", "x"]);
    assert!(put.is_err(), "the fence did not survive a restart");
    primary.etcdctl().run(&["alarm", "disarm"]).unwrap();
    primary
        .etcdctl()
        .run(&["put", "/after/disarm", "x"])
        .unwrap();
}

#[test]
fn planned_switchover_fences_the_old_primary_and_loses_nothing_3_4() {
    planned_switchover(EtcdVersion::V3_4);
}

#[test]
fn planned_switchover_fences_the_old_primary_and_loses_nothing_3_5() {
    planned_switchover(EtcdVersion::V3_5);
}

/// A promote killed after the drain changes nothing but replay progress; a
/// promote killed after the epoch txn leaves the standby promoted and the
/// data dir `promoting` (`run` refuses); the next promote finishes it.
/// Bad input along the way: unreachable standby, a standby never
/// replicated to, a data dir that never joined, a data dir behind the
/// standby's checkpoint, and two promotes at once.
#[test]
fn promote_killed_half_way_is_finished_and_bad_input_is_refused() {
    let mut primary = EtcdCluster::start(EtcdVersion::V3_5, 1, ClusterOptions::default()).unwrap();
    let standby = EtcdCluster::start(EtcdVersion::V3_5, 1, ClusterOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("r");
    let mut r = Replicator::start(&primary, &standby, &data, &[]);
    r.wait_joined(Duration::from_secs(60));
    let early = dir.path().join("early");
    r.terminate();
    copy_dir(&data, &early);
    r.restart();
    block_on(varied_writes(primary.client_urls(), 400, 8, 5));
    r.wait_replayed(Duration::from_secs(60));
    r.terminate();
    primary.kill_member(0).unwrap();
    let source = primary.client_endpoints();
    let standby_ep = standby.client_endpoints();
    let yes = ["--yes", "--reason", "test", "-w", "json"];

    // Bad input: each refused with a clear reason, nothing changed.
    let unreachable = promote(&data, "http://127.0.0.1:1", Some(&source), &yes, &[]);
    assert_eq!(unreachable.code, EXIT_REFUSED, "{unreachable}");
    assert!(
        unreachable.stdout.contains("no standby endpoint answered"),
        "{unreachable}"
    );
    let fresh = EtcdCluster::start(EtcdVersion::V3_5, 1, ClusterOptions::default()).unwrap();
    let never = promote(&data, &fresh.client_endpoints(), Some(&source), &yes, &[]);
    assert_eq!(never.code, EXIT_REFUSED, "{never}");
    assert!(never.stdout.contains("never replicated"), "{never}");
    drop(fresh);
    let empty = dir.path().join("empty");
    let nojoin = promote(&empty, &standby_ep, Some(&source), &yes, &[]);
    assert_eq!(nojoin.code, EXIT_REFUSED, "{nojoin}");
    assert!(nojoin.stdout.contains("never joined"), "{nojoin}");
    let behind = promote(&early, &standby_ep, Some(&source), &yes, &[]);
    assert_eq!(behind.code, EXIT_REFUSED, "{behind}");
    assert!(
        behind.stdout.contains("newer than the local log"),
        "{behind}"
    );
    assert!(promoted_record(&standby).is_none());

    // Killed after the drain: nothing promoted; `run` refuses until promote runs again.
    let crash = [("ETCD_STANDBY_TEST_PROMOTE_CRASH", "after_drain")];
    let killed = promote(&data, &standby_ep, Some(&source), &yes, &crash);
    assert_ne!(killed.code, Some(0), "{killed}");
    assert!(promoted_record(&standby).is_none(), "{killed}");
    assert!(data.join("promoting.json").exists());
    r.restart();
    let st = r.wait_exit(Duration::from_secs(30));
    assert!(!st.success());
    assert!(r.log().contains("has not finished"), "{}", r.log_tail(5));
    assert!(r.log().contains("ES-2006"), "{}", r.log_tail(5));

    // Killed after the epoch txn: promoted on the standby, not in the data dir.
    let crash = [("ETCD_STANDBY_TEST_PROMOTE_CRASH", "after_epoch")];
    let killed = promote(&data, &standby_ep, Some(&source), &yes, &crash);
    assert_ne!(killed.code, Some(0), "{killed}");
    assert!(promoted_record(&standby).is_some(), "{killed}");
    assert!(!data.join("promoted.json").exists());

    // Two promotes at once: the interrupted one is finished exactly once.
    let (d1, d2) = (data.clone(), data.clone());
    let (s1, s2) = (standby_ep.clone(), standby_ep.clone());
    let (p1, p2) = (source.clone(), source.clone());
    let a = std::thread::spawn(move || promote(&d1, &s1, Some(&p1), &yes, &[]));
    let b = std::thread::spawn(move || promote(&d2, &s2, Some(&p2), &yes, &[]));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let ok = [&a, &b].iter().filter(|x| x.code == Some(0)).count();
    assert_eq!(ok, 1, "exactly one promote finishes:\n{a}\n{b}");
    let done = if a.code == Some(0) { &a } else { &b };
    assert_eq!(
        done.json()["report"]["plan"]["decision"],
        "resume",
        "{done}"
    );
    assert!(data.join("promoted.json").exists());
    assert!(!data.join("promoting.json").exists());
    assert_eq!(
        audit_records(&standby),
        1,
        "one promotion, one audit record"
    );
    let again = promote(&data, &standby_ep, Some(&source), &yes, &[]);
    assert_eq!(again.code, EXIT_ALREADY_PROMOTED, "{again}");
}

/// `run --apply-delay` keeps the newest log unapplied; a mass delete on the
/// primary is undone by `promote --to-index` just before it (and
/// `--to-time` finds the same point in a dry run).
#[test]
fn delayed_apply_and_promote_to_a_point_before_a_mass_delete() {
    let mut primary = EtcdCluster::start(EtcdVersion::V3_5, 1, ClusterOptions::default()).unwrap();
    let standby = EtcdCluster::start(EtcdVersion::V3_5, 1, ClusterOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("r");
    let mut r = Replicator::start(&primary, &standby, &data, &[]);
    r.wait_joined(Duration::from_secs(60));
    r.terminate();
    r.restart_with(&["--apply-delay", "1h"]);
    let ctl = primary.etcdctl();
    for i in 0..50 {
        ctl.put(format!("/registry/pods/p{i:03}"), "spec").unwrap();
    }
    let before_delete = block_on(cluster_raft_index(primary.client_urls()));
    std::thread::sleep(Duration::from_millis(1200));
    let between = now_rfc3339();
    std::thread::sleep(Duration::from_millis(1200));
    ctl.run(&["del", "--prefix", "/registry/"]).unwrap();
    let after_delete = block_on(cluster_raft_index(primary.client_urls()));
    r.wait_commit(after_delete, Duration::from_secs(30));
    // Nothing of it reached the standby; the window is visible in /status.
    let got = block_on(async { all_keys(&connect(standby.client_urls(), None).await).await });
    assert!(
        !got.keys().any(|k| k.starts_with(b"/registry/")),
        "the delay did not hold"
    );
    let delayed = r.replay_u64("delayed_entries").unwrap_or(0);
    assert!(delayed >= 51, "delayed_entries {delayed}: {:?}", r.replay());
    primary.kill_member(0).unwrap();
    let source = primary.client_endpoints();
    let standby_ep = standby.client_endpoints();
    let dry = promote(
        &data,
        &standby_ep,
        Some(&source),
        &["--dry-run", "--to-time", &between, "-w", "json"],
        &[],
    );
    assert_eq!(dry.code, Some(0), "{dry}");
    let t = dry.json()["inspection"]["plan"]["target_index"]
        .as_u64()
        .unwrap();
    assert!(
        t >= before_delete && t < after_delete,
        "--to-time {between} chose {t}, not in {before_delete}..{after_delete}"
    );
    let to = before_delete.to_string();
    let run = promote(
        &data,
        &standby_ep,
        Some(&source),
        &[
            "--yes",
            "--to-index",
            &to,
            "--reason",
            "undo the mass delete",
            "-w",
            "json",
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{run}\n{}", r.log_tail(30));
    let report = run.json()["report"].clone();
    assert_eq!(report["applied_index"].as_u64(), Some(before_delete));
    assert!(
        report["plan"]["rpo"]["committed_not_applied"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let got = block_on(async { all_keys(&connect(standby.client_urls(), None).await).await });
    let pods = got
        .keys()
        .filter(|k| k.starts_with(b"/registry/pods/"))
        .count();
    assert_eq!(
        pods, 50,
        "the keys the mass delete removed are on the promoted standby"
    );
}

/// Now as RFC 3339 (what an operator passes to `--to-time`).
fn now_rfc3339() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%3NZ"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
