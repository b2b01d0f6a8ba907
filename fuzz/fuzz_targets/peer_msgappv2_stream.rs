//! Arbitrary bytes as a rafthttp msgappv2 stream body: decoding (with its
//! per-connection implied term/index) must give the same messages whether the
//! bytes come at once or one at a time, and nothing may panic.
#![no_main]
use bytes::BytesMut;
use etcd_standby_peer::codec::{MsgAppV2Decoder, MsgAppV2Encoder};
use libfuzzer_sys::fuzz_target;

const LOCAL: u64 = 0x6ad828d59d630;
const REMOTE: u64 = 0xaaa9_1111_2222_3333;

fn decode_all(dec: &mut MsgAppV2Decoder, out: &mut Vec<etcd_standby_peer::Message>) -> Result<(), ()> {
    loop {
        match dec.next() {
            Ok(Some(m)) => out.push(m),
            Ok(None) => return Ok(()),
            Err(_) => return Err(()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let limit = 1 << 20;
    let mut whole = MsgAppV2Decoder::with_limit(LOCAL, REMOTE, limit);
    whole.feed(data);
    let mut a = Vec::new();
    let ra = decode_all(&mut whole, &mut a);

    let mut bytewise = MsgAppV2Decoder::with_limit(LOCAL, REMOTE, limit);
    let mut b = Vec::new();
    let mut rb = Ok(());
    for byte in data {
        bytewise.feed(std::slice::from_ref(byte));
        rb = decode_all(&mut bytewise, &mut b);
        if rb.is_err() {
            break;
        }
    }
    assert_eq!(ra, rb);
    assert_eq!(a, b);

    // The encoder accepts whatever MsgApp the decoder produced (or refuses
    // other types with an error), without panicking.
    let mut enc = MsgAppV2Encoder::new();
    for m in &a {
        let mut out = BytesMut::new();
        let _ = enc.encode(m, &mut out);
    }
});
