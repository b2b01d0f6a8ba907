//! Sans-IO learner core around raft-rs `RawNode`: etcd-exact messages in,
//! responses, entries to persist and committed entries out.
//!
//! Design (see `ARCHITECTURE.md`):
//! * Network bytes are parsed by our prost types only; they are converted to
//!   raft-rs's types field by field ([`convert`]).
//! * We never vote, never campaign (the core is never ticked and a learner is
//!   not promotable), and never originate a term: responses carry the
//!   leader's term.
//! * Conf-change entries are decoded with etcd's numbering and validated the
//!   way etcd validates them at apply time ([`membership`]); only valid
//!   changes reach raft-rs, translated to its numbering. A promotion of
//!   ourselves raises an alarm instead of making us a voter.
//! * raft-rs aborts on some inputs (a heartbeat commit beyond the log, an
//!   entry conflicting with a committed one); [`Follower::step`] clamps or
//!   refuses those first.

pub mod convert;
pub mod membership;
mod node;
pub mod v2store;

pub use membership::{Change, Invalid, Membership};
pub use node::{Advanced, Alarm, Event, Follower, FollowerStatus, Ready, Restored};

/// Errors of the learner core.
#[derive(Debug, thiserror::Error)]
pub enum FollowerError {
    /// Bad configuration.
    #[error("follower config: {0}")]
    Config(String),
    /// The restored log is inconsistent.
    #[error("restoring the local log: {0}")]
    Restore(String),
    /// raft-rs reported an error.
    #[error("raft: {0}")]
    Raft(String),
    /// A message was refused (not for a learner, malformed, for someone else).
    #[error("refused: {0}")]
    Refused(String),
    /// The leader sent an entry that contradicts one we already committed:
    /// our log or the leader's is damaged. etcd would panic; we stop.
    #[error("entry {index} has term {theirs} from the leader but committed term {ours} locally")]
    CommittedConflict {
        /// Raft index.
        index: u64,
        /// Our committed term.
        ours: u64,
        /// The leader's term for it.
        theirs: u64,
    },
    /// API misuse by the caller.
    #[error("usage: {0}")]
    Usage(String),
}

/// A slog logger that forwards raft-rs's logs to `tracing`.
pub fn raft_logger() -> slog::Logger {
    use slog::Drain;
    slog::Logger::root(tracing_slog::TracingSlogDrain.fuse(), slog::o!())
}
