//! Where a heap profile comes from: a net/http/pprof URL or a file.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ureq::http::Uri;

use super::GoPprofError;

/// Where [`fetch`](super::fetch) gets a Go heap profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileSource {
    /// A running program's net/http/pprof endpoint.
    Url(PprofUrl),
    /// A profile saved earlier (gzipped or raw protobuf), e.g. by
    /// `curl http://127.0.0.1:6060/debug/pprof/heap > heap.pb.gz`.
    File(PathBuf),
}

/// The path net/http/pprof serves the heap profile on.
const HEAP_PATH: &str = "/debug/pprof/heap";

impl ProfileSource {
    /// Reads a command-line argument: `http://HOST[:PORT][/PATH][?QUERY]` is
    /// a URL (with no path, `/debug/pprof/heap`), anything without a
    /// `SCHEME://` prefix a file path.
    ///
    /// A URL must name a loopback host (127.0.0.0/8, ::1 or `localhost`)
    /// unless `allow_remote`: heap profiles show a program's internals, and
    /// memtrace runs as root.
    ///
    /// # Errors
    ///
    /// `https://` and other schemes, URLs that do not parse or carry
    /// credentials, and non-loopback hosts without `allow_remote`.
    pub fn parse(text: &str, allow_remote: bool) -> Result<Self, GoPprofError> {
        match scheme(text) {
            None => Ok(Self::File(PathBuf::from(text))),
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => {
                PprofUrl::parse(text, allow_remote).map(Self::Url)
            }
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => {
                Err(GoPprofError::HttpsUnsupported { url: text.into() })
            }
            Some(_) => Err(GoPprofError::UnsupportedScheme { text: text.into() }),
        }
    }
}

impl fmt::Display for ProfileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(url) => url.fmt(f),
            Self::File(path) => path.display().fmt(f),
        }
    }
}

/// An `http://` URL that passed [`ProfileSource::parse`]'s checks, with the
/// default path filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PprofUrl(String);

impl PprofUrl {
    fn parse(text: &str, allow_remote: bool) -> Result<Self, GoPprofError> {
        let bad = |reason: &str| GoPprofError::BadUrl {
            url: text.into(),
            reason: reason.into(),
        };
        let uri: Uri = text.parse().map_err(|_| bad("not a valid URL"))?;
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in URLs are not supported"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if !allow_remote && !is_loopback(host) {
            return Err(GoPprofError::RemoteRefused {
                url: text.into(),
                host: host.into(),
            });
        }
        let path = match uri.path() {
            "" | "/" => HEAP_PATH,
            path => path,
        };
        let query = uri.query().map(|query| format!("?{query}"));
        Ok(Self(format!(
            "http://{authority}{path}{}",
            query.unwrap_or_default()
        )))
    }

    /// The URL as requested.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PprofUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The scheme of `text` when it starts like a URL (`SCHEME://`).
fn scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// Whether `host` (as in a URL, IPv6 in brackets) names this machine's
/// loopback interface.
fn is_loopback(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str, allow_remote: bool) -> Result<String, GoPprofError> {
        match ProfileSource::parse(text, allow_remote)? {
            ProfileSource::Url(url) => Ok(url.as_str().to_owned()),
            ProfileSource::File(path) => panic!("{text} parsed as the file {path:?}"),
        }
    }

    #[test]
    fn loopback_urls_get_the_heap_path_by_default() {
        for (text, expected) in [
            (
                "http://127.0.0.1:6060",
                "http://127.0.0.1:6060/debug/pprof/heap",
            ),
            (
                "http://127.0.0.1:6060/",
                "http://127.0.0.1:6060/debug/pprof/heap",
            ),
            (
                "http://127.0.0.1:6060?gc=1",
                "http://127.0.0.1:6060/debug/pprof/heap?gc=1",
            ),
            (
                "HTTP://localhost:6060/debug/pprof/heap?gc=1",
                "http://localhost:6060/debug/pprof/heap?gc=1",
            ),
            ("http://127.9.8.7/custom", "http://127.9.8.7/custom"),
            ("http://[::1]:6060", "http://[::1]:6060/debug/pprof/heap"),
            (
                "http://[::ffff:127.0.0.1]:1/x",
                "http://[::ffff:127.0.0.1]:1/x",
            ),
            ("http://LocalHost", "http://LocalHost/debug/pprof/heap"),
        ] {
            assert_eq!(url(text, false).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn remote_hosts_need_permission() {
        for text in [
            "http://192.0.2.1:6060",
            "http://[2001:db8::1]:6060",
            "http://example.com/debug/pprof/heap",
            "http://0.0.0.0:6060",
            "http://localhost.example.com:6060",
        ] {
            let error = url(text, false).unwrap_err();
            assert!(
                matches!(error, GoPprofError::RemoteRefused { .. }),
                "{text}: {error}"
            );
            assert!(error.is_input_error());
            assert!(url(text, true).is_ok(), "{text}");
        }
        let message = url("http://192.0.2.1:6060", false).unwrap_err().to_string();
        assert!(message.contains("192.0.2.1"), "{message}");
    }

    #[test]
    fn https_and_other_schemes_are_refused() {
        let error = ProfileSource::parse("https://127.0.0.1:6060", true).unwrap_err();
        assert!(matches!(error, GoPprofError::HttpsUnsupported { .. }));
        assert!(error.to_string().contains("https"), "{error}");
        let error = ProfileSource::parse("ftp://127.0.0.1/heap", true).unwrap_err();
        assert!(matches!(error, GoPprofError::UnsupportedScheme { .. }));
    }

    #[test]
    fn malformed_urls_are_refused() {
        for text in [
            "http://",
            "http:///path",
            "http://a b/",
            "http://u:p@127.0.0.1/",
        ] {
            let error = ProfileSource::parse(text, true).unwrap_err();
            assert!(
                matches!(error, GoPprofError::BadUrl { .. }),
                "{text}: {error:?}"
            );
        }
    }

    #[test]
    fn anything_else_is_a_file() {
        for text in ["heap.pb.gz", "/tmp/x://y", "./http:/x", "C:\\heap"] {
            assert_eq!(
                ProfileSource::parse(text, false).unwrap(),
                ProfileSource::File(PathBuf::from(text))
            );
        }
    }
}
