//! Malformed input: byte flips, truncation, random data, crafted cycles and bad references.
//! The walker must never panic, never hang, and report structural damage as errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{exercise, fixture, read_fixture};
use etcd_standby_bolt::{BoltError, BoltFile, fnv1a64};
use proptest::prelude::*;

const DB_34: &str = "etcd-3.4.23/data/member/snap/db";
const SNAP_34: &str = "etcd-3.4.23/etcdctl-snapshot.db";
const MULTI: &str = "etcd-3.5.1/bbolt-multipage/db";
const PS: usize = 4096;

/// Runs [`exercise`]. Termination is guaranteed by the walker's bounds (depth
/// limit, page-visit budget); a hang would trip the test runner's timeout, so
/// no wall-clock assertion is made here (speed is a benchmark's job).
fn exercise_timed(data: Vec<u8>, _what: &str) -> Result<(), BoltError> {
    exercise(data)
}

fn put_u16(data: &mut [u8], off: usize, v: u16) {
    data[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(data: &mut [u8], off: usize, v: u32) {
    data[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(data: &mut [u8], off: usize, v: u64) {
    data[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the checksum of meta page `index` after an edit.
fn reseal_meta(data: &mut [u8], index: usize) {
    let base = index * PS;
    let sum = fnv1a64(&data[base + 16..base + 72]);
    put_u64(data, base + 72, sum);
}

/// Sets child `i` of branch page `page` to `child`.
fn set_branch_child(data: &mut [u8], page: usize, i: usize, child: u64) {
    put_u64(data, page * PS + 16 + i * 16 + 8, child);
}

fn corrupt_err(result: Result<(), BoltError>) -> String {
    match result {
        Err(e @ BoltError::Corrupt { .. }) => e.to_string(),
        other => panic!("expected a Corrupt error, got {other:?}"),
    }
}

#[test]
fn flipping_any_byte_of_the_small_db_never_panics_or_hangs() {
    let original = read_fixture(DB_34);
    assert_eq!(original.len(), 20480);
    let mut failures = 0;
    for i in 0..original.len() {
        for mask in [0xff, 0x01] {
            let mut data = original.clone();
            data[i] ^= mask;
            failures +=
                usize::from(exercise_timed(data, &format!("flip {mask:#x} at {i}")).is_err());
        }
    }
    // Page 3 (root directory with inline buckets) and the metas are structural: flips there
    // must be noticed at least sometimes, and flips in unused pages 2 and 4 must not matter.
    assert!(failures > 100, "only {failures} flips detected");
    for page in [2, 4] {
        let mut data = original.clone();
        data[page * PS + 100] ^= 0xff;
        exercise(data).unwrap();
    }
}

#[test]
fn flipping_structural_bytes_of_the_multipage_db_never_panics_or_hangs() {
    let original = read_fixture(MULTI);
    let pages = original.len() / PS;
    let mut offsets: Vec<usize> = Vec::new();
    for page in 2..pages {
        // id, flags, count and overflow of the header, then the first element header
        let base = page * PS;
        offsets.extend([0, 7, 8, 10, 11, 12, 15].map(|o| base + o));
        offsets.extend((16..32).step_by(3).map(|o| base + o));
    }
    // element headers of the branch page and the root directory
    offsets.extend((88 * PS + 32..88 * PS + 16 + 85 * 16).step_by(11));
    offsets.extend((89 * PS + 32..89 * PS + 16 + 10 * 16).step_by(2));
    for &off in &offsets {
        let mut data = original.clone();
        data[off] ^= 0xff;
        let _ = exercise_timed(data, &format!("flip at {off}"));
    }
}

#[test]
fn truncating_at_any_offset_never_panics() {
    for rel in [DB_34, SNAP_34] {
        let original = read_fixture(rel);
        for len in 0..original.len() {
            let result = exercise_timed(original[..len].to_vec(), &format!("{rel} cut at {len}"));
            // A cut image never passes: either the metas or the high-water mark catch it
            // (cutting into the trailer leaves a complete image plus ignored tail bytes).
            assert!(
                result.is_err() || len >= 20480,
                "{rel} cut at {len} accepted"
            );
        }
    }
    let original = read_fixture(MULTI);
    for page in 0..=original.len() / PS {
        for delta in [0, 1, 16, 80, 2048] {
            if let Some(len) = (page * PS)
                .checked_sub(delta)
                .filter(|&l| l < original.len())
            {
                assert!(exercise_timed(original[..len].to_vec(), "multipage cut").is_err());
            }
        }
    }
}

#[test]
fn cyclic_branch_reference_is_reported_not_followed_forever() {
    let mut data = read_fixture(MULTI);
    set_branch_child(&mut data, 88, 0, 88);
    let db = BoltFile::from_bytes(data.clone()).unwrap();
    let bucket = db.bucket(b"key").unwrap().unwrap();
    let results: Vec<_> = db.iter(&bucket).collect();
    assert!(results.last().unwrap().is_err());
    assert!(
        results.len() < 10,
        "error should come before any leaf is read"
    );
    assert!(
        db.page_map()
            .unwrap_err()
            .to_string()
            .contains("referenced twice")
    );
    // the lookup descends into the cycle and hits the depth limit
    let first = etcd_standby_bolt::etcd::Revision { main: 2, sub: 0 }.to_key();
    assert!(
        db.get(&bucket, &first)
            .unwrap_err()
            .to_string()
            .contains("deeper")
    );
    corrupt_err(exercise(data));
}

#[test]
fn shared_child_pages_are_detected_by_key_order() {
    let mut data = read_fixture(MULTI);
    for i in 0..85 {
        set_branch_child(&mut data, 88, i, 2);
    }
    let msg = corrupt_err(exercise_timed(data, "shared children"));
    assert!(msg.contains("does not sort after"), "{msg}");
}

#[test]
fn reference_beyond_high_water_mark_is_rejected() {
    let mut data = read_fixture(MULTI);
    set_branch_child(&mut data, 88, 5, 101);
    let msg = corrupt_err(exercise(data));
    assert!(
        msg.contains("page 88") && msg.contains("outside 2..101"),
        "{msg}"
    );

    // a reference to a meta page is just as wrong
    let mut data = read_fixture(MULTI);
    set_branch_child(&mut data, 88, 5, 1);
    corrupt_err(exercise(data));
}

#[test]
fn page_that_is_neither_branch_nor_leaf_is_corruption() {
    let mut data = read_fixture(MULTI);
    put_u16(&mut data, 2 * PS + 8, 0x10); // freelist flag on a leaf of bucket `key`
    let msg = corrupt_err(exercise(data));
    assert!(
        msg.contains("page 2") && msg.contains("neither branch nor leaf"),
        "{msg}"
    );
}

#[test]
fn page_header_with_wrong_id_is_corruption() {
    let mut data = read_fixture(MULTI);
    put_u64(&mut data, 3 * PS, 7);
    assert!(corrupt_err(exercise(data)).contains("carries id 7"));
}

#[test]
fn overflow_past_high_water_mark_is_rejected() {
    let mut data = read_fixture(MULTI);
    put_u32(&mut data, 96 * PS + 12, 10);
    assert!(corrupt_err(exercise(data)).contains("overflow 10"));
}

#[test]
fn element_pointing_past_its_page_is_rejected() {
    let mut data = read_fixture(MULTI);
    put_u32(&mut data, 96 * PS + 16 + 4, 0x00ff_ffff); // pos of the first element
    assert!(corrupt_err(exercise(data)).contains("extends past"));
}

#[test]
fn invalid_meta_0_falls_back_to_meta_1_via_page_size_probe() {
    let mut data = read_fixture(DB_34);
    data[16] ^= 0xff; // magic of meta 0
    let db = BoltFile::from_bytes(data.clone()).unwrap();
    assert_eq!(
        (db.meta().index, db.meta().txid, db.page_size()),
        (1, 39, 4096)
    );
    assert!(!db.metas()[0].as_ref().unwrap().is_valid());
    exercise(data).unwrap();
}

#[test]
fn corrupt_newest_meta_selects_the_older_one() {
    let mut data = read_fixture(DB_34);
    data[PS + 72] ^= 0x01; // checksum of meta 1 (txid 39)
    let db = BoltFile::from_bytes(data).unwrap();
    assert_eq!((db.meta().index, db.meta().txid), (0, 38));
    let m1 = db.metas()[1].as_ref().unwrap();
    assert!(!m1.checksum_ok && !m1.is_valid());
}

#[test]
fn zero_meta_checksum_is_accepted_like_bbolt() {
    let mut data = read_fixture(DB_34);
    put_u64(&mut data, PS + 72, 0);
    let db = BoltFile::from_bytes(data).unwrap();
    assert_eq!(db.meta().txid, 39);
}

#[test]
fn no_valid_meta_is_a_typed_error() {
    let mut data = read_fixture(DB_34);
    data[16] ^= 0xff;
    data[PS + 16] ^= 0xff;
    match BoltFile::from_bytes(data) {
        Err(BoltError::NoValidMeta { meta0, .. }) => assert!(meta0.contains("magic"), "{meta0}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        BoltFile::from_bytes(Vec::new()),
        Err(BoltError::NoValidMeta { .. })
    ));
}

#[test]
fn meta_with_implausible_root_or_size_is_rejected() {
    let mut data = read_fixture(DB_34);
    put_u64(&mut data, PS + 56, 1 << 40); // pgid of meta 1
    reseal_meta(&mut data, 1);
    assert!(matches!(
        BoltFile::from_bytes(data),
        Err(BoltError::Truncated { .. })
    ));

    let mut data = read_fixture(DB_34);
    put_u64(&mut data, PS + 32, 1); // root of meta 1 points at a meta page
    reseal_meta(&mut data, 1);
    assert!(matches!(
        BoltFile::from_bytes(data),
        Err(BoltError::Corrupt { .. })
    ));
}

#[test]
fn truncated_file_reports_how_much_is_missing() {
    let data = read_fixture(DB_34);
    match BoltFile::from_bytes(data[..16384].to_vec()) {
        Err(BoltError::Truncated { needed, actual, .. }) => {
            assert_eq!((needed, actual), (20480, 16384))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn corrupted_snapshot_trailer_is_detected_but_image_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    for (what, off) in [
        ("trailer", 20511),
        ("unused page 2 of the image", 2 * PS + 7),
    ] {
        let mut data = read_fixture(SNAP_34);
        data[off] ^= 0x55;
        let path = dir.path().join("snap.db");
        std::fs::write(&path, &data).unwrap();
        let db = BoltFile::open(&path).unwrap();
        let trailer = db.trailer().unwrap();
        assert!(!trailer.is_valid(), "{what}");
        match db.verify_trailer() {
            Err(e @ BoltError::TrailerMismatch { .. }) => {
                assert!(e.to_string().contains("snap.db"))
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(db.buckets().unwrap().len(), 10, "{what}");
    }
}

#[test]
fn missing_file_is_an_io_error_with_the_path() {
    let err = BoltFile::open(fixture("does-not-exist.db")).unwrap_err();
    assert!(matches!(err, BoltError::Io { .. }));
    assert!(err.to_string().contains("does-not-exist.db"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..12_000)) {
        let _ = exercise_timed(data, "random bytes");
    }

    #[test]
    fn random_root_directory_page_with_valid_metas_never_panics(
        page in proptest::collection::vec(any::<u8>(), PS),
        count in 0u16..64,
        branch in any::<bool>(),
    ) {
        let mut data = read_fixture(DB_34);
        data[3 * PS..4 * PS].copy_from_slice(&page);
        if count > 0 {
            // keep a plausible header so the element parser is reached
            put_u64(&mut data, 3 * PS, 3);
            put_u16(&mut data, 3 * PS + 8, if branch { 1 } else { 2 });
            put_u16(&mut data, 3 * PS + 10, count);
            put_u32(&mut data, 3 * PS + 12, 0);
        }
        let _ = exercise_timed(data, "random root page");
    }

    #[test]
    fn random_multi_byte_damage_never_panics(
        edits in proptest::collection::vec((0usize..20480, any::<u8>()), 1..16),
    ) {
        let mut data = read_fixture(DB_34);
        for (off, byte) in edits {
            data[off] = byte;
        }
        let _ = exercise_timed(data, "multi-byte damage");
    }
}
