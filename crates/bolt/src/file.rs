//! Opening a bbolt file: `etcdctl snapshot save` trailer, meta pages, bounded reads.

use std::fs::File;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::{BoltError, Result};

/// bbolt's magic number (meta offset 0).
pub const MAGIC: u32 = 0xED0C_DAED;
/// The only bbolt file format version.
pub const VERSION: u32 = 2;
/// `meta.freelist` value meaning "no freelist page persisted" (etcd on Linux).
pub const NO_FREELIST: u64 = u64::MAX;
/// Size of every page header.
pub(crate) const PAGE_HEADER: usize = 16;
/// Page header + meta struct.
const META_END: usize = PAGE_HEADER + 64;
/// Page sizes outside this range (or not a power of two) are treated as corruption.
const MIN_PAGE_SIZE: u32 = 1024;
const MAX_PAGE_SIZE: u32 = 1 << 20;
/// Length of the SHA-256 trailer `etcdctl snapshot save` appends.
const TRAILER_LEN: u64 = 32;

/// One parsed meta page (page 0 or 1), valid or not, for display and selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Which meta page this is (0 or 1).
    pub index: u64,
    /// Page header id (0 or 1 in a healthy file).
    pub page_id: u64,
    /// Page header flags (0x04 for meta pages).
    pub page_flags: u16,
    /// Must be [`MAGIC`].
    pub magic: u32,
    /// Must be [`VERSION`].
    pub version: u32,
    /// Page size the file was created with.
    pub page_size: u32,
    /// Meta flags (unused by bbolt, 0).
    pub flags: u32,
    /// Root page of the bucket directory.
    pub root: u64,
    /// Sequence of the root bucket.
    pub sequence: u64,
    /// Freelist page id or [`NO_FREELIST`].
    pub freelist: u64,
    /// High-water mark: first page id that is not allocated.
    pub pgid: u64,
    /// Transaction id of the commit that wrote this meta.
    pub txid: u64,
    /// Stored FNV-1a 64 checksum of bytes 16..72 of the page.
    pub checksum: u64,
    /// Whether `checksum` matches the computed value.
    pub checksum_ok: bool,
    /// Why this meta is unusable, or `None` if it is valid.
    pub invalid_reason: Option<String>,
}

impl Meta {
    /// Parses the 80 bytes at the start of a meta page; `expected_page_size` is the page
    /// size implied by the page's location (meta 1 lives at offset `page_size`).
    fn parse(index: u64, b: &[u8; META_END], expected_page_size: Option<u32>) -> Meta {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let checksum = u64_at(72);
        let checksum_ok = checksum == fnv1a64(&b[16..72]);
        let mut meta = Meta {
            index,
            page_id: u64_at(0),
            page_flags: u16_at(8),
            magic: u32_at(16),
            version: u32_at(20),
            page_size: u32_at(24),
            flags: u32_at(28),
            root: u64_at(32),
            sequence: u64_at(40),
            freelist: u64_at(48),
            pgid: u64_at(56),
            txid: u64_at(64),
            checksum,
            checksum_ok,
            invalid_reason: None,
        };
        meta.invalid_reason = if meta.magic != MAGIC {
            Some(format!("bad magic {:#010x}", meta.magic))
        } else if meta.version != VERSION {
            Some(format!("unsupported version {}", meta.version))
        } else if checksum != 0 && !checksum_ok {
            Some(format!("checksum mismatch (stored {checksum:#018x})"))
        } else if !meta.page_size.is_power_of_two()
            || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&meta.page_size)
        {
            Some(format!("implausible page size {}", meta.page_size))
        } else if expected_page_size.is_some_and(|ps| ps != meta.page_size) {
            Some(format!(
                "page size {} does not match its location",
                meta.page_size
            ))
        } else {
            None
        };
        meta
    }

    /// True if bbolt would accept this meta page.
    pub fn is_valid(&self) -> bool {
        self.invalid_reason.is_none()
    }

    /// True if the file persists a freelist page (not the case for etcd on Linux).
    pub fn has_freelist(&self) -> bool {
        self.freelist != NO_FREELIST
    }
}

/// FNV-1a 64-bit hash, the meta page checksum.
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The SHA-256 trailer of an `etcdctl snapshot save` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    /// The last 32 bytes of the file.
    pub stored: [u8; 32],
    /// SHA-256 of everything before them.
    pub computed: [u8; 32],
}

impl Trailer {
    /// True if the stored hash matches the image.
    pub fn is_valid(&self) -> bool {
        self.stored == self.computed
    }
}

/// Where the bytes come from.
enum Source {
    File(File),
    Memory(Bytes),
}

/// A bbolt database file (or in-memory image) opened read-only.
///
/// Reads go through positioned reads (no mmap, no `unsafe`), so memory stays bounded by the
/// pages currently in use even for multi-GiB files. Only the committed state named by the
/// selected meta page is ever read; pages at or above `meta.pgid` are never followed.
/// Multi-byte fields are read little-endian (files written on big-endian hosts fail the
/// magic check). Reading the db of a *running* etcd is not consistent: etcd reuses freed pages
/// in place; use an `etcdctl snapshot save` file or a copy taken with etcd stopped.
pub struct BoltFile {
    path: PathBuf,
    source: Source,
    file_len: u64,
    len: u64,
    trailer: Option<Trailer>,
    metas: [Option<Meta>; 2],
    meta: Meta,
}

impl std::fmt::Debug for BoltFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoltFile")
            .field("path", &self.path)
            .field("file_len", &self.file_len)
            .field("trailer", &self.trailer)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl BoltFile {
    /// Opens a file read-only. An `etcdctl snapshot save` file (length % 512 == 32) has its
    /// SHA-256 trailer checked (this reads the whole file once) and stripped; a mismatch is
    /// reported by [`BoltFile::trailer`] / [`BoltFile::verify_trailer`] rather than failing
    /// the open, so a damaged snapshot can still be inspected.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| BoltError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        Self::new(path, Source::File(file), file_len)
    }

    /// Parses an in-memory image (e.g. a raft snapshot's db received over the network),
    /// with the same trailer handling as [`BoltFile::open`].
    pub fn from_bytes(data: impl Into<Bytes>) -> Result<Self> {
        let data = data.into();
        let len = data.len() as u64;
        Self::new(PathBuf::from("<memory>"), Source::Memory(data), len)
    }

    fn new(path: PathBuf, source: Source, file_len: u64) -> Result<Self> {
        let mut db = BoltFile {
            path,
            source,
            file_len,
            len: file_len,
            trailer: None,
            metas: [None, None],
            // Placeholder (an invalid all-zero meta) until the real metas are read below.
            meta: Meta::parse(0, &[0; META_END], None),
        };
        if file_len % 512 == TRAILER_LEN {
            db.len = file_len - TRAILER_LEN;
            let stored = db.read_raw(db.len, TRAILER_LEN as usize)?;
            let mut trailer = Trailer {
                stored: [0; 32],
                computed: db.sha256_of_image()?,
            };
            trailer.stored.copy_from_slice(&stored);
            db.trailer = Some(trailer);
        }

        // Bootstrap the page size: meta 0 sits at offset 0; if it is unusable, look for
        // meta 1 at 1 KiB << i (it must sit exactly at its own page size).
        let meta0 = db.meta_at(0, 0, None)?;
        let page_size = match &meta0 {
            Some(m) if m.is_valid() => Some(m.page_size),
            _ => db.probe_meta1()?,
        };
        let Some(page_size) = page_size else {
            return Err(BoltError::NoValidMeta {
                path: db.path.clone(),
                meta0: reason(&meta0),
                meta1: "no valid meta page found at 1 KiB << i".into(),
            });
        };
        let meta1 = db.meta_at(1, u64::from(page_size), Some(page_size))?;

        // The valid meta with the higher txid wins; on a tie bbolt keeps meta 0.
        let chosen = match (&meta0, &meta1) {
            (Some(a), Some(b)) if a.is_valid() && b.is_valid() => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Some(a), _) if a.is_valid() => a,
            (_, Some(b)) if b.is_valid() => b,
            _ => {
                return Err(BoltError::NoValidMeta {
                    path: db.path.clone(),
                    meta0: reason(&meta0),
                    meta1: reason(&meta1),
                });
            }
        }
        .clone();
        db.check_meta(&chosen)?;
        db.meta = chosen;
        db.metas = [meta0, meta1];
        Ok(db)
    }

    /// Checks that the selected meta describes a tree that fits in the file.
    fn check_meta(&self, m: &Meta) -> Result<()> {
        let needed = m.pgid.checked_mul(u64::from(m.page_size));
        match needed {
            Some(needed) if needed <= self.len => {}
            _ => {
                return Err(BoltError::Truncated {
                    path: self.path.clone(),
                    txid: m.txid,
                    pgid: m.pgid,
                    page_size: m.page_size,
                    needed: needed.unwrap_or(u64::MAX),
                    actual: self.len,
                });
            }
        }
        if m.root < 2 || m.root >= m.pgid {
            let offset = m.index * u64::from(m.page_size) + 32;
            return Err(self.corrupt(
                m.index,
                offset,
                format!(
                    "meta txid {}: root page {} outside 2..{}",
                    m.txid, m.root, m.pgid
                ),
            ));
        }
        Ok(())
    }

    fn probe_meta1(&self) -> Result<Option<u32>> {
        for shift in 0..=MAX_PAGE_SIZE.trailing_zeros() - MIN_PAGE_SIZE.trailing_zeros() {
            let ps = MIN_PAGE_SIZE << shift;
            if let Some(m) = self.meta_at(1, u64::from(ps), Some(ps))?
                && m.is_valid()
            {
                return Ok(Some(ps));
            }
        }
        Ok(None)
    }

    /// Reads a meta page at `offset`, or `None` if the file is too short to hold it.
    fn meta_at(&self, index: u64, offset: u64, expect_ps: Option<u32>) -> Result<Option<Meta>> {
        if offset + META_END as u64 > self.len {
            return Ok(None);
        }
        let raw = self.read_raw(offset, META_END)?;
        let mut buf = [0u8; META_END];
        buf.copy_from_slice(&raw);
        Ok(Some(Meta::parse(index, &buf, expect_ps)))
    }

    fn sha256_of_image(&self) -> Result<[u8; 32]> {
        const CHUNK: u64 = 1 << 20;
        let mut hasher = Sha256::new();
        let mut off = 0;
        while off < self.len {
            let n = CHUNK.min(self.len - off);
            hasher.update(self.read_raw(off, n as usize)?);
            off += n;
        }
        Ok(hasher.finalize().into())
    }

    /// Reads `len` bytes at `offset` of the whole file (trailer included).
    fn read_raw(&self, offset: u64, len: usize) -> Result<Bytes> {
        match &self.source {
            Source::Memory(data) => {
                let range = usize::try_from(offset)
                    .ok()
                    .and_then(|start| Some(start..start.checked_add(len)?))
                    .filter(|r| r.end <= data.len());
                match range {
                    Some(r) => Ok(data.slice(r)),
                    None => Err(self.corrupt(0, offset, format!("read of {len} bytes past end"))),
                }
            }
            Source::File(file) => {
                let mut buf = vec![0u8; len];
                read_exact_at(file, &mut buf, offset).map_err(|source| BoltError::Io {
                    path: self.path.clone(),
                    source,
                })?;
                Ok(Bytes::from(buf))
            }
        }
    }

    /// Reads `len` bytes at `offset` of the logical image; `page` is only for error context.
    /// The bound check happens before any allocation.
    pub(crate) fn read_at(&self, page: u64, offset: u64, len: u64) -> Result<Bytes> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len && usize::try_from(len).is_ok() => {
                self.read_raw(offset, len as usize)
            }
            _ => Err(self.corrupt(
                page,
                offset,
                format!(
                    "{len} bytes would extend past the end of the image ({} bytes)",
                    self.len
                ),
            )),
        }
    }

    pub(crate) fn corrupt(&self, page: u64, offset: u64, what: impl Into<String>) -> BoltError {
        BoltError::Corrupt {
            path: self.path.clone(),
            page,
            offset,
            what: what.into(),
        }
    }

    /// Path the file was opened from (`<memory>` for in-memory images).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The meta page in use (valid, highest txid).
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Both meta pages as read (`None` if the file is too short to contain one).
    pub fn metas(&self) -> &[Option<Meta>; 2] {
        &self.metas
    }

    /// Page size of the file.
    pub fn page_size(&self) -> u32 {
        self.meta.page_size
    }

    /// Size of the file on disk (including any trailer).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Size of the bbolt image (the file without an `etcdctl snapshot save` trailer).
    pub fn image_len(&self) -> u64 {
        self.len
    }

    /// The `etcdctl snapshot save` trailer, if the file has one.
    pub fn trailer(&self) -> Option<&Trailer> {
        self.trailer.as_ref()
    }

    /// Fails with [`BoltError::TrailerMismatch`] if the file has a trailer that does not
    /// match its image (a file without a trailer passes).
    pub fn verify_trailer(&self) -> Result<()> {
        match &self.trailer {
            Some(t) if !t.is_valid() => Err(BoltError::TrailerMismatch {
                path: self.path.clone(),
                stored: hex(&t.stored),
                computed: hex(&t.computed),
            }),
            _ => Ok(()),
        }
    }
}

fn reason(meta: &Option<Meta>) -> String {
    match meta {
        None => "beyond end of file".into(),
        Some(m) => m.invalid_reason.clone().unwrap_or_else(|| "ok".into()),
    }
}

/// Lowercase hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}
