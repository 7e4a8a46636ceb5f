//! The HTTP side of the node: health now; the admin API builds on this router.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::server::Node;

/// The router, separate from serving so that tests can call it directly.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::handler))
        .with_state(node)
}

async fn healthz(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "live_streams": node.registry.len(),
    }))
}

/// Serves until the node shuts down.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    let shutdown = node.shutdown.clone();
    let app = router(node);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}
