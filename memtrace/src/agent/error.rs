//! Why the agent cannot start or go on.

use std::{io, net::SocketAddr};

use super::config::ConfigError;
use crate::{export::push::PprofDirError, session::SessionError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Loading or attaching the kernel programs, or reading /proc.
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("cannot serve metrics on {address}: {source}")]
    Metrics {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    PprofDir(#[from] PprofDirError),
    #[error("cannot start the profile senders: {0}")]
    Push(#[source] io::Error),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}
