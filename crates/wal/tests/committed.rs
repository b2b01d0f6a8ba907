//! Streaming committed entries for replay: overwrites, commit gating,
//! leader-snapshot jumps, limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use etcd_standby_proto::{etcdserverpb, raftpb, walpb};
use etcd_standby_wal::{CommittedEnd, WalWriter, for_each_committed};

fn e(index: u64, term: u64) -> raftpb::Entry {
    raftpb::Entry {
        r#type: 0,
        term,
        index,
        data: Some(format!("{index}@{term}").into_bytes().into()),
    }
}

fn hs(commit: u64) -> raftpb::HardState {
    raftpb::HardState {
        term: 3,
        vote: 0,
        commit,
    }
}

fn build(dir: &std::path::Path) {
    let md = etcdserverpb::Metadata {
        node_id: 1,
        cluster_id: 2,
    };
    let mut w = WalWriter::create(dir, &md).unwrap().with_segment_size(300);
    w.save(Some(&hs(5)), &(1..=10).map(|i| e(i, 2)).collect::<Vec<_>>())
        .unwrap();
    w.sync().unwrap();
    // A new leader overwrites the uncommitted 7..10 with 7..8 at term 3.
    w.save(Some(&hs(8)), &[e(7, 3), e(8, 3)]).unwrap();
    w.sync().unwrap();
    w.save(Some(&hs(9)), &[e(9, 3)]).unwrap();
    w.sync().unwrap();
    // A leader snapshot at 100, then the log continues.
    w.save_snapshot(&walpb::Snapshot {
        index: 100,
        term: 3,
        conf_state: None,
    })
    .unwrap();
    w.save(Some(&hs(100)), &[]).unwrap();
    w.save(
        Some(&hs(103)),
        &[e(101, 3), e(102, 3), e(103, 3), e(104, 3)],
    )
    .unwrap();
    w.sync().unwrap();
}

fn collect(dir: &std::path::Path, after: u64, up_to: u64) -> (Vec<(u64, u64)>, CommittedEnd) {
    let mut got = Vec::new();
    let end = for_each_committed(dir, after, up_to, |e| {
        got.push((e.index, e.term));
        true
    })
    .unwrap();
    (got, end)
}

#[test]
fn committed_entries_come_out_once_in_order_with_overwrites_resolved() {
    let d = tempfile::tempdir().unwrap();
    build(d.path());
    let (got, end) = collect(d.path(), 0, u64::MAX);
    let want: Vec<(u64, u64)> = (1..=6)
        .map(|i| (i, 2))
        .chain([(7, 3), (8, 3), (9, 3)])
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        end,
        CommittedEnd::NeedSnapshot {
            index: 100,
            term: 3
        }
    );
}

#[test]
fn after_a_leader_snapshot_the_log_continues_and_uncommitted_entries_wait() {
    let d = tempfile::tempdir().unwrap();
    build(d.path());
    let (got, end) = collect(d.path(), 100, u64::MAX);
    assert_eq!(
        got,
        vec![(101, 3), (102, 3), (103, 3)],
        "104 is not committed"
    );
    assert_eq!(end, CommittedEnd::Done(103));
}

#[test]
fn limits_and_stopping_are_respected() {
    let d = tempfile::tempdir().unwrap();
    build(d.path());
    let (got, end) = collect(d.path(), 3, 6);
    assert_eq!(got, vec![(4, 2), (5, 2), (6, 2)]);
    assert_eq!(end, CommittedEnd::Done(6));
    let mut n = 0;
    let end = for_each_committed(d.path(), 0, u64::MAX, |_| {
        n += 1;
        n < 2
    })
    .unwrap();
    assert_eq!(end, CommittedEnd::Stopped(2));
}

#[test]
fn the_unconfirmed_tail_comes_out_only_when_assumed_committed() {
    let d = tempfile::tempdir().unwrap();
    build(d.path());
    let collect_assuming = |assume: u64, up_to: u64| {
        let mut got = Vec::new();
        let end =
            etcd_standby_wal::for_each_assuming_committed(d.path(), 100, up_to, assume, |e| {
                got.push(e.index);
                true
            })
            .unwrap();
        (got, end)
    };
    // 104 is durable beyond the last commit (103): the unconfirmed tail.
    assert_eq!(collect_assuming(0, u64::MAX).0, vec![101, 102, 103]);
    let (got, end) = collect_assuming(104, u64::MAX);
    assert_eq!(got, vec![101, 102, 103, 104]);
    assert_eq!(end, CommittedEnd::Done(104));
    // The limit still holds.
    assert_eq!(collect_assuming(104, 103).0, vec![101, 102, 103]);
    // Overwritten entries never count, even when assumed committed:
    // 7..10 at term 2 were replaced before the snapshot.
    let mut early = Vec::new();
    etcd_standby_wal::for_each_assuming_committed(d.path(), 0, 10, 10, |e| {
        early.push((e.index, e.term));
        true
    })
    .unwrap();
    assert_eq!(early.last(), Some(&(9, 3)));
}

#[test]
fn wal_end_reports_the_last_index_and_commit_from_the_last_segments() {
    let d = tempfile::tempdir().unwrap();
    build(d.path());
    let end = etcd_standby_wal::wal_end(d.path()).unwrap();
    assert_eq!(end.last_index, 104);
    assert_eq!(end.commit, 103);
    let empty = tempfile::tempdir().unwrap();
    WalWriter::create(empty.path(), &etcdserverpb::Metadata::default()).unwrap();
    assert_eq!(
        etcd_standby_wal::wal_end(empty.path()).unwrap(),
        etcd_standby_wal::WalEnd::default()
    );
}
