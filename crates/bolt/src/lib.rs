//! Read-only bbolt walker and etcd's backend schema.
//!
//! Reads the `member/snap/db` of an etcd 3.4/3.5 data directory, `etcdctl snapshot save`
//! files (SHA-256 trailer verified) and raft-snapshot db images, without etcd or Go.
//!
//! * [`BoltFile`] opens a file ([`BoltFile::open`]) or an in-memory image
//!   ([`BoltFile::from_bytes`]), selects the committed meta page and reads pages with
//!   bounded, positioned reads.
//! * [`BoltFile::buckets`], [`BoltFile::iter`], [`BoltFile::get`] and
//!   [`BoltFile::page_map`] walk the B+trees (branch, leaf, overflow, inline buckets).
//! * [`etcd`] decodes etcd's buckets and computes the live key space.
//! * [`model_state`] reads a db into the shadow model's `SnapshotState`.
//!
//! Malformed input never panics: every problem is a [`BoltError`] naming the page and
//! byte offset, and every walk is bounded (depth limit, page-visit budget, key order).

mod error;
pub mod etcd;
mod file;
mod model_state;
mod tree;

pub use error::{BoltError, Result};
pub use file::{BoltFile, MAGIC, Meta, NO_FREELIST, Trailer, VERSION, fnv1a64, hex};
pub use model_state::{model_state, model_state_in};
pub use tree::{Bucket, Entry, Iter, PageInfo, PageKind, PageMap};
