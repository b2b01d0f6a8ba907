//! `cargo xtask bench replay`: replication to a standby cluster next to
//! `etcdctl make-mirror`, on real etcd, in one run:
//!
//! * (a) initial sync of `KEYS` keys × 256 B;
//! * (b) sustained load at the primary's measured maximum, then at 50 % of
//!   it: replicated throughput and lag p50/p99 (a write's return on the
//!   primary → its visibility on the standby, measured with probe keys);
//! * (c) catch-up of a `BACKLOG`-entry backlog after a standby outage, next
//!   to its ceiling: the standby's own write capacity in txns shaped like
//!   ours (127 puts), one in flight and 8 in flight, measured in the same run;
//! * (d) replicator RSS per million keys, next to the live data size.
//!
//! Knobs (environment): `ETCD_STANDBY_BENCH_KEYS` (100000),
//! `ETCD_STANDBY_BENCH_SECS` (60), `ETCD_STANDBY_BENCH_BACKLOG` (1000000),
//! `ETCD_STANDBY_BENCH_VERSIONS` (`3.4,3.5`), `ETCD_STANDBY_BENCH_MEMBERS`
//! (primary size, 1), `ETCD_STANDBY_BENCH_CONC` (writers in flight, 64),
//! `ETCD_STANDBY_BENCH_BIN` (a prebuilt `etcd-standby`).
//!
//! The defaults are the full size of issue 11; a quick run is e.g.
//! `ETCD_STANDBY_BENCH_KEYS=20000 ETCD_STANDBY_BENCH_SECS=10
//! ETCD_STANDBY_BENCH_BACKLOG=50000`. A benchmark prints numbers; nothing
//! here is asserted in tests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_standby_client::pb::{PutRequest, RangeRequest};
use etcd_standby_client::{Client, ClientConfig};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion, free_port};
use tokio::runtime::Runtime;

use crate::bench_learner::{http_get_json, rss_kib, rt};
use crate::cmd;

pub(crate) const VALUE_LEN: usize = 256;
/// Sorts after every other key: when it is on a standby with its newest
/// value, make-mirror's sync (which copies in key order) is complete, and
/// so is our replay (which applies in log order; it is written last).
pub(crate) const MARKER: &str = "/zzz/marker";
const PROBE_PREFIX: &str = "/bench/probe/";
const LOAD_PREFIX: &str = "/bench/load/";
pub(crate) const KEY_PREFIX: &str = "/bench/key/";
/// A probe write every this often during (b).
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// Standby poll interval for probes and markers.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(5);
pub(crate) const SYNC_TIMEOUT: Duration = Duration::from_secs(1800);
/// How long each standby-capacity measurement runs.
const CEILING_SECS: Duration = Duration::from_secs(10);
/// Puts per replay txn: etcd's `--max-txn-ops` default (128) less the
/// checkpoint put every replay txn carries.
const REPLAY_TXN_PUTS: usize = 127;
/// Txns in flight for the standby's concurrent write capacity.
const CEILING_CONC: usize = 8;

struct Cfg {
    keys: u64,
    secs: u64,
    backlog: u64,
    members: usize,
    conc: usize,
    versions: Vec<EtcdVersion>,
}

pub(crate) fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

impl Cfg {
    fn from_env() -> Result<Cfg> {
        let versions = versions_from_env()?;
        Ok(Cfg {
            keys: env_u64("ETCD_STANDBY_BENCH_KEYS", 100_000)?.max(1),
            secs: env_u64("ETCD_STANDBY_BENCH_SECS", 60)?.max(1),
            backlog: env_u64("ETCD_STANDBY_BENCH_BACKLOG", 1_000_000)?.max(1),
            members: env_u64("ETCD_STANDBY_BENCH_MEMBERS", 1)?.clamp(1, 5) as usize,
            conc: env_u64("ETCD_STANDBY_BENCH_CONC", 64)?.clamp(1, 1024) as usize,
            versions,
        })
    }
}

/// `ETCD_STANDBY_BENCH_VERSIONS` (`3.4,3.5` by default).
pub(crate) fn versions_from_env() -> Result<Vec<EtcdVersion>> {
    Ok(match std::env::var("ETCD_STANDBY_BENCH_VERSIONS") {
        Ok(v) => v
            .split(',')
            .map(|s| match s.trim() {
                "3.4" | "3.4.23" => Ok(EtcdVersion::V3_4),
                "3.5" | "3.5.1" => Ok(EtcdVersion::V3_5),
                other => bail!("ETCD_STANDBY_BENCH_VERSIONS: unknown version `{other}`"),
            })
            .collect::<Result<Vec<_>>>()?,
        Err(_) => vec![EtcdVersion::V3_4, EtcdVersion::V3_5],
    })
}

/// `etcd-standby run` as the benches start it: a learner of `source`
/// advertising `peer_url`, replaying onto `standby`, admin on `admin`.
pub(crate) fn run_cmd(
    bin: &Path,
    source: &str,
    peer_url: &str,
    data_dir: &Path,
    admin: &str,
    standby: &str,
) -> Command {
    let mut run = Command::new(bin);
    run.args(["run", "--source-endpoints", source])
        .args(["--advertise-peer-url", peer_url])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--admin-listen", admin])
        .args(["--standby-endpoints", standby])
        .env("ETCD_STANDBY_LOG", "info,raft=warn,slog=warn");
    run
}

// ---------------------------------------------------------------- helpers

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub(crate) fn value(tag: &str) -> bytes::Bytes {
    let mut v = tag.as_bytes().to_vec();
    v.resize(VALUE_LEN, b'.');
    v.into()
}

pub(crate) async fn connect(endpoints: Vec<String>) -> Result<Client> {
    Client::connect(ClientConfig::new(endpoints))
        .await
        .context("connect")
}

pub(crate) async fn count(client: &Client, prefix: &str) -> Result<u64> {
    let r = client
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec().into(),
            range_end: prefix_end(prefix).into(),
            count_only: true,
            serializable: true,
            ..Default::default()
        })
        .await?;
    Ok(u64::try_from(r.count).unwrap_or(0))
}

pub(crate) async fn get(client: &Client, key: &str) -> Option<Vec<u8>> {
    let r = client
        .range(RangeRequest {
            key: key.as_bytes().to_vec().into(),
            serializable: true,
            ..Default::default()
        })
        .await
        .ok()?;
    r.kvs.into_iter().next().map(|kv| kv.value.to_vec())
}

pub(crate) async fn cluster_index(client: &Client) -> u64 {
    let mut best = 0;
    for ep in client.endpoints() {
        if let Ok(st) = client.status(&ep).await {
            best = best.max(st.raft_index);
        }
    }
    best
}

/// Puts `n` keys `KEY_PREFIX{(start+i) % modulo}` with `conc` in flight.
pub(crate) async fn put_keys(
    client: Client,
    start: u64,
    n: u64,
    modulo: u64,
    conc: usize,
    tag: String,
) -> Result<u64> {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, next, errors, tag) =
            (client.clone(), next.clone(), errors.clone(), tag.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let k = (start + i) % modulo;
                let req = PutRequest {
                    key: format!("{KEY_PREFIX}{k:08}").into_bytes().into(),
                    value: value(&format!("{tag}-{i}")),
                    ..Default::default()
                };
                // Retry until it lands: the count must be exact.
                while client.put(req.clone()).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(errors.load(Ordering::Relaxed))
}

/// What [`load_puts`] did.
pub(crate) struct LoadResult {
    /// Puts that succeeded.
    pub(crate) done: u64,
    /// Puts that failed.
    pub(crate) errors: u64,
    /// Each successful put's latency, from its issue to its answer.
    pub(crate) latencies: Vec<Duration>,
}

/// Puts unique keys under `LOAD_PREFIX` for `dur`, as fast as `conc`
/// writers go or paced to `rate` puts/s. Returns successful puts.
pub(crate) async fn timed_load(
    client: Client,
    seq: Arc<AtomicU64>,
    conc: usize,
    rate: Option<f64>,
    dur: Duration,
) -> Result<u64> {
    Ok(load_puts(client, seq, conc, rate, dur, LOAD_PREFIX)
        .await?
        .done)
}

/// Puts unique keys `{prefix}{seq:010}` for `dur` with `conc` writers, as
/// fast as they go or paced to `rate` puts/s (a put is issued when due,
/// whether or not earlier ones returned, up to `conc` in flight).
pub(crate) async fn load_puts(
    client: Client,
    seq: Arc<AtomicU64>,
    conc: usize,
    rate: Option<f64>,
    dur: Duration,
    prefix: &'static str,
) -> Result<LoadResult> {
    let start = tokio::time::Instant::now();
    let end = start + dur;
    let first = seq.load(Ordering::Relaxed);
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, seq, errors) = (client.clone(), seq.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let v = value("load");
            let mut lat = Vec::new();
            loop {
                let i = seq.fetch_add(1, Ordering::Relaxed);
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64((i - first) as f64 / rate);
                    tokio::time::sleep_until(due).await;
                }
                if tokio::time::Instant::now() >= end {
                    break;
                }
                let req = PutRequest {
                    key: format!("{prefix}{i:010}").into_bytes().into(),
                    value: v.clone(),
                    ..Default::default()
                };
                let t = Instant::now();
                if client.put(req).await.is_ok() {
                    lat.push(t.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    if rate.is_none() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    Ok(LoadResult {
        done: latencies.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        latencies,
    })
}

/// Keys the standby-capacity measurement writes (on make-mirror's standby,
/// after its run).
const CEILING_PREFIX: &str = "/bench/ceiling/";

/// The standby's own write capacity, the ceiling of any replicator's
/// catch-up: puts/s in txns of `ops` puts of `VALUE_LEN` bytes (the shape of
/// our replay txns), `conc` txns in flight, for `dur`. Returns puts/s.
pub(crate) async fn txn_capacity(
    client: Client,
    ops: usize,
    conc: usize,
    dur: Duration,
) -> Result<f64> {
    use etcd_standby_client::pb::{RequestOp, TxnRequest, request_op::Request};
    let start = Instant::now();
    let seq = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, seq, done) = (client.clone(), seq.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let v = value("ceiling");
            while start.elapsed() < dur {
                let first = seq.fetch_add(ops as u64, Ordering::Relaxed);
                let success = (first..first + ops as u64)
                    .map(|i| RequestOp {
                        request: Some(Request::RequestPut(PutRequest {
                            key: format!("{CEILING_PREFIX}{:08}", i % 1_000_000)
                                .into_bytes()
                                .into(),
                            value: v.clone(),
                            ..Default::default()
                        })),
                    })
                    .collect();
                let req = TxnRequest {
                    success,
                    ..Default::default()
                };
                if client.txn(req).await.is_ok() {
                    done.fetch_add(ops as u64, Ordering::Relaxed);
                } else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

/// Lag samples of one standby.
#[derive(Default, Clone)]
pub(crate) struct Lags {
    pub(crate) samples: Vec<Duration>,
    /// Probes never seen within the drain window.
    pub(crate) lost: usize,
}

impl Lags {
    pub(crate) fn pct(&self, p: f64) -> Option<Duration> {
        let mut v = self.samples.clone();
        if v.is_empty() {
            return None;
        }
        v.sort();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v.get(rank.clamp(1, v.len()) - 1).copied()
    }
}

/// Writes probe keys to the primary every `PROBE_EVERY` until `stop`, and
/// polls each standby every `POLL_EVERY` for the probes not yet seen there;
/// lag = seen on the standby − the put returned on the primary. After
/// `stop`, waits up to `drain` for the stragglers.
pub(crate) async fn probe(
    primary: Client,
    standbys: Vec<Client>,
    stop: Arc<AtomicBool>,
    drain: Duration,
) -> Result<Vec<Lags>> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    type Pending = Arc<Mutex<BTreeMap<u64, Instant>>>;
    let pendings: Vec<Pending> = standbys.iter().map(|_| Pending::default()).collect();
    let writer_done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (pendings, stop, writer_done) = (pendings.clone(), stop.clone(), writer_done.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let seq = SEQ.fetch_add(1, Ordering::Relaxed);
                let req = PutRequest {
                    key: format!("{PROBE_PREFIX}{seq:012}").into_bytes().into(),
                    value: value("probe"),
                    ..Default::default()
                };
                if primary.put(req).await.is_ok() {
                    let at = Instant::now();
                    for p in &pendings {
                        if let Ok(mut p) = p.lock() {
                            p.insert(seq, at);
                        }
                    }
                }
            }
            writer_done.store(true, Ordering::Relaxed);
        })
    };
    let mut pollers = Vec::new();
    for (client, pending) in standbys.into_iter().zip(pendings) {
        let writer_done = writer_done.clone();
        pollers.push(tokio::spawn(async move {
            let mut lags = Lags::default();
            let mut drain_from: Option<Instant> = None;
            loop {
                let min = pending.lock().ok().and_then(|p| p.keys().next().copied());
                if writer_done.load(Ordering::Relaxed) {
                    let since = *drain_from.get_or_insert_with(Instant::now);
                    if min.is_none() || since.elapsed() > drain {
                        lags.lost = pending.lock().map(|p| p.len()).unwrap_or(0);
                        break;
                    }
                }
                if let Some(min) = min {
                    let req = RangeRequest {
                        key: format!("{PROBE_PREFIX}{min:012}").into_bytes().into(),
                        range_end: prefix_end(PROBE_PREFIX).into(),
                        keys_only: true,
                        serializable: true,
                        ..Default::default()
                    };
                    if let Ok(r) = client.range(req).await {
                        let now = Instant::now();
                        if let Ok(mut p) = pending.lock() {
                            for kv in r.kvs {
                                let seq = std::str::from_utf8(&kv.key)
                                    .ok()
                                    .and_then(|k| k.strip_prefix(PROBE_PREFIX))
                                    .and_then(|s| s.parse::<u64>().ok());
                                if let Some(at) = seq.and_then(|s| p.remove(&s)) {
                                    lags.samples.push(now.saturating_duration_since(at));
                                }
                            }
                        }
                    }
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
            lags
        }));
    }
    writer.await?;
    let mut out = Vec::new();
    for p in pollers {
        out.push(p.await?);
    }
    Ok(out)
}

/// Samples the peak VmRSS of a process every 50 ms on a thread.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler { peak, stop }
    }
    /// Peak since the last reset, in KiB; starts a new window.
    fn take(&self) -> u64 {
        self.peak.swap(0, Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A child process we started; SIGKILLed (by PID) on drop.
pub(crate) struct Proc {
    child: Option<Child>,
    what: &'static str,
    log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(mut c: Command, what: &'static str, log: &Path) -> Result<Proc> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("log file {}", log.display()))?;
        let err = file.try_clone()?;
        let child = c
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .with_context(|| format!("could not start `{}`", cmd::describe(&c)))?;
        Ok(Proc {
            child: Some(child),
            what,
            log: log.to_path_buf(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub(crate) fn check(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(st) = c.try_wait()?
        {
            self.child = None;
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            bail!(
                "{} exited ({st}); log {}:\n{}",
                self.what,
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM by PID, SIGKILL after 20 s.
    pub(crate) fn terminate(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn replay_status(admin: &str) -> Option<serde_json::Value> {
    http_get_json(admin, "/status")
}

pub(crate) fn checkpoint(admin: &str) -> u64 {
    replay_status(admin)
        .and_then(|v| v["replay"]["standby_checkpoint"].as_u64())
        .unwrap_or(0)
}

pub(crate) fn brief_status(admin: &str) -> String {
    match replay_status(admin) {
        Some(v) => {
            let r = &v["replay"];
            let sink = &r["sink"];
            let mut lat: Vec<f64> = sink["txn_latency"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| Some(d["secs"].as_f64()? + d["nanos"].as_f64()? / 1e9))
                .collect();
            lat.sort_by(f64::total_cmp);
            let p99 = lat
                .get((lat.len() * 99 / 100).min(lat.len().saturating_sub(1)))
                .map_or("-".into(), |s| format!("{:.1} ms", s * 1e3));
            format!(
                "state={} applied={} checkpoint={} lag_entries={} lag_seconds={:.3} error={} \
                 sink: txns={} (resent {}) ops={} bytes={} reconciles={} txn p99 (last {} txns)={p99}",
                r["state"].as_str().unwrap_or("?"),
                r["applied_index"],
                r["standby_checkpoint"],
                r["lag_entries"],
                r["lag_seconds"].as_f64().unwrap_or(0.0),
                r["error"],
                sink["txns"],
                sink["txns_resent"],
                sink["ops"],
                sink["bytes"],
                sink["reconciles"],
                lat.len(),
            )
        }
        None => "no /status answer".into(),
    }
}

/// Waits until `MARKER` on `standby` holds `nonce`; checks `procs` are
/// alive. Returns the time taken from `since`, or `None` on timeout.
pub(crate) fn wait_marker(
    rt: &Runtime,
    standby: &Client,
    nonce: &str,
    since: Instant,
    timeout: Duration,
    procs: &mut [&mut Proc],
) -> Result<Option<Duration>> {
    let mut last_check = Instant::now();
    loop {
        if rt.block_on(get(standby, MARKER)).as_deref() == Some(nonce.as_bytes()) {
            return Ok(Some(since.elapsed()));
        }
        if since.elapsed() > timeout {
            return Ok(None);
        }
        if last_check.elapsed() > Duration::from_millis(500) {
            for p in procs.iter_mut() {
                p.check()?;
            }
            last_check = Instant::now();
        }
        std::thread::sleep(POLL_EVERY);
    }
}

pub(crate) fn put_marker(rt: &Runtime, primary: &Client, nonce: &str) -> Result<()> {
    rt.block_on(primary.put(PutRequest {
        key: MARKER.as_bytes().to_vec().into(),
        value: nonce.as_bytes().to_vec().into(),
        ..Default::default()
    }))
    .context("put the marker")?;
    Ok(())
}

pub(crate) fn verify(bin: &Path, primary: &EtcdCluster, standby: &EtcdCluster) -> String {
    let out = Command::new(bin)
        .args(["verify", "--source-endpoints", &primary.client_endpoints()])
        .args(["--standby-endpoints", &standby.client_endpoints()])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let last = text.lines().last().unwrap_or("").to_owned();
            if o.status.success() {
                format!("ok ({last})")
            } else {
                let first: Vec<&str> = text.lines().take(5).collect();
                format!("FAILED {}: {}", o.status, first.join(" | "))
            }
        }
        Err(e) => format!("could not run verify: {e}"),
    }
}

pub(crate) fn secs(d: Option<Duration>) -> String {
    d.map_or("timeout".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

pub(crate) fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
}

fn rate(n: u64, d: Option<Duration>) -> Option<f64> {
    d.map(|d| n as f64 / d.as_secs_f64().max(1e-9))
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.0}/s"))
}

// ---------------------------------------------------------------- results

#[derive(Default)]
struct LoadPhase {
    label: String,
    secs: f64,
    primary_puts_s: f64,
    primary_entries_s: f64,
    ours_entries_s: f64,
    mm_keys_s: f64,
    ours_lag: Lags,
    mm_lag: Lags,
    ours_max_lag_entries: u64,
    ours_drain: Option<Duration>,
    mm_drain: Option<Duration>,
}

#[derive(Default)]
struct VersionResult {
    version: String,
    keys: u64,
    a_ours: Option<Duration>,
    a_mm: Option<Duration>,
    a_ours_rss: u64,
    a_mm_rss: u64,
    a_verify: String,
    max_puts_s: f64,
    phases: Vec<LoadPhase>,
    backlog: u64,
    backlog_write: Duration,
    c_ours: Option<Duration>,
    c_mm: Option<Duration>,
    c_ours_rss: u64,
    c_mm_rss: u64,
    c_live_keys: u64,
    c_verify: String,
    /// The standby's write capacity (puts/s) in our txn shape: one txn in
    /// flight (as replay writes) and `CEILING_CONC` in flight.
    ceiling_serial: Option<f64>,
    ceiling_conc: Option<f64>,
    a_live_bytes: u64,
    c_live_bytes: u64,
    log: PathBuf,
    notes: Vec<String>,
}

fn key_bytes(prefix: &str, digits: usize) -> u64 {
    (prefix.len() + digits) as u64
}

// ---------------------------------------------------------------- the run

fn run_version(
    rt: &Runtime,
    bin: &Path,
    out_dir: &Path,
    v: EtcdVersion,
    cfg: &Cfg,
) -> Result<VersionResult> {
    let mut res = VersionResult {
        version: v.as_str().to_owned(),
        keys: cfg.keys,
        backlog: cfg.backlog,
        ..Default::default()
    };
    let say = |s: &str| println!("bench replay [{v}]: {s}");
    let tag = v.as_str().replace('.', "_");
    let primary = EtcdCluster::start(v, cfg.members, ClusterOptions::default())?;
    let mut sb_ours = EtcdCluster::start(v, 1, ClusterOptions::default())?;
    let mut sb_mm = EtcdCluster::start(v, 1, ClusterOptions::default())?;
    let tmp = tempfile::tempdir()?;
    std::fs::create_dir_all(out_dir)?;
    let ours_log = out_dir.join(format!("replay-{tag}-etcd-standby.log"));
    let mm_log = out_dir.join(format!("replay-{tag}-make-mirror.log"));
    let _ = std::fs::remove_file(&ours_log);
    let _ = std::fs::remove_file(&mm_log);
    res.log = ours_log.clone();

    let pc = rt.block_on(connect(primary.client_urls()))?;
    let oc = rt.block_on(connect(sb_ours.client_urls()))?;
    let mc = rt.block_on(connect(sb_mm.client_urls()))?;

    // (a) initial sync.
    let t = Instant::now();
    let errs = rt.block_on(put_keys(
        pc.clone(),
        0,
        cfg.keys,
        cfg.keys,
        cfg.conc,
        "init".into(),
    ))?;
    let nonce_a = format!("a-{}", std::process::id());
    put_marker(rt, &pc, &nonce_a)?;
    let target_a = rt.block_on(cluster_index(&pc));
    say(&format!(
        "{}-member primary: {} keys × {VALUE_LEN} B preloaded in {:.1?} ({:.0} puts/s, {errs} retries), raft index {target_a}",
        cfg.members,
        cfg.keys,
        t.elapsed(),
        cfg.keys as f64 / t.elapsed().as_secs_f64()
    ));
    res.a_live_bytes = cfg.keys * (key_bytes(KEY_PREFIX, 8) + VALUE_LEN as u64);

    let admin = format!("127.0.0.1:{}", free_port()?);
    let run = run_cmd(
        bin,
        &primary.client_endpoints(),
        &format!("http://127.0.0.1:{}", free_port()?),
        &tmp.path().join("learner"),
        &admin,
        &sb_ours.client_endpoints(),
    );
    let since = Instant::now();
    let mut ours = Proc::spawn(run, "etcd-standby run", &ours_log)?;
    let ours_rss = RssSampler::start(ours.pid());
    res.a_ours = wait_marker(rt, &oc, &nonce_a, since, SYNC_TIMEOUT, &mut [&mut ours])?;
    res.a_ours_rss = ours_rss.take();
    say(&format!(
        "(a) ours: marker on the standby after {} (peak RSS {} MiB); {}",
        secs(res.a_ours),
        res.a_ours_rss / 1024,
        brief_status(&admin)
    ));
    // Wait for the checkpoint too (not timed) so verify sees a settled standby.
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint(&admin) < target_a && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    res.a_verify = verify(bin, &primary, &sb_ours);
    say(&format!("(a) verify: {}", res.a_verify));

    let etcdctl = primary.etcdctl();
    let mm_dest = sb_mm.client_endpoints();
    let mm_cmd = || {
        let mut c = etcdctl.command(["make-mirror", mm_dest.as_str()]);
        c.env("ETCDCTL_API", "3");
        c
    };
    let since = Instant::now();
    let mut mm = Proc::spawn(mm_cmd(), "etcdctl make-mirror", &mm_log)?;
    let mm_rss = RssSampler::start(mm.pid());
    res.a_mm = wait_marker(
        rt,
        &mc,
        &nonce_a,
        since,
        SYNC_TIMEOUT,
        &mut [&mut mm, &mut ours],
    )?;
    res.a_mm_rss = mm_rss.take();
    let mm_count = rt.block_on(count(&mc, KEY_PREFIX)).unwrap_or(0);
    say(&format!(
        "(a) make-mirror: marker on its destination after {} ({mm_count} keys there; peak RSS {} MiB)",
        secs(res.a_mm),
        res.a_mm_rss / 1024
    ));

    // (b) the primary's maximum, then sustained load at 100 % and 50 %.
    let seq = Arc::new(AtomicU64::new(0));
    let probe_secs = Duration::from_secs(cfg.secs.min(10));
    let n = rt.block_on(timed_load(
        pc.clone(),
        seq.clone(),
        cfg.conc,
        None,
        probe_secs,
    ))?;
    res.max_puts_s = n as f64 / probe_secs.as_secs_f64();
    say(&format!(
        "(b) primary maximum: {:.0} puts/s ({} writers, {:.0?}, replicator and make-mirror attached)",
        res.max_puts_s, cfg.conc, probe_secs
    ));
    // Let both catch up before measuring.
    let idx = rt.block_on(cluster_index(&pc));
    let deadline = Instant::now() + Duration::from_secs(300);
    while checkpoint(&admin) < idx && Instant::now() < deadline {
        ours.check()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    let load_total = rt.block_on(count(&pc, LOAD_PREFIX))?;
    while rt.block_on(count(&mc, LOAD_PREFIX)).unwrap_or(0) < load_total
        && Instant::now() < deadline
    {
        mm.check()?;
        std::thread::sleep(Duration::from_millis(100));
    }

    for (label, r) in [
        ("100% (max)", None),
        ("50%", Some((res.max_puts_s / 2.0).max(1.0))),
    ] {
        let dur = Duration::from_secs(cfg.secs);
        let idx0 = rt.block_on(cluster_index(&pc));
        let cp0 = checkpoint(&admin);
        let mm0 = rt.block_on(count(&mc, LOAD_PREFIX)).unwrap_or(0);
        let stop = Arc::new(AtomicBool::new(false));
        let prober = rt.spawn(probe(
            pc.clone(),
            vec![oc.clone(), mc.clone()],
            stop.clone(),
            Duration::from_secs(60),
        ));
        let t0 = Instant::now();
        let load = rt.spawn(timed_load(pc.clone(), seq.clone(), cfg.conc, r, dur));
        let mut max_lag_entries = 0;
        while !load.is_finished() {
            if let Some(v) = replay_status(&admin) {
                max_lag_entries =
                    max_lag_entries.max(v["replay"]["lag_entries"].as_u64().unwrap_or(0));
            }
            ours.check()?;
            mm.check()?;
            std::thread::sleep(Duration::from_millis(250));
        }
        let puts = rt.block_on(load)??;
        let el = t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let idx1 = rt.block_on(cluster_index(&pc));
        let cp1 = checkpoint(&admin);
        let mm1 = rt.block_on(count(&mc, LOAD_PREFIX)).unwrap_or(0);
        let t_stop = Instant::now();
        // Drain: ours until the checkpoint reaches the primary's index,
        // make-mirror until its destination holds every load key.
        let mut ours_drain = None;
        let mut mm_drain = None;
        let total = rt.block_on(count(&pc, LOAD_PREFIX))?;
        while t_stop.elapsed() < Duration::from_secs(300)
            && (ours_drain.is_none() || mm_drain.is_none())
        {
            if ours_drain.is_none() && checkpoint(&admin) >= idx1 {
                ours_drain = Some(t_stop.elapsed());
            }
            if mm_drain.is_none() && rt.block_on(count(&mc, LOAD_PREFIX)).unwrap_or(0) >= total {
                mm_drain = Some(t_stop.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let lags = rt.block_on(prober)??;
        let mut lags = lags.into_iter();
        let phase = LoadPhase {
            label: label.into(),
            secs: el,
            primary_puts_s: puts as f64 / el,
            primary_entries_s: idx1.saturating_sub(idx0) as f64 / el,
            ours_entries_s: cp1.saturating_sub(cp0) as f64 / el,
            mm_keys_s: mm1.saturating_sub(mm0) as f64 / el,
            ours_lag: lags.next().unwrap_or_default(),
            mm_lag: lags.next().unwrap_or_default(),
            ours_max_lag_entries: max_lag_entries,
            ours_drain,
            mm_drain,
        };
        say(&format!(
            "(b) {label}: primary {:.0} puts/s ({:.0} entries/s); ours {:.0} entries/s, lag p50 {} p99 {} ({} probes, {} lost), drained {}; make-mirror {:.0} keys/s, lag p50 {} p99 {} ({} lost), drained {}; {}",
            phase.primary_puts_s,
            phase.primary_entries_s,
            phase.ours_entries_s,
            ms(phase.ours_lag.pct(50.0)),
            ms(phase.ours_lag.pct(99.0)),
            phase.ours_lag.samples.len(),
            phase.ours_lag.lost,
            secs(phase.ours_drain),
            phase.mm_keys_s,
            ms(phase.mm_lag.pct(50.0)),
            ms(phase.mm_lag.pct(99.0)),
            phase.mm_lag.lost,
            secs(phase.mm_drain),
            brief_status(&admin),
        ));
        res.phases.push(phase);
    }

    // (c) standby outage, backlog, catch-up.
    say("(c) stopping both standbys (SIGTERM) and make-mirror");
    mm.kill();
    drop(mm_rss);
    sb_ours.stop_member(0)?;
    sb_mm.stop_member(0)?;
    let idx_before = rt.block_on(cluster_index(&pc));
    let t = Instant::now();
    let errs = rt.block_on(put_keys(
        pc.clone(),
        0,
        cfg.backlog,
        cfg.keys,
        cfg.conc,
        "backlog".into(),
    ))?;
    let nonce_c = format!("c-{}", std::process::id());
    put_marker(rt, &pc, &nonce_c)?;
    res.backlog_write = t.elapsed();
    let target_c = rt.block_on(cluster_index(&pc));
    say(&format!(
        "(c) backlog of {} puts ({} raft entries) written in {:.1?} ({errs} retries); replicator: {}",
        cfg.backlog,
        target_c - idx_before,
        res.backlog_write,
        brief_status(&admin)
    ));
    ours_rss.take();
    sb_ours.restart_member(0)?;
    let since = Instant::now();
    res.c_ours = wait_marker(rt, &oc, &nonce_c, since, SYNC_TIMEOUT, &mut [&mut ours])?;
    res.c_ours_rss = ours_rss.take();
    say(&format!(
        "(c) ours: caught up {} after the standby came back (peak RSS {} MiB); {}",
        secs(res.c_ours),
        res.c_ours_rss / 1024,
        brief_status(&admin)
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint(&admin) < target_c && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    res.c_verify = verify(bin, &primary, &sb_ours);
    say(&format!("(c) verify: {}", res.c_verify));
    sb_mm.restart_member(0)?;
    let since = Instant::now();
    let mut mm = Proc::spawn(mm_cmd(), "etcdctl make-mirror", &mm_log)?;
    let mm_rss = RssSampler::start(mm.pid());
    res.c_mm = wait_marker(rt, &mc, &nonce_c, since, SYNC_TIMEOUT, &mut [&mut mm])?;
    res.c_mm_rss = mm_rss.take();
    say(&format!(
        "(c) make-mirror (restarted: no resume point, full resync): caught up {} (peak RSS {} MiB)",
        secs(res.c_mm),
        res.c_mm_rss / 1024
    ));
    let keys_live = rt.block_on(count(&pc, KEY_PREFIX))?;
    let load_live = rt.block_on(count(&pc, LOAD_PREFIX))?;
    let probe_live = rt.block_on(count(&pc, PROBE_PREFIX))?;
    res.c_live_keys = keys_live + load_live + probe_live;
    res.c_live_bytes = keys_live * (key_bytes(KEY_PREFIX, 8) + VALUE_LEN as u64)
        + load_live * (key_bytes(LOAD_PREFIX, 10) + VALUE_LEN as u64)
        + probe_live * (key_bytes(PROBE_PREFIX, 12) + VALUE_LEN as u64);
    let final_status = replay_status(&admin);
    if let Some(e) = final_status
        .as_ref()
        .and_then(|v| v["replay"]["error"].as_str())
    {
        res.notes.push(format!("replay error at the end: {e}"));
    }
    mm.kill();
    // The ceiling of (c): the standby's own write capacity, measured on
    // make-mirror's standby (same version and flags as ours) now that
    // make-mirror is gone, so nothing else writes to it.
    let ceiling = |conc| {
        rt.block_on(txn_capacity(
            mc.clone(),
            REPLAY_TXN_PUTS,
            conc,
            CEILING_SECS,
        ))
        .ok()
    };
    res.ceiling_serial = ceiling(1);
    res.ceiling_conc = ceiling(CEILING_CONC);
    say(&format!(
        "(c) the standby's write capacity in txns of {} puts: {} one in flight, {} with {CEILING_CONC} in flight",
        REPLAY_TXN_PUTS,
        fmt_rate(res.ceiling_serial),
        fmt_rate(res.ceiling_conc)
    ));
    ours.terminate();
    let log = std::fs::read_to_string(&ours_log).unwrap_or_default();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    if !warns.is_empty() {
        res.notes.push(format!(
            "{} WARN/ERROR lines in {}; first: {}",
            warns.len(),
            ours_log.display(),
            warns.first().copied().unwrap_or("")
        ));
    }
    Ok(res)
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "n/a ",
    }
}

fn report(cfg: &Cfg, results: &[VersionResult]) -> String {
    let mut o = String::new();
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "bench replay — primary {} member(s), standbys 1 member each, {} writers, values {VALUE_LEN} B",
        cfg.members, cfg.conc
    );
    for r in results {
        let _ = writeln!(o, "\n=== etcd {} ===", r.version);
        let _ = writeln!(
            o,
            "{:<44} {:>16} {:>16} {:>10}",
            "", "etcd-standby", "make-mirror", "ratio"
        );
        let ra = rate(r.keys, r.a_ours);
        let rm = rate(r.keys, r.a_mm);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.1}×", a / b),
            _ => "-".into(),
        };
        let _ = writeln!(
            o,
            "{:<44} {:>16} {:>16}",
            format!("(a) initial sync, {} keys: time", r.keys),
            secs(r.a_ours),
            secs(r.a_mm)
        );
        let _ = writeln!(
            o,
            "{:<44} {:>16} {:>16} {:>10}",
            "    keys/s",
            fmt_rate(ra),
            fmt_rate(rm),
            ratio(ra, rm)
        );
        let _ = writeln!(
            o,
            "{:<44} {:>16} {:>16}",
            "    peak RSS",
            format!("{} MiB", r.a_ours_rss / 1024),
            format!("{} MiB", r.a_mm_rss / 1024)
        );
        let _ = writeln!(o, "{:<44} {}", "    verify after (a)", r.a_verify);
        let _ = writeln!(
            o,
            "{:<44} {:>16}",
            "(b) primary maximum (puts/s)",
            format!("{:.0}", r.max_puts_s)
        );
        for p in &r.phases {
            let _ = writeln!(
                o,
                "{:<44} {:>16} {:>16}",
                format!(
                    "    {} load, {:.0} s: primary {:.0} puts/s",
                    p.label, p.secs, p.primary_puts_s
                ),
                format!("{:.0} ent/s", p.ours_entries_s),
                format!("{:.0} keys/s", p.mm_keys_s)
            );
            let _ = writeln!(
                o,
                "{:<44} {:>16} {:>16}",
                format!(
                    "      (primary {:.0} entries/s) lag p50",
                    p.primary_entries_s
                ),
                ms(p.ours_lag.pct(50.0)),
                ms(p.mm_lag.pct(50.0))
            );
            let _ = writeln!(
                o,
                "{:<44} {:>16} {:>16}",
                "      lag p99",
                ms(p.ours_lag.pct(99.0)),
                ms(p.mm_lag.pct(99.0))
            );
            let _ = writeln!(
                o,
                "{:<44} {:>16} {:>16}",
                "      lag max / probes lost",
                format!("{} / {}", ms(p.ours_lag.pct(100.0)), p.ours_lag.lost),
                format!("{} / {}", ms(p.mm_lag.pct(100.0)), p.mm_lag.lost)
            );
            let _ = writeln!(
                o,
                "{:<44} {:>16} {:>16}",
                "      drained after load stopped",
                secs(p.ours_drain),
                secs(p.mm_drain)
            );
            let _ = writeln!(
                o,
                "{:<44} {:>16}",
                "      max lag_entries seen in /status", p.ours_max_lag_entries
            );
        }
        let rc = rate(r.backlog, r.c_ours);
        let rcm = rate(r.backlog, r.c_mm);
        let _ = writeln!(
            o,
            "{:<44} {:>16} {:>16}",
            format!("(c) catch-up of {} puts after outage", r.backlog),
            secs(r.c_ours),
            secs(r.c_mm)
        );
        let _ = writeln!(
            o,
            "{:<44} {:>16} {:>16} {:>10}",
            "    backlog entries/s",
            fmt_rate(rc),
            fmt_rate(rcm),
            ratio(rc, rcm)
        );
        let _ = writeln!(
            o,
            "{:<44} {:>16} {:>16}",
            "    peak RSS",
            format!("{} MiB", r.c_ours_rss / 1024),
            format!("{} MiB", r.c_mm_rss / 1024)
        );
        let _ = writeln!(o, "{:<44} {}", "    verify after (c)", r.c_verify);
        let _ = writeln!(
            o,
            "{:<44} {:>16}",
            "    standby capacity, 1 txn in flight",
            format!(
                "{} ({})",
                fmt_rate(r.ceiling_serial),
                ratio(rc, r.ceiling_serial)
            )
        );
        let _ = writeln!(
            o,
            "{:<44} {:>16}",
            format!("    standby capacity, {CEILING_CONC} txns in flight"),
            format!(
                "{} ({})",
                fmt_rate(r.ceiling_conc),
                ratio(rc, r.ceiling_conc)
            )
        );
        let per_m =
            |rss_kib: u64, keys: u64| (rss_kib as f64 / 1024.0) / (keys as f64 / 1e6).max(1e-9);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let _ = writeln!(
            o,
            "{:<44} {:>16} {:>16}",
            format!(
                "(d) RSS per million keys (a: {} keys, {:.1} MiB live)",
                r.keys,
                mib(r.a_live_bytes)
            ),
            format!("{:.0} MiB", per_m(r.a_ours_rss, r.keys)),
            format!("{:.0} MiB", per_m(r.a_mm_rss, r.keys))
        );
        let _ = writeln!(
            o,
            "{:<44} {:>16} {:>16}",
            format!(
                "    (c: {} keys, {:.1} MiB live)",
                r.c_live_keys,
                mib(r.c_live_bytes)
            ),
            format!("{:.0} MiB", per_m(r.c_ours_rss, r.c_live_keys)),
            format!("{:.0} MiB", per_m(r.c_mm_rss, r.c_live_keys))
        );
        if r.c_live_keys > r.keys && r.c_ours_rss > r.a_ours_rss {
            let _ = writeln!(
                o,
                "{:<44} {:>16}",
                "    marginal (c − a) per million more keys",
                format!(
                    "{:.0} MiB",
                    per_m(r.c_ours_rss - r.a_ours_rss, r.c_live_keys - r.keys)
                )
            );
        }

        // Verdicts.
        let _ = writeln!(o, "targets:");
        let max = r.phases.first();
        let half = r.phases.get(1);
        let keeps_up = max.map(|p| {
            p.ours_entries_s >= 0.95 * p.primary_entries_s
                && p.ours_drain.is_some_and(|d| d < Duration::from_secs(5))
        });
        let _ = writeln!(
            o,
            "  {} (b) keeps up with the primary's maximum (≥95% of its entries/s, drained < 5 s after load): {}",
            verdict(keeps_up),
            max.map_or("-".into(), |p| format!(
                "{:.0} vs {:.0} entries/s, drained {}",
                p.ours_entries_s,
                p.primary_entries_s,
                secs(p.ours_drain)
            ))
        );
        let p99 = half.and_then(|p| p.ours_lag.pct(99.0));
        let _ =
            writeln!(
                o,
                "  {} (b) lag p99 < 100 ms at 50% load: {}",
                verdict(p99.map(|d| d < Duration::from_millis(100)
                    && half.is_some_and(|p| p.ours_lag.lost == 0))),
                ms(p99)
            );
        let _ = writeln!(
            o,
            "  {} (a) initial sync ≥ 20× make-mirror's rate: {}",
            verdict(
                ra.zip(rm)
                    .map(|(a, b)| a >= 20.0 * b)
                    .or(ra.map(|_| rm.is_none()).filter(|x| *x))
            ),
            ratio(ra, rm)
        );
        let _ = writeln!(
            o,
            "  {} (c) catch-up ≥ 20× make-mirror's rate: {}",
            verdict(
                rc.zip(rcm)
                    .map(|(a, b)| a >= 20.0 * b)
                    .or(rc.map(|_| rcm.is_none()).filter(|x| *x))
            ),
            ratio(rc, rcm)
        );
        let _ = writeln!(
            o,
            "  (c) catch-up against the standby's own write capacity: {} of one txn in flight, {} of {CEILING_CONC} in flight",
            ratio(rc, r.ceiling_serial),
            ratio(rc, r.ceiling_conc)
        );
        let mem_ok = (r.a_ours_rss > 0 && r.c_ours_rss > 0).then(|| {
            r.a_ours_rss * 1024 <= 2 * r.a_live_bytes && r.c_ours_rss * 1024 <= 2 * r.c_live_bytes
        });
        let _ = writeln!(
            o,
            "  {} (d) memory ≤ 2× live data: peak {} MiB vs 2 × {:.1} MiB (a), {} MiB vs 2 × {:.1} MiB (c)",
            verdict(mem_ok),
            r.a_ours_rss / 1024,
            mib(r.a_live_bytes),
            r.c_ours_rss / 1024,
            mib(r.c_live_bytes)
        );
        let _ = writeln!(o, "  replicator log: {}", r.log.display());
        for n in &r.notes {
            let _ = writeln!(o, "  note: {n}");
        }
    }
    let _ = writeln!(
        o,
        "\nnotes: everything (primary, both standbys, the replicator, make-mirror and the load \
         generator) shares this machine's {} core(s) and may compete with other work; (a) and (c) \
         are timed from process start (ours includes joining the cluster; make-mirror after the \
         outage is restarted: it has no resume point and resyncs everything) until the last-written \
         key, which also sorts last, is on the standby; lag = seen by a {} ms poller on the standby \
         − the put returned on the primary (probe every {} ms); in (b) both replicators run at the \
         same time; a probe not seen within 60 s of the load stopping counts as lost (the p99 of a \
         replicator that lost probes is an underestimate); live data = key + value bytes of live keys (no etcd overhead).",
        std::thread::available_parallelism().map_or(0, usize::from),
        POLL_EVERY.as_millis(),
        PROBE_EVERY.as_millis()
    );
    o
}

pub fn bench_replay(root: &Path) -> Result<u8> {
    let cfg = Cfg::from_env()?;
    // A release build of this checkout, or `ETCD_STANDBY_BENCH_BIN` (to run
    // two builds back to back on the same machine load).
    let bin = crate::bench_wan::bench_binary(root, "replay")?;
    let out_dir = root.join("target/bench");
    println!(
        "bench replay: keys {} secs {} backlog {} versions {} primary members {} writers {}",
        cfg.keys,
        cfg.secs,
        cfg.backlog,
        cfg.versions
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(","),
        cfg.members,
        cfg.conc
    );
    let rt = rt()?;
    let mut results = Vec::new();
    for &v in &cfg.versions {
        match run_version(&rt, &bin, &out_dir, v, &cfg) {
            Ok(r) => results.push(r),
            Err(e) => {
                println!("bench replay [{v}]: FAILED: {e:#}");
                results.push(VersionResult {
                    version: v.as_str().to_owned(),
                    notes: vec![format!("run failed: {e:#}")],
                    ..Default::default()
                });
            }
        }
    }
    let text = report(&cfg, &results);
    print!("{text}");
    let _ = std::fs::write(out_dir.join("replay-report.txt"), &text);
    Ok(0)
}
