//! The typed JSON writer of the hot request kinds writes exactly the bytes the
//! schema-reflection renderer writes: for generated requests of every hot kind
//! (including nested txns, negative IDs, unknown enum numbers, bytes that are
//! text, hex or `0x`-prefixed text) and for every entry of the fixture WALs.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use bytes::Bytes;
use etcd_standby_decode::raw_json::{RawRequest, parse_entry};
use etcd_standby_decode::render::{
    RenderOptions, render_entry, write_entry_json, write_typed_request,
};
use etcd_standby_decode::{Decoded, ENTRY_NORMAL, decode_entry, decode_payload};
use etcd_standby_proto::{Message, etcdserverpb as pb};
use etcd_standby_wal::{WalReader, WalRecord};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn reflection_json(entry_type: i32, data: &[u8], decoded: &Decoded, show: bool) -> Vec<u8> {
    let mut out = Vec::new();
    render_entry(
        entry_type,
        data,
        decoded,
        RenderOptions { show_secrets: show },
    )
    .write_json(&mut out);
    out
}

fn bytes_strategy() -> BoxedStrategy<Bytes> {
    prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 0..12),
        "[ -~]{0,16}".prop_map(String::into_bytes),
        "0x[0-9a-f]{0,6}".prop_map(String::into_bytes),
        "\\PC{0,6}".prop_map(String::into_bytes),
        "[\\x00-\\x1f\"\\\\a/]{0,8}".prop_map(String::into_bytes),
    ]
    .prop_map(Bytes::from)
    .boxed()
}

fn i64_strategy() -> BoxedStrategy<i64> {
    prop_oneof![Just(0i64), -3i64..3, any::<i64>()].boxed()
}

fn u64_strategy() -> BoxedStrategy<u64> {
    prop_oneof![Just(0u64), 0u64..3, any::<u64>()].boxed()
}

fn enum_strategy() -> BoxedStrategy<i32> {
    prop_oneof![Just(0i32), 0i32..7, any::<i32>()].boxed()
}

fn header() -> BoxedStrategy<pb::RequestHeader> {
    (u64_strategy(), "[a-z\"\\\\é]{0,6}", u64_strategy())
        .prop_map(|(id, username, auth_revision)| pb::RequestHeader {
            id,
            username,
            auth_revision,
        })
        .boxed()
}

fn range() -> BoxedStrategy<pb::RangeRequest> {
    (
        (
            bytes_strategy(),
            bytes_strategy(),
            i64_strategy(),
            i64_strategy(),
        ),
        (enum_strategy(), enum_strategy(), any::<[bool; 3]>()),
        (
            i64_strategy(),
            i64_strategy(),
            i64_strategy(),
            i64_strategy(),
        ),
    )
        .prop_map(
            |((key, range_end, limit, revision), (so, st, b), (a, c, d, e))| pb::RangeRequest {
                key,
                range_end,
                limit,
                revision,
                sort_order: so,
                sort_target: st,
                serializable: b[0],
                keys_only: b[1],
                count_only: b[2],
                min_mod_revision: a,
                max_mod_revision: c,
                min_create_revision: d,
                max_create_revision: e,
            },
        )
        .boxed()
}

fn put() -> BoxedStrategy<pb::PutRequest> {
    (
        bytes_strategy(),
        bytes_strategy(),
        i64_strategy(),
        any::<[bool; 3]>(),
    )
        .prop_map(|(key, value, lease, b)| pb::PutRequest {
            key,
            value,
            lease,
            prev_kv: b[0],
            ignore_value: b[1],
            ignore_lease: b[2],
        })
        .boxed()
}

fn delete() -> BoxedStrategy<pb::DeleteRangeRequest> {
    (bytes_strategy(), bytes_strategy(), any::<bool>())
        .prop_map(|(key, range_end, prev_kv)| pb::DeleteRangeRequest {
            key,
            range_end,
            prev_kv,
        })
        .boxed()
}

fn compare() -> BoxedStrategy<pb::Compare> {
    use pb::compare::TargetUnion;
    let target_union = prop_oneof![
        Just(None),
        i64_strategy().prop_map(|v| Some(TargetUnion::Version(v))),
        i64_strategy().prop_map(|v| Some(TargetUnion::CreateRevision(v))),
        i64_strategy().prop_map(|v| Some(TargetUnion::ModRevision(v))),
        bytes_strategy().prop_map(|v| Some(TargetUnion::Value(v))),
        i64_strategy().prop_map(|v| Some(TargetUnion::Lease(v))),
    ];
    (
        enum_strategy(),
        enum_strategy(),
        bytes_strategy(),
        target_union,
        bytes_strategy(),
    )
        .prop_map(
            |(result, target, key, target_union, range_end)| pb::Compare {
                result,
                target,
                key,
                range_end,
                target_union,
            },
        )
        .boxed()
}

fn txn() -> BoxedStrategy<pb::TxnRequest> {
    use pb::request_op::Request;
    let leaf = prop_oneof![
        Just(pb::RequestOp { request: None }),
        range().prop_map(|r| pb::RequestOp {
            request: Some(Request::RequestRange(r))
        }),
        put().prop_map(|r| pb::RequestOp {
            request: Some(Request::RequestPut(r))
        }),
        delete().prop_map(|r| pb::RequestOp {
            request: Some(Request::RequestDeleteRange(r))
        }),
    ];
    let op = leaf.prop_recursive(2, 12, 3, |inner| {
        (
            proptest::collection::vec(compare(), 0..3),
            proptest::collection::vec(inner.clone(), 0..3),
            proptest::collection::vec(inner, 0..3),
        )
            .prop_map(|(compare, success, failure)| pb::RequestOp {
                request: Some(Request::RequestTxn(pb::TxnRequest {
                    compare,
                    success,
                    failure,
                })),
            })
    });
    (
        proptest::collection::vec(compare(), 0..3),
        proptest::collection::vec(op.clone(), 0..4),
        proptest::collection::vec(op, 0..3),
    )
        .prop_map(|(compare, success, failure)| pb::TxnRequest {
            compare,
            success,
            failure,
        })
        .boxed()
}

/// An `InternalRaftRequest` of the hot kinds: usually one request (as etcd
/// writes), sometimes none or several, with or without header and ID.
fn hot_request() -> BoxedStrategy<pb::InternalRaftRequest> {
    (
        (
            proptest::option::of(header()),
            u64_strategy(),
            proptest::option::weighted(0.3, range()),
            proptest::option::weighted(0.4, put()),
            proptest::option::weighted(0.3, delete()),
        ),
        (
            proptest::option::weighted(0.3, txn()),
            proptest::option::weighted(0.2, (i64_strategy(), any::<bool>())),
            proptest::option::weighted(0.2, (i64_strategy(), i64_strategy())),
            proptest::option::weighted(0.2, i64_strategy()),
        ),
    )
        .prop_map(
            |((header, id, range, put, delete_range), (txn, compaction, grant, revoke))| {
                pb::InternalRaftRequest {
                    header,
                    id,
                    range,
                    put,
                    delete_range,
                    txn,
                    compaction: compaction
                        .map(|(revision, physical)| pb::CompactionRequest { revision, physical }),
                    lease_grant: grant.map(|(ttl, id)| pb::LeaseGrantRequest { ttl, id }),
                    lease_revoke: revoke.map(|id| pb::LeaseRevokeRequest { id }),
                    ..Default::default()
                }
            },
        )
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn typed_json_equals_reflection_for_hot_requests(req in hot_request()) {
        let data = req.encode_to_vec();
        let decoded = decode_payload(ENTRY_NORMAL, Bytes::from(data.clone()));
        // An all-default request encodes to nothing: the leader no-op.
        if !data.is_empty() {
            prop_assert!(matches!(decoded, Decoded::Internal(_)), "{decoded:?}");
        }
        let mut typed = Vec::new();
        prop_assert!(write_typed_request(&decoded, &mut typed));
        for show in [false, true] {
            let want = reflection_json(ENTRY_NORMAL, &data, &decoded, show);
            prop_assert_eq!(
                String::from_utf8_lossy(&typed),
                String::from_utf8_lossy(&want)
            );
        }
    }

    #[test]
    fn cold_requests_fall_back_to_reflection(
        req in hot_request(),
        name in "[a-z]{1,6}",
        pw in "[a-z]{1,6}",
    ) {
        let mut req = req;
        req.auth_user_add = Some(pb::AuthUserAddRequest {
            name,
            password: pw,
            ..Default::default()
        });
        let data = req.encode_to_vec();
        let decoded = decode_payload(ENTRY_NORMAL, Bytes::from(data.clone()));
        let mut typed = Vec::new();
        prop_assert!(!write_typed_request(&decoded, &mut typed));
        prop_assert!(typed.is_empty());
        for show in [false, true] {
            let mut out = Vec::new();
            write_entry_json(ENTRY_NORMAL, &data, &decoded, RenderOptions { show_secrets: show }, &mut out);
            prop_assert_eq!(out, reflection_json(ENTRY_NORMAL, &data, &decoded, show));
        }
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

#[test]
fn typed_json_equals_reflection_on_every_fixture_entry() {
    for version in ["etcd-3.4.23", "etcd-3.5.1"] {
        let mut reader =
            WalReader::open(&fixtures().join(version).join("data/member/wal")).unwrap();
        let (mut entries, mut typed_entries) = (0, 0);
        while let Some(rec) = reader.next_record().unwrap() {
            let WalRecord::Entry(e) = rec.decode().unwrap() else {
                continue;
            };
            entries += 1;
            let decoded = decode_entry(&e);
            let data = e.data.as_deref().unwrap_or_default();
            let mut typed = Vec::new();
            if write_typed_request(&decoded, &mut typed) {
                typed_entries += 1;
                for show in [false, true] {
                    assert_eq!(
                        String::from_utf8_lossy(&typed),
                        String::from_utf8_lossy(&reflection_json(e.r#type, data, &decoded, show)),
                        "{version} entry {}",
                        e.index
                    );
                }
            }
            for show in [false, true] {
                let mut out = Vec::new();
                write_entry_json(
                    e.r#type,
                    data,
                    &decoded,
                    RenderOptions { show_secrets: show },
                    &mut out,
                );
                assert_eq!(
                    out,
                    reflection_json(e.r#type, data, &decoded, show),
                    "{version} entry {}",
                    e.index
                );
            }
        }
        assert!(entries >= 60, "{version}: {entries} entries");
        assert!(
            typed_entries >= 10,
            "{version}: only {typed_entries} of {entries} entries took the typed path"
        );
    }
}

/// What the dump's typed path writes for `data` (prost decode, then the
/// typed writer or reflection), with the request's kind.
fn typed_path(data: &[u8]) -> (etcd_standby_decode::RequestKind, Vec<u8>) {
    let decoded = decode_payload(ENTRY_NORMAL, Bytes::copy_from_slice(data));
    let mut out = Vec::new();
    write_entry_json(
        ENTRY_NORMAL,
        data,
        &decoded,
        RenderOptions {
            show_secrets: false,
        },
        &mut out,
    );
    (etcd_standby_decode::RequestKind::of(&decoded), out)
}

/// Checks the raw path against the typed path on `data`; returns whether
/// the raw path took it.
fn raw_agrees(data: &[u8]) -> Result<bool, TestCaseError> {
    let Some(raw) = RawRequest::parse(data) else {
        return Ok(false);
    };
    let mut out = Vec::new();
    raw.write_json(&mut out);
    let (kind, want) = typed_path(data);
    prop_assert_eq!(raw.kind(), kind);
    prop_assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&want)
    );
    Ok(true)
}

/// Small edits of an encoding: flipped bytes, cut tails, pieces appended
/// (duplicate, unknown, out-of-order fields, non-minimal varints).
fn mutated(data: Vec<u8>) -> BoxedStrategy<Vec<u8>> {
    let len = data.len();
    let pieces = prop_oneof![
        // ID again / unknown varint field 2 / field 1 with a non-minimal varint.
        Just(vec![0x08, 0x05]),
        Just(vec![0x10, 0x01]),
        Just(vec![0x08, 0x85, 0x80, 0x00]),
        // An empty put, an empty delete-range, an empty header.
        Just(vec![0x22, 0x00]),
        Just(vec![0x2a, 0x00]),
        Just(vec![0xa2, 0x06, 0x00]),
        // A put whose key is given twice; a put with an unknown field.
        Just(vec![0x22, 0x06, 0x0a, 0x01, b'a', 0x0a, 0x01, b'b']),
        Just(vec![0x22, 0x02, 0x38, 0x01]),
        // A header with a username that is not UTF-8.
        Just(vec![0xa2, 0x06, 0x03, 0x12, 0x01, 0xff]),
        proptest::collection::vec(any::<u8>(), 0..6),
    ];
    (
        proptest::collection::vec((0..len.max(1), any::<u8>()), 0..3),
        proptest::option::of(0..len.max(1)),
        proptest::collection::vec(pieces, 0..3),
        any::<bool>(),
    )
        .prop_map(move |(flips, cut, pieces, front)| {
            let mut d = data.clone();
            for (at, v) in flips {
                if let Some(b) = d.get_mut(at) {
                    *b = v;
                }
            }
            if let Some(c) = cut {
                d.truncate(c);
            }
            for p in pieces {
                if front {
                    d.splice(0..0, p);
                } else {
                    d.extend(p);
                }
            }
            d
        })
        .boxed()
}

fn put_only_request() -> BoxedStrategy<pb::InternalRaftRequest> {
    (proptest::option::of(header()), u64_strategy(), put())
        .prop_map(|(header, id, put)| pb::InternalRaftRequest {
            header,
            id,
            put: Some(put),
            ..Default::default()
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The raw path takes every put-only and delete-only request etcd
    /// writes, and writes what the typed path writes.
    #[test]
    fn raw_json_equals_typed_for_puts_and_deletes(
        req in put_only_request(),
        del in proptest::option::of(delete()),
    ) {
        let mut req = req;
        if let Some(d) = del {
            req.put = None;
            req.delete_range = Some(d);
        }
        prop_assert!(raw_agrees(&req.encode_to_vec())?);
    }

    /// On every other request, and on odd or damaged encodings, the raw
    /// path either declines or agrees with the typed path.
    #[test]
    fn raw_json_declines_or_agrees(
        data in hot_request().prop_flat_map(|r| mutated(r.encode_to_vec())),
    ) {
        raw_agrees(&data)?;
    }

    /// `parse_entry` reads what prost reads, or declines.
    #[test]
    fn raw_entry_equals_prost(
        entry_type in enum_strategy(),
        term in u64_strategy(),
        index in u64_strategy(),
        data in proptest::option::of(bytes_strategy()),
        flip in proptest::option::of((0usize..64, any::<u8>())),
    ) {
        use etcd_standby_proto::raftpb;
        let e = raftpb::Entry { r#type: entry_type, term, index, data };
        let mut b = e.encode_to_vec();
        if let Some((at, v)) = flip && let Some(x) = b.get_mut(at) {
            *x = v;
        }
        let raw = parse_entry(&b);
        if flip.is_none() {
            prop_assert!(raw.is_some());
        }
        if let Some(raw) = raw {
            let want = raftpb::Entry::decode(&b[..]).unwrap();
            prop_assert_eq!(raw.entry_type, want.r#type);
            prop_assert_eq!(raw.term, want.term);
            prop_assert_eq!(raw.index, want.index);
            prop_assert_eq!(raw.data, want.data.as_deref());
        }
    }
}
