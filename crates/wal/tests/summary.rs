//! `summarize` reads segments on several threads and joins them at the
//! boundaries; it must report exactly what the one-pass read reports, on
//! clean WALs and on every damaged one.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use etcd_standby_proto::{Message, etcdserverpb, raftpb, walpb};
use etcd_standby_wal::frame::{self, RecordType};
use etcd_standby_wal::{
    ReadProgress, Segment, WalSummary, list_segments, summarize, summarize_in_one_pass,
};

/// Counts bytes and restarts (a restart = the joined result was not used).
#[derive(Default)]
struct Counted {
    bytes: AtomicU64,
    restarts: AtomicU64,
}

impl ReadProgress for Counted {
    fn read(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Both ways, and whether the threaded one fell back to one pass.
fn both(dir: &Path) -> (WalSummary, WalSummary, bool) {
    let segs: Vec<Segment> = list_segments(dir).unwrap();
    let one = summarize_in_one_pass(segs.clone(), &|_| {}).unwrap();
    let c = Counted::default();
    let threaded = summarize(segs, 3, &c).unwrap();
    (one, threaded, c.restarts.load(Ordering::Relaxed) > 0)
}

/// Segment files built record by record, the CRC chain carried across
/// segments as etcd does (each segment opens with a CRC record).
struct Builder {
    crc: u32,
    segments: Vec<(u64, Vec<u8>)>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            crc: 0,
            segments: Vec::new(),
        }
    }

    fn segment(&mut self, first_index: u64, node: u64) {
        self.segments.push((first_index, Vec::new()));
        self.push(RecordType::Crc, None);
        let md = etcdserverpb::Metadata {
            node_id: node,
            cluster_id: 7,
        };
        self.push(RecordType::Metadata, Some(&md.encode_to_vec()));
    }

    fn push(&mut self, rtype: RecordType, data: Option<&[u8]>) {
        if rtype != RecordType::Crc {
            self.crc = frame::crc_update(self.crc, data.unwrap_or_default());
        }
        let crc = self.crc;
        let buf = &mut self.segments.last_mut().unwrap().1;
        frame::encode_frame(buf, rtype, crc, data);
    }

    fn entries(&mut self, indexes: impl IntoIterator<Item = u64>) {
        for i in indexes {
            let e = raftpb::Entry {
                term: 2,
                index: i,
                r#type: 0,
                data: Some(vec![i as u8; (i % 40) as usize].into()),
            };
            self.push(RecordType::Entry, Some(&e.encode_to_vec()));
        }
    }

    fn state(&mut self, commit: u64) {
        let hs = raftpb::HardState {
            term: 2,
            vote: 1,
            commit,
        };
        self.push(RecordType::State, Some(&hs.encode_to_vec()));
    }

    fn snapshot(&mut self, index: u64) {
        let s = walpb::Snapshot {
            index,
            term: 2,
            ..Default::default()
        };
        self.push(RecordType::Snapshot, Some(&s.encode_to_vec()));
    }

    fn write(&self, dir: &Path) {
        for (seq, (index, bytes)) in self.segments.iter().enumerate() {
            let name = format!("{seq:016x}-{index:016x}.wal");
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

/// Six segments: entries, hard states, a snapshot marker, and a suffix
/// rewritten right at a boundary.
fn clean() -> Builder {
    let mut b = Builder::new();
    b.segment(0, 1);
    b.entries(1..=30);
    b.state(30);
    for k in 1..5u64 {
        b.segment(k * 30 + 1, 1);
        b.entries(k * 30 + 1..=k * 30 + 30);
        b.state(k * 30 + 30);
    }
    b.snapshot(140);
    // A later leader rewrote 141..150 right after the cut.
    b.segment(141, 1);
    b.entries(141..=170);
    b.state(170);
    b
}

#[test]
fn threaded_summary_of_a_clean_wal_is_the_one_pass_summary_without_a_second_read() {
    let tmp = tempfile::tempdir().unwrap();
    clean().write(tmp.path());
    let (one, threaded, reread) = both(tmp.path());
    assert_eq!(threaded, one);
    assert!(!reread, "a clean WAL is not read twice");
    assert!(one.problem.is_none(), "{:?}", one.problem);
    assert_eq!(one.first_index, Some(1));
    assert_eq!(one.last_index, 170);
    assert_eq!(one.entries, 180);
    assert_eq!(one.rewrites, 1, "141 follows 150 across the last boundary");
    assert_eq!(one.snapshots, vec![(140, 2)]);
    assert_eq!(one.ends.len(), 6);
    assert_eq!(one.state.map(|h| h.commit), Some(170));
}

/// Two segments, entries 1..=10 then `second..=20` from node `node`, the
/// chain broken between them if `break_chain`; the report (the same both
/// ways, and only after a second read) has a problem, returned.
fn boundary_problem(second: u64, node: u64, break_chain: bool) -> etcd_standby_wal::ProblemRef {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Builder::new();
    b.segment(0, 1);
    b.entries(1..=10);
    if break_chain {
        b.crc ^= 1;
    }
    b.segment(second, node);
    b.entries(second..=20);
    b.write(tmp.path());
    let (one, threaded, reread) = both(tmp.path());
    assert_eq!(threaded, one);
    assert!(
        reread,
        "a boundary that does not join is read again in one pass"
    );
    one.problem.expect("a problem at the boundary")
}

#[test]
fn a_gap_a_metadata_conflict_or_a_broken_chain_at_a_boundary_is_reported_as_one_pass_does() {
    let gap = boundary_problem(12, 1, false);
    assert!(gap.detail.contains("gap after 10"), "{}", gap.detail);
    assert_eq!(gap.location.record_index, 14, "counted across segments");
    let other_node = boundary_problem(11, 2, false);
    assert!(
        other_node.detail.contains("metadata conflict"),
        "{}",
        other_node.detail
    );
    let chain = boundary_problem(11, 1, true);
    assert!(
        chain.detail.contains("does not continue the chain"),
        "{}",
        chain.detail
    );
}

#[test]
fn every_flipped_byte_gives_the_same_report_both_ways() {
    let good = clean();
    let tmp = tempfile::tempdir().unwrap();
    let total: usize = good.segments.iter().map(|s| s.1.len()).sum();
    let mut found = 0;
    // Every fourth byte of every segment (about 2300 WALs).
    for pos in (0..total).step_by(4) {
        let mut b = Builder {
            crc: 0,
            segments: good.segments.clone(),
        };
        let mut p = pos;
        for (_, bytes) in &mut b.segments {
            if p < bytes.len() {
                bytes[p] ^= 0x5a;
                break;
            }
            p -= bytes.len();
        }
        for f in std::fs::read_dir(tmp.path()).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        b.write(tmp.path());
        let (one, threaded, _) = both(tmp.path());
        assert_eq!(threaded, one, "flip at byte {pos} of the WAL");
        found += usize::from(one.problem.is_some());
    }
    assert!(found > 500, "flips found: {found}");
}
