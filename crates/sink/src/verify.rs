//! `etcd-standby verify`: compare the primary and the standby.
//!
//! Reads both clusters (keys streamed in key order, a page at a time on
//! each side, so memory does not grow with the key count) and reports
//! every difference in keys and
//! values, lease IDs / TTLs / attachments, users and their roles, roles and
//! their permissions (with the destination prefix), and the auth-enabled
//! flag. Keys under the reserved prefix and keys outside the
//! [`KeyMap`] are ignored. Both sides are read live, one
//! after the other: on a moving primary, rerun to tell lag from divergence.
//! Password hashes cannot be read through the API and are not compared.
//!
//! At a [`ReadPoint`] only keys are compared; with
//! [`VerifyOptions::compare_revisions`] (for revision-preserving standbys,
//! whose revision sequence is the primary's) each key's create revision,
//! mod revision and version are compared too.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use etcd_standby_client::{Client, ClientError, EtcdError};
use serde::Serialize;

use crate::error::{Result, SinkError, show_bytes, show_key};
use crate::keymap::KeyMap;

/// Values are shown up to this many bytes.
const VALUE_SHOWN: usize = 64;
/// Keys per page when reading.
const PAGE: i64 = 1000;

/// What differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// A key on the primary is missing on the standby.
    KeyMissing,
    /// A key on the standby is not on the primary.
    KeyExtra,
    /// A key's value differs.
    ValueDiffers,
    /// A key is attached to a different lease.
    KeyLeaseDiffers,
    /// A key's create revision, mod revision or version differs (only
    /// compared with [`VerifyOptions::compare_revisions`] at a
    /// [`ReadPoint`]); `source` / `standby` read
    /// `create=<rev> mod=<rev> version=<n>`.
    KeyRevisionsDiffer,
    /// A lease on the primary is missing on the standby.
    LeaseMissing,
    /// A lease on the standby is not on the primary.
    LeaseExtra,
    /// A lease's granted TTL differs, or the standby's remaining TTL is
    /// outside `(0, granted TTL]`.
    LeaseTtlDiffers,
    /// A user on the primary is missing on the standby.
    UserMissing,
    /// A user on the standby is not on the primary.
    UserExtra,
    /// A user's roles differ.
    UserRolesDiffer,
    /// A role on the primary is missing on the standby.
    RoleMissing,
    /// A role on the standby is not on the primary.
    RoleExtra,
    /// A role's permissions differ (after mapping keys).
    RolePermissionsDiffer,
    /// Auth is enabled on one side only.
    AuthEnabledDiffers,
}

/// One difference. Keys and values are escaped and truncated; passwords are
/// never part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// What differs.
    pub kind: DifferenceKind,
    /// The source key (escaped), for key differences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Lease ID (hex), user or role name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The primary's value (escaped, truncated), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The standby's value (escaped, truncated), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standby: Option<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        write!(f, "{kind}")?;
        if let Some(k) = &self.key {
            write!(f, " key={k}")?;
        }
        if let Some(i) = &self.id {
            write!(f, " id={i}")?;
        }
        if let Some(s) = &self.source {
            write!(f, " source={s}")?;
        }
        if let Some(s) = &self.standby {
            write!(f, " standby={s}")?;
        }
        Ok(())
    }
}

fn diff(kind: DifferenceKind) -> Difference {
    Difference {
        kind,
        key: None,
        id: None,
        source: None,
        standby: None,
    }
}

/// Options of [`verify_with`].
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Users present on the standby only by design (the replicator's own
    /// user); not reported as extra.
    pub ignore_users: Vec<String>,
    /// Compare keys at this point instead of live ([`checkpoint_point`]);
    /// then only keys are compared (leases and auth are not revisioned).
    pub at: Option<ReadPoint>,
    /// With [`at`](Self::at): also compare each key's create revision, mod
    /// revision and version ([`DifferenceKind::KeyRevisionsDiffer`]).
    /// Only meaningful when both sides share one revision sequence (a
    /// revision-preserving standby, read at the same revision on both
    /// sides); elsewhere every key would differ. Ignored without `at`.
    pub compare_revisions: bool,
    /// Counts the primary's keys compared so far, for a progress display
    /// (shared with the caller, who reads it while verify runs).
    pub progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

/// A consistent point to compare keys at: the standby at the revision of
/// its checkpoint write, the primary at the revision it had after the same
/// raft entry. Replication may run meanwhile: neither read sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReadPoint {
    /// The checkpointed raft index.
    pub index: u64,
    /// The primary's revision after it.
    pub source_revision: i64,
    /// The standby's revision of the checkpoint write.
    pub standby_revision: i64,
}

/// The standby's checkpoint for source `cluster_id` as a [`ReadPoint`]
/// (`Ok(None)`: no checkpoint, or one written without the primary's
/// revision, e.g. by a reconcile or an older replicator: retry after the
/// next write).
pub async fn checkpoint_point(
    standby: &Client,
    keys: &KeyMap,
    cluster_id: u64,
) -> Result<Option<ReadPoint>> {
    let key = crate::ReservedKeys::new(keys, cluster_id).checkpoint;
    let resp = standby
        .range(etcd_standby_client::pb::RangeRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| SinkError::client("read the standby checkpoint", e))?;
    let Some(kv) = resp.kvs.first() else {
        return Ok(None);
    };
    let cp = crate::Checkpoint::decode(&key, cluster_id, &kv.value)?;
    Ok(cp.source_revision.map(|source_revision| ReadPoint {
        index: cp.index,
        source_revision,
        standby_revision: kv.mod_revision,
    }))
}

fn missing(k: &[u8], v: &[u8]) -> Difference {
    Difference {
        key: Some(show_key(k)),
        source: Some(show_bytes(v, VALUE_SHOWN)),
        ..diff(DifferenceKind::KeyMissing)
    }
}

fn extra_key(k: &[u8], v: &[u8]) -> Difference {
    Difference {
        key: Some(show_key(k)),
        standby: Some(show_bytes(v, VALUE_SHOWN)),
        ..diff(DifferenceKind::KeyExtra)
    }
}

/// A key's revisions as shown in a [`DifferenceKind::KeyRevisionsDiffer`].
fn show_revisions(e: &Entry) -> String {
    format!(
        "create={} mod={} version={}",
        e.create_revision, e.mod_revision, e.version
    )
}

/// One key read by a [`KeyCursor`]: the source key, and what the side holds
/// for it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The source key (the standby's key unmapped).
    pub(crate) key: Bytes,
    /// The value (empty when reading keys only).
    pub(crate) value: Bytes,
    /// The lease ID the key is attached to (0: none).
    pub(crate) lease: i64,
    /// The revision of the key's creation.
    pub(crate) create_revision: i64,
    /// The revision of the key's last modification.
    pub(crate) mod_revision: i64,
    /// Puts since its creation.
    pub(crate) version: i64,
}

impl Entry {
    /// Whether the create revision, mod revision and version are the same.
    fn same_revisions(&self, other: &Entry) -> bool {
        (self.create_revision, self.mod_revision, self.version)
            == (other.create_revision, other.mod_revision, other.version)
    }
}

/// Which cluster a [`KeyCursor`] reads (how its keys map to source keys).
#[derive(Clone, Copy)]
pub(crate) enum Side {
    Source,
    Standby,
}

/// The replicated keys of one side in increasing source-key order, read a
/// page at a time over its key ranges (sorted, overlaps merged): verify's
/// memory does not grow with the number of keys.
pub(crate) struct KeyCursor<'a> {
    client: &'a Client,
    ranges: std::collections::VecDeque<(Bytes, Bytes)>,
    pages: Option<etcd_standby_client::RangePages>,
    page: std::collections::VecDeque<etcd_standby_client::mvccpb::KeyValue>,
    side: Side,
    /// Read at this revision (0: live).
    revision: i64,
    what: &'static str,
    /// Advanced once per key returned.
    counter: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Read keys without values (the values come back empty).
    keys_only: bool,
}

impl<'a> KeyCursor<'a> {
    pub(crate) fn new(
        client: &'a Client,
        ranges: Vec<(Bytes, Bytes)>,
        (side, revision): (Side, i64),
        what: &'static str,
    ) -> Self {
        KeyCursor {
            client,
            ranges: disjoint(ranges).into(),
            pages: None,
            page: Default::default(),
            side,
            revision,
            what,
            counter: None,
            keys_only: false,
        }
    }

    /// Reads keys without their values.
    pub(crate) fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }

    /// The next `(source key, value, lease)`, or `None` at the end.
    pub(crate) async fn next(&mut self, keys: &KeyMap) -> Result<Option<(Bytes, Bytes, i64)>> {
        Ok(self
            .next_entry(keys)
            .await?
            .map(|e| (e.key, e.value, e.lease)))
    }

    /// The next key with its revisions, or `None` at the end.
    pub(crate) async fn next_entry(&mut self, keys: &KeyMap) -> Result<Option<Entry>> {
        loop {
            while let Some(kv) = self.page.pop_front() {
                let key = match self.side {
                    Side::Source => keys.map(&kv.key).map(|_| kv.key.clone()),
                    Side::Standby => keys.unmap(&kv.key),
                };
                if let Some(k) = key {
                    if let Some(c) = &self.counter {
                        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    return Ok(Some(Entry {
                        key: k,
                        value: kv.value,
                        lease: kv.lease,
                        create_revision: kv.create_revision,
                        mod_revision: kv.mod_revision,
                        version: kv.version,
                    }));
                }
            }
            if self.pages.is_none() {
                let Some((start, end)) = self.ranges.pop_front() else {
                    return Ok(None);
                };
                self.pages = Some(self.client.range_pages_at(
                    start,
                    end,
                    PAGE,
                    self.keys_only,
                    self.revision,
                ));
            }
            let next = match self.pages.as_mut() {
                Some(p) => p.next_page().await.map_err(|e| self.read_error(e))?,
                None => None,
            };
            match next {
                Some(page) => self.page.extend(page),
                None => self.pages = None,
            }
        }
    }
}

impl KeyCursor<'_> {
    /// A failed read, saying which side and, when reading at a revision,
    /// which one, and whether it is compacted or in the future there.
    fn read_error(&self, e: ClientError) -> SinkError {
        let side = match self.side {
            Side::Source => "primary",
            Side::Standby => "standby",
        };
        let r = self.revision;
        let what = if r > 0 {
            match e.etcd_error() {
                Some(EtcdError::Compacted) => format!(
                    "{} at revision {r}: the {side} has compacted past revision {r} \
                     (only later revisions can be read there)",
                    self.what
                ),
                Some(EtcdError::FutureRev) => format!(
                    "{} at revision {r}: revision {r} is in the future on the {side} \
                     (its current revision is lower)",
                    self.what
                ),
                _ => format!("{} at revision {r}", self.what),
            }
        } else {
            self.what.to_owned()
        };
        SinkError::client(what, e)
    }
}

/// How many keys the primary holds under the replicated include ranges (at
/// `revision`, 0: live): the length of verify's progress bar. Excluded
/// sub-prefixes are counted too, so it is an upper bound.
pub async fn count_source_keys(source: &Client, keys: &KeyMap, revision: i64) -> Result<u64> {
    let mut n = 0u64;
    for (key, range_end) in disjoint(keys.source_ranges()) {
        let r = source
            .range(etcd_standby_client::pb::RangeRequest {
                key,
                range_end,
                count_only: true,
                revision,
                ..Default::default()
            })
            .await
            .map_err(|e| SinkError::client("count source keys", e))?;
        n += u64::try_from(r.count).unwrap_or(0);
    }
    Ok(n)
}

/// `[start, end)` ranges sorted and with overlaps merged (an end of `"\0"`
/// means "to the end of the key space").
fn disjoint(mut ranges: Vec<(Bytes, Bytes)>) -> Vec<(Bytes, Bytes)> {
    let open = |e: &Bytes| e.as_ref() == b"\0";
    ranges.sort();
    let mut out: Vec<(Bytes, Bytes)> = Vec::new();
    for (s, e) in ranges {
        if let Some(last) = out.last_mut()
            && (open(&last.1) || s <= last.1)
        {
            if !open(&last.1) && (open(&e) || e > last.1) {
                last.1 = e;
            }
            continue;
        }
        out.push((s, e));
    }
    out
}

/// Whether auth is enabled: `AuthStatus` (3.5), else a probe
/// authentication with an unknown user (refused as "not enabled" or
/// "failed", with no write on either version).
pub async fn auth_enabled(c: &Client) -> Result<bool> {
    if let Ok(s) = c.auth_status().await {
        return Ok(s.enabled);
    }
    match c.authenticate("etcd-standby-auth-probe", "").await {
        Ok(_) => Ok(true),
        Err(e) if e.etcd_error() == Some(EtcdError::AuthNotEnabled) => Ok(false),
        Err(e) if e.etcd_error() == Some(EtcdError::AuthFailed) => Ok(true),
        Err(e) => Err(SinkError::client("auth status", e)),
    }
}

/// Permissions as comparable tuples `(key, range_end, type)`, sorted.
type Perms = Vec<(Bytes, Bytes, i32)>;

async fn roles(c: &Client, what: &str) -> Result<BTreeMap<String, Perms>> {
    let mut out = BTreeMap::new();
    let names = c
        .role_list()
        .await
        .map_err(|e| SinkError::client(format!("list roles of the {what}"), e))?
        .roles;
    for name in names {
        let perms = c
            .role_get(&name)
            .await
            .map_err(|e| SinkError::client(format!("get role {name:?} of the {what}"), e))?
            .perm;
        let mut p: Perms = perms
            .into_iter()
            .map(|p| (p.key, p.range_end, p.perm_type))
            .collect();
        p.sort();
        out.insert(name, p);
    }
    Ok(out)
}

async fn users(c: &Client, what: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    let names = c
        .user_list()
        .await
        .map_err(|e| SinkError::client(format!("list users of the {what}"), e))?
        .users;
    for name in names {
        let mut roles = c
            .user_get(&name)
            .await
            .map_err(|e| SinkError::client(format!("get user {name:?} of the {what}"), e))?
            .roles;
        roles.sort();
        out.insert(name, roles);
    }
    Ok(out)
}

fn show_perms(p: &Perms) -> String {
    let items: Vec<String> = p
        .iter()
        .map(|(k, e, t)| {
            let t = match t {
                0 => "read".to_owned(),
                1 => "write".to_owned(),
                2 => "readwrite".to_owned(),
                o => format!("type{o}"),
            };
            format!("{t}:[{},{})", show_bytes(k, 48), show_bytes(e, 48))
        })
        .collect();
    items.join(" ")
}

/// Whether a lease's `(granted, remaining)` TTLs on the primary and the
/// standby agree: the same granted TTL, and the standby's copy kept alive
/// within `(0, granted]`, or at 0 together with the primary's (expired
/// there, its revoke not applied yet; the chaos suite caught verify
/// calling that a difference).
pub fn lease_ttls_agree((sg, sr): (i64, i64), (dg, dr): (i64, i64)) -> bool {
    let alive = dr > 0 && dr <= sg;
    let expiring_on_both = sr <= 0 && dr <= 0;
    sg == dg && (alive || expiring_on_both)
}

/// Compares the primary and the standby; every difference, sorted by kind.
pub async fn verify(source: &Client, standby: &Client, keys: &KeyMap) -> Result<Vec<Difference>> {
    verify_with(source, standby, keys, &VerifyOptions::default()).await
}

/// [`verify`] with options.
pub async fn verify_with(
    source: &Client,
    standby: &Client,
    keys: &KeyMap,
    opts: &VerifyOptions,
) -> Result<Vec<Difference>> {
    let mut out = Vec::new();
    // ---- keys: both sides streamed in source-key order, one page each in
    // memory, and merged; at a consistent point when asked.
    let (src_rev, dst_rev) = opts
        .at
        .map_or((0, 0), |p| (p.source_revision, p.standby_revision));
    let mut src = KeyCursor::new(
        source,
        keys.source_ranges(),
        (Side::Source, src_rev),
        "read source keys",
    );
    src.counter = opts.progress.clone();
    let mut dst = KeyCursor::new(
        standby,
        keys.standby_ranges(),
        (Side::Standby, dst_rev),
        "read standby keys",
    );
    let compare_revisions = opts.at.is_some() && opts.compare_revisions;
    let mut extra = Vec::new();
    let (mut a, mut b) = (src.next_entry(keys).await?, dst.next_entry(keys).await?);
    loop {
        match (a.take(), b.take()) {
            (None, None) => break,
            (Some(x), None) => {
                out.push(missing(&x.key, &x.value));
                a = src.next_entry(keys).await?;
            }
            (None, Some(y)) => {
                extra.push(extra_key(&y.key, &y.value));
                b = dst.next_entry(keys).await?;
            }
            (Some(x), Some(y)) => match x.key.cmp(&y.key) {
                std::cmp::Ordering::Less => {
                    out.push(missing(&x.key, &x.value));
                    a = src.next_entry(keys).await?;
                    b = Some(y);
                }
                std::cmp::Ordering::Greater => {
                    extra.push(extra_key(&y.key, &y.value));
                    a = Some(x);
                    b = dst.next_entry(keys).await?;
                }
                std::cmp::Ordering::Equal => {
                    let k = &x.key;
                    if y.value != x.value {
                        out.push(Difference {
                            key: Some(show_key(k)),
                            source: Some(show_bytes(&x.value, VALUE_SHOWN)),
                            standby: Some(show_bytes(&y.value, VALUE_SHOWN)),
                            ..diff(DifferenceKind::ValueDiffers)
                        });
                    }
                    if y.lease != x.lease {
                        out.push(Difference {
                            key: Some(show_key(k)),
                            source: Some(format!("{:#x}", x.lease)),
                            standby: Some(format!("{:#x}", y.lease)),
                            ..diff(DifferenceKind::KeyLeaseDiffers)
                        });
                    }
                    if compare_revisions && !x.same_revisions(&y) {
                        out.push(Difference {
                            key: Some(show_key(k)),
                            source: Some(show_revisions(&x)),
                            standby: Some(show_revisions(&y)),
                            ..diff(DifferenceKind::KeyRevisionsDiffer)
                        });
                    }
                    a = src.next_entry(keys).await?;
                    b = dst.next_entry(keys).await?;
                }
            },
        }
    }
    out.append(&mut extra);
    // Leases and auth have no revisions to read at: at a checkpoint only
    // the keys (values and lease attachments) are compared.
    if opts.at.is_some() {
        return Ok(out);
    }
    // ---- leases
    let src_leases: BTreeSet<i64> = source
        .lease_leases()
        .await
        .map_err(|e| SinkError::client("list source leases", e))?
        .leases
        .into_iter()
        .map(|l| l.id)
        .collect();
    let dst_leases: BTreeSet<i64> = standby
        .lease_leases()
        .await
        .map_err(|e| SinkError::client("list standby leases", e))?
        .leases
        .into_iter()
        .map(|l| l.id)
        .collect();
    for id in src_leases.union(&dst_leases) {
        let id = *id;
        let sl = if src_leases.contains(&id) {
            source
                .lease_time_to_live(id, false)
                .await
                .map_err(|e| SinkError::client("source lease TTL", e))
                .map(|t| (t.ttl >= 0).then_some((t.granted_ttl, t.ttl)))?
        } else {
            None
        };
        let dl = if dst_leases.contains(&id) {
            let t = standby
                .lease_time_to_live(id, true)
                .await
                .map_err(|e| SinkError::client("standby lease TTL", e))?;
            // The replicator's own lease (the HA lock): only reserved keys.
            let own = sl.is_none()
                && !t.keys.is_empty()
                && t.keys.iter().all(|k| k.starts_with(keys.reserved()));
            if own {
                continue;
            }
            (t.ttl >= 0).then_some((t.granted_ttl, t.ttl))
        } else {
            None
        };
        let show = |t: Option<(i64, i64)>| t.map(|(g, r)| format!("granted={g} remaining={r}"));
        match (sl, dl) {
            (Some(_), None) => out.push(Difference {
                id: Some(format!("{id:#x}")),
                source: show(sl),
                ..diff(DifferenceKind::LeaseMissing)
            }),
            (None, Some(_)) => out.push(Difference {
                id: Some(format!("{id:#x}")),
                standby: show(dl),
                ..diff(DifferenceKind::LeaseExtra)
            }),
            (Some(src), Some(dst)) => {
                if !lease_ttls_agree(src, dst) {
                    out.push(Difference {
                        id: Some(format!("{id:#x}")),
                        source: show(sl),
                        standby: show(dl),
                        ..diff(DifferenceKind::LeaseTtlDiffers)
                    });
                }
            }
            (None, None) => {}
        }
    }
    // ---- auth
    let se = auth_enabled(source).await?;
    let de = auth_enabled(standby).await?;
    if se != de {
        out.push(Difference {
            source: Some(se.to_string()),
            standby: Some(de.to_string()),
            ..diff(DifferenceKind::AuthEnabledDiffers)
        });
    }
    let su = users(source, "source").await?;
    let du = users(standby, "standby").await?;
    for (name, roles) in &su {
        match du.get(name) {
            None => out.push(Difference {
                id: Some(name.clone()),
                source: Some(roles.join(",")),
                ..diff(DifferenceKind::UserMissing)
            }),
            Some(r) if r != roles => out.push(Difference {
                id: Some(name.clone()),
                source: Some(roles.join(",")),
                standby: Some(r.join(",")),
                ..diff(DifferenceKind::UserRolesDiffer)
            }),
            Some(_) => {}
        }
    }
    for (name, roles) in &du {
        // The auto-provisioned replicator user lives on the standby only.
        let ours = name == crate::AUTO_STANDBY_USER;
        if !su.contains_key(name) && !opts.ignore_users.contains(name) && !ours {
            out.push(Difference {
                id: Some(name.clone()),
                standby: Some(roles.join(",")),
                ..diff(DifferenceKind::UserExtra)
            });
        }
    }
    let sr = roles(source, "source").await?;
    let dr = roles(standby, "standby").await?;
    for (name, perms) in &sr {
        let mut mapped: Perms = perms
            .iter()
            .map(|(k, e, t)| {
                let (k, e) = keys.map_range(k, e);
                (k, e, *t)
            })
            .collect();
        mapped.sort();
        match dr.get(name) {
            None => out.push(Difference {
                id: Some(name.clone()),
                source: Some(show_perms(&mapped)),
                ..diff(DifferenceKind::RoleMissing)
            }),
            Some(p) if *p != mapped => out.push(Difference {
                id: Some(name.clone()),
                source: Some(show_perms(&mapped)),
                standby: Some(show_perms(p)),
                ..diff(DifferenceKind::RolePermissionsDiffer)
            }),
            Some(_) => {}
        }
    }
    for (name, perms) in &dr {
        if !sr.contains_key(name) {
            out.push(Difference {
                id: Some(name.clone()),
                standby: Some(show_perms(perms)),
                ..diff(DifferenceKind::RoleExtra)
            });
        }
    }
    out.sort_by(|a, b| (a.kind, &a.key, &a.id).cmp(&(b.kind, &b.key, &b.id)));
    Ok(out)
}

#[cfg(test)]
mod tests {

    #[test]
    fn lease_ttls_agree_while_alive_or_expiring_on_both_sides() {
        assert!(lease_ttls_agree((10, 3), (10, 9)));
        assert!(lease_ttls_agree((10, 3), (10, 10)));
        assert!(!lease_ttls_agree((10, 3), (20, 9)), "granted TTL differs");
        assert!(!lease_ttls_agree((10, 3), (10, 11)), "longer than granted");
        assert!(
            !lease_ttls_agree((10, 3), (10, 0)),
            "the standby's copy expired alone"
        );
        assert!(
            lease_ttls_agree((5, 0), (5, 0)),
            "expiring on both, revoke pending"
        );
    }

    use super::*;

    fn r(s: &str, e: &str) -> (Bytes, Bytes) {
        (Bytes::from(s.to_owned()), Bytes::from(e.to_owned()))
    }

    /// Overlapping include prefixes (`/a` and `/a/b`) must not yield a key
    /// twice, and the streams must come in key order.
    #[test]
    fn key_ranges_are_sorted_and_overlaps_merged() {
        assert_eq!(
            disjoint(vec![r("/b", "/c"), r("/a/b", "/a/c"), r("/a", "/b")]),
            vec![r("/a", "/c")]
        );
        assert_eq!(
            disjoint(vec![r("/x", "/y"), r("/a", "/b")]),
            vec![r("/a", "/b"), r("/x", "/y")]
        );
        assert_eq!(
            disjoint(vec![r("\0", "\0"), r("/a", "/b")]),
            vec![r("\0", "\0")]
        );
        assert_eq!(
            disjoint(vec![r("/a", "\0"), r("/b", "/c")]),
            vec![r("/a", "\0")]
        );
    }
}
