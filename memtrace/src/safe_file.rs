//! Output files written safely by a root process.
//!
//! memtrace usually runs under sudo, in directories other users can write
//! to. So every whole-file output (profiles, flame graphs, the history) is
//! written to a fresh temporary file next to its destination (created
//! exclusively, never through a symlink) and renamed into place only when
//! complete: a reader sees all of it or nothing. The JSON lines are
//! streamed instead ([`StreamFile`]), so `tail -f` sees each as it comes:
//! that file is created exclusively at its own path, never through a
//! symlink. An existing file is replaced only with `--force`, a symlink at
//! the destination never, and under sudo files (and a `--pprof-dir` made
//! for them) belong to the invoking user.

use std::{
    ffi::CString,
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::{
        ffi::OsStrExt,
        fs::{OpenOptionsExt, PermissionsExt},
        io::AsRawFd,
    },
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path} already exists (use --force to replace it)")]
    Exists { path: PathBuf },
    #[error("{path} is a symbolic link; memtrace does not write through links")]
    Symlink { path: PathBuf },
    #[error("{path} is a directory; give a file name")]
    Directory { path: PathBuf },
    #[error("{path} is not a directory")]
    NotDirectory { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The user that started memtrace through sudo, who should own its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// From `SUDO_UID`/`SUDO_GID`, when running as root under sudo.
    pub fn invoking_user() -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
        let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
        Some(Self { uid, gid })
    }
}

/// Where and how outputs are written.
#[derive(Clone, Debug)]
pub struct OutputPolicy {
    pub force: bool,
    pub owner: Option<Owner>,
}

impl OutputPolicy {
    /// Fails early, before tracing starts, if `path` could not be written.
    pub fn check(&self, path: &Path) -> Result<(), OutputError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => Err(OutputError::Symlink {
                path: path.to_owned(),
            }),
            Ok(meta) if meta.is_dir() => Err(OutputError::Directory {
                path: path.to_owned(),
            }),
            Ok(_) if !self.force => Err(OutputError::Exists {
                path: path.to_owned(),
            }),
            Ok(_) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let dir = parent(path);
                if dir.is_dir() {
                    Ok(())
                } else {
                    Err(OutputError::Io {
                        path: path.to_owned(),
                        source: io::Error::new(io::ErrorKind::NotFound, "no such directory"),
                    })
                }
            }
            Err(source) => Err(OutputError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Starts writing `path`; nothing appears there until
    /// [`PendingFile::commit`].
    pub fn create(&self, path: &Path) -> Result<PendingFile, OutputError> {
        self.check(path)?;
        let io_err = |source| OutputError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = parent(path);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let (file, temp) = (0..16)
            .find_map(|attempt| {
                let temp = dir.join(format!(
                    ".{name}.memtrace-{}-{attempt}-{}",
                    std::process::id(),
                    unique()
                ));
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .mode(0o644)
                    .open(&temp)
                    .ok()
                    .map(|file| (file, temp))
            })
            .ok_or_else(|| {
                io_err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "cannot create a temporary file next to it",
                ))
            })?;
        if let Err(err) = self.give_to_owner(&file) {
            let _ = fs::remove_file(&temp);
            return Err(io_err(err));
        }
        // umask may have narrowed the mode; outputs are meant to be read.
        let _ = file.set_permissions(fs::Permissions::from_mode(0o644));
        Ok(PendingFile {
            writer: Some(BufWriter::new(file)),
            temp,
            path: path.to_owned(),
            force: self.force,
        })
    }

    /// Makes sure `dir` is a directory, creating it (and its parents) if
    /// missing, owned by the invoking user like the files put in it.
    pub fn ensure_dir(&self, dir: &Path) -> Result<(), OutputError> {
        let io_err = |source| OutputError::Io {
            path: dir.to_owned(),
            source,
        };
        match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(OutputError::NotDirectory {
                    path: dir.to_owned(),
                })
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_err(err)),
        }
        fs::create_dir_all(dir).map_err(io_err)?;
        if let Some(owner) = self.owner {
            std::os::unix::fs::lchown(dir, Some(owner.uid), Some(owner.gid)).map_err(io_err)?;
        }
        Ok(())
    }

    /// Creates `path` for lines written as they come ([`StreamFile`]):
    /// exclusively, never through a symlink, owned by the invoking user. With
    /// `--force` an existing regular file is removed first.
    pub fn stream(&self, path: &Path) -> Result<StreamFile, OutputError> {
        self.check(path)?;
        let io_err = |source| OutputError::Io {
            path: path.to_owned(),
            source,
        };
        if self.force {
            match fs::remove_file(path) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(io_err(err)),
                _ => {}
            }
        }
        // O_EXCL also refuses a symlink that appeared since the check.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o644)
            .open(path)
            .map_err(|err| match err.kind() {
                io::ErrorKind::AlreadyExists => OutputError::Exists {
                    path: path.to_owned(),
                },
                _ => io_err(err),
            })?;
        let stream = StreamFile {
            file,
            path: path.to_owned(),
            lines: 0,
        };
        self.give_to_owner(&stream.file)
            .and_then(|()| {
                stream
                    .file
                    .set_permissions(fs::Permissions::from_mode(0o644))
            })
            .map_err(io_err)?;
        Ok(stream)
    }

    /// Under sudo, makes `file` the invoking user's.
    fn give_to_owner(&self, file: &File) -> io::Result<()> {
        if let Some(owner) = self.owner {
            // SAFETY: a valid descriptor we own.
            if unsafe { libc::fchown(file.as_raw_fd(), owner.uid, owner.gid) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Writes `bytes` to `path` in one go.
    pub fn write_all(&self, path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
        let mut file = self.create(path)?;
        file.write_all(bytes).map_err(|source| OutputError::Io {
            path: path.to_owned(),
            source,
        })?;
        file.commit()
    }
}

/// The directory `path` is in (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn unique() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// A file being written; removed unless committed.
pub struct PendingFile {
    writer: Option<BufWriter<File>>,
    temp: PathBuf,
    path: PathBuf,
    force: bool,
}

impl PendingFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, syncs and renames the file into place; on failure nothing
    /// is left behind.
    pub fn commit(mut self) -> Result<(), OutputError> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let result = finish(writer, &self.temp, &self.path, self.force);
        if result.is_err() {
            let _ = fs::remove_file(&self.temp);
        }
        result
    }
}

fn finish(
    writer: BufWriter<File>,
    temp: &Path,
    path: &Path,
    force: bool,
) -> Result<(), OutputError> {
    let io_err = |source| OutputError::Io {
        path: path.to_owned(),
        source,
    };
    let file = writer
        .into_inner()
        .map_err(|err| io_err(err.into_error()))?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    rename(temp, path, force).map_err(|err| match err.kind() {
        io::ErrorKind::AlreadyExists => OutputError::Exists {
            path: path.to_owned(),
        },
        _ => io_err(err),
    })
}

impl Write for PendingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.as_mut().expect("not committed").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.as_mut().expect("not committed").flush()
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// A file written a line at a time, each line in the file (and seen by
/// `tail -f`) as soon as it is written. A file left with no line, because
/// memtrace failed before its first interval, is removed.
pub struct StreamFile {
    file: File,
    path: PathBuf,
    lines: u64,
}

impl StreamFile {
    /// Appends `line` and a newline, in one write.
    pub fn write_line(&mut self, line: &str) -> Result<(), OutputError> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .map_err(|source| OutputError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.lines += 1;
        Ok(())
    }

    /// Syncs the file: every line is on disk.
    pub fn finish(self) -> Result<(), OutputError> {
        self.file.sync_all().map_err(|source| OutputError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Bytes as they come (a capture's chunks), each write in the file at once.
impl Write for StreamFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.lines += 1;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for StreamFile {
    fn drop(&mut self) {
        if self.lines > 0 {
            return;
        }
        // Only the file created here: not one put at the path meanwhile.
        use std::os::unix::fs::MetadataExt;
        let ours = self.file.metadata().ok();
        let there = fs::symlink_metadata(&self.path).ok();
        if let (Some(ours), Some(there)) = (ours, there) {
            if ours.ino() == there.ino() && ours.dev() == there.dev() {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Renames `from` to `to`; without `replace`, fails if `to` exists, even if
/// it appeared a moment ago (renameat2's RENAME_NOREPLACE).
fn rename(from: &Path, to: &Path, replace: bool) -> io::Result<()> {
    if replace {
        if fs::symlink_metadata(to).is_ok_and(|meta| meta.file_type().is_symlink()) {
            return Err(io::Error::other("destination became a symbolic link"));
        }
        return fs::rename(from, to);
    }
    let from = CString::new(from.as_os_str().as_bytes())?;
    let to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: valid NUL-terminated paths.
    let result = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(force: bool) -> OutputPolicy {
        OutputPolicy { force, owner: None }
    }

    #[test]
    fn writes_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let mut file = policy(false).create(&path).unwrap();
        file.write_all(b"{}").unwrap();
        assert!(!path.exists());
        file.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{}");
    }

    #[test]
    fn an_abandoned_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        drop(policy(false).create(&path).unwrap());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn existing_files_need_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        fs::write(&path, b"old").unwrap();
        assert!(matches!(
            policy(false).write_all(&path, b"new"),
            Err(OutputError::Exists { .. })
        ));
        policy(true).write_all(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn a_file_appearing_meanwhile_is_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let file = policy(false).create(&path).unwrap();
        fs::write(&path, b"someone else's").unwrap();
        assert!(matches!(file.commit(), Err(OutputError::Exists { .. })));
        assert_eq!(fs::read(&path).unwrap(), b"someone else's");
    }

    #[test]
    fn streamed_lines_are_in_the_file_as_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut file = policy(false).stream(&path).unwrap();
        file.write_line("{\"seq\":1}").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"seq\":1}\n");
        file.write_line("{\"seq\":2}").unwrap();
        file.finish().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 2);
        assert!(matches!(
            policy(false).stream(&path),
            Err(OutputError::Exists { .. })
        ));
        let file = policy(true).stream(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
        // Nothing written: nothing left behind.
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn a_directory_is_not_an_output_file() {
        let dir = tempfile::tempdir().unwrap();
        for force in [false, true] {
            assert!(matches!(
                policy(force).check(dir.path()),
                Err(OutputError::Directory { .. })
            ));
            assert!(matches!(
                policy(force).stream(dir.path()),
                Err(OutputError::Directory { .. })
            ));
        }
    }

    #[test]
    fn a_missing_directory_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = dir.path().join("a/b");
        policy(false).ensure_dir(&profiles).unwrap();
        assert!(profiles.is_dir());
        policy(false).ensure_dir(&profiles).unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            policy(false).ensure_dir(&file),
            Err(OutputError::NotDirectory { .. })
        ));
    }

    #[test]
    fn streams_are_never_written_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"precious").unwrap();
        let link = dir.path().join("out.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for force in [false, true] {
            assert!(matches!(
                policy(force).stream(&link),
                Err(OutputError::Symlink { .. })
            ));
        }
        assert_eq!(fs::read(&target).unwrap(), b"precious");
    }

    #[test]
    fn symlinks_are_refused_even_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"precious").unwrap();
        let link = dir.path().join("out.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            policy(true).write_all(&link, b"x"),
            Err(OutputError::Symlink { .. })
        ));
        assert_eq!(fs::read(&target).unwrap(), b"precious");
    }
}
