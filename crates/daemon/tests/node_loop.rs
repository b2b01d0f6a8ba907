//! The node loop driven with an in-memory log store and outbound transport.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_standby_daemon::committed::{CommittedTail, Read, TailLimits};
use etcd_standby_daemon::metrics::LearnerMetrics;
use etcd_standby_daemon::node::{Exit, LogStore, Node, NodeOptions, Outbound, PersistStats};
use etcd_standby_daemon::status::{NodeState, NodeStatus, StatusCell};
use etcd_standby_daemon::{Error, Result};
use etcd_standby_decode::Member;
use etcd_standby_follower::{Follower, Membership, Ready, Restored};
use etcd_standby_peer::Inbound;
use etcd_standby_proto::raftpb::{self, MessageType as T};
use prost::Message as _;
use tokio::sync::{mpsc, watch};

const LEADER: u64 = 0xaaa9;
const ME: u64 = 0x6ad828d59d630;

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    /// A Ready made durable: last entry index in it (or 0) and its commit.
    Durable {
        last: u64,
    },
    /// A message left: type and index.
    Sent {
        ty: i32,
        index: u64,
        reject: bool,
    },
    Removed,
    /// The log's auxiliary state (receive times) was flushed.
    FlushedAux,
    /// The log was re-opened from disk (`ok`) or that failed (still full).
    Reopened {
        ok: bool,
    },
}

type Journal = Arc<Mutex<Vec<Ev>>>;

struct FakeLog {
    journal: Journal,
    last: (u64, u64),
    commit: u64,
    /// What is durable: the entries and hard state a reopen reads back.
    entries: Vec<raftpb::Entry>,
    hard_state: raftpb::HardState,
    /// Fail every persist from this call on with an IO error (a bad disk).
    fail_after: Option<usize>,
    /// While set, every write fails with ENOSPC (and so does a reopen,
    /// as the real one probes for space first).
    full: Arc<AtomicBool>,
    calls: usize,
}

/// ENOSPC as the OS reports it, inside the context the real log adds.
fn enospc() -> Error {
    Error::from(std::io::Error::from_raw_os_error(28)).context("appending to the WAL")
}

impl LogStore for FakeLog {
    fn persist(&mut self, rd: &Ready, _db: Option<&Path>) -> Result<PersistStats> {
        self.calls += 1;
        if self.fail_after.is_some_and(|n| self.calls > n) {
            return Err(Error::Io(std::io::Error::other("Input/output error")).context("fsync WAL"));
        }
        if self.full.load(Ordering::SeqCst) && (!rd.entries.is_empty() || rd.hard_state.is_some()) {
            // Whatever part of it reached the file is not durable.
            return Err(enospc());
        }
        if let Some(first) = rd.entries.first() {
            self.entries.retain(|e| e.index < first.index);
        }
        self.entries.extend(rd.entries.iter().cloned());
        if let Some(e) = rd.entries.last() {
            self.last = (e.index, e.term);
        }
        if let Some(hs) = &rd.hard_state {
            self.commit = hs.commit;
            self.hard_state = *hs;
        }
        self.journal
            .lock()
            .unwrap()
            .push(Ev::Durable { last: self.last.0 });
        Ok(PersistStats {
            entries: rd.entries.len() as u64,
            ..Default::default()
        })
    }
    fn mark(&mut self, _: u64, _: u64, _: &Membership) -> Result<()> {
        Ok(())
    }
    fn release(&mut self, _: u64) -> Result<usize> {
        Ok(0)
    }
    fn base(&self) -> (u64, u64) {
        (0, 0)
    }
    fn last(&self) -> (u64, u64) {
        self.last
    }
    fn durable_commit(&self) -> u64 {
        self.commit
    }
    fn record_removal(&mut self) -> Result<()> {
        self.journal.lock().unwrap().push(Ev::Removed);
        Ok(())
    }
    fn flush_aux(&mut self) -> Result<()> {
        self.journal.lock().unwrap().push(Ev::FlushedAux);
        Ok(())
    }
    fn reopen(&mut self) -> Result<Restored> {
        let ok = !self.full.load(Ordering::SeqCst);
        self.journal.lock().unwrap().push(Ev::Reopened { ok });
        if !ok {
            return Err(enospc().context("probing for free space"));
        }
        self.last = self.entries.last().map_or((0, 0), |e| (e.index, e.term));
        self.commit = self.hard_state.commit;
        Ok(Restored {
            entries: self.entries.clone(),
            hard_state: self.hard_state,
            ..Default::default()
        })
    }
}

struct FakeOut {
    journal: Journal,
}

impl Outbound for FakeOut {
    fn send(&self, m: raftpb::Message) {
        self.journal.lock().unwrap().push(Ev::Sent {
            ty: m.r#type,
            index: m.index,
            reject: m.reject,
        });
    }
    fn set_members(&self, _: Vec<Member>) {}
    fn set_leader(&self, _: u64) {}
}

fn conf_change(ty: raftpb::ConfChangeType, id: u64, ctx: &str) -> Bytes {
    raftpb::ConfChange {
        id: 0,
        r#type: ty as i32,
        node_id: id,
        context: Some(Bytes::copy_from_slice(ctx.as_bytes())),
    }
    .encode_to_vec()
    .into()
}

fn entry(index: u64, term: u64, ty: i32, data: Option<Bytes>) -> raftpb::Entry {
    raftpb::Entry {
        r#type: ty,
        term,
        index,
        data,
    }
}

/// The first entries of a real cluster: bootstrap AddNode(leader), the new
/// leader's empty entry, our AddLearnerNode.
fn bootstrap_log() -> Vec<raftpb::Entry> {
    vec![
        entry(
            1,
            1,
            1,
            Some(conf_change(
                raftpb::ConfChangeType::ConfChangeAddNode,
                LEADER,
                r#"{"id":43689,"peerURLs":["http://127.0.0.1:2380"],"name":"n1"}"#,
            )),
        ),
        entry(2, 2, 0, None),
        entry(
            3,
            2,
            1,
            Some(conf_change(
                raftpb::ConfChangeType::ConfChangeAddLearnerNode,
                ME,
                r#"{"id":1,"peerURLs":["http://127.0.0.1:2480"],"isLearner":true}"#,
            )),
        ),
    ]
}

fn app(prev: (u64, u64), entries: Vec<raftpb::Entry>, commit: u64) -> Inbound {
    Inbound::Message(raftpb::Message {
        r#type: T::MsgApp as i32,
        to: ME,
        from: LEADER,
        term: 2,
        index: prev.0,
        log_term: prev.1,
        entries,
        commit,
        ..Default::default()
    })
}

fn payload(i: u64) -> Option<Bytes> {
    Some(Bytes::from(format!("entry {i}")))
}

struct Harness {
    journal: Journal,
    status: StatusCell<NodeStatus>,
    node: Node<FakeLog, FakeOut>,
    full: Arc<AtomicBool>,
    registry: prometheus_client::registry::Registry,
}

fn harness(fail_after: Option<usize>, committed: Option<CommittedTail>) -> Harness {
    let journal = Journal::default();
    let status = StatusCell::<NodeStatus>::default();
    let follower = Follower::new(
        ME,
        Restored::default(),
        &etcd_standby_follower::raft_logger(),
    )
    .unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let full = Arc::new(AtomicBool::new(false));
    let node = Node {
        follower,
        log: FakeLog {
            journal: journal.clone(),
            last: (0, 0),
            commit: 0,
            entries: Vec::new(),
            hard_state: raftpb::HardState::default(),
            fail_after,
            full: full.clone(),
            calls: 0,
        },
        outbound: FakeOut {
            journal: journal.clone(),
        },
        member_id: ME,
        cluster_id: 0x1234,
        status: status.clone(),
        metrics: LearnerMetrics::new(&mut registry),
        opts: NodeOptions::default(),
        initial_members: Vec::new(),
        committed,
    };
    Harness {
        journal,
        status,
        node,
        full,
        registry,
    }
}

/// Feeds `msgs` and ends the loop by closing its inbound channel.
async fn drive(node: Node<FakeLog, FakeOut>, msgs: Vec<Inbound>) -> Result<Exit> {
    let (tx, rx) = mpsc::channel(64);
    for m in msgs {
        tx.send(m).await.unwrap();
    }
    drop(tx);
    let (_stop_tx, stop_rx) = watch::channel(false);
    node.run(rx, stop_rx).await
}

fn acks(j: &[Ev]) -> Vec<(usize, u64)> {
    j.iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Ev::Sent { ty, index, reject } if *ty == T::MsgAppResp as i32 && !reject => {
                Some((i, *index))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn acks_leave_only_after_their_entries_are_durable() {
    let h = harness(None, None);
    let mut msgs = vec![app((0, 0), bootstrap_log(), 3)];
    // Then appends of five entries each, commit trailing by one batch.
    let mut prev = (3, 2);
    for round in 0..10u64 {
        let first = 4 + round * 5;
        let es: Vec<_> = (first..first + 5)
            .map(|i| entry(i, 2, 0, payload(i)))
            .collect();
        msgs.push(app(prev, es, first - 1));
        prev = (first + 4, 2);
    }
    let exit = drive(h.node, msgs).await.unwrap();
    assert!(matches!(exit, Exit::Stopped));
    let j = h.journal.lock().unwrap().clone();
    let acks = acks(&j);
    assert!(
        acks.iter().any(|(_, i)| *i == 53),
        "the last append was acked: {j:?}"
    );
    assert_acks_follow_durability(&j);
    assert_eq!(h.status.get().state, NodeState::Stopped);
}

#[tokio::test]
async fn a_failed_persist_that_is_not_a_full_disk_stops_the_loop_without_acknowledging() {
    // The first persist (the bootstrap append) works, the next fails (EIO).
    let mut h = harness(Some(1), None);
    // One message per Ready cycle, so the second append is its own persist.
    h.node.opts.max_batch = 1;
    let es: Vec<_> = (4..9).map(|i| entry(i, 2, 0, payload(i))).collect();
    let msgs = vec![app((0, 0), bootstrap_log(), 3), app((3, 2), es, 3)];
    let err = drive(h.node, msgs).await.err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(
            |e| e.contains("persisting to the local log") && e.contains("Input/output")
        ),
        "{err:?}"
    );
    let j = h.journal.lock().unwrap().clone();
    assert!(
        acks(&j).iter().all(|(_, i)| *i <= 3),
        "nothing beyond the durable prefix was acked: {j:?}"
    );
    assert!(!j.iter().any(|e| matches!(e, Ev::Reopened { .. })), "{j:?}");
}

/// Every acknowledgement in the journal left after a Ready that made its
/// index durable (and after the last reopen, if it came after one).
fn assert_acks_follow_durability(j: &[Ev]) {
    for (pos, index) in acks(j) {
        let durable = j[..pos].iter().rev().find_map(|e| match e {
            Ev::Durable { last } => Some(*last),
            _ => None,
        });
        assert!(
            durable.is_some_and(|d| d >= index),
            "ack of {index} at {pos} left before it was durable: {j:?}"
        );
    }
}

/// Waits (bounded, for correctness only) until `f` holds for the status.
async fn wait_status(status: &StatusCell<NodeStatus>, what: &str, f: impl Fn(&NodeStatus) -> bool) {
    let start = Instant::now();
    while !f(&status.get()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: {:?}",
            status.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metrics_text(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_acknowledges_nothing_raises_the_state_and_recovers_when_space_returns() {
    let h = harness(None, None);
    let (journal, status, full) = (h.journal.clone(), h.status.clone(), h.full.clone());
    let (tx, rx) = mpsc::channel(64);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let Harness { node, registry, .. } = h;
    let task = tokio::spawn(node.run(rx, stop_rx));

    tx.send(app((0, 0), bootstrap_log(), 3)).await.unwrap();
    wait_status(&status, "bootstrap durable", |s| {
        s.state == NodeState::Following && s.last_durable_index == 3
    })
    .await;
    assert!(acks(&journal.lock().unwrap()).iter().any(|(_, i)| *i == 3));

    // The disk fills: the next append fails, nothing of it is acked.
    full.store(true, Ordering::SeqCst);
    let es: Vec<_> = (4..=8).map(|i| entry(i, 2, 0, payload(i))).collect();
    tx.send(app((3, 2), es, 3)).await.unwrap();
    wait_status(&status, "disk_full published", |s| {
        s.state == NodeState::DiskFull
    })
    .await;
    let st = status.get();
    assert_eq!(st.error_code, Some("ES-3002"), "{st:?}");
    assert!(
        st.error
            .as_deref()
            .is_some_and(|e| e.contains("No space left on device")),
        "{st:?}"
    );
    assert_eq!(st.last_durable_index, 3);
    let text = metrics_text(&registry);
    assert!(
        text.contains("etcd_standby_local_disk_full_total 1\n"),
        "{text}"
    );
    assert!(
        text.contains("etcd_standby_node_state{state=\"disk_full\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("etcd_standby_node_state{state=\"following\"} 0\n"),
        "{text}"
    );
    // The leader sends more meanwhile; retries find the disk still full.
    let es: Vec<_> = (9..=10).map(|i| entry(i, 2, 0, payload(i))).collect();
    tx.send(app((8, 2), es, 3)).await.unwrap();
    let start = Instant::now();
    while !journal
        .lock()
        .unwrap()
        .contains(&Ev::Reopened { ok: false })
    {
        assert!(start.elapsed() < Duration::from_secs(20), "no retry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status.get().state, NodeState::DiskFull);
    {
        let j = journal.lock().unwrap().clone();
        assert!(
            acks(&j).iter().all(|(_, i)| *i <= 3),
            "nothing beyond the durable prefix was acked while full: {j:?}"
        );
    }

    // Space returns: recovered in place, without a new node.
    full.store(false, Ordering::SeqCst);
    wait_status(&status, "recovered", |s| s.state == NodeState::Following).await;
    let st = status.get();
    assert_eq!((st.error.as_deref(), st.error_code), (None, None), "{st:?}");
    assert_eq!(st.last_durable_index, 3);
    assert!(journal.lock().unwrap().contains(&Ev::Reopened { ok: true }));
    let text = metrics_text(&registry);
    assert!(
        text.contains("etcd_standby_node_state{state=\"following\"} 1\n"),
        "{text}"
    );
    // The leader's retry (from our last acked index) is made durable and acked.
    let es: Vec<_> = (4..=10).map(|i| entry(i, 2, 0, payload(i))).collect();
    tx.send(app((3, 2), es, 9)).await.unwrap();
    wait_status(&status, "the retry durable", |s| s.last_durable_index == 10).await;
    let start = Instant::now();
    while !acks(&journal.lock().unwrap()).iter().any(|(_, i)| *i == 10) {
        assert!(start.elapsed() < Duration::from_secs(20), "no ack of 10");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(tx);
    let exit = task.await.unwrap().unwrap();
    assert!(matches!(exit, Exit::Stopped));
    let j = journal.lock().unwrap().clone();
    assert_acks_follow_durability(&j);
    assert_eq!(status.get().commit_index, 9);
}

#[tokio::test]
async fn shutdown_while_the_disk_is_full_stops_cleanly() {
    let mut h = harness(None, None);
    h.node.opts.max_batch = 1;
    h.full.store(true, Ordering::SeqCst);
    let exit = drive(h.node, vec![app((0, 0), bootstrap_log(), 3)])
        .await
        .unwrap();
    assert!(matches!(exit, Exit::Stopped));
    let j = h.journal.lock().unwrap().clone();
    assert!(acks(&j).is_empty(), "{j:?}");
    assert_eq!(h.status.get().state, NodeState::Stopped);
}

#[tokio::test]
async fn committed_entries_reach_the_tail_in_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let (tail, reader) = CommittedTail::new(TailLimits::default(), dir.path().join("wal"));
    let h = harness(None, Some(tail));
    let es: Vec<_> = (4..=20).map(|i| entry(i, 2, 0, payload(i))).collect();
    let msgs = vec![
        app((0, 0), bootstrap_log(), 3),
        app((3, 2), es, 12),
        // A heartbeat-like commit advance with no entries.
        app((20, 2), Vec::new(), 20),
    ];
    drive(h.node, msgs).await.unwrap();
    assert_eq!(reader.point().index, 20);
    let (read, _) = reader.read(0, 100).unwrap();
    let Read::Entries(got) = read else {
        panic!("nothing read: {read:?}")
    };
    let idx: Vec<u64> = got.iter().map(|(_, e)| e.index).collect();
    assert_eq!(idx, (1..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn removal_is_recorded_and_ends_the_loop() {
    let h = harness(None, None);
    let msgs = vec![
        app((0, 0), bootstrap_log(), 3),
        Inbound::Removed {
            detail: "410 from the leader".into(),
        },
    ];
    let exit = drive(h.node, msgs).await.unwrap();
    assert!(matches!(exit, Exit::Removed(_)));
    assert!(h.journal.lock().unwrap().contains(&Ev::Removed));
    assert_eq!(h.status.get().state, NodeState::Removed);
}

#[tokio::test]
async fn a_restart_publishes_the_durable_commit_before_any_message() {
    // A restarted log whose entries (up to 42) the core does not hand out
    // again (they lie below its base): replay must still see them committed.
    let dir = tempfile::tempdir().unwrap();
    let (tail, reader) = CommittedTail::new(TailLimits::default(), dir.path().join("wal"));
    let mut h = harness(None, Some(tail));
    h.node.log.commit = 42;
    drive(h.node, Vec::new()).await.unwrap();
    assert_eq!(reader.point().index, 42);
}

#[tokio::test]
async fn leader_contact_and_receive_time_are_published_and_aux_state_flushed_at_the_end() {
    let h = harness(None, None);
    assert_eq!(h.status.get().last_leader_contact_unix_ms, 0);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    drive(h.node, vec![app((0, 0), bootstrap_log(), 3)])
        .await
        .unwrap();
    let st = h.status.get();
    assert!(
        st.last_leader_contact_unix_ms >= before,
        "contact {} before {before}",
        st.last_leader_contact_unix_ms
    );
    assert!(st.last_received_at_unix_ms >= before);
    let j = h.journal.lock().unwrap().clone();
    assert_eq!(
        j.last(),
        Some(&Ev::FlushedAux),
        "flushed when the loop ended: {j:?}"
    );
    // Not once per Ready: one flush in a run much shorter than a second.
    assert_eq!(j.iter().filter(|e| **e == Ev::FlushedAux).count(), 1);
}

#[tokio::test]
async fn a_message_from_a_member_that_is_not_the_leader_is_not_leader_contact() {
    let h = harness(None, None);
    // From a member, while no leader is known (a type a learner refuses, so
    // it makes nobody leader): it says nothing about the leader.
    let m = Inbound::Message(raftpb::Message {
        r#type: T::MsgAppResp as i32,
        to: ME,
        from: 0x77,
        term: 2,
        ..Default::default()
    });
    drive(h.node, vec![m]).await.unwrap();
    let st = h.status.get();
    assert_eq!(st.last_leader_contact_unix_ms, 0);
    assert_eq!(st.last_received_at_unix_ms, 0);
}
