//! `--pprof-dir`: windows kept as files in a directory, the oldest removed
//! to stay under a size cap, for hosts with no profiling server.
//!
//! Files are named `memtrace-<unix ms, 13 digits>-<service>-<pid>.pb.gz`,
//! so their names sort by time (`go tool pprof -diff_base` takes any two).
//! Only files named that way count toward the cap and are ever removed:
//! anything else in the directory is left alone. Files are written through
//! [`crate::safe_file`]: complete or not at all, never through a link.

use std::{
    collections::VecDeque,
    fs, io,
    path::{Path, PathBuf},
    time::{Duration, UNIX_EPOCH},
};

use super::{
    deliver::{Deliver, Failure},
    labels::plain_name,
    window::Window,
};
use crate::safe_file::OutputPolicy;

const PREFIX: &str = "memtrace-";
const SUFFIX: &str = ".pb.gz";
/// Digits of the millisecond timestamp, enough until the year 2286.
const TIME_DIGITS: usize = 13;

/// Why the directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PprofDirError {
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A directory of window files holding at most `max_bytes`.
#[derive(Debug)]
pub struct PprofDir {
    dir: PathBuf,
    max_bytes: u64,
    /// memtrace's files in the directory, oldest first, with their sizes.
    files: VecDeque<(PathBuf, u64)>,
    total: u64,
    policy: OutputPolicy,
}

impl PprofDir {
    /// Opens `dir`, counting the window files already there (the history
    /// survives restarts) toward `max_bytes`.
    ///
    /// # Errors
    ///
    /// [`PprofDirError`] if `dir` is not a readable directory and cannot
    /// be made one (it is created when missing).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, PprofDirError> {
        let read_error = |source| PprofDirError::Read {
            path: dir.to_owned(),
            source,
        };
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(read_error)?;
        }
        if !dir.is_dir() {
            return Err(PprofDirError::NotADirectory(dir.to_owned()));
        }
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|name| is_window_file(name)) else {
                continue;
            };
            // Not followed: a link is not one of memtrace's files.
            match fs::symlink_metadata(entry.path()) {
                Ok(meta) if meta.is_file() => files.push((name.to_owned(), meta.len())),
                _ => continue,
            }
        }
        files.sort();
        let total = files.iter().map(|(_, size)| size).sum();
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            files: files
                .into_iter()
                .map(|(name, size)| (dir.join(name), size))
                .collect(),
            total,
            policy: OutputPolicy {
                force: false,
                owner: None,
            },
        })
    }

    /// Bytes of window files in the directory.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Removes the oldest files until `incoming` more bytes fit.
    fn make_room(&mut self, incoming: u64) -> Result<(), Failure> {
        while self.total + incoming > self.max_bytes {
            let Some((path, size)) = self.files.pop_front() else {
                break;
            };
            match fs::remove_file(&path) {
                Ok(()) => {}
                // Someone else removed it: its bytes are gone all the same.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    self.files.push_front((path.clone(), size));
                    return Err(Failure::permanent(format!(
                        "cannot remove {} to stay under the cap: {err}",
                        path.display()
                    )));
                }
            }
            self.total -= size;
        }
        Ok(())
    }
}

impl Deliver for PprofDir {
    fn name(&self) -> &str {
        "pprof_dir"
    }

    fn deliver(&mut self, window: &Window) -> Result<(), Failure> {
        let size = window.profile.len() as u64;
        if size > self.max_bytes {
            return Err(Failure::permanent(format!(
                "a {size}-byte profile is larger than the {}-byte cap of {}",
                self.max_bytes,
                self.dir.display()
            )));
        }
        self.make_room(size)?;
        let path = self.dir.join(file_name(window));
        self.policy
            .write_all(&path, &window.profile)
            .map_err(|err| Failure::permanent(err.to_string()))?;
        self.files.push_back((path, size));
        self.total += size;
        Ok(())
    }

    fn max_age(&self) -> Option<Duration> {
        None
    }
}

/// `memtrace-<ms>-<service>-<pid>.pb.gz` for `window`.
fn file_name(window: &Window) -> String {
    let ms = window
        .end
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    let service = plain_name(window.labels.service_name());
    let pid = window.labels.get("pid").unwrap_or("0");
    format!(
        "{PREFIX}{ms:0width$}-{service}-{pid}{SUFFIX}",
        width = TIME_DIGITS
    )
}

/// Whether `name` is a window file's name (see [`file_name`]).
fn is_window_file(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
    else {
        return false;
    };
    rest.len() > TIME_DIGITS
        && rest.as_bytes()[..TIME_DIGITS]
            .iter()
            .all(u8::is_ascii_digit)
        && rest.as_bytes()[TIME_DIGITS] == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::push::labels::{SeriesLabels, TargetLabels};

    fn window(second: u64, bytes: usize) -> Window {
        let labels = SeriesLabels::new(&TargetLabels {
            service_name: "shop/api".into(),
            pid: 42,
            ..TargetLabels::default()
        })
        .unwrap();
        let end = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + second);
        Window {
            labels,
            start: end,
            end,
            profile: vec![second as u8; bytes],
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn files_are_named_by_time_service_and_pid() {
        assert_eq!(
            file_name(&window(1, 0)),
            "memtrace-1700000001000-shop_api-42.pb.gz"
        );
        assert!(is_window_file("memtrace-1700000001000-shop_api-42.pb.gz"));
        for other in [
            "memtrace-1234-1700000000000-0001.pb.gz",
            "memtrace-1700000001000.pb.gz",
            "memtrace-17000000010001-x-1.pb.gz",
            "heap.pb.gz",
            ".memtrace-1700000001000-x-1.pb.gz.memtrace-1-0-1",
        ] {
            assert!(!is_window_file(other), "{other}");
        }
    }

    #[test]
    fn the_oldest_files_go_to_stay_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = PprofDir::open(dir.path(), 250).unwrap();
        for second in 0..3 {
            spool.deliver(&window(second, 100)).unwrap();
        }
        assert_eq!(
            names(dir.path()),
            [
                "memtrace-1700000001000-shop_api-42.pb.gz",
                "memtrace-1700000002000-shop_api-42.pb.gz",
            ]
        );
        assert_eq!(spool.total_bytes(), 200);
        spool.deliver(&window(3, 250)).unwrap();
        assert_eq!(
            names(dir.path()),
            ["memtrace-1700000003000-shop_api-42.pb.gz"]
        );
        assert_eq!(
            fs::read(dir.path().join("memtrace-1700000003000-shop_api-42.pb.gz")).unwrap(),
            vec![3u8; 250]
        );
    }

    #[test]
    fn a_window_larger_than_the_cap_is_refused_and_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = PprofDir::open(dir.path(), 100).unwrap();
        spool.deliver(&window(0, 60)).unwrap();
        let failure = spool.deliver(&window(1, 101)).unwrap_err();
        assert!(!failure.retry);
        assert!(
            failure.message.contains("larger than the 100-byte cap"),
            "{}",
            failure.message
        );
        assert_eq!(
            names(dir.path()),
            ["memtrace-1700000000000-shop_api-42.pb.gz"]
        );
    }

    #[test]
    fn files_from_before_count_and_other_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("memtrace-1600000000000-old-1.pb.gz"),
            [0; 80],
        )
        .unwrap();
        fs::write(dir.path().join("notes.txt"), [0; 500]).unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("notes.txt"),
            dir.path().join("memtrace-1500000000000-link-1.pb.gz"),
        )
        .unwrap();
        let mut spool = PprofDir::open(dir.path(), 150).unwrap();
        assert_eq!(spool.total_bytes(), 80);
        spool.deliver(&window(0, 100)).unwrap();
        assert_eq!(
            names(dir.path()),
            [
                "memtrace-1500000000000-link-1.pb.gz",
                "memtrace-1700000000000-shop_api-42.pb.gz",
                "notes.txt",
            ]
        );
        assert_eq!(spool.total_bytes(), 100);
    }

    #[test]
    fn a_missing_directory_is_made_and_a_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope/deeper");
        assert_eq!(PprofDir::open(&missing, 1).unwrap().total_bytes(), 0);
        assert!(missing.is_dir());
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            PprofDir::open(&file, 1),
            Err(PprofDirError::NotADirectory(path)) if path == file
        ));
    }
}
