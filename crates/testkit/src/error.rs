//! Error type of the testkit.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while provisioning or driving etcd.
///
/// `Debug` is the same as `Display` so that `.unwrap()` / `.expect()` in tests
/// print a readable (multi-line) message, including member logs.
#[derive(thiserror::Error)]
pub enum TestkitError {
    /// The etcd binaries for a version could not be located.
    #[error(
        "etcd {version} binaries not found: {detail}.\n\
         Provision them with `cargo xtask install-etcd` and run the suite with `cargo xtask test` \
         (which sets ETCD_STANDBY_ETCD_3_4 / ETCD_STANDBY_ETCD_3_5)"
    )]
    EtcdNotFound {
        /// Version string, e.g. `3.5.1`.
        version: &'static str,
        /// What was looked at.
        detail: String,
    },

    /// An IO operation failed.
    #[error("{context}: {error}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        error: io::Error,
    },

    /// A child command exited unsuccessfully.
    #[error(
        "command `{command}` failed ({status})\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}"
    )]
    Command {
        /// The command line, for humans.
        command: String,
        /// Exit status description.
        status: String,
        /// Captured standard output (lossy UTF-8).
        stdout: String,
        /// Captured standard error (lossy UTF-8).
        stderr: String,
    },

    /// The cluster (or a member) did not become healthy in time.
    #[error(
        "etcd did not become healthy within {timeout:?}: {reason}\n(data kept in {dir})\n{logs}"
    )]
    Unhealthy {
        /// How long we waited.
        timeout: Duration,
        /// Last observed problem.
        reason: String,
        /// Cluster directory (kept for inspection).
        dir: PathBuf,
        /// Tail of member logs.
        logs: String,
    },

    /// A member index was out of range.
    #[error("no such member index {index} (cluster has {len} members)")]
    NoSuchMember {
        /// Requested index (0-based).
        index: usize,
        /// Number of members.
        len: usize,
    },

    /// The member is not in the state the operation needs.
    #[error("member {name}: {message}")]
    MemberState {
        /// Member name (`n1`, ...).
        name: String,
        /// What is wrong.
        message: String,
    },

    /// Output of a tool could not be understood.
    #[error("cannot parse output of `{command}`: {message}\n--- output ---\n{output}")]
    Parse {
        /// The command line.
        command: String,
        /// What is wrong.
        message: String,
        /// The raw output (lossy UTF-8).
        output: String,
    },

    /// Invalid argument / option combination.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl fmt::Debug for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl TestkitError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        TestkitError::Io {
            context: context.into(),
            error: source,
        }
    }
}

/// Result alias used throughout the testkit.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;

/// Attach a context string to IO results.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| TestkitError::io(context(), e))
    }
}
