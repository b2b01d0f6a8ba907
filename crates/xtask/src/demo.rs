//! `cargo xtask demo [NAME]`: end-to-end demonstrations against real etcd.
//!
//! Each demo is a variant of [`Demo`]:
//! * `replicate` (default) — the main job: a 3-member primary, a 1-member
//!   standby, `etcd-standby run` keeping the standby in step, `status`,
//!   `verify`, reads from the standby and `wal dump --outcome`;
//! * `inspect` — the offline inspection tool on a stopped etcd's data dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion, Etcdctl, free_port};

use crate::cmd;
use crate::etcd::{self, Provisioned};

/// Available demos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demo {
    /// The main job: replicate a live 3-member primary to a standby cluster
    /// through raft, then show status, verify and the standby's contents.
    Replicate,
    /// Offline inspection: write a workload to etcd 3.5, stop it, then run
    /// `etcd-standby wal dump|verify|stats` and `db dump` on its data dir.
    Inspect,
}

impl Demo {
    pub const ALL: [Demo; 2] = [Demo::Replicate, Demo::Inspect];
    pub const DEFAULT: Demo = Demo::Replicate;

    pub fn name(self) -> &'static str {
        match self {
            Demo::Replicate => "replicate",
            Demo::Inspect => "inspect",
        }
    }

    pub fn parse(name: &str) -> Result<Demo> {
        match Self::ALL.into_iter().find(|d| d.name() == name) {
            Some(d) => Ok(d),
            None => bail!(
                "unknown demo `{name}`; available: {}",
                Self::ALL.map(Demo::name).join(", ")
            ),
        }
    }
}

pub struct DemoArgs {
    pub demo: Demo,
    /// Keep the etcd temp dirs (and the replicator's data dir) after the demo.
    pub keep: bool,
    /// Build `etcd-standby` with `--release`.
    pub release: bool,
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let workspace = cmd::workspace_root();
    let provisioned = etcd::install(&workspace)?;
    match args.demo {
        Demo::Replicate => replicate(&workspace, &provisioned, args),
        Demo::Inspect => inspect(&workspace, &provisioned, args),
    }
}

fn header(title: &str) {
    println!("\n==================== {title} ====================");
}

/// The offline-inspection demo.
fn inspect(workspace: &Path, provisioned: &Provisioned, args: &DemoArgs) -> Result<()> {
    header("building etcd-standby");
    let standby = build_standby(workspace, args.release)?;

    let version = EtcdVersion::V3_5;
    header(&format!("starting etcd {version} (1 member, loopback)"));
    let opts = ClusterOptions {
        bin_dir: Some(provisioned.dir(version)?.to_path_buf()),
        ..ClusterOptions::default()
    };
    let mut cluster = EtcdCluster::start(version, 1, opts)?;
    cluster.keep_dir_on_drop(args.keep);
    println!("endpoints: {}", cluster.client_endpoints());
    println!("data dir:  {}", cluster.data_dir(0)?.display());

    header("writing workload with etcdctl");
    write_workload(&cluster.etcdctl())?;

    header("stopping etcd (SIGTERM)");
    cluster.stop_member(0)?;
    let data_dir = cluster.data_dir(0)?;
    let db = data_dir.join("member/snap/db");

    let runs: [(&str, Vec<PathBuf>); 4] = [
        ("wal dump", vec![data_dir.clone()]),
        ("wal verify", vec![data_dir.clone()]),
        ("wal stats", vec![data_dir.clone()]),
        ("db dump", vec![db]),
    ];
    let mut failed = Vec::new();
    for (sub, paths) in runs {
        header(&format!("etcd-standby {sub}"));
        let mut c = Command::new(&standby);
        c.args(sub.split(' ')).args(&paths);
        if !cmd::status(&mut c)? {
            failed.push(sub);
        }
    }
    if args.keep {
        println!("\nkept etcd dir: {}", cluster.dir().display());
    }
    if !failed.is_empty() {
        bail!("etcd-standby failed for: {}", failed.join(", "));
    }
    Ok(())
}

/// `cargo build -p etcd-standby` and the path of the built binary.
fn build_standby(workspace: &Path, release: bool) -> Result<PathBuf> {
    let mut build = cmd::cargo();
    build
        .current_dir(workspace)
        .args(["build", "-p", "etcd-standby", "--bin", "etcd-standby"]);
    if release {
        build.arg("--release");
    }
    cmd::run(&mut build)?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| {
            if d.is_absolute() {
                d
            } else {
                workspace.join(d)
            }
        })
        .unwrap_or_else(|| workspace.join("target"));
    let bin = target_dir
        .join(if release { "release" } else { "debug" })
        .join("etcd-standby");
    if !bin.is_file() {
        bail!("built etcd-standby but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// A small but varied workload: puts (incl. overwrites, non-ASCII and a
/// larger value), a txn, leases (one kept with a key, one revoked),
/// deletes, a compaction, users/roles and finally auth enable.
fn write_workload(ctl: &Etcdctl) -> Result<()> {
    let step = |what: &str, args: &[&str]| -> Result<String> {
        println!("$ etcdctl {}", args.join(" "));
        let out = ctl.run(args).with_context(|| what.to_string())?;
        for line in out.lines() {
            println!("    {line}");
        }
        Ok(out)
    };

    step("put", &["put", "/demo/greeting", "hello, world"])?;
    for n in 1..=3 {
        step("overwrite", &["put", "/demo/counter", &n.to_string()])?;
    }
    step("non-ASCII put", &["put", "/demo/ключ", "значение ✓"])?;
    let big = "x".repeat(8 * 1024);
    println!("$ etcdctl put /demo/big <8 KiB value>");
    ctl.put("/demo/big", &big).context("large put")?;
    step("put", &["put", "/demo/tmp/a", "scratch"])?;
    step("put", &["put", "/demo/tmp/b", "scratch"])?;

    // txn reads compares, success ops and failure ops from stdin, each block
    // terminated by an empty line.
    let txn = "value(\"/demo/counter\") = \"3\"\n\n\
               put /demo/txn/result success\ndel /demo/tmp/a\n\n\
               put /demo/txn/result failure\n\n";
    println!("$ etcdctl txn --interactive=false <<EOF\n{txn}EOF");
    let out = ctl
        .run_with_stdin(&["txn", "--interactive=false"], txn.as_bytes())
        .context("txn")?;
    for line in out.lines() {
        println!("    {line}");
    }

    let kept = ctl.lease_grant(3600).context("lease grant")?;
    println!("$ etcdctl lease grant 3600  -> {kept:x}");
    step(
        "put with lease",
        &[
            "put",
            &format!("--lease={kept:x}"),
            "/demo/leased",
            "lives with the lease",
        ],
    )?;
    let revoked = ctl.lease_grant(60).context("lease grant")?;
    println!("$ etcdctl lease grant 60  -> {revoked:x}");
    step(
        "put with lease",
        &[
            "put",
            &format!("--lease={revoked:x}"),
            "/demo/short-lived",
            "gone soon",
        ],
    )?;
    step(
        "lease revoke",
        &["lease", "revoke", &format!("{revoked:x}")],
    )?;

    step("delete", &["del", "/demo/greeting"])?;
    step("delete prefix", &["del", "--prefix", "/demo/tmp/"])?;

    let rev = ctl.revision().context("current revision")?;
    step("compact", &["compact", &(rev - 2).to_string()])?;

    step("role add", &["role", "add", "reader"])?;
    step(
        "grant permission",
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "/demo/",
            "--prefix=true",
        ],
    )?;
    step("user add", &["user", "add", "alice:alice-pw"])?;
    step("grant role", &["user", "grant-role", "alice", "reader"])?;
    step("user add root", &["user", "add", "root:root-pw"])?;
    step("grant root", &["user", "grant-role", "root", "root"])?;
    step("auth enable", &["auth", "enable"])?;

    let root = ctl.clone().with_user("root:root-pw");
    println!("$ etcdctl --user=root:*** put /demo/after-auth yes");
    root.put("/demo/after-auth", "yes").context("put as root")?;
    println!("$ etcdctl --user=alice:*** get --prefix /demo/ --keys-only");
    let alice = ctl.clone().with_user("alice:alice-pw");
    for key in alice.get_prefix_keys("/demo/").context("get as alice")? {
        println!("    {}", String::from_utf8_lossy(&key));
    }
    Ok(())
}

/// A child process killed (SIGKILL) on drop unless stopped before.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is still running; fails with the log tail if it exited.
    fn check_alive(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("etcd-standby is not running");
        };
        if let Some(st) = child.try_wait()? {
            self.child = None;
            bail!(
                "etcd-standby exited ({st}); log tail:\n{}",
                log_tail(&self.log, 30)
            );
        }
        Ok(())
    }

    /// SIGTERM (by PID) and wait up to 20 s, then SIGKILL.
    fn stop(&mut self) -> Result<String> {
        let Some(mut child) = self.child.take() else {
            return Ok("not running".into());
        };
        let pid = child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(format!("exited: {st}"));
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let st = child.wait()?;
                return Ok(format!(
                    "did not stop within 20 s after SIGTERM; killed ({st})"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `GET /status` of the daemon's admin listener as JSON.
fn admin_status(addr: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /status HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    serde_json::from_str(buf.split_once("\r\n\r\n")?.1).ok()
}

/// The highest raft index any member of the cluster reports.
fn cluster_raft_index(ctl: &Etcdctl) -> Result<u64> {
    let v = ctl
        .run_json(&["endpoint", "status"])
        .context("etcdctl endpoint status")?;
    let best = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let st = &m["Status"];
            st["raft_index"].as_u64().or(st["raftIndex"].as_u64())
        })
        .max();
    best.context("etcdctl endpoint status reported no raft_index")
}

/// Prints `$ etcdctl ARGS` and its indented output.
fn show(ctl: &Etcdctl, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let who = if ctl.endpoints().is_empty() {
        String::new()
    } else {
        format!("--endpoints={} ", ctl.endpoints())
    };
    match stdin {
        Some(input) => println!("$ etcdctl {who}{} <<EOF\n{input}EOF", args.join(" ")),
        None => println!("$ etcdctl {who}{}", args.join(" ")),
    }
    let out = match stdin {
        Some(input) => ctl.run_with_stdin(args, input.as_bytes()),
        None => ctl.run(args),
    }
    .with_context(|| format!("etcdctl {}", args.join(" ")))?;
    for line in out.lines() {
        println!("    {line}");
    }
    Ok(out)
}

/// The main job: a live primary replicated to a standby cluster.
/// The second act: the primary city goes dark; `promote` (dry run, then
/// for real) turns the standby into the primary; clients write to it; a
/// `run` against it is refused (anti-flap).
fn failover(
    standby_bin: &Path,
    primary: &mut EtcdCluster,
    standby: &EtcdCluster,
    data_dir: &Path,
    daemon: &mut Daemon,
    failed: &mut Vec<&'static str>,
) -> Result<()> {
    header("disaster: the primary city goes dark (every primary member SIGKILLed)");
    for i in 0..3 {
        primary.kill_member(i)?;
    }
    println!("primary members killed; etcd-standby keeps running and notices the silence");
    let promote = |extra: &[&str]| {
        let mut c = Command::new(standby_bin);
        c.arg("promote")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--standby-endpoints", &standby.client_endpoints()])
            .args(["--source-endpoints", &primary.client_endpoints()])
            .args(extra)
            .env("ETCD_STANDBY_LOG", "warn");
        c
    };

    header("etcd-standby promote --dry-run (every check, the RPO, the plan; changes nothing)");
    if !cmd::status(&mut promote(&["--dry-run"]))? {
        failed.push("promote --dry-run");
    }

    header("etcd-standby promote --yes (drain, fence with a new epoch, hand leases over, audit)");
    if !cmd::status(&mut promote(&[
        "--yes",
        "--reason",
        "demo: primary city lost",
    ]))? {
        failed.push("promote");
        return Ok(());
    }
    println!("etcd-standby run: {}", daemon.stop()?);

    header("clients write to the NEW primary (the former standby)");
    let sctl = standby.etcdctl();
    show(
        &sctl,
        &["put", "/demo/after-failover", "written to the new primary"],
        None,
    )?;
    show(&sctl, &["get", "--prefix", "/demo/"], None)?;
    show(
        &sctl,
        &["get", "__etcd_standby__/promoted", "--print-value-only"],
        None,
    )?;

    header("anti-flap: `run` against the promoted standby is refused");
    let mut again = Command::new(standby_bin);
    again
        .args(["run", "--source-endpoints", &primary.client_endpoints()])
        .args(["--advertise-peer-url", "http://127.0.0.1:1"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--standby-endpoints", &standby.client_endpoints()])
        .env("ETCD_STANDBY_LOG", "warn");
    println!("$ {}", cmd::describe(&again));
    let out = again.stdin(Stdio::null()).output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    println!("    (exit {}) {}", out.status, said.trim_end());
    if out.status.success() {
        failed.push("run after promote was not refused");
    }
    Ok(())
}

fn replicate(workspace: &Path, provisioned: &Provisioned, args: &DemoArgs) -> Result<()> {
    let started = Instant::now();
    header("building etcd-standby");
    let standby_bin = build_standby(workspace, args.release)?;

    let version = EtcdVersion::V3_5;
    let opts = ClusterOptions {
        bin_dir: Some(provisioned.dir(version)?.to_path_buf()),
        ..ClusterOptions::default()
    };
    header(&format!(
        "starting the primary (etcd {version}, 3 members) and the standby (1 member)"
    ));
    let mut primary = EtcdCluster::start(version, 3, opts.clone())?;
    primary.keep_dir_on_drop(args.keep);
    let mut standby = EtcdCluster::start(version, 1, opts)?;
    standby.keep_dir_on_drop(args.keep);
    println!("primary endpoints: {}", primary.client_endpoints());
    println!("standby endpoints: {}", standby.client_endpoints());

    let work = tempfile::Builder::new()
        .prefix("etcd-standby-demo-")
        .tempdir()
        .context("temp dir for the replicator")?;
    let data_dir = work.path().join("learner");
    let log = work.path().join("learner.log");
    let peer_url = format!("http://127.0.0.1:{}", free_port()?);
    let admin = format!("127.0.0.1:{}", free_port()?);

    header("starting etcd-standby run (joins the primary as a raft learner)");
    let mut run = Command::new(&standby_bin);
    run.args(["run", "--source-endpoints", &primary.client_endpoints()])
        .args(["--advertise-peer-url", &peer_url])
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--admin-listen", &admin])
        .args(["--standby-endpoints", &standby.client_endpoints()]);
    println!("$ {}", cmd::describe(&run));
    let child = run
        .env("ETCD_STANDBY_LOG", "info,raft=warn,slog=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).context("replicator log file")?)
        .spawn()
        .with_context(|| format!("could not start `{}`", cmd::describe(&run)))?;
    let mut daemon = Daemon {
        child: Some(child),
        log: log.clone(),
    };
    println!(
        "pid {}, log {}",
        daemon.pid().unwrap_or_default(),
        log.display()
    );
    let joined = Instant::now();
    loop {
        daemon.check_alive()?;
        let st = admin_status(&admin);
        let member = st
            .as_ref()
            .and_then(|v| v["node"]["member_id"].as_str().map(str::to_owned))
            .filter(|s| !s.is_empty());
        let replaying = st
            .as_ref()
            .and_then(|v| v["replay"]["state"].as_str().map(str::to_owned));
        if let (Some(m), Some(r)) = (&member, &replaying) {
            println!(
                "joined as learner {m} in {:.1?}; replay state: {r}",
                joined.elapsed()
            );
            break;
        }
        if joined.elapsed() > Duration::from_secs(60) {
            bail!(
                "etcd-standby did not join within 60 s; status {st:?}\n{}",
                log_tail(&log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    header("writing to the PRIMARY");
    let ctl = primary.etcdctl();
    show(&ctl, &["put", "/demo/config/region", "eu-west-1"], None)?;
    show(&ctl, &["put", "/demo/config/replicas", "3"], None)?;
    for n in 1..=3 {
        show(&ctl, &["put", "/demo/counter", &n.to_string()], None)?;
    }
    show(&ctl, &["put", "/demo/ключ", "значение ✓"], None)?;
    show(&ctl, &["put", "/demo/tmp/scratch", "to be deleted"], None)?;
    let lease = ctl.lease_grant(3600).context("lease grant")?;
    println!("$ etcdctl lease grant 3600\n    lease {lease:x} granted with TTL(3600s)");
    show(
        &ctl,
        &[
            "put",
            &format!("--lease={lease:x}"),
            "/demo/session/worker-1",
            "alive",
        ],
        None,
    )?;
    let txn = "value(\"/demo/counter\") = \"3\"\n\n\
               put /demo/txn/result success\ndel /demo/config/replicas\n\n\
               put /demo/txn/result failure\n\n";
    show(&ctl, &["txn", "--interactive=false"], Some(txn))?;
    show(&ctl, &["del", "--prefix", "/demo/tmp/"], None)?;
    show(&ctl, &["role", "add", "reader"], None)?;
    show(
        &ctl,
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "/demo/",
            "--prefix=true",
        ],
        None,
    )?;
    show(&ctl, &["user", "add", "alice:alice-pw"], None)?;
    show(&ctl, &["user", "grant-role", "alice", "reader"], None)?;

    header("waiting for the standby checkpoint to reach the primary's raft index");
    let target = cluster_raft_index(&ctl)?;
    println!("primary raft index: {target}");
    let wait = Instant::now();
    let last = loop {
        daemon.check_alive()?;
        let st = admin_status(&admin);
        let cp = st
            .as_ref()
            .and_then(|v| v["replay"]["standby_checkpoint"].as_u64())
            .unwrap_or(0);
        if cp >= target {
            println!(
                "standby checkpoint {cp} >= {target} after {:.0?}",
                wait.elapsed()
            );
            break st;
        }
        if wait.elapsed() > Duration::from_secs(60) {
            bail!(
                "standby checkpoint stuck at {cp} < {target}; status {st:?}\n{}",
                log_tail(&log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    header("etcd-standby status");
    let mut failed = Vec::new();
    if !cmd::status(Command::new(&standby_bin).args(["status", "--admin", &admin]))? {
        failed.push("status");
    }
    if let Some(r) = last.as_ref().map(|v| &v["replay"]) {
        let sink = &r["sink"];
        println!(
            "replay      {}  applied {}  standby checkpoint {}  lag {} entries / {:.3} s  \
             (sink: {} txns, {} ops)   [from GET /status]",
            r["state"].as_str().unwrap_or("?"),
            r["applied_index"],
            r["standby_checkpoint"],
            r["lag_entries"],
            r["lag_seconds"].as_f64().unwrap_or(0.0),
            sink["txns"],
            sink["ops"],
        );
    }

    header("etcd-standby verify (primary vs standby)");
    let mut verify = Command::new(&standby_bin);
    verify
        .args(["verify", "--source-endpoints", &primary.client_endpoints()])
        .args(["--standby-endpoints", &standby.client_endpoints()]);
    if !cmd::status(&mut verify)? {
        failed.push("verify");
    }

    header("reading from the STANDBY");
    let sctl = standby.etcdctl();
    show(&sctl, &["get", "--prefix", "/demo/"], None)?;
    show(
        &sctl,
        &["get", "/demo/session/worker-1", "--write-out=fields"],
        None,
    )
    .map(|_| ())
    .or_else(|e| {
        println!("    ({e:#})");
        Ok::<_, anyhow::Error>(())
    })?;
    show(&sctl, &["lease", "list"], None)?;
    show(&sctl, &["user", "get", "alice"], None)?;
    show(&sctl, &["role", "get", "reader"], None)?;
    show(
        &sctl,
        &["get", "--prefix", "--keys-only", "__etcd_standby__/"],
        None,
    )?;

    header("etcd-standby wal dump --outcome (the learner's own raft log, last entries)");
    let mut dump = Command::new(&standby_bin);
    dump.args(["wal", "dump", "--outcome"]).arg(&data_dir);
    println!("$ {}", cmd::describe(&dump));
    match dump.stdin(Stdio::null()).output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = text.lines().collect();
            let shown = 16;
            if lines.len() > shown {
                println!("    ... ({} earlier lines)", lines.len() - shown);
            }
            for line in &lines[lines.len().saturating_sub(shown)..] {
                println!("    {line}");
            }
            if !out.status.success() {
                println!(
                    "    (exit {}) {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim_end()
                );
                failed.push("wal dump --outcome");
            }
        }
        Err(e) => {
            println!("    could not run: {e}");
            failed.push("wal dump --outcome");
        }
    }

    failover(
        &standby_bin,
        &mut primary,
        &standby,
        &data_dir,
        &mut daemon,
        &mut failed,
    )?;

    header("stopping everything");
    println!("etcd-standby: {}", daemon.stop()?);
    if args.keep {
        println!("kept primary dir: {}", primary.dir().display());
        println!("kept standby dir: {}", standby.dir().display());
    }
    drop(standby);
    drop(primary);
    println!("etcd clusters stopped");
    if args.keep {
        let kept = work.keep();
        println!("kept replicator dir: {}", kept.display());
    }
    println!("demo finished in {:.1?}", started.elapsed());
    if !failed.is_empty() {
        bail!("demo steps failed: {}", failed.join(", "));
    }
    Ok(())
}
