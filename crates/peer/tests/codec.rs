#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Byte-format tests of the sans-IO codecs: etcd's exact frames, round trips
//! under arbitrary chunking, the msgappv2 encoder rule and decoder
//! reconstruction, and hostile input.

use bytes::{BufMut, Bytes, BytesMut};
use etcd_standby_peer::codec::{
    self, CodecError, LINK_HEARTBEAT_FRAME, MAX_MESSAGE_SIZE, MessageStreamDecoder,
    MsgAppV2Decoder, MsgAppV2Encoder, SnapshotHeaderDecoder,
};
use etcd_standby_proto::raftpb::{
    ConfState, Entry, Message, MessageType, Snapshot, SnapshotMetadata,
};
use proptest::prelude::*;
use prost::Message as _;

const LOCAL: u64 = 0x6ad828d59d630;
const REMOTE: u64 = 0xaaa9_0000_1234_5678;

fn split_feed<F: FnMut(&[u8])>(data: &[u8], cuts: &[usize], mut feed: F) {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| {
            if data.is_empty() {
                0
            } else {
                c % (data.len() + 1)
            }
        })
        .collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    points.dedup();
    for w in points.windows(2) {
        feed(&data[w[0]..w[1]]);
    }
}

fn drain_messages(
    next: &mut dyn FnMut() -> Result<Option<Message>, CodecError>,
) -> Result<Vec<Message>, CodecError> {
    let mut out = Vec::new();
    while let Some(m) = next()? {
        out.push(m);
    }
    Ok(out)
}

#[test]
fn link_heartbeat_is_etcds_38_byte_frame() {
    let mut out = BytesMut::new();
    codec::encode_message_frame(&codec::link_heartbeat(), &mut out).unwrap();
    assert_eq!(&out[..], &LINK_HEARTBEAT_FRAME[..]);

    let mut dec = MessageStreamDecoder::new();
    dec.feed(&LINK_HEARTBEAT_FRAME);
    let m = dec.next().unwrap().unwrap();
    assert!(codec::is_link_heartbeat(&m));
    assert_eq!(dec.next().unwrap(), None);
    assert_eq!(dec.buffered(), 0);

    // A real heartbeat (From/To set) is not a link heartbeat.
    let hb = Message {
        r#type: MessageType::MsgHeartbeat as i32,
        from: 1,
        to: 2,
        ..Message::default()
    };
    assert!(!codec::is_link_heartbeat(&hb));
}

#[test]
fn empty_snapshot_is_etcd_shaped() {
    let snap = codec::etcd_empty_snapshot();
    assert_eq!(
        snap.encode_to_vec(),
        [0x12, 0x08, 0x0a, 0x02, 0x28, 0x00, 0x10, 0x00, 0x18, 0x00]
    );
    let m = Message {
        r#type: MessageType::MsgAppResp as i32,
        snapshot: Some(snap),
        ..Message::default()
    };
    let bytes = m.encode_to_vec();
    let needle = [
        0x4a, 0x0a, 0x12, 0x08, 0x0a, 0x02, 0x28, 0x00, 0x10, 0x00, 0x18, 0x00,
    ];
    assert!(bytes.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn msgappv2_decoder_reconstructs_app_entries() {
    let e = |index: u64, term: u64| Entry {
        r#type: 0,
        term,
        index,
        data: Some(Bytes::from(format!("e{index}"))),
    };
    // Full MsgApp: term 5, prev index 10, entries 11..12 → state (5, 12).
    let full = Message {
        r#type: MessageType::MsgApp as i32,
        from: REMOTE,
        to: LOCAL,
        term: 5,
        log_term: 4,
        index: 10,
        entries: vec![e(11, 5), e(12, 5)],
        commit: 9,
        snapshot: Some(codec::etcd_empty_snapshot()),
        ..Message::default()
    };
    let full_bytes = full.encode_to_vec();
    let mut wire = BytesMut::new();
    wire.put_u8(0x00); // link heartbeat
    wire.put_u8(0x02);
    wire.put_u64(full_bytes.len() as u64);
    wire.put_slice(&full_bytes);
    // AppEntries with one entry (13) and commit 13.
    let e13 = e(13, 5).encode_to_vec();
    wire.put_u8(0x01);
    wire.put_u64(1);
    wire.put_u64(e13.len() as u64);
    wire.put_slice(&e13);
    wire.put_u64(13);
    // AppEntries n=0 (commit only).
    wire.put_u8(0x01);
    wire.put_u64(0);
    wire.put_u64(14);

    let mut dec = MsgAppV2Decoder::new(LOCAL, REMOTE);
    for b in wire.iter() {
        dec.feed(&[*b]);
    }
    let got = drain_messages(&mut || dec.next()).unwrap();
    assert_eq!(got.len(), 4);
    assert!(codec::is_link_heartbeat(&got[0]));
    assert_eq!(got[1], full);
    let expect = |index: u64, entries: Vec<Entry>, commit: u64| Message {
        r#type: MessageType::MsgApp as i32,
        from: REMOTE,
        to: LOCAL,
        term: 5,
        log_term: 5,
        index,
        entries,
        commit,
        ..Message::default()
    };
    assert_eq!(got[2], expect(12, vec![e(13, 5)], 13));
    assert_eq!(got[3], expect(13, vec![], 14));
}

#[test]
fn msgappv2_encoder_rule() {
    let mut enc = MsgAppV2Encoder::new();
    let app = |term: u64, log_term: u64, index: u64, n: u64| Message {
        r#type: MessageType::MsgApp as i32,
        from: REMOTE,
        to: LOCAL,
        term,
        log_term,
        index,
        entries: (1..=n)
            .map(|i| Entry {
                r#type: 0,
                term,
                index: index + i,
                data: None,
            })
            .collect(),
        commit: 1,
        ..Message::default()
    };
    let first_byte = |enc: &mut MsgAppV2Encoder, m: &Message| {
        let mut out = BytesMut::new();
        enc.encode(m, &mut out).unwrap();
        out[0]
    };
    // Fresh state (0,0): a term-0 message at index 0 would match; a real one does not.
    assert_eq!(first_byte(&mut enc, &app(2, 2, 0, 3)), 0x02);
    // Continues at index 3 in term 2 → compact.
    assert_eq!(first_byte(&mut enc, &app(2, 2, 3, 2)), 0x01);
    assert_eq!(first_byte(&mut enc, &app(2, 2, 5, 0)), 0x01);
    // Wrong index → full.
    assert_eq!(first_byte(&mut enc, &app(2, 2, 4, 1)), 0x02);
    // State is now (2, 5); log_term != term → full.
    assert_eq!(first_byte(&mut enc, &app(3, 2, 5, 1)), 0x02);
    // State (3, 6): term 3 continuation → compact.
    assert_eq!(first_byte(&mut enc, &app(3, 3, 6, 1)), 0x01);
    // Link heartbeat → 0x00; other types refused.
    assert_eq!(first_byte(&mut enc, &codec::link_heartbeat()), 0x00);
    let mut out = BytesMut::new();
    let resp = Message {
        r#type: MessageType::MsgAppResp as i32,
        from: 1,
        to: 2,
        ..Message::default()
    };
    assert!(matches!(
        enc.encode(&resp, &mut out),
        Err(CodecError::NotMsgApp(4))
    ));
}

#[test]
fn malformed_message_stream() {
    // Oversize length.
    let mut dec = MessageStreamDecoder::new();
    dec.feed(&(MAX_MESSAGE_SIZE + 1).to_be_bytes());
    assert!(matches!(dec.next(), Err(CodecError::TooLarge { .. })));
    assert!(matches!(dec.next(), Err(CodecError::Failed)));
    // u64::MAX length.
    let mut dec = MessageStreamDecoder::new();
    dec.feed(&[0xff; 16]);
    assert!(matches!(dec.next(), Err(CodecError::TooLarge { .. })));
    // Truncated: needs more, no error.
    let mut dec = MessageStreamDecoder::new();
    dec.feed(&LINK_HEARTBEAT_FRAME[..37]);
    assert_eq!(dec.next().unwrap(), None);
    let mut dec = MessageStreamDecoder::new();
    dec.feed(&[0, 0, 0]);
    assert_eq!(dec.next().unwrap(), None);
    // Bad protobuf (field 1 with wire type 7).
    let mut dec = MessageStreamDecoder::new();
    dec.feed(&[0, 0, 0, 0, 0, 0, 0, 2, 0x0f, 0x00]);
    assert!(matches!(dec.next(), Err(CodecError::Decode(_))));
    // Limit is configurable.
    let mut dec = MessageStreamDecoder::with_limit(29);
    dec.feed(&LINK_HEARTBEAT_FRAME);
    assert!(matches!(
        dec.next(),
        Err(CodecError::TooLarge { len: 30, limit: 29 })
    ));
}

#[test]
fn malformed_msgappv2_stream() {
    let mut dec = MsgAppV2Decoder::new(LOCAL, REMOTE);
    dec.feed(&[0x03]);
    assert!(matches!(dec.next(), Err(CodecError::UnknownType(3))));
    assert!(matches!(dec.next(), Err(CodecError::Failed)));

    // Full MsgApp with an oversize length.
    let mut dec = MsgAppV2Decoder::new(LOCAL, REMOTE);
    dec.feed(&[0x02]);
    dec.feed(&u64::MAX.to_be_bytes());
    assert!(matches!(dec.next(), Err(CodecError::TooLarge { .. })));

    // AppEntries announcing 2^64-1 entries, then an oversize entry.
    let mut dec = MsgAppV2Decoder::new(LOCAL, REMOTE);
    dec.feed(&[0x01]);
    dec.feed(&u64::MAX.to_be_bytes());
    assert_eq!(dec.next().unwrap(), None);
    dec.feed(&(MAX_MESSAGE_SIZE + 1).to_be_bytes());
    assert!(matches!(dec.next(), Err(CodecError::TooLarge { .. })));

    // Bad entry protobuf.
    let mut dec = MsgAppV2Decoder::new(LOCAL, REMOTE);
    dec.feed(&[0x01]);
    dec.feed(&1u64.to_be_bytes());
    dec.feed(&1u64.to_be_bytes());
    dec.feed(&[0xff]);
    assert!(matches!(dec.next(), Err(CodecError::Decode(_))));

    // Truncated records just wait.
    let mut dec = MsgAppV2Decoder::new(LOCAL, REMOTE);
    dec.feed(&[0x01, 0, 0, 0]);
    assert_eq!(dec.next().unwrap(), None);
    let mut dec = MsgAppV2Decoder::new(LOCAL, REMOTE);
    dec.feed(&[0x02, 0, 0, 0, 0, 0, 0, 0, 5, 0x08]);
    assert_eq!(dec.next().unwrap(), None);
}

#[test]
fn entry_total_limit_in_app_entries() {
    let mut dec = MsgAppV2Decoder::with_limit(LOCAL, REMOTE, 40);
    let entry = Entry {
        r#type: 0,
        term: 1,
        index: 1,
        data: Some(Bytes::from_static(b"0123456789")),
    }
    .encode_to_vec();
    let mut wire = BytesMut::new();
    wire.put_u8(0x01);
    wire.put_u64(3);
    for _ in 0..3 {
        wire.put_u64(entry.len() as u64);
        wire.put_slice(&entry);
    }
    wire.put_u64(1);
    dec.feed(&wire);
    assert!(matches!(dec.next(), Err(CodecError::TooLarge { .. })));
}

#[test]
fn snapshot_header_round_trip() {
    let m = Message {
        r#type: MessageType::MsgSnap as i32,
        from: REMOTE,
        to: LOCAL,
        term: 2,
        snapshot: Some(Snapshot {
            data: Some(Bytes::from_static(b"{\"v2\":true}")),
            metadata: Some(SnapshotMetadata {
                conf_state: Some(ConfState {
                    voters: vec![REMOTE],
                    learners: vec![LOCAL],
                    ..ConfState::default()
                }),
                index: 6506,
                term: 2,
            }),
        }),
        ..Message::default()
    };
    let head = codec::encode_snapshot_header(&m).unwrap();
    assert_eq!(
        u64::from_be_bytes(head[..8].try_into().unwrap()),
        m.encoded_len() as u64
    );
    let mut body = head.to_vec();
    body.extend_from_slice(b"DBBYTES");
    let mut dec = SnapshotHeaderDecoder::new();
    let mut got = None;
    for chunk in body.chunks(5) {
        dec.feed(chunk);
        if got.is_none() {
            got = dec.next().unwrap();
        }
        if got.is_some() {
            // Keep feeding: the rest is database bytes.
        }
    }
    assert_eq!(got.unwrap(), m);
    assert_eq!(&dec.into_remainder()[..], b"DBBYTES");
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (
        0i32..3,
        any::<u64>(),
        any::<u64>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
    )
        .prop_map(|(t, term, index, data)| Entry {
            r#type: t,
            term,
            index,
            data: data.map(Bytes::from),
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        (
            0i32..19,
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        proptest::collection::vec(arb_entry(), 0..4),
        (
            any::<u64>(),
            any::<bool>(),
            any::<u64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            any::<bool>(),
        ),
    )
        .prop_map(
            |((t, to, from, term, log_term, index), entries, (commit, reject, hint, ctx, snap))| {
                Message {
                    r#type: t,
                    to,
                    from,
                    term,
                    log_term,
                    index,
                    entries,
                    commit,
                    snapshot: snap.then(codec::etcd_empty_snapshot),
                    reject,
                    reject_hint: hint,
                    context: ctx.map(Bytes::from),
                }
            },
        )
}

/// One step of a msgappv2 scenario: continue the current run, or jump.
#[derive(Debug, Clone)]
enum Step {
    Continue {
        n: u8,
        commit: u64,
    },
    Jump {
        term: u64,
        log_term: u64,
        index: u64,
        n: u8,
        commit: u64,
        reject: bool,
    },
    Heartbeat,
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..4, any::<u64>()).prop_map(|(n, commit)| Step::Continue { n, commit }),
        2 => (0u64..4, 0u64..4, 0u64..20, 0u8..4, any::<u64>(), any::<bool>()).prop_map(
            |(term, log_term, index, n, commit, reject)| Step::Jump { term, log_term, index, n, commit, reject }
        ),
        1 => Just(Step::Heartbeat),
    ]
}

fn entries(term: u64, after: u64, n: u8) -> Vec<Entry> {
    (1..=u64::from(n))
        .map(|i| Entry {
            r#type: 0,
            term,
            index: after + i,
            data: Some(Bytes::from(vec![i as u8; i as usize])),
        })
        .collect()
}

proptest! {
    #[test]
    fn message_stream_round_trip(
        msgs in proptest::collection::vec(arb_message(), 0..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut wire = BytesMut::new();
        for m in &msgs {
            codec::encode_message_frame(m, &mut wire).unwrap();
        }
        let mut dec = MessageStreamDecoder::new();
        let mut got = Vec::new();
        split_feed(&wire, &cuts, |chunk| {
            dec.feed(chunk);
            while let Some(m) = dec.next().unwrap() {
                got.push(m);
            }
        });
        prop_assert_eq!(got, msgs);
        prop_assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn msgappv2_round_trip(
        steps in proptest::collection::vec(arb_step(), 0..16),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        // Independent model of the encoder/decoder state (reference §4.2).
        let (mut st_term, mut st_index) = (0u64, 0u64);
        // Current run for "Continue" steps.
        let (mut run_term, mut run_last) = (1u64, 0u64);
        let mut enc = MsgAppV2Encoder::new();
        let mut wire = BytesMut::new();
        let mut expected = Vec::new();
        for s in &steps {
            let m = match s.clone() {
                Step::Heartbeat => codec::link_heartbeat(),
                Step::Continue { n, commit } => Message {
                    r#type: MessageType::MsgApp as i32,
                    from: REMOTE,
                    to: LOCAL,
                    term: run_term,
                    log_term: run_term,
                    index: run_last,
                    entries: entries(run_term, run_last, n),
                    commit,
                    ..Message::default()
                },
                Step::Jump { term, log_term, index, n, commit, reject } => Message {
                    r#type: MessageType::MsgApp as i32,
                    from: REMOTE,
                    to: LOCAL,
                    term,
                    log_term,
                    index,
                    entries: entries(term, index, n),
                    commit,
                    reject,
                    snapshot: Some(codec::etcd_empty_snapshot()),
                    ..Message::default()
                },
            };
            let mut rec = BytesMut::new();
            enc.encode(&m, &mut rec).unwrap();
            if codec::is_link_heartbeat(&m) {
                prop_assert_eq!(&rec[..], &[0u8][..]);
                expected.push(m);
            } else {
                let compact = st_index == m.index && st_term == m.log_term && m.log_term == m.term;
                prop_assert_eq!(rec[0], if compact { 0x01 } else { 0x02 });
                let last = m.entries.last().map_or(m.index, |e| e.index);
                if compact {
                    st_index += m.entries.len() as u64;
                    // What the wire can carry: implied fields only.
                    expected.push(Message {
                        r#type: MessageType::MsgApp as i32,
                        from: REMOTE,
                        to: LOCAL,
                        term: m.term,
                        log_term: m.log_term,
                        index: m.index,
                        entries: m.entries.clone(),
                        commit: m.commit,
                        ..Message::default()
                    });
                } else {
                    st_term = m.term;
                    st_index = last;
                    expected.push(m.clone());
                }
                run_term = m.term.max(1);
                run_last = last;
                if m.term == 0 {
                    run_last = 0;
                }
            }
            wire.extend_from_slice(&rec);
        }
        let mut dec = MsgAppV2Decoder::new(LOCAL, REMOTE);
        let mut got = Vec::new();
        split_feed(&wire, &cuts, |chunk| {
            dec.feed(chunk);
            while let Some(m) = dec.next().unwrap() {
                got.push(m);
            }
        });
        prop_assert_eq!(got, expected);
        prop_assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512),
                            cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let mut a = MessageStreamDecoder::with_limit(1 << 16);
        let mut b = MsgAppV2Decoder::with_limit(LOCAL, REMOTE, 1 << 16);
        let mut c = SnapshotHeaderDecoder::with_limit(1 << 16);
        split_feed(&data, &cuts, |chunk| {
            a.feed(chunk);
            b.feed(chunk);
            c.feed(chunk);
            for _ in 0..64 {
                if !matches!(a.next(), Ok(Some(_))) { break; }
            }
            for _ in 0..64 {
                if !matches!(b.next(), Ok(Some(_))) { break; }
            }
            let _ = c.next();
        });
    }
}

/// The common shape of the two stream decoders.
trait Decode {
    fn feed_bytes(&mut self, data: &[u8]);
    fn next_msg(&mut self) -> Result<Option<Message>, CodecError>;
}

impl Decode for MessageStreamDecoder {
    fn feed_bytes(&mut self, data: &[u8]) {
        self.feed(data);
    }
    fn next_msg(&mut self) -> Result<Option<Message>, CodecError> {
        self.next()
    }
}

impl Decode for MsgAppV2Decoder {
    fn feed_bytes(&mut self, data: &[u8]) {
        self.feed(data);
    }
    fn next_msg(&mut self) -> Result<Option<Message>, CodecError> {
        self.next()
    }
}

/// Everything a decoder yields, plus whether it ended in an error.
fn outcome(data: &[u8], bytewise: bool, dec: &mut dyn Decode) -> (Vec<Message>, bool) {
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = if bytewise {
        data.chunks(1).collect()
    } else {
        vec![data]
    };
    for c in chunks {
        dec.feed_bytes(c);
        loop {
            match dec.next_msg() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

proptest! {
    /// Arbitrary bytes (biased towards valid frames) decode identically at
    /// once and one byte at a time: the same property the fuzz targets check.
    #[test]
    fn chunking_never_changes_the_outcome(
        msgs in proptest::collection::vec(arb_message(), 0..3),
        noise in proptest::collection::vec(any::<u8>(), 0..64),
        at in any::<usize>(),
    ) {
        let mut wire = BytesMut::new();
        for m in &msgs {
            codec::encode_message_frame(m, &mut wire).unwrap();
        }
        let mut data = wire.to_vec();
        let at = at % (data.len() + 1);
        data.splice(at..at, noise);

        let whole = outcome(&data, false, &mut MessageStreamDecoder::with_limit(1 << 16));
        let bytewise = outcome(&data, true, &mut MessageStreamDecoder::with_limit(1 << 16));
        prop_assert_eq!(whole, bytewise);

        let mut data2 = vec![0x00u8];
        data2.extend_from_slice(&data);
        let whole = outcome(&data2, false, &mut MsgAppV2Decoder::with_limit(LOCAL, REMOTE, 1 << 16));
        let bytewise = outcome(&data2, true, &mut MsgAppV2Decoder::with_limit(LOCAL, REMOTE, 1 << 16));
        prop_assert_eq!(whole, bytewise);
    }
}
