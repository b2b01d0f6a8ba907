//! After a failed write (a full disk), the learner cuts its WAL back to what
//! the writer last fsynced and re-opens it: nothing unsynced survives, not a
//! partial record, not a half-cut segment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use etcd_standby_proto::{etcdserverpb, raftpb};
use etcd_standby_wal::{WalWriter, discard_unsynced, list_segments, names, read_log};

fn e(index: u64) -> raftpb::Entry {
    raftpb::Entry {
        r#type: 0,
        term: 2,
        index,
        data: Some(vec![b'x'; 40].into()),
    }
}

fn hs(commit: u64) -> raftpb::HardState {
    raftpb::HardState {
        term: 2,
        vote: 0,
        commit,
    }
}

#[test]
fn unsynced_bytes_and_half_cut_segments_are_discarded_and_the_wal_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let md = etcdserverpb::Metadata {
        node_id: 1,
        cluster_id: 2,
    };
    let mut w = WalWriter::create(&dir, &md).unwrap().with_segment_size(600);
    for i in 1..=20u64 {
        w.save(Some(&hs(i - 1)), &[e(i)]).unwrap();
        w.sync().unwrap();
    }
    let segs = list_segments(&dir).unwrap();
    assert!(segs.len() > 1, "cut at least once: {segs:?}");
    let end = w.synced_end().clone();
    assert_eq!(end.path, *w.current_file());
    assert_eq!(std::fs::metadata(&end.path).unwrap().len(), end.offset);
    drop(w);

    // What a write that ran out of space may leave behind: part of a record
    // after the synced end (here a whole plausible record: only the synced
    // end tells it was never acknowledged), a half-written segment head
    // under its temporary name, and a next segment whose dir fsync failed.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&end.path)
        .unwrap();
    let mut junk = Vec::new();
    etcd_standby_wal::frame::encode_frame(
        &mut junk,
        etcd_standby_wal::RecordType::Entry,
        0,
        Some(b"never synced"),
    );
    f.write_all(&junk).unwrap();
    drop(f);
    let next = names::segment_file_name(end.seq + 1, 21);
    std::fs::write(dir.join(format!("{next}.tmp")), b"\0\0half").unwrap();
    std::fs::write(dir.join(&next), b"").unwrap();

    discard_unsynced(&dir, &end).unwrap();
    assert_eq!(std::fs::metadata(&end.path).unwrap().len(), end.offset);
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| names::parse_segment_name(n).is_some()),
        "only segments remain: {left:?}"
    );
    assert_eq!(list_segments(&dir).unwrap(), segs);

    // Re-opened, it continues the chain exactly where the fsync left it.
    let mut w = WalWriter::open(&dir).unwrap().with_segment_size(600);
    assert_eq!(w.last_index(), 20);
    w.save(Some(&hs(21)), &[e(21)]).unwrap();
    w.sync().unwrap();
    let log = read_log(&dir, 0).unwrap();
    assert!(log.torn_tail.is_none());
    let idx: Vec<u64> = log.entries.iter().map(|e| e.index).collect();
    assert_eq!(idx, (1..=21).collect::<Vec<_>>());
    assert_eq!(log.hard_state.map(|h| h.commit), Some(21));
}
