//! `cargo xtask bench <name>`: benchmarks that print numbers (never asserted
//! in tests).

use anyhow::{Context, Result, bail};
use etcd_standby_proto::{Message, etcdserverpb, raftpb};
use etcd_standby_wal::WalWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cmd, etcd};

/// Benchmarks known to xtask.
#[derive(Debug, Clone, Copy)]
pub enum Bench {
    /// WAL reading/decoding throughput against `cat`.
    Wal,
    /// Learner catch-up and receive rate next to a real etcd learner.
    Learner,
    /// Replication to a standby next to `etcdctl make-mirror`: initial
    /// sync, sustained load with lag percentiles, catch-up, RSS.
    Replay,
    /// Replication across an emulated WAN link (delay, loss, rate) between
    /// two network namespaces: lag, backlog catch-up, snapshot fallback.
    Wan,
    /// The primary's write throughput and latency with no learner, a
    /// native etcd learner, and etcd-standby.
    Primary,
    /// The replicator's RSS next to a primary member's on the same data
    /// (1M keys x 1 KiB, and a value-size sweep).
    Memory,
    /// Revision-preserving replay's catch-up rate next to the batched mode.
    Revisions,
}

impl Bench {
    pub const ALL: [Bench; 7] = [
        Bench::Wal,
        Bench::Learner,
        Bench::Replay,
        Bench::Wan,
        Bench::Primary,
        Bench::Memory,
        Bench::Revisions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bench::Wal => "wal",
            Bench::Learner => "learner",
            Bench::Replay => "replay",
            Bench::Wan => "wan",
            Bench::Primary => "primary",
            Bench::Memory => "memory",
            Bench::Revisions => "revisions",
        }
    }

    pub fn parse(name: &str) -> Result<Bench> {
        match Self::ALL.into_iter().find(|b| b.name() == name) {
            Some(b) => Ok(b),
            None => bail!("unknown bench `{name}`; available: {}", names()),
        }
    }
}

pub fn names() -> String {
    Bench::ALL.map(Bench::name).join(", ")
}

/// Runs a bench; returns the process exit code.
pub fn run(bench: Bench) -> Result<u8> {
    let root = cmd::workspace_root();
    let _provisioned = etcd::install(&root)?;
    match bench {
        Bench::Wal => bench_wal(&root),
        Bench::Learner => crate::bench_learner::bench_learner(&root),
        Bench::Replay => crate::bench_replay::bench_replay(&root),
        Bench::Wan => crate::bench_wan::bench_wan(&root),
        Bench::Primary => crate::bench_primary::bench_primary(&root),
        Bench::Memory => crate::bench_memory::bench_memory(&root),
        Bench::Revisions => crate::bench_revisions::bench_revisions(&root),
    }
}

/// Writes an etcd-format WAL of about `mb` MB with `value_len`-byte puts
/// shaped like real etcd entries (InternalRaftRequest with header and put),
/// a hard state after every batch of 16, segments cut at 64,000,000 bytes.
fn generate_wal(dir: &Path, mb: u64, value_len: usize) -> Result<()> {
    let marker = dir.join(".complete");
    if marker.exists() {
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let md = etcdserverpb::Metadata {
        node_id: 0x7dac200b997573ba,
        cluster_id: 0xb684467d6d3950c5,
    };
    let mut w = WalWriter::create(dir, &md).context("create bench WAL")?;
    let target = mb * 1_000_000;
    let mut written = 0u64;
    let mut index = 0u64;
    let mut batch = Vec::with_capacity(16);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    while written < target {
        batch.clear();
        for _ in 0..16 {
            index += 1;
            let value: Vec<u8> = (0..value_len)
                .map(|i| alphabet[(i * 7 + index as usize) % alphabet.len()])
                .collect();
            let req = etcdserverpb::InternalRaftRequest {
                header: Some(etcdserverpb::RequestHeader {
                    id: 0x73ba_0000_0000_0000 | index,
                    ..Default::default()
                }),
                put: Some(etcdserverpb::PutRequest {
                    key: format!("/registry/bench/ns-{}/obj-{index:010}", index % 97).into(),
                    value: value.into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let data = req.encode_to_vec();
            written += data.len() as u64 + 40;
            batch.push(raftpb::Entry {
                r#type: 0,
                term: 2,
                index,
                data: Some(data.into()),
            });
        }
        let hs = raftpb::HardState {
            term: 2,
            vote: md.node_id,
            commit: index,
        };
        w.save(Some(&hs), &batch)?;
        if index.is_multiple_of(4096) {
            w.sync()?;
        }
    }
    w.sync()?;
    std::fs::write(marker, b"")?;
    Ok(())
}

fn wal_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(etcd_standby_wal::names::parse_segment_name)
                .is_some()
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Runs a command with stdout to /dev/null; returns (wall time, peak RSS in
/// KiB sampled from /proc). The time is taken when `wait` returns, not at a
/// polling step, so runs of a few tens of milliseconds are measured exactly;
/// RSS is sampled on a side thread.
fn timed(mut c: Command) -> Result<(Duration, u64)> {
    c.stdout(Stdio::null());
    let start = Instant::now();
    let mut child = c.spawn().with_context(|| cmd::describe(&c))?;
    let status_path = format!("/proc/{}/status", child.id());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(s) = std::fs::read_to_string(&status_path) {
                    for line in s.lines() {
                        if let Some(v) = line.strip_prefix("VmHWM:") {
                            let kb: u64 =
                                v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                            peak = peak.max(kb);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        })
    };
    let st = child.wait()?;
    let took = start.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    if !st.success() && st.code() != Some(1) {
        bail!("{} failed: {st}", cmd::describe(&c));
    }
    Ok((took, peak))
}

fn best_of(n: usize, mut f: impl FnMut() -> Result<(Duration, u64)>) -> Result<(Duration, u64)> {
    let mut best = (Duration::MAX, 0u64);
    for _ in 0..n {
        let (d, rss) = f()?;
        best.0 = best.0.min(d);
        best.1 = best.1.max(rss);
    }
    Ok(best)
}

/// `/proc/loadavg`'s first three fields (1, 5, 15 minutes), or `?` off Linux.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// One measured command: its best time, peak RSS and the machine load just
/// before and just after its runs (other work on the machine skews numbers).
struct Measured {
    time: Duration,
    rss_kib: u64,
    load_before: String,
    load_after: String,
}

fn measure(n: usize, f: impl FnMut() -> Result<(Duration, u64)>) -> Result<Measured> {
    let load_before = loadavg();
    let (time, rss_kib) = best_of(n, f)?;
    Ok(Measured {
        time,
        rss_kib,
        load_before,
        load_after: loadavg(),
    })
}

/// The WALs measured: (name, size in MB, value length). Both hold puts
/// shaped like etcd's; small values stress per-record work, large values
/// the byte path (CRC, copies).
fn wal_shapes(mb: u64) -> [(&'static str, u64, usize); 2] {
    [("small-value", mb, 128), ("large-value", mb, 16 * 1024)]
}

fn bench_wal(root: &Path) -> Result<u8> {
    let mb: u64 = std::env::var("ETCD_STANDBY_BENCH_WAL_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    // A prebuilt binary (e.g. the one of an older commit, to compare), else
    // a release build of this checkout.
    let bin = match std::env::var_os("ETCD_STANDBY_BENCH_BIN") {
        Some(b) => PathBuf::from(b),
        None => {
            println!("bench wal: building etcd-standby (release)");
            cmd::run(cmd::cargo().args(["build", "--release", "--quiet", "-p", "etcd-standby"]))?;
            root.join("target/release/etcd-standby")
        }
    };
    println!("bench wal: binary {}", bin.display());
    let base = root.join("target/bench");
    for (name, size, value_len) in wal_shapes(mb) {
        let dir = base.join(format!("wal-{size}mb-v{value_len}"));
        let t = Instant::now();
        generate_wal(&dir, size, value_len)?;
        println!(
            "bench wal: {name} WAL of {size} MB ready in {:?} ({})",
            t.elapsed(),
            dir.display()
        );
    }
    println!();
    println!(
        "{:<12} {:>8} {:<16} {:>8} {:>8} {:>7} {:>9}  load before -> after",
        "WAL", "MB", "command", "seconds", "MB/s", "of cat", "peak RSS"
    );
    for (name, size, value_len) in wal_shapes(mb) {
        let dir = base.join(format!("wal-{size}mb-v{value_len}"));
        let files = wal_files(&dir)?;
        let bytes: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum();
        let mb_total = bytes as f64 / 1e6;
        let cat = || {
            let mut c = Command::new("cat");
            c.args(&files);
            timed(c)
        };
        cat()?; // warm the page cache
        let cat_m = measure(5, cat)?;
        let verify = measure(5, || {
            let mut c = Command::new(&bin);
            c.args(["wal", "verify"]).arg(&dir);
            timed(c)
        })?;
        let dump = measure(3, || {
            let mut c = Command::new(&bin);
            c.args(["wal", "dump", "--json"]).arg(&dir);
            timed(c)
        })?;
        let row = |cmd: &str, m: &Measured| {
            let secs = m.time.as_secs_f64();
            println!(
                "{:<12} {:>8.0} {:<16} {:>8.3} {:>8.0} {:>6.0}% {:>5} MiB  {} -> {}",
                name,
                mb_total,
                cmd,
                secs,
                mb_total / secs,
                100.0 * cat_m.time.as_secs_f64() / secs,
                m.rss_kib / 1024,
                m.load_before,
                m.load_after,
            );
        };
        row("cat", &cat_m);
        row("wal verify", &verify);
        row("wal dump --json", &dump);
    }
    println!();
    println!(
        "best of 5 (cat, verify) / 3 (dump) runs, page cache warm, output to /dev/null; \
         targets: verify >= 50% of cat, dump --json >= 25% of cat"
    );
    Ok(0)
}
