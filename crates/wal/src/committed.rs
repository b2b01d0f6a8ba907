//! Streaming the *committed* entries of a WAL in index order, for replay.
//!
//! A WAL can hold an entry index more than once (an uncommitted suffix later
//! overwritten by a new leader). An entry is final once a hard state record
//! after it says it is committed, so entries are buffered until then: memory
//! stays bounded by the uncommitted window, not the WAL size.

use std::collections::VecDeque;
use std::path::Path;

use etcd_standby_proto::raftpb;

use crate::error::{Result, WalError};
use crate::reader::{WalReader, WalRecord};
use crate::segment::list_segments;

/// Why [`for_each_committed`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommittedEnd {
    /// Every committed entry up to the limit was delivered; the last one is given (or `after`).
    Done(u64),
    /// The callback asked to stop after this index.
    Stopped(u64),
    /// The log jumps over the next index with a snapshot at `index`: the
    /// entries in between exist only in that snapshot's db.
    NeedSnapshot {
        /// Snapshot index.
        index: u64,
        /// Snapshot term.
        term: u64,
    },
}

/// Calls `f` for each committed entry with `after < index <= up_to`, in
/// order, each once. `f` returns `false` to stop. Segments that end before
/// `after` are skipped. A torn tail ends the scan (a live writer may be
/// mid-record).
pub fn for_each_committed<F>(dir: &Path, after: u64, up_to: u64, f: F) -> Result<CommittedEnd>
where
    F: FnMut(raftpb::Entry) -> bool,
{
    for_each_assuming_committed(dir, after, up_to, 0, f)
}

/// [`for_each_committed`], but the entries left at the end of the log
/// beyond the last hard state's commit (the *unconfirmed tail*: durable
/// here, not known to be committed) count as committed up to
/// `assume_committed`. Promotion uses it when the operator chooses to apply
/// that tail (a new raft leader may well have committed it).
pub fn for_each_assuming_committed<F>(
    dir: &Path,
    after: u64,
    up_to: u64,
    assume_committed: u64,
    mut f: F,
) -> Result<CommittedEnd>
where
    F: FnMut(raftpb::Entry) -> bool,
{
    let segments = list_segments(dir)?;
    // Start at the last segment whose first index is ≤ after + 1.
    let start = segments
        .iter()
        .rposition(|s| s.index <= after.saturating_add(1))
        .unwrap_or(0);
    let mut reader = WalReader::from_segments(segments[start..].to_vec());
    let mut st = State {
        pending: VecDeque::new(),
        emitted: after,
        commit: 0,
        stopped: false,
    };
    loop {
        let rec = match reader.next_record() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) if e.is_torn_tail() => break,
            Err(e) => return Err(e),
        };
        let location = rec.location();
        match rec.decode()? {
            WalRecord::Entry(e) => {
                if e.index <= st.emitted {
                    continue;
                }
                while st.pending.back().is_some_and(|p| p.index >= e.index) {
                    st.pending.pop_back();
                }
                let expected = st.pending.back().map_or(st.emitted + 1, |b| b.index + 1);
                if e.index != expected {
                    return Err(WalError::Corrupt {
                        location,
                        detail: format!(
                            "entry {} where {expected} was expected: a gap in the log",
                            e.index
                        ),
                    });
                }
                st.pending.push_back(e);
            }
            WalRecord::State(hs) => st.commit = st.commit.max(hs.commit),
            WalRecord::Snapshot(s) => {
                st.flush(up_to, &mut f);
                if st.stopped {
                    return Ok(CommittedEnd::Stopped(st.emitted));
                }
                if s.index > st.emitted && s.index > st.commit {
                    // A leader snapshot: the log restarts after it, and what
                    // we held past our commit was superseded.
                    st.pending.clear();
                    if st.emitted < up_to {
                        return Ok(CommittedEnd::NeedSnapshot {
                            index: s.index,
                            term: s.term,
                        });
                    }
                }
            }
            WalRecord::Metadata(_) | WalRecord::Crc(_) => {}
        }
        st.flush(up_to, &mut f);
        if st.stopped {
            return Ok(CommittedEnd::Stopped(st.emitted));
        }
        if st.emitted >= up_to {
            return Ok(CommittedEnd::Done(st.emitted));
        }
    }
    // The end of the log: what is still pending is the unconfirmed tail.
    st.commit = st.commit.max(assume_committed);
    st.flush(up_to, &mut f);
    if st.stopped {
        return Ok(CommittedEnd::Stopped(st.emitted));
    }
    Ok(CommittedEnd::Done(st.emitted))
}

struct State {
    pending: VecDeque<raftpb::Entry>,
    emitted: u64,
    commit: u64,
    stopped: bool,
}

impl State {
    /// Delivers buffered entries that are committed and within the limit.
    fn flush<F: FnMut(raftpb::Entry) -> bool>(&mut self, up_to: u64, f: &mut F) {
        let limit = self.commit.min(up_to);
        while !self.stopped && self.pending.front().is_some_and(|p| p.index <= limit) {
            let Some(e) = self.pending.pop_front() else {
                break;
            };
            self.emitted = e.index;
            if !f(e) {
                self.stopped = true;
            }
        }
    }
}

/// Where a WAL ends: its last entry index and the highest commit its hard
/// states record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalEnd {
    /// Index of the last entry (or of a later snapshot record); 0 if none.
    pub last_index: u64,
    /// Highest hard-state commit; 0 if none.
    pub commit: u64,
}

/// [`WalEnd`] of the WAL in `dir`, reading only the last segments (from the
/// end backwards until both are known). A torn tail ends a segment.
pub fn wal_end(dir: &Path) -> Result<WalEnd> {
    let segments = list_segments(dir)?;
    let mut end = WalEnd::default();
    for seg in segments.iter().rev() {
        let mut reader = WalReader::from_segments(vec![seg.clone()]);
        let mut last = None;
        loop {
            let rec = match reader.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) if e.is_torn_tail() => break,
                Err(e) => return Err(e),
            };
            match rec.decode()? {
                WalRecord::Entry(e) => last = Some(e.index),
                WalRecord::State(hs) => end.commit = end.commit.max(hs.commit),
                WalRecord::Snapshot(s) => last = Some(last.unwrap_or(0).max(s.index)),
                WalRecord::Metadata(_) | WalRecord::Crc(_) => {}
            }
        }
        if end.last_index == 0
            && let Some(l) = last
        {
            end.last_index = l;
        }
        if end.last_index > 0 && end.commit > 0 {
            break;
        }
    }
    Ok(end)
}
