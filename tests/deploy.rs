//! deploy/ is tested like code: the alert rules with promtool (syntax and
//! a unit test per alert) and in a live Prometheus scraping a running
//! replicator, the Kubernetes manifests rendered with kustomize and checked
//! against the Kubernetes schemas, the systemd unit with `systemd-analyze`,
//! and every flag, variable and metric they name against the code.
//! `cargo xtask test` provisions the tools (`cargo xtask install-ops-tools`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use etcd_standby_integration::etcd_standby_bin;
use etcd_standby_integration::load::{block_on, varied_writes};
use etcd_standby_integration::standby::{Standby, http_get};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion, free_port, workspace_root};

fn deploy(rel: &str) -> PathBuf {
    workspace_root().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A tool directory from its variable, else its place under `.tools/`.
fn tool_dir(var: &str, dir: &str) -> PathBuf {
    let d = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools").join(dir));
    assert!(
        d.is_dir(),
        "{} is missing: run `cargo xtask install-ops-tools` (or the suite with `cargo xtask test`)",
        d.display()
    );
    d
}

fn prometheus_dir() -> PathBuf {
    tool_dir("ETCD_STANDBY_PROMETHEUS", "prometheus-2.42")
}

fn run(cmd: &mut Command) -> Output {
    let line = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("start {line}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = prometheus_dir().join("promtool");
    let out = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(deploy("prometheus/rules.yml")));
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        text(&out)
    );
    let out = run(Command::new(&promtool)
        .args(["test", "rules", "rules.test.yml"])
        .current_dir(deploy("prometheus")));
    assert!(out.status.success(), "promtool test rules:\n{}", text(&out));
    // Every alert has a unit test that expects it to fire, and one where it
    // must not (an empty exp_alerts).
    let tests = read(&deploy("prometheus/rules.test.yml"));
    for alert in alert_names(&read(&deploy("prometheus/rules.yml"))) {
        let evals: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|e| e.contains(&format!("alertname: {alert}\n")))
            .collect();
        assert!(
            evals.iter().any(|e| e.contains("exp_labels")),
            "{alert}: no test expects it to fire"
        );
        assert!(
            evals.iter().any(|e| e.contains("exp_alerts: []")),
            "{alert}: no test expects it to stay quiet"
        );
    }
}

/// The promtool unit tests can fail: a rule whose threshold moved makes
/// them fail (so their passing above means something).
#[test]
fn promtool_unit_tests_fail_when_a_threshold_changes() {
    let dir = tempfile::tempdir().unwrap();
    let rules = read(&deploy("prometheus/rules.yml")).replace(
        "etcd_standby_replay_lag_seconds > 60",
        "etcd_standby_replay_lag_seconds > 600",
    );
    std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
    std::fs::copy(
        deploy("prometheus/rules.test.yml"),
        dir.path().join("rules.test.yml"),
    )
    .unwrap();
    let out = run(Command::new(prometheus_dir().join("promtool"))
        .args(["test", "rules", "rules.test.yml"])
        .current_dir(dir.path()));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("EtcdStandbyRPOAboveTarget"),
        "{}",
        text(&out)
    );
}

/// The PrometheusRule manifest is rules.yml wrapped; this keeps them equal
/// (`ETCD_STANDBY_UPDATE_DOCS=1` regenerates it).
#[test]
fn prometheus_rule_manifest_is_the_rule_file() {
    let rules = read(&deploy("prometheus/rules.yml"));
    let body: Vec<&str> = rules
        .lines()
        .skip_while(|l| !l.starts_with("groups:"))
        .collect();
    let mut want = String::from(
        "# Generated from deploy/prometheus/rules.yml; do not edit. A test checks it\n\
         # (`ETCD_STANDBY_UPDATE_DOCS=1 cargo test -p etcd-standby-integration --test deploy`\n\
         # rewrites it).\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n  name: etcd-standby\n  labels:\n    app.kubernetes.io/name: etcd-standby\n\
         spec:\n",
    );
    for l in body {
        if !l.is_empty() {
            want.push_str("  ");
        }
        want.push_str(l);
        want.push('\n');
    }
    let path = deploy("kubernetes/base/prometheusrule.yaml");
    if read(&path) != want {
        if std::env::var_os("ETCD_STANDBY_UPDATE_DOCS").is_some() {
            std::fs::write(&path, want).unwrap();
        } else {
            panic!(
                "{} differs from rules.yml; rerun with ETCD_STANDBY_UPDATE_DOCS=1",
                path.display()
            );
        }
    }
}

/// Every `etcd_standby_*` series that deploy/ and the runbook use is one
/// the code exports (a renamed metric would silently empty a panel or
/// disarm an alert), and every alert has a runbook section.
#[test]
fn every_metric_deploy_uses_is_exported_and_every_alert_has_a_runbook_section() {
    // docs/metrics.md's table is generated from the registered metrics (a
    // daemon unit test keeps it so); linking the daemon here instead would
    // make cargo rebuild the etcd-standby binary on every switch.
    let table = read(&workspace_root().join("docs/metrics.md"));
    let rows: Vec<(String, String)> = table
        .lines()
        .filter_map(|l| {
            let mut cells = l.strip_prefix("| `")?.split(" | ");
            let name = cells.next()?.trim_end_matches('`').to_owned();
            Some((name, cells.next()?.to_owned()))
        })
        .collect();
    assert!(rows.len() > 30, "docs/metrics.md table: {rows:?}");
    let exported: BTreeSet<String> = rows.iter().map(|(n, _)| n.clone()).collect();
    let histograms: BTreeSet<String> = rows
        .iter()
        .filter(|(_, kind)| kind == "histogram")
        .map(|(n, _)| n.clone())
        .collect();
    let files = [
        "prometheus/rules.yml",
        "prometheus/rules.test.yml",
        "grafana/etcd-standby.json",
        "kubernetes/base/statefulset.yaml",
    ];
    let runbook = read(&workspace_root().join("docs/runbook.md"));
    let mut sources: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.to_string(), read(&deploy(f))))
        .collect();
    sources.push(("docs/runbook.md".into(), runbook.clone()));
    let readme = read(&workspace_root().join("README.md"));
    sources.push(("README.md".into(), readme));
    let mut used = 0;
    for (name, body) in &sources {
        for token in metric_tokens(body) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| token.strip_suffix(s))
                .filter(|b| histograms.contains(*b))
                .unwrap_or(&token);
            assert!(
                exported.contains(base),
                "{name} uses {token}, which the code does not export"
            );
            used += 1;
        }
    }
    assert!(used > 40, "only {used} metric uses found");
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&deploy("grafana/etcd-standby.json"))).unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 12);
    for alert in alert_names(&read(&deploy("prometheus/rules.yml"))) {
        assert!(
            runbook.contains(&format!("### {alert}\n")),
            "docs/runbook.md has no `### {alert}` section"
        );
    }
}

fn metric_tokens(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("etcd_standby_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let boundary = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        let tok = &tail[..end];
        // Skip prefixes of words (`etcd_standby_*`) and our crate names.
        if boundary && !tok.ends_with('_') && !tok.contains("standby_integration") {
            out.push(tok.to_owned());
        }
        rest = &tail[end..];
    }
    out
}

fn kustomize_render() -> String {
    let kubectl = tool_dir("ETCD_STANDBY_KUBECTL", "kubernetes-client-1.20").join("kubectl");
    let out = run(Command::new(kubectl)
        .arg("kustomize")
        .arg(deploy("kubernetes/base")));
    assert!(out.status.success(), "kubectl kustomize:\n{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn k8s_validate(manifests: &str) -> Output {
    let venv = tool_dir("ETCD_STANDBY_K8S_VALIDATE", "kubernetes-validate-1.37.0");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, manifests).unwrap();
    run(Command::new(venv.join("bin/python"))
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.30.0"])
        .arg(&file))
}

#[test]
fn kubernetes_manifests_render_and_pass_strict_schema_validation() {
    let rendered = kustomize_render();
    let kinds: BTreeSet<&str> = rendered
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    for k in [
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "ServiceAccount",
    ] {
        assert!(kinds.contains(k), "no {k} in the render: {kinds:?}");
    }
    let out = k8s_validate(&rendered);
    assert!(out.status.success(), "kubernetes-validate:\n{}", text(&out));
    // The check has teeth: a misspelt field fails it.
    let broken = rendered.replacen("  replicas: 2", "  replicaz: 2", 1);
    assert_ne!(broken, rendered);
    let out = k8s_validate(&broken);
    assert!(
        !out.status.success(),
        "a misspelt field passed:\n{}",
        text(&out)
    );
}

/// The arguments of the StatefulSet's container and the unit's ExecStart
/// parse as `etcd-standby` arguments, and every `ETCD_STANDBY_*` variable
/// deploy/ sets is one `run` reads.
#[test]
fn deploy_flags_and_variables_are_ones_run_accepts() {
    let rendered = kustomize_render();
    let args: Vec<String> = rendered
        .lines()
        .skip_while(|l| l.trim().trim_start_matches("- ") != "args:")
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- "))
        .map(|l| l.trim_start().trim_start_matches("- ").to_owned())
        .collect();
    assert!(args.len() > 5 && args[0] == "run", "{args:?}");
    let unit = read(&deploy("systemd/etcd-standby.service"));
    let exec: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart")
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect();
    // clap parses (and checks the values of) everything before --help.
    for argv in [&args, &exec] {
        let out = run(Command::new(etcd_standby_bin()).args(argv).arg("--help"));
        assert!(out.status.success(), "{argv:?}:\n{}", text(&out));
    }
    let out = run(Command::new(etcd_standby_bin()).args(["run", "--no-such-flag", "--help"]));
    assert!(!out.status.success(), "an unknown flag parsed");

    let help = text(&run(
        Command::new(etcd_standby_bin()).args(["run", "--help"])
    ));
    let mut seen = 0;
    for f in [
        "kubernetes/base/configmap.yaml",
        "kubernetes/base/statefulset.yaml",
        "systemd/etcd-standby.env.example",
    ] {
        let body = read(&deploy(f));
        for var in env_vars(&body) {
            assert!(
                help.contains(&format!("[env: {var}=")) || help.contains(&format!("[env: {var}]")),
                "{f} sets {var}, which `etcd-standby run` does not read"
            );
            seen += 1;
        }
    }
    assert!(seen > 15, "{seen}");
}

fn env_vars(body: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = body;
    while let Some(i) = rest.find("ETCD_STANDBY_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        // `ETCD_STANDBY_*` in prose is not a variable.
        if !tail[..end].ends_with('_') {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// `systemd-analyze verify` accepts the unit and its hardening scores
/// "OK" (exposure ≤ 2.0, `--threshold=20` in its tenths) in `systemd-analyze security`. Runs where
/// systemd-analyze is installed.
#[test]
fn systemd_unit_verifies_and_is_hardened() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed; skipping the unit check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("etcd-standby.service");
    // verify wants an executable ExecStart; point it at the built binary.
    let body = read(&deploy("systemd/etcd-standby.service")).replace(
        "/usr/local/bin/etcd-standby",
        &etcd_standby_bin().display().to_string(),
    );
    std::fs::write(&unit, body).unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert!(
        out.status.success(),
        "systemd-analyze verify:\n{}",
        text(&out)
    );
    assert!(text(&out).trim().is_empty(), "warnings:\n{}", text(&out));
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit));
    assert!(
        out.status.success(),
        "systemd-analyze security:\n{}",
        text(&out)
    );
}

/// A real Prometheus scrapes a running replicator with the shipped rules
/// (their `for:` shortened to seconds), sees it replaying, and fires
/// EtcdStandbyStandbyUnreachable once the standby cluster is stopped.
#[test]
fn prometheus_scrapes_a_replicator_and_alerts_when_the_standby_stops() {
    let primary = EtcdCluster::start(EtcdVersion::V3_5, 1, ClusterOptions::default()).unwrap();
    let mut standby = EtcdCluster::start(EtcdVersion::V3_5, 1, ClusterOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rep = Standby::start(
        &primary,
        &dir.path().join("r"),
        &["--standby-endpoints", &standby.client_endpoints()],
    );
    block_on(varied_writes(primary.client_urls(), 200, 4, 7));

    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir(&prom_dir).unwrap();
    let rules = read(&deploy("prometheus/rules.yml"))
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: 1s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(prom_dir.join("rules.yml"), rules).unwrap();
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [rules.yml]\n\
             scrape_configs:\n  - job_name: etcd-standby\n    static_configs:\n      - targets: [\"{}\"]\n",
            rep.admin
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port().unwrap());
    let log = std::fs::File::create(prom_dir.join("prometheus.log")).unwrap();
    let _prom = Killed(
        Command::new(prometheus_dir().join("prometheus"))
            .arg(format!(
                "--config.file={}",
                prom_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let prom_log = || std::fs::read_to_string(prom_dir.join("prometheus.log")).unwrap_or_default();

    let query = |q: &str| -> Option<serde_json::Value> {
        let (code, body) = http_get(&web, &format!("/api/v1/query?query={}", urlencode(q)))?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    };
    let firing = |alert: &str| -> bool {
        http_get(&web, "/api/v1/alerts")
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["data"]["alerts"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|a| a["labels"]["alertname"] == alert && a["state"] == "firing")
    };
    let wait = |what: &str, timeout: Duration, f: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}\nprometheus:\n{}\nreplicator:\n{}",
                prom_log(),
                rep.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    // Scraped, and replaying (the series Prometheus holds says so).
    wait("a scrape showing replay", Duration::from_secs(60), &|| {
        query(r#"etcd_standby_replay_state{state="replaying"} == 1"#)
            .is_some_and(|v| !v["data"]["result"].as_array().is_none_or(|r| r.is_empty()))
    });
    assert!(!firing("EtcdStandbyStandbyUnreachable"));
    assert!(!firing("EtcdStandbyDown"));
    // `status -w table` while it replays.
    let out = run(
        Command::new(etcd_standby_bin()).args(["status", "--admin", &rep.admin, "-w", "table"])
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("| replay state "), "{}", text(&out));
    assert!(text(&out).contains("| FIELD "), "{}", text(&out));

    standby.stop_member(0).unwrap();
    // Writes that replay cannot deliver.
    block_on(varied_writes(primary.client_urls(), 50, 2, 8));
    wait(
        "EtcdStandbyStandbyUnreachable to fire",
        Duration::from_secs(90),
        &|| firing("EtcdStandbyStandbyUnreachable"),
    );
    assert!(
        !firing("EtcdStandbyReplayHalted"),
        "an outage is not a halt"
    );
    // /status names the situation with its stable code.
    let replay = rep.replay().unwrap();
    assert_eq!(replay["error_code"], "ES-1103", "{replay}");
}

/// A child process killed (by its PID, via `Child::kill`) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
