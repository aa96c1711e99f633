//! The live screen: on a terminal, memtrace redraws one screen in place
//! (ratatui on crossterm) instead of appending the line view every
//! interval. It is made from the same [`Snapshot`] as the line view, fits
//! the terminal and follows its resizes.
//!
//! The terminal is given back on every way out: [`Screen::close`] when the
//! session stops (any reason), `Drop` when an error unwinds the session,
//! and a panic hook for a panic. Each restores the same [`Restore`] once.

mod capture;
mod chart;
mod draw;
mod keys;

use std::{
    fs::File,
    io::{self, BufWriter, IsTerminal},
    os::fd::RawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Once,
    },
};

use crossterm::{
    cursor,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{backend::CrosstermBackend, Terminal};
use tokio::sync::mpsc::UnboundedReceiver;

pub use keys::Key;

use super::snapshot::Snapshot;
use capture::Redirected;

/// Which resident bytes the stack table ranks by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    InUse,
    LazilyFreed,
}

impl View {
    fn other(self) -> Self {
        match self {
            Self::InUse => Self::LazilyFreed,
            Self::LazilyFreed => Self::InUse,
        }
    }
}

/// What the screen shows besides the snapshot.
pub struct Shown {
    pub view: View,
    /// The status line: what the last key did, or (empty) the keys.
    pub status: String,
    /// Where the `p` key writes profiles, for the status line.
    pub profiles_to: String,
    /// One line per followed child.
    pub children: Vec<String>,
}

pub struct Screen {
    terminal: Terminal<CrosstermBackend<BufWriter<File>>>,
    keys: UnboundedReceiver<Key>,
    redirected: Redirected,
    closed: Arc<AtomicBool>,
    last: Option<Snapshot>,
    shown: Shown,
}

/// The terminal's width in columns when the line view goes to one
/// (standard error with `on_stderr`, else standard output): its lines are
/// fitted to it. `None` for pipes and files, which get whole lines.
pub fn line_width(on_stderr: bool) -> Option<usize> {
    let terminal = if on_stderr {
        io::stderr().is_terminal()
    } else {
        io::stdout().is_terminal()
    };
    terminal
        .then(terminal::size)
        .and_then(Result::ok)
        .map(|(columns, _)| usize::from(columns))
}

/// Whether the screen can be used: standard output is a terminal (and so
/// not a pipe, a file or `--json -`) that can draw one.
pub fn available() -> bool {
    io::stdout().is_terminal() && std::env::var_os("TERM").is_some_and(|term| term != "dumb")
}

impl Screen {
    /// Takes over the terminal: raw mode, the alternate screen, standard
    /// output and error captured (see [`capture`]). `profiles_to` is the
    /// directory the `p` key writes into.
    pub fn open(profiles_to: &std::path::Path) -> io::Result<Self> {
        terminal::enable_raw_mode()?;
        let (redirected, tty) = match Redirected::start() {
            Ok(started) => started,
            Err(err) => {
                let _ = terminal::disable_raw_mode();
                return Err(err);
            }
        };
        *RESTORE.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(Restore {
            saved: redirected.saved_fds(),
        });
        install_panic_hook();
        let mut writer = BufWriter::new(tty);
        let started = crossterm::execute!(writer, EnterAlternateScreen, cursor::Hide)
            .and_then(|()| Terminal::new(CrosstermBackend::new(writer)).map_err(io::Error::other));
        let closed = Arc::new(AtomicBool::new(false));
        let started = started.and_then(|terminal| Ok((terminal, keys::start(closed.clone())?)));
        let (terminal, keys) = match started {
            Ok(started) => started,
            Err(err) => {
                restore();
                redirected.stop();
                return Err(err);
            }
        };
        Ok(Self {
            terminal,
            keys,
            redirected,
            closed,
            last: None,
            shown: Shown {
                view: View::InUse,
                status: String::new(),
                profiles_to: profiles_to.display().to_string(),
                children: Vec::new(),
            },
        })
    }

    /// The next key; never ends while the screen is open.
    pub async fn key(&mut self) -> Key {
        match self.keys.recv().await {
            Some(key) => key,
            None => std::future::pending().await,
        }
    }

    /// Shows `snapshot` (the primary target's), with `children` as lines.
    pub fn show(&mut self, snapshot: Snapshot, children: Vec<String>) {
        self.last = Some(snapshot);
        self.shown.children = children;
        self.redraw();
    }

    /// The snapshot on the screen, once there is one.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.last.as_ref()
    }

    pub fn toggle(&mut self) {
        self.shown.view = self.shown.view.other();
        self.redraw();
    }

    pub fn set_status(&mut self, status: String) {
        self.shown.status = status;
        self.redraw();
    }

    pub fn redraw(&mut self) {
        let Some(snapshot) = &self.last else { return };
        let output = self.redirected.lines.last(draw::OUTPUT_LINES_MAX);
        let shown = &self.shown;
        // A failed draw (the terminal went away) leaves nothing to show it
        // on; the line view's final report still goes to standard output.
        let _ = self
            .terminal
            .draw(|frame| draw::screen(frame, snapshot, shown, &output));
    }

    /// Gives the terminal back (as dropping the screen does, on any way
    /// out).
    pub fn close(self) {}
}

impl Drop for Screen {
    /// Gives the terminal back and prints memtrace's own messages that came
    /// while the screen was up, so none is lost.
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        restore();
        self.redirected.stop();
        for message in self.redirected.lines.all() {
            if message.starts_with("memtrace: ") {
                eprintln!("{message}");
            }
        }
    }
}

/// What puts the terminal back; taken by the first of close, drop and the
/// panic hook.
struct Restore {
    saved: [RawFd; 3],
}

static RESTORE: Mutex<Option<Restore>> = Mutex::new(None);

fn restore() {
    let taken = RESTORE
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .take();
    let Some(Restore { saved }) = taken else {
        return;
    };
    capture::restore_fds(saved);
    let mut stdout = io::stdout();
    let _ = crossterm::execute!(stdout, LeaveAlternateScreen, cursor::Show);
    let _ = terminal::disable_raw_mode();
}

/// A panic on the screen would print into the alternate screen, in raw
/// mode, and be lost: put the terminal back first.
fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests;
