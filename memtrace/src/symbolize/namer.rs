//! Names for the stacks of one process: its stack table's addresses,
//! resolved through its model's mappings.

use std::sync::Arc;

use super::{Frame, NamedStack, Symbolizer};
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
        self.named(stack)
            .map(|named| named.frames.clone())
            .unwrap_or_default()
    }

    /// The stack with its frames named and its end known; `None` for no
    /// stack, or one never read.
    pub fn named(&mut self, stack: Option<StackId>) -> Option<Arc<NamedStack>> {
        let id = stack?;
        let stack = self.stacks.get(id)?;
        Some(self.symbolizer.stack(id, stack, self.model.extents()))
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
