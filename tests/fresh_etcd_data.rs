//! Real etcd (3.4.23 and 3.5.1) writes a varied workload; the inspection
//! tool must decode every entry of its WAL (no `unknown`), see exactly the
//! puts and deletes that were issued, and list exactly the live keys etcd
//! serves from its db.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use etcd_standby_integration::etcd_standby_bin;
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion, Etcdctl};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;

/// A plain put or delete the workload issued, as it must appear in the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Put(String, String),
    Del(String, Option<String>),
}

fn workload(ctl: &Etcdctl) -> Vec<Op> {
    let mut ops = Vec::new();
    let put = |ops: &mut Vec<Op>, k: &str, v: &str| {
        ctl.put(k, v).unwrap();
        ops.push(Op::Put(k.into(), v.into()));
    };
    for i in 0..60 {
        put(&mut ops, &format!("/app/cfg/{i:03}"), &format!("value-{i}"));
    }
    for i in 0..20 {
        put(&mut ops, &format!("/r/{i:02}"), "to-be-range-deleted");
    }
    // big values (still within etcd's default 1.5 MiB request limit)
    let big = "x".repeat(300_000);
    ctl.run_with_stdin(&["put", "/big/one"], big.as_bytes())
        .unwrap();
    ops.push(Op::Put("/big/one".into(), big.clone()));
    let big2: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    ctl.run_with_stdin(&["put", "/big/two"], big2.as_bytes())
        .unwrap();
    ops.push(Op::Put("/big/two".into(), big2));
    put(&mut ops, "/app/cfg/000", "overwritten");
    // single delete, prefix delete, range delete
    ctl.run(&["del", "/app/cfg/001"]).unwrap();
    ops.push(Op::Del("/app/cfg/001".into(), None));
    ctl.run(&["del", "--prefix", "/r/"]).unwrap();
    ops.push(Op::Del("/r/".into(), Some("/r0".into())));
    ctl.run(&["del", "/app/cfg/010", "/app/cfg/020"]).unwrap();
    ops.push(Op::Del("/app/cfg/010".into(), Some("/app/cfg/020".into())));
    // transactions (not counted as plain ops)
    ctl.run_with_stdin(
        &["txn"],
        b"value(\"/app/cfg/002\") = \"value-2\"\n\nput /txn/ok yes\nput /txn/ok2 yes\n\nput /txn/failed yes\n\n",
    )
    .unwrap();
    ctl.run_with_stdin(
        &["txn"],
        b"version(\"/nope\") > \"0\"\n\nput /txn/never x\n\nput /txn/else y\n\n",
    )
    .unwrap();
    // leases: one kept with a key, one revoked with its key
    let keep = ctl.lease_grant(3600).unwrap();
    let keep_hex = format!("{keep:x}");
    ctl.run(&["put", "--lease", &keep_hex, "/lease/kept", "v"])
        .unwrap();
    ops.push(Op::Put("/lease/kept".into(), "v".into()));
    let gone = ctl.lease_grant(3600).unwrap();
    let gone_hex = format!("{gone:x}");
    ctl.run(&["put", "--lease", &gone_hex, "/lease/gone", "v"])
        .unwrap();
    ops.push(Op::Put("/lease/gone".into(), "v".into()));
    ctl.run(&["lease", "revoke", &gone_hex]).unwrap();
    // users, roles, auth enable, an authenticated write, auth disable
    ctl.run(&["role", "add", "reader"]).unwrap();
    ctl.run(&[
        "role",
        "grant-permission",
        "reader",
        "read",
        "/app/",
        "--prefix=true",
    ])
    .unwrap();
    ctl.run(&["user", "add", "alice:alicepw", "--interactive=false"])
        .unwrap();
    ctl.run(&["user", "grant-role", "alice", "reader"]).unwrap();
    ctl.run(&["user", "add", "root:rootpw", "--interactive=false"])
        .unwrap();
    ctl.run(&["user", "grant-role", "root", "root"]).unwrap();
    ctl.run(&["auth", "enable"]).unwrap();
    let root = ctl.clone().with_user("root:rootpw");
    root.put("/auth/written-as-root", "1").unwrap();
    ops.push(Op::Put("/auth/written-as-root".into(), "1".into()));
    root.run(&["auth", "disable"]).unwrap();
    put(&mut ops, "/final", "done");
    ops
}

fn run_tool(args: &[&str]) -> (i32, Vec<Value>) {
    let out = Command::new(etcd_standby_bin())
        .args(args)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out.status.code().unwrap_or(-1), lines)
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn fresh_data(version: EtcdVersion) {
    let mut cluster = EtcdCluster::start(version, 1, ClusterOptions::default()).unwrap();
    let ctl = cluster.etcdctl();
    let issued = workload(&ctl);
    let served: BTreeMap<Vec<u8>, Vec<u8>> = ctl.get_prefix("").unwrap().into_iter().collect();
    assert!(served.len() > 50);
    cluster.stop_member(0).unwrap();
    let data = cluster.data_dir(0).unwrap();
    let data = data.to_str().unwrap();

    let (code, lines) = run_tool(&["wal", "dump", "--json", data]);
    assert_eq!(code, 0, "wal dump on {version:?}");
    let entries: Vec<&Value> = lines.iter().filter(|l| l["record"] == "entry").collect();
    assert!(entries.len() > issued.len());
    let unknown: Vec<&&Value> = entries.iter().filter(|e| e["kind"] == "unknown").collect();
    assert!(
        unknown.is_empty(),
        "{version:?}: undecodable entries {unknown:?}"
    );
    let seen: Vec<Op> = entries
        .iter()
        .filter_map(|e| {
            let r = &e["request"];
            if e["kind"] == "put" {
                Some(Op::Put(
                    s(&r["put"]["key"])?,
                    s(&r["put"]["value"]).unwrap_or_default(),
                ))
            } else if e["kind"] == "delete_range" {
                Some(Op::Del(
                    s(&r["delete_range"]["key"])?,
                    s(&r["delete_range"]["range_end"]),
                ))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(seen.len(), issued.len(), "{version:?}");
    for (i, (a, b)) in seen.iter().zip(&issued).enumerate() {
        assert_eq!(a, b, "{version:?}: op #{i}");
    }
    for kind in [
        "txn",
        "lease_grant",
        "lease_revoke",
        "auth_enable",
        "auth_disable",
        "auth_user_add",
        "auth_role_grant_permission",
    ] {
        assert!(
            entries.iter().any(|e| e["kind"] == kind),
            "{version:?}: no {kind}"
        );
    }
    // secrets never leak by default
    let raw = Command::new(etcd_standby_bin())
        .args(["wal", "dump", data])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&raw.stdout);
    assert!(!text.contains("alicepw") && !text.contains("rootpw") && !text.contains("$2a$"));

    let (code, _) = run_tool(&["wal", "verify", "--json", data]);
    assert_eq!(code, 0);

    let (code, lines) = run_tool(&["db", "dump", "--json", "--bucket", "key", data]);
    assert_eq!(code, 0, "db dump on {version:?}");
    let in_db: BTreeMap<Vec<u8>, Vec<u8>> = lines
        .iter()
        .filter(|l| l["record"] == "key")
        .map(|l| {
            (
                s(&l["key"]).unwrap().into_bytes(),
                s(&l["value"]).unwrap().into_bytes(),
            )
        })
        .collect();
    assert_eq!(
        in_db.keys().collect::<Vec<_>>(),
        served.keys().collect::<Vec<_>>(),
        "{version:?}"
    );
    assert_eq!(in_db, served, "{version:?}: values differ");
    let (_, auth) = run_tool(&["db", "dump", "--json", "--bucket", "authUsers", data]);
    let users: Vec<String> = auth.iter().filter_map(|l| s(&l["name"])).collect();
    assert_eq!(users, vec!["alice", "root"]);
}

#[test]
fn etcd_3_4_fresh_wal_and_db_decode_completely() {
    fresh_data(EtcdVersion::V3_4);
}

#[test]
fn etcd_3_5_fresh_wal_and_db_decode_completely() {
    fresh_data(EtcdVersion::V3_5);
}
