//! Stable error codes (`ES-xxxx`) for every halt, stop and refusal, each
//! with a one-line description and what the operator does about it. They
//! appear in `/status` (`node.error_code`, `replay.error_code`), in the
//! error log lines (`code=`), on the last line a failing command prints,
//! and on every failed `promote` check. `docs/runbook.md` lists them; its
//! table is generated from [`ALL`] and a test keeps the two equal. A code,
//! once given out, keeps its meaning: new situations get new numbers.
//!
//! Ranges: `ES-1xxx` replay to the standby, `ES-2xxx` the HA pair and the
//! fencing, `ES-3xxx` the learner and its local log, `ES-4xxx` reaching the
//! clusters, `ES-5xxx` promotion checks.

use serde::Serialize;

use crate::error::Error;
use etcd_standby_sink::SinkError;

/// One documented code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Code {
    /// `ES-1101`.
    pub id: &'static str,
    /// What happened, in one line.
    pub title: &'static str,
    /// What to do.
    pub action: &'static str,
}

macro_rules! codes {
    ($($name:ident = $id:literal, $title:literal, $action:literal;)*) => {
        $(
            #[doc = $title]
            pub const $name: Code = Code { id: $id, title: $title, action: $action };
        )*
        /// Every code, in number order.
        pub const ALL: &[Code] = &[$($name),*];
    };
}

codes! {
    UNCLASSIFIED = "ES-1000", "An error without a more specific code",
        "Read the message (it says what was being done and why); report it so it gets a code";
    ENTRY_NOT_REPLAYABLE = "ES-1101", "A committed entry cannot be decoded or applied; replay halted at its index",
        "Inspect it with `wal dump --start-index N --end-index N`; restart with --skip-undecodable only if its effect may be missing";
    STANDBY_REFUSED = "ES-1102", "The standby refused a write (NOSPACE, permission, request too large); nothing of that txn applied",
        "Fix the standby (alarm list, quota, the replicator user's role) and restart `run`; it resumes from the checkpoint";
    STANDBY_UNAVAILABLE = "ES-1103", "The standby cannot be reached (retried with backoff)",
        "Check the standby's health and the network; replay resumes by itself, the log is kept meanwhile";
    STANDBY_LEASE = "ES-1104", "A lease grant or revoke failed on the standby",
        "Check the standby's health; restart `run` (lease replay is idempotent)";
    STANDBY_AUTH = "ES-1105", "Mirroring a user, role or permission failed on the standby",
        "Check the replicator user's root role on the standby; restart `run`";
    SELF_LOCKOUT = "ES-1106", "Mirroring this auth change would lock the replicator out of the standby",
        "Give the replicator an identity on the standby (--standby-user with the root role, or a client certificate) and restart";
    HASH_UNSUPPORTED = "ES-1107", "A 3.5 primary's hashed password cannot be stored on a 3.4 standby",
        "Run the standby on etcd 3.5";
    MASS_DELETE = "ES-1108", "A snapshot reconcile would delete more of the standby than allowed; nothing written",
        "Check that the source is the right cluster; if the deletion is real, restart once with --accept-mass-delete";
    BAD_RESERVED_KEY = "ES-1109", "A reserved key on the standby (checkpoint, epoch) holds something unreadable",
        "Someone wrote under --reserved-prefix; restore it from the audit trail or re-seed the standby";
    CHECKPOINT_MOVED = "ES-1110", "The standby's checkpoint is not the one this replicator wrote (another writer, or the standby restored from a backup)",
        "If it moved on, nothing to do (replay re-reads it and resumes). If it went back: stop every other replicator of this source, then re-seed the standby or let a reconcile run";
    REVISION_MISMATCH = "ES-1111", "--preserve-revisions: a standby txn did not land at the primary's revision (a foreign write or an expired lease on the standby)",
        "Replay halts. Find who wrote to the standby (its watch history at the reported revision), then re-seed it with `etcd-standby seed`";
    REVISIONS_NOT_PRESERVABLE = "ES-1112", "--preserve-revisions cannot go on: the standby is not (yet) the seed's restore (replay waits), was replicated in the batched mode, or the log jumps over a leader snapshot (replay halts)",
        "Start the standby members on the data dirs the seed restored; otherwise re-seed (`etcd-standby seed`, runbook: revision-preserving mode), or run without --preserve-revisions";
    SEED_REFUSED = "ES-1113", "`etcd-standby seed` refused or failed (the snapshot, the data dir's log, the restore tool, or a seed record)",
        "Read the message: it names the file or step. Seed from a newer snapshot when the data dir's log starts after it; give the standby version's restore tool with --restore-tool; remove a half-made --out dir";
    FENCED = "ES-2001", "The standby's fencing epoch is newer than ours (promoted, or another replicator took over)",
        "Expected after a promotion: stop this replicator. Otherwise find who else writes to the standby";
    LOST_LOCK = "ES-2002", "--ha: this instance lost the HA lock (another one is active, or our lease expired)",
        "Nothing: it stops (exit 6) and comes back passive under its supervisor";
    PROMOTED = "ES-2003", "The standby was promoted; no replicator writes to it again",
        "Seed a new standby to replicate the new primary (runbook: failback)";
    PROMOTE_CONFLICT = "ES-2004", "The promotion txn found the standby changed since it was checked; nothing written",
        "Run the dry run again and read what moved";
    PEER_URL_MISMATCH = "ES-2005", "--ha: this instance's --advertise-peer-url differs from the registered learner's",
        "Give every HA instance the same --advertise-peer-url (a VIP or Service); a learner's URL is never changed";
    PROMOTION_IN_PROGRESS = "ES-2006", "A promotion started from this data dir and did not finish; `run` refuses",
        "Finish it: run the same `promote` again";
    LEARNER_REMOVED = "ES-3001", "The primary removed this learner from its membership",
        "If not deliberate, move the data dir aside and re-seed (runbook)";
    LOCAL_DISK_FULL = "ES-3002", "The local data dir is full; nothing more is acknowledged to the leader",
        "Free space on the data dir's filesystem; the learner resumes and nothing acknowledged is lost";
    LOCAL_LOG = "ES-3003", "The local raft log cannot be read or written (IO error, corruption)",
        "Check the disk; `wal verify DATA_DIR` gives the offset; a corrupt log means re-seed";
    RAFT_REFUSED = "ES-3004", "The learner's raft core refused a message or state (it never votes or campaigns)",
        "Read the alarm: someone promoted the learner or asked it to vote; remove it from the primary";
    LEARNER_BEHIND = "ES-3005", "The learner's commit index has not reached an index the primary reported longer ago than the watchdog's threshold (not an error: a warning while it lasts)",
        "Read `source.behind_reason` and `peers` in /status (peer link cut or half-open, leader not sending to us, full disk); it clears by itself once commits reach the learner again";
    LOCAL_VALUE_STORE = "ES-3006", "The shadow model's value store (DATA_DIR/replay/values.redb) cannot be read or written",
        "Check the disk; if the store is damaged, stop, move DATA_DIR/replay aside and restart: the model is rebuilt from a snapshot db or by a reconcile";
    PRIMARY_CLIENT = "ES-4001", "A call to the primary's or standby's client API failed (join, member list, auth)",
        "Check endpoints, TLS files and credentials (`config print`), and the cluster's health";
    PEER_TRANSPORT = "ES-4002", "The peer listener or a peer connection failed",
        "Check --peer-listen (address in use?) and the peer TLS files";
    TLS_CONFIG = "ES-4003", "A TLS certificate, key or CA cannot be loaded",
        "Check the files named by the --*-cert/--*-key/--*-ca flags (PEM, readable by the service user)";
    ADMIN_LISTEN = "ES-4004", "The admin listener cannot be bound (--admin-listen)",
        "Another process holds the address (address in use: a second replicator on this host?) or it is not one of this host's; choose another --admin-listen";
    CHECK_DATA_DIR = "ES-5001", "promote: the data dir is missing, unreadable, or not a replicator's",
        "Point --data-dir at the active replicator's data dir";
    CHECK_STANDBY_REACHABLE = "ES-5002", "promote: the standby cannot be reached",
        "Promotion writes the standby: bring it up first";
    CHECK_STANDBY_HEALTHY = "ES-5003", "promote: the standby is not healthy (alarms, no leader)",
        "Fix the standby (etcdctl alarm list, endpoint health) first";
    CHECK_NOT_PROMOTED = "ES-5004", "promote: the standby is already promoted (exit 5)",
        "Nothing: it is the primary already; read the audit record";
    CHECK_REPLICATED = "ES-5005", "promote: the standby holds no replicator checkpoint for this source",
        "Check --standby-endpoints and --reserved-prefix; this standby was never replicated to";
    CHECK_AUTH = "ES-5006", "promote: auth state of the standby is not what the primary's was",
        "Read the check's detail; fix the standby's auth before promoting";
    CHECK_REPLAY_STATE = "ES-5007", "promote: replay is reconciling or halted",
        "Wait for the reconcile, or fix the halt (its own code in /status) first";
    CHECK_LEASE_KEEPER = "ES-5008", "promote: mirrored leases were not kept alive (some may have expired on the standby)",
        "Read the detail; --force accepts the possibly lost lease-bound keys";
    CHECK_LAST_CONTACT = "ES-5009", "promote: the learner's last contact with the primary is unknown or old",
        "Informational; the RPO report says what may be missing";
    CHECK_PRIMARY_HEALTHY = "ES-5010", "promote: the old primary is still reachable and healthy",
        "Make sure you mean it (split brain): stop the old primary, or --force and --fence-old-primary";
    CHECK_TARGET = "ES-5011", "promote: --to-index / --to-time cannot be reached or is in the past",
        "Choose a point between the standby's checkpoint and the local log's end";
    CHECK_CAUGHT_UP = "ES-5012", "promote: replay is behind the local log",
        "Wait for replay to catch up (the dry run says how far), or --force to lose the difference";
    CHECK_UNCONFIRMED_TAIL = "ES-5013", "promote: entries were received but their commit is not confirmed",
        "Decide: --apply-unconfirmed-tail applies them, otherwise they count as lost";
}

/// The code of a failed `promote` check, by the check's stable name.
pub fn for_check(name: &str) -> Code {
    match name {
        "data_dir" => CHECK_DATA_DIR,
        "standby_reachable" => CHECK_STANDBY_REACHABLE,
        "standby_healthy" => CHECK_STANDBY_HEALTHY,
        "standby_not_promoted" => CHECK_NOT_PROMOTED,
        "standby_replicated" => CHECK_REPLICATED,
        "auth" => CHECK_AUTH,
        "replay_state" => CHECK_REPLAY_STATE,
        "lease_keeper" => CHECK_LEASE_KEEPER,
        "last_contact" => CHECK_LAST_CONTACT,
        "primary" => CHECK_PRIMARY_HEALTHY,
        "target" => CHECK_TARGET,
        "caught_up" => CHECK_CAUGHT_UP,
        "unconfirmed_tail" => CHECK_UNCONFIRMED_TAIL,
        _ => UNCLASSIFIED,
    }
}

impl Error {
    /// This error's code: from its typed root, or from what the message
    /// chain says for the errors that are only words.
    pub fn code(&self) -> Code {
        if self.is_disk_full() {
            return LOCAL_DISK_FULL;
        }
        match self.root() {
            Error::Halt { .. } => ENTRY_NOT_REPLAYABLE,
            Error::Sink(e) => sink_code(e),
            Error::Wal(_) | Error::Io(_) | Error::ModelIo(_) | Error::V2Store(_) => LOCAL_LOG,
            Error::Bolt(_) => LOCAL_LOG,
            Error::Follower(_) => RAFT_REFUSED,
            Error::Client(_) | Error::Http(_) | Error::HttpRequest(_) => PRIMARY_CLIENT,
            Error::Peer(_) => PEER_TRANSPORT,
            Error::Tls(_) | Error::Pem(_) | Error::Verifier(_) => TLS_CONFIG,
            Error::Json(_) => LOCAL_LOG,
            Error::Refusal { code, .. } => *code,
            Error::ValueStore(_) => LOCAL_VALUE_STORE,
            Error::Msg(_) => UNCLASSIFIED,
            Error::Context { .. } => UNCLASSIFIED,
        }
    }
}

/// The code of a sink error.
pub fn sink_code(e: &SinkError) -> Code {
    match e {
        SinkError::Fenced { .. } => FENCED,
        SinkError::LostLock { .. } => LOST_LOCK,
        SinkError::Promoted { .. } => PROMOTED,
        SinkError::PromoteConflict { .. } => PROMOTE_CONFLICT,
        SinkError::Refused { .. } => STANDBY_REFUSED,
        SinkError::Unavailable { .. } | SinkError::Client { .. } => STANDBY_UNAVAILABLE,
        SinkError::Lease { .. } => STANDBY_LEASE,
        SinkError::Auth { .. } => STANDBY_AUTH,
        SinkError::SelfLockout { .. } => SELF_LOCKOUT,
        SinkError::HashUnsupported { .. } => HASH_UNSUPPORTED,
        SinkError::MassDelete { .. } => MASS_DELETE,
        SinkError::BadReservedKey { .. } => BAD_RESERVED_KEY,
        SinkError::ValueStore { .. } => LOCAL_VALUE_STORE,
        SinkError::CheckpointMoved { .. } => CHECKPOINT_MOVED,
        SinkError::RevisionMismatch { .. } => REVISION_MISMATCH,
        SinkError::RevisionsNotPreservable { .. } | SinkError::StandbyNotSeeded { .. } => {
            REVISIONS_NOT_PRESERVABLE
        }
        SinkError::OutOfOrder { .. } | SinkError::Config(_) | SinkError::Internal(_) => {
            UNCLASSIFIED
        }
    }
}

impl Error {
    /// Whether an IO error below this one is ENOSPC or EDQUOT (anywhere in
    /// the chain, or in its words): the node loop waits for space on these
    /// instead of stopping ([`crate::node`]).
    pub fn is_disk_full(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                )
            {
                return true;
            }
            cur = err.source();
        }
        let text = self.to_string();
        text.contains("No space left on device") || text.contains("Disk quota exceeded")
    }
}

/// The table of `docs/runbook.md` (generated; a test keeps it equal).
pub fn runbook_markdown() -> String {
    let mut s = String::from("| code | what happened | what to do |\n|---|---|---|\n");
    for c in ALL {
        s.push_str(&format!("| `{}` | {} | {} |\n", c.id, c.title, c.action));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_ordered_and_well_formed() {
        let mut last = "";
        for c in ALL {
            assert!(c.id.len() == 7 && c.id.starts_with("ES-"), "{c:?}");
            assert!(c.id[3..].bytes().all(|b| b.is_ascii_digit()), "{c:?}");
            assert!(
                c.id > last,
                "{} after {last}: keep ALL in number order, no repeats",
                c.id
            );
            assert!(!c.title.is_empty() && !c.action.is_empty(), "{c:?}");
            assert!(!c.title.contains('|') && !c.action.contains('|'), "{c:?}");
            last = c.id;
        }
    }

    /// `docs/runbook.md` lists exactly the codes of the code;
    /// `ETCD_STANDBY_UPDATE_DOCS=1` rewrites its table.
    #[test]
    fn runbook_code_table_matches_the_codes() {
        crate::docgen::check_generated("runbook.md", "codes", &runbook_markdown());
    }

    #[test]
    fn typed_errors_get_their_codes_through_any_context() {
        let e = Error::from(SinkError::MassDelete {
            would_delete: 9,
            total: 10,
        })
        .context("reconciling")
        .context("replay");
        assert_eq!(e.code(), MASS_DELETE);
        let halt = Error::Halt {
            index: 5,
            term: 2,
            reason: "x".into(),
        };
        assert_eq!(halt.code(), ENTRY_NOT_REPLAYABLE);
        let full =
            Error::from(std::io::Error::from(std::io::ErrorKind::StorageFull)).context("fsync WAL");
        assert_eq!(full.code(), LOCAL_DISK_FULL);
        let quota = Error::from(etcd_standby_wal::WalError::io(
            "/d/member/wal/x.wal",
            std::io::Error::from_raw_os_error(122), // EDQUOT on Linux
        ))
        .context("appending to the WAL");
        assert!(quota.is_disk_full(), "{quota}");
        assert_eq!(quota.code(), LOCAL_DISK_FULL);
        let other = Error::from(std::io::Error::other("bad sector")).context("fsync WAL");
        assert_eq!(other.code(), LOCAL_LOG);
        assert!(!other.is_disk_full());
        assert_eq!(Error::msg("something new").code(), UNCLASSIFIED);
        let r = Error::refusal(PEER_URL_MISMATCH, "no").context("joining");
        assert_eq!(r.code(), PEER_URL_MISMATCH);
    }

    #[test]
    fn every_promote_check_name_has_a_code() {
        for name in [
            "data_dir",
            "standby_reachable",
            "standby_healthy",
            "standby_not_promoted",
            "standby_replicated",
            "auth",
            "replay_state",
            "lease_keeper",
            "last_contact",
            "primary",
            "target",
            "caught_up",
            "unconfirmed_tail",
        ] {
            assert_ne!(for_check(name), UNCLASSIFIED, "{name}");
        }
    }
}
