//! The Go runtime settings a process was started with: `GOGC`,
//! `GOMEMLIMIT` and `GODEBUG` from `/proc/PID/environ`.
//!
//! They decide how much heap Go keeps before collecting and how it hands
//! freed pages back to the kernel (`GODEBUG=madvdontneed`), which is what
//! the verdict's advice for a Go program is about.
//!
//! The environment of the traced process holds secrets (tokens, passwords,
//! connection strings), and memtrace runs as root. So only these three
//! variables are kept: the scanner walks the bytes once, matching names
//! against the three wanted ones as it goes, and copies nothing of any other
//! entry. The file is read through one fixed buffer, wiped afterwards, so it
//! is never held whole.

use std::fs::File;
use std::io::{self, Read};

/// The Go runtime variables of a process's environment, as set (not the
/// defaults Go uses when they are absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoSettings {
    /// `GOGC`: the heap growth percentage that triggers a collection, or `off`.
    pub gogc: Option<String>,
    /// `GOMEMLIMIT`: the soft memory limit (Go 1.19+), e.g. `512MiB`.
    pub gomemlimit: Option<String>,
    /// `GODEBUG`: comma-separated `name=value` runtime switches.
    pub godebug: Option<String>,
}

impl GoSettings {
    /// The `madvdontneed` switch of `GODEBUG`: `Some(true)` when freed heap
    /// is returned with MADV_DONTNEED (RSS drops at once), `Some(false)` for
    /// MADV_FREE (RSS drops only under memory pressure), `None` when unset,
    /// in which case the Go version decides (MADV_DONTNEED since Go 1.16).
    ///
    /// As in the Go runtime, the last setting wins, any nonzero number means
    /// on, and a value that is not a number is ignored.
    pub fn madvdontneed(&self) -> Option<bool> {
        self.godebug
            .as_deref()?
            .split(',')
            .rev()
            .filter_map(|setting| setting.strip_prefix("madvdontneed="))
            .find_map(|value| value.parse::<i64>().ok())
            .map(|value| value != 0)
    }
}

/// Reads the Go settings of process `pid` from `/proc/PID/environ`.
///
/// # Errors
///
/// When the file cannot be opened or read (the process exited, or memtrace
/// lacks the permission).
pub fn read_go_settings(pid: u32) -> io::Result<GoSettings> {
    let mut file = File::open(format!("/proc/{pid}/environ"))?;
    let mut chunk = [0u8; 4096];
    let mut scanner = Scanner::default();
    let read = loop {
        match file.read(&mut chunk) {
            Ok(0) => break Ok(()),
            Ok(length) => scanner.feed(&chunk[..length]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => break Err(error),
        }
    };
    chunk.fill(0);
    // Keeps the wipe from being optimised away as a dead store.
    std::hint::black_box(&chunk);
    read.map(|()| scanner.finish())
}

/// The Go settings in an environment block: NUL-separated `KEY=VALUE`
/// entries, as in `/proc/PID/environ`. Nothing else is retained.
pub fn parse_go_settings(environ: &[u8]) -> GoSettings {
    let mut scanner = Scanner::default();
    scanner.feed(environ);
    scanner.finish()
}

/// The variables kept, in the order of [`Scanner::slot`].
const WANTED: [&[u8]; 3] = [b"GOGC", b"GOMEMLIMIT", b"GODEBUG"];
/// One bit per entry of [`WANTED`].
const ALL_CANDIDATES: u8 = (1 << WANTED.len()) - 1;

/// Picks the wanted variables out of an environment block fed to it in
/// pieces of any size.
#[derive(Default)]
struct Scanner {
    settings: GoSettings,
    state: State,
}

enum State {
    /// Reading a name: `matched` bytes so far agree with each wanted name
    /// whose bit is set in `candidates`.
    Name { matched: usize, candidates: u8 },
    /// Reading the value of `WANTED[index]`.
    Value { index: usize, value: Vec<u8> },
    /// Reading an entry that is not wanted: skipped up to its NUL.
    Skip,
}

impl Default for State {
    fn default() -> Self {
        Self::Name {
            matched: 0,
            candidates: ALL_CANDIDATES,
        }
    }
}

impl Scanner {
    fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.step(byte);
        }
    }

    fn step(&mut self, byte: u8) {
        if byte == 0 {
            self.end_entry();
            return;
        }
        self.state = match std::mem::take(&mut self.state) {
            State::Name {
                matched,
                candidates,
            } if byte == b'=' => self.start_value(matched, candidates),
            State::Name {
                matched,
                candidates,
            } => {
                let candidates = still_matching(candidates, matched, byte);
                if candidates == 0 {
                    State::Skip
                } else {
                    State::Name {
                        matched: matched + 1,
                        candidates,
                    }
                }
            }
            State::Value { index, mut value } => {
                value.push(byte);
                State::Value { index, value }
            }
            State::Skip => State::Skip,
        };
    }

    /// The state after `=` ends a name of `matched` bytes.
    fn start_value(&mut self, matched: usize, candidates: u8) -> State {
        let complete = (0..WANTED.len())
            .find(|&index| candidates & (1 << index) != 0 && WANTED[index].len() == matched);
        match complete {
            // Like Go's getenv, the first occurrence of a name wins.
            Some(index) if self.slot(index).is_none() => State::Value {
                index,
                value: Vec::new(),
            },
            _ => State::Skip,
        }
    }

    /// Keeps the value being read, if any, at the end of its entry, and
    /// gets ready for the next name.
    fn end_entry(&mut self) {
        if let State::Value { index, value } = std::mem::take(&mut self.state) {
            *self.slot(index) = Some(String::from_utf8_lossy(&value).into_owned());
        }
    }

    fn slot(&mut self, index: usize) -> &mut Option<String> {
        match index {
            0 => &mut self.settings.gogc,
            1 => &mut self.settings.gomemlimit,
            _ => &mut self.settings.godebug,
        }
    }

    /// The settings found; a last entry without a closing NUL counts.
    fn finish(mut self) -> GoSettings {
        self.end_entry();
        self.settings
    }
}

/// The candidates whose name has `byte` at position `matched`.
fn still_matching(candidates: u8, matched: usize, byte: u8) -> u8 {
    (0..WANTED.len())
        .filter(|&index| WANTED[index].get(matched) == Some(&byte))
        .fold(0, |kept, index| kept | (1 << index))
        & candidates
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::process::{Command, Stdio};

    const SECRET: &str = "hunter2-s3cr3t";

    fn environ() -> Vec<u8> {
        format!(
            "PATH=/usr/bin\0AWS_SECRET_ACCESS_KEY={SECRET}\0GOGC=200\0GOGCX={SECRET}\0\
             GOG={SECRET}\0GOMEMLIMIT=512MiB\0=GOGC\0NOEQUALS\0GODEBUG=madvdontneed=0,gctrace=1\0\
             GOGC=50\0DATABASE_URL=postgres://u:{SECRET}@db\0"
        )
        .into_bytes()
    }

    fn expected() -> GoSettings {
        GoSettings {
            gogc: Some("200".into()),
            gomemlimit: Some("512MiB".into()),
            godebug: Some("madvdontneed=0,gctrace=1".into()),
        }
    }

    #[test]
    fn only_go_variables_are_kept_and_the_first_occurrence_wins() {
        let settings = parse_go_settings(&environ());
        assert_eq!(settings, expected());
        assert!(!format!("{settings:?}").contains(SECRET));
    }

    #[test]
    fn any_split_into_chunks_gives_the_same_settings() {
        let environ = environ();
        for size in [1, 2, 3, 7, 64] {
            let mut scanner = Scanner::default();
            environ.chunks(size).for_each(|chunk| scanner.feed(chunk));
            assert_eq!(scanner.finish(), expected(), "chunks of {size}");
        }
    }

    #[test]
    fn a_last_entry_without_nul_counts_and_empty_input_has_nothing() {
        let settings = parse_go_settings(b"A=1\0GOGC=off");
        assert_eq!(settings.gogc.as_deref(), Some("off"));
        assert_eq!(parse_go_settings(b""), GoSettings::default());
        assert_eq!(parse_go_settings(b"\0\0=\0"), GoSettings::default());
    }

    #[test]
    fn madvdontneed_follows_the_go_runtime() {
        let with = |godebug: &str| GoSettings {
            godebug: Some(godebug.to_owned()),
            ..GoSettings::default()
        };
        assert_eq!(GoSettings::default().madvdontneed(), None);
        assert_eq!(with("gctrace=1").madvdontneed(), None);
        assert_eq!(with("madvdontneed=0").madvdontneed(), Some(false));
        assert_eq!(with("gctrace=1,madvdontneed=1").madvdontneed(), Some(true));
        assert_eq!(
            with("madvdontneed=1,madvdontneed=0").madvdontneed(),
            Some(false)
        );
        assert_eq!(with("madvdontneed=2").madvdontneed(), Some(true));
        assert_eq!(with("madvdontneed=yes").madvdontneed(), None);
        assert_eq!(with("xmadvdontneed=1").madvdontneed(), None);
    }

    #[test]
    fn a_live_process_environment_is_filtered() {
        let mut child = Command::new("sleep")
            .arg("30")
            .env_clear()
            .env("API_TOKEN", SECRET)
            .env("GOMEMLIMIT", "1GiB")
            .env("GODEBUG", "madvdontneed=1")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let settings = read_go_settings(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        let settings = settings.unwrap();
        assert_eq!(
            settings,
            GoSettings {
                gogc: None,
                gomemlimit: Some("1GiB".into()),
                godebug: Some("madvdontneed=1".into()),
            }
        );
        assert_eq!(settings.madvdontneed(), Some(true));
        assert!(!format!("{settings:?}").contains(SECRET));
    }

    #[test]
    fn a_missing_process_is_an_error() {
        assert!(read_go_settings(u32::MAX).is_err());
    }

    proptest! {
        /// Whatever else the environment holds, a value is returned only for
        /// the three Go names, exactly as written.
        #[test]
        fn other_variables_never_leak(
            others in proptest::collection::vec(("[A-Z_]{0,12}", "[ -~]{0,16}"), 0..8),
            gogc in proptest::option::of("[0-9a-z]{0,5}"),
        ) {
            let mut environ = Vec::new();
            for (name, value) in &others {
                if WANTED.contains(&name.as_bytes()) {
                    continue;
                }
                environ.extend_from_slice(format!("{name}={value}\0").as_bytes());
            }
            if let Some(gogc) = &gogc {
                environ.extend_from_slice(format!("GOGC={gogc}\0").as_bytes());
            }
            let settings = parse_go_settings(&environ);
            prop_assert_eq!(settings, GoSettings { gogc, ..GoSettings::default() });
        }
    }
}
