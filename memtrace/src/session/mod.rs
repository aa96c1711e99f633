//! A tracing session: attach to the target, keep the model current, report
//! every interval, and write the final report and outputs at the end.
//!
//! Data flows one way: kernel records → [`crate::intake`] → [`Tracker`]
//! (the model) ← /proc ([`crate::proc`]) → [`crate::report`] and
//! [`crate::export`].

mod contents;
mod entries;
mod error;
mod exits;
mod heap;
mod launch;
mod outputs;
mod process;
mod record;
mod replay;
mod scope;
mod signals;
mod stacks;
mod traced;
mod tracker;

use std::{ffi::OsString, io::Write as _, rc::Rc, time::Duration};

use tokio::time::{interval, sleep_until, MissedTickBehavior};

pub use contents::report as capture_contents;
pub use error::SessionError;
pub use exits::Exits;
pub use process::Process;
pub use replay::report as report_capture;
pub use scope::CgroupTarget;
pub use stacks::Stacks;
pub use traced::{Joining, Traced};
pub use tracker::{Ending, Tracker};

use crate::{
    cli::{Hook, TraceOptions},
    elf::ProgramKind,
    intake::{EventSource, Records},
    kernel::{SyscallHook, Tracer, TracerOptions},
    proc::{ProcError, ProcessView},
    report::{
        format::wrap,
        live, merge,
        screen::{self, Key, Screen},
        snapshot::{Footprint, Snapshot},
        state::TargetState,
        verdict,
        whole::Member,
    },
    safe_file::{OutputPolicy, Owner},
    symbolize::{DebugSources, Debuginfod},
};
use outputs::Outputs;
use record::Recorder;
use scope::CgroupScope;
use signals::{Signals, Steer};

/// What to trace.
#[derive(Debug, Clone)]
pub enum Target {
    Pid(u32),
    Command(Vec<OsString>),
    Cgroup(CgroupTarget),
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    TargetExited,
    TargetOomKilled,
    /// The traced cgroup was removed (its container stopped).
    CgroupRemoved,
    Duration,
    /// Ctrl-C.
    Interrupt,
    /// SIGTERM or SIGHUP.
    Signal,
    /// `q` (or Ctrl-C) on the live screen.
    Quit,
}

/// What the session looks at.
enum Scope {
    /// One process, and with `--follow-forks` the children it forks.
    Process {
        primary: u32,
    },
    Cgroup(Box<CgroupScope>),
}

/// How often the ring buffer is drained between kernel wake-ups.
pub const DRAIN_EVERY: Duration = Duration::from_millis(50);

pub async fn run(target: Target, options: &TraceOptions) -> Result<Stop, SessionError> {
    let owner = Owner::invoking_user();
    let policy = OutputPolicy {
        force: options.force,
        owner,
    };
    let mut outputs = Outputs::open(options, &policy)?;
    if let Some(to) = &options.record {
        policy.check(&to.path)?;
    }
    // A bad profile file is the user's to fix before anything is loaded.
    let mut heap = options
        .go_pprof
        .as_deref()
        .map(|text| heap::HeapWatch::open(text, options.go_pprof_remote))
        .transpose()?;

    if let Target::Pid(pid) = target {
        check_pid(pid)?;
    }
    let cgroup = match &target {
        Target::Cgroup(which) => Some(CgroupScope::open(which)?),
        _ => None,
    };
    let tracer_options = TracerOptions {
        stack_mode: options.stacks.into(),
        stack_period: options.stack_period,
        // Without the kernel's cgroup test, a cgroup's new processes are
        // its processes' children, or found by reading the cgroup.
        follow_forks: options.follow_forks || cgroup.is_some(),
        ring_bytes: options.ring_size,
        stack_bytes: options.stack_bytes,
        btf_path: options.btf.clone(),
        syscall_hook: match options.syscall_hook {
            Hook::Raw => SyscallHook::Raw,
            Hook::PerCall => SyscallHook::PerCall,
        },
        floor: options.floor,
        cgroup: cgroup.as_ref().and_then(|cgroup| {
            // Until the agent has read a found process's program.
            cgroup.kernel_filter(Stacks::source_before_reading(options.unwind))
        }),
        ..TracerOptions::default()
    };
    let (mut tracer, maps) = Tracer::load(&tracer_options)?;
    // Loading parsed the kernel's whole BTF (tens of MiB of allocations, now
    // freed): give that memory back instead of keeping it in RSS for the
    // whole trace.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let stacks = Stacks::new(maps.stacks, maps.hints, options.unwind, options.stack_bytes);
    let debug = DebugSources {
        dirs: options.debug_dir.clone(),
        debuginfod: Debuginfod::from_env(),
    };
    let mut traced = Traced::new(
        stacks,
        maps.targets,
        Box::new(maps.counters),
        Exits::new(),
        debug,
        Joining {
            forks: tracer_options.follow_forks,
            found: tracer_options.cgroup.is_some(),
        },
    );

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
    if let Some(to) = &options.record {
        // From before the target is seeded: its first readings are taped.
        let recording = Recorder::open(to, &policy)?;
        if let Some(heap) = heap.as_mut() {
            heap.record_to(Rc::clone(&recording));
        }
        traced.record_to(recording);
    }
    let mut launched = None;
    let scope = match (&target, cgroup) {
        (_, Some(cgroup)) => {
            let pids = cgroup.add_all(&mut traced)?;
            tracer.attach()?;
            CgroupScope::seed_all(&mut traced, &pids)?;
            Scope::Cgroup(Box::new(cgroup))
        }
        (Target::Pid(pid), None) => {
            start_pid(&mut traced, *pid, || Ok(tracer.attach()?))?;
            Scope::Process { primary: *pid }
        }
        (Target::Command(argv), None) => {
            let command = argv[0].to_string_lossy().into_owned();
            let launch_error = |source| SessionError::Launch {
                command: command.clone(),
                source,
            };
            let mut child = launch::launch(argv, owner).map_err(launch_error)?;
            let program = launch::resolve(&argv[0]).and_then(|path| ProgramKind::read(&path));
            traced.add_primary(child.pid, true, traced.stacks.source_for(program))?;
            tracer.attach()?;
            child.release().map_err(launch_error)?;
            let pid = child.pid;
            launched = Some(child);
            Scope::Process { primary: pid }
        }
        (Target::Cgroup(_), None) => unreachable!("a cgroup target is opened above"),
    };
    if let Some(recording) = traced.recording() {
        match &scope {
            Scope::Process { primary } => recording.borrow_mut().target(*primary, &[]),
            Scope::Cgroup(cgroup) => recording.borrow_mut().target(0, &cgroup.describe()),
        }
    }
    let mut session = Session {
        traced,
        scope,
        heap,
        live_to_stderr: outputs.json_on_stdout(),
        quiet: options.quiet,
        screen,
    };
    // Ctrl-C is memtrace's from the moment it says it is tracing.
    let mut signals = Signals::new()?;
    session.announce(&target);

    let mut source = EventSource::new(maps.events).map_err(|source| SessionError::Io {
        what: "cannot watch the ring buffer",
        source,
    })?;
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
    if let Some(recording) = session.traced.recording() {
        recording.borrow_mut().stopped(stop);
    }
    signals.stopping(stop == Stop::Interrupt);
    session.traced.drain(&mut source);
    if let Some(heap) = session.heap.as_mut() {
        let target_alive = !matches!(stop, Stop::TargetExited | Stop::TargetOomKilled);
        tokio::select! {
            () = heap.settle(target_alive) => {}
            () = signals.interrupt() => return Err(SessionError::Interrupted),
        }
    }
    session.final_reports(&mut outputs, &signals)?;
    session.traced.name_every_recorded_stack();
    if let Some(recording) = session.traced.recording() {
        recording.borrow_mut().finish();
    }
    drop(tracer);
    Ok(stop)
}

/// Refuses a PID that names no user process, before anything is loaded.
fn check_pid(pid: u32) -> Result<(), SessionError> {
    if !ProcessView::new(pid).alive() {
        return Err(SessionError::NoSuchProcess { pid });
    }
    if let Some(name) = ProcessView::new(pid).kernel_thread_name() {
        return Err(SessionError::KernelThread { pid, name });
    }
    Ok(())
}

/// Starts tracing running process `pid`: taken into `traced`, the programs
/// attached (`attach`), then what it held before read from /proc. A
/// capture played back takes the same steps, so that it asks /proc the
/// same questions.
fn start_pid(
    traced: &mut Traced,
    pid: u32,
    attach: impl FnOnce() -> Result<(), SessionError>,
) -> Result<(), SessionError> {
    let start_time = ProcessView::new(pid).start_time();
    let program = ProcessView::new(pid).program();
    traced.add_primary(pid, false, traced.stacks.source_for(program))?;
    attach()?;
    // The PID must still be the process we were asked for.
    if ProcessView::new(pid).start_time() != start_time || start_time.is_none() {
        return Err(SessionError::ExitedWhileAttaching { pid });
    }
    traced.seed(pid).map_err(|err| match err {
        SessionError::Proc(ProcError::Gone { .. }) => SessionError::ExitedWhileAttaching { pid },
        other => other,
    })
}

struct Session {
    traced: Traced,
    scope: Scope,
    heap: Option<heap::HeapWatch>,
    live_to_stderr: bool,
    quiet: bool,
    /// The live screen, while it is up.
    screen: Option<Screen>,
}

impl Session {
    /// The process the screen, the heap profile and the profiles are of;
    /// none for a cgroup, which is shown whole.
    fn focus(&self) -> Option<u32> {
        match &self.scope {
            Scope::Process { primary } => Some(*primary),
            Scope::Cgroup(_) => None,
        }
    }

    /// The processes profiles are made of.
    fn profiled(&self) -> Vec<u32> {
        match &self.scope {
            Scope::Process { primary } => vec![*primary],
            Scope::Cgroup(_) => self.traced.pids(),
        }
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
        let what = match (target, &self.scope) {
            (Target::Pid(pid), _) => format!(
                "attached to pid {pid} ({})",
                self.traced.get(*pid).map_or("", |process| &process.command)
            ),
            (Target::Command(argv), Scope::Process { primary }) => format!(
                "started pid {primary} ({})",
                argv.iter()
                    .map(|arg| arg.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            (_, Scope::Cgroup(cgroup)) => format!(
                "tracing {} (cgroup {} {}{}), {} processes now",
                cgroup.subject.label,
                cgroup.cgroup.version.name(),
                cgroup.cgroup.path,
                cgroup
                    .subject
                    .container
                    .as_ref()
                    .map(|container| format!(", container {}", scope::short_id(&container.id)))
                    .unwrap_or_default(),
                self.traced.pids().len()
            ),
            (Target::Cgroup(_), Scope::Process { .. }) => String::new(),
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
                    reconcile_soon |= self.traced.drain(source);
                }
                _ = drains.tick() => reconcile_soon |= self.traced.drain(source),
                _ = ticks.tick() => {
                    if let Some(recording) = self.traced.recording() {
                        recording.borrow_mut().tick();
                    }
                    if let Some(heap) = self.heap.as_mut() {
                        heap.poll().await;
                    }
                    if let Some(stop) = self.cgroup_tick(source)? {
                        return Ok(stop);
                    }
                    self.interval_report(source, outputs)?;
                    if let Some(recording) = self.traced.recording() {
                        recording.borrow_mut().interval_done();
                    }
                    reconcile_soon = false;
                }
                steer = signals.next() => match steer {
                    Steer::Stop { by_interrupt: true } => return Ok(Stop::Interrupt),
                    Steer::Stop { by_interrupt: false } => return Ok(Stop::Signal),
                    Steer::ReportNow => {
                        let recording = self.traced.recording().cloned();
                        Recorder::aside(recording.as_ref(), || self.report_now());
                    }
                },
                key = next_key(&mut self.screen) => match key {
                    Key::Quit => return Ok(Stop::Quit),
                    Key::Toggle => self.screen_mut().toggle(),
                    Key::Redraw => self.screen_mut().redraw(),
                    Key::Pprof => {
                        let recording = self.traced.recording().cloned();
                        Recorder::aside(recording.as_ref(), || self.profile_now(outputs));
                    }
                },
                _ = sleep_until_or_never(deadline) => return Ok(Stop::Duration),
                _ = wait_child(&mut child) => {
                    // The command memtrace started has exited: said here for
                    // certain, since on kernels without the exit
                    // tracepoint's `group_dead` (6.1) no record says which
                    // thread's exit ended the process.
                    if let Scope::Process { primary } = self.scope {
                        if let Some(recording) = self.traced.recording() {
                            recording.borrow_mut().exit(primary);
                        }
                        self.traced.drain(source);
                        self.traced.exited(primary);
                    }
                    if let Some(stop) = self.primary_ended() {
                        return Ok(stop);
                    }
                }
                pid = self.traced.next_exit() => {
                    if let Some(recording) = self.traced.recording() {
                        recording.borrow_mut().exit(pid);
                    }
                    // Its last events first (an OOM kill says why it ended).
                    self.traced.drain(source);
                    self.traced.exited(pid);
                }
            }
            if reconcile_soon {
                // Another task changed a target's RSS (reclaim): look now,
                // while it is fresh, rather than at the next tick.
                self.traced.reconcile(source);
                reconcile_soon = false;
            }
            if let Some(stop) = self.primary_ended() {
                return Ok(stop);
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
        let footprint = self.traced.footprint();
        let snapshot = match self.focus() {
            Some(pid) => self.snapshot_with(pid, false, footprint),
            None => self.whole_snapshot(false, footprint),
        };
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
        let elapsed = self.traced.elapsed();
        let pids = self.profiled();
        let mut parts = self.traced.parts(&pids);
        let status = match outputs.profile_now(&snapshot, elapsed, &mut parts) {
            Ok(path) => format!(
                "wrote {} (go tool pprof -http=: {})",
                path.display(),
                path.display()
            ),
            Err(err) => format!("could not write the profile: {err}"),
        };
        drop(parts);
        self.screen_mut().set_status(status);
    }

    /// How the session stops because its primary target ended; never for
    /// a cgroup, which ends when it is removed.
    fn primary_ended(&self) -> Option<Stop> {
        let Scope::Process { primary } = self.scope else {
            return None;
        };
        match self.traced.get(primary)?.tracker.ending? {
            Ending::OomKilled => Some(Stop::TargetOomKilled),
            Ending::Exited => Some(Stop::TargetExited),
        }
    }

    /// A cgroup's part of an interval's tick: the trace stops if it is
    /// gone; the processes that came into it are taken in.
    fn cgroup_tick(&mut self, source: &mut dyn Records) -> Result<Option<Stop>, SessionError> {
        if let Scope::Cgroup(cgroup) = &self.scope {
            if cgroup.removed() {
                self.traced.drain(source);
                return Ok(Some(Stop::CgroupRemoved));
            }
            cgroup.rescan(&mut self.traced)?;
        }
        Ok(None)
    }

    fn interval_report(
        &mut self,
        source: &mut dyn Records,
        outputs: &mut Outputs,
    ) -> Result<(), SessionError> {
        self.traced.reconcile(source);
        let footprint = self.traced.footprint();
        if let Scope::Cgroup(_) = self.scope {
            return self.cgroup_interval(outputs, footprint);
        }
        let width = self.width();
        let focus = self.focus();
        let mut on_screen = None;
        let mut others = Vec::new();
        for pid in self.traced.pids() {
            let snapshot = self.snapshot_with(pid, false, footprint);
            let focused = Some(pid) == focus;
            if self.screen.is_some() {
                if !focused {
                    others.push(live::render_brief(&snapshot, None).trim().to_owned());
                }
            } else if !self.quiet {
                if focused {
                    self.print(&live::render(&snapshot, width));
                } else {
                    self.print(&live::render_brief(&snapshot, width));
                }
            }
            let due = focused && outputs.profile_due();
            let mut parts = if due {
                self.traced.parts(&[pid])
            } else {
                Vec::new()
            };
            outputs.interval(&snapshot, due.then_some(parts.as_mut_slice()))?;
            drop(parts);
            if focused {
                on_screen = Some(snapshot);
            }
        }
        if let (Some(screen), Some(snapshot)) = (&mut self.screen, on_screen) {
            screen.show(snapshot, others);
        }
        Ok(())
    }

    /// A cgroup's interval: a JSON line per process, then the cgroup as a
    /// whole on the screen or the lines and in JSON. Processes that ended
    /// are reported this once and their models dropped; one the OOM killer
    /// took gets its post-mortem first.
    fn cgroup_interval(
        &mut self,
        outputs: &mut Outputs,
        footprint: Footprint,
    ) -> Result<(), SessionError> {
        let mut members = Vec::new();
        for pid in self.traced.pids() {
            let ended = self
                .traced
                .get(pid)
                .is_some_and(|process| process.tracker.ending.is_some());
            let snapshot = self.snapshot_with(pid, ended, footprint);
            outputs.interval(&snapshot, None)?;
            members.push(snapshot);
        }
        let whole = self.whole_of(false, &members);
        let width = self.width();
        if let Some(screen) = &mut self.screen {
            let lines = members
                .iter()
                .map(|member| live::render_brief(member, None).trim().to_owned())
                .collect();
            screen.show(whole.clone(), lines);
        } else if !self.quiet {
            self.print(&live::render(&whole, width));
        }
        for member in members.iter().filter(|m| m.state != TargetState::Running) {
            self.process_ended(member, outputs)?;
            if let Scope::Cgroup(cgroup) = &mut self.scope {
                cgroup.past.retire(member);
            }
            self.traced.remove(member.pid);
        }
        let due = outputs.profile_due();
        let pids = if due { self.traced.pids() } else { Vec::new() };
        let mut parts = self.traced.parts(&pids);
        outputs.interval(&whole, due.then_some(parts.as_mut_slice()))
    }

    /// A cgroup's process ended: counted, and if the OOM killer took it,
    /// its final report and profile now, while its model is at hand.
    fn process_ended(
        &mut self,
        snapshot: &Snapshot,
        outputs: &mut Outputs,
    ) -> Result<(), SessionError> {
        let Scope::Cgroup(cgroup) = &mut self.scope else {
            return Ok(());
        };
        cgroup.ended += 1;
        if snapshot.state != TargetState::OomKilled {
            return Ok(());
        }
        cgroup.oom_killed.push(Member::of(snapshot));
        let mut parts = self.traced.parts(&[snapshot.pid]);
        let profile = outputs.post_mortem(snapshot, &mut parts);
        drop(parts);
        let width = self.width();
        let report = format!(
            "\n── {} was killed by the OOM killer ──\n{}\n{}\n",
            snapshot.subject(),
            live::render_final(snapshot, width),
            wrap(&verdict::verdict(snapshot), width, "  ")
        );
        match &mut self.screen {
            Some(screen) => screen.set_status(format!(
                "pid {} ({}) was killed by the OOM killer; its report follows the final one",
                snapshot.pid, snapshot.command
            )),
            None => self.print(&report),
        }
        match profile {
            Ok(path) => eprintln!(
                "memtrace: pid {} ({}) was killed by the OOM killer: its profile is {}",
                snapshot.pid,
                snapshot.command,
                path.display()
            ),
            Err(err) => {
                eprintln!("memtrace: could not write the OOM-killed process's profile: {err}")
            }
        }
        Ok(())
    }

    /// The cgroup as a whole, from its processes' snapshots.
    fn whole_of(&mut self, is_final: bool, members: &[Snapshot]) -> Snapshot {
        let elapsed = self.traced.elapsed();
        let Scope::Cgroup(cgroup) = &mut self.scope else {
            unreachable!("only a cgroup is seen whole");
        };
        let memory = cgroup.cgroup.memory();
        let removed = memory.is_none() && !cgroup.cgroup.exists();
        if memory.is_some() {
            cgroup.last_memory = memory;
        }
        let facts = merge::Facts {
            is_final,
            elapsed,
            subject: &cgroup.subject,
            memory: cgroup.last_memory.clone(),
            removed,
            ended: cgroup.ended,
            oom_killed: &cgroup.oom_killed,
        };
        cgroup.past.snapshot(facts, members)
    }

    /// The cgroup as a whole now, its processes' snapshots taken afresh.
    fn whole_snapshot(&mut self, is_final: bool, footprint: Footprint) -> Snapshot {
        let members: Vec<Snapshot> = self
            .traced
            .pids()
            .into_iter()
            .map(|pid| self.snapshot_with(pid, is_final, footprint))
            .collect();
        self.whole_of(is_final, &members)
    }

    fn snapshot_with(&mut self, pid: u32, is_final: bool, footprint: Footprint) -> Snapshot {
        let heap = self.heap.as_ref().filter(|_| self.focus() == Some(pid));
        self.traced.snapshot(pid, is_final, heap, footprint)
    }

    /// The final report and outputs. For a process: the focus first, then
    /// every child followed; for a cgroup: the whole, after a JSON line for
    /// each process. A Ctrl-C meanwhile abandons them (`signals`).
    fn final_reports(
        &mut self,
        outputs: &mut Outputs,
        signals: &Signals,
    ) -> Result<(), SessionError> {
        let width = self.width();
        let footprint = self.traced.footprint();
        let (snapshot, history) = match self.focus() {
            Some(focus) => {
                let mut pids = self.traced.pids();
                pids.sort_by_key(|&pid| pid != focus);
                let mut focus_snapshot = None;
                for pid in pids {
                    signals.check()?;
                    let snapshot = self.snapshot_with(pid, true, footprint);
                    if pid != focus {
                        self.print(&format!("\n── pid {pid} ({}) ──\n", snapshot.command));
                    }
                    self.print_final(&snapshot, width, &[pid]);
                    if pid == focus {
                        focus_snapshot = Some(snapshot);
                    } else {
                        outputs.interval(&snapshot, None)?;
                    }
                }
                let snapshot = focus_snapshot.expect("the focus is traced to the end");
                let process = self.traced.get_mut(focus).expect("the focus is traced");
                (
                    snapshot,
                    std::mem::take(&mut process.past).history().clone(),
                )
            }
            None => {
                let mut members = Vec::new();
                for pid in self.traced.pids() {
                    signals.check()?;
                    let snapshot = self.snapshot_with(pid, true, footprint);
                    outputs.interval(&snapshot, None)?;
                    if snapshot.state != TargetState::Running {
                        self.process_ended(&snapshot, outputs)?;
                    }
                    members.push(snapshot);
                }
                let whole = self.whole_of(true, &members);
                self.print_final(&whole, width, &self.traced.pids());
                let Scope::Cgroup(cgroup) = &self.scope else {
                    unreachable!("no focus: a cgroup");
                };
                (whole, cgroup.past.history().clone())
            }
        };
        let pids = self.profiled();
        let mut parts = self.traced.parts(&pids);
        outputs.finish(&snapshot, &history, &mut parts, signals)
    }

    /// A final report, then the notes gathered over the trace of the
    /// processes in `pids`.
    fn print_final(&self, snapshot: &Snapshot, width: Option<usize>, pids: &[u32]) {
        self.print(&live::render_final(snapshot, width));
        self.print(&format!(
            "\n{}\n",
            wrap(&verdict::verdict(snapshot), width, "  ")
        ));
        let mut said = std::collections::BTreeSet::new();
        for process in pids.iter().filter_map(|&pid| self.traced.get(pid)) {
            for notice in process.notices().filter(|notice| said.insert(*notice)) {
                eprintln!("memtrace: note: {notice}");
            }
        }
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

async fn wait_child(child: &mut Option<&mut launch::Launched>) {
    match child {
        Some(child) => child.exited().await,
        None => std::future::pending().await,
    }
}
