//! Segment file naming (`%016x-%016x.wal` = sequence, first index) and listing.
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

/// File name etcd gives a segment.
pub fn segment_file_name(seq: u64, index: u64) -> String {
    format!("{seq:016x}-{index:016x}.wal")
}

/// Parses `%016x-%016x.wal`; anything else (`.tmp`, `.wal.broken`) is `None`.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 16 || b.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_non_segments() {
        assert_eq!(
            segment_file_name(1, 0x29),
            "0000000000000001-0000000000000029.wal"
        );
        assert_eq!(
            parse_segment_name("0000000000000001-0000000000000029.wal"),
            Some((1, 0x29))
        );
        assert_eq!(parse_segment_name("0.tmp"), None);
        assert_eq!(
            parse_segment_name("0000000000000000-0000000000000000.wal.broken"),
            None
        );
        assert_eq!(parse_segment_name("zz-0000000000000000.wal"), None);
    }
}
