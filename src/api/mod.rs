//! The HTTP side of the node: health (`/healthz`, `/readyz`), metrics, the admin API
//! under `/api/v1` (bearer-token auth when a token is configured) and the dashboard
//! page at `/`. Routes are documented in `docs/api.md`.
//!
//! The signed image links under `/img/` (`images`) are public: their signature is
//! the credential.
//!
//! The admin API and the dashboard sit behind `guard` (JSON bodies only; without a
//! token, only the node's own Host and Origin); health and metrics do not.
//!
//! The API reads the node's state and the shared storage; it never blocks the ingest
//! path (rule changes reach a stream only at its next publish).

pub mod error;
pub mod guard;
pub mod images;
pub mod params;
pub mod relays;
pub mod rules;
pub mod snapshots;
pub mod storyboard;
pub mod streams;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::node::Node;
use error::ApiError;

/// On-demand snapshots rendered at once at most (each takes a blocking thread).
pub const ON_DEMAND_RENDERS: usize = 2;
/// How long `/readyz` waits for a storage target.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What every handler gets.
#[derive(Clone)]
pub struct ApiState {
    pub node: Arc<Node>,
    pub render_permits: Arc<Semaphore>,
    /// Pictures made on request (`latest.jpg?width=…`, storyboards) and their cache.
    pub pictures: Arc<images::Pictures>,
}

/// The router, separate from serving so that tests can call it directly. `http_port`
/// is the port the listener is bound to (the loopback names are allowed on it).
pub fn router(node: Arc<Node>, http_port: u16) -> Router {
    let guard = guard::Guard {
        hosts: node.settings.admin_token.is_none().then(|| {
            Arc::new(guard::HostPolicy::new(
                http_port,
                node.settings.http_hosts.clone(),
            ))
        }),
    };
    let state = ApiState {
        node,
        render_permits: Arc::new(Semaphore::new(ON_DEMAND_RENDERS)),
        pictures: Arc::default(),
    };
    let stream = "/api/v1/streams/{domain}/{app}/{stream}";
    let api = Router::new()
        .route(
            "/api/v1/snapshot-configs",
            get(rules::list).post(rules::create),
        )
        .route(
            "/api/v1/snapshot-configs/{domain}/{app}",
            get(rules::get_one)
                .patch(rules::update)
                .delete(rules::delete),
        )
        .route(
            "/api/v1/snapshot-configs/{domain}/{app}/{stream}",
            get(rules::get_one)
                .patch(rules::update)
                .delete(rules::delete),
        )
        .route(
            "/api/v1/relay-configs",
            get(relays::list).post(relays::create),
        )
        .route("/api/v1/relay-configs/{id}", delete(relays::delete_id))
        .route(
            "/api/v1/relay-configs/{domain}/{app}",
            delete(relays::delete_key),
        )
        .route("/api/v1/snapshots", get(snapshots::query))
        .route("/api/v1/streams", get(streams::list))
        .route("/api/v1/streams/ended", get(streams::ended))
        .route(stream, get(streams::get_one).delete(streams::kick))
        .route(&format!("{stream}/latest.jpg"), get(images::latest_admin))
        .route(
            &format!("{stream}/latest.webp"),
            get(images::latest_admin_webp),
        )
        .route(&format!("{stream}/storyboard.vtt"), get(storyboard::vtt))
        .route(&format!("{stream}/storyboard.jpg"), get(storyboard::jpg))
        .route(&format!("{stream}/snapshot"), post(streams::snapshot))
        .route(&format!("{stream}/players"), get(streams::players))
        .route(
            &format!("{stream}/players/{{player}}"),
            delete(streams::kick_player),
        )
        .route("/api/v1/links", post(images::create))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    let admin = Router::new()
        .merge(api)
        .route("/", get(web::index))
        .route_layer(middleware::from_fn_with_state(guard, guard::guard));
    // Signed image links: public (outside the guard and the token), see `images`.
    let images = images::routes();
    Router::new()
        .merge(admin)
        .merge(images)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

/// Requires `Authorization: Bearer TOKEN` when a token is configured. Without one the
/// API is open; config validation allows that only on a loopback `http_listen`.
async fn auth(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.node.settings.admin_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        match given {
            None => {
                return ApiError::unauthenticated("an Authorization: Bearer token is required")
                    .into_response()
            }
            Some(t) if !crate::util::constant_time_eq(t.as_bytes(), token.as_bytes()) => {
                return ApiError::unauthenticated("the bearer token is not valid").into_response()
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

/// A name as one URL path segment (names hold only `[A-Za-z0-9._-]`, `/` and `*`).
pub fn path_segment(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

/// Liveness: always 200 while the process serves; says when the rule store could not
/// be read (the last good rules stay in force meanwhile).
async fn healthz(State(state): State<ApiState>) -> Json<Value> {
    let store = state.node.shared_rules.as_ref().map(|s| s.health());
    let degraded = store.as_ref().is_some_and(|h| h.error.is_some());
    Json(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "live_streams": state.node.registry.len(),
        "rule_store": store,
    }))
}

/// Readiness: listening (this answer), every storage target reachable, and the rule
/// store read successfully at its last attempt. 503 otherwise, with the details.
async fn readyz(State(state): State<ApiState>) -> Response {
    let checks = state.node.targets.iter().map(|(name, t)| async move {
        let r = match tokio::time::timeout(READY_CHECK_TIMEOUT, t.op.check()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer in {} s", READY_CHECK_TIMEOUT.as_secs())),
        };
        (name.clone(), r)
    });
    let results = futures::future::join_all(checks).await;
    let mut ready = true;
    let mut storage = serde_json::Map::new();
    for (name, r) in results {
        ready &= r.is_ok();
        storage.insert(name, json!(r.err().unwrap_or_else(|| "ok".into())));
    }
    let store = state.node.shared_rules.as_ref().map(|s| s.health());
    if let Some(h) = &store {
        ready &= h.ok;
    }
    let body = Json(json!({
        "status": if ready { "ready" } else { "not_ready" },
        "storage": storage,
        "rule_store": store,
    }));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

/// `GET /metrics`: the node's metrics in the OpenMetrics text format.
async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.node.metrics.render(),
    )
}

/// Serves until the node shuts down.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    let shutdown = node.shutdown.clone();
    let port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => {
            tracing::error!(error = %e, "HTTP listener has no local address");
            return;
        }
    };
    let app = router(node, port);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_escape_slashes() {
        assert_eq!(path_segment("live/sub"), "live%2Fsub");
        assert_eq!(path_segment("a%b"), "a%25b");
    }
}
