//! The model and etcd's apply loop (`server/etcdserver/apply.go`,
//! `apply_auth.go`, `mvcc/kvstore_txn.go`, `lease/lessor.go`).
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use etcd_standby_decode::{ApplyRequest, ApplyRules, ConfChange, Decoded, Member, apply_request};
use etcd_standby_proto::authpb;
use etcd_standby_proto::etcdserverpb::{
    self as pb, InternalRaftRequest, PutRequest, Request, TxnRequest, request_op,
};

use crate::auth::{Access, AuthInfo, AuthState, PermType, Permission, ROOT, Role, User};
use crate::b64;
use crate::index::KeyIndex;
use crate::kv::{KeyState, LeaseState, range};
use crate::types::{
    AlarmKind, Applied, ApplierChain, ClusterState, Effect, EtcdMinor, ModelConfig, Outcome,
    Password, Rejection, TxnRangeView,
};
use crate::value::{Digest, INLINE_MAX, MemValues, Value, ValueStore, ValueStoreError};

/// etcd's `MaxLeaseTTL` (seconds).
const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// The primary's state as etcd would have it after the applied index.
///
/// Long values live in its [`ValueStore`] ([`Value`]); cloning a model
/// forks the store ([`ValueStore::fork`]).
#[derive(Debug)]
pub struct Model {
    pub(crate) config: ModelConfig,
    pub(crate) kv: KeyIndex,
    pub(crate) revision: i64,
    pub(crate) compacted: i64,
    pub(crate) leases: BTreeMap<i64, LeaseState>,
    pub(crate) auth: AuthState,
    pub(crate) alarms: BTreeSet<(AlarmKind, u64)>,
    pub(crate) chain: ApplierChain,
    pub(crate) cluster: ClusterState,
    pub(crate) applied_index: u64,
    pub(crate) applied_term: u64,
    pub(crate) values: Arc<dyn ValueStore>,
}

impl Clone for Model {
    fn clone(&self) -> Self {
        Model {
            config: self.config.clone(),
            kv: self.kv.clone(),
            revision: self.revision,
            compacted: self.compacted,
            leases: self.leases.clone(),
            auth: self.auth.clone(),
            alarms: self.alarms.clone(),
            chain: self.chain,
            cluster: self.cluster.clone(),
            applied_index: self.applied_index,
            applied_term: self.applied_term,
            values: self.values.fork(),
        }
    }
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

/// Collects the writes of one mvcc write txn.
#[derive(Default)]
struct Writer {
    /// Number of mvcc changes (sub-revisions).
    changes: usize,
    /// Key effects in execution order, with "existed before the entry".
    keyed: Vec<(Bytes, Effect)>,
    /// Keys touched and whether they existed before the entry.
    existed: BTreeMap<Bytes, bool>,
    /// Non-key effects, emitted after the key effects.
    tail: Vec<Effect>,
}

impl Writer {
    /// Coalesces to one effect per key (its final state), in the order of
    /// each key's last write; drops deletes of keys created by this entry.
    fn finish(self) -> Vec<Effect> {
        let mut seen = BTreeSet::new();
        let mut out: Vec<Effect> = Vec::with_capacity(self.keyed.len() + self.tail.len());
        for (key, eff) in self.keyed.into_iter().rev() {
            if !seen.insert(key.clone()) {
                continue;
            }
            let created_here = !self.existed.get(&key).copied().unwrap_or(true);
            if created_here && matches!(eff, Effect::Delete { .. }) {
                continue;
            }
            out.push(eff);
        }
        out.reverse();
        out.extend(self.tail);
        out
    }
}

/// Compare results of a txn and of the nested txns of its chosen branch.
struct Plan {
    ok: bool,
    nested: Vec<Plan>,
}

type Step = Result<Outcome, Rejection>;

/// Why a put could not be made.
enum PutFailed {
    /// The primary refused it.
    Rejected(Rejection),
    /// The current value (`ignore_value`) could not be read from the store.
    Value(ValueStoreError),
}

/// Why [`Model::plan_writes`] stopped.
enum PlanFailed {
    /// A put that would find no key (etcd would panic on it).
    NoKey(Bytes),
    /// A value `ignore_value` needs could not be read from the store.
    Value(ValueStoreError),
}

/// One write of a txn's chosen path, ignore_value / ignore_lease resolved.
enum TxnWrite<'t> {
    Put {
        key: &'t Bytes,
        value: Bytes,
        lease: i64,
    },
    Delete {
        key: &'t [u8],
        range_end: &'t [u8],
    },
}

/// The keys as a txn's later ops see them while its writes are planned:
/// what earlier ops of the txn wrote or deleted, else the state before it.
#[derive(Default)]
struct TxnView {
    /// Keys written by earlier ops (`None`: deleted after being written).
    written: BTreeMap<Bytes, Option<(Value, i64)>>,
    /// Ranges deleted by earlier ops.
    deleted: Vec<(Bytes, Bytes)>,
}

impl TxnView {
    /// Value and lease of `key` at this point of the txn.
    fn get(&self, model: &Model, key: &[u8]) -> Option<(Value, i64)> {
        if let Some(w) = self.written.get(key) {
            return w.clone();
        }
        if self.deleted.iter().any(|(k, e)| in_range(key, k, e)) {
            return None;
        }
        model.kv.get(key).map(|ks| (ks.value, ks.lease))
    }

    fn put(&mut self, key: &Bytes, value: &Bytes, lease: i64) {
        self.written
            .insert(key.clone(), Some((Value::Inline(value.clone()), lease)));
    }

    fn delete(&mut self, key: &Bytes, range_end: &Bytes) {
        for (k, v) in &mut self.written {
            if in_range(k, key, range_end) {
                *v = None;
            }
        }
        self.deleted.push((key.clone(), range_end.clone()));
    }
}

impl Model {
    /// A fresh cluster with the default configuration (etcd 3.5, minimum lease TTL 2 s).
    pub fn new() -> Model {
        Model::with_config(ModelConfig::default())
    }

    /// A fresh cluster: revision 1, auth revision 1, nothing else; long
    /// values in memory ([`MemValues`]).
    pub fn with_config(config: ModelConfig) -> Model {
        Model::with_values(config, MemValues::new_shared())
    }

    /// A fresh cluster keeping long values in `values`.
    pub fn with_values(config: ModelConfig, values: Arc<dyn ValueStore>) -> Model {
        Model {
            config,
            kv: KeyIndex::default(),
            revision: 1,
            compacted: -1,
            leases: BTreeMap::new(),
            auth: AuthState::default(),
            alarms: BTreeSet::new(),
            chain: ApplierChain::NORMAL,
            cluster: ClusterState::default(),
            applied_index: 0,
            applied_term: 0,
            values,
        }
    }

    /// Repacks the key index into nearly full blocks when they average
    /// under 60% full (after many deletes, or keys written in no
    /// particular order; keys written in order fill their blocks already).
    /// O(keys) when it repacks, one block in flight at a time.
    pub fn compact_memory(&mut self) {
        self.kv.pack();
    }

    /// Where the model keeps long values.
    pub fn values(&self) -> &Arc<dyn ValueStore> {
        &self.values
    }

    /// The bytes of a live key's value (read from the store when long).
    pub fn value(&self, key: &[u8]) -> Result<Option<Bytes>, ValueStoreError> {
        self.kv
            .get(key)
            .map(|ks| ks.value.bytes(&*self.values))
            .transpose()
    }

    /// The bytes of `value` (one of this model's, e.g. from [`Model::keys`]).
    pub fn value_bytes(&self, value: &Value) -> Result<Bytes, ValueStoreError> {
        value.bytes(&*self.values)
    }

    /// The digests of every long value a live key holds, sorted, without
    /// repeats: what a store that collects garbage must keep.
    pub fn live_digests(&self) -> Vec<Digest> {
        let mut d: Vec<Digest> = self
            .kv
            .iter()
            .filter_map(|(_, ks)| match &ks.value {
                Value::Stored(s) => Some(s.digest),
                Value::Inline(_) => None,
            })
            .collect();
        d.sort_unstable();
        d.dedup();
        d
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Index of the last applied entry (a snapshot's consistent index after seeding).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Term of the last applied entry (0 if unknown).
    pub fn applied_term(&self) -> u64 {
        self.applied_term
    }

    /// The KV store revision (1 for an empty store).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The compacted revision (-1: never compacted).
    pub fn compacted(&self) -> i64 {
        self.compacted
    }

    /// A live key's state (decoded from the index: a copy).
    pub fn get(&self, key: &[u8]) -> Option<KeyState> {
        self.kv.get(key)
    }

    /// Every live key, in key order, with a copy of its state.
    pub fn keys(&self) -> impl Iterator<Item = (&[u8], KeyState)> + '_ {
        self.kv.iter()
    }

    /// Live keys in `[key, range_end)` (empty end = the key, `"\0"` = to the end).
    pub fn range<'a>(
        &'a self,
        key: &'a [u8],
        range_end: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], KeyState)> + 'a {
        range(&self.kv, key, range_end)
    }

    /// Bytes of the packed key index (keys and their states, no long
    /// values): what the model's memory follows.
    pub fn index_bytes(&self) -> usize {
        self.kv.encoded_bytes()
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.kv.len()
    }

    /// No live keys.
    pub fn is_empty(&self) -> bool {
        self.kv.is_empty()
    }

    /// Leases by ID.
    pub fn leases(&self) -> &BTreeMap<i64, LeaseState> {
        &self.leases
    }

    /// The auth store.
    pub fn auth(&self) -> &AuthState {
        &self.auth
    }

    /// Active alarms as (type, member ID).
    pub fn alarms(&self) -> impl Iterator<Item = (AlarmKind, u64)> + '_ {
        self.alarms.iter().copied()
    }

    /// Cluster bookkeeping.
    pub fn cluster(&self) -> &ClusterState {
        &self.cluster
    }

    /// Which appliers currently wrap the backend (see [`ApplierChain`]).
    pub fn applier_chain(&self) -> ApplierChain {
        self.chain
    }

    /// Applies one committed entry (in index order) and says what it did.
    ///
    /// * Entries at or below the applied index return [`Outcome::AlreadyApplied`].
    /// * [`Outcome::Undecodable`] / [`Outcome::Unsupported`] leave the model
    ///   untouched (the applied index does not move): the caller must halt.
    /// * Runtime-alarm quirk (etcd 3.4/3.5): when a NOSPACE or CORRUPT alarm
    ///   is *activated by an entry*, etcd replaces its applier chain with the
    ///   alarm applier around the bare backend, so auth checks are skipped
    ///   until the alarm is disarmed; a member that restarts with the alarm
    ///   wraps the full chain instead. The model follows the log (runtime
    ///   behaviour) and uses the restart behaviour when seeded from a
    ///   snapshot with alarms.
    pub fn apply(&mut self, index: u64, term: u64, entry: &Decoded) -> Applied {
        if index <= self.applied_index {
            return self.result(Outcome::AlreadyApplied, Vec::new());
        }
        let (outcome, effects) = match entry {
            Decoded::Empty => (Outcome::Empty, Vec::new()),
            Decoded::Internal(r) => self.apply_internal(index, r),
            Decoded::V2(r) => {
                self.apply_v2(r);
                (Outcome::ClusterOnly, Vec::new())
            }
            Decoded::ConfChange(cc) => {
                self.apply_conf_change(cc);
                (Outcome::ClusterOnly, Vec::new())
            }
            Decoded::ConfChangeV2(_) => (
                Outcome::Unsupported("ConfChangeV2 entry (etcd 3.4/3.5 panic on these)".into()),
                Vec::new(),
            ),
            Decoded::Unknown { reason, .. } => (Outcome::Undecodable(reason.clone()), Vec::new()),
        };
        if !outcome.is_halt() {
            self.applied_index = index;
            self.applied_term = term;
        }
        self.result(outcome, effects)
    }

    fn result(&self, outcome: Outcome, effects: Vec<Effect>) -> Applied {
        Applied {
            outcome,
            effects,
            revision: self.revision,
        }
    }

    fn apply_internal(&mut self, index: u64, r: &InternalRaftRequest) -> (Outcome, Vec<Effect>) {
        let v35 = self.config.version == EtcdMinor::V3_5;
        let rules = if v35 {
            ApplyRules::V3_5
        } else {
            ApplyRules::V3_4
        };
        // etcd's precedence when several fields are set: decode's one table.
        let req = apply_request(r, rules);
        if let ApplyRequest::InternalV2(v2) = req {
            // `applyEntryNormal`: before the v3 appliers (and their auth check).
            self.apply_v2(v2);
            return (Outcome::ClusterOnly, Vec::new());
        }
        let (user, revision) = r
            .header
            .as_ref()
            .map(|h| (h.username.clone(), h.auth_revision))
            .unwrap_or_default();
        let who = AuthInfo {
            user: &user,
            revision,
        };
        if self.chain.auth
            && needs_admin(r)
            && let Err(e) = self.auth.check_admin(who)
        {
            return (Outcome::Rejected(e), Vec::new());
        }
        let mut w = Writer::default();
        let step: Step = match req {
            // Returned above; the same if it were reached.
            ApplyRequest::InternalV2(v2) => {
                self.apply_v2(v2);
                Ok(Outcome::ClusterOnly)
            }
            ApplyRequest::ClusterVersionSet(x) => {
                self.cluster.version = Some(x.ver.clone());
                Ok(Outcome::ClusterOnly)
            }
            ApplyRequest::ClusterMemberAttrSet(x) => {
                let id = x.member_id;
                let m = self.cluster.members.entry(id).or_insert_with(|| Member {
                    id,
                    ..Member::default()
                });
                if let Some(a) = &x.member_attributes {
                    m.name = a.name.clone();
                    m.client_urls = a.client_urls.clone();
                }
                Ok(Outcome::ClusterOnly)
            }
            ApplyRequest::DowngradeInfoSet(x) => {
                self.cluster.downgrade = Some((x.ver.clone(), x.enabled));
                Ok(Outcome::ClusterOnly)
            }
            ApplyRequest::Range(rr) => self.range_request(rr, who),
            ApplyRequest::Put(p) => self.put_request(p, who, &mut w),
            ApplyRequest::DeleteRange(d) => self.delete_request(d, who, &mut w),
            ApplyRequest::Txn(t) => self.txn_request(index, t, who, &mut w),
            ApplyRequest::Compaction(c) => self.compaction(c, &mut w),
            ApplyRequest::LeaseGrant(g) => self.lease_grant(g, &mut w),
            ApplyRequest::LeaseRevoke(rv) => self.lease_revoke(rv.id, who, &mut w),
            ApplyRequest::LeaseCheckpoint(cp) => self.lease_checkpoint(cp, &mut w),
            ApplyRequest::Alarm(a) => self.alarm(a, &mut w),
            ApplyRequest::Authenticate(a) => self.authenticate(a),
            ApplyRequest::AuthEnable(_) => self.auth_enable(&mut w),
            ApplyRequest::AuthDisable(_) => self.auth_disable(&mut w),
            ApplyRequest::AuthStatus(_)
            | ApplyRequest::AuthUserGet(_)
            | ApplyRequest::AuthRoleGet(_)
            | ApplyRequest::AuthUserList(_)
            | ApplyRequest::AuthRoleList(_) => Ok(Outcome::NoChange),
            ApplyRequest::AuthUserAdd(u) => self.user_add(u, &mut w),
            ApplyRequest::AuthUserDelete(u) => self.user_delete(&u.name, &mut w),
            ApplyRequest::AuthUserChangePassword(u) => self.user_change_password(u, &mut w),
            ApplyRequest::AuthUserGrantRole(u) => self.user_grant_role(&u.user, &u.role, &mut w),
            ApplyRequest::AuthUserRevokeRole(u) => self.user_revoke_role(&u.name, &u.role, &mut w),
            ApplyRequest::AuthRoleAdd(x) => self.role_add(&x.name, &mut w),
            ApplyRequest::AuthRoleGrantPermission(x) => {
                match self.role_grant_permission(x, &mut w) {
                    Some(s) => s,
                    None => {
                        return (
                            Outcome::Unsupported(
                                "role grant permission without a permission (etcd 3.4 panics)"
                                    .into(),
                            ),
                            Vec::new(),
                        );
                    }
                }
            }
            ApplyRequest::AuthRoleRevokePermission(x) => self.role_revoke_permission(x, &mut w),
            ApplyRequest::AuthRoleDelete(x) => self.role_delete(&x.role, &mut w),
            ApplyRequest::None => {
                return (
                    Outcome::Unsupported(format!(
                        "request not implemented by etcd {:?} (it would panic)",
                        self.config.version
                    )),
                    Vec::new(),
                );
            }
        };
        match step {
            Ok(outcome) => (outcome, w.finish()),
            Err(e) => (Outcome::Rejected(e), Vec::new()),
        }
    }

    // ---------------------------------------------------------------- KV

    fn range_request(&self, r: &pb::RangeRequest, who: AuthInfo<'_>) -> Step {
        if self.chain.corrupt {
            return Err(Rejection::Corrupt);
        }
        if self.chain.auth {
            self.auth
                .check_op(who, &r.key, &r.range_end, Access::Read)?;
        }
        Ok(Outcome::NoChange)
    }

    fn put_request(&mut self, p: &PutRequest, who: AuthInfo<'_>, w: &mut Writer) -> Step {
        if self.chain.corrupt {
            return Err(Rejection::Corrupt);
        }
        if self.chain.capped {
            return Err(Rejection::NoSpace);
        }
        if self.chain.auth {
            self.auth.check_op(who, &p.key, &[], Access::Write)?;
            self.check_lease_puts(p.lease, who)?;
            if p.prev_kv {
                self.auth.check_op(who, &p.key, &[], Access::Read)?;
            }
        }
        if p.lease != 0 && !self.leases.contains_key(&p.lease) {
            return Err(Rejection::LeaseNotFound);
        }
        match self.put(p, w) {
            Ok(()) => {}
            Err(PutFailed::Rejected(r)) => return Err(r),
            Err(PutFailed::Value(e)) => return Ok(Outcome::ValueUnavailable(e.to_string())),
        }
        self.commit(w);
        Ok(Outcome::Applied)
    }

    /// WRITE permission on every key attached to the lease (`checkLeasePuts`).
    fn check_lease_puts(&self, lease: i64, who: AuthInfo<'_>) -> Result<(), Rejection> {
        if let Some(l) = self.leases.get(&lease) {
            for key in &l.keys {
                self.auth.check_op(who, key, &[], Access::Write)?;
            }
        }
        Ok(())
    }

    /// `applierV3backend.Put` inside a write txn: resolves ignore_value /
    /// ignore_lease against the current state and writes.
    fn put(&mut self, p: &PutRequest, w: &mut Writer) -> Result<(), PutFailed> {
        let (value, lease) = match resolve_put(p, &*self.values, || {
            self.kv.get(&p.key).map(|ks| (ks.value, ks.lease))
        }) {
            Ok(Some(r)) => r,
            Ok(None) => return Err(PutFailed::Rejected(Rejection::KeyNotFound)),
            Err(e) => return Err(PutFailed::Value(e)),
        };
        self.write_put(w, p.key.clone(), value, lease);
        Ok(())
    }

    fn delete_request(
        &mut self,
        d: &pb::DeleteRangeRequest,
        who: AuthInfo<'_>,
        w: &mut Writer,
    ) -> Step {
        if self.chain.corrupt {
            return Err(Rejection::Corrupt);
        }
        if self.chain.auth {
            self.auth
                .check_op(who, &d.key, &d.range_end, Access::Write)?;
            if d.prev_kv {
                self.auth
                    .check_op(who, &d.key, &d.range_end, Access::Read)?;
            }
        }
        self.delete_range(&d.key, &d.range_end, w);
        Ok(self.commit(w))
    }

    fn delete_range(&mut self, key: &[u8], range_end: &[u8], w: &mut Writer) {
        let keys: Vec<Bytes> = range(&self.kv, key, range_end)
            .map(|(k, _)| Bytes::copy_from_slice(k))
            .collect();
        for k in keys {
            self.write_delete(w, k);
        }
    }

    fn write_put(&mut self, w: &mut Writer, key: Bytes, value: Bytes, lease: i64) {
        let rev = self.revision + 1;
        // Values arrive as slices of a whole received message (up to 1 MiB
        // of entries). A stored slice would keep that buffer alive as long
        // as its key lives, so a short value the model keeps is an exact
        // copy (the index copies keys into its blocks). The writer and the
        // effects, which live only until the standby has them, use the
        // entry's own.
        let held = if value.len() <= INLINE_MAX {
            Value::Inline(Bytes::copy_from_slice(&value))
        } else {
            Value::intern(value.clone(), &*self.values)
        };
        let old_lease = match self.kv.get(&key) {
            Some(mut ks) => {
                w.existed.entry(key.clone()).or_insert(true);
                let old = ks.lease;
                let before = std::mem::replace(&mut ks.value, held);
                if let Value::Stored(s) = before {
                    self.values.release(&s.digest);
                }
                ks.mod_revision = rev;
                ks.version += 1;
                ks.lease = lease;
                self.kv.insert(&key, &ks);
                old
            }
            None => {
                w.existed.entry(key.clone()).or_insert(false);
                self.kv.insert(
                    &key,
                    &KeyState {
                        value: held,
                        create_revision: rev,
                        mod_revision: rev,
                        version: 1,
                        lease,
                    },
                );
                0
            }
        };
        // Always detach then attach (etcd detaches the key's actual
        // attachment, which may differ from its stored lease).
        if old_lease != 0
            && let Some(l) = self.leases.get_mut(&old_lease)
        {
            l.keys.remove(&key);
        }
        if lease != 0
            && let Some(l) = self.leases.get_mut(&lease)
        {
            // A copy, not the message's slice (see above).
            l.keys.insert(Bytes::copy_from_slice(&key));
        }
        w.changes += 1;
        w.keyed
            .push((key.clone(), Effect::Put { key, value, lease }));
    }

    fn write_delete(&mut self, w: &mut Writer, key: Bytes) {
        let Some(old) = self.kv.remove(&key) else {
            return;
        };
        if let Value::Stored(s) = &old.value {
            self.values.release(&s.digest);
        }
        w.existed.entry(key.clone()).or_insert(true);
        if old.lease != 0
            && let Some(l) = self.leases.get_mut(&old.lease)
        {
            l.keys.remove(&key);
        }
        w.changes += 1;
        w.keyed.push((key.clone(), Effect::Delete { key }));
    }

    /// Ends an mvcc write txn: one revision for all its changes, none if nothing changed.
    fn commit(&mut self, w: &Writer) -> Outcome {
        if w.changes > 0 {
            self.revision += 1;
            Outcome::Applied
        } else {
            Outcome::NoChange
        }
    }

    // --------------------------------------------------------------- Txn

    fn txn_request(
        &mut self,
        index: u64,
        t: &TxnRequest,
        who: AuthInfo<'_>,
        w: &mut Writer,
    ) -> Step {
        let t: Cow<'_, TxnRequest> = match self.config.txn_range_view {
            TxnRangeView::Follower => Cow::Owned(strip_ranges(t)),
            TxnRangeView::Proposer => Cow::Borrowed(t),
        };
        let t = t.as_ref();
        if self.chain.corrupt {
            return Err(Rejection::Corrupt);
        }
        if self.chain.capped && txn_has_top_level_put(t) {
            return Err(Rejection::NoSpace);
        }
        if self.chain.auth {
            self.check_txn_auth(t, who)?;
        }
        let plan = match self.plan(t) {
            Ok(plan) => plan,
            Err(e) => return Ok(Outcome::ValueUnavailable(e.to_string())),
        };
        let is_write = !txn_is_read_only(t);
        if is_write {
            self.check_puts(t, &plan)?;
        }
        self.check_ranges(t, &plan)?;
        if is_write {
            let mut deleted: Vec<(Bytes, Bytes)> = Vec::new();
            if self.ignore_after_delete(t, &plan, &mut deleted) {
                return Ok(Outcome::Unsupported(
                    "txn puts with ignore_value/ignore_lease a key it deleted before (etcd panics)"
                        .into(),
                ));
            }
            // Every write is resolved before the first one is made, so a
            // put that cannot be resolved halts with the state untouched.
            let mut writes = Vec::new();
            if let Err(failed) = self.plan_writes(t, &plan, &mut TxnView::default(), &mut writes) {
                let key = match failed {
                    PlanFailed::NoKey(key) => key,
                    PlanFailed::Value(e) => return Ok(Outcome::ValueUnavailable(e.to_string())),
                };
                // Unreachable: `check_puts` saw the key before the txn and
                // `ignore_after_delete` ruled out its deletion by an earlier
                // op, so the key still exists when its put runs. Halt rather
                // than guess should the two checks ever drift apart.
                return Ok(Outcome::Unsupported(format!(
                    "internal: txn put with ignore_value/ignore_lease found no key {} at index {index}",
                    b64::encode(&key)
                )));
            }
            self.apply_txn_writes(writes, w);
        }
        let changed = self.commit(w);
        Ok(if !plan.ok { Outcome::TxnElse } else { changed })
    }

    fn check_txn_auth(&self, t: &TxnRequest, who: AuthInfo<'_>) -> Result<(), Rejection> {
        for c in &t.compare {
            self.auth
                .check_op(who, &c.key, &c.range_end, Access::Read)?;
        }
        for op in t.success.iter().chain(t.failure.iter()) {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    self.auth
                        .check_op(who, &r.key, &r.range_end, Access::Read)?;
                }
                Some(request_op::Request::RequestPut(p)) => {
                    self.auth.check_op(who, &p.key, &[], Access::Write)?;
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    if d.prev_kv {
                        self.auth
                            .check_op(who, &d.key, &d.range_end, Access::Read)?;
                    }
                    self.auth
                        .check_op(who, &d.key, &d.range_end, Access::Write)?;
                }
                // Nested txns are not checked by 3.4.23 / 3.5.1.
                Some(request_op::Request::RequestTxn(_)) | None => {}
            }
        }
        Ok(())
    }

    /// `compareToPath`: every compare of the txn and of the nested txns of
    /// the chosen branches, against the state before the txn.
    /// `Err`: a long value an ordering compare needs could not be read.
    fn plan(&self, t: &TxnRequest) -> Result<Plan, ValueStoreError> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        let ops = if ok { &t.success } else { &t.failure };
        let nested = ops
            .iter()
            .filter_map(|op| match &op.request {
                Some(request_op::Request::RequestTxn(n)) => Some(self.plan(n)),
                _ => None,
            })
            .collect::<Result<_, _>>()?;
        Ok(Plan { ok, nested })
    }

    /// `applyCompare`.
    fn compare(&self, c: &pb::Compare) -> Result<bool, ValueStoreError> {
        use pb::compare::CompareTarget;
        let target = CompareTarget::try_from(c.target).ok();
        let mut kvs = range(&self.kv, &c.key, &c.range_end).peekable();
        if kvs.peek().is_none() {
            if target == Some(CompareTarget::Value) {
                return Ok(false);
            }
            let zero = KeyState {
                value: Value::default(),
                create_revision: 0,
                mod_revision: 0,
                version: 0,
                lease: 0,
            };
            return compare_kv(c, target, &zero, &*self.values);
        }
        for (_, ks) in kvs {
            if !compare_kv(c, target, &ks, &*self.values)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `checkPut` over the chosen path, against the state before the txn.
    fn check_puts(&self, t: &TxnRequest, plan: &Plan) -> Result<(), Rejection> {
        let ops = if plan.ok { &t.success } else { &t.failure };
        let mut nested = plan.nested.iter();
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) => {
                    if (p.ignore_value || p.ignore_lease) && !self.kv.contains_key(&p.key) {
                        return Err(Rejection::KeyNotFound);
                    }
                    if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                        return Err(Rejection::LeaseNotFound);
                    }
                }
                Some(request_op::Request::RequestTxn(n)) => {
                    if let Some(np) = nested.next() {
                        self.check_puts(n, np)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `checkRange` over the chosen path: read revisions must exist.
    fn check_ranges(&self, t: &TxnRequest, plan: &Plan) -> Result<(), Rejection> {
        let ops = if plan.ok { &t.success } else { &t.failure };
        let mut nested = plan.nested.iter();
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) if r.revision != 0 => {
                    if r.revision > self.revision {
                        return Err(Rejection::FutureRev);
                    }
                    if r.revision < self.compacted {
                        return Err(Rejection::Compacted);
                    }
                }
                Some(request_op::Request::RequestTxn(n)) => {
                    if let Some(np) = nested.next() {
                        self.check_ranges(n, np)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// True if a put with ignore_value/ignore_lease in the chosen path
    /// targets a key deleted earlier in the same txn (the proposer's
    /// overlap check rules this out; etcd would panic).
    fn ignore_after_delete(
        &self,
        t: &TxnRequest,
        plan: &Plan,
        deleted: &mut Vec<(Bytes, Bytes)>,
    ) -> bool {
        let ops = if plan.ok { &t.success } else { &t.failure };
        let mut nested = plan.nested.iter();
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    deleted.push((d.key.clone(), d.range_end.clone()));
                }
                Some(request_op::Request::RequestPut(p))
                    if (p.ignore_value || p.ignore_lease)
                        && deleted.iter().any(|(k, e)| in_range(&p.key, k, e)) =>
                {
                    return true;
                }
                Some(request_op::Request::RequestTxn(n)) => {
                    if let Some(np) = nested.next()
                        && self.ignore_after_delete(n, np, deleted)
                    {
                        return true;
                    }
                }
                _ => {}
            }
        }
        false
    }

    /// The writes of the chosen path in execution order, ignore_value /
    /// ignore_lease resolved against what the txn's earlier ops left
    /// (`applierV3backend.put` ranges inside the write txn). Reads only.
    fn plan_writes<'t>(
        &self,
        t: &'t TxnRequest,
        plan: &Plan,
        view: &mut TxnView,
        out: &mut Vec<TxnWrite<'t>>,
    ) -> Result<(), PlanFailed> {
        let ops = if plan.ok { &t.success } else { &t.failure };
        let mut nested = plan.nested.iter();
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) => {
                    let Some((value, lease)) =
                        resolve_put(p, &*self.values, || view.get(self, &p.key))
                            .map_err(PlanFailed::Value)?
                    else {
                        return Err(PlanFailed::NoKey(p.key.clone()));
                    };
                    view.put(&p.key, &value, lease);
                    out.push(TxnWrite::Put {
                        key: &p.key,
                        value,
                        lease,
                    });
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    view.delete(&d.key, &d.range_end);
                    out.push(TxnWrite::Delete {
                        key: &d.key,
                        range_end: &d.range_end,
                    });
                }
                Some(request_op::Request::RequestTxn(n)) => {
                    if let Some(np) = nested.next() {
                        self.plan_writes(n, np, view, out)?;
                    }
                }
                Some(request_op::Request::RequestRange(_)) | None => {}
            }
        }
        Ok(())
    }

    /// Makes the writes [`Model::plan_writes`] resolved. Cannot fail.
    fn apply_txn_writes(&mut self, writes: Vec<TxnWrite<'_>>, w: &mut Writer) {
        for write in writes {
            match write {
                TxnWrite::Put { key, value, lease } => {
                    self.write_put(w, key.clone(), value, lease);
                }
                TxnWrite::Delete { key, range_end } => self.delete_range(key, range_end, w),
            }
        }
    }

    // ------------------------------------------------- compaction, leases

    fn compaction(&mut self, c: &pb::CompactionRequest, w: &mut Writer) -> Step {
        if self.chain.corrupt {
            return Err(Rejection::Corrupt);
        }
        if c.revision <= self.compacted {
            return Err(Rejection::Compacted);
        }
        if c.revision > self.revision {
            return Err(Rejection::FutureRev);
        }
        self.compacted = c.revision;
        w.tail.push(Effect::Compact {
            revision: c.revision,
        });
        Ok(Outcome::Applied)
    }

    fn lease_grant(&mut self, g: &pb::LeaseGrantRequest, w: &mut Writer) -> Step {
        if self.chain.corrupt {
            return Err(Rejection::Corrupt);
        }
        if self.chain.capped {
            return Err(Rejection::NoSpace);
        }
        if g.id == 0 {
            return Err(Rejection::LeaseNotFound);
        }
        if g.ttl > MAX_LEASE_TTL {
            return Err(Rejection::LeaseTtlTooLarge);
        }
        if self.leases.contains_key(&g.id) {
            return Err(Rejection::LeaseExists);
        }
        let ttl = g.ttl.max(self.config.min_lease_ttl);
        self.leases.insert(
            g.id,
            LeaseState {
                ttl,
                remaining_ttl: 0,
                keys: BTreeSet::new(),
            },
        );
        w.tail.push(Effect::LeaseGrant { id: g.id, ttl });
        Ok(Outcome::Applied)
    }

    fn lease_revoke(&mut self, id: i64, who: AuthInfo<'_>, w: &mut Writer) -> Step {
        if self.chain.corrupt {
            return Err(Rejection::Corrupt);
        }
        if self.chain.auth {
            self.check_lease_puts(id, who)?;
        }
        let Some(lease) = self.leases.remove(&id) else {
            return Err(Rejection::LeaseNotFound);
        };
        // Sorted keys, one mvcc txn.
        for key in lease.keys {
            self.write_delete(w, key);
        }
        self.commit(w);
        w.tail.push(Effect::LeaseRevoke { id });
        Ok(Outcome::Applied)
    }

    fn lease_checkpoint(&mut self, cp: &pb::LeaseCheckpointRequest, w: &mut Writer) -> Step {
        for c in &cp.checkpoints {
            if let Some(l) = self.leases.get_mut(&c.id) {
                l.remaining_ttl = c.remaining_ttl;
                w.tail.push(Effect::LeaseCheckpoint {
                    id: c.id,
                    remaining_ttl: c.remaining_ttl,
                });
            }
        }
        Ok(if w.tail.is_empty() {
            Outcome::NoChange
        } else {
            Outcome::Applied
        })
    }

    // ------------------------------------------------------------ alarms

    fn alarm_count(&self, kind: AlarmKind) -> usize {
        self.alarms.range((kind, 0)..=(kind, u64::MAX)).count()
    }

    fn alarm(&mut self, a: &pb::AlarmRequest, w: &mut Writer) -> Step {
        let kind = AlarmKind::from_i32(a.alarm);
        let old = self.alarm_count(kind);
        match a.action {
            // ACTIVATE
            1 => {
                if kind == AlarmKind::None && self.config.version == EtcdMinor::V3_5 {
                    return Ok(Outcome::NoChange);
                }
                if !self.alarms.insert((kind, a.member_id)) {
                    return Ok(Outcome::NoChange);
                }
                w.tail.push(Effect::AlarmActivate {
                    member_id: a.member_id,
                    alarm: kind,
                });
                if old == 0 {
                    // Runtime activation: the alarm applier around the bare backend.
                    match kind {
                        AlarmKind::NoSpace => {
                            self.chain = ApplierChain {
                                auth: false,
                                capped: true,
                                corrupt: false,
                            }
                        }
                        AlarmKind::Corrupt => {
                            self.chain = ApplierChain {
                                auth: false,
                                capped: false,
                                corrupt: true,
                            }
                        }
                        _ => {}
                    }
                }
                Ok(Outcome::Applied)
            }
            // DEACTIVATE
            2 => {
                if !self.alarms.remove(&(kind, a.member_id)) {
                    return Ok(Outcome::NoChange);
                }
                w.tail.push(Effect::AlarmDeactivate {
                    member_id: a.member_id,
                    alarm: kind,
                });
                if old > 0
                    && self.alarm_count(kind) == 0
                    && matches!(kind, AlarmKind::NoSpace | AlarmKind::Corrupt)
                {
                    self.chain = ApplierChain::NORMAL;
                }
                Ok(Outcome::Applied)
            }
            // GET and unknown actions change nothing.
            _ => Ok(Outcome::NoChange),
        }
    }

    // -------------------------------------------------------------- auth

    fn authenticate(&self, a: &pb::InternalAuthenticateRequest) -> Step {
        if !self.auth.enabled {
            return Err(Rejection::AuthNotEnabled);
        }
        match self.auth.users.get(&a.name) {
            Some(u) if !u.no_password => Ok(Outcome::NoChange),
            _ => Err(Rejection::AuthFailed),
        }
    }

    fn auth_enable(&mut self, w: &mut Writer) -> Step {
        if self.auth.enabled {
            return Ok(Outcome::NoChange);
        }
        let Some(root) = self.auth.users.get(ROOT) else {
            return Err(Rejection::RootUserNotExist);
        };
        if !root.has_root_role() {
            return Err(Rejection::RootRoleNotExist);
        }
        self.auth.enabled = true;
        w.tail.push(Effect::AuthEnable);
        Ok(Outcome::Applied)
    }

    fn auth_disable(&mut self, w: &mut Writer) -> Step {
        if !self.auth.enabled {
            return Ok(Outcome::NoChange);
        }
        self.auth.enabled = false;
        self.auth.revision += 1;
        w.tail.push(Effect::AuthDisable);
        Ok(Outcome::Applied)
    }

    /// The password a user add / change-password entry leaves on the primary.
    fn select_password(&self, plain: &str, hashed: &str) -> Result<Password, Rejection> {
        if self.config.version == EtcdMinor::V3_4 || (!plain.is_empty() && hashed.is_empty()) {
            return Ok(Password::Plain(Bytes::copy_from_slice(plain.as_bytes())));
        }
        match b64::decode(hashed) {
            Some(_) => Ok(Password::Hashed(hashed.to_owned())),
            None => Err(Rejection::NoPasswordUser),
        }
    }

    fn user_add(&mut self, u: &pb::AuthUserAddRequest, w: &mut Writer) -> Step {
        if u.name.is_empty() {
            return Err(Rejection::UserEmpty);
        }
        if self.auth.users.contains_key(&u.name) {
            return Err(Rejection::UserAlreadyExist);
        }
        let no_password = u.options.as_ref().is_some_and(|o| o.no_password);
        let password = if no_password {
            Password::None
        } else {
            self.select_password(&u.password, &u.hashed_password)?
        };
        self.auth.users.insert(
            u.name.clone(),
            User {
                password: password.clone(),
                roles: Vec::new(),
                no_password,
            },
        );
        self.auth.revision += 1;
        w.tail.push(Effect::UserAdd {
            name: u.name.clone(),
            password,
            no_password,
        });
        Ok(Outcome::Applied)
    }

    fn user_delete(&mut self, name: &str, w: &mut Writer) -> Step {
        if self.auth.enabled && name == ROOT {
            return Err(Rejection::InvalidAuthMgmt);
        }
        if self.auth.users.remove(name).is_none() {
            return Err(Rejection::UserNotFound);
        }
        self.auth.revision += 1;
        w.tail.push(Effect::UserDelete {
            name: name.to_owned(),
        });
        Ok(Outcome::Applied)
    }

    fn user_change_password(
        &mut self,
        u: &pb::AuthUserChangePasswordRequest,
        w: &mut Writer,
    ) -> Step {
        let Some(user) = self.auth.users.get(&u.name) else {
            return Err(Rejection::UserNotFound);
        };
        // 3.5.1 leaves no-password users without a password; 3.4 hashes anyway.
        let password = if user.no_password && self.config.version == EtcdMinor::V3_5 {
            Password::None
        } else {
            self.select_password(&u.password, &u.hashed_password)?
        };
        if let Some(user) = self.auth.users.get_mut(&u.name) {
            user.password = password.clone();
        }
        self.auth.revision += 1;
        w.tail.push(Effect::UserChangePassword {
            name: u.name.clone(),
            password,
        });
        Ok(Outcome::Applied)
    }

    fn user_grant_role(&mut self, name: &str, role: &str, w: &mut Writer) -> Step {
        if !self.auth.users.contains_key(name) {
            return Err(Rejection::UserNotFound);
        }
        if role != ROOT && !self.auth.roles.contains_key(role) {
            return Err(Rejection::RoleNotFound);
        }
        let Some(user) = self.auth.users.get_mut(name) else {
            return Err(Rejection::UserNotFound);
        };
        match user.roles.binary_search_by(|r| r.as_str().cmp(role)) {
            Ok(_) => return Ok(Outcome::NoChange),
            Err(pos) => user.roles.insert(pos, role.to_owned()),
        }
        self.auth.revision += 1;
        w.tail.push(Effect::UserGrantRole {
            user: name.to_owned(),
            role: role.to_owned(),
        });
        Ok(Outcome::Applied)
    }

    fn user_revoke_role(&mut self, name: &str, role: &str, w: &mut Writer) -> Step {
        if self.auth.enabled && name == ROOT && role == ROOT {
            return Err(Rejection::InvalidAuthMgmt);
        }
        let Some(user) = self.auth.users.get_mut(name) else {
            return Err(Rejection::UserNotFound);
        };
        let before = user.roles.len();
        user.roles.retain(|r| r != role);
        if user.roles.len() == before {
            return Err(Rejection::RoleNotGranted);
        }
        self.auth.revision += 1;
        w.tail.push(Effect::UserRevokeRole {
            user: name.to_owned(),
            role: role.to_owned(),
        });
        Ok(Outcome::Applied)
    }

    fn role_add(&mut self, name: &str, w: &mut Writer) -> Step {
        if name.is_empty() {
            return Err(Rejection::RoleEmpty);
        }
        if self.auth.roles.contains_key(name) {
            return Err(Rejection::RoleAlreadyExist);
        }
        self.auth.roles.insert(name.to_owned(), Role::default());
        self.auth.revision += 1;
        w.tail.push(Effect::RoleAdd {
            name: name.to_owned(),
        });
        Ok(Outcome::Applied)
    }

    /// `None`: a 3.4 primary would crash on this entry.
    fn role_grant_permission(
        &mut self,
        x: &pb::AuthRoleGrantPermissionRequest,
        w: &mut Writer,
    ) -> Option<Step> {
        let v35 = self.config.version == EtcdMinor::V3_5;
        if x.perm.is_none() && v35 {
            return Some(Err(Rejection::PermissionNotGiven));
        }
        let Some(role) = self.auth.roles.get_mut(&x.name) else {
            return Some(Err(Rejection::RoleNotFound));
        };
        let p: &authpb::Permission = x.perm.as_ref()?;
        let perm = Permission {
            perm_type: PermType::from_i32(p.perm_type),
            key: p.key.clone(),
            range_end: p.range_end.clone(),
        };
        // Lower bound by key; only that element is checked for an update.
        let idx = role.perms.partition_point(|q| q.key < perm.key);
        match role.perms.get_mut(idx) {
            Some(q) if q.key == perm.key && q.range_end == perm.range_end => {
                q.perm_type = perm.perm_type;
            }
            _ => {
                // Appended then sorted by key (stable for etcd's small slices).
                let at = role.perms.partition_point(|q| q.key <= perm.key);
                role.perms.insert(at, perm.clone());
            }
        }
        self.auth.revision += 1;
        w.tail.push(Effect::RoleGrantPermission {
            role: x.name.clone(),
            perm,
        });
        Some(Ok(Outcome::Applied))
    }

    fn role_revoke_permission(
        &mut self,
        x: &pb::AuthRoleRevokePermissionRequest,
        w: &mut Writer,
    ) -> Step {
        let Some(role) = self.auth.roles.get_mut(&x.role) else {
            return Err(Rejection::RoleNotFound);
        };
        let before = role.perms.len();
        role.perms
            .retain(|q| !(q.key == x.key && q.range_end == x.range_end));
        if role.perms.len() == before {
            return Err(Rejection::PermissionNotGranted);
        }
        self.auth.revision += 1;
        w.tail.push(Effect::RoleRevokePermission {
            role: x.role.clone(),
            key: x.key.clone(),
            range_end: x.range_end.clone(),
        });
        Ok(Outcome::Applied)
    }

    fn role_delete(&mut self, name: &str, w: &mut Writer) -> Step {
        if self.auth.enabled && name == ROOT {
            return Err(Rejection::InvalidAuthMgmt);
        }
        if self.auth.roles.remove(name).is_none() {
            return Err(Rejection::RoleNotFound);
        }
        for user in self.auth.users.values_mut() {
            user.roles.retain(|r| r != name);
        }
        self.auth.revision += 1;
        w.tail.push(Effect::RoleDelete {
            name: name.to_owned(),
        });
        Ok(Outcome::Applied)
    }

    // ----------------------------------------------------------- cluster

    fn apply_v2(&mut self, r: &Request) {
        self.cluster.v2_requests += 1;
        if r.method != "PUT" {
            return;
        }
        if r.path == "/0/version" {
            self.cluster.version = Some(r.val.clone());
            return;
        }
        let Some(rest) = r.path.strip_prefix("/0/members/") else {
            return;
        };
        let Some(hex) = rest.strip_suffix("/attributes") else {
            return;
        };
        let Ok(id) = u64::from_str_radix(hex, 16) else {
            return;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.val) else {
            return;
        };
        let m = self.cluster.members.entry(id).or_insert_with(|| Member {
            id,
            ..Member::default()
        });
        if let Some(n) = v.get("name").and_then(|n| n.as_str()) {
            m.name = n.to_owned();
        }
        if let Some(urls) = v.get("clientURLs").and_then(|u| u.as_array()) {
            m.client_urls = urls
                .iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect();
        }
    }

    fn apply_conf_change(&mut self, cc: &ConfChange) {
        let id = cc.change.node_id;
        let ctx = cc.context.clone().unwrap_or_default();
        let members = &mut self.cluster.members;
        match cc.change.r#type {
            // AddNode / AddLearnerNode
            t @ (0 | 3) => {
                if ctx.is_promote {
                    if let Some(m) = members.get_mut(&id) {
                        m.is_learner = false;
                    }
                    return;
                }
                if self.cluster.removed.contains(&id) || members.contains_key(&id) {
                    return;
                }
                members.insert(
                    id,
                    Member {
                        id,
                        peer_urls: ctx.peer_urls,
                        name: ctx.name.unwrap_or_default(),
                        client_urls: ctx.client_urls,
                        is_learner: t == 3 || ctx.is_learner,
                    },
                );
            }
            // RemoveNode
            1 if members.remove(&id).is_some() => {
                self.cluster.removed.insert(id);
            }
            // UpdateNode
            2 => {
                if let Some(m) = members.get_mut(&id) {
                    m.peer_urls = ctx.peer_urls;
                }
            }
            _ => {}
        }
    }
}

/// Admin-only requests (`needAdminPermission`).
fn needs_admin(r: &InternalRaftRequest) -> bool {
    r.auth_enable.is_some()
        || r.auth_disable.is_some()
        || r.auth_status.is_some()
        || r.auth_user_add.is_some()
        || r.auth_user_delete.is_some()
        || r.auth_user_change_password.is_some()
        || r.auth_user_grant_role.is_some()
        || r.auth_user_revoke_role.is_some()
        || r.auth_role_add.is_some()
        || r.auth_role_grant_permission.is_some()
        || r.auth_role_revoke_permission.is_some()
        || r.auth_role_delete.is_some()
        || r.auth_user_list.is_some()
        || r.auth_role_list.is_some()
}

/// `isTxnReadonly`: every top-level op is a range.
fn txn_is_read_only(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(t.failure.iter())
        .all(|op| matches!(op.request, Some(request_op::Request::RequestRange(_))))
}

/// The capped applier's cost test: any top-level put in either branch.
fn txn_has_top_level_put(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(t.failure.iter())
        .any(|op| matches!(op.request, Some(request_op::Request::RequestPut(_))))
}

/// `removeNeedlessRangeReqs`: top-level range ops removed.
fn strip_ranges(t: &TxnRequest) -> TxnRequest {
    let keep = |ops: &[pb::RequestOp]| -> Vec<pb::RequestOp> {
        ops.iter()
            .filter(|op| !matches!(op.request, Some(request_op::Request::RequestRange(_))))
            .cloned()
            .collect()
    };
    TxnRequest {
        compare: t.compare.clone(),
        success: keep(&t.success),
        failure: keep(&t.failure),
    }
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

/// `compareKV`.
/// The value and lease a put writes: its own, or with `ignore_value` /
/// `ignore_lease` the key's current ones (`cur`, looked up only then).
/// `Ok(None)`: the key is needed but does not exist (etcd's "key not
/// found"); `Err`: its long value could not be read from `values`.
fn resolve_put(
    p: &PutRequest,
    values: &dyn ValueStore,
    cur: impl FnOnce() -> Option<(Value, i64)>,
) -> Result<Option<(Bytes, i64)>, ValueStoreError> {
    if !(p.ignore_value || p.ignore_lease) {
        return Ok(Some((p.value.clone(), p.lease)));
    }
    let Some((cur_value, cur_lease)) = cur() else {
        return Ok(None);
    };
    Ok(Some((
        if p.ignore_value {
            cur_value.bytes(values)?
        } else {
            p.value.clone()
        },
        if p.ignore_lease { cur_lease } else { p.lease },
    )))
}

/// `Err`: an ordering compare on a long value whose prefix does not decide
/// it, and the store could not give the bytes.
fn compare_kv(
    c: &pb::Compare,
    target: Option<pb::compare::CompareTarget>,
    ks: &KeyState,
    values: &dyn ValueStore,
) -> Result<bool, ValueStoreError> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    use std::cmp::Ordering;
    let ord = match target {
        Some(CompareTarget::Value) => {
            let v: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            match CompareResult::try_from(c.result) {
                // Equality needs no bytes: length and digest decide.
                Ok(CompareResult::Equal | CompareResult::NotEqual) | Err(_) => {
                    if ks.value.eq_bytes(v) {
                        Ordering::Equal
                    } else {
                        Ordering::Less
                    }
                }
                Ok(CompareResult::Greater | CompareResult::Less) => {
                    ks.value.cmp_bytes(v, values)?
                }
            }
        }
        Some(CompareTarget::Create) => {
            let v = match c.target_union {
                Some(TargetUnion::CreateRevision(v)) => v,
                _ => 0,
            };
            ks.create_revision.cmp(&v)
        }
        Some(CompareTarget::Mod) => {
            let v = match c.target_union {
                Some(TargetUnion::ModRevision(v)) => v,
                _ => 0,
            };
            ks.mod_revision.cmp(&v)
        }
        Some(CompareTarget::Version) => {
            let v = match c.target_union {
                Some(TargetUnion::Version(v)) => v,
                _ => 0,
            };
            ks.version.cmp(&v)
        }
        Some(CompareTarget::Lease) => {
            let v = match c.target_union {
                Some(TargetUnion::Lease(v)) => v,
                _ => 0,
            };
            ks.lease.cmp(&v)
        }
        // An unknown target compares as equal (result 0).
        None => Ordering::Equal,
    };
    Ok(match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        // An unknown result is true.
        Err(_) => true,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn put_op(key: &str, value: &str, ignore_value: bool) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
                ignore_value,
                ..Default::default()
            })),
        }
    }

    fn delete_op(key: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                pb::DeleteRangeRequest {
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    ..Default::default()
                },
            )),
        }
    }

    fn txn(success: Vec<pb::RequestOp>) -> Decoded {
        Decoded::Internal(Box::new(InternalRaftRequest {
            txn: Some(TxnRequest {
                success,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    fn seeded() -> Model {
        let mut m = Model::new();
        let a = m.apply(1, 1, &txn(vec![put_op("k", "v1", false)]));
        assert_eq!(a.outcome, Outcome::Applied);
        m
    }

    /// The impossible state (a put with ignore_value whose key an earlier op
    /// deleted) is caught by the write plan, which reads only: with the
    /// `ignore_after_delete` guard bypassed, planning fails and nothing changed.
    #[test]
    fn write_plan_refuses_unresolvable_put_without_mutating() {
        let m = seeded();
        let t = TxnRequest {
            success: vec![delete_op("k"), put_op("k", "", true)],
            ..Default::default()
        };
        let plan = m.plan(&t).unwrap();
        let mut out = Vec::new();
        let got = m.plan_writes(&t, &plan, &mut TxnView::default(), &mut out);
        assert!(matches!(got, Err(PlanFailed::NoKey(k)) if k == "k"));
        assert_eq!(m.value(b"k").unwrap(), Some(Bytes::from_static(b"v1")));
    }

    /// Through `apply`, the same txn halts with the state and index unchanged.
    #[test]
    fn ignore_value_after_delete_halts_unchanged() {
        let mut m = seeded();
        let rev = m.revision();
        let a = m.apply(2, 1, &txn(vec![delete_op("k"), put_op("k", "", true)]));
        assert!(a.outcome.is_halt(), "{:?}", a.outcome);
        assert!(a.effects.is_empty());
        assert_eq!(m.applied_index(), 1);
        assert_eq!(m.revision(), rev);
        assert_eq!(m.value(b"k").unwrap(), Some(Bytes::from_static(b"v1")));
    }

    /// ignore_value sees the txn's own earlier put, as etcd's write txn does.
    #[test]
    fn ignore_value_sees_earlier_put_of_the_txn() {
        let mut m = seeded();
        let a = m.apply(
            2,
            1,
            &txn(vec![put_op("k", "v2", false), put_op("k", "", true)]),
        );
        assert_eq!(a.outcome, Outcome::Applied);
        assert_eq!(m.value(b"k").unwrap(), Some(Bytes::from_static(b"v2")));
        assert_eq!(m.get(b"k").map(|k| k.version), Some(3));
    }
}
