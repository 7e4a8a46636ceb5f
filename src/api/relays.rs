//! Relay configs through the API: list, add, delete (`/api/v1/relay-configs`).
//!
//! Relays of the config file are listed read-only (`"source": "config"`). Relays added
//! here (`"source": "api"`) live in this node's memory only: they are not in the shared
//! rule document, so other nodes do not see them and a restart forgets them. A change
//! applies from each stream's next publish. Signing keys are never shown.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::params::JsonObject;
use super::ApiState;
use crate::clock::rfc3339;
use crate::relay::config::{BookError, Relay, RelaySpec, TargetSpec};

/// A relay as JSON: the spec as written (without signing keys), plus whether each
/// target signs.
fn relay_json(r: &Relay, source: &str, id: Option<u64>, create_time: Option<u64>) -> Value {
    let targets: Vec<Value> = r
        .spec
        .targets
        .iter()
        .zip(&r.targets)
        .map(|(spec, t)| {
            let mut v = match spec {
                TargetSpec::Url(u) => json!({ "url": u }),
                TargetSpec::Table(_) => serde_json::to_value(spec).unwrap_or(Value::Null),
            };
            v["pass_query"] = json!(t.pass_query);
            v["signed"] = json!(t.sign.is_some());
            v
        })
        .collect();
    json!({
        "id": id,
        "domain": r.spec.domain,
        "app": r.spec.app,
        "pass_query": r.spec.pass_query,
        "targets": targets,
        "source": source,
        "create_time": create_time.map(rfc3339),
    })
}

/// `GET /api/v1/relay-configs`
pub async fn list(State(state): State<ApiState>) -> Json<Value> {
    let book = &state.node.relays;
    let mut items: Vec<Value> = book
        .config()
        .iter()
        .map(|r| relay_json(r, "config", None, None))
        .collect();
    items.extend(
        book.api()
            .iter()
            .map(|a| relay_json(&a.relay, "api", Some(a.id), Some(a.create_time))),
    );
    Json(json!({ "total": items.len(), "items": items }))
}

/// `POST /api/v1/relay-configs` with a relay as in `[[relays]]` (JSON).
pub async fn create(State(state): State<ApiState>, body: JsonObject) -> ApiResult<Response> {
    let spec: RelaySpec = serde_json::from_value(Value::Object(body.0))
        .map_err(|e| ApiError::bad_request(format!("not a relay config: {e}")))?;
    let relay = spec.validate("relay").map_err(|e| {
        let field = e.key.strip_prefix("relay.").unwrap_or(&e.key).to_owned();
        ApiError::invalid(field, e.message)
    })?;
    let now = state.node.clock.now_unix();
    match state.node.relays.add(relay, now) {
        Ok(a) => Ok((
            StatusCode::CREATED,
            Json(relay_json(&a.relay, "api", Some(a.id), Some(a.create_time))),
        )
            .into_response()),
        Err(e @ BookError::ReadOnly(..)) => Err(ApiError::read_only(e.to_string())),
        Err(e @ BookError::Exists(..)) => Err(ApiError::already_exists(e.to_string())),
    }
}

/// `DELETE /api/v1/relay-configs/{id}`
pub async fn delete_id(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let n: u64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", format!("{id:?} is not a relay config id")))?;
    if state.node.relays.remove_id(n) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no relay config with id {n}")))
    }
}

/// `DELETE /api/v1/relay-configs/{domain}/{app}`
pub async fn delete_key(
    State(state): State<ApiState>,
    Path((domain, app)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    match state.node.relays.remove_key(&domain, &app) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::not_found(format!(
            "no relay config for domain {domain:?}, app {app:?}"
        ))),
        Err(e) => Err(ApiError::read_only(e.to_string())),
    }
}
