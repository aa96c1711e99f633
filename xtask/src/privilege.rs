//! Whether we can act as root: installing packages, mounting tracefs and
//! loading eBPF programs all need it.

use std::{fs, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::workspace;

/// How this process can run a command as root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// We are root already.
    Root,
    /// Not root, but `sudo` is installed.
    Sudo,
    /// Not root and no `sudo`: root-only steps must be done by hand.
    None,
}

impl Privilege {
    pub fn detect() -> Result<Self> {
        Ok(if is_root()? {
            Self::Root
        } else if workspace::find_on_path("sudo").is_some() {
            Self::Sudo
        } else {
            Self::None
        })
    }

    /// `program` run as root: directly, or through `sudo`.
    pub fn command(self, program: &str) -> Result<Command> {
        match self {
            Self::Root => Ok(Command::new(program)),
            Self::Sudo => {
                let mut sudo = Command::new("sudo");
                sudo.arg(program);
                Ok(sudo)
            }
            Self::None => bail!("not root, and sudo is not installed"),
        }
    }
}

/// Whether the effective user is root, read from /proc so no libc call (and
/// no `unsafe`) is needed.
pub fn is_root() -> Result<bool> {
    let status =
        fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    effective_uid(&status)
        .map(|uid| uid == 0)
        .context("no Uid line in /proc/self/status")
}

/// The effective uid from /proc/PID/status, whose `Uid:` line lists the real,
/// effective, saved and filesystem uids.
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_uid() {
        let status = "Name:\tsh\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t1000\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tsh\n"), None);
    }

    #[test]
    fn root_runs_commands_directly_and_sudo_prefixes_them() {
        let direct = Privilege::Root.command("mount").unwrap();
        assert_eq!(direct.get_program(), "mount");
        let sudo = Privilege::Sudo.command("mount").unwrap();
        assert_eq!(sudo.get_program(), "sudo");
        assert_eq!(sudo.get_args().collect::<Vec<_>>(), ["mount"]);
        assert!(Privilege::None.command("mount").is_err());
    }
}
