//! The one parser and formatter of the hex-numbered file names in an etcd
//! data dir (and of our own files named the same way):
//!
//! | file | format | fields |
//! |---|---|---|
//! | WAL segment | `%016x-%016x.wal` | sequence, first index |
//! | snapshot | `%016x-%016x.snap` | term, index |
//! | snapshot db | `%016x.snap.db` | index |
//! | anything else | `<prefix>%016x<suffix>` (e.g. `model-%016x.bin`) | index |
//!
//! Every number is **exactly 16 hex digits**, either case, nothing else (no
//! sign, no spaces). What etcd accepts, for the record:
//!
//! * WAL (`wal/util.go parseWALName`): suffix `.wal`, then
//!   `fmt.Sscanf(name, "%016x-%016x.wal", ...)`. `%x` takes upper or lower
//!   case hex and no sign for an unsigned target; the width 16 is a
//!   *maximum*, so etcd also takes shorter fields (`1-2.wal`). etcd only ever
//!   writes 16 lowercase digits (`walName`), and orders segments by sorting
//!   the names as strings, which only works for fixed-width names; we
//!   therefore do not list shorter names as segments.
//! * `.snap.db` (`snap/snapshotter.go ReleaseSnapDBs`):
//!   `strconv.ParseUint(hex, 16, 64)`: either case, any length, no sign;
//!   etcd writes `%016x.snap.db` (`snap/db.go`) and looks dbs up by that name.
//! * `.snap`: etcd takes every `*.snap` file (`checkSuffix`), orders them by
//!   name and reads term and index from the contents; it writes
//!   `%016x-%016x.snap`.
//!
//! Rust's `u64::from_str_radix` alone is not enough: it accepts a leading
//! `+` (etcd does not), so digits are checked first.

/// `%016x-%016x.wal`: the name etcd gives a WAL segment.
pub fn segment_file_name(seq: u64, index: u64) -> String {
    format!("{seq:016x}-{index:016x}.wal")
}

/// Parses `%016x-%016x.wal` into (sequence, first index); anything else
/// (`.tmp`, `.wal.broken`, other widths) is `None`.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    hex_pair(name, ".wal")
}

/// `%016x-%016x.snap` (term, index).
pub fn snap_file_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}.snap")
}

/// Parses `%016x-%016x.snap` into (term, index).
pub fn parse_snap_name(name: &str) -> Option<(u64, u64)> {
    hex_pair(name, ".snap")
}

/// `%016x.snap.db`: the backend db of the snapshot at `index`.
pub fn snap_db_file_name(index: u64) -> String {
    indexed_file_name("", index, ".snap.db")
}

/// Parses `%016x.snap.db` into the index.
pub fn parse_snap_db_name(name: &str) -> Option<u64> {
    parse_indexed_name(name, "", ".snap.db")
}

/// `<prefix>%016x<suffix>`, e.g. `indexed_file_name("model-", i, ".bin")`.
pub fn indexed_file_name(prefix: &str, index: u64, suffix: &str) -> String {
    format!("{prefix}{index:016x}{suffix}")
}

/// Parses `<prefix>%016x<suffix>` into the index.
pub fn parse_indexed_name(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    hex16(name.strip_prefix(prefix)?.strip_suffix(suffix)?)
}

/// `%016x-%016x<suffix>`.
fn hex_pair(name: &str, suffix: &str) -> Option<(u64, u64)> {
    let (a, b) = name.strip_suffix(suffix)?.split_once('-')?;
    Some((hex16(a)?, hex16(b)?))
}

/// Exactly 16 ASCII hex digits, either case.
fn hex16(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0000000000000001";
    const B: &str = "0000000000000029";

    #[test]
    fn names_round_trip() {
        for (x, y) in [(0, 0), (1, 0x29), (u64::MAX, u64::MAX - 1)] {
            assert_eq!(parse_segment_name(&segment_file_name(x, y)), Some((x, y)));
            assert_eq!(parse_snap_name(&snap_file_name(x, y)), Some((x, y)));
            assert_eq!(parse_snap_db_name(&snap_db_file_name(x)), Some(x));
            let m = indexed_file_name("model-", x, ".bin");
            assert_eq!(parse_indexed_name(&m, "model-", ".bin"), Some(x));
        }
        assert_eq!(segment_file_name(1, 0x29), format!("{A}-{B}.wal"));
        assert_eq!(
            snap_file_name(2, 0x29),
            format!("0000000000000002-{B}.snap")
        );
        assert_eq!(snap_db_file_name(0x29), format!("{B}.snap.db"));
        assert_eq!(
            indexed_file_name("model-", 0xab, ".bin"),
            "model-00000000000000ab.bin"
        );
    }

    #[test]
    fn uppercase_hex_is_accepted_like_etcd() {
        assert_eq!(
            parse_segment_name("000000000000000A-00000000000000fF.wal"),
            Some((10, 255))
        );
        assert_eq!(parse_snap_db_name("00000000000000AB.snap.db"), Some(0xab));
    }

    #[test]
    fn rejects_what_is_not_exactly_the_format() {
        let bad_segments = [
            // wrong suffixes
            format!("{A}-{B}.wal.broken"),
            format!("{A}-{B}.wal.tmp"),
            "0.tmp".to_owned(),
            format!("{A}-{B}.snap"),
            // wrong widths (etcd's Sscanf would take the short ones; etcd never writes them)
            format!("1-{B}.wal"),
            format!("{A}-29.wal"),
            format!("0{A}-{B}.wal"),
            format!("{A}-0{B}.wal"),
            // not hex, signs, spaces, separators
            format!("zz00000000000000-{B}.wal"),
            format!("000000000000000g-{B}.wal"),
            format!("+000000000000001-{B}.wal"),
            format!("-000000000000001-{B}.wal"),
            format!(" 000000000000001-{B}.wal"),
            format!("{A}_{B}.wal"),
            format!("{A}{B}.wal"),
            format!("{A}-{B}-{B}.wal"),
            format!("{A}-{B}"),
            String::new(),
            ".wal".to_owned(),
        ];
        for name in &bad_segments {
            assert_eq!(parse_segment_name(name), None, "{name:?}");
        }
        assert_eq!(parse_snap_name(&format!("{A}-{B}.snap.db")), None);
        assert_eq!(parse_snap_name(&format!("{A}.snap")), None);
        for name in [
            format!("{A}-{B}.snap"),
            "29.snap.db".to_owned(),
            format!("+{}.snap.db", &B[1..]),
            format!("{B}.snap.db.tmp"),
            format!("x{B}.snap.db"),
        ] {
            assert_eq!(parse_snap_db_name(&name), None, "{name:?}");
        }
        for name in [
            format!("model-{B}.bin.tmp"),
            format!("model{B}.bin"),
            "model-.bin".to_owned(),
            "model-29.bin".to_owned(),
            format!("model-{B}"),
        ] {
            assert_eq!(
                parse_indexed_name(&name, "model-", ".bin"),
                None,
                "{name:?}"
            );
        }
    }
}
