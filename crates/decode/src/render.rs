//! Safe rendering of any entry or stored message, driven by the schema.
//!
//! The same tree prints as JSON (one object per entry) or as a compact
//! terminal line. Bytes are shown as text only when they are printable UTF-8;
//! secrets (passwords, bcrypt hashes, tokens) are redacted unless asked.
use crate::{Decoded, ENTRY_CONF_CHANGE, ENTRY_CONF_CHANGE_V2};
use bytes::Bytes;
use prost_reflect::{DynamicMessage, Kind, Value};
use serde_json::{Map, Value as Json};
use std::fmt::Write as _;

/// Rendering options.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// Print passwords, password hashes and tokens instead of `<redacted>`.
    pub show_secrets: bool,
}

/// Fields that hold secrets (full protobuf field names).
pub const SECRET_FIELDS: &[&str] = &[
    "etcdserverpb.AuthUserAddRequest.password",
    "etcdserverpb.AuthUserAddRequest.hashedPassword",
    "etcdserverpb.AuthUserChangePasswordRequest.password",
    "etcdserverpb.AuthUserChangePasswordRequest.hashedPassword",
    "etcdserverpb.InternalAuthenticateRequest.password",
    "etcdserverpb.InternalAuthenticateRequest.simple_token",
    "authpb.User.password",
];

/// Fields whose numbers are IDs that etcd tools print in hex.
const HEX_FIELDS: &[&str] = &[
    "etcdserverpb.LeaseGrantRequest.ID",
    "etcdserverpb.LeaseRevokeRequest.ID",
    "etcdserverpb.LeaseCheckpoint.ID",
    "etcdserverpb.PutRequest.lease",
    "etcdserverpb.Compare.lease",
    "etcdserverpb.AlarmRequest.memberID",
    "etcdserverpb.AlarmMember.memberID",
    "raftpb.ConfChange.NodeID",
    "raftpb.ConfChangeSingle.NodeID",
    "leasepb.Lease.ID",
    "mvccpb.KeyValue.lease",
    "membershippb.ClusterMemberAttrSetRequest.member_ID",
];

/// A rendered value.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Boolean.
    Bool(bool),
    /// Signed integer.
    Int(i64),
    /// Unsigned integer.
    UInt(u64),
    /// An ID shown in hex on terminals (number in JSON).
    HexId(u64),
    /// Text field.
    Str(String),
    /// Bytes field (keys, values).
    Bytes(Bytes),
    /// Enum value name (or number if unknown).
    Enum(String),
    /// Repeated field.
    List(Vec<Node>),
    /// Message: (field name, value) in schema order.
    Msg(Vec<(String, Node)>),
    /// Embedded JSON (conf change context).
    Json(Json),
    /// A secret that was present but is not shown.
    Redacted,
}

fn printable(s: &str) -> bool {
    // Fast path: printable ASCII (vectorizes); otherwise check every char.
    s.bytes().all(|b| (0x20..0x7f).contains(&b)) || s.chars().all(|c| !c.is_control())
}

/// True for the bytes a JSON string literal must escape (as we write it:
/// `"`, `\\`, control characters and DEL).
#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

/// [`needs_escape`] for any of 8 bytes at once (SWAR: the "has a byte less
/// than n" and "has a zero byte" tricks, exact for the any-byte question).
#[inline]
fn word_needs_escape(v: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(LO) & !x & HI != 0;
    (v.wrapping_sub(LO * 0x20) & !v & HI != 0)
        || has_zero(v ^ (LO * u64::from(b'"')))
        || has_zero(v ^ (LO * u64::from(b'\\')))
        || has_zero(v ^ (LO * 0x7f))
}

/// True if `bad` holds for no byte of `b`. Checked 32 bytes at a time
/// without an early exit inside a block (`|`, not `any`), so it vectorizes.
#[inline(always)]
fn none_of(b: &[u8], bad: impl Fn(u8) -> bool) -> bool {
    let mut blocks = b.chunks_exact(32);
    for block in &mut blocks {
        if block.iter().fold(false, |acc, &x| acc | bad(x)) {
            return false;
        }
    }
    !blocks
        .remainder()
        .iter()
        .fold(false, |acc, &x| acc | bad(x))
}

/// Appends `b` between quotes: `b` needs no escape.
#[inline]
fn write_quoted(out: &mut Vec<u8>, b: &[u8]) {
    out.reserve(b.len() + 2);
    out.push(b'"');
    out.extend_from_slice(b);
    out.push(b'"');
}

/// Appends `s` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    write_json_str_bytes(out, s.as_bytes());
}

/// [`write_json_str`] on the bytes of a `str` (or of bytes known to be
/// UTF-8). Runs of bytes that need no escape are found 32 at a time (the
/// check vectorizes) and copied whole: the hot loop of large dumps.
fn write_json_str_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    const CHUNK: usize = 32;
    // Most strings need no escape at all: one check, one copy.
    if none_of(bytes, needs_escape) {
        write_quoted(out, bytes);
        return;
    }
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + CHUNK) {
            // `|` rather than `any`: no early exit, so it vectorizes.
            if !chunk.iter().fold(false, |acc, &b| acc | needs_escape(b)) {
                i += CHUNK;
                continue;
            }
        }
        if let Some(word) = bytes.get(i..i + 8).and_then(|w| w.first_chunk::<8>())
            && !word_needs_escape(u64::from_le_bytes(*word))
        {
            i += 8;
            continue;
        }
        let b = bytes[i];
        if needs_escape(b) {
            out.extend_from_slice(&bytes[run..i]);
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                _ => {
                    out.extend_from_slice(b"\\u00");
                    out.extend_from_slice(&HEX[usize::from(b)]);
                }
            }
            run = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Appends the JSON form of bytes ([`bytes_json`]) to `out`.
pub(crate) fn write_bytes_json(out: &mut Vec<u8>, b: &[u8]) {
    // Printable ASCII (keys and values of most clusters) is valid UTF-8 and
    // printable: one vectorized check instead of UTF-8 validation plus a
    // printability pass.
    if b.starts_with(b"0x") {
        // Hex even if printable (see `bytes_json`), below.
    } else if none_of(b, |x| !(0x20..0x7f).contains(&x) || x == b'"' || x == b'\\') {
        // Printable ASCII without quotes or backslashes: copied as is.
        write_quoted(out, b);
        return;
    } else if none_of(b, |x| !(0x20..0x7f).contains(&x)) {
        write_json_str_bytes(out, b);
        return;
    }
    match json_text(b) {
        Some(s) => write_json_str(out, s),
        None => {
            out.extend_from_slice(b"\"0x");
            for x in b {
                out.extend_from_slice(&HEX[usize::from(*x)]);
            }
            out.push(b'"');
        }
    }
}

/// Appends the decimal form of `v` (what `write!(out, "{v}")` writes, without
/// the formatting machinery).
pub fn write_uint(out: &mut Vec<u8>, mut v: u64) {
    // Two digits per division (IDs have up to 20 digits).
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while v >= 100 {
        let d = usize::try_from(v % 100).unwrap_or_default();
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DEC2[d]);
    }
    if v >= 10 {
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DEC2[v as usize]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    out.extend_from_slice(&buf[i..]);
}

/// "00" to "99".
const DEC2: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

const HEX: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [digits[i >> 4], digits[i & 15]];
        i += 1;
    }
    t
};

/// JSON form of bytes: printable UTF-8 as text, otherwise (or if the text
/// itself starts with `0x`) `0x` followed by hex.
pub fn bytes_json(b: &[u8]) -> String {
    match json_text(b) {
        Some(s) => s.to_owned(),
        None => format!("0x{}", hex(b)),
    }
}

/// The text JSON shows for bytes, or `None` when they must be shown as
/// `0x` + hex (not printable UTF-8, or text that itself starts with `0x`).
fn json_text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b)
        .ok()
        .filter(|s| printable(s) && !s.starts_with("0x"))
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() * 2);
    for x in b {
        out.extend(HEX[usize::from(*x)].map(char::from));
    }
    out
}

/// Terminal form of bytes: quoted; printable UTF-8 as is, else `\xNN` escapes.
pub fn bytes_text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if printable(s) => format!("{s:?}"),
        _ => format!("\"{}\"", b.escape_ascii()),
    }
}

impl Node {
    /// JSON value (field names as in etcd's schema).
    pub fn to_json(&self) -> Json {
        match self {
            Node::Bool(b) => Json::Bool(*b),
            Node::Int(i) => Json::from(*i),
            Node::UInt(u) | Node::HexId(u) => Json::from(*u),
            Node::Str(s) | Node::Enum(s) => Json::String(s.clone()),
            Node::Bytes(b) => Json::String(bytes_json(b)),
            Node::List(v) => Json::Array(v.iter().map(Node::to_json).collect()),
            Node::Msg(fields) => {
                let mut m = Map::new();
                for (k, v) in fields {
                    m.insert(k.clone(), v.to_json());
                }
                Json::Object(m)
            }
            Node::Json(j) => j.clone(),
            Node::Redacted => Json::String("<redacted>".into()),
        }
    }

    /// Appends the JSON form (same as [`to_json`](Self::to_json)) to `out`
    /// without building an intermediate value: the fast path for dumps.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        match self {
            Node::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Node::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Node::UInt(u) | Node::HexId(u) => write_uint(out, *u),
            Node::Str(s) | Node::Enum(s) => write_json_str(out, s),
            Node::Bytes(b) => write_bytes_json(out, b),
            Node::List(v) => {
                out.push(b'[');
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    x.write_json(out);
                }
                out.push(b']');
            }
            Node::Msg(fields) => {
                out.push(b'{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_str(out, k);
                    out.push(b':');
                    v.write_json(out);
                }
                out.push(b'}');
            }
            Node::Json(j) => {
                let _ = serde_json::to_writer(&mut *out, j);
            }
            Node::Redacted => out.extend_from_slice(b"\"<redacted>\""),
        }
    }

    /// Compact terminal text: `key="foo" value="bar"` at top level.
    pub fn to_text(&self) -> String {
        self.to_text_limited(usize::MAX)
    }

    /// Like [`to_text`](Self::to_text) but cuts any single string or bytes
    /// value longer than `limit` bytes, noting how much was left out.
    pub fn to_text_limited(&self, limit: usize) -> String {
        let mut out = String::new();
        match self {
            Node::Msg(fields) => write_fields(&mut out, fields, limit),
            other => write_text(&mut out, other, limit),
        }
        out
    }

    /// Field lookup in a message node.
    pub fn get(&self, name: &str) -> Option<&Node> {
        match self {
            Node::Msg(fields) => fields.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

fn write_fields(out: &mut String, fields: &[(String, Node)], limit: usize) {
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(k);
        out.push('=');
        write_text(out, v, limit);
    }
}

fn write_text(out: &mut String, n: &Node, limit: usize) {
    match n {
        Node::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Node::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Node::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        Node::HexId(u) => {
            let _ = write!(out, "{u:016x}");
        }
        Node::Str(s) if s.len() > limit => {
            let cut = (0..=limit)
                .rev()
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(0);
            let _ = write!(out, "{:?}…(+{} bytes)", &s[..cut], s.len() - cut);
        }
        Node::Str(s) => {
            let _ = write!(out, "{s:?}");
        }
        Node::Enum(s) => out.push_str(s),
        Node::Bytes(b) if b.len() > limit => {
            out.push_str(&bytes_text(&b[..limit]));
            let _ = write!(out, "…(+{} bytes)", b.len() - limit);
        }
        Node::Bytes(b) => out.push_str(&bytes_text(b)),
        Node::List(v) => {
            out.push('[');
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_text(out, x, limit);
            }
            out.push(']');
        }
        Node::Msg(fields) => {
            out.push('{');
            write_fields(out, fields, limit);
            out.push('}');
        }
        Node::Json(j) => out.push_str(&j.to_string()),
        Node::Redacted => out.push_str("<redacted>"),
    }
}

fn value_node(v: &Value, kind: &Kind, hex: bool, opts: RenderOptions) -> Node {
    match v {
        Value::Bool(b) => Node::Bool(*b),
        Value::I32(i) => Node::Int(i64::from(*i)),
        Value::I64(i) if hex => Node::HexId(*i as u64),
        Value::I64(i) => Node::Int(*i),
        Value::U32(u) => Node::UInt(u64::from(*u)),
        Value::U64(u) if hex => Node::HexId(*u),
        Value::U64(u) => Node::UInt(*u),
        Value::F32(f) => Node::Str(f.to_string()),
        Value::F64(f) => Node::Str(f.to_string()),
        Value::String(s) => Node::Str(s.clone()),
        Value::Bytes(b) => Node::Bytes(b.clone()),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => e
                .get_value(*n)
                .map(|ev| Node::Enum(ev.name().to_owned()))
                .unwrap_or(Node::Int(i64::from(*n))),
            _ => Node::Int(i64::from(*n)),
        },
        Value::Message(m) => message_node(m, opts),
        Value::List(items) => Node::List(
            items
                .iter()
                .map(|x| value_node(x, kind, hex, opts))
                .collect(),
        ),
        Value::Map(_) => Node::Str("<map>".into()),
    }
}

/// Renders a dynamic message: only fields present on the wire (proto2 /
/// oneof presence) or non-default (proto3), in schema order.
pub fn message_node(m: &DynamicMessage, opts: RenderOptions) -> Node {
    let mut present: Vec<_> = m.fields().collect();
    present.sort_by_key(|(fd, _)| fd.number());
    let fields = present
        .into_iter()
        .map(|(fd, v)| {
            let full = fd.full_name();
            let node = if !opts.show_secrets && SECRET_FIELDS.contains(&full) {
                Node::Redacted
            } else {
                value_node(v, &fd.kind(), HEX_FIELDS.contains(&full), opts)
            };
            (fd.name().to_owned(), node)
        })
        .collect();
    Node::Msg(fields)
}

/// Decodes `bytes` as the named message of our schema and renders it.
pub fn render_message(full_name: &str, bytes: &[u8], opts: RenderOptions) -> Result<Node, String> {
    let desc = etcd_standby_proto::descriptor_pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| format!("no message {full_name} in schema"))?;
    let m = DynamicMessage::decode(desc, bytes).map_err(|e| format!("{full_name}: {e}"))?;
    Ok(message_node(&m, opts))
}

pub use crate::typed_json::write_typed_request;

/// Appends the JSON of an entry's request to `out`: exactly the bytes of
/// `render_entry(..).write_json(out)`, written by the typed writer
/// ([`write_typed_request`]) for the hot request kinds and by schema
/// reflection for everything else. The `wal dump --json` hot path.
pub fn write_entry_json(
    entry_type: i32,
    data: &[u8],
    decoded: &Decoded,
    opts: RenderOptions,
    out: &mut Vec<u8>,
) {
    if !write_typed_request(decoded, out) {
        render_entry(entry_type, data, decoded, opts).write_json(out);
    }
}

/// Renders an entry's request (`data` is the entry payload, `decoded` its
/// classification). Conf-change contexts are shown as parsed JSON plus
/// `NodeID_hex`, like etcd's dump tools.
pub fn render_entry(entry_type: i32, data: &[u8], decoded: &Decoded, opts: RenderOptions) -> Node {
    let by_schema = |name: &str| {
        render_message(name, data, opts).unwrap_or_else(|e| {
            Node::Msg(vec![
                ("error".into(), Node::Str(e)),
                ("raw".into(), Node::Bytes(Bytes::copy_from_slice(data))),
            ])
        })
    };
    match decoded {
        Decoded::Empty => Node::Msg(Vec::new()),
        Decoded::Internal(_) => by_schema("etcdserverpb.InternalRaftRequest"),
        Decoded::V2(_) => by_schema("etcdserverpb.Request"),
        Decoded::ConfChange(cc) if entry_type == ENTRY_CONF_CHANGE => {
            let mut node = by_schema("raftpb.ConfChange");
            if let Node::Msg(fields) = &mut node {
                if let Some(ctx) = cc.change.context.as_deref()
                    && let Ok(j) = serde_json::from_slice::<Json>(ctx)
                {
                    for (k, v) in fields.iter_mut() {
                        if k == "Context" {
                            *v = Node::Json(j.clone());
                        }
                    }
                }
                fields.push((
                    "NodeID_hex".into(),
                    Node::Str(format!("{:x}", cc.change.node_id)),
                ));
            }
            node
        }
        Decoded::ConfChangeV2(_) if entry_type == ENTRY_CONF_CHANGE_V2 => {
            by_schema("raftpb.ConfChangeV2")
        }
        Decoded::ConfChange(_) | Decoded::ConfChangeV2(_) => Node::Msg(Vec::new()),
        Decoded::Unknown { raw, reason, .. } => Node::Msg(vec![
            ("error".into(), Node::Str(reason.clone())),
            ("raw_hex".into(), Node::Str(hex(raw))),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_check_agrees_with_the_byte_check() {
        let probes = [
            0x00u8, 0x1f, 0x20, b'"', b'\\', b'a', 0x7e, 0x7f, 0x80, 0xc3, 0xff,
        ];
        for fill in probes {
            for odd in probes {
                for pos in 0..8 {
                    let mut w = [fill; 8];
                    w[pos] = odd;
                    assert_eq!(
                        word_needs_escape(u64::from_le_bytes(w)),
                        w.iter().any(|&b| needs_escape(b)),
                        "{w:?}"
                    );
                }
            }
        }
    }
}
