//! The auth store (`server/auth/store.go`, `range_perm_cache.go`).
use std::cmp::Ordering;
use std::collections::BTreeMap;

use bytes::Bytes;

use crate::types::{Password, Rejection};

/// The name of the root user and of the root role.
pub(crate) const ROOT: &str = "root";

/// Permission type (`authpb.Permission.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PermType {
    /// READ (0).
    Read,
    /// WRITE (1).
    Write,
    /// READWRITE (2).
    ReadWrite,
    /// A value etcd does not define (grants nothing).
    Other(i32),
}

impl PermType {
    /// From the wire value.
    pub fn from_i32(v: i32) -> Self {
        match v {
            0 => PermType::Read,
            1 => PermType::Write,
            2 => PermType::ReadWrite,
            o => PermType::Other(o),
        }
    }

    /// The wire value.
    pub fn as_i32(self) -> i32 {
        match self {
            PermType::Read => 0,
            PermType::Write => 1,
            PermType::ReadWrite => 2,
            PermType::Other(o) => o,
        }
    }

    fn grants_read(self) -> bool {
        matches!(self, PermType::Read | PermType::ReadWrite)
    }

    fn grants_write(self) -> bool {
        matches!(self, PermType::Write | PermType::ReadWrite)
    }
}

/// A key permission of a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// Type.
    pub perm_type: PermType,
    /// Key (or range start).
    pub key: Bytes,
    /// Range end: empty = the single key, `"\0"` = every key `>= key`.
    pub range_end: Bytes,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Password as stored by the primary (a secret).
    pub password: Password,
    /// Granted roles, sorted.
    pub roles: Vec<String>,
    /// Added with `no_password`.
    pub no_password: bool,
}

impl User {
    pub(crate) fn has_root_role(&self) -> bool {
        self.roles
            .binary_search_by(|r| r.as_str().cmp(ROOT))
            .is_ok()
    }
}

/// A role.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Role {
    /// Permissions, sorted by key (etcd's order).
    pub perms: Vec<Permission>,
}

/// The auth store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthState {
    /// Authentication enabled.
    pub enabled: bool,
    /// Auth store revision (1 for a fresh store).
    pub revision: u64,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Roles by name.
    pub roles: BTreeMap<String, Role>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

/// Who sent a request (`RequestHeader.username` / `auth_revision`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuthInfo<'a> {
    pub user: &'a str,
    pub revision: u64,
}

/// Read or write access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

impl AuthState {
    /// `isOpPermitted`: the per-request check of KV operations.
    pub(crate) fn check_op(
        &self,
        who: AuthInfo<'_>,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), Rejection> {
        if !self.enabled {
            return Ok(());
        }
        if who.revision == 0 {
            return Err(Rejection::UserEmpty);
        }
        if who.revision < self.revision {
            return Err(Rejection::AuthOldRevision);
        }
        let Some(user) = self.users.get(who.user) else {
            return Err(Rejection::PermissionDenied);
        };
        if user.has_root_role() {
            return Ok(());
        }
        let intervals = self.merged(user, access);
        let ok = if range_end.is_empty() {
            intersects_point(&intervals, key)
        } else {
            let end: &[u8] = if range_end == [0] { &[] } else { range_end };
            contains(&intervals, key, end)
        };
        if ok {
            Ok(())
        } else {
            Err(Rejection::PermissionDenied)
        }
    }

    /// `IsAdminPermitted`: admin-only requests (no auth-revision check).
    pub(crate) fn check_admin(&self, who: AuthInfo<'_>) -> Result<(), Rejection> {
        if !self.enabled {
            return Ok(());
        }
        if who.user.is_empty() {
            return Err(Rejection::UserEmpty);
        }
        match self.users.get(who.user) {
            None => Err(Rejection::UserNotFound),
            Some(u) if u.has_root_role() => Ok(()),
            Some(_) => Err(Rejection::PermissionDenied),
        }
    }

    /// The user's permissions of one access type as affine intervals, in the
    /// order etcd's interval tree visits them (by start, then insertion).
    fn merged(&self, user: &User, access: Access) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for role in &user.roles {
            let Some(role) = self.roles.get(role) else {
                continue;
            };
            for p in &role.perms {
                let grants = match access {
                    Access::Read => p.perm_type.grants_read(),
                    Access::Write => p.perm_type.grants_write(),
                };
                if !grants {
                    continue;
                }
                out.push(perm_interval(p));
            }
        }
        // Stable: equal starts keep insertion order, like the tree.
        out.sort_by(|a, b| affine_cmp(&a.0, &b.0));
        out
    }
}

/// A permission as an affine interval `[begin, end)`; an empty bound is +∞
/// (`adt.BytesAffineComparable`).
fn perm_interval(p: &Permission) -> (Vec<u8>, Vec<u8>) {
    if p.range_end.is_empty() {
        // A point: [key, key + "\0").
        let mut end = p.key.to_vec();
        end.push(0);
        (p.key.to_vec(), end)
    } else if p.range_end.as_ref() == [0] {
        (p.key.to_vec(), Vec::new())
    } else {
        (p.key.to_vec(), p.range_end.to_vec())
    }
}

/// etcd's affine byte order: the empty slice is +∞.
fn affine_cmp(a: &[u8], b: &[u8]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// `Interval.Compare(...) == 0` in etcd's adt: the intervals overlap.
fn overlaps(q: (&[u8], &[u8]), n: (&[u8], &[u8])) -> bool {
    let left = affine_cmp(q.0, n.0) == Ordering::Less && affine_cmp(q.1, n.0) != Ordering::Greater;
    let right = affine_cmp(q.0, n.1) != Ordering::Less;
    !left && !right
}

/// `IntervalTree.Intersects(point)`.
fn intersects_point(intervals: &[(Vec<u8>, Vec<u8>)], key: &[u8]) -> bool {
    let mut end = key.to_vec();
    end.push(0);
    intervals.iter().any(|(b, e)| overlaps((key, &end), (b, e)))
}

/// `IntervalTree.Contains(ivl)`: the union of the intervals covers `[begin, end)`.
fn contains(intervals: &[(Vec<u8>, Vec<u8>)], begin: &[u8], end: &[u8]) -> bool {
    let mut min_begin: Option<&[u8]> = None;
    let mut max_end: &[u8] = &[];
    for (b, e) in intervals {
        if !overlaps((begin, end), (b, e)) {
            continue;
        }
        match min_begin {
            None => {
                min_begin = Some(b);
                max_end = e;
            }
            Some(_) => {
                if affine_cmp(max_end, b) == Ordering::Less {
                    return false;
                }
                if affine_cmp(e, max_end) == Ordering::Greater {
                    max_end = e;
                }
            }
        }
    }
    match min_begin {
        None => false,
        Some(mb) => {
            affine_cmp(max_end, end) != Ordering::Less && affine_cmp(mb, begin) != Ordering::Greater
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn state(perms: Vec<Permission>) -> AuthState {
        let mut a = AuthState {
            enabled: true,
            revision: 5,
            ..Default::default()
        };
        a.roles.insert("r".into(), Role { perms });
        a.users.insert(
            "u".into(),
            User {
                password: Password::None,
                roles: vec!["r".into()],
                no_password: false,
            },
        );
        a.users.insert(
            "root".into(),
            User {
                password: Password::None,
                roles: vec!["root".into()],
                no_password: false,
            },
        );
        a
    }

    fn p(t: PermType, k: &str, e: &[u8]) -> Permission {
        Permission {
            perm_type: t,
            key: Bytes::copy_from_slice(k.as_bytes()),
            range_end: Bytes::copy_from_slice(e),
        }
    }

    const U: AuthInfo<'static> = AuthInfo {
        user: "u",
        revision: 5,
    };

    #[test]
    fn disabled_allows_everything() {
        let mut a = state(vec![]);
        a.enabled = false;
        let nobody = AuthInfo {
            user: "",
            revision: 0,
        };
        assert_eq!(a.check_op(nobody, b"k", b"", Access::Write), Ok(()));
        assert_eq!(a.check_admin(nobody), Ok(()));
    }

    #[test]
    fn revision_rules() {
        let a = state(vec![p(PermType::ReadWrite, "k", b"")]);
        let zero = AuthInfo {
            user: "u",
            revision: 0,
        };
        assert_eq!(
            a.check_op(zero, b"k", b"", Access::Read),
            Err(Rejection::UserEmpty)
        );
        let old = AuthInfo {
            user: "u",
            revision: 4,
        };
        assert_eq!(
            a.check_op(old, b"k", b"", Access::Read),
            Err(Rejection::AuthOldRevision)
        );
        let newer = AuthInfo {
            user: "u",
            revision: 9,
        };
        assert_eq!(a.check_op(newer, b"k", b"", Access::Read), Ok(()));
        // Root also needs a current revision for KV ops.
        let root_old = AuthInfo {
            user: "root",
            revision: 4,
        };
        assert_eq!(
            a.check_op(root_old, b"x", b"", Access::Write),
            Err(Rejection::AuthOldRevision)
        );
        // Admin checks ignore the revision.
        assert_eq!(a.check_admin(root_old), Ok(()));
        assert_eq!(a.check_admin(U), Err(Rejection::PermissionDenied));
        let ghost = AuthInfo {
            user: "ghost",
            revision: 5,
        };
        assert_eq!(a.check_admin(ghost), Err(Rejection::UserNotFound));
        assert_eq!(
            a.check_op(ghost, b"k", b"", Access::Read),
            Err(Rejection::PermissionDenied)
        );
    }

    #[test]
    fn point_and_range_permissions() {
        let a = state(vec![
            p(PermType::Read, "a", b"c"),
            p(PermType::Write, "k", b""),
            p(PermType::ReadWrite, "p/", b"p0"),
            p(PermType::ReadWrite, "z", b"\0"),
        ]);
        let ok = |k: &str, e: &[u8], acc| a.check_op(U, k.as_bytes(), e, acc).is_ok();
        assert!(ok("b", b"", Access::Read));
        assert!(!ok("b", b"", Access::Write));
        assert!(ok("k", b"", Access::Write));
        assert!(!ok("k", b"", Access::Read));
        assert!(!ok("k0", b"", Access::Write));
        assert!(ok("a", b"c", Access::Read));
        assert!(ok("ab", b"bz", Access::Read));
        assert!(!ok("a", b"d", Access::Read));
        assert!(ok("p/x", b"p/y", Access::Write));
        assert!(ok("z", b"\0", Access::Write));
        assert!(ok("zzz", b"\0", Access::Read));
        assert!(!ok("y", b"\0", Access::Read));
        assert!(ok("zz", b"", Access::Write));
        // The root role bypasses everything.
        let root = AuthInfo {
            user: "root",
            revision: 5,
        };
        assert_eq!(a.check_op(root, b"\0", b"\0", Access::Write), Ok(()));
    }

    #[test]
    fn ranges_must_be_fully_covered_by_the_union() {
        let a = state(vec![
            p(PermType::Read, "a", b"c"),
            p(PermType::Read, "c", b"e"),
            p(PermType::Read, "f", b"g"),
        ]);
        let ok = |k: &str, e: &str| {
            a.check_op(U, k.as_bytes(), e.as_bytes(), Access::Read)
                .is_ok()
        };
        assert!(ok("a", "e"));
        assert!(ok("b", "d"));
        assert!(!ok("b", "f"));
        assert!(!ok("a", "g"));
        assert!(ok("f", "g"));
    }
}
