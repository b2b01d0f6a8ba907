//! The workspace's layering: every crate's normal dependencies on other
//! workspace crates must be in [`LAYERS`]. Dev- and build-dependencies are
//! not checked (tests may reach anywhere; the model's tests read dbs with the
//! bolt crate, which itself depends on the model).
//!
//! Adding an edge is a design decision: change [`LAYERS`] (and
//! `ARCHITECTURE.md`) in the same change, or move the code.
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::{Value, json};

/// What a crate may depend on (normal dependencies, workspace crates only).
enum Allowed {
    /// Only these.
    Only(&'static [&'static str]),
    /// Any workspace crate (test support, automation, end-to-end tests).
    Any,
}

use Allowed::{Any, Only};

const PROTO: &str = "etcd-standby-proto";
const WAL: &str = "etcd-standby-wal";
const DECODE: &str = "etcd-standby-decode";
const MODEL: &str = "etcd-standby-model";
const BOLT: &str = "etcd-standby-bolt";
const FOLLOWER: &str = "etcd-standby-follower";
const PEER: &str = "etcd-standby-peer";
const CLIENT: &str = "etcd-standby-client";
const SINK: &str = "etcd-standby-sink";
const DAEMON: &str = "etcd-standby-daemon";
const CLI: &str = "etcd-standby";
const TESTKIT: &str = "etcd-standby-testkit";
const FUZZING: &str = "etcd-standby-fuzzing";
const XTASK: &str = "xtask";
const INTEGRATION: &str = "etcd-standby-integration";

/// The layering, bottom up. A crate listed here need not exist (the daemon
/// crate is being split out of the binary); a workspace crate missing from
/// it fails the test.
const LAYERS: &[(&str, Allowed)] = &[
    (PROTO, Only(&[])),
    (WAL, Only(&[PROTO])),
    (DECODE, Only(&[PROTO])),
    // Sans-IO: no file reader (the db adapter is `etcd_standby_bolt::model_state`).
    (MODEL, Only(&[PROTO, DECODE])),
    // `decode` for the one `Member` type (the `members` bucket).
    (BOLT, Only(&[PROTO, DECODE, MODEL])),
    (FOLLOWER, Only(&[PROTO, DECODE])),
    // The transport carries raft messages; it knows nothing of the core
    // (`decode` only for the one `Member` type).
    (PEER, Only(&[PROTO, DECODE])),
    (CLIENT, Only(&[PROTO])),
    (SINK, Only(&[PROTO, MODEL, CLIENT])),
    (
        DAEMON,
        Only(&[
            PROTO, WAL, DECODE, MODEL, BOLT, FOLLOWER, PEER, CLIENT, SINK,
        ]),
    ),
    (
        CLI,
        Only(&[
            PROTO, WAL, DECODE, MODEL, BOLT, FOLLOWER, PEER, CLIENT, SINK, DAEMON,
        ]),
    ),
    (TESTKIT, Any),
    // The fuzz targets' bodies reach the parsers they fuzz, nothing else.
    (FUZZING, Only(&[WAL, DECODE, BOLT, MODEL, PEER])),
    (XTASK, Any),
    (INTEGRATION, Any),
];

/// Every violation of `layers` in `cargo metadata --no-deps` output: a
/// forbidden edge, or a workspace crate the table does not know.
fn violations(metadata: &Value, layers: &[(&str, Allowed)]) -> Result<Vec<String>, String> {
    let packages = metadata
        .get("packages")
        .and_then(Value::as_array)
        .ok_or("cargo metadata: no `packages` array")?;
    let mut workspace = BTreeSet::new();
    for p in packages {
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or("cargo metadata: a package without a name")?;
        workspace.insert(name);
    }
    let table: BTreeMap<&str, &Allowed> = layers.iter().map(|(n, a)| (*n, a)).collect();
    let mut out = Vec::new();
    for p in packages {
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        let Some(allowed) = table.get(name) else {
            out.push(format!(
                "workspace crate `{name}` is not in the layering table (crates/xtask/tests/crate_graph.rs LAYERS)"
            ));
            continue;
        };
        let deps = p
            .get("dependencies")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("cargo metadata: `{name}` has no dependencies array"))?;
        for d in deps {
            // `kind` is null for normal dependencies, "dev" / "build" otherwise.
            if !d.get("kind").is_none_or(Value::is_null) {
                continue;
            }
            let Some(dep) = d.get("name").and_then(Value::as_str) else {
                return Err(format!(
                    "cargo metadata: a dependency of `{name}` without a name"
                ));
            };
            if !workspace.contains(dep) || dep == name {
                continue;
            }
            match allowed {
                Any => {}
                Only(list) if list.contains(&dep) => {}
                Only(list) => out.push(format!(
                    "forbidden edge `{name}` -> `{dep}` (normal dependency); `{name}` may depend on: [{}]",
                    list.join(", ")
                )),
            }
        }
    }
    Ok(out)
}

#[test]
fn workspace_dependencies_follow_the_layering() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .args(["--manifest-path", manifest])
        .output()
        .unwrap_or_else(|e| panic!("running {cargo} metadata: {e}"));
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("cargo metadata printed no JSON: {e}"));
    let bad = violations(&metadata, LAYERS).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        bad.is_empty(),
        "crate layering violated:\n  {}",
        bad.join("\n  ")
    );
}

// ---------------------------------------------------------------- the check itself

fn package(name: &str, deps: &[(&str, Option<&str>)]) -> Value {
    json!({
        "name": name,
        "dependencies": deps
            .iter()
            .map(|(d, kind)| json!({"name": d, "kind": kind}))
            .collect::<Vec<_>>(),
    })
}

#[test]
fn a_forbidden_edge_is_named() {
    let metadata = json!({"packages": [
        package(PROTO, &[("prost", None)]),
        package(DECODE, &[(PROTO, None)]),
        package(MODEL, &[(PROTO, None), (DECODE, None), (BOLT, None)]),
        package(BOLT, &[(PROTO, None), (MODEL, None)]),
    ]});
    let bad = violations(&metadata, LAYERS).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with("forbidden edge `etcd-standby-model` -> `etcd-standby-bolt`"),
        "{}",
        bad[0]
    );
}

#[test]
fn dev_and_build_edges_and_outside_crates_are_not_checked() {
    let metadata = json!({"packages": [
        package(PROTO, &[("prost", None), ("prost-build", Some("build"))]),
        package(DECODE, &[(PROTO, None)]),
        package(MODEL, &[(PROTO, None), (BOLT, Some("dev")), (TESTKIT, Some("dev"))]),
        package(BOLT, &[(PROTO, None), (MODEL, None)]),
        package(TESTKIT, &[(CLI, None)]),
    ]});
    assert_eq!(violations(&metadata, LAYERS), Ok(vec![]));
}

#[test]
fn an_unknown_crate_fails_and_an_absent_one_is_fine() {
    // No daemon here (it is in the table): fine. A new crate: not fine.
    let metadata = json!({"packages": [
        package(PROTO, &[]),
        package("etcd-standby-new", &[(PROTO, None)]),
    ]});
    let bad = violations(&metadata, LAYERS).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].contains("`etcd-standby-new` is not in the layering table"),
        "{}",
        bad[0]
    );
}

#[test]
fn the_daemon_may_not_depend_on_the_binary() {
    let metadata = json!({"packages": [
        package(DAEMON, &[(SINK, None), (CLI, None)]),
        package(SINK, &[]),
        package(CLI, &[(DAEMON, None)]),
    ]});
    let bad = violations(&metadata, LAYERS).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with("forbidden edge `etcd-standby-daemon` -> `etcd-standby`"),
        "{}",
        bad[0]
    );
}

#[test]
fn malformed_metadata_is_an_error() {
    assert!(violations(&json!({}), LAYERS).is_err());
    assert!(violations(&json!({"packages": [{"dependencies": []}]}), LAYERS).is_err());
}
