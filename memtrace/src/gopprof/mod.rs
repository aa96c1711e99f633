//! A Go program's own heap profile, shown beside the RSS memtrace explains.
//!
//! Go's runtime knows which functions hold live heap; memtrace knows which
//! pages are resident and why. Side by side they tell whether RSS is live Go
//! objects (a leak or a large working set, see the profile's functions) or
//! heap the runtime holds without using (fragmentation, or freed pages not
//! yet returned: see [`runtime`](crate::runtime)'s `GODEBUG` and `GOGC`).
//!
//! The profile comes from the program's net/http/pprof endpoint
//! (`http://127.0.0.1:6060/debug/pprof/heap`) or from a file saved from it.
//! [`ProfileSource::parse`] reads the user's argument, [`fetch`] gets and
//! decodes the profile within [`FetchLimits`]. Only plain HTTP to loopback
//! is allowed by default: the profile reveals the program's internals, and
//! memtrace runs as root.
//!
//! Go's heap profile is sampled (one sample per 512 KiB allocated, by
//! default) and scaled up by the runtime, so its totals are estimates; they
//! describe the heap as of the last completed GC, unless the URL asks for a
//! fresh one with `?gc=1`.

mod error;
mod http;
mod source;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use memtrace_pprof::{DecodeLimits, FunctionTotal, ProfileView};

pub use error::GoPprofError;
pub use source::{PprofUrl, ProfileSource};

/// Bounds on [`fetch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchLimits {
    /// Longest wait for the TCP connection (and for resolving the host).
    pub connect_timeout: Duration,
    /// Longest wait for the answer's headers, and again for its body.
    pub read_timeout: Duration,
    /// Largest profile accepted, in bytes as served or stored (usually
    /// gzipped).
    pub max_bytes: u64,
}

impl Default for FetchLimits {
    /// 2 s to connect, 5 s to answer, 64 MiB: a heap profile is rarely over
    /// a few MiB.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(5),
            max_bytes: 64 << 20,
        }
    }
}

/// What a Go heap profile says, as it states it (sampled and scaled by the
/// Go runtime).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeapProfile {
    /// Bytes of live heap objects.
    pub inuse_space: i64,
    /// Live heap objects.
    pub inuse_objects: i64,
    /// Bytes allocated since the program started.
    pub alloc_space: i64,
    /// Objects allocated since the program started.
    pub alloc_objects: i64,
    /// `inuse_space` per function, largest flat first, as `go tool pprof
    /// -top` prints it; functions holding nothing are left out.
    pub functions: Vec<FunctionTotal>,
    /// `inuse_space` per allocation stack (function names, leaf first),
    /// largest first; stacks holding nothing are left out.
    pub stacks: Vec<(Vec<String>, i64)>,
    /// When the profile was taken, in nanoseconds since the Unix epoch.
    pub time_nanos: i64,
}

/// Gets the heap profile from `source` and decodes it; returns its bytes as
/// they came (for a capture) and what they say. Blocking: run it off the
/// async runtime's threads.
///
/// # Errors
///
/// Each way of failing has its own [`GoPprofError`];
/// [`GoPprofError::is_input_error`] tells a bad file from an endpoint that
/// failed.
pub fn fetch(
    source: &ProfileSource,
    limits: &FetchLimits,
) -> Result<(Vec<u8>, HeapProfile), GoPprofError> {
    let bytes = match source {
        ProfileSource::Url(url) => http::get(url, limits)?,
        ProfileSource::File(path) => read_file(path, limits.max_bytes)?,
    };
    let profile = decode(&bytes, source)?;
    Ok((bytes, profile))
}

/// The file's bytes, if it has at most `max_bytes` of them.
fn read_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, GoPprofError> {
    let unreadable = |source| GoPprofError::FileUnreadable {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file at the limit from a larger one.
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > max_bytes {
        return Err(GoPprofError::TooLarge {
            from: ProfileSource::File(path.to_owned()),
            limit: max_bytes,
        });
    }
    Ok(bytes)
}

/// Decodes a Go heap profile served or saved by `from`.
///
/// # Errors
///
/// [`GoPprofError::NotAProfile`] or [`GoPprofError::NotAHeapProfile`].
pub fn decode(bytes: &[u8], from: &ProfileSource) -> Result<HeapProfile, GoPprofError> {
    let profile = memtrace_pprof::decode(bytes, &DecodeLimits::default()).map_err(|error| {
        GoPprofError::NotAProfile {
            from: from.clone(),
            error,
        }
    })?;
    let view = ProfileView::new(&profile);
    let inuse_space = view
        .total("inuse_space")
        .ok_or_else(|| GoPprofError::NotAHeapProfile { from: from.clone() })?;
    let total = |type_name| view.total(type_name).unwrap_or(0);

    let mut functions = view.function_totals("inuse_space").unwrap_or_default();
    functions.retain(|function| function.flat != 0 || function.cum != 0);
    let mut stacks: Vec<(Vec<String>, i64)> = view
        .stacks("inuse_space")
        .into_iter()
        .flatten()
        .filter(|&(_, bytes)| bytes != 0)
        .map(|(frames, bytes)| (frames.into_iter().map(String::from).collect(), bytes))
        .collect();
    stacks.sort_by_key(|&(_, bytes)| std::cmp::Reverse(bytes));

    Ok(HeapProfile {
        inuse_space,
        inuse_objects: total("inuse_objects"),
        alloc_space: total("alloc_space"),
        alloc_objects: total("alloc_objects"),
        functions,
        stacks,
        time_nanos: profile.time_nanos,
    })
}
