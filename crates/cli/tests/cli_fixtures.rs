//! The `etcd-standby` binary on the real etcd fixtures: exit codes, JSON
//! lines, filters, redaction, and no panics on damaged input.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_etcd-standby"))
        .args(args)
        .output()
        .unwrap()
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn wal_dump_json_prints_every_entry_of_a_data_dir_member_dir_or_wal_dir() {
    let data = fixtures().join("etcd-3.5.1/data");
    for p in [data.clone(), data.join("member"), data.join("member/wal")] {
        let out = run(&["wal", "dump", "--json", p.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = json_lines(&out);
        let entries: Vec<_> = lines.iter().filter(|l| l["record"] == "entry").collect();
        assert_eq!(entries.len(), 61);
        assert!(entries.iter().all(|e| e["kind"] != "unknown"));
        assert_eq!(lines[0]["record"], "metadata");
        assert_eq!(lines[0]["node_id"], "968187abdcd14d74");
        assert!(
            lines
                .iter()
                .any(|l| l["record"] == "hardstate" && l["commit"] == 61)
        );
    }
}

#[test]
fn wal_dump_filters_by_index_type_and_key_prefix() {
    let p = fixtures().join("etcd-3.4.23/data");
    let p = p.to_str().unwrap();
    let out = run(&[
        "wal",
        "dump",
        "--json",
        "--start-index",
        "10",
        "--end-index",
        "20",
        p,
    ]);
    let idx: Vec<u64> = json_lines(&out)
        .iter()
        .filter(|l| l["record"] == "entry")
        .map(|l| l["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, (10..=20).collect::<Vec<_>>());
    let out = run(&["wal", "dump", "--json", "--type", "lease", p]);
    let kinds: Vec<String> = json_lines(&out)
        .iter()
        .filter(|l| l["record"] == "entry")
        .map(|l| l["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds.len(), 6, "{kinds:?}");
    assert!(kinds.iter().all(|k| k.starts_with("lease_")));
    let out = run(&["wal", "dump", "--json", "--key-prefix", "/a/", p]);
    let idx: Vec<u64> = json_lines(&out)
        .iter()
        .filter(|l| l["record"] == "entry")
        .map(|l| l["index"].as_u64().unwrap())
        .collect();
    // puts /a/1 /a/2, delete [/a,/b), puts /a/x /a/y (the last two by alice)
    assert_eq!(idx, vec![10, 11, 21, 43, 49]);
}

#[test]
fn wal_dump_redacts_secrets_unless_asked() {
    for v in ["etcd-3.4.23", "etcd-3.5.1"] {
        let p = fixtures().join(v).join("data");
        let out = run(&["wal", "dump", p.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("rootpw") && !text.contains("$2a$"), "{v}");
        assert!(text.contains("<redacted>"));
        let out = run(&[
            "wal",
            "dump",
            "--json",
            "--show-secrets",
            p.to_str().unwrap(),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("rootpw") || text.contains("hashedPassword"),
            "{v}"
        );
    }
}

#[test]
fn wal_verify_exit_codes_distinguish_clean_torn_and_usage() {
    let ok = run(&[
        "wal",
        "verify",
        fixtures().join("etcd-3.4.23/data").to_str().unwrap(),
    ]);
    assert_eq!(ok.status.code(), Some(0));
    let torn = run(&[
        "wal",
        "verify",
        "--json",
        fixtures()
            .join("etcd-3.4.23/torn-wal/before")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(torn.status.code(), Some(1));
    let v = &json_lines(&torn)[0];
    assert_eq!(v["problem"]["problem"], "torn_tail");
    assert_eq!(v["problem"]["offset"], 5824);
    let missing = run(&["wal", "verify", "/nonexistent/path"]);
    assert_eq!(missing.status.code(), Some(2));
    let usage = run(&["wal", "dump", "--type", "nonsense", "x"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn wal_stats_counts_kinds_leases_and_auth_changes() {
    let out = run(&[
        "wal",
        "stats",
        "--json",
        fixtures().join("etcd-3.4.23/data").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v = &json_lines(&out)[0];
    assert_eq!(v["first_index"], 1);
    assert_eq!(v["last_index"], 60);
    assert_eq!(v["entries_by_kind"]["put"]["count"], 18);
    assert_eq!(v["leases"]["granted"], 3);
    assert_eq!(v["leases"]["revoked"], 2);
    assert_eq!(v["auth_changes"], 12);
}

#[test]
fn snap_dump_shows_metadata_and_members_and_flags_a_bad_crc() {
    let out = run(&[
        "snap",
        "dump",
        "--json",
        fixtures().join("etcd-3.4.23/data").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v = &json_lines(&out)[0];
    assert_eq!(
        (v["term"].as_u64(), v["index"].as_u64()),
        (Some(2), Some(41))
    );
    assert_eq!(v["cluster_version"], "3.4.0");
    assert_eq!(v["members"][0]["id"], "7dac200b997573ba");
    let tmp = tempfile::tempdir().unwrap();
    let src =
        fixtures().join("etcd-3.4.23/data/member/snap/0000000000000002-0000000000000029.snap");
    let mut bytes = std::fs::read(src).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x20;
    let bad = tmp.path().join("0000000000000002-0000000000000029.snap");
    std::fs::write(&bad, bytes).unwrap();
    let out = run(&["snap", "dump", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn damaged_wals_never_make_the_tool_panic() {
    let original = std::fs::read(
        fixtures().join("etcd-3.4.23/data/member/wal/0000000000000000-0000000000000000.wal"),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("0000000000000000-0000000000000000.wal");
    // a spread of flips and truncations through every command
    for (i, pos) in (0..6000).step_by(149).enumerate() {
        let mut bytes = original.clone();
        bytes[pos] ^= 0xff;
        if i % 3 == 0 {
            bytes.truncate(pos + 1);
        }
        std::fs::write(&file, &bytes).unwrap();
        for cmd in [
            &["wal", "verify"][..],
            &["wal", "dump", "--json"],
            &["wal", "stats"],
            &["wal", "dump"],
        ] {
            let mut args = cmd.to_vec();
            let f = file.to_str().unwrap();
            args.push(f);
            let out = run(&args);
            let code = out.status.code();
            assert!(
                matches!(code, Some(0) | Some(1)),
                "{args:?} at {pos}: {code:?} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
        }
    }
}

#[test]
fn wal_dump_outcome_explains_what_each_entry_did_on_the_primary() {
    let data = fixtures().join("etcd-3.5.1/data");
    let out = run(&["wal", "dump", "--json", "--outcome", data.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let outcome = |i: u64| {
        let l = lines
            .iter()
            .find(|l| l["record"] == "entry" && l["index"] == i)
            .unwrap();
        (
            l["outcome"].as_str().unwrap().to_owned(),
            l["effects"].as_u64().unwrap(),
        )
    };
    assert_eq!(outcome(1), ("cluster-only".into(), 0));
    assert_eq!(outcome(6), ("applied".into(), 1));
    assert_eq!(outcome(15), ("txn-else".into(), 1));
    assert_eq!(outcome(19), ("rejected:KeyNotFound".into(), 0));
    assert_eq!(outcome(20), ("rejected:LeaseNotFound".into(), 0));
    assert_eq!(outcome(23), ("no-change".into(), 0));
    assert_eq!(outcome(26), ("rejected:Compacted".into(), 0));
    assert_eq!(
        outcome(33),
        ("applied".into(), 3),
        "revoke: the lease and its two keys"
    );
    // Without --outcome the field is absent.
    let plain = json_lines(&run(&["wal", "dump", "--json", data.to_str().unwrap()]));
    assert!(plain.iter().all(|l| l.get("outcome").is_none()));
}

/// Rows of a bordered table (`| a | b |`), cells trimmed.
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn wal_stats_and_db_dump_print_etcdctl_style_tables_with_w_table() {
    let data = fixtures().join("etcd-3.5.1/data");
    let d = data.to_str().unwrap();
    let out = run(&["wal", "stats", "-w", "table", d]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let rows = table_rows(&text);
    assert!(
        rows.contains(&vec!["index".to_string(), "1..61".into()]),
        "{text}"
    );
    assert!(
        rows.contains(&vec!["put".to_string(), "18".into(), "519".into()]),
        "{text}"
    );
    assert!(rows.iter().any(|r| r[0] == "BUSIEST PREFIX"), "{text}");
    // Every line of a table is as wide as its rule.
    for block in text.split("\n\n") {
        let widths: Vec<usize> = block.lines().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{block}");
    }
    // -w json is --json.
    let a = run(&["wal", "stats", "-w", "json", d]);
    let b = run(&["wal", "stats", "--json", d]);
    assert_eq!(json_lines(&a), json_lines(&b));

    let out = run(&["db", "dump", "-w", "table", d]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let rows = table_rows(&text);
    assert!(
        rows.iter()
            .any(|r| r[0] == "meta" && r[1].contains("consistent_index=61"))
    );
    assert!(
        rows.iter()
            .any(|r| r[0] == "user" && r[1].contains("<redacted>")),
        "password hashes stay redacted in tables: {text}"
    );
    let keys: Vec<_> = rows
        .iter()
        .filter(|r| r.len() == 6 && r[0] != "CREATE")
        .collect();
    assert_eq!(keys.len(), 7, "{text}");
    assert!(keys.contains(&&vec![
        "2".to_string(),
        "9".into(),
        "4".into(),
        "-".into(),
        "\"foo\"".into(),
        "\"bar3\"".into()
    ]));
    let filtered = run(&[
        "db",
        "dump",
        "-w",
        "table",
        "--bucket",
        "key",
        "--key-prefix",
        "/a/",
        d,
    ]);
    let rows = table_rows(&String::from_utf8_lossy(&filtered.stdout));
    assert_eq!(rows.len(), 3, "header and /a/x, /a/y: {rows:?}");
    let raw = run(&["db", "dump", "-w", "table", "--bucket", "lease", d]);
    assert_eq!(raw.status.code(), Some(0));
    let dump_json = run(&["db", "dump", "-w", "json", d]);
    assert_eq!(
        json_lines(&dump_json),
        json_lines(&run(&["db", "dump", "--json", d]))
    );
}

/// Runs `cmd` (a shell line) with a pseudo-terminal as stdout and stderr
/// (util-linux `script`); returns what the terminal showed.
fn on_a_terminal(cmd: &str) -> String {
    let out = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .output()
        .expect("util-linux `script` (Debian bsdutils, essential)");
    assert!(out.status.success(), "{cmd}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn progress_bars_appear_on_a_terminal_and_never_in_pipes_or_between_dumped_lines() {
    let bin = env!("CARGO_BIN_EXE_etcd-standby");
    let data = fixtures().join("etcd-3.5.1/data");
    let d = data.to_str().unwrap();
    // A summary command draws on the terminal and clears the bar before its summary.
    let tty = on_a_terminal(&format!("{bin} wal verify {d}"));
    assert!(tty.contains("verifying WAL ["), "{tty:?}");
    assert!(tty.contains("\u{1b}[2K"), "the bar is cleared: {tty:?}");
    assert!(tty.contains("entries    61"), "{tty:?}");
    // A dump to a file draws the bar on the terminal; the file has no trace of it.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dump.txt");
    let tty = on_a_terminal(&format!("{bin} wal dump {d} > {}", file.display()));
    assert!(tty.contains("dumping WAL ["), "{tty:?}");
    let dumped = std::fs::read_to_string(&file).unwrap();
    assert!(!dumped.contains("dumping WAL") && !dumped.contains('\u{1b}'));
    let tty = on_a_terminal(&format!("{bin} db dump {d} > {}", file.display()));
    assert!(tty.contains("dumping keys ["), "{tty:?}");
    // A dump to the terminal: no bar between its lines.
    let tty = on_a_terminal(&format!("{bin} wal dump {d}"));
    assert!(!tty.contains("dumping WAL"), "{tty:?}");
    // Not a terminal (pipes, CI, journald): nothing on stderr at all.
    for args in [
        &["wal", "verify", d][..],
        &["wal", "stats", d],
        &["wal", "dump", d],
        &["db", "dump", d],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0));
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
