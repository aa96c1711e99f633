//! Checks profiles written by this crate with the real `go tool pprof`.

mod support;

use std::path::{Path, PathBuf};

use support::{parse_top, parse_traces, pprof, TopRow};

use memtrace_pprof::{encode, Label, LineSpec, LocationSpec, MappingSpec, ProfileBuilder};

const MIB: i64 = 1 << 20;
const PAGE: i64 = 4096;
const BUILD_ID: &str = "5b3c1f0e9a7d2c4b";

/// Writes the profile of a process whose `main.main` holds 1 MiB itself and
/// calls `main.allocate` (holding `allocate_bytes`) and `main.parse`
/// (holding 512 KiB). Each byte count comes with its count of page faults.
fn write_profile(dir: &Path, name: &str, allocate_bytes: i64) -> PathBuf {
    let mut builder = ProfileBuilder::new(&[("resident_space", "bytes"), ("faults", "count")]);
    builder
        .default_sample_type("resident_space")
        .unwrap()
        .period("space", "bytes", PAGE)
        .time_nanos(1_700_000_000_000_000_000)
        .duration_nanos(10_000_000_000)
        .comment("written by memtrace-pprof's tests");
    let binary = builder.mapping(MappingSpec {
        start: 0x40_0000,
        limit: 0x80_0000,
        offset: 0,
        file: "/opt/app/bin/app",
        build_id: BUILD_ID,
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        has_inline_frames: true,
    });
    let mut frame = |address, function, line| {
        builder
            .location(LocationSpec {
                address,
                mapping: Some(binary),
                lines: &[LineSpec {
                    function,
                    system_name: Some(function),
                    file: Some("/src/app/main.go"),
                    line: Some(line),
                }],
            })
            .unwrap()
    };
    let allocate = frame(0x40_1000, "main.allocate", 12);
    let parse = frame(0x40_2000, "main.parse", 30);
    let main = frame(0x40_3000, "main.main", 50);

    let heap = [Label::Str {
        key: "region",
        value: "heap",
    }];
    let with_faults = |bytes: i64| [bytes, bytes / PAGE];
    builder
        .sample(&[allocate, main], &with_faults(allocate_bytes), &heap)
        .unwrap();
    builder
        .sample(&[parse, main], &with_faults(MIB / 2), &heap)
        .unwrap();
    builder.sample(&[main], &with_faults(MIB), &[]).unwrap();

    let path = dir.join(name);
    std::fs::write(&path, encode(&builder.build())).unwrap();
    path
}

fn row(function: &str, flat: i64, cum: i64) -> TopRow {
    (function.to_owned(), flat, cum)
}

#[test]
fn top_shows_resident_bytes_per_function() {
    let dir = tempfile::tempdir().unwrap();
    let profile = write_profile(dir.path(), "app.pb.gz", 3 * MIB);

    let output = pprof(
        dir.path(),
        &["-top", "-sample_index=resident_space"],
        &profile,
    );

    assert!(
        output.contains(&format!("Build ID: {BUILD_ID}")),
        "{output}"
    );
    assert!(output.contains("Type: resident_space"), "{output}");
    assert!(
        output.contains("written by memtrace-pprof's tests"),
        "{output}"
    );
    let (total, rows) = parse_top(&output);
    assert_eq!(total, 4 * MIB + MIB / 2, "{output}");
    assert_eq!(
        rows,
        [
            row("main.allocate", 3 * MIB, 3 * MIB),
            row("main.main", MIB, 4 * MIB + MIB / 2),
            row("main.parse", MIB / 2, MIB / 2),
        ],
        "{output}"
    );
}

#[test]
fn top_shows_the_second_sample_type() {
    let dir = tempfile::tempdir().unwrap();
    let profile = write_profile(dir.path(), "app.pb.gz", 3 * MIB);

    let output = pprof(dir.path(), &["-top", "-sample_index=faults"], &profile);

    let (total, rows) = parse_top(&output);
    let pages = |bytes| bytes / PAGE;
    assert_eq!(total, pages(4 * MIB + MIB / 2), "{output}");
    assert_eq!(
        rows,
        [
            row("main.allocate", pages(3 * MIB), pages(3 * MIB)),
            row("main.main", pages(MIB), pages(4 * MIB + MIB / 2)),
            row("main.parse", pages(MIB / 2), pages(MIB / 2)),
        ],
        "{output}"
    );
}

#[test]
fn traces_show_each_stack_with_labels_in_the_default_sample_type() {
    let dir = tempfile::tempdir().unwrap();
    let profile = write_profile(dir.path(), "app.pb.gz", 3 * MIB);

    // No -sample_index: pprof must pick resident_space, the default sample
    // type, over faults, the last one.
    let output = pprof(dir.path(), &["-traces"], &profile);

    assert!(output.contains("Type: resident_space"), "{output}");
    let heap = || vec!["region: heap".to_owned()];
    let frames = |names: &[&str]| names.iter().map(|&n| n.to_owned()).collect::<Vec<_>>();
    assert_eq!(
        parse_traces(&output),
        [
            (3 * MIB, heap(), frames(&["main.allocate", "main.main"])),
            (MIB / 2, heap(), frames(&["main.parse", "main.main"])),
            (MIB, vec![], frames(&["main.main"])),
        ],
        "{output}"
    );
}

#[test]
fn diff_base_shows_growth_in_one_function() {
    let dir = tempfile::tempdir().unwrap();
    let base = write_profile(dir.path(), "base.pb.gz", 3 * MIB);
    let grown = write_profile(dir.path(), "grown.pb.gz", 7 * MIB);

    let output = pprof(
        dir.path(),
        &[
            "-top",
            "-sample_index=resident_space",
            &format!("-diff_base={}", base.display()),
        ],
        &grown,
    );

    // Only main.allocate changed; main.main holds nothing new itself but
    // carries the growth cumulatively. main.parse did not change, so pprof
    // leaves it out.
    let (_, rows) = parse_top(&output);
    assert_eq!(
        rows,
        [
            row("main.allocate", 4 * MIB, 4 * MIB),
            row("main.main", 0, 4 * MIB),
        ],
        "{output}"
    );
}
