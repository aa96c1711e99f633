//! The traced processes and what they share: the kernel's target maps and
//! counters, the stack table, the exit watch. Records go in, one model per
//! process comes out; what is shown of them, and when, is the caller's
//! business (the interactive session, the agent).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    rc::Rc,
    time::{Duration, Instant},
};

use memtrace_common::{Counter, StackSource};

use super::{
    entries::Batch,
    exits::Exits,
    heap::HeapWatch,
    process::{Process, ReadingRules, Shared},
    record::Recording,
    stacks::Stacks,
    tracker::{Ending, Follow, Tracker},
    SessionError,
};
use crate::{
    attribution::NamedBaseline,
    export::Part,
    intake::{EventKind, Records},
    kernel::{maps_memory, KernelCounters, KernelError, Targets},
    model::reconcile::FOLIO_BATCH_PAGES,
    proc::{zero_page_pfn, ProcError, ProcessView},
    report::snapshot::{Footprint, Lost, Snapshot},
    symbolize::{DebugSources, Learned, Library, SharedLibrary},
};

/// The kernel side's counters: read from its map, or as a capture recorded
/// them.
pub trait Counters {
    fn read(&mut self, counter: Counter) -> Result<u64, KernelError>;
}

impl Counters for KernelCounters {
    fn read(&mut self, counter: Counter) -> Result<u64, KernelError> {
        KernelCounters::read(self, counter)
    }
}

/// Which processes join the traced set as the trace goes on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Joining {
    /// Children forked by a traced process (`--follow-forks`, and always
    /// for a cgroup).
    pub forks: bool,
    /// Processes the kernel side found in the traced cgroup.
    pub found: bool,
}

pub struct Traced {
    processes: BTreeMap<u32, Process>,
    /// Stacks are shared: the kernel keeps one map for every process.
    pub stacks: Stacks,
    targets: Targets,
    /// Processes whose exit a pidfd tells (see `exits`).
    exits: Exits,
    /// Names, resolved once for every process.
    library: SharedLibrary,
    counters: Box<dyn Counters>,
    joining: Joining,
    decode_errors: u64,
    /// Records lost as of the last reconciliation.
    lost_before: u64,
    /// The loss counters as last read.
    last_lost: Lost,
    rules: ReadingRules,
    started: Instant,
    /// When playing a capture back: how far into the recording it is.
    played_at: Option<Duration>,
    /// `memtrace record`'s capture, which every drain's records go to.
    recording: Option<Recording>,
    /// A process was removed: its stacks may be named by no one now.
    removed_since_prune: bool,
    /// See `Shared::as_of_recording`.
    as_of_recording: bool,
}

impl Traced {
    pub fn new(
        stacks: Stacks,
        targets: Targets,
        counters: Box<dyn Counters>,
        exits: Exits,
        debug: DebugSources,
        joining: Joining,
    ) -> Self {
        Self {
            processes: BTreeMap::new(),
            stacks,
            targets,
            exits,
            library: Library::shared(debug),
            counters,
            joining,
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
            played_at: None,
            recording: None,
            removed_since_prune: false,
            as_of_recording: false,
        }
    }

    /// Records every drain's records into `recording` from now on.
    pub fn record_to(&mut self, recording: Recording) {
        recording
            .borrow_mut()
            .rules(self.rules.zero_pfn, self.rules.lazyfree_slack);
        self.stacks.record_to(Rc::clone(&recording));
        let told = Rc::clone(&recording);
        let mut library = self.library.borrow_mut();
        library.tell(Box::new(move |learned| told.borrow_mut().learned(learned)));
        if recording.borrow().embeds_debug() {
            library.embed_debug();
        }
        drop(library);
        self.recording = Some(recording);
    }

    /// From now on, the trace is reported as of the moment a recording
    /// reached (see `Shared::as_of_recording`).
    pub fn hold_at_recorded_moment(&mut self) {
        self.as_of_recording = true;
    }

    /// What process `pid` holds in use now, by the names of the stacks
    /// that hold it.
    pub fn in_use_by_names(&mut self, pid: u32) -> Option<NamedBaseline> {
        let stacks = &self.stacks.table;
        self.processes
            .get_mut(&pid)
            .map(|process| process.in_use_by_names(stacks))
    }

    /// Measures every process's growth from its next snapshot on.
    pub fn measure_growth_from_next(&mut self) {
        for process in self.processes.values_mut() {
            process.measure_growth_from_next();
        }
    }

    /// Takes in what a capture's recording learnt of the code's files and
    /// names, before anything is named.
    pub fn recall(&mut self, learned: impl IntoIterator<Item = Learned>) {
        let mut library = self.library.borrow_mut();
        for learned in learned {
            library.recall(learned);
        }
    }

    /// Names every stack a process holds memory under or counted calls at,
    /// so that the capture being recorded carries every name a report
    /// could ask for: called as recording ends, and as a process leaves.
    fn name_every_stack(&mut self, pid: Option<u32>) {
        if self.recording.is_none() {
            return;
        }
        let stacks = &self.stacks.table;
        for (_, process) in self
            .processes
            .iter_mut()
            .filter(|(traced, _)| pid.is_none_or(|pid| **traced == pid))
        {
            process.name_every_stack(stacks);
        }
    }

    /// Recording ends: see [`Traced::name_every_stack`].
    pub fn name_every_recorded_stack(&mut self) {
        self.name_every_stack(None);
    }

    pub fn recording(&self) -> Option<&Recording> {
        self.recording.as_ref()
    }

    /// How long the trace has run (as recorded, for a capture played back).
    pub fn elapsed(&self) -> Duration {
        self.played_at.unwrap_or_else(|| self.started.elapsed())
    }

    /// Plays a capture back: `at` into the recording, with the rules its
    /// machine had.
    pub fn play_at(&mut self, at: Duration, rules: Option<ReadingRules>) {
        self.played_at = Some(at);
        if let Some(rules) = rules {
            self.rules = rules;
        }
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.processes.get(&pid)
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Process> {
        self.processes.get_mut(&pid)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.processes.keys().copied().collect()
    }

    /// Traces `pid` as the primary target from the moment the programs are
    /// attached; `launched`: memtrace started it (and it has yet to exec
    /// its program).
    pub fn add_primary(
        &mut self,
        pid: u32,
        launched: bool,
        stacks: StackSource,
    ) -> Result<(), SessionError> {
        self.targets.set_primary(pid, stacks)?;
        self.insert(Process::new(
            pid,
            Tracker::default(),
            u64::from(launched),
            self.library.clone(),
        ));
        self.set_source(pid, stacks);
        Ok(())
    }

    /// Traces running process `pid` besides any other (one already in the
    /// traced cgroup, or one the agent selects). Seed it once the programs
    /// are attached.
    pub fn add_running(&mut self, pid: u32) -> Result<(), SessionError> {
        if self.processes.contains_key(&pid) {
            return Ok(());
        }
        let mut process = Process::new(pid, Tracker::default(), 0, self.library.clone());
        process.stack_source = self.stacks.source_for(process.program());
        self.targets.follow(pid, process.stack_source)?;
        self.insert(process);
        Ok(())
    }

    /// Takes in what `pid` had resident before it was traced, and watches
    /// for its exit. Fails with `ProcError::Gone` if it is gone.
    pub fn seed(&mut self, pid: u32) -> Result<(), SessionError> {
        let rules = self.rules;
        let process = self
            .processes
            .get_mut(&pid)
            .ok_or(ProcError::Gone { pid })?;
        process.seed(rules)?;
        self.exits
            .watch(pid)
            .map_err(|_| SessionError::Proc(ProcError::Gone { pid }))
    }

    /// Stops tracing `pid` and hands back what was known of it.
    pub fn remove(&mut self, pid: u32) -> Option<Process> {
        self.name_every_stack(Some(pid));
        self.targets.forget(pid);
        self.stacks.forget(pid);
        self.removed_since_prune = true;
        self.processes.remove(&pid)
    }

    fn insert(&mut self, process: Process) {
        self.processes.insert(process.pid, process);
    }

    fn set_source(&mut self, pid: u32, stacks: StackSource) {
        if let Some(process) = self.processes.get_mut(&pid) {
            process.stack_source = stacks;
        }
    }

    /// The next traced process that exited: its last records are applied
    /// and it is marked ended.
    pub async fn next_exit(&mut self) -> u32 {
        self.exits.next().await
    }

    /// Marks `pid` as exited (its pidfd said so) once its last records are
    /// in, and stops tracing its PID, which may be reused.
    pub fn exited(&mut self, pid: u32) {
        if let Some(process) = self.processes.get_mut(&pid) {
            process.tracker.ending.get_or_insert(Ending::Exited);
        }
        self.targets.forget(pid);
    }

    /// Applies every waiting record; returns whether a reconciliation is due
    /// (something else changed a target's RSS).
    pub fn drain(&mut self, source: &mut dyn Records) -> bool {
        let mut reconcile = false;
        let mut joined = Vec::new();
        let processes = &mut self.processes;
        let stacks = &mut self.stacks;
        let targets = &mut self.targets;
        let decode_errors = &mut self.decode_errors;
        let joining = self.joining;
        let library = &self.library;
        let exits = &self.exits;
        let rules = self.rules;
        let mut batch = self.recording.as_ref().map(|_| Batch::default());
        source.drain(&mut |raw, decoded| {
            if let Some(batch) = batch.as_mut() {
                batch.add(raw);
            }
            let Ok(mut decoded) = decoded else {
                *decode_errors += 1;
                return;
            };
            if joining.found
                && matches!(decoded.event.kind, EventKind::Found)
                && !processes.contains_key(&decoded.tgid)
            {
                let pid = decoded.tgid;
                let mut process = Process::new(pid, Tracker::default(), 0, library.clone());
                // Gone already if either fails: nothing of it to explain.
                if process.seed(rules).is_ok() && exits.watch(pid).is_ok() {
                    let source = stacks.source_for(process.program());
                    if targets.set_stacks(pid, source).is_ok() {
                        process.stack_source = source;
                    }
                    joined.push(format!("found pid {pid} ({})", process.command));
                    processes.insert(pid, process);
                }
                return;
            }
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
                Follow::ProcessMadvise => process.process_madvise(&decoded),
                Follow::ThreadExit => {
                    if !process.view.alive() {
                        process.tracker.ending.get_or_insert(Ending::Exited);
                        targets.forget(process.pid);
                    }
                }
                Follow::Forked {
                    child,
                    shares_memory,
                    // The kernel side sends forks of new processes only (not
                    // threads); one that already ended is still followed, for
                    // the records it left.
                } if joining.forks => {
                    let tracker = if shares_memory {
                        Tracker::sharing_parents_memory()
                    } else {
                        process.tracker.forked()
                    };
                    let parent = process.pid;
                    // Gone already if this fails: its exit record says so.
                    let _ = exits.watch(child);
                    let mut child = Process::new(child, tracker, 0, library.clone());
                    child.parent = Some(parent);
                    child.stack_source = process.stack_source;
                    child.keep_code_files();
                    joined.push(format!(
                        "following pid {} ({}), forked by pid {parent}",
                        child.pid, child.command
                    ));
                    processes.insert(child.pid, child);
                }
                Follow::Forked { .. } | Follow::Nothing | Follow::Ended => {}
            }
        });
        if let (Some(recording), Some(batch)) = (&self.recording, batch) {
            recording.borrow_mut().batch(&batch);
        }
        self.stacks.sync();
        for line in joined {
            eprintln!("memtrace: {line}");
        }
        reconcile
    }

    /// Reads /proc and folds it into every model.
    pub fn reconcile(&mut self, source: &mut dyn Records) {
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

    /// Drops the stacks no traced process names any more (those of
    /// processes removed since the last call) and the unwind tables of
    /// files none maps, and keeps the stack table near
    /// `cap` stacks: past it, the stacks that hold no mapping or resident
    /// page go too, their counts kept under no stack. Stacks that explain
    /// resident memory stay, over the cap if need be. Returns how many
    /// stacks went.
    pub fn prune_stacks(&mut self, cap: usize) -> usize {
        let over = self.stacks.table.len() > cap;
        if !self.removed_since_prune && !over {
            return 0;
        }
        self.removed_since_prune = false;
        self.stacks.drop_unused_tables();
        let mut holding = HashSet::new();
        for process in self.processes.values() {
            process.tracker.model.stacks_holding(|stack| {
                holding.insert(stack);
            });
        }
        let mut named = holding.clone();
        for process in self.processes.values() {
            process.tracker.model.activity().stacks_counted(|stack| {
                named.insert(stack);
            });
        }
        let mut pruned = self.stacks.table.retain(|stack| named.contains(&stack));
        if self.stacks.table.len() > cap {
            for process in self.processes.values_mut() {
                process
                    .tracker
                    .model
                    .fold_activity_stacks(|stack| holding.contains(&stack));
            }
            pruned += self.stacks.table.retain(|stack| holding.contains(&stack));
        }
        pruned
    }

    /// The parts of a profile of the traced processes `pids`.
    pub fn parts(&mut self, pids: &[u32]) -> Vec<Part<'_>> {
        let stacks = &self.stacks.table;
        self.processes
            .iter_mut()
            .filter(|(pid, _)| pids.contains(pid))
            .map(|(_, process)| process.part(stacks))
            .collect()
    }

    /// Records lost so far, over every traced process. A counter the
    /// kernel will not give keeps its last value and the loss is marked
    /// unknown, never taken for 0; the failure is said once.
    pub fn lost(&mut self) -> Lost {
        let last = self.last_lost;
        let mut failure = None;
        let mut read = |counter, last| {
            self.read_counter(counter).unwrap_or_else(|err| {
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
            stack_samples: read(Counter::LostStackSamples, last.stack_samples),
            stack_samples_skipped: read(Counter::StackSamplesSkipped, last.stack_samples_skipped),
            targets: read(Counter::LostTargets, last.targets),
            undecodable: self.decode_errors,
            counters_unreadable: failure.is_some(),
        };
        if let Some(err) = failure.filter(|_| !last.counters_unreadable) {
            eprintln!("memtrace: {err}: records may be lost without memtrace knowing");
        }
        self.last_lost = lost;
        lost
    }

    /// Reads one of the kernel side's counters, and records what it said.
    fn read_counter(&mut self, counter: Counter) -> Result<u64, KernelError> {
        let value = self.counters.read(counter);
        if let Some(recording) = &self.recording {
            recording
                .borrow_mut()
                .counter(counter, value.as_ref().ok().copied());
        }
        value
    }

    /// What memtrace itself takes, to trace.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            rss: ProcessView::new(std::process::id())
                .totals()
                .map_or(0, |totals| totals.status.rss),
            unwind_tables: self.stacks.table_bytes() as u64,
            stacks: self.stacks.table.len() as u64,
            kernel_maps: maps_memory(),
        }
    }

    /// A snapshot of traced process `pid`, with `heap` its heap profile if
    /// it is the process the profile is of, and `footprint` memtrace's own
    /// (read once for all the snapshots of a moment).
    pub fn snapshot(
        &mut self,
        pid: u32,
        is_final: bool,
        heap: Option<&HeapWatch>,
        footprint: Footprint,
    ) -> Snapshot {
        let lost = self.lost();
        let stack_walks = self.read_counter(Counter::FaultStackWalks).unwrap_or(0)
            + self.read_counter(Counter::FaultStackSamples).unwrap_or(0);
        let shared = Shared {
            stacks: &self.stacks.table,
            lost,
            stack_walks,
            elapsed: self.elapsed(),
            heap,
            footprint,
            as_of_recording: self.as_of_recording,
        };
        let process = self
            .processes
            .get_mut(&pid)
            .expect("snapshots are of traced processes");
        process.snapshot(is_final, &shared)
    }
}
