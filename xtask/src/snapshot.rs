//! memtrace's JSON snapshots (`--json`, docs/json-schema.md) as the harness
//! reads them (`cargo xtask bench`, `cargo xtask soak`).

use std::{fs, path::Path};

use anyhow::{Context as _, Result};
use serde_json::Value;

/// The `"type":"final"` snapshot memtrace writes last to its JSON file.
pub fn final_snapshot(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("memtrace wrote no {}", path.display()))?;
    last_final(&text).with_context(|| format!("no final snapshot in {}", path.display()))
}

fn last_final(text: &str) -> Option<Value> {
    text.lines().rev().find_map(|line| {
        let snapshot: Value = serde_json::from_str(line).ok()?;
        (snapshot["type"] == "final").then_some(snapshot)
    })
}

/// Zero records lost, or what was lost (or that the count is missing).
pub fn lost_records(snapshot: &Value) -> Vec<String> {
    match number(snapshot, "/records/lost_total") {
        Ok(0) => Vec::new(),
        Ok(lost) => vec![format!(
            "{lost} records lost (records.lost: {}), expected none",
            snapshot["records"]["lost"]
        )],
        Err(missing) => vec![missing.to_string()],
    }
}

/// A whole number in the snapshot, by JSON pointer. A missing one is an
/// error that names it: a renamed key must never read as 0.
pub fn number(snapshot: &Value, pointer: &str) -> Result<u64> {
    snapshot
        .pointer(pointer)
        .and_then(Value::as_u64)
        .with_context(|| format!("memtrace's snapshot has no whole number at {pointer}"))
}

/// The rows of `list` (`top_faults`, `top_calls`) whose frames include one
/// of `functions`. The list and every row's frames must be there.
pub fn rows_through<'a>(
    snapshot: &'a Value,
    list: &str,
    functions: &[&str],
) -> Result<Vec<&'a Value>> {
    let rows = snapshot[list]
        .as_array()
        .with_context(|| format!("memtrace's snapshot has no list {list}"))?;
    let mut through = Vec::new();
    for row in rows {
        let frames = row["frames"]
            .as_array()
            .with_context(|| format!("a row of {list} has no frames: {row}"))?;
        if frames
            .iter()
            .any(|frame| frame.as_str().is_some_and(|name| functions.contains(&name)))
        {
            through.push(row);
        }
    }
    Ok(through)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_final_snapshot_is_the_last_line_typed_final() {
        let text = "{\"type\":\"interval\",\"seq\":1}\n{\"type\":\"final\",\"seq\":2}\n";
        assert_eq!(last_final(text).unwrap()["seq"], 2);
        assert_eq!(last_final("{\"type\":\"interval\",\"seq\":1}\n"), None);
        assert_eq!(last_final(""), None);
    }

    #[test]
    fn lost_records_name_what_was_lost() {
        assert!(lost_records(&json!({"records": {"lost_total": 0}})).is_empty());
        assert_eq!(
            lost_records(&json!({"records": {"lost_total": 3, "lost": {"faults": 3}}})),
            ["3 records lost (records.lost: {\"faults\":3}), expected none"]
        );
        assert_eq!(
            lost_records(&json!({"records": {}})),
            ["memtrace's snapshot has no whole number at /records/lost_total"]
        );
    }

    #[test]
    fn a_missing_number_is_an_error_not_zero() {
        let snapshot = json!({"calls": {"mmap": {"calls": 3}}});
        assert_eq!(number(&snapshot, "/calls/mmap/calls").unwrap(), 3);
        assert_eq!(
            number(&snapshot, "/calls/munmap/calls")
                .unwrap_err()
                .to_string(),
            "memtrace's snapshot has no whole number at /calls/munmap/calls"
        );
    }

    #[test]
    fn rows_are_picked_by_any_of_their_frames() {
        let snapshot = json!({"top_calls": [
            {"frames": ["__GI_munmap", "run_op", "main"], "calls": 2},
            {"frames": ["__GI_munmap", "_dl_unload_cache"], "calls": 1},
        ]});
        let rows = rows_through(&snapshot, "top_calls", &["run_op", "bench_unmap"]).unwrap();
        assert_eq!(rows, [&snapshot["top_calls"][0]]);
        assert!(rows_through(&snapshot, "top_faults", &["run_op"]).is_err());
        let frameless = json!({"top_calls": [{"calls": 2}]});
        assert!(rows_through(&frameless, "top_calls", &["run_op"]).is_err());
    }
}
