//! Snapshot reconcile: make the standby equal to a leader snapshot by diff.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use etcd_standby_client::authpb;
use etcd_standby_model::{Password, SnapshotKey, SnapshotState, ValueStore};
use tracing::Instrument;

use crate::error::{Result, SinkError};
use crate::sink::{Checkpoint, KvOp, Sink, lock};
use crate::verify::{KeyCursor, Side, auth_enabled};

/// How often a long snapshot reconcile logs how far it got.
const RECONCILE_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Options of [`Sink::reconcile`].
#[derive(Debug, Clone, Copy)]
pub struct ReconcileOptions {
    /// Allow deleting more than `mass_delete_ratio` of the standby's keys.
    pub accept_mass_delete: bool,
    /// The share of the standby's replicated keys a reconcile may delete
    /// without `accept_mass_delete` (default 0.5).
    pub mass_delete_ratio: f64,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            accept_mass_delete: false,
            mass_delete_ratio: 0.5,
        }
    }
}

/// What a reconcile changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Replicated keys on the standby before.
    pub standby_keys: u64,
    /// Keys written (missing or different).
    pub put: u64,
    /// Keys deleted (the primary no longer has them).
    pub deleted: u64,
    /// Keys already equal.
    pub unchanged: u64,
    /// Leases granted.
    pub leases_granted: u64,
    /// Leases revoked.
    pub leases_revoked: u64,
    /// Auth RPCs made.
    pub auth_changes: u64,
    /// Users whose password could not be set (3.4 standby: no way to store a
    /// given hash); they were added without a password or kept theirs.
    pub passwords_not_set: Vec<String>,
    /// Standby txns.
    pub txns: u64,
    /// The checkpoint written.
    pub checkpoint: u64,
}

impl Sink {
    /// Reconciles the standby with a leader snapshot (`target`, read from
    /// the db) and writes checkpoint `index` / `term` (the snapshot's
    /// consistent index; resume at `index + 1`). Keys, leases and auth are
    /// diffed against the standby and only the difference is written, in
    /// fenced txns; keys the primary no longer has are deleted. When more
    /// than `mass_delete_ratio` of the standby's replicated keys would be
    /// deleted and `accept_mass_delete` is off, nothing is written:
    /// [`SinkError::MassDelete`].
    ///
    /// Long values the target holds by reference are compared by digest
    /// and read from `values` only when the standby must be given them. The
    /// standby is read a page at a time and merged with the target in key
    /// order, so memory does not grow with the values.
    pub async fn reconcile(
        &mut self,
        target: &SnapshotState,
        values: &dyn ValueStore,
        index: u64,
        term: u64,
        opts: ReconcileOptions,
    ) -> Result<ReconcileReport> {
        let span = tracing::info_span!(
            "sink_reconcile",
            source_cluster = %format_args!("{:016x}", self.cfg.source_cluster_id),
            index,
        );
        if self.cfg.preserve.is_some() {
            return Err(SinkError::RevisionsNotPreservable {
                index,
                reason: "a reconcile by diff writes the standby's own revisions (the local log \
                         jumps over a leader snapshot, or the standby lost state)"
                    .into(),
            });
        }
        // Everything given before lands first (the reconcile's checkpoint
        // chains to it), and a txn dropped by an earlier error is answered
        // before the checkpoint is trusted: it may have landed late.
        self.settle().await?;
        if self.has_abandoned() {
            self.resync().await?;
        }
        self.reconcile_inner(target, values, index, term, opts)
            .instrument(span)
            .await
    }

    async fn reconcile_inner(
        &mut self,
        target: &SnapshotState,
        values: &dyn ValueStore,
        index: u64,
        term: u64,
        opts: ReconcileOptions,
    ) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let keys = self.cfg.keys.clone();
        // Desired state: the replicated keys in key order (a model export
        // and an etcd db are sorted already; the first of repeats wins).
        let mut want: Vec<&SnapshotKey> = target
            .keys
            .iter()
            .filter(|k| keys.map(&k.key).is_some())
            .collect();
        if !want.is_sorted_by(|a, b| a.key < b.key) {
            want.sort_by(|a, b| a.key.cmp(&b.key));
            want.dedup_by(|a, b| a.key == b.key);
        }

        // Pass 1, keys only: how many keys the standby holds, and how many
        // the primary no longer has (the mass-delete guard writes nothing).
        let mut have = 0u64;
        let mut would_delete = 0u64;
        {
            let mut cursor = KeyCursor::new(
                &self.client,
                keys.standby_ranges(),
                (Side::Standby, 0),
                "read standby keys",
            )
            .keys_only();
            let mut at = 0usize;
            while let Some((k, _, _)) = cursor.next(&keys).await? {
                have += 1;
                while want.get(at).is_some_and(|w| w.key < k) {
                    at += 1;
                }
                if want.get(at).is_none_or(|w| w.key != k) {
                    would_delete += 1;
                }
            }
        }
        report.standby_keys = have;
        if would_delete > 0
            && !opts.accept_mass_delete
            && (would_delete as f64) > opts.mass_delete_ratio * (have as f64)
        {
            tracing::warn!(
                would_delete,
                total = have,
                "snapshot reconcile paused: mass delete"
            );
            return Err(SinkError::MassDelete {
                would_delete,
                total: have,
            });
        }
        report.deleted = would_delete;

        // Leases: grant missing before the puts, revoke extra after.
        let standby_leases: BTreeSet<i64> = self
            .client
            .lease_leases()
            .await
            .map_err(|e| SinkError::client("list the standby's leases", e))?
            .leases
            .into_iter()
            .map(|l| l.id)
            .collect();
        let target_leases: BTreeMap<i64, i64> = target
            .leases
            .iter()
            .filter(|l| l.id != 0)
            .map(|l| (l.id, l.ttl))
            .collect();
        for (id, ttl) in &target_leases {
            if standby_leases.contains(id) {
                self.keeper.track(*id, *ttl);
            } else {
                match self.client.lease_grant(*id, *ttl).await {
                    Ok(_) => {}
                    Err(e)
                        if e.etcd_error() == Some(etcd_standby_client::EtcdError::LeaseExists) => {}
                    Err(source) => {
                        return Err(SinkError::Lease {
                            index,
                            id: *id,
                            op: "grant",
                            source,
                        });
                    }
                }
                self.keeper.track(*id, *ttl);
                report.leases_granted += 1;
            }
        }

        // Pass 2: the standby merged with the target in key order; the
        // difference is written as it is found, in txns within the limits
        // (the checkpoint comes last, in its own txn).
        tracing::info!(
            standby_keys = have,
            target_keys = want.len(),
            deletes = would_delete,
            "snapshot reconcile: writing the difference"
        );
        let mut out = ReconcileWriter {
            chunk: Vec::new(),
            chunk_bytes: 0,
            index,
        };
        // A handle of our own: the cursor reads while the sink writes.
        let client = self.client.clone();
        let mut cursor = KeyCursor::new(
            &client,
            keys.standby_ranges(),
            (Side::Standby, 0),
            "read standby keys",
        );
        let mut standby = cursor.next(&keys).await?;
        let mut logged = std::time::Instant::now();
        for (done, w) in want.iter().enumerate() {
            if logged.elapsed() >= RECONCILE_PROGRESS_EVERY {
                logged = std::time::Instant::now();
                tracing::info!(done, total = want.len(), "snapshot reconcile progress");
            }
            while let Some((k, _, _)) = &standby
                && *k < w.key
            {
                if let Some(sk) = keys.map(k) {
                    self.reconcile_op(&mut out, sk, KvOp::Delete, &mut report)
                        .await?;
                }
                standby = cursor.next(&keys).await?;
            }
            let same = match &standby {
                Some((k, v, lease)) if *k == w.key => {
                    let same = w.state.value.eq_bytes(v) && *lease == w.state.lease;
                    standby = cursor.next(&keys).await?;
                    same
                }
                _ => false,
            };
            if same {
                report.unchanged += 1;
                continue;
            }
            let value = w
                .state
                .value
                .bytes(values)
                .map_err(|source| SinkError::ValueStore {
                    index,
                    key: crate::show_key(&w.key),
                    source,
                })?;
            if let Some(sk) = keys.map(&w.key) {
                let op = KvOp::Put {
                    value,
                    lease: w.state.lease,
                };
                self.reconcile_op(&mut out, sk, op, &mut report).await?;
                report.put += 1;
            }
        }
        while let Some((k, _, _)) = standby {
            if let Some(sk) = keys.map(&k) {
                self.reconcile_op(&mut out, sk, KvOp::Delete, &mut report)
                    .await?;
            }
            standby = cursor.next(&keys).await?;
        }
        if !out.chunk.is_empty() {
            self.write_txn(index, index, std::mem::take(&mut out.chunk), None)
                .await?;
            report.txns += 1;
        }
        for id in standby_leases.difference(&target_leases.keys().copied().collect()) {
            self.revoke(index, *id).await?;
            report.leases_revoked += 1;
        }

        self.reconcile_auth(target, index, &mut report).await?;

        let cp = Checkpoint {
            cluster_id: self.cfg.source_cluster_id,
            index,
            term,
            source_revision: None,
            revisions_preserved: false,
        };
        self.write_txn(index, index, Vec::new(), Some(cp)).await?;
        report.txns += 1;
        report.checkpoint = index;
        lock(&self.counters).stats.reconciles += 1;
        tracing::info!(
            put = report.put,
            deleted = report.deleted,
            unchanged = report.unchanged,
            leases_granted = report.leases_granted,
            leases_revoked = report.leases_revoked,
            auth_changes = report.auth_changes,
            "snapshot reconciled"
        );
        Ok(report)
    }

    /// Adds one key write of a reconcile, first writing the chunk if the
    /// write would not fit in it.
    async fn reconcile_op(
        &mut self,
        out: &mut ReconcileWriter,
        key: Bytes,
        op: KvOp,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let room = self.cfg.max_txn_ops - 1;
        let len = key.len()
            + if let KvOp::Put { value, .. } = &op {
                value.len()
            } else {
                0
            }
            + 16;
        if !out.chunk.is_empty()
            && (out.chunk.len() + 1 > room || out.chunk_bytes + len > self.cfg.max_request_bytes)
        {
            self.write_txn(out.index, out.index, std::mem::take(&mut out.chunk), None)
                .await?;
            report.txns += 1;
            out.chunk_bytes = 0;
        }
        out.chunk_bytes += len;
        out.chunk.push((key, op));
        Ok(())
    }

    async fn reconcile_auth(
        &self,
        target: &SnapshotState,
        index: u64,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let err = |what: String| {
            move |source| SinkError::Auth {
                index,
                what,
                source,
            }
        };
        let c = &self.client;
        let me = self.self_user().map(str::to_owned);
        let auth = &target.auth;
        // Roles: add missing, fix permissions.
        let have_roles: BTreeSet<String> = c
            .role_list()
            .await
            .map_err(err("list roles".into()))?
            .roles
            .into_iter()
            .collect();
        for (name, role) in &auth.roles {
            if !have_roles.contains(name) {
                c.role_add(name)
                    .await
                    .map_err(err(format!("add role {name:?}")))?;
                report.auth_changes += 1;
            }
            let have: Vec<authpb::Permission> = c
                .role_get(name)
                .await
                .map_err(err(format!("get role {name:?}")))?
                .perm;
            let want: Vec<authpb::Permission> = role
                .perms
                .iter()
                .map(|p| {
                    let (key, range_end) = self.cfg.keys.map_range(&p.key, &p.range_end);
                    authpb::Permission {
                        perm_type: p.perm_type.as_i32(),
                        key,
                        range_end,
                    }
                })
                .collect();
            for p in &have {
                if !want
                    .iter()
                    .any(|w| w.key == p.key && w.range_end == p.range_end)
                {
                    c.role_revoke_permission(name, p.key.clone(), p.range_end.clone())
                        .await
                        .map_err(err(format!("revoke a permission of role {name:?}")))?;
                    report.auth_changes += 1;
                }
            }
            for w in &want {
                if !have.contains(w) {
                    c.role_grant_permission(name, w.clone())
                        .await
                        .map_err(err(format!("grant a permission to role {name:?}")))?;
                    report.auth_changes += 1;
                }
            }
        }
        // Users.
        let have_users: BTreeSet<String> = c
            .user_list()
            .await
            .map_err(err("list users".into()))?
            .users
            .into_iter()
            .collect();
        for (name, user) in &auth.users {
            if me.as_deref() == Some(name.as_str()) {
                return Err(SinkError::SelfLockout {
                    index,
                    message: format!(
                        "the primary has a user {name:?}, the name of the replicator's standby user; \
                         use a dedicated replicator user"
                    ),
                });
            }
            let exists = have_users.contains(name);
            match (&user.password, self.is_v3_4()) {
                (Password::Hashed(_), true) => {
                    report.passwords_not_set.push(name.clone());
                    if !exists {
                        c.user_add(name, "", true)
                            .await
                            .map_err(err(format!("add user {name:?}")))?;
                        report.auth_changes += 1;
                    }
                }
                (pw, _) => {
                    if exists {
                        if !matches!(pw, Password::None) {
                            self.add_user(index, name, pw, user.no_password).await?;
                            report.auth_changes += 1;
                        }
                    } else {
                        self.add_user(index, name, pw, user.no_password).await?;
                        report.auth_changes += 1;
                    }
                }
            }
            let have_roles: BTreeSet<String> = c
                .user_get(name)
                .await
                .map_err(err(format!("get user {name:?}")))?
                .roles
                .into_iter()
                .collect();
            let want_roles: BTreeSet<String> = user.roles.iter().cloned().collect();
            for r in want_roles.difference(&have_roles) {
                c.user_grant_role(name, r)
                    .await
                    .map_err(err(format!("grant role {r:?} to {name:?}")))?;
                report.auth_changes += 1;
            }
            for r in have_roles.difference(&want_roles) {
                c.user_revoke_role(name, r)
                    .await
                    .map_err(err(format!("revoke role {r:?} from {name:?}")))?;
                report.auth_changes += 1;
            }
        }
        for name in have_users.iter() {
            if !auth.users.contains_key(name) && me.as_deref() != Some(name.as_str()) {
                c.user_delete(name)
                    .await
                    .map_err(err(format!("delete user {name:?}")))?;
                report.auth_changes += 1;
            }
        }
        for name in &have_roles {
            if !auth.roles.contains_key(name) && name != "root" {
                c.role_delete(name)
                    .await
                    .map_err(err(format!("delete role {name:?}")))?;
                report.auth_changes += 1;
            }
        }
        // Enabled flag last (our user is made root first).
        let enabled = auth_enabled(c).await?;
        if auth.enabled && !enabled {
            self.ensure_self_root(index).await?;
            c.auth_enable().await.map_err(err("enable auth".into()))?;
            report.auth_changes += 1;
        } else if !auth.enabled && enabled {
            c.auth_disable().await.map_err(err("disable auth".into()))?;
            report.auth_changes += 1;
        }
        Ok(())
    }
}

/// The txn a reconcile is filling.
struct ReconcileWriter {
    chunk: Vec<(Bytes, KvOp)>,
    chunk_bytes: usize,
    /// The checkpoint index the reconcile writes.
    index: u64,
}
