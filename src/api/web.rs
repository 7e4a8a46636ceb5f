//! The dashboard at `/`: one static page, embedded in the binary (no build step),
//! that polls `/api/v1/streams` and shows each live stream's newest snapshot (a
//! 320 px thumbnail) with its rule and counters; a stream's stored history (the
//! snapshot query, pictures through signed image links), recently ended streams, and
//! the rules with add, edit and delete (docs/api.md, "The dashboard"). It sends the
//! bearer token kept in the browser's localStorage.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, HTML, CSS and script in one file.
pub const INDEX_HTML: &str = include_str!("index.html");

/// `GET /`
pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
            ),
        ],
        INDEX_HTML,
    )
}
