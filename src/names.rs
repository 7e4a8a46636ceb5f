//! Validation of the names that come off the wire and later become storage keys, log
//! fields and rule lookups: app names, stream names and domains. Nothing else in the
//! crate trusts a name that has not passed through here.

use std::fmt;

/// The wildcard that stands for every domain or every app in rules and `[[auth]]`.
pub const ANY: &str = "*";

/// Entries keyed by their (domain, app) scope, each part a name or [`ANY`] (snapshot
/// rules, relay configs), looked up most specific first. Snapshot rules may also name
/// one stream of a named app ([`ByScope::from_streams`], [`ByScope::lookup_stream`]);
/// relay configs never do.
#[derive(Debug, Clone)]
pub struct ByScope<T> {
    by_key: std::collections::HashMap<ScopeKey, std::sync::Arc<T>>,
}

/// (domain, app, stream): the stream is `None` for an entry of every stream of the app.
type ScopeKey = (String, String, Option<String>);

impl<T> Default for ByScope<T> {
    fn default() -> Self {
        ByScope {
            by_key: Default::default(),
        }
    }
}

impl<T> ByScope<T> {
    /// Builds the map from (domain, app, entry); the caller has checked that scopes
    /// are unique.
    pub fn from_scoped(
        entries: impl IntoIterator<Item = (String, String, std::sync::Arc<T>)>,
    ) -> ByScope<T> {
        ByScope::from_streams(entries.into_iter().map(|(d, a, e)| (d, a, None, e)))
    }

    /// Builds the map from (domain, app, stream, entry), the stream `None` for every
    /// stream of the app; the caller has checked that scopes are unique.
    pub fn from_streams(
        entries: impl IntoIterator<Item = (String, String, Option<String>, std::sync::Arc<T>)>,
    ) -> ByScope<T> {
        ByScope {
            by_key: entries
                .into_iter()
                .map(|(d, a, s, e)| ((d, a, s), e))
                .collect(),
        }
    }

    /// The entry for (domain, app), ignoring entries of single streams: (domain, app),
    /// (domain, *), (*, app), then (*, *). Relay configs are looked up so.
    pub fn lookup(&self, domain: &str, app: &str) -> Option<std::sync::Arc<T>> {
        [(domain, app), (domain, ANY), (ANY, app), (ANY, ANY)]
            .into_iter()
            .find_map(|(d, a)| self.get(d, a, None))
    }

    /// The entry for a publish of `stream` on (domain, app), first match winning:
    /// (domain, app, stream), (domain, app), (domain, *), (*, app, stream), (*, app),
    /// (*, *). The domain decides first. Snapshot rules are looked up so.
    pub fn lookup_stream(
        &self,
        domain: &str,
        app: &str,
        stream: &str,
    ) -> Option<std::sync::Arc<T>> {
        [
            (domain, app, Some(stream)),
            (domain, app, None),
            (domain, ANY, None),
            (ANY, app, Some(stream)),
            (ANY, app, None),
            (ANY, ANY, None),
        ]
        .into_iter()
        .find_map(|(d, a, s)| self.get(d, a, s))
    }

    fn get(&self, domain: &str, app: &str, stream: Option<&str>) -> Option<std::sync::Arc<T>> {
        self.by_key
            .get(&(
                domain.to_string(),
                app.to_string(),
                stream.map(str::to_string),
            ))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Checks the stream of a rule's scope, if it names one: a valid stream name (as a
/// publish name is), of a named app (not `*`). `at` prefixes the error key
/// (`rules[2].stream`).
pub fn check_stream_scope(
    app: &str,
    stream: Option<&str>,
    at: &str,
) -> Result<(), crate::error::Invalid> {
    use crate::error::invalid;
    let Some(stream) = stream else {
        return Ok(());
    };
    validate_stream(stream)
        .map_err(|e| invalid(format!("{at}.stream"), format!("{stream:?} {e}")))?;
    if app == ANY {
        return Err(invalid(
            format!("{at}.stream"),
            format!("{stream:?} needs a named app: a stream rule is for one app, not \"*\""),
        ));
    }
    Ok(())
}

/// Checks the (domain, app) scope of a rule or relay entry: each `*` or a valid name,
/// the domain written normalised. `at` prefixes the error keys (`rules[2].domain`).
pub fn check_scope(domain: &str, app: &str, at: &str) -> Result<(), crate::error::Invalid> {
    use crate::error::invalid;
    if domain != ANY {
        let d = normalize_domain(domain)
            .map_err(|e| invalid(format!("{at}.domain"), format!("{domain:?} {e}")))?;
        if d != domain {
            return Err(invalid(
                format!("{at}.domain"),
                format!("{domain:?} must be written as {d:?} (lower case, no port)"),
            ));
        }
    }
    if app != ANY {
        validate_app(app).map_err(|e| invalid(format!("{at}.app"), format!("{app:?} {e}")))?;
    }
    Ok(())
}

/// Longest app or stream name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest domain (vhost) accepted, in bytes (DNS limit).
pub const MAX_DOMAIN_LEN: usize = 253;

/// Why a name was refused. The offending name is quoted (escaped) by the caller's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    #[error("contains a character other than letters, digits, '-', '_', '.'{}", if *.0 { " or '/'" } else { "" })]
    BadChar(bool),
    #[error("starts with '-', '_' or '.'")]
    BadStart,
    #[error("contains '..'")]
    DotDot,
    #[error("has an empty path segment")]
    EmptySegment,
}

/// The kind of name, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    App,
    Stream,
    Domain,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::App => "app name",
            NameKind::Stream => "stream name",
            NameKind::Domain => "domain",
        })
    }
}

/// Checks one segment: 1..=255 bytes of `[A-Za-z0-9._-]`, no leading `-`, `_` or `.`,
/// no `..`.
fn check_segment(s: &str, slash_allowed: bool) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(NameError::BadChar(slash_allowed));
    }
    if matches!(s.as_bytes()[0], b'-' | b'_' | b'.') {
        return Err(NameError::BadStart);
    }
    if s.contains("..") {
        return Err(NameError::DotDot);
    }
    Ok(())
}

/// Validates a stream name (the publish name with its `?query` already removed).
pub fn validate_stream(s: &str) -> Result<(), NameError> {
    check_segment(s, false)
}

/// Validates an app name. Apps may have `/`-separated segments (`live/sub`, as librtmp
/// clients send them); each segment follows the stream-name rules and the whole is at
/// most 255 bytes.
pub fn validate_app(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    for seg in s.split('/') {
        if seg.is_empty() {
            return Err(NameError::EmptySegment);
        }
        check_segment(seg, true)?;
    }
    Ok(())
}

/// Normalises and validates a domain: lower-cased, port dropped, a host name of
/// letters, digits, `-` and `.` (IPv4 addresses pass; IPv6 literals in brackets are
/// kept without brackets but only hex digits and `:` are allowed there).
pub fn normalize_domain(raw: &str) -> Result<String, NameError> {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port
        let end = rest.find(']').ok_or(NameError::BadChar(false))?;
        let v6 = &rest[..end];
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(NameError::BadChar(false));
        }
        return Ok(v6.to_ascii_lowercase());
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(NameError::Empty);
    }
    if host.len() > MAX_DOMAIN_LEN {
        return Err(NameError::TooLong);
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
    {
        return Err(NameError::BadChar(false));
    }
    if host.starts_with(['-', '.']) {
        return Err(NameError::BadStart);
    }
    if host.contains("..") {
        return Err(NameError::DotDot);
    }
    Ok(host.to_ascii_lowercase())
}

/// Escapes a name from the wire for a log line or an error message: printable ASCII
/// stays, anything else becomes `\xNN`, and the result is capped at 64 bytes of input.
pub fn escape(raw: &str) -> String {
    let mut out = String::new();
    for (i, b) in raw.bytes().enumerate() {
        if i >= 64 {
            out.push('…');
            break;
        }
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Query parameters whose values are secrets: the publish signature (`auth_key`),
/// and what encoders and hook/callback URLs commonly carry credentials in.
pub const SECRET_PARAMS: &[&str] = &[
    "auth_key",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "secret",
    "sign",
    "signature",
    "password",
    "passwd",
    "pwd",
    "txsecret",
];

/// What a redacted value is replaced with.
pub const REDACTED: &str = "***";

/// A URL, `name?query` or bare query with the values of [`SECRET_PARAMS`] (any case)
/// and a URL's password (`user:pass@`) replaced by `***`, for logs and messages. Call
/// it before [`escape`], which may cut a value in half.
pub fn redact(s: &str) -> std::borrow::Cow<'_, str> {
    let is_url = s.contains("://");
    let (head, query) = match s.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None if is_url => (s, None),
        None => ("", Some(s)),
    };
    let secret = |kv: &str| {
        kv.split_once('=')
            .is_some_and(|(k, _)| SECRET_PARAMS.iter().any(|p| k.eq_ignore_ascii_case(p)))
    };
    let password = is_url
        .then(|| {
            let rest = &head[head.find("://")? + 3..];
            let authority = rest.split(['/', '#']).next()?;
            let (userinfo, _) = authority.rsplit_once('@')?;
            userinfo.split_once(':').map(|(user, _)| (user, userinfo))
        })
        .flatten();
    if password.is_none() && !query.is_some_and(|q| q.split('&').any(secret)) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = match password {
        Some((user, userinfo)) => head.replacen(userinfo, &format!("{user}:{REDACTED}"), 1),
        None => head.to_string(),
    };
    if let Some(q) = query {
        if s.contains('?') {
            out.push('?');
        }
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if secret(kv) => format!("{k}={REDACTED}"),
                _ => kv.to_string(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    std::borrow::Cow::Owned(out)
}

/// The host of an RTMP URL (`rtmp://Host:1935/app/...` → `host`), if it has one.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map(|(_, r)| r)?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!authority.is_empty()).then_some(authority)
}

/// Looks up a query parameter in `a=b&c=d` (no percent-decoding: values used here are
/// validated names, and a `%` makes them invalid anyway).
pub fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

/// Splits `name?query` into (name, query).
pub fn split_query(s: &str) -> (&str, &str) {
    s.split_once('?').unwrap_or((s, ""))
}

/// The identity of a stream: (domain, app, stream), each validated. One publish has
/// one; the registry, storage keys, rules and the API all name a stream by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct StreamId {
    pub domain: String,
    pub app: String,
    pub stream: String,
}

impl StreamId {
    pub fn new(
        domain: impl Into<String>,
        app: impl Into<String>,
        stream: impl Into<String>,
    ) -> StreamId {
        StreamId {
            domain: domain.into(),
            app: app.into(),
            stream: stream.into(),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.domain, self.app, self.stream)
    }
}

/// What a client asked to publish: the stream it names and the query it sent with the
/// stream name (kept for authentication and hooks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    pub id: StreamId,
    /// The stream name's query string, without the `?`.
    pub query: String,
}

/// Why a publish name was refused: which part, the raw value (escaped) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {kind} \"{}\": {reason}", escape(.raw))]
pub struct BadName {
    pub kind: NameKind,
    pub raw: String,
    pub reason: NameError,
}

/// The domain used when the client sent no `tcUrl` host and no `vhost=`.
pub const DEFAULT_DOMAIN: &str = "default";

/// Resolves (domain, app, stream) of a publish: the domain is the `tcUrl` host
/// (lower-cased, port dropped), overridden by `vhost=` or `domain=` in the stream's
/// query, then in the app's; the stream is the publish name without its query.
pub fn publish_request(
    app_raw: &str,
    stream_key: &str,
    tc_url: Option<&str>,
) -> Result<PublishRequest, BadName> {
    let bad = |kind, raw: &str, reason| BadName {
        kind,
        raw: raw.to_string(),
        reason,
    };
    let (app, app_query) = split_query(app_raw);
    let app = app.strip_suffix('/').unwrap_or(app);
    let (stream, query) = split_query(stream_key);
    validate_app(app).map_err(|e| bad(NameKind::App, app, e))?;
    validate_stream(stream).map_err(|e| bad(NameKind::Stream, stream, e))?;
    fn from_query(q: &str) -> Option<&str> {
        query_param(q, "vhost").or_else(|| query_param(q, "domain"))
    }
    let raw_domain = from_query(query)
        .or_else(|| from_query(app_query))
        .or_else(|| tc_url.and_then(url_host))
        .unwrap_or(DEFAULT_DOMAIN);
    let domain = normalize_domain(raw_domain).map_err(|e| bad(NameKind::Domain, raw_domain, e))?;
    Ok(PublishRequest {
        id: StreamId {
            domain,
            app: app.to_string(),
            stream: stream.to_string(),
        },
        query: query.to_string(),
    })
}

/// Checks that a URL is http(s)://host… (callbacks and hooks).
pub fn check_http_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| format!("{u:?} must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') || u.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!("{u:?} is not a valid URL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scoped(entries: &[(&str, &str, Option<&str>, u32)]) -> ByScope<u32> {
        ByScope::from_streams(entries.iter().map(|(d, a, s, n)| {
            (
                d.to_string(),
                a.to_string(),
                s.map(str::to_string),
                std::sync::Arc::new(*n),
            )
        }))
    }

    /// Every row of the precedence table (docs/api.md): each entry wins while the ones
    /// above it are absent, and loses to each one above it.
    #[test]
    fn stream_precedence_row_by_row() {
        let rows = [
            ("a.com", "live", Some("cam7"), 1),
            ("a.com", "live", None, 2),
            ("a.com", ANY, None, 3),
            (ANY, "live", Some("cam7"), 4),
            (ANY, "live", None, 5),
            (ANY, ANY, None, 6),
        ];
        for first in 0..rows.len() {
            let set = scoped(&rows[first..]);
            let got = set.lookup_stream("a.com", "live", "cam7").map(|n| *n);
            assert_eq!(got, Some(rows[first].3), "with rows {}.. only", first + 1);
            // Each row alone matches too.
            let alone = scoped(&rows[first..=first]);
            assert_eq!(
                alone.lookup_stream("a.com", "live", "cam7").map(|n| *n),
                Some(rows[first].3)
            );
        }
        let all = scoped(&rows);
        let at = |d, a, s| all.lookup_stream(d, a, s).map(|n| *n);
        assert_eq!(
            at("a.com", "live", "cam8"),
            Some(2),
            "another stream: the app rule"
        );
        assert_eq!(
            at("a.com", "vod", "cam7"),
            Some(3),
            "the domain decides first"
        );
        assert_eq!(at("b.com", "live", "cam7"), Some(4));
        assert_eq!(at("b.com", "live", "cam8"), Some(5));
        assert_eq!(at("b.com", "vod", "cam7"), Some(6));
        // A stream entry is for its exact name only, and never for (domain, app) lookups.
        let streams = scoped(&[(ANY, "live", Some("cam7"), 4)]);
        assert_eq!(streams.lookup_stream("x", "live", "Cam7").map(|n| *n), None);
        assert_eq!(
            streams.lookup_stream("x", "live", "cam70").map(|n| *n),
            None
        );
        assert_eq!(streams.lookup("x", "live").map(|n| *n), None);
        assert_eq!(all.lookup("a.com", "live").map(|n| *n), Some(2));
    }

    #[test]
    fn stream_scopes_are_checked_like_publish_names() {
        assert!(check_stream_scope("live", None, "rule").is_ok());
        assert!(check_stream_scope("*", None, "rule").is_ok());
        assert!(check_stream_scope("live", Some("cam7"), "rule").is_ok());
        for bad in ["", "a/b", "..", ".x", "a b", "caméra"] {
            let e = check_stream_scope("live", Some(bad), "rules[1]").unwrap_err();
            assert_eq!(e.key, "rules[1].stream", "{bad:?}");
        }
        let e = check_stream_scope("*", Some("cam7"), "rule").unwrap_err();
        assert_eq!(e.key, "rule.stream");
        assert!(e.message.contains("named app"), "{}", e.message);
    }

    #[test]
    fn stream_names() {
        for ok in ["cam1", "a", "Cam-1_b.2", &"x".repeat(255)] {
            assert_eq!(validate_stream(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_stream(""), Err(NameError::Empty));
        assert_eq!(validate_stream(&"x".repeat(256)), Err(NameError::TooLong));
        assert_eq!(validate_stream(&"x".repeat(300)), Err(NameError::TooLong));
        assert_eq!(validate_stream("a/b"), Err(NameError::BadChar(false)));
        assert_eq!(validate_stream("../etc"), Err(NameError::BadChar(false)));
        assert_eq!(validate_stream("a..b"), Err(NameError::DotDot));
        assert_eq!(validate_stream(".hidden"), Err(NameError::BadStart));
        assert_eq!(validate_stream("-x"), Err(NameError::BadStart));
        assert_eq!(validate_stream("_x"), Err(NameError::BadStart));
        assert_eq!(validate_stream("a\0b"), Err(NameError::BadChar(false)));
        assert_eq!(validate_stream("a\nb"), Err(NameError::BadChar(false)));
        assert_eq!(validate_stream("%2e%2e"), Err(NameError::BadChar(false)));
        assert_eq!(validate_stream("caméra"), Err(NameError::BadChar(false)));
        assert_eq!(validate_stream("a b"), Err(NameError::BadChar(false)));
    }

    #[test]
    fn app_names() {
        assert_eq!(validate_app("live"), Ok(()));
        assert_eq!(validate_app("live/sub"), Ok(()));
        assert_eq!(validate_app("live//sub"), Err(NameError::EmptySegment));
        assert_eq!(validate_app("/live"), Err(NameError::EmptySegment));
        assert_eq!(validate_app("live/"), Err(NameError::EmptySegment));
        assert_eq!(validate_app("live/../x"), Err(NameError::BadStart));
        assert_eq!(validate_app("live/a..b"), Err(NameError::DotDot));
        assert_eq!(validate_app(&"a".repeat(256)), Err(NameError::TooLong));
    }

    #[test]
    fn domains() {
        assert_eq!(normalize_domain("Example.COM:1935").unwrap(), "example.com");
        assert_eq!(normalize_domain("127.0.0.1").unwrap(), "127.0.0.1");
        assert_eq!(normalize_domain("[::1]:1935").unwrap(), "::1");
        assert_eq!(normalize_domain("host.").unwrap(), "host");
        assert!(normalize_domain("").is_err());
        assert!(normalize_domain("a/b").is_err());
        assert!(normalize_domain("a..b").is_err());
        assert!(normalize_domain(".a").is_err());
        assert!(normalize_domain("[zz]").is_err());
    }

    #[test]
    fn url_parts() {
        assert_eq!(
            url_host("rtmp://Example.com:1935/live?x=1"),
            Some("Example.com:1935")
        );
        assert_eq!(url_host("rtmp://u:p@h/live"), Some("h"));
        assert_eq!(url_host("rtmp:///live"), None);
        assert_eq!(url_host("live"), None);
        assert_eq!(query_param("a=1&vhost=x.com&b", "vhost"), Some("x.com"));
        assert_eq!(query_param("a=1&b", "b"), Some(""));
        assert_eq!(query_param("a=1", "vhost"), None);
        assert_eq!(split_query("cam1?auth_key=1-2"), ("cam1", "auth_key=1-2"));
        assert_eq!(split_query("cam1"), ("cam1", ""));
    }

    #[test]
    fn redaction() {
        let tc = "rtmp://h:1935/live?auth_key=1700000000-0-0-0123456789abcdef0123456789abcdef";
        assert_eq!(redact(tc), "rtmp://h:1935/live?auth_key=***");
        assert_eq!(
            redact("cam1?vhost=a.com&AUTH_KEY=1-0-0-ff&x=1"),
            "cam1?vhost=a.com&AUTH_KEY=***&x=1"
        );
        assert_eq!(redact("auth_key=1-0-0-ff&x"), "auth_key=***&x");
        assert_eq!(
            redact("https://u:p4ss@hooks.example/cb?token=t0k&id=3"),
            "https://u:***@hooks.example/cb?token=***&id=3"
        );
        assert_eq!(
            redact("http://hooks.example/cb?sign=s&keyframe=1"),
            "http://hooks.example/cb?sign=***&keyframe=1"
        );
        // Nothing secret: borrowed, unchanged.
        for plain in [
            "rtmp://h/live",
            "cam1?vhost=a.com",
            "live",
            "",
            "http://u@h/x?key",
        ] {
            assert!(matches!(redact(plain), std::borrow::Cow::Borrowed(p) if p == plain));
        }
        // Redacted before escaping, so the cap of `escape` never shows a prefix.
        assert!(!escape(&redact(tc)).contains("1700000000"));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a\0b"), "a\\x00b");
        assert_eq!(escape("é"), "\\xc3\\xa9");
        assert_eq!(escape(&"y".repeat(100)).len(), 64 + '…'.len_utf8());
    }

    #[test]
    fn domain_from_tcurl_then_overrides() {
        let n = publish_request(
            "live",
            "cam1?token=a",
            Some("rtmp://Cams.Example.com:1935/live"),
        )
        .unwrap();
        assert_eq!(
            n,
            PublishRequest {
                id: StreamId::new("cams.example.com", "live", "cam1"),
                query: "token=a".into()
            }
        );
        let n =
            publish_request("live", "cam1?vhost=other.com", Some("rtmp://1.2.3.4/live")).unwrap();
        assert_eq!(n.id.domain, "other.com");
        let n =
            publish_request("live?domain=app.com", "cam1", Some("rtmp://1.2.3.4/live")).unwrap();
        assert_eq!(
            (n.id.domain.as_str(), n.id.app.as_str()),
            ("app.com", "live")
        );
        let n = publish_request("live?vhost=a.com", "cam1?vhost=s.com", None).unwrap();
        assert_eq!(n.id.domain, "s.com");
        let n = publish_request("live/", "cam1", None).unwrap();
        assert_eq!(
            (n.id.domain.as_str(), n.id.app.as_str()),
            (DEFAULT_DOMAIN, "live")
        );
    }

    #[test]
    fn bad_parts_are_named() {
        let e = publish_request("live", "../etc?x", None).unwrap_err();
        assert_eq!(e.kind, NameKind::Stream);
        assert_eq!(e.raw, "../etc");
        let e = publish_request("li ve", "cam", None).unwrap_err();
        assert_eq!(e.kind, NameKind::App);
        let e = publish_request("live", "cam?vhost=bad/host", None).unwrap_err();
        assert_eq!(e.kind, NameKind::Domain);
        assert_eq!(e.to_string(), "bad domain \"bad/host\": contains a character other than letters, digits, '-', '_', '.'");
        let e = publish_request("live", "a\0b", None).unwrap_err();
        assert!(e.to_string().contains("a\\x00b"));
    }
}
