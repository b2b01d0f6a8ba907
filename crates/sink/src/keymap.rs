//! Which source keys are replicated, and where they land on the standby.

use bytes::{Bytes, BytesMut};
use etcd_standby_client::prefix_end;

/// The default reserved prefix on the standby (checkpoint and epoch keys).
pub const DEFAULT_RESERVED_PREFIX: &str = "__etcd_standby__/";

/// The user name of the standby identity `run` provisions for itself when
/// no `--standby-user` is configured (it exists only on the standby;
/// `verify` ignores it there).
pub const AUTO_STANDBY_USER: &str = "etcd-standby-replicator";

/// Key filtering and mapping: `--include-prefix` / `--exclude-prefix`
/// (repeatable), `--dest-prefix`, and the reserved prefix.
///
/// A source key is replicated when it starts with one of the include
/// prefixes (or there are none), starts with no exclude prefix, and its
/// standby key (`dest_prefix + key`) does not fall under the reserved
/// prefix. The same rules drive effects, lease attachments (a key's lease
/// travels with the key), snapshot reconcile and verify. Role permissions
/// are mapped with the destination prefix only (see [`KeyMap::map_range`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMap {
    include: Vec<Bytes>,
    exclude: Vec<Bytes>,
    dest_prefix: Bytes,
    reserved: Bytes,
}

impl Default for KeyMap {
    fn default() -> Self {
        KeyMap {
            include: Vec::new(),
            exclude: Vec::new(),
            dest_prefix: Bytes::new(),
            reserved: Bytes::from_static(DEFAULT_RESERVED_PREFIX.as_bytes()),
        }
    }
}

impl KeyMap {
    /// Everything replicated unchanged, reserved prefix `__etcd_standby__/`.
    pub fn new() -> KeyMap {
        KeyMap::default()
    }

    /// A key map. An empty `include` means every key; an empty `reserved`
    /// is replaced by the default.
    pub fn with(
        include: Vec<Bytes>,
        exclude: Vec<Bytes>,
        dest_prefix: Bytes,
        reserved: Bytes,
    ) -> KeyMap {
        let reserved = if reserved.is_empty() {
            Bytes::from_static(DEFAULT_RESERVED_PREFIX.as_bytes())
        } else {
            reserved
        };
        let mut include = include;
        include.sort();
        include.dedup();
        // A prefix covered by a shorter one adds nothing (and would make
        // range scans read keys twice).
        let mut kept: Vec<Bytes> = Vec::new();
        for p in include {
            if !kept.iter().any(|k| p.starts_with(k)) {
                kept.push(p);
            }
        }
        KeyMap {
            include: kept,
            exclude,
            dest_prefix,
            reserved,
        }
    }

    /// Adds an include prefix.
    pub fn include(self, prefix: impl Into<Bytes>) -> KeyMap {
        let mut inc = self.include;
        inc.push(prefix.into());
        KeyMap::with(inc, self.exclude, self.dest_prefix, self.reserved)
    }

    /// Adds an exclude prefix.
    pub fn exclude(mut self, prefix: impl Into<Bytes>) -> KeyMap {
        self.exclude.push(prefix.into());
        self
    }

    /// Sets the destination prefix.
    pub fn dest_prefix(mut self, prefix: impl Into<Bytes>) -> KeyMap {
        self.dest_prefix = prefix.into();
        self
    }

    /// Sets the reserved prefix (empty = the default).
    pub fn reserved_prefix(self, prefix: impl Into<Bytes>) -> KeyMap {
        KeyMap::with(self.include, self.exclude, self.dest_prefix, prefix.into())
    }

    /// The include prefixes (empty = all keys).
    pub fn includes(&self) -> &[Bytes] {
        &self.include
    }

    /// The exclude prefixes.
    pub fn excludes(&self) -> &[Bytes] {
        &self.exclude
    }

    /// The destination prefix.
    pub fn dest(&self) -> &Bytes {
        &self.dest_prefix
    }

    /// The reserved prefix.
    pub fn reserved(&self) -> &Bytes {
        &self.reserved
    }

    /// Whether a source key is replicated (before the reserved check).
    fn selected(&self, source_key: &[u8]) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| source_key.starts_with(p)))
            && !self.exclude.iter().any(|p| source_key.starts_with(p))
    }

    /// The standby key for a source key; `None` = not replicated.
    pub fn map(&self, source_key: &[u8]) -> Option<Bytes> {
        if !self.selected(source_key) {
            return None;
        }
        let mut k = BytesMut::with_capacity(self.dest_prefix.len() + source_key.len());
        k.extend_from_slice(&self.dest_prefix);
        k.extend_from_slice(source_key);
        if k.starts_with(&self.reserved) {
            return None;
        }
        Some(k.freeze())
    }

    /// The source key a standby key mirrors; `None` = the standby key is not
    /// one we replicate (outside the destination prefix, filtered, reserved).
    pub fn unmap(&self, standby_key: &[u8]) -> Option<Bytes> {
        if self.is_reserved(standby_key) {
            return None;
        }
        let src = standby_key.strip_prefix(&self.dest_prefix[..])?;
        self.selected(src).then(|| Bytes::copy_from_slice(src))
    }

    /// Whether a standby key is under the reserved prefix.
    pub fn is_reserved(&self, standby_key: &[u8]) -> bool {
        standby_key.starts_with(&self.reserved)
    }

    /// Source key ranges `[start, end)` covering every replicated key
    /// (`end == [0]`: to the end of the key space).
    pub fn source_ranges(&self) -> Vec<(Bytes, Bytes)> {
        if self.include.is_empty() {
            return vec![(Bytes::from_static(b"\0"), Bytes::from_static(b"\0"))];
        }
        self.include.iter().map(|p| prefix_range(p)).collect()
    }

    /// Standby key ranges `[start, end)` covering every replicated key (may
    /// include reserved and filtered keys: check with [`KeyMap::unmap`]).
    pub fn standby_ranges(&self) -> Vec<(Bytes, Bytes)> {
        if self.include.is_empty() {
            return vec![prefix_range(&self.dest_prefix)];
        }
        self.include
            .iter()
            .map(|p| {
                let mut k = self.dest_prefix.to_vec();
                k.extend_from_slice(p);
                prefix_range(&k)
            })
            .collect()
    }

    /// Maps a permission's `[key, range_end)` onto the standby: the
    /// destination prefix is prepended (include / exclude filters do not
    /// apply to permissions). `range_end` empty = one key; `"\0"` = from
    /// `key` to the end, which becomes the end of the destination prefix.
    pub fn map_range(&self, key: &[u8], range_end: &[u8]) -> (Bytes, Bytes) {
        let mut k = self.dest_prefix.to_vec();
        k.extend_from_slice(key);
        let end = if range_end.is_empty() {
            Vec::new()
        } else if range_end == b"\0" {
            if self.dest_prefix.is_empty() {
                vec![0]
            } else {
                prefix_end(&self.dest_prefix)
            }
        } else {
            let mut e = self.dest_prefix.to_vec();
            e.extend_from_slice(range_end);
            e
        };
        (Bytes::from(k), Bytes::from(end))
    }
}

/// `[prefix, prefix_end(prefix))`, with the empty prefix meaning all keys.
fn prefix_range(prefix: &[u8]) -> (Bytes, Bytes) {
    if prefix.is_empty() {
        (Bytes::from_static(b"\0"), Bytes::from_static(b"\0"))
    } else {
        (
            Bytes::copy_from_slice(prefix),
            Bytes::from(prefix_end(prefix)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        let m = KeyMap::new()
            .include("app/")
            .include("cfg/")
            .include("app/sub/")
            .exclude("app/tmp/")
            .dest_prefix("dr/");
        assert_eq!(m.includes().len(), 2);
        assert_eq!(m.map(b"app/x").as_deref(), Some(&b"dr/app/x"[..]));
        assert_eq!(m.map(b"app/tmp/x"), None);
        assert_eq!(m.map(b"other"), None);
        assert_eq!(m.unmap(b"dr/cfg/a").as_deref(), Some(&b"cfg/a"[..]));
        assert_eq!(m.unmap(b"dr/app/tmp/a"), None);
        assert_eq!(m.unmap(b"cfg/a"), None);
        assert!(m.is_reserved(b"__etcd_standby__/epoch"));
        assert_eq!(m.unmap(b"__etcd_standby__/epoch"), None);
        assert_eq!(
            m.map_range(b"a", b"\0"),
            (Bytes::from_static(b"dr/a"), Bytes::from_static(b"dr0"))
        );
        assert_eq!(
            m.map_range(b"a", b""),
            (Bytes::from_static(b"dr/a"), Bytes::new())
        );
        let all = KeyMap::new();
        assert_eq!(all.map(b"__etcd_standby__/x"), None);
        assert_eq!(all.map(b"k").as_deref(), Some(&b"k"[..]));
        assert_eq!(all.standby_ranges()[0].0, Bytes::from_static(b"\0"));
    }
}
