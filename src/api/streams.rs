//! Live streams of this node: list, describe, disconnect, and an on-demand snapshot of
//! the most recent keyframe (the newest picture, `latest.jpg`, is `images`').

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::params::{parse_time, Params};
use super::ApiState;
use crate::clock::rfc3339;
use crate::clock::unix_of;
use crate::live::{Ended, Keyframe, LiveStream, Player, MAX_KEYFRAME_WAITERS};
use crate::names::{self, StreamId};
use crate::snapshot::render::Renderer;
use crate::snapshot::stats::StreamStats;
use crate::snapshot::writer::{Snapshot, SnapshotWriter, WriterContext};

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One live stream as JSON.
pub fn stream_json(s: &LiveStream) -> Value {
    let st = &s.stats;
    let g = |c: &std::sync::atomic::AtomicU64| StreamStats::get(c);
    let media_ms = g(&st.media_ms);
    let frames = g(&st.video_frames);
    let pushed = s.hub.pushed_bytes();
    // Frame rate over the media time covered: n messages span n-1 intervals.
    let frame_rate = (media_ms > 0 && frames > 1)
        .then(|| round2((frames - 1) as f64 * 1000.0 / media_ms as f64));
    let bitrate_kbps = (media_ms > 0).then(|| round2(g(&st.bytes) as f64 * 8.0 / media_ms as f64));
    let (codec, width, height, keyframe_interval_ms) = {
        let i = s.info();
        (i.codec, i.width, i.height, i.keyframe_interval_ms)
    };
    let last = g(&st.last_snapshot_unix);
    let started = unix_of(s.started);
    let health = st.health.active();
    json!({
        "domain": s.id.domain,
        "app": s.id.app,
        "stream": s.id.stream,
        "peer": s.peer.to_string(),
        "start_time": rfc3339(started),
        "video": {
            "codec": codec,
            "width": (width > 0).then_some(width),
            "height": (height > 0).then_some(height),
            "frame_rate": frame_rate,
            "bitrate_kbps": bitrate_kbps,
            "keyframe_interval_ms": keyframe_interval_ms,
        },
        "rule": s.rule.as_deref().map(|r| &r.spec),
        "snapshots": {
            "taken": g(&st.stored),
            "dropped": g(&st.dropped_busy) + g(&st.dropped_backlog),
            "failed": g(&st.failed_decode) + g(&st.failed_store),
            "due": g(&st.due),
            "dropped_busy": g(&st.dropped_busy),
            "dropped_backlog": g(&st.dropped_backlog),
            "failed_decode": g(&st.failed_decode),
            "failed_store": g(&st.failed_store),
            "skipped_existing": g(&st.skipped_existing),
        },
        "last_snapshot_time": (last > 0).then(|| rfc3339(last)),
        "keyframes": g(&st.keyframes),
        "bytes": g(&st.bytes),
        "paced_ms": g(&st.paced_ms),
        "relays": s.relays().iter().map(|r| r.view(pushed)).collect::<Vec<_>>(),
        "player_count": s.players.len(),
        "health": {
            "keyframes_sparser_than_rule": crate::health::keyframes_sparser_than_rule(
                keyframe_interval_ms,
                s.rule.as_deref().map(|r| r.interval_secs),
            ),
            "active": health.iter().map(|(c, _)| c.name()).collect::<Vec<_>>(),
            "since": health
                .iter()
                .map(|(c, t)| (c.name().to_string(), Value::from(rfc3339(*t))))
                .collect::<serde_json::Map<_, _>>(),
        },
    })
}

/// Checks the names of a stream path (they become storage keys).
pub(super) fn stream_id(domain: String, app: String, stream: String) -> ApiResult<StreamId> {
    let d = names::normalize_domain(&domain)
        .map_err(|e| ApiError::invalid("domain", format!("{domain:?} {e}")))?;
    if d != domain {
        return Err(ApiError::invalid(
            "domain",
            format!("{domain:?} must be written as {d:?}"),
        ));
    }
    names::validate_app(&app).map_err(|e| ApiError::invalid("app", format!("{app:?} {e}")))?;
    names::validate_stream(&stream)
        .map_err(|e| ApiError::invalid("stream", format!("{stream:?} {e}")))?;
    Ok(StreamId::new(domain, app, stream))
}

fn live(state: &ApiState, id: &StreamId) -> ApiResult<Arc<LiveStream>> {
    state
        .node
        .registry
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("stream {id} is not live on this node")))
}

/// `GET /api/v1/streams`
pub async fn list(State(state): State<ApiState>) -> Json<Value> {
    let streams: Vec<Value> = state
        .node
        .registry
        .list()
        .iter()
        .map(|s| stream_json(s))
        .collect();
    Json(json!({ "total": streams.len(), "items": streams }))
}

/// A time given as Unix seconds or RFC 3339 (errors name `field`).
fn unix_or_rfc3339(field: &str, v: &str) -> ApiResult<u64> {
    match v.parse::<u64>() {
        Ok(t) => Ok(t),
        Err(_) if v.bytes().all(|b| b.is_ascii_digit()) => Err(ApiError::invalid(
            field,
            format!("{v:?} is too large for Unix seconds"),
        )),
        Err(_) => parse_time(field, v),
    }
}

/// Cuts `list` (newest end first) to a page of at least `limit` entries that never ends
/// inside a second; returns the `before` of the next page (`None`: this is the last).
fn cut_ended(list: &mut Vec<Ended>, limit: usize) -> Option<u64> {
    let mut n = limit.min(list.len());
    while n > 0 && n < list.len() && list[n].ended == list[n - 1].ended {
        n += 1;
    }
    let next = (n < list.len()).then(|| list[n - 1].ended);
    list.truncate(n);
    next
}

/// One ended publish as JSON.
fn ended_json(e: &Ended) -> Value {
    json!({
        "domain": e.id.domain,
        "app": e.id.app,
        "stream": e.id.stream,
        "start_time": rfc3339(e.started),
        "end_time": rfc3339(e.ended),
        "snapshots": {"taken": e.stored()},
        "last_snapshot_time": e.last_snapshot().map(rfc3339),
    })
}

/// `GET /api/v1/streams/ended?since=&before=&limit=`: the publishes that ended on this
/// node in the last 24 h, newest end first (a stream live again is not listed).
pub async fn ended(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let p = Params::new(query, &["since", "before", "limit"])?;
    let since = match p.get("since") {
        Some(v) => unix_or_rfc3339("since", v)?,
        None => 0,
    };
    let before = match p.get("before") {
        Some(v) => Some(unix_or_rfc3339("before", v)?),
        None => None,
    };
    let limit = p.int_in("limit", 100, 1..=1000)? as usize;
    let (mut list, dropped) = state.node.registry.ended(since);
    if let Some(b) = before {
        list.retain(|e| e.ended < b);
    }
    let total = list.len();
    let next = cut_ended(&mut list, limit);
    Ok(Json(json!({
        "total": total,
        "items": list.iter().map(ended_json).collect::<Vec<_>>(),
        "next_before": next,
        "dropped": dropped,
    })))
}

/// `GET /api/v1/streams/{domain}/{app}/{stream}`
pub async fn get_one(
    State(state): State<ApiState>,
    Path((d, a, s)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let id = stream_id(d, a, s)?;
    let stream = live(&state, &id)?;
    Ok(Json(stream_json(&stream)))
}

/// `DELETE /api/v1/streams/{domain}/{app}/{stream}`: disconnects the publisher.
pub async fn kick(
    State(state): State<ApiState>,
    Path((d, a, s)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let id = stream_id(d, a, s)?;
    let stream = live(&state, &id)?;
    stream.kick.cancel();
    tracing::info!(stream = %id, "publisher disconnected through the admin API");
    Ok(StatusCode::NO_CONTENT)
}

/// One player as JSON; `pushed` is the stream's [`crate::hub::Hub::pushed_bytes`].
fn player_json(p: &Player, pushed: u64) -> Value {
    json!({
        "id": p.id,
        "peer": p.peer.to_string(),
        "start_time": rfc3339(p.start_unix),
        "bytes": p.bytes.load(Ordering::Relaxed),
        "skipped_bytes": p.skipped_bytes.load(Ordering::Relaxed),
        "lag_bytes": pushed.saturating_sub(p.position.load(Ordering::Relaxed)),
    })
}

/// `GET /api/v1/streams/{domain}/{app}/{stream}/players`: the stream's RTMP players, in
/// the order they joined.
pub async fn players(
    State(state): State<ApiState>,
    Path((d, a, s)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let id = stream_id(d, a, s)?;
    let stream = live(&state, &id)?;
    let players = stream.players.list();
    let pushed = stream.hub.pushed_bytes();
    Ok(Json(json!({
        "total": players.len(),
        "items": players.iter().map(|p| player_json(p, pushed)).collect::<Vec<_>>(),
    })))
}

/// `DELETE /api/v1/streams/{domain}/{app}/{stream}/players/{id}`: disconnects one player
/// (the publish and the other players go on).
pub async fn kick_player(
    State(state): State<ApiState>,
    Path((d, a, s, player)): Path<(String, String, String, String)>,
) -> ApiResult<StatusCode> {
    let id = stream_id(d, a, s)?;
    let n: u64 = player.parse().map_err(|_| {
        ApiError::invalid(
            "player",
            format!("{player:?} is not a player id (a number)"),
        )
    })?;
    let stream = live(&state, &id)?;
    let p = stream
        .players
        .get(n)
        .ok_or_else(|| ApiError::not_found(format!("stream {id} has no player {n}")))?;
    p.kick.cancel();
    tracing::info!(stream = %id, player = n, peer = %p.peer, "player disconnected through the admin API");
    Ok(StatusCode::NO_CONTENT)
}

/// How long an on-demand snapshot of a stream that keeps no keyframe (`[play] gop_cache =
/// false`) waits for the next one.
const KEYFRAME_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn ended_before_keyframe(id: &StreamId) -> ApiError {
    ApiError::failed_precondition(format!("stream {id} ended before its next keyframe"))
}

/// The stream's next H.264 keyframe, waited for up to [`KEYFRAME_WAIT`].
async fn next_keyframe(stream: &LiveStream) -> ApiResult<Keyframe> {
    let id = &stream.id;
    let next = {
        let mut info = stream.info();
        // The publish closes its hub before it lets its waiters go: one that has ended
        // takes no new waiter.
        if stream.hub.is_closed() {
            return Err(ended_before_keyframe(id));
        }
        info.keyframe_waiters.retain(|w| !w.is_closed());
        if info.keyframe_waiters.len() >= MAX_KEYFRAME_WAITERS {
            return Err(ApiError::unavailable(format!(
                "{MAX_KEYFRAME_WAITERS} on-demand snapshots of stream {id} already wait for its next keyframe"
            )));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        info.keyframe_waiters.push(tx);
        rx
    };
    match tokio::time::timeout(KEYFRAME_WAIT, next).await {
        Ok(Ok(keyframe)) => Ok(keyframe),
        Ok(Err(_)) => Err(ended_before_keyframe(id)),
        Err(_) => Err(ApiError::failed_precondition(format!(
            "stream {id} sent no H.264 keyframe within {} s (it keeps none: [play] gop_cache = false)",
            KEYFRAME_WAIT.as_secs()
        ))),
    }
}

/// `POST /api/v1/streams/{domain}/{app}/{stream}/snapshot[?store=true]`: decodes the
/// stream's most recent keyframe now (a stream without the GOP cache keeps none: its next
/// one, within [`KEYFRAME_WAIT`]) and returns the JPEG; with `store=true` it is
/// also stored under the rule's templates (and becomes the stream's latest).
pub async fn snapshot(
    State(state): State<ApiState>,
    Path((d, a, s)): Path<(String, String, String)>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Response> {
    let store = Params::new(query, &["store"])?.bool("store")?;
    let id = stream_id(d, a, s)?;
    let stream = live(&state, &id)?;
    let rule = stream.rule.clone();
    if store && rule.is_none() {
        return Err(ApiError::failed_precondition(format!(
            "stream {id} has no snapshot rule: nothing to store under"
        )));
    }
    let kept = stream.info().last_keyframe.clone();
    let (body, config) = match kept {
        Some(keyframe) => keyframe,
        None if !stream.hub.keeps_gop() => next_keyframe(&stream).await?,
        None => {
            return Err(ApiError::failed_precondition(format!(
                "stream {id} has sent no H.264 keyframe yet"
            )))
        }
    };
    let _permit = state
        .render_permits
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("shutting down"))?;
    let quality = state.node.settings.quality;
    let max_pixels = state.node.settings.limits.max_picture_pixels;
    let started = Instant::now();
    // A stored on-demand snapshot has all of its rule's outputs, like a scheduled one.
    let outputs = match (&rule, store) {
        (Some(r), true) => r.outputs.clone(),
        _ => Vec::new(),
    };
    let pic = tokio::task::spawn_blocking(move || {
        Renderer::new(quality, max_pixels).render_outputs(&body, &config, &outputs)
    })
    .await
    .map_err(|e| ApiError::internal(format!("snapshot worker: {e}")))?
    .map_err(|e| ApiError::internal(format!("keyframe of {id} gave no picture: {e}")))?;
    tracing::debug!(stream = %id, ms = started.elapsed().as_millis() as u64, "on-demand snapshot rendered");
    let unix_ts = state.node.clock.now_unix();
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-livesnap-width", HeaderValue::from(pic.width));
    h.insert("x-livesnap-height", HeaderValue::from(pic.height));
    if let (true, Some(rule)) = (store, rule) {
        let target = state
            .node
            .targets
            .get(rule.storage())
            .cloned()
            .ok_or_else(|| {
                ApiError::unavailable(format!("storage {:?} is not configured", rule.storage()))
            })?;
        // Counted apart from the stream's schedule (its due/finished stay balanced).
        let cx = WriterContext {
            metrics: state.node.metrics.clone(),
            notify: state.node.notify.clone(),
            stats: Arc::new(StreamStats::default()),
            latest: stream.latest.clone(),
            // On-demand snapshots are not sent for review.
            review: None,
        };
        let storage = rule.storage().to_string();
        let mut writer = SnapshotWriter::new(id.clone(), rule, target, cx);
        let stored = writer
            .store(Snapshot {
                jpeg: pic.jpeg.clone(),
                width: pic.width,
                height: pic.height,
                unix_ts,
                arrived: started,
                outputs: pic.outputs.clone(),
            })
            .await;
        if stored.is_none() {
            return Err(ApiError::unavailable(format!(
                "the snapshot of {id} could not be stored in {storage:?} (see the node's log)"
            )));
        }
        h.insert("x-livesnap-stored", HeaderValue::from_static("true"));
    }
    Ok((StatusCode::OK, h, Body::from(pic.jpeg)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_pages_never_end_inside_a_second() {
        let at = |stream: &str, ended: u64| Ended {
            id: StreamId::new("d", "live", stream),
            started: 0,
            ended,
            stats: Default::default(),
        };
        let all = || {
            vec![
                at("e", 50),
                at("d", 40),
                at("c", 40),
                at("b", 30),
                at("a", 20),
            ]
        };
        let names = |v: &[Ended]| v.iter().map(|e| e.id.stream.clone()).collect::<Vec<_>>();
        let mut page = all();
        assert_eq!(cut_ended(&mut page, 1), Some(50));
        assert_eq!(names(&page), ["e"]);
        // Two ended in the same second: both on one page; the next page is `before=40`.
        let mut page = all();
        assert_eq!(cut_ended(&mut page, 2), Some(40));
        assert_eq!(names(&page), ["e", "d", "c"]);
        let mut page = all();
        assert_eq!(cut_ended(&mut page, 5), None);
        assert_eq!(page.len(), 5);
        let mut empty = Vec::new();
        assert_eq!(cut_ended(&mut empty, 3), None);
    }
}
