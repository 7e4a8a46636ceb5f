//! Signed image links (see `links`): the public `/img/…` routes that serve a stream's
//! pictures without the admin token, and the admin call that issues links.
//!
//! - `GET /img/{domain}/{app}/{stream}/latest.jpg?exp=&sig=[&width=&height=&fit=&quality=]`:
//!   the stream's newest picture, answered like the admin `latest.jpg` ([`serve_latest`]).
//! - `GET /img/{domain}/{app}/{stream}/storyboard.vtt?start_time=…&exp=&sig=` (and
//!   `storyboard.jpg`): a storyboard (`api::storyboard`), its parameters signed too.
//! - `GET /img/{domain}/{app}/{stream}/object/{key…}?exp=&sig=`: one stored snapshot
//!   object of that stream. The key must be one that a rule template could have
//!   rendered for *that* stream (the snapshot query's sequence templates, or the
//!   overwrite object of the stream's rule), so a link never reads another stream's
//!   object or anything else in the bucket.
//! - `POST /api/v1/links` (admin): `{"path": "/img/…", "ttl_secs": N}` →
//!   `{"url": "/img/…?exp=&sig=", "expires": "RFC 3339"}`; with `"storage_url": true`,
//!   a pre-signed read URL of the storage (S3/OSS, opendal's `presign_read`) instead.
//!
//! `latest.jpg` and `latest.webp` (admin and signed) are also where pictures are resized on request:
//! `width`, `height`, `fit` (`scale` | `pad` | `crop`) and `quality`, from the JPEG the
//! live stream keeps in memory (its newest snapshot, `LiveStream::latest`) or, for a
//! stream not live here, its stored overwrite object. Results are kept in the small
//! byte-bounded [`Pictures`] cache keyed by stream, picture identity (its ETag) and
//! parameters; ETags are derived from the source's and the parameters, so a
//! revalidation (`If-None-Match`) is answered 304 without any picture work.
//!
//! Without `[links]` in the config the public routes answer 404; a missing,
//! malformed, expired or foreign signature is 403. They answer
//! `Access-Control-Allow-Origin: *` so that any page may show the pictures.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use opendal::ErrorKind;
use serde_json::{json, Value};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::error::{ApiError, ApiResult};
use super::params::{Field, JsonObject, Params};
use super::snapshots::candidate_templates;
use super::storyboard;
use super::streams::stream_id;
use super::ApiState;
use crate::clock::rfc3339;
use crate::links::{self, LinkError, Signer};
use crate::names::StreamId;
use crate::picture::{self, Cache, Cached, Fit, Format, Resize};
use crate::storage::template::{self, Vars};

/// The public routes, with the CORS header (they answer 404 when no links key is
/// configured).
pub fn routes() -> Router<ApiState> {
    let base = "/img/{domain}/{app}/{stream}";
    Router::new()
        .route(&format!("{base}/latest.jpg"), get(latest))
        .route(&format!("{base}/latest.webp"), get(latest_webp))
        .route(&format!("{base}/object/{{*key}}"), get(object))
        .route(
            &format!("{base}/storyboard.vtt"),
            get(storyboard::signed_vtt),
        )
        .route(
            &format!("{base}/storyboard.jpg"),
            get(storyboard::signed_jpg),
        )
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

pub(super) fn signer(state: &ApiState) -> ApiResult<&Signer> {
    state
        .node
        .settings
        .links
        .as_ref()
        .ok_or_else(|| ApiError::not_found("no [links] key is configured on this node"))
}

/// Verifies the request's link against its own path (as sent, percent-encoded; a
/// storyboard's with its query, see `links::signed_part`).
pub(super) fn verify(state: &ApiState, uri: &Uri) -> ApiResult<()> {
    let (exp, sig) = links::query_params(uri.query());
    let signed = links::signed_part(uri.path(), uri.query());
    signer(state)?
        .verify(&signed, exp, sig, state.node.clock.now_unix())
        .map_err(|e| {
            tracing::debug!(path = uri.path(), error = %e, "image link refused");
            forbidden(e)
        })
}

/// `GET /img/{domain}/{app}/{stream}/latest.jpg?exp=&sig=[&width=…]`
pub async fn latest(
    State(state): State<ApiState>,
    uri: Uri,
    Path(names): Path<(String, String, String)>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    signed_latest(state, uri, names, query, headers, Format::Jpeg).await
}

/// `GET /img/{domain}/{app}/{stream}/latest.webp?exp=&sig=[&width=…]`
pub async fn latest_webp(
    State(state): State<ApiState>,
    uri: Uri,
    Path(names): Path<(String, String, String)>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    signed_latest(state, uri, names, query, headers, Format::Webp).await
}

async fn signed_latest(
    state: ApiState,
    uri: Uri,
    (d, a, s): (String, String, String),
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    format: Format,
) -> ApiResult<Response> {
    verify(&state, &uri)?;
    let mut allowed = LATEST_PARAMS.to_vec();
    allowed.extend(["exp", "sig"]);
    let p = Params::new(query, &allowed)?;
    let resize = resize_params(&p, state.node.settings.quality, format)?;
    let id = stream_id(d, a, s)?;
    serve_latest(&state, &id, &headers, resize).await
}

/// `GET /api/v1/streams/{domain}/{app}/{stream}/latest.jpg[?width=&height=&fit=&quality=]`
pub async fn latest_admin(
    State(state): State<ApiState>,
    Path(names): Path<(String, String, String)>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    admin_latest(state, names, query, headers, Format::Jpeg).await
}

/// `GET /api/v1/streams/{domain}/{app}/{stream}/latest.webp[?width=&height=&fit=&quality=]`
pub async fn latest_admin_webp(
    State(state): State<ApiState>,
    Path(names): Path<(String, String, String)>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    admin_latest(state, names, query, headers, Format::Webp).await
}

async fn admin_latest(
    state: ApiState,
    (d, a, s): (String, String, String),
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    format: Format,
) -> ApiResult<Response> {
    let p = Params::new(query, LATEST_PARAMS)?;
    let resize = resize_params(&p, state.node.settings.quality, format)?;
    let id = stream_id(d, a, s)?;
    serve_latest(&state, &id, &headers, resize).await
}

/// The parameters of `latest.jpg`: the resizing ones, and `t` and `_`, which pages add to
/// defeat caches (jQuery's `cache: false` adds `_`) and which change nothing.
pub const LATEST_PARAMS: &[&str] = &["width", "height", "fit", "quality", "t", "_"];

/// Made pictures: the cache (bytes: [`CACHE_BYTES`], entries: [`CACHE_ENTRIES`]) and
/// the permits of the blocking threads that make them ([`PICTURE_WORKERS`]).
#[derive(Debug)]
pub struct Pictures {
    pub cache: Cache,
    pub permits: Semaphore,
}

/// What the picture cache holds at most, in bytes (the in-memory pictures' ETags
/// keep a reference to their JPEG, counted here too).
pub const CACHE_BYTES: usize = 64 << 20;
/// ... and in entries.
pub const CACHE_ENTRIES: usize = 4096;
/// Pictures made at once (decode, resize, encode on blocking threads).
pub const PICTURE_WORKERS: usize = 2;

impl Default for Pictures {
    fn default() -> Self {
        Pictures {
            cache: Cache::new(CACHE_BYTES, CACHE_ENTRIES),
            permits: Semaphore::new(PICTURE_WORKERS),
        }
    }
}

impl Pictures {
    /// Runs picture work on a blocking thread, at most [`PICTURE_WORKERS`] at once.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, picture::PictureError> + Send + 'static,
    ) -> ApiResult<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable("shutting down"))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ApiError::internal(format!("picture worker: {e}")))?
            .map_err(|e| ApiError::unavailable(e.to_string()))
    }
}

/// `width`, `height`, `fit` and `quality` of a request for a picture in `format`;
/// `None` when none is given and the format is JPEG (the picture as it is).
pub fn resize_params(p: &Params, default_quality: u8, format: Format) -> ApiResult<Option<Resize>> {
    let side = |key: &str| -> ApiResult<Option<u32>> {
        match p.get(key) {
            None => Ok(None),
            Some(_) => Ok(Some(
                p.int_in(key, 0, 1..=u64::from(picture::MAX_SIDE))? as u32
            )),
        }
    };
    let (width, height) = (side("width")?, side("height")?);
    let fit = match p.get("fit") {
        None => None,
        Some(v) => Some(picture::parse_fit(v).ok_or_else(|| {
            ApiError::invalid(
                "fit",
                format!("must be \"scale\", \"pad\" or \"crop\", got {v:?}"),
            )
        })?),
    };
    let quality = match p.get("quality") {
        None => None,
        Some(_) => Some(p.int_in("quality", 0, 1..=100)? as u8),
    };
    if let Some(f @ (Fit::Pad | Fit::Crop)) = fit {
        for (key, v) in [("width", width), ("height", height)] {
            if v.is_none() {
                return Err(ApiError::invalid(
                    key,
                    format!("is required with fit={}", f.as_str()),
                ));
            }
        }
    }
    if fit.is_some() && width.is_none() && height.is_none() {
        return Err(ApiError::invalid("width", "fit needs width and/or height"));
    }
    if width.is_none() && height.is_none() && quality.is_none() && format == Format::Jpeg {
        return Ok(None);
    }
    Ok(Some(Resize {
        width,
        height,
        fit: fit.unwrap_or_default(),
        format,
        quality: quality.unwrap_or(default_quality),
    }))
}

/// Where a stream's newest picture comes from.
enum Source {
    /// The live stream's newest snapshot.
    Memory { jpeg: Bytes, unix: u64 },
    /// The stored overwrite object (`storage`, `key`), with its modification time.
    Stored {
        storage: String,
        key: String,
        mtime: Option<u64>,
    },
}

impl Source {
    fn name(&self) -> &'static str {
        match self {
            Source::Memory { .. } => "memory",
            Source::Stored { .. } => "storage",
        }
    }

    fn time(&self) -> Option<u64> {
        match self {
            Source::Memory { unix, .. } => Some(*unix),
            Source::Stored { mtime, .. } => *mtime,
        }
    }
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison).
pub(super) fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let want = strip(etag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || strip(t) == want)
}

/// The newest picture of `id` and its ETag: from memory while the stream is live and
/// has a snapshot, else its rule's overwrite object in storage (404 when none).
async fn newest(state: &ApiState, id: &StreamId) -> ApiResult<(Source, String)> {
    let live = state.node.registry.get(id);
    if let Some(l) = &live {
        let snap = l.latest.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(latest) = snap {
            return Ok((
                Source::Memory {
                    jpeg: latest.jpeg,
                    unix: latest.unix_ts,
                },
                latest.etag,
            ));
        }
    }
    let no_image = || ApiError::not_found(format!("no snapshot of {id} is available"));
    let (storage, key) = overwrite_key(state, id).ok_or_else(no_image)?;
    let target = state.node.targets.get(&storage).ok_or_else(no_image)?;
    let meta = match target.op.stat(&key).await {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(no_image()),
        Err(e) => {
            return Err(ApiError::unavailable(format!(
                "storage {storage:?}: stat {key:?}: {e}"
            )))
        }
    };
    let mtime = meta
        .last_modified()
        .map(|t| t.into_inner().as_second().max(0) as u64);
    let etag = match meta.etag() {
        Some(t) if t.starts_with('"') || t.starts_with("W/") => t.to_string(),
        Some(t) => format!("\"{t}\""),
        None => format!(
            "W/\"{}-{}\"",
            meta.last_modified()
                .map_or(0, |t| t.into_inner().as_nanosecond()),
            meta.content_length()
        ),
    };
    Ok((
        Source::Stored {
            storage,
            key,
            mtime,
        },
        etag,
    ))
}

/// The bytes of a source.
async fn source_bytes(state: &ApiState, id: &StreamId, src: &Source) -> ApiResult<Bytes> {
    match src {
        Source::Memory { jpeg, .. } => Ok(jpeg.clone()),
        Source::Stored { storage, key, .. } => {
            let target =
                state.node.targets.get(storage).ok_or_else(|| {
                    ApiError::not_found(format!("no snapshot of {id} is available"))
                })?;
            match target.op.read(key).await {
                Ok(b) => Ok(b.to_bytes()),
                Err(e) if e.kind() == ErrorKind::NotFound => Err(ApiError::not_found(format!(
                    "no snapshot of {id} is available"
                ))),
                Err(e) => Err(ApiError::unavailable(format!(
                    "storage {storage:?}: read {key:?}: {e}"
                ))),
            }
        }
    }
}

/// An image response (`304` when `If-None-Match` matches).
pub(super) fn image_response(
    headers: &HeaderMap,
    content_type: &'static str,
    etag: &str,
    extra: &[(&'static str, String)],
    body: impl FnOnce() -> Bytes,
) -> Response {
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    if etag_matches(headers, etag) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (StatusCode::OK, h, Body::from(body())).into_response()
}

/// The newest picture of `id`, resized when asked (see the module's doc).
pub async fn serve_latest(
    state: &ApiState,
    id: &StreamId,
    headers: &HeaderMap,
    resize: Option<Resize>,
) -> ApiResult<Response> {
    let (src, src_etag) = newest(state, id).await?;
    let mut extra = vec![("x-livesnap-source", src.name().to_string())];
    if let Some(t) = src.time() {
        extra.push(("x-livesnap-snapshot-time", rfc3339(t)));
    }
    let Some(resize) = resize else {
        if etag_matches(headers, &src_etag) {
            return Ok(image_response(
                headers,
                "image/jpeg",
                &src_etag,
                &extra,
                Bytes::new,
            ));
        }
        let data = source_bytes(state, id, &src).await?;
        return Ok(image_response(
            headers,
            "image/jpeg",
            &src_etag,
            &extra,
            || data,
        ));
    };
    let params = resize.canonical();
    let etag = format!(
        "\"{}\"",
        crate::util::md5_hex(format!("{src_etag}\n{params}").as_bytes())
    );
    if etag_matches(headers, &etag) {
        return Ok(image_response(
            headers,
            resize.format.content_type(),
            &etag,
            &extra,
            Bytes::new,
        ));
    }
    let key = format!("latest\n{id}\n{etag}");
    let made = state
        .pictures
        .cache
        .get_or_make(&key, || async {
            let data = source_bytes(state, id, &src).await?;
            let out = state
                .pictures
                .run(move || picture::resize_jpeg(&data, &resize))
                .await?;
            Ok::<_, ApiError>(Cached {
                body: Bytes::from(out.bytes),
                etag: etag.clone(),
                width: out.width,
                height: out.height,
            })
        })
        .await?;
    extra.push(("x-livesnap-width", made.width.to_string()));
    extra.push(("x-livesnap-height", made.height.to_string()));
    Ok(image_response(
        headers,
        resize.format.content_type(),
        &etag,
        &extra,
        || made.body,
    ))
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
pub(super) fn overwrite_key(state: &ApiState, id: &StreamId) -> Option<(String, String)> {
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
    if path
        .split('?')
        .next()
        .is_some_and(|p| p.ends_with("/latest.webp"))
    {
        return Err(ApiError::invalid(
            "storage_url",
            "latest.webp is made by the node: it has no storage URL",
        ));
    }
    if p.storyboard.is_some() {
        return Err(ApiError::invalid(
            "storage_url",
            "a storyboard is made by the node: it has no storage URL",
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        assert!(etag_matches(&h, "\"a\""));
        assert!(etag_matches(&h, "\"b\""));
        assert!(!etag_matches(&h, "\"c\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(etag_matches(&h, "\"c\""));
        assert!(!etag_matches(&HeaderMap::new(), "\"a\""));
    }
}
