//! Runs `etcd-standby run` as a child process against a test cluster, reads
//! its admin `/status`, and generates load on the primary over gRPC.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use etcd_standby_proto::raftpb;
use etcd_standby_testkit::{EtcdCluster, free_port};
use etcd_standby_wal::{WalReader, WalRecord};

use crate::etcd_standby_bin;

/// A running `etcd-standby run`.
pub struct Standby {
    child: Option<Child>,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Admin listener address.
    pub admin: String,
    /// The advertised peer URL.
    pub peer_url: String,
    log_path: PathBuf,
    args: Vec<String>,
}

impl Standby {
    /// Starts a learner for `cluster` with a fresh or existing `data_dir`.
    pub fn start(cluster: &EtcdCluster, data_dir: &Path, extra: &[&str]) -> Standby {
        let admin_port = free_port().expect("free port");
        let admin = format!("127.0.0.1:{admin_port}");
        // An --advertise-peer-url in `extra` (e.g. https) replaces the default.
        let given = extra
            .iter()
            .position(|a| *a == "--advertise-peer-url")
            .and_then(|i| extra.get(i + 1))
            .map(|u| u.to_string());
        let mut args = vec!["run".to_owned()];
        // A --source-endpoints in `extra` (e.g. https) replaces the default.
        if !extra.contains(&"--source-endpoints") {
            args.extend(["--source-endpoints".to_owned(), cluster.client_endpoints()]);
        }
        args.extend([
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
            "--admin-listen".to_owned(),
            admin.clone(),
        ]);
        let peer_url = match given {
            Some(u) => u,
            None => {
                let u = format!("http://127.0.0.1:{}", free_port().expect("free port"));
                args.extend(["--advertise-peer-url".to_owned(), u.clone()]);
                u
            }
        };
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = Standby {
            child: None,
            data_dir: data_dir.to_path_buf(),
            admin,
            peer_url,
            log_path: data_dir.with_extension("log"),
            args,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("standby log file");
        let child = Command::new(etcd_standby_bin())
            .args(&self.args)
            .env("ETCD_STANDBY_LOG", "info,raft=warn,slog=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd-standby");
        self.child = Some(child);
    }

    /// Starts the same learner again (same data dir, ports and flags).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running learner");
        self.spawn();
    }

    /// Starts it again with `extra` flags added (same data dir, peer URL, admin port).
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.args.extend(extra.iter().map(|s| s.to_string()));
        self.restart();
    }

    /// The learner's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `/status`'s `replay` object.
    pub fn replay(&self) -> Option<serde_json::Value> {
        self.status()?.get("replay").cloned()
    }

    /// A numeric field of `replay`.
    pub fn replay_u64(&self, field: &str) -> Option<u64> {
        self.replay()?.get(field)?.as_u64()
    }

    /// `GET path` on the admin listener: the status code and the body.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.admin, path)
    }

    /// `/status` as JSON, if the daemon answers.
    pub fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.get("/status")?.1).ok()
    }

    /// A numeric field of `/status`'s `node` object.
    pub fn node_u64(&self, field: &str) -> Option<u64> {
        self.status()?.get("node")?.get(field)?.as_u64()
    }

    /// Our member ID (hex) once joined.
    pub fn member_id(&self) -> Option<String> {
        let v = self.status()?;
        v["node"]["member_id"]
            .as_str()
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
    }

    /// Waits until the learner's commit index reaches `index`.
    pub fn wait_commit(&mut self, index: u64, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Some(c) = self.node_u64("commit_index")
                && c >= index
            {
                return;
            }
            if let Some(st) = self.try_wait() {
                panic!(
                    "learner exited ({st}) while waiting for commit {index}\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "learner commit stuck at {:?} < {index} after {timeout:?}\nstatus: {:?}\n{}",
                self.node_u64("commit_index"),
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the process exited (reaped).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(st)
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.child = None;
                return st;
            }
            assert!(
                start.elapsed() < timeout,
                "learner did not exit within {timeout:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The running process's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of the series `name` (exact, labels included) in a
/// `/metrics` body.
pub fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name).then(|| v.parse().ok())?
    })
}

/// `GET path` from `addr` (`IP:PORT`) over HTTP/1.0: the status code and
/// the body, or `None` when it does not answer.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// Every entry of a WAL directory by index, with etcd's overwrite rule (a
/// later record at index i drops everything from i on). A torn tail ends
/// the read (a live member's WAL may be mid-write).
pub fn wal_entries(wal_dir: &Path) -> BTreeMap<u64, raftpb::Entry> {
    wal_entries_and_commit(wal_dir).0
}

/// [`wal_entries`] and the highest commit index its hard states record.
pub fn wal_entries_and_commit(wal_dir: &Path) -> (BTreeMap<u64, raftpb::Entry>, u64) {
    let mut r = WalReader::open(wal_dir).expect("open WAL");
    let mut out = BTreeMap::new();
    let mut commit = 0;
    loop {
        let rec = match r.next_record() {
            Ok(Some(rec)) => rec,
            Ok(None) => break,
            Err(e) if e.is_torn_tail() => break,
            Err(e) => panic!("{}: {e}", wal_dir.display()),
        };
        match rec.decode().expect("decode record") {
            WalRecord::Entry(e) => {
                let _ = out.split_off(&e.index);
                out.insert(e.index, e);
            }
            WalRecord::State(hs) => commit = commit.max(hs.commit),
            _ => {}
        }
    }
    (out, commit)
}

/// Asserts that `ours` equals `theirs` on every index both hold (at least
/// `min_common` of them), comparing index, term, type and data.
pub fn assert_same_entries(
    ours: &BTreeMap<u64, raftpb::Entry>,
    theirs: &BTreeMap<u64, raftpb::Entry>,
    min_common: usize,
) -> usize {
    let mut common = 0;
    for (i, e) in ours {
        if let Some(t) = theirs.get(i) {
            assert_eq!(
                (
                    e.index,
                    e.term,
                    e.r#type,
                    e.data.as_deref().unwrap_or_default()
                ),
                (
                    t.index,
                    t.term,
                    t.r#type,
                    t.data.as_deref().unwrap_or_default()
                ),
                "entry {i} differs from the member's"
            );
            common += 1;
        }
    }
    assert!(
        common >= min_common,
        "only {common} common entries (want ≥ {min_common})"
    );
    common
}
