//! fetch against real endpoints: a Go program serving net/http/pprof, and
//! tiny misbehaving HTTP servers on loopback; and against files.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memtrace_pprof::{encode, LineSpec, LocationSpec, ProfileBuilder};
use memtrace_tests::running::Running;

use super::*;

const MIB: i64 = 1 << 20;

/// goheap holding `mib` MiB of heap in `main.allocate`'s slices, and the
/// address its net/http/pprof listens on.
fn goheap_holding(mib: u32) -> (Running, String) {
    let goheap = &memtrace_tests::workloads::ensure_built().unwrap().goheap;
    let mib = mib.to_string();
    let mut running = Running::start(
        goheap,
        &[
            "-alloc-mib",
            &mib,
            "-steps",
            "",
            "-hold",
            "30s",
            "-pprof",
            "127.0.0.1:0",
        ],
        &[],
    );
    let addr = running.wait_event("pprof", Duration::from_secs(30))["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    running.wait_event("allocated", Duration::from_secs(60));
    (running, addr)
}

fn source(text: &str) -> ProfileSource {
    ProfileSource::parse(text, false).unwrap()
}

#[test]
fn the_heap_profile_of_a_real_go_program_shows_what_it_holds() {
    let (_goheap, addr) = goheap_holding(64);
    let (_, profile) = fetch(
        &source(&format!("http://{addr}?gc=1")),
        &FetchLimits::default(),
    )
    .unwrap();

    // Sampled and scaled: close to the 64 MiB held, not exact.
    let held = 64 * MIB;
    assert!(
        (held * 3 / 4..=held * 5 / 4).contains(&profile.inuse_space),
        "inuse_space {} for {held} held",
        profile.inuse_space
    );
    assert!(profile.alloc_space >= profile.inuse_space);
    assert!(profile.inuse_objects > 0 && profile.alloc_objects >= profile.inuse_objects);
    let allocate = profile
        .functions
        .iter()
        .find(|function| function.function == "main.allocate")
        .unwrap_or_else(|| panic!("no main.allocate in {:#?}", profile.functions));
    assert!(allocate.flat >= held * 3 / 4, "{allocate:?}");
    let (top_stack, bytes) = &profile.stacks[0];
    assert_eq!(top_stack[0], "main.allocate", "{top_stack:?}");
    assert!(top_stack.contains(&"main.main".to_owned()));
    assert!(*bytes > 0);

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let age = now.as_nanos() as i64 - profile.time_nanos;
    assert!(
        (0..60_000_000_000).contains(&age),
        "profile is {age} ns old"
    );
}

#[test]
fn other_pages_of_a_real_pprof_server_are_not_heap_profiles() {
    let (_goheap, addr) = goheap_holding(1);
    let goroutines = source(&format!("http://{addr}/debug/pprof/goroutine"));
    let error = fetch(&goroutines, &FetchLimits::default()).unwrap_err();
    assert!(
        matches!(error, GoPprofError::NotAHeapProfile { .. }),
        "{error}"
    );
    assert!(!error.is_input_error());

    let index = source(&format!("http://{addr}/debug/pprof/"));
    let error = fetch(&index, &FetchLimits::default()).unwrap_err();
    assert!(matches!(error, GoPprofError::NotAProfile { .. }), "{error}");

    let missing = source(&format!("http://{addr}/nothing/here"));
    let error = fetch(&missing, &FetchLimits::default()).unwrap_err();
    assert!(
        matches!(error, GoPprofError::HttpStatus { status: 404, .. }),
        "{error}"
    );
}

/// A one-connection HTTP server on 127.0.0.1: `answer` gets the connection
/// once the request's headers have arrived. Returns the URL it serves and
/// its thread, which ends when `answer` returns.
fn serve_once(answer: impl FnOnce(TcpStream) + Send + 'static) -> (ProfileSource, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        read_request(&mut stream);
        answer(stream);
    });
    (source(&url), server)
}

fn read_request(stream: &mut TcpStream) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.ends_with(b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(read) => request.extend_from_slice(&buffer[..read]),
        }
    }
}

/// Answers with `response` as it is, then closes.
fn respond(response: Vec<u8>) -> impl FnOnce(TcpStream) + Send + 'static {
    move |mut stream| {
        let _ = stream.write_all(&response);
    }
}

/// A complete HTTP/1.1 response.
fn http_response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn fetch_error(source: &ProfileSource, limits: &FetchLimits) -> GoPprofError {
    let error = fetch(source, limits).unwrap_err();
    assert!(!error.is_input_error(), "{error}");
    assert!(error.to_string().contains(&source.to_string()), "{error}");
    error
}

#[test]
fn a_closed_port_is_refused() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = source(&format!("http://127.0.0.1:{port}"));
    let error = fetch_error(&closed, &FetchLimits::default());
    assert!(
        matches!(error, GoPprofError::ConnectionRefused { .. }),
        "{error}"
    );
}

/// A listener on 127.0.0.1 whose accept queue is full: the kernel drops
/// further SYNs, so connecting to it hangs. Returns the listener and the
/// connection filling its queue; both must stay open.
fn full_listener() -> (TcpListener, TcpStream) {
    // SAFETY: a plain socket call; the descriptor is checked, then owned by
    // the TcpListener, which closes it.
    let listener = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        TcpListener::from_raw_fd(fd)
    };
    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let fd = listener.as_raw_fd();
    // SAFETY: `address` is a valid sockaddr_in of the size given.
    let bound = unsafe {
        libc::bind(
            fd,
            std::ptr::addr_of!(address).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
    // A backlog of 0 queues one connection, never accepted.
    // SAFETY: listen on a descriptor we own.
    assert_eq!(unsafe { libc::listen(fd, 0) }, 0);
    let queued = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    (listener, queued)
}

#[test]
fn a_server_that_never_accepts_times_out_connecting() {
    let (listener, _queued) = full_listener();
    let url = source(&format!("http://{}", listener.local_addr().unwrap()));
    let limits = FetchLimits {
        connect_timeout: Duration::from_millis(300),
        ..FetchLimits::default()
    };
    let started = Instant::now();
    let error = fetch_error(&url, &limits);
    assert!(
        matches!(error, GoPprofError::ConnectTimedOut { .. }),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(error.to_string().contains("300ms"), "{error}");
}

#[test]
fn a_server_that_never_answers_times_out() {
    let (url, server) = serve_once(|mut stream| {
        // Hold the connection until the client gives up and closes it.
        let _ = stream.read_to_end(&mut Vec::new());
    });
    let limits = FetchLimits {
        read_timeout: Duration::from_millis(300),
        ..FetchLimits::default()
    };
    let started = Instant::now();
    let error = fetch_error(&url, &limits);
    assert!(
        matches!(error, GoPprofError::ReadTimedOut { .. }),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(error.to_string().contains("300ms"), "{error}");
    server.join().unwrap();
}

#[test]
fn an_html_page_is_not_a_profile() {
    let (url, server) = serve_once(respond(http_response(
        "200 OK",
        "text/html",
        "<!DOCTYPE html><html><body>Hello</body></html>\n",
    )));
    let error = fetch_error(&url, &FetchLimits::default());
    assert!(matches!(error, GoPprofError::NotAProfile { .. }), "{error}");
    server.join().unwrap();
}

#[test]
fn a_body_over_the_limit_is_refused() {
    let (url, server) = serve_once(|mut stream| {
        let headers = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                        Connection: close\r\n\r\n";
        let _ = stream.write_all(headers);
        let chunk = [0x1fu8; 64 << 10];
        // 8 MiB, or until the client hangs up.
        for _ in 0..128 {
            if stream.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let limits = FetchLimits {
        max_bytes: 1 << 20,
        ..FetchLimits::default()
    };
    let error = fetch_error(&url, &limits);
    assert!(
        matches!(error, GoPprofError::TooLarge { limit: 1048576, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("1048576"), "{error}");
    server.join().unwrap();
}

#[test]
fn a_404_is_reported_with_its_status() {
    let (url, server) = serve_once(respond(http_response(
        "404 Not Found",
        "text/plain",
        "not found\n",
    )));
    let error = fetch_error(&url, &FetchLimits::default());
    assert!(
        matches!(error, GoPprofError::HttpStatus { status: 404, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("404"), "{error}");
    server.join().unwrap();
}

#[test]
fn a_server_that_does_not_speak_http_fails() {
    let (url, server) = serve_once(respond(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()));
    let error = fetch_error(&url, &FetchLimits::default());
    assert!(matches!(error, GoPprofError::Failed { .. }), "{error}");
    server.join().unwrap();
}

/// A profile shaped like Go's: its four sample types, an allocation stack
/// holding memory, one whose memory was freed, and a time stamp.
fn saved_profile() -> Vec<u8> {
    let mut builder = ProfileBuilder::new(&[
        ("alloc_objects", "count"),
        ("alloc_space", "bytes"),
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ]);
    builder.time_nanos(1_700_000_000_000_000_000);
    let mut frame = |function| {
        builder
            .location(LocationSpec {
                lines: &[LineSpec {
                    function,
                    ..LineSpec::default()
                }],
                ..LocationSpec::default()
            })
            .unwrap()
    };
    let (grow, load, main) = (frame("main.grow"), frame("main.load"), frame("main.main"));
    builder
        .sample(&[grow, main], &[10, 10 * MIB, 8, 8 * MIB], &[])
        .unwrap();
    builder
        .sample(&[load, main], &[4, 2 * MIB, 1, MIB / 2], &[])
        .unwrap();
    builder
        .sample(&[load, grow, main], &[100, MIB, 0, 0], &[])
        .unwrap();
    encode(&builder.build())
}

fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, ProfileSource) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    let source = ProfileSource::parse(file.path().to_str().unwrap(), false).unwrap();
    (file, source)
}

#[test]
fn a_saved_profile_is_read_from_its_file() {
    let (_file, from) = file_with(&saved_profile());
    let (bytes, profile) = fetch(&from, &FetchLimits::default()).unwrap();
    // The bytes are the file's, as they came.
    assert_eq!(bytes, saved_profile());
    let function = |name: &str, flat, cum| FunctionTotal {
        function: name.to_owned(),
        flat,
        cum,
    };
    let stack = |frames: &[&str], bytes| {
        (
            frames.iter().map(|&frame| frame.to_owned()).collect(),
            bytes,
        )
    };
    assert_eq!(
        profile,
        HeapProfile {
            inuse_space: 8 * MIB + MIB / 2,
            inuse_objects: 9,
            alloc_space: 13 * MIB,
            alloc_objects: 114,
            functions: vec![
                function("main.grow", 8 * MIB, 8 * MIB),
                function("main.load", MIB / 2, MIB / 2),
                function("main.main", 0, 8 * MIB + MIB / 2),
            ],
            stacks: vec![
                stack(&["main.grow", "main.main"], 8 * MIB),
                stack(&["main.load", "main.main"], MIB / 2),
            ],
            time_nanos: 1_700_000_000_000_000_000,
        }
    );
}

#[test]
fn bad_files_are_input_errors() {
    let (_garbage, garbage) = file_with(b"\x00\x01 this is not a profile \xff\xfe");
    let error = fetch(&garbage, &FetchLimits::default()).unwrap_err();
    assert!(matches!(error, GoPprofError::NotAProfile { .. }), "{error}");
    assert!(error.is_input_error());

    let mut cpu = ProfileBuilder::new(&[("samples", "count"), ("cpu", "nanoseconds")]);
    cpu.time_nanos(1);
    let (_cpu, cpu) = file_with(&encode(&cpu.build()));
    let error = fetch(&cpu, &FetchLimits::default()).unwrap_err();
    assert!(
        matches!(error, GoPprofError::NotAHeapProfile { .. }),
        "{error}"
    );
    assert!(error.is_input_error());

    let profile = saved_profile();
    let (_big, big) = file_with(&profile);
    let limits = FetchLimits {
        max_bytes: profile.len() as u64 - 1,
        ..FetchLimits::default()
    };
    let error = fetch(&big, &limits).unwrap_err();
    assert!(matches!(error, GoPprofError::TooLarge { .. }), "{error}");
    assert!(error.is_input_error());
    let exact = FetchLimits {
        max_bytes: profile.len() as u64,
        ..FetchLimits::default()
    };
    assert!(fetch(&big, &exact).is_ok());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.pb.gz");
    let missing = ProfileSource::File(path.clone());
    let error = fetch(&missing, &FetchLimits::default()).unwrap_err();
    assert!(
        matches!(error, GoPprofError::FileUnreadable { .. }),
        "{error}"
    );
    assert!(error.is_input_error());
    let message = error.to_string();
    assert!(message.contains(path.to_str().unwrap()), "{message}");
    assert!(!message.contains('\n'), "{message}");
}
