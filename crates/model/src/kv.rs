//! Key space and lease bookkeeping (mvcc `kvstore` + `lessor` semantics).
use std::collections::BTreeSet;

use bytes::Bytes;

use crate::index::KeyIndex;
use crate::value::Value;

/// A live key's state, exactly as the primary's `mvccpb.KeyValue` holds it
/// (the value by reference when long: [`Value`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// Current value.
    pub value: Value,
    /// Revision of the first put of the current generation.
    pub create_revision: i64,
    /// Revision of the last modification.
    pub mod_revision: i64,
    /// Number of puts in the current generation (1 after creation).
    pub version: i64,
    /// Attached lease (0 = none).
    pub lease: i64,
}

/// A lease as the primary's lessor holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseState {
    /// Granted TTL in seconds (after the minimum-TTL adjustment).
    pub ttl: i64,
    /// Last checkpointed remaining TTL (0 = never checkpointed).
    pub remaining_ttl: i64,
    /// Keys currently attached.
    pub keys: BTreeSet<Bytes>,
}

/// The live keys in `[key, range_end)` with etcd's conventions: empty
/// `range_end` = the single key, `"\0"` = every key `>= key`.
pub(crate) fn range<'a>(
    index: &'a KeyIndex,
    key: &'a [u8],
    range_end: &'a [u8],
) -> Box<dyn Iterator<Item = (&'a [u8], KeyState)> + 'a> {
    if range_end.is_empty() {
        return Box::new(index.get_entry(key).into_iter());
    }
    if range_end == [0] {
        return Box::new(index.iter_from(key));
    }
    if key >= range_end {
        // etcd finds nothing in an inverted range.
        return Box::new(std::iter::empty());
    }
    Box::new(
        index
            .iter_from(key)
            .take_while(move |(k, _)| *k < range_end),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ks() -> KeyState {
        KeyState {
            value: Value::default(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn range_conventions() {
        let mut m = KeyIndex::default();
        for k in ["a", "b", "ba", "c"] {
            m.insert(k.as_bytes(), &ks());
        }
        let keys = |k: &str, e: &[u8]| -> Vec<String> {
            range(&m, k.as_bytes(), e)
                .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
                .collect()
        };
        assert_eq!(keys("b", b""), ["b"]);
        assert_eq!(keys("bb", b""), Vec::<String>::new());
        assert_eq!(keys("b", b"c"), ["b", "ba"]);
        assert_eq!(keys("b", b"\0"), ["b", "ba", "c"]);
        assert_eq!(keys("\0", b"\0"), ["a", "b", "ba", "c"]);
        assert_eq!(keys("c", b"b"), Vec::<String>::new());
        assert_eq!(keys("b", b"b"), Vec::<String>::new());
    }
}
