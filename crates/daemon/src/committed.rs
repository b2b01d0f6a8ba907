//! The one source of committed entries for replay.
//!
//! The node loop [`CommittedTail::publish`]es each batch of newly committed
//! entries after they are durable: the entries go into an in-memory tail of
//! recent entries and the commit point goes into a `watch`. Replay follows
//! the watch and reads with a [`CommittedReader`]: from the tail when it
//! holds the next entry, otherwise from the durable local WAL. Nothing is
//! ever dropped, so there is no gap detection and no stall timer.
//!
//! The tail only evicts entries the WAL can deliver: an entry leaves the
//! tail only once the WAL's own hard state says it is committed
//! (`index <= durable_commit`), because the WAL reader is gated by that
//! hard state. So every index up to the published commit point is always
//! readable from one of the two.
//!
//! [`Retention`] is the other direction: a handle owned by the log store
//! that replay advances, below which WAL segments may be released.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use etcd_standby_proto::raftpb;
use etcd_standby_wal::{CommittedEnd, for_each_assuming_committed};
use tokio::sync::watch;

use crate::error::{Context, Result};

/// What the node loop has handed out so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitPoint {
    /// Highest committed index handed out (durable locally).
    pub index: u64,
    /// Payload bytes of all committed entries handed out by this process.
    pub bytes_total: u64,
}

/// Bounds of the in-memory tail.
#[derive(Debug, Clone, Copy)]
pub struct TailLimits {
    /// Most entries kept (beyond those the WAL cannot deliver yet).
    pub max_entries: usize,
    /// Most payload bytes kept (same exception).
    pub max_bytes: usize,
}

impl Default for TailLimits {
    fn default() -> Self {
        TailLimits {
            max_entries: 8192,
            max_bytes: 16 << 20,
        }
    }
}

#[derive(Debug, Default)]
struct Tail {
    /// Contiguous committed entries with the time they were handed out.
    entries: VecDeque<(Instant, raftpb::Entry)>,
    bytes: usize,
    /// The WAL's own commit index as last published: entries at or below
    /// it may leave the tail.
    durable_commit: u64,
}

impl Tail {
    /// Drops entries from the front while `evict` says so and the WAL can
    /// deliver them (`index <= durable_commit`).
    fn evict_front(&mut self, mut evict: impl FnMut(&Tail, u64) -> bool) {
        while let Some(i) = self.entries.front().map(|(_, f)| f.index)
            && i <= self.durable_commit
            && evict(self, i)
        {
            if let Some((_, f)) = self.entries.pop_front() {
                self.bytes -= payload(&f);
            }
        }
    }
}

/// An entry's payload bytes.
pub(crate) fn payload(e: &raftpb::Entry) -> usize {
    e.data.as_ref().map_or(0, |d| d.len())
}

/// The writer side, owned by the node loop.
#[derive(Debug)]
pub struct CommittedTail {
    tail: Arc<Mutex<Tail>>,
    point: watch::Sender<CommitPoint>,
    limits: TailLimits,
}

impl CommittedTail {
    /// A new, empty tail; `wal_dir` is where the reader falls back to.
    pub fn new(limits: TailLimits, wal_dir: PathBuf) -> (CommittedTail, CommittedReader) {
        let tail = Arc::new(Mutex::new(Tail::default()));
        let (tx, rx) = watch::channel(CommitPoint::default());
        (
            CommittedTail {
                tail: tail.clone(),
                point: tx,
                limits,
            },
            CommittedReader {
                tail,
                point: rx,
                wal_dir,
                assume_committed: 0,
                max_bytes: DEFAULT_READ_BYTES,
            },
        )
    }

    /// Hands out newly committed entries (in order, already durable).
    /// `durable_commit` is the commit index in the WAL's own hard state:
    /// only entries at or below it may be evicted.
    pub fn publish(&self, committed: Vec<raftpb::Entry>, durable_commit: u64) {
        let Some(last) = committed.last().map(|e| e.index) else {
            return;
        };
        let now = Instant::now();
        let mut added = 0u64;
        if let Ok(mut t) = self.tail.lock() {
            for e in committed {
                // Not contiguous (a leader snapshot in between): start over.
                if t.entries
                    .back()
                    .is_some_and(|(_, b)| b.index + 1 != e.index)
                {
                    t.entries.clear();
                    t.bytes = 0;
                }
                added += payload(&e) as u64;
                t.bytes += payload(&e);
                t.entries.push_back((now, e));
            }
            t.durable_commit = t.durable_commit.max(durable_commit);
            let limits = self.limits;
            t.evict_front(|t, _| {
                t.entries.len() > limits.max_entries || t.bytes > limits.max_bytes
            });
        }
        self.point.send_modify(|p| {
            p.index = p.index.max(last);
            p.bytes_total += added;
        });
    }

    /// At start: everything up to the log's durable commit is committed and
    /// readable from the WAL, whether or not the core hands it out again.
    pub fn resume(&self, durable_commit: u64) {
        self.point
            .send_modify(|p| p.index = p.index.max(durable_commit));
    }

    /// A leader snapshot at `index` was made durable: the entries up to it
    /// exist only in its db, so the tail starts over and the commit point
    /// moves to it (a reader then finds the jump in the WAL and reconciles).
    pub fn snapshot(&self, index: u64) {
        if let Ok(mut t) = self.tail.lock() {
            t.entries.clear();
            t.bytes = 0;
        }
        self.point.send_modify(|p| p.index = p.index.max(index));
    }
}

/// What [`CommittedReader::read`] found after an index.
#[derive(Debug)]
pub enum Read {
    /// The next committed entries, contiguous from `after + 1`, each with
    /// the time it was handed out (read time for WAL reads).
    Entries(Vec<(Instant, raftpb::Entry)>),
    /// The log jumps over `after + 1` with a leader snapshot at `index`.
    NeedSnapshot {
        /// Snapshot index.
        index: u64,
    },
    /// Nothing committed after `after` yet.
    Nothing,
}

/// Where a read was served from (for tests and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The in-memory tail.
    Tail,
    /// The local WAL.
    Wal,
}

/// The reader side, owned by replay.
#[derive(Debug, Clone)]
pub struct CommittedReader {
    tail: Arc<Mutex<Tail>>,
    point: watch::Receiver<CommitPoint>,
    wal_dir: PathBuf,
    /// WAL entries beyond the hard state's commit count as committed up to here.
    assume_committed: u64,
    /// Payload bytes one read returns at most (the first entry always).
    max_bytes: usize,
}

/// Payload bytes one [`CommittedReader::read`] returns at most by default:
/// a read's entries (and the effects that borrow their bytes) are replay's
/// largest transient allocation, so it is bounded by bytes as well as by
/// count (4096 entries of 1.5 MiB would be 6 GiB).
pub const DEFAULT_READ_BYTES: usize = 8 << 20;

impl CommittedReader {
    /// A reader that also delivers the WAL's unconfirmed tail (entries
    /// durable beyond the last commit we were told) up to `index`: only
    /// promotion with `--apply-unconfirmed-tail` wants that.
    pub fn assuming_committed(mut self, index: u64) -> CommittedReader {
        self.assume_committed = index;
        self
    }

    /// Bounds the payload bytes of one read (at least one entry is returned).
    pub fn with_read_bytes(mut self, max_bytes: usize) -> CommittedReader {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Replay has applied everything up to `index` and will not read it
    /// again from this reader: the tail lets those entries go (the ones the
    /// WAL can deliver), so an idle replicator holds no recent entries, nor
    /// the received messages their payloads point into. A later read of one
    /// (a restarted replay) comes from the WAL.
    pub fn release_through(&self, index: u64) {
        if let Ok(mut t) = self.tail.lock() {
            t.evict_front(|_, i| i <= index);
            if t.entries.is_empty() {
                t.entries = VecDeque::new();
            }
        }
    }

    /// The latest commit point.
    pub fn point(&self) -> CommitPoint {
        *self.point.borrow()
    }

    /// Waits until something after `applied` is committed. Returns `false`
    /// when the node loop is gone (and nothing more will come).
    pub async fn wait_beyond(&mut self, applied: u64) -> bool {
        self.point.wait_for(|p| p.index > applied).await.is_ok()
    }

    /// Up to `max` committed entries after `after`, from the tail if it
    /// holds `after + 1`, else from the WAL (blocking file IO).
    pub fn read(&self, after: u64, max: usize) -> Result<(Read, Source)> {
        let up_to = self.point().index;
        if up_to <= after {
            return Ok((Read::Nothing, Source::Tail));
        }
        if let Ok(t) = self.tail.lock()
            && let Some((_, front)) = t.entries.front()
            && front.index <= after + 1
            && t.entries.back().is_some_and(|(_, b)| b.index > after)
        {
            let skip = (after + 1 - front.index) as usize;
            let mut budget = ReadBudget::new(self.max_bytes);
            let out: Vec<_> = t
                .entries
                .iter()
                .skip(skip)
                .take(max)
                .take_while(|(_, e)| budget.admit(e))
                .cloned()
                .collect();
            return Ok((Read::Entries(out), Source::Tail));
        }
        let mut out = Vec::new();
        let mut budget = ReadBudget::new(self.max_bytes);
        let now = Instant::now();
        let end =
            for_each_assuming_committed(&self.wal_dir, after, up_to, self.assume_committed, |e| {
                if !budget.admit(&e) {
                    return false;
                }
                out.push((now, e));
                out.len() < max
            })
            .with_context(|| {
                format!(
                    "reading committed entries after {after} from {}",
                    self.wal_dir.display()
                )
            })?;
        if !out.is_empty() {
            return Ok((Read::Entries(out), Source::Wal));
        }
        Ok(match end {
            CommittedEnd::NeedSnapshot { index, .. } => (Read::NeedSnapshot { index }, Source::Wal),
            _ => (Read::Nothing, Source::Wal),
        })
    }
}

/// The payload budget of one read, the same from the tail and the WAL: an
/// entry is admitted while the bytes so far stay within it, the first
/// always (an empty entry counts one byte).
struct ReadBudget {
    used: usize,
    max: usize,
}

impl ReadBudget {
    fn new(max: usize) -> ReadBudget {
        ReadBudget { used: 0, max }
    }

    fn admit(&mut self, e: &raftpb::Entry) -> bool {
        let first = self.used == 0;
        self.used += payload(e).max(1);
        first || self.used <= self.max
    }
}

/// The index below which the local WAL may be released. Owned by the log
/// store; replay advances it to what a restart still needs. `u64::MAX`
/// (nothing downstream needs old entries) for a log-only learner.
#[derive(Debug, Clone)]
pub struct Retention(Arc<AtomicU64>);

impl Retention {
    /// A handle that keeps everything until advanced.
    pub fn keep_all() -> Retention {
        Retention(Arc::new(AtomicU64::new(0)))
    }

    /// A handle that keeps nothing for anyone downstream.
    pub fn unneeded() -> Retention {
        Retention(Arc::new(AtomicU64::new(u64::MAX)))
    }

    /// The current floor.
    pub fn floor(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Replay: entries before `floor` are no longer needed for a restart.
    pub fn set_floor(&self, floor: u64) {
        self.0.store(floor, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_standby_proto::etcdserverpb::Metadata;
    use etcd_standby_wal::WalWriter;

    fn entry(index: u64) -> raftpb::Entry {
        raftpb::Entry {
            term: 1,
            index,
            r#type: 0,
            data: Some(vec![b'x'; 10].into()),
        }
    }

    fn hs(commit: u64) -> raftpb::HardState {
        raftpb::HardState {
            term: 1,
            vote: 0,
            commit,
        }
    }

    fn indexes(r: &Read) -> Vec<u64> {
        match r {
            Read::Entries(v) => v.iter().map(|(_, e)| e.index).collect(),
            _ => Vec::new(),
        }
    }

    /// A WAL holding entries 1..=n with commit n, as the node writes it.
    fn wal_with(dir: &std::path::Path, n: u64) -> std::path::PathBuf {
        let wal = dir.join("wal");
        let mut w = WalWriter::create(&wal, &Metadata::default()).unwrap_or_else(|e| panic!("{e}"));
        let es: Vec<_> = (1..=n).map(entry).collect();
        w.save(Some(&hs(n)), &es).unwrap_or_else(|e| panic!("{e}"));
        w.sync().unwrap_or_else(|e| panic!("{e}"));
        wal
    }

    /// A tail over a fresh WAL holding entries 1..=n with commit n (the dir
    /// lives as long as the returned guard).
    fn tail_over(
        n: u64,
        limits: TailLimits,
    ) -> (tempfile::TempDir, CommittedTail, CommittedReader) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let wal = wal_with(dir.path(), n);
        let (tail, reader) = CommittedTail::new(limits, wal);
        (dir, tail, reader)
    }

    #[test]
    fn reads_the_tail_then_falls_back_to_the_wal_after_eviction() {
        let limits = TailLimits {
            max_entries: 10,
            max_bytes: usize::MAX,
        };
        let (_dir, tail, reader) = tail_over(100, limits);
        tail.publish((1..=100).map(entry).collect(), 100);
        assert_eq!(reader.point().index, 100);
        assert_eq!(reader.point().bytes_total, 1000);
        // 90 and below were evicted (the WAL has them): served from the WAL.
        let (r, src) = reader.read(0, 5).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((indexes(&r), src), (vec![1, 2, 3, 4, 5], Source::Wal));
        // 90 is not in the tail: the WAL path serves it (and what follows).
        let (r, src) = reader.read(89, 5).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((indexes(&r), src), (vec![90, 91, 92, 93, 94], Source::Wal));
        // The hand-over: from 91 on the tail serves.
        let (r, src) = reader.read(90, 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(src, Source::Tail);
        assert_eq!(indexes(&r), (91..=100).collect::<Vec<_>>());
        let (r, _) = reader.read(100, 100).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(r, Read::Nothing));
    }

    #[test]
    fn applied_entries_leave_the_tail_only_when_the_wal_can_deliver_them() {
        let (_dir, tail, reader) = tail_over(81, TailLimits::default());
        // Handed out up to 80 while the WAL's hard state said 60.
        tail.publish((1..=80).map(entry).collect(), 60);
        let (_, src) = reader.read(0, 5).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(src, Source::Tail, "within the limits everything stays");
        reader.release_through(70);
        // 1..=60 went (the WAL has them); 61..=70 stay: the WAL cannot
        // deliver them yet.
        let (r, src) = reader.read(0, 5).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((indexes(&r), src), (vec![1, 2, 3, 4, 5], Source::Wal));
        let (r, src) = reader.read(60, 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(src, Source::Tail);
        assert_eq!(indexes(&r), (61..=80).collect::<Vec<_>>());
        // Once the WAL's commit covers them, they go too.
        tail.publish(vec![entry(81)], 81);
        reader.release_through(81);
        let (r, src) = reader.read(60, 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(src, Source::Wal);
        assert_eq!(indexes(&r).first(), Some(&61));
    }

    #[test]
    fn a_read_is_bounded_by_payload_bytes_from_the_tail_and_from_the_wal() {
        let limits = TailLimits {
            max_entries: 10,
            max_bytes: usize::MAX,
        };
        let (_dir, tail, reader) = tail_over(100, limits);
        let reader = reader.with_read_bytes(25);
        tail.publish((1..=100).map(entry).collect(), 100);
        // Entries carry 10 payload bytes: two fit in 25, from either source.
        let (r, src) = reader.read(0, 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((indexes(&r), src), (vec![1, 2], Source::Wal));
        let (r, src) = reader.read(92, 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((indexes(&r), src), (vec![93, 94], Source::Tail));
        // One entry bigger than the budget still comes alone.
        let reader = reader.with_read_bytes(1);
        let (r, _) = reader.read(0, 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(indexes(&r), vec![1]);
        let (r, _) = reader.read(95, 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(indexes(&r), vec![96]);
    }

    #[test]
    fn never_evicts_what_the_wal_cannot_deliver_yet() {
        // The WAL's hard state says 3 is committed; entries up to 50 were handed out.
        let limits = TailLimits {
            max_entries: 2,
            max_bytes: 0,
        };
        let (_dir, tail, reader) = tail_over(3, limits);
        tail.publish((1..=50).map(entry).collect(), 3);
        // 4..=50 stay although over both limits; 1..=3 were evicted.
        let (r, src) = reader.read(3, 1000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(src, Source::Tail);
        assert_eq!(indexes(&r), (4..=50).collect::<Vec<_>>());
        let (r, src) = reader.read(0, 1000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((indexes(&r), src), (vec![1, 2, 3], Source::Wal));
    }

    #[test]
    fn a_jump_restarts_the_tail() {
        let (_dir, tail, reader) = tail_over(5, TailLimits::default());
        tail.publish((1..=5).map(entry).collect(), 5);
        tail.publish((20..=22).map(entry).collect(), 5);
        let (r, src) = reader.read(19, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((indexes(&r), src), (vec![20, 21, 22], Source::Tail));
        // 6..=19 are in neither: the WAL says nothing more is committed.
        let (r, _) = reader.read(5, 10).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(r, Read::Nothing));
    }

    #[test]
    fn a_leader_snapshot_moves_the_commit_point_and_the_reader_finds_the_jump() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let wal = dir.path().join("wal");
        let mut w = WalWriter::create(&wal, &Metadata::default()).unwrap_or_else(|e| panic!("{e}"));
        let es: Vec<_> = (1..=5).map(entry).collect();
        w.save(Some(&hs(5)), &es).unwrap_or_else(|e| panic!("{e}"));
        w.save_snapshot(&etcd_standby_proto::walpb::Snapshot {
            index: 50,
            term: 1,
            conf_state: None,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        w.save(Some(&hs(50)), &[]).unwrap_or_else(|e| panic!("{e}"));
        w.sync().unwrap_or_else(|e| panic!("{e}"));
        let (tail, reader) = CommittedTail::new(TailLimits::default(), wal);
        tail.publish(es, 5);
        tail.snapshot(50);
        assert_eq!(reader.point().index, 50);
        let (r, src) = reader.read(5, 10).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(r, Read::NeedSnapshot { index: 50 }), "{r:?}");
        assert_eq!(src, Source::Wal);
        // Entries after the snapshot come from the tail again.
        tail.publish(vec![entry(51)], 50);
        let (r, src) = reader.read(50, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((indexes(&r), src), (vec![51], Source::Tail));
    }

    #[tokio::test]
    async fn wait_beyond_wakes_on_publish_and_ends_when_the_node_is_gone() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (tail, mut reader) = CommittedTail::new(TailLimits::default(), dir.path().join("wal"));
        let waiter = tokio::spawn(async move {
            let first = reader.wait_beyond(0).await;
            let second = reader.wait_beyond(1).await;
            (first, second)
        });
        tail.publish(vec![entry(1)], 1);
        tokio::task::yield_now().await;
        drop(tail);
        let got = waiter.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, (true, false));
    }
}
