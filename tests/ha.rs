//! `run --ha` against real etcd 3.4.23 and 3.5.1: two instances for one
//! source, the active one SIGKILLed under load several times, the passive
//! one taking over the same learner member; verify finds no difference;
//! an instance configured with another peer URL is refused; an instance
//! whose lock was taken writes nothing more and exits 6; and a promotion
//! keeps a waiting instance from taking the lock it frees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_standby_client::pb::{PutRequest, RangeRequest};
use etcd_standby_integration::fidelity::{Replicator, connect, verify};
use etcd_standby_integration::load::{block_on, cluster_raft_index};
use etcd_standby_integration::promote::promote;
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion, free_port};

const LOCK_PREFIX: &[u8] = b"__etcd_standby__/ha/";

fn lock_value(standby: &EtcdCluster) -> Option<serde_json::Value> {
    let urls = standby.client_urls();
    let got = block_on(async {
        let mut end = LOCK_PREFIX.to_vec();
        *end.last_mut().unwrap() += 1;
        connect(urls, None)
            .await
            .range(RangeRequest {
                key: Bytes::from_static(LOCK_PREFIX),
                range_end: Bytes::from(end),
                ..Default::default()
            })
            .await
    })
    .unwrap();
    got.kvs
        .iter()
        .find(|kv| kv.key.ends_with(b"/lock"))
        .map(|kv| serde_json::from_slice(&kv.value).unwrap())
}

/// The HA lock's key on the standby (one source cluster).
async fn lock_key(c: &etcd_standby_client::Client) -> Bytes {
    let got = c
        .range(RangeRequest {
            key: Bytes::from_static(LOCK_PREFIX),
            range_end: Bytes::from_static(b"__etcd_standby__/ha0"),
            ..Default::default()
        })
        .await
        .unwrap();
    got.kvs
        .iter()
        .find(|kv| kv.key.ends_with(b"/lock"))
        .unwrap()
        .key
        .clone()
}

fn key_on(cluster: &EtcdCluster, key: &str) -> bool {
    let urls = cluster.client_urls();
    let key = Bytes::from(key.to_owned());
    block_on(async {
        let c = connect(urls, None).await;
        c.range(RangeRequest {
            key,
            ..Default::default()
        })
        .await
        .unwrap()
        .count
            > 0
    })
}

/// A writer that puts `/ha/w/<n>` until stopped.
fn writer(primary: &EtcdCluster, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let urls = primary.client_urls();
    std::thread::spawn(move || {
        block_on(async move {
            let c = connect(urls, None).await;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = c
                    .put(PutRequest {
                        key: Bytes::from(format!("/ha/w/{:06}", n % 500)),
                        value: Bytes::from(format!("v{n}")),
                        ..Default::default()
                    })
                    .await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    })
}

/// One instance of the pair. All of them advertise `peer_url` (in
/// production a VIP or Service; here one loopback port that only the active
/// instance binds).
/// The pair's instance names (`reps[i]` is `NAMES[i]`).
const NAMES: [&str; 2] = ["a", "b"];

fn instance(
    primary: &EtcdCluster,
    standby: &EtcdCluster,
    dir: &std::path::Path,
    name: &str,
    peer_url: &str,
) -> Replicator {
    Replicator::start(
        primary,
        standby,
        &dir.join(name),
        &[
            "--ha",
            "--ha-instance",
            name,
            "--ha-lock-ttl",
            "3s",
            "--advertise-peer-url",
            peer_url,
        ],
    )
}

fn ha_pair(version: EtcdVersion) {
    let begin = Instant::now();
    let mut primary = EtcdCluster::start(version, 3, ClusterOptions::default()).unwrap();
    let standby = EtcdCluster::start(version, 1, ClusterOptions::default()).unwrap();
    eprintln!("ha {version:?}: clusters up after {:?}", begin.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let peer_url = format!("http://127.0.0.1:{}", free_port().unwrap());
    let mut reps = [
        instance(&primary, &standby, dir.path(), NAMES[0], &peer_url),
        instance(&primary, &standby, dir.path(), NAMES[1], &peer_url),
    ];
    let mut active = loop {
        if let Some(v) = lock_value(&standby) {
            break usize::from(v["instance"] == NAMES[1]);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let t0 = Instant::now();
    eprintln!(
        "ha {version:?}: the lock was taken {:?} after the start",
        begin.elapsed()
    );
    reps[active].wait_joined(Duration::from_secs(60));
    eprintln!("ha {version:?}: joined after {:?}", t0.elapsed());
    let member = reps[active].member_id().unwrap();
    // The passive instance serves its admin listener: alive, not ready (a
    // Service routes the shared peer URL to the ready one), who is active.
    let st = reps[1 - active]
        .status()
        .expect("a passive instance's /status");
    assert_eq!(st["ha"]["role"], "passive", "{st}");
    assert!(
        st["ha"]["holder"]
            .as_str()
            .unwrap()
            .contains(&format!("{:?}", NAMES[active])),
        "{st}"
    );
    assert_eq!(reps[1 - active].get("/healthz").map(|r| r.0), Some(200));
    assert_eq!(reps[1 - active].get("/readyz").map(|r| r.0), Some(503));
    // /activez is what deploy/'s readiness probe uses: the peer Service
    // must route to the active instance even while it lags.
    assert_eq!(reps[1 - active].get("/activez").map(|r| r.0), Some(503));
    assert_eq!(reps[active].get("/activez").map(|r| r.0), Some(200));
    assert_eq!(reps[active].status().unwrap()["ha"]["role"], "active");
    // An instance configured with another peer URL is refused while it is
    // still passive (a MemberUpdate would make etcd forget the learner
    // flag, etcd-io/etcd#21694), not on the day it would take over.
    let other_url = format!("http://127.0.0.1:{}", free_port().unwrap());
    let mut odd = instance(&primary, &standby, dir.path(), "odd", &other_url);
    let st = odd.wait_exit(Duration::from_secs(30));
    assert!(!st.success(), "an instance with another peer URL runs");
    assert!(
        odd.log_tail(20).contains("same --advertise-peer-url"),
        "{}",
        odd.log_tail(20)
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = writer(&primary, stop.clone());
    let mut takeovers = Vec::new();
    for round in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        let before = reps[active].replay_u64("standby_checkpoint").unwrap_or(0);
        reps[active].kill();
        let killed = Instant::now();
        let next = 1 - active;
        // The other instance takes the lock, the same member, and moves
        // the standby's checkpoint past where the dead one left it.
        let seen_member = loop {
            if let Some(st) = reps[next].try_wait() {
                panic!("instance exited ({st})\n{}", reps[next].log_tail(80));
            }
            if let Some(cp) = reps[next].replay_u64("standby_checkpoint")
                && cp > before
            {
                break reps[next].member_id();
            }
            assert!(
                killed.elapsed() < Duration::from_secs(90),
                "round {round}: no takeover within 90 s\n{}",
                reps[next].log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        takeovers.push(killed.elapsed());
        assert_eq!(
            seen_member.as_deref(),
            Some(member.as_str()),
            "same learner member after takeover"
        );
        reps[active].restart();
        active = next;
    }
    stop.store(true, Ordering::Relaxed);
    let written = load.join().unwrap();
    eprintln!("ha {version:?}: {written} writes, takeovers {takeovers:?}");
    reps[active].wait_replayed(Duration::from_secs(60));
    let (same, report) = verify(&primary, &standby, &[]);
    assert!(same, "differences after the takeovers:\n{report}");
    // One learner only, ever.
    let learners = block_on(async {
        let c = connect(primary.client_urls(), None).await;
        c.member_list()
            .await
            .unwrap()
            .members
            .iter()
            .filter(|m| m.is_learner)
            .count()
    });
    assert_eq!(learners, 1);

    // Never two writers: another holder takes the lock (a foreign value,
    // no lease) while `active` runs. Its next write fails the lock compare:
    // nothing more reaches the standby, and it exits 6.
    let holder = lock_value(&standby).unwrap();
    assert_eq!(holder["instance"], NAMES[active]);
    let urls = standby.client_urls();
    block_on(async {
        let c = connect(urls, None).await;
        let key = lock_key(&c).await;
        c.put(PutRequest {
            key,
            value: Bytes::from_static(br#"{"instance":"stray","host":"elsewhere","pid":1,"peer_url":"","lease":"0","acquired_at":""}"#),
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let ctl = primary.etcdctl();
    ctl.put("/ha/after-the-lock-moved", "x").unwrap();
    let st = reps[active].wait_exit(Duration::from_secs(30));
    assert_eq!(
        st.code(),
        Some(6),
        "lost lock exit code\n{}",
        reps[active].log_tail(30)
    );
    let passive = 1 - active;
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !key_on(&standby, "/ha/after-the-lock-moved"),
        "a write reached the standby while the lock was someone else's"
    );
    assert!(
        reps[passive].try_wait().is_none(),
        "the passive instance waits"
    );
    // The stray holder goes away: the passive one takes over and catches up.
    block_on(async {
        let c = connect(standby.client_urls(), None).await;
        let key = lock_key(&c).await;
        c.delete_range(etcd_standby_client::pb::DeleteRangeRequest {
            key,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let target = block_on(cluster_raft_index(primary.client_urls()));
    let t1 = Instant::now();
    reps[passive].wait_joined(Duration::from_secs(60));
    reps[passive].wait_checkpoint(target, Duration::from_secs(60));
    eprintln!(
        "ha {version:?}: caught up after the stray lock in {:?}",
        t1.elapsed()
    );
    assert!(key_on(&standby, "/ha/after-the-lock-moved"));
    let (same, report) = verify(&primary, &standby, &[]);
    assert!(same, "differences at the end:\n{report}");

    // Promote while another instance waits: it never takes the lock the
    // stopped active one releases (the promotion holds the standby), and
    // refuses for good once the standby is promoted.
    let waiting = 1 - passive;
    let acquisitions = |r: &Replicator| r.log().matches("acquired the HA lock").count();
    let acquired_before = acquisitions(&reps[waiting]);
    reps[waiting].restart();
    let since = Instant::now();
    while !reps[waiting]
        .log_tail(5)
        .contains("another instance holds the HA lock")
    {
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "{}",
            reps[waiting].log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..3 {
        primary.kill_member(i).unwrap();
    }
    eprintln!("ha {version:?}: promoting at {:?}", t0.elapsed());
    let run = promote(
        &dir.path().join(NAMES[passive]),
        &standby.client_endpoints(),
        Some(&primary.client_endpoints()),
        &["--yes", "--reason", "HA drill", "-w", "json"],
        // Time enough for the waiting instance to take a free lock.
        &[("ETCD_STANDBY_TEST_PROMOTE_PAUSE", "after_stop:3000")],
    );
    assert_eq!(run.code, Some(0), "{run}\n{}", reps[passive].log_tail(40));
    eprintln!("ha {version:?}: promoted at {:?}", t0.elapsed());
    let done = Instant::now();
    let st = reps[passive].wait_exit(Duration::from_secs(30));
    assert!(
        st.success(),
        "the active instance stopped for the promote: {st}"
    );
    let st = reps[waiting].wait_exit(Duration::from_secs(30));
    assert!(
        !st.success() && reps[waiting].log_tail(10).contains("promoted"),
        "the waiting instance must refuse a promoted standby: {st}\n{}",
        reps[waiting].log_tail(30)
    );
    assert_eq!(
        acquisitions(&reps[waiting]),
        acquired_before,
        "the waiting instance took the lock during the promotion"
    );
    assert!(lock_value(&standby).is_none(), "a lock after the promotion");
    eprintln!(
        "ha {version:?}: instances gone {:?} after the promotion",
        done.elapsed()
    );
}

#[test]
fn ha_pair_takes_over_after_sigkill_fences_a_lost_lock_and_holds_passives_off_during_promote_3_4() {
    ha_pair(EtcdVersion::V3_4);
}

#[test]
fn ha_pair_takes_over_after_sigkill_fences_a_lost_lock_and_holds_passives_off_during_promote_3_5() {
    ha_pair(EtcdVersion::V3_5);
}
