//! Membership inside a raft snapshot's `data`: etcd's v2 store JSON.
//!
//! etcd 3.4 and 3.5 put the v2 store (Go `encoding/json` of the store) into
//! `raftpb.Snapshot.data`, and the authoritative membership lives there:
//! `/0/members/<hex>/raftAttributes` (`{"peerURLs":[..],"isLearner":true}`),
//! `/0/members/<hex>/attributes` (`{"name":..,"clientURLs":[..]}`) and
//! `/0/removed_members/<hex>`. The learner's own `.snap` files use the same
//! layout (only those paths), so one reader serves both.

use etcd_standby_decode::Member;
use serde_json::{Map, Value, json};

use crate::membership::Membership;

/// Why a v2 store document could not be read.
#[derive(Debug, thiserror::Error)]
#[error("v2 store JSON: {0}")]
pub struct V2StoreError(pub String);

fn children<'a>(node: &'a Value, name: &str) -> Option<&'a Value> {
    node.get("Children")?.get(name)
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// Reads the membership from a v2 store JSON document.
pub fn membership_from_v2_store(data: &[u8]) -> Result<Membership, V2StoreError> {
    let doc: Value = serde_json::from_slice(data).map_err(|e| V2StoreError(e.to_string()))?;
    let root = doc
        .get("Root")
        .ok_or_else(|| V2StoreError("no Root node".into()))?;
    let mut out = Membership::default();
    let Some(zero) = children(root, "0") else {
        return Ok(out);
    };
    if let Some(Value::Object(members)) = children(zero, "members").and_then(|m| m.get("Children"))
    {
        for (name, node) in members {
            let id = parse_hex(name)
                .ok_or_else(|| V2StoreError(format!("member key {name:?} is not hex")))?;
            let raft: Value = match children(node, "raftAttributes")
                .and_then(|n| n.get("Value"))
                .and_then(Value::as_str)
            {
                Some(s) => serde_json::from_str(s)
                    .map_err(|e| V2StoreError(format!("member {name} raftAttributes: {e}")))?,
                None => continue,
            };
            let attrs: Value = children(node, "attributes")
                .and_then(|n| n.get("Value"))
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(Value::Null);
            let strings = |v: &Value, k: &str| -> Vec<String> {
                v.get(k)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            out.members.insert(
                id,
                Member {
                    id,
                    peer_urls: strings(&raft, "peerURLs"),
                    name: attrs
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    client_urls: strings(&attrs, "clientURLs"),
                    is_learner: raft
                        .get("isLearner")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                },
            );
        }
    }
    if let Some(Value::Object(removed)) =
        children(zero, "removed_members").and_then(|m| m.get("Children"))
    {
        for name in removed.keys() {
            let id = parse_hex(name)
                .ok_or_else(|| V2StoreError(format!("removed member key {name:?} is not hex")))?;
            out.removed.insert(id);
        }
    }
    Ok(out)
}

fn leaf(path: String, value: String) -> Value {
    json!({"Path": path, "CreatedIndex": 0, "ModifiedIndex": 0, "ExpireTime": "0001-01-01T00:00:00Z", "Value": value, "Children": null})
}

fn dir(path: String, children: Map<String, Value>) -> Value {
    json!({"Path": path, "CreatedIndex": 0, "ModifiedIndex": 0, "ExpireTime": "0001-01-01T00:00:00Z", "Value": "", "Children": children})
}

/// Writes a membership as a minimal v2 store document (only the `/0/members`
/// and `/0/removed_members` trees), readable by [`membership_from_v2_store`].
pub fn membership_to_v2_store(m: &Membership) -> Vec<u8> {
    let mut members = Map::new();
    for mi in m.members.values() {
        let hex = format!("{:x}", mi.id);
        let mut raft = json!({"peerURLs": mi.peer_urls});
        if mi.is_learner {
            raft["isLearner"] = Value::Bool(true);
        }
        let mut kids = Map::new();
        kids.insert(
            "raftAttributes".into(),
            leaf(format!("/0/members/{hex}/raftAttributes"), raft.to_string()),
        );
        if !mi.name.is_empty() || !mi.client_urls.is_empty() {
            let attrs = json!({"name": mi.name, "clientURLs": mi.client_urls});
            kids.insert(
                "attributes".into(),
                leaf(format!("/0/members/{hex}/attributes"), attrs.to_string()),
            );
        }
        members.insert(hex.clone(), dir(format!("/0/members/{hex}"), kids));
    }
    let mut removed = Map::new();
    for id in &m.removed {
        let hex = format!("{id:x}");
        removed.insert(
            hex.clone(),
            leaf(format!("/0/removed_members/{hex}"), String::new()),
        );
    }
    let mut zero = Map::new();
    zero.insert("members".into(), dir("/0/members".into(), members));
    zero.insert(
        "removed_members".into(),
        dir("/0/removed_members".into(), removed),
    );
    let mut root = Map::new();
    root.insert("0".into(), dir("/0".into(), zero));
    let doc = json!({"Root": dir("/".into(), root), "CurrentVersion": 2});
    doc.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn reads_members_and_removed_members_from_etcd_shaped_json() {
        let doc = r#"{"Root":{"Path":"/","Children":{"0":{"Path":"/0","Children":{
          "members":{"Path":"/0/members","Children":{
            "8e9e05c52164694d":{"Path":"/0/members/8e9e05c52164694d","Children":{
              "raftAttributes":{"Path":"/0/members/8e9e05c52164694d/raftAttributes","Value":"{\"peerURLs\":[\"http://127.0.0.1:2380\"]}","Children":null},
              "attributes":{"Path":"/0/members/8e9e05c52164694d/attributes","Value":"{\"name\":\"n1\",\"clientURLs\":[\"http://127.0.0.1:2379\"]}","Children":null}}},
            "6ad828d59d630":{"Path":"/0/members/6ad828d59d630","Children":{
              "raftAttributes":{"Path":"/0/members/6ad828d59d630/raftAttributes","Value":"{\"peerURLs\":[\"http://127.0.0.1:2480\"],\"isLearner\":true}","Children":null}}}}},
          "removed_members":{"Path":"/0/removed_members","Children":{"abc":{"Path":"/0/removed_members/abc","Value":"","Children":null}}},
          "version":{"Path":"/0/version","Value":"3.5.0","Children":null}}}}},"CurrentVersion":2}"#;
        let m = membership_from_v2_store(doc.as_bytes()).unwrap();
        let leader = &m.members[&0x8e9e05c52164694d];
        assert_eq!(leader.name, "n1");
        assert!(!leader.is_learner);
        assert!(m.members[&0x6ad828d59d630].is_learner);
        assert!(m.removed.contains(&0xabc));
        assert_eq!(m.conf_state().voters, vec![0x8e9e05c52164694d]);
        assert_eq!(m.conf_state().learners, vec![0x6ad828d59d630]);
    }

    #[test]
    fn our_own_document_round_trips() {
        let mut m = Membership::default();
        m.members.insert(
            1,
            Member {
                id: 1,
                peer_urls: vec!["http://a".into()],
                name: "a".into(),
                client_urls: vec!["http://c".into()],
                is_learner: false,
            },
        );
        m.members.insert(
            0xfeed,
            Member {
                id: 0xfeed,
                peer_urls: vec!["http://b".into()],
                name: String::new(),
                client_urls: vec![],
                is_learner: true,
            },
        );
        m.removed.insert(7);
        assert_eq!(
            membership_from_v2_store(&membership_to_v2_store(&m)).unwrap(),
            m
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(membership_from_v2_store(b"not json").is_err());
        assert!(membership_from_v2_store(b"{}").is_err());
        let bad = br#"{"Root":{"Children":{"0":{"Children":{"members":{"Children":{"zz":{"Children":{"raftAttributes":{"Value":"{}"}}}}}}}}}}"#;
        assert!(membership_from_v2_store(bad).is_err());
    }
}
