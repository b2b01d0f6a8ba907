//! Arbitrary bytes as the last WAL segment: reading and decoding every record
//! must end in records or a typed error, never a panic or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let files = vec![(
        "0000000000000000-0000000000000000.wal".to_string(),
        bytes::Bytes::copy_from_slice(data),
    )];
    let mut reader = etcd_standby_wal::WalReader::from_memory(files);
    while let Ok(Some(rec)) = reader.next_record() {
        let _ = rec.decode();
    }
});
