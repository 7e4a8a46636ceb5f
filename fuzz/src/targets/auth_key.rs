//! `auth_key`: publish authentication (`auth`): `parse_auth_key`, `check` on fuzzed
//! publish names, queries and tcUrls, and `sign_url` → publish → `check` round trips.
//!
//! Layout: [`fields`] — auth_key value, app, stream, the stream's query, tcUrl (empty:
//! none), signing key, now (decimal), then for the round trip a host and a URL query.
//!
//! Invariants: no panic; `parse_auth_key` accepts only `timestamp-rand-uid-hash` of the
//! documented shapes and gives back exactly the parts of its input; `check` is `Ok` only
//! when the first `auth_key` (stream query first, then tcUrl query) parses, has not
//! expired and its hash is the signature of `/app/stream` with the key; and a URL signed
//! by `sign_url` for valid names, published the way an encoder does (app from the path,
//! the last segment plus the query as the stream key, tcUrl without the stream), passes
//! `names::publish_name` and `check` at the signing time; `sign_url` refuses only
//! timestamps `check` would refuse (more than 12 digits).

use livesnap::auth::{self, AuthError};
use livesnap::config::AuthSettings;
use livesnap::names;

use super::input::fields;

const VALIDITY_SECS: u64 = 1800;
/// The largest timestamp of at most 12 digits.
const MAX_TIMESTAMP: u64 = 999_999_999_999;

pub fn run(data: &[u8]) {
    let [value, app, stream, query, tc_url, key, now, host, url_query] = fields::<9>(data);
    check_parse(&value);

    let entry = AuthSettings {
        domain: "*".into(),
        primary_key: key.clone(),
        secondary_key: None,
        validity_secs: VALIDITY_SECS,
    };
    let now: u64 = now.parse().unwrap_or(1_700_000_000);
    let tc_url = (!tc_url.is_empty()).then_some(tc_url.as_str());
    if auth::check(&entry, &app, &stream, &query, tc_url, now).is_ok() {
        let tc_query = tc_url
            .and_then(|u| u.split_once('?'))
            .map_or("", |(_, q)| q);
        let found = names::query_param(&query, "auth_key")
            .or_else(|| names::query_param(tc_query, "auth_key"))
            .expect("Ok without an auth_key");
        let k = auth::parse_auth_key(found).expect("Ok with a malformed auth_key");
        let ts: u64 = k.timestamp.parse().expect("timestamp");
        assert!(now <= ts.saturating_add(VALIDITY_SECS), "Ok but expired");
        let expected = auth::sign(
            &format!("/{app}/{stream}"),
            k.timestamp,
            k.rand,
            k.uid,
            &key,
        );
        assert_eq!(
            k.hash.to_ascii_lowercase(),
            expected,
            "Ok with a wrong hash"
        );
    }

    round_trip(&entry, &host, &app, &stream, &url_query, now);
}

fn check_parse(value: &str) {
    let Ok(k) = auth::parse_auth_key(value) else {
        return;
    };
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let hex32 = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(digits(k.timestamp, 12), "timestamp {:?}", k.timestamp);
    assert!(k.rand == "0" || hex32(k.rand), "rand {:?}", k.rand);
    assert!(digits(k.uid, 20), "uid {:?}", k.uid);
    assert!(hex32(k.hash), "hash {:?}", k.hash);
    let joined = [k.timestamp, k.rand, k.uid, k.hash].join("-");
    assert_eq!(joined, value, "parts are not the input");
}

/// Signs `rtmp://host/app/stream[?url_query]` and publishes it back.
fn round_trip(
    entry: &AuthSettings,
    host: &str,
    app: &str,
    stream: &str,
    url_query: &str,
    now: u64,
) {
    // Only URLs a user could mean: a host name or address, valid names.
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    if !host_ok || names::validate_app(app).is_err() || names::validate_stream(stream).is_err() {
        return;
    }
    let mut url = format!("rtmp://{host}/{app}/{stream}");
    if !url_query.is_empty() {
        url = format!("{url}?{url_query}");
    }
    let signed = match auth::sign_url(&url, &entry.primary_key, now) {
        Ok(s) => s,
        // `parse_auth_key` takes at most 12 digits: such a timestamp cannot be signed.
        Err(_) if now > MAX_TIMESTAMP => return,
        Err(e) => panic!("sign_url refused {url:?}: {e}"),
    };
    // What an encoder given `signed` sends: app and tcUrl from the path, the last
    // segment and the query as the stream key.
    let after_scheme = signed.strip_prefix("rtmp://").expect("rtmp:// URL");
    let (_, path_and_query) = after_scheme.split_once('/').expect("a path");
    let (path, query) = names::split_query(path_and_query);
    let (app_sent, stream_sent) = path.rsplit_once('/').expect("app/stream");
    let tc_url = format!("rtmp://{host}/{app_sent}");
    let stream_key = format!("{stream_sent}?{query}");
    let Ok(req) = names::publish_request(app_sent, &stream_key, Some(&tc_url)) else {
        // A vhost= in the user's query that is not a valid domain.
        return;
    };
    let result = auth::check(
        entry,
        &req.id.app,
        &req.id.stream,
        &req.query,
        Some(&tc_url),
        now,
    );
    assert!(
        result.is_ok(),
        "{url:?} signed as {signed:?} is refused: {:?}",
        result.map_err(|e: AuthError| e.to_string())
    );
}
