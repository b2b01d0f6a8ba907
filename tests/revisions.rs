//! Revision-preserving mode against real etcd (issue 13): a standby seeded
//! with `etcd-standby seed` (etcd's own restore) and replayed with
//! `run --preserve-revisions` has the primary's revision sequence, so a
//! Kubernetes-shaped client keeps its resourceVersions and watches across a
//! promotion; a foreign write to the standby halts replay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use etcd_standby_client::pb::{self, Compare, compare};
use etcd_standby_client::{Client, EtcdError};
use etcd_standby_integration::etcd_standby_bin;
use etcd_standby_integration::fidelity::{
    Replicator, connect, del_op, get_op, put_op, revision, txn, verify,
};
use etcd_standby_integration::load::{block_on, cluster_raft_index};
use etcd_standby_integration::promote::promote;
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion};

const WAIT: Duration = Duration::from_secs(90);

/// Compare: `key`'s mod revision (`modified`) or create revision is `rev`.
fn cmp_rev(key: &str, rev: i64, modified: bool) -> Compare {
    let (target, union) = if modified {
        (
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(rev),
        )
    } else {
        (
            compare::CompareTarget::Create,
            compare::TargetUnion::CreateRevision(rev),
        )
    };
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: target as i32,
        key: Bytes::from(key.to_owned()),
        target_union: Some(union),
        ..Default::default()
    }
}

/// kube-apiserver's shape of a write: `op` if `cmp` holds, else read `key`.
/// The new revision, or `None` when the precondition failed.
async fn guarded(c: &Client, cmp: Compare, op: pb::RequestOp, key: &str) -> Option<i64> {
    let r = c
        .txn(txn(vec![cmp], vec![op], vec![get_op(key.to_owned())]))
        .await
        .unwrap();
    r.succeeded.then(|| r.header.unwrap().revision)
}

/// kube-apiserver's create: only if absent. Returns the new resourceVersion.
async fn create(c: &Client, key: &str, value: &str) -> i64 {
    let op = put_op(key.to_owned(), value.to_owned(), 0);
    guarded(c, cmp_rev(key, 0, false), op, key)
        .await
        .unwrap_or_else(|| panic!("create {key}: exists"))
}

/// kube-apiserver's update: only at resourceVersion `rv`. `None`: conflict.
async fn update(c: &Client, key: &str, value: &str, rv: i64, lease: i64) -> Option<i64> {
    let op = put_op(key.to_owned(), value.to_owned(), lease);
    guarded(c, cmp_rev(key, rv, true), op, key).await
}

/// kube-apiserver's delete with a precondition on the resourceVersion.
async fn delete(c: &Client, key: &str, rv: i64) -> bool {
    guarded(c, cmp_rev(key, rv, true), del_op(key.to_owned()), key)
        .await
        .is_some()
}

/// A workload shaped like kube-apiserver's storage: objects created,
/// updated and deleted under resourceVersion preconditions, events on a
/// lease that is revoked with them, stale updates that conflict, and the
/// requests that bump no revision (a delete of nothing, an empty txn, a
/// lease grant), then a compaction. Returns the object keys with their
/// last resourceVersion.
async fn kube_workload(c: &Client, round: u32) -> Vec<(String, i64)> {
    let mut objects = Vec::new();
    for i in 0..12 {
        let key = format!("/registry/pods/default/p{round}-{i}");
        let rv = create(c, &key, &format!("{{\"spec\":{i}}}")).await;
        objects.push((key, rv));
    }
    for (key, rv) in objects.iter_mut().step_by(2) {
        *rv = update(c, key, "{\"spec\":\"updated\"}", *rv, 0)
            .await
            .expect("update at the current resourceVersion");
    }
    // A stale resourceVersion conflicts and bumps nothing.
    let (k0, rv0) = objects[1].clone();
    assert!(update(c, &k0, "stale", rv0 - 1, 0).await.is_none());
    let (k1, rv1) = objects.remove(3);
    assert!(delete(c, &k1, rv1).await);
    // Events live on a lease, revoked with its keys (one revision).
    let lease = c.lease_grant(0, 600).await.unwrap().id;
    for i in 0..4 {
        c.put(pb::PutRequest {
            key: Bytes::from(format!("/registry/events/default/e{round}-{i}")),
            value: Bytes::from_static(b"event"),
            lease,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    c.lease_revoke(lease).await.unwrap();
    // No revision: a delete of nothing, an empty txn, a grant kept.
    c.delete_range(pb::DeleteRangeRequest {
        key: Bytes::from_static(b"/registry/none"),
        ..Default::default()
    })
    .await
    .unwrap();
    c.txn(txn(vec![], vec![], vec![])).await.unwrap();
    let kept = c.lease_grant(0, 900).await.unwrap().id;
    let (k2, rv2) = objects[2].clone();
    let rv = update(c, &k2, "{\"spec\":\"leased\"}", rv2, kept)
        .await
        .unwrap();
    objects[2].1 = rv;
    objects
}

/// Events `watch --rev=from` sees on `endpoints` under `/registry/`, as
/// `(type, key, create, mod, version)`, up to the first at revision `until`
/// or later (or 20 s), then stopped.
fn watch_events(
    etcdctl: &Path,
    endpoints: &str,
    from: i64,
    until: i64,
) -> Vec<(String, String, i64, i64, i64)> {
    use std::io::BufRead;
    let mut child = Command::new(etcdctl)
        .args(["--endpoints", endpoints, "watch", "--prefix", "/registry/"])
        .arg(format!("--rev={from}"))
        .args(["-w", "json"])
        .env("ETCDCTL_API", "3")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut events = Vec::new();
    while events
        .last()
        .is_none_or(|e: &(String, String, i64, i64, i64)| e.3 < until)
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        if !line.starts_with('{') {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for e in v["Events"].as_array().into_iter().flatten() {
            let kv = &e["kv"];
            // etcdctl's JSON carries keys in base64.
            let raw = kv["key"].as_str().unwrap_or_default();
            let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, raw)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| raw.to_owned());
            let n = |f: &str| kv[f].as_i64().unwrap_or(0);
            events.push((
                e["type"].as_str().unwrap_or("PUT").to_owned(),
                key,
                n("create_revision"),
                n("mod_revision"),
                n("version"),
            ));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    events
}

/// Runs `etcd-standby seed` of `primary` for `standby`'s members into
/// `out` (the replicator's data dir `data` gets the seed); returns the
/// seed record.
fn run_seed(
    primary: &EtcdCluster,
    standby: &EtcdCluster,
    data: &Path,
    out: &Path,
) -> serde_json::Value {
    let tool = match standby.version() {
        EtcdVersion::V3_4 => standby.bin_dir().join("etcdctl"),
        _ => standby.bin_dir().join("etcdutl"),
    };
    let mut cmd = Command::new(etcd_standby_bin());
    cmd.args(["seed", "--source-endpoints", &primary.client_endpoints()])
        .arg("--out")
        .arg(out)
        .arg("--restore-tool")
        .arg(&tool)
        .arg("--data-dir")
        .arg(data)
        .arg("--json");
    for m in standby.initial_cluster().split(',') {
        cmd.args(["--standby-member", m]);
    }
    let done = cmd.output().unwrap();
    assert!(
        done.status.success(),
        "seed failed: {}{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    serde_json::from_slice(&done.stdout).unwrap()
}

/// Replaces every standby member's data dir with the one the seed
/// restored in `out` and starts the members again.
fn swap_in(standby: &mut EtcdCluster, out: &Path) {
    for i in 0..standby.len() {
        standby.stop_member(i).unwrap();
        let dir = standby.data_dir(i).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let name = standby.member_name(i).unwrap().to_owned();
        std::fs::rename(out.join(&name), &dir).unwrap();
    }
    let ids: Vec<usize> = (0..standby.len()).collect();
    standby.restart_members(&ids).unwrap();
}

/// Seeds the standby from the primary: the seed, then the members restored.
fn seed_standby(
    primary: &EtcdCluster,
    standby: &mut EtcdCluster,
    data: &Path,
    out: &Path,
) -> serde_json::Value {
    let rec = run_seed(primary, standby, data, out);
    swap_in(standby, out);
    rec
}

/// The primary's and the standby's header revisions are equal once replay
/// has everything, and every key agrees at that revision.
fn assert_same_revisions(primary: &EtcdCluster, standby: &EtcdCluster) -> i64 {
    let (p, s) = block_on(async {
        let p = connect(primary.client_urls(), None).await;
        let s = connect(standby.client_urls(), None).await;
        (revision(&p).await, revision(&s).await)
    });
    assert_eq!(p, s, "the standby's revision is not the primary's");
    let at = p.to_string();
    let (ok, out) = verify(primary, standby, &["--at-revision", &at]);
    assert!(ok, "verify --at-revision {at}:\n{out}");
    p
}

/// A primary and a standby of one version, a client of the primary (on the
/// rig's runtime: a client lives on the runtime it connected on), and the
/// replicator's data dir.
struct Rig {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    primary: EtcdCluster,
    standby: EtcdCluster,
    pc: Client,
}

impl Rig {
    fn new(v: EtcdVersion, standby_members: usize) -> Rig {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("r");
        let primary = EtcdCluster::start(v, 1, ClusterOptions::default()).unwrap();
        let standby = EtcdCluster::start(v, standby_members, ClusterOptions::default()).unwrap();
        let pc = rt.block_on(connect(primary.client_urls(), None));
        Rig {
            rt,
            dir,
            data,
            primary,
            standby,
            pc,
        }
    }
}

/// Starts `run --preserve-revisions`; returns once it joined and holds the
/// primary's log, waiting for a seed.
fn preserving_replicator(
    rt: &tokio::runtime::Runtime,
    primary: &EtcdCluster,
    standby: &EtcdCluster,
    data: &Path,
) -> Replicator {
    let mut r = Replicator::start(primary, standby, data, &["--preserve-revisions"]);
    r.wait_state("waiting_for_seed", WAIT);
    r.wait_commit(rt.block_on(cluster_raft_index(primary.client_urls())), WAIT);
    r
}

fn kubernetes_shaped_client_keeps_its_resource_versions_across_promotion(
    v: EtcdVersion,
    standby_members: usize,
) {
    let Rig {
        rt,
        dir,
        data,
        primary,
        mut standby,
        pc,
    } = Rig::new(v, standby_members);
    // History before the replicator exists, compacted.
    let early = rt.block_on(kube_workload(&pc, 0));
    let compact_at = rt.block_on(revision(&pc)) - 3;
    rt.block_on(pc.compact(compact_at, true)).unwrap();
    let mut r = preserving_replicator(&rt, &primary, &standby, &data);
    // Written after the join, before the seed: in the snapshot.
    rt.block_on(kube_workload(&pc, 1));
    let rec = seed_standby(&primary, &mut standby, &data, &dir.path().join("seed"));
    assert_eq!(rec["members"].as_array().unwrap().len(), standby_members);
    let seed_revision = rec["revision"].as_i64().unwrap();
    assert!(rec["hash_kv"].as_u64().is_some(), "{rec}");
    // Written while the standby restarted: replayed from the log.
    let objects = rt.block_on(kube_workload(&pc, 2));
    r.wait_replayed(WAIT);
    let rev = assert_same_revisions(&primary, &standby);
    assert!(rev > seed_revision);

    // The compaction came with the seed; a new one is replayed at the
    // same revision.
    let compact_again = rev - 2;
    rt.block_on(pc.compact(compact_again, false)).unwrap();
    rt.block_on(kube_workload(&pc, 3));
    r.wait_replayed(WAIT);
    let rev = assert_same_revisions(&primary, &standby);
    let sc = rt.block_on(connect(standby.client_urls(), None));
    let compacted = rt.block_on(sc.range(pb::RangeRequest {
        key: Bytes::from_static(b"/registry/"),
        range_end: Bytes::from_static(b"/registry0"),
        revision: compact_at,
        ..Default::default()
    }));
    assert_eq!(
        compacted.unwrap_err().etcd_error(),
        Some(EtcdError::Compacted),
        "the standby kept history the primary compacted"
    );
    let hp = rt
        .block_on(pc.hash_kv(&primary.client_url(0).unwrap(), 0))
        .unwrap();
    let hs = rt
        .block_on(sc.hash_kv(&standby.client_url(0).unwrap(), 0))
        .unwrap();
    assert_eq!(hp.compact_revision, hs.compact_revision);

    // Watches from a revision see the same events on both sides.
    let etcdctl = primary.bin_dir().join("etcdctl");
    let from = compact_again + 1;
    let wp = watch_events(&etcdctl, &primary.client_endpoints(), from, rev);
    let ws = watch_events(&etcdctl, &standby.client_endpoints(), from, rev);
    assert_eq!(
        wp.last().map(|e| e.3),
        Some(rev),
        "the watch reached the last revision"
    );
    assert_eq!(
        wp, ws,
        "watch --rev={from} differs between the primary and the standby"
    );

    // Promote; the client goes on against the standby with what it holds.
    let run = promote(
        &data,
        &standby.client_endpoints(),
        Some(&primary.client_endpoints()),
        &[
            "--yes",
            "--fence-old-primary",
            "--reason",
            "revision-preserving drill",
            "-w",
            "json",
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{run}\n{}", r.log_tail(40));
    r.wait_exit(Duration::from_secs(30));
    let (k, rv) = objects[0].clone();
    let new_rv = rt.block_on(update(&sc, &k, "{\"spec\":\"after failover\"}", rv, 0))
        .expect("a conditional update with the primary's resourceVersion succeeds on the promoted standby");
    assert!(new_rv > rev);
    // A watch resumed from the last revision the client saw delivers the
    // next change, nothing before it.
    let resumed = watch_events(&etcdctl, &standby.client_endpoints(), rev + 1, new_rv);
    let ours: Vec<_> = resumed
        .iter()
        .filter(|e| e.1.starts_with("/registry/"))
        .collect();
    assert_eq!(ours.len(), 1, "{resumed:?}");
    assert_eq!(ours[0].1, k);
    assert_eq!(ours[0].3, new_rv);
    // Old objects still hold the resourceVersions the primary gave them.
    for (key, rv) in early.iter().chain(objects.iter()).skip(1).take(5) {
        let got = rt
            .block_on(sc.range(pb::RangeRequest {
                key: Bytes::from(key.clone()),
                ..Default::default()
            }))
            .unwrap();
        assert_eq!(got.kvs[0].mod_revision, *rv, "{key}");
    }
    drop(r);
}

#[test]
fn kubernetes_shaped_client_keeps_its_resource_versions_across_promotion_3_4() {
    kubernetes_shaped_client_keeps_its_resource_versions_across_promotion(EtcdVersion::V3_4, 1);
}

#[test]
fn kubernetes_shaped_client_keeps_its_resource_versions_across_promotion_3_5() {
    kubernetes_shaped_client_keeps_its_resource_versions_across_promotion(EtcdVersion::V3_5, 3);
}

/// Puts `n` keys, one request each.
async fn puts(c: &Client, prefix: &str, n: usize) {
    for i in 0..n {
        c.put(pb::PutRequest {
            key: Bytes::from(format!("{prefix}{i:05}")),
            value: Bytes::from(format!("v{i}")),
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

/// The guards of the mode: a standby that is not the seed's restore is
/// waited for, never written (ES-1112), a SIGKILLed replicator resumes with every
/// revision equal (each primary revision written once), and a write to the
/// standby by anyone else halts replay (ES-1111).
#[test]
fn an_unseeded_standby_is_waited_for_a_sigkill_keeps_revisions_and_a_foreign_write_halts_3_5() {
    let Rig {
        rt,
        dir,
        data,
        primary,
        mut standby,
        pc,
    } = Rig::new(EtcdVersion::V3_5, 1);
    rt.block_on(puts(&pc, "/a/", 50));
    let mut r = preserving_replicator(&rt, &primary, &standby, &data);

    // Seeded, but the standby still runs its own fresh data: replay waits
    // (the members may still be being restored) and says why.
    let out = dir.path().join("seed");
    run_seed(&primary, &standby, &data, &out);
    let waiting = r.wait_state("waiting_for_standby", WAIT);
    assert_eq!(waiting["error_code"], "ES-1112", "{waiting}");
    assert!(
        waiting["error"]
            .as_str()
            .unwrap()
            .contains("not at the seed's"),
        "{waiting}"
    );

    // Restored: replay goes on by itself; SIGKILLs mid-stream lose and
    // repeat nothing.
    swap_in(&mut standby, &out);
    // Nothing written since the seed: the standby has it all already.
    r.wait_replayed(WAIT);
    for round in 0..3 {
        rt.block_on(puts(&pc, &format!("/b{round}/"), 400));
        r.kill();
        rt.block_on(puts(&pc, &format!("/c{round}/"), 100));
        r.restart();
    }
    r.wait_replayed(WAIT);
    assert_same_revisions(&primary, &standby);

    // Anyone else's write moves the standby's revision: the next txn halts.
    let sc = rt.block_on(connect(standby.client_urls(), None));
    rt.block_on(sc.put(pb::PutRequest {
        key: Bytes::from_static(b"/foreign"),
        value: Bytes::from_static(b"x"),
        ..Default::default()
    }))
    .unwrap();
    rt.block_on(puts(&pc, "/d/", 3));
    let halted = r.wait_state("halted", WAIT);
    assert_eq!(halted["error_code"], "ES-1111", "{halted}");
}

/// `seed --from-db` with an `etcdctl snapshot save` file (3.4: `etcdctl
/// snapshot restore`, and a db whose consistent index may lag the entries
/// applied into it): the cluster ID comes from the data dir, and replay
/// goes on with equal revisions.
#[test]
fn a_seed_from_a_snapshot_file_keeps_revisions_3_4() {
    let Rig {
        rt,
        dir,
        data,
        primary,
        mut standby,
        pc,
    } = Rig::new(EtcdVersion::V3_4, 1);
    rt.block_on(kube_workload(&pc, 0));
    let mut r = preserving_replicator(&rt, &primary, &standby, &data);
    // Entries that touch no key after the last key write.
    rt.block_on(pc.lease_grant(0, 600)).unwrap();
    let file = dir.path().join("snap.db");
    primary
        .etcdctl()
        .run(&["snapshot", "save", file.to_str().unwrap()])
        .unwrap();
    let out = dir.path().join("seed");
    let mut cmd = Command::new(etcd_standby_bin());
    cmd.arg("seed")
        .arg("--from-db")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .arg("--restore-tool")
        .arg(standby.bin_dir().join("etcdctl"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--standby-member", &standby.initial_cluster()]);
    let done = cmd.output().unwrap();
    assert!(
        done.status.success(),
        "seed --from-db failed: {}{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    swap_in(&mut standby, &out);
    r.wait_replayed(WAIT);
    // Nothing written since the seed: the standby holds everything up to
    // it, and a promotion's checks say so (a dry run changes nothing).
    let dry = promote(
        &data,
        &standby.client_endpoints(),
        Some(&primary.client_endpoints()),
        &["--dry-run", "--fence-old-primary", "-w", "json"],
        &[],
    );
    assert_eq!(dry.code, Some(0), "{dry}");
    rt.block_on(kube_workload(&pc, 1));
    r.wait_replayed(WAIT);
    assert_same_revisions(&primary, &standby);
}
