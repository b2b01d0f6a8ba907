//! Generates the tonic client stubs for etcd's v3 services from our own
//! `proto/etcdserverpb/rpc_service.proto`, compiled with protox (pure Rust, no
//! `protoc`). Message types are not generated here: `extern_path` maps them to
//! `etcd_standby_proto`, so the workspace has one set of types.
use std::path::PathBuf;

const SERVICE_FILE: &str = "etcdserverpb/rpc_service.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let root = root.canonicalize()?;
    for f in [
        SERVICE_FILE,
        "etcdserverpb/rpc.proto",
        "authpb/auth.proto",
        "mvccpb/kv.proto",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let mut fds = protox::compile([root.join(SERVICE_FILE)], [&root])?;
    // Only the services: every message comes from etcd_standby_proto.
    fds.file.retain(|f| f.name() == SERVICE_FILE);
    let mut cfg = prost_build::Config::new();
    cfg.bytes(["."]);
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .build_transport(true)
        .extern_path(".etcdserverpb", "::etcd_standby_proto::etcdserverpb")
        .extern_path(".mvccpb", "::etcd_standby_proto::mvccpb")
        .extern_path(".authpb", "::etcd_standby_proto::authpb")
        .compile_fds_with_config(fds, cfg)?;
    Ok(())
}
