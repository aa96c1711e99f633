//! A tracing session: attach to the target, keep the model current, report
//! every interval, and write the final report and outputs at the end.
//!
//! Data flows one way: kernel records → [`crate::intake`] → [`Tracker`]
//! (the model) ← /proc ([`crate::proc`]) → [`crate::report`] and
//! [`crate::export`].

mod error;
mod heap;
mod launch;
mod outputs;
mod process;
mod signals;
mod tracker;

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsString,
    io::Write as _,
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use memtrace_common::Counter;
use tokio::{
    io::unix::AsyncFd,
    time::{interval, sleep_until, MissedTickBehavior},
};

pub use error::SessionError;
pub use tracker::{Ending, Tracker};

use crate::{
    cli::TraceOptions,
    intake::{EventSource, StackTable},
    kernel::{KernelCounters, Maps, Tracer, TracerOptions},
    model::reconcile::FOLIO_BATCH_PAGES,
    proc::{zero_page_pfn, ProcError, ProcessView},
    report::{
        live,
        snapshot::{Lost, Snapshot},
        verdict,
    },
    safe_file::{OutputPolicy, Owner},
};
use outputs::Outputs;
use process::{Process, ReadingRules, Shared};
use signals::{Signals, Steer};
use tracker::Follow;

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
    /// Ctrl-C.
    Interrupt,
    /// SIGTERM or SIGHUP.
    Signal,
}

/// How often the ring buffer is drained between kernel wake-ups.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

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
    // Loading parsed the kernel's whole BTF (tens of MiB of allocations, now
    // freed): give that memory back instead of keeping it in RSS for the
    // whole trace.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
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
    let start_time = ProcessView::new(pid).start_time();
    // With -p, the target's exit is also watched through a pidfd: its exit
    // record can be lost like any other (the start time checked below
    // makes sure it is the process asked for).
    let exit_watch = match &target {
        Target::Pid(_) => launch::watch_exit(pid).ok(),
        Target::Command(_) => None,
    };
    tracer.set_target(pid)?;
    tracer.attach()?;

    let mut processes = BTreeMap::new();
    processes.insert(
        pid,
        Process::new(pid, Tracker::default(), u64::from(launched.is_some())),
    );
    let mut session = Session {
        primary: pid,
        processes,
        follow_forks: options.follow_forks,
        stacks: StackTable::default(),
        kernel_stacks,
        counters,
        decode_errors: 0,
        lost_before: 0,
        last_lost: Lost::default(),
        rules: ReadingRules {
            zero_pfn: zero_page_pfn(),
            lazyfree_slack: FOLIO_BATCH_PAGES
                * crate::model::PAGE_SIZE
                * std::thread::available_parallelism().map_or(1, |cpus| cpus.get() as u64),
        },
        started: Instant::now(),
        heap,
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
            if ProcessView::new(pid).start_time() != start_time || start_time.is_none() {
                return Err(SessionError::ExitedWhileAttaching { pid });
            }
            let rules = session.rules;
            session.primary_mut().seed(rules).map_err(|err| match err {
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
    let mut signals = Signals::new()?;
    let stop = session
        .trace(
            &mut source,
            &mut signals,
            &mut outputs,
            options,
            launched.as_mut(),
            exit_watch.as_ref(),
        )
        .await?;
    signals.stopping(stop == Stop::Interrupt);
    session.drain(&mut source);
    if let Some(heap) = session.heap.as_mut() {
        let target_alive = !matches!(stop, Stop::TargetExited | Stop::TargetOomKilled);
        tokio::select! {
            () = heap.settle(target_alive) => {}
            () = signals.interrupt() => return Err(SessionError::Interrupted),
        }
    }
    session.final_reports(&mut outputs, &signals)?;
    drop(tracer);
    Ok(stop)
}

struct Session {
    primary: u32,
    /// The target and, with `--follow-forks`, the children it forked.
    processes: BTreeMap<u32, Process>,
    follow_forks: bool,
    /// Stacks are shared: the kernel keeps one map for every process.
    stacks: StackTable,
    kernel_stacks: aya::maps::HashMap<aya::maps::MapData, u64, memtrace_common::StackFrames>,
    counters: KernelCounters,
    decode_errors: u64,
    /// Records lost as of the last reconciliation.
    lost_before: u64,
    /// The loss counters as last read.
    last_lost: Lost,
    rules: ReadingRules,
    started: Instant,
    heap: Option<heap::HeapWatch>,
    live_to_stderr: bool,
    quiet: bool,
}

impl Session {
    fn primary(&self) -> &Process {
        &self.processes[&self.primary]
    }

    fn primary_mut(&mut self) -> &mut Process {
        self.processes
            .get_mut(&self.primary)
            .expect("the primary target is never removed")
    }

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
            Target::Pid(pid) => format!("attached to pid {pid} ({})", self.primary().command),
            Target::Command(argv) => format!(
                "started pid {} ({})",
                self.primary,
                argv.iter()
                    .map(|arg| arg.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        };
        eprintln!("memtrace: {what}; Ctrl-C for the final report, SIGUSR1 for a verdict now");
    }

    async fn trace(
        &mut self,
        source: &mut EventSource,
        signals: &mut Signals,
        outputs: &mut Outputs,
        options: &TraceOptions,
        mut child: Option<&mut launch::Launched>,
        exit_watch: Option<&AsyncFd<OwnedFd>>,
    ) -> Result<Stop, SessionError> {
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
                steer = signals.next() => match steer {
                    Steer::Stop { by_interrupt: true } => return Ok(Stop::Interrupt),
                    Steer::Stop { by_interrupt: false } => return Ok(Stop::Signal),
                    Steer::ReportNow => {
                        let snapshot = self.snapshot(self.primary, false);
                        let verdict = verdict::verdict(&snapshot);
                        self.print(&format!("{}\n{verdict}\n", live::render_final(&snapshot)));
                    }
                },
                _ = sleep_until_or_never(deadline) => return Ok(Stop::Duration),
                _ = wait_child(&mut child) => {
                    self.drain(source);
                    return Ok(self.stop_for_ending());
                }
                () = exited(exit_watch) => {
                    self.drain(source);
                    self.primary_mut().tracker.ending.get_or_insert(Ending::Exited);
                    return Ok(self.stop_for_ending());
                }
            }
            if reconcile_soon {
                // Another task changed a target's RSS (reclaim): look now,
                // while it is fresh, rather than at the next tick.
                self.reconcile(source);
                reconcile_soon = false;
            }
            if self.primary().tracker.ending.is_some() {
                return Ok(self.stop_for_ending());
            }
        }
    }

    fn stop_for_ending(&self) -> Stop {
        match self.primary().tracker.ending {
            Some(Ending::OomKilled) => Stop::TargetOomKilled,
            _ => Stop::TargetExited,
        }
    }

    /// Applies every waiting record; returns whether a reconciliation is due
    /// (something else changed a target's RSS).
    fn drain(&mut self, source: &mut EventSource) -> bool {
        let mut reconcile = false;
        let processes = &mut self.processes;
        let stacks = &mut self.stacks;
        let decode_errors = &mut self.decode_errors;
        let follow_forks = self.follow_forks;
        source.drain(|decoded| {
            let Ok(decoded) = decoded else {
                *decode_errors += 1;
                return;
            };
            let Some(process) = processes.get_mut(&decoded.tgid) else {
                return;
            };
            stacks.saw(decoded.event.stack);
            match process.tracker.ingest(&decoded) {
                Follow::Exec => process.exec_happened(),
                Follow::MappedFile { start, end } => process.learn_path(start, end),
                Follow::Reclaim => reconcile = true,
                Follow::ProcessMadvise => process.process_madvise(&decoded),
                Follow::Forked(child) if follow_forks && ProcessView::new(child).is_process() => {
                    let tracker = process.tracker.forked();
                    let parent = process.pid;
                    let child = Process::new(child, tracker, 0);
                    eprintln!(
                        "memtrace: following pid {} ({}), forked by pid {parent}",
                        child.pid, child.command
                    );
                    processes.insert(child.pid, child);
                }
                Follow::Forked(_) | Follow::Nothing | Follow::Ended => {}
            }
        });
        if self.stacks.wants_sync() {
            self.stacks.sync(&mut self.kernel_stacks);
        }
        reconcile
    }

    /// Reads /proc and folds it into every model.
    fn reconcile(&mut self, source: &mut EventSource) {
        self.drain(source);
        let readings: Vec<(u32, _)> = self
            .processes
            .values()
            .filter_map(|process| process.read_proc().map(|reading| (process.pid, reading)))
            .collect();
        for process in self.processes.values_mut() {
            process.tracker.start_noting_busy();
        }
        self.drain(source);
        let lost = self.lost();
        let scan_all = lost.records() > self.lost_before || lost.counters_unreadable;
        self.lost_before = lost.records();
        let rules = self.rules;
        let mut readings: HashMap<u32, _> = readings.into_iter().collect();
        for process in self.processes.values_mut() {
            let busy = process.tracker.take_busy();
            if let Some(reading) = readings.remove(&process.pid) {
                process.reconcile(reading, &busy, scan_all, rules);
            }
        }
    }

    fn interval_report(
        &mut self,
        source: &mut EventSource,
        outputs: &mut Outputs,
    ) -> Result<(), SessionError> {
        self.reconcile(source);
        let pids: Vec<u32> = self.processes.keys().copied().collect();
        for pid in pids {
            let snapshot = self.snapshot(pid, false);
            let primary = pid == self.primary;
            if !self.quiet {
                if primary {
                    self.print(&live::render(&snapshot));
                } else {
                    self.print(&live::render_brief(&snapshot));
                }
            }
            let process = self.processes.get_mut(&pid).expect("listed above");
            let mut namer = process.namer(&self.stacks);
            outputs.interval(&snapshot, primary.then_some(&mut namer))?;
        }
        Ok(())
    }

    /// Records lost so far. A counter the kernel will not give keeps its
    /// last value and the loss is marked unknown, never taken for 0; the
    /// failure is said once.
    fn lost(&mut self) -> Lost {
        let (counters, last) = (&self.counters, self.last_lost);
        let mut failure = None;
        let mut read = |counter, last| {
            counters.read(counter).unwrap_or_else(|err| {
                failure.get_or_insert(err);
                last
            })
        };
        let lost = Lost {
            faults: read(Counter::LostFaults, last.faults),
            syscalls: read(Counter::LostSyscalls, last.syscalls),
            lifecycle: read(Counter::LostLifecycle, last.lifecycle),
            reclaim: read(Counter::LostReclaim, last.reclaim),
            stacks: read(Counter::StacksNotStored, last.stacks),
            undecodable: self.decode_errors,
            counters_unreadable: failure.is_some(),
        };
        if let Some(err) = failure.filter(|_| !last.counters_unreadable) {
            eprintln!("memtrace: {err}: records may be lost without memtrace knowing");
        }
        self.last_lost = lost;
        lost
    }

    fn snapshot(&mut self, pid: u32, is_final: bool) -> Snapshot {
        let lost = self.lost();
        let shared = Shared {
            stacks: &self.stacks,
            lost,
            elapsed: self.started.elapsed(),
            heap: self.heap.as_ref().filter(|_| pid == self.primary),
        };
        let process = self
            .processes
            .get_mut(&pid)
            .expect("snapshots are of known processes");
        process.snapshot(is_final, &shared)
    }

    /// The final report and outputs: the primary target first, then each
    /// child followed. A Ctrl-C meanwhile abandons them (`signals`).
    fn final_reports(
        &mut self,
        outputs: &mut Outputs,
        signals: &Signals,
    ) -> Result<(), SessionError> {
        let mut pids: Vec<u32> = self.processes.keys().copied().collect();
        pids.sort_by_key(|&pid| pid != self.primary);
        let mut primary_snapshot = None;
        for pid in pids {
            signals.check()?;
            let snapshot = self.snapshot(pid, true);
            if pid != self.primary {
                self.print(&format!("\n── child pid {pid} ──\n"));
            }
            self.print(&live::render_final(&snapshot));
            self.print(&format!("\n{}\n", verdict::verdict(&snapshot)));
            for notice in verdict::notices(&snapshot) {
                eprintln!("memtrace: note: {notice}");
            }
            if pid == self.primary {
                primary_snapshot = Some(snapshot);
            } else {
                outputs.interval(&snapshot, None)?;
            }
        }
        let snapshot = primary_snapshot.expect("the primary target is always reported");
        let process = self.processes.get_mut(&self.primary).expect("primary");
        let past = std::mem::take(&mut process.past);
        let mut namer = process.namer(&self.stacks);
        outputs.finish(&snapshot, past.history(), &mut namer, signals)
    }
}

async fn sleep_until_or_never(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Returns once the process `watch` (a pidfd) watches has exited.
async fn exited(watch: Option<&AsyncFd<OwnedFd>>) {
    if let Some(pidfd) = watch {
        if pidfd.readable().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

async fn wait_child(child: &mut Option<&mut launch::Launched>) {
    match child {
        Some(child) => child.exited().await,
        None => std::future::pending().await,
    }
}
