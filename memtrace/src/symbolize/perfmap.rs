//! Names of JIT-compiled code from the perf map the runtime writes:
//! `/tmp/perf-PID.map`, one `START SIZE name` line per function, in hex, as
//! Node (`--perf-basic-prof`), the JVM (`jcmd PID Compiler.perfmap`), .NET
//! (`DOTNET_PerfMapEnabled`) and Python 3.12 (`-X perf`) write it, and
//! `perf` reads it. The file is the process's own `/tmp`, seen through its
//! root, under the PID its own namespace gives it.

use std::{path::PathBuf, time::SystemTime};

use crate::proc::ProcessView;

/// One perf map line: code at `start..start + size` is `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerfMapEntry {
    pub start: u64,
    pub size: u64,
    pub name: String,
}

/// Parses a perf map; lines that are not `START SIZE name` are skipped.
/// Addresses may be written with or without `0x` (the JVM writes it).
pub fn parse_perf_map(text: &str) -> Vec<PerfMapEntry> {
    let hex = |word: &str| u64::from_str_radix(word.trim_start_matches("0x"), 16).ok();
    let mut entries: Vec<PerfMapEntry> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.splitn(3, ' ');
            let start = hex(words.next()?)?;
            let size = hex(words.next()?)?;
            let name = words.next()?.trim();
            (size > 0 && !name.is_empty()).then(|| PerfMapEntry {
                start,
                size,
                name: name.to_owned(),
            })
        })
        .collect();
    // Later lines win: code is recompiled at addresses freed before.
    entries.reverse();
    entries.sort_by_key(|entry| entry.start);
    entries.dedup_by_key(|entry| entry.start);
    entries
}

/// A process's perf map, read again when it changed.
pub struct PerfMap {
    view: ProcessView,
    path: Option<PathBuf>,
    read_at: Option<SystemTime>,
    entries: Vec<PerfMapEntry>,
}

impl PerfMap {
    pub fn new(pid: u32) -> Self {
        Self {
            view: ProcessView::new(pid),
            path: None,
            read_at: None,
            entries: Vec::new(),
        }
    }

    /// Whether the map changed since the last look (written, or grown as
    /// the runtime compiled more code).
    pub fn changed(&mut self) -> bool {
        let before = self.read_at;
        self.refresh();
        self.read_at != before
    }

    /// The name of the JIT code at `address`, if the map had it when last
    /// read.
    pub fn lookup(&mut self, address: u64) -> Option<String> {
        if self.read_at.is_none() {
            self.refresh();
        }
        let index = self
            .entries
            .partition_point(|entry| entry.start <= address)
            .checked_sub(1)?;
        let entry = &self.entries[index];
        (address < entry.start + entry.size).then(|| entry.name.clone())
    }

    fn refresh(&mut self) {
        let path = self.path.get_or_insert_with(|| {
            let pid = self.view.namespace_pid().unwrap_or(self.view.pid());
            self.view.file(&format!("/tmp/perf-{pid}.map"))
        });
        let Ok(modified) = std::fs::metadata(&*path).and_then(|meta| meta.modified()) else {
            return;
        };
        if self.read_at == Some(modified) {
            return;
        }
        if let Ok(text) = std::fs::read_to_string(&*path) {
            self.entries = parse_perf_map(&text);
            self.read_at = Some(modified);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_and_jvm_lines_are_read() {
        let map = parse_perf_map(
            "18c4000 300 Builtin:DeoptimizationEntry_Eager\n\
             1f724014e2a6 23 JS:~hot [eval]:1:13\n\
             0x00007f1b34ec7620 0x00000000000000d8 long Spin.f(long)\n\
             garbage line\n\
             12 0 empty\n",
        );
        assert_eq!(map.len(), 3);
        assert_eq!(map[0].name, "Builtin:DeoptimizationEntry_Eager");
        assert_eq!(map[1].name, "JS:~hot [eval]:1:13");
        assert_eq!(map[2].start, 0x7f1b_34ec_7620);
        assert_eq!(map[2].name, "long Spin.f(long)");
    }

    #[test]
    fn a_recompiled_function_takes_the_later_name() {
        let map = parse_perf_map("1000 10 old\n1000 10 new\n");
        assert_eq!(map.len(), 1);
        assert_eq!(map[0].name, "new");
    }
}
