//! `cargo xtask bench memory`: the replicator's memory next to a primary
//! etcd member's on the same data (issue 11 item 1, and the RSS half of
//! `bench replay` (d)).
//!
//! For each etcd version, and each `(keys, value bytes)` point, fresh
//! clusters (1-member primary and standby, 8 GiB quota) and a fresh
//! replicator: the keys are written to the primary, the run waits until the
//! standby holds the last one, lets the replicator save its model, then
//! reads `VmRSS` / `VmHWM` of the replicator, the primary member and the
//! standby member, the value store's and the saved model's sizes. The
//! headline point is 1M keys × 1 KiB (about 1 GiB live); the value-size
//! sweep shows whether the replicator's memory follows the values.
//!
//! Knobs: `ETCD_STANDBY_BENCH_POINTS` (`keys×bytes,...`, default
//! `1000000x1024,100000x256,100000x4096,100000x16384`),
//! `ETCD_STANDBY_BENCH_VERSIONS` (`3.4,3.5`), `ETCD_STANDBY_BENCH_CONC` (64),
//! `ETCD_STANDBY_BENCH_BIN` (a prebuilt `etcd-standby`, e.g. an older one to
//! compare). Prints numbers; nothing is asserted.
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_standby_client::pb::PutRequest;
use etcd_standby_client::{Client, ClientConfig};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion, free_port};

use crate::bench_learner::{http_get_json, rss_kib, rt};
use crate::bench_replay::{Proc, connect, get};

const KEY_PREFIX: &str = "/mem/key/";
const MARKER: &str = "/zzz/mem-marker";

/// One measurement point.
#[derive(Debug, Clone, Copy)]
struct Point {
    keys: u64,
    value_len: usize,
}

/// What one point measured (KiB unless said).
struct Measured {
    version: EtcdVersion,
    point: Point,
    load_secs: f64,
    sync_secs: f64,
    ours_rss: u64,
    ours_hwm: u64,
    primary_rss: u64,
    primary_hwm: u64,
    standby_rss: u64,
    store_bytes: u64,
    model_bytes: u64,
    loadavg: String,
}

fn points() -> Result<Vec<Point>> {
    let spec = std::env::var("ETCD_STANDBY_BENCH_POINTS")
        .unwrap_or_else(|_| "1000000x1024,100000x256,100000x4096,100000x16384".into());
    spec.split(',')
        .map(|p| {
            let (k, v) = p
                .trim()
                .split_once('x')
                .with_context(|| format!("ETCD_STANDBY_BENCH_POINTS: `{p}` is not KEYSxBYTES"))?;
            Ok(Point {
                keys: k.replace('_', "").parse().context("keys")?,
                value_len: v.replace('_', "").parse().context("value bytes")?,
            })
        })
        .collect()
}

async fn put_all(endpoints: Vec<String>, p: Point, conc: usize) -> Result<()> {
    let client = Client::connect(ClientConfig::new(endpoints)).await?;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= p.keys {
                    break;
                }
                // Distinct values (no deduplication by digest helps us).
                let mut v = format!("{i:016}").into_bytes();
                v.resize(p.value_len, b'v');
                let req = PutRequest {
                    key: format!("{KEY_PREFIX}{i:08}").into_bytes().into(),
                    value: v.into(),
                    ..Default::default()
                };
                while client.put(req.clone()).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let marker = PutRequest {
        key: MARKER.as_bytes().to_vec().into(),
        value: b"done".to_vec().into(),
        ..Default::default()
    };
    client.put(marker).await?;
    Ok(())
}

fn dir_bytes(dir: &Path, pred: &dyn Fn(&Path) -> bool) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| pred(p))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

fn run_point(bin: &Path, version: EtcdVersion, p: Point, conc: usize) -> Result<Measured> {
    let opts = ClusterOptions {
        quota_backend_bytes: Some(8 << 30),
        ..Default::default()
    };
    let primary = EtcdCluster::start(version, 1, opts.clone())?;
    let standby = EtcdCluster::start(version, 1, opts)?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("replicator");
    let peer_url = format!("http://127.0.0.1:{}", free_port()?);
    let admin = format!("127.0.0.1:{}", free_port()?);
    let mut ours = Proc::spawn(
        crate::bench_replay::run_cmd(
            bin,
            &primary.client_endpoints(),
            &peer_url,
            &data,
            &admin,
            &standby.client_endpoints(),
        ),
        "etcd-standby run",
        &dir.path().join("replicator.log"),
    )?;
    let rt = rt()?;
    let result = (|| -> Result<Measured> {
        let t = Instant::now();
        rt.block_on(put_all(primary.client_urls(), p, conc))?;
        let load_secs = t.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(3600);
        let sc = rt.block_on(connect(standby.client_urls()))?;
        while rt.block_on(get(&sc, MARKER)).is_none() {
            if Instant::now() > deadline {
                bail!("the standby did not get the marker within an hour");
            }
            ours.check()?;
            std::thread::sleep(Duration::from_millis(200));
        }
        let sync_secs = t.elapsed().as_secs_f64();
        // Let replay settle (model save, value-store commit).
        std::thread::sleep(Duration::from_secs(10));
        let _ = http_get_json(&admin, "/status");
        let pid = ours.pid();
        let ppid = primary.pid(0)?.context("primary pid")?;
        let spid = standby.pid(0)?.context("standby pid")?;
        let model_dir = data.join("replay");
        Ok(Measured {
            version,
            point: p,
            load_secs,
            sync_secs,
            ours_rss: rss_kib(pid, "VmRSS:"),
            ours_hwm: rss_kib(pid, "VmHWM:"),
            primary_rss: rss_kib(ppid, "VmRSS:"),
            primary_hwm: rss_kib(ppid, "VmHWM:"),
            standby_rss: rss_kib(spid, "VmRSS:"),
            store_bytes: dir_bytes(&model_dir, &|p| p.extension().is_some_and(|x| x == "redb")),
            model_bytes: dir_bytes(&model_dir, &|p| p.extension().is_some_and(|x| x == "bin")),
            loadavg: crate::bench_wan::loadavg(),
        })
    })();
    ours.terminate();
    result
}

fn mib(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}

/// Runs the memory bench; prints a markdown table.
pub fn bench_memory(root: &Path) -> Result<u8> {
    let bin = crate::bench_wan::bench_binary(root, "memory")?;
    let conc = std::env::var("ETCD_STANDBY_BENCH_CONC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64usize)
        .clamp(1, 1024);
    let versions = crate::bench_replay::versions_from_env()?;
    let mut rows = Vec::new();
    for &version in &versions {
        for p in points()? {
            eprintln!(
                "bench memory: etcd {version:?}, {} keys x {} B ...",
                p.keys, p.value_len
            );
            let m = run_point(&bin, version, p, conc)?;
            eprintln!(
                "  ours {} MiB (peak {}), primary {} MiB, load {:.0}s, synced {:.0}s",
                mib(m.ours_rss),
                mib(m.ours_hwm),
                mib(m.primary_rss),
                m.load_secs,
                m.sync_secs
            );
            rows.push(m);
        }
    }
    let mut out = String::from(
        "| etcd | keys | value B | live MiB | ours RSS MiB | ours peak MiB | primary RSS MiB | primary peak MiB | standby RSS MiB | ours / primary | value store MiB | saved model MiB | load s | synced s | loadavg |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for m in &rows {
        let live = m.point.keys as f64 * (m.point.value_len + KEY_PREFIX.len() + 8) as f64;
        out.push_str(&format!(
            "| {:?} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.0}% | {:.0} | {:.1} | {:.0} | {:.0} | {} |\n",
            m.version,
            m.point.keys,
            m.point.value_len,
            live / (1 << 20) as f64,
            mib(m.ours_rss),
            mib(m.ours_hwm),
            mib(m.primary_rss),
            mib(m.primary_hwm),
            mib(m.standby_rss),
            100.0 * m.ours_rss as f64 / m.primary_rss.max(1) as f64,
            m.store_bytes as f64 / (1 << 20) as f64,
            m.model_bytes as f64 / (1 << 20) as f64,
            m.load_secs,
            m.sync_secs,
            m.loadavg,
        ));
    }
    println!("{out}");
    Ok(0)
}
