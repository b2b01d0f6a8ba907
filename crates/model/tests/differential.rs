//! Differential tests against real etcd 3.4.23 and 3.5.1: a seeded random
//! workload through `etcdctl`, then the member's own WAL is fed to the model
//! and the model must equal what etcd serves (keys with all their metadata,
//! revision, leases with TTLs, users, roles, permissions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use etcd_standby_decode::decode_entry;
use etcd_standby_model::{
    EtcdMinor, Model, ModelConfig, Outcome, PermType, Rejection, SnapshotState, TxnRangeView,
};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion, Etcdctl};
use serde_json::Value;

// ------------------------------------------------------------ utilities

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
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
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

fn b64d(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            _ => 63,
        }
    };
    let mut out = Vec::new();
    for q in s.as_bytes().chunks(4) {
        let pad = q.iter().filter(|&&c| c == b'=').count();
        let mut n = 0u32;
        for &c in q {
            n = (n << 6) | if c == b'=' { 0 } else { val(c) };
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

const KEYS: &[&str] = &["a", "b", "c", "d", "p/1", "p/2", "p/3", "q", "r/x", "r/y"];
/// Short values (held inline by the model) and long ones (held by digest and
/// prefix, bytes in the value store) that share their 16-byte prefix, so
/// ordering compares between them need the bytes from the store.
const VALUES: &[&str] = &[
    "0",
    "1",
    "5",
    "9",
    "aa",
    "m",
    "zz",
    "mmmmmmmmmmmmmmmm",
    "mmmmmmmmmmmmmmmm0",
    "mmmmmmmmmmmmmmmm1-long",
    "mmmmmmmmmmmmmmmm1",
];

/// The cluster under test and the etcdctl clients of the workload.
struct Bench {
    cluster: EtcdCluster,
    /// Unauthenticated client (root before auth is enabled).
    anon: Etcdctl,
    /// Client for admin reads: root once auth is enabled.
    admin: Etcdctl,
    long_leases: Vec<i64>,
    short_leases: Vec<i64>,
    ops: usize,
    rejected_by_client: usize,
}

impl Bench {
    fn start(version: EtcdVersion, opts: ClusterOptions) -> Bench {
        let cluster = EtcdCluster::start(version, 1, opts).expect("start etcd");
        let anon = cluster.etcdctl();
        Bench {
            admin: anon.clone(),
            anon,
            cluster,
            long_leases: Vec::new(),
            short_leases: Vec::new(),
            ops: 0,
            rejected_by_client: 0,
        }
    }

    /// Runs one etcdctl command; failures are expected (rejections).
    fn run(&mut self, ctl: &Etcdctl, args: &[String]) -> bool {
        self.ops += 1;
        let ok = ctl.run(args).is_ok();
        if !ok {
            self.rejected_by_client += 1;
        }
        ok
    }

    fn txn(&mut self, ctl: &Etcdctl, script: &str) {
        self.ops += 1;
        if ctl
            .run_with_stdin(&["txn", "--interactive=false"], script.as_bytes())
            .is_err()
        {
            self.rejected_by_client += 1;
        }
    }

    fn grant(&mut self, ctl: &Etcdctl, ttl: u64) -> Option<i64> {
        self.ops += 1;
        let json = ctl.run_json(&["lease", "grant", &ttl.to_string()]).ok()?;
        json.get("ID").and_then(Value::as_i64)
    }
}

fn s(x: impl AsRef<str>) -> String {
    x.as_ref().to_string()
}

fn random_txn(rng: &mut Rng, leases: &[i64], rev: i64) -> String {
    let mut out = String::new();
    for _ in 0..rng.below(3) {
        let key = rng.pick(KEYS);
        let op = rng.pick(&["=", "!=", "<", ">"]);
        let line = match rng.below(4) {
            0 => format!("value(\"{key}\") {op} \"{}\"\n", rng.pick(VALUES)),
            1 => format!("version(\"{key}\") {op} \"{}\"\n", rng.below(4)),
            2 => format!("create(\"{key}\") {op} \"{}\"\n", rng.below(rev as u64 + 2)),
            _ => format!("mod(\"{key}\") {op} \"{}\"\n", rng.below(rev as u64 + 2)),
        };
        out.push_str(&line);
    }
    for branch in 0..2 {
        out.push('\n');
        let mut used = BTreeSet::new();
        for _ in 0..rng.below(4) {
            let key = *rng.pick(KEYS);
            if !used.insert(key) {
                continue;
            }
            let line = match rng.below(7) {
                0 | 1 => format!("put {key} {}\n", rng.pick(VALUES)),
                2 if !leases.is_empty() => {
                    format!(
                        "put --lease={:x} {key} {}\n",
                        rng.pick(leases),
                        rng.pick(VALUES)
                    )
                }
                3 => format!("del {key}\n"),
                4 => format!("get {key}\n"),
                5 if branch == 0 => "del --prefix r/\n".to_string(),
                _ => format!("put --ignore-value {key}\n"),
            };
            out.push_str(&line);
        }
    }
    out.push_str("\n\n");
    out
}

/// One random KV/lease/txn operation as `ctl`.
fn kv_op(b: &mut Bench, rng: &mut Rng, ctl: &Etcdctl, rev: i64) {
    let key = s(rng.pick(KEYS));
    let val = s(rng.pick(VALUES));
    match rng.below(20) {
        0..=4 => {
            b.run(ctl, &[s("put"), key, val]);
        }
        5 | 6 => {
            let all: Vec<i64> = b
                .long_leases
                .iter()
                .chain(&b.short_leases)
                .copied()
                .collect();
            if let Some(&l) = (!all.is_empty()).then(|| rng.pick(&all)) {
                b.run(ctl, &[s("put"), format!("--lease={l:x}"), key, val]);
            }
        }
        7 => {
            b.run(ctl, &[s("put"), s("--ignore-value"), key]);
        }
        8 => {
            b.run(ctl, &[s("put"), s("--ignore-lease"), key, val]);
        }
        9 => {
            b.run(ctl, &[s("del"), key]);
        }
        10 => {
            let end = s(rng.pick(KEYS));
            b.run(ctl, &[s("del"), key, end]);
        }
        11 => {
            let pre = s(rng.pick(&["p/", "r/", "q", "zz"]));
            b.run(ctl, &[s("del"), s("--prefix"), pre]);
        }
        12 => {
            b.run(ctl, &[s("del"), s("--from-key"), s("r/y")]);
        }
        13..=16 => {
            let leases = b.long_leases.clone();
            let script = random_txn(rng, &leases, rev);
            b.txn(ctl, &script);
        }
        17 => {
            if rng.chance(50) {
                if let Some(id) = b.grant(ctl, 600) {
                    b.long_leases.push(id);
                }
            } else if let Some(id) = b.grant(ctl, 1 + rng.below(2)) {
                b.short_leases.push(id);
            }
        }
        18 => {
            if !b.long_leases.is_empty() {
                let i = rng.below(b.long_leases.len() as u64) as usize;
                let id = b.long_leases[i];
                if b.run(ctl, &[s("lease"), s("revoke"), format!("{id:x}")]) {
                    b.long_leases.remove(i);
                }
            }
        }
        _ => {
            if rng.chance(30) && rev > 3 {
                let at = rev - rng.below(4) as i64;
                b.run(ctl, &[s("compact"), at.to_string()]);
            }
        }
    }
}

fn revision(ctl: &Etcdctl) -> i64 {
    ctl.run_json(&["get", "--", "zz-probe"])
        .ok()
        .and_then(|j| j.pointer("/header/revision").and_then(Value::as_i64))
        .unwrap_or(1)
}

// ------------------------------------------------------- observed state

/// (value, create, mod, version, lease)
type KeyMeta = (Vec<u8>, i64, i64, i64, i64);
/// (type, key, range_end)
type Perm = (i64, Vec<u8>, Vec<u8>);

#[derive(Debug, PartialEq, Eq)]
struct Observed {
    revision: i64,
    /// key → (value, create, mod, version, lease)
    keys: BTreeMap<Vec<u8>, KeyMeta>,
    /// lease → granted TTL
    leases: BTreeMap<i64, i64>,
    /// user → roles
    users: BTreeMap<String, Vec<String>>,
    /// role → perms (type, key, range_end)
    roles: BTreeMap<String, Vec<Perm>>,
}

fn observe(ctl: &Etcdctl) -> Observed {
    let get = ctl.run_json(&["get", "", "--prefix"]).expect("get all");
    let revision = get
        .pointer("/header/revision")
        .and_then(Value::as_i64)
        .unwrap();
    let mut keys = BTreeMap::new();
    for kv in get
        .get("kvs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let n = |f: &str| kv.get(f).and_then(Value::as_i64).unwrap_or(0);
        let st = |f: &str| b64d(kv.get(f).and_then(Value::as_str).unwrap_or(""));
        keys.insert(
            st("key"),
            (
                st("value"),
                n("create_revision"),
                n("mod_revision"),
                n("version"),
                n("lease"),
            ),
        );
    }
    let mut leases = BTreeMap::new();
    let list = ctl.run_json(&["lease", "list"]).expect("lease list");
    for l in list
        .get("leases")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let id = l.get("id").and_then(Value::as_i64).unwrap();
        let ttl = ctl
            .run_json(&["lease", "timetolive", &format!("{id:x}")])
            .expect("timetolive");
        let granted = ttl.get("granted-ttl").and_then(Value::as_i64).unwrap_or(-1);
        if granted > 0 {
            leases.insert(id, granted);
        }
    }
    let mut users = BTreeMap::new();
    let ul = ctl.run_json(&["user", "list"]).expect("user list");
    for u in ul
        .get("users")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let name = u.as_str().unwrap().to_string();
        let ug = ctl.run_json(&["user", "get", &name]).expect("user get");
        let roles = ug
            .get("roles")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        users.insert(name, roles);
    }
    let mut roles = BTreeMap::new();
    let rl = ctl.run_json(&["role", "list"]).expect("role list");
    for r in rl
        .get("roles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let name = r.as_str().unwrap().to_string();
        if name == "root" {
            // etcd answers role get root with a synthetic full permission.
            roles.insert(name, Vec::new());
            continue;
        }
        let rg = ctl.run_json(&["role", "get", &name]).expect("role get");
        let perms = rg
            .get("perm")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| {
                (
                    p.get("permType").and_then(Value::as_i64).unwrap_or(0),
                    b64d(p.get("key").and_then(Value::as_str).unwrap_or("")),
                    b64d(p.get("range_end").and_then(Value::as_str).unwrap_or("")),
                )
            })
            .collect();
        roles.insert(name, perms);
    }
    Observed {
        revision,
        keys,
        leases,
        users,
        roles,
    }
}

fn model_view(m: &Model) -> Observed {
    Observed {
        revision: m.revision(),
        keys: m
            .keys()
            .map(|(k, s)| {
                (
                    k.to_vec(),
                    (
                        m.value_bytes(&s.value)
                            .expect("value in the store")
                            .to_vec(),
                        s.create_revision,
                        s.mod_revision,
                        s.version,
                        s.lease,
                    ),
                )
            })
            .collect(),
        leases: m.leases().iter().map(|(id, l)| (*id, l.ttl)).collect(),
        users: m
            .auth()
            .users
            .iter()
            .map(|(n, u)| (n.clone(), u.roles.clone()))
            .collect(),
        roles: m
            .auth()
            .roles
            .iter()
            .map(|(n, r)| {
                let perms = if n == "root" {
                    Vec::new()
                } else {
                    r.perms
                        .iter()
                        .map(|p| {
                            let t = match p.perm_type {
                                PermType::Read => 0,
                                PermType::Write => 1,
                                PermType::ReadWrite => 2,
                                PermType::Other(o) => o as i64,
                            };
                            (t, p.key.to_vec(), p.range_end.to_vec())
                        })
                        .collect()
                };
                (n.clone(), perms)
            })
            .collect(),
    }
}

/// Replays the member's WAL into a model; returns it and an outcome histogram.
fn replay(cluster: &EtcdCluster, minor: EtcdMinor) -> (Model, BTreeMap<String, usize>) {
    let wal = cluster.data_dir(0).unwrap().join("member/wal");
    let log = etcd_standby_wal::read_log(&wal, 0).expect("read wal");
    let commit = log.hard_state.map(|h| h.commit).unwrap_or(u64::MAX);
    let mut m = Model::with_config(ModelConfig {
        version: minor,
        min_lease_ttl: ModelConfig::min_lease_ttl_for(50, 500),
        txn_range_view: TxnRangeView::Proposer,
    });
    let mut hist = BTreeMap::new();
    // A copy persisted and reloaded every 50 entries must follow the log
    // exactly like the original (a restarting daemon).
    let mut reloaded = save_load(&m);
    for (n, e) in log.entries.iter().filter(|e| e.index <= commit).enumerate() {
        if n % 50 == 49 {
            reloaded = save_load(&reloaded);
        }
        let entry = decode_entry(e);
        let a = m.apply(e.index, e.term, &entry);
        assert_eq!(
            reloaded.apply(e.index, e.term, &entry),
            a,
            "entry {}: the reloaded model diverged",
            e.index
        );
        assert!(!a.outcome.is_halt(), "entry {}: {:?}", e.index, a.outcome);
        let name = match &a.outcome {
            Outcome::Rejected(r) => format!("Rejected({r:?})"),
            o => format!("{o:?}"),
        };
        *hist.entry(name).or_default() += 1;
    }
    assert_eq!(
        save_load(&m).to_snapshot_state(),
        m.to_snapshot_state(),
        "save/load after the replay"
    );
    assert_eq!(reloaded.to_snapshot_state(), m.to_snapshot_state());
    (m, hist)
}

/// The model through the persisted file format and back.
fn save_load(m: &Model) -> Model {
    let mut file = Vec::new();
    m.write_to(&mut file).expect("write");
    let s = SnapshotState::read_from(&mut file.as_slice()).expect("read");
    // A restarted process reopens the store the values went to.
    Model::from_snapshot_in(m.config().clone(), s, m.values().fork())
}

fn minor(v: EtcdVersion) -> EtcdMinor {
    if v == EtcdVersion::V3_4 {
        EtcdMinor::V3_4
    } else {
        EtcdMinor::V3_5
    }
}

/// Waits until every short-lived lease has expired (the leader's revoke
/// entries are in the log) so nothing changes between observe and stop.
fn wait_short_leases(b: &Bench) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = b.admin.run_json(&["lease", "list"]).expect("lease list");
        let live: BTreeSet<i64> = list
            .get("leases")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|l| l.get("id").and_then(Value::as_i64))
            .collect();
        if b.short_leases.iter().all(|id| !live.contains(id)) {
            return;
        }
        assert!(Instant::now() < deadline, "short leases did not expire");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn finish(mut b: Bench, version: EtcdVersion, label: &str) -> BTreeMap<String, usize> {
    wait_short_leases(&b);
    let observed = observe(&b.admin);
    b.cluster.stop_member(0).expect("stop");
    let (model, hist) = replay(&b.cluster, minor(version));
    let mine = model_view(&model);
    eprintln!(
        "{label} ({}): {} etcdctl ops ({} refused), {} keys, {} leases, revision {}; outcomes {hist:?}",
        version.as_str(),
        b.ops,
        b.rejected_by_client,
        observed.keys.len(),
        observed.leases.len(),
        observed.revision
    );
    assert_eq!(mine.keys, observed.keys, "{label}: keys");
    assert_eq!(mine.revision, observed.revision, "{label}: revision");
    assert_eq!(mine.leases, observed.leases, "{label}: leases");
    assert_eq!(mine.users, observed.users, "{label}: users");
    assert_eq!(mine.roles, observed.roles, "{label}: roles");
    hist
}

// ------------------------------------------------------------ scenarios

fn kv_workload(version: EtcdVersion, seed: u64, n: usize) {
    let mut b = Bench::start(version, ClusterOptions::default());
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let ctl = b.anon.clone();
    let mut rev = 1;
    for i in 0..n {
        if i % 25 == 0 {
            rev = revision(&ctl);
        }
        kv_op(&mut b, &mut rng, &ctl, rev);
    }
    let hist = finish(b, version, &format!("kv seed {seed}"));
    for want in ["Applied", "TxnElse", "NoChange"] {
        assert!(
            hist.contains_key(want),
            "workload never produced {want}: {hist:?}"
        );
    }
    assert!(hist.keys().any(|k| k.starts_with("Rejected")), "{hist:?}");
}

fn auth_workload(version: EtcdVersion, seed: u64, n: usize) {
    let mut b = Bench::start(version, ClusterOptions::default());
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let anon = b.anon.clone();
    let cmds: &[&[&str]] = &[
        &["user", "add", "root:pw"],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice:pw"],
        &["user", "add", "bob", "--no-password"],
        &["role", "add", "ra"],
        &["role", "add", "rb"],
        &[
            "role",
            "grant-permission",
            "ra",
            "readwrite",
            "p/",
            "--prefix",
        ],
        &["role", "grant-permission", "ra", "read", "a"],
        &["role", "grant-permission", "ra", "write", "b"],
        &["role", "grant-permission", "ra", "readwrite", "r/x", "r/z"],
        &["role", "grant-permission", "rb", "readwrite", "q"],
        &["user", "grant-role", "alice", "ra"],
        &["user", "grant-role", "bob", "rb"],
        // Errors on purpose: missing role, duplicate user, unknown revoke.
        &["user", "grant-role", "alice", "nope"],
        &["user", "add", "alice:pw"],
        &["role", "revoke-permission", "rb", "zzz"],
    ];
    for c in cmds {
        let args: Vec<String> = c.iter().map(s).collect();
        b.run(&anon, &args);
    }
    // Some plain data first, as the anonymous (pre-auth) client.
    for _ in 0..n / 5 {
        kv_op(&mut b, &mut rng, &anon, revision(&anon));
    }
    assert!(b.run(&anon, &[s("auth"), s("enable")]), "auth enable");
    let root = anon.clone().with_user("root:pw");
    let alice = anon.clone().with_user("alice:pw");
    b.admin = root.clone();
    let mut rev = revision(&root);
    for i in 0..n {
        if i % 25 == 0 {
            rev = revision(&root);
        }
        match rng.below(10) {
            // Alice: some allowed, some denied.
            0..=5 => kv_op(&mut b, &mut rng, &alice, rev),
            6 | 7 => kv_op(&mut b, &mut rng, &root, rev),
            _ => {
                let cmd: Vec<String> = match rng.below(8) {
                    0 => vec![
                        s("role"),
                        s("grant-permission"),
                        s("ra"),
                        s("readwrite"),
                        s("q"),
                    ],
                    1 => vec![s("role"), s("revoke-permission"), s("ra"), s("q")],
                    2 => vec![
                        s("role"),
                        s("grant-permission"),
                        s("ra"),
                        s("read"),
                        s("c"),
                        s("e"),
                    ],
                    3 => vec![s("role"), s("revoke-permission"), s("ra"), s("c"), s("e")],
                    4 => vec![s("user"), s("grant-role"), s("alice"), s("rb")],
                    5 => vec![s("user"), s("revoke-role"), s("alice"), s("rb")],
                    6 => vec![s("role"), s("add"), format!("extra{}", rng.below(3))],
                    _ => vec![s("role"), s("delete"), format!("extra{}", rng.below(3))],
                };
                b.run(&root, &cmd);
            }
        }
    }
    // Alice cannot administer; root cannot lose root.
    b.run(&alice, &[s("role"), s("add"), s("mine")]);
    b.run(&root, &[s("user"), s("revoke-role"), s("root"), s("root")]);
    b.run(&root, &[s("user"), s("delete"), s("root")]);
    b.ops += 1;
    let _ = root.run_with_stdin(&["user", "passwd", "alice", "--interactive=false"], b"pw\n");
    if seed.is_multiple_of(2) {
        b.run(&root, &[s("auth"), s("disable")]);
        b.admin = anon.clone();
        b.run(&anon, &[s("user"), s("delete"), s("bob")]);
        b.run(&anon, &[s("role"), s("delete"), s("rb")]);
    }
    let hist = finish(b, version, &format!("auth seed {seed}"));
    let denied = format!("Rejected({:?})", Rejection::PermissionDenied);
    assert!(
        hist.contains_key(&denied),
        "no permission denials: {hist:?}"
    );
}

/// NOSPACE: a tiny quota; puts, txns with puts and lease grants are refused
/// while deletes and revokes apply; after compact + defrag + disarm writes
/// work again. With auth enabled, the runtime-activated alarm skips auth
/// checks (alice deletes a key she may not write).
fn nospace_workload(version: EtcdVersion) {
    let opts = ClusterOptions {
        quota_backend_bytes: Some(256 * 1024),
        ..Default::default()
    };
    let mut b = Bench::start(version, opts);
    let anon = b.anon.clone();
    for c in [
        "user add root:pw",
        "user grant-role root root",
        "user add alice:pw",
        "role add ra",
        "role grant-permission ra readwrite p/ --prefix",
        "user grant-role alice ra",
        "auth enable",
    ] {
        let args: Vec<String> = c.split(' ').map(s).collect();
        assert!(b.run(&anon, &args), "{c}");
    }
    let root = anon.clone().with_user("root:pw");
    let alice = anon.clone().with_user("alice:pw");
    b.admin = root.clone();
    let lease = b.grant(&root, 600).expect("grant");
    b.long_leases.push(lease);
    b.run(
        &root,
        &[s("put"), format!("--lease={lease:x}"), s("leased"), s("v")],
    );
    b.run(&root, &[s("put"), s("secret"), s("v")]);
    let big = "x".repeat(16 * 1024);
    let mut full = false;
    for i in 0..200 {
        if !b.run(
            &root,
            &[s("put"), format!("fill/{:03}", i % 64), big.clone()],
        ) {
            full = true;
            break;
        }
    }
    assert!(full, "quota never reached");
    let alarms = root.run(&["alarm", "list"]).unwrap_or_default();
    assert!(alarms.contains("NOSPACE"), "alarm list: {alarms}");
    // While the db is over quota the API layer refuses writes before they
    // reach the log; shrink the db (the alarm stays) so they are proposed.
    b.run(&root, &[s("del"), s("--prefix"), s("fill/")]);
    let rev = revision(&root);
    b.run(&root, &[s("compact"), rev.to_string()]);
    b.run(&root, &[s("defrag")]);
    // Refused by the capped applier (entries in the log).
    assert!(!b.run(&root, &[s("put"), s("k"), s("v")]));
    assert!(b.grant(&root, 60).is_none());
    b.txn(&root, "\nput k v\n\ndel leased\n\n");
    assert!(!b.run(&root, &[s("put"), s("fill/x"), s("v")]));
    // Applied while capped; alice's delete skips auth (runtime alarm).
    b.txn(&root, "\ndel leased\n\n\n");
    assert!(
        b.run(&alice, &[s("del"), s("secret")]),
        "runtime alarm skips auth"
    );
    b.run(&root, &[s("lease"), s("revoke"), format!("{lease:x}")]);
    b.long_leases.clear();
    b.run(&root, &[s("alarm"), s("disarm")]);
    assert!(
        b.run(&root, &[s("put"), s("after"), s("ok")]),
        "write after disarm"
    );
    // Auth is enforced again.
    assert!(!b.run(&alice, &[s("del"), s("after")]));
    let hist = finish(b, version, "nospace");
    let nospace = format!("Rejected({:?})", Rejection::NoSpace);
    assert!(hist.get(&nospace).copied().unwrap_or(0) >= 3, "{hist:?}");
}

#[test]
fn differential_kv_3_4() {
    for seed in [1, 2] {
        kv_workload(EtcdVersion::V3_4, seed, 250);
    }
}

#[test]
fn differential_kv_3_5() {
    for seed in [1, 2] {
        kv_workload(EtcdVersion::V3_5, seed, 250);
    }
}

#[test]
fn differential_auth_3_4_seed3() {
    auth_workload(EtcdVersion::V3_4, 3, 120);
}

#[test]
fn differential_auth_3_4_seed4() {
    auth_workload(EtcdVersion::V3_4, 4, 120);
}

#[test]
fn differential_auth_3_5_seed3() {
    auth_workload(EtcdVersion::V3_5, 3, 120);
}

#[test]
fn differential_auth_3_5_seed4() {
    auth_workload(EtcdVersion::V3_5, 4, 120);
}

#[test]
fn differential_nospace_3_4() {
    nospace_workload(EtcdVersion::V3_4);
}

#[test]
fn differential_nospace_3_5() {
    nospace_workload(EtcdVersion::V3_5);
}

/// Seeding from the member's own `db`: the seeded model equals the model
/// replayed from the WAL; then the seeded model follows the log past the
/// db's consistent index (earlier entries are skipped) and equals etcd.
fn snapshot_seeding(version: EtcdVersion, seed: u64) {
    let mut b = Bench::start(version, ClusterOptions::default());
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let ctl = b.anon.clone();
    for c in [
        "user add root:pw",
        "user grant-role root root",
        "role add ra",
        "role grant-permission ra read p/ --prefix",
    ] {
        let args: Vec<String> = c.split(' ').map(s).collect();
        b.run(&ctl, &args);
    }
    for _ in 0..120 {
        let rev = revision(&ctl);
        kv_op(&mut b, &mut rng, &ctl, rev);
    }
    wait_short_leases(&b);
    b.cluster.stop_member(0).expect("stop");
    let cfg = ModelConfig {
        version: minor(version),
        min_lease_ttl: ModelConfig::min_lease_ttl_for(50, 500),
        txn_range_view: TxnRangeView::Proposer,
    };
    let db_path = b.cluster.data_dir(0).unwrap().join("member/snap/db");
    let db = etcd_standby_bolt::BoltFile::open(&db_path).expect("open db");
    let state = etcd_standby_bolt::model_state(&db).expect("read db");
    let ci = state.consistent_index;
    let mut seeded = Model::from_snapshot_with_config(cfg.clone(), state);
    let (replayed, _) = replay(&b.cluster, minor(version));
    assert_eq!(
        model_view(&seeded),
        model_view(&replayed),
        "seeded vs replayed"
    );
    // Passwords differ by design on 3.4 (the log has plaintext, the db a hash).
    let (sa, ra) = (seeded.auth(), replayed.auth());
    assert_eq!(
        (sa.enabled, sa.revision, &sa.roles),
        (ra.enabled, ra.revision, &ra.roles)
    );
    if version == EtcdVersion::V3_5 {
        assert_eq!(sa, ra, "3.5 logs carry the stored hash");
    }
    assert_eq!(seeded.compacted(), replayed.compacted());
    assert!(ci > 0 && ci <= replayed.applied_index());
    // Continue on the restarted member.
    b.cluster.restart_member(0).expect("restart");
    b.short_leases.clear();
    for _ in 0..80 {
        let rev = revision(&ctl);
        kv_op(&mut b, &mut rng, &ctl, rev);
    }
    wait_short_leases(&b);
    let observed = observe(&b.admin);
    b.cluster.stop_member(0).expect("stop");
    let wal = b.cluster.data_dir(0).unwrap().join("member/wal");
    let log = etcd_standby_wal::read_log(&wal, 0).expect("read wal");
    let (mut skipped, mut applied) = (0, 0);
    for e in &log.entries {
        let a = seeded.apply(e.index, e.term, &decode_entry(e));
        assert!(!a.outcome.is_halt(), "entry {}: {:?}", e.index, a.outcome);
        if a.outcome == Outcome::AlreadyApplied {
            skipped += 1;
        } else {
            applied += 1;
        }
    }
    eprintln!(
        "snapshot seed {seed} ({}): consistent index {ci}, {skipped} entries skipped, {applied} applied after seeding, revision {}",
        version.as_str(),
        observed.revision
    );
    assert_eq!(model_view(&seeded), observed, "seeded model after the log");
}

#[test]
fn differential_snapshot_seeding_3_4() {
    snapshot_seeding(EtcdVersion::V3_4, 5);
}

#[test]
fn differential_snapshot_seeding_3_5() {
    snapshot_seeding(EtcdVersion::V3_5, 6);
}
