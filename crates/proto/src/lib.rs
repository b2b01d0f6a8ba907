//! etcd-exact protobuf types for etcd 3.4.23 and 3.5.1.
//!
//! Generated at build time from the project's own schema in `proto/` (written
//! from the field tables in the shared reference, not copied from etcd). The
//! schema is the 3.5 superset: 3.4 entries decode with it unchanged.
//!
//! [`DESCRIPTOR_SET`] / [`descriptor_pool`] expose the same schema for
//! reflection (the dump tool renders any message generically from it).
#![allow(clippy::all, missing_docs)]

/// raft wire and disk types (entries, hard state, messages, conf changes).
pub mod raftpb {
    include!(concat!(env!("OUT_DIR"), "/raftpb.rs"));
}
/// WAL record framing payloads.
pub mod walpb {
    include!(concat!(env!("OUT_DIR"), "/walpb.rs"));
}
/// `.snap` file envelope.
pub mod snappb {
    include!(concat!(env!("OUT_DIR"), "/snappb.rs"));
}
/// etcd server requests (internal raft request, v2 request, WAL metadata).
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}
/// MVCC key-values as stored in bbolt bucket `key`.
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}
/// Auth store users, roles and permissions.
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}
/// Leases as stored in bbolt bucket `lease`.
pub mod leasepb {
    include!(concat!(env!("OUT_DIR"), "/leasepb.rs"));
}
/// Membership requests (etcd 3.5).
pub mod membershippb {
    include!(concat!(env!("OUT_DIR"), "/membershippb.rs"));
}

/// Encoded `FileDescriptorSet` of every schema file.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// The schema as a reflection pool (built once, shared).
pub fn descriptor_pool() -> &'static prost_reflect::DescriptorPool {
    static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        // The bytes were produced by our own build script from a schema that
        // compiled; failing to load them is a build defect, not bad input.
        #[allow(clippy::expect_used)]
        prost_reflect::DescriptorPool::decode(DESCRIPTOR_SET)
            .expect("embedded descriptor set is valid")
    })
}

pub use prost::Message;
