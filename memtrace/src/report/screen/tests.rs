//! The screen drawn on ratatui's test backend: what fits at the sizes
//! people use, and what each view shows.

use std::time::Duration;

use ratatui::{backend::TestBackend, Terminal};

use super::{draw, Shown, View};
use memtrace_common::StackSource;

use crate::{
    attribution::{CallRow, GrowthRow, StackCoverage, StackRow},
    model::{reconcile::Outcome, Activity, Totals},
    proc::KernelTotals,
    report::{
        history::{Point, Trend},
        snapshot::{Footprint, GrowthFrom, KernelReading, Lost, Snapshot, Unresolved},
        state::TargetState,
    },
};

const MIB: u64 = 1 << 20;

fn frames(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// A demo-like moment: 16 MiB in use under `touch`, 24 MiB lazily freed
/// under `advise`, with a long generic name to cut.
fn snapshot() -> Snapshot {
    let kernel = KernelTotals {
        rss: 44 * MIB,
        anon: 40 * MIB,
        file: 4 * MIB,
        lazyfree: 24 * MIB,
        ..KernelTotals::default()
    };
    let long = "alloc::raw_vec::RawVec<T,A>::grow_one<std::collections::hash::map::HashMap<K,V>>::h0123456789abcdef";
    Snapshot {
        seq: 5,
        is_final: false,
        elapsed: Duration::from_secs(5),
        unix_ms: 0,
        pid: 4242,
        command: "memtrace demo".to_owned(),
        executable: None,
        state: TargetState::Running,
        kernel: Some(kernel),
        model: Totals {
            rss: 44 * MIB,
            anon: 40 * MIB,
            file: 4 * MIB,
            lazyfree: 24 * MIB,
            in_use: 20 * MIB,
            ..Totals::default()
        },
        reconcile: Outcome::default(),
        activity: Activity::default(),
        lost: Lost::default(),
        approximate: false,
        records: 16_552,
        top_ranges: Vec::new(),
        mapping_groups: Vec::new(),
        anon_before_attach: 0,
        stack_walks: 0,
        stack_coverage: StackCoverage::default(),
        footprint: Footprint::default(),
        stack_source: StackSource::default(),
        top_stacks: vec![
            StackRow {
                stack: None,
                frames: frames(&["memtrace::demo::touch", "memtrace::demo::workload", "main"]),
                in_use: 16 * MIB,
                lazyfree: 0,
                end: None,
                cut_in: None,
                unnamed_jit: false,
            },
            StackRow {
                stack: None,
                frames: frames(&[long, "memtrace::demo::advise_site", "main"]),
                in_use: MIB,
                lazyfree: 24 * MIB,
                end: None,
                cut_in: None,
                unnamed_jit: false,
            },
        ],
        top_calls: vec![CallRow {
            call: "MADV_FREE".to_owned(),
            stack: None,
            frames: frames(&["__GI_madvise", "memtrace::demo::advise"]),
            calls: 1,
            bytes: 24 * MIB,
            resident_bytes: 24 * MIB,
        }],
        top_faults: Vec::new(),
        growth: vec![GrowthRow {
            stack: None,
            frames: frames(&["memtrace::demo::touch"]),
            grown: 16 * MIB as i64,
        }],
        growth_from: GrowthFrom::FirstInterval,
        growers: Vec::new(),
        whole: None,
        pid_in_namespace: None,
        kernel_reading: KernelReading::Current,
        process_madvise_unresolved: Unresolved::default(),
        profile_serving: 0,
        trend: Trend::Unknown {
            needs: Duration::from_secs(3),
        },
        sparkline: String::new(),
        trend_needs: 3,
        recent: (1..=5)
            .map(|second| Point {
                elapsed: Duration::from_secs(second),
                rss: second * 8 * MIB,
                file: 4 * MIB,
                ..Point::default()
            })
            .collect(),
        cgroup: None,
        oom_kill: None,
        runtime: None,
        address_space: 0,
        go_heap: None,
        previous_rss: Some(40 * MIB),
    }
}

fn shown(view: View) -> Shown {
    Shown {
        view,
        status: String::new(),
        profiles_to: "/tmp/profiles".to_owned(),
        children: Vec::new(),
    }
}

/// The screen as text, one string per row.
fn draw_at(width: u16, height: u16, view: View, output: &[String]) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| draw::screen(frame, &snapshot(), &shown(view), output))
        .unwrap();
    let buffer = terminal.backend().buffer().clone();
    (0..height)
        .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect())
        .collect()
}

#[test]
fn each_part_is_on_the_screen_once_at_80_by_24_and_200_by_50() {
    for (width, height) in [(80, 24), (200, 50)] {
        let rows = draw_at(width, height, View::InUse, &["demo: done".to_owned()]);
        let text = rows.join("\n");
        assert_eq!(rows.len(), usize::from(height));
        assert_eq!(text.matches("── memtrace · pid 4242").count(), 1, "{text}");
        for part in [
            "RSS 44.0 MiB (+4.0 MiB) = in use 16.0 MiB + lazily freed 24.0 MiB + file 4.0 MiB",
            "trend: needs 3 more intervals",
            "memtrace::demo::touch",
            "Given back, by call and stack",
            "MADV_FREE",
            "Grew since the first interval",
            "demo: done",
            "q quit with the final report",
        ] {
            assert!(
                text.contains(part),
                "{width}x{height} lacks {part:?}:\n{text}"
            );
        }
        // Generic clutter is shortened on the screen.
        assert!(
            !text.contains("h0123456789abcdef") && !text.contains("<T,A>"),
            "{text}"
        );
    }
}

#[test]
fn the_toggle_ranks_stacks_by_lazily_freed_bytes() {
    let in_use = draw_at(100, 30, View::InUse, &[]).join("\n");
    let lazy = draw_at(100, 30, View::LazilyFreed, &[]).join("\n");
    assert!(in_use.contains("In use, by the stack"), "{in_use}");
    assert!(lazy.contains("Lazily freed (MADV_FREE"), "{lazy}");
    let first_row = |text: &str, title: &str| -> String {
        let lines: Vec<&str> = text.lines().collect();
        let at = lines.iter().position(|line| line.contains(title)).unwrap();
        lines[at + 1].to_owned()
    };
    assert!(first_row(&in_use, "In use, by").contains("16.0 MiB"));
    let lazy_first = first_row(&lazy, "Lazily freed (");
    assert!(
        lazy_first.contains("24.0 MiB") && lazy_first.contains("in use 1.0 MiB"),
        "{lazy_first}"
    );
}

#[test]
fn stacks_keep_their_innermost_frame_when_cut() {
    let rows = draw_at(60, 24, View::InUse, &[]);
    let row = rows
        .iter()
        .find(|row| row.contains("16.0 MiB") && row.contains("touch"))
        .unwrap_or_else(|| panic!("{}", rows.join("\n")));
    assert!(row.contains("memtrace::demo::touch ← …"), "{row}");
}
