//! What `wal verify` reports about a WAL: framing and CRC chain checked,
//! entries counted from their term and index without decoding their data,
//! and the logical checks (an index gap, conflicting metadata).
//!
//! [`summarize`] reads the segments on several threads when it can: etcd
//! starts every segment with a CRC record carrying the chain so far, so
//! each segment can be checked on its own and the chain, the entry indexes
//! and the metadata joined at the segment boundaries afterwards. Only a
//! clean result is taken from that pass; on any problem (or a boundary that
//! does not join) the WAL is read again in one pass, so a damaged WAL is
//! reported exactly as the one-pass reader sees it (its first problem, the
//! counts up to it, the record numbers across the whole WAL).
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use etcd_standby_proto::raftpb;

use crate::error::{Result, WalError};
use crate::frame::{self, RecordType};
use crate::reader::{RecordRef, SegmentEnd, WalReader, WalRecord};
use crate::segment::Segment;

/// Told how reading goes: bytes read (from any of the reading threads),
/// and a restart when the WAL is read again in one pass.
pub trait ReadProgress: Sync {
    /// `bytes` more were read.
    fn read(&self, bytes: u64);
    /// Reading starts again from the beginning.
    fn restart(&self) {}
}

impl<F: Fn(u64) + Sync> ReadProgress for F {
    fn read(&self, bytes: u64) {
        self(bytes)
    }
}

/// Everything one read of a WAL found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalSummary {
    /// Records read (up to a framing problem).
    pub records: u64,
    /// Bytes those records occupy (length fields and padding included).
    pub bytes: u64,
    /// Entry records counted (up to a logical problem).
    pub entries: u64,
    /// Index of the first entry.
    pub first_index: Option<u64>,
    /// Index of the last entry (0 when there is none).
    pub last_index: u64,
    /// Entries whose index is not above the one before (a later leader
    /// rewrote the log's suffix).
    pub rewrites: u64,
    /// `(node ID, cluster ID)` of the metadata records.
    pub metadata: Option<(u64, u64)>,
    /// The last hard state.
    pub state: Option<raftpb::HardState>,
    /// Snapshot records as `(index, term)`.
    pub snapshots: Vec<(u64, u64)>,
    /// How each fully read segment ended.
    pub ends: Vec<SegmentEnd>,
    /// The problem found: the first framing or CRC problem, else the first
    /// logical one.
    pub problem: Option<ProblemRef>,
}

/// A problem [`WalSummary`] reports (a torn tail or corruption), kept
/// cloneable so summaries compare.
#[derive(Debug, Clone, PartialEq)]
pub struct ProblemRef {
    /// True for a torn last record.
    pub torn: bool,
    /// Where it is.
    pub location: crate::error::Location,
    /// What was wrong.
    pub detail: String,
}

impl ProblemRef {
    fn of(e: WalError) -> std::result::Result<Self, WalError> {
        match e {
            WalError::TornTail { location, detail } => Ok(ProblemRef {
                torn: true,
                location,
                detail,
            }),
            WalError::Corrupt { location, detail } => Ok(ProblemRef {
                torn: false,
                location,
                detail,
            }),
            other => Err(other),
        }
    }

    /// The problem as the crate's error.
    pub fn to_error(&self) -> WalError {
        let (location, detail) = (self.location.clone(), self.detail.clone());
        if self.torn {
            WalError::TornTail { location, detail }
        } else {
            WalError::Corrupt { location, detail }
        }
    }
}

/// The per-record checks of one pass (over a whole WAL or one segment).
#[derive(Default)]
struct Pass {
    sum: WalSummary,
    /// The first logical problem; counting of entries stops there.
    logical: Option<ProblemRef>,
    /// The stored CRC of the pass's first record, when it is a CRC record.
    first_crc: Option<u32>,
}

impl Pass {
    /// Takes one record; `Some` is a problem that ends the pass.
    fn record(&mut self, rec: &RecordRef<'_>) -> Option<WalError> {
        let s = &mut self.sum;
        if s.records == 0 && rec.rtype == RecordType::Crc {
            self.first_crc = Some(rec.raw.crc);
        }
        s.records += 1;
        s.bytes += rec.frame_size();
        if self.logical.is_some() {
            return None;
        }
        let logical = |detail: String| ProblemRef {
            torn: false,
            location: rec.location(),
            detail,
        };
        // Entries (nearly every record) are checked from their term and
        // index, without decoding or copying their data.
        if rec.rtype == RecordType::Entry {
            let Some((_, index)) = frame::entry_term_index(rec.raw.data.unwrap_or_default()) else {
                return Some(WalError::Corrupt {
                    location: rec.location(),
                    detail: "entry payload does not decode".into(),
                });
            };
            s.entries += 1;
            if s.first_index.is_some() {
                if index > s.last_index + 1 {
                    self.logical = Some(logical(format!(
                        "entry index {index} leaves a gap after {}",
                        s.last_index
                    )));
                } else if index <= s.last_index {
                    s.rewrites += 1;
                }
            } else {
                s.first_index = Some(index);
            }
            s.last_index = index;
            return None;
        }
        match rec.decode() {
            Err(e) => return Some(e),
            Ok(WalRecord::Metadata(m)) => {
                let ids = (m.node_id, m.cluster_id);
                if s.metadata.is_some_and(|old| old != ids) {
                    self.logical = Some(logical(format!(
                        "metadata conflict: node {:016x} cluster {:016x} differs from the first segment",
                        ids.0, ids.1
                    )));
                }
                s.metadata = Some(ids);
            }
            Ok(WalRecord::State(hs)) => s.state = Some(hs),
            Ok(WalRecord::Snapshot(snap)) => s.snapshots.push((snap.index, snap.term)),
            Ok(WalRecord::Entry(_) | WalRecord::Crc(_)) => {}
        }
        None
    }

    /// Reads `reader` to its end or first problem. `progress` gets the bytes
    /// read about once per MiB; `stop` ends the pass early (unfinished).
    fn run(
        mut self,
        mut reader: WalReader,
        progress: &dyn ReadProgress,
        stop: Option<&AtomicBool>,
    ) -> Result<Option<(Pass, u32)>> {
        const STEP: u64 = 1 << 20;
        let mut unreported = 0u64;
        let problem = loop {
            let rec = match reader.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break None,
                Err(e) => break Some(e),
            };
            unreported += rec.frame_size();
            if unreported >= STEP {
                progress.read(std::mem::take(&mut unreported));
                if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                    return Ok(None);
                }
            }
            if let Some(p) = self.record(&rec) {
                break Some(p);
            }
        };
        progress.read(unreported);
        let problem = problem.map(ProblemRef::of).transpose()?;
        self.sum.problem = problem.or_else(|| self.logical.take());
        self.sum.ends = reader.segment_ends().to_vec();
        Ok(Some((self, reader.crc())))
    }
}

/// Reads the WAL `segments` (in order, as [`crate::list_segments`] gives
/// them) and summarizes it; on up to `threads` threads when there are
/// several segments. `progress` is called with bytes read as reading goes
/// (from any of the threads). IO errors are errors; damage is the
/// summary's `problem`.
pub fn summarize(
    segments: Vec<Segment>,
    threads: usize,
    progress: &dyn ReadProgress,
) -> Result<WalSummary> {
    if threads > 1 && segments.len() > 1 {
        let n = segments.len();
        if let Some(s) = join(by_segment(&segments, threads.min(n), progress)) {
            return Ok(s);
        }
        progress.restart();
    }
    summarize_in_one_pass(segments, progress)
}

/// [`summarize`] on one thread, record after record.
pub fn summarize_in_one_pass(
    segments: Vec<Segment>,
    progress: &dyn ReadProgress,
) -> Result<WalSummary> {
    let pass = Pass::default().run(WalReader::from_segments(segments), progress, None)?;
    Ok(pass.map(|(p, _)| p.sum).unwrap_or_default())
}

/// A clean segment pass and the CRC chain at its end.
type Part = (Pass, u32);

/// Each segment on its own, `threads` at a time. A segment's slot stays
/// `None` unless it was read to its end with no problem (an IO error or
/// damage stops the other threads; the one-pass read then reports it).
fn by_segment(
    segments: &[Segment],
    threads: usize,
    progress: &dyn ReadProgress,
) -> Vec<Option<Part>> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<Part>>> = segments.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(seg) = segments.get(k) else { break };
                    let mut reader = WalReader::from_segments(vec![seg.clone()]);
                    if k + 1 < segments.len() {
                        reader = reader.followed_by_more();
                    }
                    match Pass::default().run(reader, progress, Some(&stop)) {
                        Ok(Some(part)) if part.0.sum.problem.is_none() => {
                            if let Ok(mut slot) = slots[k].lock() {
                                *slot = Some(part);
                            }
                        }
                        _ => stop.store(true, Ordering::Relaxed),
                    }
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|m| m.into_inner().ok().flatten())
        .collect()
}

/// Joins clean segment passes into the summary one pass would give; `None`
/// when a part is missing or has a problem, or the parts do not join (the
/// CRC chain, the entry indexes or the metadata across a boundary): the
/// caller then reads the WAL in one pass to report it exactly.
fn join(parts: Vec<Option<Part>>) -> Option<WalSummary> {
    let mut sum = WalSummary::default();
    let mut chain = 0u32;
    for (k, part) in parts.into_iter().enumerate() {
        let (pass, end_crc) = part?;
        let s = pass.sum;
        if k > 0 {
            // The one-pass reader checks a CRC record against the chain
            // so far (unless that is still 0); a segment read alone took
            // its first one as given.
            match pass.first_crc {
                Some(c) if chain == 0 || c == chain => {}
                _ => return None,
            }
        }
        chain = end_crc;
        if let (Some(old), Some(new)) = (sum.metadata, s.metadata)
            && old != new
        {
            return None;
        }
        if let Some(first) = s.first_index {
            if sum.first_index.is_some() {
                if first > sum.last_index + 1 {
                    return None;
                }
                if first <= sum.last_index {
                    sum.rewrites += 1;
                }
            } else {
                sum.first_index = Some(first);
            }
            sum.last_index = s.last_index;
        }
        sum.records += s.records;
        sum.bytes += s.bytes;
        sum.entries += s.entries;
        sum.rewrites += s.rewrites;
        sum.metadata = sum.metadata.or(s.metadata);
        sum.state = s.state.or(sum.state);
        sum.snapshots.extend(s.snapshots);
        sum.ends.extend(s.ends);
    }
    Some(sum)
}
