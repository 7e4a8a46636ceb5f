//! Signed image links (see `links`): the public `/img/…` routes that serve a stream's
//! pictures without the admin token, and the admin call that issues links.
//!
//! - `GET /img/{domain}/{app}/{stream}/latest.jpg?exp=&sig=`: the stream's newest
//!   picture, answered by the admin `latest.jpg` handler (`streams::latest`).
//! - `GET /img/{domain}/{app}/{stream}/object/{key…}?exp=&sig=`: one stored snapshot
//!   object of that stream. The key must be one that a rule template could have
//!   rendered for *that* stream (the snapshot query's sequence templates, or the
//!   overwrite object of the stream's rule), so a link never reads another stream's
//!   object or anything else in the bucket.
//! - `POST /api/v1/links` (admin): `{"path": "/img/…", "ttl_secs": N}` →
//!   `{"url": "/img/…?exp=&sig=", "expires": "RFC 3339"}`; with `"storage_url": true`,
//!   a pre-signed read URL of the storage (S3/OSS, opendal's `presign_read`) instead.
//!
//! Without `[links]` in the config the public routes answer 404; a missing,
//! malformed, expired or foreign signature is 403. They answer
//! `Access-Control-Allow-Origin: *` so that any page may show the pictures.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use opendal::ErrorKind;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::params::{Field, JsonObject};
use super::snapshots::candidate_templates;
use super::streams::{self, stream_id};
use super::ApiState;
use crate::clock::rfc3339;
use crate::links::{self, LinkError, Signer};
use crate::names::StreamId;
use crate::storage::template::{self, Vars};

/// The public routes, with the CORS header (they answer 404 when no links key is
/// configured).
pub fn routes() -> Router<ApiState> {
    let base = "/img/{domain}/{app}/{stream}";
    Router::new()
        .route(&format!("{base}/latest.jpg"), get(latest))
        .route(&format!("{base}/object/{{*key}}"), get(object))
        .route_layer(middleware::map_response(cors))
}

async fn cors(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

fn forbidden(e: LinkError) -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        code: "permission_denied",
        message: e.to_string(),
        field: None,
    }
}

fn signer(state: &ApiState) -> ApiResult<&Signer> {
    state
        .node
        .settings
        .links
        .as_ref()
        .ok_or_else(|| ApiError::not_found("no [links] key is configured on this node"))
}

/// Verifies the request's link against its own path (as sent, percent-encoded).
fn verify(state: &ApiState, uri: &Uri) -> ApiResult<()> {
    let (exp, sig) = links::query_params(uri.query());
    signer(state)?
        .verify(uri.path(), exp, sig, state.node.clock.now_unix())
        .map_err(|e| {
            tracing::debug!(path = uri.path(), error = %e, "image link refused");
            forbidden(e)
        })
}

/// `GET /img/{domain}/{app}/{stream}/latest.jpg?exp=&sig=`
pub async fn latest(
    State(state): State<ApiState>,
    uri: Uri,
    Path(names): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    verify(&state, &uri)?;
    streams::latest(State(state), Path(names), headers).await
}

/// The storages whose rule templates render `key` for the stream `id` (the snapshot
/// query's sequence templates, or the overwrite object of the stream's rule); `None`
/// when the key is not a safe key.
fn storages_of(state: &ApiState, id: &StreamId, key: &str) -> Option<Vec<String>> {
    template::check_key(key).ok()?;
    let mut storages: Vec<String> = candidate_templates(state, id)
        .into_iter()
        .filter(|(_, t)| t.match_key(key, &id.domain, &id.app, &id.stream).is_some())
        .map(|(storage, _)| storage)
        .collect();
    if let Some((storage, k)) = overwrite_key(state, id) {
        if k == key {
            storages.push(storage);
        }
    }
    storages.dedup();
    Some(storages)
}

/// The (storage, key) of the overwrite object of the rule the stream has (live) or
/// would have (offline).
fn overwrite_key(state: &ApiState, id: &StreamId) -> Option<(String, String)> {
    let rule = match state.node.registry.get(id) {
        Some(l) => l.rule.clone(),
        None => state.node.rules().lookup(&id.domain, &id.app, &id.stream),
    }?;
    let key = rule
        .overwrite_object
        .as_ref()?
        .render(&Vars {
            domain: &id.domain,
            app: &id.app,
            stream: &id.stream,
            unix_timestamp: 0,
            sequence: 0,
        })
        .ok()?;
    Some((rule.storage().to_string(), key))
}

/// `GET /img/{domain}/{app}/{stream}/object/{key…}?exp=&sig=`
pub async fn object(
    State(state): State<ApiState>,
    uri: Uri,
    Path((d, a, s, key)): Path<(String, String, String, String)>,
) -> ApiResult<Response> {
    verify(&state, &uri)?;
    let id = stream_id(d, a, s)?;
    let not_found = || ApiError::not_found(format!("{key:?} is not a stored snapshot of {id}"));
    let storages = storages_of(&state, &id, &key).ok_or_else(not_found)?;
    for storage in &storages {
        let Some(target) = state.node.targets.get(storage) else {
            continue;
        };
        match target.op.read(&key).await {
            Ok(b) => {
                let mut h = HeaderMap::new();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                return Ok((StatusCode::OK, h, Body::from(b.to_bytes())).into_response());
            }
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(ApiError::unavailable(format!(
                    "storage {storage:?}: read {key:?}: {e}"
                )))
            }
        }
    }
    Err(not_found())
}

/// `POST /api/v1/links` (admin): `{"path": "/img/…", "ttl_secs": N, "storage_url":
/// false}` (ttl and storage_url optional). With `storage_url: true` the answer is a
/// pre-signed URL of the storage (S3/OSS) for the object the path names instead.
pub async fn create(State(state): State<ApiState>, body: JsonObject) -> ApiResult<Json<Value>> {
    body.only(&["path", "ttl_secs", "storage_url"])?;
    let storage_url = match body.0.get("storage_url") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::invalid(
                "storage_url",
                format!("must be a boolean, got {other}"),
            ))
        }
    };
    let signer = signer(&state)?;
    let path = match body.string("path")? {
        Field::Value(p) => p,
        _ => return Err(ApiError::invalid("path", "is required")),
    };
    let ttl = match body.int("ttl_secs")? {
        Field::Value(n) => Some(u64::try_from(n).map_err(|_| {
            ApiError::invalid("ttl_secs", format!("must be 1..={}", signer.max_ttl))
        })?),
        _ => None,
    };
    let now = state.node.clock.now_unix();
    let url = signer.issue(&path, ttl, now).map_err(|e| match e {
        LinkError::BadTtl { .. } => ApiError::invalid("ttl_secs", e.to_string()),
        other => ApiError::invalid("path", other.to_string()),
    })?;
    let ttl = ttl.unwrap_or(signer.default_ttl);
    let exp = now.saturating_add(ttl);
    if storage_url {
        return presigned(&state, &path, ttl, exp).await;
    }
    Ok(Json(json!({ "url": url, "expires": rfc3339(exp) })))
}

/// A pre-signed read URL of the storage for the object `path` names (the stream's
/// overwrite object for `latest.jpg`), valid `ttl` seconds.
async fn presigned(state: &ApiState, path: &str, ttl: u64, exp: u64) -> ApiResult<Json<Value>> {
    let p = links::parse_path(path).map_err(|e| ApiError::invalid("path", e.to_string()))?;
    let id = stream_id(p.domain, p.app, p.stream)?;
    let (storages, key) = match p.key {
        Some(key) => (storages_of(state, &id, &key).unwrap_or_default(), key),
        None => match overwrite_key(state, &id) {
            Some((storage, key)) => (vec![storage], key),
            None => (Vec::new(), String::new()),
        },
    };
    let not_found = || ApiError::not_found(format!("{path:?} names no stored object of {id}"));
    for storage in storages {
        let Some(target) = state.node.targets.get(&storage) else {
            continue;
        };
        if !target.op.info().capability().presign_read {
            return Err(ApiError::invalid(
                "storage_url",
                format!("storage {storage:?} cannot pre-sign URLs (S3 and OSS can)"),
            ));
        }
        match target.op.stat(&key).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(ApiError::unavailable(format!(
                    "storage {storage:?}: stat {key:?}: {e}"
                )))
            }
        }
        let req = target
            .op
            .presign_read(&key, std::time::Duration::from_secs(ttl))
            .await
            .map_err(|e| {
                ApiError::unavailable(format!("storage {storage:?}: presign {key:?}: {e}"))
            })?;
        return Ok(Json(json!({
            "url": req.uri().to_string(),
            "storage": storage,
            "key": key,
            "expires": rfc3339(exp),
        })));
    }
    Err(not_found())
}
