//! The "learner behind the primary" watchdog against real etcd (issue 12
//! item 4): a learner that stops learning commits is reported, with the
//! reason, in `/status`, the metric and the log, and the report clears when
//! the link heals.
//!
//! Replay's own stall watch cannot see this: it compares replay with the
//! commit point our node loop publishes, and a learner cut off from the
//! leader has both equal (`replay.stalled_seconds` stays 0, as asserted
//! below). The learner's peer traffic runs through fault-injecting proxies
//! (`--advertise-peer-url` + `--peer-listen` for the inbound side,
//! `--peer-dial-via` for the outbound side); the client API stays direct,
//! so the watchdog keeps reading the primary's raft index.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_standby_client::pb::PutRequest;
use etcd_standby_integration::etcd_standby_bin;
use etcd_standby_integration::fidelity::connect;
use etcd_standby_integration::load::cluster_raft_index;
use etcd_standby_integration::proxy::{Links, Mode};
use etcd_standby_integration::standby::http_get;
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion, free_port};

/// The watchdog threshold the replicator runs with here (seconds).
const STALL_AFTER: u64 = 4;
/// Bound of every wait (a hang guard, not a speed target).
const WAIT: Duration = Duration::from_secs(90);

/// `etcd-standby run` started by this test (the shared `Standby` helper
/// cannot pass the hidden threshold variable); killed, by its PID, on drop.
struct Replicator {
    child: Child,
    admin: String,
    log: std::path::PathBuf,
}

impl Replicator {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status(&self) -> serde_json::Value {
        http_get(&self.admin, "/status")
            .and_then(|(_, b)| serde_json::from_str(&b).ok())
            .unwrap_or_default()
    }

    /// A sample of `/metrics` without labels.
    fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = http_get(&self.admin, "/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Waits until `ok(status)` holds; panics with the status and log after [`WAIT`].
    fn wait_for(&mut self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
        let start = Instant::now();
        loop {
            let st = self.status();
            if ok(&st) {
                eprintln!("{what}: after {:?}", start.elapsed());
                return;
            }
            if let Some(code) = self.child.try_wait().unwrap() {
                panic!(
                    "replicator exited ({code}) waiting for {what}\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < WAIT,
                "{what}: not within {WAIT:?}\nstatus {st}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn learner_behind_the_primary_is_reported_and_clears(version: EtcdVersion) {
    etcd_standby_bin();
    let primary = EtcdCluster::start(version, 3, ClusterOptions::default()).unwrap();
    let standby = EtcdCluster::start(version, 1, ClusterOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The learner's peer traffic through proxies (the standby's client
    // traffic stays direct: the links' standby proxies are not used).
    let links = Links::new(&primary, &standby);
    let admin = format!("127.0.0.1:{}", free_port().unwrap());
    let log = dir.path().join("replicator.log");
    let child = Command::new(etcd_standby_bin())
        .args(["run", "--source-endpoints", &primary.client_endpoints()])
        .args(["--standby-endpoints", &standby.client_endpoints()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--admin-listen", &admin])
        .args(links.flags())
        .env("ETCD_STANDBY_LOG", "info,raft=warn,slog=warn")
        .env("ETCD_STANDBY_WATCHDOG_STALL_AFTER", STALL_AFTER.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut r = Replicator { child, admin, log };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let p = rt.block_on(connect(primary.client_urls(), None));
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    // The primary takes writes throughout (the learner is not in its quorum).
    let writer = {
        let (p, stop, written) = (p.clone(), stop.clone(), written.clone());
        rt.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let put = PutRequest {
                    key: format!("/w/{}", i % 100).into(),
                    value: i.to_string().into(),
                    ..Default::default()
                };
                if p.put(put).await.is_ok() {
                    written.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Following closely under load: never behind.
    r.wait_for("the learner joined and the watch saw the primary", |st| {
        st["node"]["state"] == "following"
            && st["source"]["primary_index"].as_u64().unwrap_or(0) > 0
            && st["replay"]["state"] == "replaying"
    });
    let caught_up_to = rt.block_on(cluster_raft_index(primary.client_urls()));
    r.wait_for("the learner caught up", |st| {
        st["node"]["commit_index"].as_u64().unwrap_or(0) >= caught_up_to
    });
    std::thread::sleep(Duration::from_secs(2 * STALL_AFTER));
    let st = r.status();
    assert_eq!(st["source"]["behind_primary"], false, "{st}");
    assert_eq!(st["source"]["stall_after_seconds"], STALL_AFTER, "{st}");
    assert!(
        !r.log().contains("the learner is behind the primary"),
        "{}",
        r.log()
    );

    // Cut the learner's peer link both ways (half-open connections) while
    // the primary keeps committing.
    links.learner(Mode::Drop);
    let cut_at = written.load(Ordering::Relaxed);
    r.wait_for("the watchdog declared the learner behind", |st| {
        st["source"]["behind_primary"] == true
    });
    assert!(
        written.load(Ordering::Relaxed) > cut_at,
        "the primary took no writes"
    );
    let st = r.status();
    let src = &st["source"];
    let commit = st["node"]["commit_index"].as_u64().unwrap();
    assert!(
        src["primary_index"].as_u64().unwrap() > commit,
        "the primary is ahead: {st}"
    );
    assert!(
        src["behind_primary_seconds"].as_u64().unwrap() >= STALL_AFTER,
        "{st}"
    );
    assert_eq!(src["behind_code"], "ES-3005", "{st}");
    let why = src["behind_reason"].as_str().unwrap();
    for part in [
        format!("our commit index {commit}"),
        "stopped learning commits".to_owned(),
        "following leader".to_owned(),
        "peer streams:".to_owned(),
    ] {
        assert!(why.contains(&part), "{part:?} not in {why:?}");
    }
    // The blind spot this closes: replay has applied all it was given.
    assert_eq!(st["replay"]["stalled_seconds"], 0, "{st}");
    let gauge = r
        .metric("etcd_standby_learner_behind_primary_seconds")
        .unwrap();
    assert!(gauge >= STALL_AFTER as f64, "gauge {gauge}");
    assert!(
        r.metric("etcd_standby_primary_raft_index").unwrap() > commit as f64,
        "primary index gauge"
    );
    let log = r.log();
    let line = log
        .lines()
        .find(|l| l.contains("the learner is behind the primary"))
        .unwrap_or_else(|| panic!("no warning in the log:\n{log}"));
    assert!(
        line.contains("WARN") && line.contains("ES-3005") && line.contains("primary_index"),
        "{line}"
    );

    // Heal: the learner catches up and the report clears.
    links.learner(Mode::Pass);
    r.wait_for("the behind report cleared", |st| {
        st["source"]["behind_primary"] == false && st["source"]["behind_reason"].is_null()
    });
    assert!(
        r.log()
            .contains("the learner caught up with the primary's reported index again"),
        "{}",
        r.log()
    );
    stop.store(true, Ordering::Relaxed);
    rt.block_on(writer).unwrap();
    let last = rt.block_on(cluster_raft_index(primary.client_urls()));
    r.wait_for("the learner reached the primary's last index", |st| {
        st["node"]["commit_index"].as_u64().unwrap_or(0) >= last
            && st["source"]["behind_primary_seconds"] == 0
    });
    assert_eq!(
        r.metric("etcd_standby_learner_behind_primary_seconds"),
        Some(0.0)
    );
}

#[test]
fn learner_behind_the_primary_watchdog_3_4() {
    learner_behind_the_primary_is_reported_and_clears(EtcdVersion::V3_4);
}

#[test]
fn learner_behind_the_primary_watchdog_3_5() {
    learner_behind_the_primary_is_reported_and_clears(EtcdVersion::V3_5);
}
