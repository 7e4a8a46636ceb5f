//! The admin routes' guard against browsers: what keeps a web page the operator
//! happens to visit from driving the token-less loopback API.
//!
//! - A request with a body must say `Content-Type: application/json` (else 415): a
//!   page can send `text/plain`, form or multipart bodies cross-origin without a CORS
//!   preflight, but never `application/json`.
//! - Without an admin token, a state-changing request (POST, PUT, PATCH, DELETE, with
//!   or without a body) whose `Origin` is not the node's own is refused (403): a
//!   body-less cross-origin POST needs no preflight either.
//! - Without an admin token, a request whose `Host` is not an allowed name is refused
//!   (403): DNS rebinding points a page's own name at 127.0.0.1, and then only the
//!   Host header still tells.
//!
//! Allowed names: `127.0.0.1`, `localhost` and `[::1]` on the listener's port, and the
//! `server.http_hosts` entries. With an admin token the Origin and Host checks are off
//! (a browser never sends the token on its own, so a node reached by its public name
//! keeps working); the Content-Type check stays. Health and metrics are not guarded:
//! they take no body, change nothing and are public with a token too.

use std::sync::Arc;

use axum::body::HttpBody;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::config::HttpHost;
use crate::names;

/// The names the admin routes answer to when no admin token is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    /// The port the HTTP listener is bound to (the loopback names need it).
    pub port: u16,
    /// `server.http_hosts`.
    pub extra: Vec<HttpHost>,
}

/// Loopback names allowed on the listener's port.
const LOOPBACK: [&str; 3] = ["127.0.0.1", "localhost", "[::1]"];

impl HostPolicy {
    pub fn new(port: u16, extra: Vec<HttpHost>) -> HostPolicy {
        HostPolicy { port, extra }
    }

    /// Whether `authority` (`host[:port]`, as in a Host header or an Origin) names
    /// this node; `default_port` stands for an absent port (80 for http, 443 for
    /// https).
    pub fn allows(&self, authority: &str, default_port: u16) -> bool {
        let Ok(h) = HttpHost::parse(authority) else {
            return false;
        };
        let port = h.port.unwrap_or(default_port);
        let loopback = LOOPBACK.contains(&h.host.as_str()) && port == self.port;
        loopback
            || self
                .extra
                .iter()
                .any(|e| e.host == h.host && e.port.is_none_or(|p| p == port))
    }

    /// Whether `origin` (`scheme://host[:port]`) is this node's own.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let (authority, default_port) = if let Some(a) = origin.strip_prefix("http://") {
            (a, 80)
        } else if let Some(a) = origin.strip_prefix("https://") {
            (a, 443)
        } else {
            return false; // "null", other schemes
        };
        self.allows(authority, default_port)
    }
}

/// Why the guard refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// 415: a body that is not declared JSON.
    ContentType(String),
    /// 403: a state-changing request from another origin.
    Origin(String),
    /// 403: a Host that is not an allowed name.
    Host(String),
}

impl Refused {
    pub fn into_api_error(self) -> ApiError {
        let (status, code, message) = match self {
            Refused::ContentType(ct) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("a request body must be sent with Content-Type: application/json, got {ct}"),
            ),
            Refused::Origin(o) => (
                StatusCode::FORBIDDEN,
                "permission_denied",
                format!(
                    "cross-origin request refused: Origin \"{}\" is not this node (see server.http_hosts)",
                    names::escape(&o)
                ),
            ),
            Refused::Host(h) => (
                StatusCode::FORBIDDEN,
                "permission_denied",
                format!(
                    "Host \"{}\" is not a name of this node; add it to server.http_hosts, or set an admin token",
                    names::escape(&h)
                ),
            ),
        };
        ApiError {
            status,
            code,
            message,
            field: None,
        }
    }
}

/// Whether the request carries a body (a non-zero Content-Length, or any
/// Transfer-Encoding).
pub fn has_body(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.to_str().map_or(true, |v| v.trim() != "0"))
}

/// `application/json`, with parameters (`; charset=utf-8`) allowed.
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn changes_state(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The checks, on a request's method and headers (and the URI's authority, which
/// HTTP/2 sends instead of Host). `hosts` is None when an admin token is set.
pub fn check(
    method: &Method,
    headers: &HeaderMap,
    uri_authority: Option<&str>,
    hosts: Option<&HostPolicy>,
) -> Result<(), Refused> {
    check_with_body(method, headers, has_body(headers), uri_authority, hosts)
}

/// [`check`], told whether the request has a body (HTTP/2 may send one without
/// Content-Length).
pub fn check_with_body(
    method: &Method,
    headers: &HeaderMap,
    body: bool,
    uri_authority: Option<&str>,
    hosts: Option<&HostPolicy>,
) -> Result<(), Refused> {
    if body {
        let ct = headers.get(header::CONTENT_TYPE);
        if !ct.and_then(|v| v.to_str().ok()).is_some_and(is_json) {
            let shown = ct.map_or("none".to_string(), |v| {
                format!(
                    "\"{}\"",
                    names::escape(&String::from_utf8_lossy(v.as_bytes()))
                )
            });
            return Err(Refused::ContentType(shown));
        }
    }
    let Some(hosts) = hosts else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| uri_authority.map(str::to_owned))
        .unwrap_or_default();
    if !hosts.allows(&host, 80) {
        return Err(Refused::Host(host));
    }
    if changes_state(method) {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = String::from_utf8_lossy(origin.as_bytes());
            if !hosts.allows_origin(&origin) {
                return Err(Refused::Origin(origin.into_owned()));
            }
        }
    }
    Ok(())
}

/// What the middleware is handed.
#[derive(Debug, Clone)]
pub struct Guard {
    /// None when an admin token is set.
    pub hosts: Option<Arc<HostPolicy>>,
}

/// The axum middleware on the admin routes and the dashboard.
pub async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    let body = has_body(req.headers()) || req.body().size_hint().exact() != Some(0);
    match check_with_body(
        req.method(),
        req.headers(),
        body,
        authority.as_deref(),
        g.hosts.as_deref(),
    ) {
        Ok(()) => next.run(req).await,
        Err(refused) => {
            tracing::debug!(method = %req.method(), refused = ?refused, "admin request refused");
            refused.into_api_error().into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn policy() -> HostPolicy {
        HostPolicy::new(
            8935,
            vec![
                HttpHost::parse("snap.internal").unwrap(),
                HttpHost::parse("proxy.example:8443").unwrap(),
            ],
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hosts() {
        let p = policy();
        for ok in [
            "127.0.0.1:8935",
            "localhost:8935",
            "LOCALHOST:8935",
            "[::1]:8935",
            "snap.internal",
            "snap.internal:80",
            "snap.internal:8935",
            "proxy.example:8443",
        ] {
            assert!(p.allows(ok, 80), "{ok}");
        }
        for bad in [
            "evil.example:8935",
            "127.0.0.1:8936",
            "127.0.0.1",
            "localhost",
            "proxy.example",
            "proxy.example:443",
            "",
            "127.0.0.1:8935/x",
            "127.0.0.1.evil.example:8935",
        ] {
            assert!(!p.allows(bad, 80), "{bad}");
        }
        // On port 80 the loopback names come without a port.
        assert!(HostPolicy::new(80, vec![]).allows("localhost", 80));
    }

    #[test]
    fn origins() {
        let p = policy();
        assert!(p.allows_origin("http://127.0.0.1:8935"));
        assert!(p.allows_origin("http://localhost:8935"));
        assert!(p.allows_origin("https://snap.internal"));
        assert!(p.allows_origin("https://proxy.example:8443"));
        let on_443 = HostPolicy::new(8935, vec![HttpHost::parse("snap.example:443").unwrap()]);
        assert!(on_443.allows_origin("https://snap.example"));
        assert!(!on_443.allows_origin("http://snap.example"));
        for bad in [
            "http://evil.example",
            "http://127.0.0.1:8936",
            "null",
            "file://",
            "https://proxy.example",
            "http://127.0.0.1",
        ] {
            assert!(!p.allows_origin(bad), "{bad}");
        }
    }

    #[test]
    fn bodies_must_be_json() {
        let p = policy();
        let local = ("host", "127.0.0.1:8935");
        let post = Method::POST;
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
        ] {
            let h = headers(&[local, ("content-length", "2"), ("content-type", ct)]);
            assert_eq!(check(&post, &h, None, Some(&p)), Ok(()), "{ct}");
        }
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
        ] {
            let h = headers(&[local, ("content-length", "2"), ("content-type", ct)]);
            assert!(
                matches!(
                    check(&post, &h, None, Some(&p)),
                    Err(Refused::ContentType(_))
                ),
                "{ct}"
            );
            // With a token too.
            assert!(matches!(
                check(&post, &h, None, None),
                Err(Refused::ContentType(_))
            ));
        }
        // A body without any Content-Type, and a chunked one.
        let h = headers(&[local, ("content-length", "2")]);
        assert!(matches!(
            check(&post, &h, None, Some(&p)),
            Err(Refused::ContentType(_))
        ));
        let h = headers(&[local, ("transfer-encoding", "chunked")]);
        assert!(matches!(
            check(&post, &h, None, Some(&p)),
            Err(Refused::ContentType(_))
        ));
        // No body: no Content-Type needed.
        let h = headers(&[local, ("content-length", "0")]);
        assert_eq!(check(&post, &h, None, Some(&p)), Ok(()));
        assert_eq!(check(&post, &headers(&[local]), None, Some(&p)), Ok(()));
    }

    #[test]
    fn origins_and_hosts_of_requests() {
        let p = policy();
        let local = ("host", "127.0.0.1:8935");
        let evil = ("origin", "http://evil.example");
        // A body-less cross-origin POST and DELETE: refused; a GET with an Origin: fine
        // (the browser's CORS keeps the answer from the page).
        for m in [Method::POST, Method::DELETE, Method::PATCH, Method::PUT] {
            assert!(matches!(
                check(&m, &headers(&[local, evil]), None, Some(&p)),
                Err(Refused::Origin(_))
            ));
            assert_eq!(check(&m, &headers(&[local, evil]), None, None), Ok(()));
        }
        assert_eq!(
            check(&Method::GET, &headers(&[local, evil]), None, Some(&p)),
            Ok(())
        );
        let own = ("origin", "http://localhost:8935");
        assert_eq!(
            check(&Method::POST, &headers(&[local, own]), None, Some(&p)),
            Ok(())
        );
        // DNS rebinding: the page's own name in Host.
        let rebound = headers(&[("host", "evil.example:8935")]);
        assert!(matches!(
            check(&Method::GET, &rebound, None, Some(&p)),
            Err(Refused::Host(_))
        ));
        assert_eq!(check(&Method::GET, &rebound, None, None), Ok(()));
        // No Host header: the URI's authority (HTTP/2), else refused.
        assert_eq!(
            check(
                &Method::GET,
                &HeaderMap::new(),
                Some("localhost:8935"),
                Some(&p)
            ),
            Ok(())
        );
        assert!(matches!(
            check(&Method::GET, &HeaderMap::new(), None, Some(&p)),
            Err(Refused::Host(_))
        ));
    }

    #[test]
    fn refusals_are_api_errors() {
        let e = Refused::ContentType("\"text/plain\"".into()).into_api_error();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        );
        let e = Refused::Host("evil\n".into()).into_api_error();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.message.contains("evil\\x0a"), "{}", e.message);
    }
}
