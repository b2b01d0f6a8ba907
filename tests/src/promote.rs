//! Helpers for the promotion tests (`tests/promote.rs`): running `promote`,
//! snapshotting what a dry run must not change, and the primary's state
//! rebuilt from a dead member's own WAL with our reader and model.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use etcd_standby_model::Model;
use etcd_standby_testkit::EtcdCluster;

use crate::etcd_standby_bin;

/// The outcome of one `etcd-standby promote`.
#[derive(Debug)]
pub struct PromoteRun {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl PromoteRun {
    /// Stdout parsed as the `-w json` object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "promote printed no JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Display for PromoteRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `etcd-standby promote --data-dir D --standby-endpoints S [--source-endpoints P] ARGS`.
pub fn promote(
    data_dir: &Path,
    standby: &str,
    source: Option<&str>,
    args: &[&str],
    env: &[(&str, &str)],
) -> PromoteRun {
    let mut cmd = Command::new(etcd_standby_bin());
    cmd.args(["promote", "--data-dir"])
        .arg(data_dir)
        .args(["--standby-endpoints", standby]);
    if let Some(s) = source {
        cmd.args(["--source-endpoints", s]);
    }
    cmd.args(args)
        .env("ETCD_STANDBY_LOG", "info,raft=warn,slog=warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run etcd-standby promote");
    PromoteRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every file under `dir` with its size and modification time (what a dry
/// run must leave as it was).
pub fn dir_listing(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(p);
            } else {
                let name = p
                    .strip_prefix(dir)
                    .map(|r| r.display().to_string())
                    .unwrap_or_default();
                out.insert(
                    name,
                    (md.len(), md.modified().unwrap_or(std::time::UNIX_EPOCH)),
                );
            }
        }
    }
    out
}

/// The key-value state (key → value, lease) the primary had at raft
/// `index`, rebuilt from the WAL of one of its (dead) members with our own
/// reader and shadow model: the member whose WAL has `index` committed.
pub fn primary_state_at(primary: &EtcdCluster, index: u64) -> BTreeMap<Bytes, (Bytes, i64)> {
    for i in 0..primary.len() {
        let wal = primary
            .data_dir(i)
            .expect("member data dir")
            .join("member")
            .join("wal");
        let mut model = Model::new();
        let mut reached = 0;
        // The members were killed: their own hard state may lag the commit
        // the leader told us, so what is durable up to `index` counts.
        let end = etcd_standby_wal::for_each_assuming_committed(&wal, 0, index, index, |e| {
            let d = etcd_standby_decode::decode_entry(&e);
            model.apply(e.index, e.term, &d);
            reached = e.index;
            true
        });
        if end.is_ok() && reached == index {
            return model
                .keys()
                .map(|(k, s)| {
                    let v = model
                        .value_bytes(&s.value)
                        .expect("value in the model's store");
                    (Bytes::copy_from_slice(k), (v, s.lease))
                })
                .collect();
        }
    }
    panic!("no member's WAL has raft index {index} committed");
}
