//! A tracing session: attach to the target, keep the model current, report
//! every interval, and write the final report and outputs at the end.
//!
//! Data flows one way: kernel records → [`crate::intake`] → [`Tracker`]
//! (the model) ← /proc ([`crate::proc`]) → [`crate::report`] and
//! [`crate::export`].

mod heap;
mod launch;
mod outputs;
mod tracker;

use std::{
    ffi::OsString,
    io::Write as _,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use memtrace_common::Counter;
use tokio::{
    signal::unix::{signal, SignalKind},
    time::{interval, sleep_until, MissedTickBehavior},
};

pub use tracker::{Ending, Tracker};

use crate::{
    cli::TraceOptions,
    intake::{EventSource, StackTable},
    kernel::{KernelCounters, KernelError, Maps, Tracer, TracerOptions},
    model::reconcile::{Busy, Moment, Outcome, Reading, FOLIO_BATCH_PAGES},
    output::{OutputError, OutputPolicy, Owner},
    proc::{zero_page_pfn, KernelTotals, ProcError, ProcessView},
    report::{
        attribution::{self, Held, Holder, Namer},
        history::{History, Point, Trend},
        live,
        snapshot::{FunctionMatch, GoHeapSide, Lost, Snapshot, TargetState},
        verdict,
    },
    runtime::RuntimeInfo,
    symbolize::Symbolizer,
};
use outputs::Outputs;
use tracker::Follow;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no process with PID {pid}")]
    NoSuchProcess { pid: u32 },
    #[error("process {pid} exited while memtrace was attaching")]
    ExitedWhileAttaching { pid: u32 },
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("cannot start {command}: {source}")]
    Launch {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{0}")]
    Input(String),
    #[error("interrupted")]
    Interrupted,
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Proc(#[from] ProcError),
}

/// What to trace.
#[derive(Debug, Clone)]
pub enum Target {
    Pid(u32),
    Command(Vec<OsString>),
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    TargetExited,
    TargetOomKilled,
    Duration,
    Signal,
}

/// How often the ring buffer is drained between kernel wake-ups.
const DRAIN_EVERY: Duration = Duration::from_millis(50);
/// Rows in the top-N lists.
const TOP_ROWS: usize = 10;
/// Intervals shown in the live view's chart.
const SPARKLINE_WIDTH: usize = 40;

pub async fn run(target: Target, options: &TraceOptions) -> Result<Stop, SessionError> {
    let owner = Owner::invoking_user();
    let policy = OutputPolicy {
        force: options.force,
        owner,
    };
    let mut outputs = Outputs::open(options, &policy)?;
    // A bad profile file is the user's to fix before anything is loaded.
    let heap = options
        .go_pprof
        .as_deref()
        .map(|text| heap::HeapWatch::open(text, options.go_pprof_remote))
        .transpose()?;

    if let Target::Pid(pid) = target {
        if !ProcessView::new(pid).alive() {
            return Err(SessionError::NoSuchProcess { pid });
        }
    }
    let tracer_options = TracerOptions {
        stack_mode: options.stacks.into(),
        stack_period: options.stack_period,
        follow_forks: options.follow_forks,
        ring_bytes: options.ring_size,
        btf_path: options.btf.clone(),
        ..TracerOptions::default()
    };
    let (mut tracer, maps) = Tracer::load(&tracer_options)?;
    let Maps {
        events,
        stacks: kernel_stacks,
        counters,
    } = maps;

    let mut launched = None;
    let command_name = match &target {
        Target::Command(argv) => argv[0].to_string_lossy().into_owned(),
        Target::Pid(_) => String::new(),
    };
    let pid = match &target {
        Target::Pid(pid) => *pid,
        Target::Command(argv) => {
            let child = launch::launch(argv, owner).map_err(|source| SessionError::Launch {
                command: command_name.clone(),
                source,
            })?;
            let pid = child.pid;
            launched = Some(child);
            pid
        }
    };
    let start_time = process_start_time(pid);
    tracer.set_target(pid)?;
    tracer.attach()?;

    let view = ProcessView::new(pid);
    let mut session = Session {
        pid,
        view,
        tracker: Tracker::default(),
        symbolizer: Symbolizer::new(pid),
        zero_pfn: zero_page_pfn(),
        lazyfree_slack: FOLIO_BATCH_PAGES
            * crate::model::PAGE_SIZE
            * std::thread::available_parallelism().map_or(1, |cpus| cpus.get() as u64),
        counters,
        kernel_stacks,
        lost_before: 0,
        last_kernel: None,
        last_outcome: Outcome::default(),
        started: Instant::now(),
        seq: 0,
        previous_rss: None,
        history: History::default(),
        baseline: None,
        command: String::new(),
        executable: None,
        expected_execs: u64::from(launched.is_some()),
        heap,
        runtime: None,
        live_to_stderr: outputs.json_on_stdout(),
        quiet: options.quiet,
    };

    match launched.as_mut() {
        Some(child) => child.release().map_err(|source| SessionError::Launch {
            command: command_name,
            source,
        })?,
        None => {
            // The PID must still be the process we were asked for.
            if process_start_time(pid) != start_time || start_time.is_none() {
                return Err(SessionError::ExitedWhileAttaching { pid });
            }
            session.command = session.view.comm().unwrap_or_default();
            session.seed().map_err(|err| match err {
                SessionError::Proc(ProcError::Gone { .. }) => {
                    SessionError::ExitedWhileAttaching { pid }
                }
                other => other,
            })?;
        }
    }
    session.announce(&target);

    let mut source = EventSource::new(events).map_err(|source| SessionError::Io {
        what: "cannot watch the ring buffer",
        source,
    })?;
    let stop = session
        .trace(&mut source, &mut outputs, options, launched.as_mut())
        .await?;
    session.drain(&mut source);
    if let Some(heap) = session.heap.as_mut() {
        heap.settle().await;
    }
    let last = session.snapshot(true, stop);
    session.print(&live::render_final(&last));
    let verdict = verdict::verdict(&last, session.tracker.stacks.len());
    session.print(&format!("\n{verdict}\n"));
    for notice in cut_short_notices(&last) {
        eprintln!("memtrace: note: {notice}");
    }
    let history = std::mem::take(&mut session.history);
    outputs.finish(&last, &history, &mut session.namer_parts())?;
    drop(tracer);
    Ok(stop)
}

/// Resident bytes under stacks cut short that are worth a word.
const CUT_SHORT_NOTABLE: f64 = 1.0;

/// One notice per module whose missing frame pointers cut short the stacks
/// of a notable part of RSS.
fn cut_short_notices(snapshot: &Snapshot) -> Vec<String> {
    let mut by_module: Vec<(String, u64, usize)> = Vec::new();
    for row in &snapshot.top_stacks {
        let Some(module) = &row.cut_short_in else {
            continue;
        };
        let bytes = row.in_use + row.lazyfree;
        match by_module.iter_mut().find(|(known, _, _)| known == module) {
            Some(entry) => entry.1 += bytes,
            None => by_module.push((module.clone(), bytes, row.frames.len())),
        }
    }
    by_module
        .into_iter()
        .filter(|(_, bytes, _)| {
            crate::report::format::percent(*bytes, snapshot.rss()) >= CUT_SHORT_NOTABLE
        })
        .map(|(module, bytes, frames)| {
            format!(
                "stacks through {module} stop after {frames} frame{} ({} resident): it looks \
                 built without frame pointers, so their callers are missing; rebuild it with \
                 -fno-omit-frame-pointer for whole stacks",
                if frames == 1 { "" } else { "s" },
                crate::report::format::Bytes(bytes),
            )
        })
        .collect()
}

/// The kernel's start time of `pid` (ticks since boot), which tells a PID
/// reused by another process apart.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) can hold spaces and parentheses: count
    // fields from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

struct Session {
    pid: u32,
    view: ProcessView,
    tracker: Tracker,
    symbolizer: Symbolizer,
    zero_pfn: Option<u64>,
    /// See [`Reading::lazyfree_slack`].
    lazyfree_slack: u64,
    counters: KernelCounters,
    kernel_stacks: aya::maps::HashMap<aya::maps::MapData, u64, memtrace_common::StackFrames>,
    /// Records lost as of the last reconciliation.
    lost_before: u64,
    last_kernel: Option<KernelTotals>,
    last_outcome: Outcome,
    started: Instant,
    seq: u64,
    previous_rss: Option<u64>,
    history: History,
    /// Resident bytes by holder at the first interval, for growth.
    baseline: Option<std::collections::HashMap<Holder, Held>>,
    command: String,
    executable: Option<String>,
    /// Execs that are part of starting the target (1 for `-- CMD`).
    expected_execs: u64,
    heap: Option<heap::HeapWatch>,
    runtime: Option<RuntimeInfo>,
    live_to_stderr: bool,
    quiet: bool,
}

impl Session {
    fn print(&self, text: &str) {
        if self.live_to_stderr {
            eprint!("{text}");
        } else {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    }

    fn announce(&self, target: &Target) {
        let what = match target {
            Target::Pid(pid) => format!("attached to pid {pid} ({})", self.command),
            Target::Command(argv) => format!(
                "started pid {} ({})",
                self.pid,
                argv.iter()
                    .map(|arg| arg.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        };
        eprintln!("memtrace: {what}; Ctrl-C for the final report, SIGUSR1 for a verdict now");
    }

    /// Takes in what was resident before attaching.
    fn seed(&mut self) -> Result<(), SessionError> {
        let vmas = self.view.smaps()?;
        let view = &self.view;
        let reading = Reading {
            vmas: &vmas,
            busy: &Busy::default(),
            moment: Moment::Attach,
            scan_all: false,
            zero_pfn: self.zero_pfn,
            lazyfree_slack: self.lazyfree_slack,
        };
        self.tracker
            .model
            .reconcile(reading, |vma| view.pagemap(vma).ok());
        self.last_kernel = Some(self.view.totals()?);
        Ok(())
    }

    async fn trace(
        &mut self,
        source: &mut EventSource,
        outputs: &mut Outputs,
        options: &TraceOptions,
        mut child: Option<&mut launch::Launched>,
    ) -> Result<Stop, SessionError> {
        let signal_stream = |kind| {
            signal(kind).map_err(|source| SessionError::Io {
                what: "cannot handle signals",
                source,
            })
        };
        let mut interrupt = signal_stream(SignalKind::interrupt())?;
        let mut terminate = signal_stream(SignalKind::terminate())?;
        let mut hangup = signal_stream(SignalKind::hangup())?;
        let mut user1 = signal_stream(SignalKind::user_defined1())?;
        let mut ticks = interval(options.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut drains = interval(DRAIN_EVERY);
        drains.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let deadline = options
            .duration
            .map(|duration| tokio::time::Instant::now() + duration);
        let mut reconcile_soon = false;

        loop {
            tokio::select! {
                ready = source.readable() => {
                    ready.map_err(|source| SessionError::Io { what: "ring buffer", source })?;
                    reconcile_soon |= self.drain(source);
                }
                _ = drains.tick() => reconcile_soon |= self.drain(source),
                _ = ticks.tick() => {
                    if let Some(heap) = self.heap.as_mut() {
                        heap.poll().await;
                    }
                    self.interval_report(source, outputs)?;
                    reconcile_soon = false;
                }
                _ = interrupt.recv() => {
                    exit_on_second_interrupt();
                    return Ok(Stop::Signal);
                }
                _ = terminate.recv() => return Ok(Stop::Signal),
                _ = hangup.recv() => return Ok(Stop::Signal),
                _ = user1.recv() => {
                    let snapshot = self.snapshot(false, Stop::Signal);
                    let verdict = verdict::verdict(&snapshot, self.tracker.stacks.len());
                    self.print(&format!("{}\n{verdict}\n", live::render_final(&snapshot)));
                }
                _ = sleep_until_or_never(deadline) => return Ok(Stop::Duration),
                _ = wait_child(&mut child) => {
                    self.drain(source);
                    return Ok(self.stop_for_ending());
                }
            }
            if reconcile_soon {
                // Another task changed the target's RSS (reclaim): look now,
                // while it is fresh, rather than at the next tick.
                self.reconcile(source);
                reconcile_soon = false;
            }
            if self.tracker.ending.is_some() {
                return Ok(self.stop_for_ending());
            }
        }
    }

    fn stop_for_ending(&self) -> Stop {
        match self.tracker.ending {
            Some(Ending::OomKilled) => Stop::TargetOomKilled,
            _ => Stop::TargetExited,
        }
    }

    /// Applies every waiting record; returns whether a reconciliation is due
    /// (something else changed the target's RSS).
    fn drain(&mut self, source: &mut EventSource) -> bool {
        let mut reconcile = false;
        let pid = self.pid;
        let tracker = &mut self.tracker;
        let view = &self.view;
        let expected_execs = self.expected_execs;
        let runtime = &mut self.runtime;
        source.drain(|decoded| {
            let decoded = match decoded {
                Ok(decoded) if decoded.tgid == pid => decoded,
                Ok(_) => return,
                Err(_) => {
                    tracker.decode_errors += 1;
                    return;
                }
            };
            match tracker.ingest(&decoded) {
                Follow::Exec => {
                    *runtime = None;
                    // The exec that starts a `-- CMD` is expected; any other
                    // replaces what the user was looking at.
                    if tracker.model.counters().execs > expected_execs {
                        eprintln!(
                            "memtrace: pid {pid} called execve: its address space was replaced, \
                             and the model starts afresh (memory released by the exec counts \
                             as \"execve\")"
                        );
                    }
                    // Learn the new mappings now, so the faults that follow
                    // are classified right.
                    if let Ok(vmas) = view.smaps() {
                        tracker
                            .model
                            .sync_extents(&vmas, &Busy::default(), Moment::Interval);
                    }
                }
                Follow::Reclaim => reconcile = true,
                Follow::ProcessMadvise => {
                    if let crate::intake::EventKind::ProcessMadvise(call) = &decoded.event.kind {
                        if pidfd_target(pid, call.pidfd) == Some(pid) {
                            tracker.apply_own_process_madvise(&decoded);
                        }
                    }
                }
                Follow::Nothing | Follow::Ended => {}
            }
        });
        if self.tracker.stacks.wants_sync() {
            self.tracker.stacks.sync(&mut self.kernel_stacks);
        }
        reconcile
    }

    /// Reads /proc and folds it into the model.
    fn reconcile(&mut self, source: &mut EventSource) {
        self.drain(source);
        let (vmas, totals) = match (self.view.smaps(), self.view.totals()) {
            (Ok(vmas), Ok(totals)) => (vmas, totals),
            _ => return,
        };
        self.tracker.start_noting_busy();
        self.drain(source);
        let busy = self.tracker.take_busy();
        let lost = self.lost().records();
        let scan_all = lost > self.lost_before;
        self.lost_before = lost;
        let view = &self.view;
        let reading = Reading {
            vmas: &vmas,
            busy: &busy,
            moment: Moment::Interval,
            scan_all,
            zero_pfn: self.zero_pfn,
            lazyfree_slack: self.lazyfree_slack,
        };
        self.last_outcome = self
            .tracker
            .model
            .reconcile(reading, |vma| view.pagemap(vma).ok());
        self.last_kernel = Some(totals);
    }

    fn interval_report(
        &mut self,
        source: &mut EventSource,
        outputs: &mut Outputs,
    ) -> Result<(), SessionError> {
        self.reconcile(source);
        let snapshot = self.snapshot(false, Stop::Signal);
        if !self.quiet {
            self.print(&live::render(&snapshot));
        }
        outputs.interval(&snapshot, &mut self.namer_parts())?;
        self.previous_rss = Some(snapshot.rss());
        Ok(())
    }

    fn lost(&self) -> Lost {
        let read = |counter| self.counters.read(counter);
        Lost {
            faults: read(Counter::LostFaults),
            syscalls: read(Counter::LostSyscalls),
            lifecycle: read(Counter::LostLifecycle),
            reclaim: read(Counter::LostReclaim),
            pending: read(Counter::LostPending),
            stacks: read(Counter::StacksNotStored),
            undecodable: self.tracker.decode_errors,
        }
    }

    fn snapshot(&mut self, is_final: bool, stop: Stop) -> Snapshot {
        self.seq += 1;
        let alive = self.tracker.ending.is_none() && self.view.alive();
        if is_final && alive {
            // The final numbers come from a fresh look at /proc.
            if let Ok(totals) = self.view.totals() {
                self.last_kernel = Some(totals);
            }
        }
        let state = match (self.tracker.ending, stop) {
            (Some(Ending::OomKilled), _) | (_, Stop::TargetOomKilled) => TargetState::OomKilled,
            (Some(Ending::Exited), _) | (_, Stop::TargetExited) => TargetState::Exited,
            _ if !alive => TargetState::Exited,
            _ => TargetState::Running,
        };
        if alive {
            // Read each time: an exec changes both.
            if let Some(comm) = self.view.comm() {
                self.command = comm;
            }
            if let Some(exe) = self.view.exe() {
                self.executable = Some(exe.to_string_lossy().into_owned());
            }
            if self.runtime.is_none() {
                let mapped: Vec<String> = self
                    .tracker
                    .model
                    .extents()
                    .iter()
                    .filter_map(|(_, extent)| match &extent.backing {
                        crate::model::Backing::File { path, .. } => path.clone(),
                        _ => None,
                    })
                    .collect();
                self.runtime = Some(crate::runtime::detect(self.pid, &mapped));
            }
        }
        let lost = self.lost();
        let mut namer = Namer {
            stacks: &self.tracker.stacks,
            symbolizer: &mut self.symbolizer,
            model: &self.tracker.model,
        };
        let top_stacks = attribution::top_stacks(&mut namer, TOP_ROWS);
        let top_calls = attribution::top_calls(&mut namer, TOP_ROWS);
        let top_faults = attribution::top_faults(&mut namer, TOP_ROWS);
        let go_heap = self.heap.as_ref().and_then(|heap| {
            let profile = heap.latest()?;
            // Where the profile says the memory is: functions holding it
            // themselves.
            let holders: Vec<&memtrace_pprof::FunctionTotal> = profile
                .functions
                .iter()
                .filter(|total| total.flat > 0)
                .take(TOP_ROWS)
                .collect();
            let functions: Vec<&str> = holders
                .iter()
                .map(|total| total.function.as_str())
                .collect();
            let resident = attribution::resident_under(&mut namer, &functions);
            Some(GoHeapSide {
                source: heap.source(),
                inuse_space: profile.inuse_space.max(0) as u64,
                alloc_space: profile.alloc_space.max(0) as u64,
                functions: holders
                    .iter()
                    .zip(resident)
                    .map(|(total, kernel_resident)| FunctionMatch {
                        function: total.function.clone(),
                        pprof_inuse: total.flat.max(0) as u64,
                        kernel_resident,
                    })
                    .collect(),
            })
        });
        let mut growth = match &self.baseline {
            Some(baseline) => attribution::growth(&mut namer, baseline),
            None => Vec::new(),
        };
        let mut growers = attribution::growth_by_responsible(&growth);
        growers.truncate(TOP_ROWS);
        growth.truncate(TOP_ROWS);
        if self.baseline.is_none() {
            self.baseline = Some(attribution::resident_by_holder(&self.tracker.model));
        }
        let cgroup = if alive {
            crate::proc::cgroup_memory(self.pid)
        } else {
            None
        };
        let model = self.tracker.model.totals();
        let kernel = if state == TargetState::Running {
            self.last_kernel
        } else {
            None
        };
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let elapsed = self.started.elapsed();
        let mut snapshot = Snapshot {
            seq: self.seq,
            is_final,
            elapsed,
            unix_ms,
            pid: self.pid,
            command: self.command.clone(),
            executable: self.executable.clone(),
            state,
            kernel,
            model,
            reconcile: self.last_outcome,
            counters: self.tracker.model.counters().clone(),
            approximate: lost.records() > 0,
            lost,
            records: self.tracker.records,
            top_ranges: attribution::top_ranges(&self.tracker.model, TOP_ROWS),
            top_stacks,
            top_calls,
            top_faults,
            growth,
            growers,
            trend: Trend::Unknown,
            sparkline: String::new(),
            cgroup,
            oom_kill: self.tracker.oom_kill,
            runtime: self.runtime.clone(),
            address_space: self
                .tracker
                .model
                .extents()
                .iter()
                .map(|(start, extent)| extent.end - start)
                .sum(),
            go_heap,
            previous_rss: self.previous_rss,
        };
        if !is_final {
            self.history.push(Point::from(&snapshot));
        }
        snapshot.trend = self.history.trend();
        snapshot.sparkline = self.history.sparkline(SPARKLINE_WIDTH);
        snapshot
    }

    fn namer_parts(&mut self) -> NamerParts<'_> {
        NamerParts {
            stacks: &self.tracker.stacks,
            symbolizer: &mut self.symbolizer,
            model: &self.tracker.model,
        }
    }
}

/// What exporters need to name stacks.
pub struct NamerParts<'a> {
    pub stacks: &'a StackTable,
    pub symbolizer: &'a mut Symbolizer,
    pub model: &'a crate::model::AddressSpace,
}

impl NamerParts<'_> {
    pub fn namer(&mut self) -> Namer<'_> {
        Namer {
            stacks: self.stacks,
            symbolizer: self.symbolizer,
            model: self.model,
        }
    }
}

/// Which process a pidfd of `pid` refers to (from its fdinfo).
fn pidfd_target(pid: u32, pidfd: i32) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{pidfd}")).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .and_then(|value| value.trim().parse().ok())
}

/// A second Ctrl-C ends memtrace at once, leaving no partial output behind.
fn exit_on_second_interrupt() {
    tokio::spawn(async {
        if let Ok(mut interrupt) = signal(SignalKind::interrupt()) {
            interrupt.recv().await;
            crate::output::abandon_all();
            eprintln!("memtrace: interrupted; no report written");
            std::process::exit(crate::exit::ExitCode::Interrupted as i32);
        }
    });
}

async fn sleep_until_or_never(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn wait_child(child: &mut Option<&mut launch::Launched>) {
    match child {
        Some(child) => child.exited().await,
        None => std::future::pending().await,
    }
}
