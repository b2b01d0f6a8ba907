//! Raft entry → typed etcd request, the way etcd's apply loop classifies it.
//!
//! * [`decode_entry`] never panics: anything it cannot decode becomes
//!   [`Decoded::Unknown`] with the raw bytes and the reason.
//! * [`apply_request`] picks the request etcd applies from an
//!   `InternalRaftRequest` (etcd's field precedence, one table: [`APPLY_ORDER`]).
//! * [`RequestKind`] names what an entry asks for (`put`, `txn`,
//!   `auth_user_add`, `v2.PUT`, `conf.AddLearnerNode`, ...), for filters and stats.
//! * [`keys`] lists the keys and ranges an entry touches.
//! * [`render`] turns any entry into a safe, redacted tree printable as JSON
//!   or as a terminal line.
//! * [`Member`] is the workspace's one cluster-member type (etcd's JSON).
pub mod dispatch;
mod kind;
mod member;
pub mod raw_json;
pub mod render;
mod typed_json;

pub use dispatch::{APPLY_ORDER, ApplyRequest, ApplyRules, apply_request};
pub use kind::{RequestKind, parse_kind_filter};
pub use member::Member;

use bytes::Bytes;
use etcd_standby_proto::{Message, etcdserverpb, raftpb};

/// etcd's raft entry types.
pub const ENTRY_NORMAL: i32 = 0;
/// A `raftpb.ConfChange` entry.
pub const ENTRY_CONF_CHANGE: i32 = 1;
/// A `raftpb.ConfChangeV2` entry (never proposed by etcd 3.4/3.5).
pub const ENTRY_CONF_CHANGE_V2: i32 = 2;

/// Member description carried in a conf change's context (JSON).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfContext {
    /// Member ID.
    pub id: Option<u64>,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs.
    pub client_urls: Vec<String>,
    /// Member name.
    pub name: Option<String>,
    /// Added as a learner.
    pub is_learner: bool,
    /// A learner promotion (AddNode with `isPromote`).
    pub is_promote: bool,
}

impl ConfContext {
    /// Parses the JSON context; `None` if it is not a JSON object.
    pub fn parse(raw: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(raw).ok()?;
        let o = v.as_object()?;
        let strings = |k: &str| -> Vec<String> {
            o.get(k)
                .and_then(|x| x.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(ConfContext {
            id: o.get("id").and_then(|x| x.as_u64()),
            peer_urls: strings("peerURLs"),
            client_urls: strings("clientURLs"),
            name: o.get("name").and_then(|x| x.as_str()).map(str::to_owned),
            is_learner: o
                .get("isLearner")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
            is_promote: o
                .get("isPromote")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
        })
    }
}

/// A decoded conf change.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfChange {
    /// The raw change (etcd numbering: AddNode 0, RemoveNode 1, UpdateNode 2, AddLearnerNode 3).
    pub change: raftpb::ConfChange,
    /// Parsed context, when it is JSON.
    pub context: Option<ConfContext>,
}

impl ConfChange {
    /// The change type, if it is one etcd defines.
    pub fn change_type(&self) -> Option<raftpb::ConfChangeType> {
        raftpb::ConfChangeType::try_from(self.change.r#type).ok()
    }
}

/// What a raft entry carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// No data: the no-op a new leader appends.
    Empty,
    /// A v3 request.
    Internal(Box<etcdserverpb::InternalRaftRequest>),
    /// A bare v2 request (member publish, cluster version, v2 API, SYNC).
    V2(Box<etcdserverpb::Request>),
    /// A membership change.
    ConfChange(ConfChange),
    /// A joint-consensus change (etcd 3.4/3.5 never propose these).
    ConfChangeV2(raftpb::ConfChangeV2),
    /// Anything else: kept raw so nothing is silently dropped.
    Unknown {
        /// The entry type as stored.
        entry_type: i32,
        /// The undecodable payload.
        raw: Bytes,
        /// Why it did not decode.
        reason: String,
    },
}

/// Decodes an entry's payload like etcd's apply loop: empty → no-op; strict
/// `InternalRaftRequest`, else v2 `Request`; conf changes by entry type.
pub fn decode_entry(entry: &raftpb::Entry) -> Decoded {
    decode_payload(entry.r#type, entry.data.clone().unwrap_or_default())
}

/// [`decode_entry`] on an entry type and payload.
pub fn decode_payload(entry_type: i32, data: Bytes) -> Decoded {
    match entry_type {
        ENTRY_NORMAL => {
            if data.is_empty() {
                return Decoded::Empty;
            }
            match etcdserverpb::InternalRaftRequest::decode(data.clone()) {
                Ok(r) => Decoded::Internal(Box::new(r)),
                Err(e1) => match etcdserverpb::Request::decode(data.clone()) {
                    Ok(r) => Decoded::V2(Box::new(r)),
                    Err(e2) => Decoded::Unknown {
                        entry_type,
                        raw: data,
                        reason: format!(
                            "neither an InternalRaftRequest ({e1}) nor a v2 Request ({e2})"
                        ),
                    },
                },
            }
        }
        ENTRY_CONF_CHANGE => match raftpb::ConfChange::decode(data.clone()) {
            Ok(change) => {
                let context = change.context.as_deref().and_then(ConfContext::parse);
                Decoded::ConfChange(ConfChange { change, context })
            }
            Err(e) => Decoded::Unknown {
                entry_type,
                raw: data,
                reason: format!("bad ConfChange: {e}"),
            },
        },
        ENTRY_CONF_CHANGE_V2 => match raftpb::ConfChangeV2::decode(data.clone()) {
            Ok(cc) => Decoded::ConfChangeV2(cc),
            Err(e) => Decoded::Unknown {
                entry_type,
                raw: data,
                reason: format!("bad ConfChangeV2: {e}"),
            },
        },
        other => Decoded::Unknown {
            entry_type: other,
            raw: data,
            reason: format!("unknown entry type {other}"),
        },
    }
}

/// A key or key range an entry touches (`range_end` empty = single key,
/// `"\0"` = to the end of the key space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// First key.
    pub key: Bytes,
    /// Exclusive end, as in etcd requests.
    pub range_end: Bytes,
}

impl KeyRef {
    /// True if this key or range overlaps keys starting with `prefix`.
    pub fn overlaps_prefix(&self, prefix: &[u8]) -> bool {
        if self.range_end.is_empty() {
            return self.key.starts_with(prefix);
        }
        // range [key, end) vs prefix range [prefix, prefix_end)
        let end_open = self.range_end.as_ref() == b"\0";
        let starts_before_prefix_end = match prefix_end(prefix) {
            Some(pe) => self.key.as_ref() < pe.as_slice(),
            None => true,
        };
        let ends_after_prefix = end_open || self.range_end.as_ref() > prefix;
        starts_before_prefix_end && ends_after_prefix
    }
}

/// The smallest key greater than every key with this prefix (`None`: no bound).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn op_keys(op: &etcdserverpb::RequestOp, out: &mut Vec<KeyRef>) {
    use etcdserverpb::request_op::Request;
    match &op.request {
        Some(Request::RequestRange(r)) => out.push(KeyRef {
            key: r.key.clone(),
            range_end: r.range_end.clone(),
        }),
        Some(Request::RequestPut(p)) => out.push(KeyRef {
            key: p.key.clone(),
            range_end: Bytes::new(),
        }),
        Some(Request::RequestDeleteRange(d)) => out.push(KeyRef {
            key: d.key.clone(),
            range_end: d.range_end.clone(),
        }),
        Some(Request::RequestTxn(t)) => txn_keys(t, out),
        None => {}
    }
}

fn txn_keys(t: &etcdserverpb::TxnRequest, out: &mut Vec<KeyRef>) {
    for c in &t.compare {
        out.push(KeyRef {
            key: c.key.clone(),
            range_end: c.range_end.clone(),
        });
    }
    for op in t.success.iter().chain(&t.failure) {
        op_keys(op, out);
    }
}

/// Keys and ranges a decoded entry reads or writes (KV requests and v2 paths).
pub fn keys(decoded: &Decoded) -> Vec<KeyRef> {
    let mut out = Vec::new();
    match decoded {
        Decoded::Internal(r) => {
            if let Some(p) = &r.put {
                out.push(KeyRef {
                    key: p.key.clone(),
                    range_end: Bytes::new(),
                });
            }
            if let Some(d) = &r.delete_range {
                out.push(KeyRef {
                    key: d.key.clone(),
                    range_end: d.range_end.clone(),
                });
            }
            if let Some(g) = &r.range {
                out.push(KeyRef {
                    key: g.key.clone(),
                    range_end: g.range_end.clone(),
                });
            }
            if let Some(t) = &r.txn {
                txn_keys(t, &mut out);
            }
            if let Some(v2) = &r.v2 {
                out.push(KeyRef {
                    key: Bytes::copy_from_slice(v2.path.as_bytes()),
                    range_end: Bytes::new(),
                });
            }
        }
        Decoded::V2(v2) => out.push(KeyRef {
            key: Bytes::copy_from_slice(v2.path.as_bytes()),
            range_end: Bytes::new(),
        }),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_overlap_handles_ranges_and_open_ends() {
        let k = |a: &[u8], b: &[u8]| KeyRef {
            key: Bytes::copy_from_slice(a),
            range_end: Bytes::copy_from_slice(b),
        };
        assert!(k(b"/a/1", b"").overlaps_prefix(b"/a/"));
        assert!(!k(b"/b/1", b"").overlaps_prefix(b"/a/"));
        assert!(k(b"/a", b"/b").overlaps_prefix(b"/a/"));
        assert!(k(b"t", b"\0").overlaps_prefix(b"zz"));
        assert!(!k(b"t", b"\0").overlaps_prefix(b"a"));
        assert!(!k(b"/a", b"/a/").overlaps_prefix(b"/a/"));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
    }

    #[test]
    fn garbage_becomes_unknown_never_a_panic() {
        for data in [&b"\xff\xff\xff"[..], b"\x0a\x05ab", b"\x08"] {
            let d = decode_payload(ENTRY_NORMAL, Bytes::copy_from_slice(data));
            assert!(matches!(d, Decoded::Unknown { .. }), "{d:?}");
        }
        let d = decode_payload(7, Bytes::from_static(b"x"));
        assert!(matches!(d, Decoded::Unknown { entry_type: 7, .. }));
        assert_eq!(decode_payload(ENTRY_NORMAL, Bytes::new()), Decoded::Empty);
    }
}
