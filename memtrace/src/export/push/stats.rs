//! What happened to the windows of one destination: sent, retried, and
//! dropped by reason, for the agent's metrics and logs.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex,
};

/// Why a window was never delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The queue was full: the oldest window made room for a new one.
    QueueFull,
    /// The destination refused it for good (an HTTP 4xx, or a file that
    /// could not be written).
    Rejected,
    /// Every retry failed.
    RetriesExhausted,
    /// It grew too old for the server to accept before it could be sent.
    Expired,
    /// The agent stopped before it could be sent.
    Shutdown,
}

impl DropReason {
    pub const ALL: [Self; 5] = [
        Self::QueueFull,
        Self::Rejected,
        Self::RetriesExhausted,
        Self::Expired,
        Self::Shutdown,
    ];

    /// The reason as a metric label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Rejected => "rejected",
            Self::RetriesExhausted => "retries_exhausted",
            Self::Expired => "expired",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Live counters of one destination, shared by its sender thread and the
/// code that reads them.
#[derive(Debug, Default)]
pub struct DestinationStats {
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    retries: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    last_error: Mutex<Option<String>>,
}

impl DestinationStats {
    pub(super) fn sent(&self, bytes: usize) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(super) fn retried(&self, error: &str) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.error(error);
    }

    pub(super) fn dropped(&self, reason: DropReason, error: Option<&str>) {
        self.dropped[reason as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(error) = error {
            self.error(error);
        }
    }

    fn error(&self, error: &str) {
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some(error.to_owned());
    }

    /// The counts so far, for `destination`.
    pub fn counts(&self, destination: &str) -> DestinationCounts {
        DestinationCounts {
            destination: destination.to_owned(),
            sent: self.sent.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dropped: DropReason::ALL.map(|reason| {
                (
                    reason,
                    self.dropped[reason as usize].load(Ordering::Relaxed),
                )
            }),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// A destination's counts at one moment (plain data, for metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationCounts {
    /// The destination's name, as configured (e.g. `pyroscope`).
    pub destination: String,
    /// Windows delivered.
    pub sent: u64,
    /// Bytes of profile delivered.
    pub sent_bytes: u64,
    /// Attempts after a failure.
    pub retries: u64,
    /// Windows dropped, by reason (every reason, zero or not).
    pub dropped: [(DropReason, u64); DropReason::ALL.len()],
    /// The last failure, for the log.
    pub last_error: Option<String>,
}

impl DestinationCounts {
    /// Windows dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].1
    }

    /// Windows dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, count)| count).sum()
    }
}
