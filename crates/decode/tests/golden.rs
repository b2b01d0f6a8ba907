//! Our decoding of every entry in the real etcd fixtures equals the expected
//! decoding in `shared/fixtures/*/expected/wal.txt`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use etcd_standby_decode::render::{RenderOptions, render_entry};
use etcd_standby_decode::{Decoded, RequestKind, decode_entry};
use etcd_standby_wal::{WalReader, WalRecord};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

/// (index, entry type, kind, json) from the expected text.
fn expected_entries(version: &str) -> Vec<(u64, String, String, Option<Value>)> {
    let text = std::fs::read_to_string(fixtures().join(version).join("expected/wal.txt")).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix("entry ") else {
            continue;
        };
        let index: u64 = rest
            .split("index=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let etype = rest
            .split("type=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        let after_kind = rest.split(" kind=").nth(1).unwrap();
        let (kind, json) = match after_kind.find(" {") {
            Some(p) => (
                after_kind[..p].to_string(),
                Some(serde_json::from_str(&after_kind[p + 1..]).unwrap()),
            ),
            None => (after_kind.trim().to_string(), None),
        };
        out.push((index, etype, kind, json));
    }
    out
}

fn check(version: &str) {
    let expected = expected_entries(version);
    assert!(expected.len() >= 60);
    let mut reader = WalReader::open(&fixtures().join(version).join("data/member/wal")).unwrap();
    let mut i = 0;
    while let Some(rec) = reader.next_record().unwrap() {
        let WalRecord::Entry(e) = rec.decode().unwrap() else {
            continue;
        };
        let (index, etype, kind, json) = &expected[i];
        i += 1;
        assert_eq!(e.index, *index);
        let decoded = decode_entry(&e);
        let want_kind = match &decoded {
            Decoded::Empty => "Empty(leader no-op)",
            Decoded::Internal(_) => "InternalRaftRequest",
            Decoded::V2(_) => "v2 Request",
            Decoded::ConfChange(_) => "ConfChange",
            other => panic!("entry {index}: unexpected {other:?}"),
        };
        assert_eq!(want_kind, kind, "entry {index}");
        let type_name = ["EntryNormal", "EntryConfChange", "EntryConfChangeV2"][e.r#type as usize];
        assert_eq!(type_name, etype);
        assert_ne!(RequestKind::of(&decoded), RequestKind::Unknown);
        let node = render_entry(
            e.r#type,
            e.data.as_deref().unwrap_or_default(),
            &decoded,
            RenderOptions { show_secrets: true },
        );
        let mut fast = Vec::new();
        node.write_json(&mut fast);
        assert_eq!(
            serde_json::from_slice::<Value>(&fast).unwrap(),
            node.to_json(),
            "entry {index}"
        );
        match json {
            Some(j) => assert_eq!(&node.to_json(), j, "entry {index}"),
            None => assert_eq!(node.to_json(), Value::Object(Default::default())),
        }
    }
    assert_eq!(i, expected.len());
}

#[test]
fn decodes_every_etcd_3_4_fixture_entry_like_the_reference() {
    check("etcd-3.4.23");
}

#[test]
fn decodes_every_etcd_3_5_fixture_entry_like_the_reference() {
    check("etcd-3.5.1");
}

#[test]
fn secrets_are_redacted_by_default_in_both_versions() {
    for version in ["etcd-3.4.23", "etcd-3.5.1"] {
        let mut reader =
            WalReader::open(&fixtures().join(version).join("data/member/wal")).unwrap();
        let mut seen = 0;
        while let Some(rec) = reader.next_record().unwrap() {
            let WalRecord::Entry(e) = rec.decode().unwrap() else {
                continue;
            };
            let d = decode_entry(&e);
            let data = e.data.as_deref().unwrap_or_default();
            let text = render_entry(e.r#type, data, &d, RenderOptions::default()).to_text();
            let json = render_entry(e.r#type, data, &d, RenderOptions::default())
                .to_json()
                .to_string();
            for s in [&text, &json] {
                assert!(
                    !s.contains("rootpw") && !s.contains("alicepw"),
                    "{version}: {s}"
                );
                assert!(!s.contains("$2a$"), "{version}: bcrypt hash leaked: {s}");
            }
            if matches!(
                RequestKind::of(&d),
                RequestKind::AuthUserAdd
                    | RequestKind::Authenticate
                    | RequestKind::AuthUserChangePassword
            ) && json.contains("<redacted>")
            {
                seen += 1;
            }
        }
        assert!(seen >= 5, "{version}: only {seen} redactions");
    }
}

proptest::proptest! {
    #[test]
    fn fast_json_strings_round_trip(s in "\\PC*|[\\x00-\\x1f\"\\\\a-z]{0,40}") {
        let mut out = Vec::new();
        etcd_standby_decode::render::write_json_str(&mut out, &s);
        let back: String = serde_json::from_slice(&out).unwrap();
        proptest::prop_assert_eq!(back, s);
    }

    #[test]
    fn fast_json_bytes_match_the_reference_rendering(b in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
        let node = etcd_standby_decode::render::Node::Bytes(bytes::Bytes::from(b.clone()));
        let mut out = Vec::new();
        node.write_json(&mut out);
        proptest::prop_assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), node.to_json());
    }
}
