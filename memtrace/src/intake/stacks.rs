//! User stacks, copied out of the kernel's `STACKS` map.
//!
//! The kernel stores each distinct stack once under a hash of its frames and
//! records carry the hash. The agent copies stacks it has not seen and
//! deletes every entry it has read, so the kernel map only holds stacks
//! waiting to be read and never fills with old ones.

use std::sync::Arc;

use aya::maps::{HashMap as BpfHashMap, MapData};
use memtrace_common::StackFrames;

use super::event::{StackId, StackKeyed};

/// Return addresses of a user stack, innermost first.
pub type Frames = Arc<[u64]>;

#[derive(Default)]
pub struct StackTable {
    frames: StackKeyed<StackId, Frames>,
    /// Ids seen in records that the table does not have yet.
    wanted: usize,
}

impl StackTable {
    pub fn get(&self, id: StackId) -> Option<&Frames> {
        self.frames.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (StackId, &Frames)> + '_ {
        self.frames.iter().map(|(&id, frames)| (id, frames))
    }

    /// Notes a stack id seen in a record; cheap when it is known.
    pub fn saw(&mut self, id: Option<StackId>) {
        if let Some(id) = id {
            if !self.frames.contains_key(&id) {
                self.wanted += 1;
            }
        }
    }

    /// Whether records named stacks the table lacks since the last sync.
    pub fn wants_sync(&self) -> bool {
        self.wanted > 0
    }

    /// Copies new stacks out of the kernel map and deletes every entry read.
    /// Returns the number of new stacks.
    pub fn sync(&mut self, kernel: &mut BpfHashMap<MapData, u64, StackFrames>) -> usize {
        self.wanted = 0;
        let keys: Vec<u64> = kernel.keys().filter_map(Result::ok).collect();
        let mut added = 0;
        for key in keys {
            let Some(id) = StackId::new(key) else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(entry) = self.frames.entry(id) {
                if let Ok(stack) = kernel.get(&key, 0) {
                    let len = (stack.len as usize).min(stack.ips.len());
                    entry.insert(stack.ips[..len].into());
                    added += 1;
                }
            }
            // Already gone if the kernel side raced us; nothing to undo.
            let _ = kernel.remove(&key);
        }
        added
    }

    /// Adds a stack directly (tests, and stacks read from elsewhere).
    pub fn insert(&mut self, id: StackId, frames: &[u64]) {
        self.frames.insert(id, frames.into());
    }
}
