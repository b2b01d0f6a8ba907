//! Promotion on the standby: the reserved keys, the one txn that turns the
//! standby into a primary, and the lease hand-over.
//!
//! Every replay txn compares the epoch key (`<reserved>epoch`) with the
//! replicator's epoch. [`promote`] bumps it in one txn that also creates
//! `<reserved>promoted` (the audit record) and `<reserved>audit/<id>`, and
//! only if nothing moved since the caller looked: the epoch, the checkpoint
//! and the absence of a promotion are all compared. So:
//! * a replicator still writing (a stray one, or ours after a restart)
//!   fails its next txn with [`SinkError::Fenced`];
//! * a replicator that connects later finds `<reserved>promoted` and gets
//!   [`SinkError::Promoted`] ([`Sink::connect`](crate::Sink::connect));
//! * two promotes racing: one txn wins, the other gets
//!   [`SinkError::PromoteConflict`] and changes nothing.

use bytes::Bytes;
use etcd_standby_client::{Client, pb};

use crate::error::{Result, SinkError, show_bytes, show_key};
use crate::keymap::KeyMap;
use crate::sink::Checkpoint;

/// The replicator's own keys on the standby, under the reserved prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedKeys {
    /// `<reserved>epoch`: the fencing epoch (decimal).
    pub epoch: Bytes,
    /// `<reserved>promoted`: present once the standby was promoted (the audit record).
    pub promoted: Bytes,
    /// `<reserved>audit/`: one audit record per promotion.
    pub audit_prefix: Bytes,
    /// `<reserved>checkpoint/<source cluster id>`: the replay checkpoint.
    pub checkpoint: Bytes,
    /// `<reserved>ha/<source cluster id>/lock`: the HA lock (see [`crate::ha`]).
    pub ha_lock: Bytes,
    /// `<reserved>ha/<source cluster id>/member`: the learner identity HA instances share.
    pub ha_member: Bytes,
    /// `<reserved>ha/<source cluster id>/hold`: a promotion under way; no
    /// instance may take the HA lock while it exists.
    pub ha_hold: Bytes,
    /// The source cluster the checkpoint belongs to.
    pub source_cluster_id: u64,
}

impl ReservedKeys {
    /// The keys for `source_cluster_id` under `keys`' reserved prefix.
    pub fn new(keys: &KeyMap, source_cluster_id: u64) -> ReservedKeys {
        let reserved = keys.reserved();
        let with = |suffix: &str| {
            let mut k = reserved.to_vec();
            k.extend_from_slice(suffix.as_bytes());
            Bytes::from(k)
        };
        ReservedKeys {
            epoch: with("epoch"),
            promoted: with("promoted"),
            audit_prefix: with("audit/"),
            checkpoint: with(&format!("checkpoint/{source_cluster_id:016x}")),
            ha_lock: with(&format!("ha/{source_cluster_id:016x}/lock")),
            ha_member: with(&format!("ha/{source_cluster_id:016x}/member")),
            ha_hold: with(&format!("ha/{source_cluster_id:016x}/hold")),
            source_cluster_id,
        }
    }
}

/// What the standby holds under the reserved prefix, read at one revision.
#[derive(Debug, Clone, Default)]
pub struct StandbyState {
    /// The fencing epoch (None: never replicated to).
    pub epoch: Option<u64>,
    /// The replay checkpoint of our source cluster.
    pub checkpoint: Option<Checkpoint>,
    /// The raw checkpoint value (compared by [`promote`]).
    pub checkpoint_raw: Option<Bytes>,
    /// The promotion record, when the standby was promoted.
    pub promoted: Option<Bytes>,
    /// The revision the three keys were read at.
    pub revision: i64,
}

pub(crate) fn range_op(key: &Bytes) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
            key: key.clone(),
            ..Default::default()
        })),
    }
}

pub(crate) fn put_op(key: Bytes, value: Bytes) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

/// The value of the single-key range at position `i` of a txn's responses.
pub(crate) fn value_at(resp: &pb::TxnResponse, i: usize) -> Option<Bytes> {
    match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(pb::response_op::Response::ResponseRange(rr)) => {
            rr.kvs.first().map(|kv| kv.value.clone())
        }
        _ => None,
    }
}

/// Compare: `key` holds exactly `v`.
pub(crate) fn value_eq(key: &Bytes, v: &Bytes) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Value as i32,
        key: key.clone(),
        target_union: Some(pb::compare::TargetUnion::Value(v.clone())),
        ..Default::default()
    }
}

/// Compare: `key` does not exist.
pub(crate) fn absent(key: &Bytes) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Create as i32,
        key: key.clone(),
        target_union: Some(pb::compare::TargetUnion::CreateRevision(0)),
        ..Default::default()
    }
}

/// Parses the decimal epoch value.
pub(crate) fn parse_epoch(key: &[u8], v: &[u8]) -> Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| SinkError::BadReservedKey {
            key: show_key(key),
            message: format!("epoch is not a number: {}", show_bytes(v, 32)),
        })
}

fn decode_state(keys: &ReservedKeys, resp: &pb::TxnResponse) -> Result<StandbyState> {
    let epoch = match value_at(resp, 0) {
        Some(v) => Some(parse_epoch(&keys.epoch, &v)?),
        None => None,
    };
    let checkpoint_raw = value_at(resp, 1);
    let checkpoint = Checkpoint::decode_stored(
        &keys.checkpoint,
        keys.source_cluster_id,
        checkpoint_raw.as_ref(),
    )?;
    Ok(StandbyState {
        epoch,
        checkpoint,
        checkpoint_raw,
        promoted: value_at(resp, 2),
        revision: resp.header.as_ref().map_or(0, |h| h.revision),
    })
}

/// Reads the epoch, checkpoint and promotion record in one txn (one revision).
pub async fn read_state(client: &Client, keys: &ReservedKeys) -> Result<StandbyState> {
    let txn = pb::TxnRequest {
        compare: Vec::new(),
        success: vec![
            range_op(&keys.epoch),
            range_op(&keys.checkpoint),
            range_op(&keys.promoted),
        ],
        failure: Vec::new(),
    };
    let resp = client
        .txn(txn)
        .await
        .map_err(|e| SinkError::client("read the standby's reserved keys", e))?;
    decode_state(keys, &resp)
}

/// What [`promote`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The new epoch (every older replicator is fenced).
    pub epoch: u64,
    /// The standby's revision after the txn.
    pub revision: i64,
    /// The audit record's key.
    pub audit_key: Bytes,
}

/// The one promotion txn: if the epoch is still `expect.epoch`, the
/// checkpoint is still `expect.checkpoint_raw` and no promotion exists,
/// bump the epoch and write `record` as `<reserved>promoted` and
/// `<reserved>audit/<audit_id>`. Otherwise nothing is written and the error
/// says what moved.
pub async fn promote(
    client: &Client,
    keys: &ReservedKeys,
    expect: &StandbyState,
    record: Bytes,
    audit_id: &str,
) -> Result<Promotion> {
    let epoch = expect.epoch.unwrap_or(0);
    let mut compare = vec![absent(&keys.promoted)];
    compare.push(match expect.epoch {
        Some(e) => value_eq(&keys.epoch, &Bytes::from(e.to_string())),
        None => absent(&keys.epoch),
    });
    compare.push(match &expect.checkpoint_raw {
        Some(v) => value_eq(&keys.checkpoint, v),
        None => absent(&keys.checkpoint),
    });
    let mut audit_key = keys.audit_prefix.to_vec();
    audit_key.extend_from_slice(audit_id.as_bytes());
    let audit_key = Bytes::from(audit_key);
    let new_epoch = epoch + 1;
    let txn = pb::TxnRequest {
        compare,
        success: vec![
            put_op(keys.epoch.clone(), Bytes::from(new_epoch.to_string())),
            put_op(keys.promoted.clone(), record.clone()),
            put_op(audit_key.clone(), record),
        ],
        failure: vec![
            range_op(&keys.epoch),
            range_op(&keys.checkpoint),
            range_op(&keys.promoted),
        ],
    };
    let resp = client
        .txn(txn)
        .await
        .map_err(|e| SinkError::client("the promotion txn on the standby", e))?;
    if !resp.succeeded {
        let now = decode_state(keys, &resp)?;
        let detail = if now.promoted.is_some() {
            "the standby was promoted meanwhile (another promote won)".to_owned()
        } else if now.epoch != expect.epoch {
            format!(
                "the fencing epoch moved from {:?} to {:?} (another replicator or promote)",
                expect.epoch, now.epoch
            )
        } else {
            format!(
                "the checkpoint moved from {:?} to {:?}: a replicator is still writing to the standby",
                expect.checkpoint.map(|c| c.index),
                now.checkpoint.map(|c| c.index)
            )
        };
        return Err(SinkError::PromoteConflict { detail });
    }
    Ok(Promotion {
        epoch: new_epoch,
        revision: resp.header.map_or(0, |h| h.revision),
        audit_key,
    })
}

/// What [`refresh_leases`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseRefresh {
    /// Leases refreshed to their full TTL: (id, ttl seconds).
    pub refreshed: Vec<(i64, i64)>,
    /// Leases that were gone by the time they were refreshed.
    pub gone: Vec<i64>,
}

/// The lease hand-over: refreshes every lease on the standby once, so each
/// starts a full TTL on the new primary (clients then have that long to
/// reconnect and keep their leases alive themselves).
pub async fn refresh_leases(client: &Client) -> Result<LeaseRefresh> {
    let leases = client
        .lease_leases()
        .await
        .map_err(|e| SinkError::client("list the standby's leases", e))?;
    let mut out = LeaseRefresh::default();
    if leases.leases.is_empty() {
        return Ok(out);
    }
    let (tx, mut rx) = client
        .lease_keep_alive()
        .await
        .map_err(|e| SinkError::client("open a keep-alive stream on the standby", e))?;
    for l in &leases.leases {
        tx.keep_alive(l.id)
            .await
            .map_err(|e| SinkError::client("send a lease keep-alive", e))?;
        let answer = rx
            .message()
            .await
            .map_err(|e| SinkError::client("read a lease keep-alive answer", e))?;
        match answer {
            Some(a) if a.ttl > 0 => out.refreshed.push((l.id, a.ttl)),
            Some(_) => out.gone.push(l.id),
            None => {
                return Err(SinkError::Config(
                    "the standby closed the keep-alive stream during the lease hand-over".into(),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_keys_live_under_the_reserved_prefix() {
        let k = ReservedKeys::new(&KeyMap::default(), 0xabc);
        assert_eq!(&k.epoch[..], b"__etcd_standby__/epoch");
        assert_eq!(&k.promoted[..], b"__etcd_standby__/promoted");
        assert_eq!(&k.audit_prefix[..], b"__etcd_standby__/audit/");
        assert_eq!(
            &k.checkpoint[..],
            b"__etcd_standby__/checkpoint/0000000000000abc"
        );
        let m = KeyMap::default();
        for key in [&k.epoch, &k.promoted, &k.checkpoint] {
            assert!(m.is_reserved(key));
        }
    }

    #[test]
    fn a_bad_epoch_value_is_an_error_naming_the_key() {
        let err = parse_epoch(b"__etcd_standby__/epoch", b"two").err();
        assert!(
            err.is_some_and(|e| e.to_string().contains("__etcd_standby__/epoch")),
            "expected a BadReservedKey"
        );
    }
}
