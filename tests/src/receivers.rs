//! A profiling server on loopback that takes pushes the way Pyroscope and
//! Parca do, and refuses what they refuse.
//!
//! No Pyroscope or Parca server can be installed on the test machines, so
//! [`Receiver`] stands in for both, on one port, by path:
//!
//! - `POST /push.v1.PusherService/Push` — Pyroscope's push API (connect
//!   protocol, binary protobuf);
//! - `POST /ingest?name=APP{k=v}&...` — Pyroscope's legacy ingest;
//! - `POST /api/profiles/writeraw` — Parca's WriteRaw HTTP gateway
//!   (protobuf JSON, read by reflection from the schema, unknown fields
//!   refused as grpc-gateway does).
//!
//! Each request is decoded against the push schemas (`memtrace-push-proto`)
//! and the profile inside checked with the rules each server applies,
//! answering with the status codes and error bodies the servers use (see
//! the tables in [`pyroscope_profile`] and [`parca_profile`]). Every
//! request is recorded with the answer it got. A script of
//! [`Behaviour`]s makes the receiver fail on purpose: answer 500 or 429,
//! or stall longer than the client's timeout.

use std::{
    collections::VecDeque,
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Condvar, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use flate2::read::MultiGzDecoder;
use memtrace_pprof::proto::Profile;
use memtrace_push_proto::{
    parca::profilestore::v1alpha1::WriteRawRequest, push::v1::PushRequest, DESCRIPTOR_SET,
};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

/// Pyroscope's cap on a decompressed profile.
const PYROSCOPE_MAX_PROFILE: u64 = 4 << 20;
/// Pyroscope's cap on samples per profile.
const PYROSCOPE_MAX_SAMPLES: usize = 16_000;
/// Pyroscope's cap on labels per sample.
const PYROSCOPE_MAX_SAMPLE_LABELS: usize = 100;
/// Pyroscope's cap on labels per series.
const PYROSCOPE_MAX_SERIES_LABELS: usize = 30;
/// Pyroscope's ingestion window: profiles at most this old...
const INGESTION_PAST: Duration = Duration::from_secs(3600);
/// ...and at most this far in the future.
const INGESTION_FUTURE: Duration = Duration::from_secs(600);
/// The largest request body the receiver reads.
const MAX_BODY: usize = 64 << 20;

/// Which API a request was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    PyroscopePush,
    PyroscopeIngest,
    ParcaWriteRaw,
    Unknown,
}

/// What the receiver does with the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Decode, check and answer as the server would.
    Serve,
    /// Answer this status (with `Retry-After` seconds if given) without
    /// looking at the request, as an overloaded or broken server does.
    Fail {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Say nothing for this long, then close the connection.
    Stall(Duration),
    /// Say nothing until [`Receiver::release`], then close the connection.
    Hold,
}

/// One profile a request carried and the receiver accepted.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The series labels as the server stores them (for `/ingest`, parsed
    /// from `name`, with `__name__` taken from the profile's sample types).
    pub labels: Vec<(String, String)>,
    /// The raw profile bytes as sent (gzipped pprof).
    pub raw_profile: Vec<u8>,
    /// The profile, decoded.
    pub profile: Profile,
}

/// One request and how it was answered.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// When the request was read.
    pub at: Instant,
    pub api: Api,
    pub method: String,
    pub path: String,
    /// The query string's pairs, percent-decoded.
    pub query: Vec<(String, String)>,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub status: u16,
    /// The error body, for refused requests.
    pub error: Option<String>,
    pub accepted: Vec<Accepted>,
}

impl Exchange {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }
}

/// What a request must carry besides a valid body.
#[derive(Clone, Debug, Default)]
pub struct Requirements {
    /// The exact `Authorization` value; others get 401.
    pub authorization: Option<String>,
    /// Whether `X-Scope-OrgID` is required (multi-tenant Pyroscope).
    pub tenant: bool,
}

#[derive(Default)]
struct State {
    script: VecDeque<Behaviour>,
    exchanges: Vec<Exchange>,
    requirements: Requirements,
    /// Set by [`Receiver::release`]: held requests are let go.
    released: bool,
}

/// The state, and the signal that held requests may go.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    released: Condvar,
}

/// The stand-in server; stops when dropped.
pub struct Receiver {
    address: SocketAddr,
    shared: Arc<Shared>,
    started: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listens on a free loopback port, answering each request by the next
    /// behaviour of `script` (then [`Behaviour::Serve`]).
    pub fn start(requirements: Requirements, script: Vec<Behaviour>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                script: script.into(),
                requirements,
                ..State::default()
            }),
            released: Condvar::new(),
        });
        let started = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, started, stopping) = (
                Arc::clone(&shared),
                Arc::clone(&started),
                Arc::clone(&stopping),
            );
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    started.fetch_add(1, Ordering::SeqCst);
                    let shared = Arc::clone(&shared);
                    thread::spawn(move || handle(stream, &shared));
                }
            })
        };
        Self {
            address,
            shared,
            started,
            stopping,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Connections accepted so far (answered or not).
    pub fn connections(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// The requests answered so far, in order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.state.lock().unwrap().exchanges.clone()
    }

    /// Lets requests held by [`Behaviour::Hold`] go (unanswered).
    pub fn release(&self) {
        self.shared.state.lock().unwrap().released = true;
        self.shared.released.notify_all();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.release();
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An HTTP request as read off the wire.
struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A refusal: status and the server's error body.
struct Refusal {
    status: u16,
    body: String,
}

fn handle(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let behaviour = shared
        .state
        .lock()
        .unwrap()
        .script
        .pop_front()
        .unwrap_or(Behaviour::Serve);
    match behaviour {
        Behaviour::Stall(time) => {
            thread::sleep(time);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        Behaviour::Hold => {
            let mut state = shared.state.lock().unwrap();
            while !state.released {
                state = shared.released.wait(state).unwrap();
            }
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        Behaviour::Serve | Behaviour::Fail { .. } => {}
    }
    let Ok(request) = read_request(&mut stream) else {
        return;
    };
    let at = Instant::now();
    let api = match request.path.as_str() {
        "/push.v1.PusherService/Push" => Api::PyroscopePush,
        "/ingest" | "/pyroscope/ingest" => Api::PyroscopeIngest,
        "/api/profiles/writeraw" => Api::ParcaWriteRaw,
        _ => Api::Unknown,
    };
    let requirements = shared.state.lock().unwrap().requirements.clone();
    let (outcome, retry_after) = match behaviour {
        Behaviour::Fail {
            status,
            retry_after,
        } => (
            Err(Refusal {
                status,
                body: error_json(api, status, "the test made the server fail"),
            }),
            retry_after,
        ),
        _ => (serve(api, &request, &requirements), None),
    };
    let (status, error, accepted, body) = match outcome {
        Ok(accepted) => {
            let body = if api == Api::PyroscopePush { "" } else { "{}" };
            (200, None, accepted, body.to_owned())
        }
        Err(refusal) => (
            refusal.status,
            Some(refusal.body.clone()),
            Vec::new(),
            refusal.body,
        ),
    };
    shared.state.lock().unwrap().exchanges.push(Exchange {
        at,
        api,
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers: request.headers.clone(),
        status,
        error,
        accepted,
    });
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    if let Some(seconds) = retry_after {
        head.push_str(&format!("Retry-After: {seconds}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The error body each server sends: connect's `{"code": "...", "message"}`
/// for Pyroscope, grpc-gateway's `{"code": N, "message", "details"}` for
/// Parca.
fn error_json(api: Api, status: u16, message: &str) -> String {
    let json = if api == Api::ParcaWriteRaw {
        let code = match status {
            400 => 3,
            401 => 16,
            429 => 8,
            503 => 14,
            _ => 2,
        };
        serde_json::json!({ "code": code, "message": message, "details": [] })
    } else {
        let code = match status {
            400 => "invalid_argument",
            401 => "unauthenticated",
            429 => "resource_exhausted",
            503 => "unavailable",
            _ => "unknown",
        };
        serde_json::json!({ "code": code, "message": message })
    };
    json.to_string()
}

fn refuse(api: Api, status: u16, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        body: error_json(api, status, &message.into()),
    }
}

fn read_request(stream: &mut TcpStream) -> io::Result<Request> {
    let mut data = Vec::new();
    let mut buffer = [0; 8192];
    let head_end = loop {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buffer[..read]);
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if data.len() > 64 * 1024 {
            return Err(io::ErrorKind::InvalidData.into());
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut words = lines.next().unwrap_or("").split_whitespace();
    let method = words.next().unwrap_or("").to_owned();
    let target = words.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    if length > MAX_BODY {
        return Err(io::ErrorKind::InvalidData.into());
    }
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&buffer[..read]);
    }
    body.truncate(length);
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), parse_query(query)),
        None => (target, Vec::new()),
    };
    Ok(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut n = 0;
    while n < bytes.len() {
        match bytes[n] {
            b'%' if n + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[n + 1..n + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        n += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        n += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                n += 1;
            }
            byte => {
                out.push(byte);
                n += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks what every API checks first: the method, and the credentials.
fn serve(
    api: Api,
    request: &Request,
    requirements: &Requirements,
) -> Result<Vec<Accepted>, Refusal> {
    if api == Api::Unknown {
        return Err(refuse(api, 404, "404 page not found"));
    }
    if request.method != "POST" {
        return Err(refuse(api, 405, "method not allowed"));
    }
    if let Some(expected) = &requirements.authorization {
        if request.header("authorization") != Some(expected.as_str()) {
            return Err(refuse(api, 401, "unauthenticated"));
        }
    }
    if requirements.tenant && request.header("x-scope-orgid").is_none_or(str::is_empty) {
        return Err(refuse(api, 401, "no org id"));
    }
    match api {
        Api::PyroscopePush => pyroscope_push(request),
        Api::PyroscopeIngest => pyroscope_ingest(request),
        Api::ParcaWriteRaw => parca_writeraw(request),
        Api::Unknown => unreachable!(),
    }
}

/// Pyroscope's push API: a binary `PushRequest`; per series, labels with a
/// valid `__name__`, at most 30, no name twice; per sample, a profile that
/// passes [`pyroscope_profile`].
fn pyroscope_push(request: &Request) -> Result<Vec<Accepted>, Refusal> {
    let api = Api::PyroscopePush;
    let content_type = request.header("content-type").unwrap_or("");
    if content_type != "application/proto" {
        return Err(refuse(
            api,
            415,
            format!("invalid content-type: {content_type:?}"),
        ));
    }
    let push = PushRequest::decode(request.body.as_slice())
        .map_err(|err| refuse(api, 400, format!("unmarshal message: {err}")))?;
    if push.series.iter().all(|series| series.samples.is_empty()) {
        return Err(refuse(api, 400, "no profiles received"));
    }
    let mut accepted = Vec::new();
    for series in push.series {
        let mut labels: Vec<(String, String)> = series
            .labels
            .into_iter()
            .map(|label| (label.name, label.value))
            .collect();
        check_pyroscope_labels(&labels).map_err(|message| refuse(api, 400, message))?;
        if !labels
            .iter()
            .any(|(name, value)| name == "service_name" && !value.is_empty())
        {
            labels.retain(|(name, _)| name != "service_name");
            labels.push(("service_name".into(), "unknown_service".into()));
        }
        for sample in series.samples {
            let profile = pyroscope_profile(api, &sample.raw_profile)?;
            accepted.push(Accepted {
                labels: labels.clone(),
                raw_profile: sample.raw_profile,
                profile,
            });
        }
    }
    Ok(accepted)
}

/// Pyroscope's label rules: `__name__` present and a valid metric name
/// (`[a-zA-Z_:][a-zA-Z0-9_:]*`), label names `[a-zA-Z_][a-zA-Z0-9_]*`, no
/// name twice, at most 30 labels, names ≤ 1024 and values ≤ 2048 bytes.
fn check_pyroscope_labels(labels: &[(String, String)]) -> Result<(), String> {
    let shown = || {
        let pairs: Vec<String> = labels.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
        format!("{{{}}}", pairs.join(", "))
    };
    let name = labels
        .iter()
        .find(|(label, _)| label == "__name__")
        .map(|(_, value)| value.as_str())
        .unwrap_or("");
    let metric_name_ok = name.chars().enumerate().all(|(n, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (n > 0 && c.is_ascii_digit())
    });
    if name.is_empty() || !metric_name_ok {
        return Err(format!(
            "invalid labels '{}' with error: invalid metric name",
            shown()
        ));
    }
    if labels.len() > PYROSCOPE_MAX_SERIES_LABELS {
        return Err(format!(
            "profile series '{}' has {} label names; limit {PYROSCOPE_MAX_SERIES_LABELS}",
            shown(),
            labels.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (label, value) in labels {
        if !valid_label_name(label) {
            return Err(format!(
                "invalid labels '{}' with error: invalid label name '{label}'",
                shown()
            ));
        }
        if label.len() > 1024 || value.len() > 2048 {
            return Err(format!("label '{label}' is too long"));
        }
        if !seen.insert(label) {
            return Err(format!(
                "invalid labels '{}' with error: duplicate label name '{label}'",
                shown()
            ));
        }
    }
    Ok(())
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Pyroscope's legacy ingest with `format=pprof`: `name=APP{k=v,...}`
/// (application name of `[A-Za-z0-9_.-]`, label names
/// `[a-zA-Z0-9_]`), the body a raw profile. `__name__` comes from the
/// profile: the first sample type containing `alloc_` or `inuse_` makes it
/// `memory`, otherwise the last sample type's name. Refusals are 422, as
/// the ingest handler answers.
fn pyroscope_ingest(request: &Request) -> Result<Vec<Accepted>, Refusal> {
    let api = Api::PyroscopeIngest;
    let query = |key: &str| {
        request
            .query
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    };
    if query("format") != Some("pprof") {
        return Err(refuse(api, 422, "this receiver only takes format=pprof"));
    }
    for key in ["from", "until"] {
        if let Some(value) = query(key) {
            value
                .parse::<u64>()
                .map_err(|_| refuse(api, 422, format!("{key}: not a time: {value:?}")))?;
        }
    }
    let name = query("name").ok_or_else(|| refuse(api, 422, "name is required"))?;
    let mut labels = parse_ingest_name(name).map_err(|message| refuse(api, 422, message))?;
    let profile = pyroscope_profile(api, &request.body).map_err(|refusal| Refusal {
        status: 422,
        body: refusal.body,
    })?;
    let types: Vec<&str> = profile
        .sample_type
        .iter()
        .map(|t| string(&profile, t.r#type))
        .collect();
    let metric = types
        .iter()
        .find(|name| name.contains("alloc_") || name.contains("inuse_"))
        .map(|_| "memory".to_owned())
        .or_else(|| types.last().map(|name| (*name).to_owned()))
        .unwrap_or_default();
    labels.insert(0, ("__name__".into(), metric));
    labels.push(("__delta__".into(), "false".into()));
    Ok(vec![Accepted {
        labels,
        raw_profile: request.body.clone(),
        profile,
    }])
}

/// Parses `APP{k=v,...}` as Pyroscope's legacy key parser does: values end
/// at `,` or `}` and lose surrounding spaces; the application becomes
/// `service_name`.
fn parse_ingest_name(name: &str) -> Result<Vec<(String, String)>, String> {
    let (app, rest) = match name.split_once('{') {
        Some((app, rest)) => (app.trim(), rest),
        None => (name.trim(), "}"),
    };
    if app.is_empty() {
        return Err("application name is required".into());
    }
    if let Some(bad) = app
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "invalid application name: {app:?} contains {bad:?}"
        ));
    }
    let mut labels = vec![("service_name".to_owned(), app.to_owned())];
    let body = rest
        .strip_suffix('}')
        .ok_or_else(|| format!("invalid key: {name:?}"))?;
    for pair in body.split(',').filter(|pair| !pair.trim().is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("invalid tag: {pair:?}"))?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid tag key: {key:?}"));
        }
        if value.contains('}') {
            return Err(format!("invalid tag value: {value:?}"));
        }
        labels.push((key.to_owned(), value.trim().to_owned()));
    }
    Ok(labels)
}

/// A profile as Pyroscope's distributor takes it (status on refusal):
///
/// | check | answer |
/// | --- | --- |
/// | gzip that does not inflate, or more than 4 MiB inflated | 400 |
/// | not a profile.proto | 500 (unknown) |
/// | no sample types, `string_table[0]` not `""`, a location or function id 0, a sample with a value count unlike the sample types, a string index out of range, a sample type name containing `-`, more than 16000 samples or 100 labels on a sample | 400 malformed_profile |
/// | `time_nanos` more than 1 h ago or 10 min ahead (0 means now) | 400 not_in_ingestion_window |
fn pyroscope_profile(api: Api, raw: &[u8]) -> Result<Profile, Refusal> {
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        gunzip(raw, PYROSCOPE_MAX_PROFILE).map_err(|message| refuse(api, 400, message))?
    } else {
        raw.to_vec()
    };
    let profile = Profile::decode(bytes.as_slice())
        .map_err(|err| refuse(api, 500, format!("failed to parse pprof: {err}")))?;
    let malformed = |message: String| refuse(api, 400, format!("malformed_profile: {message}"));
    if profile.sample_type.is_empty() {
        return Err(malformed("no sample types".into()));
    }
    check_strings(&profile).map_err(malformed)?;
    if profile.location.iter().any(|l| l.id == 0) || profile.function.iter().any(|f| f.id == 0) {
        return Err(malformed("a location or function has id 0".into()));
    }
    for sample_type in &profile.sample_type {
        let name = string(&profile, sample_type.r#type);
        if name.contains('-') {
            return Err(malformed(format!("sample type {name:?} contains '-'")));
        }
    }
    if profile.sample.len() > PYROSCOPE_MAX_SAMPLES {
        return Err(malformed(format!("{} samples", profile.sample.len())));
    }
    for sample in &profile.sample {
        if sample.value.len() != profile.sample_type.len() {
            return Err(malformed(
                "a sample's value count differs from the sample types".into(),
            ));
        }
        if sample.label.len() > PYROSCOPE_MAX_SAMPLE_LABELS {
            return Err(malformed("a sample has too many labels".into()));
        }
    }
    if profile.time_nanos != 0 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let time = Duration::from_nanos(profile.time_nanos.max(0) as u64);
        if time + INGESTION_PAST < now || time > now + INGESTION_FUTURE {
            return Err(refuse(
                api,
                400,
                "not_in_ingestion_window: profile time outside the ingestion window",
            ));
        }
    }
    Ok(profile)
}

/// Parca's gateway: protobuf JSON of `WriteRawRequest`, read by
/// reflection from the schema (unknown fields refused: 400); per series a
/// label set with `__name__` (400 "missing __name__ label"), label names
/// `[a-zA-Z_][a-zA-Z0-9_]*` and no name twice; each profile checked by
/// [`parca_profile`]. A series without a label set makes the real server
/// dereference nil: 500.
fn parca_writeraw(request: &Request) -> Result<Vec<Accepted>, Refusal> {
    let api = Api::ParcaWriteRaw;
    let pool = DescriptorPool::decode(DESCRIPTOR_SET).expect("the push schemas' descriptors");
    let descriptor = pool
        .get_message_by_name("parca.profilestore.v1alpha1.WriteRawRequest")
        .expect("WriteRawRequest in the schema");
    let mut json = serde_json::Deserializer::from_slice(&request.body);
    let message = DynamicMessage::deserialize(descriptor, &mut json)
        .map_err(|err| refuse(api, 400, format!("proto: syntax error: {err}")))?;
    let write: WriteRawRequest = message.transcode_to().expect("same schema");
    let mut accepted = Vec::new();
    for series in write.series {
        let label_set = series.labels.ok_or_else(|| {
            refuse(
                api,
                500,
                "runtime error: invalid memory address or nil pointer dereference",
            )
        })?;
        let labels: Vec<(String, String)> = label_set
            .labels
            .into_iter()
            .map(|label| (label.name, label.value))
            .collect();
        if !labels
            .iter()
            .any(|(name, value)| name == "__name__" && !value.is_empty())
        {
            return Err(refuse(api, 400, "missing __name__ label"));
        }
        let mut seen = std::collections::HashSet::new();
        for (name, _) in &labels {
            if !valid_label_name(name) {
                return Err(refuse(api, 400, format!("invalid label name: {name}")));
            }
            if !seen.insert(name) {
                return Err(refuse(api, 400, format!("duplicate label name: {name}")));
            }
        }
        for sample in series.samples {
            let profile = parca_profile(&sample.raw_profile)?;
            accepted.push(Accepted {
                labels: labels.clone(),
                raw_profile: sample.raw_profile,
                profile,
            });
        }
    }
    Ok(accepted)
}

/// A profile as Parca's normalizer takes it (status on refusal):
///
/// | check | answer |
/// | --- | --- |
/// | starts with the gzip magic but does not inflate | 500 |
/// | not a profile.proto | 400 "failed to parse profile" |
/// | `string_table[0]` not `""`, a mapping, function or location id unlike its position + 1, a reference out of range, samples without sample types, a value count unlike the sample types, a sample label key 0 | 400 "invalid profile" |
fn parca_profile(raw: &[u8]) -> Result<Profile, Refusal> {
    let api = Api::ParcaWriteRaw;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        gunzip(raw, u64::MAX).map_err(|message| refuse(api, 500, message))?
    } else {
        raw.to_vec()
    };
    let profile = Profile::decode(bytes.as_slice())
        .map_err(|err| refuse(api, 400, format!("failed to parse profile: {err}")))?;
    let invalid = |message: String| refuse(api, 400, format!("invalid profile: {message}"));
    check_strings(&profile).map_err(invalid)?;
    let positions = |kind: &str, ids: Vec<u64>| -> Result<(), String> {
        match ids.iter().enumerate().find(|(n, &id)| id != *n as u64 + 1) {
            Some((n, id)) => Err(format!("{kind} {n} has id {id}, not {}", n + 1)),
            None => Ok(()),
        }
    };
    positions("mapping", profile.mapping.iter().map(|m| m.id).collect()).map_err(invalid)?;
    positions("function", profile.function.iter().map(|f| f.id).collect()).map_err(invalid)?;
    positions("location", profile.location.iter().map(|l| l.id).collect()).map_err(invalid)?;
    let (mappings, functions, locations) = (
        profile.mapping.len() as u64,
        profile.function.len() as u64,
        profile.location.len() as u64,
    );
    for location in &profile.location {
        if location.mapping_id > mappings {
            return Err(invalid(format!(
                "location {} refers to mapping {}",
                location.id, location.mapping_id
            )));
        }
        if location
            .line
            .iter()
            .any(|line| line.function_id == 0 || line.function_id > functions)
        {
            return Err(invalid(format!(
                "location {} refers to a missing function",
                location.id
            )));
        }
    }
    if !profile.sample.is_empty() && profile.sample_type.is_empty() {
        return Err(invalid("samples without sample types".into()));
    }
    for sample in &profile.sample {
        if sample.value.len() != profile.sample_type.len() {
            return Err(invalid(
                "a sample's value count differs from the sample types".into(),
            ));
        }
        if sample
            .location_id
            .iter()
            .any(|&id| id == 0 || id > locations)
        {
            return Err(invalid("a sample refers to a missing location".into()));
        }
        if sample.label.iter().any(|label| label.key == 0) {
            return Err(invalid("a sample label has no key".into()));
        }
    }
    Ok(profile)
}

/// Both servers: the string table starts with "" and every string index
/// is in range.
fn check_strings(profile: &Profile) -> Result<(), String> {
    if profile.string_table.first().map(String::as_str) != Some("") {
        return Err("string_table[0] is not the empty string".into());
    }
    let size = profile.string_table.len() as i64;
    let mut indexes = vec![
        profile.drop_frames,
        profile.keep_frames,
        profile.default_sample_type,
        profile.doc_url,
    ];
    indexes.extend(profile.comment.iter().copied());
    for value_type in profile.sample_type.iter().chain(&profile.period_type) {
        indexes.extend([value_type.r#type, value_type.unit]);
    }
    for mapping in &profile.mapping {
        indexes.extend([mapping.filename, mapping.build_id]);
    }
    for function in &profile.function {
        indexes.extend([function.name, function.system_name, function.filename]);
    }
    for sample in &profile.sample {
        for label in &sample.label {
            indexes.extend([label.key, label.str, label.num_unit]);
        }
    }
    match indexes
        .into_iter()
        .find(|&index| index < 0 || index >= size)
    {
        Some(index) => Err(format!("string index {index} out of range")),
        None => Ok(()),
    }
}

fn string(profile: &Profile, index: i64) -> &str {
    profile
        .string_table
        .get(index as usize)
        .map_or("", String::as_str)
}

fn gunzip(raw: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    MultiGzDecoder::new(raw)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|err| format!("gzip: {err}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("profile larger than {limit} bytes uncompressed"));
    }
    Ok(bytes)
}

/// Standard base64, as protobuf JSON writes bytes.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
