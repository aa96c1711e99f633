//! /proc/PID/smaps: any bytes parse or fail without a panic, and what parses
//! is a list of well-formed VMAs sorted by start address.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(vmas) = memtrace::proc::parse_smaps(data) else {
        return;
    };
    for vma in &vmas {
        assert!(vma.start <= vma.end, "VMA ends before it starts: {vma:?}");
    }
    assert!(
        vmas.windows(2).all(|pair| pair[0].start <= pair[1].start),
        "VMAs are not sorted by start"
    );
});
