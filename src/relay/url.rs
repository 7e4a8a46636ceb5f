//! Target URL templates: `rtmp[s]://host[:port]/app[/more]/KEY[?query]` with the
//! variables `{Domain}`, `{AppName}` and `{StreamName}`; rendering one for a publish
//! (its query passed through or not, signed or not) into what the RTMP client needs;
//! redaction of secrets for logs, events and the API. No I/O.
//!
//! The variables' values are validated names (`names`: letters, digits, `-_.` and `/`
//! in apps), so a rendered URL cannot gain a host, a port, a query or a path segment it
//! did not have in the template, except that an app with `/` adds app segments.

use crate::names::{self, StreamId};
use crate::rtmp::client::Endpoint;

/// The variables a template may use.
pub const VARS: [&str; 3] = ["{Domain}", "{AppName}", "{StreamName}"];

/// Checks a template: scheme, known variables only, and that it renders (for a sample
/// stream) into an endpoint and a non-empty stream key. Returns a reason for the caller
/// to put after the key.
pub fn check_template(template: &str) -> Result<(), String> {
    if !template.starts_with("rtmp://") && !template.starts_with("rtmps://") {
        return Err(format!("{template:?} must start with rtmp:// or rtmps://"));
    }
    if template
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "{template:?} contains whitespace or a control character"
        ));
    }
    if template.contains('#') {
        return Err(format!("{template:?} contains '#'"));
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("{template:?} has an unclosed '{{'"))?;
        let var = &rest[open..open + close + 1];
        if !VARS.contains(&var) {
            return Err(format!(
                "{template:?} uses {var}; the variables are {{Domain}}, {{AppName}} and {{StreamName}}"
            ));
        }
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("{template:?} has a '}}' without '{{'"));
    }
    let sample = StreamId::new("example.com", "live", "stream");
    split(&substitute(template, &sample), template).map(|_| ())
}

/// The template with the stream's names in.
fn substitute(template: &str, id: &StreamId) -> String {
    template
        .replace("{Domain}", &id.domain)
        .replace("{AppName}", &id.app)
        .replace("{StreamName}", &id.stream)
}

/// Splits a whole URL into the endpoint (up to the app) and the stream key with its
/// query. `what` names the URL in errors (the template, never a signed URL).
fn split(url: &str, what: &str) -> Result<(Endpoint, String), String> {
    let (base, query) = names::split_query(url);
    let (app_url, key) = base
        .rsplit_once('/')
        .filter(|(a, k)| {
            !k.is_empty()
                && a.contains("://")
                && a.split("://").nth(1).is_some_and(|r| r.contains('/'))
        })
        .ok_or_else(|| format!("{what:?} needs a path /APP/STREAM_KEY after the host"))?;
    let endpoint = Endpoint::parse(app_url).map_err(|e| format!("{what:?}: {}", e.reason))?;
    let key = if query.is_empty() {
        key.to_owned()
    } else {
        format!("{key}?{query}")
    };
    Ok((endpoint, key))
}

/// What one connection attempt dials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub endpoint: Endpoint,
    /// The stream key with its query (signature included), as `publish` sends it.
    pub stream_key: String,
    /// The whole URL, for [`redact`] before it is shown anywhere.
    pub url: String,
}

/// How to sign a target URL (Alibaba type A `auth_key`, rand 0, uid 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    pub key: String,
    pub validity_secs: u64,
}

/// The query without its `auth_key` parameters (a signature livesnap checked itself is
/// not passed upstream).
pub fn without_auth_key(query: &str) -> String {
    query
        .split('&')
        .filter(|kv| !kv.is_empty() && kv.split_once('=').map_or(*kv, |(k, _)| k) != "auth_key")
        .collect::<Vec<_>>()
        .join("&")
}

/// Renders `template` for the publish `id`. `query` (the publish's, without `?`) is
/// appended after the template's own query (an `auth_key` in it is passed on, unless
/// the target is signed: the caller strips one that livesnap checked); `sign` adds an
/// `auth_key` whose timestamp is `now + validity_secs` (the link's expiry, as Alibaba's
/// live ingest reads it; an origin reading it as the signing time accepts it too).
pub fn render(
    template: &str,
    id: &StreamId,
    query: Option<&str>,
    sign: Option<&Signing>,
    now: u64,
) -> Result<Rendered, String> {
    let url = substitute(template, id);
    let (base, own) = names::split_query(&url);
    let passed = query.unwrap_or("").split('&').filter(|kv| {
        !kv.is_empty()
            && (sign.is_none() || kv.split_once('=').map_or(*kv, |(k, _)| k) != "auth_key")
    });
    let params: Vec<&str> = own
        .split('&')
        .filter(|kv| !kv.is_empty())
        .chain(passed)
        .collect();
    let mut url = if params.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", params.join("&"))
    };
    if let Some(s) = sign {
        // `auth::sign_url` reads rtmp:// URLs; the signature does not cover the scheme.
        let tls = url.starts_with("rtmps://");
        let plain = if tls {
            format!("rtmp://{}", &url["rtmps://".len()..])
        } else {
            url.clone()
        };
        let signed = crate::auth::sign_url(&plain, &s.key, now.saturating_add(s.validity_secs))
            .map_err(|e| format!("{template:?} cannot be signed: {e}"))?;
        url = if tls {
            format!("rtmps://{}", &signed["rtmp://".len()..])
        } else {
            signed
        };
    }
    let (endpoint, stream_key) = split(&url, template)?;
    Ok(Rendered {
        endpoint,
        stream_key,
        url,
    })
}

/// Query parameters whose values are secrets.
const SECRET_PARAMS: [&str; 5] = ["auth_key", "key", "token", "sign", "secret"];

/// The URL with the values of secret query parameters (`auth_key`, `token`, ...)
/// replaced by `REDACTED`, for logs, events and the API.
pub fn redact(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                format!("{k}=REDACTED")
            }
            _ => kv.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> StreamId {
        StreamId::new("cam.example.com", "live/sub", "cam1")
    }

    #[test]
    fn templates_are_checked() {
        check_template("rtmp://origin.example.com/{AppName}/{StreamName}").unwrap();
        check_template("rtmps://live-api-s.facebook.com:443/rtmp/{StreamName}").unwrap();
        check_template("rtmp://o/{Domain}/{AppName}/{StreamName}?x=1").unwrap();
        for bad in [
            "http://o/live/{StreamName}",
            "rtmp://o/{StreamName}",
            "rtmp://o/live/",
            "rtmp://o/live/{Stream}",
            "rtmp://o/live/{StreamName",
            "rtmp://o/live/s}",
            "rtmp:///live/x",
            "rtmp://o:port/live/x",
            "rtmp://o/live/a b",
            "rtmp://o/live/x#frag",
        ] {
            assert!(check_template(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn render_splits_app_and_key_and_passes_the_query_without_auth_key() {
        // An origin's own signature passes through a tap that did not check it.
        let kept = render(
            "rtmp://origin/{AppName}/{StreamName}",
            &id(),
            Some("auth_key=1-0-0-x"),
            None,
            0,
        )
        .unwrap();
        assert_eq!(kept.stream_key, "cam1?auth_key=1-0-0-x");
        assert_eq!(
            without_auth_key("token=abc&auth_key=1-0-0-x&b"),
            "token=abc&b"
        );
        let r = render(
            "rtmp://origin:1936/{AppName}/{StreamName}?fixed=1",
            &id(),
            Some(&without_auth_key("token=abc&auth_key=1-0-0-x")),
            None,
            0,
        )
        .unwrap();
        assert_eq!(r.endpoint.host, "origin");
        assert_eq!(r.endpoint.port, 1936);
        assert_eq!(r.endpoint.app, "live/sub");
        assert_eq!(r.stream_key, "cam1?fixed=1&token=abc");
        assert_eq!(r.url, "rtmp://origin:1936/live/sub/cam1?fixed=1&token=abc");
        let r = render("rtmps://o/app/{StreamName}", &id(), None, None, 0).unwrap();
        assert!(r.endpoint.tls);
        assert_eq!((r.endpoint.port, r.stream_key.as_str()), (443, "cam1"));
    }

    #[test]
    fn signed_urls_pass_the_origin_check_and_keep_their_scheme() {
        let sign = Signing {
            key: "k1".into(),
            validity_secs: 1800,
        };
        let now = 1_700_000_000;
        for template in [
            "rtmp://o/{AppName}/{StreamName}",
            "rtmps://o/{AppName}/{StreamName}",
        ] {
            let r = render(template, &id(), Some("a=b"), Some(&sign), now).unwrap();
            assert_eq!(
                r.url.starts_with("rtmps://"),
                template.starts_with("rtmps://")
            );
            let (stream, query) = names::split_query(&r.stream_key);
            assert_eq!(stream, "cam1");
            assert!(query.starts_with("a=b&auth_key=1700001800-0-0-"), "{query}");
            let entry = crate::auth::AuthSettings {
                domain: "*".into(),
                primary_key: "k1".into(),
                secondary_key: None,
                validity_secs: 60,
            };
            crate::auth::check(&entry, "live/sub", "cam1", query, None, now).unwrap();
            assert!(crate::auth::check(&entry, "live/sub", "cam2", query, None, now).is_err());
        }
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact("rtmp://o/live/s?a=1&auth_key=123-0-0-abc&Token=t"),
            "rtmp://o/live/s?a=1&auth_key=REDACTED&Token=REDACTED"
        );
        assert_eq!(redact("rtmp://o/live/s"), "rtmp://o/live/s");
    }
}
