//! Helpers for the replay fidelity tests (`tests/replay_fidelity.rs`): a
//! replicator process whose flags can change between restarts, `verify`,
//! waiting for replay, a live comparison that works with auth enabled, and
//! small request builders.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_standby_client::pb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, request_op,
};
use etcd_standby_client::{Client, ClientConfig, prefix_end};
use etcd_standby_testkit::EtcdCluster;

/// The bank invariant on one read of its accounts (`kvs`, at `revision`):
/// all `accounts` present and summing to `total`. What is wrong, if anything.
pub fn bank_violation(
    kvs: &[etcd_standby_client::KeyValue],
    revision: i64,
    accounts: usize,
    total: i64,
) -> Option<String> {
    let sum: i64 = kvs
        .iter()
        .map(|kv| {
            std::str::from_utf8(&kv.value)
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    (kvs.len() != accounts || sum != total).then(|| {
        format!(
            "standby revision {revision}: {} accounts, sum {sum}",
            kvs.len()
        )
    })
}

use crate::etcd_standby_bin;
use crate::load::{block_on, cluster_raft_index};
use crate::standby::Standby;

/// The replicator's reserved prefix on the standby (checkpoint, epoch).
pub const RESERVED_PREFIX: &str = "__etcd_standby__/";

/// Whether the long (soak) variants run: `ETCD_STANDBY_SOAK` set to a
/// non-empty value other than `0` (`cargo xtask test --soak`).
pub fn soak() -> bool {
    std::env::var("ETCD_STANDBY_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A running `etcd-standby run --standby-endpoints ...` whose flags can be
/// extended before a restart (same data dir, peer URL and admin port): the
/// [`Standby`] process harness plus the replay waits below.
pub struct Replicator {
    inner: Standby,
    source_endpoints: Vec<String>,
}

impl std::ops::Deref for Replicator {
    type Target = Standby;
    fn deref(&self) -> &Standby {
        &self.inner
    }
}

impl std::ops::DerefMut for Replicator {
    fn deref_mut(&mut self) -> &mut Standby {
        &mut self.inner
    }
}

impl Replicator {
    /// Starts a replicator from `primary` to `standby` with a fresh or
    /// existing `data_dir`.
    pub fn start(
        primary: &EtcdCluster,
        standby: &EtcdCluster,
        data_dir: &Path,
        extra: &[&str],
    ) -> Replicator {
        Replicator::start_to(primary, &standby.client_endpoints(), data_dir, extra)
    }

    /// [`Replicator::start`] writing to `standby_endpoints` (comma
    /// separated), e.g. proxies in front of the standby's members.
    pub fn start_to(
        primary: &EtcdCluster,
        standby_endpoints: &str,
        data_dir: &Path,
        extra: &[&str],
    ) -> Replicator {
        let mut flags = vec!["--standby-endpoints", standby_endpoints];
        flags.extend_from_slice(extra);
        Replicator {
            inner: Standby::start(primary, data_dir, &flags),
            source_endpoints: primary.client_urls(),
        }
    }

    /// Waits until the learner joined the primary and the standby caught up
    /// with it. Call before the primary enables auth: the replicator has no
    /// source credentials, and etcd refuses `MemberAdd` without them.
    pub fn wait_joined(&mut self, timeout: Duration) {
        let start = Instant::now();
        while self
            .status()
            .and_then(|s| s["node"]["member_id"].as_str().map(str::to_owned))
            .is_none_or(|m| m.is_empty())
        {
            if let Some(st) = self.try_wait() {
                panic!(
                    "replicator exited ({st}) before joining\n{}",
                    self.log_tail(80)
                );
            }
            assert!(
                start.elapsed() < timeout,
                "the learner did not join within {timeout:?}: {:?}\n{}",
                self.status(),
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_replayed(timeout);
    }

    /// Waits until the standby's checkpoint reaches the primary's current
    /// raft index (a hang guard, not a speed assertion).
    pub fn wait_replayed(&mut self, timeout: Duration) {
        let target = block_on(cluster_raft_index(self.source_endpoints.clone()));
        self.wait_checkpoint(target, timeout);
    }

    /// Waits until the standby has everything up to `target` (its
    /// confirmed index: the checkpoint, or beyond it with entries that
    /// wrote nothing under `--preserve-revisions`).
    pub fn wait_checkpoint(&mut self, target: u64, timeout: Duration) {
        let start = Instant::now();
        loop {
            let replay = self.replay();
            let cp = replay
                .as_ref()
                .and_then(|r| r.get("confirmed_index"))
                .and_then(serde_json::Value::as_u64);
            if cp.is_some_and(|c| c >= target) {
                return;
            }
            if let Some(r) = &replay
                && matches!(r["state"].as_str(), Some("halted" | "fenced"))
            {
                panic!(
                    "replay stopped before checkpoint {target}: {r}\n{}",
                    self.log_tail(60)
                );
            }
            if let Some(st) = self.try_wait() {
                panic!("replicator exited ({st})\n{}", self.log_tail(80));
            }
            assert!(
                start.elapsed() < timeout,
                "standby checkpoint stuck at {cp:?} < {target} after {timeout:?}\nreplay {replay:?}\n{}",
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `replay.state` is `state`; returns the `replay` object.
    pub fn wait_state(&mut self, state: &str, timeout: Duration) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let replay = self.replay();
            if let Some(r) = &replay
                && r["state"].as_str() == Some(state)
            {
                return r.clone();
            }
            if let Some(st) = self.try_wait() {
                panic!(
                    "replicator exited ({st}) waiting for state {state}\n{}",
                    self.log_tail(80)
                );
            }
            assert!(
                start.elapsed() < timeout,
                "replay state never became {state:?} within {timeout:?}: {replay:?}\n{}",
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `etcd-standby verify` (plus `extra` flags); returns whether it
/// found no difference, and its output.
pub fn verify(primary: &EtcdCluster, standby: &EtcdCluster, extra: &[&str]) -> (bool, String) {
    let out = Command::new(etcd_standby_bin())
        .args(["verify", "--source-endpoints", &primary.client_endpoints()])
        .args(["--standby-endpoints", &standby.client_endpoints()])
        .args(extra)
        .output()
        .expect("run etcd-standby verify");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Asserts that `verify` finds no difference, with the replicator's log
/// tail on failure. A live primary may move between "caught up" and the
/// read (a short lease expiring: the primary has revoked it, its revoke is
/// not replayed yet), which `verify` reports as a difference; as its help
/// says, a rerun tells lag from divergence: up to three runs 2 s apart,
/// and a difference that stays fails. Differences that cleared are printed.
pub fn assert_verified(
    primary: &EtcdCluster,
    standby: &EtcdCluster,
    extra: &[&str],
    r: &Replicator,
    what: &str,
) {
    let mut out = String::new();
    for attempt in 1..=3 {
        let (ok, o) = verify(primary, standby, extra);
        if ok {
            if attempt > 1 {
                eprintln!("{what}: verify clean on run {attempt}; earlier it saw lag:\n{out}");
            }
            return;
        }
        out = o;
        std::thread::sleep(Duration::from_secs(2));
    }
    panic!(
        "{what}: verify found differences in 3 runs 2 s apart:\n{out}\nreplay {:?}\n{}",
        r.replay(),
        r.log_tail(60)
    );
}

/// Connects to `endpoints`, as `user` (name, password) when given.
pub async fn connect(endpoints: Vec<String>, user: Option<(&str, &str)>) -> Client {
    let mut cfg = ClientConfig::new(endpoints);
    cfg.user = user.map(|(u, p)| (u.to_owned(), p.to_owned()));
    Client::connect(cfg).await.expect("connect")
}

/// Every key outside the reserved prefix: key → (value, lease).
pub async fn all_keys(c: &Client) -> BTreeMap<Bytes, (Bytes, i64)> {
    let mut out = BTreeMap::new();
    let mut pages = c.range_pages(
        Bytes::from_static(b"\0"),
        Bytes::from_static(b"\0"),
        1000,
        false,
    );
    while let Some(page) = pages.next_page().await.expect("read keys") {
        for kv in page {
            if !kv.key.starts_with(RESERVED_PREFIX.as_bytes()) {
                out.insert(kv.key, (kv.value, kv.lease));
            }
        }
    }
    out
}

/// The standby's header revision (changes with any write).
pub async fn revision(c: &Client) -> i64 {
    let r = c
        .range(RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("count");
    r.header.map(|h| h.revision).unwrap_or_default()
}

/// A put op.
pub fn put_op(key: impl Into<Bytes>, value: impl Into<Bytes>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..Default::default()
        })),
    }
}

/// A single-key delete op.
pub fn del_op(key: impl Into<Bytes>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.into(),
                ..Default::default()
            },
        )),
    }
}

/// A prefix delete op.
pub fn del_prefix_op(prefix: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: Bytes::from(prefix.to_owned()),
                range_end: Bytes::from(prefix_end(prefix.as_bytes())),
                ..Default::default()
            },
        )),
    }
}

/// A single-key range op.
pub fn get_op(key: impl Into<Bytes>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

/// A nested txn op.
pub fn txn_op(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestTxn(t)),
    }
}

/// A txn.
pub fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}
