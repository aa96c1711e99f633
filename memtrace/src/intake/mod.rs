//! Event intake: records from the kernel programs' ring buffer, decoded into
//! typed [`Event`]s, and the user stacks they refer to.

mod decode;
mod event;
mod ring;
mod stacks;

pub use decode::{decode, DecodeError, Decoded};
pub use event::{
    Access, Errno, Event, EventKind, Fault, Madvise, Mmap, Mremap, OomKill, ProcessMadvise,
    RssMember, StackId, StackIdHasher, StackKeyed, StackSample, SyscallResult,
};
pub use ring::{EventSource, Records, Sink};
pub use stacks::{CutReason, Frames, Stack, StackEnd, StackTable};
