//! The chaos suite: a workload (bank transfers, expiring leases, range
//! deletes, auth changes, compaction) on a 3-member primary while a seeded
//! schedule of overlapping faults hits the replicator (kills, torn WAL
//! tails, pauses, a full disk), the primary's members, a 3-member standby,
//! and the links between them (fault-injecting proxies: silent partitions
//! with half-open connections, resets, one-way loss, a slow link), with
//! invariants checked all along:
//!
//! * every read of the standby shows the bank's total (atomic replay);
//! * after every SIGKILL of the replicator, what it persisted as committed
//!   equals the primary's committed log (acked ⇒ durable, nothing invented);
//! * at the end, `verify` finds no difference, the shadow model's revision
//!   and every key's create/mod revision, version and lease equal the
//!   primary's, and once the fencing epoch is bumped the standby is never
//!   written again.
//!
//! The seed's five drills run as named scenarios (`drills_*`): dependency
//! flap, replicator killed, network flap, weak network, long outage with
//! compaction.
//!
//! The default suite runs a short fixed-seed schedule per etcd version.
//! `cargo xtask test --chaos [--seed S] [--minutes M] [--replay FILE]` runs
//! a longer one (`chaos_campaign`); every run writes its schedule as JSON
//! lines (the path is printed) for `--replay`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_standby_client::pb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, compare,
    request_op,
};
use etcd_standby_client::{Client, prefix_end};
use etcd_standby_integration::chaos::{self, Event, Fault, Schedule, events};
use etcd_standby_integration::fidelity::{
    RESERVED_PREFIX, Replicator, assert_verified, bank_violation, connect,
};
use etcd_standby_integration::load::{Rng, varied_writes};
use etcd_standby_integration::proxy::{Direction, Links, Mode};
use etcd_standby_integration::standby::wal_entries_and_commit;
use etcd_standby_proto::{authpb, raftpb};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion};
use etcd_standby_wal::WalReader;

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
    auth_changes: AtomicUsize,
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

/// Auth changes (auth stays disabled, so the workload is unaffected):
/// roles granted and revoked permissions, users added, given roles, their
/// passwords changed, and older ones deleted.
async fn auth_worker(p: Client, seed: u64, stop: Arc<AtomicBool>, c: Arc<Counters>) {
    let mut rng = Rng(seed);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (role, user) = (format!("role{n}"), format!("user{n}"));
        let mut ok = p.role_add(&role).await.is_ok();
        let perm = authpb::Permission {
            perm_type: rng.below(3) as i32,
            key: format!("/bank/acct{:02}", rng.below(ACCOUNTS as u64)).into(),
            range_end: if rng.below(2) == 0 {
                Vec::new().into()
            } else {
                prefix_end(b"/bank/").into()
            },
        };
        ok &= p.role_grant_permission(&role, perm).await.is_ok();
        ok &= p.user_add(&user, &format!("pw-{n}-a"), false).await.is_ok();
        ok &= p.user_grant_role(&user, &role).await.is_ok();
        ok &= p
            .user_change_password(&user, &format!("pw-{n}-b"))
            .await
            .is_ok();
        if n > 3 {
            let old = n - 3;
            if rng.below(2) == 0 {
                ok &= p.user_delete(&format!("user{old}")).await.is_ok();
            } else {
                // The role may hold another permission: a failed revoke is fine.
                let _ = p
                    .role_revoke_permission(
                        &format!("role{old}"),
                        b"/bank/".to_vec(),
                        prefix_end(b"/bank/"),
                    )
                    .await;
                ok &= p.role_delete(&format!("role{old}")).await.is_ok();
            }
        }
        if ok {
            c.auth_changes.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A tmpfs mounted for the replicator's data dir (a disk that can be
/// filled); unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "mount a tmpfs at {} (the suite runs as root)",
            dir.display()
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Fills the filesystem (a filler file written until ENOSPC).
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0xa5u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let small = [0xa5u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Appends a torn record after the last complete record of the newest WAL
/// segment: a length field and part of its data, as a write cut short by
/// the crash leaves it (never acknowledged: nothing after the last fsync).
fn tear_wal_tail(wal_dir: &Path) {
    let mut r = WalReader::open(wal_dir).unwrap();
    let mut end: Option<(PathBuf, u64)> = None;
    loop {
        match r.next_record() {
            Ok(Some(rec)) => {
                end = Some((rec.location().file, rec.offset + rec.frame_size()));
            }
            Ok(None) => break,
            Err(e) if e.is_torn_tail() => break,
            Err(e) => panic!("{}: {e}", wal_dir.display()),
        }
    }
    let (file, offset) = end.expect("a WAL with records");
    let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut torn = 4000u64.to_le_bytes().to_vec();
    torn.extend(std::iter::repeat_n(0x5a, 700));
    f.write_all(&torn).unwrap();
    f.sync_all().unwrap();
}

/// A primary, a 3-member standby, the proxied links and the replicator,
/// whose data dir is on a tmpfs of its own. Field order is drop order: the
/// replicator stops before its filesystem is unmounted.
struct Rig {
    r: Replicator,
    links: Links,
    mount: Tmpfs,
    data: PathBuf,
    primary: EtcdCluster,
    standby: EtcdCluster,
    p: Client,
    s: Client,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start(version: EtcdVersion, primary_opts: ClusterOptions, extra: &[&str]) -> Rig {
        let primary = EtcdCluster::start(version, 3, primary_opts).unwrap();
        let standby = EtcdCluster::start(version, 3, ClusterOptions::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("r");
        let mount = Tmpfs::mount(&data, "256m");
        let links = Links::new(&primary, &standby);
        let mut flags = links.flags();
        // Small WAL segments: new ones are cut every few seconds, so a full
        // disk meets a segment that cannot be allocated, not only writes
        // into one preallocated earlier.
        flags.extend(["--wal-segment-bytes".to_string(), (1u64 << 20).to_string()]);
        flags.extend(extra.iter().map(|s| s.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut r = Replicator::start_to(&primary, &links.standby_endpoints(), &data, &flags);
        r.wait_joined(WAIT);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let p = rt.block_on(connect(primary.client_urls(), None));
        let s = rt.block_on(connect(standby.client_urls(), None));
        Rig {
            r,
            links,
            mount,
            data,
            primary,
            standby,
            p,
            s,
            rt,
            _dir: dir,
        }
    }

    /// Puts the bank's accounts on the primary.
    fn open_bank(&self) {
        self.rt.block_on(async {
            let init: Vec<RequestOp> = (0..ACCOUNTS)
                .map(|i| put(acct(i), START_BALANCE.to_string(), 0))
                .collect();
            self.p
                .txn(TxnRequest {
                    compare: vec![],
                    success: init,
                    failure: vec![],
                })
                .await
                .unwrap();
        });
    }

    /// Starts the workload (and the standby reader); returns what stops it.
    fn workload(&self, seed: u64, c: &Arc<Counters>) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            tasks.push(self.rt.spawn(bank_worker(
                self.p.clone(),
                seed ^ (w << 40),
                stop.clone(),
                c.clone(),
            )));
        }
        tasks.push(self.rt.spawn(lease_worker(
            self.p.clone(),
            seed ^ 0x1ea5e,
            stop.clone(),
            c.clone(),
        )));
        tasks.push(
            self.rt
                .spawn(scratch_worker(self.p.clone(), stop.clone(), c.clone())),
        );
        tasks.push(self.rt.spawn(auth_worker(
            self.p.clone(),
            seed ^ 0xa17,
            stop.clone(),
            c.clone(),
        )));
        tasks.push(
            self.rt
                .spawn(standby_reader(self.s.clone(), stop.clone(), c.clone())),
        );
        Workload { stop, tasks }
    }

    fn stop_workload(&self, w: Workload) {
        w.stop.store(true, Ordering::Relaxed);
        self.rt.block_on(async {
            for t in w.tasks {
                t.await.unwrap();
            }
        });
    }

    /// Waits until the primary holds no lease (the workload's expire within
    /// 5 s), so its state holds still.
    fn wait_leases_expired(&self) {
        self.rt.block_on(async {
            let start = Instant::now();
            while self
                .p
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
    }

    /// Compacts the primary at its current revision.
    fn compact(&self) {
        self.rt.block_on(async {
            if let Some(rev) = revision(&self.p).await {
                let _ = self.p.compact(rev, false).await;
            }
        });
    }

    /// Restarts every standby member together.
    fn restart_standby(&mut self) {
        let all: Vec<usize> = (0..self.standby.len()).collect();
        self.standby.restart_members(&all).unwrap();
    }

    /// The end checks: replay caught up, verify clean, the model's
    /// revisions equal the primary's; returns the keys compared.
    fn check_end(&mut self, what: &str) -> usize {
        // A few writes after any compaction, so a model is saved past it.
        self.rt.block_on(async {
            for i in 0..25 {
                self.p
                    .put(PutRequest {
                        key: "/end/tick".into(),
                        value: i.to_string().into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        });
        self.r.wait_replayed(WAIT);
        assert_verified(&self.primary, &self.standby, &[], &self.r, what);
        check_model_revisions(&self.rt, &self.p, &self.s, &self.data, what)
    }
}

/// The primary's current revision (a read's header).
async fn revision(p: &Client) -> Option<i64> {
    let resp = p
        .range(RangeRequest {
            key: "/bank/acct00".into(),
            ..Default::default()
        })
        .await
        .ok()?;
    resp.header.map(|h| h.revision)
}

struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The model's revisions equal the primary's: the checkpoint's primary
/// revision (the shadow model's, after the last entry) is the primary's
/// current revision, and every key of the newest saved model has the
/// create/mod revision, version, lease and value the primary has at the
/// model's revision. Call with replay caught up on a quiet primary.
fn check_model_revisions(
    rt: &tokio::runtime::Runtime,
    p: &Client,
    s: &Client,
    data: &Path,
    what: &str,
) -> usize {
    rt.block_on(async {
        let cp = s
            .range(RangeRequest {
                key: format!("{RESERVED_PREFIX}checkpoint/").into(),
                range_end: prefix_end(format!("{RESERVED_PREFIX}checkpoint/").as_bytes()).into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&cp.kvs[0].value).unwrap();
        assert_eq!(
            v["source_revision"].as_i64(),
            revision(p).await,
            "{what}: the checkpoint's primary revision (the model's) is not the primary's: {v}"
        );
    });
    let dir = data.join("replay");
    let newest = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .max()
        .unwrap_or_else(|| panic!("{what}: no saved model in {}", dir.display()));
    let mut f = std::io::BufReader::new(std::fs::File::open(&newest).unwrap());
    let state = etcd_standby_model::SnapshotState::read_from(&mut f).unwrap();
    let keys: Vec<_> = state
        .keys
        .iter()
        .filter(|k| !k.key.starts_with(RESERVED_PREFIX.as_bytes()))
        .collect();
    rt.block_on(async {
        let all = p
            .range(RangeRequest {
                key: vec![0].into(),
                range_end: vec![0].into(),
                revision: state.revision,
                ..Default::default()
            })
            .await;
        let resp = match all {
            Ok(resp) => resp,
            Err(e) => panic!(
                "{what}: reading the primary at the saved model's revision {} failed ({e}); \
                 the check needs a model saved after the last compaction",
                state.revision
            ),
        };
        let primary: BTreeMap<&[u8], _> = resp.kvs.iter().map(|kv| (&kv.key[..], kv)).collect();
        assert_eq!(
            keys.len(),
            primary.len(),
            "{what}: the model ({}) holds {} keys at revision {}, the primary {}",
            newest.display(),
            keys.len(),
            state.revision,
            primary.len()
        );
        for k in &keys {
            let kv = primary.get(&k.key[..]).unwrap_or_else(|| {
                panic!("{what}: model key {:?} is not on the primary", k.key)
            });
            assert_eq!(
                (
                    k.state.create_revision,
                    k.state.mod_revision,
                    k.state.version,
                    k.state.lease,
                    k.state.value.clone()
                ),
                (
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version,
                    kv.lease,
                    // Long values are held by digest: equal if the digests are.
                    etcd_standby_model::Value::Inline(kv.value.clone())
                ),
                "{what}: key {:?} (create, mod, version, lease, value) differs: model at revision {}",
                k.key,
                state.revision
            );
        }
        keys.len()
    })
}

/// Bumps the fencing epoch on the standby (as a promotion elsewhere
/// would) while the replicator runs and the primary takes writes, then
/// checks that the standby is never written again: its revision holds
/// still and replay stops as fenced. Returns the primary writes made after
/// the fence.
fn check_fenced(rig: &mut Rig) -> usize {
    let epoch_key = format!("{RESERVED_PREFIX}epoch");
    let fenced_at = rig.rt.block_on(async {
        let cur = rig
            .s
            .range(RangeRequest {
                key: epoch_key.clone().into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let e: u64 = std::str::from_utf8(&cur.kvs[0].value)
            .unwrap()
            .parse()
            .unwrap();
        let put = rig
            .s
            .put(PutRequest {
                key: epoch_key.clone().into(),
                value: (e + 1).to_string().into(),
                ..Default::default()
            })
            .await
            .unwrap();
        put.header.unwrap().revision
    });
    let mut writes = 0;
    rig.rt.block_on(async {
        for i in 0..200 {
            if rig
                .p
                .put(PutRequest {
                    key: format!("/after-fence/{i}").into(),
                    value: "x".into(),
                    ..Default::default()
                })
                .await
                .is_ok()
            {
                writes += 1;
            }
        }
    });
    // Replay meets the bumped epoch on its next txn and stops the process.
    let start = Instant::now();
    while rig.r.try_wait().is_none() {
        assert!(
            start.elapsed() < WAIT,
            "the replicator kept running after the fence: {:?}",
            rig.r.replay()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        rig.r.log().contains("fenced"),
        "the replicator stopped, but not as fenced:\n{}",
        rig.r.log_tail(20)
    );
    let now = rig.rt.block_on(async {
        rig.s
            .range(RangeRequest {
                key: epoch_key.clone().into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .header
            .unwrap()
            .revision
    });
    assert_eq!(
        now, fenced_at,
        "the standby was written after the fence (revision {fenced_at} → {now})"
    );
    writes
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
    // Frequent snapshots: the leader compacts its log often, so a long
    // partition ends with a leader snapshot (deletions included).
    let mut rig = Rig::start(
        version,
        ClusterOptions {
            snapshot_count: Some(2000),
            ..Default::default()
        },
        &["--model-save-every", "20"],
    );
    rig.open_bank();
    let c = Arc::new(Counters::default());
    let work = rig.workload(schedule.seed, &c);

    // The faults.
    let t0 = Instant::now();
    let mut hit: BTreeMap<usize, usize> = BTreeMap::new(); // step → member
    let mut filler: Option<PathBuf> = None;
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
                    Fault::KillReplicator | Fault::KillReplicatorTornTail => {
                        rig.r.kill();
                        compared += check_durable(&rig.data, &rig.primary);
                        durable_checks += 1;
                        if f == Fault::KillReplicatorTornTail {
                            tear_wal_tail(&rig.data.join("member/wal"));
                        }
                    }
                    Fault::PauseReplicator => signal(rig.r.pid().unwrap(), "-STOP"),
                    Fault::DiskFull => filler = Some(rig.mount.fill()),
                    Fault::KillPrimaryLeader | Fault::KillPrimaryFollower => {
                        let m = pick_member(&mut rig.primary, f == Fault::KillPrimaryLeader);
                        rig.primary.kill_member(m).unwrap();
                        hit.insert(i, m);
                    }
                    Fault::PausePrimaryLeader => {
                        let m = pick_member(&mut rig.primary, true);
                        signal(rig.primary.pid(m).unwrap().unwrap(), "-STOP");
                        hit.insert(i, m);
                    }
                    Fault::StandbyOutage => {
                        for m in 0..rig.standby.len() {
                            rig.standby.kill_member(m).unwrap();
                        }
                    }
                    Fault::KillStandbyLeader => {
                        let m = pick_member(&mut rig.standby, true);
                        rig.standby.kill_member(m).unwrap();
                        hit.insert(i, m);
                    }
                    Fault::PartitionLearner => rig.links.learner(Mode::Drop),
                    Fault::ResetLearner => rig.links.learner(Mode::Reset),
                    Fault::OneWayLearner => rig.links.learner(Mode::OneWay(Direction::ToTarget)),
                    Fault::SlowLearner => rig.links.learner(Mode::Slow {
                        delay: Duration::from_millis(15),
                        bytes_per_sec: 256 * 1024,
                    }),
                    Fault::PartitionStandby => rig.links.standby(Mode::Drop),
                    Fault::ResetStandby => rig.links.standby(Mode::Reset),
                    Fault::Compact => rig.compact(),
                }
            }
            Event::End(i) => match schedule.steps[i].fault {
                Fault::KillReplicator | Fault::KillReplicatorTornTail => rig.r.restart(),
                Fault::PauseReplicator => signal(rig.r.pid().unwrap(), "-CONT"),
                Fault::DiskFull => {
                    // Nothing acknowledged while the disk was full is missing.
                    compared += check_durable(&rig.data, &rig.primary);
                    durable_checks += 1;
                    if let Some(f) = filler.take() {
                        std::fs::remove_file(f).unwrap();
                    }
                    // The learner waits out a full disk; it never exits.
                    if let Some(st) = rig.r.try_wait() {
                        panic!(
                            "the replicator exited ({st}) on a full disk\n{}",
                            rig.r.log_tail(40)
                        );
                    }
                }
                Fault::KillPrimaryLeader | Fault::KillPrimaryFollower => {
                    rig.primary.restart_member(hit[&i]).unwrap()
                }
                Fault::PausePrimaryLeader => {
                    signal(rig.primary.pid(hit[&i]).unwrap().unwrap(), "-CONT")
                }
                Fault::StandbyOutage => rig.restart_standby(),
                Fault::KillStandbyLeader => rig.standby.restart_member(hit[&i]).unwrap(),
                Fault::PartitionLearner
                | Fault::ResetLearner
                | Fault::OneWayLearner
                | Fault::SlowLearner => rig.links.learner(Mode::Pass),
                Fault::PartitionStandby | Fault::ResetStandby => rig.links.standby(Mode::Pass),
                Fault::Compact => {}
            },
        }
    }
    rig.stop_workload(work);
    // Every fault is over. The last leases expire (at most 5 s TTL), so
    // the end state holds still; replay catches up; then the end checks.
    rig.wait_leases_expired();
    let model_keys = rig.check_end("after the chaos");
    rig.r.kill();
    compared += check_durable(&rig.data, &rig.primary);
    durable_checks += 1;
    rig.r.restart();
    rig.r.wait_replayed(WAIT);
    let snapshots = rig.r.log().matches("leader snapshot saved").count();
    let after_fence = check_fenced(&mut rig);
    let v = c.violations.lock().unwrap();
    eprintln!(
        "chaos {label} on etcd {}: faults {done:?}; {} transfers, {} leases, {} range deletes, \
         {} auth changes; {} standby reads ({} with the bank) checked, {} durability checks \
         over {compared} committed entries, verify clean, {model_keys} model keys' revisions \
         equal the primary's, standby unwritten after the fence ({after_fence} primary writes \
         after it); {snapshots} leader snapshots; {}",
        version.as_str(),
        c.transfers.load(Ordering::Relaxed),
        c.leases.load(Ordering::Relaxed),
        c.range_deletes.load(Ordering::Relaxed),
        c.auth_changes.load(Ordering::Relaxed),
        c.standby_reads.load(Ordering::Relaxed),
        c.standby_full_reads.load(Ordering::Relaxed),
        durable_checks,
        rig.links.report(),
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

/// Kills the replicator, lets `writes` varied requests land on the primary
/// (`before` runs first), restarts it and returns how long it took from
/// the restart until the standby caught up.
fn outage_and_catch_up(rig: &mut Rig, writes: usize, seed: u64) -> Duration {
    rig.r.kill();
    let n = rig
        .rt
        .block_on(varied_writes(rig.primary.client_urls(), writes, 16, seed));
    assert!(n > writes / 2, "only {n} of {writes} writes succeeded");
    let start = Instant::now();
    rig.r.restart();
    rig.r.wait_replayed(WAIT);
    start.elapsed()
}

/// The seed's five fault drills, one after the other on one rig, each
/// ending with replay caught up, `verify` clean and the model's revisions
/// equal to the primary's. Prints what each took.
fn drills(version: EtcdVersion) {
    let v = version.as_str();
    let mut rig = Rig::start(
        version,
        ClusterOptions {
            snapshot_count: Some(1000),
            ..Default::default()
        },
        &["--model-save-every", "20"],
    );
    rig.open_bank();
    let c = Arc::new(Counters::default());
    let mut report = Vec::new();

    // 1. Dependency flap: the standby (our one dependency) unreachable,
    // first refusing (resets), then silent, while the primary takes writes;
    // replay waits and resumes by itself.
    let w = rig.workload(1, &c);
    std::thread::sleep(Duration::from_secs(2));
    rig.links.standby(Mode::Reset);
    std::thread::sleep(Duration::from_secs(4));
    rig.links.standby(Mode::Drop);
    std::thread::sleep(Duration::from_secs(4));
    rig.links.standby(Mode::Pass);
    let t = Instant::now();
    rig.r.wait_replayed(WAIT);
    report.push(format!(
        "dependency flap: caught up {:?} after the standby came back",
        t.elapsed()
    ));
    rig.stop_workload(w);
    rig.wait_leases_expired();
    rig.check_end("drill 1, dependency flap");

    // 2. Replicator killed, restarted 15 s later (a supervisor's restart).
    let w = rig.workload(2, &c);
    std::thread::sleep(Duration::from_secs(2));
    rig.r.kill();
    check_durable(&rig.data, &rig.primary);
    std::thread::sleep(Duration::from_secs(15));
    rig.r.restart();
    let t = Instant::now();
    rig.r.wait_replayed(WAIT);
    report.push(format!(
        "replicator killed for 15 s: caught up {:?} after the restart",
        t.elapsed()
    ));
    rig.stop_workload(w);
    rig.wait_leases_expired();
    rig.check_end("drill 2, replicator killed");

    // 3. Network flap: the primary unreachable from the learner for 10 s
    // (silently: half-open connections), then reachable again.
    let w = rig.workload(3, &c);
    std::thread::sleep(Duration::from_secs(2));
    rig.links.learner(Mode::Drop);
    std::thread::sleep(Duration::from_secs(10));
    rig.links.learner(Mode::Pass);
    let t = Instant::now();
    rig.r.wait_replayed(WAIT);
    report.push(format!(
        "network flap of 10 s: caught up {:?} after the link healed",
        t.elapsed()
    ));
    rig.stop_workload(w);
    rig.wait_leases_expired();
    rig.check_end("drill 3, network flap");

    // 4. Weak network: the same backlog caught up over the normal link and
    // over a weak one (30 ms RTT, 1 MiB/s each way).
    let normal = outage_and_catch_up(&mut rig, 2000, 4);
    rig.links.learner(Mode::Slow {
        delay: Duration::from_millis(15),
        bytes_per_sec: 1 << 20,
    });
    let weak = outage_and_catch_up(&mut rig, 2000, 5);
    rig.links.learner(Mode::Pass);
    // Counted since the restart in outage_and_catch_up.
    let weak_snaps = rig.r.node_u64("snapshots_received").unwrap_or(0);
    report.push(format!(
        "weak network: a 2000-request backlog caught up in {normal:?} over loopback, {weak:?} over 30 ms RTT + 1 MiB/s ({:.1}x); leader snapshots meanwhile: {weak_snaps}",
        weak.as_secs_f64() / normal.as_secs_f64().max(0.001)
    ));
    rig.check_end("drill 4, weak network");

    // 5. Long outage with compaction: keys the standby holds are deleted
    // while the replicator is down, far more entries than the leader keeps
    // are written (it must send a snapshot), the primary compacts; on
    // restart nothing the primary deleted may stay on the standby.
    rig.rt.block_on(async {
        for i in 0..200 {
            rig.p
                .put(PutRequest {
                    key: format!("/long/{i:03}").into(),
                    value: "before the outage".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    });
    rig.r.wait_replayed(WAIT);
    rig.r.kill();
    rig.rt.block_on(async {
        rig.p
            .delete_range(DeleteRangeRequest {
                key: "/long/".into(),
                range_end: prefix_end(b"/long/").into(),
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let n = rig
        .rt
        .block_on(varied_writes(rig.primary.client_urls(), 7000, 16, 6));
    assert!(n > 3500, "only {n} of 7000 writes succeeded");
    rig.compact();
    let t = Instant::now();
    rig.r.restart();
    rig.r.wait_replayed(WAIT);
    let took = t.elapsed();
    // Counted since the restart.
    let snaps = rig.r.node_u64("snapshots_received").unwrap_or(0);
    assert!(
        snaps >= 1,
        "the leader never sent a snapshot after a 7000-entry outage with --snapshot-count 1000"
    );
    let left = rig.rt.block_on(async {
        rig.s
            .range(RangeRequest {
                key: "/long/".into(),
                range_end: prefix_end(b"/long/").into(),
                count_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .count
    });
    assert_eq!(
        left, 0,
        "keys deleted on the primary during the outage stayed on the standby"
    );
    report.push(format!(
        "long outage with compaction: {snaps} leader snapshot(s), reconciled and caught up in {took:?}; the 200 keys deleted meanwhile are gone from the standby"
    ));
    rig.check_end("drill 5, long outage with compaction");
    eprintln!(
        "drills on etcd {v}:\n  {}\n  {}",
        report.join("\n  "),
        rig.links.report()
    );
}

#[test]
fn drills_dependency_flap_killed_network_flap_weak_network_long_outage_3_5() {
    drills(EtcdVersion::V3_5);
}

#[test]
fn drills_dependency_flap_killed_network_flap_weak_network_long_outage_3_4() {
    drills(EtcdVersion::V3_4);
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
