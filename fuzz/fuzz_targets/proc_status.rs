//! /proc/PID/status: any bytes parse or fail without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = memtrace::proc::parse_status(data);
});
