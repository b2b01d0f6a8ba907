//! etcd's `ReadAll` semantics over the record stream.
use crate::error::{Result, WalError};
use crate::reader::{WalReader, WalRecord};
use etcd_standby_proto::{etcdserverpb, raftpb, walpb};
use std::path::Path;

/// The raft log as etcd would load it.
#[derive(Debug, Default)]
pub struct WalLog {
    /// Node and cluster ID.
    pub metadata: Option<etcdserverpb::Metadata>,
    /// Last hard state.
    pub hard_state: Option<raftpb::HardState>,
    /// Entries after the start snapshot, conflicts resolved (a later record
    /// truncates the suffix it overwrites).
    pub entries: Vec<raftpb::Entry>,
    /// Every snapshot marker seen.
    pub snapshots: Vec<walpb::Snapshot>,
    /// A torn tail that ended reading early (tolerated, like etcd's read mode).
    pub torn_tail: Option<WalError>,
}

/// Reads entries with index greater than `after_index`. Corruption is an
/// error; a torn tail is reported in [`WalLog::torn_tail`].
pub fn read_log(dir: &Path, after_index: u64) -> Result<WalLog> {
    let mut reader = WalReader::open(dir)?;
    let mut log = WalLog::default();
    loop {
        let rec = match reader.next_record() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) if e.is_torn_tail() => {
                log.torn_tail = Some(e);
                break;
            }
            Err(e) => return Err(e),
        };
        let location = rec.location();
        match rec.decode()? {
            WalRecord::Metadata(m) => {
                if log.metadata.is_some_and(|old| old != m) {
                    return Err(WalError::Corrupt {
                        location,
                        detail: "metadata differs from earlier segments".into(),
                    });
                }
                log.metadata = Some(m);
            }
            WalRecord::Entry(e) => {
                if e.index > after_index {
                    let pos = (e.index - after_index - 1) as usize;
                    if pos > log.entries.len() {
                        return Err(WalError::Corrupt {
                            location,
                            detail: format!(
                                "entry {} leaves a gap (last entry {})",
                                e.index,
                                after_index + log.entries.len() as u64
                            ),
                        });
                    }
                    log.entries.truncate(pos);
                    log.entries.push(e);
                }
            }
            WalRecord::State(hs) => log.hard_state = Some(hs),
            WalRecord::Snapshot(s) => log.snapshots.push(s),
            WalRecord::Crc(_) => {}
        }
    }
    Ok(log)
}
