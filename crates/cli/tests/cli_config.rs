//! The configuration file through the binary: precedence flag > variable >
//! file > default, secrets redacted in `config print`, clear refusals in
//! `config check`, and `--config` read by the real subcommands; shell
//! completions and man pages generated from the same definitions.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_etcd-standby"));
    // The test's own environment must not leak settings in.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCD_STANDBY_") {
            c.env_remove(k);
        }
    }
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const FILE: &str = r#"
# etcd-standby.toml
source-endpoints = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
advertise-peer-url = "http://127.0.0.1:2380"
data-dir = "/var/lib/etcd-standby"
name = "from-file"
admin-listen = "127.0.0.1:9555"
standby-endpoints = "http://127.0.0.1:3"
standby-user = "replicator"
standby-password = "hunter2-secret"
ha = true
model-save-every = 5000
"#;

#[test]
fn config_print_shows_each_value_with_its_source_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, FILE).unwrap();
    let out = bin()
        .args(["config", "print"])
        .arg(&f)
        .args(["--", "--admin-listen", "127.0.0.1:9600"])
        .env("ETCD_STANDBY_NAME", "from-env")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for want in [
        "name = \"from-env\"  # env ETCD_STANDBY_NAME",
        "admin-listen = \"127.0.0.1:9600\"  # flag",
        "data-dir = \"/var/lib/etcd-standby\"  # file",
        "source-endpoints = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]  # file",
        "# standby-password = \"<redacted>\"  # file (a secret: not printed)",
        "# accept-mass-delete = false  # default (a flag only, never from a file)",
        "ha = true  # file",
        "model-save-every = 5000  # file",
        "ha-lock-ttl = \"6s\"  # default",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
    assert!(!t.contains("hunter2"), "a secret was printed:\n{t}");
    // What it prints reads back as a config file.
    let printed = dir.path().join("printed.toml");
    let body: String = t
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{}\n", l.split("  #").next().unwrap()))
        .collect();
    std::fs::write(&printed, body).unwrap();
    let out = bin()
        .args(["config", "check"])
        .arg(&printed)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn config_check_names_the_key_or_value_that_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    let check = |body: &str| {
        std::fs::write(&f, body).unwrap();
        let out = bin().args(["config", "check"]).arg(&f).output().unwrap();
        (out.status.code(), text(&out))
    };
    let (code, t) = check(FILE);
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("would start (10 setting(s)"), "{t}");
    let (code, t) = check(&format!("{FILE}sorce-endpoints = \"x\"\n"));
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("unknown key `sorce-endpoints`"), "{t}");
    let (code, t) = check(&FILE.replace("127.0.0.1:9555", "not-an-address"));
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("admin-listen") && t.contains("not-an-address"),
        "{t}"
    );
    let (code, t) = check(&FILE.replace("data-dir = \"/var/lib/etcd-standby\"\n", ""));
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("--data-dir"), "{t}");
    let (code, t) = check(&format!("{FILE}force = true\n"));
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("decision for one invocation"), "{t}");
    let (code, t) = check("name = ");
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("c.toml"), "{t}");
}

/// `--config` (and ETCD_STANDBY_CONFIG) feed the real subcommands: `status`
/// goes to the admin address the file names.
#[test]
fn subcommands_read_the_file_given_by_flag_or_variable() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    // A port nothing listens on: status fails, naming it.
    std::fs::write(&f, "admin = \"127.0.0.1:9\"\n").unwrap();
    let out = bin()
        .args(["--config"])
        .arg(&f)
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("127.0.0.1:9"), "{}", text(&out));
    let out = bin()
        .arg("status")
        .env("ETCD_STANDBY_CONFIG", &f)
        .output()
        .unwrap();
    assert!(text(&out).contains("127.0.0.1:9"), "{}", text(&out));
    // A flag still wins over the file.
    let out = bin()
        .args(["status", "--admin", "127.0.0.1:7"])
        .env("ETCD_STANDBY_CONFIG", &f)
        .output()
        .unwrap();
    assert!(text(&out).contains("127.0.0.1:7"), "{}", text(&out));
    assert!(!text(&out).contains("127.0.0.1:9"), "{}", text(&out));
}

/// Shell completions and man pages come from the same clap definitions as
/// the parser: every subcommand is in them, and bash accepts the script.
#[test]
fn completions_and_man_pages_are_generated_from_the_parser() {
    let out = bin().args(["completion", "bash"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let script = String::from_utf8(out.stdout).unwrap();
    for sub in ["run", "promote", "verify", "config", "wal", "db"] {
        assert!(script.contains(sub), "bash completion lacks {sub}");
    }
    assert!(script.contains("--standby-endpoints"));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.bash");
    std::fs::write(&f, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&f).output().unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax));
    for shell in ["zsh", "fish"] {
        let out = bin().args(["completion", shell]).output().unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let man = bin().arg("man").output().unwrap();
    let page = String::from_utf8(man.stdout).unwrap();
    assert!(page.contains(".TH etcd-standby 1"), "{page}");
    assert!(page.contains("promote"), "{page}");
    let man = bin().args(["man", "run"]).output().unwrap();
    let page = String::from_utf8(man.stdout).unwrap();
    assert!(page.contains(".TH etcd-standby-run 1"), "{page}");
    assert!(page.contains("advertise\\-peer\\-url"), "{page}");
    let bad = bin().args(["man", "nope"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
