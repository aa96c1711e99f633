//! Go heap profiles (pprof, gzipped or not): `decode` rejects what is not a
//! consistent profile, and whatever it accepts is safe to read through
//! `ProfileView` for every sample type, and for one it does not have.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace_pprof::{DecodeLimits, ProfileView};

/// Small, so a gzip bomb costs the fuzzer little time.
const LIMITS: DecodeLimits = DecodeLimits {
    max_decompressed_bytes: 1 << 20,
};

fuzz_target!(|data: &[u8]| {
    let Ok(profile) = memtrace_pprof::decode(data, &LIMITS) else {
        return;
    };
    let view = ProfileView::new(&profile);
    let names = profile.sample_type.iter().map(|sample_type| {
        let index = usize::try_from(sample_type.r#type).expect("validated string index");
        profile.string_table[index].as_str()
    });
    for name in names.chain(["no such sample type"]) {
        let _ = view.total(name);
        if let Some(stacks) = view.stacks(name) {
            stacks.for_each(drop);
        }
        let _ = view.function_totals(name);
    }
});
