//! `--go-pprof`: the program's own heap profile, fetched beside the trace.
//!
//! A saved file is read once, before tracing: a corrupt one is the user's
//! mistake and ends memtrace (exit code 10). An endpoint is fetched every
//! interval off the async thread, one fetch at a time; when it fails, the
//! failure is said once and tracing goes on with the last profile it had.

use tokio::task::JoinHandle;

use crate::gopprof::{fetch, FetchLimits, GoPprofError, HeapProfile, ProfileSource};

pub struct HeapWatch {
    source: ProfileSource,
    limits: FetchLimits,
    latest: Option<HeapProfile>,
    in_flight: Option<JoinHandle<Result<HeapProfile, GoPprofError>>>,
    /// The last failure said, so a failing endpoint is not said every
    /// interval.
    last_error: Option<String>,
}

impl HeapWatch {
    /// Parses `--go-pprof`; a file is read now.
    pub fn open(text: &str, allow_remote: bool) -> Result<Self, GoPprofError> {
        let source = ProfileSource::parse(text, allow_remote)?;
        let limits = FetchLimits::default();
        let latest = match &source {
            ProfileSource::File(_) => Some(fetch(&source, &limits)?),
            ProfileSource::Url(_) => None,
        };
        Ok(Self {
            source,
            limits,
            latest,
            in_flight: None,
            last_error: None,
        })
    }

    /// Where the profile comes from, for the report.
    pub fn source(&self) -> String {
        self.source.to_string()
    }

    /// The newest profile had so far.
    pub fn latest(&self) -> Option<&HeapProfile> {
        self.latest.as_ref()
    }

    /// Takes in a finished fetch and starts the next (endpoints only).
    pub async fn poll(&mut self) {
        if let Some(fetching) = &self.in_flight {
            if !fetching.is_finished() {
                return;
            }
        }
        if let Some(fetching) = self.in_flight.take() {
            match fetching.await {
                Ok(Ok(profile)) => {
                    if self.last_error.take().is_some() {
                        eprintln!("memtrace: --go-pprof {}: fetched again", self.source);
                    }
                    self.latest = Some(profile);
                }
                Ok(Err(err)) => self.failed(err.to_string()),
                Err(err) => self.failed(format!("{}: the fetch failed: {err}", self.source)),
            }
        }
        if matches!(self.source, ProfileSource::Url(_)) {
            let (source, limits) = (self.source.clone(), self.limits);
            self.in_flight = Some(tokio::task::spawn_blocking(move || fetch(&source, &limits)));
        }
    }

    fn failed(&mut self, message: String) {
        if self.last_error.as_ref() != Some(&message) {
            eprintln!("memtrace: --go-pprof: {message}; tracing goes on");
            self.last_error = Some(message);
        }
    }

    /// Waits for a fetch still running, so the final report has it.
    pub async fn settle(&mut self) {
        if let Some(fetching) = self.in_flight.take() {
            if let Ok(Ok(profile)) = fetching.await {
                self.latest = Some(profile);
            }
        }
    }
}
