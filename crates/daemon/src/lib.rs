//! The etcd-standby replicator daemon (`etcd-standby run`, `leave`).
//!
//! * [`node`]: the learner's node loop (peer inbound → raft core → durable
//!   log → acknowledgements), written against the [`node::LogStore`] and
//!   [`node::Outbound`] traits;
//! * [`store`]: the durable local log in etcd's layout and the data dir;
//! * [`committed`]: the one source of committed entries for replay (an
//!   in-memory tail backed by the WAL) and the WAL [`committed::Retention`];
//! * [`replay`]: committed entries → shadow model → standby, written against
//!   the [`replay::StandbySink`] trait;
//! * [`admin`], [`metrics`], [`status`]: `/status`, `/metrics`, `/healthz`,
//!   `/readyz` and the typed states behind them;
//! * [`ha`]: `run --ha`, one active instance among several (the lock on the standby);
//! * [`promote`]: `etcd-standby promote` (plan, then execute);
//! * [`daemon`]: preflight, join, and wiring the tasks together;
//! * [`codes`]: the stable `ES-xxxx` codes of halts and refusals.
//!
//! Invariants are listed in `ARCHITECTURE.md`.

pub mod admin;
pub mod backoff;
pub mod clock;
pub mod codes;
pub mod committed;
pub mod daemon;
pub mod datadir;
pub mod error;
pub mod ha;
pub mod metrics;
pub mod monitor;
pub mod node;
pub mod promote;
pub mod replay;
pub mod seed;
pub mod status;
pub mod store;
pub mod times;
pub mod tls;
pub mod values;

pub use daemon::{EXIT_REMOVED, RunOptions, leave, run};
pub use error::{Error, Result};

/// Runs blocking file IO on a runtime worker without stalling the others
/// (on a current-thread runtime, as in some unit tests, it just runs).
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// For tests that keep a generated table in `docs/` equal to the code.
#[cfg(test)]
pub(crate) mod docgen {
    /// Checks that the part of `docs/<file>` between the `name` markers is
    /// `table`; with `ETCD_STANDBY_UPDATE_DOCS` set, rewrites it instead.
    pub fn check_generated(file: &str, name: &str, table: &str) {
        let path = format!("{}/../../docs/{file}", env!("CARGO_MANIFEST_DIR"));
        let begin = format!("<!-- BEGIN GENERATED: {name} -->\n");
        let end = format!("<!-- END GENERATED: {name} -->");
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        let (Some(b), Some(e)) = (doc.find(&begin), doc.find(&end)) else {
            panic!("{path} lacks the {begin:?} … {end:?} markers");
        };
        if doc[b + begin.len()..e] == *table {
            return;
        }
        if std::env::var_os("ETCD_STANDBY_UPDATE_DOCS").is_some() {
            let new = format!("{}{begin}{table}{}", &doc[..b], &doc[e..]);
            std::fs::write(&path, new).unwrap_or_else(|err| panic!("write {path}: {err}"));
        } else {
            panic!(
                "{path}: the generated {name} table is out of date with the code; rerun the \
                 test with ETCD_STANDBY_UPDATE_DOCS=1 and review the diff.\nexpected:\n{table}"
            );
        }
    }
}
