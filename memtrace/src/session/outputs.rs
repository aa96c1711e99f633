//! The files a session writes: JSON lines as it goes (each in the file as
//! soon as it is written), profiles at the end (and every `--pprof-every`,
//! and on the screen's `p` key), all through [`crate::safe_file`].

use std::{
    io,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{signals::Signals, SessionError};
use crate::{
    cli::TraceOptions,
    export::{flamegraph, folded, pprof, Part},
    report::{history::History, json, snapshot::Snapshot},
    safe_file::{OutputError, OutputPolicy, StreamFile},
};

/// Where JSON lines go.
enum JsonSink {
    Stdout,
    File(StreamFile),
}

pub struct Outputs {
    policy: OutputPolicy,
    json: Option<JsonSink>,
    pprof: Option<PathBuf>,
    folded: Option<PathBuf>,
    flamegraph: Option<PathBuf>,
    history: Option<PathBuf>,
    /// `--pprof-dir`, made sure to exist.
    pprof_dir: Option<PathBuf>,
    snapshots: Option<Snapshots>,
}

/// `--pprof-every`: a profile into `--pprof-dir` every period.
struct Snapshots {
    every: Duration,
    last: Instant,
}

impl Outputs {
    /// Checks every output path before tracing starts, so a typo fails at
    /// once rather than after an hour of tracing.
    pub fn open(options: &TraceOptions, policy: &OutputPolicy) -> Result<Self, SessionError> {
        for path in [
            &options.pprof,
            &options.folded,
            &options.flamegraph,
            &options.history,
        ]
        .into_iter()
        .flatten()
        {
            policy.check(path)?;
        }
        if let Some(dir) = &options.pprof_dir {
            policy.ensure_dir(dir)?;
        }
        let json = match &options.json {
            Some(path) if path == Path::new("-") => Some(JsonSink::Stdout),
            Some(path) => Some(JsonSink::File(policy.stream(path)?)),
            None => None,
        };
        let snapshots = options.pprof_every.map(|every| Snapshots {
            every,
            last: Instant::now(),
        });
        Ok(Self {
            policy: policy.clone(),
            json,
            pprof: options.pprof.clone(),
            folded: options.folded.clone(),
            flamegraph: options.flamegraph.clone(),
            history: options.history.clone(),
            pprof_dir: options.pprof_dir.clone(),
            snapshots,
        })
    }

    /// Where profiles written along the way go: `--pprof-dir`, else next to
    /// `--pprof`, else the current directory.
    pub fn profiles_dir(&self) -> PathBuf {
        match (&self.pprof_dir, &self.pprof) {
            (Some(dir), _) => dir.clone(),
            (None, Some(file)) => crate::safe_file::parent(file).to_owned(),
            (None, None) => PathBuf::from("."),
        }
    }

    pub fn json_on_stdout(&self) -> bool {
        matches!(self.json, Some(JsonSink::Stdout))
    }

    /// Whether a `--pprof-every` profile is due with this interval.
    pub fn profile_due(&self) -> bool {
        self.snapshots
            .as_ref()
            .is_some_and(|snapshots| snapshots.last.elapsed() >= snapshots.every)
    }

    /// An interval's snapshot: its JSON line, and with `parts` (what the
    /// snapshot is of) a profile when `--pprof-every` is due.
    pub fn interval(
        &mut self,
        snapshot: &Snapshot,
        parts: Option<&mut [Part<'_>]>,
    ) -> Result<(), SessionError> {
        self.write_json(snapshot)?;
        match parts {
            Some(parts) if self.profile_due() => self.write_snapshot_profile(snapshot, parts),
            _ => Ok(()),
        }
    }

    /// The final snapshot's JSON and every file written at the end; a
    /// Ctrl-C meanwhile (`signals`) abandons what is not written yet.
    pub fn finish(
        &mut self,
        snapshot: &Snapshot,
        history: &History,
        parts: &mut [Part<'_>],
        signals: &Signals,
    ) -> Result<(), SessionError> {
        self.write_json(snapshot)?;
        if let Some(path) = &self.history {
            signals.check()?;
            self.policy.write_all(path, history.csv().as_bytes())?;
        }
        if self.snapshots.is_some() {
            signals.check()?;
            self.write_snapshot_profile(snapshot, parts)?;
        }
        signals.check()?;
        if let Some(JsonSink::File(file)) = self.json.take() {
            file.finish()?;
        }
        if let Some(path) = &self.pprof {
            signals.check()?;
            self.write_profile(path, snapshot.elapsed, parts)?;
        }
        if self.folded.is_some() || self.flamegraph.is_some() {
            signals.check()?;
            let lines = folded::folded(parts);
            if let Some(path) = &self.folded {
                let mut text = lines.join("\n");
                text.push('\n');
                self.policy.write_all(path, text.as_bytes())?;
            }
            if let Some(path) = &self.flamegraph {
                let title = format!(
                    "Resident memory of {} by the stack that faulted it in",
                    snapshot.subject()
                );
                let svg = flamegraph::svg(&lines, &title).map_err(|detail| OutputError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(detail),
                })?;
                self.policy.write_all(path, &svg)?;
            }
        }
        Ok(())
    }

    fn write_json(&mut self, snapshot: &Snapshot) -> Result<(), SessionError> {
        let line = json::to_json(snapshot).to_string();
        match &mut self.json {
            Some(JsonSink::Stdout) => {
                write_stdout(format!("{line}\n").as_bytes()).map_err(|source| SessionError::Io {
                    what: "cannot write JSON to standard output",
                    source,
                })
            }
            Some(JsonSink::File(file)) => Ok(file.write_line(&line)?),
            None => Ok(()),
        }
    }

    fn write_snapshot_profile(
        &mut self,
        snapshot: &Snapshot,
        parts: &mut [Part<'_>],
    ) -> Result<(), SessionError> {
        let Some(snapshots) = &mut self.snapshots else {
            return Ok(());
        };
        snapshots.last = Instant::now();
        let name = format!(
            "memtrace-{}-{}-{:04}.pb.gz",
            snapshot.file_stem(),
            snapshot.unix_ms,
            snapshot.seq
        );
        let path = self.profiles_dir().join(name);
        self.write_profile(&path, snapshot.elapsed, parts)
    }

    /// A profile now, into [`Self::profiles_dir`], named after `snapshot`'s
    /// process and the time; returns its path.
    pub fn profile_now(
        &mut self,
        snapshot: &Snapshot,
        elapsed: Duration,
        parts: &mut [Part<'_>],
    ) -> Result<PathBuf, SessionError> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        let path = self.profiles_dir().join(format!(
            "memtrace-{}-{now_ms}-now.pb.gz",
            snapshot.file_stem()
        ));
        self.write_profile(&path, elapsed, parts)?;
        Ok(path)
    }

    /// A process's profile as it ended (an OOM kill in a traced cgroup),
    /// into [`Self::profiles_dir`]; returns its path.
    pub fn post_mortem(
        &mut self,
        snapshot: &Snapshot,
        parts: &mut [Part<'_>],
    ) -> Result<PathBuf, SessionError> {
        let path = self.profiles_dir().join(format!(
            "memtrace-{}-{}-oom-killed.pb.gz",
            snapshot.file_stem(),
            snapshot.unix_ms
        ));
        self.write_profile(&path, snapshot.elapsed, parts)?;
        Ok(path)
    }

    fn write_profile(
        &self,
        path: &Path,
        elapsed: Duration,
        parts: &mut [Part<'_>],
    ) -> Result<(), SessionError> {
        let profile = pprof::profile(parts, elapsed);
        Ok(self
            .policy
            .write_all(path, &memtrace_pprof::encode(&profile))?)
    }
}

/// Writes `bytes` to standard output whole, waiting while the pipe is full.
/// The traced command shares standard output and may have made it
/// non-blocking (Node does), which makes a plain write fail with EAGAIN.
fn write_stdout(mut bytes: &[u8]) -> io::Result<()> {
    // Whatever std has buffered goes first.
    std::io::stdout().flush()?;
    while !bytes.is_empty() {
        // SAFETY: writing from a live buffer of the given length.
        let written =
            unsafe { libc::write(libc::STDOUT_FILENO, bytes.as_ptr().cast(), bytes.len()) };
        if written >= 0 {
            bytes = &bytes[written as usize..];
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                let mut ready = libc::pollfd {
                    fd: libc::STDOUT_FILENO,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; waits until the pipe has room.
                unsafe { libc::poll(&mut ready, 1, -1) };
            }
            _ => return Err(err),
        }
    }
    Ok(())
}
