//! The key index: every live key with its state, in key order, packed into
//! sorted blocks of encoded entries.
//!
//! Why not a `BTreeMap<Bytes, KeyState>`: its entry is 104 bytes before
//! the tree's own overhead (a 32-byte `Bytes` handle and a 72-byte state)
//! plus the key's allocation: 123 bytes per 18-byte key once repacked and
//! 213 as written in key order, most of the replicator's heap at a million
//! keys. Here an entry costs its encoded size (about 60 bytes for an
//! 18-byte key holding a long value), and the blocks are few, large
//! allocations. The price is a decode per read (a key's state is returned
//! by value) and a block rewrite per write, both a few hundred
//! nanoseconds.
//!
//! A block holds entries in key order, each
//! `varint(key len) key varint(body len) body`, the body being
//! `zigzag(create_revision) zigzag(mod_revision - create_revision)
//! zigzag(version) zigzag(lease) value`, the value `0 varint(len) bytes`
//! (inline) or `1 varint(len) digest prefix` (by reference). The map's key
//! of a block is its first entry's key; no block is empty.
//!
//! The blocks are this module's own memory, written only by its encoder,
//! so the decoder is total (it reads past nothing and never panics) and
//! the round trip is checked by a property test against a `BTreeMap`.
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

use bytes::Bytes;

use crate::kv::KeyState;
use crate::value::{INLINE_MAX, StoredValue, Value};

/// A block grows to this many bytes, then splits.
const BLOCK_MAX: usize = 4096;
/// A block shrunk below this merges with the next one when both fit.
const BLOCK_MIN: usize = 1024;
/// Repacked blocks are filled to about this size.
const BLOCK_PACKED: usize = BLOCK_MAX * 7 / 8;
/// [`KeyIndex::pack`] packs only blocks on average less full than this.
const PACK_BELOW_PERCENT: usize = 60;

/// Live keys in order with their states (see the module docs).
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    blocks: BTreeMap<Box<[u8]>, Vec<u8>>,
    len: usize,
    /// Sum of the blocks' lengths.
    bytes: usize,
}

impl fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyIndex")
            .field("keys", &self.len)
            .field("blocks", &self.blocks.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl KeyIndex {
    /// Number of live keys.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// No live keys.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The block that holds `key` if any block does.
    fn block(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.blocks
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(_, b)| b)
    }

    /// `key` and its state, the key borrowed from the index.
    pub(crate) fn get_entry(&self, key: &[u8]) -> Option<(&[u8], KeyState)> {
        let (_, found) = seek(self.block(key)?, key);
        found.map(|s| (s.key, decode_state(s.body)))
    }

    /// The state of `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<KeyState> {
        self.get_entry(key).map(|(_, s)| s)
    }

    /// True if `key` is live.
    pub(crate) fn contains_key(&self, key: &[u8]) -> bool {
        self.block(key).is_some_and(|b| seek(b, key).1.is_some())
    }

    /// Sets the state of `key`; the previous one back.
    pub(crate) fn insert(&mut self, key: &[u8], state: &KeyState) -> Option<KeyState> {
        let mut entry = Vec::with_capacity(key.len() + 64);
        encode_entry(&mut entry, key, state);
        let Some((_, block)) = self
            .blocks
            .range_mut::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
        else {
            // Before every block: the first entry of the first one. Keys
            // written in descending order land here: past the limit, the
            // new entry alone starts the index and the old block stays full.
            let entry_len = entry.len();
            let mut block = match self.blocks.pop_first() {
                Some((_, mut b)) => {
                    b.reserve_exact(entry_len);
                    b.splice(0..0, entry);
                    b
                }
                None => entry,
            };
            self.len += 1;
            self.bytes += entry_len;
            if block.len() > BLOCK_MAX && entry_len < block.len() {
                let rest = block.split_off(entry_len);
                self.put_block(rest, false);
            }
            self.put_block(block, false);
            return None;
        };
        let (at, found) = seek(block, key);
        let (old, at_end) = match found {
            Some(s) => {
                let old = decode_state(s.body);
                let (start, end) = (s.start, s.end);
                self.bytes = self.bytes + entry.len() - (end - start);
                if entry.len() > end - start {
                    block.reserve_exact(entry.len() - (end - start));
                }
                block.splice(start..end, entry);
                (Some(old), false)
            }
            None => {
                let at_end = at == block.len();
                self.bytes += entry.len();
                block.reserve_exact(entry.len());
                block.splice(at..at, entry);
                (None, at_end)
            }
        };
        if old.is_none() {
            self.len += 1;
        }
        if block.len() > BLOCK_MAX {
            // Cut it up and file the pieces again, the first under this
            // block's key (its first entry is unchanged). Keys written in
            // order land at a block's end: the new entry starts the next
            // piece, so this one stays full.
            let mut whole = std::mem::take(block);
            let mut pieces = Vec::new();
            if at_end {
                let tail = whole.split_off(at);
                cut_to_size(whole, &mut pieces);
                cut_to_size(tail, &mut pieces);
            } else {
                cut_to_size(whole, &mut pieces);
            }
            for p in pieces {
                self.put_block(p, false);
            }
        } else if block.capacity() > block.len() + block.len() / 8 {
            block.shrink_to_fit();
        }
        old
    }

    /// Removes `key`; its state back.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<KeyState> {
        let (map_key, block) = self
            .blocks
            .range_mut::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let (_, found) = seek(block, key);
        let s = found?;
        let old = decode_state(s.body);
        let first = s.start == 0;
        let (start, end) = (s.start, s.end);
        block.drain(start..end);
        self.len -= 1;
        self.bytes -= end - start;
        if first || block.len() < BLOCK_MIN {
            // Its first key changed, it is empty, or it may merge: take it
            // out and put it back under its (new) first key.
            let map_key = map_key.clone();
            if let Some(block) = self.blocks.remove(&map_key) {
                self.put_block(block, true);
            }
        } else if block.capacity() > block.len() + block.len() / 8 {
            block.shrink_to_fit();
        }
        Some(old)
    }

    /// Files `block` under its first key (dropped when empty); when `merge`
    /// and it is small, the next block joins it if both fit.
    fn put_block(&mut self, mut block: Vec<u8>, merge: bool) {
        let Some(first) = first_key(&block).map(Box::<[u8]>::from) else {
            return;
        };
        if merge && block.len() < BLOCK_MIN {
            let next = self
                .blocks
                .range::<[u8], _>((Bound::Excluded(&first[..]), Bound::Unbounded))
                .next()
                .filter(|(_, b)| block.len() + b.len() <= BLOCK_MAX)
                .map(|(k, _)| k.clone());
            if let Some(next) = next
                && let Some(b) = self.blocks.remove(&next)
            {
                block.extend_from_slice(&b);
            }
        }
        block.shrink_to_fit();
        self.blocks.insert(first, block);
    }

    /// Every live key `>= start` in key order, with its state.
    pub(crate) fn iter_from<'a>(
        &'a self,
        start: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], KeyState)> + 'a {
        let from = self
            .blocks
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back()
            .map(|(k, _)| &k[..]);
        let blocks = match from {
            Some(k) => self
                .blocks
                .range::<[u8], _>((Bound::Included(k), Bound::Unbounded)),
            None => self.blocks.range::<[u8], _>(..),
        };
        blocks
            .flat_map(|(_, b)| Slots { block: b, at: 0 })
            .skip_while(move |s| s.key < start)
            .map(|s| (s.key, decode_state(s.body)))
    }

    /// Every live key in key order, with its state.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], KeyState)> + '_ {
        self.blocks
            .values()
            .flat_map(|b| Slots { block: b, at: 0 })
            .map(|s| (s.key, decode_state(s.body)))
    }

    /// Rewrites the blocks nearly full when they are on average less than
    /// [`PACK_BELOW_PERCENT`] full (after many deletes, or keys written in
    /// no particular order), else does nothing. O(bytes) when it packs;
    /// one block in flight at a time.
    pub(crate) fn pack(&mut self) {
        if self.bytes * 100 >= self.blocks.len() * BLOCK_MAX * PACK_BELOW_PERCENT {
            return;
        }
        let old = std::mem::take(&mut self.blocks);
        let mut cur: Vec<u8> = Vec::with_capacity(BLOCK_MAX);
        for (_, b) in old {
            for s in (Slots { block: &b, at: 0 }) {
                let raw = b.get(s.start..s.end).unwrap_or_default();
                if !cur.is_empty() && cur.len() + raw.len() > BLOCK_PACKED {
                    let full = std::mem::replace(&mut cur, Vec::with_capacity(BLOCK_MAX));
                    self.put_block(full, false);
                }
                cur.extend_from_slice(raw);
            }
        }
        self.put_block(cur, false);
    }

    /// Bytes the blocks hold (their encoded entries).
    pub(crate) fn encoded_bytes(&self) -> usize {
        self.bytes
    }
}

/// `block` as pieces of at most [`BLOCK_MAX`] bytes, split near their
/// middles (an entry bigger than that is a piece of its own), in order.
fn cut_to_size(mut block: Vec<u8>, out: &mut Vec<Vec<u8>>) {
    if block.len() <= BLOCK_MAX {
        out.push(block);
        return;
    }
    let cut = middle(&block);
    if cut == 0 {
        // One entry.
        out.push(block);
        return;
    }
    let tail = block.split_off(cut);
    cut_to_size(block, out);
    cut_to_size(tail, out);
}

/// Where to split a block over [`BLOCK_MAX`]: the first entry boundary at
/// or after its middle, or the start of its last entry when that boundary
/// is the end (a huge last entry goes to a block of its own).
fn middle(block: &[u8]) -> usize {
    let half = block.len() / 2;
    let mut last_start = 0;
    for s in (Slots { block, at: 0 }) {
        if s.end >= half && s.end < block.len() {
            return s.end;
        }
        last_start = s.start;
    }
    last_start
}

/// One entry's place in a block.
struct Slot<'a> {
    key: &'a [u8],
    body: &'a [u8],
    start: usize,
    end: usize,
}

/// The entries of a block in order.
struct Slots<'a> {
    block: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Slots<'a> {
    type Item = Slot<'a>;

    fn next(&mut self) -> Option<Slot<'a>> {
        if self.at >= self.block.len() {
            return None;
        }
        let mut c = Cursor {
            buf: self.block,
            pos: self.at,
        };
        let key_len = c.varint();
        let key = c.take(key_len);
        let body_len = c.varint();
        let body = c.take(body_len);
        let slot = Slot {
            key,
            body,
            start: self.at,
            end: c.pos,
        };
        // A cursor that did not move would loop for ever (cannot happen
        // with our encoding: every entry is at least two bytes).
        self.at = if c.pos > self.at {
            c.pos
        } else {
            self.block.len()
        };
        Some(slot)
    }
}

/// Where `key` is in `block`: the offset of the first entry not below it,
/// and that entry when it is `key`.
fn seek<'a>(block: &'a [u8], key: &[u8]) -> (usize, Option<Slot<'a>>) {
    for s in (Slots { block, at: 0 }) {
        match s.key.cmp(key) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return (s.start, Some(s)),
            std::cmp::Ordering::Greater => return (s.start, None),
        }
    }
    (block.len(), None)
}

/// The first key of a block (`None` for an empty one).
fn first_key(block: &[u8]) -> Option<&[u8]> {
    Slots { block, at: 0 }.next().map(|s| s.key)
}

/// A reader of our own encoding that never reads past the end (a short
/// read gives zeros and empty slices).
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> u8 {
        let b = self.buf.get(self.pos).copied().unwrap_or(0);
        self.pos = (self.pos + 1).min(self.buf.len());
        b
    }

    fn varint(&mut self) -> usize {
        usize::try_from(self.varint_u64()).unwrap_or(usize::MAX)
    }

    fn varint_u64(&mut self) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte();
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }

    fn zigzag(&mut self) -> i64 {
        let u = self.varint_u64();
        ((u >> 1) as i64) ^ -((u & 1) as i64)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let end = self.pos.saturating_add(n).min(self.buf.len());
        let s = self.buf.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        s
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends one entry.
fn encode_entry(out: &mut Vec<u8>, key: &[u8], s: &KeyState) {
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    let extra = s.value.inline().map_or(0, Bytes::len);
    let mut owned = Vec::with_capacity(64 + extra);
    let body = &mut owned;
    put_zigzag(body, s.create_revision);
    put_zigzag(body, s.mod_revision.wrapping_sub(s.create_revision));
    put_zigzag(body, s.version);
    put_zigzag(body, s.lease);
    match &s.value {
        Value::Inline(v) => {
            body.push(0);
            put_varint(body, v.len() as u64);
            body.extend_from_slice(v);
        }
        Value::Stored(r) => {
            body.push(1);
            put_varint(body, u64::from(r.len));
            body.extend_from_slice(&r.digest);
            body.extend_from_slice(&r.prefix);
        }
    }
    put_varint(out, owned.len() as u64);
    out.extend_from_slice(&owned);
}

/// Reads an entry's body back.
fn decode_state(body: &[u8]) -> KeyState {
    let mut c = Cursor { buf: body, pos: 0 };
    let create_revision = c.zigzag();
    let mod_revision = create_revision.wrapping_add(c.zigzag());
    let version = c.zigzag();
    let lease = c.zigzag();
    let value = match c.byte() {
        1 => {
            let len = u32::try_from(c.varint_u64()).unwrap_or(u32::MAX);
            let mut r = StoredValue {
                len,
                digest: [0; 16],
                prefix: [0; INLINE_MAX],
            };
            let d = c.take(16);
            r.digest[..d.len()].copy_from_slice(d);
            let p = c.take(INLINE_MAX);
            r.prefix[..p.len()].copy_from_slice(p);
            Value::Stored(r)
        }
        _ => {
            let n = c.varint();
            Value::Inline(Bytes::copy_from_slice(c.take(n)))
        }
    };
    KeyState {
        value,
        create_revision,
        mod_revision,
        version,
        lease,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    fn state(rev: i64, value: Value, lease: i64) -> KeyState {
        KeyState {
            value,
            create_revision: rev,
            mod_revision: rev + 3,
            version: 4,
            lease,
        }
    }

    fn stored(b: u8) -> Value {
        Value::Stored(StoredValue {
            len: 1000 + u32::from(b),
            digest: [b; 16],
            prefix: [b.wrapping_add(1); INLINE_MAX],
        })
    }

    #[test]
    fn states_round_trip_through_the_encoding_extremes_included() {
        for s in [
            state(1, Value::default(), 0),
            state(i64::MAX - 3, stored(7), i64::MIN),
            state(-5, Value::from("short"), -1),
            KeyState {
                value: stored(0),
                create_revision: 0,
                mod_revision: i64::MIN,
                version: i64::MAX,
                lease: i64::MAX,
            },
        ] {
            let mut out = Vec::new();
            encode_entry(&mut out, b"k", &s);
            let slot = Slots { block: &out, at: 0 }.next().unwrap();
            assert_eq!(slot.key, b"k");
            assert_eq!(slot.end, out.len());
            assert_eq!(decode_state(slot.body), s);
        }
    }

    #[test]
    fn keys_written_in_ascending_or_descending_order_fill_their_blocks() {
        for descending in [false, true] {
            let mut ix = KeyIndex::default();
            for i in 0..20_000u32 {
                let i = if descending { 20_000 - i } else { i };
                ix.insert(
                    format!("/mem/key/{i:08}").as_bytes(),
                    &state(2, stored(1), 0),
                );
            }
            let bytes = ix.encoded_bytes();
            let full = ix.blocks.len() * BLOCK_MAX;
            assert!(
                bytes * 10 > full * 9,
                "{bytes} bytes in {} blocks",
                ix.blocks.len()
            );
            assert!(ix.blocks.values().all(|b| b.len() <= BLOCK_MAX));
            assert_eq!(ix.len(), 20_000);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Vec<u8>, i64, bool),
        Remove(Vec<u8>),
        Pack,
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        // Few distinct short keys (collisions, neighbours) and some long.
        prop_oneof![
            4 => proptest::collection::vec(0u8..4, 0..4),
            1 => proptest::collection::vec(any::<u8>(), 0..300),
            // Rarely, an entry bigger than a block.
            1 => (0u8..4).prop_map(|b| vec![b; 5000]),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (key(), any::<i64>(), any::<bool>()).prop_map(|(k, r, l)| Op::Insert(k, r, l)),
            3 => key().prop_map(Op::Remove),
            1 => Just(Op::Pack),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The index answers every read as a `BTreeMap` would after the
        /// same inserts, removes and repacks.
        #[test]
        fn the_index_behaves_as_an_ordered_map(ops in proptest::collection::vec(op(), 0..400)) {
            let mut ix = KeyIndex::default();
            let mut m: BTreeMap<Vec<u8>, KeyState> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, r, long) => {
                        let v = if long { stored(r as u8) } else { Value::Inline(Bytes::from(k.repeat(2))) };
                        let s = state(r, v, r.wrapping_mul(7));
                        prop_assert_eq!(ix.insert(&k, &s), m.insert(k, s));
                    }
                    Op::Remove(k) => prop_assert_eq!(ix.remove(&k), m.remove(&k)),
                    Op::Pack => {
                        let sparse = ix.encoded_bytes() * 100 < ix.blocks.len() * BLOCK_MAX * PACK_BELOW_PERCENT;
                        ix.pack();
                        if sparse {
                            // Greedy: no block could have taken the next one's first entry.
                            let blocks: Vec<&Vec<u8>> = ix.blocks.values().collect();
                            for w in blocks.windows(2) {
                                let next = Slots { block: w[1], at: 0 }.next().map_or(0, |s| s.end);
                                prop_assert!(w[0].len() + next > BLOCK_PACKED);
                            }
                        }
                    }
                }
                prop_assert_eq!(ix.len(), m.len());
                prop_assert_eq!(ix.encoded_bytes(), ix.blocks.values().map(Vec::len).sum::<usize>());
                prop_assert!(ix.blocks.values().all(|b| !b.is_empty()));
                // Bounded: over the limit only a block of one entry.
                let one_entry = |b: &[u8]| Slots { block: b, at: 0 }.count() == 1;
                prop_assert!(ix.blocks.values().all(|b| b.len() <= BLOCK_MAX || one_entry(b)));
                prop_assert!(ix.blocks.iter().all(|(k, b)| first_key(b) == Some(&k[..])));
            }
            let all: Vec<(Vec<u8>, KeyState)> = ix.iter().map(|(k, s)| (k.to_vec(), s)).collect();
            let want: Vec<(Vec<u8>, KeyState)> = m.iter().map(|(k, s)| (k.clone(), s.clone())).collect();
            prop_assert_eq!(&all, &want);
            for probe in [vec![], vec![0], vec![1, 1], vec![2], vec![3, 3, 3], vec![255]] {
                let from: Vec<Vec<u8>> = ix.iter_from(&probe).map(|(k, _)| k.to_vec()).collect();
                let want: Vec<Vec<u8>> = m.range(probe.clone()..).map(|(k, _)| k.clone()).collect();
                prop_assert_eq!(from, want);
                prop_assert_eq!(ix.get(&probe), m.get(&probe).cloned());
                prop_assert_eq!(ix.contains_key(&probe), m.contains_key(&probe));
            }
        }
    }
}
