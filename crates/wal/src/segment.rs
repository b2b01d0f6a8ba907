//! Segment listing; the names (`%016x-%016x.wal` = sequence, first index)
//! are parsed and formatted by [`crate::names`].
use crate::error::{Result, WalError};
use std::path::{Path, PathBuf};

/// One WAL segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Full path.
    pub path: PathBuf,
    /// Segment sequence number.
    pub seq: u64,
    /// Raft index of the first entry expected in this segment.
    pub index: u64,
}

use crate::names::parse_segment_name;

/// Lists the segments of a WAL directory in name order and checks that their
/// sequence numbers are consecutive, as etcd does when opening.
pub fn list_segments(dir: &Path) -> Result<Vec<Segment>> {
    let rd = std::fs::read_dir(dir).map_err(|e| WalError::io(dir, e))?;
    let mut segs = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| WalError::io(dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((seq, index)) = parse_segment_name(name) {
            segs.push(Segment {
                path: ent.path(),
                seq,
                index,
            });
        }
    }
    if segs.is_empty() {
        return Err(WalError::NoSegments(dir.to_path_buf()));
    }
    segs.sort_by(|a, b| a.path.cmp(&b.path));
    for w in segs.windows(2) {
        if w[1].seq != w[0].seq + 1 {
            return Err(WalError::SequenceGap {
                path: w[1].path.clone(),
                expected: w[0].seq + 1,
                found: w[1].seq,
            });
        }
    }
    Ok(segs)
}
