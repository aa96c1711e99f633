//! One bounded HTTP GET of a net/http/pprof endpoint, through ureq.

use std::io;

use ureq::{Agent, Timeout};

use super::{FetchLimits, GoPprofError, PprofUrl, ProfileSource};

/// The body of a 200 answer to `GET url`, at most `limits.max_bytes` long.
pub(super) fn get(url: &PprofUrl, limits: &FetchLimits) -> Result<Vec<u8>, GoPprofError> {
    let fail = |error| http_error(url, limits, error);
    let mut response = agent(limits).get(url.as_str()).call().map_err(fail)?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(GoPprofError::HttpStatus {
            url: url.clone(),
            status,
        });
    }
    response
        .body_mut()
        .with_config()
        .limit(limits.max_bytes)
        .read_to_vec()
        .map_err(fail)
}

/// A client for one request: no proxy (the endpoint is on this machine, and
/// a proxy from root's environment must not see it), no redirects (they
/// could lead off loopback), and every phase bounded.
fn agent(limits: &FetchLimits) -> Agent {
    let connect = Some(limits.connect_timeout);
    let read = Some(limits.read_timeout);
    Agent::config_builder()
        .proxy(None)
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_resolve(connect)
        .timeout_connect(connect)
        .timeout_send_request(read)
        .timeout_recv_response(read)
        .timeout_recv_body(read)
        .build()
        .new_agent()
}

fn http_error(url: &PprofUrl, limits: &FetchLimits, error: ureq::Error) -> GoPprofError {
    let url = url.clone();
    match error {
        ureq::Error::Timeout(Timeout::Resolve | Timeout::Connect) => {
            GoPprofError::ConnectTimedOut {
                url,
                after: limits.connect_timeout,
            }
        }
        ureq::Error::Timeout(_) => GoPprofError::ReadTimedOut {
            url,
            after: limits.read_timeout,
        },
        ureq::Error::Io(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            GoPprofError::ConnectionRefused { url }
        }
        ureq::Error::Io(error)
            if matches!(
                error.kind(),
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable
            ) =>
        {
            GoPprofError::Unreachable {
                url,
                reason: error.to_string(),
            }
        }
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => GoPprofError::Unreachable {
            url,
            reason: error.to_string(),
        },
        ureq::Error::BodyExceedsLimit(_) => GoPprofError::TooLarge {
            from: ProfileSource::Url(url),
            limit: limits.max_bytes,
        },
        error => GoPprofError::Failed {
            url,
            reason: error.to_string(),
        },
    }
}
