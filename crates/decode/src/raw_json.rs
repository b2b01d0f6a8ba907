//! The dump's fastest path: the simplest shapes of the hottest requests
//! (a put or a delete-range, with header and ID) read straight from the
//! payload bytes, without prost, and written as JSON by the same writers as
//! the typed path ([`crate::typed_json`]), so the bytes are the same.
//!
//! Only a strict subset of what prost accepts is taken: every field known,
//! of its wire type, at most once and in field-number order (as etcd writes),
//! strings valid UTF-8. Anything else returns `None` and the caller takes the
//! typed path (prost), then reflection. On what it accepts, the values are
//! the ones prost decodes (varints as prost reads them: up to 10 bytes, the
//! last at most 1; `int64`/`int32` as the two's-complement bits, `bool` as
//! non-zero). Guard: `tests/typed_json.rs` (proptest: equal to the typed
//! writer, on canonical and on odd encodings).
use crate::RequestKind;
use crate::typed_json::{
    HeaderFields, Obj, PutFields, delete_fields_json, header_fields_json, put_fields_json,
};

/// A `raftpb.Entry` as etcd writes it, borrowed from the record payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEntry<'a> {
    /// Entry type.
    pub entry_type: i32,
    /// Term.
    pub term: u64,
    /// Index.
    pub index: u64,
    /// Payload (`None` when absent).
    pub data: Option<&'a [u8]>,
}

/// A varint as prost reads it.
#[inline(always)]
fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    // One byte (keys, small numbers) inline; longer ones out of line.
    if let Some(&x) = b.get(*i)
        && x < 0x80
    {
        *i += 1;
        return Some(u64::from(x));
    }
    varint_long(b, i)
}

#[inline(never)]
fn varint_long(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let x = *b.get(*i)?;
        *i += 1;
        if shift == 63 && x > 1 {
            return None;
        }
        v |= u64::from(x & 0x7f) << shift;
        if x & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A length-delimited field's bytes.
#[inline]
fn delimited<'a>(b: &'a [u8], i: &mut usize) -> Option<&'a [u8]> {
    let n = usize::try_from(varint(b, i)?).ok()?;
    let end = i.checked_add(n).filter(|&e| e <= b.len())?;
    let s = &b[*i..end];
    *i = end;
    Some(s)
}

/// Walks the fields of a message: calls `f(field, wire type, bytes, &mut
/// i)` for each key, requiring strictly increasing field numbers; `f`
/// reads the value and returns `None` to refuse.
#[inline]
fn fields<'a>(
    b: &'a [u8],
    mut f: impl FnMut(u64, u64, &'a [u8], &mut usize) -> Option<()>,
) -> Option<()> {
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        if key > u64::from(u32::MAX) {
            return None;
        }
        let field = key >> 3;
        if field <= last {
            return None;
        }
        last = field;
        f(field, key & 7, b, &mut i)?;
    }
    Some(())
}

/// Parses an encoded `raftpb.Entry` (fields in order, none unknown).
pub fn parse_entry(b: &[u8]) -> Option<RawEntry<'_>> {
    let mut e = RawEntry {
        entry_type: 0,
        term: 0,
        index: 0,
        data: None,
    };
    fields(b, |field, wt, b, i| {
        match (field, wt) {
            (1, 0) => e.entry_type = varint(b, i)? as i32,
            (2, 0) => e.term = varint(b, i)?,
            (3, 0) => e.index = varint(b, i)?,
            (4, 2) => e.data = Some(delimited(b, i)?),
            _ => return None,
        }
        Some(())
    })?;
    Some(e)
}

/// A put-only or delete-range-only `InternalRaftRequest`, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct RawRequest<'a> {
    id: u64,
    put: Option<PutFields<'a>>,
    delete_range: Option<(&'a [u8], &'a [u8], bool)>,
    header: Option<HeaderFields<'a>>,
}

fn parse_put(b: &[u8]) -> Option<PutFields<'_>> {
    let mut p = PutFields::default();
    fields(b, |field, wt, b, i| {
        match (field, wt) {
            (1, 2) => p.key = delimited(b, i)?,
            (2, 2) => p.value = delimited(b, i)?,
            (3, 0) => p.lease = varint(b, i)? as i64,
            (4, 0) => p.prev_kv = varint(b, i)? != 0,
            (5, 0) => p.ignore_value = varint(b, i)? != 0,
            (6, 0) => p.ignore_lease = varint(b, i)? != 0,
            _ => return None,
        }
        Some(())
    })?;
    Some(p)
}

fn parse_delete(b: &[u8]) -> Option<(&[u8], &[u8], bool)> {
    let mut d: (&[u8], &[u8], bool) = (&[], &[], false);
    fields(b, |field, wt, b, i| {
        match (field, wt) {
            (1, 2) => d.0 = delimited(b, i)?,
            (2, 2) => d.1 = delimited(b, i)?,
            (3, 0) => d.2 = varint(b, i)? != 0,
            _ => return None,
        }
        Some(())
    })?;
    Some(d)
}

fn parse_header(b: &[u8]) -> Option<HeaderFields<'_>> {
    let mut h = HeaderFields::default();
    fields(b, |field, wt, b, i| {
        match (field, wt) {
            (1, 0) => h.id = varint(b, i)?,
            (2, 2) => h.username = std::str::from_utf8(delimited(b, i)?).ok()?,
            (3, 0) => h.auth_revision = varint(b, i)?,
            _ => return None,
        }
        Some(())
    })?;
    Some(h)
}

impl<'a> RawRequest<'a> {
    /// Parses the payload of a normal entry if it is a put or a delete-range
    /// (with or without header and ID) in etcd's field order; `None` for
    /// anything else (including the empty no-op).
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let mut r = RawRequest {
            id: 0,
            put: None,
            delete_range: None,
            header: None,
        };
        fields(data, |field, wt, b, i| {
            match (field, wt) {
                (1, 0) => r.id = varint(b, i)?,
                (4, 2) => r.put = Some(parse_put(delimited(b, i)?)?),
                (5, 2) => r.delete_range = Some(parse_delete(delimited(b, i)?)?),
                (100, 2) => r.header = Some(parse_header(delimited(b, i)?)?),
                _ => return None,
            }
            Some(())
        })?;
        match (&r.put, &r.delete_range) {
            (Some(_), None) | (None, Some(_)) => Some(r),
            _ => None,
        }
    }

    /// The request's kind (what [`RequestKind::of`] says of its decode).
    pub fn kind(&self) -> RequestKind {
        if self.put.is_some() {
            RequestKind::Put
        } else {
            RequestKind::DeleteRange
        }
    }

    /// Appends the request's JSON: the bytes of the typed writer (and of
    /// reflection) for the same request.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Field-number order, as the typed writer: ID 1, put 4,
        // delete_range 5, header 100.
        let mut o = Obj::open(out);
        o.u64("ID", self.id);
        if let Some(p) = &self.put {
            put_fields_json(o.key("put"), p);
        }
        if let Some((key, range_end, prev_kv)) = self.delete_range {
            delete_fields_json(o.key("delete_range"), key, range_end, prev_kv);
        }
        if let Some(h) = &self.header {
            header_fields_json(o.key("header"), h);
        }
        o.close();
    }
}
