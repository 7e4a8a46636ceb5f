//! Snapshot configs (rules) through the API: add, update, delete, describe, list.
//!
//! Rules of the config file are listed read-only (`"source": "config"`); the others
//! live in the shared rule store (`rules::store`). A change applies from each
//! stream's next publish, on every node (each node re-reads the store).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::params::{format_time, Field, JsonObject, Order, Params};
use super::ApiState;
use crate::config::{self, RuleConfig};
use crate::rules::store::{RuleStore, StoredRule, UpdateError};
use crate::rules::Rule;

/// What a rule looks like on the wire.
fn rule_json(r: &RuleConfig, source: &str, times: Option<(u64, u64)>, in_force: bool) -> Value {
    json!({
        "domain": r.domain,
        "app": r.app,
        "interval_secs": r.interval_secs,
        "storage": r.storage,
        "overwrite_object": r.overwrite_object,
        "sequence_object": r.sequence_object,
        "callback": r.callback,
        "source": source,
        "in_force": in_force,
        "create_time": times.map(|t| format_time(t.0)),
        "update_time": times.map(|t| format_time(t.1)),
    })
}

fn config_of(r: &Rule) -> RuleConfig {
    RuleConfig {
        domain: r.domain.clone(),
        app: r.app.clone(),
        interval_secs: i64::from(r.interval_secs),
        storage: r.storage.clone(),
        overwrite_object: r.overwrite_object.as_ref().map(|t| t.as_str().to_string()),
        sequence_object: r.sequence_object.as_ref().map(|t| t.as_str().to_string()),
        callback: r.callback.clone(),
    }
}

/// Whether this node applies exactly this stored rule now (it may be shadowed by a
/// config rule or name a storage target this node lacks).
fn in_force(state: &ApiState, s: &StoredRule) -> bool {
    state
        .node
        .rules()
        .lookup(&s.domain, &s.app)
        .is_some_and(|r| r.domain == s.domain && r.app == s.app && config_of(&r) == s.to_config())
}

fn stored_json(state: &ApiState, s: &StoredRule) -> Value {
    rule_json(
        &s.to_config(),
        "api",
        Some((s.create_time, s.update_time)),
        in_force(state, s),
    )
}

fn store(state: &ApiState) -> ApiResult<&std::sync::Arc<RuleStore>> {
    state.node.rule_store.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "no rule store is configured: add [rule_store] (or a storage target named \"default\") to the config",
        )
    })
}

fn static_rule<'a>(state: &'a ApiState, domain: &str, app: &str) -> Option<&'a Rule> {
    state
        .node
        .settings
        .static_rules
        .iter()
        .find(|r| r.domain == domain && r.app == app)
}

fn map_update(e: UpdateError<ApiError>) -> ApiError {
    match e {
        UpdateError::Rejected(e) => e,
        UpdateError::Store(e) => e.into(),
    }
}

fn not_found(domain: &str, app: &str) -> ApiError {
    ApiError::not_found(format!(
        "no snapshot config for domain {domain:?}, app {app:?}"
    ))
}

const LIST_PARAMS: &[&str] = &["domain", "app", "page_num", "page_size", "order"];

/// `GET /api/v1/snapshot-configs`
pub async fn list(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let p = Params::new(query, LIST_PARAMS)?;
    let page_num = p.int_in("page_num", 1, 1..=1_000_000)?;
    let page_size = p.int_in("page_size", 10, 5..=30)?;
    let order = p.order()?;
    let (domain, app) = (p.get("domain"), p.get("app"));
    let keep = |d: &str, a: &str| domain.is_none_or(|x| x == d) && app.is_none_or(|x| x == a);

    let mut items: Vec<Value> = state
        .node
        .settings
        .static_rules
        .iter()
        .filter(|r| keep(&r.domain, &r.app))
        .map(|r| rule_json(&config_of(r), "config", None, true))
        .collect();
    let doc = state.node.rule_store.as_ref().map(|s| s.doc());
    if let Some(doc) = &doc {
        let mut stored: Vec<&StoredRule> = doc
            .rules
            .iter()
            .filter(|r| keep(&r.domain, &r.app))
            .collect();
        stored.sort_by(|a, b| {
            (a.create_time, &a.domain, &a.app).cmp(&(b.create_time, &b.domain, &b.app))
        });
        items.extend(stored.into_iter().map(|s| stored_json(&state, s)));
    }
    if order == Order::Desc {
        items.reverse();
    }
    let total = items.len();
    let skip = usize::try_from((page_num - 1) * page_size).unwrap_or(usize::MAX);
    let page: Vec<Value> = items
        .into_iter()
        .skip(skip)
        .take(page_size as usize)
        .collect();
    Ok(Json(json!({
        "total": total,
        "page_num": page_num,
        "page_size": page_size,
        "store_version": doc.map(|d| d.version),
        "items": page,
    })))
}

/// `GET /api/v1/snapshot-configs/{domain}/{app}`
pub async fn get_one(
    State(state): State<ApiState>,
    Path((domain, app)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    if let Some(r) = static_rule(&state, &domain, &app) {
        return Ok(Json(rule_json(&config_of(r), "config", None, true)));
    }
    let doc = state.node.rule_store.as_ref().map(|s| s.doc());
    match doc.as_ref().and_then(|d| d.find(&domain, &app)) {
        Some(s) => Ok(Json(stored_json(&state, s))),
        None => Err(not_found(&domain, &app)),
    }
}

const CREATE_FIELDS: &[&str] = &[
    "domain",
    "app",
    "interval_secs",
    "storage",
    "overwrite_object",
    "sequence_object",
    "callback",
];

fn opt_string(body: &JsonObject, key: &str) -> ApiResult<Option<String>> {
    Ok(match body.string(key)? {
        Field::Value(s) => Some(s),
        Field::Absent | Field::Null => None,
    })
}

fn required_string(body: &JsonObject, key: &str) -> ApiResult<String> {
    match body.string(key)? {
        Field::Value(s) => Ok(s),
        _ => Err(ApiError::invalid(key, "is required")),
    }
}

fn validate(state: &ApiState, cfg: &RuleConfig) -> ApiResult<Rule> {
    config::validate_rule(cfg, "rule", &state.node.settings.storage)
        .map_err(ApiError::from_rule_error)
}

/// `POST /api/v1/snapshot-configs`
pub async fn create(State(state): State<ApiState>, body: JsonObject) -> ApiResult<Response> {
    body.only(CREATE_FIELDS)?;
    let cfg = RuleConfig {
        domain: required_string(&body, "domain")?,
        app: required_string(&body, "app")?,
        interval_secs: match body.int("interval_secs")? {
            Field::Value(n) => n,
            _ => return Err(ApiError::invalid("interval_secs", "is required (5..=3600)")),
        },
        storage: match body.string("storage")? {
            Field::Value(s) => s,
            Field::Absent => "default".to_string(),
            Field::Null => {
                return Err(ApiError::invalid(
                    "storage",
                    "must be a storage target name",
                ))
            }
        },
        overwrite_object: opt_string(&body, "overwrite_object")?,
        sequence_object: opt_string(&body, "sequence_object")?,
        callback: opt_string(&body, "callback")?,
    };
    validate(&state, &cfg)?;
    if static_rule(&state, &cfg.domain, &cfg.app).is_some() {
        return Err(ApiError::already_exists(format!(
            "the config file has a rule for domain {:?}, app {:?}",
            cfg.domain, cfg.app
        )));
    }
    let store = store(&state)?;
    let created = store
        .update(&state.node, |doc, now| {
            if doc.find(&cfg.domain, &cfg.app).is_some() {
                return Err(ApiError::already_exists(format!(
                    "a snapshot config for domain {:?}, app {:?} exists",
                    cfg.domain, cfg.app
                )));
            }
            let s = StoredRule {
                domain: cfg.domain.clone(),
                app: cfg.app.clone(),
                interval_secs: cfg.interval_secs,
                storage: cfg.storage.clone(),
                overwrite_object: cfg.overwrite_object.clone(),
                sequence_object: cfg.sequence_object.clone(),
                callback: cfg.callback.clone(),
                create_time: now,
                update_time: now,
            };
            doc.rules.push(s.clone());
            Ok(s)
        })
        .await
        .map_err(map_update)?;
    tracing::info!(domain = %created.domain, app = %created.app, "snapshot config added");
    let location = format!(
        "/api/v1/snapshot-configs/{}/{}",
        super::path_segment(&created.domain),
        super::path_segment(&created.app)
    );
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(stored_json(&state, &created)),
    )
        .into_response())
}

const PATCH_FIELDS: &[&str] = &[
    "interval_secs",
    "storage",
    "overwrite_object",
    "sequence_object",
    "callback",
];

/// `PATCH /api/v1/snapshot-configs/{domain}/{app}`: the given fields only; `null`
/// clears an optional field; the result must still be a valid rule.
pub async fn update(
    State(state): State<ApiState>,
    Path((domain, app)): Path<(String, String)>,
    body: JsonObject,
) -> ApiResult<Json<Value>> {
    for fixed in ["domain", "app"] {
        if body.0.contains_key(fixed) {
            return Err(ApiError::invalid(
                fixed,
                "cannot be changed; delete the config and add a new one",
            ));
        }
    }
    body.only(PATCH_FIELDS)?;
    let interval = match body.int("interval_secs")? {
        Field::Null => return Err(ApiError::invalid("interval_secs", "cannot be cleared")),
        f => f,
    };
    let storage = match body.string("storage")? {
        Field::Null => return Err(ApiError::invalid("storage", "cannot be cleared")),
        f => f,
    };
    let overwrite = body.string("overwrite_object")?;
    let sequence = body.string("sequence_object")?;
    let callback = body.string("callback")?;
    if static_rule(&state, &domain, &app).is_some() {
        return Err(ApiError::read_only(format!(
            "the rule for domain {domain:?}, app {app:?} comes from the config file and is read-only here"
        )));
    }
    let store = store(&state)?;
    let set = |slot: &mut Option<String>, f: &Field<String>| match f {
        Field::Absent => {}
        Field::Null => *slot = None,
        Field::Value(v) => *slot = Some(v.clone()),
    };
    let updated = store
        .update(&state.node, |doc, now| {
            let i = doc
                .position(&domain, &app)
                .ok_or_else(|| not_found(&domain, &app))?;
            let old = doc.rules[i].clone();
            let mut new = old.clone();
            if let Field::Value(n) = interval {
                new.interval_secs = n;
            }
            if let Field::Value(s) = &storage {
                new.storage = s.clone();
            }
            set(&mut new.overwrite_object, &overwrite);
            set(&mut new.sequence_object, &sequence);
            set(&mut new.callback, &callback);
            validate(&state, &new.to_config())?;
            new.update_time = now;
            doc.retire(&old, Some(&new), now);
            doc.rules[i] = new.clone();
            Ok(new)
        })
        .await
        .map_err(map_update)?;
    tracing::info!(domain = %domain, app = %app, "snapshot config updated");
    Ok(Json(stored_json(&state, &updated)))
}

/// `DELETE /api/v1/snapshot-configs/{domain}/{app}`
pub async fn delete(
    State(state): State<ApiState>,
    Path((domain, app)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    if static_rule(&state, &domain, &app).is_some() {
        return Err(ApiError::read_only(format!(
            "the rule for domain {domain:?}, app {app:?} comes from the config file and is read-only here"
        )));
    }
    let store = store(&state)?;
    store
        .update(&state.node, |doc, now| {
            let i = doc
                .position(&domain, &app)
                .ok_or_else(|| not_found(&domain, &app))?;
            let old = doc.rules.remove(i);
            doc.retire(&old, None, now);
            Ok(())
        })
        .await
        .map_err(map_update)?;
    tracing::info!(domain = %domain, app = %app, "snapshot config deleted");
    Ok(StatusCode::NO_CONTENT)
}
