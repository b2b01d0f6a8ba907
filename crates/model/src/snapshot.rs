//! Seeding the model from a leader snapshot db (bbolt image).
use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use etcd_standby_bolt::{BoltError, BoltFile, etcd};

use crate::apply::Model;
use crate::auth::{AuthState, PermType, Permission, Role, User};
use crate::b64;
use crate::kv::{KeyState, LeaseState};
use crate::types::{AlarmKind, ApplierChain, ClusterState, EtcdMinor, ModelConfig, Password};

/// Reading a snapshot db failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bbolt file or etcd's schema in it is damaged.
    #[error("snapshot db: {0}")]
    Bolt(#[from] BoltError),
}

/// A live key in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotKey {
    /// Key.
    pub key: Bytes,
    /// Its state.
    pub state: KeyState,
}

/// A lease in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotLease {
    /// ID.
    pub id: i64,
    /// Granted TTL.
    pub ttl: i64,
    /// Persisted remaining TTL (0 = none).
    pub remaining_ttl: i64,
}

/// State the model keeps beyond what an etcd db holds: present in a
/// [`Model::to_snapshot_state`] export, absent (`None`) in a db read by
/// [`SnapshotState::from_bolt`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelExtras {
    /// The applier chain (the runtime-alarm auth bypass lives here).
    pub chain: ApplierChain,
    /// Keys attached to each lease (leases without keys may be absent).
    /// Usually the keys naming the lease, but not always: a key put with a
    /// lease ID that did not exist (kept through `ignore_lease`) is not
    /// attached when that ID is granted later.
    pub lease_keys: BTreeMap<i64, BTreeSet<Bytes>>,
    /// Cluster bookkeeping.
    pub cluster: ClusterState,
}

/// Everything the model needs from a snapshot.
///
/// Two sources: an etcd db ([`SnapshotState::from_bolt`], `extras: None`),
/// seeded the way a restarting etcd member loads its backend; or a model's
/// complete export ([`Model::to_snapshot_state`], `extras: Some`), restored
/// exactly. Persist it with [`SnapshotState::write_to`] /
/// [`SnapshotState::read_from`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotState {
    /// Live keys.
    pub keys: Vec<SnapshotKey>,
    /// Current revision: max(newest revision in bucket `key`, compacted), at least 1.
    pub revision: i64,
    /// Compacted revision (-1: never).
    pub compacted: i64,
    /// Leases.
    pub leases: Vec<SnapshotLease>,
    /// Auth store.
    pub auth: AuthState,
    /// Active alarms (type, member).
    pub alarms: Vec<(AlarmKind, u64)>,
    /// `meta/consistent_index`: entries up to here are already in the db.
    pub consistent_index: u64,
    /// `meta/term` (3.5; 0 if absent); the applied term in a model export.
    pub term: u64,
    /// Model-only state; `None` for an etcd db (restart semantics).
    pub extras: Option<ModelExtras>,
}

impl Default for SnapshotState {
    /// The state of a fresh cluster (what [`Model::new`] exports, without extras).
    fn default() -> Self {
        SnapshotState {
            keys: Vec::new(),
            revision: 1,
            compacted: -1,
            leases: Vec::new(),
            auth: AuthState::default(),
            alarms: Vec::new(),
            consistent_index: 0,
            term: 0,
            extras: None,
        }
    }
}

impl SnapshotState {
    /// Reads an etcd backend (a `member/snap/db`, a `.snap.db` from a leader,
    /// or an `etcdctl snapshot save` file opened with its trailer stripped).
    pub fn from_bolt(db: &BoltFile) -> Result<SnapshotState, SnapshotError> {
        let meta = etcd::read_meta(db)?;
        let compacted = [meta.scheduled_compact_rev, meta.finished_compact_rev]
            .into_iter()
            .flatten()
            .map(|r| r.main)
            .max()
            .unwrap_or(-1);
        let live = etcd::live_keys(db)?;
        let latest = live.stats().latest.map(|r| r.main).unwrap_or(1);
        let mut keys = Vec::new();
        for k in live {
            let k = k?;
            keys.push(SnapshotKey {
                key: k.key,
                state: KeyState {
                    value: k.value,
                    create_revision: k.create_revision,
                    mod_revision: k.mod_revision,
                    version: k.version,
                    lease: k.lease,
                },
            });
        }
        let leases = etcd::read_leases(db)?
            .into_iter()
            .map(|l| SnapshotLease {
                id: l.id,
                ttl: l.ttl,
                remaining_ttl: l.remaining_ttl,
            })
            .collect();
        let ab = etcd::read_auth(db)?;
        let mut auth = AuthState {
            enabled: ab.enabled.unwrap_or(false),
            revision: ab.revision.unwrap_or(1).max(1),
            ..Default::default()
        };
        for u in etcd::read_users(db)? {
            let no_password = u.options.as_ref().is_some_and(|o| o.no_password);
            let password = if u.password.is_empty() && no_password {
                Password::None
            } else {
                Password::Hashed(b64::encode(&u.password))
            };
            let mut roles = u.roles.clone();
            roles.sort();
            auth.users.insert(
                String::from_utf8_lossy(&u.name).into_owned(),
                User {
                    password,
                    roles,
                    no_password,
                },
            );
        }
        for r in etcd::read_roles(db)? {
            let perms = r
                .key_permission
                .iter()
                .map(|p| Permission {
                    perm_type: PermType::from_i32(p.perm_type),
                    key: p.key.clone(),
                    range_end: p.range_end.clone(),
                })
                .collect();
            auth.roles.insert(
                String::from_utf8_lossy(&r.name).into_owned(),
                Role { perms },
            );
        }
        let alarms = etcd::read_alarms(db)?
            .into_iter()
            .map(|a| (AlarmKind::from_i32(a.alarm), a.member_id))
            .collect();
        Ok(SnapshotState {
            keys,
            revision: latest.max(compacted).max(1),
            compacted,
            leases,
            auth,
            alarms,
            consistent_index: meta.consistent_index.unwrap_or(0),
            term: meta.term.unwrap_or(0),
            extras: None,
        })
    }
}

impl Model {
    /// A model seeded from a snapshot, with the default configuration.
    pub fn from_snapshot(s: SnapshotState) -> Model {
        Model::from_snapshot_with_config(ModelConfig::default(), s)
    }

    /// A model seeded from a snapshot.
    ///
    /// * Without extras (an etcd db), the way a restarting etcd member loads
    ///   its backend: lease attachments rebuilt from the keys (keys naming a
    ///   missing lease stay unattached), 3.5 ignoring negative lease IDs, and
    ///   active alarms wrapping the full applier chain.
    /// * With extras (a [`Model::to_snapshot_state`] export), exactly: every
    ///   lease, the exported attachments, applier chain and cluster
    ///   bookkeeping. `from_snapshot_with_config(m.config().clone(),
    ///   m.to_snapshot_state())` behaves like `m` on every further entry.
    pub fn from_snapshot_with_config(config: ModelConfig, s: SnapshotState) -> Model {
        let SnapshotState {
            keys,
            revision,
            compacted,
            leases: snapshot_leases,
            auth,
            alarms,
            consistent_index,
            term,
            extras,
        } = s;
        let alarms: BTreeSet<(AlarmKind, u64)> = alarms.into_iter().collect();
        let mut leases: BTreeMap<i64, LeaseState> = BTreeMap::new();
        let mut kv = BTreeMap::new();
        let (chain, cluster) = match extras {
            Some(mut x) => {
                for l in &snapshot_leases {
                    leases.insert(
                        l.id,
                        LeaseState {
                            ttl: l.ttl,
                            remaining_ttl: l.remaining_ttl,
                            keys: x.lease_keys.remove(&l.id).unwrap_or_default(),
                        },
                    );
                }
                kv.extend(keys.into_iter().map(|k| (k.key, k.state)));
                (x.chain, x.cluster)
            }
            None => {
                for l in &snapshot_leases {
                    if config.version == EtcdMinor::V3_5 && l.id < 0 {
                        continue;
                    }
                    leases.insert(
                        l.id,
                        LeaseState {
                            ttl: l.ttl,
                            remaining_ttl: l.remaining_ttl,
                            keys: BTreeSet::new(),
                        },
                    );
                }
                for k in keys {
                    if k.state.lease != 0
                        && let Some(l) = leases.get_mut(&k.state.lease)
                    {
                        l.keys.insert(k.key.clone());
                    }
                    kv.insert(k.key, k.state);
                }
                // A member that (re)starts with alarms wraps its *full* chain.
                (
                    ApplierChain::after_restart(&alarms),
                    ClusterState::default(),
                )
            }
        };
        Model {
            config,
            kv,
            revision,
            compacted,
            leases,
            auth,
            alarms,
            chain,
            cluster,
            applied_index: consistent_index,
            applied_term: term,
        }
    }

    /// A complete export of the model's state (everything [`Model::apply`]
    /// depends on except the [`ModelConfig`]), with `extras` set; see
    /// [`Model::from_snapshot_with_config`] for the round trip. Keys and
    /// values are shared (`Bytes`), not copied.
    pub fn to_snapshot_state(&self) -> SnapshotState {
        let lease_keys = self
            .leases
            .iter()
            .filter(|(_, l)| !l.keys.is_empty())
            .map(|(id, l)| (*id, l.keys.clone()))
            .collect();
        SnapshotState {
            keys: self
                .kv
                .iter()
                .map(|(k, v)| SnapshotKey {
                    key: k.clone(),
                    state: v.clone(),
                })
                .collect(),
            revision: self.revision,
            compacted: self.compacted,
            leases: self
                .leases
                .iter()
                .map(|(id, l)| SnapshotLease {
                    id: *id,
                    ttl: l.ttl,
                    remaining_ttl: l.remaining_ttl,
                })
                .collect(),
            auth: self.auth.clone(),
            alarms: self.alarms.iter().copied().collect(),
            consistent_index: self.applied_index,
            term: self.applied_term,
            extras: Some(ModelExtras {
                chain: self.chain,
                lease_keys,
                cluster: self.cluster.clone(),
            }),
        }
    }
}
