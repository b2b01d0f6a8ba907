//! Arbitrary bytes as a rafthttp "message" stream body: decoding must give the
//! same messages (or failure) whether the bytes come at once or one at a time,
//! re-encoding a decoded message must reproduce it, and nothing may panic.
#![no_main]
use bytes::BytesMut;
use etcd_standby_peer::codec::{MessageStreamDecoder, encode_message_frame};
use libfuzzer_sys::fuzz_target;

/// Decodes everything available; `Err(())` once the decoder fails.
fn decode_all(dec: &mut MessageStreamDecoder, out: &mut Vec<etcd_standby_peer::Message>) -> Result<(), ()> {
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
    let mut whole = MessageStreamDecoder::with_limit(limit);
    whole.feed(data);
    let mut a = Vec::new();
    let ra = decode_all(&mut whole, &mut a);

    let mut bytewise = MessageStreamDecoder::with_limit(limit);
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

    for m in &a {
        let mut out = BytesMut::new();
        encode_message_frame(m, &mut out).expect("a decoded message re-encodes");
        let mut again = MessageStreamDecoder::new();
        again.feed(&out);
        assert_eq!(again.next().expect("re-encoded frame decodes").as_ref(), Some(m));
    }
});
