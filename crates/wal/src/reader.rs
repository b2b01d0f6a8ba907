//! Streaming WAL reader: walks every segment in order, checks framing and the
//! CRC-32C chain, and classifies damage as a torn tail or mid-log corruption.
//! Memory is bounded by the largest record, not by the WAL size.
use crate::error::{Location, Result, WalError};
use crate::frame::{self, RawRecord, RecordType};
use crate::segment::{Segment, list_segments};
use etcd_standby_proto::{Message, etcdserverpb, raftpb, walpb};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

const READ_CHUNK: usize = 1 << 20;

/// A decoded WAL record payload.
#[derive(Debug, Clone, PartialEq)]
pub enum WalRecord {
    /// Node and cluster ID (identical in every segment).
    Metadata(etcdserverpb::Metadata),
    /// A raft log entry.
    Entry(raftpb::Entry),
    /// Raft hard state (term, vote, commit).
    State(raftpb::HardState),
    /// CRC seed carried over from the previous segment.
    Crc(u32),
    /// A snapshot marker (index, term, 3.5: conf state).
    Snapshot(walpb::Snapshot),
}

/// One record as read, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// Index into [`WalReader::segments`].
    pub segment: usize,
    /// Byte offset of the length field in the segment file.
    pub offset: u64,
    /// Raw 8-byte length field.
    pub len_field: u64,
    /// Protobuf length.
    pub len: u64,
    /// Zero padding after the protobuf bytes.
    pub pad: u64,
    /// 0-based record number across the WAL.
    pub record_index: u64,
    /// Record type.
    pub rtype: RecordType,
    /// The parsed envelope (type, stored crc, payload).
    pub raw: RawRecord<'a>,
    path: &'a Path,
}

impl RecordRef<'_> {
    /// Where this record is.
    pub fn location(&self) -> Location {
        Location {
            file: self.path.to_path_buf(),
            offset: self.offset,
            record_index: self.record_index,
        }
    }

    /// Total bytes the record occupies on disk (length field + data + padding).
    pub fn frame_size(&self) -> u64 {
        8 + self.len + self.pad
    }

    /// Decodes the payload into typed form. A payload that does not decode is
    /// corruption (its CRC matched, so this is not a torn write).
    pub fn decode(&self) -> Result<WalRecord> {
        let data = self.raw.data.unwrap_or_default();
        let bad = |what: &str, e: prost::DecodeError| WalError::Corrupt {
            location: self.location(),
            detail: format!("{what} payload does not decode: {e}"),
        };
        Ok(match self.rtype {
            RecordType::Metadata => WalRecord::Metadata(
                etcdserverpb::Metadata::decode(data).map_err(|e| bad("metadata", e))?,
            ),
            RecordType::Entry => {
                WalRecord::Entry(raftpb::Entry::decode(data).map_err(|e| bad("entry", e))?)
            }
            RecordType::State => {
                WalRecord::State(raftpb::HardState::decode(data).map_err(|e| bad("state", e))?)
            }
            RecordType::Crc => WalRecord::Crc(self.raw.crc),
            RecordType::Snapshot => {
                WalRecord::Snapshot(walpb::Snapshot::decode(data).map_err(|e| bad("snapshot", e))?)
            }
        })
    }
}

struct OpenSegment {
    file: Box<dyn Read + Send>,
    size: u64,
    buf: Vec<u8>,
    /// Start of unread data in `buf`.
    start: usize,
    /// End of the bytes read into `buf`.
    end: usize,
    /// File offset of `buf[start]`.
    off: u64,
}

impl OpenSegment {
    /// Makes at least `want` bytes available from `start` (fewer only at EOF);
    /// returns how many are available.
    #[inline(always)]
    fn fill(&mut self, want: usize, path: &Path) -> Result<usize> {
        let avail = self.end - self.start;
        if avail >= want {
            return Ok(avail);
        }
        self.refill(want, path)
    }

    /// [`Self::fill`] when the buffer holds fewer than `want` bytes.
    #[inline(never)]
    fn refill(&mut self, want: usize, path: &Path) -> Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let remaining_in_file = self.size.saturating_sub(self.off + self.end as u64);
        let target = want
            .max(READ_CHUNK)
            .min(self.end + usize::try_from(remaining_in_file).unwrap_or(usize::MAX));
        if self.buf.len() < target {
            // Grows only for records larger than the buffer; never shrinks.
            self.buf.resize(target, 0);
        }
        while self.end < target {
            match self.file.read(&mut self.buf[self.end..target]) {
                Ok(0) => break,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(WalError::io(path, e)),
            }
        }
        Ok(self.end - self.start)
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.off += n as u64;
    }
}

/// Reads a WAL directory record by record.
pub struct WalReader {
    segments: Vec<Segment>,
    /// In-memory segment contents (same order as `segments`), for tests and fuzzing.
    memory: Option<Vec<bytes::Bytes>>,
    cur: usize,
    open: Option<OpenSegment>,
    crc: u32,
    record_index: u64,
    done: bool,
    /// Bytes of the record last returned, consumed on the next call.
    pending: usize,
    /// Where reading stopped cleanly in each finished segment (offset of the
    /// zero length field or EOF) and why.
    ends: Vec<SegmentEnd>,
    /// More segments follow the ones given (a part of a WAL read on its
    /// own): the last one given is then not the WAL's last, where alone a
    /// damaged record can be a torn write.
    more_follow: bool,
}

/// How a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEnd {
    /// Segment file.
    pub path: PathBuf,
    /// Offset just after the last valid record.
    pub end_offset: u64,
    /// File size.
    pub file_size: u64,
    /// True if a zero length field (preallocated tail) ended it, false for EOF.
    pub zero_tail: bool,
}

impl WalReader {
    /// Opens a WAL directory (`member/wal`).
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self::from_segments(list_segments(dir)?))
    }

    /// Reads the given segments (in order).
    pub fn from_segments(segments: Vec<Segment>) -> Self {
        WalReader {
            segments,
            memory: None,
            cur: 0,
            open: None,
            crc: 0,
            record_index: 0,
            done: false,
            pending: 0,
            ends: Vec::new(),
            more_follow: false,
        }
    }

    /// Marks the segments given as a part of a WAL that more segments
    /// follow (damage in the last one given is then corruption, never a
    /// torn tail).
    pub fn followed_by_more(mut self) -> Self {
        self.more_follow = true;
        self
    }

    /// Reads segments held in memory: `(file name, contents)` pairs in order.
    /// Same checks as on disk; used by fuzzing and tests.
    pub fn from_memory(files: Vec<(String, bytes::Bytes)>) -> Self {
        let segments = files
            .iter()
            .map(|(name, _)| {
                let (seq, index) = crate::names::parse_segment_name(name).unwrap_or((0, 0));
                Segment {
                    path: PathBuf::from(name),
                    seq,
                    index,
                }
            })
            .collect();
        let mut r = Self::from_segments(segments);
        r.memory = Some(files.into_iter().map(|(_, b)| b).collect());
        r
    }

    /// The segments being read.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// How each fully read segment ended.
    pub fn segment_ends(&self) -> &[SegmentEnd] {
        &self.ends
    }

    /// Current running CRC (after the last record returned).
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// Next record, `Ok(None)` at the clean end of the WAL. After an error the
    /// reader is finished.
    pub fn next_record(&mut self) -> Result<Option<RecordRef<'_>>> {
        if self.done {
            return Ok(None);
        }
        let found = match self.step() {
            Ok(Some(f)) => f,
            Ok(None) => {
                self.done = true;
                return Ok(None);
            }
            Err(e) => {
                self.done = true;
                return Err(e);
            }
        };
        let path = &self.segments[found.segment].path;
        let Some(os) = self.open.as_ref() else {
            self.done = true;
            return Err(WalError::Corrupt {
                location: Location {
                    file: path.clone(),
                    offset: found.offset,
                    record_index: found.record_index,
                },
                detail: "internal: segment closed".into(),
            });
        };
        let body_start = found.buf_start + 8;
        let data = found
            .data
            .and_then(|(from, len)| os.buf.get(body_start + from..body_start + from + len));
        let raw = RawRecord {
            rtype: found.raw_type,
            crc: found.crc,
            data,
        };
        Ok(Some(RecordRef {
            segment: found.segment,
            offset: found.offset,
            len_field: found.len_field,
            len: found.len,
            pad: found.pad,
            record_index: found.record_index,
            rtype: found.rtype,
            raw,
            path,
        }))
    }

    fn step(&mut self) -> Result<Option<Found>> {
        if let Some(os) = self.open.as_mut() {
            os.consume(std::mem::take(&mut self.pending));
        }
        loop {
            let Some(seg) = self.segments.get(self.cur) else {
                return Ok(None);
            };
            // Borrowed, not cloned: the per-record path allocates nothing;
            // a `Location` is built only when there is damage to report.
            let path = seg.path.as_path();
            let is_last = self.cur + 1 == self.segments.len() && !self.more_follow;
            if self.open.is_none() {
                let (file, size): (Box<dyn Read + Send>, u64) =
                    match self.memory.as_ref().and_then(|m| m.get(self.cur)) {
                        Some(b) => (Box::new(std::io::Cursor::new(b.clone())), b.len() as u64),
                        None => {
                            let f = File::open(path).map_err(|e| WalError::io(path, e))?;
                            let size = f.metadata().map_err(|e| WalError::io(path, e))?.len();
                            (Box::new(f), size)
                        }
                    };
                self.open = Some(OpenSegment {
                    file,
                    size,
                    buf: Vec::new(),
                    start: 0,
                    end: 0,
                    off: 0,
                });
            }
            let Some(os) = self.open.as_mut() else {
                continue;
            };
            let record_index = self.record_index;
            let rec_off = os.off;
            let damaged = |detail: String, torn: bool| {
                let location = Location {
                    file: path.to_path_buf(),
                    offset: rec_off,
                    record_index,
                };
                if torn {
                    WalError::TornTail { location, detail }
                } else {
                    WalError::Corrupt { location, detail }
                }
            };
            let avail = os.fill(8, path)?;
            if avail > 0 && avail < 8 {
                return Err(damaged(
                    format!("only {avail} bytes left where an 8-byte length field was expected"),
                    is_last,
                ));
            }
            let lf = if avail >= 8 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&os.buf[os.start..os.start + 8]);
                u64::from_le_bytes(b)
            } else {
                0
            };
            if lf == 0 {
                self.ends.push(SegmentEnd {
                    path: path.to_path_buf(),
                    end_offset: os.off,
                    file_size: os.size,
                    zero_tail: avail != 0,
                });
                self.open = None;
                self.cur += 1;
                continue;
            }
            let (n, pad) = frame::decode_len_field(lf);
            if frame::encode_len_field(n).0 != lf {
                // etcd always writes pad = (8 - n % 8) % 8 with bit 63 set
                // iff pad > 0 and bits 59..62 clear; anything else is damage
                // to this length field (etcd itself would misread the stream).
                // In the last file, followed by zeroed sectors, it is what a
                // torn write leaves behind.
                let remaining = os.size.saturating_sub(os.off + 8);
                let look = 8 + remaining
                    .min(n.saturating_add(pad))
                    .min(frame::MIN_SECTOR_SIZE * 2) as usize;
                let avail = os.fill(look, path)?.min(look);
                let torn = is_last
                    && avail > 8
                    && frame::looks_torn(&os.buf[os.start + 8..os.start + avail], os.off + 8);
                return Err(damaged(
                    format!(
                        "malformed length field {lf:016x} (not what etcd writes for {n} bytes)"
                    ),
                    torn,
                ));
            }
            let remaining = os.size.saturating_sub(os.off + 8);
            if n.checked_add(pad).is_none_or(|t| t > remaining) {
                // A plausible record cut short at the end of the last file is
                // a torn write; an absurd length is damage (etcd 3.4/3.5.1
                // refuse records of 10 MiB or more outright).
                let plausible = n < frame::ETCD_MAX_RECORD_SIZE;
                let note = if plausible {
                    ""
                } else {
                    "; etcd 3.4 and 3.5.0-3.5.4 refuse such a record (3.5.5+ would call it torn)"
                };
                return Err(damaged(
                    format!(
                        "record needs {n}+{pad} bytes but only {remaining} remain in the file (length field {lf:016x}){note}"
                    ),
                    is_last && plausible,
                ));
            }
            let total = (8 + n + pad) as usize;
            let avail = os.fill(total, path)?;
            if avail < total {
                return Err(damaged(
                    format!("file shrank while reading: {avail} of {total} bytes available"),
                    is_last,
                ));
            }
            let frame_bytes = &os.buf[os.start..os.start + total];
            let body = &frame_bytes[8..8 + n as usize];
            // etcd's torn-write shape (a zeroed sector) matters only for a
            // damaged record, so it is looked at only then.
            let torn_shape = || is_last && frame::looks_torn(&frame_bytes[8..], rec_off + 8);
            let raw = match frame::parse_record(body) {
                Ok(raw) => raw,
                Err(what) => {
                    return Err(damaged(
                        format!("record does not parse: {what}"),
                        torn_shape(),
                    ));
                }
            };
            if raw.rtype == RecordType::Crc.as_i64() {
                if self.crc != 0 && raw.crc != self.crc {
                    return Err(damaged(
                        format!(
                            "crc record {:08x} does not continue the chain ({:08x} at the end of the previous segment)",
                            raw.crc, self.crc
                        ),
                        false,
                    ));
                }
                self.crc = raw.crc;
            } else {
                let computed = frame::crc_update(self.crc, raw.data.unwrap_or_default());
                if computed != raw.crc {
                    return Err(damaged(
                        format!(
                            "crc mismatch: record says {:08x}, chain computes {computed:08x}",
                            raw.crc
                        ),
                        torn_shape(),
                    ));
                }
                // The stored CRC, equal to the computed one: the next
                // record's CRC then does not wait for this one's, so the CPU
                // can overlap the CRCs of consecutive short records.
                self.crc = raw.crc;
            }
            let Some(rtype) = RecordType::from_i64(raw.rtype) else {
                return Err(damaged(
                    format!("unexpected record type {}", raw.rtype),
                    false,
                ));
            };
            // The payload's place in the buffer, so `next_record` need not
            // parse the envelope a second time.
            let data = raw.data.map(|d| {
                let from = d.as_ptr() as usize - body.as_ptr() as usize;
                (from, d.len())
            });
            let found = Found {
                segment: self.cur,
                offset: rec_off,
                len_field: lf,
                len: n,
                pad,
                record_index,
                rtype,
                raw_type: raw.rtype,
                crc: raw.crc,
                data,
                buf_start: os.start,
            };
            self.pending = total;
            self.record_index += 1;
            return Ok(Some(found));
        }
    }
}

/// Position of a verified record inside the open segment's buffer.
struct Found {
    segment: usize,
    offset: u64,
    len_field: u64,
    len: u64,
    pad: u64,
    record_index: u64,
    rtype: RecordType,
    /// The envelope's type field as stored.
    raw_type: i64,
    /// The envelope's stored CRC.
    crc: u32,
    /// Payload as (offset from the record body's start, length).
    data: Option<(usize, usize)>,
    buf_start: usize,
}
