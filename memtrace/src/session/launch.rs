//! Starting the command after `--` (or the demo) so that it is traced from
//! its first instruction, as the user who ran sudo, never as root.
//!
//! The child is forked and held just before `exec` on a pipe; memtrace
//! attaches to its PID and only then lets it go, so the `exec` itself is the
//! first thing memtrace sees. (std's `Command` cannot do this: its `spawn`
//! waits for the exec.)

use std::{
    ffi::{CString, OsString},
    fs::File,
    io::{self, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
};

use tokio::io::unix::AsyncFd;

use crate::safe_file::Owner;

/// A forked command, waiting at the gate.
pub struct Launched {
    pub pid: u32,
    gate: Option<File>,
    /// Reports the exec's errno, or closes (on exec) with nothing said.
    exec_status: Option<File>,
    /// Becomes readable when the child exits.
    exit: AsyncFd<OwnedFd>,
    reaped: bool,
}

impl Launched {
    /// Lets the command run; fails if it could not be executed.
    pub fn release(&mut self) -> io::Result<()> {
        if let Some(mut gate) = self.gate.take() {
            gate.write_all(b"go")?;
        }
        let Some(mut status) = self.exec_status.take() else {
            return Ok(());
        };
        let mut errno = [0u8; 4];
        match status.read(&mut errno)? {
            0 => Ok(()),
            _ => {
                self.reap();
                Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
            }
        }
    }

    /// Waits until the command exits, and reaps it.
    pub async fn exited(&mut self) {
        if self.reaped {
            return std::future::pending().await;
        }
        if let Ok(mut guard) = self.exit.readable().await {
            guard.clear_ready();
        }
        self.reap();
    }

    fn reap(&mut self) {
        let mut status = 0;
        // SAFETY: waiting for our own child; WNOHANG never blocks.
        let reaped = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
        self.reaped = reaped == self.pid as i32;
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        // Closing the gate unopened makes a child that never got the word
        // exit instead of running untraced.
        self.gate.take();
    }
}

/// Forks `argv` as `owner` (when running under sudo), held before exec.
pub fn launch(argv: &[OsString], owner: Option<Owner>) -> io::Result<Launched> {
    let args: Vec<CString> = argv
        .iter()
        .map(|arg| CString::new(arg.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument contains NUL"))?;
    if args.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no command given",
        ));
    }
    let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|arg| arg.as_ptr()).collect();
    arg_ptrs.push(std::ptr::null());
    let (gate_read, gate_write) = pipe()?;
    let (status_read, status_write) = pipe()?;

    // SAFETY: between fork and exec the child only makes async-signal-safe
    // calls on memory prepared before the fork, then execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; this never returns.
        unsafe {
            child(
                &arg_ptrs,
                owner,
                gate_read.as_raw_fd(),
                status_write.as_raw_fd(),
            )
        }
    }
    drop(gate_read);
    drop(status_write);
    let pid = pid as u32;
    let exit = watch_exit(pid)?;
    Ok(Launched {
        pid,
        gate: Some(File::from(gate_write)),
        exec_status: Some(File::from(status_read)),
        exit,
        reaped: false,
    })
}

/// The child's side: drop privileges, wait for the word, exec.
unsafe fn child(argv: &[*const libc::c_char], owner: Option<Owner>, gate: i32, status: i32) -> ! {
    let fail = |status: i32| -> ! {
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL);
        let bytes = errno.to_ne_bytes();
        libc::write(status, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    };
    if let Some(owner) = owner {
        // Supplementary groups first, while still allowed to change them.
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(owner.gid) != 0
            || libc::setuid(owner.uid) != 0
        {
            fail(status);
        }
    }
    let mut word = [0u8; 2];
    let read = libc::read(gate, word.as_mut_ptr().cast(), word.len());
    if read != 2 || &word != b"go" {
        // memtrace went away without attaching: do not run untraced.
        libc::_exit(127);
    }
    libc::execvp(argv[0], argv.as_ptr());
    fail(status)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pidfd of process `pid`, readable once it has exited. It refers to that
/// process for good, even after its PID is reused.
pub fn watch_exit(pid: u32) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the pidfd, so it stays open while registered.
    unsafe { AsyncFd::register_with_interest(pidfd_open(pid)?, tokio::io::Interest::READABLE) }
        .map_err(|err| err.into_parts().1)
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall; the result is a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned by the kernel, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
