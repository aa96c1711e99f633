//! Sending windows to Pyroscope or Parca over HTTP(S), each request bounded
//! by a timeout.
//!
//! https goes through rustls with the Mozilla roots built in (a container
//! needs no CA bundle). The proxy comes from the usual environment
//! variables (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), as fleet machines
//! often need. Redirects are not followed: a profiling server does not
//! redirect pushes, and following one could send credentials elsewhere.

use std::{fmt, io::Read as _, time::Duration};

use base64::Engine;
use ureq::{http::Uri, Agent};

use super::{
    deliver::{Deliver, Failure},
    parca, pyroscope,
    request::Request,
    retry::{verdict, Verdict},
    window::Window,
};

/// Pyroscope refuses profiles more than an hour old; windows are given up
/// well before.
const PYROSCOPE_MAX_AGE: Duration = Duration::from_secs(50 * 60);
/// How much of an error answer is kept for the log.
const MAX_ERROR_BODY: u64 = 4096;

/// Which server API a destination speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Pyroscope's push API (`/push.v1.PusherService/Push`).
    Pyroscope,
    /// Pyroscope's legacy `/ingest`, for servers before the push API.
    PyroscopeIngest,
    /// Parca's WriteRaw through its HTTP gateway.
    Parca,
}

impl Protocol {
    fn request(self, window: &Window) -> Request {
        match self {
            Self::Pyroscope => pyroscope::push_request(window),
            Self::PyroscopeIngest => pyroscope::ingest_request(window),
            Self::Parca => parca::writeraw_request(window),
        }
    }

    fn max_age(self) -> Option<Duration> {
        match self {
            Self::Pyroscope | Self::PyroscopeIngest => Some(PYROSCOPE_MAX_AGE),
            Self::Parca => None,
        }
    }
}

/// Credentials sent with every request.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Basic` (e.g. Grafana Cloud: the instance id and a
    /// token).
    Basic { username: String, password: String },
    /// `Authorization: Bearer`.
    Bearer(String),
}

impl Auth {
    fn header(&self) -> String {
        match self {
            Self::Basic { username, password } => {
                let pair = format!("{username}:{password}");
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            Self::Bearer(token) => format!("Bearer {token}"),
        }
    }
}

/// Never prints the secret.
impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}, <password>)"),
            Self::Bearer(_) => f.write_str("Bearer(<token>)"),
        }
    }
}

/// A server's URL: `http://` or `https://`, a host, maybe a port and a path
/// prefix (behind a reverse proxy), no query; kept without a trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl(String);

/// Why a URL cannot be pushed to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`{0}` is not a URL")]
    Unparsable(String),
    #[error("`{0}`: give an http:// or https:// URL")]
    Scheme(String),
    #[error("`{0}` has no host")]
    NoHost(String),
    #[error("`{0}` has credentials in it; give them as basic_auth or a bearer token instead")]
    Credentials(String),
    #[error("`{0}` has a query or fragment; give the server's base URL")]
    Query(String),
}

impl BaseUrl {
    /// Checks `text` is a base URL to push to.
    ///
    /// # Errors
    ///
    /// A [`UrlError`] saying what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let uri: Uri = text
            .parse()
            .map_err(|_| UrlError::Unparsable(text.to_owned()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(UrlError::Scheme(text.to_owned()));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| UrlError::NoHost(text.to_owned()))?;
        if authority.as_str().contains('@') {
            return Err(UrlError::Credentials(text.to_owned()));
        }
        if authority.host().is_empty() {
            return Err(UrlError::NoHost(text.to_owned()));
        }
        if uri.query().is_some() || text.contains('#') {
            return Err(UrlError::Query(text.to_owned()));
        }
        Ok(Self(text.trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A profiling server to push to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its name in metrics and messages (e.g. `pyroscope`).
    pub name: String,
    pub protocol: Protocol,
    pub url: BaseUrl,
    pub auth: Option<Auth>,
    /// Sent as `X-Scope-OrgID` (multi-tenant Pyroscope).
    pub tenant: Option<String>,
    /// The longest one request may take, connecting included.
    pub timeout: Duration,
}

/// Delivers windows to one [`Endpoint`].
pub struct HttpDestination {
    endpoint: Endpoint,
    agent: Agent,
}

impl HttpDestination {
    pub fn new(endpoint: Endpoint) -> Self {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(endpoint.timeout))
            .user_agent(concat!("memtrace/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Self { endpoint, agent }
    }

    fn failure(&self, error: ureq::Error) -> Failure {
        let url = &self.endpoint.url;
        match error {
            ureq::Error::Timeout(_) => Failure::transient(format!(
                "{url}: no answer within {:?}",
                self.endpoint.timeout
            )),
            ureq::Error::Io(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
            | ureq::Error::ConnectProxyFailed(_) => Failure::transient(format!("{url}: {error}")),
            other => Failure::permanent(format!("{url}: {other}")),
        }
    }
}

impl Deliver for HttpDestination {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn deliver(&mut self, window: &Window) -> Result<(), Failure> {
        let request = self.endpoint.protocol.request(window);
        let url = format!("{}{}", self.endpoint.url, request.path);
        let mut call = self
            .agent
            .post(&url)
            .query_pairs(request.query.iter().map(|(k, v)| (*k, v.as_str())))
            .header("Content-Type", request.content_type);
        for (name, value) in &request.headers {
            call = call.header(*name, value);
        }
        if let Some(auth) = &self.endpoint.auth {
            call = call.header("Authorization", auth.header());
        }
        if let Some(tenant) = &self.endpoint.tenant {
            call = call.header("X-Scope-OrgID", tenant);
        }
        let mut response = call
            .send(request.body.as_slice())
            .map_err(|error| self.failure(error))?;
        let status = response.status().as_u16();
        let verdict = verdict(status);
        if verdict == Verdict::Delivered {
            return Ok(());
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("Retry-After")
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let location = header("Location");
        let mut body = String::new();
        let _ = response
            .body_mut()
            .as_reader()
            .take(MAX_ERROR_BODY)
            .read_to_string(&mut body);
        let mut message = format!("{url}: HTTP {status}{}", error_detail(&body));
        if let Some(location) = location {
            message.push_str(&format!(" (redirected to {location}; push to that URL)"));
        }
        Err(Failure {
            retry: verdict == Verdict::Retry,
            message,
            retry_after,
        })
    }

    fn max_age(&self) -> Option<Duration> {
        self.endpoint.protocol.max_age()
    }
}

/// `: message` from an error answer: the `message` of Pyroscope's and
/// Parca's JSON errors, or the first line of anything else.
fn error_detail(body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| body.lines().next().unwrap_or("").to_owned());
    let message: String = message.trim().chars().take(300).collect();
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_http_or_https_with_a_host_and_nothing_secret() {
        for (text, base) in [
            ("http://127.0.0.1:4040", "http://127.0.0.1:4040"),
            (
                "https://profiles.example.com/",
                "https://profiles.example.com",
            ),
            (
                "http://proxy:8080/pyroscope/",
                "http://proxy:8080/pyroscope",
            ),
        ] {
            assert_eq!(BaseUrl::parse(text).unwrap().as_str(), base);
        }
        let refused = |text: &str| BaseUrl::parse(text).unwrap_err();
        assert_eq!(
            refused("not a url"),
            UrlError::Unparsable("not a url".into())
        );
        assert_eq!(refused("ftp://host"), UrlError::Scheme("ftp://host".into()));
        assert_eq!(refused("host:4040"), UrlError::Scheme("host:4040".into()));
        assert_eq!(
            refused("https://user:secret@host"),
            UrlError::Credentials("https://user:secret@host".into())
        );
        assert_eq!(
            refused("http://host/?tenant=a"),
            UrlError::Query("http://host/?tenant=a".into())
        );
        assert_eq!(
            refused("http://host/#top"),
            UrlError::Query("http://host/#top".into())
        );
    }

    #[test]
    fn auth_headers_and_their_debug_form() {
        let basic = Auth::Basic {
            username: "123456".into(),
            password: "glc_token".into(),
        };
        assert_eq!(basic.header(), "Basic MTIzNDU2OmdsY190b2tlbg==");
        assert_eq!(format!("{basic:?}"), "Basic(123456, <password>)");
        let bearer = Auth::Bearer("t0k3n".into());
        assert_eq!(bearer.header(), "Bearer t0k3n");
        assert!(!format!("{bearer:?}").contains("t0k3n"));
    }

    #[test]
    fn error_answers_give_their_message() {
        assert_eq!(
            error_detail(r#"{"code":"invalid_argument","message":"invalid labels"}"#),
            ": invalid labels"
        );
        assert_eq!(
            error_detail(r#"{"code":3,"message":"missing __name__ label","details":[]}"#),
            ": missing __name__ label"
        );
        assert_eq!(error_detail("upstream down\nmore"), ": upstream down");
        assert_eq!(error_detail(""), "");
    }
}
