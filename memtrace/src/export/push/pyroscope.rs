//! Requests to Grafana Pyroscope.
//!
//! - The push API: `POST /push.v1.PusherService/Push`, a connect-protocol
//!   unary call with the binary protobuf `PushRequest` as the body.
//! - The legacy `POST /ingest?name=APP{k=v}&from=&until=&format=pprof` of
//!   older servers, with the raw profile as the body.
//!
//! Windows carry `__delta__="false"`: their released bytes and faults are
//! already per window, and without it Pyroscope's v1 storage would take
//! the difference of consecutive profiles again.

use std::time::UNIX_EPOCH;

use memtrace_push_proto::{
    push::v1::{PushRequest, RawProfileSeries, RawSample},
    types::v1::LabelPair,
};
use prost::Message;

use super::{labels::plain_name, request::Request, window::Window};

/// The connect-protocol path of `PusherService.Push`.
pub const PUSH_PATH: &str = "/push.v1.PusherService/Push";
/// The legacy ingest path.
pub const INGEST_PATH: &str = "/ingest";

/// The push API request for `window`.
pub fn push_request(window: &Window) -> Request {
    let mut labels: Vec<LabelPair> = window
        .labels
        .pairs()
        .iter()
        .map(|(name, value)| LabelPair {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    labels.push(LabelPair {
        name: "__delta__".into(),
        value: "false".into(),
    });
    let body = PushRequest {
        series: vec![RawProfileSeries {
            labels,
            samples: vec![RawSample {
                raw_profile: window.profile.clone(),
                id: String::new(),
            }],
            annotations: Vec::new(),
        }],
    }
    .encode_to_vec();
    Request {
        path: PUSH_PATH,
        query: Vec::new(),
        content_type: "application/proto",
        headers: vec![("Connect-Protocol-Version", "1".into())],
        body,
    }
}

/// The legacy ingest request for `window`. The server takes the profile's
/// name (`memory`, from the `inuse_space` sample type) from the profile
/// itself and `service_name` from the application name.
pub fn ingest_request(window: &Window) -> Request {
    let seconds = |time: std::time::SystemTime| {
        time.duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
            .to_string()
    };
    Request {
        path: INGEST_PATH,
        query: vec![
            ("name", ingest_name(window)),
            ("from", seconds(window.start)),
            ("until", seconds(window.end)),
            ("format", "pprof".into()),
            ("spyName", "memtrace".into()),
        ],
        content_type: "application/octet-stream",
        headers: Vec::new(),
        body: window.profile.clone(),
    }
}

/// `APP{k=v,...}`, as the legacy parser reads it: an application name of
/// `[A-Za-z0-9_.-]`, values that cannot hold `,` or `}` (they end a value)
/// and lose surrounding spaces.
fn ingest_name(window: &Window) -> String {
    let app = plain_name(window.labels.service_name());
    let labels: Vec<String> = window
        .labels
        .pairs()
        .iter()
        .filter(|(name, _)| name != "__name__" && name != "service_name")
        .map(|(name, value)| {
            let value: String = value
                .trim()
                .chars()
                .map(|c| if matches!(c, ',' | '}' | '{') { '_' } else { c })
                .collect();
            format!("{name}={value}")
        })
        .collect();
    format!("{app}{{{}}}", labels.join(","))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use memtrace_push_proto::push::v1::PushRequest;

    use super::*;
    use crate::export::push::labels::{SeriesLabels, TargetLabels};

    fn window(service_name: &str, cgroup: &str) -> Window {
        let labels = SeriesLabels::new(&TargetLabels {
            service_name: service_name.into(),
            host: "node-1".into(),
            pid: 77,
            command: "api".into(),
            cgroup: Some(cgroup.into()),
            ..TargetLabels::default()
        })
        .unwrap();
        Window {
            labels,
            start: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            end: UNIX_EPOCH + Duration::from_secs(1_700_000_060),
            profile: vec![0x1f, 0x8b, 1, 2, 3],
        }
    }

    #[test]
    fn push_body_is_one_series_with_the_labels_and_the_profile() {
        let request = push_request(&window("api", "/a"));
        assert_eq!(request.path, "/push.v1.PusherService/Push");
        assert_eq!(request.content_type, "application/proto");
        assert_eq!(
            request.headers,
            [("Connect-Protocol-Version", "1".to_owned())]
        );
        let decoded = PushRequest::decode(request.body.as_slice()).unwrap();
        assert_eq!(decoded.series.len(), 1);
        let series = &decoded.series[0];
        let labels: Vec<(&str, &str)> = series
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("__name__", "memory"),
                ("cgroup", "/a"),
                ("command", "api"),
                ("host", "node-1"),
                ("pid", "77"),
                ("service_name", "api"),
                ("__delta__", "false"),
            ]
        );
        assert_eq!(series.samples.len(), 1);
        assert_eq!(series.samples[0].raw_profile, [0x1f, 0x8b, 1, 2, 3]);
    }

    #[test]
    fn ingest_query_names_the_app_its_labels_and_the_window() {
        let request = ingest_request(&window("shop/api v2", " /kube{x},y "));
        assert_eq!(request.path, "/ingest");
        assert_eq!(
            request.query,
            [
                (
                    "name",
                    "shop_api_v2{cgroup=/kube_x__y,command=api,host=node-1,pid=77}".to_owned()
                ),
                ("from", "1700000000".to_owned()),
                ("until", "1700000060".to_owned()),
                ("format", "pprof".to_owned()),
                ("spyName", "memtrace".to_owned()),
            ]
        );
        assert_eq!(request.body, [0x1f, 0x8b, 1, 2, 3]);
    }
}
