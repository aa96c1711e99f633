//! The target's environment: `parse_go_settings` keeps the first GOGC,
//! GOMEMLIMIT and GODEBUG entries and nothing else, since the rest may be
//! secrets.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let settings = memtrace::runtime::parse_go_settings(data);
    for (key, kept) in [
        ("GOGC", &settings.gogc),
        ("GOMEMLIMIT", &settings.gomemlimit),
        ("GODEBUG", &settings.godebug),
    ] {
        // The values of the input's NUL-separated `KEY=value` entries.
        let prefix = format!("{key}=");
        let values: Vec<_> = data
            .split(|&byte| byte == 0)
            .filter_map(|entry| entry.strip_prefix(prefix.as_bytes()))
            .map(String::from_utf8_lossy)
            .collect();
        let Some(kept) = kept else {
            assert!(values.is_empty(), "{key} is set but was not kept");
            continue;
        };
        // Privacy: what is kept is the value of a `KEY=` entry...
        assert!(
            values.iter().any(|value| value == kept),
            "{key} holds {kept:?}, which is no {key} entry's value"
        );
        // ...and, as with Go's getenv, of the first one.
        assert_eq!(values[0], *kept, "{key} is not the first entry's value");
    }
});
