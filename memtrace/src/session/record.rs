//! `memtrace record`: while the session traces as usual, what it consumes
//! goes into a capture file too (see [`crate::capture`]): the ring
//! buffer's records in the batches they were drained in, every interval's
//! tick, what /proc answered, the exits pidfds told, and how it stopped.

use std::{cell::RefCell, io, rc::Rc, time::Instant};

use memtrace_common::Counter;

use super::{
    entries::{encode_pid, encode_rules, Batch, CounterReading, ProcAnswer, StackEntry},
    SessionError, Stop,
};
use crate::{
    capture::{CaptureError, CaptureWriter, Header, Kind, Written},
    cli::RecordTo,
    intake::{StackEnd, StackId},
    proc::{record_answers, Tape},
    safe_file::{OutputPolicy, StreamFile},
    symbolize::Learned,
};

/// The recorder, shared by the session, its traced processes and the
/// /proc tape (all on the session's one thread).
pub type Recording = Rc<RefCell<Recorder>>;

pub struct Recorder {
    /// `None` once writing failed: the capture keeps what it has.
    writer: Option<CaptureWriter<StreamFile>>,
    to: RecordTo,
    started: Instant,
    records: u64,
    /// What the session reads now is for the user only (a report on
    /// SIGUSR1, a profile on a key), not part of the trace a report
    /// replays: kept out.
    aside: bool,
}

impl Recorder {
    /// Creates the capture (checked like every output) and starts taking
    /// /proc's answers.
    pub fn open(to: &RecordTo, policy: &OutputPolicy) -> Result<Recording, SessionError> {
        let file = policy.stream(&to.path)?;
        let header = Header::of_this_machine(to.command.clone());
        let started = Instant::now();
        let writer = CaptureWriter::create(file, &header, to.max_size).map_err(|err| {
            SessionError::Capture {
                path: to.path.clone(),
                source: err,
            }
        })?;
        let recording = Rc::new(RefCell::new(Self {
            writer: Some(writer),
            to: to.clone(),
            started,
            records: 0,
            aside: false,
        }));
        record_answers(Some(Box::new(ProcTape(Rc::clone(&recording)))));
        Ok(recording)
    }

    /// Whether the code files' naming parts go in too (`--embed-debug`).
    pub fn embeds_debug(&self) -> bool {
        self.to.embed_debug
    }

    fn push(&mut self, kind: Kind, payload: &[u8]) {
        if self.aside {
            return;
        }
        let time = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        match writer.push(kind, time, payload) {
            Ok(_) => {}
            // Only this entry is lost: say so in the capture.
            Err(err @ CaptureError::EntryTooLarge { .. }) => {
                let note = format!("an entry was left out: {err}");
                if let Err(err) = writer.push(Kind::Note, time, note.as_bytes()) {
                    self.failed(&err);
                }
            }
            Err(err) => self.failed(&err),
        }
    }

    /// Writing failed (a full disk): the trace goes on, the capture ends
    /// with what was written before.
    fn failed(&mut self, err: &CaptureError) {
        eprintln!(
            "memtrace: the capture {} stops here ({err}); the trace goes on",
            self.to.path.display()
        );
        self.writer = None;
    }

    /// One drain of the ring buffer; an empty one too, so that a report
    /// drains exactly where this trace did.
    pub fn batch(&mut self, batch: &Batch) {
        self.records += batch.records;
        self.push(Kind::Batch, &batch.bytes);
    }

    /// The process traced: `pid`; or, `pid` 0, the cgroup `described`
    /// (see `CgroupScope::describe`).
    pub fn target(&mut self, pid: u32, described: &[u8]) {
        self.push(Kind::Target, &encode_pid(pid, described));
    }

    /// An interval's tick.
    pub fn tick(&mut self) {
        self.push(Kind::Tick, &[]);
    }

    /// The interval has been reported: what came before is written out
    /// now, with what /proc answered for it and the names its report
    /// resolved, so a kill loses at most an interval.
    pub fn interval_done(&mut self) {
        if let Some(Err(err)) = self.writer.as_mut().map(CaptureWriter::flush_chunk) {
            self.failed(&err);
        }
    }

    /// Stack `id` as the table took it: walked by the kernel (`sample`
    /// none) or unwound from `sample`; `end`, how it ends when known.
    pub fn stack(
        &mut self,
        id: StackId,
        sample: Option<StackId>,
        frames: &[u64],
        end: Option<StackEnd>,
    ) {
        self.push(Kind::Stack, &StackEntry::encode(id, sample, frames, end));
    }

    /// A Go heap profile the session took (`--go-pprof`), as it came.
    pub fn heap_profile(&mut self, bytes: &[u8]) {
        self.push(Kind::Heap, bytes);
    }

    /// What naming learnt of a code file or an offset's functions, or a
    /// piece of a file embedded: kept even aside (the library learns it
    /// once, whoever asked).
    pub fn learned(&mut self, learned: &Learned) {
        let aside = std::mem::replace(&mut self.aside, false);
        self.push(learned.kind(), &learned.encode());
        self.aside = aside;
    }

    /// What the kernel side's `counter` read (none: it could not be read).
    pub fn counter(&mut self, counter: Counter, value: Option<u64>) {
        self.push(Kind::Counter, &CounterReading::encode(counter, value));
    }

    /// What reconciliation took from the machine before recording began:
    /// the zero page's frame (none: unknown) and the LazyFree slack.
    pub fn rules(&mut self, zero_pfn: Option<u64>, lazyfree_slack: u64) {
        self.push(Kind::Rules, &encode_rules(zero_pfn, lazyfree_slack));
    }

    pub fn exit(&mut self, pid: u32) {
        self.push(Kind::Exit, &encode_pid(pid, &[]));
    }

    /// Keeps what `read` reads out of the capture.
    pub fn aside<T>(recording: Option<&Recording>, read: impl FnOnce() -> T) -> T {
        let set = |aside| {
            if let Some(recording) = recording {
                recording.borrow_mut().aside = aside;
            }
        };
        set(true);
        let value = read();
        set(false);
        value
    }

    /// How the session stopped (what it reads for its final report
    /// follows).
    pub fn stopped(&mut self, stop: Stop) {
        self.push(Kind::Stop, format!("{stop:?}").as_bytes());
    }

    /// Ends the capture, and says what was recorded and at what rate.
    pub fn finish(&mut self) {
        record_answers(None);
        let Some(writer) = self.writer.take() else {
            return;
        };
        match writer.finish() {
            Ok(written) => eprintln!("memtrace: {}", self.rate(&written)),
            Err(err) => self.failed(&err),
        }
    }

    /// The line that says what went into the capture, and how fast.
    fn rate(&self, written: &Written) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let limit = if written.limit_reached {
            format!(
                "; its size limit was reached and {} entries were left out",
                written.dropped
            )
        } else {
            String::new()
        };
        format!(
            "recorded {} records in {} entries to {}: {} bytes ({} before compression) in {:.1} s, \
             {:.0} bytes/s, {:.0} records/s{limit}",
            self.records,
            written.entries,
            self.to.path.display(),
            written.bytes,
            written.raw_bytes,
            seconds,
            written.bytes as f64 / seconds,
            self.records as f64 / seconds,
        )
    }
}

/// Hands /proc's answers to the recorder: the process, the question, and
/// the bytes or the error number.
struct ProcTape(Recording);

impl Tape for ProcTape {
    fn answered(&mut self, pid: u32, question: &str, answer: &io::Result<Vec<u8>>) {
        self.0
            .borrow_mut()
            .push(Kind::Proc, &ProcAnswer::encode(pid, question, answer));
    }
}
