//! Why a Go heap profile could not be had.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use memtrace_pprof::DecodeError;

use super::{PprofUrl, ProfileSource};

/// Why [`ProfileSource::parse`] or [`fetch`](super::fetch) failed. Each
/// message is one line naming the URL or file.
#[derive(Debug, thiserror::Error)]
pub enum GoPprofError {
    #[error("{url}: https is not supported for Go heap profiles; use http://")]
    HttpsUnsupported { url: String },
    #[error("{text}: unsupported URL scheme; give an http:// URL or a file path")]
    UnsupportedScheme { text: String },
    #[error("{url}: invalid URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "{url}: refusing to fetch a heap profile from {host}, which is not a loopback address, \
         unless remote endpoints are allowed"
    )]
    RemoteRefused { url: String, host: String },
    #[error("{url}: connection refused; is the program serving net/http/pprof there?")]
    ConnectionRefused { url: PprofUrl },
    #[error("{url}: unreachable: {reason}")]
    Unreachable { url: PprofUrl, reason: String },
    #[error("{url}: timed out connecting after {after:?}")]
    ConnectTimedOut { url: PprofUrl, after: Duration },
    #[error("{url}: timed out waiting {after:?} for the heap profile")]
    ReadTimedOut { url: PprofUrl, after: Duration },
    #[error("{url}: HTTP status {status}, expected 200")]
    HttpStatus { url: PprofUrl, status: u16 },
    #[error("{url}: fetching the heap profile failed: {reason}")]
    Failed { url: PprofUrl, reason: String },
    #[error("{from}: heap profile larger than the limit of {limit} bytes")]
    TooLarge { from: ProfileSource, limit: u64 },
    #[error("{from}: {error}")]
    NotAProfile {
        from: ProfileSource,
        #[source]
        error: DecodeError,
    },
    #[error("{from}: not a Go heap profile (it has no inuse_space sample type)")]
    NotAHeapProfile { from: ProfileSource },
    #[error("{}: cannot read the heap profile: {source}", path.display())]
    FileUnreadable { path: PathBuf, source: io::Error },
}

impl GoPprofError {
    /// Whether the user's input is at fault: a bad URL or a bad file, known
    /// at startup (memtrace's exit code 10). Otherwise a live endpoint
    /// failed, which is reported while tracing goes on.
    pub fn is_input_error(&self) -> bool {
        match self {
            Self::HttpsUnsupported { .. }
            | Self::UnsupportedScheme { .. }
            | Self::BadUrl { .. }
            | Self::RemoteRefused { .. }
            | Self::FileUnreadable { .. } => true,
            Self::TooLarge { from, .. }
            | Self::NotAProfile { from, .. }
            | Self::NotAHeapProfile { from } => matches!(from, ProfileSource::File(_)),
            Self::ConnectionRefused { .. }
            | Self::Unreachable { .. }
            | Self::ConnectTimedOut { .. }
            | Self::ReadTimedOut { .. }
            | Self::HttpStatus { .. }
            | Self::Failed { .. } => false,
        }
    }
}
