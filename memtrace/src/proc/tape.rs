//! What /proc answered, handed as it is given to a [`Tape`] when one is
//! set (`memtrace record` keeps the answers, in the order they were asked),
//! or taken from [`Answers`] instead of /proc when those are set
//! (`memtrace report` plays a capture's answers back). The session runs on
//! one thread: the tape and the answers are that thread's.

use std::{cell::RefCell, io, path::Path};

/// Takes every answer [`crate::proc::ProcessView`] gets from /proc.
pub trait Tape {
    /// `question` names what was read of process `pid` (`smaps`,
    /// `readlink exe`, `pagemap 4096-4352`); `answer` is its bytes or error.
    fn answered(&mut self, pid: u32, question: &str, answer: &io::Result<Vec<u8>>);
}

/// Gives the answers /proc gave when a capture was recorded.
pub trait Answers {
    /// The answer recorded for the next `question` about `pid`; `None`
    /// when the capture has no more.
    fn answer(&mut self, pid: u32, question: &str) -> Option<io::Result<Vec<u8>>>;
}

thread_local! {
    static TAPE: RefCell<Option<Box<dyn Tape>>> = RefCell::new(None);
    static PLAYED: RefCell<Option<Box<dyn Answers>>> = RefCell::new(None);
}

/// Hands every later answer on this thread to `tape`; `None` stops.
pub fn record_answers(tape: Option<Box<dyn Tape>>) {
    TAPE.with(|slot| *slot.borrow_mut() = tape);
}

/// Takes every later answer on this thread from `answers` rather than from
/// /proc; `None` goes back to /proc.
pub fn play_answers(answers: Option<Box<dyn Answers>>) {
    PLAYED.with(|slot| *slot.borrow_mut() = answers);
}

/// Whether answers are played back (see [`play_answers`]).
pub(super) fn playing() -> bool {
    PLAYED.with(|slot| slot.borrow().is_some())
}

/// Asks /proc through `read`, handing the answer to the tape if one is set.
pub(super) fn ask(
    pid: u32,
    question: &str,
    read: impl FnOnce() -> io::Result<Vec<u8>>,
) -> io::Result<Vec<u8>> {
    // memtrace's own figures are of this run, never of the one recorded.
    if pid == std::process::id() {
        return read();
    }
    let played = PLAYED.with(|slot| {
        let mut slot = slot.borrow_mut();
        let answers = slot.as_mut()?;
        // A question the recording never asked: as if the process was gone.
        Some(
            answers
                .answer(pid, question)
                .unwrap_or_else(|| Err(io::Error::from_raw_os_error(libc::ENOENT))),
        )
    });
    if let Some(answer) = played {
        return answer;
    }
    let answer = read();
    TAPE.with(|slot| {
        if let Some(tape) = slot.borrow_mut().as_mut() {
            tape.answered(pid, question, &answer);
        }
    });
    answer
}

/// Whether `path` is a directory, asked of the machine.
pub(super) fn is_dir(path: &Path) -> bool {
    is(path, "is dir", Path::is_dir)
}

/// Whether `path` is a regular file, asked of the machine.
pub(super) fn is_file(path: &Path) -> bool {
    is(path, "is file", Path::is_file)
}

fn is(path: &Path, question: &str, test: impl FnOnce(&Path) -> bool) -> bool {
    let question = format!("{question} {}", path.display());
    ask(0, &question, || Ok(vec![u8::from(test(path))])).is_ok_and(|answer| answer == [1])
}

/// A file's text, if it reads, asked of process `pid` (0: of the machine)
/// by its path.
pub(super) fn read_text(pid: u32, path: &Path) -> Option<String> {
    let answer = ask(pid, &path.to_string_lossy(), || std::fs::read(path));
    String::from_utf8(answer.ok()?).ok()
}
