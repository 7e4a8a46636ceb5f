//! Publish authentication by URL signing (compatible with Alibaba Cloud's "type A"):
//! `auth_key={timestamp}-{rand}-{uid}-{md5hash}` where md5hash is the lower-case hex
//! MD5 of `"{URI}-{timestamp}-{rand}-{uid}-{key}"`, URI = `/{AppName}/{StreamName}`.
//! The link is valid until `timestamp + validity_secs`. Checked once, at publish.

use md5::{Digest, Md5};
use serde::Deserialize;

use crate::error::{invalid, Invalid};
use crate::names::{self, ANY};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A host name, or "*" for every domain without its own entry.
    pub domain: String,
    /// The signing key, or the name of an environment variable holding it.
    pub primary_key: Option<String>,
    pub primary_key_env: Option<String>,
    /// A second accepted key, for rotation (or its environment variable).
    pub secondary_key: Option<String>,
    pub secondary_key_env: Option<String>,
    /// Seconds a signed URL stays valid after its timestamp. Default 1800.
    #[serde(default = "default_validity_secs")]
    pub validity_secs: u64,
}

fn default_validity_secs() -> u64 {
    1800
}

/// A validated `[[auth]]` entry with its keys resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSettings {
    pub domain: String,
    pub primary_key: String,
    pub secondary_key: Option<String>,
    pub validity_secs: u64,
}

/// Checks one `[[auth]]` entry (`at` prefixes error keys) and resolves its keys.
pub fn validate(a: &AuthConfig, at: &str) -> Result<AuthSettings, Invalid> {
    let key = |k: &str| format!("{at}.{k}");
    if a.domain != ANY {
        let d = names::normalize_domain(&a.domain)
            .map_err(|e| invalid(key("domain"), format!("{:?} {e}", a.domain)))?;
        if d != a.domain {
            return Err(invalid(key("domain"), format!("must be written as {d:?}")));
        }
    }
    let resolve = |name: &str,
                   direct: &Option<String>,
                   env: &Option<String>|
     -> Result<Option<String>, Invalid> {
        match (direct, env) {
            (Some(_), Some(_)) => Err(invalid(
                key(name),
                format!("set {name} or {name}_env, not both"),
            )),
            (Some(k), None) => Ok(Some(k.clone())),
            (None, Some(var)) => std::env::var(var).map(Some).map_err(|_| {
                invalid(
                    key(&format!("{name}_env")),
                    format!("environment variable {var:?} is not set"),
                )
            }),
            (None, None) => Ok(None),
        }
    };
    let primary = resolve("primary_key", &a.primary_key, &a.primary_key_env)?
        .ok_or_else(|| invalid(key("primary_key"), "is required (or primary_key_env)"))?;
    let secondary = resolve("secondary_key", &a.secondary_key, &a.secondary_key_env)?;
    for (name, k) in [
        ("primary_key", Some(&primary)),
        ("secondary_key", secondary.as_ref()),
    ] {
        if let Some(k) = k {
            if k.len() < 8 {
                return Err(invalid(key(name), "must be at least 8 characters"));
            }
        }
    }
    if !(1..=31_536_000).contains(&a.validity_secs) {
        return Err(invalid(key("validity_secs"), "must be 1..=31536000"));
    }
    Ok(AuthSettings {
        domain: a.domain.clone(),
        primary_key: primary,
        secondary_key: secondary,
        validity_secs: a.validity_secs,
    })
}

/// Why a signature was refused. Never carries a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no auth_key parameter")]
    Missing,
    #[error("malformed auth_key: {0}")]
    Malformed(&'static str),
    #[error("signature expired at {expired_at} (now {now})")]
    Expired { expired_at: u64, now: u64 },
    #[error("signature does not match")]
    Mismatch,
}

/// The parts of an `auth_key` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthKey<'a> {
    pub timestamp: &'a str,
    pub rand: &'a str,
    pub uid: &'a str,
    pub hash: &'a str,
}

/// Longest `timestamp` accepted, in decimal digits.
const MAX_TIMESTAMP_DIGITS: usize = 12;

/// Parses `timestamp-rand-uid-md5hash`.
pub fn parse_auth_key(v: &str) -> Result<AuthKey<'_>, AuthError> {
    let mut it = v.split('-');
    let (Some(timestamp), Some(rand), Some(uid), Some(hash), None) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(AuthError::Malformed("expected timestamp-rand-uid-md5hash"));
    };
    if timestamp.is_empty()
        || timestamp.len() > MAX_TIMESTAMP_DIGITS
        || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(AuthError::Malformed(
            "timestamp must be decimal Unix seconds",
        ));
    }
    if !(rand == "0" || (rand.len() == 32 && rand.bytes().all(|b| b.is_ascii_hexdigit()))) {
        return Err(AuthError::Malformed("rand must be 0 or 32 hex digits"));
    }
    if uid.is_empty() || uid.len() > 20 || !uid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::Malformed("uid must be decimal (usually 0)"));
    }
    if hash.len() != 32 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::Malformed("md5hash must be 32 hex digits"));
    }
    Ok(AuthKey {
        timestamp,
        rand,
        uid,
        hash,
    })
}

/// Lower-case hex MD5 of `"{uri}-{timestamp}-{rand}-{uid}-{key}"`.
pub fn sign(uri: &str, timestamp: &str, rand: &str, uid: &str, key: &str) -> String {
    let digest = Md5::digest(format!("{uri}-{timestamp}-{rand}-{uid}-{key}").as_bytes());
    crate::util::hex(&digest)
}

/// The `[[auth]]` entry for a domain: its own, else `*`, else none (no auth).
pub fn entry_for<'a>(entries: &'a [AuthSettings], domain: &str) -> Option<&'a AuthSettings> {
    entries
        .iter()
        .find(|a| a.domain == domain)
        .or_else(|| entries.iter().find(|a| a.domain == ANY))
}

/// Checks a publish: `auth_key` from the stream's query, else the tcUrl's query.
pub fn check(
    entry: &AuthSettings,
    app: &str,
    stream: &str,
    stream_query: &str,
    tc_url: Option<&str>,
    now: u64,
) -> Result<(), AuthError> {
    let tc_query = tc_url
        .and_then(|u| u.split_once('?'))
        .map_or("", |(_, q)| q);
    let value = names::query_param(stream_query, "auth_key")
        .or_else(|| names::query_param(tc_query, "auth_key"))
        .ok_or(AuthError::Missing)?;
    let k = parse_auth_key(value)?;
    let ts: u64 = k
        .timestamp
        .parse()
        .map_err(|_| AuthError::Malformed("timestamp out of range"))?;
    let expired_at = ts.saturating_add(entry.validity_secs);
    if now > expired_at {
        return Err(AuthError::Expired { expired_at, now });
    }
    let uri = format!("/{app}/{stream}");
    let hash = k.hash.to_ascii_lowercase();
    let keys = std::iter::once(&entry.primary_key).chain(entry.secondary_key.as_ref());
    let mut ok = false;
    for key in keys {
        // Evaluate every key (no early exit) so timing does not tell which matched.
        ok |= crate::util::constant_time_eq(
            sign(&uri, k.timestamp, k.rand, k.uid, key).as_bytes(),
            hash.as_bytes(),
        );
    }
    if ok {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// Adds `auth_key` to an RTMP URL `rtmp://host[:port]/app/stream[?query]`, signed
/// with `key` at `timestamp`, rand 0, uid 0.
pub fn sign_url(url: &str, key: &str, timestamp: u64) -> Result<String, String> {
    let rest = url
        .strip_prefix("rtmp://")
        .ok_or_else(|| format!("{url:?} is not an rtmp:// URL"))?;
    let (_, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("{url:?} has no /app/stream path"))?;
    let (path, query) = names::split_query(path);
    let (app, stream) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("{url:?} needs both an app and a stream name"))?;
    names::validate_app(app).map_err(|e| format!("app {app:?} {e}"))?;
    names::validate_stream(stream).map_err(|e| format!("stream {stream:?} {e}"))?;
    let ts = timestamp.to_string();
    // What `check` would refuse as malformed must not be signed.
    if ts.len() > MAX_TIMESTAMP_DIGITS {
        return Err(format!(
            "timestamp {ts} has more than {MAX_TIMESTAMP_DIGITS} digits"
        ));
    }
    let hash = sign(&format!("/{app}/{stream}"), &ts, "0", "0", key);
    // Re-signing a signed URL replaces its auth_key: `check` reads the first one.
    let query = query
        .split('&')
        .filter(|kv| kv.split_once('=').map_or(*kv, |(k, _)| k) != "auth_key")
        .collect::<Vec<_>>()
        .join("&");
    let sep = if query.is_empty() { "?" } else { "&" };
    let base = url.split_once('?').map_or(url, |(b, _)| b);
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    Ok(format!("{base}{q}{sep}auth_key={ts}-0-0-{hash}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(validity: u64) -> AuthSettings {
        AuthSettings {
            domain: "*".into(),
            primary_key: "primary-key-1".into(),
            secondary_key: Some("secondary-key-2".into()),
            validity_secs: validity,
        }
    }

    #[test]
    fn published_test_vector() {
        assert_eq!(
            sign("/live/test", "1641311904", "0", "0", "<input your key>"),
            "6ecce59d62eef5eab899a9be1dee4b3b"
        );
    }

    #[test]
    fn accepts_primary_and_secondary_and_refuses_the_rest() {
        let e = entry(1800);
        let ts = 1_700_000_000u64;
        for key in ["primary-key-1", "secondary-key-2"] {
            let h = sign("/live/cam", &ts.to_string(), "0", "0", key);
            let q = format!("auth_key={ts}-0-0-{h}");
            assert_eq!(check(&e, "live", "cam", &q, None, ts + 10), Ok(()));
            // Also from the tcUrl, and in upper case.
            let tc = format!("rtmp://h/live?auth_key={ts}-0-0-{}", h.to_uppercase());
            assert_eq!(check(&e, "live", "cam", "", Some(&tc), ts), Ok(()));
            // Another stream: mismatch.
            assert_eq!(
                check(&e, "live", "cam2", &q, None, ts),
                Err(AuthError::Mismatch)
            );
            // Expired.
            assert_eq!(
                check(&e, "live", "cam", &q, None, ts + 1801),
                Err(AuthError::Expired {
                    expired_at: ts + 1800,
                    now: ts + 1801
                })
            );
        }
        let h = sign("/live/cam", &ts.to_string(), "0", "0", "wrong-key-000");
        let q = format!("auth_key={ts}-0-0-{h}");
        assert_eq!(
            check(&e, "live", "cam", &q, None, ts),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            check(&e, "live", "cam", "x=1", None, ts),
            Err(AuthError::Missing)
        );
        // The timestamp is hashed exactly as received (leading zero changes the hash).
        let q = format!(
            "auth_key=0{ts}-0-0-{}",
            sign("/live/cam", &ts.to_string(), "0", "0", "primary-key-1")
        );
        assert_eq!(
            check(&e, "live", "cam", &q, None, ts),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn malformed_keys() {
        for bad in [
            "",
            "1-0-0",
            "x-0-0-6ecce59d62eef5eab899a9be1dee4b3b",
            "1-zz-0-6ecce59d62eef5eab899a9be1dee4b3b",
            "1-0-0-6ecce",
            "1-0-0-6ecce59d62eef5eab899a9be1dee4b3b-9",
            "1-0-a-6ecce59d62eef5eab899a9be1dee4b3b",
        ] {
            assert!(
                matches!(parse_auth_key(bad), Err(AuthError::Malformed(_))),
                "{bad:?}"
            );
        }
        let ok = parse_auth_key(
            "1641311904-0123456789abcdef0123456789abcdef-0-6ecce59d62eef5eab899a9be1dee4b3b",
        )
        .unwrap();
        assert_eq!(ok.uid, "0");
    }

    #[test]
    fn entry_lookup_prefers_the_domain() {
        let mut a = entry(1);
        a.domain = "a.com".into();
        let entries = vec![entry(2), a];
        assert_eq!(entry_for(&entries, "a.com").unwrap().validity_secs, 1);
        assert_eq!(entry_for(&entries, "b.com").unwrap().validity_secs, 2);
        assert!(entry_for(&entries[1..], "b.com").is_none());
    }

    #[test]
    fn signs_urls() {
        let u = sign_url("rtmp://h:1935/live/cam", "k", 1641311904).unwrap();
        let h = sign("/live/cam", "1641311904", "0", "0", "k");
        assert_eq!(
            u,
            format!("rtmp://h:1935/live/cam?auth_key=1641311904-0-0-{h}")
        );
        let u = sign_url("rtmp://h/live/cam?vhost=a.com", "k", 5).unwrap();
        assert!(u.starts_with("rtmp://h/live/cam?vhost=a.com&auth_key=5-0-0-"));
        assert!(sign_url("http://h/live/cam", "k", 1).is_err());
        assert!(sign_url("rtmp://h/cam", "k", 1).is_err());
        assert!(sign_url("rtmp://h/live/../x", "k", 1).is_err());
    }

    #[test]
    fn signed_urls_never_carry_a_timestamp_check_refuses() {
        // Found by the `auth_key` fuzz target: a 13-digit timestamp was signed, and the
        // publish it signed was then refused as malformed.
        let e = AuthSettings {
            domain: "*".into(),
            primary_key: "k".into(),
            secondary_key: None,
            validity_secs: 10,
        };
        let ts = 999_999_999_999;
        let u = sign_url("rtmp://h/live/cam", "k", ts).unwrap();
        let (_, query) = u.split_once('?').unwrap();
        assert_eq!(check(&e, "live", "cam", query, None, ts), Ok(()));
        assert!(sign_url("rtmp://h/live/cam", "k", ts + 1).is_err());
        assert!(sign_url("rtmp://h/live/cam", "k", u64::MAX).is_err());
    }

    #[test]
    fn re_signing_replaces_the_auth_key() {
        // Found by the `auth_key` fuzz target: the old auth_key stayed first in the
        // query, so `check` read it and refused the re-signed URL.
        let e = AuthSettings {
            domain: "*".into(),
            primary_key: "new".into(),
            secondary_key: None,
            validity_secs: 10,
        };
        let old = sign_url("rtmp://h/live/cam?vhost=a.com", "old", 5).unwrap();
        let u = sign_url(&old, "new", 7).unwrap();
        let (_, query) = u.split_once('?').unwrap();
        assert!(query.starts_with("vhost=a.com&auth_key=7-0-0-"), "{u}");
        assert_eq!(query.matches("auth_key").count(), 1, "{u}");
        assert_eq!(check(&e, "live", "cam", query, None, 7), Ok(()));
        let u = sign_url("rtmp://h/live/cam?auth_key=x", "new", 7).unwrap();
        assert!(u.starts_with("rtmp://h/live/cam?auth_key=7-0-0-"), "{u}");
    }
}
