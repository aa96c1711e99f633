//! memtrace's kernel programs.
//!
//! Data flows one way: tracepoints fire in the traced process (or in the
//! kernel on its behalf), each program keeps only the target's events and
//! writes a lean record into the `EVENTS` ring buffer. Nothing here interprets
//! memory; the agent's address-space model does that.
//!
//! - [`faults`]: user page faults (`tp_btf/page_fault_user`), with user stacks.
//! - [`syscalls`]: mmap, munmap, mremap, brk, madvise, process_madvise, seen
//!   as they return (`tp_btf/sys_exit`), with their arguments read from the
//!   saved registers, so one record has arguments and result.
//! - [`rss`]: the kernel's RSS counters (`tp_btf/rss_stat`), to notice when
//!   something other than the target (reclaim, the OOM reaper) changes them.
//! - [`lifecycle`]: exec, exit, fork and OOM kills of the target.
#![no_std]
#![no_main]

mod faults;
mod lifecycle;
mod maps;
mod rss;
mod stacks;
mod syscalls;
mod target;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
