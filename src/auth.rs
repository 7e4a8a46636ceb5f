//! Publish authentication by URL signing (compatible with Alibaba Cloud's "type A"):
//! `auth_key={timestamp}-{rand}-{uid}-{md5hash}` where md5hash is the lower-case hex
//! MD5 of `"{URI}-{timestamp}-{rand}-{uid}-{key}"`, URI = `/{AppName}/{StreamName}`.
//! The link is valid until `timestamp + validity_secs`. Checked once, at publish.
//!
//! Which domains need a signature is the `AuthPolicy`: with no `[[auth]]` entry
//! publishing is open; once there is one, a domain needs its own entry or the `*`
//! entry, and a domain covered by neither is refused, unless the `*` entry says
//! `allow_unsigned = true`. The domain comes from the client (tcUrl host or `vhost=`),
//! so an unlisted one must never mean "unchecked".

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
    /// Only on the `*` entry, which then has no keys: publishes to a domain without
    /// its own entry need no signature. Default false (such publishes are refused).
    #[serde(default)]
    pub allow_unsigned: bool,
    /// The key players of this domain sign with (or its environment variable); without
    /// one, players sign with the publish keys. Not on an `allow_unsigned` entry.
    #[serde(default)]
    pub play_key: Option<String>,
    #[serde(default)]
    pub play_key_env: Option<String>,
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

/// The validated `[[auth]]` entries: which publishes need which signature.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthPolicy {
    /// Entries with keys, at most one per domain (`*` included).
    pub entries: Vec<AuthSettings>,
    /// The `*` entry says `allow_unsigned = true`.
    pub allow_unsigned: bool,
    /// Entries whose players sign with their own `play_key` (that key as the primary).
    pub play_entries: Vec<AuthSettings>,
}

/// What a publish to a domain must show.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Requirement<'a> {
    /// Nothing: no `[[auth]]` entry at all, or the domain falls to an
    /// `allow_unsigned` `*` entry.
    None,
    /// A signature checked against this entry (the domain's own, else `*`).
    Signature(&'a AuthSettings),
    /// `[[auth]]` entries exist but none covers the domain: refused.
    Refused,
}

impl AuthPolicy {
    /// What a publish to `domain` (normalised) must show.
    pub fn requirement(&self, domain: &str) -> Requirement<'_> {
        let own = self.entries.iter().find(|a| a.domain == domain);
        match own.or_else(|| self.entries.iter().find(|a| a.domain == ANY)) {
            Some(entry) => Requirement::Signature(entry),
            None if self.allow_unsigned || self.entries.is_empty() => Requirement::None,
            None => Requirement::Refused,
        }
    }

    /// What a player of `domain` must show: as a publisher, but signed with the
    /// entry's `play_key` when it has one.
    pub fn play_requirement(&self, domain: &str) -> Requirement<'_> {
        match self.requirement(domain) {
            Requirement::Signature(entry) => Requirement::Signature(
                self.play_entries
                    .iter()
                    .find(|p| p.domain == entry.domain)
                    .unwrap_or(entry),
            ),
            other => other,
        }
    }
}

/// Checks every `[[auth]]` entry (`at` is the key of the list, `auth`): one entry per
/// domain, `allow_unsigned` only on a key-less `*` entry.
pub fn validate_all(all: &[AuthConfig], at: &str) -> Result<AuthPolicy, Invalid> {
    let mut policy = AuthPolicy::default();
    let mut domains = std::collections::HashSet::new();
    for (i, a) in all.iter().enumerate() {
        let at = format!("{at}[{i}]");
        if !domains.insert(a.domain.as_str()) {
            return Err(invalid(
                format!("{at}.domain"),
                format!("{:?} has more than one [[auth]] entry", a.domain),
            ));
        }
        match validate(a, &at)? {
            Some(entry) => {
                if let Some(play) = play_key(a, &at)? {
                    policy.play_entries.push(AuthSettings {
                        primary_key: play,
                        secondary_key: None,
                        ..entry.clone()
                    });
                }
                policy.entries.push(entry);
            }
            None => policy.allow_unsigned = true,
        }
    }
    Ok(policy)
}

/// An entry's `play_key` (direct or from its environment variable), checked.
fn play_key(a: &AuthConfig, at: &str) -> Result<Option<String>, Invalid> {
    let key = |k: &str| format!("{at}.{k}");
    let k = match (&a.play_key, &a.play_key_env) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                key("play_key"),
                "set play_key or play_key_env, not both",
            ))
        }
        (Some(k), None) => k.clone(),
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            invalid(
                key("play_key_env"),
                format!("environment variable {var:?} is not set"),
            )
        })?,
        (None, None) => return Ok(None),
    };
    if k.len() < 8 {
        return Err(invalid(key("play_key"), "must be at least 8 characters"));
    }
    Ok(Some(k))
}

/// Checks one `[[auth]]` entry (`at` prefixes error keys) and resolves its keys; None
/// for the `*` entry with `allow_unsigned = true`.
pub fn validate(a: &AuthConfig, at: &str) -> Result<Option<AuthSettings>, Invalid> {
    let key = |k: &str| format!("{at}.{k}");
    if a.domain != ANY {
        let d = names::normalize_domain(&a.domain)
            .map_err(|e| invalid(key("domain"), format!("{:?} {e}", a.domain)))?;
        if d != a.domain {
            return Err(invalid(key("domain"), format!("must be written as {d:?}")));
        }
    }
    if a.allow_unsigned {
        if a.domain != ANY {
            return Err(invalid(
                key("allow_unsigned"),
                format!(
                    "only the \"*\" entry may allow unsigned publishes; the entry of {:?} always requires a signature",
                    a.domain
                ),
            ));
        }
        for (name, v) in [
            ("primary_key", &a.primary_key),
            ("primary_key_env", &a.primary_key_env),
            ("secondary_key", &a.secondary_key),
            ("secondary_key_env", &a.secondary_key_env),
            ("play_key", &a.play_key),
            ("play_key_env", &a.play_key_env),
        ] {
            if v.is_some() {
                return Err(invalid(
                    key(name),
                    "is not used with allow_unsigned = true (unlisted domains publish unsigned); remove one of them",
                ));
            }
        }
        return Ok(None);
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
    Ok(Some(AuthSettings {
        domain: a.domain.clone(),
        primary_key: primary,
        secondary_key: secondary,
        validity_secs: a.validity_secs,
    }))
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

    fn config(domain: &str) -> AuthConfig {
        AuthConfig {
            domain: domain.into(),
            primary_key: Some(format!("key-of-{domain}")),
            primary_key_env: None,
            secondary_key: None,
            secondary_key_env: None,
            validity_secs: 60,
            allow_unsigned: false,
            play_key: None,
            play_key_env: None,
        }
    }

    #[test]
    fn players_sign_with_the_play_key_else_the_publish_keys() {
        let with_play = AuthConfig {
            play_key: Some("play-key-of-a".into()),
            ..config("a.example")
        };
        let p = validate_all(&[with_play, config(ANY)], "auth").unwrap();
        let key = |r: Requirement<'_>| match r {
            Requirement::Signature(e) => e.primary_key.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(key(p.play_requirement("a.example")), "play-key-of-a");
        assert_eq!(key(p.requirement("a.example")), "key-of-a.example");
        assert_eq!(key(p.play_requirement("b.example")), "key-of-*");
        let short = AuthConfig {
            play_key: Some("short".into()),
            ..config("a.example")
        };
        assert_eq!(
            validate_all(&[short], "auth").unwrap_err().key,
            "auth[0].play_key"
        );
        let p = validate_all(&[config("a.example")], "auth").unwrap();
        assert_eq!(p.play_requirement("other.example"), Requirement::Refused);
    }

    fn unsigned_any() -> AuthConfig {
        AuthConfig {
            primary_key: None,
            allow_unsigned: true,
            ..config(ANY)
        }
    }

    fn required_key(p: &AuthPolicy, domain: &str) -> Option<String> {
        match p.requirement(domain) {
            Requirement::Signature(e) => Some(e.primary_key.clone()),
            Requirement::None => None,
            Requirement::Refused => Some("refused".into()),
        }
    }

    #[test]
    fn requirement_prefers_the_domain_then_star() {
        let p = validate_all(&[config(ANY), config("a.com")], "auth").unwrap();
        assert_eq!(required_key(&p, "a.com").as_deref(), Some("key-of-a.com"));
        assert_eq!(required_key(&p, "b.com").as_deref(), Some("key-of-*"));
    }

    #[test]
    fn no_entries_means_open() {
        let p = validate_all(&[], "auth").unwrap();
        assert_eq!(p.requirement("any.example"), Requirement::None);
    }

    #[test]
    fn an_unlisted_domain_is_refused_once_any_entry_exists() {
        // The domain is the client's choice: naming another one must not skip the check.
        let p = validate_all(&[config("a.example")], "auth").unwrap();
        assert!(matches!(
            p.requirement("a.example"),
            Requirement::Signature(_)
        ));
        assert_eq!(p.requirement("unlisted.example"), Requirement::Refused);
        assert_eq!(p.requirement("default"), Requirement::Refused);
    }

    #[test]
    fn allow_unsigned_opens_only_unlisted_domains() {
        let p = validate_all(&[config("a.example"), unsigned_any()], "auth").unwrap();
        assert!(p.allow_unsigned);
        assert_eq!(p.entries.len(), 1);
        assert_eq!(
            required_key(&p, "a.example").as_deref(),
            Some("key-of-a.example")
        );
        assert_eq!(p.requirement("unlisted.example"), Requirement::None);
    }

    #[test]
    fn allow_unsigned_is_validated() {
        let named = AuthConfig {
            allow_unsigned: true,
            ..config("a.example")
        };
        let e = validate_all(&[named], "auth").unwrap_err();
        assert_eq!(e.key, "auth[0].allow_unsigned");
        let with_key = AuthConfig {
            allow_unsigned: true,
            ..config(ANY)
        };
        let e = validate_all(&[config("a.example"), with_key], "auth").unwrap_err();
        assert_eq!(e.key, "auth[1].primary_key");
        let e = validate_all(&[unsigned_any(), unsigned_any()], "auth").unwrap_err();
        assert_eq!(e.key, "auth[1].domain");
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
