//! Conversions between our etcd-exact prost types and raft-rs's internal
//! `eraftpb` types.
//!
//! Network bytes are only ever parsed by our prost code; raft-rs's protobuf 2
//! types are built field by field here, so rust-protobuf never sees untrusted
//! input. Payloads are `bytes::Bytes` on both sides: no copies.

use etcd_standby_proto::raftpb;
use raft::eraftpb;

/// The raft-rs message type for an etcd message type number, if known.
pub fn msg_type_from_etcd(t: i32) -> Option<eraftpb::MessageType> {
    use eraftpb::MessageType as M;
    Some(match t {
        0 => M::MsgHup,
        1 => M::MsgBeat,
        2 => M::MsgPropose,
        3 => M::MsgAppend,
        4 => M::MsgAppendResponse,
        5 => M::MsgRequestVote,
        6 => M::MsgRequestVoteResponse,
        7 => M::MsgSnapshot,
        8 => M::MsgHeartbeat,
        9 => M::MsgHeartbeatResponse,
        10 => M::MsgUnreachable,
        11 => M::MsgSnapStatus,
        12 => M::MsgCheckQuorum,
        13 => M::MsgTransferLeader,
        14 => M::MsgTimeoutNow,
        15 => M::MsgReadIndex,
        16 => M::MsgReadIndexResp,
        17 => M::MsgRequestPreVote,
        18 => M::MsgRequestPreVoteResponse,
        _ => return None,
    })
}

/// etcd entry → raft-rs entry (the entry type numbers are the same).
pub fn entry_to_raft(e: &raftpb::Entry) -> eraftpb::Entry {
    eraftpb::Entry {
        entry_type: match e.r#type {
            1 => eraftpb::EntryType::EntryConfChange,
            2 => eraftpb::EntryType::EntryConfChangeV2,
            _ => eraftpb::EntryType::EntryNormal,
        },
        term: e.term,
        index: e.index,
        data: e.data.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// raft-rs entry → etcd entry.
pub fn entry_from_raft(e: &eraftpb::Entry) -> raftpb::Entry {
    raftpb::Entry {
        r#type: e.entry_type as i32,
        term: e.term,
        index: e.index,
        data: if e.data.is_empty() {
            None
        } else {
            Some(e.data.clone())
        },
    }
}

/// Entry types etcd does not define are kept as-is by [`entry_to_raft`]'s
/// fallback; this tells whether the type number is one raft knows.
pub fn known_entry_type(t: i32) -> bool {
    (0..=2).contains(&t)
}

/// etcd ConfState → raft-rs ConfState.
pub fn conf_state_to_raft(cs: &raftpb::ConfState) -> eraftpb::ConfState {
    eraftpb::ConfState {
        voters: cs.voters.clone(),
        learners: cs.learners.clone(),
        voters_outgoing: cs.voters_outgoing.clone(),
        learners_next: cs.learners_next.clone(),
        auto_leave: cs.auto_leave,
        ..Default::default()
    }
}

/// raft-rs ConfState → etcd ConfState.
pub fn conf_state_from_raft(cs: &eraftpb::ConfState) -> raftpb::ConfState {
    raftpb::ConfState {
        voters: cs.voters.clone(),
        learners: cs.learners.clone(),
        voters_outgoing: cs.voters_outgoing.clone(),
        learners_next: cs.learners_next.clone(),
        auto_leave: cs.auto_leave,
    }
}

/// etcd snapshot → raft-rs snapshot.
pub fn snapshot_to_raft(s: &raftpb::Snapshot) -> eraftpb::Snapshot {
    let mut out = eraftpb::Snapshot {
        data: s.data.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut meta = eraftpb::SnapshotMetadata::default();
    if let Some(m) = &s.metadata {
        meta.index = m.index;
        meta.term = m.term;
        meta.set_conf_state(conf_state_to_raft(
            &m.conf_state.clone().unwrap_or_default(),
        ));
    }
    out.set_metadata(meta);
    out
}

/// raft-rs snapshot → etcd snapshot.
pub fn snapshot_from_raft(s: &eraftpb::Snapshot) -> raftpb::Snapshot {
    let m = s.get_metadata();
    raftpb::Snapshot {
        data: if s.data.is_empty() {
            None
        } else {
            Some(s.data.clone())
        },
        metadata: Some(raftpb::SnapshotMetadata {
            conf_state: Some(conf_state_from_raft(m.get_conf_state())),
            index: m.index,
            term: m.term,
        }),
    }
}

/// etcd message → raft-rs message. `None` for a message type raft does not know.
pub fn message_to_raft(m: &raftpb::Message) -> Option<eraftpb::Message> {
    let mut out = eraftpb::Message::default();
    out.set_msg_type(msg_type_from_etcd(m.r#type)?);
    out.to = m.to;
    out.from = m.from;
    out.term = m.term;
    out.log_term = m.log_term;
    out.index = m.index;
    out.commit = m.commit;
    out.reject = m.reject;
    out.reject_hint = m.reject_hint;
    out.context = m.context.clone().unwrap_or_default();
    out.set_entries(
        m.entries
            .iter()
            .map(entry_to_raft)
            .collect::<Vec<_>>()
            .into(),
    );
    if let Some(s) = &m.snapshot {
        out.set_snapshot(snapshot_to_raft(s));
    }
    Some(out)
}

/// raft-rs message → etcd message (what goes on the wire). raft-rs-only
/// fields (`request_snapshot`, `commit_term`, priorities) are dropped.
pub fn message_from_raft(m: &eraftpb::Message) -> raftpb::Message {
    raftpb::Message {
        r#type: m.get_msg_type() as i32,
        to: m.to,
        from: m.from,
        term: m.term,
        log_term: m.log_term,
        index: m.index,
        entries: m.get_entries().iter().map(entry_from_raft).collect(),
        commit: m.commit,
        snapshot: m.snapshot.as_ref().map(snapshot_from_raft),
        reject: m.reject,
        reject_hint: m.reject_hint,
        context: if m.context.is_empty() {
            None
        } else {
            Some(m.context.clone())
        },
    }
}

/// raft-rs hard state → etcd hard state.
pub fn hard_state_from_raft(hs: &eraftpb::HardState) -> raftpb::HardState {
    raftpb::HardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use bytes::Bytes;

    #[test]
    fn message_round_trips_through_raft_types() {
        let m = raftpb::Message {
            r#type: 3,
            to: 2,
            from: 1,
            term: 5,
            log_term: 4,
            index: 10,
            entries: vec![raftpb::Entry {
                r#type: 1,
                term: 5,
                index: 11,
                data: Some(Bytes::from_static(b"cc")),
            }],
            commit: 9,
            snapshot: None,
            reject: false,
            reject_hint: 0,
            context: Some(Bytes::from_static(b"ctx")),
        };
        let back = message_from_raft(&message_to_raft(&m).unwrap());
        assert_eq!(back, m);
    }

    #[test]
    fn every_etcd_message_type_maps_to_the_same_number() {
        for t in 0..=18 {
            assert_eq!(msg_type_from_etcd(t).unwrap() as i32, t);
        }
        assert!(msg_type_from_etcd(19).is_none());
        assert!(msg_type_from_etcd(-1).is_none());
    }

    #[test]
    fn snapshot_metadata_survives_conversion() {
        let s = raftpb::Snapshot {
            data: Some(Bytes::from_static(b"{}")),
            metadata: Some(raftpb::SnapshotMetadata {
                conf_state: Some(raftpb::ConfState {
                    voters: vec![1, 3],
                    learners: vec![2],
                    ..Default::default()
                }),
                index: 6506,
                term: 2,
            }),
        };
        assert_eq!(snapshot_from_raft(&snapshot_to_raft(&s)), s);
    }
}
