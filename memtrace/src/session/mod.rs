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
mod scope;
mod signals;
mod stacks;
mod traced;
mod tracker;

use std::{ffi::OsString, io::Write as _, time::Duration};

use tokio::time::{interval, sleep_until, MissedTickBehavior};

pub use error::SessionError;
pub use scope::CgroupTarget;
pub use tracker::{Ending, Tracker};

use crate::{
    cli::{Hook, TraceOptions},
    intake::EventSource,
    kernel::{SyscallHook, Tracer, TracerOptions},
    proc::{ProcError, ProcessView},
    report::{
        format::wrap,
        live,
        screen::{self, Key, Screen},
        snapshot::Snapshot,
        verdict,
    },
    safe_file::{OutputPolicy, Owner},
    symbolize::{DebugSources, Debuginfod},
    unwind,
};
use outputs::Outputs;
use scope::CgroupScope;
use signals::{Signals, Steer};
use stacks::Stacks;
use traced::{Joining, Traced};

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
        maps.counters,
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
    let mut launched = None;
    let scope = match (&target, cgroup) {
        (_, Some(cgroup)) => {
            let pids = cgroup.add_all(&mut traced)?;
            tracer.attach()?;
            CgroupScope::seed_all(&mut traced, &pids)?;
            Scope::Cgroup(Box::new(cgroup))
        }
        (Target::Pid(pid), None) => {
            let pid = *pid;
            let start_time = ProcessView::new(pid).start_time();
            let program = unwind::program_kind(&ProcessView::new(pid).exe_file());
            traced.add_primary(pid, false, traced.stacks.source_for(program))?;
            tracer.attach()?;
            // The PID must still be the process we were asked for.
            if ProcessView::new(pid).start_time() != start_time || start_time.is_none() {
                return Err(SessionError::ExitedWhileAttaching { pid });
            }
            traced.seed(pid).map_err(|err| match err {
                SessionError::Proc(ProcError::Gone { .. }) => {
                    SessionError::ExitedWhileAttaching { pid }
                }
                other => other,
            })?;
            Scope::Process { primary: pid }
        }
        (Target::Command(argv), None) => {
            let command = argv[0].to_string_lossy().into_owned();
            let launch_error = |source| SessionError::Launch {
                command: command.clone(),
                source,
            };
            let mut child = launch::launch(argv, owner).map_err(launch_error)?;
            let program = launch::resolve(&argv[0]).and_then(|path| unwind::program_kind(&path));
            traced.add_primary(child.pid, true, traced.stacks.source_for(program))?;
            tracer.attach()?;
            child.release().map_err(launch_error)?;
            let pid = child.pid;
            launched = Some(child);
            Scope::Process { primary: pid }
        }
        (Target::Cgroup(_), None) => unreachable!("a cgroup target is opened above"),
    };
    let mut session = Session {
        traced,
        scope,
        heap,
        live_to_stderr: outputs.json_on_stdout(),
        quiet: options.quiet,
        screen,
    };
    session.announce(&target);

    let mut source = EventSource::new(maps.events).map_err(|source| SessionError::Io {
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
    session.traced.drain(&mut source);
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
    traced: Traced,
    scope: Scope,
    heap: Option<heap::HeapWatch>,
    live_to_stderr: bool,
    quiet: bool,
    /// The live screen, while it is up.
    screen: Option<Screen>,
}

impl Session {
    /// The process the screen, the heap profile and the profiles are of:
    /// the primary target, or in a cgroup its largest process.
    fn focus(&self) -> Option<u32> {
        match &self.scope {
            Scope::Process { primary } => Some(*primary),
            Scope::Cgroup(_) => self
                .traced
                .pids()
                .into_iter()
                .filter_map(|pid| Some((pid, self.traced.get(pid)?.rss())))
                .max_by_key(|&(_, rss)| rss)
                .map(|(pid, _)| pid),
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
                "tracing {} ({}, cgroup {}), {} processes now",
                cgroup.label,
                match &cgroup.container {
                    Some(container) => format!("container {}", &container.id[..12]),
                    None => format!("cgroup {}", cgroup.cgroup.version.name()),
                },
                cgroup.cgroup.path,
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
                    if let Some(heap) = self.heap.as_mut() {
                        heap.poll().await;
                    }
                    if let Scope::Cgroup(cgroup) = &self.scope {
                        if cgroup.removed() {
                            self.traced.drain(source);
                            return Ok(Stop::CgroupRemoved);
                        }
                        cgroup.rescan(&mut self.traced)?;
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
                    self.traced.drain(source);
                    if let Some(stop) = self.primary_ended() {
                        return Ok(stop);
                    }
                }
                pid = self.traced.next_exit() => {
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
        let Some(pid) = self.focus() else {
            return;
        };
        let snapshot = self.snapshot(pid, false);
        let width = self.width();
        let verdict = wrap(&verdict::verdict(&snapshot), width, "  ");
        self.print(&format!(
            "{}\n{verdict}\n",
            live::render_final(&snapshot, width)
        ));
    }

    /// The screen's `p` key: a profile of the model as it is now.
    fn profile_now(&mut self, outputs: &mut Outputs) {
        let snapshot = self.screen_mut().snapshot().cloned();
        let elapsed = self.traced.started().elapsed();
        let focus = self.focus();
        let (Some(snapshot), Some(mut namer)) =
            (snapshot, focus.and_then(|pid| self.traced.namer(pid)))
        else {
            self.screen_mut()
                .set_status("no profile yet: the first interval is not over".into());
            return;
        };
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

    fn interval_report(
        &mut self,
        source: &mut EventSource,
        outputs: &mut Outputs,
    ) -> Result<(), SessionError> {
        self.traced.reconcile(source);
        let width = self.width();
        let focus = self.focus();
        let footprint = self.traced.footprint();
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
            let mut namer = if focused {
                self.traced.namer(pid)
            } else {
                None
            };
            outputs.interval(&snapshot, namer.as_mut())?;
            if focused {
                on_screen = Some(snapshot);
            }
            if let Scope::Cgroup(_) = self.scope {
                self.retire_if_ended(pid);
            }
        }
        if let (Some(screen), Some(snapshot)) = (&mut self.screen, on_screen) {
            screen.show(snapshot, others);
        }
        Ok(())
    }

    /// A cgroup's process that ended is reported once more (above), then
    /// its model is dropped: processes come and go for as long as the
    /// cgroup lives.
    fn retire_if_ended(&mut self, pid: u32) {
        if self
            .traced
            .get(pid)
            .is_some_and(|process| process.tracker.ending.is_some())
        {
            self.traced.remove(pid);
        }
    }

    fn snapshot(&mut self, pid: u32, is_final: bool) -> Snapshot {
        let footprint = self.traced.footprint();
        self.snapshot_with(pid, is_final, footprint)
    }

    fn snapshot_with(
        &mut self,
        pid: u32,
        is_final: bool,
        footprint: crate::report::snapshot::Footprint,
    ) -> Snapshot {
        let heap = self.heap.as_ref().filter(|_| self.focus() == Some(pid));
        self.traced.snapshot(pid, is_final, heap, footprint)
    }

    /// The final report and outputs: the focus first, then every other
    /// process traced. A Ctrl-C meanwhile abandons them (`signals`).
    fn final_reports(
        &mut self,
        outputs: &mut Outputs,
        signals: &Signals,
    ) -> Result<(), SessionError> {
        let focus = self.focus();
        let mut pids = self.traced.pids();
        pids.sort_by_key(|&pid| Some(pid) != focus);
        let mut focus_snapshot = None;
        let width = self.width();
        let footprint = self.traced.footprint();
        for pid in pids {
            signals.check()?;
            let snapshot = self.snapshot_with(pid, true, footprint);
            if Some(pid) != focus {
                self.print(&format!("\n── pid {pid} ({}) ──\n", snapshot.command));
            }
            self.print(&live::render_final(&snapshot, width));
            self.print(&format!(
                "\n{}\n",
                wrap(&verdict::verdict(&snapshot), width, "  ")
            ));
            for notice in verdict::notices(&snapshot) {
                eprintln!("memtrace: note: {notice}");
            }
            if Some(pid) == focus {
                focus_snapshot = Some(snapshot);
            } else {
                outputs.interval(&snapshot, None)?;
            }
        }
        let (Some(snapshot), Some(pid)) = (focus_snapshot, focus) else {
            eprintln!("memtrace: no process was traced to the end: no final profile written");
            return Ok(());
        };
        let past = std::mem::take(&mut self.traced.get_mut(pid).expect("the focus is traced").past);
        let mut namer = self.traced.namer(pid).expect("the focus is traced");
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
