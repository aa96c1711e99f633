//! Ring-buffer records: `memtrace::intake::decode` must reject any bytes it
//! cannot read with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = memtrace::intake::decode(data) {
        // The process a record is about is the header's tgid (bytes 8..12).
        assert_eq!(decoded.tgid.to_ne_bytes(), data[8..12]);
    }
});
