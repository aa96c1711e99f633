//! The files a session writes: JSON lines as it goes, profiles at the end
//! (and every `--pprof-every`), all through [`crate::safe_file`].

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{signals::Signals, SessionError};
use crate::{
    cli::TraceOptions,
    export::{flamegraph, folded, pprof},
    report::{history::History, json, snapshot::Snapshot},
    safe_file::{OutputError, OutputPolicy, PendingFile},
    symbolize::Namer,
};

/// Where JSON lines go.
enum JsonSink {
    Stdout,
    File(PendingFile),
}

pub struct Outputs {
    policy: OutputPolicy,
    json: Option<JsonSink>,
    pprof: Option<PathBuf>,
    folded: Option<PathBuf>,
    flamegraph: Option<PathBuf>,
    history: Option<PathBuf>,
    snapshots: Option<Snapshots>,
}

/// `--pprof-every`: a profile into a directory every period.
struct Snapshots {
    every: Duration,
    dir: PathBuf,
    last: Instant,
    written: Vec<PathBuf>,
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
        let json = match &options.json {
            Some(path) if path == Path::new("-") => Some(JsonSink::Stdout),
            Some(path) => Some(JsonSink::File(policy.create(path)?)),
            None => None,
        };
        let snapshots = match (&options.pprof_every, &options.pprof_dir) {
            (Some(every), Some(dir)) => {
                if !dir.is_dir() {
                    return Err(OutputError::Io {
                        path: dir.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "no such directory",
                        ),
                    }
                    .into());
                }
                Some(Snapshots {
                    every: *every,
                    dir: dir.clone(),
                    last: Instant::now(),
                    written: Vec::new(),
                })
            }
            _ => None,
        };
        Ok(Self {
            policy: policy.clone(),
            json,
            pprof: options.pprof.clone(),
            folded: options.folded.clone(),
            flamegraph: options.flamegraph.clone(),
            history: options.history.clone(),
            snapshots,
        })
    }

    pub fn json_on_stdout(&self) -> bool {
        matches!(self.json, Some(JsonSink::Stdout))
    }

    /// An interval's snapshot: its JSON line, and with `namer` (the primary
    /// target's) a profile when `--pprof-every` is due.
    pub fn interval(
        &mut self,
        snapshot: &Snapshot,
        namer: Option<&mut Namer<'_>>,
    ) -> Result<(), SessionError> {
        self.write_json(snapshot)?;
        let due = self
            .snapshots
            .as_ref()
            .is_some_and(|snapshots| snapshots.last.elapsed() >= snapshots.every);
        match namer {
            Some(namer) if due => self.write_snapshot_profile(snapshot, namer),
            _ => Ok(()),
        }
    }

    /// The final snapshot's JSON and every file written at the end; a
    /// Ctrl-C meanwhile (`signals`) abandons what is not written yet.
    pub fn finish(
        &mut self,
        snapshot: &Snapshot,
        history: &History,
        namer: &mut Namer<'_>,
        signals: &Signals,
    ) -> Result<(), SessionError> {
        self.write_json(snapshot)?;
        if let Some(path) = &self.history {
            signals.check()?;
            self.policy.write_all(path, history.csv().as_bytes())?;
        }
        if self.snapshots.is_some() {
            signals.check()?;
            self.write_snapshot_profile(snapshot, namer)?;
        }
        signals.check()?;
        if let Some(JsonSink::File(file)) = self.json.take() {
            file.commit()?;
        }
        if let Some(path) = &self.pprof {
            signals.check()?;
            let profile = pprof::profile(namer, snapshot.elapsed, snapshot.executable.as_deref());
            self.policy
                .write_all(path, &memtrace_pprof::encode(&profile))?;
        }
        if self.folded.is_some() || self.flamegraph.is_some() {
            signals.check()?;
            let lines = folded::folded(namer);
            if let Some(path) = &self.folded {
                let mut text = lines.join("\n");
                text.push('\n');
                self.policy.write_all(path, text.as_bytes())?;
            }
            if let Some(path) = &self.flamegraph {
                let title = format!(
                    "Resident memory of pid {} ({}) by the stack that faulted it in",
                    snapshot.pid, snapshot.command
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
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{line}")
                    .and_then(|()| stdout.flush())
                    .map_err(|source| SessionError::Io {
                        what: "cannot write JSON to standard output",
                        source,
                    })
            }
            Some(JsonSink::File(file)) => {
                let path = file.path().to_owned();
                writeln!(file, "{line}")
                    .map_err(|source| SessionError::Output(OutputError::Io { path, source }))
            }
            None => Ok(()),
        }
    }

    fn write_snapshot_profile(
        &mut self,
        snapshot: &Snapshot,
        namer: &mut Namer<'_>,
    ) -> Result<(), SessionError> {
        let Some(snapshots) = &mut self.snapshots else {
            return Ok(());
        };
        let profile = pprof::profile(namer, snapshot.elapsed, snapshot.executable.as_deref());
        let name = format!(
            "memtrace-{}-{}-{:04}.pb.gz",
            snapshot.pid, snapshot.unix_ms, snapshot.seq
        );
        let path = snapshots.dir.join(name);
        self.policy
            .write_all(&path, &memtrace_pprof::encode(&profile))?;
        snapshots.written.push(path);
        snapshots.last = Instant::now();
        Ok(())
    }
}
