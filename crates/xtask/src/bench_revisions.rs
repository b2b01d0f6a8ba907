//! `cargo xtask bench revisions`: the catch-up rate of revision-preserving
//! replay (`run --preserve-revisions`, one standby txn per primary
//! revision) next to the default batched mode, in one run on real etcd.
//!
//! One learner data dir, one primary, two standbys (one seeded by
//! `etcd-standby seed`, one fresh). With the replicator stopped, a backlog
//! of `BACKLOG` single-put raft entries is written; then the time until
//! the standby has everything is measured for:
//! 1. revision-preserving, one txn in flight (the default);
//! 2. the batched mode, replaying the same local log from index 1 to the
//!    fresh standby (the whole log: the backlog plus the few entries
//!    before it);
//! 3. revision-preserving with 8 txns in flight, after a second backlog.
//!
//! After 1 and 3 the standby's revision is compared with the primary's.
//! Knobs: `ETCD_STANDBY_BENCH_BACKLOG` (20000), `ETCD_STANDBY_BENCH_VERSIONS`
//! (`3.4,3.5`), `ETCD_STANDBY_BENCH_CONC` (writers, 64). Prints numbers;
//! nothing is asserted in tests.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_standby_client::Client;
use etcd_standby_client::pb::RangeRequest;
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion, free_port};
use tokio::runtime::Runtime;

use crate::bench_learner::rt;
use crate::bench_replay::{Proc, cluster_index, connect, put_keys, replay_status, run_cmd};
use crate::cmd;

const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(900);

/// One measured catch-up.
struct CatchUp {
    what: &'static str,
    entries: u64,
    took: Duration,
    txns_resent: u64,
    revisions_equal: Option<bool>,
}

/// The replicator's confirmed index (everything up to it is on the standby).
fn confirmed(admin: &str) -> u64 {
    replay_status(admin)
        .and_then(|v| v["replay"]["confirmed_index"].as_u64())
        .unwrap_or(0)
}

fn replay_field(admin: &str, f: &str) -> serde_json::Value {
    replay_status(admin).map_or(serde_json::Value::Null, |v| v["replay"][f].clone())
}

/// Waits until the replicator has everything up to `target`.
fn wait_confirmed(admin: &str, target: u64, p: &mut Proc, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    while confirmed(admin) < target {
        p.check()?;
        if matches!(
            replay_field(admin, "state").as_str(),
            Some("halted" | "fenced")
        ) {
            bail!("replay stopped: {}", replay_field(admin, "error"));
        }
        if start.elapsed() > timeout {
            bail!("not caught up to {target} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(start.elapsed())
}

async fn header_revision(c: &Client) -> Result<i64> {
    let r = c
        .range(RangeRequest {
            key: b"\0".to_vec().into(),
            range_end: b"\0".to_vec().into(),
            count_only: true,
            ..Default::default()
        })
        .await?;
    Ok(r.header.map_or(0, |h| h.revision))
}

fn revisions_equal(rt: &Runtime, a: &Client, b: &Client) -> Option<bool> {
    let ra = rt.block_on(header_revision(a)).ok()?;
    let rb = rt.block_on(header_revision(b)).ok()?;
    Some(ra == rb)
}

fn run_version(
    rt: &Runtime,
    bin: &Path,
    out: &Path,
    v: EtcdVersion,
    backlog: u64,
    conc: usize,
) -> Result<Vec<CatchUp>> {
    let say = |s: &str| println!("bench revisions [{v}]: {s}");
    let tag = v.as_str().replace('.', "_");
    let log = out.join(format!("revisions-{tag}-etcd-standby.log"));
    let _ = std::fs::remove_file(&log);
    let primary = EtcdCluster::start(v, 1, ClusterOptions::default())?;
    let mut seeded = EtcdCluster::start(v, 1, ClusterOptions::default())?;
    let fresh = EtcdCluster::start(v, 1, ClusterOptions::default())?;
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("learner");
    let peer = format!("http://127.0.0.1:{}", free_port()?);
    let admin = format!("127.0.0.1:{}", free_port()?);
    let pc = rt.block_on(connect(primary.client_urls()))?;
    let seeded_endpoints = seeded.client_endpoints();
    let preserve = |in_flight: usize| {
        let mut c = run_cmd(
            bin,
            &primary.client_endpoints(),
            &peer,
            &data,
            &admin,
            &seeded_endpoints,
        );
        c.arg("--preserve-revisions")
            .env("ETCD_STANDBY_STANDBY_TXNS_IN_FLIGHT", in_flight.to_string());
        c
    };

    // Join, seed, catch up.
    let mut r = Proc::spawn(preserve(1), "etcd-standby run --preserve-revisions", &log)?;
    let start = Instant::now();
    while replay_field(&admin, "state").as_str() != Some("waiting_for_seed") {
        r.check()?;
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the replicator never waited for a seed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let tool = match v {
        EtcdVersion::V3_4 => seeded.bin_dir().join("etcdctl"),
        _ => seeded.bin_dir().join("etcdutl"),
    };
    let seed_out = tmp.path().join("seed");
    let mut seed = Command::new(bin);
    seed.args(["seed", "--source-endpoints", &primary.client_endpoints()])
        .arg("--out")
        .arg(&seed_out)
        .arg("--restore-tool")
        .arg(&tool)
        .arg("--data-dir")
        .arg(&data)
        .args(["--standby-member", &seeded.initial_cluster()]);
    cmd::run(&mut seed).context("etcd-standby seed")?;
    seeded.stop_member(0)?;
    let dir = seeded.data_dir(0)?;
    std::fs::remove_dir_all(&dir)?;
    std::fs::rename(seed_out.join(seeded.member_name(0)?), &dir)?;
    seeded.restart_members(&[0])?;
    let target = rt.block_on(cluster_index(&pc));
    wait_confirmed(&admin, target, &mut r, CATCH_UP_TIMEOUT)?;
    say(&format!("seeded and caught up at raft index {target}"));
    let sc = rt.block_on(connect(seeded.client_urls()))?;

    let mut out_rows = Vec::new();
    // 1. Revision-preserving, one in flight.
    r.terminate();
    let before = rt.block_on(cluster_index(&pc));
    let errs = rt.block_on(put_keys(pc.clone(), 0, backlog, backlog, conc, "p1".into()))?;
    let target = rt.block_on(cluster_index(&pc));
    say(&format!(
        "backlog of {} entries written ({errs} retries)",
        target - before
    ));
    let mut r = Proc::spawn(preserve(1), "etcd-standby run --preserve-revisions", &log)?;
    let took = wait_confirmed(&admin, target, &mut r, CATCH_UP_TIMEOUT)?;
    let resent = replay_field(&admin, "sink")["txns_resent"]
        .as_u64()
        .unwrap_or(0);
    out_rows.push(CatchUp {
        what: "revision-preserving, 1 txn in flight",
        entries: target - before,
        took,
        txns_resent: resent,
        revisions_equal: revisions_equal(rt, &pc, &sc),
    });
    say(&format!(
        "preserving, 1 in flight: {:.2} s",
        took.as_secs_f64()
    ));
    r.terminate();

    // 2. Batched, the same local log from index 1, to the fresh standby.
    let mut b = run_cmd(
        bin,
        &primary.client_endpoints(),
        &peer,
        &data,
        &admin,
        &fresh.client_endpoints(),
    );
    b.env("ETCD_STANDBY_STANDBY_TXNS_IN_FLIGHT", "1");
    let mut r = Proc::spawn(b, "etcd-standby run (batched)", &log)?;
    let took = wait_confirmed(&admin, target, &mut r, CATCH_UP_TIMEOUT)?;
    out_rows.push(CatchUp {
        what: "batched (default mode), whole log",
        entries: target,
        took,
        txns_resent: replay_field(&admin, "sink")["txns_resent"]
            .as_u64()
            .unwrap_or(0),
        revisions_equal: None,
    });
    say(&format!("batched: {:.2} s", took.as_secs_f64()));
    r.terminate();

    // 3. Revision-preserving, 8 in flight, after a second backlog.
    let before = rt.block_on(cluster_index(&pc));
    rt.block_on(put_keys(
        pc.clone(),
        backlog,
        backlog,
        backlog * 2,
        conc,
        "p8".into(),
    ))?;
    let target = rt.block_on(cluster_index(&pc));
    let mut r = Proc::spawn(preserve(8), "etcd-standby run --preserve-revisions", &log)?;
    let took = wait_confirmed(&admin, target, &mut r, CATCH_UP_TIMEOUT)?;
    out_rows.push(CatchUp {
        what: "revision-preserving, 8 txns in flight",
        entries: target - before,
        took,
        txns_resent: replay_field(&admin, "sink")["txns_resent"]
            .as_u64()
            .unwrap_or(0),
        revisions_equal: revisions_equal(rt, &pc, &sc),
    });
    say(&format!(
        "preserving, 8 in flight: {:.2} s",
        took.as_secs_f64()
    ));
    r.terminate();
    Ok(out_rows)
}

/// Runs the bench for every version asked for.
pub fn bench_revisions(root: &Path) -> Result<u8> {
    let backlog = std::env::var("ETCD_STANDBY_BENCH_BACKLOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000u64);
    let conc = std::env::var("ETCD_STANDBY_BENCH_CONC")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64usize);
    let versions: Vec<EtcdVersion> = std::env::var("ETCD_STANDBY_BENCH_VERSIONS")
        .unwrap_or_else(|_| "3.4,3.5".into())
        .split(',')
        .filter_map(|s| match s.trim() {
            "3.4" => Some(EtcdVersion::V3_4),
            "3.5" => Some(EtcdVersion::V3_5),
            _ => None,
        })
        .collect();
    println!("bench revisions: building etcd-standby (release)");
    cmd::run(cmd::cargo().args(["build", "--release", "--quiet", "-p", "etcd-standby"]))?;
    let bin = root.join("target/release/etcd-standby");
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let rt = rt()?;
    let mut text = format!(
        "bench revisions: backlog {backlog} single-put entries, {conc} writers, {} core(s)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for v in versions {
        match run_version(&rt, &bin, &out, v, backlog, conc) {
            Ok(rows) => {
                for c in rows {
                    text.push_str(&format!(
                        "  {v} {:<40} {:>7} entries in {:>7.2} s = {:>8.0} entries/s, {} txns sent again, revisions equal: {}\n",
                        c.what,
                        c.entries,
                        c.took.as_secs_f64(),
                        c.entries as f64 / c.took.as_secs_f64().max(1e-9),
                        c.txns_resent,
                        c.revisions_equal.map_or("-".to_owned(), |b| b.to_string())
                    ));
                }
            }
            Err(e) => text.push_str(&format!("  {v} FAILED: {e:#}\n")),
        }
    }
    print!("{text}");
    let _ = std::fs::write(out.join("revisions-report.txt"), &text);
    Ok(0)
}
