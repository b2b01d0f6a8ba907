//! `cargo xtask bench learner`: catch-up time of our learner next to a real
//! etcd learner joining the same cluster, steady-state receive rate, RSS.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_standby_client::{Client, ClientConfig, pb::PutRequest};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion, free_port};

use crate::cmd;

pub(crate) fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Puts `n` keys of `value_len` bytes with `conc` requests in flight, or
/// (with `n == u64::MAX`) until `stop` is set. Returns puts done.
async fn load(
    endpoints: Vec<String>,
    n: u64,
    value_len: usize,
    conc: usize,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    let client = Client::connect(ClientConfig::new(endpoints)).await?;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, next, stop) = (client.clone(), next.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let value = bytes::Bytes::from(vec![b'v'; value_len]);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || stop.load(Ordering::Relaxed) {
                    break;
                }
                let req = PutRequest {
                    key: format!("/bench/key{i:08}").into(),
                    value: value.clone(),
                    ..Default::default()
                };
                if client.put(req).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(next.load(Ordering::Relaxed).min(n))
}

pub(crate) async fn raft_index(endpoints: &[String]) -> Result<u64> {
    let client = Client::connect(ClientConfig::new(endpoints.to_vec())).await?;
    let mut best = 0;
    for ep in endpoints {
        if let Ok(st) = client.status(ep).await {
            best = best.max(st.raft_index);
        }
    }
    Ok(best)
}

pub(crate) fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// The body of `GET path` from `addr` (HTTP/1.0, any status).
pub(crate) fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf.split_once("\r\n\r\n")?.1.to_owned())
}

pub(crate) fn http_get_json(addr: &str, path: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&http_get(addr, path)?).ok()
}

struct Ours {
    child: Child,
    admin: String,
}

impl Ours {
    fn commit(&self) -> u64 {
        http_get_json(&self.admin, "/status")
            .and_then(|v| v["node"]["commit_index"].as_u64())
            .unwrap_or(0)
    }
    fn member_id(&self) -> Option<String> {
        http_get_json(&self.admin, "/status")
            .and_then(|v| v["node"]["member_id"].as_str().map(str::to_owned))
            .filter(|s| !s.is_empty())
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_ours(bin: &Path, c: &EtcdCluster, dir: &Path) -> Result<Ours> {
    let peer = free_port()?;
    let admin = format!("127.0.0.1:{}", free_port()?);
    let child = Command::new(bin)
        .args(["run", "--source-endpoints", &c.client_endpoints()])
        .args(["--advertise-peer-url", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--data-dir",
            &dir.display().to_string(),
            "--admin-listen",
            &admin,
        ])
        .env("ETCD_STANDBY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.with_extension("log"))?)
        .spawn()
        .context("spawn etcd-standby")?;
    Ok(Ours { child, admin })
}

/// Waits until `progress()` ≥ target, sampling the RSS of `pid`.
fn wait_for(
    target: u64,
    pid: u32,
    timeout: Duration,
    mut progress: impl FnMut() -> u64,
) -> Result<(Duration, u64)> {
    let start = Instant::now();
    let mut peak = 0;
    loop {
        peak = peak.max(rss_kib(pid, "VmRSS:"));
        if progress() >= target {
            return Ok((start.elapsed(), peak));
        }
        if start.elapsed() > timeout {
            bail!(
                "no catch-up to {target} within {timeout:?} (at {})",
                progress()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real etcd learner for the same cluster.
pub(crate) fn real_learner(c: &EtcdCluster, dir: &Path) -> Result<(Child, String, String)> {
    let peer = format!("http://127.0.0.1:{}", free_port()?);
    let client = format!("http://127.0.0.1:{}", free_port()?);
    let out = c.etcdctl().run(&[
        "member",
        "add",
        "etcd-learner",
        "--learner",
        &format!("--peer-urls={peer}"),
    ])?;
    let initial = out
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .map(|s| s.trim_end_matches('"').to_owned())
        .context("etcdctl member add printed no ETCD_INITIAL_CLUSTER")?;
    let etcd = c.bin_dir().join("etcd");
    let child = Command::new(etcd)
        .args([
            "--name",
            "etcd-learner",
            "--data-dir",
            &dir.display().to_string(),
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--initial-cluster",
            &initial,
            "--initial-cluster-state",
            "existing",
        ])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.with_extension("log"))?)
        .spawn()
        .context("spawn the etcd learner")?;
    Ok((child, client, peer))
}

pub(crate) fn learner_index(c: &EtcdCluster, client_url: &str) -> u64 {
    let ctl = etcd_standby_testkit::Etcdctl::with_binary(
        c.etcdctl().binary().to_path_buf(),
        client_url.to_owned(),
    );
    ctl.run_json(&["endpoint", "status"])
        .ok()
        .and_then(|v| {
            v[0]["Status"]["raftAppliedIndex"]
                .as_u64()
                .or(v[0]["Status"]["raftIndex"].as_u64())
        })
        .unwrap_or(0)
}

pub(crate) fn remove_member_by_url(c: &EtcdCluster, url: &str) -> Result<()> {
    let v = c.etcdctl().run_json(&["member", "list"])?;
    for m in v["members"].as_array().into_iter().flatten() {
        let urls = m["peerURLs"].as_array().cloned().unwrap_or_default();
        if urls.iter().any(|u| u.as_str() == Some(url))
            && let Some(id) = m["ID"].as_u64()
        {
            c.etcdctl().run(&["member", "remove", &format!("{id:x}")])?;
        }
    }
    Ok(())
}

pub fn bench_learner(root: &Path) -> Result<u8> {
    let keys: u64 = std::env::var("ETCD_STANDBY_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    println!("bench learner: building etcd-standby (release)");
    cmd::run(cmd::cargo().args(["build", "--release", "--quiet", "-p", "etcd-standby"]))?;
    let bin = root.join("target/release/etcd-standby");
    let rt = rt()?;
    let mut rows = Vec::new();
    for members in [1usize, 3] {
        let c = EtcdCluster::start(EtcdVersion::V3_5, members, ClusterOptions::default())?;
        let tmp = tempfile::tempdir()?;
        let t = Instant::now();
        rt.block_on(load(
            c.client_urls(),
            keys,
            256,
            64,
            Arc::new(AtomicBool::new(false)),
        ))?;
        let preload = t.elapsed();
        let target = rt.block_on(raft_index(&c.client_urls()))?;
        println!(
            "bench learner: {members}-node source, {keys} keys × 256 B preloaded in {preload:.1?} (raft index {target})"
        );

        // Ours.
        let ours = start_ours(&bin, &c, &tmp.path().join("ours"))?;
        let pid = ours.child.id();
        let (ours_t, ours_rss) = wait_for(target, pid, Duration::from_secs(600), || ours.commit())?;
        // Steady state: the fastest load the source sustains, 10 s.
        let stop = Arc::new(AtomicBool::new(false));
        let before = (
            rt.block_on(raft_index(&c.client_urls()))?,
            ours.commit(),
            Instant::now(),
        );
        let h = rt.spawn(load(c.client_urls(), u64::MAX, 256, 64, stop.clone()));
        let mut steady_rss = 0;
        let mut max_lag = 0u64;
        while before.2.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(200));
            steady_rss = steady_rss.max(rss_kib(pid, "VmRSS:"));
            let leader = rt.block_on(raft_index(&c.client_urls()))?;
            max_lag = max_lag.max(leader.saturating_sub(ours.commit()));
        }
        stop.store(true, Ordering::Relaxed);
        let _ = rt.block_on(h);
        let secs = before.2.elapsed().as_secs_f64();
        let after_leader = rt.block_on(raft_index(&c.client_urls()))?;
        let _ = wait_for(after_leader, pid, Duration::from_secs(60), || ours.commit());
        let primary_rate = (after_leader - before.0) as f64 / secs;
        let ours_rate = (ours.commit() - before.1) as f64 / secs;
        let ours_id = ours.member_id();
        let ours_hwm = rss_kib(pid, "VmHWM:");
        drop(ours);
        if let Some(id) = ours_id {
            c.etcdctl().run(&["member", "remove", &id])?;
        }
        // The real etcd learner on the same cluster, now with a bit more log.
        let target2 = rt.block_on(raft_index(&c.client_urls()))?;
        std::thread::sleep(Duration::from_secs(1));
        let (mut child, client_url, peer_url) = real_learner(&c, &tmp.path().join("etcd"))?;
        let epid = child.id();
        let res = wait_for(target2, epid, Duration::from_secs(600), || {
            learner_index(&c, &client_url)
        });
        let etcd_hwm = rss_kib(epid, "VmHWM:");
        if let Ok(Some(st)) = child.try_wait() {
            println!("bench learner: the etcd learner exited early: {st}");
        }
        let _ = child.kill();
        let _ = child.wait();
        remove_member_by_url(&c, &peer_url)?;
        let (etcd_t, etcd_rss) = res?;
        let etcd_rss = etcd_rss.max(etcd_hwm);
        rows.push((
            members,
            target,
            ours_t,
            ours_rss.max(ours_hwm),
            steady_rss,
            etcd_t,
            etcd_rss,
            primary_rate,
            ours_rate,
            max_lag,
        ));
    }
    println!();
    println!(
        "{:<8} {:>10} {:>12} {:>12} {:>12} {:>12} {:>14} {:>14} {:>10}",
        "source",
        "raft idx",
        "ours catch",
        "etcd catch",
        "ours RSS",
        "etcd RSS",
        "primary ent/s",
        "ours ent/s",
        "max lag"
    );
    for (m, target, ot, orss, srss, et, erss, pr, or, lag) in rows {
        println!(
            "{:<8} {:>10} {:>11.2}s {:>11.2}s {:>9} MiB {:>9} MiB {:>14.0} {:>14.0} {:>10}",
            format!("{m}-node"),
            target,
            ot.as_secs_f64(),
            et.as_secs_f64(),
            orss.max(srss) / 1024,
            erss / 1024,
            pr,
            or,
            lag
        );
    }
    println!(
        "\nours catch = our learner from process start to commit ≥ the source's raft index; etcd catch = a real etcd 3.5.1 learner, same cluster, same run (its applied index)."
    );
    Ok(0)
}
