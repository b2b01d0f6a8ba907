//! Arbitrary bytes as a bbolt file: opening, walking every bucket, the page
//! map and etcd's schema readers must end in data or a typed error.
#![no_main]
use etcd_standby_bolt::{BoltFile, etcd};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(db) = BoltFile::from_bytes(bytes::Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = db.page_map();
    if let Ok(buckets) = db.buckets() {
        for b in &buckets {
            for e in db.iter(b).take(10_000) {
                if e.is_err() {
                    break;
                }
            }
        }
    }
    let _ = etcd::summarize(&db);
    if let Ok(keys) = etcd::live_keys(&db) {
        for k in keys.take(10_000) {
            if k.is_err() {
                break;
            }
        }
    }
});
