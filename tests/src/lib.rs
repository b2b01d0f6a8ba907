//! Helpers for the end-to-end tests: locating the `etcd-standby` binary,
//! running it as a learner, generating load.
// Test harness code: a failed setup step is a failed test, so panicking is right.
#![allow(clippy::unwrap_used, clippy::expect_used)]
pub mod chaos;
pub mod fidelity;
pub mod load;
pub mod pki;
pub mod promote;
pub mod proxy;
pub mod standby;

use std::path::PathBuf;
use std::process::Command;

/// Path to the `etcd-standby` binary built from this workspace. It is
/// (re)built once per test process, so a test never runs a stale binary
/// (cargo makes this a quick no-op when it is up to date).
/// `ETCD_STANDBY_BIN` overrides the location and skips the build.
pub fn etcd_standby_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_etcd_standby).clone()
}

fn build_etcd_standby() -> PathBuf {
    if let Some(p) = std::env::var_os("ETCD_STANDBY_BIN") {
        return PathBuf::from(p);
    }
    let root = etcd_standby_testkit::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug").join("etcd-standby");
    {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "etcd-standby"])
            .current_dir(&root)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "could not build etcd-standby"
        );
    }
    bin
}
