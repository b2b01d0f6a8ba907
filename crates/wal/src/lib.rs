//! Reading and writing etcd's on-disk log formats.
//!
//! * [`frame`]: the sans-IO record framing (length field, padding, CRC-32C chain).
//! * [`WalReader`]: streams every record of a `member/wal` directory, verifying
//!   framing and the CRC chain, and tells a torn tail (which etcd repairs) from
//!   corruption in the middle (which etcd refuses).
//! * [`WalWriter`]: writes segments etcd itself can read (the learner's log).
//! * [`snap`]: `.snap` files.
//! * [`summarize`]: what `wal verify` reports, segments read on several
//!   threads.
//! * [`names`]: the one parser/formatter of `%016x-%016x.wal`, `.snap`,
//!   `%016x.snap.db` and other hex-indexed file names.
//! * [`read_log`]: etcd's `ReadAll` view (entries after a snapshot, later
//!   records overwriting conflicting suffixes).
mod committed;
pub mod error;
pub mod frame;
mod log;
pub mod names;
mod reader;
pub mod segment;
pub mod snap;
mod summary;
mod writer;

pub use committed::{
    CommittedEnd, WalEnd, for_each_assuming_committed, for_each_committed, wal_end,
};
pub use error::{Location, Result, WalError};
pub use frame::RecordType;
pub use log::{WalLog, read_log};
pub use reader::{RecordRef, SegmentEnd, WalReader, WalRecord};
pub use segment::{Segment, list_segments};
pub use summary::{ProblemRef, ReadProgress, WalSummary, summarize, summarize_in_one_pass};
pub use writer::{SyncedEnd, WalWriter, discard_unsynced};

use std::path::{Path, PathBuf};

/// Resolves a user-supplied path to a WAL directory: accepts a data dir
/// (`<dir>/member/wal`), a member dir (`<dir>/wal`) or the WAL dir itself.
pub fn resolve_wal_dir(path: &Path) -> Option<PathBuf> {
    [
        path.join("member").join("wal"),
        path.join("wal"),
        path.to_path_buf(),
    ]
    .into_iter()
    .find(|p| p.is_dir() && list_segments(p).is_ok())
}

/// Resolves the snapshot directory that sits beside a WAL directory.
pub fn resolve_snap_dir(path: &Path) -> Option<PathBuf> {
    [path.join("member").join("snap"), path.join("snap")]
        .into_iter()
        .chain(path.parent().map(|p| p.join("snap")))
        .find(|p| p.is_dir())
}
