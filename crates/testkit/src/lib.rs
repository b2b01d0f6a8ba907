//! Test support for etcd-standby: real etcd clusters on loopback.
//!
//! Integration tests use this crate to run the *real* etcd releases the
//! project supports ([`EtcdVersion::ALL`]). The binaries are provisioned by
//! `cargo xtask install-etcd` into `<workspace>/.tools/` and found via the
//! `ETCD_STANDBY_ETCD_3_4` / `ETCD_STANDBY_ETCD_3_5` environment variables
//! that `cargo xtask test` sets (with a fallback to `.tools/`). When they are
//! missing, everything here returns an error: tests fail loudly, they never
//! skip.
//!
//! ```no_run
//! use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion};
//!
//! # fn main() -> Result<(), etcd_standby_testkit::TestkitError> {
//! let mut cluster = EtcdCluster::start(EtcdVersion::V3_5, 1, ClusterOptions::default())?;
//! let ctl = cluster.etcdctl();
//! ctl.put("k", "v")?;
//! assert_eq!(ctl.get("k")?.as_deref(), Some(&b"v"[..]));
//! cluster.stop_member(0)?;
//! let wal_dir = cluster.data_dir(0)?.join("member/wal");
//! # let _ = wal_dir;
//! # Ok(())
//! # }
//! ```
//!
//! Design notes for a 2-core machine running tests in parallel:
//! * ports come from the kernel (`bind 127.0.0.1:0`), never fixed numbers;
//! * at most `ETCD_STANDBY_MAX_CLUSTERS` (default 2) test processes run
//!   clusters at a time (flock-based slots in the system temp dir);
//! * short raft timings (heartbeat 50 ms, election 500 ms) by default.

mod cluster;
mod error;
mod etcdctl;
mod ports;
mod slots;
mod util;
mod version;

pub use cluster::{AutoCompaction, ClusterOptions, EtcdCluster, KEEP_DIRS_ENV};
pub use error::{Result, TestkitError};
pub use etcdctl::Etcdctl;
pub use ports::free_port;
pub use slots::{MAX_CLUSTERS_ENV, SlotGuard};
pub use util::render_command;
pub use version::{EtcdVersion, workspace_root};
