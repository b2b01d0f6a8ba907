//! The shadow model's value store on disk: long values, addressed by their
//! digest, in one [redb] file beside the saved model (`<data-dir>/replay/values.redb`).
//!
//! Why redb: an embedded, pure-Rust, crash-safe (copy-on-write B-trees with
//! checksummed commits) and actively kept key-value store; no C++ build,
//! a small cold build, a bounded page cache. Values are content-addressed,
//! so they never change once written, which makes crash consistency with
//! the saved model simple:
//!
//! * writes are buffered and committed durably every [`FLUSH_AT_BYTES`] (in
//!   digest order) and before a model is saved ([`DiskValues::flush`]), so
//!   every value a saved model refers to is on disk before the model file
//!   is. Commits are durable because redb reuses the pages a copy-on-write
//!   commit frees only after a durable commit: with non-durable commits in
//!   between, the file grew to 2.5-4x the values it held (measured with
//!   `cargo xtask bench memory`);
//! * a value is deleted only by [`DiskValues::collect_garbage`] after a save,
//!   when neither the live model nor the just-saved file refers to it (the
//!   model reports values it stopped holding with `release`); a crash loses
//!   at most values written after the last durable commit, which replaying
//!   the log from the saved model writes again;
//! * at start [`DiskValues::sweep`] deletes what the loaded model does not
//!   hold (releases lost in a crash) and reports referenced values that are
//!   missing, so a damaged store makes the daemon rebuild rather than
//!   replay on a model it cannot read.
//!
//! [redb]: https://www.redb.org
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use bytes::Bytes;
use etcd_standby_model::value::{Digest, ValueStore, ValueStoreError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};

/// digest (16 bytes) → value.
const VALUES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("values");

/// Buffered values are committed (durably) once they reach this size.
const FLUSH_AT_BYTES: usize = 16 << 20;

/// redb's page cache (its default is 1 GiB, which would defeat the point).
/// Values are read back rarely (`ignore_value` puts, compare ties,
/// reconciles): 4 MiB took 18 MiB off the RSS at 1M x 1 KiB and caught up
/// no slower than 16 MiB (docs/benchmarks.md, "Memory").
const CACHE_BYTES: usize = 4 << 20;

/// The store file's name in the model directory.
pub const FILE_NAME: &str = "values.redb";

/// Long values of the shadow model, on disk (see the module docs).
pub struct DiskValues {
    db: redb::Database,
    path: PathBuf,
    me: Weak<DiskValues>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Values not yet committed.
    pending: BTreeMap<Digest, Bytes>,
    pending_bytes: usize,
    /// Digests a key stopped holding since the last garbage collection.
    released: Vec<Digest>,
    /// When a commit of buffered values last failed (a full disk): puts
    /// retry it only after [`COMMIT_RETRY`], with one warning per try.
    failed_at: Option<std::time::Instant>,
}

/// After a failed commit of buffered values, puts try again this often at
/// most (each try rewrites the whole buffer and warns once).
const COMMIT_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for DiskValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DiskValues({})", self.path.display())
    }
}

/// What a [`DiskValues::sweep`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Values kept (held by the model).
    pub kept: u64,
    /// Values deleted (held by nobody).
    pub deleted: u64,
    /// Values the model holds that the store lacks.
    pub missing: u64,
}

fn store_err(path: &Path, what: &str, e: impl Into<redb::Error>) -> Error {
    Error::ValueStore(format!(
        "value store {}: {what}: {}",
        path.display(),
        e.into()
    ))
}

impl DiskValues {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Arc<DiskValues>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::ValueStore(format!("creating {}: {e}", dir.display())))?;
        }
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| store_err(path, "open", e))?;
        let tx = db.begin_write().map_err(|e| store_err(path, "begin", e))?;
        tx.open_table(VALUES)
            .map_err(|e| store_err(path, "open table", e))?;
        tx.commit().map_err(|e| store_err(path, "commit", e))?;
        Ok(Arc::new_cyclic(|me| DiskValues {
            db,
            path: path.to_path_buf(),
            me: me.clone(),
            inner: Mutex::new(Inner::default()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update of `Inner` is complete before the lock is released.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits `pending` durably (and clears a recorded failure); on
    /// failure the values stay pending.
    fn commit(&self, inner: &mut Inner) -> Result<()> {
        let pending = std::mem::take(&mut inner.pending);
        let write = || -> std::result::Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(VALUES)?;
                for (d, v) in &pending {
                    t.insert(&d[..], v.as_ref())?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        match write() {
            Ok(()) => {
                inner.pending_bytes = 0;
                inner.failed_at = None;
                Ok(())
            }
            Err(e) => {
                inner.pending = pending;
                Err(store_err(&self.path, "write", e))
            }
        }
    }

    /// Commits every buffered value durably (before a model is saved); a
    /// failed automatic commit is retried here and reported.
    pub fn flush(&self) -> Result<()> {
        let mut inner = self.lock();
        // Every commit is durable: with nothing pending, nothing to wait for.
        if inner.pending.is_empty() {
            return Ok(());
        }
        self.commit(&mut inner)
    }

    /// Deletes the values released since the last call that `live` (sorted
    /// digests of the model just saved, which is also the live model) does
    /// not hold. Call after a save. Returns how many were deleted.
    pub fn collect_garbage(&self, live: &[Digest]) -> Result<u64> {
        let mut inner = self.lock();
        let mut dead = std::mem::take(&mut inner.released);
        dead.sort_unstable();
        dead.dedup();
        dead.retain(|d| live.binary_search(d).is_err() && !inner.pending.contains_key(d));
        if dead.is_empty() {
            return Ok(0);
        }
        let delete = || -> std::result::Result<u64, redb::Error> {
            let tx = self.db.begin_write()?;
            let mut n = 0;
            {
                let mut t = tx.open_table(VALUES)?;
                for d in &dead {
                    if t.remove(&d[..])?.is_some() {
                        n += 1;
                    }
                }
            }
            tx.commit()?;
            Ok(n)
        };
        delete().map_err(|e| store_err(&self.path, "collect garbage", e))
    }

    /// At start: deletes every value `live` (sorted digests of the loaded
    /// model) does not hold and counts the held ones that are missing.
    pub fn sweep(&self, live: &[Digest]) -> Result<SweepReport> {
        let mut inner = self.lock();
        self.commit(&mut inner)?;
        inner.released.clear();
        let mut report = SweepReport::default();
        let mut present: Vec<Digest> = Vec::new();
        let run = |report: &mut SweepReport,
                   present: &mut Vec<Digest>|
         -> std::result::Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(VALUES)?;
                t.retain(|k, _| {
                    let keep = <Digest>::try_from(k)
                        .ok()
                        .filter(|d| live.binary_search(d).is_ok());
                    match keep {
                        Some(d) => {
                            report.kept += 1;
                            present.push(d);
                            true
                        }
                        None => {
                            report.deleted += 1;
                            false
                        }
                    }
                })?;
            }
            tx.commit()?;
            Ok(())
        };
        run(&mut report, &mut present).map_err(|e| store_err(&self.path, "sweep", e))?;
        present.sort_unstable();
        report.missing = live
            .iter()
            .filter(|d| present.binary_search(d).is_err())
            .count() as u64;
        Ok(report)
    }

    /// The store file's size in bytes (0 if it cannot be read).
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    fn read(&self, d: &Digest) -> std::result::Result<Option<Bytes>, redb::Error> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(VALUES)?;
        Ok(t.get(&d[..])?.map(|v| Bytes::copy_from_slice(v.value())))
    }

    fn keep(&self, d: &Digest, value: &Bytes) {
        let mut inner = self.lock();
        if inner.pending.contains_key(d) {
            return;
        }
        inner.pending_bytes += value.len();
        // A copy: `value` may be a slice of a whole raft entry's buffer.
        inner.pending.insert(*d, Bytes::copy_from_slice(value));
        let due = inner.failed_at.is_none_or(|t| t.elapsed() >= COMMIT_RETRY);
        if inner.pending_bytes >= FLUSH_AT_BYTES
            && due
            && let Err(e) = self.commit(&mut inner)
        {
            // Kept pending; retried after COMMIT_RETRY or by the next
            // flush, which reports it.
            inner.failed_at = Some(std::time::Instant::now());
            tracing::warn!(
                error = %e,
                retry_in_seconds = COMMIT_RETRY.as_secs(),
                "value store: could not commit buffered values"
            );
        }
    }
}

impl ValueStore for DiskValues {
    fn put(&self, d: &Digest, value: &Bytes) {
        self.keep(d, value);
    }

    fn stage(&self, d: &Digest, value: &Bytes) {
        self.keep(d, value);
    }

    fn add_ref(&self, _d: &Digest) {}

    fn release(&self, d: &Digest) {
        self.lock().released.push(*d);
    }

    fn get(&self, d: &Digest) -> std::result::Result<Option<Bytes>, ValueStoreError> {
        if let Some(v) = self.lock().pending.get(d) {
            return Ok(Some(v.clone()));
        }
        self.read(d)
            .map_err(|e| ValueStoreError::Io(format!("{}: {e}", self.path.display())))
    }

    fn fork(&self) -> Arc<dyn ValueStore> {
        match self.me.upgrade() {
            Some(me) => me,
            // Unreachable while `self` is borrowed (it lives in that Arc).
            None => etcd_standby_model::MemValues::new_shared(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use etcd_standby_model::value::StoredValue;

    fn val(n: u8) -> (Digest, Bytes) {
        let b = Bytes::from(vec![n; 100]);
        (StoredValue::of(&b).digest, b)
    }

    #[test]
    fn values_survive_a_durable_flush_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (d, v) = val(1);
        {
            let s = DiskValues::open(&path).unwrap();
            s.put(&d, &v);
            assert_eq!(s.get(&d).unwrap(), Some(v.clone()), "pending is readable");
            s.flush().unwrap();
        }
        let s = DiskValues::open(&path).unwrap();
        assert_eq!(s.get(&d).unwrap(), Some(v));
    }

    #[test]
    fn garbage_is_what_was_released_and_is_no_longer_live() {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskValues::open(&dir.path().join(FILE_NAME)).unwrap();
        let (a, va) = val(1);
        let (b, vb) = val(2);
        s.put(&a, &va);
        s.put(&b, &vb);
        s.flush().unwrap();
        s.release(&a);
        s.release(&b);
        // `b` is held again by another key: only `a` goes.
        let live = vec![b];
        assert_eq!(s.collect_garbage(&live).unwrap(), 1);
        assert_eq!(s.get(&a).unwrap(), None);
        assert_eq!(s.get(&b).unwrap(), Some(vb));
    }

    #[test]
    fn a_sweep_keeps_the_live_values_and_counts_the_missing() {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskValues::open(&dir.path().join(FILE_NAME)).unwrap();
        let (a, va) = val(1);
        let (b, vb) = val(2);
        let (c, _) = val(3);
        s.put(&a, &va);
        s.put(&b, &vb);
        let mut live = vec![a, c];
        live.sort_unstable();
        let r = s.sweep(&live).unwrap();
        assert_eq!(
            r,
            SweepReport {
                kept: 1,
                deleted: 1,
                missing: 1
            }
        );
        assert_eq!(s.get(&b).unwrap(), None);
        assert_eq!(s.get(&a).unwrap(), Some(va));
    }
}
