//! Sans-IO frame codec: the 8-byte length field with padding, and the
//! three-field `walpb.Record` envelope parsed without allocation.

/// Size at which etcd cuts a segment (64,000,000 bytes, not MiB).
pub const SEGMENT_SIZE_BYTES: u64 = 64_000_000;
/// etcd's torn-write detection works on 512-byte sectors.
pub const MIN_SECTOR_SIZE: u64 = 512;
/// 3.4 / 3.5.0-3.5.4 refuse records at or above this size; we read them but warn.
pub const ETCD_MAX_RECORD_SIZE: u64 = 10 * 1024 * 1024;

/// WAL record types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    /// `etcdserverpb.Metadata` (node and cluster ID).
    Metadata,
    /// `raftpb.Entry`.
    Entry,
    /// `raftpb.HardState`.
    State,
    /// Running CRC seed at the head of each segment.
    Crc,
    /// `walpb.Snapshot` marker.
    Snapshot,
}

impl RecordType {
    /// Maps etcd's numeric record type.
    pub fn from_i64(v: i64) -> Option<Self> {
        Some(match v {
            1 => RecordType::Metadata,
            2 => RecordType::Entry,
            3 => RecordType::State,
            4 => RecordType::Crc,
            5 => RecordType::Snapshot,
            _ => return None,
        })
    }

    /// etcd's numeric value.
    pub fn as_i64(self) -> i64 {
        match self {
            RecordType::Metadata => 1,
            RecordType::Entry => 2,
            RecordType::State => 3,
            RecordType::Crc => 4,
            RecordType::Snapshot => 5,
        }
    }

    /// Lower-case name as printed by the tools.
    pub fn name(self) -> &'static str {
        match self {
            RecordType::Metadata => "metadata",
            RecordType::Entry => "entry",
            RecordType::State => "state",
            RecordType::Crc => "crc",
            RecordType::Snapshot => "snapshot",
        }
    }
}

/// Splits a length field into (protobuf length, padding bytes).
pub fn decode_len_field(lf: u64) -> (u64, u64) {
    let n = lf & 0x00FF_FFFF_FFFF_FFFF;
    let pad = if lf >> 63 == 1 { (lf >> 56) & 0x7 } else { 0 };
    (n, pad)
}

/// Builds the length field for `n` protobuf bytes; returns (field, padding).
pub fn encode_len_field(n: u64) -> (u64, u64) {
    let pad = (8 - n % 8) % 8;
    if pad == 0 {
        (n, 0)
    } else {
        (n | ((0x80 | pad) << 56), pad)
    }
}

/// A `walpb.Record` borrowed from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Record type as on disk (may be unknown).
    pub rtype: i64,
    /// Stored running CRC.
    pub crc: u32,
    /// Payload (`None` when the field is absent, e.g. crc records).
    pub data: Option<&'a [u8]>,
}

#[inline(always)]
fn read_varint(b: &[u8], i: &mut usize) -> Result<u64, &'static str> {
    // One byte (keys, types, small numbers) inline; longer ones out of line.
    if let Some(&x) = b.get(*i)
        && x < 0x80
    {
        *i += 1;
        return Ok(u64::from(x));
    }
    if let Some(v) = read_varint_word(b, i) {
        return v;
    }
    read_varint_long(b, i)
}

/// A varint of 2 to 8 bytes read as one little-endian word (CRCs, lengths,
/// indexes): the first byte without the continuation bit ends it, and the
/// 7-bit groups are packed in three shift steps instead of a byte loop.
/// `None` (the byte loop decides) when fewer than 8 bytes remain or the
/// varint is longer; a varint of at most 8 bytes holds at most 56 bits, so
/// it can neither overflow nor be too long.
#[inline]
fn read_varint_word(b: &[u8], i: &mut usize) -> Option<Result<u64, &'static str>> {
    let word = u64::from_le_bytes(*b.get(*i..)?.first_chunk::<8>()?);
    let stops = !word & 0x8080_8080_8080_8080;
    if stops == 0 {
        return None;
    }
    // Bits up to and including the ending byte's (clear) high bit.
    let bits = stops.trailing_zeros() + 1;
    let x = if bits == 64 {
        word
    } else {
        word & ((1u64 << bits) - 1)
    } & 0x7f7f_7f7f_7f7f_7f7f;
    let x = ((x & 0x7f00_7f00_7f00_7f00) >> 1) | (x & 0x007f_007f_007f_007f);
    let x = ((x & 0x3fff_0000_3fff_0000) >> 2) | (x & 0x0000_3fff_0000_3fff);
    let x = ((x & 0x0fff_ffff_0000_0000) >> 4) | (x & 0x0000_0000_0fff_ffff);
    *i += bits as usize / 8;
    Some(Ok(x))
}

#[inline(never)]
fn read_varint_long(b: &[u8], i: &mut usize) -> Result<u64, &'static str> {
    // Bytes 0..9 carry 7 bits each; the tenth may only be 0 or 1 (bit 63),
    // and then ends the varint.
    let mut v: u64 = 0;
    for n in 0..10 {
        let Some(&x) = b.get(*i) else {
            return Err("truncated varint");
        };
        *i += 1;
        if n == 9 && x > 1 {
            return Err("varint overflows 64 bits");
        }
        v |= u64::from(x & 0x7f) << (7 * n);
        if x < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long")
}

/// Parses the protobuf bytes of a `walpb.Record` the way gogo's generated
/// unmarshaler does: known fields must have their wire type, unknown fields are
/// skipped, groups are rejected.
pub fn parse_record(b: &[u8]) -> Result<RawRecord<'_>, &'static str> {
    if let Some(rec) = parse_canonical_record(b) {
        return Ok(rec);
    }
    let mut i = 0;
    let mut rec = RawRecord {
        rtype: 0,
        crc: 0,
        data: None,
    };
    while i < b.len() {
        let key = read_varint(b, &mut i)?;
        let (field, wt) = (key >> 3, key & 7);
        if field == 0 {
            return Err("field number 0");
        }
        match (field, wt) {
            (1, 0) => rec.rtype = read_varint(b, &mut i)? as i64,
            (2, 0) => rec.crc = read_varint(b, &mut i)? as u32,
            (3, 2) => {
                let n = read_varint(b, &mut i)?;
                let end = usize::try_from(n)
                    .ok()
                    .and_then(|n| i.checked_add(n))
                    .filter(|&e| e <= b.len())
                    .ok_or("data field runs past the record")?;
                rec.data = Some(&b[i..end]);
                i = end;
            }
            (1..=3, _) => return Err("known field with wrong wire type"),
            (_, 0) => {
                read_varint(b, &mut i)?;
            }
            (_, 1) => {
                i = i
                    .checked_add(8)
                    .filter(|&e| e <= b.len())
                    .ok_or("truncated fixed64")?
            }
            (_, 5) => {
                i = i
                    .checked_add(4)
                    .filter(|&e| e <= b.len())
                    .ok_or("truncated fixed32")?
            }
            (_, 2) => {
                let n = read_varint(b, &mut i)?;
                i = usize::try_from(n)
                    .ok()
                    .and_then(|n| i.checked_add(n))
                    .filter(|&e| e <= b.len())
                    .ok_or("length-delimited field runs past the record")?;
            }
            _ => return Err("unsupported wire type"),
        }
    }
    Ok(rec)
}

/// The record exactly as etcd writes it (type, crc, then data running to
/// the end), parsed without the general field loop; `None` for any other
/// shape, which [`parse_record`] then parses field by field. Same result as
/// the general parser on every input it accepts.
#[inline]
fn parse_canonical_record(b: &[u8]) -> Option<RawRecord<'_>> {
    let &[0x08, rtype, 0x10] = b.first_chunk::<3>()? else {
        return None;
    };
    if rtype >= 0x80 {
        return None;
    }
    let mut i = 3;
    let crc = read_varint(b, &mut i).ok()?;
    let crc = u32::try_from(crc).ok()?;
    if i == b.len() {
        return Some(RawRecord {
            rtype: i64::from(rtype),
            crc,
            data: None,
        });
    }
    if b[i] != 0x1a {
        return None;
    }
    i += 1;
    let n = usize::try_from(read_varint(b, &mut i).ok()?).ok()?;
    if b.len().checked_sub(i)? != n {
        return None;
    }
    Some(RawRecord {
        rtype: i64::from(rtype),
        crc,
        data: Some(&b[i..]),
    })
}

/// Reads `(term, index)` of an encoded `raftpb.Entry` without copying its
/// data (the verify hot path). `None` if the bytes are not a valid entry.
pub fn entry_term_index(b: &[u8]) -> Option<(u64, u64)> {
    canonical_entry_term_index(b).or_else(|| general_entry_term_index(b))
}

/// [`entry_term_index`] field by field, for any field order.
fn general_entry_term_index(b: &[u8]) -> Option<(u64, u64)> {
    let (mut i, mut term, mut index) = (0usize, 0u64, 0u64);
    while i < b.len() {
        let key = read_varint(b, &mut i).ok()?;
        match (key >> 3, key & 7) {
            (1, 0) => {
                read_varint(b, &mut i).ok()?;
            }
            (2, 0) => term = read_varint(b, &mut i).ok()?,
            (3, 0) => index = read_varint(b, &mut i).ok()?,
            (1..=3, _) => return None,
            (0, _) => return None,
            (_, 0) => {
                read_varint(b, &mut i).ok()?;
            }
            (_, 1) => i = i.checked_add(8).filter(|&e| e <= b.len())?,
            (_, 5) => i = i.checked_add(4).filter(|&e| e <= b.len())?,
            (_, 2) => {
                let n = usize::try_from(read_varint(b, &mut i).ok()?).ok()?;
                i = i.checked_add(n).filter(|&e| e <= b.len())?;
            }
            _ => return None,
        }
    }
    Some((term, index))
}

/// [`entry_term_index`] of an entry laid out as etcd writes it (type, term,
/// index, then the data running to the end); `None` for any other layout.
#[inline]
fn canonical_entry_term_index(b: &[u8]) -> Option<(u64, u64)> {
    let &[0x08, t, 0x10, ..] = b else {
        return None;
    };
    if t >= 0x80 {
        return None;
    }
    let mut i = 3;
    let term = read_varint(b, &mut i).ok()?;
    if b.get(i) != Some(&0x18) {
        return None;
    }
    i += 1;
    let index = read_varint(b, &mut i).ok()?;
    if i == b.len() {
        return Some((term, index));
    }
    if b[i] != 0x22 {
        return None;
    }
    i += 1;
    let n = usize::try_from(read_varint(b, &mut i).ok()?).ok()?;
    (b.len().checked_sub(i)? == n).then_some((term, index))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends one framed record (length field, record, zero padding) to `out`,
/// encoded exactly as etcd does (type and crc always present).
pub fn encode_frame(out: &mut Vec<u8>, rtype: RecordType, crc: u32, data: Option<&[u8]>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    out.push(0x08);
    put_varint(out, rtype.as_i64() as u64);
    out.push(0x10);
    put_varint(out, u64::from(crc));
    if let Some(d) = data {
        out.push(0x1a);
        put_varint(out, d.len() as u64);
        out.extend_from_slice(d);
    }
    let n = (out.len() - start - 8) as u64;
    let (lf, pad) = encode_len_field(n);
    out[start..start + 8].copy_from_slice(&lf.to_le_bytes());
    out.resize(out.len() + pad as usize, 0);
}

/// etcd's torn-write heuristic: a damaged record counts as torn if any
/// 512-byte-sector-aligned chunk of its bytes is entirely zero. `file_off` is
/// the file offset of `bytes[0]` (just after the length field).
pub fn looks_torn(bytes: &[u8], file_off: u64) -> bool {
    let mut off = file_off;
    let mut rest = bytes;
    while !rest.is_empty() {
        let chunk = (MIN_SECTOR_SIZE - off % MIN_SECTOR_SIZE) as usize;
        let (head, tail) = rest.split_at(chunk.min(rest.len()));
        if head.iter().all(|&b| b == 0) {
            return true;
        }
        off += head.len() as u64;
        rest = tail;
    }
    false
}

/// Continues a CRC-32C chain (Go's `crc32.Update` with the Castagnoli table).
pub fn crc_update(prev: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(prev, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The word-at-a-time varint reader and the byte loop agree on every
        /// input: value, bytes consumed, and errors (the loop decides those).
        #[test]
        fn word_varint_reader_agrees_with_the_byte_loop(
            v in proptest::prelude::any::<u64>(),
            shift in 0u32..64,
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..14),
        ) {
            let mut enc = Vec::new();
            put_varint(&mut enc, v >> shift);
            enc.extend_from_slice(&tail);
            for b in [&enc, &raw] {
                let (mut i, mut j) = (0, 0);
                let fast = read_varint(b, &mut i);
                let slow = read_varint_long(b, &mut j);
                proptest::prop_assert_eq!(fast, slow);
                if fast.is_ok() {
                    proptest::prop_assert_eq!(i, j);
                }
            }
            let mut i = 0;
            proptest::prop_assert_eq!(read_varint(&enc, &mut i), Ok(v >> shift));
        }
    }

    #[test]
    fn len_field_matches_etcd_examples() {
        assert_eq!(encode_len_field(4), (0x8400_0000_0000_0004, 4));
        assert_eq!(encode_len_field(31), (0x8100_0000_0000_001f, 1));
        assert_eq!(encode_len_field(16), (16, 0));
        assert_eq!(decode_len_field(0x8200_0000_0000_000e), (14, 2));
        assert_eq!(decode_len_field(0x18), (24, 0));
    }

    #[test]
    fn crc_record_of_segment_zero_encodes_like_etcd() {
        let mut out = Vec::new();
        encode_frame(&mut out, RecordType::Crc, 0, None);
        assert_eq!(
            out,
            [
                0x04, 0, 0, 0, 0, 0, 0, 0x84, 0x08, 0x04, 0x10, 0x00, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn parse_record_rejects_wrong_wire_type_and_overruns() {
        assert!(parse_record(&[0x0a, 0x00]).is_err());
        assert!(parse_record(&[0x1a, 0x05, 1, 2]).is_err());
        assert!(parse_record(&[0x08, 0x80]).is_err());
        let ok = parse_record(&[0x08, 0x02, 0x10, 0x07, 0x1a, 0x01, 0xaa]).unwrap();
        assert_eq!(ok.rtype, 2);
        assert_eq!(ok.crc, 7);
        assert_eq!(ok.data, Some(&[0xaa][..]));
    }

    #[test]
    fn torn_detection_uses_sector_aligned_chunks() {
        let mut b = vec![1u8; 600];
        assert!(!looks_torn(&b, 8));
        for x in &mut b[504..600] {
            *x = 0; // file offsets 512..608: one whole-sector-aligned chunk of zeros
        }
        assert!(looks_torn(&b, 8));
        assert!(!looks_torn(&[1, 0, 0], 8));
    }

    #[test]
    fn canonical_entry_parse_agrees_with_the_general_one() {
        use etcd_standby_proto::{Message, raftpb};
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut canonical = 0;
        for round in 0..20_000 {
            let e = raftpb::Entry {
                r#type: (next() % 3) as i32,
                term: next() >> (next() % 64),
                index: next() >> (next() % 64),
                data: (round % 5 != 0).then(|| vec![7u8; (next() % 300) as usize].into()),
            };
            let mut b = e.encode_to_vec();
            if round % 2 == 1 && !b.is_empty() {
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
                if round % 4 == 1 {
                    b.truncate((next() as usize) % (b.len() + 1));
                }
            } else {
                assert_eq!(entry_term_index(&b), Some((e.term, e.index)));
            }
            if let Some(found) = canonical_entry_term_index(&b) {
                canonical += 1;
                assert_eq!(Some(found), general_entry_term_index(&b), "{b:02x?}");
            }
        }
        assert!(canonical > 5_000, "{canonical}");
    }

    #[test]
    fn long_varints_read_like_protobuf() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut i = 0;
            assert_eq!(read_varint(&b, &mut i), Ok(v));
            assert_eq!(i, b.len());
        }
        let mut i = 0;
        assert!(read_varint(&[0xff; 9], &mut i).is_err());
        let mut i = 0;
        assert!(
            read_varint(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                &mut i
            )
            .is_err()
        );
        let mut i = 0;
        assert_eq!(read_varint(&[0x80, 0x80, 0x00], &mut i), Ok(0));
    }

    #[test]
    fn crc_chain_equals_crc_of_concatenation() {
        let a = crc_update(0, b"hello ");
        assert_eq!(crc_update(a, b"world"), crc32c::crc32c(b"hello world"));
    }
}
