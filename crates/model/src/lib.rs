//! Sans-IO shadow of the primary's state with etcd's apply-time semantics:
//! entry in, outcome and effects out.
//!
//! The standby must change **iff** the primary changed. etcd decides many
//! things only when it applies an entry (auth revision and permissions,
//! missing leases, alarms, txn compares), so this crate keeps a model of the
//! primary's state and replays etcd 3.4.23 / 3.5.1's apply rules on it:
//!
//! ```
//! use etcd_standby_decode::Decoded;
//! use etcd_standby_model::{Model, Outcome};
//! use etcd_standby_proto::etcdserverpb::{InternalRaftRequest, PutRequest};
//!
//! let mut model = Model::new();
//! let put = InternalRaftRequest {
//!     put: Some(PutRequest { key: "k".into(), value: "v".into(), ..Default::default() }),
//!     ..Default::default()
//! };
//! let applied = model.apply(3, 2, &Decoded::Internal(Box::new(put)));
//! assert_eq!(applied.outcome, Outcome::Applied);
//! assert_eq!(model.revision(), 2);
//! assert_eq!(model.get(b"k").map(|k| k.version), Some(1));
//! ```
//!
//! * [`Model::apply`] takes every committed entry in index order and returns an
//!   [`Applied`]: the [`Outcome`] (applied, compare failed, rejected and why,
//!   cluster-only, ...) and the fully resolved [`Effect`]s the standby needs
//!   (keys written/deleted with their final values, leases, auth changes).
//! * The model is pure and deterministic: no IO, no clocks, no randomness,
//!   ordered maps only. It never panics on input; entries it cannot interpret
//!   return [`Outcome::Undecodable`] / [`Outcome::Unsupported`] and leave the
//!   state untouched, so the caller can halt.
//! * [`Model::from_snapshot`] seeds it from a leader snapshot db (read into a
//!   [`SnapshotState`] by `etcd_standby_bolt::model_state`; this crate does
//!   no IO and depends only on the protobuf types and the decoder).
//! * [`Model::to_snapshot_state`] exports the complete state (with
//!   [`ModelExtras`]: applier chain, lease attachments, cluster bookkeeping)
//!   and [`Model::from_snapshot_with_config`] restores it exactly;
//!   [`SnapshotState::write_to`] / [`SnapshotState::read_from`] persist it in
//!   a versioned, CRC-32C-checked, streamed format ([`persist`]), so a
//!   restarting daemon replays only the entries after the saved index.
//!
//! Config-dependent behaviour of the primary (minimum lease TTL, etcd minor
//! version, which member's view of a txn's range ops to mirror) is set with
//! [`ModelConfig`].
mod apply;
mod auth;
mod b64;
mod index;
mod kv;
pub mod persist;
mod snapshot;
mod types;
pub mod value;

pub use apply::Model;
pub use auth::{AuthState, PermType, Permission, Role, User};
pub use kv::KeyState;
pub use persist::ModelIoError;
pub use snapshot::{ModelExtras, SnapshotKey, SnapshotLease, SnapshotState};
pub use types::{
    AlarmKind, Applied, ApplierChain, ClusterState, Effect, EtcdMinor, ModelConfig, Outcome,
    Password, Rejection, TxnRangeView,
};
pub use value::{MemValues, StoredValue, Value, ValueStore, ValueStoreError};

/// The lease state the model keeps per lease.
pub use kv::LeaseState;
