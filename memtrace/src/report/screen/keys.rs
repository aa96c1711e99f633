//! The screen's keys, read on a thread of their own (crossterm reads the
//! terminal with blocking calls) and handed to the session's loop through a
//! channel.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// What a key (or the terminal) asks of the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// `q`, Esc or Ctrl-C: stop with the final report.
    Quit,
    /// `t` or Tab: switch the stacks between in use and lazily freed.
    Toggle,
    /// `p`: write a pprof profile now.
    Pprof,
    /// The terminal changed size: draw again.
    Redraw,
}

impl Key {
    fn of(event: &Event) -> Option<Self> {
        match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => match key.code {
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    Some(Self::Quit)
                }
                KeyCode::Char('q' | 'Q') | KeyCode::Esc => Some(Self::Quit),
                KeyCode::Char('t' | 'T') | KeyCode::Tab => Some(Self::Toggle),
                KeyCode::Char('p' | 'P') => Some(Self::Pprof),
                _ => None,
            },
            Event::Resize(..) => Some(Self::Redraw),
            _ => None,
        }
    }
}

/// How often the reading thread looks whether the screen closed.
const POLL: Duration = Duration::from_millis(100);

/// Reads keys until `closed` is set or the receiver is gone.
pub fn start(closed: Arc<AtomicBool>) -> std::io::Result<UnboundedReceiver<Key>> {
    let (sender, keys) = unbounded_channel();
    std::thread::Builder::new()
        .name("screen-keys".into())
        .spawn(move || read(&sender, &closed))?;
    Ok(keys)
}

fn read(sender: &UnboundedSender<Key>, closed: &AtomicBool) {
    while !closed.load(Ordering::SeqCst) {
        match event::poll(POLL) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => return,
        }
        let Ok(event) = event::read() else { return };
        if let Some(key) = Key::of(&event) {
            if sender.send(key).is_err() {
                return;
            }
        }
    }
}
