//! A tracing session: attach to the target, keep the model current, report
//! every interval, and write the final report and outputs at the end.
//!
//! Data flows one way: kernel records → [`crate::intake`] → [`Tracker`]
//! (the model) ← /proc ([`crate::proc`]) → [`crate::report`] and
//! [`crate::export`].

mod error;
mod exits;
mod heap;
mod launch;
mod outputs;
mod process;
mod signals;
mod stacks;
mod tracker;

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsString,
    io::Write as _,
    time::{Duration, Instant},
};

use memtrace_common::Counter;
use tokio::time::{interval, sleep_until, MissedTickBehavior};

pub use error::SessionError;
pub use tracker::{Ending, Tracker};

use crate::{
    cli::{Hook, TraceOptions},
    intake::{EventKind, EventSource},
    kernel::{maps_memory, KernelCounters, Maps, SyscallHook, Targets, Tracer, TracerOptions},
    model::reconcile::FOLIO_BATCH_PAGES,
    proc::{zero_page_pfn, ProcError, ProcessView},
    report::{
        format::wrap,
        live,
        screen::{self, Key, Screen},
        snapshot::{Footprint, Lost, Snapshot},
        verdict,
    },
    safe_file::{OutputPolicy, Owner},
    symbolize::{DebugSources, Debuginfod},
    unwind,
};
use exits::Exits;
use outputs::Outputs;
use process::{Process, ReadingRules, Shared};
use signals::{Signals, Steer};
use stacks::Stacks;
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
    /// `q` (or Ctrl-C) on the live screen.
    Quit,
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
        if let Some(name) = kernel_thread(pid) {
            return Err(SessionError::KernelThread { pid, name });
        }
    }
    let tracer_options = TracerOptions {
        stack_mode: options.stacks.into(),
        stack_period: options.stack_period,
        follow_forks: options.follow_forks,
        ring_bytes: options.ring_size,
        stack_bytes: options.stack_bytes,
        btf_path: options.btf.clone(),
        syscall_hook: match options.syscall_hook {
            Hook::Raw => SyscallHook::Raw,
            Hook::PerCall => SyscallHook::PerCall,
        },
        floor: options.floor,
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
        hints,
        mut targets,
        counters,
    } = maps;
    let stacks = Stacks::new(kernel_stacks, hints, options.unwind, options.stack_bytes);
    let debug = DebugSources {
        dirs: options.debug_dir.clone(),
        debuginfod: Debuginfod::from_env(),
    };

    // The screen takes the terminal before the command starts, so that the
    // command's output goes to the screen's pane, not across it.
    let screen = if options.quiet || options.log || outputs.json_on_stdout() || !screen::available()
    {
        None
    } else {
        Screen::open(&outputs.profiles_dir())
            .inspect_err(|err| {
                eprintln!("memtrace: no live screen on this terminal ({err}); printing lines");
            })
            .ok()
    };
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
    let program = match &target {
        Target::Pid(_) => unwind::program_kind(&ProcessView::new(pid).exe_file()),
        Target::Command(argv) => {
            launch::resolve(&argv[0]).and_then(|path| unwind::program_kind(&path))
        }
    };
    let stack_source = stacks.source_for(program);
    targets.set_primary(pid, stack_source)?;
    tracer.attach()?;

    let mut processes = BTreeMap::new();
    processes.insert(
        pid,
        Process::new(
            pid,
            Tracker::default(),
            u64::from(launched.is_some()),
            debug.clone(),
        ),
    );
    if let Some(process) = processes.get_mut(&pid) {
        process.stack_source = stack_source;
    }
    let mut session = Session {
        primary: pid,
        processes,
        follow_forks: options.follow_forks,
        stacks,
        targets,
        exits: Exits::new(),
        debug,
        counters,
        decode_errors: 0,
        lost_before: 0,
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
        screen,
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
            session
                .exits
                .watch(pid)
                .map_err(|_| SessionError::ExitedWhileAttaching { pid })?;
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
        )
        .await?;
    if let Some(screen) = session.screen.take() {
        screen.close();
    }
    signals.stopping(stop == Stop::Interrupt);
    session.drain(&mut source);
    if let Some(heap) = session.heap.as_mut() {
        tokio::select! {
            () = heap.settle() => {}
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
    stacks: Stacks,
    targets: Targets,
    /// Processes whose exit a pidfd tells (see `exits`).
    exits: Exits,
    /// Where separate debug information is found, for every process.
    debug: DebugSources,
    counters: KernelCounters,
    decode_errors: u64,
    /// Records lost as of the last reconciliation.
    lost_before: u64,
    rules: ReadingRules,
    started: Instant,
    heap: Option<heap::HeapWatch>,
    live_to_stderr: bool,
    quiet: bool,
    /// The live screen, while it is up.
    screen: Option<Screen>,
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

    /// The width the line view's text is fitted to (a terminal's).
    fn width(&self) -> Option<usize> {
        screen::line_width(self.live_to_stderr)
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
        let keys = if self.screen.is_some() {
            "q or Ctrl-C"
        } else {
            "Ctrl-C"
        };
        eprintln!("memtrace: {what}; {keys} for the final report, SIGUSR1 for a verdict now");
    }

    async fn trace(
        &mut self,
        source: &mut EventSource,
        signals: &mut Signals,
        outputs: &mut Outputs,
        options: &TraceOptions,
        mut child: Option<&mut launch::Launched>,
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
                    Steer::ReportNow => self.report_now(),
                },
                key = next_key(&mut self.screen) => match key {
                    Key::Quit => return Ok(Stop::Quit),
                    Key::Toggle => self.screen_mut().toggle(),
                    Key::Redraw => self.screen_mut().redraw(),
                    Key::Pprof => self.profile_now(outputs),
                },
                _ = sleep_until_or_never(deadline) => return Ok(Stop::Duration),
                _ = wait_child(&mut child) => {
                    self.drain(source);
                    return Ok(self.stop_for_ending());
                }
                pid = self.exits.next() => {
                    // Its last events first (an OOM kill says why it ended).
                    self.drain(source);
                    if let Some(process) = self.processes.get_mut(&pid) {
                        process.tracker.ending.get_or_insert(Ending::Exited);
                    }
                    self.targets.forget(pid);
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

    fn screen_mut(&mut self) -> &mut Screen {
        self.screen
            .as_mut()
            .expect("keys come only from the screen")
    }

    /// SIGUSR1: the full report and verdict now; on the screen, which
    /// shows the same tables, a word on where the full report will be.
    fn report_now(&mut self) {
        if let Some(screen) = &mut self.screen {
            screen.set_status(
                "SIGUSR1: the full report and verdict are printed when memtrace stops (q)".into(),
            );
            return;
        }
        let snapshot = self.snapshot(self.primary, false);
        let width = self.width();
        let verdict = wrap(&verdict::verdict(&snapshot), width, "  ");
        self.print(&format!(
            "{}\n{verdict}\n",
            live::render_final(&snapshot, width)
        ));
    }

    /// The screen's `p` key: a profile of the model as it is now.
    fn profile_now(&mut self, outputs: &mut Outputs) {
        let Some(snapshot) = self.screen_mut().snapshot().cloned() else {
            self.screen_mut()
                .set_status("no profile yet: the first interval is not over".into());
            return;
        };
        let elapsed = self.started.elapsed();
        let process = self.processes.get_mut(&self.primary).expect("primary");
        let mut namer = process.namer(&self.stacks.table);
        let status = match outputs.profile_now(&snapshot, elapsed, &mut namer) {
            Ok(path) => format!(
                "wrote {} (go tool pprof -http=: {})",
                path.display(),
                path.display()
            ),
            Err(err) => format!("could not write the profile: {err}"),
        };
        self.screen_mut().set_status(status);
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
        let targets = &mut self.targets;
        let decode_errors = &mut self.decode_errors;
        let follow_forks = self.follow_forks;
        let debug = &self.debug;
        let exits = &self.exits;
        source.drain(|decoded| {
            let Ok(mut decoded) = decoded else {
                *decode_errors += 1;
                return;
            };
            let Some(process) = processes.get_mut(&decoded.tgid) else {
                return;
            };
            if let EventKind::StackSample(sample) = &decoded.event.kind {
                stacks.unwind(process, sample);
                return;
            }
            decoded.event.stack = stacks.resolve(decoded.event.stack, process.stack_source);
            match process.tracker.ingest(&decoded) {
                Follow::Exec => {
                    process.exec_happened();
                    stacks.forget(process.pid);
                    // A failure leaves the stacks taken as for the old
                    // program: shorter, never wrong.
                    let source = stacks.source_for(process.program());
                    if targets.set_stacks(process.pid, source).is_ok() {
                        process.stack_source = source;
                    }
                }
                Follow::MappedFile { start, end } => process.learn_path(start, end),
                Follow::Reclaim => reconcile = true,
                Follow::ProcessMadvise => {
                    if let EventKind::ProcessMadvise(call) = &decoded.event.kind {
                        if process.view.pidfd_target(call.pidfd) == Some(process.pid) {
                            process.tracker.apply_own_process_madvise(&decoded);
                        }
                    }
                }
                Follow::ThreadExit => {
                    if !process.view.alive() {
                        process.tracker.ending.get_or_insert(Ending::Exited);
                        targets.forget(process.pid);
                    }
                }
                Follow::Forked {
                    child,
                    shares_memory,
                } if follow_forks && ProcessView::new(child).is_process() => {
                    let tracker = if shares_memory {
                        Tracker::sharing_parents_memory()
                    } else {
                        process.tracker.forked()
                    };
                    let parent = process.pid;
                    // Gone already if this fails: its exit record says so.
                    let _ = exits.watch(child);
                    let mut child = Process::new(child, tracker, 0, debug.clone());
                    child.stack_source = process.stack_source;
                    eprintln!(
                        "memtrace: following pid {} ({}), forked by pid {parent}",
                        child.pid, child.command
                    );
                    processes.insert(child.pid, child);
                }
                Follow::Forked { .. } | Follow::Nothing | Follow::Ended => {}
            }
        });
        self.stacks.sync();
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
        let lost = self.lost().records();
        let scan_all = lost > self.lost_before;
        self.lost_before = lost;
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
        let width = self.width();
        let mut on_screen = None;
        let mut children = Vec::new();
        for pid in pids {
            let snapshot = self.snapshot(pid, false);
            let primary = pid == self.primary;
            if self.screen.is_some() {
                if !primary {
                    children.push(live::render_brief(&snapshot, None).trim().to_owned());
                }
            } else if !self.quiet {
                if primary {
                    self.print(&live::render(&snapshot, width));
                } else {
                    self.print(&live::render_brief(&snapshot, width));
                }
            }
            let process = self.processes.get_mut(&pid).expect("listed above");
            let mut namer = process.namer(&self.stacks.table);
            outputs.interval(&snapshot, primary.then_some(&mut namer))?;
            if primary {
                on_screen = Some(snapshot);
            }
        }
        if let (Some(screen), Some(snapshot)) = (&mut self.screen, on_screen) {
            screen.show(snapshot, children);
        }
        Ok(())
    }

    fn lost(&self) -> Lost {
        let read = |counter| self.counters.read(counter);
        Lost {
            faults: read(Counter::LostFaults),
            syscalls: read(Counter::LostSyscalls),
            lifecycle: read(Counter::LostLifecycle),
            reclaim: read(Counter::LostReclaim),
            stacks: read(Counter::StacksNotStored),
            stack_samples: read(Counter::LostStackSamples),
            stack_samples_skipped: read(Counter::StackSamplesSkipped),
            undecodable: self.decode_errors,
        }
    }

    fn snapshot(&mut self, pid: u32, is_final: bool) -> Snapshot {
        let shared = Shared {
            stacks: &self.stacks.table,
            lost: self.lost(),
            stack_walks: self.counters.read(Counter::FaultStackWalks)
                + self.counters.read(Counter::FaultStackSamples),
            elapsed: self.started.elapsed(),
            heap: self.heap.as_ref().filter(|_| pid == self.primary),
            footprint: Footprint {
                rss: ProcessView::new(std::process::id())
                    .totals()
                    .map_or(0, |totals| totals.status.rss),
                unwind_tables: self.stacks.table_bytes() as u64,
                stacks: self.stacks.table.len() as u64,
                kernel_maps: maps_memory(),
            },
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
        let width = self.width();
        for pid in pids {
            signals.check()?;
            let snapshot = self.snapshot(pid, true);
            if pid != self.primary {
                self.print(&format!("\n── child pid {pid} ──\n"));
            }
            self.print(&live::render_final(&snapshot, width));
            self.print(&format!(
                "\n{}\n",
                wrap(&verdict::verdict(&snapshot), width, "  ")
            ));
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
        let mut namer = process.namer(&self.stacks.table);
        outputs.finish(&snapshot, past.history(), &mut namer, signals)
    }
}

async fn sleep_until_or_never(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The screen's next key; never, without a screen.
async fn next_key(screen: &mut Option<Screen>) -> Key {
    match screen {
        Some(screen) => screen.key().await,
        None => std::future::pending().await,
    }
}

/// The name of `pid` when it is a kernel thread, which has no user address
/// space to trace (PF_KTHREAD in its flags).
fn kernel_thread(pid: u32) -> Option<String> {
    const PF_KTHREAD: u32 = 0x0020_0000;
    let stat = procfs::process::Process::new(pid as i32)
        .ok()?
        .stat()
        .ok()?;
    (stat.flags & PF_KTHREAD != 0).then_some(stat.comm)
}

async fn wait_child(child: &mut Option<&mut launch::Launched>) {
    match child {
        Some(child) => child.exited().await,
        None => std::future::pending().await,
    }
}
