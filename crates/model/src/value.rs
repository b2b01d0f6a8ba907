//! Values out of RAM: the model keeps a key's value inline only when it is
//! short; a longer value is held as its length, a 128-bit digest and its
//! first [`INLINE_MAX`] bytes, and its bytes live in a [`ValueStore`].
//!
//! Why this shape: the primary decides `compare VALUE` and `ignore_value`
//! puts at apply time, so the model needs the value's *meaning*, not its
//! bytes, for almost every entry:
//!
//! * equality (`EQUAL` / `NOT_EQUAL`, what etcd clients use) is the length
//!   and the digest (SHA-256, first 16 bytes: a collision needs about 2⁶⁴
//!   work, so a client cannot steer a compare);
//! * ordering (`LESS` / `GREATER`) is decided by the prefix unless the
//!   compare's operand shares it; only then are the bytes read from the
//!   store;
//! * an `ignore_value` put, a reconcile write and the saved model's
//!   companion need the bytes: the store has them.
//!
//! The store is an interface so the model stays sans-IO and deterministic:
//! [`MemValues`] keeps the bytes in memory (tests, short-lived tools); the
//! daemon's store is a crash-safe file next to the saved model.
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

/// Values up to this length are kept inline; longer ones keep this many
/// leading bytes as their prefix.
pub const INLINE_MAX: usize = 16;

/// A value's identity in a [`ValueStore`]: the first 16 bytes of its SHA-256.
pub type Digest = [u8; 16];

/// The digest of `value`.
pub fn digest(value: &[u8]) -> Digest {
    let full = Sha256::digest(value);
    let mut d = [0u8; 16];
    d.copy_from_slice(&full[..16]);
    d
}

/// A value held by reference: length, digest and the first [`INLINE_MAX`]
/// bytes (the value is longer than that).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoredValue {
    /// Length in bytes.
    pub len: u32,
    /// [`digest`] of the bytes.
    pub digest: Digest,
    /// The first [`INLINE_MAX`] bytes.
    pub prefix: [u8; INLINE_MAX],
}

impl fmt::Debug for StoredValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stored({} bytes, ", self.len)?;
        for b in &self.digest[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// A key's value as the model holds it.
///
/// `Inline` holds the bytes themselves: always for a value of at most
/// [`INLINE_MAX`] bytes inside a model, and for values of any length in
/// hand (an entry's value, a state read from an etcd db or an old saved
/// model before the model interns it). Equality is by meaning: an inline
/// value equals a stored one with the same length and digest.
#[derive(Clone)]
pub enum Value {
    /// The bytes.
    Inline(Bytes),
    /// A reference into a [`ValueStore`].
    Stored(StoredValue),
}

impl Default for Value {
    fn default() -> Self {
        Value::Inline(Bytes::new())
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Inline(b) => write!(f, "{b:?}"),
            Value::Stored(s) => write!(f, "{s:?}"),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Inline(a), Value::Inline(b)) => a == b,
            (Value::Stored(a), Value::Stored(b)) => a.len == b.len && a.digest == b.digest,
            (Value::Inline(a), Value::Stored(s)) | (Value::Stored(s), Value::Inline(a)) => {
                a.len() == s.len as usize && digest(a) == s.digest
            }
        }
    }
}

impl Eq for Value {}

impl From<Bytes> for Value {
    fn from(b: Bytes) -> Self {
        Value::Inline(b)
    }
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Self {
        Value::Inline(Bytes::from_static(s.as_bytes()))
    }
}

impl Value {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Value::Inline(b) => b.len(),
            Value::Stored(s) => s.len as usize,
        }
    }

    /// True for the empty value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when held inline.
    pub fn inline(&self) -> Option<&Bytes> {
        match self {
            Value::Inline(b) => Some(b),
            Value::Stored(_) => None,
        }
    }

    /// The digest (computed for an inline value).
    pub fn digest(&self) -> Digest {
        match self {
            Value::Inline(b) => digest(b),
            Value::Stored(s) => s.digest,
        }
    }

    /// True if the value's bytes are `other` (no store read).
    pub fn eq_bytes(&self, other: &[u8]) -> bool {
        match self {
            Value::Inline(b) => b.as_ref() == other,
            Value::Stored(s) => s.len as usize == other.len() && s.digest == digest(other),
        }
    }

    /// The value's bytes, read from `store` when held by reference.
    pub fn bytes(&self, store: &dyn ValueStore) -> Result<Bytes, ValueStoreError> {
        match self {
            Value::Inline(b) => Ok(b.clone()),
            Value::Stored(s) => store.get(&s.digest)?.ok_or(ValueStoreError::Missing {
                digest: s.digest,
                len: s.len,
            }),
        }
    }

    /// `bytes.Compare(value, other)`: by the prefix when it decides, else
    /// with the bytes read from `store`.
    pub fn cmp_bytes(
        &self,
        other: &[u8],
        store: &dyn ValueStore,
    ) -> Result<Ordering, ValueStoreError> {
        match self {
            Value::Inline(b) => Ok(b.as_ref().cmp(other)),
            Value::Stored(s) => {
                let n = other.len().min(INLINE_MAX);
                match s.prefix[..n].cmp(&other[..n]) {
                    Ordering::Equal if other.len() <= INLINE_MAX => {
                        // `other` is a prefix of the (longer) value.
                        Ok(Ordering::Greater)
                    }
                    Ordering::Equal => Ok(self.bytes(store)?.as_ref().cmp(other)),
                    decided => Ok(decided),
                }
            }
        }
    }

    /// [`Value::intern`] for a state being built: the bytes are staged in
    /// `store` ([`ValueStore::stage`]), no reference is counted.
    pub fn stage(bytes: Bytes, store: &dyn ValueStore) -> Value {
        Value::by_ref(bytes, |d, b| store.stage(d, b))
    }

    /// The form a model keeps: inline when short, else the bytes go to
    /// `store` (one reference taken) and a [`StoredValue`] stays.
    pub fn intern(bytes: Bytes, store: &dyn ValueStore) -> Value {
        Value::by_ref(bytes, |d, b| store.put(d, b))
    }

    /// Inline when short, else a [`StoredValue`] after `keep` got the bytes.
    fn by_ref(bytes: Bytes, keep: impl FnOnce(&Digest, &Bytes)) -> Value {
        if bytes.len() <= INLINE_MAX {
            return Value::Inline(bytes);
        }
        let s = StoredValue::of(&bytes);
        keep(&s.digest, &bytes);
        Value::Stored(s)
    }
}

impl StoredValue {
    /// The reference to `bytes` (longer than [`INLINE_MAX`]; a longer than
    /// u32 value cannot reach etcd, whose requests are at most 2 GiB).
    pub fn of(bytes: &[u8]) -> StoredValue {
        let mut prefix = [0u8; INLINE_MAX];
        let n = bytes.len().min(INLINE_MAX);
        prefix[..n].copy_from_slice(&bytes[..n]);
        StoredValue {
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            digest: digest(bytes),
            prefix,
        }
    }
}

/// A value store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueStoreError {
    /// The store does not have a value the model refers to.
    #[error("value store: no value with digest {} ({len} bytes)", hex(digest))]
    Missing {
        /// Its digest.
        digest: Digest,
        /// Its length.
        len: u32,
    },
    /// The store could not be read.
    #[error("value store: {0}")]
    Io(String),
}

/// Lower-case hex of a digest, for messages.
pub fn hex(d: &Digest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the model keeps the bytes of long values, addressed by digest.
///
/// The model calls [`ValueStore::put`] when a key starts holding a value,
/// [`ValueStore::release`] when a key stops holding it and
/// [`ValueStore::add_ref`] when it adopts a reference from a saved state,
/// so a store may count references. `put` and `release` never fail: a store
/// on disk buffers them and reports write errors from its own flush, so an
/// entry is never half applied. Reads may fail; the model then halts the
/// entry with [`crate::Outcome::ValueUnavailable`], state untouched.
pub trait ValueStore: Send + Sync + fmt::Debug {
    /// A key now holds `value` (digest `d`).
    fn put(&self, d: &Digest, value: &Bytes);
    /// Keeps `value` for a state being built (a db read with
    /// `etcd_standby_bolt::model_state_in`) without counting a reference:
    /// the model that adopts the state takes one ([`ValueStore::add_ref`]).
    fn stage(&self, d: &Digest, value: &Bytes);
    /// A key adopted a reference to `d` from a saved state (the bytes are
    /// expected to be in the store already).
    fn add_ref(&self, d: &Digest);
    /// A key stopped holding `d`.
    fn release(&self, d: &Digest);
    /// The bytes with digest `d`.
    fn get(&self, d: &Digest) -> Result<Option<Bytes>, ValueStoreError>;
    /// The store a copy of the model uses ([`crate::Model`]'s `Clone`): a
    /// deep copy for a counting in-memory store, the same store for one
    /// that collects garbage against a live set.
    fn fork(&self) -> Arc<dyn ValueStore>;
}

/// An in-memory, reference-counted [`ValueStore`]: memory follows the live
/// values (what the model held before values moved out). The default store.
#[derive(Debug, Default)]
pub struct MemValues {
    map: Mutex<HashMap<Digest, (Bytes, u64)>>,
}

impl MemValues {
    /// An empty store behind an `Arc`, as models take it.
    pub fn new_shared() -> Arc<dyn ValueStore> {
        Arc::new(MemValues::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, (Bytes, u64)>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every update is one map operation).
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Distinct values held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True if no value is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// References held to `d` (0 if absent).
    pub fn refs(&self, d: &Digest) -> u64 {
        self.lock().get(d).map_or(0, |(_, n)| *n)
    }
}

impl ValueStore for MemValues {
    // Copies, as the model's own keys are: `value` may be a slice of a
    // whole received entry, which a kept slice would keep alive.
    fn put(&self, d: &Digest, value: &Bytes) {
        self.lock()
            .entry(*d)
            .and_modify(|(_, n)| *n += 1)
            .or_insert_with(|| (Bytes::copy_from_slice(value), 1));
    }

    fn stage(&self, d: &Digest, value: &Bytes) {
        self.lock()
            .entry(*d)
            .or_insert_with(|| (Bytes::copy_from_slice(value), 0));
    }

    fn add_ref(&self, d: &Digest) {
        if let Some((_, n)) = self.lock().get_mut(d) {
            *n += 1;
        }
    }

    fn release(&self, d: &Digest) {
        let mut map = self.lock();
        if let Some((_, n)) = map.get_mut(d) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(d);
            }
        }
    }

    fn get(&self, d: &Digest) -> Result<Option<Bytes>, ValueStoreError> {
        Ok(self.lock().get(d).map(|(b, _)| b.clone()))
    }

    fn fork(&self) -> Arc<dyn ValueStore> {
        Arc::new(MemValues {
            map: Mutex::new(self.lock().clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn stored(v: &[u8], store: &MemValues) -> Value {
        Value::intern(Bytes::copy_from_slice(v), store)
    }

    #[test]
    fn short_values_stay_inline_and_long_ones_go_to_the_store() {
        let s = MemValues::default();
        assert!(matches!(stored(&[7; INLINE_MAX], &s), Value::Inline(_)));
        let v = stored(&[7; INLINE_MAX + 1], &s);
        assert!(matches!(v, Value::Stored(_)));
        assert_eq!(s.len(), 1);
        assert_eq!(v.bytes(&s).unwrap().as_ref(), &[7; INLINE_MAX + 1]);
    }

    #[test]
    fn ordering_by_reference_agrees_with_byte_ordering() {
        let s = MemValues::default();
        let values: Vec<Vec<u8>> = vec![
            vec![],
            b"a".to_vec(),
            b"aaaaaaaaaaaaaaaa".to_vec(),
            b"aaaaaaaaaaaaaaaaa".to_vec(),
            b"aaaaaaaaaaaaaaaab".to_vec(),
            b"aaaaaaaaaaaaaaaaab".to_vec(),
            b"aaaaaaaaaaaaaaab".to_vec(),
            b"b".to_vec(),
            vec![0xff; 40],
            vec![0; 40],
        ];
        for a in &values {
            let va = stored(a, &s);
            for b in &values {
                assert_eq!(va.cmp_bytes(b, &s).unwrap(), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(va.eq_bytes(b), a == b, "{a:?} == {b:?}");
            }
        }
    }

    #[test]
    fn an_inline_value_equals_the_stored_reference_to_the_same_bytes() {
        let s = MemValues::default();
        let long = Bytes::from(vec![3u8; 100]);
        assert_eq!(Value::Inline(long.clone()), stored(&long, &s));
        assert_ne!(Value::Inline(Bytes::from(vec![3u8; 99])), stored(&long, &s));
    }

    #[test]
    fn references_are_counted_and_the_last_release_frees_the_bytes() {
        let s = MemValues::default();
        let a = stored(&[1; 40], &s);
        let _b = stored(&[1; 40], &s);
        assert_eq!(s.refs(&a.digest()), 2);
        s.release(&a.digest());
        assert_eq!(s.len(), 1);
        s.release(&a.digest());
        assert!(s.is_empty());
        assert_eq!(
            a.bytes(&s),
            Err(ValueStoreError::Missing {
                digest: a.digest(),
                len: 40
            })
        );
    }
}
