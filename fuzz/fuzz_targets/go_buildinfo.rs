//! Go build info of the traced executable: any bytes yield `Some` or `None`,
//! never a panic, and a version found is within the parser's bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The parser's limit on the version string, in bytes of the executable
/// (each becomes at most one character).
const MAX_VERSION_BYTES: usize = 256;

fuzz_target!(|data: &[u8]| {
    if let Some(info) = memtrace::runtime::parse_go_buildinfo(data) {
        let characters = info.version.chars().count();
        assert!((1..=MAX_VERSION_BYTES).contains(&characters), "{info:?}");
    }
});
