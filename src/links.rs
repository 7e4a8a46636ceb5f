//! Signed image links: expiring, path-bound URLs that let a public page show a
//! stream's pictures without the admin token (the `/img/…` routes of `api::images`).
//!
//! A link is `PATH?exp=EXP&sig=SIG` where
//!
//! - `PATH` is the URL path exactly as it is requested (percent-encoding included, an
//!   app's `/` written `%2F`), starting with `/img/`;
//! - `EXP` is the Unix time (seconds, decimal, no sign or leading zero) after which the
//!   link is refused: it is valid while `now <= EXP`;
//! - `SIG` is the lower-case hex of HMAC-SHA256(key, `PATH` + `"\n"` + `EXP`), the
//!   canonical string (a path never holds a control character, so it is unambiguous).
//!
//! Storyboard links (`/img/…/storyboard.vtt` and `storyboard.jpg`) also bind their
//! parameters: their `PATH` is the path, `?`, and the query they were issued with
//! (`start_time=…&end_time=…&tile=…&columns=…`, in the order given); the link is then
//! `PATH&exp=EXP&sig=SIG`, and a request is checked against its own query without its
//! `exp` and `sig` pairs ([`signed_part`]). Other links bind the path only (a
//! `latest.jpg` link takes any `width`, `height`, `fit` and `quality`).
//!
//! Verification recomputes the HMAC and compares in constant time
//! (`util::constant_time_eq`). Nothing here does I/O or reads a clock: the caller
//! passes `now`, so that expiry is tested without waiting.

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::error::{invalid, Invalid};

/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;
/// Every link path starts with this.
pub const PREFIX: &str = "/img/";
/// The longest path signed (object keys are shorter than 256 bytes).
pub const MAX_PATH_LEN: usize = 1024;

/// The query parameters a storyboard link may carry (and binds).
pub const STORYBOARD_PARAMS: &[&str] = &["start_time", "end_time", "tile", "columns"];

/// `[links]`: the key that signs image links and their lifetimes.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LinksConfig {
    /// The signing key, at least 32 bytes. Default: none (then `key_env`).
    pub key: Option<String>,
    /// The environment variable holding the key, used when `key` is not set.
    /// Default: none.
    pub key_env: Option<String>,
    /// Lifetime of a link when none is asked for. Default 3600.
    pub default_ttl_secs: Option<u64>,
    /// The longest lifetime a link may be given. Default 604800 (7 days).
    pub max_ttl_secs: Option<u64>,
}

/// Default lifetime of a link.
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// Default longest lifetime of a link.
pub const DEFAULT_MAX_TTL_SECS: u64 = 7 * 86_400;

impl LinksConfig {
    /// Checks the section; `env` looks an environment variable up (the process
    /// environment in `Config::validate`).
    pub fn validate(&self, env: impl Fn(&str) -> Option<String>) -> Result<Signer, Invalid> {
        let key = match (&self.key, &self.key_env) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "links.key",
                    "set either links.key or links.key_env, not both",
                ))
            }
            (Some(k), None) => k.clone(),
            (None, Some(var)) => env(var).ok_or_else(|| {
                invalid(
                    "links.key_env",
                    format!("the environment variable {var:?} is not set"),
                )
            })?,
            (None, None) => {
                return Err(invalid(
                    "links.key",
                    "is required in [links] (or links.key_env)",
                ))
            }
        };
        let key_name = if self.key.is_some() {
            "links.key"
        } else {
            "links.key_env"
        };
        if key.len() < MIN_KEY_BYTES {
            return Err(invalid(
                key_name,
                format!(
                    "the key must be at least {MIN_KEY_BYTES} bytes, got {}",
                    key.len()
                ),
            ));
        }
        let max_ttl = self.max_ttl_secs.unwrap_or(DEFAULT_MAX_TTL_SECS);
        if !(1..=366 * 86_400).contains(&max_ttl) {
            return Err(invalid(
                "links.max_ttl_secs",
                "must be 1..=31622400 (366 days)",
            ));
        }
        let default_ttl = self.default_ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
        if !(1..=max_ttl).contains(&default_ttl) {
            return Err(invalid(
                "links.default_ttl_secs",
                format!("must be 1..=links.max_ttl_secs ({max_ttl})"),
            ));
        }
        Ok(Signer {
            key: key.into_bytes(),
            default_ttl,
            max_ttl,
        })
    }
}

/// Why a link was refused or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link has no {0} parameter")]
    Missing(&'static str),
    #[error("the link's {0} parameter is malformed")]
    Malformed(&'static str),
    #[error("the link expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
    #[error("the link's signature is not valid for this path")]
    BadSignature,
    #[error("path {0:?} is not an image link path (/img/DOMAIN/APP/STREAM/latest.jpg (or latest.webp), /img/DOMAIN/APP/STREAM/object/KEY, or /img/DOMAIN/APP/STREAM/storyboard.vtt?start_time=…&end_time=… (or storyboard.jpg))")]
    BadPath(String),
    #[error("ttl_secs must be 1..={max}, got {got}")]
    BadTtl { got: u64, max: u64 },
}

/// Signs and verifies links with the configured key. Its `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Signer {
    key: Vec<u8>,
    /// Lifetime of a link when none is asked for.
    pub default_ttl: u64,
    /// The longest lifetime a link may be given.
    pub max_ttl: u64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key", &"<redacted>")
            .field("default_ttl", &self.default_ttl)
            .field("max_ttl", &self.max_ttl)
            .finish()
    }
}

/// Checks that `path` is one of the image link paths (a storyboard path with its
/// query: only [`STORYBOARD_PARAMS`], each at most once, `start_time` and `end_time`
/// required).
pub fn check_path(path: &str) -> Result<(), LinkError> {
    let bad = || LinkError::BadPath(path.chars().take(MAX_PATH_LEN).collect());
    if path.len() > MAX_PATH_LEN
        || path
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '#' || c == '\\')
    {
        return Err(bad());
    }
    let (path_only, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let rest = path_only.strip_prefix(PREFIX).ok_or_else(bad)?;
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(bad());
    }
    match (segs.as_slice(), query) {
        ([_, _, _, "latest.jpg" | "latest.webp"], None) => Ok(()),
        ([_, _, _, "object", _, ..], None) => Ok(()),
        ([_, _, _, "storyboard.vtt" | "storyboard.jpg"], Some(q)) => {
            let keys: Vec<&str> = q
                .split('&')
                .map(|pair| pair.split_once('=').map_or(pair, |(k, _)| k))
                .collect();
            let known = keys.iter().all(|k| STORYBOARD_PARAMS.contains(k));
            let once = keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k));
            let given = |k: &str| {
                q.split('&').any(|pair| {
                    pair.split_once('=')
                        .is_some_and(|(a, v)| a == k && !v.is_empty())
                })
            };
            if known && once && given("start_time") && given("end_time") && !q.contains('?') {
                Ok(())
            } else {
                Err(bad())
            }
        }
        _ => Err(bad()),
    }
}

/// Whether a link path names a storyboard (its query is then part of what is signed).
fn is_storyboard(path: &str) -> bool {
    path.ends_with("/storyboard.vtt") || path.ends_with("/storyboard.jpg")
}

/// What a request's signature covers: its path, and for storyboards `?` and its
/// query without the `exp` and `sig` pairs (in the order sent).
pub fn signed_part(path: &str, query: Option<&str>) -> String {
    if !is_storyboard(path) {
        return path.to_string();
    }
    let rest: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && k != "exp" && k != "sig"
        })
        .collect();
    if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", rest.join("&"))
    }
}

/// What a link path names, its segments percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePath {
    pub domain: String,
    pub app: String,
    pub stream: String,
    /// `None` for `latest.jpg` and storyboards, else the object key.
    pub key: Option<String>,
    /// `storyboard.vtt` or `storyboard.jpg` for a storyboard link.
    pub storyboard: Option<String>,
}

/// Decodes `%XX` escapes; `None` for a broken escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks `path` (as [`check_path`]) and says what it names.
pub fn parse_path(path: &str) -> Result<ImagePath, LinkError> {
    check_path(path)?;
    let bad = || LinkError::BadPath(path.to_string());
    let rest = &path[PREFIX.len()..];
    let rest = rest.split_once('?').map_or(rest, |(p, _)| p);
    let mut segs = rest.splitn(5, '/');
    let mut next = || segs.next().and_then(percent_decode).ok_or_else(bad);
    let (domain, app, stream, last) = (next()?, next()?, next()?, next()?);
    let (key, storyboard) = match last.as_str() {
        "latest.jpg" | "latest.webp" => (None, None),
        "storyboard.vtt" | "storyboard.jpg" => (None, Some(last)),
        _ => (Some(next()?), None),
    };
    Ok(ImagePath {
        domain,
        app,
        stream,
        key,
        storyboard,
    })
}

impl Signer {
    /// A signer with this key (tests and tools; the node builds it from `[links]`).
    pub fn new(key: &[u8], default_ttl: u64, max_ttl: u64) -> Signer {
        Signer {
            key: key.to_vec(),
            default_ttl,
            max_ttl,
        }
    }

    /// The signature of `path` expiring at `exp` (lower-case hex).
    pub fn signature(&self, path: &str, exp: u64) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(exp.to_string().as_bytes());
        crate::util::hex(&mac.finalize().into_bytes())
    }

    /// `path?exp=EXP&sig=SIG` (`path&exp=…` when `path` has a query), without
    /// checking the path (tests use it to make expired or odd links).
    pub fn sign_at(&self, path: &str, exp: u64) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{path}{sep}exp={exp}&sig={}", self.signature(path, exp))
    }

    /// A link to `path` valid for `ttl` seconds (the default when `None`) from `now`.
    pub fn issue(&self, path: &str, ttl: Option<u64>, now: u64) -> Result<String, LinkError> {
        check_path(path)?;
        let ttl = ttl.unwrap_or(self.default_ttl);
        if !(1..=self.max_ttl).contains(&ttl) {
            return Err(LinkError::BadTtl {
                got: ttl,
                max: self.max_ttl,
            });
        }
        Ok(self.sign_at(path, now.saturating_add(ttl)))
    }

    /// Verifies the `exp` and `sig` query values of a request for `path` at `now`.
    pub fn verify(
        &self,
        path: &str,
        exp: Option<&str>,
        sig: Option<&str>,
        now: u64,
    ) -> Result<(), LinkError> {
        let exp_s = exp.ok_or(LinkError::Missing("exp"))?;
        let sig = sig.ok_or(LinkError::Missing("sig"))?;
        let canonical = !exp_s.is_empty()
            && exp_s.len() <= 20
            && exp_s.bytes().all(|b| b.is_ascii_digit())
            && (exp_s == "0" || !exp_s.starts_with('0'));
        let exp = exp_s
            .parse::<u64>()
            .ok()
            .filter(|_| canonical)
            .ok_or(LinkError::Malformed("exp"))?;
        if sig.len() != 64 {
            return Err(LinkError::Malformed("sig"));
        }
        let want = self.signature(path, exp);
        if !crate::util::constant_time_eq(want.as_bytes(), sig.as_bytes()) {
            return Err(LinkError::BadSignature);
        }
        if now > exp {
            return Err(LinkError::Expired { exp, now });
        }
        Ok(())
    }
}

/// The `exp` and `sig` values of a query string (the first of each).
pub fn query_params(query: Option<&str>) -> (Option<&str>, Option<&str>) {
    let (mut exp, mut sig) = (None, None);
    for pair in query.unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("exp", v)) if exp.is_none() => exp = Some(v),
            Some(("sig", v)) if sig.is_none() => sig = Some(v),
            _ => {}
        }
    }
    (exp, sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const PATH: &str = "/img/__defaultVhost__/live/cam1/latest.jpg";

    fn signer() -> Signer {
        Signer::new(KEY, 3600, 7 * 86_400)
    }

    fn parts(link: &str) -> (String, String, String) {
        let (path, q) = link.split_once('?').unwrap();
        let (exp, sig) = query_params(Some(q));
        (path.into(), exp.unwrap().into(), sig.unwrap().into())
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA256(KEY, "/img/__defaultVhost__/live/cam1/latest.jpg\n1700000000"),
        // computed independently with `openssl dgst -sha256 -hmac`.
        assert_eq!(
            signer().sign_at(PATH, 1_700_000_000),
            format!(
                "{PATH}?exp=1700000000&sig=\
                 02eeade016d51c48c1a3bd20a061ea1ca373678119f32d9803dbedd48d97ff86"
            )
        );
    }

    #[test]
    fn expiry_boundary() {
        let s = signer();
        let link = s.issue(PATH, Some(60), 1000).unwrap();
        let (p, exp, sig) = parts(&link);
        assert_eq!(exp, "1060");
        assert_eq!(s.verify(&p, Some(&exp), Some(&sig), 1000), Ok(()));
        assert_eq!(s.verify(&p, Some(&exp), Some(&sig), 1060), Ok(()));
        assert_eq!(
            s.verify(&p, Some(&exp), Some(&sig), 1061),
            Err(LinkError::Expired {
                exp: 1060,
                now: 1061
            })
        );
    }

    #[test]
    fn tampering_is_refused() {
        let s = signer();
        let (p, exp, sig) = parts(&s.issue(PATH, None, 1000).unwrap());
        assert_eq!(exp, "4600", "the default ttl");
        // Another exp with the old signature.
        assert_eq!(
            s.verify(&p, Some("9999999999"), Some(&sig), 1000),
            Err(LinkError::BadSignature)
        );
        // A leading zero would be another canonical string: refused outright.
        assert_eq!(
            s.verify(&p, Some("04600"), Some(&sig), 1000),
            Err(LinkError::Malformed("exp"))
        );
        // One hex digit changed.
        let mut bad = sig.clone().into_bytes();
        bad[10] = if bad[10] == b'0' { b'1' } else { b'0' };
        let bad = String::from_utf8(bad).unwrap();
        assert_eq!(
            s.verify(&p, Some(&exp), Some(&bad), 1000),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify(&p, Some(&exp), Some(&sig.to_uppercase()), 1000),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify(&p, Some(&exp), Some(&sig[..63]), 1000),
            Err(LinkError::Malformed("sig"))
        );
        assert_eq!(
            s.verify(&p, None, Some(&sig), 1000),
            Err(LinkError::Missing("exp"))
        );
        assert_eq!(
            s.verify(&p, Some(&exp), None, 1000),
            Err(LinkError::Missing("sig"))
        );
        // Another key.
        let other = Signer::new(b"another key, also 32 bytes long!!", 3600, 86_400);
        assert_eq!(
            other.verify(&p, Some(&exp), Some(&sig), 1000),
            Err(LinkError::BadSignature)
        );
    }

    #[test]
    fn links_are_bound_to_their_path() {
        let s = signer();
        let (_, exp, sig) = parts(&s.issue(PATH, None, 1000).unwrap());
        for other in [
            "/img/__defaultVhost__/live/cam2/latest.jpg",
            "/img/__defaultVhost__/live/cam1/object/live/cam1/1.jpg",
            "/img/__defaultVhost__/live/cam1/latest.jpg/",
        ] {
            assert_eq!(
                s.verify(other, Some(&exp), Some(&sig), 1000),
                Err(LinkError::BadSignature),
                "{other}"
            );
        }
    }

    #[test]
    fn storyboard_links_bind_their_query() {
        let s = signer();
        let path = "/img/d/live/cam/storyboard.vtt";
        let q = "start_time=2026-01-01T00:00:00Z&end_time=2026-01-01T01:00:00Z";
        let link = s.issue(&format!("{path}?{q}"), Some(60), 1000).unwrap();
        assert!(
            link.starts_with(&format!("{path}?{q}&exp=1060&sig=")),
            "{link}"
        );
        let query = link.split_once('?').unwrap().1;
        let (exp, sig) = query_params(Some(query));
        let signed = signed_part(path, Some(query));
        assert_eq!(signed, format!("{path}?{q}"));
        assert_eq!(s.verify(&signed, exp, sig, 1000), Ok(()));
        // Another range, or a parameter added, is another message.
        let wider = query.replace("01:00:00Z", "02:00:00Z");
        let signed = signed_part(path, Some(&wider));
        assert_eq!(
            s.verify(&signed, exp, sig, 1000),
            Err(LinkError::BadSignature)
        );
        let more = format!("{query}&columns=2");
        assert_eq!(
            s.verify(&signed_part(path, Some(&more)), exp, sig, 1000),
            Err(LinkError::BadSignature)
        );
        // latest.jpg binds its path only.
        assert_eq!(signed_part(PATH, Some("width=320&exp=1")), PATH);
    }

    #[test]
    fn paths_and_ttls_are_checked() {
        let s = signer();
        for ok in [
            PATH,
            "/img/d/live%2Fsub/cam/latest.jpg",
            "/img/d/live/cam/latest.webp",
            "/img/d/live/cam/object/live/cam/1700000000.jpg",
            "/img/d/live/cam/storyboard.vtt?start_time=a&end_time=b",
            "/img/d/live/cam/storyboard.jpg?start_time=a&end_time=b&tile=160x90&columns=5",
        ] {
            assert!(s.issue(ok, None, 0).is_ok(), "{ok}");
        }
        for bad in [
            "/api/v1/streams",
            "/img/d/live/cam/other.jpg",
            "/img/d/live/cam/object",
            "/img/d/live/cam/object/",
            "/img/d/live/cam/object/../x.jpg",
            "/img/d//cam/latest.jpg",
            "/img/d/live/cam/latest.jpg?x=1",
            "/img/d/live/cam/latest.jpg\n1",
            "/img/d/live/cam/storyboard.vtt",
            "/img/d/live/cam/storyboard.vtt?start_time=a",
            "/img/d/live/cam/storyboard.vtt?start_time=a&end_time=b&exp=1",
            "/img/d/live/cam/storyboard.vtt?start_time=a&end_time=b&start_time=c",
            "/img/d/live/cam/storyboard.png?start_time=a&end_time=b",
        ] {
            assert!(
                matches!(s.issue(bad, None, 0), Err(LinkError::BadPath(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            s.issue(PATH, Some(0), 0),
            Err(LinkError::BadTtl {
                got: 0,
                max: 604_800
            })
        );
        assert!(s.issue(PATH, Some(604_800), 0).is_ok());
        assert!(s.issue(PATH, Some(604_801), 0).is_err());
    }

    #[test]
    fn paths_are_parsed() {
        assert_eq!(
            parse_path("/img/d/live%2Fsub/cam/object/live/sub/cam/1.jpg").unwrap(),
            ImagePath {
                domain: "d".into(),
                app: "live/sub".into(),
                stream: "cam".into(),
                key: Some("live/sub/cam/1.jpg".into()),
                storyboard: None,
            }
        );
        let board = parse_path("/img/d/live/cam/storyboard.vtt?start_time=a&end_time=b").unwrap();
        assert_eq!(
            (board.key, board.storyboard.as_deref()),
            (None, Some("storyboard.vtt"))
        );
        assert_eq!(parse_path(PATH).unwrap().key, None);
        assert!(parse_path("/img/d/live%2/cam/latest.jpg").is_err());
        assert!(parse_path("/img/d/live/cam/nope").is_err());
    }

    #[test]
    fn config_is_validated() {
        let env = |_: &str| None;
        let key = String::from_utf8(KEY.to_vec()).unwrap();
        let c = LinksConfig {
            key: Some(key.clone()),
            ..Default::default()
        };
        let s = c.validate(env).unwrap();
        assert_eq!((s.default_ttl, s.max_ttl), (3600, 604_800));
        assert!(!format!("{s:?}").contains(&key), "Debug hides the key");
        let err = |c: LinksConfig| {
            c.validate(|v| (v == "K").then(|| "short".into()))
                .unwrap_err()
                .key
        };
        assert_eq!(err(LinksConfig::default()), "links.key");
        assert_eq!(
            err(LinksConfig {
                key: Some("short".into()),
                ..Default::default()
            }),
            "links.key"
        );
        assert_eq!(
            err(LinksConfig {
                key_env: Some("K".into()),
                ..Default::default()
            }),
            "links.key_env"
        );
        assert_eq!(
            err(LinksConfig {
                key_env: Some("UNSET".into()),
                ..Default::default()
            }),
            "links.key_env"
        );
        assert_eq!(
            err(LinksConfig {
                key: Some(key.clone()),
                default_ttl_secs: Some(100),
                max_ttl_secs: Some(50),
                ..Default::default()
            }),
            "links.default_ttl_secs"
        );
        assert_eq!(
            err(LinksConfig {
                key: Some(key.clone()),
                max_ttl_secs: Some(0),
                ..Default::default()
            }),
            "links.max_ttl_secs"
        );
        let from_env = LinksConfig {
            key_env: Some("K".into()),
            ..Default::default()
        }
        .validate(|_| Some(key.clone()))
        .unwrap();
        assert_eq!(from_env, s);
    }
}
