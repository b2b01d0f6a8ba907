//! `cargo xtask test`: the whole suite against real etcd (and the
//! operations toolchain for deploy/).

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Result;

use crate::{cmd, etcd, opstools};

/// Environment variable that enables long-running (soak) tests.
pub const SOAK_ENV: &str = "ETCD_STANDBY_SOAK";

pub struct TestArgs {
    /// Set `ETCD_STANDBY_SOAK=1` for the tests.
    pub soak: bool,
    /// Run the chaos campaign only (`tests/chaos.rs` `chaos_campaign`).
    pub chaos: Option<Chaos>,
    /// Passed through to the test runner (filters, runner flags).
    pub extra: Vec<String>,
}

/// `--chaos` settings, passed to the campaign as `ETCD_STANDBY_CHAOS_*`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Chaos {
    /// `--seed S`.
    pub seed: Option<String>,
    /// `--minutes M`.
    pub minutes: Option<String>,
    /// `--replay FILE` (a schedule written by an earlier run).
    pub replay: Option<String>,
    /// `--versions 3.4|3.5` (default both).
    pub versions: Option<String>,
}

impl Chaos {
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut add = |k, v: &Option<String>| {
            if let Some(v) = v {
                out.push((k, v.clone()));
            }
        };
        add("ETCD_STANDBY_CHAOS_SEED", &self.seed);
        add("ETCD_STANDBY_CHAOS_MINUTES", &self.minutes);
        add("ETCD_STANDBY_CHAOS_VERSIONS", &self.versions);
        if let Some(f) = &self.replay {
            // Relative to where the command was typed, not the workspace.
            let p = std::path::Path::new(f);
            let abs = std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or(p.to_path_buf());
            out.push(("ETCD_STANDBY_CHAOS_REPLAY", abs.display().to_string()));
        }
        out
    }
}

/// Provisions etcd, runs the suite; returns whether everything passed.
pub fn run(args: &TestArgs) -> Result<bool> {
    let started = Instant::now();
    let workspace = cmd::workspace_root();
    let provisioned = etcd::install(&workspace)?;
    let ops = opstools::install(&workspace)?;

    let with_env = |mut c: Command| {
        provisioned.apply_env(&mut c);
        ops.apply_env(&mut c);
        if args.soak {
            c.env(SOAK_ENV, "1");
        }
        c.current_dir(&workspace);
        c
    };

    let mut ok = true;
    if let Some(chaos) = &args.chaos {
        let mut c = with_env(cmd::cargo());
        c.args(["test", "-p", "etcd-standby-integration", "--test", "chaos"])
            .args([
                "--",
                "--ignored",
                "--exact",
                "chaos_campaign",
                "--nocapture",
            ])
            .envs(chaos.env());
        ok &= cmd::status(&mut c)?;
        eprintln!(
            "xtask: chaos {} in {:.1}s",
            if ok { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        return Ok(ok);
    }
    if nextest_available() {
        let mut nextest = with_env(cmd::cargo());
        nextest
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .args(&args.extra);
        ok &= cmd::status(&mut nextest)?;
        // nextest does not run doctests.
        let mut doc = with_env(cmd::cargo());
        doc.args(["test", "--workspace", "--doc"]);
        ok &= cmd::status(&mut doc)?;
    } else {
        eprintln!("xtask: cargo-nextest not found, using cargo test");
        let mut test = with_env(cmd::cargo());
        test.args(["test", "--workspace", "--no-fail-fast"])
            .args(&args.extra);
        ok &= cmd::status(&mut test)?;
    }

    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "xtask: test {} in {elapsed:.1}s (wall time, including etcd provisioning)",
        if ok { "passed" } else { "FAILED" }
    );
    Ok(ok)
}

fn nextest_available() -> bool {
    cmd::cargo()
        .args(["nextest", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
