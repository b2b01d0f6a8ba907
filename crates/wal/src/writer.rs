//! WAL writer producing files etcd itself can read: same framing, CRC chain,
//! segment names and segment heads. Used by the learner for its local log.
use crate::error::{Result, WalError};
use crate::frame::{self, RecordType};
use crate::names::segment_file_name;
use crate::reader::{WalReader, WalRecord};
use crate::segment::list_segments;
use etcd_standby_proto::{Message, etcdserverpb, raftpb, walpb};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Segments are created `0600`, as etcd's (`fileutil.PrivateFileMode`): a
/// WAL holds every request, with etcd 3.4's plaintext passwords.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// The WAL dir is created `0700`, as etcd's (`fileutil.PrivateDirMode`).
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Appends records to an etcd-format WAL directory.
pub struct WalWriter {
    dir: PathBuf,
    file: File,
    file_path: PathBuf,
    seq: u64,
    offset: u64,
    crc: u32,
    metadata: Vec<u8>,
    last_index: u64,
    hard_state: Option<raftpb::HardState>,
    buf: Vec<u8>,
    segment_size: u64,
    /// Where the last successful fsync left the log.
    synced: SyncedEnd,
}

/// The end of what a [`WalWriter`] last made durable: the segment being
/// written then and the byte offset its fsync covered. Bytes after it (a
/// write that failed half way, for instance for lack of space) were never
/// acknowledged to anyone; [`discard_unsynced`] cuts them off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedEnd {
    /// The segment file.
    pub path: PathBuf,
    /// Its sequence number.
    pub seq: u64,
    /// Bytes of it that are durable.
    pub offset: u64,
}

/// Cuts a WAL directory back to `end`, what a writer last fsynced: the
/// segment is truncated to `end.offset`, segments after it are removed, and
/// both are made durable. After a failed write or fsync the writer's state
/// and the files may disagree (a partial record, a half-cut segment), so the
/// learner calls this and then re-opens the WAL with [`WalWriter::open`], as
/// a restart would, without trusting anything it had not fsynced (Invariant
/// 1 of `ARCHITECTURE.md`). Needs no free space.
pub fn discard_unsynced(dir: &Path, end: &SyncedEnd) -> Result<()> {
    let mut removed = false;
    for seg in list_segments(dir)? {
        if seg.seq > end.seq {
            std::fs::remove_file(&seg.path).map_err(|e| WalError::io(&seg.path, e))?;
            removed = true;
        }
    }
    // A segment head that was being written when the cut failed.
    let rd = std::fs::read_dir(dir).map_err(|e| WalError::io(dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| WalError::io(dir, e))?;
        if ent.file_name().to_str().is_some_and(is_cut_tmp_name) {
            let p = ent.path();
            std::fs::remove_file(&p).map_err(|e| WalError::io(&p, e))?;
            removed = true;
        }
    }
    let f = OpenOptions::new()
        .write(true)
        .open(&end.path)
        .map_err(|e| WalError::io(&end.path, e))?;
    let len = f.metadata().map_err(|e| WalError::io(&end.path, e))?.len();
    if len > end.offset {
        f.set_len(end.offset)
            .and_then(|()| f.sync_all())
            .map_err(|e| WalError::io(&end.path, e))?;
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Suffix of the temporary file a new segment's head is written to before
/// it is renamed into place (etcd writes it into a preallocated `N.tmp`).
const CUT_TMP_SUFFIX: &str = ".wal.tmp";

fn is_cut_tmp_name(name: &str) -> bool {
    name.ends_with(CUT_TMP_SUFFIX)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io(dir, e))
}

impl WalWriter {
    /// Creates a new WAL in `dir` (which must not hold segments yet), built in
    /// `<dir>.tmp` and renamed into place like etcd does.
    pub fn create(dir: &Path, metadata: &etcdserverpb::Metadata) -> Result<Self> {
        if list_segments(dir).is_ok() {
            return Err(WalError::Writer(format!(
                "{} already holds a WAL",
                dir.display()
            )));
        }
        let mut tmp = dir.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| WalError::io(&tmp, e))?;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(&tmp)
            .map_err(|e| WalError::io(&tmp, e))?;
        let name = segment_file_name(0, 0);
        let tmp_file = tmp.join(&name);
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&tmp_file)
            .map_err(|e| WalError::io(&tmp_file, e))?;
        let mut w = WalWriter {
            dir: dir.to_path_buf(),
            file,
            file_path: tmp_file,
            seq: 0,
            offset: 0,
            crc: 0,
            metadata: metadata.encode_to_vec(),
            last_index: 0,
            hard_state: None,
            buf: Vec::with_capacity(1 << 16),
            segment_size: frame::SEGMENT_SIZE_BYTES,
            synced: SyncedEnd {
                path: PathBuf::new(),
                seq: 0,
                offset: 0,
            },
        };
        w.push(RecordType::Crc, None);
        let md = w.metadata.clone();
        w.push(RecordType::Metadata, Some(&md));
        let snap = walpb::Snapshot {
            index: 0,
            term: 0,
            conf_state: None,
        };
        w.push(RecordType::Snapshot, Some(&snap.encode_to_vec()));
        w.sync()?;
        if dir.exists() {
            std::fs::remove_dir(dir).map_err(|e| WalError::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| WalError::io(dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        w.file_path = dir.join(name);
        w.synced.path = w.file_path.clone();
        Ok(w)
    }

    /// Opens an existing WAL for appending. A torn last record is repaired the
    /// way etcd does (the damaged file is copied to `.broken`, then truncated);
    /// corruption anywhere else is an error.
    pub fn open(dir: &Path) -> Result<Self> {
        let mut repaired = false;
        loop {
            match Self::scan(dir) {
                Ok(w) => return Ok(w),
                Err(WalError::TornTail { location, .. }) if !repaired => {
                    let mut broken = location.file.as_os_str().to_owned();
                    broken.push(".broken");
                    std::fs::copy(&location.file, &broken)
                        .map_err(|e| WalError::io(&location.file, e))?;
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&location.file)
                        .map_err(|e| WalError::io(&location.file, e))?;
                    f.set_len(location.offset)
                        .and_then(|_| f.sync_all())
                        .map_err(|e| WalError::io(&location.file, e))?;
                    repaired = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn scan(dir: &Path) -> Result<Self> {
        let mut reader = WalReader::open(dir)?;
        let mut metadata: Option<Vec<u8>> = None;
        let mut last_index = 0;
        let mut hard_state = None;
        while let Some(rec) = reader.next_record()? {
            match rec.decode()? {
                WalRecord::Metadata(_) => {
                    let raw = rec.raw.data.unwrap_or_default().to_vec();
                    if metadata.as_ref().is_some_and(|m| *m != raw) {
                        return Err(WalError::Corrupt {
                            location: rec.location(),
                            detail: "metadata differs from earlier segments".into(),
                        });
                    }
                    metadata = Some(raw);
                }
                WalRecord::Entry(e) => last_index = e.index,
                WalRecord::State(hs) => hard_state = Some(hs),
                WalRecord::Snapshot(s) => last_index = last_index.max(s.index),
                WalRecord::Crc(_) => {}
            }
        }
        let crc = reader.crc();
        let last = reader
            .segments()
            .last()
            .cloned()
            .ok_or_else(|| WalError::NoSegments(dir.to_path_buf()))?;
        let end = reader
            .segment_ends()
            .last()
            .map(|e| e.end_offset)
            .unwrap_or(0);
        let file = OpenOptions::new()
            .write(true)
            .open(&last.path)
            .map_err(|e| WalError::io(&last.path, e))?;
        // Drop any zero tail so appends land right after the last record.
        file.set_len(end)
            .and_then(|_| file.sync_all())
            .map_err(|e| WalError::io(&last.path, e))?;
        let mut w = WalWriter {
            dir: dir.to_path_buf(),
            file,
            file_path: last.path.clone(),
            seq: last.seq,
            offset: end,
            crc,
            metadata: metadata.unwrap_or_default(),
            last_index,
            hard_state,
            buf: Vec::with_capacity(1 << 16),
            segment_size: frame::SEGMENT_SIZE_BYTES,
            synced: SyncedEnd {
                path: last.path.clone(),
                seq: last.seq,
                offset: end,
            },
        };
        std::io::Seek::seek(&mut w.file, std::io::SeekFrom::Start(end))
            .map_err(|e| WalError::io(&last.path, e))?;
        Ok(w)
    }

    /// Overrides the segment cut size (tests use small segments).
    pub fn with_segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes.max(64);
        self
    }

    /// Index of the last entry written (or of the snapshot marker).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Last hard state written.
    pub fn hard_state(&self) -> Option<&raftpb::HardState> {
        self.hard_state.as_ref()
    }

    /// Current segment file.
    pub fn current_file(&self) -> &Path {
        &self.file_path
    }

    /// Where the last successful fsync left the log (see [`discard_unsynced`]).
    pub fn synced_end(&self) -> &SyncedEnd {
        &self.synced
    }

    fn push(&mut self, rtype: RecordType, data: Option<&[u8]>) {
        let crc = if rtype == RecordType::Crc {
            self.crc
        } else {
            self.crc = frame::crc_update(self.crc, data.unwrap_or_default());
            self.crc
        };
        frame::encode_frame(&mut self.buf, rtype, crc, data);
    }

    /// Buffers entries then the hard state (if any), like etcd's `Save`.
    /// Entries may rewrite a suffix of the log (raft conflict resolution) but
    /// may not leave a gap. Call [`sync`](Self::sync) to make them durable.
    pub fn save(
        &mut self,
        hard_state: Option<&raftpb::HardState>,
        entries: &[raftpb::Entry],
    ) -> Result<()> {
        let mut buf = Vec::new();
        for e in entries {
            if e.index > self.last_index + 1 {
                return Err(WalError::Writer(format!(
                    "entry index {} leaves a gap after {}",
                    e.index, self.last_index
                )));
            }
            buf.clear();
            e.encode(&mut buf)
                .map_err(|err| WalError::Writer(format!("encode entry: {err}")))?;
            self.push(RecordType::Entry, Some(&buf));
            self.last_index = e.index;
        }
        if let Some(hs) = hard_state {
            self.push(RecordType::State, Some(&hs.encode_to_vec()));
            self.hard_state = Some(*hs);
        }
        Ok(())
    }

    /// Records a snapshot marker (after the `.snap` file is saved).
    pub fn save_snapshot(&mut self, snap: &walpb::Snapshot) -> Result<()> {
        self.push(RecordType::Snapshot, Some(&snap.encode_to_vec()));
        self.last_index = self.last_index.max(snap.index);
        Ok(())
    }

    /// Writes buffered records and fsyncs; cuts a new segment when the current
    /// one reached the segment size.
    pub fn sync(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.file
                .write_all(&self.buf)
                .map_err(|e| WalError::io(&self.file_path, e))?;
            self.offset += self.buf.len() as u64;
            self.buf.clear();
        }
        self.file
            .sync_data()
            .map_err(|e| WalError::io(&self.file_path, e))?;
        self.synced = SyncedEnd {
            path: self.file_path.clone(),
            seq: self.seq,
            offset: self.offset,
        };
        if self.offset >= self.segment_size {
            self.cut()?;
        }
        Ok(())
    }

    /// Starts the next segment like etcd's `cut`: its head (CRC, metadata,
    /// hard state) is written to a temporary file and fsynced, then renamed
    /// into place and the directory fsynced, so a segment never appears
    /// half-written (a full disk fails the cut and leaves only a `.tmp`,
    /// which [`discard_unsynced`] removes).
    fn cut(&mut self) -> Result<()> {
        let name = segment_file_name(self.seq + 1, self.last_index + 1);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        if tmp.exists() {
            std::fs::remove_file(&tmp).map_err(|e| WalError::io(&tmp, e))?;
        }
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&tmp)
            .map_err(|e| WalError::io(&tmp, e))?;
        // The head is framed on a copy of the chain, so a failed cut leaves
        // this writer as it was (it is re-opened from disk anyway).
        let crc = self.crc;
        let mut head = Vec::new();
        std::mem::swap(&mut head, &mut self.buf);
        self.push(RecordType::Crc, None);
        let md = self.metadata.clone();
        self.push(RecordType::Metadata, Some(&md));
        if let Some(hs) = self.hard_state {
            self.push(RecordType::State, Some(&hs.encode_to_vec()));
        }
        std::mem::swap(&mut head, &mut self.buf);
        let written = file
            .write_all(&head)
            .and_then(|()| file.sync_all())
            .map_err(|e| WalError::io(&tmp, e))
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| WalError::io(&path, e)))
            .and_then(|()| sync_dir(&self.dir));
        if let Err(e) = written {
            self.crc = crc;
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.file = file;
        self.file_path = path;
        self.seq += 1;
        self.offset = head.len() as u64;
        self.synced = SyncedEnd {
            path: self.file_path.clone(),
            seq: self.seq,
            offset: self.offset,
        };
        Ok(())
    }
}
