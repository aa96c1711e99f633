//! `--go-pprof`: the program's own heap profile, fetched beside the trace.
//!
//! A saved file is read once, before tracing: a corrupt one is the user's
//! mistake and ends memtrace (exit code 10). An endpoint is fetched off the
//! async thread, one fetch at a time: at the first interval, then every
//! [`FETCH_EVERY`], and once more for the final report if the program still
//! runs. Not every interval: each fetch makes the program build and gzip a
//! profile, megabytes of allocation that memtrace itself causes. When a
//! fetch fails, the failure is said once and tracing goes on with the last
//! profile it had.
//!
//! While recording, every profile taken goes into the capture as it came,
//! at the point of the trace it was taken at; a report takes them there.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::record::Recording;
use crate::gopprof::{decode, fetch, FetchLimits, GoPprofError, HeapProfile, ProfileSource};

/// A profile as fetched, and decoded.
type Fetched = (Vec<u8>, HeapProfile);

/// How often an endpoint is fetched while tracing.
pub const FETCH_EVERY: Duration = Duration::from_secs(10);

/// At the end, a profile fetched longer ago than this is fetched again.
const FRESH_FOR_THE_REPORT: Duration = Duration::from_secs(1);

pub struct HeapWatch {
    source: ProfileSource,
    limits: FetchLimits,
    latest: Option<HeapProfile>,
    /// The file's profile, read before recording began: recorded with it.
    unrecorded: Option<Vec<u8>>,
    in_flight: Option<JoinHandle<Result<Fetched, GoPprofError>>>,
    /// When the last fetch started.
    last_started: Option<Instant>,
    /// The last failure said, so a failing endpoint is not said every
    /// interval.
    last_error: Option<String>,
    recording: Option<Recording>,
}

impl HeapWatch {
    /// Parses `--go-pprof`; a file is read now.
    pub fn open(text: &str, allow_remote: bool) -> Result<Self, GoPprofError> {
        let source = ProfileSource::parse(text, allow_remote)?;
        let limits = FetchLimits::default();
        let (unrecorded, latest) = match &source {
            ProfileSource::File(_) => {
                let (bytes, profile) = fetch(&source, &limits)?;
                (Some(bytes), Some(profile))
            }
            ProfileSource::Url(_) => (None, None),
        };
        Ok(Self {
            source,
            limits,
            latest,
            unrecorded,
            in_flight: None,
            last_started: None,
            last_error: None,
            recording: None,
        })
    }

    /// The heap profiles of a capture played back: `source` as the
    /// recording named it; they come from the capture (see
    /// [`HeapWatch::take_recorded`]), never from `source`.
    pub fn played(source: &str) -> Result<Self, GoPprofError> {
        Ok(Self {
            source: ProfileSource::parse(source, true)?,
            limits: FetchLimits::default(),
            latest: None,
            unrecorded: None,
            in_flight: None,
            last_started: None,
            last_error: None,
            recording: None,
        })
    }

    /// Records every profile taken from now on (and the file's, read
    /// before).
    pub fn record_to(&mut self, recording: Recording) {
        if let Some(bytes) = self.unrecorded.take() {
            recording.borrow_mut().heap_profile(&bytes);
        }
        self.recording = Some(recording);
    }

    /// A recorded profile, taken where the recording took it. One that
    /// does not decode is left out, as a fetch that failed would have been.
    pub fn take_recorded(&mut self, bytes: &[u8]) {
        if let Ok(profile) = decode(bytes, &self.source) {
            self.latest = Some(profile);
        }
    }

    fn take(&mut self, (bytes, profile): Fetched) {
        if let Some(recording) = &self.recording {
            recording.borrow_mut().heap_profile(&bytes);
        }
        self.latest = Some(profile);
    }

    /// Where the profile comes from, for the report.
    pub fn source(&self) -> String {
        self.source.to_string()
    }

    /// The newest profile had so far.
    pub fn latest(&self) -> Option<&HeapProfile> {
        self.latest.as_ref()
    }

    /// Takes in a finished fetch and starts the next when one is due
    /// (endpoints only).
    pub async fn poll(&mut self) {
        if let Some(fetching) = &self.in_flight {
            if !fetching.is_finished() {
                return;
            }
        }
        if let Some(fetching) = self.in_flight.take() {
            match fetching.await {
                Ok(Ok(fetched)) => {
                    if self.last_error.take().is_some() {
                        eprintln!("memtrace: --go-pprof {}: fetched again", self.source);
                    }
                    self.take(fetched);
                }
                Ok(Err(err)) => self.failed(err.to_string()),
                Err(err) => self.failed(format!("{}: the fetch failed: {err}", self.source)),
            }
        }
        if fetch_due(self.last_started, Instant::now(), FETCH_EVERY) {
            self.start_fetch();
        }
    }

    fn start_fetch(&mut self) {
        if matches!(self.source, ProfileSource::Url(_)) {
            let (source, limits) = (self.source.clone(), self.limits);
            self.last_started = Some(Instant::now());
            self.in_flight = Some(tokio::task::spawn_blocking(move || fetch(&source, &limits)));
        }
    }

    fn failed(&mut self, message: String) {
        if self.last_error.as_ref() != Some(&message) {
            eprintln!("memtrace: --go-pprof: {message}; tracing goes on");
            self.last_error = Some(message);
        }
    }

    /// Waits for a fetch still running, so the final report has it; while
    /// the program still runs (`target_alive`), fetches a fresh profile
    /// first if the newest is not.
    pub async fn settle(&mut self, target_alive: bool) {
        if self.in_flight.is_none()
            && target_alive
            && fetch_due(self.last_started, Instant::now(), FRESH_FOR_THE_REPORT)
        {
            self.start_fetch();
        }
        if let Some(fetching) = self.in_flight.take() {
            if let Ok(Ok(fetched)) = fetching.await {
                self.take(fetched);
            }
        }
    }
}

/// Whether a fetch is due, the last having started at `last`.
fn fetch_due(last: Option<Instant>, now: Instant, every: Duration) -> bool {
    last.is_none_or(|last| now.saturating_duration_since(last) >= every)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_fetched_first_then_every_ten_seconds_not_every_interval() {
        let start = Instant::now();
        assert!(fetch_due(None, start, FETCH_EVERY));
        for interval in 1..10 {
            let now = start + Duration::from_secs(interval);
            assert!(!fetch_due(Some(start), now, FETCH_EVERY), "{interval} s");
        }
        assert!(fetch_due(Some(start), start + FETCH_EVERY, FETCH_EVERY));
    }
}
