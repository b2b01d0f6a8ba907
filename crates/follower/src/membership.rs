//! etcd's cluster membership as the log builds it, with etcd's apply-time
//! validation.
//!
//! A committed conf change is not always applied: every etcd member runs
//! `ValidateConfigurationChange` when it applies the entry and, if that fails
//! (a removed ID, a duplicate ID or peer URL, too many learners, promoting a
//! non-learner, removing an unknown member), turns the change into a no-op.
//! Such entries are real (a rejected `member add --learner` still leaves its
//! entry in the log), so a learner that applied them naively would end with a
//! different membership and ConfState than the cluster.

use std::collections::{BTreeMap, BTreeSet};

use etcd_standby_decode::{ConfContext, Member};
use etcd_standby_proto::raftpb;
use serde::{Deserialize, Serialize};

/// etcd's `maxLearners` (1 in 3.4 and 3.5).
pub const MAX_LEARNERS: usize = 1;

/// Why etcd would ignore a committed conf change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The ID was removed earlier (`ErrIDRemoved`).
    IdRemoved,
    /// The ID already exists (`ErrIDExists`).
    IdExists,
    /// One of the peer URLs belongs to another member (`ErrPeerURLexists`).
    PeerUrlExists,
    /// A second learner (`ErrTooManyLearners`).
    TooManyLearners,
    /// The ID is unknown (`ErrIDNotFound`).
    IdNotFound,
    /// Promotion of a member that is not a learner (`ErrMemberNotLearner`).
    NotLearner,
    /// The context JSON is missing or unreadable (etcd would panic; we skip).
    BadContext,
    /// NodeID 0 or an unknown change type.
    BadChange,
}

impl Invalid {
    /// etcd's error text for the case.
    pub fn etcd_error(self) -> &'static str {
        match self {
            Invalid::IdRemoved => "membership: ID removed",
            Invalid::IdExists => "membership: ID exists",
            Invalid::PeerUrlExists => "membership: peerURL exists",
            Invalid::TooManyLearners => "etcdserver: too many learner members in cluster",
            Invalid::IdNotFound => "membership: ID not found",
            Invalid::NotLearner => "membership: can only promote a learner member",
            Invalid::BadContext => "unreadable conf change context",
            Invalid::BadChange => "unknown conf change type or node id 0",
        }
    }
}

/// The effect of applying one conf change entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A member was added (learner or voter).
    Added(Member),
    /// A learner became a voter.
    Promoted(u64),
    /// A member was removed.
    Removed(u64),
    /// A member's peer URLs changed.
    Updated(Member),
    /// etcd ignores this entry.
    Ignored(Invalid),
}

/// etcd's membership: members plus the IDs removed forever.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Current members by ID.
    pub members: BTreeMap<u64, Member>,
    /// IDs that were removed and can never come back.
    #[serde(default)]
    pub removed: BTreeSet<u64>,
}

impl Membership {
    /// Builds a membership from a member list (for example the `members`
    /// bucket of a snapshot db, or the cluster's MemberList answer).
    pub fn from_members(
        members: impl IntoIterator<Item = Member>,
        removed: impl IntoIterator<Item = u64>,
    ) -> Self {
        Membership {
            members: members.into_iter().map(|m| (m.id, m)).collect(),
            removed: removed.into_iter().collect(),
        }
    }

    /// The raft ConfState this membership implies.
    pub fn conf_state(&self) -> raftpb::ConfState {
        let mut cs = raftpb::ConfState::default();
        for m in self.members.values() {
            if m.is_learner {
                cs.learners.push(m.id);
            } else {
                cs.voters.push(m.id);
            }
        }
        cs
    }

    /// Voting members other than `me`: the peers a learner dials.
    pub fn voters_except(&self, me: u64) -> impl Iterator<Item = &Member> {
        self.members
            .values()
            .filter(move |m| !m.is_learner && m.id != me)
    }

    fn url_taken(&self, urls: &[String], except: Option<u64>) -> bool {
        self.members
            .values()
            .filter(|m| Some(m.id) != except)
            .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)))
    }

    /// Checks a conf change the way etcd's `ValidateConfigurationChange` does.
    pub fn validate(
        &self,
        cc: &raftpb::ConfChange,
        ctx: Option<&ConfContext>,
    ) -> Result<(), Invalid> {
        let id = cc.node_id;
        if id == 0 {
            return Err(Invalid::BadChange);
        }
        let ty = raftpb::ConfChangeType::try_from(cc.r#type).map_err(|_| Invalid::BadChange)?;
        if self.removed.contains(&id) {
            return Err(Invalid::IdRemoved);
        }
        match ty {
            raftpb::ConfChangeType::ConfChangeAddNode
            | raftpb::ConfChangeType::ConfChangeAddLearnerNode => {
                let ctx = ctx.ok_or(Invalid::BadContext)?;
                if ctx.is_promote {
                    match self.members.get(&id) {
                        None => Err(Invalid::IdNotFound),
                        Some(m) if !m.is_learner => Err(Invalid::NotLearner),
                        Some(_) => Ok(()),
                    }
                } else {
                    if self.members.contains_key(&id) {
                        return Err(Invalid::IdExists);
                    }
                    if self.url_taken(&ctx.peer_urls, None) {
                        return Err(Invalid::PeerUrlExists);
                    }
                    if ty == raftpb::ConfChangeType::ConfChangeAddLearnerNode
                        && self.members.values().filter(|m| m.is_learner).count() >= MAX_LEARNERS
                    {
                        return Err(Invalid::TooManyLearners);
                    }
                    Ok(())
                }
            }
            raftpb::ConfChangeType::ConfChangeRemoveNode => {
                if self.members.contains_key(&id) {
                    Ok(())
                } else {
                    Err(Invalid::IdNotFound)
                }
            }
            raftpb::ConfChangeType::ConfChangeUpdateNode => {
                let ctx = ctx.ok_or(Invalid::BadContext)?;
                if !self.members.contains_key(&id) {
                    return Err(Invalid::IdNotFound);
                }
                if self.url_taken(&ctx.peer_urls, Some(id)) {
                    return Err(Invalid::PeerUrlExists);
                }
                Ok(())
            }
        }
    }

    /// Applies a committed conf change with etcd's validation; invalid ones
    /// change nothing and come back as [`Change::Ignored`].
    pub fn apply(&mut self, cc: &raftpb::ConfChange, ctx: Option<&ConfContext>) -> Change {
        if let Err(why) = self.validate(cc, ctx) {
            return Change::Ignored(why);
        }
        let id = cc.node_id;
        // validate() guarantees a known type and, where needed, a context.
        let ty = raftpb::ConfChangeType::try_from(cc.r#type)
            .unwrap_or(raftpb::ConfChangeType::ConfChangeUpdateNode);
        match (ty, ctx) {
            (raftpb::ConfChangeType::ConfChangeRemoveNode, _) => {
                self.members.remove(&id);
                self.removed.insert(id);
                Change::Removed(id)
            }
            (raftpb::ConfChangeType::ConfChangeUpdateNode, Some(ctx)) => {
                match self.members.get_mut(&id) {
                    Some(m) => {
                        m.peer_urls = ctx.peer_urls.clone();
                        Change::Updated(m.clone())
                    }
                    None => Change::Ignored(Invalid::IdNotFound),
                }
            }
            (_, Some(ctx)) if ctx.is_promote => match self.members.get_mut(&id) {
                Some(m) => {
                    m.is_learner = false;
                    Change::Promoted(id)
                }
                None => Change::Ignored(Invalid::IdNotFound),
            },
            (ty, Some(ctx)) => {
                let m = Member {
                    id,
                    peer_urls: ctx.peer_urls.clone(),
                    name: ctx.name.clone().unwrap_or_default(),
                    client_urls: ctx.client_urls.clone(),
                    is_learner: ty == raftpb::ConfChangeType::ConfChangeAddLearnerNode,
                };
                self.members.insert(id, m.clone());
                Change::Added(m)
            }
            (_, None) => Change::Ignored(Invalid::BadContext),
        }
    }

    /// Applies a v2 member-attributes publish (`PUT /0/members/<hex>/attributes`).
    pub fn apply_attributes(&mut self, id: u64, name: String, client_urls: Vec<String>) {
        if let Some(m) = self.members.get_mut(&id) {
            m.name = name;
            m.client_urls = client_urls;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cc(ty: raftpb::ConfChangeType, id: u64) -> raftpb::ConfChange {
        raftpb::ConfChange {
            id: 1,
            r#type: ty as i32,
            node_id: id,
            context: None,
        }
    }

    fn ctx(id: u64, url: &str, learner: bool) -> ConfContext {
        ConfContext {
            id: Some(id),
            peer_urls: vec![url.to_owned()],
            client_urls: vec![],
            name: None,
            is_learner: learner,
            is_promote: false,
        }
    }

    fn boot() -> Membership {
        let mut m = Membership::default();
        let c = m.apply(
            &cc(raftpb::ConfChangeType::ConfChangeAddNode, 1),
            Some(&ctx(1, "http://a", false)),
        );
        assert!(matches!(c, Change::Added(_)));
        m
    }

    #[test]
    fn second_learner_is_ignored_like_etcd_too_many_learners() {
        let mut m = boot();
        let add = cc(raftpb::ConfChangeType::ConfChangeAddLearnerNode, 2);
        assert!(matches!(
            m.apply(&add, Some(&ctx(2, "http://b", true))),
            Change::Added(_)
        ));
        let add3 = cc(raftpb::ConfChangeType::ConfChangeAddLearnerNode, 3);
        assert_eq!(
            m.apply(&add3, Some(&ctx(3, "http://c", true))),
            Change::Ignored(Invalid::TooManyLearners)
        );
        assert_eq!(m.conf_state().learners, vec![2]);
        assert_eq!(m.conf_state().voters, vec![1]);
    }

    #[test]
    fn duplicate_id_and_duplicate_url_are_ignored() {
        let mut m = boot();
        let add = cc(raftpb::ConfChangeType::ConfChangeAddLearnerNode, 1);
        assert_eq!(
            m.apply(&add, Some(&ctx(1, "http://z", true))),
            Change::Ignored(Invalid::IdExists)
        );
        let add = cc(raftpb::ConfChangeType::ConfChangeAddNode, 9);
        assert_eq!(
            m.apply(&add, Some(&ctx(9, "http://a", false))),
            Change::Ignored(Invalid::PeerUrlExists)
        );
    }

    #[test]
    fn removed_ids_never_come_back_and_removing_unknown_is_ignored() {
        let mut m = boot();
        assert_eq!(
            m.apply(&cc(raftpb::ConfChangeType::ConfChangeRemoveNode, 1), None),
            Change::Removed(1)
        );
        let add = cc(raftpb::ConfChangeType::ConfChangeAddNode, 1);
        assert_eq!(
            m.apply(&add, Some(&ctx(1, "http://a", false))),
            Change::Ignored(Invalid::IdRemoved)
        );
        assert_eq!(
            m.apply(&cc(raftpb::ConfChangeType::ConfChangeRemoveNode, 7), None),
            Change::Ignored(Invalid::IdNotFound)
        );
    }

    #[test]
    fn promotion_needs_a_learner() {
        let mut m = boot();
        let mut p = ctx(1, "", false);
        p.peer_urls.clear();
        p.is_promote = true;
        let add = cc(raftpb::ConfChangeType::ConfChangeAddNode, 1);
        assert_eq!(
            m.apply(&add, Some(&p)),
            Change::Ignored(Invalid::NotLearner)
        );
        let l = cc(raftpb::ConfChangeType::ConfChangeAddLearnerNode, 2);
        m.apply(&l, Some(&ctx(2, "http://b", true)));
        let add = cc(raftpb::ConfChangeType::ConfChangeAddNode, 2);
        assert_eq!(m.apply(&add, Some(&p)), Change::Promoted(2));
        assert_eq!(m.conf_state().voters, vec![1, 2]);
    }

    #[test]
    fn update_changes_urls_but_not_the_conf_state() {
        let mut m = boot();
        let up = cc(raftpb::ConfChangeType::ConfChangeUpdateNode, 1);
        let c = m.apply(&up, Some(&ctx(1, "http://new", false)));
        assert!(
            matches!(c, Change::Updated(ref mi) if mi.peer_urls == vec!["http://new".to_owned()])
        );
        assert_eq!(m.conf_state().voters, vec![1]);
    }

    #[test]
    fn node_id_zero_and_unknown_types_are_ignored() {
        let mut m = boot();
        assert_eq!(
            m.apply(&cc(raftpb::ConfChangeType::ConfChangeRemoveNode, 0), None),
            Change::Ignored(Invalid::BadChange)
        );
        let mut bad = cc(raftpb::ConfChangeType::ConfChangeRemoveNode, 1);
        bad.r#type = 42;
        assert_eq!(m.apply(&bad, None), Change::Ignored(Invalid::BadChange));
    }
}
