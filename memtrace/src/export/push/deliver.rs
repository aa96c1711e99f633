//! What a destination does with a window, and how it says it failed.

use std::time::Duration;

use super::window::Window;

/// Somewhere windows go: a profiling server or a directory.
pub trait Deliver: Send {
    /// A short name for metrics and messages, such as `pyroscope`.
    fn name(&self) -> &str;

    /// Delivers one window, within a bounded time.
    ///
    /// # Errors
    ///
    /// A [`Failure`] saying whether trying again may help.
    fn deliver(&mut self, window: &Window) -> Result<(), Failure>;

    /// Windows older than this are refused by the destination (a server's
    /// ingestion window), so are not worth sending; None if any age goes.
    fn max_age(&self) -> Option<Duration>;
}

/// A delivery that did not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Whether the same window may get through later.
    pub retry: bool,
    /// What went wrong, for the log.
    pub message: String,
    /// How long the server asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure that may pass (the network, an overloaded server).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            retry: true,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A failure that will repeat (a refused profile, bad credentials).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retry: false,
            message: message.into(),
            retry_after: None,
        }
    }
}
