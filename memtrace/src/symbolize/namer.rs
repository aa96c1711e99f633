//! Names for the stacks of one process: its stack table's addresses,
//! resolved through its model's mappings.

use super::{Frame, Symbolizer};
use crate::{
    intake::{StackId, StackTable},
    model::AddressSpace,
};

/// What naming one process's stacks takes: the stacks' addresses, the
/// symbolizer, and the model whose mappings say which file each address is in.
pub struct Namer<'a> {
    pub stacks: &'a StackTable,
    pub symbolizer: &'a mut Symbolizer,
    pub model: &'a AddressSpace,
}

impl Namer<'_> {
    /// The symbolized frames of `stack`, innermost first; none when the
    /// stack is unknown.
    pub fn frames(&mut self, stack: Option<StackId>) -> Vec<Frame> {
        let Some(stack) = stack else {
            return Vec::new();
        };
        match self.stacks.get(stack) {
            Some(ips) => self
                .symbolizer
                .stack(stack, ips, self.model.extents())
                .to_vec(),
            None => Vec::new(),
        }
    }

    /// The function names of `stack`, innermost first (inlined functions
    /// each their own), or one label saying why there are none.
    pub fn names(&mut self, stack: Option<StackId>) -> Vec<String> {
        let frames = self.frames(stack);
        if frames.is_empty() {
            return vec![match stack {
                Some(stack) => format!("[stack {stack} not read]"),
                None => "[no stack]".into(),
            }];
        }
        frames.iter().flat_map(Frame::names).collect()
    }
}
