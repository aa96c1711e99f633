//! The profile's string table.

use std::collections::HashMap;

/// Interns strings into a profile's string table, so each distinct string is
/// stored once and referred to by its index.
#[derive(Debug)]
pub(crate) struct StringTable {
    strings: Vec<String>,
    index: HashMap<String, i64>,
}

impl StringTable {
    /// A table holding only "", which the format requires at index 0 so that
    /// an unset (zero) index reads as the empty string.
    pub(crate) fn new() -> Self {
        Self {
            strings: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }

    /// The index of `s`, adding it on first use.
    pub(crate) fn intern(&mut self, s: &str) -> i64 {
        if let Some(&index) = self.index.get(s) {
            return index;
        }
        // A table never nears i64::MAX entries: memory runs out long before.
        let index = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.index.insert(s.to_owned(), index);
        index
    }

    /// The index of `s` if it was interned.
    pub(crate) fn get(&self, s: &str) -> Option<i64> {
        self.index.get(s).copied()
    }

    /// The strings in index order, for `Profile::string_table`.
    pub(crate) fn into_vec(self) -> Vec<String> {
        self.strings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_string_is_index_zero() {
        let mut table = StringTable::new();
        assert_eq!(table.intern(""), 0);
        assert_eq!(table.into_vec(), vec![String::new()]);
    }

    #[test]
    fn interning_twice_returns_the_same_index() {
        let mut table = StringTable::new();
        let a = table.intern("a");
        let b = table.intern("b");
        assert_eq!(table.intern("a"), a);
        assert_ne!(a, b);
        assert_eq!(table.into_vec(), vec!["", "a", "b"]);
    }
}
