//! Profile push: every window, each target's memory profile goes to
//! Pyroscope, Parca, or a directory, without ever holding up tracing.
//!
//! The caller, for each target and window:
//! 1. builds the cumulative profile ([`crate::export::pprof::profile`]);
//! 2. turns it into a [`Window`] with the target's [`Windower`] (gauges as
//!    they are, counters as differences over the window, labels from
//!    [`TargetLabels`]);
//! 3. hands it to the [`Pusher`], which queues it for each destination's
//!    sender thread and returns at once.
//!
//! Destinations ([`Deliver`]): [`HttpDestination`] for Pyroscope's push API
//! or legacy `/ingest` and Parca's WriteRaw gateway ([`Protocol`]), and
//! [`PprofDir`] for a directory of files under a size cap. What happened to
//! the windows is in [`Pusher::counts`]: sent, retried, dropped by
//! [`DropReason`].

mod deliver;
mod http;
mod labels;
mod parca;
mod pyroscope;
mod queue;
mod request;
mod retry;
mod sender;
mod spool;
mod stats;
mod window;

pub use deliver::{Deliver, Failure};
pub use http::{Auth, BaseUrl, Endpoint, HttpDestination, Protocol, UrlError};
pub use labels::{check_name, LabelError, SeriesLabels, TargetLabels, PROFILE_NAME};
pub use parca::WRITERAW_PATH;
pub use pyroscope::{INGEST_PATH, PUSH_PATH};
pub use retry::RetryPolicy;
pub use sender::{PushOptions, Pusher};
pub use spool::{PprofDir, PprofDirError};
pub use stats::{DestinationCounts, DropReason};
pub use window::{unix_nanos, Window, WindowError, Windower, MAX_SAMPLES, SAMPLE_TYPES};
