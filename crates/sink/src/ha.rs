//! The HA lock and the shared learner identity, both on the standby.
//!
//! Several `etcd-standby run --ha` instances may serve one source cluster;
//! exactly one is *active* (runs the learner and writes to the standby),
//! the others wait. The active one holds `<reserved>ha/<cluster>/lock`: a
//! key attached to a standby lease it keeps alive. Its value (the
//! [`LockHolder`] JSON, which names the lease, so no two acquisitions share
//! a value) is compared in **every** replay txn next to the fencing epoch,
//! so an instance that lost the lock cannot write a single key even if it
//! does not know yet. Auth RPCs, which cannot join a txn, are preceded by a
//! fence check txn ([`crate::Sink`]), and the holder stops by itself before
//! its lease could have expired (the daemon's self-fencing deadline).
//!
//! `<reserved>ha/<cluster>/member` ([`MemberRecord`]) keeps the learner's
//! member ID on the standby, so an instance that takes over with an empty
//! data dir re-uses the same member (never a second learner).

use bytes::Bytes;
use etcd_standby_client::{Client, pb};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SinkError, show_bytes, show_key};
use crate::promotion::{ReservedKeys, absent, put_op, range_op, value_at, value_eq};

/// Who holds the HA lock: the lock key's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The instance name (`--ha-instance`, default the host name).
    pub instance: String,
    /// Host name.
    pub host: String,
    /// Process ID.
    pub pid: u32,
    /// The peer URL this instance advertises to the primary.
    pub peer_url: String,
    /// The standby lease the key is attached to (hex).
    pub lease: String,
    /// When it was acquired (RFC 3339).
    pub acquired_at: String,
}

impl LockHolder {
    fn parse(key: &[u8], v: &[u8]) -> Result<LockHolder> {
        serde_json::from_slice(v).map_err(|e| SinkError::BadReservedKey {
            key: show_key(key),
            message: format!("not an HA lock record ({e}): {}", show_bytes(v, 128)),
        })
    }
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "instance {:?} on {} (pid {}, peer URL {}, since {})",
            self.instance, self.host, self.pid, self.peer_url, self.acquired_at
        )
    }
}

/// The compare every write txn of the active instance carries: the lock
/// key still holds exactly our value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockFence {
    /// The lock key.
    pub key: Bytes,
    /// Our value of it.
    pub value: Bytes,
}

impl LockFence {
    pub(crate) fn compare(&self) -> pb::Compare {
        value_eq(&self.key, &self.value)
    }
}

/// The lock, held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    /// What replay txns compare.
    pub fence: LockFence,
    /// The standby lease to keep alive (the key goes with it).
    pub lease: i64,
    /// Our record.
    pub holder: LockHolder,
}

/// The outcome of one [`try_acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// We hold it now.
    Acquired(HeldLock),
    /// Someone else does.
    HeldBy(LockHolder),
    /// A promotion holds the standby ([`hold`]): the record it left.
    OnHold(String),
}

/// One attempt at the lock: when the key is absent (and the standby was
/// neither promoted nor is being promoted), grant a lease of `ttl_secs` and
/// create the key attached to it, in one txn that compares all three
/// absences. A promoted standby is [`SinkError::Promoted`]: no instance may
/// become active on it.
pub async fn try_acquire(
    client: &Client,
    keys: &ReservedKeys,
    mut me: LockHolder,
    ttl_secs: i64,
) -> Result<Acquire> {
    if let Some(h) = holder(client, keys).await? {
        return Ok(Acquire::HeldBy(h));
    }
    let lease = client
        .lease_grant(0, ttl_secs)
        .await
        .map_err(|e| SinkError::client("grant the HA lock's lease", e))?
        .id;
    me.lease = format!("{lease:x}");
    let value = Bytes::from(serde_json::to_vec(&me).unwrap_or_default());
    let txn = pb::TxnRequest {
        compare: vec![
            absent(&keys.ha_lock),
            absent(&keys.promoted),
            absent(&keys.ha_hold),
        ],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: keys.ha_lock.clone(),
                value: value.clone(),
                lease,
                ..Default::default()
            })),
        }],
        failure: vec![
            range_op(&keys.ha_lock),
            range_op(&keys.promoted),
            range_op(&keys.ha_hold),
        ],
    };
    let resp = match client.txn(txn).await {
        Ok(r) => r,
        Err(e) => {
            let _ = client.lease_revoke(lease).await;
            return Err(SinkError::client("the HA lock txn", e));
        }
    };
    if resp.succeeded {
        return Ok(Acquire::Acquired(HeldLock {
            fence: LockFence {
                key: keys.ha_lock.clone(),
                value,
            },
            lease,
            holder: me,
        }));
    }
    let _ = client.lease_revoke(lease).await;
    if let Some(record) = value_at(&resp, 1) {
        return Err(SinkError::Promoted {
            key: show_key(&keys.promoted),
            record: show_bytes(&record, 512),
        });
    }
    if let Some(record) = value_at(&resp, 2) {
        return Ok(Acquire::OnHold(show_bytes(&record, 512)));
    }
    match value_at(&resp, 0) {
        Some(v) => Ok(Acquire::HeldBy(LockHolder::parse(&keys.ha_lock, &v)?)),
        // Taken and released between our two calls: say who we do not know.
        None => Ok(Acquire::HeldBy(LockHolder {
            instance: "?".into(),
            host: "?".into(),
            pid: 0,
            peer_url: String::new(),
            lease: String::new(),
            acquired_at: String::new(),
        })),
    }
}

/// Who holds the lock now, if anyone.
pub async fn holder(client: &Client, keys: &ReservedKeys) -> Result<Option<LockHolder>> {
    let look = client
        .range(pb::RangeRequest {
            key: keys.ha_lock.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| SinkError::client("read the HA lock", e))?;
    look.kvs
        .first()
        .map(|kv| LockHolder::parse(&keys.ha_lock, &kv.value))
        .transpose()
}

/// Gives the lock up (revokes its lease, which deletes the key), so a
/// waiting instance takes over at once instead of after the TTL.
pub async fn release(client: &Client, held: &HeldLock) -> Result<()> {
    match client.lease_revoke(held.lease).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(SinkError::client("revoke the HA lock's lease", e)),
    }
}

/// Marks a promotion under way (`record`: who, since when), so no passive
/// instance takes the lock the stopped active one released. Kept until
/// [`unhold`]; after the promotion `promoted` refuses them for good.
pub async fn hold(client: &Client, keys: &ReservedKeys, record: Bytes) -> Result<()> {
    client
        .put(pb::PutRequest {
            key: keys.ha_hold.clone(),
            value: record,
            ..Default::default()
        })
        .await
        .map_err(|e| SinkError::client("write the promotion hold", e))?;
    Ok(())
}

/// Removes the promotion hold (the promotion finished or gave up).
pub async fn unhold(client: &Client, keys: &ReservedKeys) -> Result<()> {
    client
        .delete_range(pb::DeleteRangeRequest {
            key: keys.ha_hold.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| SinkError::client("remove the promotion hold", e))?;
    Ok(())
}

/// The learner identity all HA instances of one source share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Member ID (16 hex digits).
    pub member_id: String,
    /// Source cluster ID (16 hex digits).
    pub cluster_id: String,
    /// The peer URLs last registered for it on the primary.
    pub peer_urls: Vec<String>,
    /// The instance that wrote this record.
    pub instance: String,
}

impl MemberRecord {
    /// The record for `member_id` of `cluster_id`.
    pub fn new(member_id: u64, cluster_id: u64, peer_urls: Vec<String>, instance: &str) -> Self {
        MemberRecord {
            member_id: format!("{member_id:016x}"),
            cluster_id: format!("{cluster_id:016x}"),
            peer_urls,
            instance: instance.to_owned(),
        }
    }

    /// The member ID.
    pub fn member(&self) -> Option<u64> {
        u64::from_str_radix(&self.member_id, 16).ok()
    }

    /// The cluster ID.
    pub fn cluster(&self) -> Option<u64> {
        u64::from_str_radix(&self.cluster_id, 16).ok()
    }
}

/// Reads the shared learner identity (None: no instance ever joined).
pub async fn read_member(client: &Client, keys: &ReservedKeys) -> Result<Option<MemberRecord>> {
    let got = client
        .range(pb::RangeRequest {
            key: keys.ha_member.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| SinkError::client("read the HA member record", e))?;
    let Some(kv) = got.kvs.first() else {
        return Ok(None);
    };
    let rec: MemberRecord =
        serde_json::from_slice(&kv.value).map_err(|e| SinkError::BadReservedKey {
            key: show_key(&keys.ha_member),
            message: format!("not a member record ({e}): {}", show_bytes(&kv.value, 128)),
        })?;
    match (rec.member(), rec.cluster()) {
        (Some(_), Some(c)) if c == keys.source_cluster_id => Ok(Some(rec)),
        _ => Err(SinkError::BadReservedKey {
            key: show_key(&keys.ha_member),
            message: format!(
                "member record {:?} / cluster {:?} does not belong to cluster {:016x}",
                rec.member_id, rec.cluster_id, keys.source_cluster_id
            ),
        }),
    }
}

/// Writes the shared learner identity, only while `fence` still holds.
pub async fn write_member(
    client: &Client,
    keys: &ReservedKeys,
    fence: &LockFence,
    rec: &MemberRecord,
) -> Result<()> {
    let txn = pb::TxnRequest {
        compare: vec![fence.compare()],
        success: vec![put_op(
            keys.ha_member.clone(),
            Bytes::from(serde_json::to_vec(rec).unwrap_or_default()),
        )],
        failure: vec![range_op(&keys.ha_lock)],
    };
    let resp = client
        .txn(txn)
        .await
        .map_err(|e| SinkError::client("write the HA member record", e))?;
    if !resp.succeeded {
        return Err(SinkError::LostLock {
            key: show_key(&keys.ha_lock),
            found: show_bytes(&value_at(&resp, 0).unwrap_or_default(), 256),
        });
    }
    Ok(())
}
