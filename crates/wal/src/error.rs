//! The crate's one error type.
use std::path::PathBuf;

/// Where in a WAL a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Segment file.
    pub file: PathBuf,
    /// Byte offset of the record's length field within the file.
    pub offset: u64,
    /// 0-based index of the record across the whole WAL (as read).
    pub record_index: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte offset {} (record #{})",
            self.file.display(),
            self.offset,
            self.record_index
        )
    }
}

/// Errors reading or writing etcd WAL and snapshot files.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An operating-system error, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The directory holds no `*.wal` segment.
    #[error("{0}: no WAL segments (*.wal) found")]
    NoSegments(PathBuf),
    /// Segment sequence numbers are not consecutive (a segment is missing).
    #[error("{path}: segment sequence gap: expected seq {expected}, found {found}")]
    SequenceGap {
        /// Offending file.
        path: PathBuf,
        /// Sequence number that should have come next.
        expected: u64,
        /// Sequence number found instead.
        found: u64,
    },
    /// The last record ends early: a torn write etcd would repair by truncating here.
    #[error("torn tail: {location}: {detail}")]
    TornTail {
        /// First byte of the torn record.
        location: Location,
        /// What was wrong.
        detail: String,
    },
    /// Damage that etcd refuses to start with (not a repairable torn tail).
    #[error("corruption: {location}: {detail}")]
    Corrupt {
        /// First byte of the damaged record.
        location: Location,
        /// What was wrong.
        detail: String,
    },
    /// A `.snap` file failed its checks.
    #[error("{path}: {detail}")]
    BadSnapshot {
        /// The `.snap` file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// Misuse of the writer (e.g. appending a non-contiguous index).
    #[error("wal writer: {0}")]
    Writer(String),
}

impl WalError {
    /// Attaches a path to an IO error.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WalError::Io {
            path: path.into(),
            source,
        }
    }

    /// Location of a record-level problem, if this is one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            WalError::TornTail { location, .. } | WalError::Corrupt { location, .. } => {
                Some(location)
            }
            _ => None,
        }
    }

    /// True for a torn last record (what etcd's repair would fix).
    pub fn is_torn_tail(&self) -> bool {
        matches!(self, WalError::TornTail { .. })
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, WalError>;
