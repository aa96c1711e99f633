//! The machine memtrace runs on, as `uname` tells it: what a capture's
//! header records, and the agent's `host` label.

use std::ffi::CStr;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    /// `uname -r`.
    pub kernel_release: String,
    /// `uname -n`: the host name.
    pub host_name: String,
}

impl Machine {
    /// This machine; empty fields if `uname` fails (it does not on Linux).
    pub fn this() -> Self {
        // SAFETY: uname fills the struct it is given, and its fields are
        // NUL-terminated when it succeeds.
        unsafe {
            let mut name: libc::utsname = std::mem::zeroed();
            if libc::uname(&mut name) != 0 {
                return Self::default();
            }
            let field = |bytes: &[libc::c_char]| {
                CStr::from_ptr(bytes.as_ptr())
                    .to_string_lossy()
                    .into_owned()
            };
            Self {
                kernel_release: field(&name.release),
                host_name: field(&name.nodename),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_the_kernel_says() {
        let machine = Machine::this();
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(machine.host_name, hostname.trim());
        assert_eq!(machine.kernel_release, release.trim());
    }
}
