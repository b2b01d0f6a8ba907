//! Seeding the model from a snapshot: an etcd db (read by
//! `etcd_standby_bolt::model_state`) or the model's own export.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;

use crate::apply::Model;
use crate::auth::AuthState;
use crate::index::KeyIndex;
use crate::kv::{KeyState, LeaseState};
use crate::types::{AlarmKind, ApplierChain, ClusterState, EtcdMinor, ModelConfig};
use crate::value::{MemValues, Value, ValueStore};

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
/// `etcd_standby_bolt::model_state`.
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
/// Two sources: an etcd db (`etcd_standby_bolt::model_state`, `extras: None`),
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
    ///
    /// Long values go to a fresh in-memory store; a state holding values by
    /// reference ([`Value::Stored`]) needs the store that has them:
    /// [`Model::from_snapshot_in`].
    pub fn from_snapshot_with_config(config: ModelConfig, s: SnapshotState) -> Model {
        Model::from_snapshot_in(config, s, MemValues::new_shared())
    }

    /// [`Model::from_snapshot_with_config`] keeping long values in `values`:
    /// values in hand are stored there, values by reference must already be
    /// there (a reference is taken on each).
    pub fn from_snapshot_in(
        config: ModelConfig,
        s: SnapshotState,
        values: Arc<dyn ValueStore>,
    ) -> Model {
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
        let mut kv = KeyIndex::default();
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
                for k in keys {
                    kv.insert(&k.key, &adopt(k.state, &*values));
                }
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
                        // A copy: the state's key may be a slice of a larger buffer.
                        l.keys.insert(Bytes::copy_from_slice(&k.key));
                    }
                    kv.insert(&k.key, &adopt(k.state, &*values));
                }
                // A member that (re)starts with alarms wraps its *full* chain.
                (
                    ApplierChain::after_restart(&alarms),
                    ClusterState::default(),
                )
            }
        };
        let mut model = Model {
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
            values,
        };
        model.compact_memory();
        model
    }

    /// Writes the model's complete state in the persisted format
    /// ([`crate::persist`]), straight from the model: no copy of the state
    /// is built. Reads back with [`SnapshotState::read_from`] to what
    /// [`Model::to_snapshot_state`] exports; long values stay in the store.
    pub fn write_to(&self, w: &mut impl std::io::Write) -> Result<(), crate::ModelIoError> {
        crate::persist::write_state(
            w,
            crate::persist::StateRef {
                revision: self.revision,
                compacted: self.compacted,
                consistent_index: self.applied_index,
                term: self.applied_term,
                auth: &self.auth,
                keys: Box::new(self.kv.iter()),
                leases: Box::new(self.leases.iter().map(|(id, l)| SnapshotLease {
                    id: *id,
                    ttl: l.ttl,
                    remaining_ttl: l.remaining_ttl,
                })),
                alarms: Box::new(self.alarms.iter().copied()),
                extras: Some(crate::persist::ExtrasRef {
                    chain: self.chain,
                    lease_keys: Box::new(
                        self.leases
                            .iter()
                            .filter(|(_, l)| !l.keys.is_empty())
                            .map(|(id, l)| (*id, &l.keys)),
                    ),
                    cluster: &self.cluster,
                }),
            },
        )
    }

    /// A complete export of the model's state (everything [`Model::apply`]
    /// depends on except the [`ModelConfig`]), with `extras` set; see
    /// [`Model::from_snapshot_with_config`] for the round trip. Keys are
    /// copied out of the index; short values are shared (`Bytes`).
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
                .map(|(k, state)| SnapshotKey {
                    key: Bytes::copy_from_slice(k),
                    state,
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

/// A key's state as a model holds it: a long value in hand goes to the
/// store, a reference into it is counted.
fn adopt(mut state: KeyState, values: &dyn ValueStore) -> KeyState {
    state.value = match state.value {
        Value::Inline(b) => Value::intern(b, values),
        Value::Stored(s) => {
            values.add_ref(&s.digest);
            Value::Stored(s)
        }
    };
    state
}
