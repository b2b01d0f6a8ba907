//! etcd 3.4/3.5 backend schema: typed readers for each bucket, live keys and a summary.
//!
//! Readers treat a missing bucket as empty (a partially initialised backend is legal);
//! a key or value that does not have etcd's encoding is a [`BoltError::Schema`].

use std::collections::{BTreeMap, btree_map};
use std::fmt;

use bytes::Bytes;
use etcd_standby_decode::Member;
use etcd_standby_proto::authpb::{Role, User};
use etcd_standby_proto::etcdserverpb::AlarmMember;
use etcd_standby_proto::leasepb::Lease;
use etcd_standby_proto::mvccpb::KeyValue;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::error::{BoltError, Result, escape};
use crate::file::BoltFile;
use crate::tree::{BranchCache, Bucket, Entry, Iter};

/// MVCC history: revision → `mvccpb.KeyValue`.
pub const BUCKET_KEY: &[u8] = b"key";
/// Backend metadata (consistent index, term, confState, compaction revisions).
pub const BUCKET_META: &[u8] = b"meta";
/// Lease id → `leasepb.Lease`.
pub const BUCKET_LEASE: &[u8] = b"lease";
/// Marshaled `AlarmMember` → empty.
pub const BUCKET_ALARM: &[u8] = b"alarm";
/// `authEnabled`, `authRevision`.
pub const BUCKET_AUTH: &[u8] = b"auth";
/// User name → `authpb.User`.
pub const BUCKET_AUTH_USERS: &[u8] = b"authUsers";
/// Role name → `authpb.Role`.
pub const BUCKET_AUTH_ROLES: &[u8] = b"authRoles";
/// Member id (hex) → member JSON.
pub const BUCKET_MEMBERS: &[u8] = b"members";
/// Member id (hex) → `removed`.
pub const BUCKET_MEMBERS_REMOVED: &[u8] = b"members_removed";
/// `clusterVersion`, `downgrade`.
pub const BUCKET_CLUSTER: &[u8] = b"cluster";

/// Cache budget for branch pages during the live-key value pass.
const BRANCH_CACHE_BYTES: usize = 64 << 20;

/// An MVCC revision: `main` is the store revision, `sub` the index within its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    /// Store revision.
    pub main: i64,
    /// Operation index within the revision.
    pub sub: i64,
}

impl Revision {
    /// Decodes a `key` bucket key: 17 bytes (`main` BE, `_`, `sub` BE), plus a trailing
    /// `t` for tombstones. Returns the revision and whether it is a tombstone.
    pub fn from_key(k: &[u8]) -> Option<(Revision, bool)> {
        let tombstone = match k.len() {
            17 => false,
            18 if k[17] == b't' => true,
            _ => return None,
        };
        if k[8] != b'_' {
            return None;
        }
        let main = i64::from_be_bytes(k[0..8].try_into().ok()?);
        let sub = i64::from_be_bytes(k[9..17].try_into().ok()?);
        Some((Revision { main, sub }, tombstone))
    }

    /// The 17-byte `key` bucket key of a (non-tombstone) revision.
    pub fn to_key(self) -> [u8; 17] {
        let mut k = [0u8; 17];
        k[0..8].copy_from_slice(&self.main.to_be_bytes());
        k[8] = b'_';
        k[9..17].copy_from_slice(&self.sub.to_be_bytes());
        k
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({},{})", self.main, self.sub)
    }
}

/// One decoded element of bucket `key`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// Revision from the bucket key.
    pub revision: Revision,
    /// The bucket key ends in `t`: the user key was deleted at this revision.
    pub tombstone: bool,
    /// Stored value (a tombstone only has `key` set).
    pub kv: KeyValue,
}

/// Raft `ConfState` as etcd 3.5 stores it in `meta/confState` (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfState {
    /// Voting member ids.
    #[serde(default)]
    pub voters: Vec<u64>,
    /// Learner ids.
    #[serde(default)]
    pub learners: Vec<u64>,
    /// Outgoing voters (joint consensus; unused by etcd).
    #[serde(default)]
    pub voters_outgoing: Vec<u64>,
    /// Learners after a joint transition (unused by etcd).
    #[serde(default)]
    pub learners_next: Vec<u64>,
    /// Auto-leave joint consensus.
    #[serde(default)]
    pub auto_leave: bool,
}

/// Contents of bucket `meta`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetaBucket {
    /// Index of the last raft entry applied to this backend.
    pub consistent_index: Option<u64>,
    /// Term of that entry (3.5 only).
    pub term: Option<u64>,
    /// Membership as of that entry (3.5 only).
    pub conf_state: Option<ConfState>,
    /// Compaction requested up to this revision.
    pub scheduled_compact_rev: Option<Revision>,
    /// Compaction finished up to this revision.
    pub finished_compact_rev: Option<Revision>,
    /// Keys this crate does not know (e.g. 3.6 `storageVersion`), raw.
    pub other: Vec<(Bytes, Bytes)>,
}

impl MetaBucket {
    /// The compact revision a restarting member takes (the larger of the
    /// scheduled and finished compactions; -1: never compacted).
    pub fn compact_revision(&self) -> i64 {
        [self.scheduled_compact_rev, self.finished_compact_rev]
            .into_iter()
            .flatten()
            .map(|r| r.main)
            .max()
            .unwrap_or(-1)
    }

    /// The revision a member restored from this db starts at, given the
    /// newest revision in bucket `key`: the larger of that and the
    /// compaction (a compacted delete leaves no key behind), at least 1.
    /// `snapshot status` reports only the first, so it can say less.
    pub fn restored_revision(&self, latest: Option<Revision>) -> i64 {
        latest
            .map_or(1, |r| r.main)
            .max(self.compact_revision())
            .max(1)
    }
}

/// Contents of bucket `auth`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthBucket {
    /// `authEnabled` (absent until auth was first enabled).
    pub enabled: Option<bool>,
    /// `authRevision`, bumped by every auth store change.
    pub revision: Option<u64>,
}

/// Downgrade state in `cluster/downgrade` (3.5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downgrade {
    /// Target version of an ongoing downgrade.
    #[serde(rename = "target-version", default)]
    pub target_version: String,
    /// Whether a downgrade is in progress.
    #[serde(default)]
    pub enabled: bool,
}

/// Contents of bucket `cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterBucket {
    /// `clusterVersion`, e.g. `3.5.0`.
    pub version: Option<String>,
    /// `downgrade` (3.5).
    pub downgrade: Option<Downgrade>,
}

/// The current value of one key (the newest revision, if it is not a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveKey {
    /// User key.
    pub key: Bytes,
    /// Current value.
    pub value: Bytes,
    /// First revision of the key's current generation.
    pub create_revision: i64,
    /// Revision of the last modification.
    pub mod_revision: i64,
    /// Number of modifications in the current generation.
    pub version: i64,
    /// Attached lease id, 0 if none.
    pub lease: i64,
}

/// Counts gathered while scanning bucket `key`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Elements in bucket `key` (puts and tombstones).
    pub revisions: u64,
    /// Tombstone elements.
    pub tombstones: u64,
    /// Highest revision present.
    pub latest: Option<Revision>,
    /// Keys whose newest revision is not a tombstone.
    pub live_keys: u64,
}

fn schema_err(db: &BoltFile, bucket: &[u8], key: &[u8], what: impl fmt::Display) -> BoltError {
    BoltError::Schema {
        path: db.path().to_path_buf(),
        bucket: escape(bucket),
        key: escape(key),
        what: what.to_string(),
    }
}

/// Calls `f` for each element of top-level bucket `name` (nothing if it does not exist).
fn for_each(db: &BoltFile, name: &[u8], mut f: impl FnMut(Entry) -> Result<()>) -> Result<()> {
    let Some(bucket) = db.bucket(name)? else {
        return Ok(());
    };
    for entry in db.iter(&bucket) {
        let entry = entry?;
        if entry.is_bucket {
            return Err(schema_err(db, name, &entry.key, "unexpected nested bucket"));
        }
        f(entry)?;
    }
    Ok(())
}

fn be_u64(db: &BoltFile, bucket: &[u8], e: &Entry) -> Result<u64> {
    let raw: [u8; 8] = e.value.as_ref().try_into().map_err(|_| {
        schema_err(
            db,
            bucket,
            &e.key,
            format!("expected 8 bytes, got {}", e.value.len()),
        )
    })?;
    Ok(u64::from_be_bytes(raw))
}

fn proto<M: Message + Default>(db: &BoltFile, bucket: &[u8], key: &[u8], raw: &Bytes) -> Result<M> {
    M::decode(raw.clone()).map_err(|e| schema_err(db, bucket, key, e))
}

fn json<T: serde::de::DeserializeOwned>(db: &BoltFile, bucket: &[u8], e: &Entry) -> Result<T> {
    serde_json::from_slice(&e.value).map_err(|err| schema_err(db, bucket, &e.key, err))
}

fn hex_id(db: &BoltFile, bucket: &[u8], key: &[u8]) -> Result<u64> {
    std::str::from_utf8(key)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| schema_err(db, bucket, key, "key is not a hex member id"))
}

/// Decodes one element of bucket `key`.
pub fn decode_key_entry(db: &BoltFile, entry: &Entry) -> Result<KeyRecord> {
    let (revision, tombstone) = Revision::from_key(&entry.key)
        .ok_or_else(|| schema_err(db, BUCKET_KEY, &entry.key, "not a revision key"))?;
    let kv = proto(db, BUCKET_KEY, &entry.key, &entry.value)?;
    Ok(KeyRecord {
        revision,
        tombstone,
        kv,
    })
}

/// Streams bucket `key` (the MVCC history) in revision order.
pub struct KeyHistory<'a> {
    db: &'a BoltFile,
    iter: Option<Iter<'a>>,
}

impl Iterator for KeyHistory<'_> {
    type Item = Result<KeyRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = self.iter.as_mut()?.next()?;
        let record = entry.and_then(|e| {
            if e.is_bucket {
                return Err(schema_err(
                    self.db,
                    BUCKET_KEY,
                    &e.key,
                    "unexpected nested bucket",
                ));
            }
            decode_key_entry(self.db, &e)
        });
        if record.is_err() {
            self.iter = None;
        }
        Some(record)
    }
}

/// Streams the MVCC history (every revision, tombstones included) in revision order.
pub fn key_history(db: &BoltFile) -> Result<KeyHistory<'_>> {
    let iter = db.bucket(BUCKET_KEY)?.map(|b| db.iter(&b));
    Ok(KeyHistory { db, iter })
}

/// First pass of the live-key computation: newest revision per live key.
fn scan_history(db: &BoltFile) -> Result<(BTreeMap<Vec<u8>, Revision>, HistoryStats)> {
    let mut live = BTreeMap::new();
    let mut stats = HistoryStats::default();
    for record in key_history(db)? {
        let record = record?;
        stats.revisions += 1;
        stats.latest = Some(record.revision);
        // Bucket order is revision order, so a later element always supersedes.
        if record.tombstone {
            stats.tombstones += 1;
            live.remove(record.kv.key.as_ref());
        } else {
            live.insert(record.kv.key.to_vec(), record.revision);
        }
    }
    stats.live_keys = live.len() as u64;
    Ok((live, stats))
}

/// Iterator over the live keys, sorted by key; see [`live_keys`].
pub struct LiveKeys<'a> {
    db: &'a BoltFile,
    bucket: Option<Bucket>,
    pending: btree_map::IntoIter<Vec<u8>, Revision>,
    cache: BranchCache,
    stats: HistoryStats,
    done: bool,
}

impl LiveKeys<'_> {
    /// Counts from the history scan (available before iterating).
    pub fn stats(&self) -> HistoryStats {
        self.stats
    }

    fn fetch(&mut self, key: Vec<u8>, rev: Revision) -> Result<LiveKey> {
        let missing = || schema_err(self.db, BUCKET_KEY, &rev.to_key(), "revision disappeared");
        let bucket = self.bucket.as_ref().ok_or_else(missing)?;
        let entry = self
            .db
            .seek(bucket, &rev.to_key(), &mut self.cache)?
            .ok_or_else(missing)?;
        let record = decode_key_entry(self.db, &entry)?;
        if record.kv.key.as_ref() != key.as_slice() {
            return Err(schema_err(
                self.db,
                BUCKET_KEY,
                &entry.key,
                format!(
                    "holds key {:?}, expected {:?}",
                    escape(&record.kv.key),
                    escape(&key)
                ),
            ));
        }
        let kv = record.kv;
        Ok(LiveKey {
            key: Bytes::from(key),
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        })
    }
}

impl Iterator for LiveKeys<'_> {
    type Item = Result<LiveKey>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (key, rev) = self.pending.next()?;
        let item = self.fetch(key, rev);
        self.done = item.is_err();
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            (0, Some(self.pending.len()))
        }
    }
}

/// The current key space: for each user key the newest revision wins and a tombstone means
/// deleted. Output is **sorted by user key** (bytewise).
///
/// Two passes: the first streams bucket `key` and keeps only `user key → newest revision`
/// (memory ~ number of live keys × key size, never values); the iterator then looks each
/// revision up in the B+tree (branch pages cached) and yields values one at a time.
pub fn live_keys(db: &BoltFile) -> Result<LiveKeys<'_>> {
    let (live, stats) = scan_history(db)?;
    Ok(LiveKeys {
        db,
        bucket: db.bucket(BUCKET_KEY)?,
        pending: live.into_iter(),
        cache: BranchCache::new(BRANCH_CACHE_BYTES),
        stats,
        done: false,
    })
}

/// Reads bucket `meta`.
pub fn read_meta(db: &BoltFile) -> Result<MetaBucket> {
    let b = BUCKET_META;
    let mut out = MetaBucket::default();
    for_each(db, b, |e| {
        let rev = |e: &Entry| {
            Revision::from_key(&e.value)
                .filter(|(_, tombstone)| !tombstone)
                .map(|(r, _)| r)
                .ok_or_else(|| schema_err(db, b, &e.key, "value is not a 17-byte revision"))
        };
        match e.key.as_ref() {
            b"consistent_index" => out.consistent_index = Some(be_u64(db, b, &e)?),
            b"term" => out.term = Some(be_u64(db, b, &e)?),
            b"confState" => out.conf_state = Some(json(db, b, &e)?),
            b"scheduledCompactRev" => out.scheduled_compact_rev = Some(rev(&e)?),
            b"finishedCompactRev" => out.finished_compact_rev = Some(rev(&e)?),
            _ => out.other.push((e.key, e.value)),
        }
        Ok(())
    })?;
    Ok(out)
}

/// Reads bucket `auth` (other keys are ignored).
pub fn read_auth(db: &BoltFile) -> Result<AuthBucket> {
    let b = BUCKET_AUTH;
    let mut out = AuthBucket::default();
    for_each(db, b, |e| {
        match e.key.as_ref() {
            b"authEnabled" => {
                out.enabled = Some(match e.value.as_ref() {
                    [0] => false,
                    [1] => true,
                    _ => return Err(schema_err(db, b, &e.key, "expected one byte 0 or 1")),
                })
            }
            b"authRevision" => out.revision = Some(be_u64(db, b, &e)?),
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

/// Reads bucket `authUsers`, in name order. Passwords are bcrypt hashes: treat as secrets.
pub fn read_users(db: &BoltFile) -> Result<Vec<User>> {
    let mut out = Vec::new();
    for_each(db, BUCKET_AUTH_USERS, |e| {
        out.push(proto(db, BUCKET_AUTH_USERS, &e.key, &e.value)?);
        Ok(())
    })?;
    Ok(out)
}

/// Reads bucket `authRoles`, in name order.
pub fn read_roles(db: &BoltFile) -> Result<Vec<Role>> {
    let mut out = Vec::new();
    for_each(db, BUCKET_AUTH_ROLES, |e| {
        out.push(proto(db, BUCKET_AUTH_ROLES, &e.key, &e.value)?);
        Ok(())
    })?;
    Ok(out)
}

/// Reads bucket `lease`, in key order (lease id as big-endian, i.e. unsigned id order).
pub fn read_leases(db: &BoltFile) -> Result<Vec<Lease>> {
    let b = BUCKET_LEASE;
    let mut out = Vec::new();
    for_each(db, b, |e| {
        let id: [u8; 8] = e.key.as_ref().try_into().map_err(|_| {
            schema_err(
                db,
                b,
                &e.key,
                format!("expected an 8-byte key, got {}", e.key.len()),
            )
        })?;
        let lease: Lease = proto(db, b, &e.key, &e.value)?;
        if lease.id != i64::from_be_bytes(id) {
            return Err(schema_err(
                db,
                b,
                &e.key,
                format!("value has ID {:016x}", lease.id),
            ));
        }
        out.push(lease);
        Ok(())
    })?;
    Ok(out)
}

/// Reads bucket `members`, in key order (etcd's member JSON; the key must
/// match the value's id).
pub fn read_members(db: &BoltFile) -> Result<Vec<Member>> {
    let b = BUCKET_MEMBERS;
    let mut out = Vec::new();
    for_each(db, b, |e| {
        let id = hex_id(db, b, &e.key)?;
        let member: Member = json(db, b, &e)?;
        if member.id != id {
            return Err(schema_err(
                db,
                b,
                &e.key,
                format!("value has id {:x}", member.id),
            ));
        }
        out.push(member);
        Ok(())
    })?;
    Ok(out)
}

/// Reads bucket `members_removed`: ids of removed members, in key order.
pub fn read_removed_members(db: &BoltFile) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for_each(db, BUCKET_MEMBERS_REMOVED, |e| {
        out.push(hex_id(db, BUCKET_MEMBERS_REMOVED, &e.key)?);
        Ok(())
    })?;
    Ok(out)
}

/// Reads bucket `cluster` (other keys are ignored).
pub fn read_cluster(db: &BoltFile) -> Result<ClusterBucket> {
    let b = BUCKET_CLUSTER;
    let mut out = ClusterBucket::default();
    for_each(db, b, |e| {
        match e.key.as_ref() {
            b"clusterVersion" => {
                let v =
                    std::str::from_utf8(&e.value).map_err(|err| schema_err(db, b, &e.key, err))?;
                out.version = Some(v.to_owned());
            }
            b"downgrade" => out.downgrade = Some(json(db, b, &e)?),
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

/// Reads bucket `alarm`: the active alarms (the key is the marshaled `AlarmMember`).
pub fn read_alarms(db: &BoltFile) -> Result<Vec<AlarmMember>> {
    let mut out = Vec::new();
    for_each(db, BUCKET_ALARM, |e| {
        out.push(proto(db, BUCKET_ALARM, &e.key, &e.key)?);
        Ok(())
    })?;
    Ok(out)
}

/// Headline facts about an etcd backend, for `status`-style output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Top-level buckets with their element counts, in name order.
    pub buckets: Vec<(String, u64)>,
    /// `meta` bucket contents.
    pub meta: MetaBucket,
    /// `auth` bucket contents.
    pub auth: AuthBucket,
    /// MVCC history counts (revisions, tombstones, latest revision, live keys).
    pub history: HistoryStats,
    /// Leases.
    pub leases: u64,
    /// Auth users.
    pub users: u64,
    /// Auth roles.
    pub roles: u64,
    /// Members in the `members` bucket (stale by design in 3.5).
    pub members: u64,
    /// Removed member ids.
    pub removed_members: u64,
    /// Active alarms.
    pub alarms: u64,
    /// `cluster/clusterVersion`.
    pub cluster_version: Option<String>,
}

/// Computes a [`Summary`]: decodes every bucket once (bucket `key` twice: counting and the
/// live-key pass, which holds only keys in memory).
pub fn summarize(db: &BoltFile) -> Result<Summary> {
    let mut buckets = Vec::new();
    for bucket in db.buckets()? {
        let mut n = 0u64;
        for entry in db.iter(&bucket) {
            entry?;
            n += 1;
        }
        buckets.push((String::from_utf8_lossy(&bucket.name).into_owned(), n));
    }
    let (_, history) = scan_history(db)?;
    Ok(Summary {
        buckets,
        meta: read_meta(db)?,
        auth: read_auth(db)?,
        history,
        leases: read_leases(db)?.len() as u64,
        users: read_users(db)?.len() as u64,
        roles: read_roles(db)?.len() as u64,
        members: read_members(db)?.len() as u64,
        removed_members: read_removed_members(db)?.len() as u64,
        alarms: read_alarms(db)?.len() as u64,
        cluster_version: read_cluster(db)?.version,
    })
}
