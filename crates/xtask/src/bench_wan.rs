//! `cargo xtask bench wan`: replication across an emulated link between two
//! cities, on real etcd. The primary cluster lives in one private network
//! namespace, the replicator (`etcd-standby run`) and the standby cluster in
//! another; the only way between them is one emulated link. For each link
//! profile, in one run:
//!
//! 1. replication lag p50/p99 under a steady paced load (probe keys written
//!    on the primary, polled on the standby, as in `bench replay`);
//! 2. catch-up of two backlogs: the replicator is stopped (SIGTERM),
//!    puts land on the primary, the replicator is started again; time from
//!    its start until the last write is on the standby. `BACKLOG` (4000)
//!    stays below the 5000 entries etcd keeps behind a snapshot, so the
//!    leader's log still holds it; `SNAP_BACKLOG` (2 × the primary's
//!    `--snapshot-count` + 6000) goes past the leader's log compaction, so
//!    it expects a snapshot (it first waits until 32 s after the last
//!    snapshot the leader sent: etcd holds log compaction for 30 s after
//!    sending one);
//! 3. whether the leader fell back to sending a snapshot to the learner
//!    (the replicator's `etcd_standby_snapshots_saved` since its restart,
//!    and the primary's "sent database snapshot" log lines).
//!
//! Profiles: no emulation, 30 ms RTT, 30 ms RTT + 1 % loss, 30 ms RTT + a
//! rate limit (by default a quarter of the bandwidth the baseline snapshot
//! catch-up used: a link 4× slower than what the fastest catch-up needs).
//!
//! The link: `sch_netem` is not available in every kernel (it is not in the
//! one this was written on), so the link is emulated in user space: each
//! namespace has a TUN device (`10.213.0.1` ↔ `10.213.0.2`, point to
//! point), and two threads per direction move IP packets between them
//! with netem's model: per-packet random loss, then a rate limit
//! (serialisation at `rate` bytes/s behind a buffer of about 1000
//! full-size packets), then a fixed delay. TCP on both sides sees a real
//! lossy, slow, long link.
//!
//! Everything is set up and torn down by this bench (a drop guard, and a
//! SIGINT/SIGTERM handler): namespaces `esb-wan-{pid}-{a,b}`, TUN devices
//! (they vanish with our file descriptors). Nothing is routed outside the
//! two namespaces; no host interface is touched. Needs root.
//!
//! Knobs (environment): `ETCD_STANDBY_BENCH_VERSIONS` (`3.4,3.5`),
//! `ETCD_STANDBY_BENCH_MEMBERS` (primary size, 1), `ETCD_STANDBY_BENCH_KEYS`
//! (preloaded keys, also the key space of the backlog, 10000),
//! `ETCD_STANDBY_BENCH_SECS` (lag phase per profile, 20),
//! `ETCD_STANDBY_BENCH_RATE` (puts/s during the lag phase, 200),
//! `ETCD_STANDBY_BENCH_BACKLOG` (puts while the replicator is down, 4000),
//! `ETCD_STANDBY_BENCH_SNAP_BACKLOG` (the same, past the leader's log
//! compaction; 2 × `SNAPSHOT_COUNT` + 6000),
//! `ETCD_STANDBY_BENCH_CONC` (writers, 32),
//! `ETCD_STANDBY_BENCH_WAN_DELAY_MS` (one way, 15),
//! `ETCD_STANDBY_BENCH_WAN_LOSS` (percent, 1),
//! `ETCD_STANDBY_BENCH_WAN_RATE` (bytes/s of the rate-limited profile;
//! default: the baseline snapshot catch-up's bytes/s ÷ 4),
//! `ETCD_STANDBY_BENCH_SNAPSHOT_COUNT` (the primary's `--snapshot-count`,
//! 10000), `ETCD_STANDBY_BENCH_BIN` (a prebuilt
//! `etcd-standby`, else a release build of this checkout).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion, free_port};
use tokio::runtime::Runtime;

use crate::bench_learner::http_get;
use crate::bench_replay::{
    KEY_PREFIX, Lags, Proc, SYNC_TIMEOUT, checkpoint, cluster_index, connect, count, env_u64, ms,
    probe, put_keys, put_marker, run_cmd, secs, timed_load, verify, versions_from_env, wait_marker,
};
use crate::cmd;

const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
/// The rate-limited link's buffer: packets waiting to be sent (not those
/// in flight, i.e. delayed) beyond this many bytes are dropped (about
/// netem's default queue of 1000 full-size packets).
const QUEUE_BYTES: u128 = 1000 * 1500;
/// etcd's `releaseDelayAfterSnapshot` (30 s) and a margin.
const COMPACTION_HOLD: Duration = Duration::from_secs(32);

struct Cfg {
    versions: Vec<EtcdVersion>,
    members: usize,
    keys: u64,
    secs: u64,
    rate: f64,
    backlog: u64,
    snap_backlog: u64,
    conc: usize,
    delay: Duration,
    loss_ppm: u64,
    wan_rate: Option<u64>,
    snapshot_count: u64,
}

impl Cfg {
    fn from_env() -> Result<Cfg> {
        let loss: f64 = match std::env::var("ETCD_STANDBY_BENCH_WAN_LOSS") {
            Ok(v) => v
                .trim()
                .parse()
                .with_context(|| format!("ETCD_STANDBY_BENCH_WAN_LOSS={v} is not a number"))?,
            Err(_) => 1.0,
        };
        let opt = |name: &str| -> Result<Option<u64>> {
            Ok(match std::env::var(name) {
                Ok(_) => Some(env_u64(name, 0)?),
                Err(_) => None,
            })
        };
        let snapshot_count = env_u64("ETCD_STANDBY_BENCH_SNAPSHOT_COUNT", 10_000)?.max(1);
        Ok(Cfg {
            versions: versions_from_env()?,
            members: env_u64("ETCD_STANDBY_BENCH_MEMBERS", 1)?.clamp(1, 5) as usize,
            keys: env_u64("ETCD_STANDBY_BENCH_KEYS", 10_000)?.max(1),
            secs: env_u64("ETCD_STANDBY_BENCH_SECS", 20)?.max(1),
            rate: env_u64("ETCD_STANDBY_BENCH_RATE", 200)?.max(1) as f64,
            backlog: env_u64("ETCD_STANDBY_BENCH_BACKLOG", 4_000)?.max(1),
            snap_backlog: env_u64("ETCD_STANDBY_BENCH_SNAP_BACKLOG", 2 * snapshot_count + 6000)?
                .max(1),
            conc: env_u64("ETCD_STANDBY_BENCH_CONC", 32)?.clamp(1, 1024) as usize,
            delay: Duration::from_millis(env_u64("ETCD_STANDBY_BENCH_WAN_DELAY_MS", 15)?),
            loss_ppm: (loss.clamp(0.0, 100.0) * 10_000.0).round() as u64,
            wan_rate: opt("ETCD_STANDBY_BENCH_WAN_RATE")?.filter(|r| *r > 0),
            snapshot_count,
        })
    }
}

/// The `etcd-standby` binary the benches run: `ETCD_STANDBY_BENCH_BIN`, or
/// a release build of this checkout.
pub(crate) fn bench_binary(root: &Path, bench: &str) -> Result<PathBuf> {
    if let Some(b) = std::env::var_os("ETCD_STANDBY_BENCH_BIN") {
        return Ok(PathBuf::from(b));
    }
    println!("bench {bench}: building etcd-standby (release)");
    cmd::run(cmd::cargo().args(["build", "--release", "--quiet", "-p", "etcd-standby"]))?;
    Ok(root.join("target/release/etcd-standby"))
}

/// `/proc/loadavg`'s first three fields.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

// ------------------------------------------------------------- namespaces

fn ip(args: &[&str]) -> Result<()> {
    let mut c = Command::new("ip");
    c.args(args).stdin(Stdio::null());
    let out = cmd::capture(&mut c)?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            cmd::describe(&c),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn enter(ns: &File) -> Result<()> {
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .context("setns into the bench's network namespace")
}

/// A network namespace of this bench, open for `setns`.
struct Netns {
    name: String,
    file: Arc<File>,
}

impl Netns {
    /// Runs `f` on a thread inside this namespace: the sockets it opens and
    /// the processes it starts (they inherit the thread's namespace) live
    /// there.
    fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let file = &self.file;
        std::thread::scope(|s| {
            s.spawn(move || {
                enter(file)?;
                f()
            })
            .join()
            .map_err(|_| anyhow!("a thread in netns {} panicked", self.name))?
        })
    }

    /// A tokio runtime whose threads all live in this namespace. Run
    /// futures that open sockets with [`on`], not `block_on` (which polls
    /// on the calling thread).
    fn runtime(&self) -> Result<Runtime> {
        let file = self.file.clone();
        let name = self.name.clone();
        Ok(tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || {
                // Addresses are all in 10.213.0.0/30: a thread left outside
                // reaches nothing, the calls fail.
                if let Err(e) = enter(&file) {
                    eprintln!("bench wan: runtime thread not in netns {name}: {e:#}");
                }
            })
            .build()?)
    }
}

/// Runs `fut` on a worker of `rt` (in that runtime's namespace).
fn on<T: Send + 'static>(
    rt: &Runtime,
    fut: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    rt.block_on(rt.spawn(fut)).context("bench task panicked")?
}

/// Namespaces created by this process, for the signal handler.
static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// SIGKILLs (by PID) the processes left in our namespace `name` (all started
/// by this bench: nothing else can be in it), then deletes it.
fn remove_netns(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        let me = std::process::id().to_string();
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if pid != me && pid.chars().all(|c| c.is_ascii_digit()) {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
    if let Err(e) = ip(&["netns", "del", name]) {
        eprintln!("bench wan: {e:#}");
    }
}

/// On SIGINT/SIGTERM: remove our namespaces (and what runs in them), exit.
fn install_signal_handler() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Register before returning, so a signal from now on is ours.
    let (mut int, mut term) = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        eprintln!("bench wan: interrupted; removing the bench's namespaces");
        let names = CREATED.lock().map(|v| v.clone()).unwrap_or_default();
        for n in names {
            remove_netns(&n);
        }
        std::process::exit(130);
    });
    Ok(())
}

// ------------------------------------------------------------- the link

/// What the link does; changed between profiles while it runs.
#[derive(Default)]
struct LinkParams {
    delay_us: AtomicU64,
    loss_ppm: AtomicU64,
    /// Bytes/s; 0 = unlimited.
    rate: AtomicU64,
}

#[derive(Default)]
struct LinkStats {
    bytes: AtomicU64,
    lost: AtomicU64,
    overflow: AtomicU64,
}

/// The emulated link between the two TUN devices.
struct Link {
    params: Arc<LinkParams>,
    stats: Arc<LinkStats>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Clone)]
struct Profile {
    name: String,
    delay: Duration,
    loss_ppm: u64,
    rate: Option<u64>,
}

impl Link {
    fn start(a: File, b: File) -> Result<Link> {
        let (a, b) = (Arc::new(a), Arc::new(b));
        let mut link = Link {
            params: Arc::default(),
            stats: Arc::default(),
            stop: Arc::default(),
            threads: Vec::new(),
        };
        for (i, (from, to)) in [(a.clone(), b.clone()), (b, a)].into_iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            let (params, stats, stop) =
                (link.params.clone(), link.stats.clone(), link.stop.clone());
            link.threads.push(
                std::thread::Builder::new()
                    .name(format!("wan-in-{i}"))
                    .spawn(move || pump(&from, &tx, &params, &stats, &stop, i as u64 + 1))?,
            );
            let stop = link.stop.clone();
            link.threads.push(
                std::thread::Builder::new()
                    .name(format!("wan-out-{i}"))
                    .spawn(move || deliver(&to, &rx, &stop))?,
            );
        }
        Ok(link)
    }

    fn set(&self, p: &Profile) {
        let us = u64::try_from(p.delay.as_micros()).unwrap_or(u64::MAX);
        self.params.delay_us.store(us, Ordering::Relaxed);
        self.params.loss_ppm.store(p.loss_ppm, Ordering::Relaxed);
        self.params
            .rate
            .store(p.rate.unwrap_or(0), Ordering::Relaxed);
    }

    fn bytes(&self) -> u64 {
        self.stats.bytes.load(Ordering::Relaxed)
    }

    fn drops(&self) -> (u64, u64) {
        (
            self.stats.lost.load(Ordering::Relaxed),
            self.stats.overflow.load(Ordering::Relaxed),
        )
    }

    /// Stops the threads; the TUN devices go with the last descriptor.
    fn shut(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Reads packets from `from`; drops some (loss, full buffer); stamps the
/// others with their delivery time (serialisation at the rate behind the
/// packets before, then the delay) and queues them for [`deliver`].
fn pump(
    from: &File,
    tx: &mpsc::Sender<(Instant, Vec<u8>)>,
    params: &LinkParams,
    stats: &LinkStats,
    stop: &AtomicBool,
    seed: u64,
) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut buf = vec![0u8; 65536];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut next_free = Instant::now();
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(from, PollFlags::IN)];
        match poll(&mut fds, Some(&tick)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                eprintln!("bench wan: link poll: {e}");
                return;
            }
        }
        let n = match (&*from).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                eprintln!("bench wan: link read: {e}");
                return;
            }
        };
        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        // xorshift64
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if rng % 1_000_000 < params.loss_ppm.load(Ordering::Relaxed) {
            stats.lost.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let now = Instant::now();
        let rate = params.rate.load(Ordering::Relaxed);
        let sent = match (n as u64 * 1_000_000_000).checked_div(rate) {
            Some(ns) => {
                let start = next_free.max(now);
                let waiting = (start - now).as_nanos() * u128::from(rate) / 1_000_000_000;
                if waiting > QUEUE_BYTES {
                    stats.overflow.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                next_free = start + Duration::from_nanos(ns);
                next_free
            }
            None => now,
        };
        let at = sent + Duration::from_micros(params.delay_us.load(Ordering::Relaxed));
        if tx.send((at, buf[..n].to_vec())).is_err() {
            return;
        }
    }
}

/// Writes queued packets to `to` at their delivery time, in order.
fn deliver(to: &File, rx: &mpsc::Receiver<(Instant, Vec<u8>)>, stop: &AtomicBool) {
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((at, pkt)) => {
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                // A packet the device refuses is lost, as on a wire.
                let _ = (&*to).write(&pkt);
            }
            Err(mpsc::RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => {}
            Err(_) => return,
        }
    }
}

/// Opens a new TUN device `name` (IP packets, no packet-info header) in the
/// calling thread's network namespace. It exists while the file is open.
fn open_tun(name: &str) -> Result<File> {
    const TUNSETIFF: rustix::ioctl::Opcode = rustix::ioctl::opcode::write::<i32>(b'T', 202);
    const IFF_TUN: u16 = 0x0001;
    const IFF_NO_PI: u16 = 0x1000;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("open /dev/net/tun")?;
    // struct ifreq: char ifr_name[16], then a union (short ifr_flags first),
    // 40 bytes in all on Linux.
    let mut ifr = [0u8; 40];
    if name.len() >= 16 {
        bail!("interface name {name} is too long");
    }
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    ifr[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
    // SAFETY: TUNSETIFF takes a pointer to a `struct ifreq`; `Setter`
    // passes a pointer to its own 40-byte copy of `ifr`, which is the size
    // of `struct ifreq` and outlives the call.
    #[allow(unsafe_code)]
    unsafe { rustix::ioctl::ioctl(&f, rustix::ioctl::Setter::<TUNSETIFF, [u8; 40]>::new(ifr)) }
        .with_context(|| format!("TUNSETIFF {name}"))?;
    Ok(f)
}

/// The two namespaces and the link between them; removed on drop.
struct Wan {
    a: Netns,
    b: Netns,
    link: Option<Link>,
}

impl Wan {
    fn create() -> Result<Wan> {
        let pid = std::process::id();
        let names = [format!("esb-wan-{pid}-a"), format!("esb-wan-{pid}-b")];
        let mut made = Vec::new();
        for n in &names {
            if let Ok(mut v) = CREATED.lock() {
                v.push(n.clone());
            }
            ip(&["netns", "add", n])?;
            let file = File::open(format!("/run/netns/{n}"))
                .with_context(|| format!("open /run/netns/{n}"))?;
            made.push(Netns {
                name: n.clone(),
                file: Arc::new(file),
            });
        }
        let b = made.pop().context("two namespaces")?;
        let a = made.pop().context("two namespaces")?;
        let mut wan = Wan { a, b, link: None };
        let tun_a = format!("esbw{pid}a");
        let tun_b = format!("esbw{pid}b");
        let fa = wan.a.run(|| open_tun(&tun_a))?;
        let fb = wan.b.run(|| open_tun(&tun_b))?;
        wan.link = Some(Link::start(fa, fb)?);
        for (ns, dev, me, peer) in [
            (&wan.a.name, &tun_a, ADDR_A, ADDR_B),
            (&wan.b.name, &tun_b, ADDR_B, ADDR_A),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{me}/32"),
                "peer",
                &format!("{peer}/32"),
                "dev",
                dev,
            ])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(wan)
    }

    fn link(&self) -> Result<&Link> {
        self.link.as_ref().context("the link is down")
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        // Close the TUN devices first, then the namespaces.
        if let Some(mut l) = self.link.take() {
            l.shut();
        }
        for ns in [&self.a, &self.b] {
            remove_netns(&ns.name);
            if let Ok(mut v) = CREATED.lock() {
                v.retain(|n| n != &ns.name);
            }
        }
    }
}

// ------------------------------------------------------------- results

/// One backlog caught up after a restart of the replicator.
struct CatchUp {
    puts: u64,
    entries: u64,
    time: Option<Duration>,
    link_bytes: u64,
    learner_snapshots: Option<u64>,
    leader_snapshots: usize,
}

struct ProfileResult {
    profile: Profile,
    lag: Lags,
    puts_s: f64,
    link_kib_s: f64,
    log: CatchUp,
    snap: CatchUp,
    drops: (u64, u64),
    load: String,
}

#[derive(Default)]
struct VersionResult {
    version: String,
    initial_sync: Option<Duration>,
    profiles: Vec<ProfileResult>,
    verify: String,
    log: PathBuf,
    notes: Vec<String>,
}

/// `etcd_standby_snapshots_saved` from the replicator's `/metrics`.
fn snapshots_saved(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("etcd_standby_snapshots_saved"))
        .find_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Snapshots the primary's members logged as sent (`"msg":"sent database
/// snapshot"`, once per snapshot on 3.4 and 3.5).
fn leader_snapshot_lines(primary: &EtcdCluster) -> usize {
    (0..primary.len())
        .filter_map(|i| primary.member_log(i).ok())
        .map(|log| log.matches("\"msg\":\"sent database snapshot\"").count())
        .sum()
}

// ------------------------------------------------------------- the run

struct Ctx<'a> {
    wan: &'a Wan,
    ra: &'a Runtime,
    rb: &'a Runtime,
    bin: &'a Path,
    cfg: &'a Cfg,
}

fn run_version(cx: &Ctx<'_>, out_dir: &Path, v: EtcdVersion) -> Result<VersionResult> {
    let (wan, ra, rb, cfg) = (cx.wan, cx.ra, cx.rb, cx.cfg);
    let link = wan.link()?;
    let mut res = VersionResult {
        version: v.as_str().to_owned(),
        ..Default::default()
    };
    let say = |s: &str| println!("bench wan [{v}]: {s}");
    let tag = v.as_str().replace('.', "_");
    let log = out_dir.join(format!("wan-{tag}-etcd-standby.log"));
    let _ = std::fs::remove_file(&log);
    res.log = log.clone();

    let baseline = Profile {
        name: "none".into(),
        delay: Duration::ZERO,
        loss_ppm: 0,
        rate: None,
    };
    link.set(&baseline);
    let primary = wan.a.run(|| {
        let opts = ClusterOptions {
            host: Some(ADDR_A),
            snapshot_count: Some(cfg.snapshot_count),
            ..Default::default()
        };
        Ok(EtcdCluster::start(v, cfg.members, opts)?)
    })?;
    let standby = wan.b.run(|| {
        let opts = ClusterOptions {
            host: Some(ADDR_B),
            ..Default::default()
        };
        Ok(EtcdCluster::start(v, 1, opts)?)
    })?;
    let pc = on(ra, connect(primary.client_urls()))?;
    let sc = on(rb, connect(standby.client_urls()))?;

    let t = Instant::now();
    on(
        ra,
        put_keys(pc.clone(), 0, cfg.keys, cfg.keys, cfg.conc, "init".into()),
    )?;
    let nonce = format!("init-{}", std::process::id());
    put_marker(ra, &pc, &nonce)?;
    say(&format!(
        "{}-member primary in netns {} ({ADDR_A}), standby and replicator in {} ({ADDR_B}); {} keys preloaded in {:.1?}",
        cfg.members,
        wan.a.name,
        wan.b.name,
        cfg.keys,
        t.elapsed()
    ));

    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().join("learner");
    let (peer_port, admin_port) = wan.b.run(|| Ok((free_port()?, free_port()?)))?;
    let admin = format!("{ADDR_B}:{admin_port}");
    let start_ours = || {
        wan.b.run(|| {
            let c = run_cmd(
                cx.bin,
                &primary.client_endpoints(),
                &format!("http://{ADDR_B}:{peer_port}"),
                &data_dir,
                &admin,
                &standby.client_endpoints(),
            );
            Proc::spawn(c, "etcd-standby run", &log)
        })
    };
    let since = Instant::now();
    let mut ours = start_ours()?;
    res.initial_sync = wait_marker(rb, &sc, &nonce, since, SYNC_TIMEOUT, &mut [&mut ours])?;
    say(&format!(
        "initial sync of {} keys (no emulation): {}",
        cfg.keys,
        secs(res.initial_sync)
    ));

    // Stops the replicator (SIGTERM), puts `n` keys, starts it again and
    // times until the last write is on the standby.
    // etcd does not compact its log for 30 s after it sent a snapshot
    // (`releaseDelayAfterSnapshot`), so a snapshot backlog waits that out
    // after the last one (a joining member gets one too).
    let mut next_key = 0;
    let mut no_compaction_until =
        (leader_snapshot_lines(&primary) > 0).then(|| Instant::now() + COMPACTION_HOLD);
    let mut catch_up = |ours: &mut Proc, n: u64, tag: &str, snapshot: bool| -> Result<CatchUp> {
        if snapshot && let Some(until) = no_compaction_until {
            let wait = until.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                say(&format!(
                    "waiting {wait:.1?}: etcd holds log compaction 30 s after sending a snapshot"
                ));
                std::thread::sleep(wait);
            }
        }
        let leader_before = leader_snapshot_lines(&primary);
        ours.terminate();
        let idx0 = ra.block_on(cluster_index(&pc));
        on(
            ra,
            put_keys(pc.clone(), next_key, n, cfg.keys, cfg.conc, tag.to_owned()),
        )?;
        next_key += n;
        let nonce = format!("{tag}-{}", std::process::id());
        put_marker(ra, &pc, &nonce)?;
        let idx1 = ra.block_on(cluster_index(&pc));
        let bytes0 = link.bytes();
        let since = Instant::now();
        *ours = start_ours()?;
        let time = wait_marker(rb, &sc, &nonce, since, SYNC_TIMEOUT, &mut [&mut *ours])?;
        let c = CatchUp {
            puts: n,
            entries: idx1 - idx0,
            time,
            link_bytes: link.bytes() - bytes0,
            learner_snapshots: wan
                .b
                .run(|| Ok(http_get(&admin, "/metrics")))?
                .as_deref()
                .and_then(snapshots_saved),
            leader_snapshots: leader_snapshot_lines(&primary).saturating_sub(leader_before),
        };
        if c.leader_snapshots > 0 || c.learner_snapshots.is_some_and(|n| n > 0) {
            no_compaction_until = Some(Instant::now() + COMPACTION_HOLD);
        }
        Ok(c)
    };

    let seq = Arc::new(AtomicU64::new(0));
    let mut profiles = vec![
        baseline,
        Profile {
            name: format!("{} ms RTT", 2 * cfg.delay.as_millis()),
            delay: cfg.delay,
            loss_ppm: 0,
            rate: None,
        },
        Profile {
            name: format!(
                "{} ms RTT + {}% loss",
                2 * cfg.delay.as_millis(),
                cfg.loss_ppm as f64 / 10_000.0
            ),
            delay: cfg.delay,
            loss_ppm: cfg.loss_ppm,
            rate: None,
        },
    ];
    let mut i = 0;
    while i < profiles.len() {
        let p = profiles[i].clone();
        i += 1;
        link.set(&p);
        let load_before = loadavg();
        let drops_before = link.drops();
        // 1. Lag under a paced load.
        let stop = Arc::new(AtomicBool::new(false));
        let prober = rb.spawn(probe(
            pc.clone(),
            vec![sc.clone()],
            stop.clone(),
            Duration::from_secs(60),
        ));
        let bytes0 = link.bytes();
        let t0 = Instant::now();
        let load = ra.spawn(timed_load(
            pc.clone(),
            seq.clone(),
            cfg.conc,
            Some(cfg.rate),
            Duration::from_secs(cfg.secs),
        ));
        while !load.is_finished() {
            ours.check()?;
            std::thread::sleep(Duration::from_millis(250));
        }
        let puts = ra.block_on(load)??;
        let el = t0.elapsed().as_secs_f64();
        let link_kib_s = (link.bytes() - bytes0) as f64 / 1024.0 / el;
        stop.store(true, Ordering::Relaxed);
        let lag = rb
            .block_on(prober)?
            .context("probe")?
            .into_iter()
            .next()
            .unwrap_or_default();
        say(&format!(
            "[{}] lag p50 {} p99 {} max {} ({} probes, {} lost) at {:.0} puts/s; link {link_kib_s:.0} KiB/s",
            p.name,
            ms(lag.pct(50.0)),
            ms(lag.pct(99.0)),
            ms(lag.pct(100.0)),
            lag.samples.len(),
            lag.lost,
            puts as f64 / el
        ));
        // 2. Backlog catch-ups: one the leader's log still holds, one past
        // its compaction (a snapshot is expected).
        let log = catch_up(&mut ours, cfg.backlog, &format!("log-{i}"), false)?;
        let snap = catch_up(&mut ours, cfg.snap_backlog, &format!("snap-{i}"), true)?;
        let after = link.drops();
        let drops = (after.0 - drops_before.0, after.1 - drops_before.1);
        for (what, c) in [("log", &log), ("snapshot", &snap)] {
            say(&format!(
                "[{}] {what} catch-up of {} puts ({} entries): {} ({:.1} MiB over the link); learner snapshots saved {}, leader snapshots sent {}",
                p.name,
                c.puts,
                c.entries,
                secs(c.time),
                c.link_bytes as f64 / (1024.0 * 1024.0),
                c.learner_snapshots.map_or("?".into(), |n| n.to_string()),
                c.leader_snapshots,
            ));
        }
        say(&format!(
            "[{}] link drops: {} loss, {} buffer",
            p.name, drops.0, drops.1
        ));
        if p.loss_ppm == 0
            && p.delay.is_zero()
            && p.rate.is_none()
            && let Some(d) = snap.time
        {
            let need = (snap.link_bytes as f64 / d.as_secs_f64().max(1e-3)) as u64;
            let rate = cfg.wan_rate.unwrap_or((need / 4).max(16 * 1024));
            profiles.push(Profile {
                name: format!(
                    "{} ms RTT + {:.0} KiB/s",
                    2 * cfg.delay.as_millis(),
                    rate as f64 / 1024.0
                ),
                delay: cfg.delay,
                loss_ppm: 0,
                rate: Some(rate),
            });
            say(&format!(
                "baseline snapshot catch-up moved {:.0} KiB/s over the link; rate-limited profile: {:.0} KiB/s{}",
                need as f64 / 1024.0,
                rate as f64 / 1024.0,
                if cfg.wan_rate.is_some() {
                    " (ETCD_STANDBY_BENCH_WAN_RATE)"
                } else {
                    " (a quarter)"
                }
            ));
        }
        res.profiles.push(ProfileResult {
            profile: p,
            lag,
            puts_s: puts as f64 / el,
            link_kib_s,
            log,
            snap,
            drops,
            load: format!("{load_before} -> {}", loadavg()),
        });
    }

    // Settle with no emulation, then verify.
    link.set(&res.profiles[0].profile);
    let target = ra.block_on(cluster_index(&pc));
    let deadline = Instant::now() + Duration::from_secs(120);
    while wan.b.run(|| Ok(checkpoint(&admin)))? < target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    res.verify = wan.b.run(|| Ok(verify(cx.bin, &primary, &standby)))?;
    say(&format!("verify: {}", res.verify));
    let keys_on_standby = rb.block_on(count(&sc, KEY_PREFIX)).unwrap_or(0);
    if keys_on_standby != cfg.keys {
        res.notes.push(format!(
            "{keys_on_standby} keys under {KEY_PREFIX} on the standby, {} expected",
            cfg.keys
        ));
    }
    let mut msgs = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..primary.len() {
        for line in primary.member_log(i).unwrap_or_default().lines() {
            if line.contains("sent database snapshot") {
                let msg = line
                    .split_once("\"msg\":\"")
                    .and_then(|(_, m)| m.split_once('"'))
                    .map_or(line, |(m, _)| m);
                *msgs.entry(msg.to_owned()).or_default() += 1;
            }
        }
    }
    for (m, n) in msgs {
        res.notes
            .push(format!("primary log: {n} × \"{m}\" over the whole run"));
    }
    ours.terminate();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let warns: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    if let Some(first) = warns.first() {
        res.notes.push(format!(
            "{} WARN/ERROR lines in the replicator log; first: {first}",
            warns.len()
        ));
    }
    drop(pc);
    drop(sc);
    Ok(res)
}

fn report(cfg: &Cfg, results: &[VersionResult]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nbench wan — primary {} member(s) (--snapshot-count {}) in one netns; replicator + 1-member \
         standby in another; lag at {:.0} puts/s for {} s per profile (values 256 B, probe every \
         20 ms); backlogs of {} and {} puts",
        cfg.members, cfg.snapshot_count, cfg.rate, cfg.secs, cfg.backlog, cfg.snap_backlog
    );
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let snaps = |c: &CatchUp| {
        format!(
            "{} / {}",
            c.learner_snapshots.map_or("?".into(), |n| n.to_string()),
            c.leader_snapshots
        )
    };
    for r in results {
        let _ = writeln!(
            o,
            "\n=== etcd {} === initial sync of {} keys (no emulation): {}",
            r.version,
            cfg.keys,
            secs(r.initial_sync)
        );
        let _ = writeln!(
            o,
            "\n| profile | lag p50 | lag p99 | lag max | probes (lost) | puts/s | link KiB/s | link drops loss/buffer | loadavg before -> after |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
        for p in &r.profiles {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} ({}) | {:.0} | {:.0} | {}/{} | {} |",
                p.profile.name,
                ms(p.lag.pct(50.0)),
                ms(p.lag.pct(99.0)),
                ms(p.lag.pct(100.0)),
                p.lag.samples.len(),
                p.lag.lost,
                p.puts_s,
                p.link_kib_s,
                p.drops.0,
                p.drops.1,
                p.load
            );
        }
        let _ = writeln!(
            o,
            "\n| profile | log catch-up ({} puts) | entries | MiB over link | snapshots learner / leader | snapshot catch-up ({} puts) | entries | MiB over link | snapshots learner / leader |",
            cfg.backlog, cfg.snap_backlog
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
        for p in &r.profiles {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.1} | {} | {} | {} | {:.1} | {} |",
                p.profile.name,
                secs(p.log.time),
                p.log.entries,
                mib(p.log.link_bytes),
                snaps(&p.log),
                secs(p.snap.time),
                p.snap.entries,
                mib(p.snap.link_bytes),
                snaps(&p.snap),
            );
        }
        let _ = writeln!(o, "\nverify at the end: {}", r.verify);
        let _ = writeln!(o, "replicator log: {}", r.log.display());
        for n in &r.notes {
            let _ = writeln!(o, "note: {n}");
        }
    }
    let _ = writeln!(
        o,
        "\nnotes: lag = a probe seen by a 5 ms poller on the standby − its put returned on the \
         primary (both clients are local to their city); catch-up = from restarting the replicator \
         (process start, reconnect over the link) until the backlog's last write is on the standby; \
         snapshots learner = leader snapshots the replicator saved since that restart, leader = \
         \"sent database snapshot\" in the primary's logs meanwhile; MiB over link = IP \
         bytes offered to the link both ways (retransmissions included); the link is emulated in \
         user space (loss, then rate, then delay, each direction; a {} KB send buffer when \
         rate-limited); everything shares this machine's {} core(s).",
        QUEUE_BYTES / 1000,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    o
}

pub fn bench_wan(root: &Path) -> Result<u8> {
    let cfg = Cfg::from_env()?;
    let bin = bench_binary(root, "wan")?;
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    println!(
        "bench wan: versions {} members {} keys {} secs {} rate {} backlogs {} and {} (snapshot count {}) writers {} delay {:?} loss {}% wan rate {}",
        cfg.versions
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(","),
        cfg.members,
        cfg.keys,
        cfg.secs,
        cfg.rate,
        cfg.backlog,
        cfg.snap_backlog,
        cfg.snapshot_count,
        cfg.conc,
        cfg.delay,
        cfg.loss_ppm as f64 / 10_000.0,
        cfg.wan_rate
            .map_or("baseline need / 4".into(), |r| format!("{r} B/s")),
    );
    install_signal_handler()?;
    let wan = Wan::create()?;
    let ra = wan.a.runtime()?;
    let rb = wan.b.runtime()?;
    let cx = Ctx {
        wan: &wan,
        ra: &ra,
        rb: &rb,
        bin: &bin,
        cfg: &cfg,
    };
    let mut results = Vec::new();
    for &v in &cfg.versions {
        match run_version(&cx, &out_dir, v) {
            Ok(r) => results.push(r),
            Err(e) => {
                println!("bench wan [{v}]: FAILED: {e:#}");
                results.push(VersionResult {
                    version: v.as_str().to_owned(),
                    notes: vec![format!("run failed: {e:#}")],
                    ..Default::default()
                });
            }
        }
    }
    drop(ra);
    drop(rb);
    drop(wan);
    let text = report(&cfg, &results);
    print!("{text}");
    let _ = std::fs::write(out_dir.join("wan-report.txt"), &text);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_snapshot_metric() {
        let m = "# HELP x\netcd_standby_snapshots_saved_total 2\netcd_standby_other 5\n";
        assert_eq!(snapshots_saved(m), Some(2));
        assert_eq!(snapshots_saved("nothing"), None);
    }
}
