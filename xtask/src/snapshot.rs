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

/// Zero records lost, or what was lost.
pub fn lost_records(snapshot: &Value) -> Vec<String> {
    let lost = number(snapshot, "/records/lost_total");
    if lost == 0 {
        Vec::new()
    } else {
        vec![format!(
            "{lost} records lost (records.lost: {}), expected none",
            snapshot["records"]["lost"]
        )]
    }
}

/// A count in the snapshot; missing counts as 0 (memtrace leaves out calls
/// it never saw).
pub fn number(snapshot: &Value, pointer: &str) -> u64 {
    snapshot
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or(0)
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
        assert_eq!(number(&json!({}), "/calls/mmap/calls"), 0);
    }
}
