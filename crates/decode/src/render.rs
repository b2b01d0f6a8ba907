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

/// Appends `s` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        if esc.is_empty() {
            let _ = std::io::Write::write_fmt(out, format_args!("\\u{b:04x}"));
        } else {
            out.extend_from_slice(esc);
        }
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Appends the JSON form of bytes ([`bytes_json`]) to `out`.
pub(crate) fn write_bytes_json(out: &mut Vec<u8>, b: &[u8]) {
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
            Node::UInt(u) | Node::HexId(u) => {
                let _ = write!(out, "{u}");
            }
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
