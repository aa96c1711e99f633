//! What /proc answered, handed as it is given to a [`Tape`] when one is
//! set (`memtrace record` keeps the answers, in the order they were asked,
//! so a report can replay them). The session runs on one thread: the tape
//! is that thread's.

use std::{cell::RefCell, io, path::Path};

/// Takes every answer [`crate::proc::ProcessView`] gets from /proc.
pub trait Tape {
    /// `question` names what was read of process `pid` (`smaps`,
    /// `readlink exe`, `pagemap 4096-4352`); `answer` is its bytes or error.
    fn answered(&mut self, pid: u32, question: &str, answer: &io::Result<Vec<u8>>);
}

thread_local! {
    static TAPE: RefCell<Option<Box<dyn Tape>>> = RefCell::new(None);
}

/// Hands every later answer on this thread to `tape`; `None` stops.
pub fn record_answers(tape: Option<Box<dyn Tape>>) {
    TAPE.with(|slot| *slot.borrow_mut() = tape);
}

/// Asks /proc through `read`, handing the answer to the tape if one is set.
pub(super) fn ask(
    pid: u32,
    question: &str,
    read: impl FnOnce() -> io::Result<Vec<u8>>,
) -> io::Result<Vec<u8>> {
    let answer = read();
    TAPE.with(|slot| {
        if let Some(tape) = slot.borrow_mut().as_mut() {
            tape.answered(pid, question, &answer);
        }
    });
    answer
}

/// A file's text, if it reads, asked of process `pid` (0: of the machine)
/// by its path.
pub(super) fn read_text(pid: u32, path: &Path) -> Option<String> {
    let answer = ask(pid, &path.to_string_lossy(), || std::fs::read(path));
    String::from_utf8(answer.ok()?).ok()
}
