//! Reading and writing pprof profiles.
//!
//! pprof's `profile.proto` is the format `go tool pprof` reads and Go's
//! `runtime/pprof` and `net/http/pprof` serve. This crate owns that schema and
//! the three things memtrace does with it:
//!
//! * **Write** a profile: [`ProfileBuilder`] interns strings, functions,
//!   mappings and locations so the result is valid by construction, and
//!   [`encode`] / [`write_to`] gzip it the way pprof tools expect.
//! * **Read** a profile: [`decode`] takes gzipped or raw bytes from an
//!   untrusted source, bounds how much it decompresses, and checks every
//!   cross-reference before handing the profile out.
//! * **Analyse** a profile: [`ProfileView`] answers totals, stacks and
//!   per-function flat/cumulative values by sample type name.
//!
//! # Examples
//!
//! ```
//! use memtrace_pprof::{decode, encode, DecodeLimits, Label, LineSpec, LocationSpec};
//! use memtrace_pprof::{ProfileBuilder, ProfileView};
//!
//! let mut builder = ProfileBuilder::new(&[("resident_space", "bytes")]);
//! let leaf = builder.location(LocationSpec {
//!     address: 0,
//!     mapping: None,
//!     lines: &[LineSpec { function: "main.allocate", ..LineSpec::default() }],
//! })?;
//! let root = builder.location(LocationSpec {
//!     address: 0,
//!     mapping: None,
//!     lines: &[LineSpec { function: "main.main", ..LineSpec::default() }],
//! })?;
//! builder.sample(&[leaf, root], &[4096], &[Label::Str { key: "kind", value: "heap" }])?;
//!
//! let bytes = encode(&builder.build());
//! let profile = decode(&bytes, &DecodeLimits::default())?;
//! let view = ProfileView::new(&profile);
//! assert_eq!(view.total("resident_space"), Some(4096));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builder;
mod decode;
mod encode;
pub mod proto;
mod strings;
mod validate;
mod view;

pub use builder::{
    BuildError, Label, LineSpec, LocationId, LocationSpec, MappingId, MappingSpec, ProfileBuilder,
};
pub use decode::{decode, DecodeError, DecodeLimits};
pub use encode::{encode, write_to};
pub use view::{FunctionTotal, ProfileView};
