//! While the screen is up, nothing else may write to the terminal: a line
//! from memtrace (a note, a warning) or from the traced command would land
//! in the middle of the drawing. So standard output and error are pointed
//! at a pipe, whose lines the screen shows in its own pane, and standard
//! input at /dev/null (the keys are the screen's); a command started after
//! this inherits the same. The screen draws on a copy of the terminal's
//! descriptor. Closing points everything back, and what the command writes
//! after that is passed on to the terminal as it comes.

use std::{
    collections::VecDeque,
    fs::File,
    io::{self, BufRead, BufReader, Write},
    os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

/// Lines kept for the pane.
const KEPT_LINES: usize = 200;

/// The lines written to standard output and error while the screen is up.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<VecDeque<String>>>);

impl Lines {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        if lines.len() == KEPT_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The last `count` lines, oldest first.
    pub fn last(&self, count: usize) -> Vec<String> {
        let lines = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        lines
            .iter()
            .skip(lines.len().saturating_sub(count))
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<String> {
        self.last(KEPT_LINES)
    }
}

/// The original descriptors 0, 1 and 2, kept while they are redirected.
pub struct Redirected {
    saved: [OwnedFd; 3],
    /// Set once the descriptors are back: the reader then passes lines on.
    relay: Arc<AtomicBool>,
    pub lines: Lines,
}

impl Redirected {
    /// Points 0 at /dev/null, 1 and 2 at a pipe read by a thread; returns
    /// them and a copy of the terminal's descriptor to draw on.
    pub fn start() -> io::Result<(Self, File)> {
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
        let saved = [dup(0)?, dup(1)?, dup(2)?];
        let terminal = File::from(dup(1)?);
        let relay_to = File::from(dup(1)?);
        let null = File::open("/dev/null")?;
        let (read, write) = io::pipe()?;
        dup2(null.as_raw_fd(), 0)?;
        dup2(write.as_raw_fd(), 1)?;
        dup2(write.as_raw_fd(), 2)?;
        drop(write);
        let lines = Lines::default();
        let relay = Arc::new(AtomicBool::new(false));
        let (kept, relaying) = (lines.clone(), relay.clone());
        std::thread::Builder::new()
            .name("screen-output".into())
            .spawn(move || read_lines(read, &kept, &relaying, relay_to))?;
        Ok((
            Self {
                saved,
                relay,
                lines,
            },
            terminal,
        ))
    }

    /// The raw descriptors to put back, for a panic hook that cannot wait
    /// for a lock.
    pub fn saved_fds(&self) -> [RawFd; 3] {
        [
            self.saved[0].as_raw_fd(),
            self.saved[1].as_raw_fd(),
            self.saved[2].as_raw_fd(),
        ]
    }

    /// Puts 0, 1 and 2 back; from now on the command's lines go straight
    /// through.
    pub fn stop(&self) {
        self.relay.store(true, Ordering::SeqCst);
        restore_fds(self.saved_fds());
    }
}

/// Puts the saved descriptors back over 0, 1 and 2 (async-signal-safe, for
/// the panic hook too).
pub fn restore_fds(saved: [RawFd; 3]) {
    for (target, fd) in saved.into_iter().enumerate() {
        // SAFETY: dup2 on descriptors this process owns.
        unsafe { libc::dup2(fd, target as RawFd) };
    }
}

fn read_lines(read: io::PipeReader, lines: &Lines, relay: &AtomicBool, mut terminal: File) {
    for line in BufReader::new(read).lines() {
        let Ok(line) = line else { break };
        if relay.load(Ordering::SeqCst) {
            let _ = writeln!(terminal, "{line}");
        } else {
            lines.push(line);
        }
    }
}

fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: 0, 1 and 2 stay open for the whole process.
    unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
}

fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: both descriptors belong to this process.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
