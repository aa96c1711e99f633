//! The largest resident mappings, with alike ones counted once: a Go heap
//! is dozens of equal arenas, and ten rows of `4.0 MiB anonymous rw-p` tell
//! less than one row saying `10 × 4.0 MiB`.

use crate::{attribution::RangeRow, model::CreatedBy};

/// Mappings alike in size, resident and lazily freed bytes, backing and
/// origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingGroup {
    pub count: usize,
    /// Each mapping's size, resident and lazily freed bytes.
    pub size: u64,
    pub resident: u64,
    pub lazyfree: u64,
    pub mapping: String,
    pub created_by: CreatedBy,
    /// The first of them (the lowest address among the largest).
    pub start: u64,
    pub end: u64,
}

impl MappingGroup {
    pub fn total_resident(&self) -> u64 {
        self.resident * self.count as u64
    }
}

/// Groups `rows` (largest first, as `attribution::top_ranges` gives them),
/// keeping the order of each group's first row, and the first `count`
/// groups.
pub fn group(rows: &[RangeRow], count: usize) -> Vec<MappingGroup> {
    let mut groups: Vec<MappingGroup> = Vec::new();
    for row in rows {
        let size = row.end - row.start;
        let alike = groups.iter_mut().find(|group| {
            group.size == size
                && group.resident == row.resident
                && group.lazyfree == row.lazyfree
                && group.created_by == row.created_by
                && group.mapping == row.mapping
        });
        match alike {
            Some(group) => group.count += 1,
            None => groups.push(MappingGroup {
                count: 1,
                size,
                resident: row.resident,
                lazyfree: row.lazyfree,
                mapping: row.mapping.clone(),
                created_by: row.created_by,
                start: row.start,
                end: row.end,
            }),
        }
    }
    groups.sort_by_key(|group| std::cmp::Reverse(group.total_resident()));
    groups.truncate(count);
    groups
}

/// How a mapping came to be, in words for a sentence.
pub fn created_by_phrase(created_by: CreatedBy) -> &'static str {
    match created_by {
        CreatedBy::Mmap => "mapped by mmap",
        CreatedBy::Brk => "heap grown by brk",
        CreatedBy::Mremap => "moved or grown by mremap",
        CreatedBy::BeforeAttach => "mapped before memtrace attached",
        CreatedBy::Exec => "set up by execve",
        CreatedBy::Unobserved => "found in /proc with no event",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn row(start: u64, size: u64, resident: u64, mapping: &str) -> RangeRow {
        RangeRow {
            start,
            end: start + size,
            mapping: mapping.to_owned(),
            created_by: CreatedBy::Mmap,
            stack: None,
            resident,
            lazyfree: 0,
        }
    }

    #[test]
    fn alike_mappings_are_one_group() {
        let mut rows: Vec<RangeRow> = (0..10)
            .map(|i| row(i * 8 * MIB, 4 * MIB, 4 * MIB, "anonymous rw-p"))
            .collect();
        rows.insert(0, row(1 << 40, 64 * MIB, 48 * MIB, "anonymous rw-p"));
        rows.push(row(1 << 41, 4 * MIB, 4 * MIB, "/usr/lib/libc.so.6"));
        rows.push(row(1 << 42, 4 * MIB, 2 * MIB, "anonymous rw-p"));
        let groups = group(&rows, 10);
        let shape: Vec<(usize, u64)> = groups.iter().map(|g| (g.count, g.resident)).collect();
        assert_eq!(
            shape,
            [(1, 48 * MIB), (10, 4 * MIB), (1, 4 * MIB), (1, 2 * MIB)]
        );
        assert_eq!(groups[1].start, 0);
        assert_eq!(groups[2].mapping, "/usr/lib/libc.so.6");
        assert_eq!(group(&rows, 2).len(), 2);
    }
}
