//! The traced process's code files, held open while it lives.
//!
//! Names are resolved at each snapshot and at the end, often after the
//! process is gone: an OOM-killed container's binaries exist only in its
//! image, and /proc/PID/root disappears with its last process. A file
//! descriptor opened while the process lived still reads the file, through
//! /proc/self/fd, whatever happened to its path since.

use std::{collections::HashMap, fs::File, os::fd::AsRawFd, path::PathBuf};

use crate::proc::ProcessView;

/// Files most processes map, as a bound: a process mapping more than this
/// many code files gets the rest read by path (while it lives).
const MAX_OPEN: usize = 512;

pub struct Binaries {
    view: ProcessView,
    open: HashMap<String, File>,
}

impl Binaries {
    pub fn new(view: ProcessView) -> Self {
        Self {
            view,
            open: HashMap::new(),
        }
    }

    /// Opens the file the process knows as `path`, if it is not open yet;
    /// called while the process lives. Says whether it opened it now.
    pub fn keep(&mut self, path: &str) -> bool {
        if self.open.len() >= MAX_OPEN || self.open.contains_key(path) {
            return false;
        }
        let Ok(file) = File::open(self.view.file(path)) else {
            return false;
        };
        self.open.insert(path.to_owned(), file);
        true
    }

    /// Where the file the process knows as `path` is, as it sees it.
    pub fn as_seen(&self, path: &str) -> PathBuf {
        self.view.file(path)
    }

    /// A path that reads the file the process knows as `path`: its open
    /// descriptor when there is one, else through the process's root.
    pub fn readable(&self, path: &str) -> PathBuf {
        match self.open.get(path) {
            Some(file) => PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
            None => self.view.file(path),
        }
    }

    /// Closes every file: the process's program was replaced by exec.
    pub fn clear(&mut self) {
        self.open.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_file_reads_after_its_path_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("program");
        std::fs::write(&path, b"code").unwrap();
        let path = path.to_str().unwrap().to_owned();
        let mut binaries = Binaries::new(ProcessView::new(std::process::id()));
        assert!(binaries.keep(&path));
        assert!(!binaries.keep(&path), "opened once");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(std::fs::read(binaries.readable(&path)).unwrap(), b"code");
        binaries.clear();
        assert!(std::fs::read(binaries.readable(&path)).is_err());
    }
}
