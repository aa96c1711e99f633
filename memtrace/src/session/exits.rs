//! Knowing when a traced process exits, whatever the tracepoints say.
//!
//! The exit tracepoint's record can be lost in a full ring buffer, and on
//! kernels before `group_dead` (6.1) it does not say which thread's exit is
//! the process's. A pidfd says it for certain: it becomes readable when the
//! process exits. Each watched process gets a task that waits on its pidfd
//! and sends its pid.

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd},
};

use tokio::{io::unix::AsyncFd, sync::mpsc};

pub struct Exits {
    sender: mpsc::UnboundedSender<u32>,
    receiver: mpsc::UnboundedReceiver<u32>,
    /// A capture played back says when processes exited: watches are
    /// taken and nothing is told.
    played: bool,
}

impl Default for Exits {
    fn default() -> Self {
        Self::new()
    }
}

impl Exits {
    pub fn new() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            sender,
            receiver,
            played: false,
        }
    }

    pub fn played() -> Self {
        Self {
            played: true,
            ..Self::new()
        }
    }

    /// Watches process `pid` (it must still exist, or the watch reports it
    /// gone at once).
    pub fn watch(&self, pid: u32) -> io::Result<()> {
        if self.played {
            return Ok(());
        }
        let fd = exit_notice(pid)?;
        let sender = self.sender.clone();
        tokio::spawn(async move {
            // Readable once the process has exited (and on errors, which
            // say nothing more).
            let _ = fd.readable().await;
            let _ = sender.send(pid);
        });
        Ok(())
    }

    /// The next watched process that exited.
    pub async fn next(&mut self) -> u32 {
        match self.receiver.recv().await {
            Some(pid) => pid,
            // The session holds a sender: never closed while it runs.
            None => std::future::pending().await,
        }
    }
}

/// A pidfd of process `pid`, registered with tokio: readable once the
/// process has exited.
pub(super) fn exit_notice(pid: u32) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: a plain syscall with no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just gave us, owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the pidfd, so it stays open while registered.
    unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|err| err.into_parts().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watched_process_that_exits_is_said() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let mut exits = Exits::new();
        exits.watch(child.id()).unwrap();
        let said = tokio::time::timeout(std::time::Duration::from_secs(5), exits.next())
            .await
            .expect("said within 5 s");
        assert_eq!(said, child.id());
        child.wait().unwrap();
    }

    #[test]
    fn no_such_process_cannot_be_watched() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // PIDs above the kernel's pid_max (4194304 at most) never exist.
            assert!(Exits::new().watch(5_000_000).is_err());
        });
    }
}
