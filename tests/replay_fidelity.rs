//! Replay fidelity against real etcd 3.4.23 and 3.5.1: an entry changes the
//! standby iff it changed the primary (ARCHITECTURE.md, Architecture Invariants 3–6).
//!
//! * differential: seeded random workloads (KV, txns with every compare
//!   target and both branches, nested txns, leases granted / attached /
//!   revoked / expiring, users / roles / permissions, auth with denied
//!   writes) end with `verify` clean;
//! * NOSPACE: writes refused by the quota or the capped applier never reach
//!   the standby;
//! * snapshot reconcile after the leader compacted past the learner, and the
//!   mass-delete guard;
//! * atomicity: a bank-transfer invariant holds in every read of the standby;
//! * exactly once across SIGKILLs: counters incremented by CAS txns match.
//!
//! `ETCD_STANDBY_SOAK=1` (`cargo xtask test --soak`) runs more seeds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_standby_client::pb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, compare,
};
use etcd_standby_client::{Client, ClientError, EtcdError, KeyValue, authpb, prefix_end};
use etcd_standby_integration::fidelity::{
    Replicator, all_keys, assert_verified, bank_violation, connect, del_op, del_prefix_op, get_op,
    put_op, revision, soak, txn, txn_op,
};
use etcd_standby_integration::load::{Rng, cluster_raft_index, varied_writes};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion};

/// Hang guard for waits (not a speed assertion).
const WAIT: Duration = Duration::from_secs(90);

const ROOT: (&str, &str) = ("root", "root-pw");
const ALICE: (&str, &str) = ("alice", "alice-pw");
const BOB: (&str, &str) = ("bob", "bob-pw");
/// The replicator's dedicated user on the standby (never on the primary).
const STANDBY_USER: &str = "etcd-standby";
const STANDBY_PW: &str = "standby-pw";
const STANDBY_FLAGS: [&str; 4] = [
    "--standby-user",
    STANDBY_USER,
    "--standby-password",
    STANDBY_PW,
];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

fn start(version: EtcdVersion, members: usize, opts: ClusterOptions) -> EtcdCluster {
    EtcdCluster::start(version, members, opts).expect("start etcd")
}

// ------------------------------------------------------------ workload

/// Outcome counters of a workload.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    denied: AtomicUsize,
    rejected: AtomicUsize,
    unavailable: AtomicUsize,
    txn_then: AtomicUsize,
    txn_else: AtomicUsize,
    errors: Mutex<BTreeMap<String, usize>>,
}

impl Tally {
    fn record<T>(&self, r: &Result<T, ClientError>) {
        match r {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if e.is_permission_denied() {
                    self.denied.fetch_add(1, Ordering::Relaxed);
                } else if e.is_unavailable() || e.is_timeout() {
                    self.unavailable.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                }
                let what = e
                    .message()
                    .map_or_else(|| e.to_string(), str::to_owned)
                    .chars()
                    .take(60)
                    .collect::<String>();
                *self.errors.lock().unwrap().entry(what).or_default() += 1;
            }
        }
    }

    fn summary(&self) -> String {
        format!(
            "ok {} denied {} rejected {} unavailable {} txn then {} else {} errors {:?}",
            self.ok.load(Ordering::Relaxed),
            self.denied.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
            self.unavailable.load(Ordering::Relaxed),
            self.txn_then.load(Ordering::Relaxed),
            self.txn_else.load(Ordering::Relaxed),
            self.errors.lock().unwrap()
        )
    }
}

/// State shared by the workers of one workload.
#[derive(Default)]
struct Shared {
    /// Every lease granted (some since revoked or expired).
    leases: Mutex<Vec<i64>>,
    /// Leases granted with a TTL of a few seconds (they expire).
    short: Mutex<Vec<i64>>,
    tally: Tally,
    users_added: AtomicUsize,
}

const PREFIXES: [&str; 4] = ["/app/", "/registry/", "/locks/", "/other/"];
const ROLES: [&str; 4] = ["app-rw", "reader", "locks-w", "temp"];
const USERS: [&str; 3] = ["alice", "bob", "dave"];

fn key(r: &mut Rng) -> String {
    format!("{}k{:03}", PREFIXES[r.below(4) as usize], r.below(120))
}

fn value(r: &mut Rng) -> Bytes {
    let len = if r.below(12) == 0 {
        2048
    } else {
        8 + r.below(80) as usize
    };
    let b = b'a' + (r.next_u64() % 26) as u8;
    let mut v = vec![b; len];
    // A distinguishable tail so equal-looking values differ.
    v.extend_from_slice(format!("-{}", r.below(1_000_000)).as_bytes());
    Bytes::from(v)
}

fn pick_lease(r: &mut Rng, sh: &Shared) -> i64 {
    let leases = sh.leases.lock().unwrap();
    if leases.is_empty() || r.below(5) == 0 {
        // Sometimes a lease that never existed: refused at apply time.
        return if r.below(3) == 0 {
            0x7fff_0000 + r.below(100) as i64
        } else {
            0
        };
    }
    leases[leases.len() - 1 - r.below(leases.len().min(8) as u64) as usize]
}

async fn read_kv(c: &Client, key: &str) -> Option<KeyValue> {
    c.range(RangeRequest {
        key: Bytes::from(key.to_owned()),
        ..Default::default()
    })
    .await
    .ok()
    .and_then(|r| r.kvs.into_iter().next())
}

/// A compare on `key` (or, sometimes, a range of keys) with a random
/// target and result; the operand is usually taken from `kv` (the key as
/// last read) so both branches are taken.
fn make_compare(r: &mut Rng, sh: &Shared, key: &str, kv: Option<&KeyValue>) -> Compare {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let exact = r.below(3) != 0;
    let result = match r.below(6) {
        0..=2 => CompareResult::Equal,
        3 => CompareResult::Greater,
        4 => CompareResult::Less,
        _ => CompareResult::NotEqual,
    };
    let jitter = |r: &mut Rng, v: i64| if exact { v } else { v + r.below(5) as i64 - 2 };
    let (target, union) = match r.below(5) {
        0 => (
            CompareTarget::Version,
            TargetUnion::Version(jitter(r, kv.map_or(0, |k| k.version))),
        ),
        1 => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(jitter(r, kv.map_or(0, |k| k.create_revision))),
        ),
        2 => (
            CompareTarget::Mod,
            TargetUnion::ModRevision(jitter(r, kv.map_or(0, |k| k.mod_revision))),
        ),
        3 => (
            CompareTarget::Value,
            TargetUnion::Value(match kv {
                Some(k) if exact => k.value.clone(),
                _ => value(r),
            }),
        ),
        _ => (
            CompareTarget::Lease,
            TargetUnion::Lease(match kv {
                Some(k) if exact => k.lease,
                _ => pick_lease(r, sh),
            }),
        ),
    };
    let (key, range_end) = if r.below(8) == 0 {
        // A range compare over ten keys of the prefix.
        let p = &key[..key.len() - 1];
        (
            Bytes::from(p.to_owned()),
            Bytes::from(prefix_end(p.as_bytes())),
        )
    } else {
        (Bytes::from(key.to_owned()), Bytes::new())
    };
    Compare {
        result: result as i32,
        target: target as i32,
        key,
        range_end,
        target_union: Some(union),
    }
}

/// 1–3 ops on distinct keys for one txn branch.
fn branch_ops(r: &mut Rng, sh: &Shared, used: &mut BTreeSet<String>) -> Vec<RequestOp> {
    let mut ops = Vec::new();
    for _ in 0..=r.below(3) {
        let k = key(r);
        if !used.insert(k.clone()) {
            continue;
        }
        ops.push(match r.below(10) {
            0..=4 => put_op(
                k,
                value(r),
                if r.below(4) == 0 {
                    pick_lease(r, sh)
                } else {
                    0
                },
            ),
            5 | 6 => del_op(k),
            7 => get_op(k),
            8 => RequestOp {
                request: Some(etcd_standby_client::pb::request_op::Request::RequestPut(
                    PutRequest {
                        key: Bytes::from(k),
                        ignore_value: true,
                        ..Default::default()
                    },
                )),
            },
            _ => put_op(k, value(r), pick_lease(r, sh)),
        });
    }
    ops
}

async fn random_txn(c: &Client, r: &mut Rng, sh: &Shared) -> Result<bool, ClientError> {
    let k = key(r);
    let kv = read_kv(c, &k).await;
    let mut cmps = vec![make_compare(r, sh, &k, kv.as_ref())];
    if r.below(3) == 0 {
        let k2 = key(r);
        let kv2 = read_kv(c, &k2).await;
        cmps.push(make_compare(r, sh, &k2, kv2.as_ref()));
    }
    let mut used = BTreeSet::new();
    let mut success = branch_ops(r, sh, &mut used);
    let mut used_else = BTreeSet::new();
    let mut failure = branch_ops(r, sh, &mut used_else);
    if r.below(8) == 0 {
        // A nested txn on keys of its own.
        let nk = format!("/other/nested{:02}", r.below(20));
        let nkv = read_kv(c, &nk).await;
        let mut nused = BTreeSet::new();
        let inner = txn(
            vec![make_compare(r, sh, &nk, nkv.as_ref())],
            vec![put_op(nk.clone(), value(r), 0)],
            branch_ops(r, sh, &mut nused),
        );
        success.push(txn_op(inner));
    }
    if r.below(6) == 0 {
        failure.push(del_prefix_op(&format!(
            "/locks/k{}{}",
            r.below(1),
            r.below(10)
        )));
    }
    let resp = c.txn(txn(cmps, success, failure)).await?;
    Ok(resp.succeeded)
}

/// One random admin (auth store) request; `root` may be an unauthenticated
/// client while auth is off.
async fn admin_op(c: &Client, r: &mut Rng, sh: &Shared) -> Result<(), ClientError> {
    let role = ROLES[r.below(4) as usize];
    let user = USERS[r.below(3) as usize];
    let p = PREFIXES[r.below(4) as usize];
    match r.below(10) {
        0..=2 => {
            let (key, range_end) = if r.below(3) == 0 {
                (format!("{p}k{:03}", r.below(120)), Vec::new())
            } else {
                (p.to_owned(), prefix_end(p.as_bytes()))
            };
            let perm = authpb::Permission {
                perm_type: r.below(3) as i32,
                key: key.into(),
                range_end: range_end.into(),
            };
            c.role_grant_permission(role, perm).await.map(|_| ())
        }
        3 | 4 => c
            .role_revoke_permission(role, p.to_owned(), prefix_end(p.as_bytes()))
            .await
            .map(|_| ()),
        5 => c.user_grant_role(user, role).await.map(|_| ()),
        6 => {
            // Keep alice's and bob's base roles mostly in place.
            if role == "app-rw" && user == "alice" && r.below(3) != 0 {
                return Ok(());
            }
            c.user_revoke_role(user, role).await.map(|_| ())
        }
        7 => {
            if r.below(2) == 0 {
                c.role_add("temp").await.map(|_| ())
            } else {
                c.role_delete("temp").await.map(|_| ())
            }
        }
        8 => {
            if r.below(2) == 0 {
                sh.users_added.fetch_add(1, Ordering::Relaxed);
                c.user_add("dave", "dave-pw", false).await.map(|_| ())
            } else {
                c.user_delete("dave").await.map(|_| ())
            }
        }
        _ => c
            .user_change_password("dave", &format!("dave-{}", r.below(100)))
            .await
            .map(|_| ()),
    }
}

/// One random request.
async fn random_op(c: &Client, r: &mut Rng, sh: &Shared, admin: bool) {
    let t = &sh.tally;
    match r.below(100) {
        0..=27 => {
            let lease = if r.below(4) == 0 {
                pick_lease(r, sh)
            } else {
                0
            };
            let res = c
                .put(PutRequest {
                    key: key(r).into(),
                    value: value(r),
                    lease,
                    prev_kv: r.below(2) == 0,
                    ..Default::default()
                })
                .await;
            t.record(&res);
        }
        28..=31 => {
            // ignore_value / ignore_lease (a missing key is refused at apply).
            let iv = r.below(2) == 0;
            let res = c
                .put(PutRequest {
                    key: key(r).into(),
                    value: if iv { Bytes::new() } else { value(r) },
                    lease: if iv { pick_lease(r, sh) } else { 0 },
                    ignore_value: iv,
                    ignore_lease: !iv,
                    ..Default::default()
                })
                .await;
            t.record(&res);
        }
        32..=39 => {
            let res = c
                .delete_range(DeleteRangeRequest {
                    key: key(r).into(),
                    prev_kv: r.below(2) == 0,
                    ..Default::default()
                })
                .await;
            t.record(&res);
        }
        40..=42 => {
            let p = format!("{}k0{}", PREFIXES[r.below(4) as usize], r.below(10));
            let res = c
                .delete_range(DeleteRangeRequest {
                    key: Bytes::from(p.clone()),
                    range_end: Bytes::from(prefix_end(p.as_bytes())),
                    ..Default::default()
                })
                .await;
            t.record(&res);
        }
        43..=67 => {
            let res = random_txn(c, r, sh).await;
            if let Ok(s) = &res {
                if *s {
                    t.txn_then.fetch_add(1, Ordering::Relaxed);
                } else {
                    t.txn_else.fetch_add(1, Ordering::Relaxed);
                }
            }
            t.record(&res);
        }
        68..=73 => {
            let short = r.below(2) == 0;
            let ttl = if short { 2 + r.below(2) as i64 } else { 300 };
            let res = c.lease_grant(0, ttl).await;
            if let Ok(g) = &res {
                sh.leases.lock().unwrap().push(g.id);
                if short {
                    sh.short.lock().unwrap().push(g.id);
                }
                // Attach a couple of keys right away.
                for _ in 0..=r.below(2) {
                    let res = c.put(PutRequest {
                        key: key(r).into(),
                        value: value(r),
                        lease: g.id,
                        ..Default::default()
                    });
                    t.record(&res.await);
                }
            }
            t.record(&res);
        }
        74..=77 => {
            let id = pick_lease(r, sh);
            let res = c.lease_revoke(id).await;
            t.record(&res);
        }
        78..=87 if admin => {
            let res = admin_op(c, r, sh).await;
            t.record(&res);
        }
        _ => {
            let res = c
                .put(PutRequest {
                    key: key(r).into(),
                    value: value(r),
                    ..Default::default()
                })
                .await;
            t.record(&res);
        }
    }
}

/// Runs `ops` random requests over `clients` (one worker each; `true` =
/// may issue admin requests), seeded by `seed`.
async fn run_phase(clients: Vec<(Client, bool)>, ops: usize, seed: u64, sh: Arc<Shared>) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (w, (c, admin)) in clients.into_iter().enumerate() {
        let next = next.clone();
        let sh = sh.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = Rng(seed.wrapping_mul(0x1000_0001) ^ ((w as u64 + 1) << 40));
            while next.fetch_add(1, Ordering::Relaxed) < ops {
                random_op(&c, &mut r, &sh, admin).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Users, roles and permissions before auth is enabled.
async fn auth_setup(c: &Client) {
    c.user_add(ROOT.0, ROOT.1, false).await.unwrap();
    c.user_grant_role(ROOT.0, "root").await.unwrap();
    for role in ["app-rw", "reader", "locks-w"] {
        c.role_add(role).await.unwrap();
    }
    let perm = |t: authpb::permission::Type, p: &str| authpb::Permission {
        perm_type: t as i32,
        key: p.to_owned().into(),
        range_end: prefix_end(p.as_bytes()).into(),
    };
    use authpb::permission::Type;
    c.role_grant_permission("app-rw", perm(Type::Readwrite, "/app/"))
        .await
        .unwrap();
    c.role_grant_permission("reader", perm(Type::Read, "/app/"))
        .await
        .unwrap();
    c.role_grant_permission("reader", perm(Type::Read, "/registry/"))
        .await
        .unwrap();
    c.role_grant_permission("locks-w", perm(Type::Write, "/locks/"))
        .await
        .unwrap();
    c.user_add(ALICE.0, ALICE.1, false).await.unwrap();
    c.user_grant_role(ALICE.0, "app-rw").await.unwrap();
    c.user_add(BOB.0, BOB.1, false).await.unwrap();
    c.user_grant_role(BOB.0, "reader").await.unwrap();
    c.user_grant_role(BOB.0, "locks-w").await.unwrap();
    // A user without a password (etcd 3.4+).
    c.user_add("carol", "", true).await.unwrap();
    c.user_grant_role("carol", "reader").await.unwrap();
}

/// Waits until every short lease is gone from the primary (expired and
/// revoked by its leader).
async fn wait_short_leases_gone(c: &Client, sh: &Shared) {
    let short = sh.short.lock().unwrap().clone();
    let start = Instant::now();
    for id in short {
        loop {
            let ttl = c.lease_time_to_live(id, false).await.map(|r| r.ttl);
            if matches!(ttl, Ok(-1)) || ttl.as_ref().is_err_and(ClientError::is_not_found) {
                break;
            }
            assert!(
                start.elapsed() < WAIT,
                "lease {id:x} never expired: {ttl:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The differential workload: no auth, then auth enabled with alice / bob
/// (some writes denied) and root changing permissions, then (unless
/// `end_enabled`) auth disabled and more writes.
async fn differential_workload(eps: Vec<String>, seed: u64, end_enabled: bool) -> Arc<Shared> {
    let sh = Arc::new(Shared::default());
    let anon = connect(eps.clone(), None).await;
    auth_setup(&anon).await;
    run_phase(
        vec![
            (anon.clone(), true),
            (anon.clone(), false),
            (anon.clone(), false),
            (anon.clone(), false),
        ],
        500,
        seed,
        sh.clone(),
    )
    .await;
    // A compaction in the middle (not replayed; must not matter).
    let rev = revision(&anon).await;
    anon.compact(rev - 10, false).await.unwrap();
    anon.auth_enable().await.unwrap();
    let root = connect(eps.clone(), Some(ROOT)).await;
    let alice = connect(eps.clone(), Some(ALICE)).await;
    let bob = connect(eps.clone(), Some(BOB)).await;
    let denied_before = sh.tally.denied.load(Ordering::Relaxed);
    run_phase(
        vec![
            (root.clone(), true),
            (root.clone(), false),
            (alice.clone(), false),
            (alice, false),
            (bob.clone(), false),
            (bob, false),
        ],
        700,
        seed ^ 0xa5a5,
        sh.clone(),
    )
    .await;
    assert!(
        sh.tally.denied.load(Ordering::Relaxed) > denied_before,
        "no write was denied with auth on: {}",
        sh.tally.summary()
    );
    if end_enabled {
        run_phase(vec![(root.clone(), true)], 150, seed ^ 0x5a5a, sh.clone()).await;
        wait_short_leases_gone(&root, &sh).await;
    } else {
        root.auth_disable().await.unwrap();
        run_phase(
            vec![(anon.clone(), true), (anon.clone(), false)],
            200,
            seed ^ 0x5a5a,
            sh.clone(),
        )
        .await;
        wait_short_leases_gone(&anon, &sh).await;
    }
    sh
}

fn differential(version: EtcdVersion, members: usize, seed: u64) {
    let started = Instant::now();
    let primary = start(version, members, ClusterOptions::default());
    let standby = start(version, 1, ClusterOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let mut r = Replicator::start(&primary, &standby, &dir.path().join("r"), &STANDBY_FLAGS);
    r.wait_joined(WAIT);
    let sh = rt().block_on(differential_workload(primary.client_urls(), seed, false));
    eprintln!(
        "seed {seed}: {} leases ({} short) {}",
        sh.leases.lock().unwrap().len(),
        sh.short.lock().unwrap().len(),
        sh.tally.summary()
    );
    let t = &sh.tally;
    assert!(
        t.txn_then.load(Ordering::Relaxed) > 0 && t.txn_else.load(Ordering::Relaxed) > 0,
        "both txn branches: {}",
        t.summary()
    );
    r.wait_replayed(WAIT);
    assert_verified(
        &primary,
        &standby,
        &STANDBY_FLAGS,
        &r,
        &format!("etcd {} seed {seed}", version.as_str()),
    );
    eprintln!(
        "etcd {} seed {seed}: clean in {:.1}s",
        version.as_str(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn differential_3_4_seed_1() {
    differential(EtcdVersion::V3_4, 1, 1);
}

#[test]
fn differential_3_4_seed_2() {
    differential(EtcdVersion::V3_4, 1, 2);
}

#[test]
fn differential_3_5_seed_1() {
    differential(EtcdVersion::V3_5, 3, 1);
}

#[test]
fn differential_3_5_seed_2() {
    differential(EtcdVersion::V3_5, 3, 2);
}

/// Seeds 3–8 with `ETCD_STANDBY_SOAK=1`.
fn differential_soak(version: EtcdVersion, members: usize) {
    if !soak() {
        eprintln!("skipped: set ETCD_STANDBY_SOAK=1 for more seeds");
        return;
    }
    for seed in 3..=8 {
        differential(version, members, seed);
    }
}

#[test]
fn differential_soak_seeds_3_4() {
    differential_soak(EtcdVersion::V3_4, 1);
}

#[test]
fn differential_soak_seeds_3_5() {
    differential_soak(EtcdVersion::V3_5, 3);
}

/// Auth stays enabled at the end: the replicator writes to an auth-enabled
/// standby as its own root user; the clusters are compared with root
/// clients, then auth is disabled and `verify` runs.
/// `configured`: the replicator's standby user as flags; `false`: none, so
/// `run` provisions its own identity (issue: auth enabled later on the
/// primary must not halt a replicator that was set up without a user).
fn differential_auth_enabled(version: EtcdVersion, seed: u64, configured: bool) {
    let primary = start(version, 1, ClusterOptions::default());
    let standby = start(version, 1, ClusterOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("r");
    let flags: &[&str] = if configured { &STANDBY_FLAGS } else { &[] };
    let mut r = Replicator::start(&primary, &standby, &data, flags);
    r.wait_joined(WAIT);
    let rt = rt();
    let sh = rt.block_on(differential_workload(primary.client_urls(), seed, true));
    eprintln!("seed {seed}: {}", sh.tally.summary());
    r.wait_replayed(WAIT);
    let (standby_user, standby_pw) = if configured {
        (STANDBY_USER.to_owned(), STANDBY_PW.to_owned())
    } else {
        use std::os::unix::fs::PermissionsExt;
        let file = data.join("standby-identity.json");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the saved password is private");
        let id: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert!(
            r.log().contains("own standby identity"),
            "{}",
            r.log_tail(20)
        );
        let pw = id["password"].as_str().unwrap().to_owned();
        assert!(!r.log().contains(&pw), "the password was logged");
        (id["user"].as_str().unwrap().to_owned(), pw)
    };
    let verify_flags = [
        "--standby-user",
        standby_user.as_str(),
        "--standby-password",
        standby_pw.as_str(),
    ];
    rt.block_on(async {
        let p = connect(primary.client_urls(), Some(ROOT)).await;
        let s = connect(
            standby.client_urls(),
            Some((standby_user.as_str(), standby_pw.as_str())),
        )
        .await;
        assert!(s.auth_status().await.is_ok_and(|a| a.enabled) || version == EtcdVersion::V3_4);
        let (pk, sk) = (all_keys(&p).await, all_keys(&s).await);
        let differing: Vec<_> = pk
            .iter()
            .filter(|(k, v)| sk.get(*k) != Some(v))
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .chain(
                sk.keys()
                    .filter(|k| !pk.contains_key(*k))
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
            )
            .collect();
        assert!(
            differing.is_empty(),
            "keys differ with auth on: {differing:?}"
        );
        let mut pu = p.user_list().await.unwrap().users;
        let mut su = s.user_list().await.unwrap().users;
        su.retain(|u| *u != standby_user);
        pu.sort();
        su.sort();
        assert_eq!(pu, su, "users");
        let mut pr = p.role_list().await.unwrap().roles;
        let mut sr = s.role_list().await.unwrap().roles;
        pr.sort();
        sr.sort();
        assert_eq!(pr, sr, "roles");
        for role in &pr {
            let a = p.role_get(role).await.unwrap().perm;
            let b = s.role_get(role).await.unwrap().perm;
            assert_eq!(a, b, "permissions of role {role}");
        }
        let mut pl: Vec<i64> = p
            .lease_leases()
            .await
            .unwrap()
            .leases
            .iter()
            .map(|l| l.id)
            .collect();
        let mut sl: Vec<i64> = s
            .lease_leases()
            .await
            .unwrap()
            .leases
            .iter()
            .map(|l| l.id)
            .collect();
        pl.sort_unstable();
        sl.sort_unstable();
        assert_eq!(pl, sl, "leases");
        // The standby's root works with the primary's password.
        connect(standby.client_urls(), Some(ROOT)).await;
        p.auth_disable().await.unwrap();
    });
    r.wait_replayed(WAIT);
    assert_verified(
        &primary,
        &standby,
        &verify_flags,
        &r,
        "after disabling auth",
    );
    if !configured {
        assert_no_secret_in_any_output(&mut r, &primary, &standby, (&standby_user, &standby_pw));
    }
}

/// Every secret the run handled: the known passwords, the replicator's own,
/// and every password, hash and token in the raft log (read with
/// `--show-secrets`; a bcrypt hash both as logged, base64, and decoded).
fn secrets_of_the_run(data: &std::path::Path, own_pw: &str) -> BTreeSet<String> {
    fn walk(v: &serde_json::Value, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let secret = matches!(
                        k.as_str(),
                        "password"
                            | "hashedPassword"
                            | "hashed_password"
                            | "simple_token"
                            | "token"
                    );
                    match v.as_str() {
                        Some(s) if secret && !s.is_empty() => {
                            out.insert(s.to_owned());
                            if k == "hashedPassword" {
                                out.insert(String::from_utf8_lossy(&base64(s)).into_owned());
                            }
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out: BTreeSet<String> = [ROOT.1, ALICE.1, BOB.1, "dave-pw", own_pw]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let dump = cli(&[
        "wal",
        "dump",
        "--json",
        "--show-secrets",
        &data.display().to_string(),
    ]);
    for line in dump.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            walk(&v, &mut out);
        }
    }
    out.retain(|s| s.len() >= 6);
    out
}

/// Standard base64 (padding ignored; other characters skipped).
fn base64(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in s.bytes() {
        let Some(v) = A.iter().position(|&a| a == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// `etcd-standby ARGS`: stdout and stderr together.
fn cli(args: &[&str]) -> String {
    cli_env(args, &[])
}

fn cli_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(etcd_standby_integration::etcd_standby_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Secrets never appear in the replicator's log, `/metrics`, `/status`,
/// `status`, `verify`, the WAL tools' default output or `config print`;
/// the files of its data dir are private (the WAL holds etcd 3.4's
/// plaintext passwords, as etcd's own does).
fn assert_no_secret_in_any_output(
    r: &mut Replicator,
    primary: &EtcdCluster,
    standby: &EtcdCluster,
    (user, pw): (&str, &str),
) {
    use std::os::unix::fs::PermissionsExt;
    let data = r.data_dir.clone();
    let d = data.display().to_string();
    let secrets = secrets_of_the_run(&data, pw);
    assert!(
        secrets.len() >= 5,
        "the log holds the run's secrets: {secrets:?}"
    );
    let mut outputs: Vec<(String, String)> = Vec::new();
    for path in ["/metrics", "/status", "/healthz", "/readyz", "/activez"] {
        let body = r.get(path).map(|(_, b)| b).unwrap_or_default();
        outputs.push((format!("GET {path}"), body));
    }
    let admin = r.admin.clone();
    for w in ["simple", "json", "table"] {
        outputs.push((
            format!("status -w {w}"),
            cli(&["status", "--admin", &admin, "-w", w]),
        ));
    }
    for args in [
        &["wal", "dump", &d][..],
        &["wal", "dump", "--json", &d],
        &["wal", "dump", "--json", "--outcome", &d],
        &["wal", "stats", "--json", &d],
        &["wal", "verify", &d],
    ] {
        outputs.push((args.join(" "), cli(args)));
    }
    let (src, dst) = (primary.client_endpoints(), standby.client_endpoints());
    let verify_args = [
        "verify",
        "--source-endpoints",
        &src,
        "--standby-endpoints",
        &dst,
        "--standby-user",
        user,
        "-w",
        "json",
    ];
    outputs.push((
        "verify".into(),
        cli_env(&verify_args, &[("ETCD_STANDBY_STANDBY_PASSWORD", pw)]),
    ));
    outputs.push((
        "config print".into(),
        cli_env(
            &[
                "config",
                "print",
                "--for",
                "run",
                "--",
                "--standby-endpoints",
                &dst,
                "--standby-user",
                user,
            ],
            &[
                ("ETCD_STANDBY_STANDBY_PASSWORD", pw),
                ("ETCD_STANDBY_SOURCE_PASSWORD", ROOT.1),
            ],
        ),
    ));
    // The log last: after a clean shutdown, everything the process said.
    r.terminate();
    outputs.push(("replicator log".into(), r.log()));
    for (what, text) in &outputs {
        assert!(
            !text.is_empty() || what.starts_with("GET"),
            "{what} printed nothing"
        );
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret ({} chars) appears in {what}",
                secret.len()
            );
        }
    }
    // The data dir is private as etcd's (0700), and so are the WAL segments
    // (0600) that hold 3.4's plaintext passwords and 3.5's hashes.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    for e in std::fs::read_dir(data.join("member/wal"))
        .unwrap()
        .flatten()
    {
        assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
    }
}

#[test]
fn differential_auth_stays_enabled_3_5() {
    differential_auth_enabled(EtcdVersion::V3_5, 7, true);
}

/// No --standby-user configured, auth enabled later on the primary: replay
/// goes on with an identity of its own instead of halting.
#[test]
fn auth_enabled_later_without_a_standby_user_provisions_one_and_replay_continues_3_5() {
    differential_auth_enabled(EtcdVersion::V3_5, 11, false);
}

#[test]
fn auth_enabled_later_without_a_standby_user_provisions_one_and_replay_continues_3_4() {
    differential_auth_enabled(EtcdVersion::V3_4, 12, false);
}

// --------------------------------------------------------------- NOSPACE

/// With `with_auth`, auth is on from the start (root does the writes) and
/// alice, who may only read `/base/`, deletes keys while the alarm is
/// active (etcd's runtime-alarm applier skips auth checks) and after it
/// is disarmed (denied); auth is disabled at the end for `verify`.
fn nospace(version: EtcdVersion, with_auth: bool) {
    let primary = start(
        version,
        1,
        ClusterOptions {
            quota_backend_bytes: Some(1024 * 1024),
            ..Default::default()
        },
    );
    let standby = start(version, 1, ClusterOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let flags: &[&str] = if with_auth { &STANDBY_FLAGS } else { &[] };
    let mut r = Replicator::start(&primary, &standby, &dir.path().join("r"), flags);
    r.wait_joined(WAIT);
    let rt = rt();
    let rejected_keys = rt.block_on(async {
        let anon = connect(primary.client_urls(), None).await;
        let (c, alice) = if with_auth {
            anon.user_add(ROOT.0, ROOT.1, false).await.unwrap();
            anon.user_grant_role(ROOT.0, "root").await.unwrap();
            anon.role_add("base-r").await.unwrap();
            anon.role_grant_permission(
                "base-r",
                authpb::Permission {
                    perm_type: authpb::permission::Type::Read as i32,
                    key: "/base/".into(),
                    range_end: prefix_end(b"/base/").into(),
                },
            )
            .await
            .unwrap();
            anon.user_add(ALICE.0, ALICE.1, false).await.unwrap();
            anon.user_grant_role(ALICE.0, "base-r").await.unwrap();
            anon.auth_enable().await.unwrap();
            (
                connect(primary.client_urls(), Some(ROOT)).await,
                Some(connect(primary.client_urls(), Some(ALICE)).await),
            )
        } else {
            (anon, None)
        };
        let lease = c.lease_grant(0, 600).await.unwrap().id;
        for i in 0..40 {
            c.put(PutRequest {
                key: format!("/base/k{i:02}").into(),
                value: format!("v{i}").into(),
                lease: if i % 4 == 0 { lease } else { 0 },
                ..Default::default()
            })
            .await
            .unwrap();
        }
        // Fill concurrently until every writer is refused.
        let refused = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for w in 0..4 {
            let c = c.clone();
            let refused = refused.clone();
            tasks.push(tokio::spawn(async move {
                let mut misses = 0;
                for i in 0..400 {
                    let res = c
                        .put(PutRequest {
                            key: format!("/fill/{w}/{i:03}").into(),
                            value: vec![b'f'; 24 * 1024].into(),
                            ..Default::default()
                        })
                        .await;
                    match res {
                        Ok(_) => {}
                        Err(e) if e.etcd_error() == Some(EtcdError::NoSpace) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            misses += 1;
                            if misses >= 3 {
                                break;
                            }
                        }
                        Err(e) => panic!("fill put: {e}"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(refused.load(Ordering::Relaxed) > 0, "quota never reached");
        let alarms = c.alarm_list().await.unwrap().alarms;
        assert!(
            alarms
                .iter()
                .any(|a| a.alarm == etcd_standby_client::pb::AlarmType::Nospace as i32),
            "no NOSPACE alarm: {alarms:?}"
        );
        let mut rejected = Vec::new();
        // Refused by the quota check before the log.
        for i in 0..3 {
            let k = format!("/rejected/api{i}");
            let e = c
                .put(PutRequest {
                    key: k.clone().into(),
                    value: "x".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(e.etcd_error(), Some(EtcdError::NoSpace), "{e}");
            rejected.push(k);
        }
        // Shrink the db (the alarm stays): writes are now proposed and
        // refused by the capped applier, in the log.
        c.delete_range(DeleteRangeRequest {
            key: "/fill/".into(),
            range_end: prefix_end(b"/fill/").into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let rev = revision(&c).await;
        c.compact(rev, true).await.unwrap();
        for ep in primary.client_urls() {
            c.defragment(&ep).await.unwrap();
        }
        let index_before = cluster_raft_index(primary.client_urls()).await;
        for i in 0..4 {
            let k = format!("/rejected/capped{i}");
            let e = c
                .put(PutRequest {
                    key: k.clone().into(),
                    value: "x".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(e.etcd_error(), Some(EtcdError::NoSpace), "{e}");
            rejected.push(k);
        }
        let e = c
            .txn(txn(
                vec![],
                vec![put_op("/rejected/txn", "x", 0), del_op("/base/k01")],
                vec![],
            ))
            .await
            .unwrap_err();
        assert_eq!(e.etcd_error(), Some(EtcdError::NoSpace), "{e}");
        rejected.push("/rejected/txn".into());
        assert!(
            c.lease_grant(0, 60).await.is_err(),
            "lease grant under NOSPACE"
        );
        // These went through the log (refused at apply, not by the API).
        let index_after = cluster_raft_index(primary.client_urls()).await;
        assert!(
            index_after >= index_before + 6,
            "refused writes did not reach the log: {index_before} → {index_after}"
        );
        if let Some(alice) = &alice {
            let res = alice
                .delete_range(DeleteRangeRequest {
                    key: "/base/k10".into(),
                    ..Default::default()
                })
                .await;
            eprintln!("alice's delete under the alarm: {res:?}");
        }
        // Deletes and revokes still apply.
        c.delete_range(DeleteRangeRequest {
            key: "/base/k02".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        c.txn(txn(vec![], vec![del_op("/base/k03")], vec![]))
            .await
            .unwrap();
        c.lease_revoke(lease).await.unwrap();
        for a in c.alarm_list().await.unwrap().alarms {
            c.alarm_disarm(a.member_id, etcd_standby_client::pb::AlarmType::Nospace)
                .await
                .unwrap();
        }
        assert!(c.alarm_list().await.unwrap().alarms.is_empty());
        for i in 0..30 {
            c.put(PutRequest {
                key: format!("/after/k{i:02}").into(),
                value: format!("a{i}").into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        if let Some(alice) = &alice {
            let e = alice
                .delete_range(DeleteRangeRequest {
                    key: "/base/k11".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert!(e.is_permission_denied(), "{e}");
        }
        let l2 = c.lease_grant(0, 600).await.unwrap().id;
        c.txn(txn(
            vec![],
            vec![put_op("/after/leased", "l", l2), del_op("/base/k05")],
            vec![],
        ))
        .await
        .unwrap();
        if with_auth {
            c.auth_disable().await.unwrap();
        }
        rejected
    });
    r.wait_replayed(WAIT);
    assert_verified(&primary, &standby, flags, &r, "after NOSPACE");
    rt.block_on(async {
        let s = connect(standby.client_urls(), None).await;
        let keys = all_keys(&s).await;
        for k in &rejected_keys {
            assert!(
                !keys.contains_key(k.as_bytes()),
                "refused write {k} is on the standby"
            );
        }
        assert!(keys.contains_key(&b"/after/leased"[..]));
        // The txn that would have deleted it was refused.
        assert!(keys.contains_key(&b"/base/k01"[..]));
        assert!(!keys.contains_key(&b"/base/k02"[..]));
    });
}

#[test]
fn nospace_3_4() {
    nospace(EtcdVersion::V3_4, false);
}

#[test]
fn nospace_3_5() {
    nospace(EtcdVersion::V3_5, false);
}

#[test]
fn nospace_with_auth_3_4() {
    nospace(EtcdVersion::V3_4, true);
}

#[test]
fn nospace_with_auth_3_5() {
    nospace(EtcdVersion::V3_5, true);
}

// ---------------------------------------------------- snapshot reconcile

/// Puts `n` keys `{prefix}{i:04}` with `concurrency` in flight.
async fn put_many(c: &Client, prefix: &str, n: usize, modulo: usize, concurrency: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (c, next, prefix) = (c.clone(), next.clone(), prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                c.put(PutRequest {
                    key: format!("{prefix}{:04}", i % modulo).into(),
                    value: format!("v{i}").into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Deletes keys `{prefix}{i:04}` for `i` in `idx` one by one.
async fn delete_each(c: &Client, prefix: &str, idx: impl Iterator<Item = usize>) {
    for i in idx {
        c.delete_range(DeleteRangeRequest {
            key: format!("{prefix}{i:04}").into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

fn snapshot_opts() -> ClusterOptions {
    ClusterOptions {
        snapshot_count: Some(1000),
        ..Default::default()
    }
}

fn snapshots_received(r: &Replicator) -> u64 {
    r.status()
        .and_then(|s| s["node"]["snapshots_received"].as_u64())
        .unwrap_or(0)
}

#[test]
fn snapshot_reconcile_removes_keys_deleted_while_down() {
    let version = EtcdVersion::V3_5;
    let primary = start(version, 1, snapshot_opts());
    let standby = start(version, 1, ClusterOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let mut r = Replicator::start(&primary, &standby, &dir.path().join("r"), &[]);
    r.wait_joined(WAIT);
    let rt = rt();
    let c = rt.block_on(connect(primary.client_urls(), None));
    rt.block_on(put_many(&c, "/snap/k", 1500, 1500, 16));
    r.wait_replayed(WAIT);
    let before = snapshots_received(&r);
    r.terminate();
    rt.block_on(async {
        // 400 single deletes (27% of the standby's keys), a range delete,
        // new keys, and churn so the leader compacts past the learner.
        delete_each(&c, "/snap/k", (0..1500).step_by(4).take(360)).await;
        c.delete_range(DeleteRangeRequest {
            key: "/snap/k149".into(),
            range_end: prefix_end(b"/snap/k149").into(),
            ..Default::default()
        })
        .await
        .unwrap();
        put_many(&c, "/snap/new", 200, 200, 16).await;
        put_many(&c, "/churn/k", 6500, 100, 16).await;
    });
    r.restart();
    r.wait_replayed(WAIT);
    assert!(
        snapshots_received(&r) > before,
        "no leader snapshot was received: {:?}",
        r.status()
    );
    assert!(
        r.log().contains("reconcil"),
        "no reconcile in the log:\n{}",
        r.log_tail(40)
    );
    assert_verified(&primary, &standby, &[], &r, "after snapshot reconcile");
    rt.block_on(async {
        let s = connect(standby.client_urls(), None).await;
        let keys = all_keys(&s).await;
        assert!(!keys.contains_key(&b"/snap/k0000"[..]));
        assert!(!keys.contains_key(&b"/snap/k1495"[..]));
        assert!(keys.contains_key(&b"/snap/k0001"[..]));
    });
}

#[test]
fn snapshot_reconcile_mass_delete_guard() {
    let version = EtcdVersion::V3_4;
    let primary = start(version, 1, snapshot_opts());
    let standby = start(version, 1, ClusterOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let mut r = Replicator::start(&primary, &standby, &dir.path().join("r"), &[]);
    r.wait_joined(WAIT);
    let rt = rt();
    let c = rt.block_on(connect(primary.client_urls(), None));
    rt.block_on(put_many(&c, "/snap/k", 1500, 1500, 16));
    r.wait_replayed(WAIT);
    r.terminate();
    let s = rt.block_on(connect(standby.client_urls(), None));
    let (keys_before, rev_before) = rt.block_on(async { (all_keys(&s).await, revision(&s).await) });
    assert_eq!(keys_before.len(), 1500);
    rt.block_on(async {
        // 1100 of 1500 keys go (73%), then churn past the leader's log.
        for p in ["/snap/k0", "/snap/k10"] {
            c.delete_range(DeleteRangeRequest {
                key: p.to_owned().into(),
                range_end: prefix_end(p.as_bytes()).into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        put_many(&c, "/churn/k", 6500, 100, 16).await;
    });
    r.restart();
    let replay = r.wait_state("halted", WAIT);
    let err = replay["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        err.contains("mass") || err.contains("--accept-mass-delete"),
        "halted for another reason: {replay}"
    );
    let (keys_now, rev_now) = rt.block_on(async { (all_keys(&s).await, revision(&s).await) });
    assert_eq!(rev_now, rev_before, "the standby was written to: {replay}");
    assert!(keys_now == keys_before, "the standby's keys changed");
    r.terminate();
    r.restart_with(&["--accept-mass-delete"]);
    r.wait_replayed(WAIT);
    assert_verified(&primary, &standby, &[], &r, "after --accept-mass-delete");
}

// ------------------------------------------------------------ atomicity

const ACCOUNTS: usize = 20;
const START_BALANCE: i64 = 1000;

fn bank(version: EtcdVersion, members: usize, seed: u64) {
    let primary = start(version, members, ClusterOptions::default());
    let standby = start(version, 1, ClusterOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let mut r = Replicator::start(&primary, &standby, &dir.path().join("r"), &[]);
    r.wait_joined(WAIT);
    let total = START_BALANCE * ACCOUNTS as i64;
    let rt = rt();
    let acct = |i: usize| format!("/bank/acct{i:02}");
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let full_reads = Arc::new(AtomicUsize::new(0));
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let (transfers, conflicts) = rt.block_on(async {
        let p = connect(primary.client_urls(), None).await;
        let s = connect(standby.client_urls(), None).await;
        // The reader on the standby: one range per read.
        let reader = {
            let (stop, reads, full_reads, violations) = (
                stop.clone(),
                reads.clone(),
                full_reads.clone(),
                violations.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let resp = s
                        .range(RangeRequest {
                            key: "/bank/".into(),
                            range_end: prefix_end(b"/bank/").into(),
                            ..Default::default()
                        })
                        .await
                        .expect("read the standby");
                    reads.fetch_add(1, Ordering::Relaxed);
                    if resp.kvs.is_empty() {
                        continue;
                    }
                    full_reads.fetch_add(1, Ordering::Relaxed);
                    let rev = resp.header.map(|h| h.revision).unwrap_or_default();
                    if let Some(v) = bank_violation(&resp.kvs, rev, ACCOUNTS, total) {
                        violations.lock().unwrap().push(v);
                    }
                }
            })
        };
        // All accounts in one entry.
        let init: Vec<RequestOp> = (0..ACCOUNTS)
            .map(|i| put_op(acct(i), START_BALANCE.to_string(), 0))
            .collect();
        p.txn(txn(vec![], init, vec![])).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let transfers = Arc::new(AtomicUsize::new(0));
        let conflicts = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for w in 0..6u64 {
            let (p, transfers, conflicts) = (p.clone(), transfers.clone(), conflicts.clone());
            workers.push(tokio::spawn(async move {
                let mut rng = Rng(seed ^ (w << 48));
                while Instant::now() < deadline {
                    let a = rng.below(ACCOUNTS as u64) as usize;
                    let b = (a + 1 + rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
                    let resp = p
                        .range(RangeRequest {
                            key: "/bank/".into(),
                            range_end: prefix_end(b"/bank/").into(),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    let find = |k: &str| {
                        let kv = resp.kvs.iter().find(|kv| kv.key == k.as_bytes()).unwrap();
                        (
                            std::str::from_utf8(&kv.value)
                                .unwrap()
                                .parse::<i64>()
                                .unwrap(),
                            kv.mod_revision,
                        )
                    };
                    let ((va, ma), (vb, mb)) = (find(&acct(a)), find(&acct(b)));
                    let amount = rng.below(va.max(0) as u64 + 1) as i64;
                    let mod_eq = |k: String, m: i64| Compare {
                        result: compare::CompareResult::Equal as i32,
                        target: compare::CompareTarget::Mod as i32,
                        key: k.into(),
                        range_end: Bytes::new(),
                        target_union: Some(compare::TargetUnion::ModRevision(m)),
                    };
                    let t = p
                        .txn(txn(
                            vec![mod_eq(acct(a), ma), mod_eq(acct(b), mb)],
                            vec![
                                put_op(acct(a), (va - amount).to_string(), 0),
                                put_op(acct(b), (vb + amount).to_string(), 0),
                            ],
                            vec![],
                        ))
                        .await
                        .unwrap();
                    if t.succeeded {
                        transfers.fetch_add(1, Ordering::Relaxed);
                    } else {
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
        // Keep reading until the standby caught up.
        let target = cluster_raft_index(primary.client_urls()).await;
        let start = Instant::now();
        while r
            .replay_u64("standby_checkpoint")
            .is_none_or(|c| c < target)
        {
            assert!(start.elapsed() < WAIT, "replay stuck: {:?}", r.replay());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
        reader.await.unwrap();
        (
            transfers.load(Ordering::Relaxed),
            conflicts.load(Ordering::Relaxed),
        )
    });
    eprintln!(
        "etcd {}: {transfers} transfers ({conflicts} conflicts), {} standby reads ({} with accounts)",
        version.as_str(),
        reads.load(Ordering::Relaxed),
        full_reads.load(Ordering::Relaxed)
    );
    assert!(transfers > 0, "no transfer succeeded");
    assert!(
        full_reads.load(Ordering::Relaxed) > 0,
        "the reader never saw the accounts"
    );
    let v = violations.lock().unwrap();
    assert!(
        v.is_empty(),
        "{} reads of the standby broke the invariant (sum {total}); first: {:?}",
        v.len(),
        &v[..v.len().min(5)]
    );
    assert_verified(&primary, &standby, &[], &r, "after the transfers");
}

#[test]
fn bank_transfers_are_atomic_on_the_standby_3_5() {
    bank(EtcdVersion::V3_5, 3, 41);
}

#[test]
fn bank_transfers_are_atomic_on_the_standby_3_4() {
    bank(EtcdVersion::V3_4, 1, 42);
}

// ------------------------------------------------- exactly once / kills

const COUNTERS: usize = 8;

/// Increments random counters by compare-and-swap until `ops` succeeded;
/// returns the successes per counter.
async fn increments(c: Client, ops: usize, seed: u64, workers: u64) -> Vec<usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let counts: Arc<Vec<AtomicUsize>> =
        Arc::new((0..COUNTERS).map(|_| AtomicUsize::new(0)).collect());
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (c, next, counts) = (c.clone(), next.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = Rng(seed ^ (w << 44));
            while next.fetch_add(1, Ordering::Relaxed) < ops {
                let i = r.below(COUNTERS as u64) as usize;
                let k = format!("/ctr/c{i}");
                loop {
                    let kv = read_kv(&c, &k).await.unwrap();
                    let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                    let t = c
                        .txn(txn(
                            vec![Compare {
                                result: compare::CompareResult::Equal as i32,
                                target: compare::CompareTarget::Mod as i32,
                                key: k.clone().into(),
                                range_end: Bytes::new(),
                                target_union: Some(compare::TargetUnion::ModRevision(
                                    kv.mod_revision,
                                )),
                            }],
                            vec![put_op(k.clone(), (n + 1).to_string(), 0)],
                            vec![],
                        ))
                        .await
                        .unwrap();
                    if t.succeeded {
                        counts[i].fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

fn kills(version: EtcdVersion, seed: u64) {
    let primary = start(version, 1, ClusterOptions::default());
    let standby = start(version, 1, ClusterOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let mut r = Replicator::start(&primary, &standby, &dir.path().join("r"), &[]);
    r.wait_joined(WAIT);
    let rt = rt();
    let c = rt.block_on(connect(primary.client_urls(), None));
    rt.block_on(async {
        let init: Vec<RequestOp> = (0..COUNTERS)
            .map(|i| put_op(format!("/ctr/c{i}"), "0", 0))
            .collect();
        c.txn(txn(vec![], init, vec![])).await.unwrap();
    });
    r.wait_state("replaying", WAIT);
    let inc = rt.spawn(increments(c.clone(), 1500, seed, 4));
    let load = rt.spawn(varied_writes(primary.client_urls(), 2500, 8, seed));
    let mut rng = Rng(seed);
    let mut n_kills = 0;
    while !(inc.is_finished() && load.is_finished()) && n_kills < 8 {
        std::thread::sleep(Duration::from_millis(150 + rng.below(1200)));
        r.kill();
        n_kills += 1;
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        r.restart();
    }
    let counts = rt.block_on(inc).unwrap();
    rt.block_on(load).unwrap();
    eprintln!(
        "etcd {}: {n_kills} SIGKILLs, increments {counts:?}",
        version.as_str()
    );
    assert!(n_kills >= 2, "the workload ended before two kills");
    r.wait_replayed(WAIT);
    assert_verified(&primary, &standby, &[], &r, "after SIGKILLs");
    rt.block_on(async {
        let s = connect(standby.client_urls(), None).await;
        for (i, n) in counts.iter().enumerate() {
            let k = format!("/ctr/c{i}");
            let pv = read_kv(&c, &k).await.unwrap().value;
            let sv = read_kv(&s, &k).await.unwrap().value;
            assert_eq!(pv, n.to_string().as_bytes(), "primary counter {i}");
            assert_eq!(sv, pv, "standby counter {i}");
        }
    });
}

#[test]
fn exactly_once_across_sigkills_3_4() {
    kills(EtcdVersion::V3_4, 51);
}

#[test]
fn exactly_once_across_sigkills_3_5() {
    kills(EtcdVersion::V3_5, 52);
}

/// Kill seeds 53–58 with `ETCD_STANDBY_SOAK=1`.
fn kills_soak(version: EtcdVersion) {
    if !soak() {
        eprintln!("skipped: set ETCD_STANDBY_SOAK=1 for more seeds");
        return;
    }
    for seed in 53..=58 {
        kills(version, seed);
    }
}

#[test]
fn exactly_once_soak_seeds_3_4() {
    kills_soak(EtcdVersion::V3_4);
}

#[test]
fn exactly_once_soak_seeds_3_5() {
    kills_soak(EtcdVersion::V3_5);
}
