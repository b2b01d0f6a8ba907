//! Errors of the client, with etcd's server error strings classified.

use std::path::PathBuf;
use std::time::Duration;

/// Result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Anything that can go wrong talking to etcd.
///
/// Server-side failures arrive as [`ClientError::Grpc`] carrying the gRPC
/// code and etcd's message; [`ClientError::etcd_error`] maps the message to
/// a typed [`EtcdError`] (the strings are the same in etcd 3.4 and 3.5; the
/// *codes* of a few differ between releases, so classify by
/// [`EtcdError`], not by code).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server (or the transport under it) answered with a gRPC status.
    #[error("{endpoint}: gRPC {code:?}: {message}")]
    Grpc {
        /// Endpoint URL the call went to.
        endpoint: String,
        /// gRPC status code.
        code: tonic::Code,
        /// Status message (etcd's error string, e.g. `etcdserver: permission denied`).
        message: String,
    },
    /// The connection broke or could not be made during a call (TLS
    /// rejection, reset, refused): counts as unavailable.
    #[error("{endpoint}: transport: {message}")]
    Transport {
        /// Endpoint URL the call went to.
        endpoint: String,
        /// The transport error, with its causes.
        message: String,
    },
    /// No connection could be made to any endpoint at start-up.
    #[error("cannot connect to {endpoint}: {message}")]
    Connect {
        /// Endpoint URL (or the list of them).
        endpoint: String,
        /// The transport error, with its causes.
        message: String,
    },
    /// TLS configuration problem (bad PEM, missing CA for an https endpoint, ...).
    #[error("TLS: {message}")]
    Tls {
        /// What is wrong.
        message: String,
    },
    /// A TLS file could not be read.
    #[error("TLS: cannot read {}: {source}", path.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// An endpoint URL is not usable.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The URL as given.
        endpoint: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The configuration has no endpoints.
    #[error("no endpoints configured")]
    NoEndpoints,
    /// A call did not finish within the request timeout.
    #[error("{endpoint}: no answer within {after:?}")]
    Timeout {
        /// Endpoint URL the call went to.
        endpoint: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The auth token returned by etcd cannot be sent as gRPC metadata.
    #[error("auth token returned by etcd is not valid ASCII metadata")]
    BadToken,
    /// The lease keep-alive stream is closed (the server ended it or the
    /// stream task failed).
    #[error("lease keep-alive stream closed: {0}")]
    KeepAliveClosed(String),
    /// Writing what a call streamed (a snapshot) failed locally.
    #[error("{what}: {source}")]
    Io {
        /// What was being written.
        what: String,
        /// The IO error.
        source: std::io::Error,
    },
}

impl ClientError {
    pub(crate) fn from_status(endpoint: &str, status: &tonic::Status) -> Self {
        // Statuses made by tonic from a transport failure carry the cause as
        // their source; etcd's own errors never do.
        if let Some(source) = std::error::Error::source(status)
            && matches!(
                status.code(),
                tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
            )
        {
            return ClientError::Transport {
                endpoint: endpoint.to_owned(),
                message: format!("{}: {}", status.message(), crate::error_chain(source)),
            };
        }
        ClientError::Grpc {
            endpoint: endpoint.to_owned(),
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    /// The gRPC code: the server's for [`ClientError::Grpc`],
    /// `Unavailable` for connection failures, `DeadlineExceeded` for timeouts.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Grpc { code, .. } => Some(*code),
            ClientError::Connect { .. } | ClientError::Transport { .. } => {
                Some(tonic::Code::Unavailable)
            }
            ClientError::Timeout { .. } => Some(tonic::Code::DeadlineExceeded),
            _ => None,
        }
    }

    /// The server's message for [`ClientError::Grpc`].
    pub fn message(&self) -> Option<&str> {
        match self {
            ClientError::Grpc { message, .. } => Some(message),
            _ => None,
        }
    }

    /// etcd's error, recognised from the message (`None` for other errors).
    pub fn etcd_error(&self) -> Option<EtcdError> {
        self.message().and_then(EtcdError::from_message)
    }

    /// Something the caller asked for does not exist: gRPC `NotFound` (lease,
    /// member), or etcd's key / user / role "not found" errors (which etcd
    /// sends as `FailedPrecondition`).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
            || matches!(
                self.etcd_error(),
                Some(
                    EtcdError::KeyNotFound
                        | EtcdError::LeaseNotFound
                        | EtcdError::MemberNotFound
                        | EtcdError::UserNotFound
                        | EtcdError::RoleNotFound
                )
            )
    }

    /// The member (or the path to it) is unavailable: gRPC `Unavailable`
    /// (connection refused, no leader, leader changed, server timeout, ...)
    /// or no connection at all.
    pub fn is_unavailable(&self) -> bool {
        self.code() == Some(tonic::Code::Unavailable)
    }

    /// The call timed out on the client side.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Timeout { .. })
    }

    /// etcd refused the call for lack of permission.
    pub fn is_permission_denied(&self) -> bool {
        self.code() == Some(tonic::Code::PermissionDenied)
            || self.etcd_error() == Some(EtcdError::PermissionDenied)
    }

    /// The auth token is missing, expired or stale: re-authenticating fixes it.
    pub(crate) fn needs_reauth(&self) -> bool {
        matches!(
            self.etcd_error(),
            Some(EtcdError::InvalidAuthToken | EtcdError::AuthOldRevision | EtcdError::UserEmpty)
        )
    }
}

/// etcd server errors, recognised by their message (`etcdserver: ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EtcdError {
    /// `etcdserver: key is not provided`
    EmptyKey,
    /// `etcdserver: key not found`
    KeyNotFound,
    /// `etcdserver: value is provided`
    ValueProvided,
    /// `etcdserver: lease is provided`
    LeaseProvided,
    /// `etcdserver: too many operations in txn request`
    TooManyOps,
    /// `etcdserver: duplicate key given in txn request`
    DuplicateKey,
    /// `etcdserver: mvcc: required revision has been compacted`
    Compacted,
    /// `etcdserver: mvcc: required revision is a future revision`
    FutureRev,
    /// `etcdserver: mvcc: database space exceeded`
    NoSpace,
    /// `etcdserver: requested lease not found`
    LeaseNotFound,
    /// `etcdserver: lease already exists`
    LeaseExists,
    /// `etcdserver: too large lease TTL`
    LeaseTtlTooLarge,
    /// `etcdserver: member ID already exist`
    MemberExists,
    /// `etcdserver: Peer URLs already exists`
    PeerUrlExists,
    /// `etcdserver: re-configuration failed due to not enough started members`
    MemberNotEnoughStarted,
    /// `etcdserver: given member URLs are invalid`
    MemberBadUrls,
    /// `etcdserver: member not found`
    MemberNotFound,
    /// `etcdserver: can only promote a learner member`
    MemberNotLearner,
    /// `etcdserver: can only promote a learner member which is in sync with leader`
    LearnerNotReady,
    /// `etcdserver: too many learner members in cluster`
    TooManyLearners,
    /// `etcdserver: rpc not supported for learner`
    NotSupportedForLearner,
    /// `etcdserver: request is too large`
    RequestTooLarge,
    /// `etcdserver: too many requests`
    TooManyRequests,
    /// `etcdserver: root user does not exist`
    RootUserNotExist,
    /// `etcdserver: root user does not have root role`
    RootRoleNotExist,
    /// `etcdserver: user name already exists`
    UserAlreadyExists,
    /// `etcdserver: user name is empty` (also: a call without a token while auth is on)
    UserEmpty,
    /// `etcdserver: user name not found`
    UserNotFound,
    /// `etcdserver: role name already exists`
    RoleAlreadyExists,
    /// `etcdserver: role name not found`
    RoleNotFound,
    /// `etcdserver: role name is empty`
    RoleEmpty,
    /// `etcdserver: authentication failed, invalid user ID or password`
    AuthFailed,
    /// `etcdserver: permission denied`
    PermissionDenied,
    /// `etcdserver: role is not granted to the user`
    RoleNotGranted,
    /// `etcdserver: permission is not granted to the role`
    PermissionNotGranted,
    /// `etcdserver: authentication is not enabled`
    AuthNotEnabled,
    /// `etcdserver: invalid auth token`
    InvalidAuthToken,
    /// `etcdserver: invalid auth management`
    InvalidAuthMgmt,
    /// `etcdserver: revision of auth store is old`
    AuthOldRevision,
    /// `etcdserver: no leader`
    NoLeader,
    /// `etcdserver: not leader`
    NotLeader,
    /// `etcdserver: leader changed`
    LeaderChanged,
    /// `etcdserver: not capable`
    NotCapable,
    /// `etcdserver: server stopped`
    Stopped,
    /// `etcdserver: request timed out` (and its "possibly due to ..." variants)
    Timeout,
    /// `etcdserver: unhealthy cluster`
    Unhealthy,
    /// `etcdserver: corrupt cluster`
    Corrupt,
    /// `etcdserver: cluster ID mismatch`
    ClusterIdMismatch,
}

/// Message → error, exact strings (etcd 3.4.23 and 3.5.1 use the same).
const MESSAGES: &[(&str, EtcdError)] = &[
    ("etcdserver: key is not provided", EtcdError::EmptyKey),
    ("etcdserver: key not found", EtcdError::KeyNotFound),
    ("etcdserver: value is provided", EtcdError::ValueProvided),
    ("etcdserver: lease is provided", EtcdError::LeaseProvided),
    (
        "etcdserver: too many operations in txn request",
        EtcdError::TooManyOps,
    ),
    (
        "etcdserver: duplicate key given in txn request",
        EtcdError::DuplicateKey,
    ),
    (
        "etcdserver: mvcc: required revision has been compacted",
        EtcdError::Compacted,
    ),
    (
        "etcdserver: mvcc: required revision is a future revision",
        EtcdError::FutureRev,
    ),
    (
        "etcdserver: mvcc: database space exceeded",
        EtcdError::NoSpace,
    ),
    (
        "etcdserver: requested lease not found",
        EtcdError::LeaseNotFound,
    ),
    ("etcdserver: lease already exists", EtcdError::LeaseExists),
    (
        "etcdserver: too large lease TTL",
        EtcdError::LeaseTtlTooLarge,
    ),
    (
        "etcdserver: member ID already exist",
        EtcdError::MemberExists,
    ),
    (
        "etcdserver: Peer URLs already exists",
        EtcdError::PeerUrlExists,
    ),
    (
        "etcdserver: re-configuration failed due to not enough started members",
        EtcdError::MemberNotEnoughStarted,
    ),
    (
        "etcdserver: given member URLs are invalid",
        EtcdError::MemberBadUrls,
    ),
    ("etcdserver: member not found", EtcdError::MemberNotFound),
    (
        "etcdserver: can only promote a learner member which is in sync with leader",
        EtcdError::LearnerNotReady,
    ),
    (
        "etcdserver: can only promote a learner member",
        EtcdError::MemberNotLearner,
    ),
    (
        "etcdserver: too many learner members in cluster",
        EtcdError::TooManyLearners,
    ),
    (
        "etcdserver: rpc not supported for learner",
        EtcdError::NotSupportedForLearner,
    ),
    (
        "etcdserver: request is too large",
        EtcdError::RequestTooLarge,
    ),
    ("etcdserver: too many requests", EtcdError::TooManyRequests),
    (
        "etcdserver: root user does not exist",
        EtcdError::RootUserNotExist,
    ),
    (
        "etcdserver: root user does not have root role",
        EtcdError::RootRoleNotExist,
    ),
    (
        "etcdserver: user name already exists",
        EtcdError::UserAlreadyExists,
    ),
    ("etcdserver: user name is empty", EtcdError::UserEmpty),
    ("etcdserver: user name not found", EtcdError::UserNotFound),
    (
        "etcdserver: role name already exists",
        EtcdError::RoleAlreadyExists,
    ),
    ("etcdserver: role name not found", EtcdError::RoleNotFound),
    ("etcdserver: role name is empty", EtcdError::RoleEmpty),
    (
        "etcdserver: authentication failed, invalid user ID or password",
        EtcdError::AuthFailed,
    ),
    ("etcdserver: permission denied", EtcdError::PermissionDenied),
    (
        "etcdserver: role is not granted to the user",
        EtcdError::RoleNotGranted,
    ),
    (
        "etcdserver: permission is not granted to the role",
        EtcdError::PermissionNotGranted,
    ),
    (
        "etcdserver: authentication is not enabled",
        EtcdError::AuthNotEnabled,
    ),
    (
        "etcdserver: invalid auth token",
        EtcdError::InvalidAuthToken,
    ),
    (
        "etcdserver: invalid auth management",
        EtcdError::InvalidAuthMgmt,
    ),
    (
        "etcdserver: revision of auth store is old",
        EtcdError::AuthOldRevision,
    ),
    ("etcdserver: no leader", EtcdError::NoLeader),
    ("etcdserver: not leader", EtcdError::NotLeader),
    ("etcdserver: leader changed", EtcdError::LeaderChanged),
    ("etcdserver: not capable", EtcdError::NotCapable),
    ("etcdserver: server stopped", EtcdError::Stopped),
    ("etcdserver: request timed out", EtcdError::Timeout),
    ("etcdserver: unhealthy cluster", EtcdError::Unhealthy),
    ("etcdserver: corrupt cluster", EtcdError::Corrupt),
    (
        "etcdserver: cluster ID mismatch",
        EtcdError::ClusterIdMismatch,
    ),
];

impl EtcdError {
    /// Recognises etcd's error message. Exact match first; the only prefix
    /// match is `etcdserver: request timed out...` (etcd appends reasons).
    pub fn from_message(message: &str) -> Option<EtcdError> {
        let m = message.trim();
        if let Some((_, e)) = MESSAGES.iter().find(|(s, _)| *s == m) {
            return Some(*e);
        }
        if m.starts_with("etcdserver: request timed out") {
            return Some(EtcdError::Timeout);
        }
        None
    }

    /// etcd's message for this error.
    pub fn message(self) -> &'static str {
        MESSAGES
            .iter()
            .find(|(_, e)| *e == self)
            .map_or("", |(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for (s, e) in MESSAGES {
            assert_eq!(EtcdError::from_message(s), Some(*e), "{s}");
            assert_eq!(e.message(), *s);
        }
        assert_eq!(
            EtcdError::from_message(
                "etcdserver: request timed out, possibly due to previous leader failure"
            ),
            Some(EtcdError::Timeout)
        );
        assert_eq!(EtcdError::from_message("something else"), None);
    }

    #[test]
    fn helpers() {
        let e = ClientError::Grpc {
            endpoint: "http://x".into(),
            code: tonic::Code::FailedPrecondition,
            message: "etcdserver: user name not found".into(),
        };
        assert!(e.is_not_found());
        assert!(!e.is_unavailable());
        let e = ClientError::Grpc {
            endpoint: "http://x".into(),
            code: tonic::Code::PermissionDenied,
            message: "etcdserver: permission denied".into(),
        };
        assert!(e.is_permission_denied());
        assert_eq!(e.etcd_error(), Some(EtcdError::PermissionDenied));
    }
}
