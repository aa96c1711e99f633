//! An HTTP request to a profiling server, before it is sent: built by the
//! protocol modules, sent by [`super::http`].

/// A `POST` to the server's base URL plus `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Appended to the base URL, e.g. `/ingest`.
    pub path: &'static str,
    /// Query parameters, not yet percent-encoded.
    pub query: Vec<(&'static str, String)>,
    pub content_type: &'static str,
    /// Headers the protocol needs besides the content type.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}
