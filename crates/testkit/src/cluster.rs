//! Real etcd clusters on loopback, one temp dir per cluster.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;

use crate::error::{IoContext, Result, TestkitError};
use crate::etcdctl::Etcdctl;
use crate::ports::free_port;
use crate::slots::{self, SlotGuard};
use crate::util::{http_get, tail_file};
use crate::version::EtcdVersion;

/// Set to a non-empty value to keep every cluster directory, even on success.
pub const KEEP_DIRS_ENV: &str = "ETCD_STANDBY_KEEP_DIRS";

/// How many times start-up is retried when a port turned out to be taken.
const START_ATTEMPTS: usize = 3;
/// Lines of each member log shown in failure messages.
const LOG_TAIL_LINES: usize = 40;
/// How long a clean stop (SIGTERM) may take before we SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// `--auto-compaction-mode` / `--auto-compaction-retention`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoCompaction {
    /// `periodic` with a retention such as `"1h"`, `"5m"` or `"1"` (hours).
    Periodic(String),
    /// `revision`: keep the latest N revisions.
    Revision(u64),
}

/// Knobs for [`EtcdCluster::start`]. Build with struct-update syntax:
/// `ClusterOptions { snapshot_count: Some(100), ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `--heartbeat-interval` in ms (default 50).
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout` in ms (default 500).
    pub election_timeout_ms: u64,
    /// `--snapshot-count` (etcd default 100000 when `None`).
    pub snapshot_count: Option<u64>,
    /// `--quota-backend-bytes`.
    pub quota_backend_bytes: Option<u64>,
    /// `--auto-compaction-mode` + `--auto-compaction-retention`.
    pub auto_compaction: Option<AutoCompaction>,
    /// `--experimental-enable-lease-checkpoint` (same flag on 3.4 and 3.5).
    pub enable_lease_checkpoint: bool,
    /// Extra flags appended to every member's command line.
    pub extra_args: Vec<String>,
    /// Also serve clients over TLS on a second port per member
    /// (`--listen-client-urls=http://127.0.0.1:P,https://127.0.0.1:Q`). Pass
    /// the certificate flags (`--cert-file`, `--key-file`, and for mTLS
    /// `--trusted-ca-file` + `--client-cert-auth`) in `extra_args`. Health
    /// checks and [`EtcdCluster::etcdctl`] keep using the plain port; see
    /// [`EtcdCluster::client_https_urls`].
    pub client_https: bool,
    /// Serve the peer port over TLS (`https://` peer URLs). Pass
    /// `--peer-cert-file`, `--peer-key-file` and, for mutual TLS,
    /// `--peer-trusted-ca-file` + `--peer-client-cert-auth` in `extra_args`.
    pub peer_https: bool,
    /// How long start-up / restart may take to become healthy (default 60 s).
    pub start_timeout: Duration,
    /// Use binaries from this directory instead of [`EtcdVersion::bin_dir`].
    pub bin_dir: Option<PathBuf>,
    /// Listen on and advertise this address instead of 127.0.0.1 (client
    /// and peer URLs, health checks). Ports are still picked on 127.0.0.1
    /// of the calling thread's network namespace; for an address of
    /// another namespace, start (and restart) the cluster from a thread
    /// that entered it: the members inherit the thread's namespace.
    pub host: Option<Ipv4Addr>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            heartbeat_interval_ms: 50,
            election_timeout_ms: 500,
            snapshot_count: None,
            quota_backend_bytes: None,
            auto_compaction: None,
            enable_lease_checkpoint: false,
            extra_args: Vec::new(),
            client_https: false,
            peer_https: false,
            start_timeout: Duration::from_secs(60),
            bin_dir: None,
            host: None,
        }
    }
}

#[derive(Debug)]
struct Member {
    name: String,
    host: Ipv4Addr,
    client_port: u16,
    /// Second client port served over TLS (`ClusterOptions::client_https`).
    client_https_port: Option<u16>,
    peer_port: u16,
    peer_tls: bool,
    data_dir: PathBuf,
    log_path: PathBuf,
    args: Vec<OsString>,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://{}:{}", self.host, self.client_port)
    }

    fn client_https_url(&self) -> Option<String> {
        self.client_https_port
            .map(|p| format!("https://{}:{p}", self.host))
    }

    fn client_listen_urls(&self) -> String {
        match self.client_https_url() {
            Some(https) => format!("{},{https}", self.client_url()),
            None => self.client_url(),
        }
    }

    fn peer_url(&self) -> String {
        let scheme = if self.peer_tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.peer_port)
    }

    fn client_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.host, self.client_port))
    }
}

/// A running etcd cluster of real processes on 127.0.0.1.
///
/// Members are addressed by 0-based index `i`; member `i` is named
/// `n{i+1}`. Everything lives in one temp dir: data dirs `<dir>/n1`, ...
/// and logs `<dir>/n1.log`, ... (stdout and stderr of every start of the
/// member, appended).
///
/// On drop every member still running is SIGKILLed and reaped. If the
/// thread is panicking (a failed test) the directory is kept and its path
/// and the tail of each member log are printed to stderr; otherwise it is
/// removed (unless `ETCD_STANDBY_KEEP_DIRS` is set).
#[derive(Debug)]
pub struct EtcdCluster {
    version: EtcdVersion,
    bin_dir: PathBuf,
    opts: ClusterOptions,
    token: String,
    dir_path: PathBuf,
    dir: Option<TempDir>,
    keep_dir: bool,
    members: Vec<Member>,
    _slot: SlotGuard,
}

impl EtcdCluster {
    /// Starts `n_members` etcd members of `version` as a new cluster and
    /// waits until every member reports healthy.
    ///
    /// Blocks first until a machine-wide cluster slot is free (see
    /// `ETCD_STANDBY_MAX_CLUSTERS`).
    pub fn start(version: EtcdVersion, n_members: usize, opts: ClusterOptions) -> Result<Self> {
        if n_members == 0 {
            return Err(TestkitError::InvalidArgument(
                "a cluster needs at least one member".into(),
            ));
        }
        let bin_dir = match &opts.bin_dir {
            Some(dir) => dir.clone(),
            None => version.bin_dir()?,
        };
        let etcd = bin_dir.join("etcd");
        if !etcd.is_file() {
            return Err(TestkitError::EtcdNotFound {
                version: version.as_str(),
                detail: format!("{} is missing", etcd.display()),
            });
        }
        let slot = slots::acquire()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("etcd-standby-{}-", version.as_str()))
            .tempdir()
            .ctx(|| "create cluster temp dir".into())?;
        let dir_path = dir.path().to_path_buf();
        let mut cluster = EtcdCluster {
            version,
            bin_dir,
            opts,
            token: unique_token(),
            dir_path,
            dir: Some(dir),
            keep_dir: std::env::var_os(KEEP_DIRS_ENV).is_some_and(|v| !v.is_empty()),
            members: Vec::new(),
            _slot: slot,
        };

        for attempt in 1..=START_ATTEMPTS {
            cluster.configure_members(n_members, attempt)?;
            for i in 0..n_members {
                cluster.spawn_member(i, &format!("start (attempt {attempt})"))?;
            }
            let timeout = cluster.opts.start_timeout;
            match cluster.wait_healthy(timeout) {
                Ok(()) => return Ok(cluster),
                Err(err) => {
                    cluster.kill_all();
                    let port_clash = (0..n_members).any(|i| {
                        std::fs::read(&cluster.members[i].log_path).is_ok_and(|log| {
                            log.windows(b"address already in use".len())
                                .any(|w| w == b"address already in use")
                        })
                    });
                    if port_clash && attempt < START_ATTEMPTS {
                        eprintln!(
                            "testkit: etcd {version} start-up hit a port clash, retrying with new ports"
                        );
                        continue;
                    }
                    // Keep the directory: the error names it.
                    cluster.keep_dir = true;
                    return Err(err);
                }
            }
        }
        Err(TestkitError::InvalidArgument(
            "unreachable: no start attempt".into(),
        ))
    }

    /// Picks ports and builds command lines for a (re)start from scratch.
    fn configure_members(&mut self, n: usize, attempt: usize) -> Result<()> {
        for m in &self.members {
            if m.data_dir.exists() {
                std::fs::remove_dir_all(&m.data_dir)
                    .ctx(|| format!("remove data dir {}", m.data_dir.display()))?;
            }
        }
        self.members.clear();
        // On a retry, keep the previous attempt's logs under another name so
        // the port-clash check only looks at the new attempt.
        if attempt > 1 {
            for i in 0..n {
                let log = self.dir_path.join(format!("n{}.log", i + 1));
                let old = self
                    .dir_path
                    .join(format!("n{}.attempt{}.log", i + 1, attempt - 1));
                if log.exists() {
                    std::fs::rename(&log, &old)
                        .ctx(|| format!("rename {} to {}", log.display(), old.display()))?;
                }
            }
        }
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("n{}", i + 1);
            members.push(Member {
                host: self.opts.host.unwrap_or(Ipv4Addr::LOCALHOST),
                data_dir: self.dir_path.join(&name),
                log_path: self.dir_path.join(format!("{name}.log")),
                name,
                client_port: free_port()?,
                client_https_port: if self.opts.client_https {
                    Some(free_port()?)
                } else {
                    None
                },
                peer_port: free_port()?,
                peer_tls: self.opts.peer_https,
                args: Vec::new(),
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("{}-a{attempt}", self.token);
        for m in &mut members {
            m.args = self.member_args(m, &initial_cluster, &token);
        }
        self.members = members;
        Ok(())
    }

    fn member_args(&self, m: &Member, initial_cluster: &str, token: &str) -> Vec<OsString> {
        let o = &self.opts;
        let mut args: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: &str| args.push(format!("--{name}={value}").into());
        flag("name", &m.name);
        flag("data-dir", &m.data_dir.to_string_lossy());
        flag("listen-client-urls", &m.client_listen_urls());
        flag("advertise-client-urls", &m.client_listen_urls());
        flag("listen-peer-urls", &m.peer_url());
        flag("initial-advertise-peer-urls", &m.peer_url());
        flag("initial-cluster", initial_cluster);
        flag("initial-cluster-state", "new");
        flag("initial-cluster-token", token);
        flag("heartbeat-interval", &o.heartbeat_interval_ms.to_string());
        flag("election-timeout", &o.election_timeout_ms.to_string());
        flag("logger", "zap");
        flag("log-outputs", "stderr");
        if let Some(n) = o.snapshot_count {
            flag("snapshot-count", &n.to_string());
        }
        if let Some(n) = o.quota_backend_bytes {
            flag("quota-backend-bytes", &n.to_string());
        }
        match &o.auto_compaction {
            None => {}
            Some(AutoCompaction::Periodic(retention)) => {
                flag("auto-compaction-mode", "periodic");
                flag("auto-compaction-retention", retention);
            }
            Some(AutoCompaction::Revision(n)) => {
                flag("auto-compaction-mode", "revision");
                flag("auto-compaction-retention", &n.to_string());
            }
        }
        if o.enable_lease_checkpoint {
            flag("experimental-enable-lease-checkpoint", "true");
        }
        args.extend(o.extra_args.iter().map(OsString::from));
        args
    }

    fn spawn_member(&mut self, i: usize, why: &str) -> Result<()> {
        let etcd = self.bin_dir.join("etcd");
        let dir = self.dir_path.clone();
        let m = &mut self.members[i];
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .ctx(|| format!("open log {}", m.log_path.display()))?;
        let _ = writeln!(
            log,
            "===== testkit: {why}: member {} at unix time {} =====",
            m.name,
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        );
        let log_err = log
            .try_clone()
            .ctx(|| format!("dup log {}", m.log_path.display()))?;
        let mut cmd = Command::new(&etcd);
        cmd.args(&m.args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        // etcd reads any ETCD_<FLAG> variable as a flag; don't leak ours in.
        for (key, _) in std::env::vars_os() {
            let k = key.as_bytes();
            if k.starts_with(b"ETCD_") && k != b"ETCD_UNSUPPORTED_ARCH" {
                cmd.env_remove(&key);
            }
        }
        let child = cmd
            .spawn()
            .ctx(|| format!("spawn {} for member {}", etcd.display(), m.name))?;
        m.child = Some(child);
        Ok(())
    }

    fn kill_all(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn member(&self, i: usize) -> Result<&Member> {
        self.members.get(i).ok_or(TestkitError::NoSuchMember {
            index: i,
            len: self.members.len(),
        })
    }

    fn member_mut(&mut self, i: usize) -> Result<&mut Member> {
        let len = self.members.len();
        self.members
            .get_mut(i)
            .ok_or(TestkitError::NoSuchMember { index: i, len })
    }

    /// Waits until every running member answers `GET /health` with
    /// `"health":"true"`. Fails early if a member process exits, and on
    /// timeout; the error carries the tail of every member log.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let indices: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some())
            .collect();
        self.wait_members_healthy(&indices, timeout)
    }

    fn wait_members_healthy(&mut self, indices: &[usize], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<usize> = indices.to_vec();
        let mut last_reason = String::from("not polled yet");
        loop {
            let mut still = Vec::new();
            for &i in &pending {
                let m = &mut self.members[i];
                let Some(child) = m.child.as_mut() else {
                    return Err(
                        self.unhealthy(timeout, format!("member n{} is not running", i + 1))
                    );
                };
                match child.try_wait() {
                    Ok(Some(status)) => {
                        let reason = format!("member {} exited: {status}", m.name);
                        m.child = None;
                        return Err(self.unhealthy(timeout, reason));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let reason = format!("waiting on member {}: {e}", m.name);
                        return Err(self.unhealthy(timeout, reason));
                    }
                }
                match http_get(m.client_addr(), "/health", Duration::from_secs(2)) {
                    Ok((200, body)) if body.contains(r#""health":"true""#) => {}
                    Ok((status, body)) => {
                        last_reason = format!("{}: /health -> {status} {}", m.name, body.trim());
                        still.push(i);
                    }
                    Err(e) => {
                        last_reason = format!("{}: /health -> {e}", m.name);
                        still.push(i);
                    }
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            pending = still;
            if Instant::now() >= deadline {
                return Err(self.unhealthy(timeout, last_reason));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn unhealthy(&self, timeout: Duration, reason: String) -> TestkitError {
        TestkitError::Unhealthy {
            timeout,
            reason,
            dir: self.dir_path.clone(),
            logs: self.log_tails(LOG_TAIL_LINES),
        }
    }

    /// The last `lines` lines of every member log, with headers.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for m in &self.members {
            let _ = writeln!(
                out,
                "----- {} log ({}), last {lines} lines -----\n{}",
                m.name,
                m.log_path.display(),
                tail_file(&m.log_path, lines)
            );
        }
        out
    }

    /// Cleanly stops member `i`: SIGTERM, then waits (SIGKILL after 15 s,
    /// reported as an error).
    pub fn stop_member(&mut self, i: usize) -> Result<ExitStatus> {
        let m = self.member_mut(i)?;
        let mut child = m.child.take().ok_or_else(|| TestkitError::MemberState {
            name: m.name.clone(),
            message: "stop_member: not running".into(),
        })?;
        let name = m.name.clone();
        if let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
            // ESRCH (already exited) is fine: try_wait below reaps it.
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(TestkitError::MemberState {
                        name,
                        message: format!("did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed"),
                    });
                }
                Err(e) => return Err(TestkitError::io(format!("wait for member {name}"), e)),
            }
        }
    }

    /// Kills member `i` with SIGKILL (a crash) and reaps it.
    pub fn kill_member(&mut self, i: usize) -> Result<()> {
        let m = self.member_mut(i)?;
        let mut child = m.child.take().ok_or_else(|| TestkitError::MemberState {
            name: m.name.clone(),
            message: "kill_member: not running".into(),
        })?;
        let name = m.name.clone();
        child.kill().ctx(|| format!("SIGKILL member {name}"))?;
        child.wait().ctx(|| format!("wait for member {name}"))?;
        Ok(())
    }

    /// Starts member `i` again with its existing data dir and ports (after
    /// [`stop_member`](Self::stop_member) / [`kill_member`](Self::kill_member);
    /// a running member is stopped cleanly first) and waits until it is
    /// healthy.
    pub fn restart_member(&mut self, i: usize) -> Result<()> {
        if self.member(i)?.child.is_some() {
            self.stop_member(i)?;
        }
        self.spawn_member(i, "restart")?;
        let timeout = self.opts.start_timeout;
        self.wait_members_healthy(&[i], timeout)
    }

    /// Starts the members `ids` again together (after a whole-cluster or
    /// quorum outage, where one alone could never become healthy) and waits
    /// until all are healthy. Running ones are stopped cleanly first.
    pub fn restart_members(&mut self, ids: &[usize]) -> Result<()> {
        for &i in ids {
            if self.member(i)?.child.is_some() {
                self.stop_member(i)?;
            }
            self.spawn_member(i, "restart")?;
        }
        let timeout = self.opts.start_timeout;
        self.wait_members_healthy(ids, timeout)
    }

    /// Whether member `i` is running (reaps it if it exited on its own).
    pub fn is_running(&mut self, i: usize) -> Result<bool> {
        let m = self.member_mut(i)?;
        let running = match m.child.as_mut() {
            None => false,
            Some(child) => matches!(child.try_wait(), Ok(None)),
        };
        if !running {
            m.child = None;
        }
        Ok(running)
    }

    /// OS process id of member `i`, if running.
    pub fn pid(&self, i: usize) -> Result<Option<u32>> {
        Ok(self.member(i)?.child.as_ref().map(Child::id))
    }

    /// Index of the current raft leader among the running members, polling
    /// `etcdctl endpoint status` until some member reports being leader (up
    /// to the start timeout).
    ///
    /// Handy for failure tests: killing the leader drops in-flight proposals
    /// (clients then see "request timed out"), killing a follower does not.
    pub fn leader(&mut self) -> Result<usize> {
        let deadline = Instant::now() + self.opts.start_timeout;
        let mut last = String::from("no running member");
        loop {
            for i in 0..self.members.len() {
                if !self.is_running(i)? {
                    continue;
                }
                let ctl = self.etcdctl_for(i)?;
                match ctl.run_json(&["endpoint", "status"]) {
                    Ok(json) => {
                        let status = json.get(0).and_then(|e| e.get("Status"));
                        let me = status.and_then(|s| s.pointer("/header/member_id"));
                        let leader = status.and_then(|s| s.get("leader"));
                        match (me.and_then(|v| v.as_u64()), leader.and_then(|v| v.as_u64())) {
                            (Some(me), Some(leader)) if me == leader && leader != 0 => {
                                return Ok(i);
                            }
                            _ => last = format!("{}: {json}", self.members[i].name),
                        }
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() >= deadline {
                return Err(self.unhealthy(
                    self.opts.start_timeout,
                    format!("no member reports being leader; last status: {last}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// etcd version of this cluster.
    pub fn version(&self) -> EtcdVersion {
        self.version
    }

    /// Directory holding `etcd` / `etcdctl` used by this cluster.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The cluster's temp dir (data dirs and logs).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Member name of index `i` (`n{i+1}`).
    pub fn member_name(&self, i: usize) -> Result<&str> {
        Ok(&self.member(i)?.name)
    }

    /// All client URLs, comma-separated (`http://127.0.0.1:P1,...`), for
    /// `--endpoints`.
    pub fn client_endpoints(&self) -> String {
        self.client_urls().join(",")
    }

    /// Client URL of each member.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// TLS client URL of each member (`https://127.0.0.1:Q`); empty unless
    /// [`ClusterOptions::client_https`] is set.
    pub fn client_https_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .filter_map(Member::client_https_url)
            .collect()
    }

    /// Client URL of member `i`.
    pub fn client_url(&self, i: usize) -> Result<String> {
        Ok(self.member(i)?.client_url())
    }

    /// Client socket address of member `i`.
    pub fn client_addr(&self, i: usize) -> Result<SocketAddr> {
        Ok(self.member(i)?.client_addr())
    }

    /// Peer URL of each member.
    pub fn peer_urls(&self) -> Vec<String> {
        self.members.iter().map(Member::peer_url).collect()
    }

    /// `--initial-cluster` value: `n1=http://127.0.0.1:P1,...`.
    pub fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Data dir of member `i` (contains `member/wal` and `member/snap/db`).
    pub fn data_dir(&self, i: usize) -> Result<PathBuf> {
        Ok(self.member(i)?.data_dir.clone())
    }

    /// Path of member `i`'s log file.
    pub fn member_log_path(&self, i: usize) -> Result<PathBuf> {
        Ok(self.member(i)?.log_path.clone())
    }

    /// Full contents of member `i`'s log (lossy UTF-8).
    pub fn member_log(&self, i: usize) -> Result<String> {
        let path = &self.member(i)?.log_path;
        let bytes = std::fs::read(path).ctx(|| format!("read log {}", path.display()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `etcdctl` of this cluster's version against all members.
    pub fn etcdctl(&self) -> Etcdctl {
        Etcdctl::with_binary(self.bin_dir.join("etcdctl"), self.client_endpoints())
    }

    /// `etcdctl` against member `i` only.
    pub fn etcdctl_for(&self, i: usize) -> Result<Etcdctl> {
        Ok(Etcdctl::with_binary(
            self.bin_dir.join("etcdctl"),
            self.client_url(i)?,
        ))
    }

    /// Keep (or not) the cluster directory when the cluster is dropped.
    pub fn keep_dir_on_drop(&mut self, keep: bool) {
        self.keep_dir = keep;
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
        let panicking = std::thread::panicking();
        if !(panicking || self.keep_dir) {
            return; // TempDir's own drop removes the directory.
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.keep();
            if panicking {
                eprintln!(
                    "testkit: test panicked; keeping etcd {} cluster dir {}\n{}",
                    self.version,
                    path.display(),
                    self.log_tails(LOG_TAIL_LINES)
                );
            } else {
                eprintln!("testkit: keeping etcd cluster dir {}", path.display());
            }
        }
    }
}

fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "testkit-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
