//! Decodes a heap profile written by a real Go program, the kind
//! `/debug/pprof/heap` serves.

mod support;

use memtrace_pprof::{decode, encode, DecodeLimits, ProfileView};
use support::{parse_top, pprof};

const MIB: i64 = 1 << 20;

/// Retains 32 MiB allocated in `main.allocateRetained`, then writes the heap
/// profile to the file named by its argument.
///
/// `MemProfileRate = 1` records every allocation instead of sampling one per
/// 512 KiB, so the totals are exact rather than estimates. The GC makes the
/// profile current: a heap profile shows the heap as of the last GC.
const PROGRAM: &str = r#"
package main

import (
	"os"
	"runtime"
	"runtime/pprof"
)

var retained [][]byte

//go:noinline
func allocateRetained() {
	for i := 0; i < 32; i++ {
		retained = append(retained, make([]byte, 1<<20))
	}
}

func main() {
	runtime.MemProfileRate = 1
	allocateRetained()
	runtime.GC()
	f, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		panic(err)
	}
	if err := f.Close(); err != nil {
		panic(err)
	}
}
"#;

#[test]
fn decodes_a_go_heap_profile() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.go"), PROGRAM).unwrap();
    support::run(support::go(dir.path()).args(["build", "-o", "heapdump", "main.go"]));
    let profile_path = dir.path().join("heap.pb.gz");
    support::run(
        std::process::Command::new(dir.path().join("heapdump"))
            .arg(&profile_path)
            .current_dir(dir.path()),
    );

    let bytes = std::fs::read(&profile_path).unwrap();
    let profile = decode(&bytes, &DecodeLimits::default()).unwrap();
    let view = ProfileView::new(&profile);

    for sample_type in [
        "alloc_objects",
        "alloc_space",
        "inuse_objects",
        "inuse_space",
    ] {
        assert!(
            view.sample_type_index(sample_type).is_some(),
            "no {sample_type}"
        );
    }
    let inuse = view.total("inuse_space").unwrap();
    assert!(
        (32 * MIB..40 * MIB).contains(&inuse),
        "inuse_space total is {inuse} bytes, expected 32 MiB and a little runtime overhead"
    );
    let top = view.function_totals("inuse_space").unwrap();
    let allocator = top
        .iter()
        .find(|total| total.function == "main.allocateRetained")
        .unwrap_or_else(|| panic!("main.allocateRetained missing from {top:#?}"));
    assert!(
        (32 * MIB..33 * MIB).contains(&allocator.flat),
        "main.allocateRetained holds {} bytes",
        allocator.flat
    );
    assert_eq!(top[0].function, "main.allocateRetained", "{top:#?}");
    let main_cum = top
        .iter()
        .find(|total| total.function == "main.main")
        .map(|t| t.cum);
    assert!(
        main_cum >= Some(allocator.flat),
        "main.main cum {main_cum:?}"
    );

    // Written back out, the profile still reads the same to pprof itself.
    let rewritten = dir.path().join("rewritten.pb.gz");
    std::fs::write(&rewritten, encode(&profile)).unwrap();
    let output = pprof(
        dir.path(),
        &["-top", "-sample_index=inuse_space"],
        &rewritten,
    );
    let (pprof_total, pprof_rows) = parse_top(&output);
    assert_eq!(pprof_total, inuse, "{output}");
    assert_eq!(
        pprof_rows[0],
        (allocator.function.clone(), allocator.flat, allocator.cum),
        "{output}"
    );
}
