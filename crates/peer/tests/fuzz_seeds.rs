#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fuzz seed corpora decode as their names say (keeps the seeds honest
//! and exercises the decoders on hand-built etcd-shaped bytes).

use std::path::PathBuf;

use etcd_standby_peer::codec::{self, MessageStreamDecoder, MsgAppV2Decoder};
use etcd_standby_proto::raftpb::MessageType;

const LOCAL: u64 = 0x6ad828d59d630;
const REMOTE: u64 = 0xaaa9_1111_2222_3333;

fn seed(target: &str, name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn message_stream_seeds() {
    let mut d = MessageStreamDecoder::new();
    d.feed(&seed("peer_message_stream", "seed-link-heartbeat"));
    assert!(codec::is_link_heartbeat(&d.next().unwrap().unwrap()));

    let mut d = MessageStreamDecoder::new();
    d.feed(&seed("peer_message_stream", "seed-heartbeat-resp-reject"));
    let types: Vec<i32> = std::iter::from_fn(|| d.next().unwrap())
        .map(|m| m.r#type)
        .collect();
    assert_eq!(
        types,
        [
            MessageType::MsgHeartbeat as i32,
            MessageType::MsgHeartbeatResp as i32,
            MessageType::MsgAppResp as i32
        ]
    );

    let mut d = MessageStreamDecoder::new();
    d.feed(&seed("peer_message_stream", "seed-msgapp"));
    let m = d.next().unwrap().unwrap();
    assert_eq!(m.r#type, MessageType::MsgApp as i32);
    assert_eq!(m.entries.len(), 2);
    assert!(codec::is_link_heartbeat(&d.next().unwrap().unwrap()));
}

#[test]
fn msgappv2_seeds() {
    let mut d = MsgAppV2Decoder::new(LOCAL, REMOTE);
    d.feed(&seed("peer_msgappv2_stream", "seed-full-then-compact"));
    let msgs: Vec<_> = std::iter::from_fn(|| d.next().unwrap()).collect();
    assert_eq!(msgs.len(), 5);
    assert!(codec::is_link_heartbeat(&msgs[0]));
    assert_eq!((msgs[1].index, msgs[1].entries.len()), (5, 2));
    assert_eq!(
        (
            msgs[2].from,
            msgs[2].to,
            msgs[2].term,
            msgs[2].index,
            msgs[2].commit
        ),
        (REMOTE, LOCAL, 3, 7, 8)
    );
    assert_eq!(
        (msgs[3].index, msgs[3].commit, msgs[3].entries.len()),
        (8, 9, 0)
    );
    assert!(codec::is_link_heartbeat(&msgs[4]));

    let mut d = MsgAppV2Decoder::new(LOCAL, REMOTE);
    d.feed(&seed("peer_msgappv2_stream", "seed-bad-type"));
    assert!(d.next().unwrap().is_some());
    assert!(matches!(d.next(), Err(codec::CodecError::UnknownType(3))));
}
