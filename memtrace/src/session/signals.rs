//! The signals that steer a session: Ctrl-C, SIGTERM and SIGHUP stop it
//! with the final report; SIGUSR1 asks for the report now. Once it is
//! stopping, for whatever reason, a Ctrl-C stops it at once, writing
//! nothing.
//!
//! Every Ctrl-C is also counted by a plain signal handler, because writing
//! the final report is synchronous work during which the async streams are
//! not polled: the count is what that work checks between its steps.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::SessionError;

/// What a signal asks of the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steer {
    /// Stop and write the final report; `by_interrupt` for Ctrl-C.
    Stop { by_interrupt: bool },
    /// Print the report and verdict now, and go on.
    ReportNow,
}

pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    user1: Signal,
    /// Every Ctrl-C received, counted as it arrives.
    interrupts: Arc<AtomicUsize>,
    /// Ctrl-Cs up to the moment stopping began.
    before_stopping: Option<usize>,
}

impl Signals {
    pub fn new() -> Result<Self, SessionError> {
        let stream = |kind| {
            signal(kind).map_err(|source| SessionError::Io {
                what: "cannot handle signals",
                source,
            })
        };
        let interrupts = Arc::new(AtomicUsize::new(0));
        let counted = interrupts.clone();
        // SAFETY: the action only increments an atomic, which is
        // async-signal-safe.
        unsafe {
            signal_hook_registry::register(libc::SIGINT, move || {
                counted.fetch_add(1, Ordering::SeqCst);
            })
        }
        .map_err(|source| SessionError::Io {
            what: "cannot handle Ctrl-C",
            source,
        })?;
        Ok(Self {
            interrupt: stream(SignalKind::interrupt())?,
            terminate: stream(SignalKind::terminate())?,
            hangup: stream(SignalKind::hangup())?,
            user1: stream(SignalKind::user_defined1())?,
            interrupts,
            before_stopping: None,
        })
    }

    /// Waits for the next signal.
    pub async fn next(&mut self) -> Steer {
        tokio::select! {
            _ = self.interrupt.recv() => Steer::Stop { by_interrupt: true },
            _ = self.terminate.recv() => Steer::Stop { by_interrupt: false },
            _ = self.hangup.recv() => Steer::Stop { by_interrupt: false },
            _ = self.user1.recv() => Steer::ReportNow,
        }
    }

    /// Stopping begins: from now on a Ctrl-C means "stop at once". A Ctrl-C
    /// that caused the stop is the first one ever received (any Ctrl-C
    /// stops), so later ones count even if they came in quick succession.
    pub fn stopping(&mut self, by_interrupt: bool) {
        self.before_stopping = Some(if by_interrupt {
            1
        } else {
            self.interrupts.load(Ordering::SeqCst)
        });
        eprintln!("memtrace: stopping; press Ctrl-C again to stop at once without a report");
    }

    /// Whether a Ctrl-C came since stopping began.
    pub fn interrupted(&self) -> bool {
        self.before_stopping
            .is_some_and(|before| self.interrupts.load(Ordering::SeqCst) > before)
    }

    /// `Err(Interrupted)` once a Ctrl-C came since stopping began: for the
    /// steps of the final report to check between them.
    pub fn check(&self) -> Result<(), SessionError> {
        if self.interrupted() {
            Err(SessionError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Waits for a Ctrl-C since stopping began.
    pub async fn interrupt(&mut self) {
        while !self.interrupted() {
            self.interrupt.recv().await;
        }
    }
}
