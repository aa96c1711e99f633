//! Output files written safely by a root process.
//!
//! memtrace usually runs under sudo, in directories other users can write
//! to. So every output is written to a fresh temporary file next to its
//! destination (created exclusively, never through a symlink) and renamed
//! into place only when complete: a reader sees all of it or nothing. An
//! existing file is replaced only with `--force`, a symlink at the
//! destination never, and under sudo the file belongs to the invoking user.

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
        if let Some(owner) = self.owner {
            // SAFETY: a valid descriptor we own.
            if unsafe { libc::fchown(file.as_raw_fd(), owner.uid, owner.gid) } != 0 {
                let _ = fs::remove_file(&temp);
                return Err(io_err(io::Error::last_os_error()));
            }
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

fn parent(path: &Path) -> &Path {
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
