//! Capture files (`memtrace report`): any bytes read to their end or fail
//! without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = memtrace::capture::CaptureReader::open(data) else {
        return;
    };
    while let Ok(Some(_)) = reader.next_chunk() {}
});
