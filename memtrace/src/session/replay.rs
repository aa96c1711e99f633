//! `memtrace report FILE`: a capture played back through the session's own
//! code.
//!
//! The capture holds what the live session consumed, in order: the ring
//! buffer's drains, the interval ticks, the exits pidfds told, how it
//! stopped; and the answers it got on the way from /proc, from the kernel
//! side's counters and from its stack table. Playing it back, the drains,
//! ticks and exits drive the same [`Traced`] and [`Session`] steps live
//! tracing takes, and the answers come from the capture instead of the
//! machine. The model, reconciliation, report and outputs are the live
//! ones, so the report is the live run's, figure for figure.
//!
//! Answers are matched by what was asked (the process and the question, the
//! counter): the playback asks the same questions in the same order as the
//! recording did, but an answer is written when it was given, which may be
//! before the step that asked for it is (a drain's batch is written when
//! the drain is over).

use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    ffi::OsString,
    fs::File,
    io::{self, BufReader},
    path::Path,
    rc::Rc,
    time::Duration,
};

use memtrace_common::Counter;

use super::{
    contents::open_capture,
    entries::{decode_pid, decode_rules, Batch, CounterReading, ProcAnswer, StackEntry},
    exits::Exits,
    heap::HeapWatch,
    launch,
    outputs::Outputs,
    process::ReadingRules,
    scope::CgroupScope,
    signals::Signals,
    stacks::{StackRecord, Stacks},
    start_pid,
    traced::{Counters, Joining, Traced},
    Scope, Session, SessionError, Stop,
};
use crate::{
    attribution::NamedBaseline,
    capture::{CaptureError, CaptureReader, Ending, Entry, Kind},
    cli::{self, Invocation, TraceOptions, Window},
    elf::ProgramKind,
    intake::{decode, Records, Sink, StackEnd, StackId},
    kernel::{KernelError, Targets},
    proc::{play_answers, Answers},
    safe_file::{OutputPolicy, Owner},
    symbolize::{DebugSources, Debuginfod, Learned},
};

/// What drives the session, in the order the recording took it.
enum Step {
    /// A drain of the ring buffer, its records back to back.
    Drain(Vec<u8>),
    /// An interval's tick.
    Tick,
    /// A pidfd said process `pid` exited.
    Exit(u32),
    /// How the session stopped.
    Stop(String),
    /// `--go-pprof` took this heap profile.
    Heap(Vec<u8>),
}

/// How many steps ahead of the one being played an answer is looked for.
/// A step's answers are written next to it (before a drain's batch, after
/// a tick); one not found this close was never given (the recording did
/// not ask it), and looking further would read the whole capture.
const LOOKAHEAD_STEPS: usize = 3;
/// Answers and counter readings the playback did not ask for are dropped
/// this many steps after they were read.
const KEEP_UNASKED_STEPS: u64 = 4;

/// The capture, read as far as the playback needs.
struct Player {
    reader: CaptureReader<BufReader<File>>,
    /// Entries of the chunk being read, not taken yet.
    entries: VecDeque<Entry>,
    steps: VecDeque<(Duration, Step)>,
    /// Steps read so far: what answers are dated by.
    steps_read: u64,
    /// Answers and counter readings not asked for yet, with the number of
    /// steps read before them.
    answers: VecDeque<(u64, ProcAnswer)>,
    counters: VecDeque<(u64, CounterReading)>,
    walked: Vec<(StackId, Vec<u64>, Option<StackEnd>)>,
    unwound: HashMap<StackId, (Vec<u64>, Option<StackEnd>)>,
    rules: Option<ReadingRules>,
    target: Option<u32>,
    /// The cgroup traced, as the recording described it (pid 0).
    cgroup: Vec<u8>,
    /// Where reading stopped on bad bytes (the entries before it are
    /// played).
    error: Option<CaptureError>,
    done: bool,
}

impl Player {
    fn open(path: &Path) -> Result<Self, SessionError> {
        Ok(Self {
            reader: open_capture(path)?,
            entries: VecDeque::new(),
            steps: VecDeque::new(),
            steps_read: 0,
            answers: VecDeque::new(),
            counters: VecDeque::new(),
            walked: Vec::new(),
            unwound: HashMap::new(),
            rules: None,
            target: None,
            cgroup: Vec::new(),
            error: None,
            done: false,
        })
    }

    /// Reads one more entry into its place; `false` at the end.
    fn pull(&mut self) -> bool {
        while self.entries.is_empty() {
            if self.done {
                return false;
            }
            match self.reader.next_chunk() {
                Ok(Some(chunk)) => self.entries.extend(chunk.entries),
                Ok(None) => self.done = true,
                Err(err) => {
                    self.error = Some(err);
                    self.done = true;
                }
            }
        }
        let Some(entry) = self.entries.pop_front() else {
            return false;
        };
        let at = Duration::from_nanos(entry.time_ns);
        let payload = entry.payload;
        let read = self.steps_read;
        if matches!(
            entry.kind,
            Kind::Batch | Kind::Tick | Kind::Exit | Kind::Stop | Kind::Heap
        ) {
            self.steps_read += 1;
            // What was never asked for by now never will be.
            let stale = |dated: u64| dated + KEEP_UNASKED_STEPS < read;
            while self.answers.front().is_some_and(|(dated, _)| stale(*dated)) {
                self.answers.pop_front();
            }
            while self
                .counters
                .front()
                .is_some_and(|(dated, ..)| stale(*dated))
            {
                self.counters.pop_front();
            }
        }
        match entry.kind {
            Kind::Batch => self.steps.push_back((at, Step::Drain(payload))),
            Kind::Tick => self.steps.push_back((at, Step::Tick)),
            Kind::Exit => {
                if let Some((pid, _)) = decode_pid(&payload) {
                    self.steps.push_back((at, Step::Exit(pid)));
                }
            }
            Kind::Stop => self.steps.push_back((
                at,
                Step::Stop(String::from_utf8_lossy(&payload).into_owned()),
            )),
            Kind::Heap => self.steps.push_back((at, Step::Heap(payload))),
            Kind::Proc => {
                if let Some(answer) = ProcAnswer::decode(&payload) {
                    self.answers.push_back((read, answer));
                }
            }
            Kind::Counter => {
                if let Some(reading) = CounterReading::decode(&payload) {
                    self.counters.push_back((read, reading));
                }
            }
            Kind::Stack => {
                if let Some(stack) = StackEntry::decode(&payload) {
                    match stack.sample {
                        Some(sample) => {
                            self.unwound.insert(sample, (stack.frames, stack.end));
                        }
                        None => self.walked.push((stack.id, stack.frames, stack.end)),
                    }
                }
            }
            Kind::Rules => {
                self.rules =
                    decode_rules(&payload).map(|(zero_pfn, lazyfree_slack)| ReadingRules {
                        zero_pfn,
                        lazyfree_slack,
                    });
            }
            Kind::Target => {
                if let Some((pid, cgroup)) = decode_pid(&payload) {
                    self.target = Some(pid);
                    self.cgroup = cgroup.to_vec();
                }
            }
            // Read before playing (see `learned`).
            Kind::Note | Kind::Symbol | Kind::Debug | Kind::Unknown(_) => {}
        }
        true
    }

    /// The next step, read up to (with what was written before it); `None`
    /// at the end.
    fn next_step(&mut self) -> Option<&(Duration, Step)> {
        while self.steps.is_empty() && self.pull() {}
        self.steps.front()
    }

    /// Reads until `found` finds what it looks for in what was read, at
    /// most [`LOOKAHEAD_STEPS`] steps ahead.
    fn pull_until<T>(&mut self, mut found: impl FnMut(&mut Self) -> Option<T>) -> Option<T> {
        loop {
            if let Some(value) = found(self) {
                return Some(value);
            }
            if self.steps.len() > LOOKAHEAD_STEPS || !self.pull() {
                return None;
            }
        }
    }

    /// The process traced, and the rules its machine had, from the start
    /// of the capture.
    fn start(&mut self) -> Option<(u32, Option<ReadingRules>)> {
        let target = self.pull_until(|player| player.target)?;
        Some((target, self.rules))
    }
}

/// The player, shared by the playback loop and the parts of the session
/// that ask it (on the session's one thread).
#[derive(Clone)]
struct Shared(Rc<RefCell<Player>>);

impl Answers for Shared {
    fn answer(&mut self, pid: u32, question: &str) -> Option<io::Result<Vec<u8>>> {
        self.0.borrow_mut().pull_until(|player| {
            let position = player
                .answers
                .iter()
                .position(|(_, answer)| answer.pid == pid && answer.question == question)?;
            player
                .answers
                .remove(position)
                .map(|(_, answer)| answer.answer)
        })
    }
}

impl Counters for Shared {
    fn read(&mut self, counter: Counter) -> Result<u64, KernelError> {
        let code = counter as u32;
        let value = self.0.borrow_mut().pull_until(|player| {
            let position = player
                .counters
                .iter()
                .position(|(_, reading)| reading.counter == code)?;
            player
                .counters
                .remove(position)
                .map(|(_, reading)| reading.value)
        });
        value.flatten().ok_or_else(|| KernelError::Map {
            map: "COUNTERS",
            detail: format!("the capture has no reading of {counter:?} here"),
        })
    }
}

impl StackRecord for Shared {
    fn unwound(&mut self, sample: StackId) -> Option<(Vec<u64>, Option<StackEnd>)> {
        self.0.borrow_mut().unwound.remove(&sample)
    }

    fn walked(&mut self) -> Vec<(StackId, Vec<u64>, Option<StackEnd>)> {
        let mut player = self.0.borrow_mut();
        // A drain's walked stacks are written right after its batch: read
        // up to the next step.
        player.next_step();
        std::mem::take(&mut player.walked)
    }
}

/// The drains of a capture: each takes the next recorded batch, if that is
/// the next step (a drain the recording did not make takes nothing).
impl Records for Shared {
    fn drain(&mut self, sink: &mut Sink<'_>) {
        let batch = {
            let mut player = self.0.borrow_mut();
            match player.next_step() {
                Some((_, Step::Drain(_))) => match player.steps.pop_front() {
                    Some((_, Step::Drain(batch))) => batch,
                    _ => return,
                },
                _ => return,
            }
        };
        for record in Batch::records(&batch) {
            sink(record, decode(record));
        }
    }
}

/// Plays the capture at `path` back, with `options` for what to write
/// (the tracing options are the recording's), over `window`, comparing with
/// the end of the capture `diff_base` when one is given.
pub async fn report(
    path: &Path,
    options: &TraceOptions,
    window: Window,
    diff_base: Option<&Path>,
) -> Result<Stop, SessionError> {
    let base = diff_base.map(held_at_end).transpose()?;
    let policy = OutputPolicy {
        force: options.force,
        owner: Owner::invoking_user(),
    };
    let mut outputs = Outputs::open(options, &policy)?;
    let (mut session, shared) = start_playback(path, options, outputs.json_on_stdout())?;
    if let Some((label, held)) = base {
        let focus = session.focus().ok_or_else(|| SessionError::Unplayable {
            path: path.to_owned(),
            why: "--diff-base compares one program's captures, and this is a cgroup's".into(),
        })?;
        if let Some(process) = session.traced.get_mut(focus) {
            process.past.measure_growth_from(label, held);
        }
    }
    let signals = Signals::new()?;
    let played = session.play(&shared, &mut outputs, window)?;
    let stop = match played {
        Played::Stopped(stop) => {
            session.finish_playing(&shared);
            stop
        }
        Played::CutOff => {
            let ending = shared.0.borrow().reader.ending().cloned();
            if let Some(ending @ Ending::CutOff(_)) = ending {
                // Said before the report, which is as of the cut: what came
                // after it is not known.
                eprintln!(
                    "memtrace: {ending}; the report below covers the trace up to there, and \
                     what became of the process after it is not known"
                );
            }
            session.traced.hold_at_recorded_moment();
            Stop::Interrupt
        }
        Played::Reached(to) => {
            eprintln!(
                "memtrace: the report below is as of {:.3} s into the recording (--to)",
                to.as_secs_f64()
            );
            session.traced.hold_at_recorded_moment();
            Stop::Duration
        }
    };
    session.final_reports(&mut outputs, &signals)?;
    play_answers(None);
    // Reported up to the bad bytes; then said, as a corrupt capture.
    let error = shared.0.borrow_mut().error.take();
    match error {
        Some(source) => Err(SessionError::Capture {
            path: path.to_owned(),
            source,
        }),
        None => Ok(stop),
    }
}

/// What the program of the capture at `base` held in use at its end, by
/// stack names (a baseline for `--diff-base`), and how to name the capture.
fn held_at_end(base: &Path) -> Result<(String, NamedBaseline), SessionError> {
    let unplayable = |why: &str| SessionError::Unplayable {
        path: base.to_owned(),
        why: why.to_owned(),
    };
    // Played for its figures only: no output, nothing printed.
    let argv = ["memtrace", "-q", "report"].map(OsString::from);
    let quiet = cli::parse(argv.into_iter().chain([base.as_os_str().to_owned()]))
        .map_err(|_| unplayable("cannot be played quietly"))?
        .options;
    let policy = OutputPolicy {
        force: false,
        owner: Owner::invoking_user(),
    };
    let mut outputs = Outputs::open(&quiet, &policy)?;
    let (mut session, shared) = start_playback(base, &quiet, false)?;
    let played = session.play(&shared, &mut outputs, Window::default());
    if let Ok(Played::Stopped(_)) = played {
        session.finish_playing(&shared);
    }
    play_answers(None);
    played?;
    // A base cut short by bad bytes would understate what it held.
    if let Some(source) = shared.0.borrow_mut().error.take() {
        return Err(SessionError::Capture {
            path: base.to_owned(),
            source,
        });
    }
    let focus = session.focus().ok_or_else(|| {
        unplayable("--diff-base compares one program's captures, and this is a cgroup's")
    })?;
    let held = session.traced.in_use_by_names(focus).unwrap_or_default();
    Ok((base.display().to_string(), held))
}

/// The session a capture plays back through, ready to play, and the
/// player it asks; its live lines go to stderr when `live_to_stderr`.
fn start_playback(
    path: &Path,
    options: &TraceOptions,
    live_to_stderr: bool,
) -> Result<(Session, Shared), SessionError> {
    let player = Player::open(path)?;
    let unplayable = |why: String| SessionError::Unplayable {
        path: path.to_owned(),
        why,
    };
    let recorded = cli::parse(&player.reader.header().command)
        .map_err(|usage| unplayable(format!("its command line does not read: {usage:?}")))?;
    let invocation = recorded
        .invocation()
        .map_err(|usage| unplayable(format!("its command line does not read: {usage:?}")))?;
    let recorded_options = &recorded.options;
    let shared = Shared(Rc::new(RefCell::new(player)));
    let start = shared.0.borrow_mut().start();
    let Some((pid, rules)) = start else {
        // Bad bytes before that are the reason, if there are any.
        let error = shared.0.borrow_mut().error.take();
        return Err(match error {
            Some(source) => SessionError::Capture {
                path: path.to_owned(),
                source,
            },
            None => unplayable("it ends before the traced process is named".into()),
        });
    };
    let cgroup = match invocation {
        Invocation::Cgroup(_) | Invocation::Container(_) => {
            let described = std::mem::take(&mut shared.0.borrow_mut().cgroup);
            let scope = CgroupScope::described(&described).map_err(|err| {
                unplayable(format!("the cgroup it traced is not described: {err}"))
            })?;
            Some(scope)
        }
        _ => None,
    };
    play_answers(Some(Box::new(shared.clone())));
    let stacks = Stacks::played(
        Box::new(shared.clone()),
        recorded_options.unwind,
        recorded_options.stack_bytes,
    );
    let mut traced = Traced::new(
        stacks,
        Targets::detached(),
        Box::new(shared.clone()),
        Exits::played(),
        DebugSources {
            dirs: options.debug_dir.clone(),
            debuginfod: Debuginfod::from_env(),
        },
        // As the recording joined processes: a cgroup's by following forks
        // and, with a v2 directory, as the kernel side found them.
        Joining {
            forks: recorded_options.follow_forks || cgroup.is_some(),
            found: cgroup
                .as_ref()
                .is_some_and(|cgroup| cgroup.cgroup.unified_dir.is_some()),
        },
    );
    traced.recall(learned(path));
    traced.play_at(Duration::ZERO, rules);
    let scope = match (invocation, cgroup) {
        (_, Some(cgroup)) => {
            let pids = cgroup.add_all(&mut traced)?;
            CgroupScope::seed_all(&mut traced, &pids)?;
            Scope::Cgroup(Box::new(cgroup))
        }
        (Invocation::Pid(_), None) => {
            start_pid(&mut traced, pid, || Ok(()))?;
            Scope::Process { primary: pid }
        }
        (Invocation::Command(argv), None) => {
            let program = launch::resolve(&argv[0]).and_then(|path| ProgramKind::read(&path));
            traced.add_primary(pid, true, traced.stacks.source_for(program))?;
            Scope::Process { primary: pid }
        }
        _ => return Err(unplayable("it names nothing traced".into())),
    };
    let heap = recorded_options
        .go_pprof
        .as_deref()
        .map(HeapWatch::played)
        .transpose()
        .map_err(|err| unplayable(format!("its --go-pprof does not read: {err}")))?;
    let session = Session {
        traced,
        scope,
        heap,
        live_to_stderr,
        quiet: options.quiet,
        screen: None,
    };
    Ok((session, shared))
}

/// How far a playback went.
enum Played {
    /// To the recorded stop.
    Stopped(Stop),
    /// To where the capture is cut off, before it said how it stopped.
    CutOff,
    /// To the end of the window asked for (`--to`), this far in.
    Reached(Duration),
}

impl Session {
    /// Takes the recorded steps as the live loop took their events, up to
    /// the recorded stop or the end of `window`.
    fn play(
        &mut self,
        shared: &Shared,
        outputs: &mut Outputs,
        window: Window,
    ) -> Result<Played, SessionError> {
        let mut source = shared.clone();
        let mut growth_from = window.from;
        loop {
            let Some(&(at, _)) = shared.0.borrow_mut().next_step() else {
                return Ok(Played::CutOff);
            };
            if let Some(to) = window.to.filter(|&to| at > to) {
                return Ok(Played::Reached(to));
            }
            if growth_from.is_some_and(|from| at >= from) {
                growth_from = None;
                self.traced.measure_growth_from_next();
            }
            self.traced.play_at(at, None);
            // A drain takes its batch itself (see `Records for Shared`).
            let step = {
                let mut player = shared.0.borrow_mut();
                match player.steps.front() {
                    Some((_, Step::Drain(_))) => None,
                    _ => player.steps.pop_front().map(|(_, step)| step),
                }
            };
            let reconcile_soon = match step {
                None | Some(Step::Drain(_)) => self.traced.drain(&mut source),
                Some(Step::Tick) => {
                    // The recording polled the heap profile right after
                    // its tick, before the report.
                    self.take_heap_profiles(shared);
                    if let Some(stop) = self.cgroup_tick(&mut source)? {
                        return Ok(Played::Stopped(stop));
                    }
                    self.interval_report(&mut source, outputs)?;
                    false
                }
                Some(Step::Heap(bytes)) => {
                    self.take_heap_profile(&bytes);
                    false
                }
                Some(Step::Exit(pid)) => {
                    self.traced.drain(&mut source);
                    self.traced.exited(pid);
                    false
                }
                Some(Step::Stop(how)) => return Ok(Played::Stopped(stop_named(&how))),
            };
            if reconcile_soon {
                self.traced.reconcile(&mut source);
            }
        }
    }
}

/// What the recording learnt of the code's files and names, and the files
/// it embedded. Most of it is written as recording ends, and all of it is
/// needed from the first snapshot: read in a pass of its own, chunk by
/// chunk (embedded files are large), up to any bad bytes (the playback
/// says where those are).
fn learned(path: &Path) -> impl Iterator<Item = Learned> {
    let mut reader = open_capture(path).ok();
    std::iter::from_fn(move || reader.as_mut()?.next_chunk().ok().flatten()).flat_map(|chunk| {
        chunk
            .entries
            .into_iter()
            .filter_map(|entry| Learned::read(entry.kind, &entry.payload, 0)?.ok())
    })
}

impl Session {
    /// What follows the recorded stop: the last drain, and the heap profile
    /// the recording settled on for its final report.
    fn finish_playing(&mut self, shared: &Shared) {
        self.traced.drain(&mut shared.clone());
        self.take_heap_profiles(shared);
    }

    /// Takes the heap profiles that come next in the capture.
    fn take_heap_profiles(&mut self, shared: &Shared) {
        loop {
            let bytes = {
                let mut player = shared.0.borrow_mut();
                if !matches!(player.next_step(), Some((_, Step::Heap(_)))) {
                    return;
                }
                match player.steps.pop_front() {
                    Some((_, Step::Heap(bytes))) => bytes,
                    _ => return,
                }
            };
            self.take_heap_profile(&bytes);
        }
    }

    fn take_heap_profile(&mut self, bytes: &[u8]) {
        if let Some(heap) = self.heap.as_mut() {
            heap.take_recorded(bytes);
        }
    }
}

/// The stop a capture names.
fn stop_named(how: &str) -> Stop {
    match how {
        "TargetExited" => Stop::TargetExited,
        "TargetOomKilled" => Stop::TargetOomKilled,
        "CgroupRemoved" => Stop::CgroupRemoved,
        "Duration" => Stop::Duration,
        "Signal" => Stop::Signal,
        "Quit" => Stop::Quit,
        _ => Stop::Interrupt,
    }
}
