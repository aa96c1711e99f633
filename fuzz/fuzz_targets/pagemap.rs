//! /proc/PID/pagemap: one entry per whole 8 bytes, a partial one ignored.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::model::reconcile::PageEntry;

fuzz_target!(|data: &[u8]| {
    let entries = memtrace::proc::decode_pagemap(data);
    assert_eq!(entries.len(), data.len() / 8);
    for entry in entries {
        if let PageEntry::Present { pfn, .. } = entry {
            assert!(pfn < 1 << 55, "frame number wider than its 55 bits");
        }
    }
});
