#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Client side: stream dialers against an in-test server, pipeline POSTs,
//! and two transports talking over mTLS.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use etcd_standby_decode::Member;
use etcd_standby_peer::Inbound;
use etcd_standby_peer::codec;
use etcd_standby_proto::raftpb::{Entry, Message, MessageType};
use http_body_util::BodyExt;
use prost::Message as _;

fn hex(id: u64) -> String {
    format!("{id:x}")
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        r#type: 0,
        term,
        index,
        data: Some(Bytes::from(format!("put {index}"))),
    }
}

/// Checks the six peer headers our dialer must send; returns the problems.
fn header_problems(
    req: &http::Request<hyper::body::Incoming>,
    raft_to: Option<u64>,
) -> Vec<String> {
    let h = req.headers();
    let mut want = vec![
        ("x-server-from", hex(ME)),
        ("x-server-version", "3.5.1".to_string()),
        ("x-min-cluster-version", "3.0.0".to_string()),
        ("x-etcd-cluster-id", hex(CLUSTER)),
        ("x-peerurls", "http://127.0.0.1:2480".to_string()),
    ];
    if let Some(to) = raft_to {
        want.push(("x-raft-to", hex(to)));
    }
    want.into_iter()
        .filter(|(k, v)| h.get(*k).and_then(|x| x.to_str().ok()) != Some(v.as_str()))
        .map(|(k, v)| format!("{k}: want {v}, got {:?}", h.get(k)))
        .collect()
}

fn status(code: u16, body: &'static str) -> http::Response<TestBody> {
    let mut r = http::Response::new(full(body));
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap();
    r.headers_mut()
        .insert("x-server-version", "3.5.1".parse().unwrap());
    r
}

#[tokio::test]
async fn dialer_decodes_msgappv2_then_reports_removed_on_410() {
    let full_app = Message {
        r#type: MessageType::MsgApp as i32,
        to: ME,
        from: LEADER,
        term: 3,
        log_term: 3,
        index: 5,
        entries: vec![entry(6, 3), entry(7, 3)],
        commit: 5,
        snapshot: Some(codec::etcd_empty_snapshot()),
        ..Message::default()
    };
    let mut wire = BytesMut::new();
    wire.put_u8(0x00);
    let b = full_app.encode_to_vec();
    wire.put_u8(0x02);
    wire.put_u64(b.len() as u64);
    wire.put_slice(&b);
    let e = entry(8, 3).encode_to_vec();
    wire.put_u8(0x01);
    wire.put_u64(1);
    wire.put_u64(e.len() as u64);
    wire.put_slice(&e);
    wire.put_u64(8);
    wire.put_u8(0x00);
    let wire = wire.freeze();

    let msgapp_calls = Arc::new(AtomicUsize::new(0));
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let (calls, probs) = (msgapp_calls.clone(), problems.clone());
    let addr = serve_fn(move |req| {
        let (calls, probs, wire) = (calls.clone(), probs.clone(), wire.clone());
        async move {
            let path = req.uri().path().to_string();
            if path == format!("/raft/stream/msgapp/{}", hex(ME)) {
                probs
                    .lock()
                    .unwrap()
                    .extend(header_problems(&req, Some(LEADER)));
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Split at awkward places: inside lengths and payloads.
                    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> =
                        [0usize, 3, 12, 40, wire.len() - 5, wire.len()]
                            .windows(2)
                            .map(|w| Ok(http_body::Frame::data(wire.slice(w[0]..w[1]))))
                            .collect();
                    let mut r = http::Response::new(
                        http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed(),
                    );
                    r.headers_mut()
                        .insert("x-server-version", "3.5.1".parse().unwrap());
                    return r;
                }
                return status(410, "removed member\n");
            }
            if path == format!("/raft/stream/message/{}", hex(ME)) {
                probs
                    .lock()
                    .unwrap()
                    .extend(header_problems(&req, Some(LEADER)));
                return status(404, "error sender not found\n");
            }
            status(404, "404 page not found\n")
        }
    })
    .await;

    let mut h = start().await;
    h.transport.set_members(vec![
        Member {
            id: LEADER,
            peer_urls: vec![format!("http://{addr}")],
            is_learner: false,
            ..Default::default()
        },
        // Ourselves: ignored.
        Member {
            id: ME,
            peer_urls: vec!["http://127.0.0.1:9".to_string()],
            is_learner: true,
            ..Default::default()
        },
    ]);
    match recv(&mut h.inbound).await {
        Inbound::Message(m) => assert_eq!(m, full_app),
        other => panic!("unexpected {other:?}"),
    }
    match recv(&mut h.inbound).await {
        Inbound::Message(m) => assert_eq!(
            m,
            Message {
                r#type: MessageType::MsgApp as i32,
                to: ME,
                from: LEADER,
                term: 3,
                log_term: 3,
                index: 7,
                entries: vec![entry(8, 3)],
                commit: 8,
                ..Message::default()
            }
        ),
        other => panic!("unexpected {other:?}"),
    }
    match recv(&mut h.inbound).await {
        Inbound::Removed { detail } => assert!(detail.contains("410"), "{detail}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(msgapp_calls.load(Ordering::SeqCst), 2, "no dial after 410");
    assert!(
        problems.lock().unwrap().is_empty(),
        "{:?}",
        problems.lock().unwrap()
    );
    let s = h.transport.status();
    assert_eq!(s.peers.len(), 1);
    let p = &s.peers[0];
    assert!(p.member && !p.msgapp_dialed.connected);
    assert!(p.msgapp_dialed.reconnects >= 2);
    assert!(
        p.message_dialed
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("404")
    );
    assert_eq!(p.server_version.as_deref(), Some("3.5.1"));
    h.transport.shutdown().await;
}

#[tokio::test]
async fn pipeline_posts_with_peer_headers_and_403_means_removed() {
    let received = Arc::new(Mutex::new(
        Vec::<(Vec<String>, Option<String>, Bytes)>::new(),
    ));
    let forbid = Arc::new(AtomicUsize::new(0));
    let (rec, fb) = (received.clone(), forbid.clone());
    let addr = serve_fn(move |req| {
        let (rec, fb) = (rec.clone(), fb.clone());
        async move {
            if req.uri().path() != "/raft" || req.method() != "POST" {
                return status(404, "404 page not found\n");
            }
            let problems = header_problems(&req, None);
            let ct = req
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            rec.lock().unwrap().push((problems, ct, body));
            if fb.load(Ordering::SeqCst) == 1 {
                let mut r = status(
                    403,
                    r#"{"message":"cannot process message from removed member"}"#,
                );
                r.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                return r;
            }
            status(204, "")
        }
    })
    .await;
    let mut h = start().await;
    // A learner peer: never dialled, reachable by pipeline only.
    h.transport.set_members(vec![Member {
        id: LEADER,
        peer_urls: vec![format!("http://{addr}")],
        is_learner: true,
        ..Default::default()
    }]);
    let msgs: Vec<Message> = (0..10)
        .map(|i| Message {
            r#type: MessageType::MsgAppResp as i32,
            to: LEADER,
            from: ME,
            term: 4,
            index: 100 + i,
            ..Message::default()
        })
        .collect();
    for m in &msgs {
        h.transport.send(m.clone());
    }
    let got = eventually(|| {
        let r = received.lock().unwrap();
        (r.len() == msgs.len()).then(|| r.clone())
    })
    .await;
    let mut decoded: Vec<Message> = got
        .iter()
        .map(|(problems, ct, body)| {
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!(ct.as_deref(), Some("application/protobuf"));
            Message::decode(body.clone()).unwrap()
        })
        .collect();
    decoded.sort_by_key(|m| m.index);
    assert_eq!(decoded, msgs);
    eventually(|| (h.transport.status().totals.messages_sent == 10).then_some(())).await;

    forbid.store(1, Ordering::SeqCst);
    h.transport.send(msgs[0].clone());
    match recv(&mut h.inbound).await {
        Inbound::Removed { detail } => assert!(detail.contains("403"), "{detail}"),
        other => panic!("unexpected {other:?}"),
    }
    let s = h.transport.status();
    assert_eq!(s.peers[0].pipeline_failures, 1);
    assert_eq!(s.totals.send_dropped, 1);

    // Unknown destination: dropped and counted, never blocks.
    h.transport.send(Message {
        to: 0x1234,
        ..msgs[0].clone()
    });
    assert_eq!(h.transport.status().totals.send_dropped, 2);
    h.transport.shutdown().await;
}

#[tokio::test]
async fn two_transports_over_mtls_streams() {
    const A: u64 = LEADER;
    const B: u64 = ME;
    let pki = pki();
    let a = start_with(A, Some(pki.server_config()), None).await;
    let mut b = start_with(B, None, Some(pki.client_config(true))).await;
    let a_url = format!("https://127.0.0.1:{}", a.transport.local_addr().port());

    // A client without a certificate is refused.
    {
        let connector = tokio_rustls::TlsConnector::from(pki.client_config(false));
        let tcp = tokio::net::TcpStream::connect(a.transport.local_addr())
            .await
            .unwrap();
        let refused = async {
            let tls = connector
                .connect(
                    rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
                    tcp,
                )
                .await?;
            let (mut s, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            let r = s
                .send_request(
                    http::Request::builder()
                        .uri("/raft/probing")
                        .body(empty())
                        .unwrap(),
                )
                .await
                .map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(r.status())
        }
        .await;
        assert!(refused.is_err(), "got {refused:?}");
    }

    b.transport.set_members(vec![Member {
        id: A,
        peer_urls: vec![a_url],
        is_learner: false,
        ..Default::default()
    }]);
    // A sees both streams B dialled.
    eventually(|| {
        let s = a.transport.status();
        s.peers
            .iter()
            .find(|p| p.id == B && p.msgapp_attached && p.message_attached)
            .map(|_| ())
    })
    .await;
    eventually(|| {
        let s = b.transport.status();
        let p = s.peers.iter().find(|p| p.id == A)?;
        (p.msgapp_dialed.connected && p.message_dialed.connected).then_some(())
    })
    .await;

    // A → B over the message stream.
    let hb = Message {
        r#type: MessageType::MsgHeartbeat as i32,
        to: B,
        from: A,
        term: 3,
        commit: 5,
        context: Some(Bytes::from_static(b"read-1")),
        ..Message::default()
    };
    a.transport.send(hb.clone());
    match recv(&mut b.inbound).await {
        Inbound::Message(m) => assert_eq!(m, hb),
        other => panic!("unexpected {other:?}"),
    }
    // A → B MsgApps over msgappv2: full, then a compact continuation.
    let app1 = Message {
        r#type: MessageType::MsgApp as i32,
        to: B,
        from: A,
        term: 3,
        log_term: 3,
        index: 10,
        entries: vec![entry(11, 3)],
        commit: 10,
        ..Message::default()
    };
    let app2 = Message {
        index: 11,
        entries: vec![entry(12, 3), entry(13, 3)],
        commit: 11,
        ..app1.clone()
    };
    a.transport.send(app1.clone());
    a.transport.send(app2.clone());
    for want in [app1, app2] {
        match recv(&mut b.inbound).await {
            Inbound::Message(m) => assert_eq!(m, want),
            other => panic!("unexpected {other:?}"),
        }
    }
    let sent = a.transport.status().totals.messages_sent;
    assert_eq!(sent, 3);
    assert!(a.transport.status().totals.bytes_received == 0);
    assert!(b.transport.status().totals.bytes_received > 0);
    b.transport.shutdown().await;
    a.transport.shutdown().await;
}

#[tokio::test]
async fn silent_stream_is_dropped_after_the_read_deadline() {
    // First dial: 200 and then nothing at all (not even link heartbeats).
    // The dialer must give up on it and re-dial; the second dial gets 410.
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let addr = serve_fn(move |req| {
        let calls = c2.clone();
        async move {
            if req.uri().path() != format!("/raft/stream/msgapp/{}", hex(ME)) {
                return status(404, "404 page not found\n");
            }
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                let silent = futures_util::stream::pending::<
                    Result<http_body::Frame<Bytes>, std::convert::Infallible>,
                >();
                let mut r = http::Response::new(http_body_util::StreamBody::new(silent).boxed());
                r.headers_mut()
                    .insert("x-server-version", "3.5.1".parse().unwrap());
                return r;
            }
            status(410, "removed member\n")
        }
    })
    .await;
    let mut h = start().await;
    h.transport.set_members(vec![Member {
        id: LEADER,
        peer_urls: vec![format!("http://{addr}")],
        is_learner: false,
        ..Default::default()
    }]);
    match recv(&mut h.inbound).await {
        Inbound::Removed { detail } => assert!(detail.contains("410"), "{detail}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let s = h.transport.status();
    let p = s.peers.iter().find(|p| p.id == LEADER).unwrap();
    assert!(p.msgapp_dialed.reconnects >= 2);
    h.transport.shutdown().await;
}
