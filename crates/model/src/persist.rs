//! The persisted form of a [`SnapshotState`]: versioned, checksummed and
//! streamed (no second copy of the state in a buffer).
//!
//! # Format (version 2; version 1 is read too)
//!
//! All integers are little-endian.
//!
//! ```text
//! header   magic "ESBMODEL" (8 bytes) | format version u32 (= 2)
//! records  tag u8 | payload length u32 | payload        (any number)
//! trailer  tag 0xFF | length u32 (= 64) | 8 × u64 record counts
//! crc      u32: CRC-32C (Castagnoli) of every byte before it
//! ```
//!
//! The first record is `META`; the others may come in any order (the writer
//! emits them in the order below). Nothing may follow the CRC.
//!
//! | tag | record | payload |
//! |---|---|---|
//! | 1 | META | revision i64, compacted i64, consistent index u64, term u64, auth enabled u8, auth revision u64, extras u8; with extras: applier chain u8 (bit 0 auth, 1 capped, 2 corrupt), v2 request count u64, cluster version (u8 present + str), downgrade (u8 present + str + u8 enabled) |
//! | 2 | KEY | `mvccpb.KeyValue` (protobuf) |
//! | 3 | LEASE | `leasepb.Lease` (protobuf) |
//! | 4 | ATTACH (extras) | lease ID i64, then the key (rest of the payload) |
//! | 5 | USER | name str, password kind u8 (0 none, 1 plain, 2 hashed) + bytes, no_password u8, role count u32 + strs |
//! | 6 | ROLE | `authpb.Role` (protobuf; permissions in order) |
//! | 7 | ALARM | alarm type i32, member ID u64 |
//! | 8 | MEMBER (extras) | ID u64, learner u8, name str, peer URL count u32 + strs, client URL count u32 + strs |
//! | 9 | REMOVED (extras) | member ID u64 |
//! | 10 | KEY_REF (v2) | value length u32, value digest (16 bytes), value prefix (16 bytes), then `mvccpb.KeyValue` (protobuf) without the value |
//!
//! A key whose value is longer than [`crate::value::INLINE_MAX`] and held by
//! reference is a KEY_REF record: its bytes are in the model's value store
//! (the daemon keeps a store file beside the saved model, flushed before the
//! model file is written). Every other key is a KEY record with its value.
//! Version 1 (before values moved out of RAM) has KEY records only; it is
//! read, and its long values are stored when the model is built.
//!
//! `str`/`bytes` are a u32 length and the bytes; strings must be UTF-8.
//! The trailer counts KEY, LEASE, ATTACH, USER, ROLE, ALARM, MEMBER and
//! REMOVED records in that order (KEY and KEY_REF records are both keys).
//!
//! # Size
//!
//! A key costs its 5-byte record header plus its `KeyValue` encoding:
//! `274 + key length` bytes for a 256-byte value, a key shorter than 128
//! bytes, revisions below 16384, version below 128 and no lease (each
//! revision up to 2²¹ adds one byte; a lease adds 1 + its varint, usually 10
//! bytes for etcd's generated IDs, plus an ATTACH record of `13 + key length`).
//! So a 16-byte key with a 256-byte value in hand takes 290 bytes: 18 bytes
//! (about 7 %) over the key and value themselves. Held by reference it
//! takes `51 + key length` bytes whatever the value's length. Fixed costs: 12-byte header,
//! 47-byte meta record without extras, 69-byte trailer, 4-byte CRC.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use bytes::{Buf, Bytes};
use etcd_standby_decode::Member;
use etcd_standby_proto::{authpb, leasepb, mvccpb};
use prost::Message;

use crate::auth::{AuthState, PermType, Permission, Role, User};
use crate::kv::KeyState;
use crate::snapshot::{ModelExtras, SnapshotKey, SnapshotLease, SnapshotState};
use crate::types::{AlarmKind, ApplierChain, ClusterState, Password};
use crate::value::{INLINE_MAX, StoredValue, Value};

/// The file's first 8 bytes.
pub const MAGIC: [u8; 8] = *b"ESBMODEL";
/// The format version this build writes (it reads this one and 1).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build reads.
pub const OLDEST_READ_VERSION: u32 = 1;

const META: u8 = 1;
const KEY: u8 = 2;
const LEASE: u8 = 3;
const ATTACH: u8 = 4;
const USER: u8 = 5;
const ROLE: u8 = 6;
const ALARM: u8 = 7;
const MEMBER: u8 = 8;
const REMOVED: u8 = 9;
const KEY_REF: u8 = 10;
const END: u8 = 0xFF;

/// Names of the trailer's counts, in order.
const COUNTED: [&str; 8] = [
    "keys",
    "leases",
    "lease attachments",
    "users",
    "roles",
    "alarms",
    "members",
    "removed members",
];

/// Reading or writing a persisted model failed. Every variant carries the
/// byte offset (from the start of the stream) where the problem was found;
/// for record-level problems, the offset of the record's tag. Messages never
/// contain record contents (no passwords).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelIoError {
    /// The underlying reader or writer failed.
    #[error("model file: I/O error at byte {offset}: {source}")]
    Io {
        /// Offset reached.
        offset: u64,
        /// The error.
        source: io::Error,
    },
    /// The stream does not start with [`MAGIC`].
    #[error("model file: bad magic at byte {offset} (not a persisted model)")]
    BadMagic {
        /// Offset (0).
        offset: u64,
    },
    /// A format version this build cannot read.
    #[error(
        "model file: unsupported format version {found} at byte {offset} (this build reads {supported})"
    )]
    UnsupportedVersion {
        /// Offset of the version field.
        offset: u64,
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The stream ended early.
    #[error("model file: truncated at byte {offset} (reading {context})")]
    Truncated {
        /// Where the data ended.
        offset: u64,
        /// What was being read.
        context: &'static str,
    },
    /// A record that does not decode, is out of place, or is unknown.
    #[error("model file: malformed {record} record at byte {offset}: {detail}")]
    Malformed {
        /// Offset of the record.
        offset: u64,
        /// Record kind.
        record: &'static str,
        /// What is wrong (never record contents).
        detail: String,
    },
    /// The CRC-32C does not match the content.
    #[error(
        "model file: checksum mismatch at byte {offset}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    Checksum {
        /// Offset of the stored checksum.
        offset: u64,
        /// Checksum in the file.
        stored: u32,
        /// Checksum of the content read.
        computed: u32,
    },
    /// The trailer's counts disagree with the records read.
    #[error(
        "model file: trailer at byte {offset} counts {expected} {what}, the file holds {found}"
    )]
    CountMismatch {
        /// Offset of the trailer record.
        offset: u64,
        /// Which records.
        what: &'static str,
        /// Count in the trailer.
        expected: u64,
        /// Records read.
        found: u64,
    },
    /// Bytes after the checksum.
    #[error("model file: unexpected data after the checksum at byte {offset}")]
    TrailingData {
        /// Offset of the first extra byte.
        offset: u64,
    },
    /// A record too large for the format's u32 length (writing only).
    #[error("model file: {record} record at byte {offset} is too large ({len} bytes)")]
    TooLarge {
        /// Offset the record would have had.
        offset: u64,
        /// Record kind.
        record: &'static str,
        /// Its payload length.
        len: usize,
    },
}

impl ModelIoError {
    /// The byte offset the error refers to.
    pub fn offset(&self) -> u64 {
        match self {
            ModelIoError::Io { offset, .. }
            | ModelIoError::BadMagic { offset }
            | ModelIoError::UnsupportedVersion { offset, .. }
            | ModelIoError::Truncated { offset, .. }
            | ModelIoError::Malformed { offset, .. }
            | ModelIoError::Checksum { offset, .. }
            | ModelIoError::CountMismatch { offset, .. }
            | ModelIoError::TrailingData { offset }
            | ModelIoError::TooLarge { offset, .. } => *offset,
        }
    }
}

// ------------------------------------------------------------------ write

/// A writer that checksums and counts what it passes on, with one reusable
/// record buffer.
struct Out<'a, W: Write> {
    w: &'a mut W,
    crc: u32,
    offset: u64,
    buf: Vec<u8>,
    counts: [u64; 8],
}

impl<W: Write> Out<'_, W> {
    fn raw(&mut self, data: &[u8]) -> Result<(), ModelIoError> {
        self.w.write_all(data).map_err(|source| ModelIoError::Io {
            offset: self.offset,
            source,
        })?;
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.offset += data.len() as u64;
        Ok(())
    }

    fn begin(&mut self, tag: u8) -> &mut Vec<u8> {
        self.buf.clear();
        self.buf.push(tag);
        self.buf.extend_from_slice(&[0; 4]);
        &mut self.buf
    }

    /// Writes the record built in the buffer (a field longer than u32 makes
    /// the record too large, so truncated field lengths never reach the stream).
    fn finish(&mut self, record: &'static str) -> Result<(), ModelIoError> {
        let len = self.buf.len().saturating_sub(5);
        let len32 = u32::try_from(len).map_err(|_| ModelIoError::TooLarge {
            offset: self.offset,
            record,
            len,
        })?;
        self.buf[1..5].copy_from_slice(&len32.to_le_bytes());
        let buf = std::mem::take(&mut self.buf);
        let r = self.raw(&buf);
        self.buf = buf;
        r
    }

    fn message(
        &mut self,
        tag: u8,
        record: &'static str,
        m: &impl Message,
    ) -> Result<(), ModelIoError> {
        self.message_after(tag, record, &[], m)
    }

    /// A record of `head`'s bytes followed by the message.
    fn message_after(
        &mut self,
        tag: u8,
        record: &'static str,
        head: &[u8],
        m: &impl Message,
    ) -> Result<(), ModelIoError> {
        let offset = self.offset;
        let buf = self.begin(tag);
        buf.extend_from_slice(head);
        m.encode(buf).map_err(|_| ModelIoError::TooLarge {
            offset,
            record,
            len: m.encoded_len(),
        })?;
        self.finish(record)
    }
}

/// A KEY or KEY_REF record's key (its `value` field is not used).
fn snapshot_key(kv: mvccpb::KeyValue, value: Value) -> SnapshotKey {
    SnapshotKey {
        key: kv.key,
        state: KeyState {
            value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        },
    }
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_i64(b: &mut Vec<u8>, v: i64) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_bool(b: &mut Vec<u8>, v: bool) {
    b.push(u8::from(v));
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    // Longer than u32::MAX: the record is too large and `finish` refuses it.
    put_u32(b, u32::try_from(v.len()).unwrap_or(u32::MAX));
    b.extend_from_slice(v);
}

fn put_count(b: &mut Vec<u8>, n: usize) {
    put_u32(b, u32::try_from(n).unwrap_or(u32::MAX));
}

fn put_strs(b: &mut Vec<u8>, v: &[String]) {
    put_count(b, v.len());
    for s in v {
        put_bytes(b, s.as_bytes());
    }
}

fn put_opt_str(b: &mut Vec<u8>, v: Option<&str>) {
    put_bool(b, v.is_some());
    if let Some(s) = v {
        put_bytes(b, s.as_bytes());
    }
}

fn chain_bits(c: ApplierChain) -> u8 {
    u8::from(c.auth) | (u8::from(c.capped) << 1) | (u8::from(c.corrupt) << 2)
}

/// A borrowed view of a state, what the writer walks: a [`SnapshotState`]
/// or a live model (so saving a model copies nothing).
pub(crate) struct StateRef<'a> {
    pub(crate) revision: i64,
    pub(crate) compacted: i64,
    pub(crate) consistent_index: u64,
    pub(crate) term: u64,
    pub(crate) auth: &'a AuthState,
    pub(crate) keys: Box<dyn Iterator<Item = (&'a [u8], KeyState)> + 'a>,
    pub(crate) leases: Box<dyn Iterator<Item = SnapshotLease> + 'a>,
    pub(crate) alarms: Box<dyn Iterator<Item = (AlarmKind, u64)> + 'a>,
    pub(crate) extras: Option<ExtrasRef<'a>>,
}

/// The borrowed [`ModelExtras`].
pub(crate) struct ExtrasRef<'a> {
    pub(crate) chain: ApplierChain,
    pub(crate) lease_keys: Box<dyn Iterator<Item = (i64, &'a BTreeSet<Bytes>)> + 'a>,
    pub(crate) cluster: &'a ClusterState,
}

impl SnapshotState {
    /// Writes the state in the persisted format (see the [module docs]),
    /// record by record: memory use is one record, not a copy of the state.
    /// About 290 bytes per key with a 16-byte name and a 256-byte value in
    /// hand, `51 + key length` for a value held by reference. Wrap files in
    /// a `BufWriter`; the writer is flushed at the end.
    ///
    /// A lease in `extras.lease_keys` with an empty key set is not written
    /// (it reads back absent, which restores the same model).
    ///
    /// [module docs]: crate::persist
    pub fn write_to(&self, w: &mut impl Write) -> Result<(), ModelIoError> {
        write_state(
            w,
            StateRef {
                revision: self.revision,
                compacted: self.compacted,
                consistent_index: self.consistent_index,
                term: self.term,
                auth: &self.auth,
                keys: Box::new(self.keys.iter().map(|k| (&k.key[..], k.state.clone()))),
                leases: Box::new(self.leases.iter().copied()),
                alarms: Box::new(self.alarms.iter().copied()),
                extras: self.extras.as_ref().map(|x| ExtrasRef {
                    chain: x.chain,
                    lease_keys: Box::new(x.lease_keys.iter().map(|(id, keys)| (*id, keys))),
                    cluster: &x.cluster,
                }),
            },
        )
    }
}

/// Writes `s` in the persisted format (see [`SnapshotState::write_to`]).
pub(crate) fn write_state(w: &mut impl Write, s: StateRef<'_>) -> Result<(), ModelIoError> {
    let StateRef {
        revision,
        compacted,
        consistent_index,
        term,
        auth,
        keys,
        leases,
        alarms,
        extras,
    } = s;
    let mut out = Out {
        w,
        crc: 0,
        offset: 0,
        buf: Vec::with_capacity(4096),
        counts: [0; 8],
    };
    out.raw(&MAGIC)?;
    out.raw(&FORMAT_VERSION.to_le_bytes())?;

    let b = out.begin(META);
    put_i64(b, revision);
    put_i64(b, compacted);
    put_u64(b, consistent_index);
    put_u64(b, term);
    put_bool(b, auth.enabled);
    put_u64(b, auth.revision);
    put_bool(b, extras.is_some());
    if let Some(x) = &extras {
        b.push(chain_bits(x.chain));
        put_u64(b, x.cluster.v2_requests);
        put_opt_str(b, x.cluster.version.as_deref());
        put_bool(b, x.cluster.downgrade.is_some());
        if let Some((ver, enabled)) = &x.cluster.downgrade {
            put_bytes(b, ver.as_bytes());
            put_bool(b, *enabled);
        }
    }
    out.finish("meta")?;

    for (key, state) in keys {
        let mut kv = mvccpb::KeyValue {
            key: Bytes::copy_from_slice(key),
            create_revision: state.create_revision,
            mod_revision: state.mod_revision,
            version: state.version,
            value: Bytes::new(),
            lease: state.lease,
        };
        match &state.value {
            Value::Inline(v) => {
                kv.value = v.clone();
                out.message(KEY, "key", &kv)?;
            }
            Value::Stored(r) => {
                let mut head = Vec::with_capacity(4 + 16 + INLINE_MAX);
                put_u32(&mut head, r.len);
                head.extend_from_slice(&r.digest);
                head.extend_from_slice(&r.prefix);
                out.message_after(KEY_REF, "key", &head, &kv)?;
            }
        }
        out.counts[0] += 1;
    }
    for l in leases {
        let lease = leasepb::Lease {
            id: l.id,
            ttl: l.ttl,
            remaining_ttl: l.remaining_ttl,
        };
        out.message(LEASE, "lease", &lease)?;
        out.counts[1] += 1;
    }
    let mut extras = extras;
    if let Some(x) = &mut extras {
        for (id, keys) in &mut x.lease_keys {
            for key in keys {
                let b = out.begin(ATTACH);
                put_i64(b, id);
                b.extend_from_slice(key);
                out.finish("lease attachment")?;
                out.counts[2] += 1;
            }
        }
    }
    for (name, u) in &auth.users {
        let b = out.begin(USER);
        put_bytes(b, name.as_bytes());
        match &u.password {
            Password::None => b.push(0),
            Password::Plain(p) => {
                b.push(1);
                put_bytes(b, p);
            }
            Password::Hashed(h) => {
                b.push(2);
                put_bytes(b, h.as_bytes());
            }
        }
        put_bool(b, u.no_password);
        put_strs(b, &u.roles);
        out.finish("user")?;
        out.counts[3] += 1;
    }
    for (name, r) in &auth.roles {
        let role = authpb::Role {
            name: Bytes::copy_from_slice(name.as_bytes()),
            key_permission: r
                .perms
                .iter()
                .map(|p| authpb::Permission {
                    perm_type: p.perm_type.as_i32(),
                    key: p.key.clone(),
                    range_end: p.range_end.clone(),
                })
                .collect(),
        };
        out.message(ROLE, "role", &role)?;
        out.counts[4] += 1;
    }
    for (kind, member) in alarms {
        let b = out.begin(ALARM);
        b.extend_from_slice(&kind.as_i32().to_le_bytes());
        put_u64(b, member);
        out.finish("alarm")?;
        out.counts[5] += 1;
    }
    if let Some(x) = &extras {
        // The map key is written as the ID (the reader sets `id` from it).
        for (id, m) in &x.cluster.members {
            let b = out.begin(MEMBER);
            put_u64(b, *id);
            put_bool(b, m.is_learner);
            put_bytes(b, m.name.as_bytes());
            put_strs(b, &m.peer_urls);
            put_strs(b, &m.client_urls);
            out.finish("member")?;
            out.counts[6] += 1;
        }
        for id in &x.cluster.removed {
            let b = out.begin(REMOVED);
            put_u64(b, *id);
            out.finish("removed member")?;
            out.counts[7] += 1;
        }
    }

    let counts = out.counts;
    let b = out.begin(END);
    for c in counts {
        put_u64(b, c);
    }
    out.finish("trailer")?;
    let crc = out.crc;
    out.raw(&crc.to_le_bytes())?;
    out.w.flush().map_err(|source| ModelIoError::Io {
        offset: out.offset,
        source,
    })
}

impl SnapshotState {
    /// Reads a state written by [`SnapshotState::write_to`], to the end of
    /// the stream (nothing may follow). Records are decoded as they arrive;
    /// keys and values share one allocation per key record. Wrap files in a
    /// `BufReader`. Damaged, truncated or foreign input is an error with
    /// its byte offset, never a panic.
    pub fn read_from(r: &mut impl Read) -> Result<SnapshotState, ModelIoError> {
        let mut inp = In {
            r,
            crc: 0,
            offset: 0,
        };
        let mut magic = [0u8; 8];
        inp.fill(&mut magic, "magic")?;
        if magic != MAGIC {
            return Err(ModelIoError::BadMagic { offset: 0 });
        }
        let mut ver = [0u8; 4];
        inp.fill(&mut ver, "format version")?;
        let found = u32::from_le_bytes(ver);
        if !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&found) {
            return Err(ModelIoError::UnsupportedVersion {
                offset: 8,
                found,
                supported: FORMAT_VERSION,
            });
        }

        let (tag, mut d) = inp.record()?;
        if tag != META {
            return Err(d.malformed("the first record is not the meta record"));
        }
        d.record = "meta";
        let mut s = SnapshotState {
            revision: d.i64()?,
            compacted: d.i64()?,
            consistent_index: d.u64()?,
            term: d.u64()?,
            auth: AuthState {
                enabled: d.bool()?,
                revision: d.u64()?,
                ..Default::default()
            },
            ..Default::default()
        };
        if d.bool()? {
            let bits = d.u8()?;
            if bits > 7 {
                return Err(d.malformed("unknown applier chain bits"));
            }
            let mut x = ModelExtras {
                chain: ApplierChain {
                    auth: bits & 1 != 0,
                    capped: bits & 2 != 0,
                    corrupt: bits & 4 != 0,
                },
                lease_keys: BTreeMap::new(),
                cluster: ClusterState::default(),
            };
            x.cluster.v2_requests = d.u64()?;
            x.cluster.version = if d.bool()? { Some(d.string()?) } else { None };
            x.cluster.downgrade = if d.bool()? {
                Some((d.string()?, d.bool()?))
            } else {
                None
            };
            s.extras = Some(x);
        }
        d.done()?;

        let mut counts = [0u64; 8];
        let trailer = loop {
            let (tag, mut d) = inp.record()?;
            match tag {
                KEY => {
                    d.record = "key";
                    let mut kv = d.message::<mvccpb::KeyValue>()?;
                    let value = Value::Inline(std::mem::take(&mut kv.value));
                    s.keys.push(snapshot_key(kv, value));
                    counts[0] += 1;
                }
                KEY_REF if found >= 2 => {
                    d.record = "key";
                    let len = d.u32()?;
                    let digest = d.take::<16>()?;
                    let prefix = d.take::<{ INLINE_MAX }>()?;
                    if (len as usize) <= INLINE_MAX {
                        return Err(d.malformed("a value held by reference must be long"));
                    }
                    let kv = d.message::<mvccpb::KeyValue>()?;
                    if !kv.value.is_empty() {
                        return Err(d.malformed("a value both by reference and in hand"));
                    }
                    let value = Value::Stored(StoredValue {
                        len,
                        digest,
                        prefix,
                    });
                    s.keys.push(snapshot_key(kv, value));
                    counts[0] += 1;
                }
                LEASE => {
                    d.record = "lease";
                    let l = d.message::<leasepb::Lease>()?;
                    s.leases.push(SnapshotLease {
                        id: l.id,
                        ttl: l.ttl,
                        remaining_ttl: l.remaining_ttl,
                    });
                    counts[1] += 1;
                }
                ATTACH => {
                    d.record = "lease attachment";
                    let id = d.i64()?;
                    let key = d.rest();
                    let x = d.extras(&mut s.extras)?;
                    if !x.lease_keys.entry(id).or_default().insert(key) {
                        return Err(d.malformed("duplicate attachment"));
                    }
                    counts[2] += 1;
                }
                USER => {
                    d.record = "user";
                    let name = d.string()?;
                    let password = match d.u8()? {
                        0 => Password::None,
                        1 => Password::Plain(d.bytes()?),
                        2 => Password::Hashed(d.string()?),
                        _ => return Err(d.malformed("unknown password kind")),
                    };
                    let no_password = d.bool()?;
                    let roles = d.strings()?;
                    d.done()?;
                    let user = User {
                        password,
                        roles,
                        no_password,
                    };
                    if s.auth.users.insert(name, user).is_some() {
                        return Err(d.malformed("duplicate user"));
                    }
                    counts[3] += 1;
                }
                ROLE => {
                    d.record = "role";
                    let r = d.message::<authpb::Role>()?;
                    let name = String::from_utf8(r.name.to_vec())
                        .map_err(|_| d.malformed("role name is not UTF-8"))?;
                    let perms = r
                        .key_permission
                        .into_iter()
                        .map(|p| Permission {
                            perm_type: PermType::from_i32(p.perm_type),
                            key: p.key,
                            range_end: p.range_end,
                        })
                        .collect();
                    if s.auth.roles.insert(name, Role { perms }).is_some() {
                        return Err(d.malformed("duplicate role"));
                    }
                    counts[4] += 1;
                }
                ALARM => {
                    d.record = "alarm";
                    let kind = AlarmKind::from_i32(d.i32()?);
                    let member = d.u64()?;
                    d.done()?;
                    s.alarms.push((kind, member));
                    counts[5] += 1;
                }
                MEMBER => {
                    d.record = "member";
                    let id = d.u64()?;
                    // The record's ID is the map key and the member's id.
                    let member = Member {
                        id,
                        is_learner: d.bool()?,
                        name: d.string()?,
                        peer_urls: d.strings()?,
                        client_urls: d.strings()?,
                    };
                    d.done()?;
                    let x = d.extras(&mut s.extras)?;
                    if x.cluster.members.insert(id, member).is_some() {
                        return Err(d.malformed("duplicate member"));
                    }
                    counts[6] += 1;
                }
                REMOVED => {
                    d.record = "removed member";
                    let id = d.u64()?;
                    d.done()?;
                    let x = d.extras(&mut s.extras)?;
                    if !x.cluster.removed.insert(id) {
                        return Err(d.malformed("duplicate removed member"));
                    }
                    counts[7] += 1;
                }
                END => break d,
                META => return Err(d.malformed("a second meta record")),
                t => return Err(d.malformed(format!("unknown record tag {t:#04x}"))),
            }
        };

        let computed = inp.crc;
        let crc_at = inp.offset;
        let mut stored = [0u8; 4];
        inp.fill(&mut stored, "checksum")?;
        let stored = u32::from_le_bytes(stored);
        if stored != computed {
            return Err(ModelIoError::Checksum {
                offset: crc_at,
                stored,
                computed,
            });
        }
        let mut t = trailer;
        t.record = "trailer";
        for (i, found) in counts.into_iter().enumerate() {
            let expected = t.u64()?;
            if expected != found {
                return Err(ModelIoError::CountMismatch {
                    offset: t.offset,
                    what: COUNTED[i],
                    expected,
                    found,
                });
            }
        }
        t.done()?;
        inp.expect_eof()?;
        Ok(s)
    }
}

// ------------------------------------------------------------------- read

/// A reader that checksums and counts what it reads.
struct In<'a, R: Read> {
    r: &'a mut R,
    crc: u32,
    offset: u64,
}

impl<R: Read> Read for In<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        let n = n.min(buf.len());
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }
}

impl<R: Read> In<'_, R> {
    fn fill(&mut self, buf: &mut [u8], context: &'static str) -> Result<(), ModelIoError> {
        let mut got = 0;
        while got < buf.len() {
            match self.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(ModelIoError::Truncated {
                        offset: self.offset,
                        context,
                    });
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ModelIoError::Io {
                        offset: self.offset,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// The next record: its tag and a decoder over its payload.
    fn record(&mut self) -> Result<(u8, Dec), ModelIoError> {
        let at = self.offset;
        let mut head = [0u8; 5];
        self.fill(&mut head, "record header (trailer missing)")?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        // Grows as data arrives: a damaged length cannot allocate more than the input.
        let mut payload = Vec::with_capacity((len as usize).min(64 * 1024));
        let read = (&mut *self)
            .take(u64::from(len))
            .read_to_end(&mut payload)
            .map_err(|source| ModelIoError::Io {
                offset: self.offset,
                source,
            })?;
        if read < len as usize {
            return Err(ModelIoError::Truncated {
                offset: self.offset,
                context: "record payload",
            });
        }
        Ok((
            head[0],
            Dec {
                b: Bytes::from(payload),
                offset: at,
                record: "unknown",
            },
        ))
    }

    fn expect_eof(&mut self) -> Result<(), ModelIoError> {
        let mut one = [0u8; 1];
        loop {
            match self.r.read(&mut one) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(ModelIoError::TrailingData {
                        offset: self.offset,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ModelIoError::Io {
                        offset: self.offset,
                        source,
                    });
                }
            }
        }
    }
}

/// A cursor over one record's payload.
struct Dec {
    b: Bytes,
    /// Offset of the record's tag.
    offset: u64,
    record: &'static str,
}

impl Dec {
    fn malformed(&self, detail: impl Into<String>) -> ModelIoError {
        ModelIoError::Malformed {
            offset: self.offset,
            record: self.record,
            detail: detail.into(),
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], ModelIoError> {
        if self.b.remaining() < N {
            return Err(self.malformed("payload too short"));
        }
        let mut out = [0u8; N];
        self.b.copy_to_slice(&mut out);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ModelIoError> {
        Ok(self.take::<1>()?[0])
    }

    fn bool(&mut self) -> Result<bool, ModelIoError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.malformed("boolean is neither 0 nor 1")),
        }
    }

    fn u32(&mut self) -> Result<u32, ModelIoError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn i32(&mut self) -> Result<i32, ModelIoError> {
        Ok(i32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, ModelIoError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, ModelIoError> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    fn bytes(&mut self) -> Result<Bytes, ModelIoError> {
        let len = self.u32()? as usize;
        if self.b.remaining() < len {
            return Err(self.malformed("length beyond the record"));
        }
        Ok(self.b.split_to(len))
    }

    fn string(&mut self) -> Result<String, ModelIoError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.malformed("string is not UTF-8"))
    }

    fn strings(&mut self) -> Result<Vec<String>, ModelIoError> {
        let n = self.u32()?;
        // Not preallocated: a damaged count fails on the data instead.
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.string()?);
        }
        Ok(out)
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.b)
    }

    fn message<M: Message + Default>(&mut self) -> Result<M, ModelIoError> {
        let b = self.rest();
        M::decode(b).map_err(|e| self.malformed(e.to_string()))
    }

    fn done(&self) -> Result<(), ModelIoError> {
        if self.b.has_remaining() {
            return Err(self.malformed("unexpected bytes at the end of the record"));
        }
        Ok(())
    }

    fn extras<'s>(
        &self,
        extras: &'s mut Option<ModelExtras>,
    ) -> Result<&'s mut ModelExtras, ModelIoError> {
        extras
            .as_mut()
            .ok_or_else(|| self.malformed("model-only record in a file without extras"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn key(k: &[u8], v: &[u8]) -> SnapshotKey {
        SnapshotKey {
            key: Bytes::copy_from_slice(k),
            state: KeyState {
                value: Value::Inline(Bytes::copy_from_slice(v)),
                create_revision: 10_000,
                mod_revision: 16_000,
                version: 100,
                lease: 0,
            },
        }
    }

    fn bytes_of(s: &SnapshotState) -> Vec<u8> {
        let mut out = Vec::new();
        s.write_to(&mut out).unwrap();
        out
    }

    /// The size per key documented in the module docs.
    #[test]
    fn documented_size_per_key() {
        let empty = bytes_of(&SnapshotState::default()).len();
        let one = SnapshotState {
            keys: vec![key(&[b'k'; 16], &[7; 256])],
            ..Default::default()
        };
        assert_eq!(bytes_of(&one).len() - empty, 290);
        // Header 12, meta 5 + 42, trailer 5 + 64, crc 4.
        assert_eq!(empty, 12 + 47 + 69 + 4);
    }

    #[test]
    fn layout_is_header_records_trailer_crc() {
        let s = SnapshotState {
            keys: vec![key(b"a", b"b")],
            ..Default::default()
        };
        let b = bytes_of(&s);
        assert_eq!(&b[..8], b"ESBMODEL");
        assert_eq!(&b[8..12], &2u32.to_le_bytes());
        assert_eq!(b[12], META);
        let n = b.len();
        assert_eq!(
            u32::from_le_bytes(b[n - 4..].try_into().unwrap()),
            crc32c::crc32c(&b[..n - 4])
        );
        assert_eq!(b[n - 4 - 64 - 5], END);
        assert_eq!(SnapshotState::read_from(&mut &b[..]).unwrap(), s);
    }

    /// A file from before values moved out of RAM (version 1: values in
    /// KEY records) still reads; a KEY_REF record is a version 2 record.
    #[test]
    fn version_1_files_read_and_key_refs_need_version_2() {
        let long = vec![b'x'; 100];
        let s = SnapshotState {
            keys: vec![key(b"a", &long)],
            ..Default::default()
        };
        let mut b = bytes_of(&s);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        let n = b.len();
        let crc = crc32c::crc32c(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(SnapshotState::read_from(&mut &b[..]).unwrap(), s);

        let by_ref = SnapshotState {
            keys: vec![SnapshotKey {
                key: Bytes::from_static(b"a"),
                state: KeyState {
                    value: Value::Stored(StoredValue::of(&long)),
                    ..key(b"a", b"").state
                },
            }],
            ..Default::default()
        };
        let mut b = bytes_of(&by_ref);
        assert_eq!(SnapshotState::read_from(&mut &b[..]).unwrap(), by_ref);
        assert_eq!(SnapshotState::read_from(&mut &b[..]).unwrap(), s);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        let n = b.len();
        let crc = crc32c::crc32c(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        let err = SnapshotState::read_from(&mut &b[..]).unwrap_err();
        assert!(err.to_string().contains("unknown record tag 0x0a"), "{err}");
    }

    #[test]
    fn wrong_magic_and_version_are_typed() {
        let mut b = bytes_of(&SnapshotState::default());
        b[9] = 2;
        assert!(matches!(
            SnapshotState::read_from(&mut &b[..]),
            Err(ModelIoError::UnsupportedVersion {
                offset: 8,
                found: 0x202,
                supported: 2
            })
        ));
        b[0] = b'X';
        assert!(matches!(
            SnapshotState::read_from(&mut &b[..]),
            Err(ModelIoError::BadMagic { offset: 0 })
        ));
    }

    #[test]
    fn trailing_data_is_rejected() {
        let mut b = bytes_of(&SnapshotState::default());
        let n = b.len() as u64;
        b.push(0);
        let e = SnapshotState::read_from(&mut &b[..]).unwrap_err();
        assert!(
            matches!(e, ModelIoError::TrailingData { offset } if offset == n),
            "{e}"
        );
    }

    #[test]
    fn passwords_are_not_in_debug_output() {
        let mut s = SnapshotState::default();
        s.auth.users.insert(
            "u".into(),
            User {
                password: Password::Plain(Bytes::from_static(b"hunter2-plain")),
                roles: vec![],
                no_password: false,
            },
        );
        s.auth.users.insert(
            "v".into(),
            User {
                password: Password::Hashed("aHVudGVyMi1oYXNo".into()),
                roles: vec![],
                no_password: false,
            },
        );
        let dbg = format!("{s:?} {:#?}", s.auth);
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("aHVudGVyMi1oYXNo"), "{dbg}");
        assert!(!dbg.contains("104, 117"), "{dbg}");
        assert!(dbg.contains("Plain(<redacted"), "{dbg}");
        // Stored, though.
        let back = SnapshotState::read_from(&mut &bytes_of(&s)[..]).unwrap();
        assert_eq!(back, s);
        // And a damaged file's error does not quote it either.
        let mut b = bytes_of(&s);
        let at = b.windows(7).position(|w| w == b"hunter2").unwrap();
        b[at] ^= 1;
        let e = SnapshotState::read_from(&mut &b[..]).unwrap_err();
        assert!(!e.to_string().contains("hunter"), "{e}");
    }
}
