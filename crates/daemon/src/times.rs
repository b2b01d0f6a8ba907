//! When each raft entry was received: a durable side index next to the WAL.
//!
//! etcd's WAL format has no place for a time, and the local log must stay
//! readable by etcd's tools, so receive times live in their own append-only
//! file, `<data-dir>/received-times.log` ([`crate::store::Layout::received_times`]).
//! They serve `promote --to-time T` (apply only entries received before `T`),
//! `run --apply-delay D` (replay only entries received more than `D` ago) and
//! the RPO report ("the oldest unapplied entry was received at ...").
//!
//! # Records
//!
//! Fixed 24-byte records, little endian:
//!
//! ```text
//! last_index u64 | unix_millis u64 | crc32c(first 16 bytes) as u64
//! ```
//!
//! A record `(L, t)` means: every entry with index `<= L` had been received
//! (durably persisted in the WAL) by time `t`. Times are rounded *up* to the
//! millisecond when recorded, so `t` stays an upper bound. So the times of an
//! entry are not stored one by one: the entry's time is that of the first
//! record with `last_index >= index` ([`ReceiveTimes::received_at`]), an
//! upper bound on when it was received.
//!
//! Times never decrease in the file: when the wall clock goes backwards the
//! time of a new record is clamped to the newest one (the claim "received by
//! `t`" stays true for a later `t`). Indexes increase, with one exception: a
//! record whose `last_index` is *below* the previous one is a truncation
//! ([`ReceiveTimes::forget_from`]). It is written when a new leader
//! overwrites an uncommitted suffix of our log: the old records vouched for
//! the replaced entries, not for the new ones at the same indexes, so
//! records reaching into the replaced range are cut back to just below it.
//! Without that, an entry a new leader wrote an hour later (say, a mass
//! delete) would inherit the time of the entry it replaced, and
//! `promote --to-time` would apply it.
//!
//! # Cost and crash behaviour
//!
//! The node loop records after every persisted batch, which can be thousands
//! of times per second, so records are coalesced: one is appended when at
//! least [`COALESCE`] passed since the last appended one (or it is the first);
//! otherwise it only replaces a *pending* in-memory record, appended at the
//! next due [`ReceiveTimes::record`] or by [`ReceiveTimes::flush`]. Lookups
//! see the pending record too. Appended records are buffered in memory and
//! written and `fdatasync`ed by `flush`, which the node loop calls at most
//! once per second and when it ends; recording never fsyncs, so it does not
//! add to the fsync the WAL already pays per batch.
//!
//! So after a crash up to about one second of time records can be missing
//! (never records for entries the WAL lost: a record is made only after the
//! WAL fsync). Entries without a record of their own are then covered by the
//! next record written after the restart: [`ReceiveTimes::received_at`]
//! reports them as received at that later time, and before that record
//! exists it returns `None` ("unknown: not before now"). Both answers are
//! conservative for `--to-time` and `--apply-delay`: an entry is never
//! reported as received earlier than it was.
//!
//! A torn trailing record (a crash during `flush`) is dropped on open and the
//! file truncated back to the last good record; a damaged record before the
//! end is an error naming its byte offset. [`ReceiveTimes::prune_below`]
//! keeps the file about as long as the WAL by rewriting it atomically, in
//! large steps.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::{from_unix_ms as from_millis, unix_ms as unix_millis};
use crate::error::{Context, Error, Result, bail};

/// The file's name inside the data dir.
pub const FILE_NAME: &str = "received-times.log";

/// Bytes per record.
pub const RECORD_BYTES: usize = 24;

/// Least time between two appended records; records in between coalesce.
pub const COALESCE: Duration = Duration::from_millis(100);

/// [`ReceiveTimes::prune_below`] rewrites the file only when it would drop
/// at least this many records.
pub const PRUNE_MIN_RECORDS: usize = 1024;

/// Milliseconds since the Unix epoch, rounded up: a recorded time is an
/// upper bound, so "received by `t`" must not move `t` earlier.
fn unix_millis_ceil(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if d.subsec_nanos() % 1_000_000 == 0 {
            ms
        } else {
            ms.saturating_add(1)
        }
    })
}

fn encode(last_index: u64, ms: u64) -> [u8; RECORD_BYTES] {
    let mut b = [0u8; RECORD_BYTES];
    b[..8].copy_from_slice(&last_index.to_le_bytes());
    b[8..16].copy_from_slice(&ms.to_le_bytes());
    let crc = u64::from(crc32c::crc32c(&b[..16]));
    b[16..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// A record's fields, or `None` when its CRC does not match.
fn decode(b: &[u8]) -> Option<(u64, u64)> {
    let word = |r: std::ops::Range<usize>| -> Option<u64> {
        Some(u64::from_le_bytes(b.get(r)?.try_into().ok()?))
    };
    let (index, ms, crc) = (word(0..8)?, word(8..16)?, word(16..24)?);
    (crc == u64::from(crc32c::crc32c(b.get(..16)?))).then_some((index, ms))
}

/// Where the records live.
#[derive(Debug)]
enum Backing {
    /// Nowhere: tests and a learner without a data dir.
    Memory,
    /// Loaded from a file that this handle never writes (inspection).
    ReadOnly,
    /// The file, open for appending.
    File {
        path: PathBuf,
        file: File,
        /// Bytes of whole good records in the file (what a failed write is
        /// cut back to, so a partial write never sits before later records).
        len: u64,
    },
}

#[derive(Debug)]
struct Inner {
    backing: Backing,
    /// Appended records `(last_index, unix_ms)`, net of truncations:
    /// `last_index` strictly increasing, times non-decreasing.
    records: Vec<(u64, u64)>,
    /// A coalesced record not appended yet; newer than every record.
    pending: Option<(u64, u64)>,
    /// Time of the last appended record (the coalescing clock).
    last_appended_ms: Option<u64>,
    /// The newest time seen; no record gets an earlier one.
    high_ms: u64,
    /// Encoded records not yet written to the file.
    buf: Vec<u8>,
}

impl Inner {
    fn newest_index(&self) -> u64 {
        self.pending
            .or_else(|| self.records.last().copied())
            .map_or(0, |r| r.0)
    }

    /// Appends to the in-memory list and (for a file) the write buffer.
    fn append(&mut self, rec: (u64, u64)) {
        self.records.push(rec);
        self.last_appended_ms = Some(rec.1);
        self.encode_into_buf(rec);
    }

    fn encode_into_buf(&mut self, (index, ms): (u64, u64)) {
        if matches!(self.backing, Backing::File { .. }) {
            self.buf.extend_from_slice(&encode(index, ms));
        }
    }

    fn append_pending(&mut self) {
        if let Some(p) = self.pending.take() {
            self.append(p);
        }
    }

    fn writable(&self) -> Result<()> {
        if matches!(self.backing, Backing::ReadOnly) {
            bail!("receive times were opened read-only");
        }
        Ok(())
    }

    /// Iterates appended records then the pending one.
    fn all(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.records.iter().copied().chain(self.pending)
    }
}

/// Cuts `records` back so that none vouches for an index above `keep_through`.
/// The first record reaching beyond it becomes `(keep_through, its time)`
/// (everything up to `keep_through` was received by then), unless a record
/// ends exactly at `keep_through` already.
fn truncate_records(records: &mut Vec<(u64, u64)>, keep_through: u64) {
    let k = records.partition_point(|r| r.0 <= keep_through);
    let Some(&(_, t)) = records.get(k) else {
        return;
    };
    let ends_there = k > 0 && records[k - 1].0 == keep_through;
    records.truncate(k);
    if !ends_there && keep_through > 0 {
        records.push((keep_through, t));
    }
}

/// The receive-time index of a data dir (see the module docs). Cheap to
/// clone; all clones share one state, so the log store records and replay
/// or the admin listener look up through the same handle.
#[derive(Debug, Clone)]
pub struct ReceiveTimes {
    inner: Arc<Mutex<Inner>>,
}

/// What loading a file found.
struct Loaded {
    records: Vec<(u64, u64)>,
    high_ms: u64,
    /// Bytes of whole good records.
    good_len: u64,
    /// Bytes after them that were dropped as a torn tail.
    torn_bytes: u64,
}

fn load(path: &Path, bytes: &[u8]) -> Result<Loaded> {
    let mut records = Vec::new();
    let mut high_ms = 0u64;
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let Some((index, ms)) = rest.get(..RECORD_BYTES).and_then(decode) else {
            // The last record, or a run of zeros the file system left when
            // it extended the file but lost the data: a torn write.
            let last = rest.len() <= RECORD_BYTES;
            if last || rest.iter().all(|&b| b == 0) {
                break;
            }
            bail!(
                "{}: damaged record at byte offset {offset} (bad CRC or length), before the end of the file",
                path.display()
            );
        };
        if ms < high_ms {
            bail!(
                "{}: record at byte offset {offset} goes back in time ({ms} ms after {high_ms} ms)",
                path.display()
            );
        }
        high_ms = ms;
        let newest = records.last().map_or(0, |r: &(u64, u64)| r.0);
        if index > newest {
            records.push((index, ms));
        } else if index < newest {
            truncate_records(&mut records, index);
        }
        offset += RECORD_BYTES;
    }
    Ok(Loaded {
        records,
        high_ms,
        good_len: offset as u64,
        torn_bytes: (bytes.len() - offset) as u64,
    })
}

fn read_existing(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => File::open(d)?.sync_all(),
        _ => Ok(()),
    }
}

impl ReceiveTimes {
    fn from_inner(inner: Inner) -> ReceiveTimes {
        ReceiveTimes {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the state consistent, so a panic elsewhere
        // while holding the lock does not make it unusable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens (creating it when missing) the times file at `path` for
    /// appending, loading its records. A torn trailing record is dropped and
    /// the file truncated back to the last good record; a damaged record
    /// before the end, or one going back in time, is an error naming its
    /// byte offset.
    pub fn open(path: &Path) -> Result<ReceiveTimes> {
        let bytes = read_existing(path)?;
        let existed = path.exists();
        let loaded = load(path, &bytes)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        if loaded.torn_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                offset = loaded.good_len,
                bytes = loaded.torn_bytes,
                "receive times: dropping a torn trailing record"
            );
            file.set_len(loaded.good_len)
                .and_then(|()| file.sync_data())
                .with_context(|| format!("truncating the torn tail of {}", path.display()))?;
        }
        if !existed {
            sync_parent(path).with_context(|| format!("fsync the dir of {}", path.display()))?;
        }
        Ok(ReceiveTimes::from_inner(Inner {
            backing: Backing::File {
                path: path.to_path_buf(),
                file,
                len: loaded.good_len,
            },
            last_appended_ms: loaded.records.last().map(|_| loaded.high_ms),
            records: loaded.records,
            pending: None,
            high_ms: loaded.high_ms,
            buf: Vec::new(),
        }))
    }

    /// Loads the times file at `path` for lookups only (`wal dump`): never
    /// writes or truncates it, so inspecting a torn file leaves it as it is
    /// (the torn record is ignored). Missing file = empty. Recording through
    /// the handle fails.
    pub fn read_only(path: &Path) -> Result<ReceiveTimes> {
        let bytes = read_existing(path)?;
        let loaded = load(path, &bytes)?;
        Ok(ReceiveTimes::from_inner(Inner {
            backing: Backing::ReadOnly,
            last_appended_ms: loaded.records.last().map(|_| loaded.high_ms),
            records: loaded.records,
            pending: None,
            high_ms: loaded.high_ms,
            buf: Vec::new(),
        }))
    }

    /// An index kept in memory only (tests, and a log without a data dir).
    pub fn in_memory() -> ReceiveTimes {
        ReceiveTimes::from_inner(Inner {
            backing: Backing::Memory,
            records: Vec::new(),
            pending: None,
            last_appended_ms: None,
            high_ms: 0,
            buf: Vec::new(),
        })
    }

    /// Records that every entry up to `last_index` had been received (made
    /// durable) by `at`. Coalesced: appended when [`COALESCE`] passed since
    /// the last appended record or when it is the first, else kept as the
    /// pending record (visible to lookups, appended later). A time before
    /// the newest one is clamped to it; a `last_index` not above the newest
    /// adds nothing and is ignored. Never does file IO: see
    /// [`ReceiveTimes::flush`].
    pub fn record(&self, last_index: u64, at: SystemTime) -> Result<()> {
        let mut g = self.lock();
        g.writable()?;
        if last_index <= g.newest_index() {
            return Ok(());
        }
        let ms = unix_millis_ceil(at).max(g.high_ms);
        g.high_ms = ms;
        let due = g
            .last_appended_ms
            .is_none_or(|last| ms >= last.saturating_add(COALESCE.as_millis() as u64));
        if due {
            // The pending record is more precise for its entries than this one.
            g.append_pending();
            g.append((last_index, ms));
        } else {
            g.pending = Some((last_index, ms));
        }
        Ok(())
    }

    /// Records that entries at and above `index` were replaced (a new leader
    /// overwrote an uncommitted suffix, or a leader snapshot replaced the
    /// log): no record vouches for them any more until a new one is made.
    /// Appends a truncation record (an index below the previous one) when
    /// some record reached that far. Buffered like [`ReceiveTimes::record`];
    /// the log store flushes right after it, before the WAL is overwritten.
    pub fn forget_from(&self, index: u64) -> Result<()> {
        let mut g = self.lock();
        g.writable()?;
        let keep_through = index.saturating_sub(1);
        if g.newest_index() <= keep_through {
            return Ok(());
        }
        g.append_pending();
        truncate_records(&mut g.records, keep_through);
        let ms = g.high_ms;
        g.encode_into_buf((keep_through, ms));
        Ok(())
    }

    /// Writes the pending record and the buffered ones to the file and
    /// `fdatasync`s it. A no-op when nothing is buffered (and for an
    /// in-memory or read-only handle). On a failed write the file is cut
    /// back to its last good record and the buffer kept for the next call.
    pub fn flush(&self) -> Result<()> {
        let mut g = self.lock();
        g.append_pending();
        let inner = &mut *g;
        let Backing::File { path, file, len } = &mut inner.backing else {
            return Ok(());
        };
        if inner.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = file.write_all(&inner.buf) {
            // A partial record must not end up before later ones.
            if let Err(e2) = file.set_len(*len) {
                tracing::warn!(path = %path.display(), error = %e2, "receive times: cutting back a failed write");
            }
            return Err(Error::from(e).context(format!("writing {}", path.display())));
        }
        *len += inner.buf.len() as u64;
        inner.buf.clear();
        file.sync_data()
            .with_context(|| format!("fsync {}", path.display()))
    }

    /// When entry `index` was received, at the latest: the time of the first
    /// record with `last_index >= index`. `None` when no record covers it
    /// yet (received after the newest record, or its record was lost in a
    /// crash and no later one exists): treat it as "not before now".
    pub fn received_at(&self, index: u64) -> Option<SystemTime> {
        let g = self.lock();
        let k = g.records.partition_point(|r| r.0 < index);
        match g.records.get(k) {
            Some(r) => Some(from_millis(r.1)),
            None => g.pending.filter(|p| p.0 >= index).map(|p| from_millis(p.1)),
        }
    }

    /// The highest index such that it and every entry below it had been
    /// received by `t`: the largest `last_index` of a record with time
    /// `<= t` (0 if none). `promote --to-time t` applies up to here.
    pub fn last_index_received_by(&self, t: SystemTime) -> u64 {
        let g = self.lock();
        let t = unix_millis(t);
        if let Some(p) = g.pending.filter(|p| p.1 <= t) {
            return p.0;
        }
        let k = g.records.partition_point(|r| r.1 <= t);
        k.checked_sub(1).map_or(0, |k| g.records[k].0)
    }

    /// Drops records whose `last_index < index` (the WAL released those
    /// entries), keeping at least the newest record. The file is rewritten
    /// atomically (tmp file, fsync, rename, fsync dir), and only when at
    /// least [`PRUNE_MIN_RECORDS`] records would go, so it is cheap to call
    /// at every WAL release.
    pub fn prune_below(&self, index: u64) -> Result<()> {
        let mut g = self.lock();
        g.writable()?;
        let n_drop = g
            .records
            .partition_point(|r| r.0 < index)
            .min(g.records.len().saturating_sub(1));
        if n_drop < PRUNE_MIN_RECORDS {
            return Ok(());
        }
        let inner = &mut *g;
        let kept = &inner.records[n_drop..];
        if let Backing::File { path, file, len } = &mut inner.backing {
            let mut body = Vec::with_capacity(kept.len() * RECORD_BYTES);
            for &(i, ms) in kept {
                body.extend_from_slice(&encode(i, ms));
            }
            let tmp = path.with_extension("log.tmp");
            let rewrite = || -> std::io::Result<File> {
                let mut f = File::create(&tmp)?;
                f.write_all(&body)?;
                f.sync_all()?;
                drop(f);
                std::fs::rename(&tmp, &*path)?;
                sync_parent(path)?;
                OpenOptions::new().append(true).open(&*path)
            };
            *file = rewrite().with_context(|| format!("rewriting {}", path.display()))?;
            *len = body.len() as u64;
            // The buffered records are in `kept` already.
            inner.buf.clear();
        }
        inner.records.drain(..n_drop);
        Ok(())
    }

    /// Records held, the pending one included.
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.records.len() + usize::from(g.pending.is_some())
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every record `(last_index, time)`, oldest first, the pending one included.
    pub fn records(&self) -> Vec<(u64, SystemTime)> {
        self.lock()
            .all()
            .map(|(i, ms)| (i, from_millis(ms)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn at(ms: u64) -> SystemTime {
        from_millis(ms)
    }

    fn ms_records(t: &ReceiveTimes) -> Vec<(u64, u64)> {
        t.records()
            .into_iter()
            .map(|(i, s)| (i, unix_millis(s)))
            .collect()
    }

    fn file_records(path: &Path) -> Vec<(u64, u64)> {
        let b = std::fs::read(path).unwrap();
        assert_eq!(b.len() % RECORD_BYTES, 0);
        b.chunks(RECORD_BYTES).map(|c| decode(c).unwrap()).collect()
    }

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn records_within_100ms_coalesce_into_a_pending_record_lookups_see() {
        let t = ReceiveTimes::in_memory();
        t.record(5, at(T0)).unwrap();
        t.record(7, at(T0 + 10)).unwrap();
        t.record(9, at(T0 + 99)).unwrap();
        // The first is appended, the other two coalesced into one pending record.
        assert_eq!(ms_records(&t), vec![(5, T0), (9, T0 + 99)]);
        assert_eq!(t.received_at(8), Some(at(T0 + 99)));
        // 100 ms after the last appended one: the pending one and this one are appended.
        t.record(12, at(T0 + 100)).unwrap();
        assert_eq!(ms_records(&t), vec![(5, T0), (9, T0 + 99), (12, T0 + 100)]);
        t.record(13, at(T0 + 150)).unwrap();
        assert_eq!(t.len(), 4);
        // An index that adds nothing is ignored.
        t.record(13, at(T0 + 500)).unwrap();
        t.record(3, at(T0 + 600)).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t.received_at(13), Some(at(T0 + 150)));
    }

    #[test]
    fn lookups_at_record_boundaries() {
        let t = ReceiveTimes::in_memory();
        assert_eq!(t.received_at(1), None);
        assert_eq!(t.last_index_received_by(at(T0)), 0);
        t.record(10, at(T0)).unwrap();
        t.record(20, at(T0 + 200)).unwrap();
        t.record(30, at(T0 + 400)).unwrap();
        assert!(t.len() == 3 && !t.is_empty());
        assert_eq!(t.received_at(1), Some(at(T0)));
        assert_eq!(t.received_at(10), Some(at(T0)));
        assert_eq!(t.received_at(11), Some(at(T0 + 200)));
        assert_eq!(t.received_at(20), Some(at(T0 + 200)));
        assert_eq!(t.received_at(30), Some(at(T0 + 400)));
        assert_eq!(t.received_at(31), None, "not covered: not before now");
        assert_eq!(t.last_index_received_by(at(T0 - 1)), 0);
        assert_eq!(t.last_index_received_by(at(T0)), 10);
        assert_eq!(t.last_index_received_by(at(T0 + 199)), 10);
        assert_eq!(t.last_index_received_by(at(T0 + 200)), 20);
        assert_eq!(t.last_index_received_by(at(T0 + 10_000)), 30);
        // A pending record counts for both lookups.
        t.record(35, at(T0 + 450)).unwrap();
        assert_eq!(t.received_at(31), Some(at(T0 + 450)));
        assert_eq!(t.last_index_received_by(at(T0 + 449)), 30);
        assert_eq!(t.last_index_received_by(at(T0 + 450)), 35);
    }

    #[test]
    fn a_time_with_a_fraction_of_a_millisecond_is_rounded_up() {
        let t = ReceiveTimes::in_memory();
        t.record(1, at(T0) + Duration::from_micros(1)).unwrap();
        assert_eq!(t.received_at(1), Some(at(T0 + 1)));
        assert_eq!(t.last_index_received_by(at(T0)), 0);
    }

    #[test]
    fn records_survive_flush_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let t = ReceiveTimes::open(&p).unwrap();
        assert!(t.is_empty());
        t.record(3, at(T0)).unwrap();
        t.record(4, at(T0 + 50)).unwrap();
        t.record(8, at(T0 + 300)).unwrap();
        // Nothing reaches the file before flush.
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        t.record(9, at(T0 + 310)).unwrap();
        t.flush().unwrap();
        let want = vec![(3, T0), (4, T0 + 50), (8, T0 + 300), (9, T0 + 310)];
        assert_eq!(file_records(&p), want);
        drop(t);
        let again = ReceiveTimes::open(&p).unwrap();
        assert_eq!(ms_records(&again), want);
        // The reopened handle keeps appending after them.
        again.record(20, at(T0 + 1000)).unwrap();
        again.flush().unwrap();
        assert_eq!(file_records(&p).len(), 5);
        let ro = ReceiveTimes::read_only(&p).unwrap();
        assert_eq!(ro.received_at(10), Some(at(T0 + 1000)));
        assert!(ro.record(30, at(T0 + 2000)).is_err());
    }

    #[test]
    fn a_torn_trailing_record_is_dropped_and_the_file_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&encode(5, T0));
        bytes.extend_from_slice(&encode(9, T0 + 200));
        let good = bytes.len() as u64;
        // Half a record.
        bytes.extend_from_slice(&encode(12, T0 + 400)[..10]);
        std::fs::write(&p, &bytes).unwrap();
        // Inspecting leaves the file alone.
        let ro = ReceiveTimes::read_only(&p).unwrap();
        assert_eq!(ms_records(&ro), vec![(5, T0), (9, T0 + 200)]);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), bytes.len() as u64);
        let t = ReceiveTimes::open(&p).unwrap();
        assert_eq!(ms_records(&t), vec![(5, T0), (9, T0 + 200)]);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), good);
        // A whole last record with a bad CRC is torn too.
        let mut bad = encode(12, T0 + 400);
        bad[3] ^= 0xff;
        bytes.truncate(good as usize);
        bytes.extend_from_slice(&bad);
        std::fs::write(&p, &bytes).unwrap();
        let t = ReceiveTimes::open(&p).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), good);
        // So is a zero-filled run at the end (the file grew, its data was lost).
        bytes.truncate(good as usize);
        bytes.extend_from_slice(&[0u8; 3 * RECORD_BYTES + 5]);
        std::fs::write(&p, &bytes).unwrap();
        let t = ReceiveTimes::open(&p).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), good);
    }

    #[test]
    fn a_damaged_record_before_the_end_is_an_error_naming_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&encode(5, T0));
        let mut bad = encode(9, T0 + 200);
        bad[9] ^= 0x01;
        bytes.extend_from_slice(&bad);
        bytes.extend_from_slice(&encode(12, T0 + 400));
        std::fs::write(&p, &bytes).unwrap();
        for r in [ReceiveTimes::open(&p), ReceiveTimes::read_only(&p)] {
            let e = r.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("byte offset 24"), "{e}");
        }
        // Nothing was truncated.
        assert_eq!(std::fs::metadata(&p).unwrap().len(), bytes.len() as u64);
        // A good CRC on a record going back in time is refused too.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&encode(5, T0));
        bytes.extend_from_slice(&encode(9, T0 - 1));
        std::fs::write(&p, &bytes).unwrap();
        let e = ReceiveTimes::open(&p).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("byte offset 24")),
            "{e:?}"
        );
    }

    #[test]
    fn a_clock_going_backwards_is_clamped_never_written_decreasing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let t = ReceiveTimes::open(&p).unwrap();
        t.record(5, at(T0 + 5000)).unwrap();
        // The clock jumps back 4 s: clamped to the newest time, so it coalesces.
        t.record(6, at(T0 + 1000)).unwrap();
        assert_eq!(ms_records(&t), vec![(5, T0 + 5000), (6, T0 + 5000)]);
        t.record(7, at(T0 + 1200)).unwrap();
        t.record(8, at(T0 + 5100)).unwrap();
        t.flush().unwrap();
        let f = file_records(&p);
        assert!(f.windows(2).all(|w| w[0].1 <= w[1].1), "{f:?}");
        assert_eq!(f.last(), Some(&(8, T0 + 5100)));
        assert_eq!(ReceiveTimes::open(&p).unwrap().len(), 3);
    }

    #[test]
    fn an_overwritten_suffix_loses_its_old_times_also_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let t = ReceiveTimes::open(&p).unwrap();
        t.record(5, at(T0)).unwrap();
        t.record(10, at(T0 + 200)).unwrap();
        t.record(15, at(T0 + 400)).unwrap();
        // A new leader replaces 8.. (uncommitted): nothing vouches for 8.. now.
        t.forget_from(8).unwrap();
        assert_eq!(ms_records(&t), vec![(5, T0), (7, T0 + 200)]);
        assert_eq!(t.received_at(8), None);
        assert_eq!(t.last_index_received_by(at(T0 + 1000)), 7);
        t.record(12, at(T0 + 3_600_000)).unwrap();
        assert_eq!(t.received_at(8), Some(at(T0 + 3_600_000)));
        // Forgetting from exactly after a record drops the later ones only.
        t.forget_from(8).unwrap();
        assert_eq!(ms_records(&t), vec![(5, T0), (7, T0 + 200)]);
        t.record(9, at(T0 + 3_700_000)).unwrap();
        // Forgetting what no record reaches writes nothing.
        t.forget_from(100).unwrap();
        t.flush().unwrap();
        let want = vec![(5, T0), (7, T0 + 200), (9, T0 + 3_700_000)];
        assert_eq!(ms_records(&t), want);
        assert_eq!(ms_records(&ReceiveTimes::open(&p).unwrap()), want);
        // Forgetting everything.
        let t = ReceiveTimes::open(&p).unwrap();
        t.forget_from(1).unwrap();
        t.flush().unwrap();
        assert!(t.is_empty());
        assert!(ReceiveTimes::open(&p).unwrap().is_empty());
    }

    #[test]
    fn prune_rewrites_only_past_the_threshold_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let t = ReceiveTimes::open(&p).unwrap();
        let n = 3000u64;
        for i in 1..=n {
            t.record(i * 10, at(T0 + i * 100)).unwrap();
        }
        t.flush().unwrap();
        assert_eq!(t.len(), n as usize);
        // Would drop 1000 (< 1024): nothing happens.
        t.prune_below(10_001).unwrap();
        assert_eq!(t.len(), n as usize);
        assert_eq!(file_records(&p).len(), n as usize);
        // Would drop 2000.
        t.prune_below(20_001).unwrap();
        assert_eq!(t.len(), 1000);
        assert_eq!(ms_records(&t).first(), Some(&(20_010, T0 + 2001 * 100)));
        assert_eq!(file_records(&p), ms_records(&t));
        // Appends continue into the rewritten file; unflushed ones survive a prune.
        for i in n + 1..=n + 2000 {
            t.record(i * 10, at(T0 + i * 100)).unwrap();
        }
        // And a pending one.
        t.record(n * 10 + 20_001, at(T0 + (n + 2000) * 100 + 1))
            .unwrap();
        assert_eq!(t.len(), 3001);
        // Everything is below: the newest appended record (and the pending one) stay.
        t.prune_below(u64::MAX).unwrap();
        let last = (n + 2000) * 10;
        assert_eq!(
            ms_records(&t),
            vec![
                (last, T0 + (n + 2000) * 100),
                (last + 1, T0 + (n + 2000) * 100 + 1)
            ]
        );
        assert_eq!(file_records(&p).len(), 1);
        t.flush().unwrap();
        assert_eq!(file_records(&p), ms_records(&t));
        assert_eq!(ms_records(&ReceiveTimes::open(&p).unwrap()), ms_records(&t));
        assert!(!dir.path().join("received-times.log.tmp").exists());
    }

    #[test]
    fn the_handle_is_send_sync_and_clones_share_state() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ReceiveTimes>();
        let a = ReceiveTimes::in_memory();
        let b = a.clone();
        a.record(4, at(T0)).unwrap();
        assert_eq!(b.received_at(4), Some(at(T0)));
    }
}
