//! Provisioning of the operations toolchain the deploy/ tests run:
//!
//! | tool                          | for                                   | source                                  |
//! |-------------------------------|---------------------------------------|-----------------------------------------|
//! | prometheus, promtool 2.42     | rule checks and unit tests, live scrape | Debian package `prometheus`          |
//! | kubectl 1.20 (kustomize)      | rendering `deploy/kubernetes`         | Debian package `kubernetes-client`      |
//! | kubernetes-validate 1.37.0    | schema check of the rendered manifests| Python package, in a virtualenv         |
//!
//! Each lands in `<workspace>/.tools/<dir>/` like etcd (idempotent,
//! verified, renamed into place), and its directory is exported to the
//! tests as an `ETCD_STANDBY_*` variable.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd;
use crate::etcd::{Source, Tool, provision};

/// Variable naming the directory with `prometheus` and `promtool`.
pub const PROMETHEUS_ENV: &str = "ETCD_STANDBY_PROMETHEUS";
/// Variable naming the directory with `kubectl`.
pub const KUBECTL_ENV: &str = "ETCD_STANDBY_KUBECTL";
/// Variable naming the kubernetes-validate virtualenv.
pub const K8S_VALIDATE_ENV: &str = "ETCD_STANDBY_K8S_VALIDATE";

/// The provisioned directories, as `(variable, dir)` pairs.
pub struct OpsTools(Vec<(&'static str, PathBuf)>);

impl OpsTools {
    /// Applies the variables to a command.
    pub fn apply_env(&self, cmd: &mut Command) {
        for (name, dir) in &self.0 {
            cmd.env(name, dir);
        }
    }

    /// `(variable, dir)` pairs.
    pub fn env_vars(&self) -> impl Iterator<Item = (&'static str, &Path)> {
        self.0.iter().map(|(n, d)| (*n, d.as_path()))
    }
}

/// Makes sure every operations tool is installed under `<workspace>/.tools/`.
pub fn install(workspace: &Path) -> Result<OpsTools> {
    let tools = workspace.join(".tools");
    std::fs::create_dir_all(&tools).with_context(|| format!("create {}", tools.display()))?;
    let tools = tools
        .canonicalize()
        .with_context(|| format!("resolve {}", tools.display()))?;
    let prometheus = provision(
        &Tool {
            label: "prometheus 2.42",
            dir_name: "prometheus-2.42",
            binaries: &["prometheus", "promtool"],
            source: &Source::Debian {
                packages: &["prometheus"],
            },
            check: &|dir| {
                reports(
                    &dir.join("prometheus"),
                    &["--version"],
                    "prometheus, version 2.42.",
                )?;
                reports(
                    &dir.join("promtool"),
                    &["--version"],
                    "promtool, version 2.42.",
                )
            },
        },
        &tools,
    )?;
    let kubectl = provision(
        &Tool {
            label: "kubectl 1.20",
            dir_name: "kubernetes-client-1.20",
            binaries: &["kubectl"],
            source: &Source::Debian {
                packages: &["kubernetes-client"],
            },
            check: &|dir| {
                reports(
                    &dir.join("kubectl"),
                    &["version", "--client"],
                    "GitVersion:\"v1.20.",
                )
            },
        },
        &tools,
    )?;
    let validate = provision(
        &Tool {
            label: "kubernetes-validate 1.37.0",
            dir_name: "kubernetes-validate-1.37.0",
            binaries: &[],
            source: &Source::Venv {
                requirement: "kubernetes-validate==1.37.0",
            },
            check: &|dir| {
                reports(
                    &dir.join("bin/python"),
                    &["-m", "kubernetes_validate", "--version"],
                    "1.37.0",
                )
            },
        },
        &tools,
    )?;
    Ok(OpsTools(vec![
        (PROMETHEUS_ENV, prometheus),
        (KUBECTL_ENV, kubectl),
        (K8S_VALIDATE_ENV, validate),
    ]))
}

/// Runs `bin args` and checks its output contains `expected`.
fn reports(bin: &Path, args: &[&str], expected: &str) -> Result<()> {
    if !bin.exists() {
        bail!("{} is missing", bin.display());
    }
    let out = cmd::capture(Command::new(bin).args(args))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !text.contains(expected) {
        bail!(
            "`{} {}` does not report {expected:?}:\n{}",
            bin.display(),
            args.join(" "),
            text.trim_end()
        );
    }
    Ok(())
}
