//! The promotion decision, pure: facts in, checks, target, RPO and the
//! action list out. Tested as a table (`promote_plan` tests), so every
//! refusal rule is pinned down without a cluster.

use serde::Serialize;

use crate::clock;
use crate::datadir::Promoting;

/// A check's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Fine.
    Pass,
    /// Worth knowing; does not stop the promotion.
    Warn,
    /// Stops the promotion (unless `--force` may override it).
    Fail,
}

/// One promotion check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name (`standby_reachable`, `primary`, ...).
    pub name: &'static str,
    /// Result.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// For a failure `--force` overrides: exactly what forcing gives up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_gives_up: Option<String>,
    /// A failure that means "already promoted" (anti-flap; its own exit code).
    #[serde(skip)]
    pub already_promoted: bool,
    /// The check's stable code ([`crate::codes::for_check`]); it is the
    /// refusal's code when the check fails.
    pub code: &'static str,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            verdict: Verdict::Pass,
            detail: detail.into(),
            force_gives_up: None,
            already_promoted: false,
            code: crate::codes::for_check(name).id,
        }
    }
    fn warn(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::Warn,
            ..Check::pass(name, detail)
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::Fail,
            ..Check::pass(name, detail)
        }
    }
    fn forcible(
        name: &'static str,
        detail: impl Into<String>,
        gives_up: impl Into<String>,
    ) -> Check {
        Check {
            force_gives_up: Some(gives_up.into()),
            ..Check::fail(name, detail)
        }
    }
}

/// Where to promote to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Everything committed (and the unconfirmed tail if chosen).
    Latest,
    /// Up to and including this raft index.
    Index(u64),
    /// Entries received up to this wall time (Unix ms).
    Time(u64),
}

/// The local log after the standby's checkpoint.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogFacts {
    /// Highest index the local log says is committed (the last commit we were told).
    pub confirmed_commit: u64,
    /// Highest durable index (the unconfirmed tail is `confirmed_commit+1..=last_index`).
    pub last_index: u64,
    /// Entries after the standby's checkpoint, `(index, payload bytes)` in
    /// order, unconfirmed tail included (not in JSON: it can be long).
    #[serde(skip)]
    pub after_checkpoint: Vec<(u64, u64)>,
    /// Leader snapshots between the checkpoint and the commit (each means a
    /// reconcile by diff during the drain).
    pub snapshot_jumps: Vec<u64>,
    /// The log cannot bring the model to the checkpoint (no index 1, saved
    /// model or snapshot db below it): why.
    pub cannot_rebuild: Option<String>,
    /// When the last entry was received (Unix ms; 0 unknown).
    pub last_received_ms: u64,
    /// The received-times index: `(last index, Unix ms)` records (not in JSON).
    #[serde(skip)]
    pub times: Vec<(u64, u64)>,
}

/// The standby, as found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StandbyFacts {
    /// Endpoints.
    pub endpoints: Vec<String>,
    /// Any endpoint answered.
    pub reachable: bool,
    /// Why not.
    pub error: Option<String>,
    /// Server version.
    pub version: String,
    /// Active alarms (`NOSPACE@<member>`).
    pub alarms: Vec<String>,
    /// The fencing epoch (None: never replicated to).
    pub epoch: Option<u64>,
    /// Checkpoint of our source cluster: (index, term).
    pub checkpoint: Option<(u64, u64)>,
    /// The checkpoint key is there but could not be read (another cluster's?).
    pub checkpoint_error: Option<String>,
    /// The promotion record, if the standby was promoted.
    pub promoted: Option<serde_json::Value>,
    /// Auth enabled on the standby.
    pub auth_enabled: bool,
    /// Leases on the standby.
    pub leases: u64,
    /// Revision when read.
    pub revision: i64,
}

/// The running daemon, when `promote` found one through its admin API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DaemonFacts {
    /// Its admin address.
    pub admin: String,
    /// Node state (`following`, ...).
    pub node_state: String,
    /// Replay state (`replaying`, `halted`, ...).
    pub replay_state: String,
    /// Replay's error, if any.
    pub replay_error: Option<String>,
    /// Lag in entries and seconds.
    pub lag_entries: u64,
    /// Lag in seconds.
    pub lag_seconds: f64,
    /// Lease keep-alive stream failures.
    pub keepalive_failures: u64,
    /// Leases lost on the standby while mirrored.
    pub leases_lost: u64,
    /// The leader's commit index as last told.
    pub leader_commit_index: u64,
    /// Last message from the leader (Unix ms; 0 never).
    pub last_leader_contact_ms: u64,
}

/// The old primary, as found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PrimaryFacts {
    /// Source endpoints were given, so it was checked.
    pub checked: bool,
    /// Some endpoint answered Status.
    pub reachable: bool,
    /// It has a leader and no alarm.
    pub healthy: bool,
    /// Leader member ID (0 unknown).
    pub leader: u64,
    /// The highest raft index an endpoint reported.
    pub raft_index: u64,
    /// What was seen.
    pub detail: String,
    /// We are still a member of it.
    pub learner_present: bool,
    /// This promote fenced it (CORRUPT alarm) at this raft index: entries
    /// after it are writes it refused, which change nothing.
    pub fenced_at: Option<u64>,
}

/// Everything `promote` found before deciding.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    /// Our learner member ID.
    #[serde(serialize_with = "hex")]
    pub member_id: u64,
    /// The source cluster ID.
    #[serde(serialize_with = "hex")]
    pub cluster_id: u64,
    /// The data dir's identity exists.
    pub joined: bool,
    /// The data dir's promotion record, if it promoted already.
    pub data_dir_promoted: Option<serde_json::Value>,
    /// An interrupted promote's marker.
    pub promoting: Option<Promoting>,
    /// The local log.
    pub log: LogFacts,
    /// The standby.
    pub standby: StandbyFacts,
    /// The running daemon.
    pub daemon: Option<DaemonFacts>,
    /// The old primary.
    pub primary: PrimaryFacts,
    /// Now (Unix ms).
    pub now_ms: u64,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:x}"))
}

/// The operator's choices.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Choices {
    /// Where to promote to.
    pub target: Target,
    /// Apply the received-but-unconfirmed tail.
    pub apply_unconfirmed_tail: bool,
    /// Override the failures that allow it.
    pub force: bool,
    /// Make the old primary refuse writes (CORRUPT alarm) when reachable.
    pub fence_old_primary: bool,
}

/// What may be lost: the recovery-point report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Rpo {
    /// The standby ends at this raft index.
    pub applied_index: u64,
    /// The last commit index we were told.
    pub confirmed_commit: u64,
    /// The highest commit index the primary is known to have reached.
    pub primary_commit_known: u64,
    /// Committed entries (locally durable) that will not be applied.
    pub committed_not_applied: u64,
    /// Their payload bytes.
    pub committed_not_applied_bytes: u64,
    /// When the oldest of them was received (RFC 3339).
    pub oldest_not_applied_received_at: Option<String>,
    /// Entries durable here beyond the confirmed commit.
    pub unconfirmed_tail_entries: u64,
    /// Their payload bytes.
    pub unconfirmed_tail_bytes: u64,
    /// Whether the tail is applied.
    pub unconfirmed_tail_applied: bool,
    /// Entries the primary committed that never reached us (known lower bound).
    pub committed_not_received_known: u64,
    /// Last contact with the primary (RFC 3339), when known.
    pub last_contact: Option<String>,
    /// One paragraph for humans.
    pub summary: String,
}

/// What `promote` will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Promote.
    Proceed,
    /// Finish a promotion that was interrupted after the standby changed.
    Resume,
    /// Refused by a check.
    Refused,
    /// Refused: already promoted (anti-flap).
    AlreadyPromoted,
}

/// The plan: checks, decision, target, RPO and the steps.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Every check with its result.
    pub checks: Vec<Check>,
    /// The decision.
    pub decision: Decision,
    /// The raft index the standby will end at.
    pub target_index: u64,
    /// The recovery-point report.
    pub rpo: Rpo,
    /// What will happen, in order.
    pub actions: Vec<String>,
}

fn ms(t: u64) -> Option<String> {
    (t > 0).then(|| clock::rfc3339(clock::from_unix_ms(t)))
}

/// The first record covering `index`: an upper bound on when it was received.
fn received_ms(times: &[(u64, u64)], index: u64) -> Option<u64> {
    times.iter().find(|(l, _)| *l >= index).map(|(_, t)| *t)
}

/// The largest index received by `t`.
fn received_by(times: &[(u64, u64)], t: u64) -> Option<u64> {
    times.iter().rev().find(|(_, at)| *at <= t).map(|(l, _)| *l)
}

/// Whether the standby's promotion record is ours (an interrupted promote).
fn record_is_ours(f: &Facts) -> bool {
    f.standby.promoted.as_ref().is_some_and(|r| {
        r["source_member_id"].as_str() == Some(&format!("{:x}", f.member_id))
            && r["source_cluster_id"].as_str() == Some(&format!("{:x}", f.cluster_id))
    })
}

/// Decides. See the module docs and `docs` in the README for the rules.
pub fn plan(f: &Facts, c: &Choices) -> Plan {
    let mut checks = Vec::new();
    // Only a data dir with the `promoting` marker (written before the epoch
    // txn) resumes: a copy of the data dir taken earlier has none, and is
    // refused as already promoted.
    let resume = f.data_dir_promoted.is_none() && record_is_ours(f) && f.promoting.is_some();
    // The data dir.
    if !f.joined {
        checks.push(Check::fail(
            "data_dir",
            "the data dir has no standby.json: it never joined a cluster",
        ));
    } else if let Some(rec) = &f.data_dir_promoted {
        checks.push(Check {
            already_promoted: true,
            ..Check::fail(
                "data_dir",
                format!(
                    "this data dir already promoted its standby at {} (epoch {}); a second promote is refused",
                    rec["at"].as_str().unwrap_or("?"),
                    rec["epoch"].as_u64().unwrap_or(0)
                ),
            )
        });
    } else {
        checks.push(Check::pass(
            "data_dir",
            format!(
                "member {:x} of cluster {:x}{}",
                f.member_id,
                f.cluster_id,
                match &f.promoting {
                    Some(p) => format!(
                        "; a promote is marked under way (started by {} at {})",
                        p.by, p.started_at
                    ),
                    None => String::new(),
                }
            ),
        ));
    }
    // The standby.
    let s = &f.standby;
    if !s.reachable {
        checks.push(Check::fail(
            "standby_reachable",
            format!(
                "no standby endpoint answered ({}): {}",
                s.endpoints.join(","),
                s.error.as_deref().unwrap_or("unreachable")
            ),
        ));
    } else {
        checks.push(Check::pass(
            "standby_reachable",
            format!("etcd {} at {}", s.version, s.endpoints.join(",")),
        ));
        if s.alarms.is_empty() {
            checks.push(Check::pass("standby_healthy", "no alarms"));
        } else {
            checks.push(Check::warn(
                "standby_healthy",
                format!(
                    "alarms on the standby: {} (clients' writes may be refused until disarmed)",
                    s.alarms.join(", ")
                ),
            ));
        }
        match &s.promoted {
            Some(_) if resume => checks.push(Check::pass(
                "standby_not_promoted",
                "the standby was promoted from this data dir by an interrupted promote; the remaining steps will be finished",
            )),
            Some(rec) => checks.push(Check {
                already_promoted: true,
                ..Check::fail(
                    "standby_not_promoted",
                    format!(
                        "the standby is already a primary: promoted at {} by {} (epoch {})",
                        rec["at"].as_str().unwrap_or("?"),
                        rec["by"].as_str().unwrap_or("?"),
                        rec["epoch"].as_u64().unwrap_or(0)
                    ),
                )
            }),
            None => checks.push(Check::pass("standby_not_promoted", "not promoted")),
        }
        match (s.checkpoint, &s.checkpoint_error) {
            (_, Some(e)) => checks.push(Check::fail(
                "standby_replicated",
                format!("the standby's checkpoint is not this cluster's: {e}"),
            )),
            (None, None) => checks.push(Check::fail(
                "standby_replicated",
                format!(
                    "the standby has no checkpoint of cluster {:x}: it was never replicated to from this data dir's cluster",
                    f.cluster_id
                ),
            )),
            (Some((i, t)), None) if i > f.log.last_index && !resume => {
                checks.push(Check::fail(
                    "standby_replicated",
                    format!(
                        "the standby's checkpoint ({i}, term {t}) is newer than the local log (last index {}): \
                         this data dir is not the one that replicated it (or lost its log)",
                        f.log.last_index
                    ),
                ))
            }
            (Some((i, t)), None) => checks.push(Check::pass(
                "standby_replicated",
                format!("checkpoint at raft index {i} (term {t}), epoch {}", s.epoch.unwrap_or(0)),
            )),
        }
        checks.push(Check::pass(
            "auth",
            if s.auth_enabled {
                "auth is enabled on the standby (users, roles and passwords are the primary's): clients keep their credentials"
            } else {
                "auth is disabled on the standby"
            },
        ));
    }
    let checkpoint = s.checkpoint.map_or(0, |c| c.0);
    // The daemon.
    match &f.daemon {
        None => checks.push(Check::pass(
            "replay_state",
            "no replicator is running on this data dir; promote applies the rest of the log itself",
        )),
        Some(d) => {
            let detail = format!(
                "replicator at {}: node {}, replay {} (lag {} entries, {:.1} s){}",
                d.admin,
                d.node_state,
                d.replay_state,
                d.lag_entries,
                d.lag_seconds,
                d.replay_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
            checks.push(match d.replay_state.as_str() {
                "halted" => Check::forcible(
                    "replay_state",
                    detail,
                    "entries from the one replay halted at onward: the standby is promoted at the last entry that could be applied",
                ),
                "reconciling" => Check::forcible(
                    "replay_state",
                    detail,
                    "the running reconcile: promote stops the replicator and redoes the reconcile from the snapshot db during its drain",
                ),
                "fenced" => Check::fail("replay_state", detail),
                _ => Check::pass("replay_state", detail),
            });
            if d.keepalive_failures > 0 || d.leases_lost > 0 {
                checks.push(Check::warn(
                    "lease_keeper",
                    format!(
                        "{} keep-alive stream failures, {} leases lost on the standby while mirrored",
                        d.keepalive_failures, d.leases_lost
                    ),
                ));
            } else {
                checks.push(Check::pass(
                    "lease_keeper",
                    "keeping the mirrored leases alive",
                ));
            }
        }
    }
    if f.daemon.is_none() && s.leases > 0 {
        checks.push(Check::warn(
            "lease_keeper",
            format!(
                "no replicator is keeping the standby's {} leases alive{}; those with a shorter TTL have expired with their keys",
                s.leases,
                ms(f.log.last_received_ms)
                    .map(|t| format!(" (last entry received {t})"))
                    .unwrap_or_default()
            ),
        ));
    }
    // Last contact.
    let contact = f
        .daemon
        .as_ref()
        .map_or(0, |d| d.last_leader_contact_ms)
        .max(f.log.last_received_ms);
    checks.push(Check::pass(
        "last_contact",
        match ms(contact) {
            Some(t) => format!(
                "last heard from the primary {t} ({} s ago)",
                f.now_ms.saturating_sub(contact) / 1000
            ),
            None => "no contact recorded".to_owned(),
        },
    ));
    // The primary.
    let p = &f.primary;
    if !p.checked {
        checks.push(Check::warn(
            "primary",
            "not checked (no --source-endpoints): make sure the old primary is down or fenced",
        ));
    } else if !p.reachable {
        checks.push(Check::pass(
            "primary",
            format!("unreachable ({}): the disaster-recovery case", p.detail),
        ));
    } else if !p.healthy {
        checks.push(Check::pass(
            "primary",
            format!("reachable but not healthy: {}", p.detail),
        ));
    } else if c.fence_old_primary {
        checks.push(Check::pass(
            "primary",
            format!(
                "reachable and healthy ({}); it will be fenced (CORRUPT alarm: refuses every write) before the final drain",
                p.detail
            ),
        ));
    } else {
        checks.push(Check::forcible(
            "primary",
            format!(
                "the primary is reachable and healthy ({}); promoting now makes two primaries",
                p.detail
            ),
            "the old primary keeps accepting writes that nobody replicates (split brain) unless every client has moved; \
             add --fence-old-primary for a planned switchover instead",
        ));
    }
    // The target.
    let log = &f.log;
    let available = if c.apply_unconfirmed_tail {
        log.last_index
    } else {
        log.confirmed_commit
    };
    let mut target = match c.target {
        Target::Latest => available,
        Target::Index(n) => n,
        Target::Time(t) => received_by(&log.times, t).unwrap_or(0).min(available),
    };
    if resume {
        target = checkpoint;
        checks.push(Check::pass(
            "target",
            format!("already applied: the standby was promoted at raft index {checkpoint}"),
        ));
    } else if s.checkpoint.is_some() {
        let what = match c.target {
            Target::Latest => "everything committed".to_owned(),
            Target::Index(n) => format!("--to-index {n}"),
            Target::Time(t) => format!(
                "--to-time {} (last entry received by then: {target})",
                ms(t).unwrap_or_default()
            ),
        };
        if target < checkpoint {
            checks.push(Check::fail(
                "target",
                format!(
                    "{what}: the standby already applied up to raft index {checkpoint}; it cannot go back"
                ),
            ));
        } else if target > available {
            checks.push(Check::fail(
                "target",
                format!(
                    "{what}: beyond what the local log holds{} ({available}{})",
                    if c.apply_unconfirmed_tail {
                        ""
                    } else {
                        " committed"
                    },
                    if !c.apply_unconfirmed_tail && log.last_index > log.confirmed_commit {
                        format!("; --apply-unconfirmed-tail allows up to {}", log.last_index)
                    } else {
                        String::new()
                    }
                ),
            ));
        } else if let Some(why) = &log.cannot_rebuild {
            checks.push(Check::forcible(
                "caught_up",
                format!(
                    "the local log cannot bring the standby from {checkpoint} to {target}: {why}"
                ),
                format!(
                    "entries {}..={target}: the standby is promoted at its checkpoint {checkpoint}",
                    checkpoint + 1
                ),
            ));
            target = checkpoint;
        } else {
            let todo = log
                .after_checkpoint
                .iter()
                .filter(|(i, _)| *i <= target)
                .count();
            checks.push(Check::pass(
                "target",
                format!("{what}: raft index {target}"),
            ));
            checks.push(if todo == 0 {
                Check::pass(
                    "caught_up",
                    "the standby has applied everything up to the target",
                )
            } else {
                Check::warn(
                    "caught_up",
                    format!(
                        "{todo} entries ({}..={target}) are applied to the standby first{}",
                        checkpoint + 1,
                        if log.snapshot_jumps.is_empty() {
                            String::new()
                        } else {
                            format!(
                                ", with a reconcile by diff from the leader snapshot at {:?}",
                                log.snapshot_jumps
                            )
                        }
                    ),
                )
            });
        }
    }
    if log.last_index > log.confirmed_commit && !resume {
        checks.push(Check::warn(
            "unconfirmed_tail",
            format!(
                "{} entries ({}..={}) are durable here but were not confirmed committed; {}",
                log.last_index - log.confirmed_commit,
                log.confirmed_commit + 1,
                log.last_index,
                if c.apply_unconfirmed_tail {
                    "they are applied (--apply-unconfirmed-tail)"
                } else {
                    "they are not applied (--apply-unconfirmed-tail would)"
                }
            ),
        ));
    }
    let rpo = rpo(f, c, target);
    let fatal = checks
        .iter()
        .any(|k| k.verdict == Verdict::Fail && k.force_gives_up.is_none());
    let forcible = checks
        .iter()
        .any(|k| k.verdict == Verdict::Fail && k.force_gives_up.is_some());
    let decision = if checks.iter().any(|k| k.already_promoted) {
        Decision::AlreadyPromoted
    } else if fatal || (forcible && !c.force) {
        Decision::Refused
    } else if resume {
        Decision::Resume
    } else {
        Decision::Proceed
    };
    let actions = actions(f, c, target, decision);
    Plan {
        checks,
        decision,
        target_index: target,
        rpo,
        actions,
    }
}

fn rpo(f: &Facts, c: &Choices, target: u64) -> Rpo {
    let log = &f.log;
    let not_applied: Vec<&(u64, u64)> = log
        .after_checkpoint
        .iter()
        .filter(|(i, _)| *i > target && *i <= log.confirmed_commit)
        .collect();
    let tail: Vec<&(u64, u64)> = log
        .after_checkpoint
        .iter()
        .filter(|(i, _)| *i > log.confirmed_commit)
        .collect();
    let tail_applied = c.apply_unconfirmed_tail && target >= log.last_index;
    let known = log
        .confirmed_commit
        .max(f.daemon.as_ref().map_or(0, |d| d.leader_commit_index))
        .max(match (f.primary.reachable, f.primary.fenced_at) {
            (true, Some(fence)) => f.primary.raft_index.min(fence),
            (true, None) => f.primary.raft_index,
            (false, _) => 0,
        });
    let not_received = known.saturating_sub(log.last_index);
    let contact = f
        .daemon
        .as_ref()
        .map_or(0, |d| d.last_leader_contact_ms)
        .max(log.last_received_ms);
    let oldest = not_applied
        .first()
        .and_then(|(i, _)| received_ms(&log.times, *i))
        .and_then(ms);
    let mut summary = Vec::new();
    if not_applied.is_empty() && not_received == 0 {
        summary.push(format!(
            "every entry the primary is known to have committed (up to {known}) is applied"
        ));
    }
    if !not_applied.is_empty() {
        summary.push(format!(
            "{} committed entries ({}..={}, {} bytes{}) are NOT applied, by choice of the target",
            not_applied.len(),
            target + 1,
            log.confirmed_commit,
            not_applied.iter().map(|(_, b)| b).sum::<u64>(),
            oldest
                .as_deref()
                .map(|t| format!(", the oldest received {t}"))
                .unwrap_or_default()
        ));
    }
    if not_received > 0 {
        summary.push(format!(
            "the primary committed at least {not_received} entries this replicator never received (up to {known})"
        ));
    }
    if let Some(fence) = f.primary.fenced_at {
        summary.push(format!(
            "the old primary was fenced at raft index {fence}: what it committed after that are writes it refused"
        ));
    }
    if !tail.is_empty() {
        summary.push(format!(
            "{} received entries were not confirmed committed: {}",
            tail.len(),
            if tail_applied {
                "applied (--apply-unconfirmed-tail)"
            } else {
                "not applied"
            }
        ));
    }
    if !f.primary.reachable || !f.primary.checked {
        summary.push(match ms(contact) {
            Some(t) => format!(
                "the primary may have committed more after the last contact at {t}: writes it acknowledged after that are not known here"
            ),
            None => "the primary may have committed more than this replicator received".to_owned(),
        });
    }
    Rpo {
        applied_index: target,
        confirmed_commit: log.confirmed_commit,
        primary_commit_known: known,
        committed_not_applied: not_applied.len() as u64,
        committed_not_applied_bytes: not_applied.iter().map(|(_, b)| b).sum(),
        oldest_not_applied_received_at: oldest,
        unconfirmed_tail_entries: tail.len() as u64,
        unconfirmed_tail_bytes: tail.iter().map(|(_, b)| b).sum(),
        unconfirmed_tail_applied: tail_applied,
        committed_not_received_known: not_received,
        last_contact: ms(contact),
        summary: summary.join("; "),
    }
}

fn actions(f: &Facts, c: &Choices, target: u64, decision: Decision) -> Vec<String> {
    let mut out = Vec::new();
    if matches!(decision, Decision::Refused | Decision::AlreadyPromoted) {
        return out;
    }
    let checkpoint = f.standby.checkpoint.map_or(0, |c| c.0);
    let primary_up = f.primary.reachable;
    if decision == Decision::Proceed {
        if c.fence_old_primary && primary_up {
            out.push(
                "fence the old primary: activate a CORRUPT alarm (every member refuses writes; reads still work; \
                 `etcdctl alarm disarm` undoes it)"
                    .to_owned(),
            );
        }
        if let Some(d) = &f.daemon {
            out.push(format!(
                "{}stop the replicator running at {} (it records that a promote is under way, so a supervisor restart refuses to start)",
                if c.fence_old_primary && primary_up {
                    "wait until the replicator has received everything the primary committed, then "
                } else {
                    ""
                },
                d.admin
            ));
        }
        if target > checkpoint {
            out.push(format!(
                "apply raft entries {}..={target} to the standby",
                checkpoint + 1
            ));
        }
        out.push(format!(
            "bump the fencing epoch {} -> {} in one txn with the audit record (every replicator still writing is fenced)",
            f.standby.epoch.unwrap_or(0),
            f.standby.epoch.unwrap_or(0) + 1
        ));
    }
    out.push(format!(
        "refresh the standby's {} leases once (a full TTL for clients to reconnect), then stop keeping them alive",
        f.standby.leases
    ));
    if primary_up {
        out.push(format!(
            "remove learner {:x} from the old primary (MemberRemove)",
            f.member_id
        ));
    } else {
        out.push(format!(
            "the old primary is unreachable: remove learner {:x} from it when it is back (`etcdctl member remove {:x}`)",
            f.member_id, f.member_id
        ));
    }
    out.push("mark the data dir promoted (it never replicates again)".to_owned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A healthy DR situation: primary gone, standby caught up to 10 of 12.
    fn facts() -> Facts {
        Facts {
            member_id: 0xabc,
            cluster_id: 0xdef,
            joined: true,
            log: LogFacts {
                confirmed_commit: 12,
                last_index: 14,
                after_checkpoint: (11..=14).map(|i| (i, 100)).collect(),
                last_received_ms: 1_000_000,
                times: vec![(11, 900_000), (12, 950_000), (14, 1_000_000)],
                ..Default::default()
            },
            standby: StandbyFacts {
                reachable: true,
                version: "3.5.1".into(),
                epoch: Some(1),
                checkpoint: Some((10, 2)),
                leases: 3,
                ..Default::default()
            },
            primary: PrimaryFacts {
                checked: true,
                reachable: false,
                detail: "connection refused".into(),
                ..Default::default()
            },
            now_ms: 1_060_000,
            ..Default::default()
        }
    }

    fn choices() -> Choices {
        Choices {
            target: Target::Latest,
            apply_unconfirmed_tail: false,
            force: false,
            fence_old_primary: false,
        }
    }

    fn check<'a>(p: &'a Plan, name: &str) -> &'a Check {
        p.checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}: {:?}", p.checks))
    }

    #[test]
    fn primary_gone_promotes_everything_committed_and_reports_the_unconfirmed_tail() {
        let p = plan(&facts(), &choices());
        assert_eq!(p.decision, Decision::Proceed);
        assert_eq!(p.target_index, 12);
        assert_eq!(p.rpo.committed_not_applied, 0);
        assert_eq!(p.rpo.unconfirmed_tail_entries, 2);
        assert_eq!(p.rpo.unconfirmed_tail_bytes, 200);
        assert!(!p.rpo.unconfirmed_tail_applied);
        assert!(p.rpo.summary.contains("last contact"), "{}", p.rpo.summary);
        assert_eq!(check(&p, "unconfirmed_tail").verdict, Verdict::Warn);
        assert!(
            p.actions
                .iter()
                .any(|a| a.contains("apply raft entries 11..=12"))
        );
        assert!(p.actions.iter().any(|a| a.contains("epoch 1 -> 2")));
    }

    #[test]
    fn entries_after_our_own_fence_are_not_counted_as_lost() {
        let mut f = facts();
        f.primary.reachable = true;
        f.primary.raft_index = 30;
        f.log.last_index = 12;
        f.log.after_checkpoint.retain(|(i, _)| *i <= 12);
        let p = plan(&f, &choices());
        assert_eq!(p.rpo.committed_not_received_known, 18);
        f.primary.fenced_at = Some(12);
        let p = plan(&f, &choices());
        assert_eq!(p.rpo.committed_not_received_known, 0);
        assert!(
            p.rpo.summary.contains("fenced at raft index 12"),
            "{}",
            p.rpo.summary
        );
    }

    #[test]
    fn the_unconfirmed_tail_is_applied_only_when_chosen() {
        let c = Choices {
            apply_unconfirmed_tail: true,
            ..choices()
        };
        let p = plan(&facts(), &c);
        assert_eq!(p.target_index, 14);
        assert!(p.rpo.unconfirmed_tail_applied);
    }

    #[test]
    fn a_healthy_primary_refuses_unless_forced_or_fenced() {
        let mut f = facts();
        f.primary.reachable = true;
        f.primary.healthy = true;
        let p = plan(&f, &choices());
        assert_eq!(p.decision, Decision::Refused);
        let k = check(&p, "primary");
        assert_eq!(k.verdict, Verdict::Fail);
        assert!(
            k.force_gives_up
                .as_deref()
                .is_some_and(|g| g.contains("split brain"))
        );
        let forced = plan(
            &f,
            &Choices {
                force: true,
                ..choices()
            },
        );
        assert_eq!(forced.decision, Decision::Proceed);
        let fenced = plan(
            &f,
            &Choices {
                fence_old_primary: true,
                ..choices()
            },
        );
        assert_eq!(fenced.decision, Decision::Proceed);
        assert!(fenced.actions[0].contains("CORRUPT alarm"));
        assert!(
            fenced
                .actions
                .iter()
                .any(|a| a.contains("remove learner abc"))
        );
    }

    #[test]
    fn a_halted_or_reconciling_replay_refuses_unless_forced_and_says_what_force_gives_up() {
        for state in ["halted", "reconciling"] {
            let mut f = facts();
            f.daemon = Some(DaemonFacts {
                admin: "127.0.0.1:9479".into(),
                node_state: "following".into(),
                replay_state: state.into(),
                ..Default::default()
            });
            let p = plan(&f, &choices());
            assert_eq!(p.decision, Decision::Refused, "{state}");
            assert!(check(&p, "replay_state").force_gives_up.is_some());
            let p = plan(
                &f,
                &Choices {
                    force: true,
                    ..choices()
                },
            );
            assert_eq!(p.decision, Decision::Proceed, "{state}");
        }
    }

    #[test]
    fn force_never_overrides_an_unreachable_or_unreplicated_standby() {
        let forced = Choices {
            force: true,
            ..choices()
        };
        let mut f = facts();
        f.standby.reachable = false;
        assert_eq!(plan(&f, &forced).decision, Decision::Refused);
        let mut f = facts();
        f.standby.checkpoint = None;
        let p = plan(&f, &forced);
        assert_eq!(p.decision, Decision::Refused);
        assert!(
            check(&p, "standby_replicated")
                .detail
                .contains("never replicated")
        );
        let mut f = facts();
        f.standby.checkpoint = Some((99, 3));
        let p = plan(&f, &forced);
        assert_eq!(p.decision, Decision::Refused);
        assert!(
            check(&p, "standby_replicated")
                .detail
                .contains("newer than the local log")
        );
        let mut f = facts();
        f.joined = false;
        assert_eq!(plan(&f, &forced).decision, Decision::Refused);
    }

    #[test]
    fn a_second_promote_is_refused_as_already_promoted() {
        let mut f = facts();
        f.data_dir_promoted = Some(serde_json::json!({"at": "t", "epoch": 2}));
        assert_eq!(
            plan(
                &f,
                &Choices {
                    force: true,
                    ..choices()
                }
            )
            .decision,
            Decision::AlreadyPromoted
        );
        // The standby promoted by someone else.
        let mut f = facts();
        f.standby.promoted = Some(serde_json::json!({
            "source_member_id": "999", "source_cluster_id": "def", "at": "t", "epoch": 2
        }));
        assert_eq!(plan(&f, &choices()).decision, Decision::AlreadyPromoted);
    }

    #[test]
    fn an_interrupted_promote_of_ours_is_resumed() {
        let mut f = facts();
        f.standby.promoted = Some(serde_json::json!({
            "source_member_id": "abc", "source_cluster_id": "def", "at": "t", "epoch": 2
        }));
        f.standby.checkpoint = Some((12, 2));
        // Without the marker it is a copy of the data dir, not an interrupted promote.
        assert_eq!(plan(&f, &choices()).decision, Decision::AlreadyPromoted);
        f.promoting = Some(Promoting {
            pid: 1,
            by: "ops@host".into(),
            started_at: "t".into(),
        });
        let p = plan(&f, &choices());
        assert_eq!(p.decision, Decision::Resume);
        assert_eq!(p.target_index, 12);
        assert!(!p.actions.iter().any(|a| a.contains("bump")));
        assert!(p.actions.iter().any(|a| a.contains("mark the data dir")));
    }

    #[test]
    fn to_index_and_to_time_choose_the_point_and_report_what_is_left_out() {
        let p = plan(
            &facts(),
            &Choices {
                target: Target::Index(11),
                ..choices()
            },
        );
        assert_eq!(p.decision, Decision::Proceed);
        assert_eq!(p.target_index, 11);
        assert_eq!(p.rpo.committed_not_applied, 1);
        assert_eq!(p.rpo.committed_not_applied_bytes, 100);
        assert!(p.rpo.oldest_not_applied_received_at.is_some());
        assert!(p.rpo.summary.contains("by choice"));
        // Entries received by 920 s: only 11 (12 was received by 950 s).
        let p = plan(
            &facts(),
            &Choices {
                target: Target::Time(920_000),
                ..choices()
            },
        );
        assert_eq!(p.target_index, 11);
        // Behind the checkpoint: refused, force or not.
        let p = plan(
            &facts(),
            &Choices {
                target: Target::Index(9),
                force: true,
                ..choices()
            },
        );
        assert_eq!(p.decision, Decision::Refused);
        assert!(check(&p, "target").detail.contains("cannot go back"));
        // Beyond the commit without the tail option.
        let p = plan(
            &facts(),
            &Choices {
                target: Target::Index(14),
                ..choices()
            },
        );
        assert_eq!(p.decision, Decision::Refused);
        assert!(
            check(&p, "target")
                .detail
                .contains("--apply-unconfirmed-tail")
        );
    }

    #[test]
    fn a_log_that_cannot_rebuild_refuses_unless_forced_at_the_checkpoint() {
        let mut f = facts();
        f.log.cannot_rebuild = Some("no snapshot db".into());
        assert_eq!(plan(&f, &choices()).decision, Decision::Refused);
        let p = plan(
            &f,
            &Choices {
                force: true,
                ..choices()
            },
        );
        assert_eq!(p.decision, Decision::Proceed);
        assert_eq!(p.target_index, 10);
        assert_eq!(p.rpo.committed_not_applied, 2);
    }

    #[test]
    fn an_unattended_standby_warns_that_leases_may_have_expired() {
        let p = plan(&facts(), &choices());
        assert_eq!(check(&p, "lease_keeper").verdict, Verdict::Warn);
    }
}
