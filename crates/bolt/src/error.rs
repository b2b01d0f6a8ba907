//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while reading a bbolt file or decoding etcd's buckets.
///
/// Every variant names the file; structural problems also name the page and the absolute
/// byte offset so a corrupt file can be inspected with a hex dump.
#[derive(Debug, thiserror::Error)]
pub enum BoltError {
    /// Reading the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// File being read.
        path: PathBuf,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Neither meta page is valid, so the file is not (or no longer) a bbolt database.
    #[error("{}: no valid bbolt meta page (meta 0: {meta0}; meta 1: {meta1})", path.display())]
    NoValidMeta {
        /// File being read.
        path: PathBuf,
        /// Why meta page 0 was rejected.
        meta0: String,
        /// Why meta page 1 was rejected.
        meta1: String,
    },

    /// The file is shorter than its selected meta page says it must be.
    #[error(
        "{}: truncated: meta txid {txid} needs {needed} bytes (pgid {pgid} x page size {page_size}) but the file has {actual}",
        path.display()
    )]
    Truncated {
        /// File being read.
        path: PathBuf,
        /// txid of the selected meta page.
        txid: u64,
        /// High-water mark from the meta page.
        pgid: u64,
        /// Page size from the meta page.
        page_size: u32,
        /// Bytes the meta page implies.
        needed: u64,
        /// Logical bytes present (without an `etcdctl snapshot save` trailer).
        actual: u64,
    },

    /// The `etcdctl snapshot save` SHA-256 trailer does not match the image.
    #[error("{}: SHA-256 trailer mismatch: stored {stored}, computed {computed}", path.display())]
    TrailerMismatch {
        /// File being read.
        path: PathBuf,
        /// Hex of the 32 bytes at the end of the file.
        stored: String,
        /// Hex of the SHA-256 of the image.
        computed: String,
    },

    /// A page or element is structurally invalid.
    #[error("{}: page {page} (file offset {offset}): {what}", path.display())]
    Corrupt {
        /// File being read.
        path: PathBuf,
        /// Page id (for an inline bucket: the page that holds it).
        page: u64,
        /// Absolute byte offset of the offending structure.
        offset: u64,
        /// Description of the problem.
        what: String,
    },

    /// A bucket the caller asked for does not exist.
    #[error("{}: bucket {bucket:?} not found", path.display())]
    BucketNotFound {
        /// File being read.
        path: PathBuf,
        /// Bucket name (escaped).
        bucket: String,
    },

    /// An etcd key or value in a bucket does not have the expected encoding.
    #[error("{}: bucket {bucket:?} key {key:?}: {what}", path.display())]
    Schema {
        /// File being read.
        path: PathBuf,
        /// Bucket name.
        bucket: String,
        /// Offending key (escaped).
        key: String,
        /// Description of the problem.
        what: String,
    },
}

/// Shorthand for results in this crate.
pub type Result<T, E = BoltError> = std::result::Result<T, E>;

/// Printable form of arbitrary bytes for error messages (ASCII escapes, truncated).
pub(crate) fn escape(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let mut s = bytes[..bytes.len().min(MAX)].escape_ascii().to_string();
    if bytes.len() > MAX {
        s.push_str(&format!("...({} bytes)", bytes.len()));
    }
    s
}
