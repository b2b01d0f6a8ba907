//! `cargo xtask demo [NAME]`: end-to-end demonstrations against real etcd.
//!
//! Each demo is a variant of [`Demo`]; add new ones (e.g. the replicator
//! following a live cluster) next to [`inspect`].

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion, Etcdctl};

use crate::cmd;
use crate::etcd::{self, Provisioned};

/// Available demos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demo {
    /// Offline inspection: write a workload to etcd 3.5, stop it, then run
    /// `etcd-standby wal dump|verify|stats` and `db dump` on its data dir.
    Inspect,
}

impl Demo {
    pub const ALL: [Demo; 1] = [Demo::Inspect];
    pub const DEFAULT: Demo = Demo::Inspect;

    pub fn name(self) -> &'static str {
        match self {
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
    /// Keep the etcd temp dir after the demo.
    pub keep: bool,
    /// Build `etcd-standby` with `--release`.
    pub release: bool,
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let workspace = cmd::workspace_root();
    let provisioned = etcd::install(&workspace)?;
    match args.demo {
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
