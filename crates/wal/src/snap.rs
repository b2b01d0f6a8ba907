//! `member/snap/*.snap` files: a CRC-checked envelope around a raft snapshot
//! whose data is etcd's v2 store as JSON.
use crate::error::{Result, WalError};
use etcd_standby_proto::{Message, raftpb, snappb};
use std::path::{Path, PathBuf};

/// A loaded and verified `.snap` file.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapFile {
    /// The file.
    pub path: PathBuf,
    /// Stored CRC-32C of the snapshot bytes.
    pub crc: u32,
    /// The raft snapshot (metadata + v2 store JSON in `data`).
    pub snapshot: raftpb::Snapshot,
}

use crate::names::{parse_snap_name, snap_file_name};

/// Decodes and verifies `.snap` bytes (as etcd's snapshotter does: empty data,
/// a zero CRC or a CRC mismatch are rejected).
pub fn decode_snap(path: &Path, bytes: &[u8]) -> Result<SnapFile> {
    let bad = |detail: String| WalError::BadSnapshot {
        path: path.to_path_buf(),
        detail,
    };
    if bytes.is_empty() {
        return Err(bad("empty snapshot file".into()));
    }
    let env = snappb::Snapshot::decode(bytes).map_err(|e| bad(format!("envelope: {e}")))?;
    let data = env.data.unwrap_or_default();
    if data.is_empty() || env.crc == 0 {
        return Err(bad("empty snapshot (no data or zero crc)".into()));
    }
    let computed = crc32c::crc32c(&data);
    if computed != env.crc {
        return Err(bad(format!(
            "crc mismatch: file says {:08x}, data computes {computed:08x}",
            env.crc
        )));
    }
    let snapshot =
        raftpb::Snapshot::decode(data).map_err(|e| bad(format!("raft snapshot: {e}")))?;
    Ok(SnapFile {
        path: path.to_path_buf(),
        crc: env.crc,
        snapshot,
    })
}

/// Reads and verifies a `.snap` file.
pub fn read_snap_file(path: &Path) -> Result<SnapFile> {
    let bytes = std::fs::read(path).map_err(|e| WalError::io(path, e))?;
    decode_snap(path, &bytes)
}

/// Writes `snapshot` as `<dir>/<term>-<index>.snap` and fsyncs it.
pub fn write_snap_file(dir: &Path, snapshot: &raftpb::Snapshot) -> Result<PathBuf> {
    let (term, index) = snapshot
        .metadata
        .as_ref()
        .map(|m| (m.term, m.index))
        .unwrap_or_default();
    let data = snapshot.encode_to_vec();
    let env = snappb::Snapshot {
        crc: crc32c::crc32c(&data),
        data: Some(data.into()),
    };
    let path = dir.join(snap_file_name(term, index));
    let write = || -> std::io::Result<()> {
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(crate::writer::PRIVATE_FILE_MODE)
                .open(&path)?
        };
        std::io::Write::write_all(&mut f, &env.encode_to_vec())?;
        f.sync_all()
    };
    write().map_err(|e| WalError::io(&path, e))?;
    Ok(path)
}

/// Lists `.snap` files of a directory, newest (highest term, index) first.
pub fn list_snap_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| WalError::io(dir, e))?;
    let mut v = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| WalError::io(dir, e))?;
        if let Some(key) = ent.file_name().to_str().and_then(parse_snap_name) {
            v.push((key, ent.path()));
        }
    }
    v.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(v.into_iter().map(|(_, p)| p).collect())
}
