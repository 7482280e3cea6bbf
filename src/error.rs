//! One error type for the filesystem core, with its errno and log level decided in one place.
//!
//! Whether an MDS failure is transient (worth a retry, and worth serving a stale value over) is
//! decided where the error arises, in `mds.rs`; everything else just asks [`Error::is_transient`].
//! Messages never carry token or identity bytes: they name paths and statuses, never bodies.

use log::Level;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The MDS answered 404, or the name is not in its parent's listing.
    #[error("not found")]
    NotFound,
    /// A file name we refuse before anything is sent to the MDS.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// The MDS refused the request's parameters (HTTP 400).
    #[error("{path}: the metadata server rejected the request (HTTP 400)")]
    BadRequest { path: String },
    /// The MDS refused access (HTTP 403), e.g. a disabled endpoint.
    #[error("{path}: the metadata server denied access (HTTP 403)")]
    Forbidden { path: String },
    /// Refused by this mount's options or owner, before anything is sent (EACCES).
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// `rmdir` of a guest-attribute namespace that still has keys.
    #[error("directory not empty")]
    NotEmpty,
    /// A write, or another operation this filesystem never allows.
    #[error("read-only file system")]
    ReadOnly,
    /// A change the mirror cannot make to a writable file (`chmod`, `chown`): EPERM.
    #[error("not permitted: {0}")]
    Immutable(String),
    /// A value larger than `max_value`.
    #[error("{path}: value of {size} bytes exceeds max_value ({limit} bytes)")]
    TooBig { path: String, size: u64, limit: u64 },
    /// The MDS could not be reached, or kept failing, within `timeout`. Transient.
    #[error("{path}: metadata server unavailable: {reason}")]
    Unavailable { path: String, reason: String },
    /// The endpoint does not behave like a metadata server (no `Metadata-Flavor: Google`,
    /// undecodable token JSON, unexpected status). Permanent: never retried, never served.
    #[error("{path}: misconfigured endpoint? {reason}")]
    Misconfigured { path: String, reason: String },
    /// The cached token expired and no fresh one could be fetched.
    #[error("{path}: token expired and no fresh token is available")]
    TokenExpired { path: String },
    /// An inode or file handle the kernel should not have sent (stale after forget).
    #[error("stale inode or handle")]
    Stale,
    /// The caller was interrupted (a signal) while it waited: its share of the wait is dropped.
    #[error("interrupted")]
    Interrupted,
    /// A bound on what callers may hold at once was reached (waiting reads): try again later.
    #[error("busy: {0}")]
    Busy(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The errno a FUSE reply carries for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::InvalidName(_) | Error::BadRequest { .. } => libc::EINVAL,
            Error::Forbidden { .. } | Error::NotPermitted(_) => libc::EACCES,
            Error::ReadOnly => libc::EROFS,
            Error::Immutable(_) => libc::EPERM,
            Error::NotEmpty => libc::ENOTEMPTY,
            Error::TooBig { .. } => libc::EFBIG,
            Error::Unavailable { .. }
            | Error::Misconfigured { .. }
            | Error::TokenExpired { .. } => libc::EIO,
            Error::Stale => libc::ESTALE,
            Error::Interrupted => libc::EINTR,
            Error::Busy(_) => libc::EAGAIN,
        }
    }

    /// How loudly to log it: expected outcomes at debug, outages at warn, a wrong endpoint at error.
    pub fn level(&self) -> Level {
        match self {
            Error::NotFound
            | Error::InvalidName(_)
            | Error::NotPermitted(_)
            | Error::NotEmpty
            | Error::ReadOnly
            | Error::Immutable(_)
            | Error::Stale
            | Error::Interrupted => Level::Debug,
            Error::BadRequest { .. }
            | Error::Forbidden { .. }
            | Error::TooBig { .. }
            | Error::Busy(_) => Level::Info,
            Error::Unavailable { .. } | Error::TokenExpired { .. } => Level::Warn,
            Error::Misconfigured { .. } => Level::Error,
        }
    }

    /// Worth a retry, and worth answering with the last good value.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// The error's chain of causes in one line: reqwest's own message is often just
/// "error sending request".
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(Error::NotFound.errno(), libc::ENOENT);
        assert_eq!(Error::InvalidName("..".into()).errno(), libc::EINVAL);
        assert_eq!(Error::ReadOnly.errno(), libc::EROFS);
        let unavailable = Error::Unavailable { path: "p".into(), reason: "r".into() };
        assert_eq!(unavailable.errno(), libc::EIO);
        assert!(unavailable.is_transient());
        assert!(!Error::Misconfigured { path: "p".into(), reason: "r".into() }.is_transient());
        assert_eq!(Error::TooBig { path: "p".into(), size: 2, limit: 1 }.errno(), libc::EFBIG);
    }
}
