//! The model's view of an etcd backend: a bbolt db read into an
//! [`etcd_standby_model::SnapshotState`] (what the shadow model is seeded
//! from after a leader snapshot or at a restart).
//!
//! Lives here, not in the model, so that the model depends only on the
//! protobuf types and the decoder and never on a file reader.
use base64::Engine;
use etcd_standby_model::{
    AlarmKind, AuthState, KeyState, Password, PermType, Permission, Role, SnapshotKey,
    SnapshotLease, SnapshotState, User, Value, ValueStore,
};

use crate::{BoltError, BoltFile, etcd};

/// Reads an etcd backend (a `member/snap/db`, a `.snap.db` from a leader, or
/// an `etcdctl snapshot save` file opened with its trailer stripped) the way
/// a restarting etcd member loads it: live keys, current and compacted
/// revision, leases, auth store, alarms, consistent index and term
/// (`extras: None`).
///
/// Values are held in the returned state; for a large db use
/// [`model_state_in`].
pub fn model_state(db: &BoltFile) -> Result<SnapshotState, BoltError> {
    read_state(db, None)
}

/// [`model_state`] with long values moved to `values` as they are read
/// ([`Value::stage`]): memory follows the keys, not the values. Build the
/// model with `Model::from_snapshot_in(.., values)`.
pub fn model_state_in(db: &BoltFile, values: &dyn ValueStore) -> Result<SnapshotState, BoltError> {
    read_state(db, Some(values))
}

fn read_state(db: &BoltFile, values: Option<&dyn ValueStore>) -> Result<SnapshotState, BoltError> {
    let meta = etcd::read_meta(db)?;
    let compacted = meta.compact_revision();
    let live = etcd::live_keys(db)?;
    let revision = meta.restored_revision(live.stats().latest);
    let mut keys = Vec::new();
    for k in live {
        let k = k?;
        keys.push(SnapshotKey {
            key: k.key,
            state: KeyState {
                value: match values {
                    Some(store) => Value::stage(k.value, store),
                    None => Value::Inline(k.value),
                },
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
            // The model keeps bcrypt hashes as 3.5 entries carry them:
            // standard base64, padded (Go's `base64.StdEncoding`).
            Password::Hashed(base64::engine::general_purpose::STANDARD.encode(&u.password))
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
        revision,
        compacted,
        leases,
        auth,
        alarms,
        consistent_index: meta.consistent_index.unwrap_or(0),
        term: meta.term.unwrap_or(0),
        extras: None,
    })
}
