//! Damage every byte of a real etcd WAL and check that reading never panics
//! and that problems are reported in the right file at the right place.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use etcd_standby_proto::{etcdserverpb, raftpb};
use etcd_standby_wal::{WalError, WalReader, WalRecord, WalWriter};
use std::path::{Path, PathBuf};

fn fixture_wal() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/etcd-3.4.23/data/member/wal/0000000000000000-0000000000000000.wal");
    std::fs::read(p).unwrap()
}

/// (frame start, frame end incl. padding) of every record.
fn frames(bytes: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut off = 0usize;
    loop {
        let lf = u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap());
        if lf == 0 {
            break;
        }
        let (n, pad) = etcd_standby_wal::frame::decode_len_field(lf);
        let end = off + 8 + (n + pad) as usize;
        out.push((off as u64, end as u64));
        off = end;
    }
    out
}

/// Reads the whole WAL; returns the entries read and the problem, if any.
/// (index, term, data) of each entry read.
type Entries = Vec<(u64, u64, Vec<u8>)>;

fn read(dir: &Path) -> (Entries, Option<WalError>) {
    let mut reader = WalReader::open(dir).unwrap();
    let mut entries = Vec::new();
    loop {
        match reader.next_record() {
            Ok(Some(rec)) => match rec.decode() {
                Ok(WalRecord::Entry(e)) => {
                    entries.push((e.index, e.term, e.data.unwrap_or_default().to_vec()))
                }
                Ok(_) => {}
                Err(e) => return (entries, Some(e)),
            },
            Ok(None) => return (entries, None),
            Err(e) => return (entries, Some(e)),
        }
    }
}

#[test]
fn every_flipped_byte_is_caught_in_its_record_or_is_harmless() {
    let original = fixture_wal();
    let frames = frames(&original);
    let records_end = frames.last().unwrap().1;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let file = dir.join("0000000000000000-0000000000000000.wal");
    std::fs::write(&file, &original).unwrap();
    let (clean_entries, p) = read(dir);
    assert!(p.is_none());
    let mut detected = 0;
    let mut harmless = 0;
    for pos in 0..original.len() {
        let mut bytes = original.clone();
        bytes[pos] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        let (entries, problem) = read(dir);
        let containing = frames
            .iter()
            .position(|&(s, e)| (s..e).contains(&(pos as u64)));
        match problem {
            Some(err) => {
                detected += 1;
                let loc = err
                    .location()
                    .unwrap_or_else(|| panic!("flip at {pos}: {err}"));
                assert_eq!(loc.file, file, "flip at {pos}");
                match containing {
                    Some(i) => {
                        let (start, end) = frames[i];
                        // Detected at the damaged record, or (when the damage
                        // changed where the record ends) at the misaligned
                        // position right after its shortened body.
                        assert!(
                            loc.offset >= start && loc.offset < end,
                            "flip at {pos} in record {i} [{start},{end}) reported at {}: {err}",
                            loc.offset
                        );
                        if loc.offset == start {
                            assert_eq!(loc.record_index, i as u64, "flip at {pos}");
                        }
                    }
                    None => {
                        // In the zero tail only the first length field matters:
                        // torn when it is followed by zeroed sectors, except an
                        // absurd length, which etcd 3.4/3.5.1 refuse outright.
                        assert_eq!(loc.offset, records_end, "flip at {pos}: {err}");
                        assert!(
                            err.is_torn_tail() || err.to_string().contains("refuse such a record"),
                            "flip at {pos}: {err}"
                        );
                    }
                }
            }
            None => {
                harmless += 1;
                // Undetected damage must not have changed any entry: it hit
                // padding, ignored length-field bits, the zero tail beyond
                // the end marker, or a record type whose payload still decodes.
                if entries != clean_entries {
                    let (s, _) = frames[containing.unwrap()];
                    assert!(
                        pos as u64 == s + 9,
                        "flip at {pos} changed entries without being detected"
                    );
                }
            }
        }
    }
    assert!(detected > 5000, "{detected} detected, {harmless} harmless");
}

#[test]
fn truncating_inside_the_last_record_is_a_torn_tail_at_its_start() {
    let original = fixture_wal();
    let frames = frames(&original);
    let (last_start, last_end) = *frames.last().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("0000000000000000-0000000000000000.wal");
    for cut in last_start..=last_end {
        std::fs::write(&file, &original[..cut as usize]).unwrap();
        let (_, problem) = read(tmp.path());
        if cut == last_start || cut == last_end {
            assert!(problem.is_none(), "cut at {cut}: {problem:?}");
            continue;
        }
        let err = problem.unwrap_or_else(|| panic!("cut at {cut} not detected"));
        assert!(err.is_torn_tail(), "cut at {cut}: {err}");
        let loc = err.location().unwrap();
        assert_eq!((loc.file.clone(), loc.offset), (file.clone(), last_start));
        assert_eq!(loc.record_index, frames.len() as u64 - 1);
    }
}

fn write_multi_segment(dir: &Path) -> Vec<PathBuf> {
    let md = etcdserverpb::Metadata {
        node_id: 1,
        cluster_id: 2,
    };
    let mut w = WalWriter::create(dir, &md).unwrap().with_segment_size(4096);
    for i in 1..=200u64 {
        let e = raftpb::Entry {
            r#type: 0,
            term: 1,
            index: i,
            data: Some(vec![i as u8; 100].into()),
        };
        let hs = raftpb::HardState {
            term: 1,
            vote: 1,
            commit: i,
        };
        w.save(Some(&hs), &[e]).unwrap();
        w.sync().unwrap();
    }
    etcd_standby_wal::list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect()
}

#[test]
fn writer_cuts_segments_that_read_back_with_an_unbroken_crc_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let files = write_multi_segment(&dir);
    assert!(files.len() >= 5, "{} segments", files.len());
    let log = etcd_standby_wal::read_log(&dir, 0).unwrap();
    assert_eq!(log.entries.len(), 200);
    assert_eq!(log.hard_state.unwrap().commit, 200);
    // segment names carry the first index they hold
    for f in &files[1..] {
        let name = f.file_name().unwrap().to_str().unwrap();
        let (_, first) = etcd_standby_wal::names::parse_segment_name(name).unwrap();
        let mut reader = WalReader::from_segments(vec![etcd_standby_wal::Segment {
            path: f.clone(),
            seq: 0,
            index: first,
        }]);
        let mut first_entry = None;
        while let Some(rec) = reader.next_record().unwrap() {
            if let WalRecord::Entry(e) = rec.decode().unwrap() {
                first_entry.get_or_insert(e.index);
            }
        }
        assert_eq!(first_entry, Some(first), "{name}");
    }
    // reopening continues the chain
    let mut w = WalWriter::open(&dir).unwrap();
    assert_eq!(w.last_index(), 200);
    let e = raftpb::Entry {
        r#type: 0,
        term: 2,
        index: 201,
        data: None,
    };
    w.save(None, &[e]).unwrap();
    w.sync().unwrap();
    assert_eq!(
        etcd_standby_wal::read_log(&dir, 0).unwrap().entries.len(),
        201
    );
}

#[test]
fn damage_in_a_middle_segment_is_corruption_not_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let files = write_multi_segment(&dir);
    let victim = &files[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let n = bytes.len();
    // zero a whole sector-aligned tail chunk: in the last file this would be torn
    for b in &mut bytes[n - 600..] {
        *b = 0;
    }
    std::fs::write(victim, &bytes).unwrap();
    let (_, problem) = read(&dir);
    let err = problem.unwrap();
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
    assert_eq!(&err.location().unwrap().file, victim);
    // truncating a middle segment is corruption too
    let files = write_multi_segment(&tmp.path().join("wal2"));
    let bytes = std::fs::read(&files[2]).unwrap();
    std::fs::write(&files[2], &bytes[..bytes.len() - 3]).unwrap();
    let (_, problem) = read(&tmp.path().join("wal2"));
    let err = problem.unwrap();
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
    assert_eq!(&err.location().unwrap().file, &files[2]);
}

#[test]
fn open_for_append_repairs_a_torn_tail_like_etcd() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    std::fs::create_dir_all(&dir).unwrap();
    let torn = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/etcd-3.4.23/torn-wal/before/0000000000000000-0000000000000000.wal");
    let file = dir.join("0000000000000000-0000000000000000.wal");
    std::fs::copy(&torn, &file).unwrap();
    let w = WalWriter::open(&dir).unwrap();
    assert_eq!(w.last_index(), 59);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 5824);
    let broken = dir.join("0000000000000000-0000000000000000.wal.broken");
    assert_eq!(
        std::fs::read(broken).unwrap(),
        std::fs::read(&torn).unwrap()
    );
}
