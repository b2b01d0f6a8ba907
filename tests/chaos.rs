//! The chaos suite: a workload (bank transfers, expiring leases, range
//! deletes, compaction) on a 3-member primary while a seeded schedule of
//! overlapping faults hits the replicator, the primary's members and the
//! standby, with invariants checked all along:
//!
//! * every read of the standby shows the bank's total (atomic replay);
//! * after every SIGKILL of the replicator, what it persisted as committed
//!   equals the primary's committed log (acked ⇒ durable, nothing invented);
//! * at the end, `verify` finds no difference.
//!
//! The default suite runs a short fixed-seed schedule per etcd version.
//! `cargo xtask test --chaos [--seed S] [--minutes M] [--replay FILE]` runs
//! a longer one (`chaos_campaign`); every run writes its schedule as JSON
//! lines (the path is printed) for `--replay`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_standby_client::pb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, compare,
    request_op,
};
use etcd_standby_client::{Client, prefix_end};
use etcd_standby_integration::chaos::{self, Event, Fault, Schedule, events};
use etcd_standby_integration::fidelity::{Replicator, assert_verified, bank_violation, connect};
use etcd_standby_integration::load::Rng;
use etcd_standby_integration::standby::wal_entries_and_commit;
use etcd_standby_proto::raftpb;
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion};

const ACCOUNTS: usize = 20;
const START_BALANCE: i64 = 1000;
const WAIT: Duration = Duration::from_secs(120);

fn acct(i: usize) -> String {
    format!("/bank/acct{i:02}")
}

fn put(key: String, value: String, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..Default::default()
        })),
    }
}

/// Counters the workload and the checks share.
#[derive(Default)]
struct Counters {
    transfers: AtomicUsize,
    leases: AtomicUsize,
    range_deletes: AtomicUsize,
    standby_reads: AtomicUsize,
    standby_full_reads: AtomicUsize,
    violations: Mutex<Vec<String>>,
}

/// Bank transfers with mod-revision compares; errors (a killed leader, a
/// paused member) are retried.
async fn bank_worker(p: Client, seed: u64, stop: Arc<AtomicBool>, c: Arc<Counters>) {
    let mut rng = Rng(seed);
    let all = || RangeRequest {
        key: "/bank/".into(),
        range_end: prefix_end(b"/bank/").into(),
        ..Default::default()
    };
    while !stop.load(Ordering::Relaxed) {
        let Ok(resp) = p.range(all()).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if resp.kvs.len() != ACCOUNTS {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let a = rng.below(ACCOUNTS as u64) as usize;
        let b = (a + 1 + rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
        let find = |k: &str| {
            let kv = resp.kvs.iter().find(|kv| kv.key == k.as_bytes()).unwrap();
            let v: i64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
            (v, kv.mod_revision)
        };
        let ((va, ma), (vb, mb)) = (find(&acct(a)), find(&acct(b)));
        let amount = rng.below(va.max(0) as u64 + 1) as i64;
        let mod_eq = |k: String, m: i64| Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: k.into(),
            target_union: Some(compare::TargetUnion::ModRevision(m)),
            ..Default::default()
        };
        let t = p
            .txn(TxnRequest {
                compare: vec![mod_eq(acct(a), ma), mod_eq(acct(b), mb)],
                success: vec![
                    put(acct(a), (va - amount).to_string(), 0),
                    put(acct(b), (vb + amount).to_string(), 0),
                ],
                failure: vec![],
            })
            .await;
        if t.is_ok_and(|t| t.succeeded) {
            c.transfers.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Short leases with keys attached, left to expire (some revoked).
async fn lease_worker(p: Client, seed: u64, stop: Arc<AtomicBool>, c: Arc<Counters>) {
    let mut rng = Rng(seed);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let ttl = 2 + rng.below(4) as i64;
        if let Ok(l) = p.lease_grant(0, ttl).await {
            let _ = p
                .put(PutRequest {
                    key: format!("/leases/{n}").into(),
                    value: "held".into(),
                    lease: l.id,
                    ..Default::default()
                })
                .await;
            c.leases.fetch_add(1, Ordering::Relaxed);
            if rng.below(4) == 0 {
                let _ = p.lease_revoke(l.id).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keys written under a prefix, then the prefix deleted.
async fn scratch_worker(p: Client, stop: Arc<AtomicBool>, c: Arc<Counters>) {
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let prefix = format!("/scratch/{k}/");
        for i in 0..5 {
            let _ = p
                .put(PutRequest {
                    key: format!("{prefix}{i}").into(),
                    value: "x".into(),
                    ..Default::default()
                })
                .await;
        }
        if p.delete_range(DeleteRangeRequest {
            key: prefix.clone().into(),
            range_end: prefix_end(prefix.as_bytes()).into(),
            ..Default::default()
        })
        .await
        .is_ok()
        {
            c.range_deletes.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the bank on the standby, one range per read: all accounts and the
/// total, or none (not replicated yet); unreachable during an outage.
async fn standby_reader(s: Client, stop: Arc<AtomicBool>, c: Arc<Counters>) {
    let total = START_BALANCE * ACCOUNTS as i64;
    while !stop.load(Ordering::Relaxed) {
        let resp = s
            .range(RangeRequest {
                key: "/bank/".into(),
                range_end: prefix_end(b"/bank/").into(),
                ..Default::default()
            })
            .await;
        let Ok(resp) = resp else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        c.standby_reads.fetch_add(1, Ordering::Relaxed);
        if !resp.kvs.is_empty() {
            c.standby_full_reads.fetch_add(1, Ordering::Relaxed);
            let rev = resp.header.map(|h| h.revision).unwrap_or_default();
            if let Some(v) = bank_violation(&resp.kvs, rev, ACCOUNTS, total) {
                c.violations.lock().unwrap().push(v);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The entries of a WAL at or below its last persisted commit index: raft
/// committed them, so every member that holds one holds the same.
fn committed_entries(wal_dir: &Path) -> BTreeMap<u64, raftpb::Entry> {
    let (mut entries, commit) = wal_entries_and_commit(wal_dir);
    let _ = entries.split_off(&(commit + 1));
    entries
}

/// Acked ⇒ durable: our committed entries equal a member's on every index
/// both hold; returns how many were compared.
fn check_durable(ours: &Path, primary: &EtcdCluster) -> usize {
    let ours = committed_entries(&ours.join("member/wal"));
    let mut compared = 0;
    for i in 0..primary.len() {
        let theirs = committed_entries(&primary.data_dir(i).unwrap().join("member/wal"));
        for (idx, e) in &ours {
            if let Some(t) = theirs.get(idx) {
                assert_eq!(
                    (e.term, e.r#type, e.data.as_deref().unwrap_or_default()),
                    (t.term, t.r#type, t.data.as_deref().unwrap_or_default()),
                    "committed entry {idx} in our log differs from member {i}'s"
                );
                compared += 1;
            }
        }
    }
    compared
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// A running member of `primary` that is (`leader`) or is not its leader.
fn pick_member(primary: &mut EtcdCluster, leader: bool) -> usize {
    let l = primary.leader().expect("a leader");
    if leader {
        return l;
    }
    (0..primary.len())
        .find(|&i| i != l && primary.is_running(i).unwrap_or(false))
        .expect("a running follower")
}

/// Runs `schedule` against a fresh primary and standby of `version`.
fn chaos(version: EtcdVersion, schedule: &Schedule, label: &str) {
    let out_dir = etcd_standby_testkit::workspace_root()
        .join("target")
        .join("chaos");
    std::fs::create_dir_all(&out_dir).unwrap();
    let file = out_dir.join(format!("{label}-{}.jsonl", version.as_str()));
    std::fs::write(&file, schedule.to_json_lines()).unwrap();
    eprintln!(
        "chaos {label} on etcd {}: {} faults {:?} over {} s; schedule in {} (replay with \
         `cargo xtask test --chaos --replay FILE`)",
        version.as_str(),
        schedule.steps.len(),
        schedule.counts(),
        schedule.end_ms() / 1000,
        file.display()
    );
    let mut primary = EtcdCluster::start(version, 3, ClusterOptions::default()).unwrap();
    let mut standby = EtcdCluster::start(version, 1, ClusterOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("r");
    let mut r = Replicator::start(&primary, &standby, &data, &[]);
    r.wait_joined(WAIT);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let c = Arc::new(Counters::default());
    let p = rt.block_on(connect(primary.client_urls(), None));
    let s = rt.block_on(connect(standby.client_urls(), None));
    rt.block_on(async {
        let init: Vec<RequestOp> = (0..ACCOUNTS)
            .map(|i| put(acct(i), START_BALANCE.to_string(), 0))
            .collect();
        p.txn(TxnRequest {
            compare: vec![],
            success: init,
            failure: vec![],
        })
        .await
        .unwrap();
    });
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        tasks.push(rt.spawn(bank_worker(
            p.clone(),
            schedule.seed ^ (w << 40),
            stop.clone(),
            c.clone(),
        )));
    }
    tasks.push(rt.spawn(lease_worker(
        p.clone(),
        schedule.seed ^ 0x1ea5e,
        stop.clone(),
        c.clone(),
    )));
    tasks.push(rt.spawn(scratch_worker(p.clone(), stop.clone(), c.clone())));
    tasks.push(rt.spawn(standby_reader(s.clone(), stop.clone(), c.clone())));

    // The faults.
    let t0 = Instant::now();
    let mut hit: BTreeMap<usize, usize> = BTreeMap::new(); // step → member
    let mut done: BTreeMap<&str, usize> = BTreeMap::new();
    let mut durable_checks = 0;
    let mut compared = 0;
    for (at, ev) in events(schedule) {
        let due = t0 + Duration::from_millis(at);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        match ev {
            Event::Start(i) => {
                let f = schedule.steps[i].fault;
                *done.entry(f.name()).or_default() += 1;
                match f {
                    Fault::KillReplicator => {
                        r.kill();
                        compared += check_durable(&data, &primary);
                        durable_checks += 1;
                    }
                    Fault::PauseReplicator => signal(r.pid().unwrap(), "-STOP"),
                    Fault::KillPrimaryLeader | Fault::KillPrimaryFollower => {
                        let m = pick_member(&mut primary, f == Fault::KillPrimaryLeader);
                        primary.kill_member(m).unwrap();
                        hit.insert(i, m);
                    }
                    Fault::PausePrimaryLeader => {
                        let m = pick_member(&mut primary, true);
                        signal(primary.pid(m).unwrap().unwrap(), "-STOP");
                        hit.insert(i, m);
                    }
                    Fault::StandbyOutage => standby.kill_member(0).unwrap(),
                    Fault::Compact => {
                        rt.block_on(async {
                            if let Ok(resp) = p
                                .range(RangeRequest {
                                    key: "/bank/acct00".into(),
                                    ..Default::default()
                                })
                                .await
                                && let Some(h) = resp.header
                            {
                                let _ = p.compact(h.revision, false).await;
                            }
                        });
                    }
                }
            }
            Event::End(i) => match schedule.steps[i].fault {
                Fault::KillReplicator => r.restart(),
                Fault::PauseReplicator => signal(r.pid().unwrap(), "-CONT"),
                Fault::KillPrimaryLeader | Fault::KillPrimaryFollower => {
                    primary.restart_member(hit[&i]).unwrap()
                }
                Fault::PausePrimaryLeader => {
                    signal(primary.pid(hit[&i]).unwrap().unwrap(), "-CONT")
                }
                Fault::StandbyOutage => standby.restart_member(0).unwrap(),
                Fault::Compact => {}
            },
        }
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    // Every fault is over. The last leases expire (at most 5 s TTL), so
    // the end state holds still; replay catches up; then the end checks.
    rt.block_on(async {
        let start = Instant::now();
        while p
            .lease_leases()
            .await
            .map_or(true, |l| !l.leases.is_empty())
        {
            assert!(
                start.elapsed() < WAIT,
                "the workload's leases never expired"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    r.wait_replayed(WAIT);
    assert_verified(&primary, &standby, &[], &r, "after the chaos");
    r.kill();
    compared += check_durable(&data, &primary);
    durable_checks += 1;
    let v = c.violations.lock().unwrap();
    eprintln!(
        "chaos {label} on etcd {}: faults {done:?}; {} transfers, {} leases, {} range deletes; \
         {} standby reads ({} with the bank) checked, {} durability checks over {compared} \
         committed entries, verify clean",
        version.as_str(),
        c.transfers.load(Ordering::Relaxed),
        c.leases.load(Ordering::Relaxed),
        c.range_deletes.load(Ordering::Relaxed),
        c.standby_reads.load(Ordering::Relaxed),
        c.standby_full_reads.load(Ordering::Relaxed),
        durable_checks,
    );
    assert!(
        c.transfers.load(Ordering::Relaxed) > 0,
        "no transfer succeeded"
    );
    assert!(
        c.standby_full_reads.load(Ordering::Relaxed) > 0,
        "the standby was never read"
    );
    assert!(
        v.is_empty(),
        "{} reads of the standby broke the bank invariant; first: {:?}",
        v.len(),
        &v[..v.len().min(5)]
    );
}

/// The schedule for a run: a file to replay, or drawn from a seed.
fn schedule_from_env(default_seed: u64, default_ms: u64) -> (Schedule, String) {
    if let Some(f) = std::env::var_os("ETCD_STANDBY_CHAOS_REPLAY") {
        let s = Schedule::read(Path::new(&f)).unwrap();
        return (s, "replay".into());
    }
    let seed = std::env::var("ETCD_STANDBY_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_seed);
    let ms = std::env::var("ETCD_STANDBY_CHAOS_MINUTES")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(default_ms, |m| (m * 60_000.0) as u64);
    (Schedule::generate(seed, ms), format!("seed-{seed}"))
}

#[test]
fn chaos_short_fixed_schedule_keeps_the_standby_consistent_3_5() {
    let s = Schedule::generate(chaos::SHORT_SEED_3_5, chaos::SHORT_MS);
    chaos(EtcdVersion::V3_5, &s, "short");
}

#[test]
fn chaos_short_fixed_schedule_keeps_the_standby_consistent_3_4() {
    let s = Schedule::generate(chaos::SHORT_SEED_3_4, chaos::SHORT_MS);
    chaos(EtcdVersion::V3_4, &s, "short");
}

/// `cargo xtask test --chaos`: a longer run, both versions in turn.
#[test]
#[ignore = "long: run with `cargo xtask test --chaos`"]
fn chaos_campaign() {
    let (schedule, label) = schedule_from_env(0xc4a05, 5 * 60_000);
    let versions = match std::env::var("ETCD_STANDBY_CHAOS_VERSIONS").as_deref() {
        Ok("3.4") => vec![EtcdVersion::V3_4],
        Ok("3.5") => vec![EtcdVersion::V3_5],
        _ => vec![EtcdVersion::V3_5, EtcdVersion::V3_4],
    };
    for v in versions {
        chaos(v, &schedule, &label);
    }
}
