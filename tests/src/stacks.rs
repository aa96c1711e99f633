//! Reading stacks out of memtrace's JSON and profiles, for the whole-stack
//! tests (`tests/stacks.rs`, `tests/servers.rs`), and small helpers those
//! tests share for the peers they start.

use std::{
    net::TcpListener,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// A row's frames (`top_stacks`, `top_calls`, `top_faults`), innermost first.
pub fn frames(row: &Value) -> Vec<&str> {
    row["frames"]
        .as_array()
        .unwrap_or_else(|| panic!("no frames in {row}"))
        .iter()
        .map(|frame| frame.as_str().expect("frames are names"))
        .collect()
}

/// Whether `frames` holds `run`, frame after frame.
pub fn has_run(frames: &[&str], run: &[&str]) -> bool {
    frames.windows(run.len()).any(|window| window == run)
}

/// The sum of a numeric field over rows; a row without it is a failure.
pub fn sum(rows: &[&Value], field: &str) -> u64 {
    rows.iter()
        .map(|row| {
            row[field]
                .as_u64()
                .unwrap_or_else(|| panic!("no {field} in {row}"))
        })
        .sum()
}

/// The share of `side` ("resident" or "released") bytes whose stacks are
/// whole, as memtrace reports it.
pub fn complete_percent(snapshot: &Value, side: &str) -> f64 {
    snapshot["stacks"][side]["complete_percent"]
        .as_f64()
        .unwrap_or_else(|| {
            panic!(
                "no stacks.{side}.complete_percent in {}",
                snapshot["stacks"]
            )
        })
}

/// A loopback port nobody uses now, for a server the test starts a moment
/// later.
pub fn free_loopback_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Polls `ready` every 100 ms until it holds; panics with `what` after
/// `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        thread::sleep(Duration::from_millis(100));
    }
}
