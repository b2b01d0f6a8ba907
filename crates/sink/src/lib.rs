//! Effects to the standby cluster: batched checkpointed txns with fencing,
//! a lease keeper, an auth mirror, snapshot reconcile and verify.
//!
//! The daemon feeds [`Sink::apply`] the effects the model computed for
//! committed entries, in index order. The sink keeps the standby equal to
//! the primary at some raft index (Architecture Invariants 2 and 4 in ARCHITECTURE.md):
//!
//! * **Batched txns with a checkpoint and a fence.** Consecutive entries go
//!   into one standby `Txn` — whole entries only, within `max_txn_ops` (the
//!   checkpoint put counts) and `max_request_bytes`. Within a txn each key
//!   appears once with its final state (etcd refuses duplicate keys in one
//!   txn). Every write txn compares the fencing epoch key
//!   (`<reserved>epoch`, value = decimal epoch) and puts the checkpoint
//!   `<reserved>checkpoint/<source cluster ID, 16 hex digits>` =
//!   `{"cluster_id":"…","index":N,"term":T}`. A failed epoch compare is
//!   [`SinkError::Fenced`]: the standby was promoted (promotion bumps the
//!   epoch); the sink stops and the lease keeper stops.
//! * **Chained and pipelined.** Every checkpointing txn also compares the
//!   checkpoint with the value the txn before it writes, so up to
//!   [`SinkConfig::max_txns_in_flight`] txns are sent before the first is
//!   confirmed and still land in order and exactly once: one that overtook
//!   its predecessor fails its compare and is sent again once the
//!   predecessor is confirmed. Answers are taken in order; lease revokes
//!   and auth RPCs wait until everything before them is confirmed.
//!   [`Sink::feed`] streams (the last txn keeps filling across calls,
//!   nothing waits beyond the window) and [`Sink::settle`] waits for all;
//!   [`Sink::apply`] is both. A
//!   checkpoint found elsewhere than where the sink left it is
//!   [`SinkError::CheckpointMoved`] (two replicators of one source on one
//!   standby cannot both apply an entry). Entries without
//!   effects still advance the checkpoint (coalesced into the next txn). A
//!   single entry with more ops than `max_txn_ops - 1` is written as nested
//!   txns inside one txn, so it stays atomic.
//! * **Resume.** [`Sink::connect`] reads the checkpoint; the daemon resumes
//!   at `checkpoint().index + 1`. Entries at or below the checkpoint are
//!   skipped (counted), so replaying after a crash is harmless.
//! * **Leases** are granted on the standby with the primary's ID and TTL
//!   before the txn that first attaches them ("already exists" is fine),
//!   revoked once the txn of everything before the revoking entry is
//!   written and before any checkpoint covers that entry ("not found" is
//!   fine; a crash in between replays the revoke), and
//!   kept alive by one [`LeaseKeeper`] task over a single keep-alive stream
//!   at a bounded rate. At connect the keeper adopts every lease the standby
//!   has. Lease checkpoints, compactions and alarms are not replayed.
//! * **Auth** effects become auth RPCs, in order, made idempotent: "already
//!   exists" / "not found" / "not granted" are tolerated (counted in
//!   [`SinkStats::auth_tolerated`]), an existing user still gets the
//!   password. Passwords keep their hash: a 3.5 entry's bcrypt hash is set
//!   with `hashedPassword` (3.5 standbys only; a 3.4 standby cannot store a
//!   given hash: [`SinkError::HashUnsupported`]); a 3.4 entry's plaintext is
//!   sent as a plaintext (the standby hashes it; logins work, the hash
//!   differs). The entry is checkpointed by a txn right after its RPCs, so a
//!   crash in between replays them, which is harmless.
//!
//! * **HA fence.** With [`SinkConfig::lock`] set (an `--ha` instance), every
//!   write txn also compares the HA lock key with this instance's value and
//!   fails with [`SinkError::LostLock`] when another instance holds it; auth
//!   RPCs are preceded by a txn making both compares. See [`ha`].
//!
//! # Standby authentication
//! When the standby has auth enabled, the replicator authenticates as a
//! **dedicated user with the `root` role** (e.g. `etcd-standby`), either
//! with a password ([`ClientConfig::user`](etcd_standby_client::ClientConfig::user))
//! or with a client certificate whose CN is that user (etcd
//! `--client-cert-auth`; set [`SinkConfig::standby_user`] to the CN). The
//! name must not exist on the primary: the sink refuses
//! ([`SinkError::SelfLockout`]) to mirror a change to that user (add,
//! delete, password, revoking root). Before mirroring `AuthEnable`, the sink
//! makes sure the user exists on the standby with the root role (creating it
//! with the configured password when missing), so enabling auth never locks
//! the replicator out. Pass the replicator's user to
//! [`verify::verify_with`] (`ignore_users`) so verify does not report it;
//! [`AUTO_STANDBY_USER`], the identity `run` provisions when none is
//! configured, is always ignored there.
//!
//! # Prefixes
//! [`KeyMap`]: `--include-prefix` / `--exclude-prefix` (repeatable) select
//! source keys, `--dest-prefix` is prepended on the standby; the reserved
//! prefix (default `__etcd_standby__/`) holds the checkpoint, epoch, promotion and audit keys,
//! is never written by replication, and is ignored by verify and
//! reconcile. Lease attachments follow their keys; leases themselves are
//! mirrored whole. Role permissions get the destination prefix.
//!
//! # Secrets
//! Passwords, hashes and tokens are never logged or printed (errors name
//! users and roles only; [`verify::Difference`] never carries passwords).
mod auth;
mod error;
pub mod ha;
mod keymap;
mod lease;
pub mod promotion;
mod reconcile;
mod sink;
mod stats;
pub mod verify;

pub use error::{Result, SinkError, show_bytes, show_key};
pub use keymap::{AUTO_STANDBY_USER, DEFAULT_RESERVED_PREFIX, KeyMap};
pub use lease::{KeeperStats, LeaseKeeper};
pub use promotion::{LeaseRefresh, Promotion, ReservedKeys, StandbyState};
pub use reconcile::{ReconcileOptions, ReconcileReport};
pub use sink::{
    ApplyStats, Checkpoint, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TXN_OPS,
    DEFAULT_MAX_TXNS_IN_FLIGHT, PreserveRevisions, Sink, SinkConfig,
};
pub use stats::{LATENCY_SAMPLES, SinkStats};
