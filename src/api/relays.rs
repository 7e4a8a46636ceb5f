//! Relay configs through the API: list, add, delete (`/api/v1/relay-configs`).
//!
//! Relays of the config file are listed read-only (`"source": "config"`); the others
//! live in the shared rule document beside the snapshot rules (`rules::shared`), so
//! every node pointed at the same rule store applies them. A change applies from each
//! stream's next publish. Signing keys are never shown.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::params::JsonObject;
use super::ApiState;
use crate::clock::rfc3339;
use crate::relay::config::{RelaySpec, StoredRelay};
use crate::rules::shared::{SharedRules, UpdateError};

/// A relay as JSON: the config as written without signing keys (a target shows
/// `"signed": true` instead), where it comes from, whether this node applies it.
fn relay_json(
    spec: &RelaySpec,
    source: &str,
    id: Option<u64>,
    create_time: Option<u64>,
    in_force: bool,
) -> Value {
    let mut v = serde_json::to_value(spec).unwrap_or(Value::Null);
    if let Some(targets) = v.get_mut("targets").and_then(Value::as_array_mut) {
        for t in targets.iter_mut() {
            if let Value::String(url) = t {
                *t = json!({ "url": url });
            }
            if let Some(obj) = t.as_object_mut() {
                let signed = obj.remove("sign_key").is_some();
                obj.insert("signed".into(), json!(signed));
            }
        }
    }
    v["id"] = json!(id);
    v["source"] = json!(source);
    v["create_time"] = json!(create_time.map(rfc3339));
    v["in_force"] = json!(in_force);
    v
}

fn stored_json(state: &ApiState, r: &StoredRelay) -> Value {
    let in_force = state.node.relays.api().iter().any(|a| a.id == r.id);
    relay_json(&r.spec, "api", Some(r.id), Some(r.create_time), in_force)
}

fn store(state: &ApiState) -> ApiResult<&std::sync::Arc<SharedRules>> {
    state.node.shared_rules.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "no rule store is configured: add [rule_store] (or a storage target named \"default\") to the config",
        )
    })
}

fn map_update(e: UpdateError<ApiError>) -> ApiError {
    match e {
        UpdateError::Rejected(e) => e,
        UpdateError::Store(e) => e.into(),
    }
}

/// `GET /api/v1/relay-configs`
pub async fn list(State(state): State<ApiState>) -> Json<Value> {
    let mut items: Vec<Value> = state
        .node
        .relays
        .config()
        .iter()
        .map(|r| relay_json(&r.spec, "config", None, None, true))
        .collect();
    let doc = state.node.shared_rules.as_ref().map(|s| s.doc());
    if let Some(doc) = &doc {
        items.extend(doc.relays.iter().map(|r| stored_json(&state, r)));
    }
    Json(json!({
        "total": items.len(),
        "store_version": doc.map(|d| d.version),
        "items": items,
    }))
}

/// `POST /api/v1/relay-configs` with a relay as in `[[relays]]` (JSON).
pub async fn create(State(state): State<ApiState>, body: JsonObject) -> ApiResult<Response> {
    let spec: RelaySpec = serde_json::from_value(Value::Object(body.0))
        .map_err(|e| ApiError::bad_request(format!("not a relay config: {e}")))?;
    spec.validate("relay").map_err(|e| {
        let field = e.key.strip_prefix("relay.").unwrap_or(&e.key).to_owned();
        ApiError::invalid(field, e.message)
    })?;
    if state.node.relays.config_has(&spec.domain, &spec.app) {
        return Err(ApiError::already_exists(format!(
            "the config file has a relay config for domain {:?}, app {:?}",
            spec.domain, spec.app
        )));
    }
    let store = store(&state)?;
    let created = store
        .update(|doc, now| {
            if doc
                .relays
                .iter()
                .any(|r| r.spec.domain == spec.domain && r.spec.app == spec.app)
            {
                return Err(ApiError::already_exists(format!(
                    "a relay config for domain {:?}, app {:?} exists",
                    spec.domain, spec.app
                )));
            }
            let id = doc
                .next_relay_id
                .max(doc.relays.iter().map(|r| r.id + 1).max().unwrap_or(1))
                .max(1);
            doc.next_relay_id = id + 1;
            let r = StoredRelay {
                id,
                create_time: now,
                spec: spec.clone(),
            };
            doc.relays.push(r.clone());
            Ok(r)
        })
        .await
        .map_err(map_update)?;
    tracing::info!(id = created.id, domain = %created.spec.domain, app = %created.spec.app, "relay config added");
    Ok((StatusCode::CREATED, Json(stored_json(&state, &created))).into_response())
}

/// Removes the stored relay config `which` picks.
async fn delete_where(
    state: &ApiState,
    which: impl Fn(&StoredRelay) -> bool,
    missing: impl Fn() -> ApiError,
) -> ApiResult<StatusCode> {
    let store = store(state)?;
    let removed = store
        .update(|doc, _| {
            let i = doc.relays.iter().position(&which).ok_or_else(&missing)?;
            Ok(doc.relays.remove(i))
        })
        .await
        .map_err(map_update)?;
    tracing::info!(id = removed.id, domain = %removed.spec.domain, app = %removed.spec.app, "relay config deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/relay-configs/{id}`
pub async fn delete_id(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let n: u64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", format!("{id:?} is not a relay config id")))?;
    delete_where(
        &state,
        |r| r.id == n,
        || ApiError::not_found(format!("no relay config with id {n}")),
    )
    .await
}

/// `DELETE /api/v1/relay-configs/{domain}/{app}`
pub async fn delete_key(
    State(state): State<ApiState>,
    Path((domain, app)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    if state.node.relays.config_has(&domain, &app) {
        return Err(ApiError::read_only(format!(
            "the relay config for domain {domain:?}, app {app:?} comes from the config file and is read-only here"
        )));
    }
    delete_where(
        &state,
        |r| r.spec.domain == domain && r.spec.app == app,
        || {
            ApiError::not_found(format!(
                "no relay config for domain {domain:?}, app {app:?}"
            ))
        },
    )
    .await
}
