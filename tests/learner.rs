//! The learner against real etcd 3.4.23 and 3.5.1 clusters (3 members on
//! loopback): join, durable identical log, restarts and kills, snapshots,
//! removal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use etcd_standby_integration::load::{block_on, cluster_raft_index, varied_writes};
use etcd_standby_integration::pki::Pki;
use etcd_standby_integration::standby::{Standby, assert_same_entries, wal_entries};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion};

const CATCH_UP: Duration = Duration::from_secs(120);

fn cluster(version: EtcdVersion, opts: ClusterOptions) -> EtcdCluster {
    EtcdCluster::start(version, 3, opts).expect("start a 3-member cluster")
}

fn catch_up(s: &mut Standby, c: &EtcdCluster) -> u64 {
    let target = block_on(cluster_raft_index(c.client_urls()));
    s.wait_commit(target, CATCH_UP);
    target
}

/// Stops a non-leader member and compares its WAL with ours.
fn compare_with_a_member(s: &Standby, c: &mut EtcdCluster, min_common: usize) -> usize {
    let leader = c.leader().unwrap();
    let other = (leader + 1) % c.len();
    c.stop_member(other).unwrap();
    let theirs = wal_entries(&c.data_dir(other).unwrap().join("member/wal"));
    let ours = wal_entries(&s.data_dir.join("member/wal"));
    let n = assert_same_entries(&ours, &theirs, min_common);
    c.restart_member(other).unwrap();
    n
}

fn join_and_replicate(version: EtcdVersion) {
    let mut c = cluster(version, ClusterOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let mut s = Standby::start(&c, &dir.path().join("learner"), &[]);
    let ok = block_on(varied_writes(c.client_urls(), 20_000, 32, 7));
    assert!(ok > 19_000, "only {ok} writes succeeded");
    let target = catch_up(&mut s, &c);
    let common = compare_with_a_member(&s, &mut c, 20_000);
    assert!(
        common as u64 >= target - 5,
        "{common} common entries, cluster index {target}"
    );
    // Our own dump tool reads our data dir.
    let out = std::process::Command::new(etcd_standby_integration::etcd_standby_bin())
        .args(["wal", "verify", &s.data_dir.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wal verify on our data dir: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The member list shows us as a learner.
    let list = c.etcdctl().run(&["member", "list"]).unwrap();
    assert!(
        list.contains(&s.peer_url) && list.contains("true"),
        "{list}"
    );
}

#[test]
fn learner_joins_3_4_and_its_log_equals_a_members_wal() {
    join_and_replicate(EtcdVersion::V3_4);
}

#[test]
fn learner_joins_3_5_and_its_log_equals_a_members_wal() {
    join_and_replicate(EtcdVersion::V3_5);
}

/// Leader restarted, a follower killed, the learner SIGKILLed at moments
/// during heavy writes: it resumes and its log stays identical.
fn survive_failures(version: EtcdVersion) {
    let mut c = cluster(version, ClusterOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let mut s = Standby::start(&c, &dir.path().join("learner"), &[]);
    block_on(varied_writes(c.client_urls(), 2_000, 16, 1));
    catch_up(&mut s, &c);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..4u64 {
        let load = rt.spawn(varied_writes(c.client_urls(), 3_000, 16, 100 + round));
        std::thread::sleep(Duration::from_millis(300 + 150 * round));
        match round {
            0 => {
                let l = c.leader().unwrap();
                c.stop_member(l).unwrap();
                std::thread::sleep(Duration::from_millis(800));
                c.restart_member(l).unwrap();
            }
            1 => {
                let l = c.leader().unwrap();
                let f = (l + 1) % c.len();
                c.kill_member(f).unwrap();
                std::thread::sleep(Duration::from_millis(500));
                c.restart_member(f).unwrap();
            }
            _ => {
                s.kill();
                std::thread::sleep(Duration::from_millis(300));
                s.restart();
            }
        }
        rt.block_on(load).unwrap();
    }
    let target = catch_up(&mut s, &c);
    // Writes refused during the failures made no entries: compare what exists.
    compare_with_a_member(&s, &mut c, (target * 9 / 10) as usize);
}

#[test]
fn learner_survives_leader_restart_follower_kill_and_sigkill_3_4() {
    survive_failures(EtcdVersion::V3_4);
}

#[test]
fn learner_survives_leader_restart_follower_kill_and_sigkill_3_5() {
    survive_failures(EtcdVersion::V3_5);
}

/// The leader compacts past the stopped learner; on restart it sends a
/// snapshot, which we save with its db and continue from.
fn snapshot_path(version: EtcdVersion) {
    let mut c = cluster(
        version,
        ClusterOptions {
            snapshot_count: Some(1000),
            ..ClusterOptions::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mut s = Standby::start(&c, &dir.path().join("learner"), &[]);
    block_on(varied_writes(c.client_urls(), 500, 16, 3));
    catch_up(&mut s, &c);
    s.terminate();
    // 5000 catch-up entries are kept behind each snapshot: go well past.
    block_on(varied_writes(c.client_urls(), 8_000, 32, 4));
    s.restart();
    catch_up(&mut s, &c);
    let st = s.status().unwrap();
    assert!(
        st["node"]["snapshots_received"].as_u64().unwrap() >= 1,
        "no snapshot received: {st}\n{}",
        s.log()
    );
    let snap_dir = s.data_dir.join("member/snap");
    let dbs: Vec<_> = std::fs::read_dir(&snap_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            etcd_standby_wal::names::parse_snap_db_name(&e.file_name().to_string_lossy()).is_some()
        })
        .collect();
    assert_eq!(dbs.len(), 1, "one snapshot db kept");
    let db = etcd_standby_bolt::BoltFile::open(dbs[0].path())
        .expect("the received db is a valid bbolt file");
    assert!(
        etcd_standby_bolt::etcd::live_keys(&db)
            .unwrap()
            .stats()
            .live_keys
            > 0
    );
    // More writes after the snapshot still arrive, and match a member.
    block_on(varied_writes(c.client_urls(), 1_000, 16, 5));
    catch_up(&mut s, &c);
    compare_with_a_member(&s, &mut c, 900);
}

#[test]
fn learner_receives_a_leader_snapshot_after_compaction_3_4() {
    snapshot_path(EtcdVersion::V3_4);
}

#[test]
fn learner_receives_a_leader_snapshot_after_compaction_3_5() {
    snapshot_path(EtcdVersion::V3_5);
}

#[test]
fn member_remove_stops_the_learner_with_a_clear_message() {
    for version in [EtcdVersion::V3_4, EtcdVersion::V3_5] {
        let c = EtcdCluster::start(version, 1, ClusterOptions::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("learner");
        let mut s = Standby::start(&c, &data, &[]);
        block_on(varied_writes(c.client_urls(), 100, 4, 9));
        catch_up(&mut s, &c);
        let id = s.member_id().unwrap();
        c.etcdctl().run(&["member", "remove", &id]).unwrap();
        let st = s.wait_exit(Duration::from_secs(30));
        assert_eq!(st.code(), Some(3), "exit code for removal\n{}", s.log());
        assert!(s.log().contains("removed"), "{}", s.log());
        // The data dir refuses to rejoin.
        s.restart();
        let st = s.wait_exit(Duration::from_secs(30));
        assert_ne!(st.code(), Some(0));
        assert!(s.log().contains("cannot rejoin"), "{}", s.log());
    }
}

#[test]
fn second_learner_is_refused_by_preflight() {
    let c = EtcdCluster::start(EtcdVersion::V3_5, 1, ClusterOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Standby::start(&c, &dir.path().join("a"), &[]);
    block_on(varied_writes(c.client_urls(), 10, 2, 1));
    catch_up(&mut a, &c);
    let mut b = Standby::start(&c, &dir.path().join("b"), &[]);
    let st = b.wait_exit(Duration::from_secs(30));
    assert_ne!(st.code(), Some(0));
    assert!(b.log().contains("already has a learner"), "{}", b.log());
}

/// Mutual TLS on the peer port (TLS 1.2 only on 3.5.1): etcd requires and
/// verifies our client certificate, we verify etcd's.
fn peer_mtls(version: EtcdVersion) {
    let pki = Pki::new(&["etcd", "standby"]);
    let c = cluster(
        version,
        ClusterOptions {
            peer_https: true,
            extra_args: vec![
                format!("--peer-cert-file={}", pki.path("etcd.pem")),
                format!("--peer-key-file={}", pki.path("etcd-key.pem")),
                format!("--peer-trusted-ca-file={}", pki.path("ca.pem")),
                "--peer-client-cert-auth".to_owned(),
            ],
            ..ClusterOptions::default()
        },
    );
    assert!(c.peer_urls()[0].starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let port = etcd_standby_testkit::free_port().unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let (cert, key, ca) = (
        pki.path("standby.pem"),
        pki.path("standby-key.pem"),
        pki.path("ca.pem"),
    );
    let mut s = Standby::start(
        &c,
        &dir.path().join("learner"),
        &[
            "--advertise-peer-url",
            &url,
            "--peer-cert",
            &cert,
            "--peer-key",
            &key,
            "--peer-ca",
            &ca,
        ],
    );
    block_on(varied_writes(c.client_urls(), 2_000, 16, 77));
    catch_up(&mut s, &c);
    compare_with_a_member_keep_running(&s, &c, 2_000);
    // Our peer port enforces the peer CA: no client certificate, or one
    // from another CA, is refused; etcd's certificate is served.
    let other = Pki::new(&["intruder"]);
    let addr = url.trim_start_matches("https://").to_owned();
    let get = |client: Option<(String, String)>| block_on(tls_get(&addr, &ca, client));
    let no_cert = get(None);
    assert!(
        no_cert.is_err(),
        "served without a client certificate: {no_cert:?}"
    );
    let foreign = get(Some((
        other.path("intruder.pem"),
        other.path("intruder-key.pem"),
    )));
    assert!(
        foreign.is_err(),
        "served a certificate of another CA: {foreign:?}"
    );
    let member = get(Some((pki.path("etcd.pem"), pki.path("etcd-key.pem"))));
    assert!(
        member.as_ref().is_ok_and(|b| b.contains("etcdserver")),
        "{member:?}"
    );
}

/// `GET /version` over TLS trusting `ca`, presenting `client` (cert, key
/// PEM files) when given; the response, or why it failed.
async fn tls_get(addr: &str, ca: &str, client: Option<(String, String)>) -> Result<String, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        None => b.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(&cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            b.with_client_auth_cert(certs, PrivateKeyDer::from_pem_file(&key).unwrap())
                .unwrap()
        }
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    if text.starts_with("HTTP/1.1 200") {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Like [`compare_with_a_member`] on a running member (its WAL may be mid-write).
fn compare_with_a_member_keep_running(s: &Standby, c: &EtcdCluster, min_common: usize) -> usize {
    let theirs = wal_entries(&c.data_dir(0).unwrap().join("member/wal"));
    let ours = wal_entries(&s.data_dir.join("member/wal"));
    assert_same_entries(&ours, &theirs, min_common)
}

#[test]
fn learner_speaks_mutual_tls_on_the_peer_port_3_4() {
    peer_mtls(EtcdVersion::V3_4);
}

#[test]
fn learner_speaks_mutual_tls_on_the_peer_port_3_5() {
    peer_mtls(EtcdVersion::V3_5);
}

#[test]
fn status_and_leave_commands_work_against_a_running_learner() {
    let c = EtcdCluster::start(EtcdVersion::V3_5, 1, ClusterOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("learner");
    // The peer listener given in etcd's URL form (`--listen-peer-urls` style).
    let url = format!(
        "http://127.0.0.1:{}",
        etcd_standby_testkit::free_port().unwrap()
    );
    let mut s = Standby::start(
        &c,
        &data,
        &["--advertise-peer-url", &url, "--peer-listen", &url],
    );
    block_on(varied_writes(c.client_urls(), 50, 4, 3));
    catch_up(&mut s, &c);
    let bin = etcd_standby_integration::etcd_standby_bin();
    let out = std::process::Command::new(&bin)
        .args(["status", "--admin", &s.admin])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("following") && text.contains("commit"),
        "{text}"
    );
    let out = std::process::Command::new(&bin)
        .args([
            "leave",
            "--data-dir",
            &data.display().to_string(),
            "--source-endpoints",
            &c.client_endpoints(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = c.etcdctl().run(&["member", "list"]).unwrap();
    assert!(
        !list.contains(&s.peer_url),
        "still a member after leave: {list}"
    );
    let st = s.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(3), "{}", s.log());
}

#[test]
fn promotion_by_the_cluster_raises_an_alarm_and_we_never_vote() {
    let c = EtcdCluster::start(EtcdVersion::V3_5, 1, ClusterOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Standby::start(&c, &dir.path().join("learner"), &[]);
    block_on(varied_writes(c.client_urls(), 50, 4, 5));
    catch_up(&mut s, &c);
    let id = s.member_id().unwrap();
    // The learner acks durable entries, so etcd sees it in sync and promotes it.
    c.etcdctl().run(&["member", "promote", &id]).unwrap();
    let start = std::time::Instant::now();
    loop {
        let st = s.status().unwrap();
        let alarms = st["node"]["alarms"].as_array().cloned().unwrap_or_default();
        if alarms.iter().any(|a| a["kind"] == "promoted") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no promotion alarm: {st}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Writes still commit (we ack durable entries); we stay a learner inside.
    block_on(varied_writes(c.client_urls(), 50, 4, 6));
    catch_up(&mut s, &c);
    assert!(s.log().contains("ALARM"), "{}", s.log());
}
