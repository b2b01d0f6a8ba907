//! Replay driven with an in-memory standby: halts, skips, exactly-once
//! resume, retries, and the model-rebuild decision table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use etcd_standby_client::{ClientConfig, ClientError};
use etcd_standby_daemon::Error;
use etcd_standby_daemon::committed::{CommittedTail, Retention, TailLimits};
use etcd_standby_daemon::metrics::ReplayMetrics;
use etcd_standby_daemon::replay::{
    Batch, RebuildFrom, Rebuildable, Replay, ReplayOptions, StandbySink, rebuild_plan,
};
use etcd_standby_daemon::status::{ReplayState, ReplayStatus, StatusCell};
use etcd_standby_daemon::store::Layout;
use etcd_standby_model::{ModelConfig, SnapshotState, ValueStore};
use etcd_standby_proto::{etcdserverpb, raftpb};
use etcd_standby_sink::{ReconcileOptions, ReconcileReport, SinkConfig, SinkError, SinkStats};
use etcd_standby_wal::WalWriter;
use prost::Message as _;
use tokio::sync::watch;

/// What the fake standby saw.
#[derive(Default)]
struct Seen {
    /// Raft indexes written, in order, each with its effect count.
    written: Vec<(u64, usize)>,
    /// Errors to return from the next apply calls.
    fail: VecDeque<SinkError>,
    checkpoint: u64,
    /// The standby's lease IDs, when the fake lists them (`None`: it cannot).
    leases: Option<Vec<i64>>,
    /// Leases granted again by replay, `(id, ttl)`.
    regranted: Vec<(i64, i64)>,
    /// Checkpoints of the reconciles replay asked for.
    reconciled_at: Vec<u64>,
    /// Errors to return from the next reconciles; the standby's leases
    /// all run out with each one.
    reconcile_fail: VecDeque<SinkError>,
    /// Stream like the real sink: `apply` confirms all but the last
    /// [`HELD`] entries given, `settle` the rest; an error drops what is
    /// given and not confirmed.
    stream: bool,
    /// Given and not yet confirmed (streaming), each with its effect count.
    given: Vec<(u64, usize)>,
    /// apply / settle calls so far (streaming).
    calls: usize,
    /// (call number, error): the call with that number fails (streaming).
    fail_at: VecDeque<(usize, SinkError)>,
}

/// Entries a streaming fake keeps unconfirmed after `apply`.
const HELD: usize = 3;

impl Seen {
    /// Streaming: fails this call if asked to, dropping what is given and
    /// not confirmed.
    fn stream_call(&mut self) -> Result<(), SinkError> {
        self.calls += 1;
        if self.fail_at.front().is_some_and(|(n, _)| *n == self.calls)
            && let Some((_, e)) = self.fail_at.pop_front()
        {
            self.given.clear();
            return Err(e);
        }
        Ok(())
    }

    /// Streaming: confirms all but the last `held` entries given.
    fn confirm(&mut self, held: usize) {
        let n = self.given.len().saturating_sub(held);
        for (i, effects) in self.given.drain(..n).collect::<Vec<_>>() {
            assert!(
                i > self.checkpoint,
                "entry {i} written at or below the checkpoint"
            );
            self.written.push((i, effects));
            self.checkpoint = i;
        }
    }
}

#[derive(Clone, Default)]
struct FakeStandby(Arc<Mutex<Seen>>);

impl StandbySink for FakeStandby {
    fn checkpoint_index(&self) -> u64 {
        self.0.lock().unwrap().checkpoint
    }
    async fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let mut s = self.0.lock().unwrap();
        if s.stream {
            s.stream_call()?;
            for (i, _, effects) in batch {
                let floor = s.given.last().map_or(0, |g| g.0).max(s.checkpoint);
                if *i > floor {
                    s.given.push((*i, effects.len()));
                }
            }
            s.confirm(HELD);
            return Ok(());
        }
        if let Some(e) = s.fail.pop_front() {
            return Err(e);
        }
        for (i, _, effects) in batch {
            assert!(
                *i > s.checkpoint,
                "entry {i} written at or below the checkpoint"
            );
            s.written.push((*i, effects.len()));
            s.checkpoint = *i;
        }
        Ok(())
    }
    async fn settle(&mut self) -> Result<(), SinkError> {
        let mut s = self.0.lock().unwrap();
        if s.stream {
            s.stream_call()?;
            s.confirm(0);
        }
        Ok(())
    }
    async fn resync(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    async fn reconcile(
        &mut self,
        _: &SnapshotState,
        _: &dyn ValueStore,
        index: u64,
        _: u64,
        _: ReconcileOptions,
    ) -> Result<ReconcileReport, SinkError> {
        let mut s = self.0.lock().unwrap();
        if let Some(e) = s.reconcile_fail.pop_front() {
            if let Some(have) = s.leases.as_mut() {
                have.clear();
            }
            return Err(e);
        }
        s.checkpoint = index;
        s.reconciled_at.push(index);
        Ok(ReconcileReport::default())
    }
    async fn lease_ids(&self) -> Result<Option<Vec<i64>>, SinkError> {
        Ok(self.0.lock().unwrap().leases.clone())
    }
    async fn regrant_leases(&mut self, leases: &[(i64, i64)]) -> Result<(), SinkError> {
        let mut s = self.0.lock().unwrap();
        s.regranted.extend_from_slice(leases);
        if let Some(have) = s.leases.as_mut() {
            have.extend(leases.iter().map(|(id, _)| *id));
        }
        Ok(())
    }
    async fn revision(&self) -> Option<i64> {
        None
    }
    fn stats(&self) -> SinkStats {
        SinkStats::default()
    }
}

fn put(index: u64, key: &str) -> raftpb::Entry {
    lease_entry(index, key, 0, 0)
}

/// A put of `key` attached to `lease` (0: none), or a lease grant when
/// `key` is empty.
fn lease_entry(index: u64, key: &str, lease: i64, ttl: i64) -> raftpb::Entry {
    let mut req = etcdserverpb::InternalRaftRequest {
        header: Some(etcdserverpb::RequestHeader {
            id: index,
            ..Default::default()
        }),
        ..Default::default()
    };
    if key.is_empty() {
        req.lease_grant = Some(etcdserverpb::LeaseGrantRequest { ttl, id: lease });
    } else {
        req.put = Some(etcdserverpb::PutRequest {
            key: Bytes::from(key.to_owned()),
            value: Bytes::from_static(b"v"),
            lease,
            ..Default::default()
        });
    }
    normal_entry(index, &req)
}

/// A normal entry of term 2 carrying `req`.
fn normal_entry(index: u64, req: &etcdserverpb::InternalRaftRequest) -> raftpb::Entry {
    raftpb::Entry {
        term: 2,
        index,
        r#type: 0,
        data: Some(req.encode_to_vec().into()),
    }
}

fn garbage(index: u64) -> raftpb::Entry {
    raftpb::Entry {
        term: 2,
        index,
        r#type: 0,
        data: Some(Bytes::from_static(b"\xff\xff\xff not a request")),
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    layout: Layout,
    standby: FakeStandby,
    status: StatusCell<ReplayStatus>,
}

/// A data dir whose WAL holds `entries` (all committed), a fake standby at
/// `checkpoint`.
fn setup(entries: &[raftpb::Entry], checkpoint: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout {
        root: dir.path().to_path_buf(),
        segment_bytes: None,
    };
    let mut w = WalWriter::create(&layout.wal(), &etcdserverpb::Metadata::default()).unwrap();
    let commit = entries.last().map_or(0, |e| e.index);
    w.save(
        Some(&raftpb::HardState {
            term: 2,
            vote: 0,
            commit,
        }),
        entries,
    )
    .unwrap();
    w.sync().unwrap();
    let standby = FakeStandby::default();
    standby.0.lock().unwrap().checkpoint = checkpoint;
    Setup {
        _dir: dir,
        layout,
        standby,
        status: StatusCell::default(),
    }
}

fn options(skip_undecodable: bool) -> ReplayOptions {
    ReplayOptions {
        sink: SinkConfig::new(ClientConfig::new(Vec::<String>::new()), 1),
        reconcile: ReconcileOptions::default(),
        model: ModelConfig::default(),
        skip_undecodable,
        max_batch: 3,
        model_save_every: 1_000_000,
        apply_delay: None,
        preserve_revisions: false,
    }
}

/// Runs replay over the entries (handed out through the tail, as the node
/// loop does) until the node side is gone.
async fn replay(s: &Setup, entries: Vec<raftpb::Entry>, skip: bool) -> Result<(), Error> {
    replay_with(s, entries, options(skip)).await
}

/// [`replay`] with the given options.
async fn replay_with(
    s: &Setup,
    entries: Vec<raftpb::Entry>,
    opts: ReplayOptions,
) -> Result<(), Error> {
    let (tail, reader) = CommittedTail::new(TailLimits::default(), s.layout.wal());
    let commit = entries.last().map_or(0, |e| e.index);
    tail.publish(entries, commit);
    drop(tail);
    let mut registry = prometheus_client::registry::Registry::default();
    let r = Replay::new(
        opts,
        s.layout.clone(),
        s.standby.clone(),
        s.status.clone(),
        ReplayMetrics::new(&mut registry),
        Retention::keep_all(),
    );
    let (_stop_tx, stop_rx) = watch::channel(false);
    r?.run(reader, stop_rx).await
}

/// Replay over `entries` ends with a halt, said in the error and the state.
async fn assert_halts(s: &Setup, entries: Vec<raftpb::Entry>) {
    let err = replay(s, entries, false).await.err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("replay halted")),
        "{err:?}"
    );
    assert_eq!(s.status.get().state, ReplayState::Halted);
}

fn written(s: &Setup) -> Vec<u64> {
    s.standby
        .0
        .lock()
        .unwrap()
        .written
        .iter()
        .map(|w| w.0)
        .collect()
}

#[tokio::test]
async fn an_undecodable_entry_halts_replay_at_its_index_and_nothing_after_it_is_written() {
    let entries = vec![put(1, "/a"), put(2, "/b"), garbage(3), put(4, "/c")];
    let s = setup(&entries, 0);
    let err = replay(&s, entries, false).await.err();
    assert!(
        matches!(
            err.as_ref().map(Error::root),
            Some(Error::Halt { index: 3, .. })
        ),
        "{err:?}"
    );
    let w = written(&s);
    assert!(w.iter().all(|i| *i < 3), "{w:?}");
}

#[tokio::test]
async fn skip_undecodable_writes_everything_else_once() {
    let entries = vec![
        put(1, "/a"),
        put(2, "/b"),
        garbage(3),
        put(4, "/c"),
        put(5, "/d"),
    ];
    let s = setup(&entries, 0);
    replay(&s, entries, true).await.unwrap();
    // The skipped entry is checkpointed with no effects; the rest with theirs.
    let seen = s.standby.0.lock().unwrap().written.clone();
    assert_eq!(seen, vec![(1, 1), (2, 1), (3, 0), (4, 1), (5, 1)]);
}

#[tokio::test]
async fn entries_at_or_below_the_standby_checkpoint_are_never_written_again() {
    let entries: Vec<_> = (1..=10).map(|i| put(i, &format!("/k{i}"))).collect();
    // The standby already has 1..=6 (a restart); the model rebuilds from index 1.
    let s = setup(&entries, 6);
    replay(&s, entries, false).await.unwrap();
    assert_eq!(written(&s), vec![7, 8, 9, 10]);
}

#[tokio::test]
async fn a_standby_outage_is_retried_and_each_entry_lands_once() {
    let entries: Vec<_> = (1..=7).map(|i| put(i, &format!("/k{i}"))).collect();
    let s = setup(&entries, 0);
    s.standby
        .0
        .lock()
        .unwrap()
        .fail
        .extend([unavailable(), unavailable()]);
    replay(&s, entries, false).await.unwrap();
    assert_eq!(written(&s), (1..=7).collect::<Vec<_>>());
    let st = s.status.get();
    assert_eq!(st.state, ReplayState::Replaying);
    assert_eq!(
        st.error, None,
        "the error is cleared once replay is healthy again"
    );
}

/// Replay gives entries to a streaming sink in small groups without waiting
/// for them to land. When a write fails with entries given and not yet
/// confirmed (in flight), they are given again with the batch: every entry
/// lands exactly once, in order, whichever call failed.
#[tokio::test]
async fn entries_in_flight_when_a_write_fails_are_given_again_and_land_once() {
    let entries: Vec<_> = (1..=40).map(|i| put(i, &format!("/k{}", i % 7))).collect();
    for fail_call in [2, 3, 5, 8] {
        let s = setup(&entries, 0);
        {
            let mut seen = s.standby.0.lock().unwrap();
            seen.stream = true;
            seen.fail_at.push_back((fail_call, unavailable()));
            seen.fail_at.push_back((fail_call + 2, unavailable()));
        }
        let opts = ReplayOptions {
            max_batch: 4,
            ..options(false)
        };
        replay_with(&s, entries.clone(), opts).await.unwrap();
        assert_eq!(
            written(&s),
            (1..=40).collect::<Vec<_>>(),
            "failing call {fail_call}"
        );
        let seen = s.standby.0.lock().unwrap();
        assert!(seen.fail_at.is_empty(), "both failures happened");
        assert!(seen.given.is_empty(), "everything given was confirmed");
    }
}

fn unavailable() -> SinkError {
    SinkError::Unavailable {
        index: 1,
        source: ClientError::Transport {
            endpoint: "http://127.0.0.1:1".into(),
            message: "connection refused".into(),
        },
    }
}

#[tokio::test]
async fn a_refused_write_halts_and_says_so() {
    let entries: Vec<_> = (1..=3).map(|i| put(i, &format!("/k{i}"))).collect();
    let s = setup(&entries, 0);
    s.standby.0.lock().unwrap().fail.push_back(refused(
        tonic::Code::ResourceExhausted,
        "etcdserver: mvcc: database space exceeded",
    ));
    assert_halts(&s, entries).await;
    assert!(written(&s).is_empty());
}

/// The standby refusing a write of entries 1..=3 with `code` / `message`.
fn refused(code: tonic::Code, message: &str) -> SinkError {
    SinkError::Refused {
        first: 1,
        last: 3,
        source: ClientError::Grpc {
            endpoint: "http://127.0.0.1:1".into(),
            code,
            message: message.into(),
        },
    }
}

fn lease_not_found() -> SinkError {
    refused(
        tonic::Code::NotFound,
        "etcdserver: requested lease not found",
    )
}

/// A write refused because the standby expired a mirrored lease while
/// replay ran: the lease is granted again (same ID, the model's TTL), the
/// batch is retried and lands once, and the standby is reconciled to the
/// model at that checkpoint so the keys it deleted with the lease come back.
#[tokio::test]
async fn a_lease_the_standby_expired_while_replay_ran_is_granted_again_and_the_batch_retried() {
    let entries = vec![
        lease_entry(1, "", 0x10, 30),
        lease_entry(2, "/a", 0x10, 0),
        lease_entry(3, "/b", 0x10, 0),
    ];
    let s = setup(&entries, 0);
    {
        let mut seen = s.standby.0.lock().unwrap();
        seen.leases = Some(Vec::new());
        seen.fail.push_back(lease_not_found());
    }
    replay(&s, entries, false).await.unwrap();
    assert_eq!(written(&s), vec![1, 2, 3]);
    let seen = s.standby.0.lock().unwrap();
    assert_eq!(seen.regranted, vec![(0x10, 30)]);
    assert_eq!(
        seen.reconciled_at,
        vec![3],
        "the lost keys are written back"
    );
    assert_eq!(s.status.get().state, ReplayState::Replaying);
}

/// After a restart the standby lacks a lease (lost) and, while the lost
/// one is being restored, another runs out before the reconcile's write
/// names it (seen in the chaos suite: its keep-alive had not resumed yet).
/// Both are granted again, the reconcile is repeated and lands, and replay
/// goes on; it used to halt with "requested lease not found".
#[tokio::test]
async fn a_lease_that_runs_out_while_lost_ones_are_restored_is_granted_again_and_the_reconcile_repeated()
 {
    let entries = vec![
        lease_entry(1, "", 0x10, 30),
        lease_entry(2, "/a", 0x10, 0),
        lease_entry(3, "", 0x20, 40),
        lease_entry(4, "/b", 0x20, 0),
        put(5, "/c"),
    ];
    let s = setup(&entries, 4);
    {
        let mut seen = s.standby.0.lock().unwrap();
        seen.leases = Some(vec![0x20]);
        seen.reconcile_fail.push_back(lease_not_found());
    }
    replay(&s, entries, false).await.unwrap();
    assert_eq!(written(&s), vec![5]);
    let seen = s.standby.0.lock().unwrap();
    assert_eq!(seen.regranted, vec![(0x10, 30), (0x20, 40)]);
    assert_eq!(seen.reconciled_at, vec![4], "the reconcile landed once");
    assert_eq!(s.status.get().state, ReplayState::Replaying);
}

/// Granting again is tried once per batch: a second refusal halts.
#[tokio::test]
async fn a_write_refused_for_a_lease_again_after_granting_it_halts() {
    let entries = vec![lease_entry(1, "", 0x10, 30), lease_entry(2, "/a", 0x10, 0)];
    let s = setup(&entries, 0);
    {
        let mut seen = s.standby.0.lock().unwrap();
        seen.leases = Some(Vec::new());
        seen.fail.extend([lease_not_found(), lease_not_found()]);
    }
    assert_halts(&s, entries).await;
}

#[tokio::test]
async fn a_fenced_standby_stops_replay_for_good() {
    let entries: Vec<_> = (1..=5).map(|i| put(i, &format!("/k{i}"))).collect();
    let s = setup(&entries, 0);
    s.standby
        .0
        .lock()
        .unwrap()
        .fail
        .push_back(SinkError::Fenced {
            index: 1,
            key: "__etcd_standby__/epoch".into(),
            ours: 1,
            found: "2".into(),
        });
    let err = replay(&s, entries, false).await.err();
    assert!(err.as_ref().is_some_and(Error::is_fenced), "{err:?}");
    assert_eq!(s.status.get().state, ReplayState::Fenced);
    assert!(written(&s).is_empty(), "nothing is written after a fence");
}

#[test]
fn model_rebuild_decision_table() {
    use RebuildFrom::*;
    let h = |saved_model, db_at_or_below, newest_db, wal_has_index_one| Rebuildable {
        saved_model,
        db_at_or_below,
        newest_db,
        wal_has_index_one,
    };
    let rows = [
        // Fresh standby.
        (0, h(None, None, None, true), Start),
        (0, h(None, None, Some(50), true), Start),
        (0, h(None, None, Some(50), false), Reconcile(50)),
        // Restart: the newest of saved model and db at or below the checkpoint.
        (100, h(Some(90), None, None, false), SavedModel(90)),
        (100, h(Some(90), Some(80), Some(80), false), SavedModel(90)),
        (100, h(Some(90), Some(90), Some(90), false), SavedModel(90)),
        (100, h(Some(70), Some(80), Some(200), true), SnapshotDb(80)),
        (100, h(None, Some(80), Some(80), false), SnapshotDb(80)),
        (100, h(None, None, None, true), Start),
        // Nothing below the checkpoint: reconcile from a newer db, or give up.
        (100, h(None, None, Some(200), false), Reconcile(200)),
        (100, h(None, None, None, false), Impossible),
    ];
    for (checkpoint, have, want) in rows {
        assert_eq!(
            rebuild_plan(checkpoint, have),
            want,
            "{checkpoint} {have:?}"
        );
    }
}

/// A put whose value is long enough to live in the value store.
fn long_put(index: u64, key: &str) -> raftpb::Entry {
    let req = etcdserverpb::InternalRaftRequest {
        header: Some(etcdserverpb::RequestHeader {
            id: index,
            ..Default::default()
        }),
        put: Some(etcdserverpb::PutRequest {
            key: Bytes::from(key.to_owned()),
            value: Bytes::from(format!("{index:04}-{}", "v".repeat(100))),
            ..Default::default()
        }),
        ..Default::default()
    };
    normal_entry(index, &req)
}

/// Replay with a model saved every `every` entries.
async fn replay_saving(s: &Setup, entries: Vec<raftpb::Entry>, every: u64) -> Result<(), Error> {
    let opts = ReplayOptions {
        model_save_every: every,
        ..options(false)
    };
    replay_with(s, entries, opts).await
}

/// Long values live in `replay/values.redb` beside the saved model. A
/// saved model whose values are gone (the store deleted or damaged) is not
/// replayed on: it is dropped and the model rebuilt another way (here from
/// index 1), and nothing is written to the standby twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_model_whose_values_are_missing_is_dropped_and_the_model_rebuilt() {
    let entries: Vec<_> = (1..=12)
        .map(|i| long_put(i, &format!("/k{}", i % 5)))
        .collect();
    let s = setup(&entries, 0);
    replay_saving(&s, entries.clone(), 4).await.unwrap();
    let dir = s.layout.model_dir();
    let saved = s.layout.saved_models().unwrap();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let store = dir.join("values.redb");
    assert!(store.exists());
    let written_once = written(&s);
    assert_eq!(written_once, (1..=12).collect::<Vec<_>>());

    std::fs::remove_file(&store).unwrap();
    replay_saving(&s, entries, 4).await.unwrap();
    assert!(
        !saved[0].1.exists() || s.layout.saved_models().unwrap() != saved,
        "the saved model without its values was dropped"
    );
    assert_eq!(written(&s), written_once, "nothing written twice");

    // And a restart that finds its values replays on the saved model.
    let entries: Vec<_> = (1..=16)
        .map(|i| long_put(i, &format!("/k{}", i % 5)))
        .collect();
    replay_saving(&s, entries, 4).await.unwrap();
    assert_eq!(written(&s), (1..=16).collect::<Vec<_>>());
}
