//! `cargo xtask bench primary`: what a learner costs the primary, on real
//! etcd, per version, in one run:
//!
//! * (a) no learner;
//! * (b) a native etcd learner (`member add --learner` + an etcd process);
//! * (c) etcd-standby as the learner, replaying onto a 1-member standby;
//! * (a') no learner again, to show the drift of the machine and the data
//!   over the run.
//!
//! (a), (b) and (c) are repeated `ROUNDS` times in turn, so a drift of the
//! machine's load or of the growing data moves every row alike; the report
//! gives each measurement and, per row, the median over the rounds.
//!
//! Each: the primary's maximum write throughput (`CONC` writers, `SECS`
//! seconds), then put latency p50/p99 at a fixed moderate rate (`RATE`, by
//! default a quarter of the maximum measured in (a), the same for every
//! row), and the primary's CPU time per 1000 puts at that rate. Everything
//! runs on 127.0.0.1.
//!
//! Knobs (environment): `ETCD_STANDBY_BENCH_VERSIONS` (`3.4,3.5`),
//! `ETCD_STANDBY_BENCH_MEMBERS` (primary size, 1),
//! `ETCD_STANDBY_BENCH_SECS` (per measurement, 15),
//! `ETCD_STANDBY_BENCH_ROUNDS` (rounds of (a), (b), (c), 3),
//! `ETCD_STANDBY_BENCH_RATE` (puts/s of the latency run; a quarter of (a)'s
//! maximum when unset), `ETCD_STANDBY_BENCH_CONC` (writers, 64),
//! `ETCD_STANDBY_BENCH_BIN` (a prebuilt `etcd-standby`).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_standby_client::Client;
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion, free_port};
use tokio::runtime::Runtime;

use crate::bench_learner::{http_get_json, learner_index, real_learner, remove_member_by_url, rt};
use crate::bench_replay::{
    Lags, Proc, checkpoint, cluster_index, connect, env_u64, load_puts, ms, run_cmd, timed_load,
    versions_from_env,
};
use crate::bench_wan::{bench_binary, loadavg};

struct Cfg {
    versions: Vec<EtcdVersion>,
    members: usize,
    secs: u64,
    rate: Option<f64>,
    conc: usize,
    rounds: u64,
}

impl Cfg {
    fn from_env() -> Result<Cfg> {
        Ok(Cfg {
            versions: versions_from_env()?,
            members: env_u64("ETCD_STANDBY_BENCH_MEMBERS", 1)?.clamp(1, 5) as usize,
            secs: env_u64("ETCD_STANDBY_BENCH_SECS", 15)?.max(1),
            rate: match std::env::var("ETCD_STANDBY_BENCH_RATE") {
                Ok(_) => Some(env_u64("ETCD_STANDBY_BENCH_RATE", 0)?.max(1) as f64),
                Err(_) => None,
            },
            conc: env_u64("ETCD_STANDBY_BENCH_CONC", 64)?.clamp(1, 1024) as usize,
            rounds: env_u64("ETCD_STANDBY_BENCH_ROUNDS", 3)?.clamp(1, 20),
        })
    }
}

/// Puts unique keys at `rate` puts/s for `dur` with up to `conc` in flight;
/// returns each put's latency (from its issue to its answer) and the
/// number of failed puts.
async fn paced(
    client: Client,
    seq: Arc<AtomicU64>,
    conc: usize,
    rate: f64,
    dur: Duration,
) -> Result<(Vec<Duration>, u64)> {
    let r = load_puts(client, seq, conc, Some(rate), dur, "/bench/primary/").await?;
    Ok((r.latencies, r.errors))
}

/// User + system CPU seconds of the processes `pids` so far.
fn cpu_secs(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|s| {
            // Fields after the command name: state is the 3rd field of the
            // line, utime the 14th, stime the 15th.
            let rest: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks: u64 =
                rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        })
        .sum()
}

struct Row {
    label: &'static str,
    /// 1-based round (0 for (a')).
    round: u64,
    max_puts_s: f64,
    rate: f64,
    lat: Lags,
    errors: u64,
    cpu_ms_per_kput: f64,
    load: String,
}

struct Bench<'a> {
    rt: &'a Runtime,
    cfg: &'a Cfg,
    pc: Client,
    seq: Arc<AtomicU64>,
    pids: Vec<u32>,
}

impl Bench<'_> {
    fn measure(&self, label: &'static str, round: u64, rate: Option<f64>) -> Result<Row> {
        let load_before = loadavg();
        let dur = Duration::from_secs(self.cfg.secs);
        let n = self.rt.block_on(timed_load(
            self.pc.clone(),
            self.seq.clone(),
            self.cfg.conc,
            None,
            dur,
        ))?;
        let max_puts_s = n as f64 / dur.as_secs_f64();
        let rate = rate.unwrap_or((max_puts_s / 4.0).max(1.0));
        let cpu0 = cpu_secs(&self.pids);
        let (samples, errors) = self.rt.block_on(paced(
            self.pc.clone(),
            self.seq.clone(),
            self.cfg.conc,
            rate,
            dur,
        ))?;
        let cpu = cpu_secs(&self.pids) - cpu0;
        let cpu_ms_per_kput = cpu * 1e3 / (samples.len().max(1) as f64 / 1000.0);
        let row = Row {
            label,
            round,
            max_puts_s,
            rate,
            lat: Lags { samples, lost: 0 },
            errors,
            cpu_ms_per_kput,
            load: format!("{load_before} -> {}", loadavg()),
        };
        println!(
            "bench primary: {label} (round {round}): max {:.0} puts/s; at {:.0} puts/s p50 {} p99 {} ({} errors); primary CPU {:.0} ms per 1000 puts; load {}",
            row.max_puts_s,
            row.rate,
            ms(row.lat.pct(50.0)),
            ms(row.lat.pct(99.0)),
            row.errors,
            row.cpu_ms_per_kput,
            row.load
        );
        Ok(row)
    }
}

/// Waits until `progress()` reaches `target`.
fn wait_until(
    what: &str,
    target: u64,
    timeout: Duration,
    mut progress: impl FnMut() -> Result<u64>,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let at = progress()?;
        if at >= target {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("{what}: not at {target} within {timeout:?} (at {at})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_version(
    rt: &Runtime,
    bin: &Path,
    out_dir: &Path,
    v: EtcdVersion,
    cfg: &Cfg,
) -> Result<Vec<Row>> {
    let primary = EtcdCluster::start(v, cfg.members, ClusterOptions::default())?;
    let pids: Vec<u32> = (0..primary.len())
        .filter_map(|i| primary.pid(i).ok().flatten())
        .collect();
    let b = Bench {
        rt,
        cfg,
        pc: rt.block_on(connect(primary.client_urls()))?,
        seq: Arc::new(AtomicU64::new(0)),
        pids,
    };
    let tmp = tempfile::tempdir()?;
    let mut rows = Vec::new();
    println!(
        "bench primary [{v}]: {}-member primary on 127.0.0.1",
        cfg.members
    );

    let mut rate = cfg.rate;
    for round in 1..=cfg.rounds {
        // (a) no learner.
        let a = b.measure("(a) no learner", round, rate)?;
        let r = *rate.get_or_insert(a.rate);
        rows.push(a);
        rows.push(native_learner_row(
            &b,
            &primary,
            &tmp.path().join(format!("etcd-{round}")),
            round,
            r,
        )?);
        rows.push(our_row(
            &b,
            bin,
            out_dir,
            &primary,
            &tmp.path().join(format!("ours-{round}")),
            round,
            r,
        )?);
    }
    let rate = rate.unwrap_or(1.0);

    // (a') no learner again.
    rows.push(b.measure("(a') no learner again", 0, Some(rate))?);
    Ok(rows)
}

/// (b): a native etcd learner added, caught up, measured, removed.
fn native_learner_row(
    b: &Bench<'_>,
    primary: &EtcdCluster,
    dir: &Path,
    round: u64,
    rate: f64,
) -> Result<Row> {
    let (child, client_url, peer_url) = real_learner(primary, dir)?;
    let mut learner = KillOnDrop(child);
    let target = b.rt.block_on(cluster_index(&b.pc));
    let caught = wait_until("the etcd learner", target, Duration::from_secs(300), || {
        if let Some(st) = learner.0.try_wait()? {
            bail!("the etcd learner exited: {st}");
        }
        Ok(learner_index(primary, &client_url))
    })?;
    println!("bench primary: etcd learner caught up in {caught:.1?}");
    let row = b.measure("(b) etcd learner", round, Some(rate))?;
    drop(learner);
    remove_member_by_url(primary, &peer_url)?;
    Ok(row)
}

/// (c): etcd-standby joined (fresh data dir `dir`), caught up onto a fresh
/// 1-member standby of the primary's version, measured, stopped and
/// removed.
fn our_row(
    b: &Bench<'_>,
    bin: &Path,
    out_dir: &Path,
    primary: &EtcdCluster,
    dir: &Path,
    round: u64,
    rate: f64,
) -> Result<Row> {
    let v = primary.version();
    let standby = EtcdCluster::start(v, 1, ClusterOptions::default())?;
    let admin = format!("127.0.0.1:{}", free_port()?);
    let log = out_dir.join(format!(
        "primary-{}-etcd-standby-{round}.log",
        v.as_str().replace('.', "_")
    ));
    let _ = std::fs::remove_file(&log);
    let mut ours = Proc::spawn(
        run_cmd(
            bin,
            &primary.client_endpoints(),
            &format!("http://127.0.0.1:{}", free_port()?),
            dir,
            &admin,
            &standby.client_endpoints(),
        ),
        "etcd-standby run",
        &log,
    )?;
    let target = b.rt.block_on(cluster_index(&b.pc));
    let caught = wait_until("etcd-standby", target, Duration::from_secs(300), || {
        ours.check()?;
        Ok(checkpoint(&admin))
    })?;
    println!("bench primary: etcd-standby caught up (standby checkpoint) in {caught:.1?}");
    let row = b.measure("(c) etcd-standby", round, Some(rate))?;
    ours.check()?;
    let id = http_get_json(&admin, "/status")
        .and_then(|s| s["node"]["member_id"].as_str().map(str::to_owned))
        .filter(|s| !s.is_empty())
        .context("etcd-standby /status has no member_id")?;
    ours.terminate();
    primary
        .etcdctl()
        .run(&["member", "remove", &id])
        .context("remove etcd-standby from the primary")?;
    Ok(row)
}

/// The native learner's process, SIGKILLed (by PID) and reaped on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn report(cfg: &Cfg, results: &[(EtcdVersion, Result<Vec<Row>>)]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nbench primary — {}-member primary on 127.0.0.1, {} writers, {} s per measurement, values 256 B",
        cfg.members, cfg.conc, cfg.secs
    );
    let _ = writeln!(
        o,
        "| etcd | learner | round | max puts/s | vs (a) | fixed rate puts/s | put p50 | put p99 | put max | errors | primary CPU ms / 1000 puts | loadavg before -> after |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (v, rows) in results {
        match rows {
            Ok(rows) => {
                let base = rows.first().map_or(0.0, |r| r.max_puts_s);
                for r in rows {
                    let _ = writeln!(
                        o,
                        "| {v} | {} | {} | {:.0} | {:+.1}% | {:.0} | {} | {} | {} | {} | {:.0} | {} |",
                        r.label,
                        r.round,
                        r.max_puts_s,
                        if base > 0.0 {
                            100.0 * (r.max_puts_s / base - 1.0)
                        } else {
                            0.0
                        },
                        r.rate,
                        ms_frac(r.lat.pct(50.0)),
                        ms_frac(r.lat.pct(99.0)),
                        ms_frac(r.lat.pct(100.0)),
                        r.errors,
                        r.cpu_ms_per_kput,
                        r.load
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(o, "| {v} | FAILED: {e:#} | | | | | | | | | | |");
            }
        }
    }
    let _ = writeln!(
        o,
        "\nmedians over the {} round(s), each row measured in turn:\n| etcd | learner | max puts/s | vs (a) | put p50 | put p99 | primary CPU ms / 1000 puts |\n|---|---|---|---|---|---|---|",
        cfg.rounds
    );
    for (v, rows) in results {
        let Ok(rows) = rows else { continue };
        let med = |label: &str, f: &dyn Fn(&Row) -> f64| {
            let mut xs: Vec<f64> = rows.iter().filter(|r| r.label == label).map(f).collect();
            xs.sort_by(f64::total_cmp);
            xs.get(xs.len() / 2).copied()
        };
        let ms_of = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        let base = med("(a) no learner", &|r| r.max_puts_s).unwrap_or(0.0);
        for label in ["(a) no learner", "(b) etcd learner", "(c) etcd-standby"] {
            let (Some(max), Some(p50), Some(p99), Some(cpu)) = (
                med(label, &|r| r.max_puts_s),
                med(label, &|r| ms_of(r.lat.pct(50.0))),
                med(label, &|r| ms_of(r.lat.pct(99.0))),
                med(label, &|r| r.cpu_ms_per_kput),
            ) else {
                continue;
            };
            let _ = writeln!(
                o,
                "| {v} | {label} | {max:.0} | {:+.1}% | {p50:.2} ms | {p99:.2} ms | {cpu:.0} |",
                if base > 0.0 {
                    100.0 * (max / base - 1.0)
                } else {
                    0.0
                }
            );
        }
    }
    let _ = writeln!(
        o,
        "\nnotes: the load generator, the primary, the learner (and in (c) the standby) share this \
         machine's {} core(s); latency is from a put's issue to its answer at the fixed rate; CPU = \
         the primary members' user+system time during the fixed-rate run.",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    o
}

fn ms_frac(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
}

pub fn bench_primary(root: &Path) -> Result<u8> {
    let cfg = Cfg::from_env()?;
    let bin = bench_binary(root, "primary")?;
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let rt = rt()?;
    let mut results = Vec::new();
    for &v in &cfg.versions {
        let r = run_version(&rt, &bin, &out_dir, v, &cfg);
        if let Err(e) = &r {
            println!("bench primary [{v}]: FAILED: {e:#}");
        }
        results.push((v, r));
    }
    let text = report(&cfg, &results);
    print!("{text}");
    let _ = std::fs::write(out_dir.join("primary-report.txt"), &text);
    Ok(0)
}
