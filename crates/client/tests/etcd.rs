//! The client against real etcd 3.4.23 and 3.5.1 (no mocks).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use etcd_standby_client::{
    Client, ClientConfig, ClientError, ClientTls, EtcdError, authpb, hashed_password_field, pb,
    prefix_end,
};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion, free_port};
use futures_util::StreamExt;

fn start(version: EtcdVersion, opts: ClusterOptions) -> EtcdCluster {
    EtcdCluster::start(version, 1, opts).expect("start etcd")
}

async fn client_for(cluster: &EtcdCluster) -> Client {
    Client::connect(ClientConfig::new(cluster.client_urls()))
        .await
        .expect("connect")
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.to_owned().into(),
        value: value.to_owned().into(),
        ..Default::default()
    }
}

fn get(key: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_owned().into(),
        ..Default::default()
    }
}

fn op_put(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(put(key, value))),
    }
}

macro_rules! both_versions {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn v3_4() {
                super::$name(etcd_standby_testkit::EtcdVersion::V3_4).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn v3_5() {
                super::$name(etcd_standby_testkit::EtcdVersion::V3_5).await;
            }
        }
    };
}

both_versions!(kv_lease_cluster);
both_versions!(auth);
both_versions!(tls);

/// KV, paged range, lease, status, alarms and membership on one cluster.
async fn kv_lease_cluster(version: EtcdVersion) {
    let cluster = start(version, ClusterOptions::default());
    let url = cluster.client_url(0).unwrap();
    // An unreachable endpoint first: reads fail over to the live one.
    let dead = format!("http://127.0.0.1:{}", free_port().unwrap());
    let c = Client::connect(ClientConfig::new([dead.clone(), url.clone()]))
        .await
        .unwrap();

    // ---- KV
    let r = c.put(put("a", "1")).await.unwrap();
    let rev1 = r.header.unwrap().revision;
    let r = c
        .put(pb::PutRequest {
            prev_kv: true,
            ..put("a", "2")
        })
        .await
        .unwrap();
    assert_eq!(&r.prev_kv.unwrap().value[..], b"1");
    let got = c.range(get("a")).await.unwrap();
    assert_eq!(got.kvs.len(), 1);
    assert_eq!(&got.kvs[0].value[..], b"2");
    assert_eq!(got.kvs[0].version, 2);
    let old = c
        .range(pb::RangeRequest {
            revision: rev1,
            ..get("a")
        })
        .await
        .unwrap();
    assert_eq!(&old.kvs[0].value[..], b"1");

    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Value as i32,
            key: "a".into(),
            target_union: Some(pb::compare::TargetUnion::Value("2".into())),
            ..Default::default()
        }],
        success: vec![op_put("b", "yes")],
        failure: vec![op_put("b", "no")],
    };
    let t = c.txn(txn.clone()).await.unwrap();
    assert!(t.succeeded);
    assert_eq!(t.responses.len(), 1);
    c.put(put("a", "3")).await.unwrap();
    let t = c.txn(txn).await.unwrap();
    assert!(!t.succeeded);
    assert_eq!(&c.range(get("b")).await.unwrap().kvs[0].value[..], b"no");

    let d = c
        .delete_range(pb::DeleteRangeRequest {
            key: "a".into(),
            range_end: "c".into(),
            prev_kv: true,
        })
        .await
        .unwrap();
    assert_eq!(d.deleted, 2);
    assert_eq!(d.prev_kvs.len(), 2);
    assert!(c.range(get("a")).await.unwrap().kvs.is_empty());

    // Compaction, then reading the compacted revision is a typed error.
    let now = c.range(get("a")).await.unwrap().header.unwrap().revision;
    c.compact(now, true).await.unwrap();
    let err = c
        .range(pb::RangeRequest {
            revision: rev1,
            ..get("a")
        })
        .await
        .unwrap_err();
    assert_eq!(err.etcd_error(), Some(EtcdError::Compacted), "{err}");

    // ---- Paged range over a few thousand keys.
    const N: usize = 3000;
    for chunk in 0..N / 100 {
        let ops = (0..100)
            .map(|i| op_put(&format!("p/{:05}", chunk * 100 + i), &format!("v{i}")))
            .collect();
        let t = c
            .txn(pb::TxnRequest {
                success: ops,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(t.succeeded);
    }
    let mut pages = c.range_pages("p/", prefix_end(b"p/"), 700, false);
    let first = pages.next_page().await.unwrap().unwrap();
    assert_eq!(first.len(), 700);
    let pinned = pages.revision();
    assert!(pinned > 0);
    // Writes after the first page are not seen: one revision for all pages.
    c.put(put("p/99999", "late")).await.unwrap();
    c.put(put("p/00001", "changed")).await.unwrap();
    let mut all = first;
    let mut sizes = vec![700];
    while let Some(page) = pages.next_page().await.unwrap() {
        sizes.push(page.len());
        all.extend(page);
    }
    assert_eq!(sizes, vec![700, 700, 700, 700, 200]);
    assert_eq!(all.len(), N);
    for (i, kv) in all.iter().enumerate() {
        assert_eq!(kv.key, format!("p/{i:05}").as_bytes());
        assert!(kv.mod_revision <= pinned);
    }
    assert_eq!(&all[1].value[..], b"v1");
    // Keys only, as a Stream, at the current revision.
    let pages: Vec<_> = c
        .range_pages("p/", prefix_end(b"p/"), 1000, true)
        .into_stream()
        .collect()
        .await;
    let kvs: Vec<_> = pages.into_iter().flat_map(Result::unwrap).collect();
    assert_eq!(kvs.len(), N + 1);
    assert!(kvs.iter().all(|kv| kv.value.is_empty()));
    // A single key (empty range_end) is one page.
    let mut one = c.range_pages("p/00001", "", 10, false);
    assert_eq!(one.next_page().await.unwrap().unwrap().len(), 1);
    assert!(one.next_page().await.unwrap().is_none());

    // ---- Lease with a chosen ID, keep-alive, TTL, revoke.
    let id: i64 = 0x1234_abcd;
    let g = c.lease_grant(id, 60).await.unwrap();
    assert_eq!((g.id, g.ttl), (id, 60));
    let err = c.lease_grant(id, 60).await.unwrap_err();
    assert_eq!(err.etcd_error(), Some(EtcdError::LeaseExists), "{err}");
    c.put(pb::PutRequest {
        lease: id,
        ..put("leased", "x")
    })
    .await
    .unwrap();
    let (tx, mut rx) = c.lease_keep_alive().await.unwrap();
    tx.keep_alive(id).await.unwrap();
    let ka = rx.message().await.unwrap().unwrap();
    assert_eq!((ka.id, ka.ttl), (id, 60));
    let ttl = c.lease_time_to_live(id, true).await.unwrap();
    assert_eq!(ttl.granted_ttl, 60);
    assert!(ttl.ttl > 0 && ttl.ttl <= 60, "{ttl:?}");
    assert_eq!(ttl.keys, vec![bytes::Bytes::from_static(b"leased")]);
    let leases = c.lease_leases().await.unwrap();
    assert!(leases.leases.iter().any(|l| l.id == id));
    c.lease_revoke(id).await.unwrap();
    assert!(c.range(get("leased")).await.unwrap().kvs.is_empty());
    assert_eq!(c.lease_time_to_live(id, false).await.unwrap().ttl, -1);
    let err = c.lease_revoke(id).await.unwrap_err();
    assert_eq!(err.etcd_error(), Some(EtcdError::LeaseNotFound), "{err}");
    assert!(err.is_not_found());
    // The same stream reports the revoked lease with TTL 0.
    tx.keep_alive(id).await.unwrap();
    let ka = rx.message().await.unwrap().unwrap();
    assert_eq!((ka.id, ka.ttl), (id, 0));
    drop(tx);

    // ---- Status (per endpoint) and alarms.
    let s = c.status(&url).await.unwrap();
    assert!(s.version.starts_with(version.as_str()), "{}", s.version);
    assert!(s.db_size > 0);
    let me = s.header.as_ref().unwrap().member_id;
    assert_eq!(s.leader, me);
    assert!(s.raft_index > 0 && s.raft_term >= 1);
    assert!(s.raft_applied_index > 0, "{s:?}");
    assert!(s.errors.is_empty() && !s.is_learner);
    let err = c.status(&dead).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(c.alarm_list().await.unwrap().alarms.is_empty());
    c.alarm_disarm(0, pb::AlarmType::Nospace).await.unwrap();

    // ---- Membership: add a learner (never started), limits, remove.
    // etcd's raft silently drops a conf change proposed while the previous
    // one is not yet applied inside raft (the call then times out): member
    // calls here use a short timeout and one retry.
    let mut cfg = ClientConfig::new([url.clone()]);
    cfg.request_timeout = Duration::from_secs(3);
    let c = Client::connect(cfg).await.unwrap();
    let list = c.member_list().await.unwrap();
    assert_eq!(list.members.len(), 1);
    assert_eq!(list.members[0].id, me);
    let learner_url = format!("http://127.0.0.1:{}", free_port().unwrap());
    let added = retry_on_timeout(|| c.member_add_learner(vec![learner_url.clone()]))
        .await
        .unwrap();
    let learner = added.member.unwrap();
    assert!(learner.is_learner);
    assert_eq!(learner.peer_ur_ls, vec![learner_url]);
    assert_eq!(added.members.len(), 2);
    let another = format!("http://127.0.0.1:{}", free_port().unwrap());
    let err = retry_on_timeout(|| c.member_add_learner(vec![another.clone()]))
        .await
        .unwrap_err();
    assert_eq!(err.etcd_error(), Some(EtcdError::TooManyLearners), "{err}");
    let err = retry_on_timeout(|| c.member_promote(learner.id))
        .await
        .unwrap_err();
    assert_eq!(err.etcd_error(), Some(EtcdError::LearnerNotReady), "{err}");
    let err = retry_on_timeout(|| c.member_promote(me)).await.unwrap_err();
    assert_eq!(err.etcd_error(), Some(EtcdError::MemberNotLearner), "{err}");
    let list = c.member_list().await.unwrap();
    assert_eq!(list.members.iter().filter(|m| m.is_learner).count(), 1);
    let removed = retry_on_timeout(|| c.member_remove(learner.id))
        .await
        .unwrap();
    assert_eq!(removed.members.len(), 1);
    let err = retry_on_timeout(|| c.member_remove(learner.id))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(err.etcd_error(), Some(EtcdError::MemberNotFound));
}

/// A member call, given time for the previous conf change to be applied
/// inside raft first, retried when etcd dropped it (it then times out).
async fn retry_on_timeout<T, F, Fut>(f: F) -> Result<T, ClientError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut attempt = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match f().await {
            Err(e)
                if attempt < 3
                    && (e.is_timeout() || e.etcd_error() == Some(EtcdError::Timeout)) =>
            {
                eprintln!("member call timed out ({e}); retrying");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A bcrypt hash (cost 10) of [`ALICE_PASSWORD`], made with libxcrypt's
/// `crypt()`, Go's bcrypt reads the `$2b$` prefix.
const ALICE_HASH: &str = "$2b$10$abcdefghijklmnopqrstuuEbloE03PUB1vMLOX94VQ/kTtzBJpngK";
const ALICE_PASSWORD: &str = "s3cret-alice";

/// Users, roles, permissions, enabling auth, token refresh, typed errors.
async fn auth(version: EtcdVersion) {
    let opts = ClusterOptions {
        // Simple tokens expire after 2 s idle: exercises the refresh.
        extra_args: vec!["--auth-token-ttl=2".into()],
        ..Default::default()
    };
    let cluster = start(version, opts);
    let c = client_for(&cluster).await;

    c.user_add("root", "rootpw", false).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.role_add("reader").await.unwrap();
    let err = c.role_add("reader").await.unwrap_err();
    assert_eq!(
        err.etcd_error(),
        Some(EtcdError::RoleAlreadyExists),
        "{err}"
    );
    c.role_grant_permission(
        "reader",
        authpb::Permission {
            perm_type: authpb::permission::Type::Read as i32,
            key: "pub/".into(),
            range_end: prefix_end(b"pub/").into(),
        },
    )
    .await
    .unwrap();
    c.role_grant_permission(
        "reader",
        authpb::Permission {
            perm_type: authpb::permission::Type::Readwrite as i32,
            key: "tmp".into(),
            range_end: "".into(),
        },
    )
    .await
    .unwrap();
    let perms = c.role_get("reader").await.unwrap().perm;
    assert_eq!(perms.len(), 2);
    c.role_revoke_permission("reader", "tmp", "").await.unwrap();
    assert_eq!(c.role_get("reader").await.unwrap().perm.len(), 1);

    // alice: with a password hash on 3.5 (field hashedPassword), plaintext
    // on 3.4 (which has no such field).
    let field = hashed_password_field(ALICE_HASH);
    if version == EtcdVersion::V3_5 {
        // A single UserAdd carrying hashedPassword: etcd 3.5.1 re-hashes the
        // empty plaintext over it, so the hash is NOT what gets stored.
        c.user_add_request(pb::AuthUserAddRequest {
            name: "hashfail".into(),
            options: Some(authpb::UserAddOptions { no_password: false }),
            hashed_password: field.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        c.user_grant_role("hashfail", "reader").await.unwrap();
        c.user_add_hashed("alice", &field).await.unwrap();
    } else {
        c.user_add("alice", ALICE_PASSWORD, false).await.unwrap();
    }
    let err = c.user_add("alice", "x", false).await.unwrap_err();
    assert_eq!(
        err.etcd_error(),
        Some(EtcdError::UserAlreadyExists),
        "{err}"
    );
    c.user_grant_role("alice", "reader").await.unwrap();
    c.user_add("nopw", "", true).await.unwrap();
    let mut users = c.user_list().await.unwrap().users;
    users.sort();
    users.retain(|u| u != "hashfail");
    assert_eq!(users, ["alice", "nopw", "root"]);
    assert_eq!(c.user_get("alice").await.unwrap().roles, ["reader"]);
    let mut roles = c.role_list().await.unwrap().roles;
    roles.sort();
    // Granting the built-in role `root` does not create a role entry.
    assert_eq!(roles, ["reader"]);
    let err = c.user_get("nobody").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");

    c.put(put("pub/x", "1")).await.unwrap();
    if version == EtcdVersion::V3_5 {
        assert!(!c.auth_status().await.unwrap().enabled);
    }
    c.auth_enable().await.unwrap();

    // The anonymous client is now refused.
    let err = c.range(get("pub/x")).await.unwrap_err();
    assert_eq!(err.etcd_error(), Some(EtcdError::UserEmpty), "{err}");

    let mut cfg = ClientConfig::new(cluster.client_urls());
    cfg.user = Some(("root".into(), "rootpw".into()));
    let root = Client::connect(cfg.clone()).await.unwrap();
    assert!(root.has_token());
    root.put(put("pub/y", "2")).await.unwrap();
    if version == EtcdVersion::V3_5 {
        // With auth on, even AuthStatus needs a user.
        assert!(root.auth_status().await.unwrap().enabled);
    }

    // alice authenticates with the plaintext password: the 3.5 hash was
    // stored as a hash.
    let res = root.authenticate("alice", ALICE_PASSWORD).await.unwrap();
    assert!(!res.token.is_empty());
    if version == EtcdVersion::V3_5 {
        let err = root
            .authenticate("hashfail", ALICE_PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(err.etcd_error(), Some(EtcdError::AuthFailed), "{err}");
    }
    let err = root.authenticate("alice", "wrong").await.unwrap_err();
    assert_eq!(err.etcd_error(), Some(EtcdError::AuthFailed), "{err}");

    cfg.user = Some(("alice".into(), ALICE_PASSWORD.into()));
    let alice = Client::connect(cfg.clone()).await.unwrap();
    assert_eq!(alice.range(get("pub/x")).await.unwrap().kvs.len(), 1);
    let err = alice.put(put("pub/x", "nope")).await.unwrap_err();
    assert!(err.is_permission_denied(), "{err}");
    assert_eq!(err.etcd_error(), Some(EtcdError::PermissionDenied));
    let err = alice.user_list().await.unwrap_err();
    assert!(err.is_permission_denied(), "{err}");

    // Token expiry (2 s idle): the client re-authenticates by itself.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(alice.range(get("pub/y")).await.unwrap().kvs.len(), 1);

    // Change the password (hashed variant on 3.5), old one stops working.
    root.user_change_password("alice", "new-pw").await.unwrap();
    let err = root
        .authenticate("alice", ALICE_PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(err.etcd_error(), Some(EtcdError::AuthFailed), "{err}");
    root.authenticate("alice", "new-pw").await.unwrap();
    if version == EtcdVersion::V3_5 {
        root.user_change_password_hashed("alice", &field)
            .await
            .unwrap();
        root.authenticate("alice", ALICE_PASSWORD).await.unwrap();
    }

    cfg.user = Some(("root".into(), "bad".into()));
    let err = Client::connect(cfg).await.unwrap_err();
    assert_eq!(err.etcd_error(), Some(EtcdError::AuthFailed), "{err}");

    root.user_revoke_role("alice", "reader").await.unwrap();
    root.user_delete("alice").await.unwrap();
    root.role_delete("reader").await.unwrap();
    let err = root.role_get("reader").await.unwrap_err();
    assert_eq!(err.etcd_error(), Some(EtcdError::RoleNotFound), "{err}");
    root.auth_disable().await.unwrap();
    // Anonymous works again.
    assert_eq!(c.range(get("pub/y")).await.unwrap().kvs.len(), 1);
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// CA, server cert for 127.0.0.1/localhost, client cert.
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, data: String| std::fs::write(dir.path().join(name), data).unwrap();

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "etcd-standby test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        write("ca.pem", ca.pem());

        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        server.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = server.signed_by(&key, &ca).unwrap();
        write("server.pem", cert.pem());
        write("server-key.pem", key.serialize_pem());

        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "etcd-standby-client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = client.signed_by(&key, &ca).unwrap();
        write("client.pem", cert.pem());
        write("client-key.pem", key.serialize_pem());
        Pki { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// mTLS: https client URL with `--client-cert-auth`.
async fn tls(version: EtcdVersion) {
    let pki = Pki::new();
    let arg = |flag: &str, file: &str| format!("--{flag}={}", pki.path(file).display());
    let opts = ClusterOptions {
        client_https: true,
        extra_args: vec![
            arg("cert-file", "server.pem"),
            arg("key-file", "server-key.pem"),
            arg("trusted-ca-file", "ca.pem"),
            "--client-cert-auth".into(),
        ],
        ..Default::default()
    };
    let cluster = start(version, opts);
    let https = cluster.client_https_urls();
    assert_eq!(https.len(), 1);
    assert!(https[0].starts_with("https://"));

    let tls = ClientTls {
        ca: Some(pki.path("ca.pem")),
        cert: Some(pki.path("client.pem")),
        key: Some(pki.path("client-key.pem")),
    };
    let mut cfg = ClientConfig::new(https.clone());
    cfg.tls = Some(tls.clone());
    let c = Client::connect(cfg).await.unwrap();
    c.put(put("tls", "ok")).await.unwrap();
    assert_eq!(&c.range(get("tls")).await.unwrap().kvs[0].value[..], b"ok");
    assert!(c.status(&https[0]).await.unwrap().db_size > 0);

    // Without a client certificate the server refuses the handshake.
    let mut cfg = ClientConfig::new(https.clone());
    cfg.tls = Some(ClientTls {
        cert: None,
        key: None,
        ..tls.clone()
    });
    cfg.connect_timeout = Duration::from_secs(3);
    cfg.request_timeout = Duration::from_secs(3);
    match Client::connect(cfg).await {
        Err(ClientError::Connect { .. }) => {}
        Ok(c) => {
            let err = c.range(get("tls")).await.unwrap_err();
            assert!(err.is_unavailable(), "{err}");
        }
        Err(e) => panic!("unexpected error {e}"),
    }

    // https without a CA is a configuration error.
    let mut cfg = ClientConfig::new(https);
    cfg.tls = Some(ClientTls::default());
    assert!(matches!(
        Client::connect(cfg).await,
        Err(ClientError::Tls { .. })
    ));
}
