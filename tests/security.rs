//! Source and standby over mutual TLS, with both clusters' auth taking the
//! replicator's user from its client certificate (it has no password):
//! the learner joins, replays and `verify` agrees, all through the https
//! client ports of clusters that refuse clients without a certificate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use etcd_standby_client::pb::{PutRequest, RangeRequest};
use etcd_standby_client::{ClientConfig, ClientTls};
use etcd_standby_integration::etcd_standby_bin;
use etcd_standby_integration::fidelity::{Replicator, connect};
use etcd_standby_integration::load::block_on;
use etcd_standby_integration::pki::Pki;
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion};

const WAIT: Duration = Duration::from_secs(120);
/// The replicator's standby user: its standby certificate's CN.
const USER: &str = "replicator";
/// The replicator's user on the primary: its source certificate's CN. A
/// different name, as the replicator requires: the primary's users are
/// mirrored to the standby, and mirroring its own standby user could lock
/// it out.
const SOURCE_USER: &str = "replicator-src";

/// A 1-member cluster whose https client port requires a certificate of
/// `pki`'s CA (the plain port stays for the test's own set-up).
fn mtls_cluster(version: EtcdVersion, pki: &Pki) -> EtcdCluster {
    EtcdCluster::start(
        version,
        1,
        ClusterOptions {
            client_https: true,
            extra_args: vec![
                format!("--cert-file={}", pki.path("etcd.pem")),
                format!("--key-file={}", pki.path("etcd-key.pem")),
                format!("--trusted-ca-file={}", pki.path("ca.pem")),
                "--client-cert-auth".to_owned(),
            ],
            ..ClusterOptions::default()
        },
    )
    .unwrap()
}

fn mtls_replication(version: EtcdVersion) {
    let pki = Pki::new(&["etcd", USER, SOURCE_USER]);
    let primary = mtls_cluster(version, &pki);
    let standby = mtls_cluster(version, &pki);
    // Both sides: auth on, and our user there has no password (its
    // certificate is its only credential) and the root role: it joins the
    // primary (MemberAdd) and writes the standby. The primary's auth
    // (root, replicator-src) is mirrored to the standby.
    for (c, user) in [(&primary, SOURCE_USER), (&standby, USER)] {
        block_on(async {
            let s = connect(c.client_urls(), None).await;
            s.user_add("root", "root-password", false).await.unwrap();
            s.user_grant_role("root", "root").await.unwrap();
            s.user_add(user, "", true).await.unwrap();
            s.user_grant_role(user, "root").await.unwrap();
            s.auth_enable().await.unwrap();
        });
    }
    let ca = pki.path("ca.pem");
    let (cert, key) = (
        pki.path(&format!("{USER}.pem")),
        pki.path(&format!("{USER}-key.pem")),
    );
    let source = primary.client_https_urls().join(",");
    let target = standby.client_https_urls().join(",");
    let tls = |side: &str| {
        let user = if side == "source" { SOURCE_USER } else { USER };
        vec![
            format!("--{side}-ca"),
            ca.clone(),
            format!("--{side}-cert"),
            pki.path(&format!("{user}.pem")),
            format!("--{side}-key"),
            pki.path(&format!("{user}-key.pem")),
        ]
    };
    let mut flags = vec!["--source-endpoints".to_owned(), source.clone()];
    flags.extend(tls("source"));
    flags.extend(tls("standby"));
    flags.extend(["--standby-user".to_owned(), USER.to_owned()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut r = Replicator::start_to(&primary, &target, &dir.path().join("r"), &flags);
    r.wait_joined(WAIT);
    block_on(async {
        let p = connect(primary.client_urls(), Some(("root", "root-password"))).await;
        for i in 0..50 {
            p.put(PutRequest {
                key: format!("/tls/{i}").into(),
                value: format!("v{i}").into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
    });
    r.wait_replayed(WAIT);

    // The standby holds the keys, read as our certificate's user.
    let n = block_on(async {
        let mut cfg = ClientConfig::new(standby.client_https_urls());
        cfg.tls = Some(ClientTls {
            ca: Some(ca.clone().into()),
            cert: Some(cert.clone().into()),
            key: Some(key.clone().into()),
        });
        let c = etcd_standby_client::Client::connect(cfg).await.unwrap();
        c.range(RangeRequest {
            key: "/tls/".into(),
            range_end: etcd_standby_client::prefix_end(b"/tls/").into(),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .count
    });
    assert_eq!(n, 50, "keys replicated over mutual TLS");

    // verify over the same TLS flags and certificate user.
    let mut args = vec![
        "verify".to_owned(),
        "--source-endpoints".to_owned(),
        source,
        "--standby-endpoints".to_owned(),
        target,
        "--standby-user".to_owned(),
        USER.to_owned(),
    ];
    args.extend(tls("source"));
    args.extend(tls("standby"));
    let out = Command::new(etcd_standby_bin())
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify over mutual TLS: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Without a certificate, verify is refused by both clusters.
    let out = Command::new(etcd_standby_bin())
        .args([
            "verify",
            "--source-endpoints",
            &primary.client_https_urls().join(","),
            "--standby-endpoints",
            &standby.client_https_urls().join(","),
            "--source-ca",
            &ca,
            "--standby-ca",
            &ca,
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "verify without a client certificate succeeded"
    );
}

#[test]
fn replicates_and_verifies_over_mutual_tls_with_a_certificate_user_3_5() {
    mtls_replication(EtcdVersion::V3_5);
}

#[test]
fn replicates_and_verifies_over_mutual_tls_with_a_certificate_user_3_4() {
    mtls_replication(EtcdVersion::V3_4);
}
