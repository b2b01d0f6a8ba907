#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The peer server over loopback, driven by a raw hyper client as etcd would.

mod common;

use bytes::Bytes;
use common::*;
use etcd_standby_decode::Member;
use etcd_standby_peer::Inbound;
use etcd_standby_peer::codec::{self, LINK_HEARTBEAT_FRAME};
use etcd_standby_proto::raftpb::{ConfState, Message, MessageType, Snapshot, SnapshotMetadata};
use http_body_util::BodyExt;
use prost::Message as _;

fn hex(id: u64) -> String {
    format!("{id:x}")
}

fn stream_req(kind: &str, from: u64) -> http::request::Builder {
    raft_req("GET", &format!("/raft/stream/{kind}/{}", hex(from))).header("X-Raft-To", hex(ME))
}

#[tokio::test]
async fn stream_header_checks_give_etcds_statuses_and_bodies() {
    let h = start().await;
    let mut c = client(h.transport.local_addr()).await;

    let cases: Vec<(http::Request<TestBody>, u16, &str)> = vec![
        // No X-Server-Version → assumed 2.0.0 → incompatible.
        (
            http::Request::builder()
                .uri(format!("/raft/stream/message/{}", hex(LEADER)))
                .header("X-Etcd-Cluster-ID", hex(CLUSTER))
                .header("X-Raft-To", hex(ME))
                .body(empty())
                .unwrap(),
            412,
            "incompatible version\n",
        ),
        (
            set(
                stream_req("message", LEADER).body(empty()).unwrap(),
                "X-Server-Version",
                "2.3.0",
            ),
            412,
            "incompatible version\n",
        ),
        (
            set(
                stream_req("message", LEADER).body(empty()).unwrap(),
                "X-Min-Cluster-Version",
                "3.9.0",
            ),
            412,
            "incompatible version\n",
        ),
        (
            set(
                stream_req("message", LEADER).body(empty()).unwrap(),
                "X-Etcd-Cluster-ID",
                &format!("{CLUSTER:020x}"),
            ),
            412,
            "cluster ID mismatch\n",
        ),
        (
            set(
                stream_req("message", LEADER).body(empty()).unwrap(),
                "X-Etcd-Cluster-ID",
                &format!("{CLUSTER:X}"),
            ),
            412,
            "cluster ID mismatch\n",
        ),
        (
            set(
                stream_req("msgapp", LEADER).body(empty()).unwrap(),
                "X-Raft-To",
                &format!("{ME:016x}"),
            ),
            412,
            "to field mismatch\n",
        ),
        (
            raft_req("GET", &format!("/raft/stream/msgapp/{}", hex(LEADER)))
                .body(empty())
                .unwrap(),
            412,
            "to field mismatch\n",
        ),
        (
            set(
                raft_req("GET", "/raft/stream/msgappv2/1")
                    .body(empty())
                    .unwrap(),
                "X-Raft-To",
                &hex(ME),
            ),
            404,
            "invalid path\n",
        ),
        (
            set(
                raft_req("GET", "/raft/stream/message/zz")
                    .body(empty())
                    .unwrap(),
                "X-Raft-To",
                &hex(ME),
            ),
            404,
            "invalid from\n",
        ),
        (
            stream_req("message", LEADER)
                .method("POST")
                .body(full("x"))
                .unwrap(),
            405,
            "Method Not Allowed\n",
        ),
    ];
    // All on one keep-alive connection: every rejection leaves it usable.
    for (req, status, body) in cases {
        let uri = req.uri().clone();
        let (st, headers, b) = send(&mut c, req).await;
        assert_eq!(st.as_u16(), status, "{uri}");
        assert_eq!(b, body.as_bytes(), "{uri}");
        assert_eq!(headers["x-server-version"], "3.5.1");
        assert_eq!(headers["x-etcd-cluster-id"], hex(CLUSTER).as_str());
        if status == 405 {
            assert_eq!(headers["allow"], "GET");
        }
    }
    h.transport.shutdown().await;
}

#[tokio::test]
async fn not_found_drains_body_and_keeps_the_connection() {
    let h = start().await;
    let mut c = client(h.transport.local_addr()).await;
    let req = http::Request::builder()
        .method("GET")
        .uri("/members/hashkv")
        .header("content-type", "application/json")
        .body(full(r#"{"revision":6501}"#))
        .unwrap();
    let (st, _, body) = send(&mut c, req).await;
    assert_eq!(st, 404);
    assert_eq!(body, "404 page not found\n");
    // A chunked body of 1 MiB on an unknown POST, same connection.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = (0..16)
        .map(|_| Ok(http_body::Frame::data(Bytes::from(vec![7u8; 64 * 1024]))))
        .collect();
    let req = http::Request::builder()
        .method("POST")
        .uri("/leases")
        .body(http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed())
        .unwrap();
    let (st, _, _) = send(&mut c, req).await;
    assert_eq!(st, 404);
    let req = http::Request::builder()
        .uri("/version")
        .body(empty())
        .unwrap();
    let (st, headers, body) = send(&mut c, req).await;
    assert_eq!(st, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body, r#"{"etcdserver":"3.5.1","etcdcluster":"3.5.0"}"#);
    let req = http::Request::builder()
        .method("POST")
        .uri("/version")
        .body(empty())
        .unwrap();
    let (st, headers, _) = send(&mut c, req).await;
    assert_eq!(st, 405);
    assert_eq!(headers["allow"], "GET");
    h.transport.shutdown().await;
}

#[tokio::test]
async fn probing_answers_ok_with_rfc3339_time() {
    let h = start().await;
    let mut c = client(h.transport.local_addr()).await;
    let req = http::Request::builder()
        .uri("/raft/probing")
        .body(empty())
        .unwrap();
    let (st, _, body) = send(&mut c, req).await;
    assert_eq!(st, 200);
    assert!(body.ends_with(b"}\n"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["OK"], true);
    let now = v["Now"].as_str().unwrap();
    assert!(now.ends_with('Z') && now.len() >= 20 && &now[4..5] == "-" && &now[10..11] == "T");
    h.transport.shutdown().await;
}

#[tokio::test]
async fn attached_message_stream_gets_heartbeats_and_sent_messages() {
    let h = start().await;
    let mut c = client(h.transport.local_addr()).await;
    let resp = c
        .send_request(stream_req("message", LEADER).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-server-version"], "3.5.1");
    assert_eq!(resp.headers()["x-etcd-cluster-id"], hex(CLUSTER).as_str());
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    assert!(resp.headers().get("content-encoding").is_none());
    let mut r = StreamReader::message(resp.into_body());
    let first = r.next_any().await.unwrap();
    assert!(codec::is_link_heartbeat(&first));
    assert_eq!(&r.raw[..38], &LINK_HEARTBEAT_FRAME[..]);

    let st = eventually(|| {
        let s = h.transport.status();
        s.peers
            .iter()
            .find(|p| p.id == LEADER && p.message_attached)
            .cloned()
    })
    .await;
    assert!(!st.member, "unknown sender accepted as non-member");
    assert!(!st.msgapp_attached);

    let resp_msg = Message {
        r#type: MessageType::MsgHeartbeatResp as i32,
        to: LEADER,
        from: ME,
        term: 7,
        context: Some(Bytes::from_static(b"ctx")),
        ..Message::default()
    };
    h.transport.send(resp_msg.clone());
    assert_eq!(r.next_real().await.unwrap(), resp_msg);

    // A second attach replaces the first: the old body ends, sends go to the new one.
    let mut c2 = client(h.transport.local_addr()).await;
    let resp2 = c2
        .send_request(stream_req("message", LEADER).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp2.status(), 200);
    let mut r2 = StreamReader::message(resp2.into_body());
    while r.next_any().await.is_some() {}
    let app_resp = Message {
        r#type: MessageType::MsgAppResp as i32,
        to: LEADER,
        from: ME,
        term: 7,
        index: 42,
        ..Message::default()
    };
    // The old attachment may still be detaching; the first send after the
    // replacement must land on the new stream.
    h.transport.send(app_resp.clone());
    assert_eq!(r2.next_real().await.unwrap(), app_resp);
    let sent = h.transport.status().totals.messages_sent;
    assert_eq!(sent, 2);
    h.transport.shutdown().await;
}

#[tokio::test]
async fn attached_msgapp_stream_writes_msgappv2_heartbeats() {
    let h = start().await;
    let mut c = client(h.transport.local_addr()).await;
    let resp = c
        .send_request(stream_req("msgapp", LEADER).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut r = StreamReader::msgapp(resp.into_body(), LEADER, ME);
    let first = r.next_any().await.unwrap();
    assert!(codec::is_link_heartbeat(&first));
    assert_eq!(r.raw[0], 0x00);
    h.transport.shutdown().await;
}

#[tokio::test]
async fn pipeline_post_reaches_inbound() {
    let mut h = start().await;
    let mut c = client(h.transport.local_addr()).await;
    let m = Message {
        r#type: MessageType::MsgApp as i32,
        to: ME,
        from: LEADER,
        term: 2,
        log_term: 2,
        index: 24,
        commit: 24,
        snapshot: Some(codec::etcd_empty_snapshot()),
        ..Message::default()
    };
    let req = raft_req("POST", "/raft")
        .header("content-type", "application/protobuf")
        .body(full(m.encode_to_vec()))
        .unwrap();
    let (st, _, body) = send(&mut c, req).await;
    assert_eq!(st, 204);
    assert!(body.is_empty());
    match recv(&mut h.inbound).await {
        Inbound::Message(got) => assert_eq!(got, m),
        other => panic!("unexpected {other:?}"),
    }
    // Undecodable body → 400, connection still fine.
    let req = raft_req("POST", "/raft")
        .body(full(vec![0xffu8, 0xff]))
        .unwrap();
    let (st, _, body) = send(&mut c, req).await;
    assert_eq!(st, 400);
    assert_eq!(body, "error unmarshalling raft message\n");
    // Wrong method.
    let req = raft_req("GET", "/raft").body(empty()).unwrap();
    let (st, headers, _) = send(&mut c, req).await;
    assert_eq!(st, 405);
    assert_eq!(headers["allow"], "POST");
    // Wrong cluster.
    let req = set(
        raft_req("POST", "/raft")
            .body(full(m.encode_to_vec()))
            .unwrap(),
        "X-Etcd-Cluster-ID",
        "1",
    );
    let (st, _, body) = send(&mut c, req).await;
    assert_eq!(st, 412);
    assert_eq!(body, "cluster ID mismatch\n");
    // The sender became a reply target (pipeline to its X-PeerURLs).
    let s = h.transport.status();
    let p = s.peers.iter().find(|p| p.id == LEADER).unwrap();
    assert_eq!(p.urls, vec!["http://127.0.0.1:1".to_string()]);
    h.transport.shutdown().await;
}

fn snap_message(index: u64) -> Message {
    Message {
        r#type: MessageType::MsgSnap as i32,
        to: ME,
        from: LEADER,
        term: 2,
        snapshot: Some(Snapshot {
            data: Some(Bytes::from_static(br#"{"Root":{}}"#)),
            metadata: Some(SnapshotMetadata {
                conf_state: Some(ConfState {
                    voters: vec![LEADER],
                    learners: vec![ME],
                    ..ConfState::default()
                }),
                index,
                term: 2,
            }),
        }),
        ..Message::default()
    }
}

fn chunked_snapshot_body(m: &Message, db: &[u8]) -> TestBody {
    let mut all = codec::encode_snapshot_header(m).unwrap().to_vec();
    all.extend_from_slice(db);
    // Odd chunk sizes so the header and the DB straddle chunk boundaries.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = all
        .chunks(70_001)
        .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed()
}

#[tokio::test]
async fn snapshot_is_streamed_to_disk_then_accepted_or_rejected() {
    let mut h = start().await;
    let db: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let m = snap_message(6506);

    // Accept → 204.
    let addr = h.transport.local_addr();
    let body = chunked_snapshot_body(&m, &db);
    let post = tokio::spawn(async move {
        let mut c = client(addr).await;
        let req = raft_req("POST", "/raft/snapshot")
            .header("content-type", "application/octet-stream")
            .body(body)
            .unwrap();
        send(&mut c, req).await
    });
    let snap = match recv(&mut h.inbound).await {
        Inbound::Snapshot(s) => s,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(snap.message, m);
    assert_eq!(snap.db_size, db.len() as u64);
    assert!(snap.db_path.starts_with(h.dir.path().join("snap")));
    assert_eq!(std::fs::read(&snap.db_path).unwrap(), db);
    assert!(!post.is_finished(), "the leader waits for accept/reject");
    let path = snap.db_path.clone();
    snap.accept();
    let (st, _, _) = post.await.unwrap();
    assert_eq!(st, 204);
    assert!(path.exists(), "accepted database belongs to the daemon");
    assert_eq!(h.transport.status().totals.snapshots_received, 1);

    // Reject → 500, file removed.
    let body = chunked_snapshot_body(&m, &db[..1000]);
    let post = tokio::spawn(async move {
        let mut c = client(addr).await;
        send(
            &mut c,
            raft_req("POST", "/raft/snapshot").body(body).unwrap(),
        )
        .await
    });
    let snap = match recv(&mut h.inbound).await {
        Inbound::Snapshot(s) => s,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(snap.db_size, 1000);
    let path = snap.db_path.clone();
    snap.reject("disk full".to_string());
    let (st, _, body) = post.await.unwrap();
    assert_eq!(st, 500);
    assert_eq!(body, "failed to process raft message (disk full)\n");
    assert!(!path.exists());

    // Dropping the handle rejects too.
    let body = chunked_snapshot_body(&m, b"");
    let post = tokio::spawn(async move {
        let mut c = client(addr).await;
        send(
            &mut c,
            raft_req("POST", "/raft/snapshot").body(body).unwrap(),
        )
        .await
    });
    match recv(&mut h.inbound).await {
        Inbound::Snapshot(s) => {
            assert_eq!(s.db_size, 0);
            drop(s);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(post.await.unwrap().0, 500);

    // Wrong message type → 400.
    let mut c = client(addr).await;
    let not_snap = Message {
        r#type: MessageType::MsgApp as i32,
        ..snap_message(1)
    };
    let (st, _, body) = send(
        &mut c,
        raft_req("POST", "/raft/snapshot")
            .body(chunked_snapshot_body(&not_snap, b"db"))
            .unwrap(),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(body, "wrong raft message type\n");
    // Truncated header → 400.
    let mut c = client(addr).await;
    let (st, _, body) = send(
        &mut c,
        raft_req("POST", "/raft/snapshot")
            .body(full(vec![0u8, 0, 0, 0, 0, 0, 1]))
            .unwrap(),
    )
    .await;
    assert_eq!(st, 400);
    assert!(body.starts_with(b"failed to decode raft message"));
    h.transport.shutdown().await;
}

#[tokio::test]
async fn version_mirrors_the_leader_and_never_drops_below_the_cluster_version() {
    let answer = std::sync::Arc::new(std::sync::Mutex::new(
        r#"{"etcdserver":"3.5.4","etcdcluster":"3.5.0"}"#.to_string(),
    ));
    let a = answer.clone();
    let leader = serve_fn(move |req| {
        let a = a.clone();
        async move {
            let path = req.uri().path().to_string();
            let _ = req.into_body().collect().await;
            if path != "/version" {
                let mut r = http::Response::new(full("404 page not found\n"));
                *r.status_mut() = http::StatusCode::NOT_FOUND;
                return r;
            }
            let body = a.lock().unwrap().clone();
            let mut r = http::Response::new(full(body));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        }
    })
    .await;
    let h = start().await;
    h.transport.set_members(vec![Member {
        id: LEADER,
        peer_urls: vec![format!("http://{leader}")],
        is_learner: false,
        ..Default::default()
    }]);
    h.transport.set_leader(LEADER);
    let addr = h.transport.local_addr();
    let version = || async move {
        let mut c = client(addr).await;
        let (_, _, body) = send(
            &mut c,
            http::Request::builder()
                .uri("/version")
                .body(empty())
                .unwrap(),
        )
        .await;
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = version().await;
        if v["etcdserver"] == "3.5.4" {
            assert_eq!(v["etcdcluster"], "3.5.0");
            break;
        }
        assert_eq!(v["etcdserver"], "3.5.1", "initial version until observed");
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A leader reporting an older server than the cluster version: we report the cluster version.
    *answer.lock().unwrap() = r#"{"etcdserver":"3.4.23","etcdcluster":"3.5.0"}"#.to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = version().await;
        if v["etcdserver"] == "3.5.0" {
            break;
        }
        assert_eq!(v["etcdserver"], "3.5.4");
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // X-Server-Version on our responses follows.
    let mut c = client(addr).await;
    let (_, headers, _) = send(
        &mut c,
        raft_req("POST", "/raft").body(full(Vec::new())).unwrap(),
    )
    .await;
    assert_eq!(headers["x-server-version"], "3.5.0");
    h.transport.shutdown().await;
}

#[tokio::test]
async fn metrics_register_under_their_names() {
    let mut h = start().await;
    let mut c = client(h.transport.local_addr()).await;
    let m = Message {
        r#type: MessageType::MsgHeartbeat as i32,
        to: ME,
        from: LEADER,
        term: 1,
        ..Message::default()
    };
    let (st, _, _) = send(
        &mut c,
        raft_req("POST", "/raft")
            .body(full(m.encode_to_vec()))
            .unwrap(),
    )
    .await;
    assert_eq!(st, 204);
    let _ = recv(&mut h.inbound).await;
    let mut reg = prometheus_client::registry::Registry::default();
    h.transport.metrics().register(&mut reg);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    for name in [
        "etcd_standby_peer_bytes_received_total",
        "etcd_standby_peer_messages_sent_total",
        "etcd_standby_peer_stream_reconnects_total",
        "etcd_standby_peer_snapshots_received_total",
        "etcd_standby_peer_send_dropped_total",
    ] {
        assert!(text.contains(name), "{name} missing in\n{text}");
    }
    assert!(
        text.contains("etcd_standby_peer_messages_received_total{stream=\"pipeline\"} 1"),
        "{text}"
    );
    let bytes = m.encoded_len() as u64;
    assert!(
        text.contains(&format!("etcd_standby_peer_bytes_received_total {bytes}")),
        "{text}"
    );
    let status = serde_json::to_value(h.transport.status()).unwrap();
    assert_eq!(status["totals"]["messages_received"], 1);
    h.transport.shutdown().await;
}

#[tokio::test]
async fn attached_stream_outlives_the_connection_read_timeout() {
    // Four periodic link heartbeats span more than the 5 s per-connection
    // read timeout: the stream must still be the same open body afterwards.
    let h = start().await;
    let mut c = client(h.transport.local_addr()).await;
    let resp = c
        .send_request(stream_req("message", LEADER).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut r = StreamReader::message(resp.into_body());
    for _ in 0..5 {
        let m = r.next_any().await.expect("stream still open");
        assert!(codec::is_link_heartbeat(&m));
    }
    let m = Message {
        r#type: MessageType::MsgHeartbeatResp as i32,
        to: LEADER,
        from: ME,
        term: 9,
        ..Message::default()
    };
    h.transport.send(m.clone());
    assert_eq!(r.next_real().await.unwrap(), m);
    h.transport.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_its_stream_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let h = start().await;
    // Attach a message stream over a raw socket that is never read.
    let mut tcp = tokio::net::TcpStream::connect(h.transport.local_addr())
        .await
        .unwrap();
    let req = format!(
        "GET /raft/stream/message/{} HTTP/1.1\r\nHost: x\r\nX-Server-From: {}\r\nX-Server-Version: 3.5.1\r\nX-Min-Cluster-Version: 3.0.0\r\nX-Etcd-Cluster-ID: {}\r\nX-Raft-To: {}\r\n\r\n",
        hex(LEADER),
        hex(LEADER),
        hex(CLUSTER),
        hex(ME)
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    eventually(|| {
        let s = h.transport.status();
        s.peers
            .iter()
            .any(|p| p.id == LEADER && p.message_attached)
            .then_some(())
    })
    .await;
    // ~25 MiB: more than loopback socket buffers can absorb.
    let big = Message {
        r#type: MessageType::MsgHeartbeatResp as i32,
        to: LEADER,
        from: ME,
        term: 1,
        context: Some(Bytes::from(vec![0u8; 64 * 1024])),
        ..Message::default()
    };
    for _ in 0..400 {
        h.transport.send(big.clone());
    }
    // The write deadline fires and the attachment goes away.
    eventually(|| {
        let s = h.transport.status();
        s.peers
            .iter()
            .any(|p| p.id == LEADER && !p.message_attached)
            .then_some(())
    })
    .await;
    drop(tcp);
    h.transport.shutdown().await;
}
