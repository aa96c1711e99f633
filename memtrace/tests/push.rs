//! Profile push end to end, on loopback.
//!
//! The profiles come from memtrace's own model of a workload: this test
//! process's real mappings, events applied as the kernel would report them
//! (an anonymous mapping faulted in by two stacks in this binary, part of
//! it given back with MADV_FREE, part with MADV_DONTNEED), named by the
//! real symbolizer. They go through [`Windower`] and [`Pusher`] to the
//! stand-in server of `memtrace_tests::receivers`, which decodes every
//! request against the push schemas and checks it as Pyroscope or Parca
//! would; `go tool pprof` then reads every profile the server accepted.
//!
//! The server is also made to fail (down, stalled past the timeout,
//! answering 500, 429 or 400): the pushing side goes on, retries are
//! bounded, and every window is either delivered or counted as dropped.

use std::{
    io::Read as _,
    net::TcpListener,
    sync::Arc,
    thread,
    time::{Duration, Instant, SystemTime},
};

use memtrace::{
    export::{
        pprof,
        push::{
            Auth, BaseUrl, Deliver, DestinationCounts, DropReason, Endpoint, HttpDestination,
            PprofDir, Protocol, PushOptions, Pusher, RetryPolicy, SeriesLabels, TargetLabels,
            Window, Windower,
        },
        Part,
    },
    intake::{Access, Event, EventKind, Fault, Madvise, Mmap, StackId, StackTable},
    model::{
        reconcile::{Busy, Moment, Reading},
        AddressSpace, PAGE_SIZE,
    },
    proc::ProcessView,
    symbolize::{DebugSources, Library, Namer, Symbolizer},
};
use memtrace_pprof::{proto::Profile, LineSpec, LocationSpec, ProfileBuilder, ProfileView};
use memtrace_tests::{
    gotool,
    receivers::{self, Api, Behaviour, Exchange, Receiver, Requirements},
};
use prost::Message as _;

const PAGE: i64 = PAGE_SIZE as i64;
/// Where the workload's anonymous mapping is, away from real mappings.
const REGION: u64 = 0x7e00_0000_0000;
const REGION_PAGES: u64 = 64;

/// A frame of the workload: the function the model will name.
#[inline(never)]
fn grow_cache() -> u64 {
    std::hint::black_box(1)
}

#[inline(never)]
fn allocate_buffers() -> u64 {
    std::hint::black_box(2)
}

#[inline(never)]
fn trim_buffers() -> u64 {
    std::hint::black_box(3)
}

/// An address inside `function`'s code, as a return address would be.
fn inside(function: fn() -> u64) -> u64 {
    function as usize as u64 + 1
}

/// memtrace's model of a workload that runs in steps.
struct Workload {
    model: AddressSpace,
    stacks: StackTable,
    symbolizer: Symbolizer,
    attached: SystemTime,
}

const ALLOCATE: u64 = 1;
const CACHE: u64 = 2;
const TRIM: u64 = 3;

impl Workload {
    /// The model of this process at attach, and the stacks the workload's
    /// events carry.
    fn attach() -> Self {
        let vmas = ProcessView::new(std::process::id())
            .smaps()
            .expect("read our own smaps");
        let mut model = AddressSpace::new();
        model.reconcile(
            Reading {
                vmas: &vmas,
                busy: &Busy::default(),
                moment: Moment::Attach,
                scan_all: false,
                zero_pfn: None,
                lazyfree_slack: 0,
                lazyfree_at_read: &[],
            },
            |_| None,
        );
        let mut stacks = StackTable::default();
        let main = inside(test_main_frame);
        stacks.insert(
            StackId::new(ALLOCATE).unwrap(),
            &[inside(allocate_buffers), main],
        );
        stacks.insert(StackId::new(CACHE).unwrap(), &[inside(grow_cache), main]);
        stacks.insert(StackId::new(TRIM).unwrap(), &[inside(trim_buffers), main]);
        let mut workload = Self {
            model,
            stacks,
            symbolizer: Symbolizer::new(
                std::process::id(),
                Library::shared(DebugSources::default()),
            ),
            attached: SystemTime::now(),
        };
        workload.apply(
            ALLOCATE,
            EventKind::Mmap(Mmap {
                hint: 0,
                len: REGION_PAGES * PAGE_SIZE,
                prot: (libc::PROT_READ | libc::PROT_WRITE) as u32,
                flags: (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32,
                fd: -1,
                offset: 0,
                result: Ok(REGION),
            }),
        );
        workload
    }

    fn apply(&mut self, stack: u64, kind: EventKind) {
        self.model.apply(&Event {
            tid: 1,
            stack: StackId::new(stack),
            kind,
        });
    }

    /// `stack` writes pages `first..first + count` of the region.
    fn touch(&mut self, stack: u64, first: u64, count: u64) {
        for page in first..first + count {
            self.apply(
                stack,
                EventKind::Fault(Fault {
                    address: REGION + page * PAGE_SIZE,
                    access: Access::from_bits(Access::WRITE | Access::USER),
                }),
            );
        }
    }

    /// `stack` calls madvise on pages `first..first + count`.
    fn advise(&mut self, stack: u64, first: u64, count: u64, advice: i32) {
        self.apply(
            stack,
            EventKind::Madvise(Madvise {
                addr: REGION + first * PAGE_SIZE,
                len: count * PAGE_SIZE,
                advice,
                result: Ok(0),
            }),
        );
    }

    /// The cumulative profile memtrace writes for the model now.
    fn profile(&mut self) -> Profile {
        let mut parts = [Part {
            namer: Namer {
                stacks: &self.stacks,
                symbolizer: &mut self.symbolizer,
                model: &self.model,
            },
            pid: 4242,
            command: "checkout-api".to_owned(),
            executable: None,
        }];
        pprof::profile(&mut parts, self.attached.elapsed().unwrap_or_default())
    }
}

#[inline(never)]
fn test_main_frame() -> u64 {
    std::hint::black_box(4)
}

fn labels() -> SeriesLabels {
    SeriesLabels::new(&TargetLabels {
        service_name: "checkout".into(),
        host: "node-7".into(),
        pid: 4242,
        command: "checkout-api".into(),
        container: None,
        cgroup: Some("/system.slice/checkout.service".into()),
        extra: vec![("env".into(), "test".into())],
    })
    .unwrap()
}

/// Two windows of the workload:
/// 1. `allocate_buffers` faults in 16 pages and `grow_cache` 8, of which
///    `trim_buffers` gives 4 back with MADV_FREE and 2 with MADV_DONTNEED;
/// 2. `allocate_buffers` faults in 4 more, and `trim_buffers` gives 8 of
///    its pages back with MADV_DONTNEED.
fn two_windows() -> Vec<Window> {
    let mut workload = Workload::attach();
    let mut windower = Windower::new(labels(), workload.attached);
    workload.touch(ALLOCATE, 0, 16);
    workload.touch(CACHE, 16, 8);
    workload.advise(TRIM, 20, 4, libc::MADV_FREE);
    workload.advise(TRIM, 16, 2, libc::MADV_DONTNEED);
    let first = windower
        .window(&workload.profile(), SystemTime::now())
        .unwrap();
    workload.touch(ALLOCATE, 24, 4);
    workload.advise(TRIM, 0, 8, libc::MADV_DONTNEED);
    let second = windower
        .window(&workload.profile(), SystemTime::now())
        .unwrap();
    vec![first, second]
}

/// Each sample type's value at the stacks whose leaf is `function`.
fn values_at(profile: &Profile, function: &str) -> [i64; 4] {
    let view = ProfileView::new(profile);
    let types = ["inuse_space", "lazyfree_space", "released_space", "faults"];
    types.map(|name| {
        view.stacks(name)
            .unwrap()
            .filter(|(stack, _)| stack.iter().any(|frame| frame.ends_with(function)))
            .map(|(_, value)| value)
            .sum()
    })
}

fn endpoint(receiver: &Receiver, protocol: Protocol) -> Endpoint {
    Endpoint {
        name: "server".into(),
        protocol,
        url: BaseUrl::parse(&receiver.url()).unwrap(),
        auth: None,
        tenant: None,
        timeout: Duration::from_secs(10),
    }
}

fn quick_retries(max_retries: u32) -> PushOptions {
    PushOptions {
        queue: 4,
        retry: RetryPolicy {
            max_retries,
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
        },
    }
}

/// Pushes `windows` to `destination` and waits for them to go.
fn push_all(
    destination: impl Deliver + 'static,
    options: PushOptions,
    windows: Vec<Window>,
) -> DestinationCounts {
    let pusher = Pusher::start(vec![Box::new(destination)], options).unwrap();
    for window in windows {
        pusher.push(window);
    }
    pusher.shutdown(Duration::from_secs(60)).remove(0)
}

/// Checks the windows `two_windows` made, as the server got them: the
/// numbers by function, and `go tool pprof` reading each.
fn check_workload_profiles(exchanges: &[Exchange]) {
    assert_eq!(exchanges.len(), 2, "{exchanges:#?}");
    let profiles: Vec<&receivers::Accepted> = exchanges.iter().flat_map(|e| &e.accepted).collect();
    assert_eq!(profiles.len(), 2);
    let (first, second) = (&profiles[0].profile, &profiles[1].profile);
    assert_eq!(values_at(first, "allocate_buffers"), [16 * PAGE, 0, 0, 16]);
    assert_eq!(values_at(first, "grow_cache"), [2 * PAGE, 4 * PAGE, 0, 8]);
    assert_eq!(
        values_at(second, "allocate_buffers"),
        [12 * PAGE, 0, 0, 4],
        "gauges as they are, faults over the window only"
    );
    assert_eq!(values_at(second, "grow_cache"), [2 * PAGE, 4 * PAGE, 0, 0]);
    assert_eq!(
        values_at(first, "trim_buffers"),
        [0, 0, 2 * PAGE, 0],
        "released by madvise(MADV_DONTNEED) in trim_buffers"
    );
    assert_eq!(
        values_at(second, "trim_buffers"),
        [0, 0, 8 * PAGE, 0],
        "released over the second window only"
    );

    let dir = tempfile::tempdir().unwrap();
    let top = gotool::top(dir.path(), &profiles[1].raw_profile, "inuse_space");
    let (flat, _) = gotool::top_row(&top, "push::allocate_buffers")
        .unwrap_or_else(|| panic!("allocate_buffers in:\n{top}"));
    assert_eq!(flat, 12 * PAGE as u64, "{top}");
    let released = gotool::top(dir.path(), &profiles[1].raw_profile, "released_space");
    let (_, cum) = gotool::top_row(&released, "push::trim_buffers")
        .unwrap_or_else(|| panic!("trim_buffers in:\n{released}"));
    assert_eq!(cum, 8 * PAGE as u64, "{released}");
}

fn label_pairs(accepted: &receivers::Accepted) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = accepted
        .labels
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    pairs.sort();
    pairs
}

/// The labels every pushed series carries, sorted, besides `__delta__`.
const SERIES_LABELS: [(&str, &str); 7] = [
    ("__name__", "memory"),
    ("cgroup", "/system.slice/checkout.service"),
    ("command", "checkout-api"),
    ("env", "test"),
    ("host", "node-7"),
    ("pid", "4242"),
    ("service_name", "checkout"),
];

/// Pushes [`two_windows`] to `endpoint`, checks they were delivered, each
/// accepted by `api` with the workload's numbers, and returns the requests
/// with the windows' spans (from, until, in seconds).
fn deliver_two_windows(
    receiver: &Receiver,
    endpoint: Endpoint,
    api: Api,
) -> Vec<(Exchange, (u64, u64))> {
    let windows = two_windows();
    let seconds = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let spans: Vec<(u64, u64)> = windows
        .iter()
        .map(|w| (seconds(w.start), seconds(w.end)))
        .collect();
    let counts = push_all(HttpDestination::new(endpoint), quick_retries(0), windows);
    assert_eq!((counts.sent, counts.dropped_total()), (2, 0), "{counts:?}");
    let exchanges = receiver.exchanges();
    for exchange in &exchanges {
        assert_eq!((exchange.api, exchange.status), (api, 200), "{exchange:?}");
        assert!(exchange
            .header("user-agent")
            .is_some_and(|agent| agent.starts_with("memtrace/")));
    }
    check_workload_profiles(&exchanges);
    exchanges.into_iter().zip(spans).collect()
}

#[test]
fn pyroscope_push_api_takes_every_window() {
    let receiver = Receiver::start(
        Requirements {
            authorization: Some("Basic MTIzNDU2OnNlY3JldA==".into()),
            tenant: true,
        },
        vec![],
    );
    let endpoint = Endpoint {
        auth: Some(Auth::Basic {
            username: "123456".into(),
            password: "secret".into(),
        }),
        tenant: Some("team-a".into()),
        ..endpoint(&receiver, Protocol::Pyroscope)
    };
    for (exchange, _) in deliver_two_windows(&receiver, endpoint, Api::PyroscopePush) {
        assert_eq!(exchange.header("content-type"), Some("application/proto"));
        assert_eq!(exchange.header("connect-protocol-version"), Some("1"));
        assert_eq!(exchange.header("x-scope-orgid"), Some("team-a"));
        let mut expected = vec![("__delta__", "false")];
        expected.extend(SERIES_LABELS);
        assert_eq!(label_pairs(&exchange.accepted[0]), expected);
    }
}

#[test]
fn pyroscope_legacy_ingest_takes_every_window() {
    let receiver = Receiver::start(Requirements::default(), vec![]);
    let endpoint = endpoint(&receiver, Protocol::PyroscopeIngest);
    for (exchange, (from, until)) in deliver_two_windows(&receiver, endpoint, Api::PyroscopeIngest)
    {
        let query: Vec<(&str, &str)> = exchange
            .query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            query,
            [
                (
                    "name",
                    "checkout{cgroup=/system.slice/checkout.service,command=checkout-api,env=test,host=node-7,pid=4242}"
                ),
                ("from", from.to_string().as_str()),
                ("until", until.to_string().as_str()),
                ("format", "pprof"),
                ("spyName", "memtrace"),
            ]
        );
        let mut expected = vec![("__delta__", "false")];
        expected.extend(SERIES_LABELS);
        assert_eq!(
            label_pairs(&exchange.accepted[0]),
            expected,
            "the server names the profile memory from its inuse_space sample type"
        );
    }
}

#[test]
fn parca_writeraw_takes_every_window() {
    let receiver = Receiver::start(
        Requirements {
            authorization: Some("Bearer parca-token".into()),
            tenant: false,
        },
        vec![],
    );
    let endpoint = Endpoint {
        auth: Some(Auth::Bearer("parca-token".into())),
        ..endpoint(&receiver, Protocol::Parca)
    };
    for (exchange, _) in deliver_two_windows(&receiver, endpoint, Api::ParcaWriteRaw) {
        assert_eq!(exchange.header("content-type"), Some("application/json"));
        assert_eq!(label_pairs(&exchange.accepted[0]), SERIES_LABELS);
    }
}

/// A POST of `body` to the receiver, and the answer's status and body.
fn post(receiver: &Receiver, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut response = agent
        .post(&format!("{}{path}", receiver.url()))
        .header("Content-Type", content_type)
        .send(body)
        .unwrap();
    let mut text = String::new();
    response
        .body_mut()
        .as_reader()
        .read_to_string(&mut text)
        .unwrap();
    (response.status().as_u16(), text)
}

/// A small valid profile, then `change` applied to it, gzipped.
fn profile_with(change: impl FnOnce(&mut Profile)) -> Vec<u8> {
    let mut builder = ProfileBuilder::new(&[("inuse_space", "bytes")]);
    let leaf = builder
        .location(LocationSpec {
            address: 0,
            mapping: None,
            lines: &[LineSpec {
                function: "main.leak",
                ..LineSpec::default()
            }],
        })
        .unwrap();
    builder.sample(&[leaf], &[4096], &[]).unwrap();
    let mut profile = builder.build();
    change(&mut profile);
    memtrace_pprof::encode(&profile)
}

fn pyroscope_body(labels: &[(&str, &str)], raw_profile: Vec<u8>) -> Vec<u8> {
    use memtrace_push_proto::{push::v1, types::v1::LabelPair};
    v1::PushRequest {
        series: vec![v1::RawProfileSeries {
            labels: labels
                .iter()
                .map(|(name, value)| LabelPair {
                    name: (*name).into(),
                    value: (*value).into(),
                })
                .collect(),
            samples: vec![v1::RawSample {
                raw_profile,
                id: String::new(),
            }],
            annotations: vec![],
        }],
    }
    .encode_to_vec()
}

fn parca_body(labels: &[(&str, &str)], raw_profile: &[u8]) -> Vec<u8> {
    let labels: Vec<serde_json::Value> = labels
        .iter()
        .map(|(name, value)| serde_json::json!({ "name": name, "value": value }))
        .collect();
    serde_json::json!({
        "series": [{
            "labels": { "labels": labels },
            "samples": [{ "rawProfile": receivers::base64(raw_profile) }],
        }],
    })
    .to_string()
    .into_bytes()
}

/// The stand-in server refuses what the real ones refuse, with their
/// statuses and messages: what it accepts above means something.
#[test]
fn the_receiver_refuses_what_the_servers_refuse() {
    let receiver = Receiver::start(Requirements::default(), vec![]);
    let named = [("__name__", "memory"), ("service_name", "app")];
    let valid = profile_with(|_| {});
    let hour_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "valid push",
            "pyroscope",
            pyroscope_body(&named, valid.clone()),
            200,
            "",
        ),
        (
            "no __name__",
            "pyroscope",
            pyroscope_body(&[("service_name", "app")], valid.clone()),
            400,
            "invalid metric name",
        ),
        (
            "empty __name__",
            "pyroscope",
            pyroscope_body(&[("__name__", ""), ("service_name", "app")], valid.clone()),
            400,
            "invalid metric name",
        ),
        (
            "not a profile",
            "pyroscope",
            pyroscope_body(&named, b"this is not pprof".to_vec()),
            500,
            "failed to parse pprof",
        ),
        (
            "a dash in a sample type",
            "pyroscope",
            pyroscope_body(
                &named,
                profile_with(|p| {
                    let index = p.sample_type[0].r#type as usize;
                    p.string_table[index] = "inuse-space".into();
                }),
            ),
            400,
            "contains '-'",
        ),
        (
            "outside the ingestion window",
            "pyroscope",
            pyroscope_body(
                &named,
                profile_with(|p| {
                    p.time_nanos = hour_ago
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos() as i64;
                }),
            ),
            400,
            "not_in_ingestion_window",
        ),
        (
            "no profiles",
            "pyroscope",
            memtrace_push_proto::push::v1::PushRequest::default().encode_to_vec(),
            400,
            "no profiles received",
        ),
        (
            "ids not in position (Pyroscope does not mind)",
            "pyroscope",
            pyroscope_body(&named, profile_with(|p| renumber_locations(p, 7))),
            200,
            "",
        ),
        (
            "valid writeraw",
            "parca",
            parca_body(&named, &valid),
            200,
            "",
        ),
        (
            "no __name__",
            "parca",
            parca_body(&[("service_name", "app")], &valid),
            400,
            "missing __name__ label",
        ),
        (
            "ids not in position",
            "parca",
            parca_body(&named, &profile_with(|p| renumber_locations(p, 7))),
            400,
            "invalid profile: location 0 has id 7, not 1",
        ),
        (
            "not a profile",
            "parca",
            parca_body(&named, b"this is not pprof"),
            400,
            "failed to parse profile",
        ),
        (
            "broken gzip",
            "parca",
            parca_body(&named, &[0x1f, 0x8b, 0, 1, 2, 3]),
            500,
            "gzip",
        ),
        (
            "an unknown field",
            "parca",
            br#"{"series": [], "tenantt": "x"}"#.to_vec(),
            400,
            "tenantt",
        ),
        (
            "a label name Parca refuses",
            "parca",
            parca_body(&[("__name__", "memory"), ("bad-name", "x")], &valid),
            400,
            "invalid label name",
        ),
    ];
    for (what, server, body, status, message) in cases {
        let (path, content_type) = match server {
            "pyroscope" => ("/push.v1.PusherService/Push", "application/proto"),
            _ => ("/api/profiles/writeraw", "application/json"),
        };
        let (got, text) = post(&receiver, path, content_type, &body);
        assert_eq!(got, status, "{server}, {what}: {text}");
        assert!(
            text.contains(message),
            "{server}, {what}: {text:?} lacks {message:?}"
        );
    }
    let (got, _) = post(&receiver, "/push.v1.PusherService/Push", "text/plain", &[]);
    assert_eq!(got, 415, "a content type connect does not speak");
    let parca_error: serde_json::Value = serde_json::from_str(
        &post(
            &receiver,
            "/api/profiles/writeraw",
            "application/json",
            &parca_body(&[], &valid),
        )
        .1,
    )
    .unwrap();
    assert_eq!(
        parca_error,
        serde_json::json!({ "code": 3, "message": "missing __name__ label", "details": [] })
    );
}

/// Gives the locations ids from `first` on, and the samples with them.
fn renumber_locations(profile: &mut Profile, first: u64) {
    for (n, location) in profile.location.iter_mut().enumerate() {
        location.id = first + n as u64;
    }
    for sample in &mut profile.sample {
        for id in &mut sample.location_id {
            *id += first - 1;
        }
    }
}

/// A window whose profile is `profile` bytes.
fn window_of(profile: Vec<u8>) -> Window {
    let now = SystemTime::now();
    Window {
        labels: labels(),
        start: now,
        end: now,
        profile,
    }
}

#[test]
fn a_server_that_is_down_costs_bounded_retries_then_a_counted_drop() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = Endpoint {
        name: "down".into(),
        protocol: Protocol::Pyroscope,
        url: BaseUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        auth: None,
        tenant: None,
        timeout: Duration::from_secs(5),
    };
    let counts = push_all(
        HttpDestination::new(endpoint),
        quick_retries(2),
        two_windows(),
    );
    assert_eq!(counts.sent, 0);
    assert_eq!(counts.retries, 4, "two retries per window");
    assert_eq!(
        counts.dropped(DropReason::RetriesExhausted),
        2,
        "{counts:?}"
    );
    let error = counts.last_error.unwrap();
    assert!(
        error.starts_with(&format!("http://127.0.0.1:{port}: ")),
        "{error}"
    );
}

#[test]
fn a_server_slower_than_the_timeout_is_given_up_on() {
    let stall = Behaviour::Stall(Duration::from_secs(5));
    let receiver = Receiver::start(Requirements::default(), vec![stall; 3]);
    let endpoint = Endpoint {
        timeout: Duration::from_millis(300),
        ..endpoint(&receiver, Protocol::Pyroscope)
    };
    let window = two_windows().remove(0);
    let counts = push_all(
        HttpDestination::new(endpoint),
        quick_retries(2),
        vec![window],
    );
    assert_eq!(receiver.connections(), 3, "one try and two retries");
    assert_eq!(
        counts.dropped(DropReason::RetriesExhausted),
        1,
        "{counts:?}"
    );
    assert!(
        counts
            .last_error
            .as_deref()
            .unwrap()
            .ends_with("no answer within 300ms"),
        "{counts:?}"
    );
}

#[test]
fn answers_500_and_429_are_retried_until_the_server_takes_the_window() {
    let fail = |status, retry_after| Behaviour::Fail {
        status,
        retry_after,
    };
    let receiver = Receiver::start(
        Requirements::default(),
        vec![fail(500, None), fail(429, Some(1))],
    );
    let options = PushOptions {
        queue: 4,
        retry: RetryPolicy {
            max_retries: 3,
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(5),
        },
    };
    let window = two_windows().remove(0);
    let counts = push_all(
        HttpDestination::new(endpoint(&receiver, Protocol::Pyroscope)),
        options,
        vec![window],
    );
    assert_eq!(
        (counts.sent, counts.retries, counts.dropped_total()),
        (1, 2, 0),
        "{counts:?}"
    );
    let exchanges = receiver.exchanges();
    let statuses: Vec<u16> = exchanges.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [500, 429, 200]);
    let waited = exchanges[2].at.duration_since(exchanges[1].at);
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured ({waited:?})"
    );
}

#[test]
fn a_server_that_keeps_answering_429_costs_bounded_retries() {
    let busy = Behaviour::Fail {
        status: 429,
        retry_after: None,
    };
    let receiver = Receiver::start(Requirements::default(), vec![busy; 10]);
    let window = two_windows().remove(0);
    let counts = push_all(
        HttpDestination::new(endpoint(&receiver, Protocol::Pyroscope)),
        quick_retries(2),
        vec![window],
    );
    assert_eq!(receiver.exchanges().len(), 3);
    assert_eq!(
        counts.dropped(DropReason::RetriesExhausted),
        1,
        "{counts:?}"
    );
    assert!(counts.last_error.unwrap().contains("HTTP 429"));
}

#[test]
fn a_window_the_server_refuses_is_dropped_without_retrying() {
    let receiver = Receiver::start(Requirements::default(), vec![]);
    let dashed = profile_with(|p| {
        let index = p.sample_type[0].r#type as usize;
        p.string_table[index] = "inuse-space".into();
    });
    let counts = push_all(
        HttpDestination::new(endpoint(&receiver, Protocol::Pyroscope)),
        quick_retries(5),
        vec![window_of(dashed)],
    );
    assert_eq!(receiver.exchanges().len(), 1, "a 400 is final");
    assert_eq!(counts.dropped(DropReason::Rejected), 1, "{counts:?}");
    let error = counts.last_error.unwrap();
    assert!(error.contains("HTTP 400: malformed_profile"), "{error}");

    let unauthorized = Receiver::start(
        Requirements {
            authorization: Some("Bearer right".into()),
            tenant: false,
        },
        vec![],
    );
    let endpoint = Endpoint {
        auth: Some(Auth::Bearer("wrong".into())),
        ..endpoint(&unauthorized, Protocol::Parca)
    };
    let counts = push_all(
        HttpDestination::new(endpoint),
        quick_retries(5),
        two_windows(),
    );
    assert_eq!(unauthorized.exchanges().len(), 2, "one try per window");
    assert_eq!(counts.dropped(DropReason::Rejected), 2);
}

#[test]
fn tracing_goes_on_while_the_server_holds_a_request() {
    let receiver = Receiver::start(Requirements::default(), vec![Behaviour::Hold]);
    let pusher = Arc::new(
        Pusher::start(
            vec![Box::new(HttpDestination::new(endpoint(
                &receiver,
                Protocol::Pyroscope,
            )))],
            quick_retries(0),
        )
        .unwrap(),
    );
    // The tracing side: the model changes, a window is made and pushed,
    // twenty times; from the first, the server sits on the request.
    let mut workload = Workload::attach();
    let mut windower = Windower::new(labels(), workload.attached);
    let mut ends = Vec::new();
    for step in 0..20 {
        workload.touch(ALLOCATE, step, 1);
        let window = windower.window(&workload.profile(), SystemTime::now());
        let window = window.unwrap();
        ends.push(memtrace::export::push::unix_nanos(window.end));
        pusher.push(window);
        if step == 0 {
            let deadline = Instant::now() + Duration::from_secs(60);
            while receiver.connections() == 0 {
                assert!(Instant::now() < deadline, "the first request never came");
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
    assert!(
        receiver.exchanges().is_empty(),
        "the server has not answered yet"
    );
    let held = pusher.counts().remove(0);
    assert_eq!(
        held.dropped(DropReason::QueueFull),
        15,
        "one window in flight, four queued, the oldest fifteen of the other 19 dropped: {held:?}"
    );
    receiver.release();
    let counts = Arc::into_inner(pusher)
        .unwrap()
        .shutdown(Duration::from_secs(60))
        .remove(0);
    assert_eq!(
        counts.sent + counts.dropped_total(),
        20,
        "every window accounted for: {counts:?}"
    );
    assert_eq!(counts.sent, 4, "the four queued went through: {counts:?}");
    let delivered: Vec<i64> = receiver
        .exchanges()
        .iter()
        .map(|exchange| exchange.accepted[0].profile.time_nanos)
        .collect();
    assert_eq!(delivered, ends[16..], "the newest four windows, in order");
}

#[test]
fn https_urls_speak_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let first_bytes = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut bytes = [0u8; 3];
        stream.read_exact(&mut bytes).unwrap();
        bytes
    });
    let endpoint = Endpoint {
        name: "tls".into(),
        protocol: Protocol::Pyroscope,
        url: BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap(),
        auth: None,
        tenant: None,
        timeout: Duration::from_secs(2),
    };
    let counts = push_all(
        HttpDestination::new(endpoint),
        quick_retries(0),
        vec![window_of(profile_with(|_| {}))],
    );
    // A TLS record of type handshake (22), version 3.x: a ClientHello.
    assert_eq!(first_bytes.join().unwrap()[..2], [0x16, 0x03]);
    assert_eq!((counts.sent, counts.dropped_total()), (0, 1), "{counts:?}");
}

#[test]
fn pprof_dir_keeps_the_newest_windows_under_its_cap() {
    let mut workload = Workload::attach();
    let mut windower = Windower::new(labels(), workload.attached);
    let start = SystemTime::now();
    let windows: Vec<Window> = (0..5)
        .map(|step| {
            workload.touch(ALLOCATE, step * 2, 2);
            let end = start + Duration::from_secs(step + 1);
            windower.window(&workload.profile(), end).unwrap()
        })
        .collect();
    let cap: u64 = windows[2..].iter().map(|w| w.profile.len() as u64).sum();
    let newest = windows[4].profile.clone();
    let dir = tempfile::tempdir().unwrap();
    let spool = PprofDir::open(dir.path(), cap).unwrap();
    let counts = push_all(spool, PushOptions::default(), windows);
    assert_eq!((counts.sent, counts.dropped_total()), (5, 0));

    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    let total: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    assert_eq!(total, cap);
    assert_eq!(std::fs::read(&files[2]).unwrap(), newest);
    let top = gotool::pprof(&[
        "-top",
        "-unit=B",
        "-sample_index=inuse_space",
        files[2].to_str().unwrap(),
    ]);
    let (flat, _) =
        gotool::top_row(&top, "push::allocate_buffers").unwrap_or_else(|| panic!("{top}"));
    assert_eq!(flat, 10 * PAGE as u64);
}
