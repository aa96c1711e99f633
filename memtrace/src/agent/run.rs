//! The agent's loop. The kernel programs are loaded once and stay; the
//! processes traced change under them: every second /proc is scanned for
//! processes a target selects (a restarted service is a new process,
//! found again), children forked by traced processes are followed from
//! their fork and belong to their parent's target, and processes that end
//! are reported one last time and dropped. Every interval each process is
//! reconciled with /proc and its numbers go to the metrics; every push
//! interval its profile window goes to the pusher.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    signal::unix::{signal, SignalKind},
    time::{interval, MissedTickBehavior},
};

use super::{
    config::AgentConfig, error::AgentError, measure::target_metrics, selection::Selection,
};
use crate::{
    cli::Unwind,
    export::{
        metrics::{AgentCounts, Metrics, MetricsServer},
        pprof,
        push::{Deliver, HttpDestination, PprofDir, Pusher, SeriesLabels, TargetLabels, Windower},
    },
    intake::EventSource,
    kernel::{Tracer, TracerOptions},
    machine::Machine,
    proc::{cgroup_membership, container_id_in_path},
    report::state::TargetState,
    session::{Exits, Joining, SessionError, Stacks, Traced, DRAIN_EVERY},
    symbolize::{DebugSources, Debuginfod},
};

/// How often /proc is scanned for new processes of the targets.
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// Stacks held before those that explain no resident memory are pruned:
/// some tens of MiB at most.
pub const STACK_CAP: usize = 100_000;
/// How long queued windows get to reach their servers when the agent
/// stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A traced process and what the agent keeps for it.
struct Member {
    /// Its target's index in the configuration.
    target: usize,
    /// When it joined (its profiles' duration counts from here).
    since: Instant,
    /// Its profile windows; none when nothing is pushed.
    windower: Option<Windower>,
}

struct Agent {
    config: AgentConfig,
    traced: Traced,
    members: BTreeMap<u32, Member>,
    selection: Selection,
    metrics: Metrics,
    pusher: Option<Pusher>,
    host: String,
    stacks_pruned: u64,
}

/// Runs the agent until SIGTERM or SIGINT.
///
/// # Errors
///
/// An [`AgentError`] if the metrics address cannot be bound, the profile
/// directory cannot be used, or the kernel programs cannot be loaded or
/// attached. Once running, a process that cannot be traced is said on
/// standard error and skipped.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let metrics = Metrics::new();
    let server = config
        .metrics
        .map(|address| {
            MetricsServer::start(address, metrics.clone())
                .map_err(|source| AgentError::Metrics { address, source })
        })
        .transpose()?;
    let pusher = start_pusher(&config)?;

    let options = TracerOptions {
        // Children of a traced process are its target's too.
        follow_forks: true,
        ..TracerOptions::default()
    };
    let (mut tracer, maps) = Tracer::load(&options).map_err(SessionError::from)?;
    // Loading parsed the kernel's whole BTF: give that memory back.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let stacks = Stacks::new(maps.stacks, maps.hints, Unwind::Auto, options.stack_bytes);
    let debug = DebugSources {
        dirs: Vec::new(),
        debuginfod: Debuginfod::from_env(),
    };
    let traced = Traced::new(
        stacks,
        maps.targets,
        Box::new(maps.counters),
        Exits::new(),
        debug,
        Joining {
            forks: true,
            found: false,
        },
    );
    tracer.attach().map_err(SessionError::from)?;
    let mut source = EventSource::new(maps.events).map_err(|source| AgentError::Io {
        what: "cannot watch the ring buffer",
        source,
    })?;
    let mut terminate = signals(SignalKind::terminate())?;
    let mut interrupt = signals(SignalKind::interrupt())?;

    let mut agent = Agent {
        host: config
            .host
            .clone()
            .unwrap_or_else(|| Machine::this().host_name),
        config,
        traced,
        members: BTreeMap::new(),
        selection: Selection::default(),
        metrics,
        pusher,
        stacks_pruned: 0,
    };
    agent.scan(&mut source);
    eprintln!(
        "memtrace agent: {} target(s), {} process(es) now; metrics {}; profiles every {:?} to {}",
        agent.config.targets.len(),
        agent.members.len(),
        server.as_ref().map_or("off".to_owned(), |server| format!(
            "on http://{}/metrics",
            server.local_addr()
        )),
        agent.config.push_interval,
        match agent.pusher.is_some() {
            true => "their destinations",
            false => "nowhere (no [push] server or pprof_dir)",
        }
    );

    let mut drains = ticker(DRAIN_EVERY);
    let mut scans = ticker(SCAN_EVERY);
    let mut intervals = ticker(agent.config.interval);
    let mut pushes = ticker(agent.config.push_interval);
    // Each ticker's first tick is at once: the first interval and window
    // are a period away.
    intervals.tick().await;
    pushes.tick().await;
    loop {
        tokio::select! {
            ready = source.readable() => {
                ready.map_err(|source| AgentError::Io { what: "ring buffer", source })?;
                agent.traced.drain(&mut source);
            }
            _ = drains.tick() => {
                agent.traced.drain(&mut source);
            }
            _ = scans.tick() => agent.scan(&mut source),
            _ = intervals.tick() => agent.interval(&mut source),
            _ = pushes.tick() => agent.push_windows(),
            pid = agent.traced.next_exit() => {
                // Its last records first (an OOM kill says why it ended).
                agent.traced.drain(&mut source);
                agent.traced.exited(pid);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    agent.traced.drain(&mut source);
    agent.interval(&mut source);
    agent.push_windows();
    if let Some(pusher) = agent.pusher.take() {
        for counts in pusher.shutdown(SHUTDOWN_GRACE) {
            let dropped: u64 = counts.dropped.iter().map(|(_, count)| count).sum();
            eprintln!(
                "memtrace agent: {}: {} window(s) sent, {dropped} dropped",
                counts.destination, counts.sent
            );
        }
    }
    drop(tracer);
    Ok(())
}

impl Agent {
    /// Starts tracing the processes that started (or became a target's)
    /// since the last scan.
    fn scan(&mut self, source: &mut EventSource) {
        // Forks first: a child followed from its fork is not taken for a
        // new process.
        self.traced.drain(source);
        for (pid, target) in self.selection.scan(&self.config.targets) {
            if self.traced.get(pid).is_none() {
                let added = self
                    .traced
                    .add_running(pid)
                    .and_then(|()| self.traced.seed(pid));
                if let Err(err) = added {
                    self.traced.remove(pid);
                    if !matches!(err, SessionError::Proc(_)) {
                        eprintln!("memtrace agent: cannot trace pid {pid}: {err}");
                    }
                    continue;
                }
            }
            // A process already followed from its fork keeps its parent's
            // target.
            if !self.members.contains_key(&pid) {
                self.join(pid, target);
            }
        }
    }

    /// Makes traced process `pid` a member of target `target`.
    fn join(&mut self, pid: u32, target: usize) {
        let Some(process) = self.traced.get(pid) else {
            return;
        };
        let config = &self.config.targets[target];
        eprintln!(
            "memtrace agent: tracing pid {pid} ({}) for {}",
            process.command, config.name
        );
        let windower = self.pusher.as_ref().and_then(|_| {
            let cgroup = cgroup_membership(pid);
            let labels = TargetLabels {
                service_name: config.service_name.clone(),
                host: self.host.clone(),
                pid,
                command: process.command.clone(),
                container: cgroup
                    .as_deref()
                    .and_then(container_id_in_path)
                    .map(str::to_owned),
                cgroup,
                extra: config.labels.clone(),
            };
            SeriesLabels::new(&labels)
                .inspect_err(|err| {
                    eprintln!("memtrace agent: pid {pid}'s profiles are not pushed: {err}");
                })
                .ok()
                .map(|labels| Windower::new(labels, SystemTime::now()))
        });
        self.members.insert(
            pid,
            Member {
                target,
                since: Instant::now(),
                windower,
            },
        );
    }

    /// Children followed from their fork since the last look join their
    /// parent's target (a grandchild once its parent has).
    fn adopt_children(&mut self) {
        loop {
            let adopted: Vec<(u32, usize)> = self
                .traced
                .pids()
                .into_iter()
                .filter(|pid| !self.members.contains_key(pid))
                .filter_map(|pid| {
                    let parent = self.traced.get(pid)?.parent?;
                    Some((pid, self.members.get(&parent)?.target))
                })
                .collect();
            if adopted.is_empty() {
                return;
            }
            for (pid, target) in adopted {
                self.join(pid, target);
            }
        }
    }

    /// Reconciles every process with /proc, updates the metrics, and drops
    /// the processes that ended (after their last window).
    fn interval(&mut self, source: &mut EventSource) {
        self.traced.reconcile(source);
        self.adopt_children();
        let footprint = self.traced.footprint();
        let mut targets = Vec::new();
        let mut ended = Vec::new();
        for (&pid, member) in &self.members {
            if self.traced.get(pid).is_none() {
                continue;
            }
            let snapshot = self.traced.snapshot(pid, false, None, footprint);
            let name = &self.config.targets[member.target].name;
            targets.push(target_metrics(name, &snapshot));
            if snapshot.state != TargetState::Running {
                ended.push(pid);
            }
        }
        let any_ended = !ended.is_empty();
        for pid in ended {
            self.push_window(pid);
            self.traced.remove(pid);
            self.members.remove(&pid);
        }
        self.stacks_pruned += self.traced.prune_stacks(STACK_CAP) as u64;
        if any_ended {
            // A process's model, symbols and debug information (tens of
            // MiB for a libc with its debug file) were just freed: give the
            // pages back rather than keep them in the agent's RSS.
            // SAFETY: malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
        }
        self.metrics.update_targets(targets);
        self.metrics.update_agent(AgentCounts {
            lost_records: self.traced.lost().records(),
            traced_processes: self.members.len() as u64,
            stacks: self.traced.stacks.table.len() as u64,
            stacks_pruned: self.stacks_pruned,
            resident_bytes: footprint.rss,
        });
        if let Some(pusher) = &self.pusher {
            self.metrics.update_push(pusher.counts());
        }
    }

    /// Every process's window since the last.
    fn push_windows(&mut self) {
        self.adopt_children();
        let pids: Vec<u32> = self.members.keys().copied().collect();
        for pid in pids {
            self.push_window(pid);
        }
    }

    /// Process `pid`'s window since its last, to every destination.
    fn push_window(&mut self, pid: u32) {
        let (Some(pusher), Some(member)) = (&self.pusher, self.members.get_mut(&pid)) else {
            return;
        };
        let Some(windower) = member.windower.as_mut() else {
            return;
        };
        let mut parts = self.traced.parts(&[pid]);
        if parts.is_empty() {
            return;
        }
        let profile = pprof::profile(&mut parts, member.since.elapsed());
        drop(parts);
        match windower.window(&profile, SystemTime::now()) {
            Ok(window) => pusher.push(window),
            Err(err) => eprintln!("memtrace agent: pid {pid}'s window is not pushed: {err}"),
        }
    }
}

/// The pusher for the configured destinations, if there are any.
fn start_pusher(config: &AgentConfig) -> Result<Option<Pusher>, AgentError> {
    let mut destinations: Vec<Box<dyn Deliver>> = config
        .endpoints
        .iter()
        .cloned()
        .map(|endpoint| Box::new(HttpDestination::new(endpoint)) as Box<dyn Deliver>)
        .collect();
    if let Some(dir) = &config.pprof_dir {
        destinations.push(Box::new(PprofDir::open(&dir.path, dir.max_bytes)?));
    }
    if destinations.is_empty() {
        return Ok(None);
    }
    Pusher::start(destinations, config.push)
        .map(Some)
        .map_err(AgentError::Push)
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut ticker = interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

fn signals(kind: SignalKind) -> Result<tokio::signal::unix::Signal, AgentError> {
    signal(kind).map_err(|source| AgentError::Io {
        what: "cannot handle signals",
        source,
    })
}
