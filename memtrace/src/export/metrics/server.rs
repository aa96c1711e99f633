//! A small HTTP server for `/metrics`.
//!
//! prometheus-client has no server, and a scrape endpoint needs very
//! little: one `GET` per connection, answered and closed. Kept robust with
//! bounds everywhere: the request head is read up to 8 KiB within 10 s
//! (5 s per read and write), at most 16 connections are served at once
//! (more get 503 at once), and nothing of the request but its first line
//! is used.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use super::Metrics;

/// The media type of OpenMetrics text, which Prometheus asks for first.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const MAX_HEAD: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const HEAD_DEADLINE: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 16;

/// Serves [`Metrics`] on `/metrics` until dropped.
pub struct MetricsServer {
    address: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `address` (port 0 picks a free port; see
    /// [`MetricsServer::local_addr`]).
    ///
    /// # Errors
    ///
    /// The system's error if the address cannot be bound.
    pub fn start(address: SocketAddr, metrics: Metrics) -> io::Result<Self> {
        let listener = TcpListener::bind(address)?;
        let address = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let stopping = Arc::clone(&stopping);
            thread::Builder::new()
                .name("metrics".into())
                .spawn(move || accept(&listener, &metrics, &stopping))?
        };
        Ok(Self {
            address,
            stopping,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees it is stopping.
        let _ = TcpStream::connect_timeout(&self.address, IO_TIMEOUT);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept(listener: &TcpListener, metrics: &Metrics, stopping: &AtomicBool) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, Ordering::SeqCst);
            let _ = respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                b"busy\n",
                true,
            );
            continue;
        }
        let (metrics, done) = (metrics.clone(), Arc::clone(&busy));
        let spawned = thread::Builder::new()
            .name("metrics-conn".into())
            .spawn(move || {
                serve(stream, &metrics);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Answers the one request on `stream`.
fn serve(mut stream: TcpStream, metrics: &Metrics) {
    let head = match read_head(&mut stream) {
        Ok(Some(head)) => head,
        Ok(None) => {
            let _ = respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
                true,
            );
            return;
        }
        Err(_) => return,
    };
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = route(method, path, metrics);
    // HEAD gets the headers GET would, without the body.
    let _ = respond(&mut stream, status, content_type, &body, method != "HEAD");
}

/// The status, content type and body for a request.
fn route(method: &str, path: &str, metrics: &Metrics) -> (&'static str, &'static str, Vec<u8>) {
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", CONTENT_TYPE, metrics.encode().into_bytes()),
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            b"memtrace: metrics are at /metrics\n".to_vec(),
        ),
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            b"only GET and HEAD\n".to_vec(),
        ),
    }
}

/// The request head (up to the blank line), or None if it is longer than
/// [`MAX_HEAD`]; reading it all may take at most [`HEAD_DEADLINE`], so a
/// client trickling bytes cannot hold a connection.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut head = Vec::new();
    let mut buffer = [0; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left.min(IO_TIMEOUT)))?;
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
        let end = [&b"\r\n\r\n"[..], b"\n\n"]
            .iter()
            .filter_map(|blank| head.windows(blank.len()).position(|w| w == *blank))
            .min();
        match end {
            Some(end) if end <= MAX_HEAD => break,
            _ if head.len() > MAX_HEAD => return Ok(None),
            _ => {}
        }
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    with_body: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if with_body {
        stream.write_all(body)?;
    }
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}
