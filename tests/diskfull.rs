//! The replicator's data dir fills up (a small tmpfs the test mounts, then
//! fills with a filler file while the primary takes writes): the learner
//! stays up in `disk_full` with ES-3002 and the alarm metric, acknowledges
//! nothing (its WAL holds exactly the member's entries, and no raft message
//! leaves it meanwhile), and once the filler is deleted it recovers in the
//! same process, replay catches up and `verify` finds no difference.
//! Needs root (mount); the tests run as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_standby_integration::fidelity::{Replicator, assert_verified};
use etcd_standby_integration::load::{cluster_raft_index, varied_writes};
use etcd_standby_integration::standby::{
    assert_same_entries, metric_value, wal_entries_and_commit,
};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion};

/// A tmpfs of `size_mib` mounted by this test at a fresh dir, unmounted on
/// drop (also when the test fails).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size_mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount tmpfs at {} (the test needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process of ours not yet reaped): detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Fills the file system of `path`'s dir with `path` until ENOSPC; returns
/// the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 1] {
        let buf = vec![0x5au8; chunk];
        loop {
            match f.write(&buf) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    written
}

/// `/metrics` value of the series `name` (exact, labels included).
fn metric(r: &Replicator, name: &str) -> Option<f64> {
    metric_value(&r.get("/metrics")?.1, name)
}

/// Sum of `etcd_standby_peer_messages_sent_total` over its streams.
fn messages_sent(r: &Replicator) -> f64 {
    let (_, body) = r.get("/metrics").expect("metrics");
    body.lines()
        .filter(|l| l.starts_with("etcd_standby_peer_messages_sent_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Waits (a hang guard) until `/status`'s node state is `state`.
fn wait_node_state(r: &mut Replicator, state: &str, timeout: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Some(st) = r.status()
            && st["node"]["state"].as_str() == Some(state)
        {
            return st;
        }
        if let Some(exit) = r.try_wait() {
            panic!("replicator exited ({exit})\n{}", r.log_tail(60));
        }
        assert!(
            start.elapsed() < timeout,
            "node state never became {state} within {timeout:?}: {:?}\n{}",
            r.status().map(|s| s["node"].clone()),
            r.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn disk_full_and_recovery(version: EtcdVersion) {
    let primary = EtcdCluster::start(version, 1, ClusterOptions::default()).unwrap();
    let standby = EtcdCluster::start(version, 1, ClusterOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Declared before the replicator, so it is unmounted after the
    // replicator is killed (drops run in reverse order).
    let fs = Tmpfs::mount(&tmp.path().join("data"), 24);
    let data_dir = fs.dir.clone();
    let mut r = Replicator::start(
        &primary,
        &standby,
        &data_dir,
        &[
            "--wal-segment-bytes",
            "1048576",
            "--model-save-every",
            "200",
            "--marker-every",
            "500",
        ],
    );
    r.wait_joined(Duration::from_secs(120));
    let pid = r.pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(varied_writes(primary.client_urls(), 500, 8, 1));
    r.wait_replayed(Duration::from_secs(120));

    // Writes go on while the data dir fills up.
    let load = rt.spawn(varied_writes(primary.client_urls(), 4_000, 8, 2));
    std::thread::sleep(Duration::from_millis(300));
    let filler = data_dir.join("filler");
    let filled = fill(&filler);
    let st = wait_node_state(&mut r, "disk_full", Duration::from_secs(60));
    let full_at = Instant::now();
    assert_eq!(st["node"]["error_code"], "ES-3002", "{st}");
    assert!(
        st["node"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device")),
        "{st}"
    );
    assert_eq!(
        metric(&r, "etcd_standby_node_state{state=\"disk_full\"}"),
        Some(1.0)
    );
    assert!(metric(&r, "etcd_standby_local_disk_full_total").is_some_and(|v| v >= 1.0));
    let (code, body) = r.get("/healthz").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_ne!(r.get("/readyz").unwrap().0, 200);

    // Nothing leaves while full: no acknowledgement of anything (the
    // counter may still move by messages queued before the failure).
    std::thread::sleep(Duration::from_secs(1));
    let sent_before = messages_sent(&r);
    rt.block_on(load).unwrap();
    let primary_index = rt.block_on(cluster_raft_index(primary.client_urls()));
    std::thread::sleep(Duration::from_secs(2));
    let st = r.status().unwrap();
    assert_eq!(st["node"]["state"], "disk_full", "{st}");
    assert_eq!(
        messages_sent(&r),
        sent_before,
        "a raft message left while full"
    );
    let durable = st["node"]["last_durable_index"].as_u64().unwrap();
    assert!(
        durable < primary_index,
        "the learner is behind while full: durable {durable}, primary {primary_index}"
    );
    // What the learner holds (what it could have acknowledged) is durable
    // in its WAL, and equals the member's log.
    let member_wal = primary.data_dir(0).unwrap().join("member").join("wal");
    let our_wal = data_dir.join("member").join("wal");
    let (ours, _) = wal_entries_and_commit(&our_wal);
    let (theirs, _) = wal_entries_and_commit(&member_wal);
    let our_last = ours.keys().next_back().copied().unwrap_or(0);
    assert!(
        our_last >= durable,
        "status says {durable} is durable but the WAL ends at {our_last}"
    );
    assert_same_entries(&ours, &theirs, 500);
    // Replay keeps going on what is durable (never halted by the full disk).
    r.wait_checkpoint(
        st["node"]["commit_index"].as_u64().unwrap().min(durable),
        Duration::from_secs(60),
    );
    assert_eq!(r.pid(), pid);

    // Space returns: the learner recovers without a restart.
    std::fs::remove_file(&filler).unwrap();
    let freed_at = Instant::now();
    let st = wait_node_state(&mut r, "following", Duration::from_secs(60));
    let recovery = freed_at.elapsed();
    assert!(st["node"]["error"].is_null(), "{st}");
    assert_eq!(r.pid(), pid, "recovered in the same process");
    eprintln!(
        "{version:?}: filled {filled} bytes; full for {:.1} s; following again {:.2} s after the filler was deleted",
        full_at.elapsed().as_secs_f64(),
        recovery.as_secs_f64()
    );
    r.wait_replayed(Duration::from_secs(120));
    assert_eq!(
        metric(&r, "etcd_standby_node_state{state=\"following\"}"),
        Some(1.0)
    );
    assert_eq!(r.pid(), pid);
    assert_verified(&primary, &standby, &[], &r, "after the disk-full episode");

    // The log is the member's, through the primary's end.
    let (ours, _) = wal_entries_and_commit(&our_wal);
    let (theirs, _) = wal_entries_and_commit(&member_wal);
    assert!(ours.keys().next_back().is_some_and(|l| *l >= primary_index));
    assert_same_entries(&ours, &theirs, 1_000);
    // One alarm, and reminders at most every 30 s: no flood.
    let log = r.log();
    let alarms = log.matches("ALARM: the data dir is full").count();
    let reminders = log.matches("the data dir is still full").count();
    assert!(alarms >= 1, "{}", r.log_tail(40));
    assert!(
        reminders as u64 <= full_at.elapsed().as_secs() / 30 + 1,
        "{reminders} reminders"
    );
    assert!(
        log.matches("could not save the shadow model").count() <= 2,
        "model-save warnings flood\n{}",
        r.log_tail(40)
    );
    assert!(
        !data_dir.join("replay").read_dir().is_ok_and(|d| d
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))),
        "a partial model save was left behind"
    );
    r.kill();
}

#[test]
fn disk_full_stops_acks_alarms_and_recovers_in_place_3_5() {
    disk_full_and_recovery(EtcdVersion::V3_5);
}

#[test]
fn disk_full_stops_acks_alarms_and_recovers_in_place_3_4() {
    disk_full_and_recovery(EtcdVersion::V3_4);
}
