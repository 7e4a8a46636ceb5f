//! Snapshot configs (rules) through the API: add, update, delete, describe, list.
//! A rule is named by (domain, app) or, for a stream rule, (domain, app, stream):
//! `/api/v1/snapshot-configs/{domain}/{app}[/{stream}]`.
//!
//! Rules of the config file are listed read-only (`"source": "config"`); the others
//! live in the shared rule document (`rules::shared`). A change applies from each
//! stream's next publish, on every node (each node re-reads the document).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::params::{Field, JsonObject, Order, Params};
use super::ApiState;
use crate::clock::rfc3339;
use crate::rules::shared::{RulesDoc, SharedRules, StoredRule, UpdateError};
use crate::rules::{describe_scope, Rule, RuleSpec};

/// Which rule a request names: (domain, app) and, for a stream rule, its stream.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ScopePath {
    domain: String,
    app: String,
    #[serde(default)]
    stream: Option<String>,
}

impl ScopePath {
    fn stream(&self) -> Option<&str> {
        self.stream.as_deref()
    }

    fn describe(&self) -> String {
        describe_scope(&self.domain, &self.app, self.stream())
    }
}

/// What a rule looks like on the wire: the rule as written, where it comes from,
/// whether this node applies it, and its times (stored rules only).
#[derive(Serialize)]
struct RuleView<'a> {
    #[serde(flatten)]
    spec: &'a RuleSpec,
    source: &'static str,
    in_force: bool,
    create_time: Option<String>,
    update_time: Option<String>,
}

fn config_json(r: &Rule) -> Value {
    json!(RuleView {
        spec: &r.spec,
        source: "config",
        in_force: true,
        create_time: None,
        update_time: None,
    })
}

/// Whether this node applies exactly this stored rule now (it may be shadowed by a
/// config rule or name a storage target this node lacks).
fn in_force(state: &ApiState, s: &StoredRule) -> bool {
    let rules = state.node.rules();
    let (d, a) = (&s.spec.domain, &s.spec.app);
    match &s.spec.stream {
        Some(stream) => rules.lookup(d, a, stream),
        None => rules.lookup_app(d, a),
    }
    .is_some_and(|r| r.spec == s.spec)
}

fn stored_json(state: &ApiState, s: &StoredRule) -> Value {
    json!(RuleView {
        spec: &s.spec,
        source: "api",
        in_force: in_force(state, s),
        create_time: Some(rfc3339(s.create_time)),
        update_time: Some(rfc3339(s.update_time)),
    })
}

fn store(state: &ApiState) -> ApiResult<&std::sync::Arc<SharedRules>> {
    state.node.shared_rules.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "no rule store is configured: add [rule_store] (or a storage target named \"default\") to the config",
        )
    })
}

fn static_rule(state: &ApiState, domain: &str, app: &str, stream: Option<&str>) -> Option<Rule> {
    state
        .node
        .rules
        .config()
        .iter()
        .find(|r| r.scope_key() == (domain, app, stream))
        .cloned()
}

fn map_update(e: UpdateError<ApiError>) -> ApiError {
    match e {
        UpdateError::Rejected(e) => e,
        UpdateError::Store(e) => e.into(),
    }
}

fn not_found(at: &ScopePath) -> ApiError {
    ApiError::not_found(format!("no snapshot config for {}", at.describe()))
}

const LIST_PARAMS: &[&str] = &["domain", "app", "stream", "page_num", "page_size", "order"];

/// `GET /api/v1/snapshot-configs`
pub async fn list(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let p = Params::new(query, LIST_PARAMS)?;
    let page_num = p.int_in("page_num", 1, 1..=1_000_000)?;
    let page_size = p.int_in("page_size", 10, 5..=30)?;
    let order = p.order()?;
    let (domain, app, stream) = (p.get("domain"), p.get("app"), p.get("stream"));
    let keep = |d: &str, a: &str, s: Option<&str>| {
        domain.is_none_or(|x| x == d)
            && app.is_none_or(|x| x == a)
            && stream.is_none_or(|x| Some(x) == s)
    };

    let mut items: Vec<Value> = state
        .node
        .rules
        .config()
        .iter()
        .filter(|r| keep(r.domain(), r.app(), r.stream()))
        .map(config_json)
        .collect();
    let doc = state.node.shared_rules.as_ref().map(|s| s.doc());
    if let Some(doc) = &doc {
        let mut stored: Vec<&StoredRule> = doc
            .rules
            .iter()
            .filter(|r| keep(&r.spec.domain, &r.spec.app, r.spec.stream.as_deref()))
            .collect();
        stored.sort_by(|a, b| {
            (a.create_time, &a.spec.domain, &a.spec.app, &a.spec.stream).cmp(&(
                b.create_time,
                &b.spec.domain,
                &b.spec.app,
                &b.spec.stream,
            ))
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

/// `GET /api/v1/snapshot-configs/{domain}/{app}[/{stream}]`
pub async fn get_one(
    State(state): State<ApiState>,
    Path(at): Path<ScopePath>,
) -> ApiResult<Json<Value>> {
    if let Some(r) = static_rule(&state, &at.domain, &at.app, at.stream()) {
        return Ok(Json(config_json(&r)));
    }
    let doc = state.node.shared_rules.as_ref().map(|s| s.doc());
    match doc
        .as_ref()
        .and_then(|d| d.find(&at.domain, &at.app, at.stream()))
    {
        Some(s) => Ok(Json(stored_json(&state, s))),
        None => Err(not_found(&at)),
    }
}

const CREATE_FIELDS: &[&str] = &[
    "domain",
    "app",
    "stream",
    "interval_secs",
    "storage",
    "overwrite_object",
    "sequence_object",
    "callback",
    "review_url",
    "review_every",
    "review_kick",
    "health",
    "exact",
    "retain_secs",
    "retain_count",
    "outputs",
];

/// An optional field of any shape, absent or null as `None`.
fn opt_value<T: serde::de::DeserializeOwned>(body: &JsonObject, key: &str) -> ApiResult<Option<T>> {
    Ok(match body.value(key)? {
        Field::Value(v) => Some(v),
        Field::Absent | Field::Null => None,
    })
}

fn opt_string(body: &JsonObject, key: &str) -> ApiResult<Option<String>> {
    Ok(match body.string(key)? {
        Field::Value(s) => Some(s),
        Field::Absent | Field::Null => None,
    })
}

/// The `outputs` array, its errors naming the output and field (`outputs[1].fit`).
fn outputs(body: &JsonObject) -> ApiResult<Field<Vec<crate::rules::output::OutputSpec>>> {
    match body.0.get("outputs") {
        None => Ok(Field::Absent),
        Some(serde_json::Value::Null) => Ok(Field::Null),
        Some(v) => crate::rules::output::outputs_from_json(v)
            .map(Field::Value)
            .map_err(|e| ApiError::invalid(e.key, e.message)),
    }
}

fn required_string(body: &JsonObject, key: &str) -> ApiResult<String> {
    match body.string(key)? {
        Field::Value(s) => Ok(s),
        _ => Err(ApiError::invalid(key, "is required")),
    }
}

fn validate(state: &ApiState, spec: &RuleSpec) -> ApiResult<Rule> {
    spec.validate("rule", |s| state.node.settings.storage.contains_key(s))
        .map_err(ApiError::from_rule_error)
}

/// Refuses a rule whose keys could meet those of a config rule, of another stored rule,
/// or of a rule live streams still hold (the one it replaces, say)
/// (`rules::keys_apart`): 400 naming the field and an example key.
fn check_keys_apart(state: &ApiState, rule: &Rule, doc: &RulesDoc) -> ApiResult<()> {
    let storage = &state.node.settings.storage;
    let stored: Vec<Rule> = doc
        .rules
        .iter()
        .filter_map(|s| validate(state, &s.spec).ok())
        .collect();
    crate::rules::keys_apart_from_all(
        rule,
        state.node.rules.config().iter().chain(&stored),
        |a, b| crate::config::same_place(storage, a, b),
    )
    .map_err(|c| ApiError::invalid(c.field, c.to_string()))?;
    state.node.keys_apart_from_live_rules(rule).map_err(|c| {
        ApiError::invalid(
            c.field,
            format!("{c}; live streams still use that rule: try again once they have ended"),
        )
    })
}

/// `POST /api/v1/snapshot-configs`
pub async fn create(State(state): State<ApiState>, body: JsonObject) -> ApiResult<Response> {
    body.only(CREATE_FIELDS)?;
    let cfg = RuleSpec {
        domain: required_string(&body, "domain")?,
        app: required_string(&body, "app")?,
        stream: opt_string(&body, "stream")?,
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
        review_url: opt_string(&body, "review_url")?,
        review_every: opt_value(&body, "review_every")?,
        review_kick: opt_value(&body, "review_kick")?,
        health: opt_value(&body, "health")?,
        exact: opt_value::<bool>(&body, "exact")?.unwrap_or(false),
        retain_secs: opt_value(&body, "retain_secs")?,
        retain_count: opt_value(&body, "retain_count")?,
        outputs: match outputs(&body)? {
            Field::Value(o) => o,
            Field::Absent | Field::Null => Vec::new(),
        },
    };
    let rule = validate(&state, &cfg)?;
    let (domain, app, stream) = (&cfg.domain, &cfg.app, cfg.stream.as_deref());
    if static_rule(&state, domain, app, stream).is_some() {
        return Err(ApiError::already_exists(format!(
            "the config file has a rule for {}",
            rule.describe()
        )));
    }
    let store = store(&state)?;
    let created = store
        .update(|doc, now| {
            if doc.find(domain, app, stream).is_some() {
                return Err(ApiError::already_exists(format!(
                    "a snapshot config for {} exists",
                    rule.describe()
                )));
            }
            check_keys_apart(&state, &rule, doc)?;
            let s = StoredRule {
                spec: cfg.clone(),
                create_time: now,
                update_time: now,
            };
            doc.rules.push(s.clone());
            Ok(s)
        })
        .await
        .map_err(map_update)?;
    tracing::info!(domain = %created.spec.domain, app = %created.spec.app, stream = ?created.spec.stream, "snapshot config added");
    let mut location = format!(
        "/api/v1/snapshot-configs/{}/{}",
        super::path_segment(&created.spec.domain),
        super::path_segment(&created.spec.app)
    );
    if let Some(s) = &created.spec.stream {
        location = format!("{location}/{}", super::path_segment(s));
    }
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
    "review_url",
    "review_every",
    "review_kick",
    "health",
    "exact",
    "retain_secs",
    "retain_count",
    "outputs",
];

/// `PATCH /api/v1/snapshot-configs/{domain}/{app}[/{stream}]`: the given fields
/// only; `null` clears an optional field; the result must still be a valid rule.
pub async fn update(
    State(state): State<ApiState>,
    Path(at): Path<ScopePath>,
    body: JsonObject,
) -> ApiResult<Json<Value>> {
    for fixed in ["domain", "app", "stream"] {
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
    let review_url = body.string("review_url")?;
    let review_every = body.value::<u32>("review_every")?;
    let review_kick = body.value::<crate::rules::spec::ReviewKick>("review_kick")?;
    let health = body.value::<crate::health::HealthOverride>("health")?;
    let exact = body.value::<bool>("exact")?;
    let retain_secs = body.value::<u64>("retain_secs")?;
    let retain_count = body.value::<u64>("retain_count")?;
    let outputs = outputs(&body)?;
    if static_rule(&state, &at.domain, &at.app, at.stream()).is_some() {
        return Err(ApiError::read_only(format!(
            "the rule for {} comes from the config file and is read-only here",
            at.describe()
        )));
    }
    let store = store(&state)?;
    fn set<T: Clone>(slot: &mut Option<T>, f: &Field<T>) {
        match f {
            Field::Absent => {}
            Field::Null => *slot = None,
            Field::Value(v) => *slot = Some(v.clone()),
        }
    }
    let updated = store
        .update(|doc, now| {
            let i = doc
                .position(&at.domain, &at.app, at.stream())
                .ok_or_else(|| not_found(&at))?;
            let old = doc.rules[i].clone();
            let mut new = old.clone();
            let spec = &mut new.spec;
            if let Field::Value(n) = interval {
                spec.interval_secs = n;
            }
            if let Field::Value(s) = &storage {
                spec.storage = s.clone();
            }
            set(&mut spec.overwrite_object, &overwrite);
            set(&mut spec.sequence_object, &sequence);
            set(&mut spec.callback, &callback);
            set(&mut spec.review_url, &review_url);
            set(&mut spec.review_every, &review_every);
            set(&mut spec.review_kick, &review_kick);
            set(&mut spec.health, &health);
            match exact {
                Field::Value(b) => spec.exact = b,
                Field::Null => spec.exact = false,
                Field::Absent => {}
            }
            set(&mut spec.retain_secs, &retain_secs);
            set(&mut spec.retain_count, &retain_count);
            match &outputs {
                Field::Absent => {}
                Field::Null => spec.outputs.clear(),
                Field::Value(o) => spec.outputs = o.clone(),
            }
            let rule = validate(&state, spec)?;
            check_keys_apart(&state, &rule, doc)?;
            new.update_time = now;
            doc.retire(&old, Some(&new), now);
            doc.rules[i] = new.clone();
            Ok(new)
        })
        .await
        .map_err(map_update)?;
    tracing::info!(domain = %at.domain, app = %at.app, stream = ?at.stream, "snapshot config updated");
    Ok(Json(stored_json(&state, &updated)))
}

/// `DELETE /api/v1/snapshot-configs/{domain}/{app}[/{stream}]`
pub async fn delete(
    State(state): State<ApiState>,
    Path(at): Path<ScopePath>,
) -> ApiResult<StatusCode> {
    if static_rule(&state, &at.domain, &at.app, at.stream()).is_some() {
        return Err(ApiError::read_only(format!(
            "the rule for {} comes from the config file and is read-only here",
            at.describe()
        )));
    }
    let store = store(&state)?;
    store
        .update(|doc, now| {
            let i = doc
                .position(&at.domain, &at.app, at.stream())
                .ok_or_else(|| not_found(&at))?;
            let old = doc.rules.remove(i);
            doc.retire(&old, None, now);
            Ok(())
        })
        .await
        .map_err(map_update)?;
    tracing::info!(domain = %at.domain, app = %at.app, stream = ?at.stream, "snapshot config deleted");
    Ok(StatusCode::NO_CONTENT)
}
