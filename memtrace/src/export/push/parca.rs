//! Requests to Parca: `WriteRaw` through Parca's HTTP gateway,
//! `POST /api/profiles/writeraw` with the request as protobuf JSON
//! (field names in lowerCamelCase, bytes in standard base64).
//!
//! The gateway is plain HTTP/1.1, so no gRPC (HTTP/2) client is needed.

use base64::Engine;

use super::{request::Request, window::Window};

/// The gateway path of `ProfileStoreService.WriteRaw`.
pub const WRITERAW_PATH: &str = "/api/profiles/writeraw";

/// The WriteRaw request for `window`: one series, its labels (with
/// `__name__`, which Parca takes as the profile's name) and the profile.
pub fn writeraw_request(window: &Window) -> Request {
    let labels: Vec<serde_json::Value> = window
        .labels
        .pairs()
        .iter()
        .map(|(name, value)| serde_json::json!({ "name": name, "value": value }))
        .collect();
    let raw_profile = base64::engine::general_purpose::STANDARD.encode(&window.profile);
    let body = serde_json::json!({
        "series": [{
            "labels": { "labels": labels },
            "samples": [{ "rawProfile": raw_profile }],
        }],
        "normalized": false,
    });
    Request {
        path: WRITERAW_PATH,
        query: Vec::new(),
        content_type: "application/json",
        headers: Vec::new(),
        body: body.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::export::push::labels::{SeriesLabels, TargetLabels};

    #[test]
    fn body_is_protobuf_json_of_one_series() {
        let labels = SeriesLabels::new(&TargetLabels {
            service_name: "api".into(),
            host: "h".into(),
            pid: 9,
            command: "api".into(),
            ..TargetLabels::default()
        })
        .unwrap();
        let window = Window {
            labels,
            start: UNIX_EPOCH,
            end: UNIX_EPOCH,
            profile: vec![0xff, 0x00, 0x10],
        };
        let request = writeraw_request(&window);
        assert_eq!(request.path, "/api/profiles/writeraw");
        assert_eq!(request.content_type, "application/json");
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "series": [{
                    "labels": { "labels": [
                        { "name": "__name__", "value": "memory" },
                        { "name": "command", "value": "api" },
                        { "name": "host", "value": "h" },
                        { "name": "pid", "value": "9" },
                        { "name": "service_name", "value": "api" },
                    ]},
                    "samples": [{ "rawProfile": "/wAQ" }],
                }],
                "normalized": false,
            })
        );
    }
}
