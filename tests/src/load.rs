//! A seeded, concurrent, varied write load on a primary over gRPC.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use etcd_standby_client::pb::{
    Compare, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, compare, request_op,
};
use etcd_standby_client::{Client, ClientConfig};

/// A tiny deterministic PRNG (splitmix64).
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn key(r: &mut Rng) -> Bytes {
    let prefix = [
        "/registry/pods/",
        "/registry/services/",
        "/app/config/",
        "/locks/",
    ][r.below(4) as usize];
    Bytes::from(format!("{prefix}k{:05}", r.below(3000)))
}

fn value(r: &mut Rng) -> Bytes {
    let len = match r.below(10) {
        0 => 8 * 1024,
        1..=3 => 1024,
        _ => 16 + r.below(240) as usize,
    };
    let b = (r.next_u64() & 0xff) as u8;
    Bytes::from(vec![b'a' + b % 26; len])
}

/// Issues `ops` write requests (each one raft entry) with `concurrency`
/// in flight: puts of 16 B–8 KiB, deletes, prefix deletes, txns (both
/// branches), lease grants and puts attached to leases. Returns the number
/// of requests that succeeded.
pub async fn varied_writes(
    endpoints: Vec<String>,
    ops: usize,
    concurrency: usize,
    seed: u64,
) -> usize {
    let client = Client::connect(ClientConfig::new(endpoints))
        .await
        .expect("connect to the primary");
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let next = next.clone();
        let ok = ok.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = Rng(seed ^ ((w as u64 + 1) << 32));
            let mut lease = 0i64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    break;
                }
                let res = match r.below(20) {
                    0 => client
                        .delete_range(DeleteRangeRequest {
                            key: key(&mut r),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                    1 => {
                        let k = format!("/locks/k{:03}", r.below(300));
                        client
                            .delete_range(DeleteRangeRequest {
                                key: Bytes::from(k.clone()),
                                range_end: Bytes::from(format!("{k}\u{7f}")),
                                ..Default::default()
                            })
                            .await
                            .map(|_| ())
                    }
                    2 | 3 => {
                        let k = key(&mut r);
                        let put = RequestOp {
                            request: Some(request_op::Request::RequestPut(PutRequest {
                                key: k.clone(),
                                value: value(&mut r),
                                ..Default::default()
                            })),
                        };
                        let del = RequestOp {
                            request: Some(request_op::Request::RequestDeleteRange(
                                DeleteRangeRequest {
                                    key: key(&mut r),
                                    ..Default::default()
                                },
                            )),
                        };
                        client
                            .txn(TxnRequest {
                                compare: vec![Compare {
                                    result: compare::CompareResult::Greater as i32,
                                    target: compare::CompareTarget::Version as i32,
                                    key: k,
                                    target_union: Some(compare::TargetUnion::Version(
                                        r.below(3) as i64
                                    )),
                                    ..Default::default()
                                }],
                                success: vec![put.clone(), del],
                                failure: vec![put],
                            })
                            .await
                            .map(|_| ())
                    }
                    4 => match client.lease_grant(0, 600).await {
                        Ok(resp) => {
                            lease = resp.id;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                    5 if lease != 0 => client
                        .put(PutRequest {
                            key: key(&mut r),
                            value: value(&mut r),
                            lease,
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                    _ => client
                        .put(PutRequest {
                            key: key(&mut r),
                            value: value(&mut r),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                };
                if res.is_ok() {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    ok.load(Ordering::Relaxed)
}

/// The leader's raft commit index (`Status.raftIndex`), the highest over
/// the endpoints that answer.
pub async fn cluster_raft_index(endpoints: Vec<String>) -> u64 {
    let client = Client::connect(ClientConfig::new(endpoints.clone()))
        .await
        .expect("connect");
    let mut best = 0;
    for ep in &endpoints {
        if let Ok(st) = client.status(ep).await {
            best = best.max(st.raft_index);
        }
    }
    best
}

/// Runs a future on a fresh runtime (tests are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}
