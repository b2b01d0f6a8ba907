//! Compiles `proto/*.proto` with protox (a pure-Rust protobuf compiler), so a
//! fresh machine needs no `protoc`. Also embeds the descriptor set for
//! reflection-based rendering in the dump tool.
use std::path::PathBuf;

const FILES: &[&str] = &[
    "raftpb/raft.proto",
    "walpb/record.proto",
    "snappb/snap.proto",
    "etcdserverpb/etcdserver.proto",
    "etcdserverpb/rpc.proto",
    "etcdserverpb/raft_internal.proto",
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "leasepb/lease.proto",
    "membershippb/membership.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let root = root.canonicalize()?;
    for f in FILES {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let files: Vec<PathBuf> = FILES.iter().map(|f| root.join(f)).collect();
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let encoded = prost::Message::encode_to_vec(&fds);
    std::fs::write(out.join("descriptors.bin"), encoded)?;
    let mut cfg = prost_build::Config::new();
    cfg.bytes(["."]);
    cfg.compile_fds(fds)?;
    Ok(())
}
