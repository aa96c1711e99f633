//! What the session keeps per traced process: the primary target and, with
//! `--follow-forks`, each child it forks, every one its own address space.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use super::{
    heap::HeapWatch,
    tracker::{madvise_target, Ending, Tracker},
    SessionError,
};
use memtrace_common::StackSource;

use crate::{
    attribution::{self, NamedBaseline},
    elf::ProgramKind,
    export::Part,
    intake::{Decoded, EventKind, StackSample, StackTable},
    model::{
        reconcile::{Busy, Moment, Outcome, Reading},
        Backing, ExecImage,
    },
    proc::{cgroup_memory, numa_balancing, KernelTotals, ProcessView},
    report::{
        assemble::{Facts, Past},
        snapshot::{Footprint, Lost, Snapshot},
        state::TargetState,
        verdict,
    },
    runtime::RuntimeInfo,
    symbolize::{Namer, SharedLibrary, Symbolizer},
    unwind::{ProcessUnwinder, TableCache, Unwound},
};

/// How /proc is read for every process alike.
#[derive(Clone, Copy, Debug)]
pub struct ReadingRules {
    pub zero_pfn: Option<u64>,
    /// See [`Reading::lazyfree_slack`].
    pub lazyfree_slack: u64,
}

/// /proc as read for a reconciliation.
pub struct ProcReading {
    vmas: Vec<crate::model::reconcile::KernelVma>,
    totals: KernelTotals,
    /// The model's LazyFree per VMA at the time of the read.
    lazyfree_at_read: Vec<u64>,
}

/// What a snapshot of any process needs from the session.
pub struct Shared<'a> {
    pub stacks: &'a StackTable,
    pub lost: Lost,
    /// Stacks walked for faults (the kernel counts them for every target).
    pub stack_walks: u64,
    pub elapsed: Duration,
    /// The heap profile, for the process it belongs to.
    pub heap: Option<&'a HeapWatch>,
    pub footprint: Footprint,
    /// The trace is reported as of a moment of a recording (`report --to`,
    /// or where a capture is cut off): /proc is not asked again, and a
    /// process whose end was not recorded by then is running, as /proc last
    /// read it.
    pub as_of_recording: bool,
}

pub struct Process {
    pub pid: u32,
    pub view: ProcessView,
    pub tracker: Tracker,
    symbolizer: Symbolizer,
    unwinder: ProcessUnwinder,
    /// How the kernel side takes its stacks.
    pub stack_source: StackSource,
    last_kernel: Option<KernelTotals>,
    last_outcome: Outcome,
    /// What its earlier snapshots left: history, growth baseline.
    pub past: Past,
    pub command: String,
    /// Its PID in its own PID namespace, when that differs (a container's).
    pid_in_namespace: Option<u32>,
    executable: Option<String>,
    /// Execs that are part of starting the process (1 for `-- CMD`).
    pub expected_execs: u64,
    /// The traced process that forked it, when it was followed from its
    /// fork.
    pub parent: Option<u32>,
    pub runtime: Option<RuntimeInfo>,
    /// Notes for the end of the report, by what each is about.
    notices: BTreeMap<String, String>,
}

impl Process {
    pub fn new(
        pid: u32,
        mut tracker: Tracker,
        expected_execs: u64,
        library: SharedLibrary,
    ) -> Self {
        let view = ProcessView::new(pid);
        tracker.model.set_numa_hinting(numa_balancing());
        if let Some(limit) = view.stack_limit() {
            tracker.model.set_stack_limit(limit);
        }
        Self {
            pid,
            command: view.comm().unwrap_or_default(),
            pid_in_namespace: view.namespace_pid().filter(|&inner| inner != pid),
            view,
            tracker,
            symbolizer: Symbolizer::new(pid, library),
            unwinder: ProcessUnwinder::default(),
            stack_source: StackSource::default(),
            last_kernel: None,
            last_outcome: Outcome::default(),
            past: Past::default(),
            executable: None,
            expected_execs,
            parent: None,
            runtime: None,
            notices: BTreeMap::new(),
        }
    }

    /// Takes in what was resident before attaching.
    pub fn seed(&mut self, rules: ReadingRules) -> Result<(), SessionError> {
        let vmas = self.view.smaps()?;
        let view = &self.view;
        let reading = Reading {
            vmas: &vmas,
            busy: &Busy::default(),
            moment: Moment::Attach,
            scan_all: false,
            zero_pfn: rules.zero_pfn,
            lazyfree_slack: rules.lazyfree_slack,
            lazyfree_at_read: &[],
        };
        let pagemap = view.pagemap().ok();
        self.tracker
            .model
            .reconcile(reading, |pages| pagemap.as_ref()?.read(pages).ok());
        self.last_kernel = Some(self.view.totals()?);
        self.keep_code_files();
        Ok(())
    }

    /// Opens every code file mapped now, so its names can be read after
    /// the process is gone (see `symbolize::Binaries`).
    pub fn keep_code_files(&mut self) {
        for (_, extent) in self.tracker.model.extents().iter() {
            if let Backing::File {
                path: Some(path), ..
            } = &extent.backing
            {
                if extent.prot & libc::PROT_EXEC as u32 != 0 {
                    self.symbolizer.keep_file(path);
                }
            }
        }
    }

    /// The exec replaced the address space: learn its mappings now, so the
    /// faults that follow are classified right.
    pub fn exec_happened(&mut self) {
        self.runtime = None;
        // The same addresses now hold another program's code.
        self.symbolizer.reset();
        self.unwinder.reset();
        // The exec that starts a `-- CMD` is expected; any other replaces
        // what the user was looking at.
        if self.tracker.model.activity().execs > self.expected_execs {
            eprintln!(
                "memtrace: pid {} called execve: its address space was replaced, and the model \
                 starts afresh (memory released by the exec counts as \"execve\")",
                self.pid
            );
        }
        self.tracker.model.exec_image(ExecImage {
            program: self
                .view
                .exe()
                .map(|path| path.to_string_lossy().into_owned()),
            interpreter_base: self.view.interpreter_base(),
        });
        if let Ok(vmas) = self.view.smaps() {
            self.tracker
                .model
                .sync_extents(&vmas, &Busy::default(), Moment::Interval);
        }
        self.keep_code_files();
    }

    /// Unwinds one of the process's stack samples.
    pub fn unwind(
        &mut self,
        tables: &mut TableCache,
        sample: &StackSample,
        stack_bytes: usize,
    ) -> Unwound {
        self.unwinder.unwind(
            self.pid,
            self.tracker.model.extents(),
            tables,
            sample,
            stack_bytes,
        )
    }

    /// The program the process runs now, as far as taking stacks goes.
    pub fn program(&self) -> Option<ProgramKind> {
        self.view.program()
    }

    /// Follows a `process_madvise` the process made, resolving its pidfd
    /// through /proc (see [`madvise_target`]).
    pub fn process_madvise(&mut self, decoded: &Decoded) {
        let EventKind::ProcessMadvise(call) = &decoded.event.kind else {
            return;
        };
        let target = madvise_target(call, self.pid, |pidfd| self.view.pidfd_target(pidfd));
        self.tracker.process_madvise(decoded, target);
    }

    /// Names the file just mapped at `start..end` (an mmap only has its fd),
    /// so its code can be symbolized even if the process is gone before the
    /// next reading of /proc.
    pub fn learn_path(&mut self, start: u64, end: u64) {
        if let Some(path) = self.view.mapped_file(start, end) {
            let code = self
                .tracker
                .model
                .extents()
                .find(start)
                .is_some_and(|(_, extent)| extent.prot & libc::PROT_EXEC as u32 != 0);
            if code {
                self.symbolizer.keep_file(&path);
            }
            self.tracker.model.name_file(start, path);
        }
    }

    /// Reads /proc for the reconciliation, before the session drains the
    /// events that happened meanwhile.
    pub fn read_proc(&self) -> Option<ProcReading> {
        if self.tracker.ending.is_some() {
            return None;
        }
        let vmas = self.view.smaps().ok()?;
        let totals = self.view.totals().ok()?;
        let model = &self.tracker.model;
        let lazyfree_at_read = vmas
            .iter()
            .map(|vma| model.resident_in(vma.pages()).2)
            .collect();
        Some(ProcReading {
            vmas,
            totals,
            lazyfree_at_read,
        })
    }

    /// Folds a reading of /proc (see [`Self::read_proc`]) into the model.
    pub fn reconcile(
        &mut self,
        proc: ProcReading,
        busy: &Busy,
        scan_all: bool,
        rules: ReadingRules,
    ) {
        let view = &self.view;
        let reading = Reading {
            vmas: &proc.vmas,
            busy,
            moment: Moment::Interval,
            scan_all,
            zero_pfn: rules.zero_pfn,
            lazyfree_slack: rules.lazyfree_slack,
            lazyfree_at_read: &proc.lazyfree_at_read,
        };
        let pagemap = view.pagemap().ok();
        self.last_outcome = self
            .tracker
            .model
            .reconcile(reading, |pages| pagemap.as_ref()?.read(pages).ok());
        self.last_kernel = Some(proc.totals);
    }

    /// Refreshes what can change under the process (its name, program and
    /// runtime after an exec).
    fn look(&mut self, is_final: bool) {
        if is_final {
            // The final numbers come from a fresh look at /proc.
            if let Ok(totals) = self.view.totals() {
                self.last_kernel = Some(totals);
            }
        }
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
                    Backing::File { path, .. } => path.clone(),
                    _ => None,
                })
                .collect();
            self.runtime = Some(self.view.runtime(&mapped));
        }
    }

    pub fn snapshot(&mut self, is_final: bool, shared: &Shared<'_>) -> Snapshot {
        let ended = self.tracker.ending.is_some();
        let alive = !ended && (shared.as_of_recording || self.view.alive());
        let look = alive && !shared.as_of_recording;
        if look {
            self.look(is_final);
        }
        self.symbolizer.refresh();
        let state = match self.tracker.ending {
            Some(Ending::OomKilled) => TargetState::OomKilled,
            Some(Ending::Exited) => TargetState::Exited,
            None if !alive => TargetState::Exited,
            None => TargetState::Running,
        };
        let facts = Facts {
            is_final,
            elapsed: shared.elapsed,
            pid: self.pid,
            pid_in_namespace: self.pid_in_namespace,
            command: &self.command,
            executable: self.executable.as_deref(),
            state,
            kernel: self.last_kernel,
            reconcile: self.last_outcome,
            lost: shared.lost,
            records: self.tracker.records,
            stack_walks: shared.stack_walks,
            process_madvise_unresolved: self.tracker.unresolved_process_madvise,
            cgroup: if look { cgroup_memory(self.pid) } else { None },
            oom_kill: self.tracker.oom_kill,
            runtime: self.runtime.clone(),
            heap: shared
                .heap
                .and_then(|heap| Some((heap.source(), heap.latest()?))),
            footprint: shared.footprint,
            stack_source: self.stack_source,
        };
        let mut namer = Namer {
            stacks: shared.stacks,
            symbolizer: &mut self.symbolizer,
            model: &self.tracker.model,
        };
        let snapshot = self.past.snapshot(facts, &mut namer);
        for notice in verdict::notices(&snapshot) {
            self.notices.insert(notice.about, notice.text);
        }
        snapshot
    }

    /// The notes gathered over the trace, for the end of the report.
    pub fn notices(&self) -> impl Iterator<Item = &String> {
        self.notices.values()
    }

    /// This process's part of a profile.
    pub fn part<'a>(&'a mut self, stacks: &'a StackTable) -> Part<'a> {
        Part {
            pid: self.pid,
            command: self.command.clone(),
            executable: self.executable.clone(),
            namer: self.namer(stacks),
        }
    }

    /// Names every stack this process holds memory under or counted calls
    /// at (see `Traced::name_every_stack`).
    pub fn name_every_stack(&mut self, stacks: &StackTable) {
        let model = &self.tracker.model;
        let mut ids = HashSet::new();
        model.stacks_holding(|stack| {
            ids.insert(stack);
        });
        model.activity().stacks_counted(|stack| {
            ids.insert(stack);
        });
        let mut namer = self.namer(stacks);
        for id in ids {
            namer.named(Some(id));
        }
    }

    /// What the process holds in use now, by the names of the stacks that
    /// hold it (a baseline for another capture: `report --diff-base`).
    pub fn in_use_by_names(&mut self, stacks: &StackTable) -> NamedBaseline {
        attribution::in_use_by_names(&mut self.namer(stacks))
    }

    /// Measures growth from the next snapshot on (`report --from`).
    pub fn measure_growth_from_next(&mut self) {
        self.past.measure_growth_from_next();
    }

    /// What exporters need to name this process's stacks.
    pub fn namer<'a>(&'a mut self, stacks: &'a StackTable) -> Namer<'a> {
        Namer {
            stacks,
            symbolizer: &mut self.symbolizer,
            model: &self.tracker.model,
        }
    }
}
