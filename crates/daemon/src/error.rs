//! The daemon's one error type.
//!
//! Errors keep their typed cause (a [`SinkError`] stays a `SinkError`, so a
//! caller can tell `Fenced` from a refused write) and gain a chain of context
//! strings on the way up, printed outermost first: `"persisting to the local
//! log: fsync WAL: No space left on device"`.

use etcd_standby_client::ClientError;
use etcd_standby_follower::FollowerError;
use etcd_standby_sink::SinkError;
use etcd_standby_wal::WalError;

/// Result with the daemon's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop the daemon or one of its tasks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A step failed (`context`), because of `source`.
    #[error("{context}: {source}")]
    Context {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: Box<Error>,
    },
    /// File system.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The local WAL.
    #[error("{0}")]
    Wal(#[from] WalError),
    /// The source or standby client API.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// Writing the standby.
    #[error("{0}")]
    Sink(#[from] SinkError),
    /// The raft core.
    #[error("{0}")]
    Follower(#[from] FollowerError),
    /// Reading a snapshot db.
    #[error("{0}")]
    Bolt(#[from] etcd_standby_bolt::BoltError),
    /// Writing or reading a saved shadow model.
    #[error("{0}")]
    ModelIo(#[from] etcd_standby_model::ModelIoError),
    /// The membership document of a `.snap` file.
    #[error("{0}")]
    V2Store(#[from] etcd_standby_follower::v2store::V2StoreError),
    /// The peer transport.
    #[error("{0}")]
    Peer(#[from] etcd_standby_peer::PeerError),
    /// TLS configuration.
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    /// PEM files.
    #[error("{0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// TLS client-certificate verifier.
    #[error("{0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The admin HTTP client or server.
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// Building an HTTP request.
    #[error("{0}")]
    HttpRequest(#[from] hyper::http::Error),
    /// `standby.json` and other JSON.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A committed entry replay cannot apply; replay stops at `index`.
    #[error(
        "raft entry {index} (term {term}) cannot be replayed ({reason}); replay halted. \
         Inspect it with `etcd-standby wal dump --start-index {index} --end-index {index}`; \
         restart with --skip-undecodable to skip it"
    )]
    Halt {
        /// Raft index of the entry.
        index: u64,
        /// Its term.
        term: u64,
        /// The model's outcome text.
        reason: String,
    },
    /// A refusal said in words, with its stable code.
    #[error("{message}")]
    Refusal {
        /// The code ([`crate::codes`]).
        code: crate::codes::Code,
        /// What was refused and why.
        message: String,
    },
    /// The shadow model's value store failed ([`crate::values`]).
    #[error("{0}")]
    ValueStore(String),
    /// Anything else, said in words.
    #[error("{0}")]
    Msg(String),
}

impl Error {
    /// An error from a message.
    pub fn msg(m: impl Into<String>) -> Error {
        Error::Msg(m.into())
    }

    /// A refusal with its code.
    pub fn refusal(code: crate::codes::Code, message: impl Into<String>) -> Error {
        Error::Refusal {
            code,
            message: message.into(),
        }
    }

    /// Wraps the error with what was being done.
    pub fn context(self, context: impl Into<String>) -> Error {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// The innermost error, below all context.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            other => other,
        }
    }

    /// The sink error at the root, if that is what it is.
    pub fn sink_error(&self) -> Option<&SinkError> {
        match self.root() {
            Error::Sink(e) => Some(e),
            _ => None,
        }
    }

    /// True when the standby is not ours to write any more: its fencing
    /// epoch moved, it was promoted, or another HA instance holds the lock.
    pub fn is_fenced(&self) -> bool {
        matches!(
            self.sink_error(),
            Some(
                SinkError::Fenced { .. } | SinkError::Promoted { .. } | SinkError::LostLock { .. }
            )
        )
    }

    /// True when another HA instance holds the lock (this one must stop).
    pub fn is_lost_lock(&self) -> bool {
        matches!(self.sink_error(), Some(SinkError::LostLock { .. }))
    }
}

/// `anyhow`-style context on results and options, producing [`Error`].
pub trait Context<T> {
    /// Wraps an error with `context`.
    fn context(self, context: impl Into<String>) -> Result<T>;
    /// Wraps an error with a lazily built context.
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.ok_or_else(|| Error::Msg(context.into()))
    }
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.ok_or_else(|| Error::Msg(f().into()))
    }
}

/// Returns early with an [`Error::Msg`] built like `format!`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::Msg(format!($($arg)*)))
    };
}
pub(crate) use bail;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_chain_prints_outermost_first_and_keeps_the_typed_root() {
        let io = std::io::Error::other("disk on fire");
        let r: Result<()> = Err(io).context("fsync WAL").context("persisting");
        let e = r.err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("persisting: fsync WAL: disk on fire"));
        let fenced: Result<()> = Err(SinkError::Fenced {
            index: 7,
            key: "k".into(),
            ours: 1,
            found: "2".into(),
        })
        .context("replaying");
        assert!(fenced.as_ref().err().is_some_and(Error::is_fenced));
    }
}
