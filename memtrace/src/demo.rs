//! `memtrace demo`: a workload whose memory behaviour is known, traced end
//! to end, so a first run shows what memtrace explains.
//!
//! The workload maps 64 MiB, touches all of it, then gives part of it back
//! three ways: 24 MiB with `MADV_FREE` (stays in RSS), 16 MiB with
//! `MADV_DONTNEED` (leaves RSS at once) and 8 MiB with `munmap`; 16 MiB
//! stays in use.

use std::{ffi::OsString, io, ptr, time::Duration};

use crate::exit::ExitCode;

pub const MAPPED: usize = 64 << 20;
pub const LAZILY_FREED: usize = 24 << 20;
pub const DONTNEED: usize = 16 << 20;
pub const UNMAPPED: usize = 8 << 20;
pub const IN_USE: usize = MAPPED - LAZILY_FREED - DONTNEED - UNMAPPED;

const PAGE: usize = 4096;

/// The command `memtrace demo` runs: this binary's hidden workload.
pub fn command() -> Vec<OsString> {
    let exe = std::env::current_exe().map_or_else(|_| OsString::from("memtrace"), Into::into);
    vec![exe, "demo-workload".into()]
}

/// What the demo's process calls itself, so reports (and `ps`) show what
/// was run rather than the binary's name.
const NAME: &std::ffi::CStr = c"memtrace demo";

/// Runs the workload, holding the memory for `hold` seconds at the end.
pub fn workload(hold: f64) -> ExitCode {
    // SAFETY: PR_SET_NAME reads a NUL-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, NAME.as_ptr()) };
    match run(hold) {
        Ok(()) => ExitCode::Success,
        Err(err) => {
            eprintln!("memtrace demo workload: {err}");
            ExitCode::Failure
        }
    }
}

fn run(hold: f64) -> io::Result<()> {
    println!(
        "demo: mapping {} MiB, touching it, then MADV_FREE {} MiB, MADV_DONTNEED {} MiB, \
         munmap {} MiB; {} MiB stays in use",
        MAPPED >> 20,
        LAZILY_FREED >> 20,
        DONTNEED >> 20,
        UNMAPPED >> 20,
        IN_USE >> 20
    );
    // Give the tracer a moment to show the process before it changes.
    std::thread::sleep(Duration::from_millis(300));
    let region = map(MAPPED)?;
    touch(region, MAPPED);
    std::thread::sleep(Duration::from_millis(500));
    let in_use = region.wrapping_add(IN_USE);
    advise(in_use, LAZILY_FREED, libc::MADV_FREE)?;
    advise(
        in_use.wrapping_add(LAZILY_FREED),
        DONTNEED,
        libc::MADV_DONTNEED,
    )?;
    unmap(in_use.wrapping_add(LAZILY_FREED + DONTNEED), UNMAPPED)?;
    println!("demo: done; holding the rest for {hold:.1}s");
    std::thread::sleep(Duration::from_secs_f64(hold.max(0.0)));
    Ok(())
}

#[inline(never)]
fn map(len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh private anonymous mapping.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(addr.cast())
}

#[inline(never)]
fn touch(region: *mut u8, len: usize) {
    for offset in (0..len).step_by(PAGE) {
        // SAFETY: inside the mapping made by `map`.
        unsafe { ptr::write_volatile(region.add(offset), 1) };
    }
}

#[inline(never)]
fn advise(region: *mut u8, len: usize, advice: i32) -> io::Result<()> {
    // SAFETY: a range inside our own mapping.
    if unsafe { libc::madvise(region.cast(), len, advice) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[inline(never)]
fn unmap(region: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: the tail of our own mapping, not used afterwards.
    if unsafe { libc::munmap(region.cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
