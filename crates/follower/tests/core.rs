//! The learner core answers etcd-shaped leader messages the way an etcd
//! learner does (captures in shared/reference/etcd-peer-protocol.md §10).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use etcd_standby_decode::Member;
use etcd_standby_follower::{Alarm, Event, Follower, FollowerError, Membership, Restored, v2store};
use etcd_standby_proto::raftpb::{self, MessageType as T};
use prost::Message as _;

const LEADER: u64 = 0xaaa9;
const ME: u64 = 0x6ad828d59d630;

fn msg(ty: T, term: u64) -> raftpb::Message {
    raftpb::Message {
        r#type: ty as i32,
        to: ME,
        from: LEADER,
        term,
        ..Default::default()
    }
}

fn conf_change(ty: raftpb::ConfChangeType, id: u64, ctx: &str) -> Bytes {
    raftpb::ConfChange {
        id: 0,
        r#type: ty as i32,
        node_id: id,
        context: if ctx.is_empty() {
            None
        } else {
            Some(Bytes::copy_from_slice(ctx.as_bytes()))
        },
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
/// leader's empty entry, a put-like payload, our AddLearnerNode.
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
        entry(3, 2, 0, Some(Bytes::from_static(b"\xa2\x06\x02\x08\x01"))),
        entry(
            4,
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

#[derive(Default)]
struct Out {
    sent: Vec<raftpb::Message>,
    persisted: Vec<raftpb::Entry>,
    hard_states: Vec<raftpb::HardState>,
    snapshots: Vec<raftpb::Snapshot>,
    committed: Vec<raftpb::Entry>,
    events: Vec<Event>,
}

impl Out {
    /// The first message of type `ty` we sent.
    fn first_sent(&self, ty: T) -> Option<&raftpb::Message> {
        self.sent.iter().find(|m| m.r#type == ty as i32)
    }
}

/// One daemon turn: step, then Ready → "persist" → advance until idle.
fn turn(f: &mut Follower, m: raftpb::Message) -> Result<Out, FollowerError> {
    f.step(m)?;
    let mut out = Out::default();
    while f.has_ready() {
        let rd = f.ready()?;
        out.persisted.extend(rd.entries);
        out.hard_states.extend(rd.hard_state);
        out.snapshots.extend(rd.snapshot);
        let adv = f.advance()?;
        out.sent.extend(adv.messages);
        out.committed.extend(adv.committed);
        out.events.extend(adv.events);
    }
    Ok(out)
}

fn fresh() -> Follower {
    Follower::new(
        ME,
        Restored::default(),
        &etcd_standby_follower::raft_logger(),
    )
    .unwrap()
}

fn joined() -> Follower {
    let mut f = fresh();
    let mut m = msg(T::MsgApp, 2);
    m.entries = bootstrap_log();
    m.commit = 4;
    turn(&mut f, m).unwrap();
    f
}

#[test]
fn empty_learner_rejects_the_first_probe_with_hint_zero_like_etcd() {
    let mut f = fresh();
    let mut m = msg(T::MsgApp, 2);
    m.index = 24;
    m.log_term = 2;
    m.entries = vec![entry(25, 2, 0, None)];
    m.commit = 25;
    let out = turn(&mut f, m).unwrap();
    assert_eq!(out.sent.len(), 1);
    let r = &out.sent[0];
    assert_eq!(r.r#type, T::MsgAppResp as i32);
    assert!(r.reject);
    assert_eq!((r.index, r.reject_hint, r.log_term), (24, 0, 0));
    assert_eq!((r.to, r.from, r.term), (LEADER, ME, 2));
    assert!(out.persisted.is_empty());
}

#[test]
fn append_is_acked_after_persist_and_committed_entries_come_out_once() {
    let mut f = fresh();
    let mut m = msg(T::MsgApp, 2);
    m.entries = bootstrap_log();
    m.commit = 4;
    let out = turn(&mut f, m).unwrap();
    assert_eq!(
        out.persisted.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        out.persisted,
        bootstrap_log(),
        "entries are persisted byte for byte"
    );
    let resp: Vec<_> = out
        .sent
        .iter()
        .filter(|m| m.r#type == T::MsgAppResp as i32)
        .collect();
    assert_eq!(resp.len(), 1);
    assert_eq!((resp[0].index, resp[0].reject, resp[0].term), (4, false, 2));
    assert_eq!(
        out.committed.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(out.hard_states.last().unwrap().commit, 4);
    let cs = f.membership().conf_state();
    assert_eq!((cs.voters, cs.learners), (vec![LEADER], vec![ME]));
    assert!(out.events.contains(&Event::Membership));
    assert!(out.events.contains(&Event::Leader {
        id: LEADER,
        term: 2
    }));
    // A further heartbeat commits nothing new and repeats nothing.
    let mut hb = msg(T::MsgHeartbeat, 2);
    hb.commit = 4;
    let out = turn(&mut f, hb).unwrap();
    assert!(out.committed.is_empty());
}

#[test]
fn heartbeat_commit_beyond_our_log_is_clamped_and_context_echoed() {
    let mut f = joined();
    let mut hb = msg(T::MsgHeartbeat, 2);
    hb.commit = 1000;
    hb.context = Some(Bytes::from_static(b"read-index-ctx"));
    let out = turn(&mut f, hb).unwrap();
    let r = out.first_sent(T::MsgHeartbeatResp).unwrap();
    assert_eq!(r.context.as_deref(), Some(&b"read-index-ctx"[..]));
    assert_eq!(r.term, 2);
    assert_eq!(f.status().commit, 4);
    assert_eq!(f.status().leader_commit, 1000);
}

/// The leader's progress says we hold entries up to 1000 (another HA
/// instance acked them for this member): we reject an append at 1000 with
/// our log's end as the hint, so a probing leader resends from there even
/// when no new proposal comes (a quiet primary after a takeover).
#[test]
fn heartbeat_beyond_our_log_asks_the_leader_to_back_off_to_our_end() {
    let mut f = joined();
    let mut hb = msg(T::MsgHeartbeat, 2);
    hb.commit = 1000;
    let out = turn(&mut f, hb).unwrap();
    let r = out.first_sent(T::MsgAppResp).expect("a rejection");
    assert!(r.reject);
    assert_eq!((r.index, r.reject_hint, r.term), (1000, 4, 2));
    assert_eq!(r.log_term, f.term(4).unwrap());
    assert_eq!(r.to, LEADER);
    // A heartbeat within our log asks for nothing.
    let mut hb = msg(T::MsgHeartbeat, 2);
    hb.commit = 4;
    let out = turn(&mut f, hb).unwrap();
    assert!(out.first_sent(T::MsgAppResp).is_none());
}

#[test]
fn vote_and_prevote_requests_are_refused_with_an_alarm_and_no_answer() {
    let mut f = joined();
    for (ty, pre) in [(T::MsgVote, false), (T::MsgPreVote, true)] {
        let mut v = msg(ty, 3);
        v.from = 0xbeef;
        v.index = 4;
        v.log_term = 2;
        let out = turn(&mut f, v).unwrap();
        assert!(out.sent.is_empty(), "never answer a vote");
        assert!(out.events.contains(&Event::Alarm(Alarm::VoteRequested {
            from: 0xbeef,
            term: 3,
            pre_vote: pre
        })));
    }
    assert_eq!(f.status().term, 2, "a vote request never raises our term");
}

#[test]
fn promotion_of_ourselves_raises_an_alarm_and_we_stay_a_learner() {
    let mut f = joined();
    let mut m = msg(T::MsgApp, 2);
    m.index = 4;
    m.log_term = 2;
    m.commit = 5;
    m.entries = vec![entry(
        5,
        2,
        1,
        Some(conf_change(
            raftpb::ConfChangeType::ConfChangeAddNode,
            ME,
            r#"{"id":1,"peerURLs":null,"isPromote":true}"#,
        )),
    )];
    let out = turn(&mut f, m).unwrap();
    assert!(
        out.events
            .contains(&Event::Alarm(Alarm::Promoted { index: 5 }))
    );
    assert!(f.promoted());
    assert!(!f.is_leader());
}

#[test]
fn removal_of_ourselves_is_reported() {
    let mut f = joined();
    let mut m = msg(T::MsgApp, 2);
    m.index = 4;
    m.log_term = 2;
    m.commit = 5;
    m.entries = vec![entry(
        5,
        2,
        1,
        Some(conf_change(
            raftpb::ConfChangeType::ConfChangeRemoveNode,
            ME,
            "",
        )),
    )];
    let out = turn(&mut f, m).unwrap();
    assert!(out.events.contains(&Event::RemovedSelf { index: 5 }));
}

#[test]
fn a_second_learner_rejected_by_etcd_does_not_enter_the_conf_state() {
    let mut f = joined();
    let mut m = msg(T::MsgApp, 2);
    m.index = 4;
    m.log_term = 2;
    m.commit = 5;
    m.entries = vec![entry(
        5,
        2,
        1,
        Some(conf_change(
            raftpb::ConfChangeType::ConfChangeAddLearnerNode,
            0x77,
            r#"{"id":119,"peerURLs":["http://127.0.0.1:2580"],"isLearner":true}"#,
        )),
    )];
    let out = turn(&mut f, m).unwrap();
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::IgnoredConfChange { index: 5, reason } if reason.contains("too many learner")
    )));
    assert_eq!(f.membership().conf_state().learners, vec![ME]);
}

#[test]
fn an_entry_conflicting_with_a_committed_one_is_refused_not_a_panic() {
    let mut f = joined();
    let mut m = msg(T::MsgApp, 3);
    m.index = 2;
    m.log_term = 2;
    m.entries = vec![entry(3, 3, 0, None)];
    m.commit = 3;
    match f.step(m) {
        Err(FollowerError::CommittedConflict {
            index: 3,
            ours: 2,
            theirs: 3,
        }) => {}
        other => panic!("expected a committed conflict, got {other:?}"),
    }
}

#[test]
fn an_uncommitted_suffix_is_overwritten_by_a_new_leader() {
    let mut f = joined();
    let mut m = msg(T::MsgApp, 2);
    m.index = 4;
    m.log_term = 2;
    m.commit = 4;
    m.entries = vec![
        entry(5, 2, 0, Some(Bytes::from_static(b"old5"))),
        entry(6, 2, 0, Some(Bytes::from_static(b"old6"))),
    ];
    turn(&mut f, m).unwrap();
    let mut m = msg(T::MsgApp, 3);
    m.from = 0xbeef;
    m.index = 4;
    m.log_term = 2;
    m.commit = 5;
    m.entries = vec![entry(5, 3, 0, None)];
    let out = turn(&mut f, m).unwrap();
    assert_eq!(out.persisted, vec![entry(5, 3, 0, None)]);
    assert_eq!(
        out.committed
            .iter()
            .map(|e| (e.index, e.term))
            .collect::<Vec<_>>(),
        vec![(5, 3)]
    );
    assert_eq!(f.status().last_index, 5);
    let r = out.first_sent(T::MsgAppResp).unwrap();
    assert_eq!((r.to, r.term, r.index), (0xbeef, 3, 5));
}

#[test]
fn stale_term_messages_get_no_answer_so_we_never_send_a_higher_term() {
    let mut f = joined();
    let mut hb = msg(T::MsgHeartbeat, 3);
    turn(&mut f, hb.clone()).unwrap();
    hb.term = 2;
    hb.from = 0xdead;
    let out = turn(&mut f, hb).unwrap();
    assert!(out.sent.is_empty());
}

#[test]
fn snapshot_is_restored_with_membership_from_the_v2_store_and_acked_at_its_index() {
    let mut f = fresh();
    let mut members = Membership::default();
    for (id, url, learner) in [
        (LEADER, "http://127.0.0.1:2380", false),
        (ME, "http://127.0.0.1:2480", true),
    ] {
        members.members.insert(
            id,
            Member {
                id,
                peer_urls: vec![url.into()],
                name: String::new(),
                client_urls: vec![],
                is_learner: learner,
            },
        );
    }
    let mut m = msg(T::MsgSnap, 2);
    m.snapshot = Some(raftpb::Snapshot {
        data: Some(v2store::membership_to_v2_store(&members).into()),
        metadata: Some(raftpb::SnapshotMetadata {
            conf_state: Some(members.conf_state()),
            index: 6506,
            term: 2,
        }),
    });
    let out = turn(&mut f, m).unwrap();
    assert_eq!(out.snapshots.len(), 1);
    let r = out.first_sent(T::MsgAppResp).unwrap();
    assert_eq!((r.index, r.reject), (6506, false));
    assert_eq!(f.membership(), &members);
    // Appends continue right after the snapshot.
    let mut a = msg(T::MsgApp, 2);
    a.index = 6506;
    a.log_term = 2;
    a.entries = vec![entry(6507, 2, 0, None)];
    a.commit = 6507;
    let out = turn(&mut f, a).unwrap();
    assert_eq!(
        out.committed.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![6507]
    );
}

#[test]
fn restart_from_a_restored_log_continues_where_it_left_off() {
    let restored = Restored {
        base: raftpb::SnapshotMetadata::default(),
        membership: Membership::default(),
        entries: bootstrap_log(),
        hard_state: raftpb::HardState {
            term: 2,
            vote: 0,
            commit: 4,
        },
    };
    let mut f = Follower::new(ME, restored, &etcd_standby_follower::raft_logger()).unwrap();
    // Committed entries after the base are handed out again (the consumer
    // de-duplicates by index), with the membership rebuilt from them.
    let mut out = Out::default();
    while f.has_ready() {
        let _ = f.ready().unwrap();
        let adv = f.advance().unwrap();
        out.committed.extend(adv.committed);
    }
    assert_eq!(out.committed.len(), 4);
    assert_eq!(f.membership().conf_state().learners, vec![ME]);
    let mut m = msg(T::MsgApp, 2);
    m.index = 4;
    m.log_term = 2;
    m.entries = vec![entry(5, 2, 0, None)];
    m.commit = 5;
    let out = turn(&mut f, m).unwrap();
    let r = out.first_sent(T::MsgAppResp).unwrap();
    assert_eq!((r.index, r.reject), (5, false));
}

#[test]
fn restored_commit_beyond_the_log_is_clamped() {
    let restored = Restored {
        entries: bootstrap_log(),
        hard_state: raftpb::HardState {
            term: 2,
            vote: 0,
            commit: 99,
        },
        ..Restored::default()
    };
    let f = Follower::new(ME, restored, &etcd_standby_follower::raft_logger()).unwrap();
    assert_eq!(f.status().commit, 4);
}

#[test]
fn messages_for_another_member_or_of_leader_only_types_are_refused() {
    let mut f = joined();
    let mut m = msg(T::MsgHeartbeat, 2);
    m.to = 0x1234;
    assert!(matches!(f.step(m), Err(FollowerError::Refused(_))));
    assert!(matches!(
        f.step(msg(T::MsgAppResp, 2)),
        Err(FollowerError::Refused(_))
    ));
    assert!(matches!(
        f.step(msg(T::MsgProp, 0)),
        Err(FollowerError::Refused(_))
    ));
    let mut odd = msg(T::MsgHeartbeat, 2);
    odd.r#type = 77;
    assert!(f.step(odd).is_err());
    let mut gap = msg(T::MsgApp, 2);
    gap.index = 4;
    gap.log_term = 2;
    gap.entries = vec![entry(7, 2, 0, None)];
    assert!(matches!(f.step(gap), Err(FollowerError::Refused(_))));
}

#[test]
fn compaction_keeps_memory_bounded_and_appends_still_match() {
    let mut f = joined();
    let mut last = 4;
    for round in 0..50u64 {
        let mut m = msg(T::MsgApp, 2);
        m.index = last;
        m.log_term = 2;
        m.entries = (1..=100)
            .map(|i| entry(last + i, 2, 0, Some(Bytes::from(vec![round as u8; 64]))))
            .collect();
        last += 100;
        m.commit = last;
        turn(&mut f, m).unwrap();
        f.compact(last.saturating_sub(10));
    }
    let st = f.status();
    assert_eq!(st.commit, last);
    assert!(
        st.first_index > last - 20,
        "first index {} should be near {last}",
        st.first_index
    );
    let mut m = msg(T::MsgApp, 2);
    m.index = last;
    m.log_term = 2;
    m.entries = vec![entry(last + 1, 2, 0, None)];
    m.commit = last + 1;
    let out = turn(&mut f, m).unwrap();
    let r = out.first_sent(T::MsgAppResp).unwrap();
    assert_eq!((r.index, r.reject), (last + 1, false));
}
