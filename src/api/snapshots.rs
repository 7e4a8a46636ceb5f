//! `GET /api/v1/snapshots`: the stored snapshots of one stream in a time range,
//! answered from the shared storage (see `listing` for how it stays fast).
//!
//! The templates searched are the sequence templates of every rule that could have
//! applied to the stream's (domain, app) — config rules, stored rules, and the
//! templates that stored rules used before an update or a delete (the rule store's
//! history) — so snapshots taken under an older version of a rule are still found.
//! A rule's `outputs` are searched too, and the objects of one snapshot (same
//! `{Sequence}`, or same second without it) come back as one item listing them all
//! (`catalog::group`).

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::params::{Order, Params};
use super::streams::stream_id;
use super::ApiState;
use crate::clock::rfc3339;
use crate::rules::output::Format;
use crate::storage::catalog::{self, Found, Group, Range};
use crate::storage::template::Template;

/// The longest range one query may cover.
pub const MAX_RANGE_SECS: u64 = 86_400;

const PARAMS: &[&str] = &[
    "domain",
    "app",
    "stream",
    "start_time",
    "end_time",
    "limit",
    "order",
];

/// (storage, template) pairs that may hold snapshots of the stream `id`.
pub fn candidate_templates(
    state: &ApiState,
    id: &crate::names::StreamId,
) -> Vec<(String, Template)> {
    let (domain, app, stream) = (&id.domain, &id.app, &id.stream);
    match &state.node.shared_rules {
        Some(shared) => shared.sequence_templates(domain, app, stream),
        None => crate::rules::shared::sequence_templates(
            &state.node.rules.config_with_retired(),
            None,
            domain,
            app,
            stream,
        ),
    }
}

/// The stored snapshots of `id` between `start` and `end` (Unix seconds), each once with
/// all its outputs, in time order: the search behind the snapshot query and storyboards.
pub async fn search(
    state: &ApiState,
    id: &crate::names::StreamId,
    start: u64,
    end: u64,
) -> ApiResult<Vec<Group>> {
    let range = Range {
        domain: &id.domain,
        app: &id.app,
        stream: &id.stream,
        start,
        end,
    };
    let candidates = candidate_templates(state, id);
    let mut by_storage: BTreeMap<String, Vec<Template>> = BTreeMap::new();
    for (storage, t) in &candidates {
        by_storage
            .entry(storage.clone())
            .or_default()
            .push(t.clone());
    }
    let mut found: Vec<Found> = Vec::new();
    for (storage, templates) in &by_storage {
        let Some(target) = state.node.targets.get(storage) else {
            continue;
        };
        found.extend(catalog::scan(target, templates, &range).await?);
    }
    found.sort_by(|a, b| (a.unix, &a.storage, &a.key).cmp(&(b.unix, &b.storage, &b.key)));
    found.dedup_by(|a, b| a.storage == b.storage && a.key == b.key);
    Ok(catalog::group(found, &candidates, &range))
}

/// What pages are cut by: a time in Unix seconds.
pub trait Timed {
    fn unix(&self) -> u64;
}

impl Timed for Found {
    fn unix(&self) -> u64 {
        self.unix
    }
}

impl Timed for Group {
    fn unix(&self) -> u64 {
        self.unix
    }
}

/// Cuts a page of at most `limit` items (more only when one second holds more) so
/// that it never ends in the middle of a second; returns the page and the time the
/// next page starts at (asc: its start_time; desc: its exclusive end_time).
pub fn cut_page<T: Timed>(mut items: Vec<T>, order: Order, limit: usize) -> (Vec<T>, Option<u64>) {
    if order == Order::Desc {
        items.reverse();
    }
    if items.len() <= limit {
        return (items, None);
    }
    let boundary = items[limit].unix();
    let mut n = limit;
    while n > 0 && items[n - 1].unix() == boundary {
        n -= 1;
    }
    if n == 0 {
        // One second fills the page: give all of it.
        n = limit;
        while n < items.len() && items[n].unix() == boundary {
            n += 1;
        }
        if n == items.len() {
            return (items, None);
        }
    }
    let next = items[n].unix();
    items.truncate(n);
    let next = match order {
        Order::Asc => next,
        Order::Desc => next + 1,
    };
    (items, Some(next))
}

/// `GET /api/v1/snapshots?domain=&app=&stream=&start_time=&end_time=&limit=&order=`
pub async fn query(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let p = Params::new(query, PARAMS)?;
    let id = stream_id(
        p.required("domain")?.to_string(),
        p.required("app")?.to_string(),
        p.required("stream")?.to_string(),
    )?;
    let start = p.time("start_time")?;
    let end = p.time("end_time")?;
    if end <= start {
        return Err(ApiError::invalid("end_time", "must be after start_time"));
    }
    if end - start > MAX_RANGE_SECS {
        return Err(ApiError::invalid(
            "end_time",
            format!(
                "the range may cover one day at most ({MAX_RANGE_SECS} s), got {} s",
                end - start
            ),
        ));
    }
    let limit = p.int_in("limit", 10, 1..=100)? as usize;
    let order = p.order()?;

    let groups = search(&state, &id, start, end).await?;

    let (page, next) = cut_page(groups, order, limit);
    // Verdicts are read only where the stream's rule reviews its snapshots.
    let reviewed = state
        .node
        .rules()
        .lookup(&id.domain, &id.app, &id.stream)
        .is_some_and(|r| r.spec.review_url.is_some());
    let jobs: Vec<_> = page
        .iter()
        .flat_map(|g| &g.members)
        .map(|f| (state.node.targets.get(&f.storage).cloned(), f.clone()))
        .collect();
    let described: Vec<_> = futures::stream::iter(jobs.into_iter().map(|(target, f)| async move {
        match target {
            Some(t) => {
                let verdict = match reviewed {
                    true => crate::review::stored_verdict(&t, &f.key).await,
                    false => None,
                };
                (catalog::describe(&t, &f).await, verdict)
            }
            None => ((f.size, None), None),
        }
    }))
    .buffered(16)
    .collect()
    .await;
    let mut described = described.into_iter();
    let items: Vec<Value> = page
        .iter()
        .map(|g| {
            let members: Vec<_> = g.members.iter().zip(described.by_ref()).collect();
            let object = |f: &Found, size: Option<u64>, dims: Option<(u16, u16)>| {
                json!({
                    "key": f.key,
                    "format": Format::of_key(&f.key).unwrap_or_default().as_str(),
                    "width": dims.map(|d| d.0),
                    "height": dims.map(|d| d.1),
                    "size": size,
                })
            };
            // The first member (output 0 when it was stored) speaks for the snapshot.
            let (f, ((size, dims), review)) = &members[0];
            let mut item = json!({
                "key": f.key,
                "storage": f.storage,
                "create_time": rfc3339(g.unix),
                "width": dims.map(|d| d.0),
                "height": dims.map(|d| d.1),
                "size": size,
            });
            // Snapshots of rules with outputs (or a first object that is not a JPEG) say
            // what they hold; a plain rule's items stay as they always were.
            let format = Format::of_key(&f.key).unwrap_or_default();
            if members.len() > 1 || format != Format::Jpeg {
                item["format"] = json!(format.as_str());
                item["outputs"] = members
                    .iter()
                    .map(|(f, ((size, dims), _))| object(f, *size, *dims))
                    .collect();
                if let Some(n) = g.sequence {
                    item["sequence"] = json!(n);
                }
            }
            if reviewed {
                item["review"] = review.clone().unwrap_or(Value::Null);
            }
            item
        })
        .collect();
    let mut body = json!({
        "domain": id.domain,
        "app": id.app,
        "stream": id.stream,
        "order": if order == Order::Asc { "asc" } else { "desc" },
        "count": items.len(),
        "items": items,
    });
    if let Some(next) = next {
        let key = if order == Order::Asc {
            "next_start_time"
        } else {
            "next_end_time"
        };
        body[key] = json!(rfc3339(next));
    }
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(times: &[u64]) -> Vec<Found> {
        times
            .iter()
            .enumerate()
            .map(|(i, &t)| Found {
                storage: "s".into(),
                key: format!("k{i}"),
                unix: t,
                size: None,
            })
            .collect()
    }

    fn times(v: &[Found]) -> Vec<u64> {
        v.iter().map(|f| f.unix).collect()
    }

    #[test]
    fn pages_never_split_a_second() {
        let (p, next) = cut_page(found(&[1, 2, 3, 4]), Order::Asc, 2);
        assert_eq!((times(&p), next), (vec![1, 2], Some(3)));
        let (p, next) = cut_page(found(&[1, 2, 3, 4]), Order::Desc, 2);
        assert_eq!(
            (times(&p), next),
            (vec![4, 3], Some(3)),
            "desc: next end is exclusive"
        );
        let (p, next) = cut_page(found(&[1, 2, 2, 3]), Order::Asc, 2);
        assert_eq!((times(&p), next), (vec![1], Some(2)));
        let (p, next) = cut_page(found(&[2, 2, 2, 3]), Order::Asc, 2);
        assert_eq!((times(&p), next), (vec![2, 2, 2], Some(3)));
        let (p, next) = cut_page(found(&[2, 2, 2]), Order::Asc, 2);
        assert_eq!((times(&p), next), (vec![2, 2, 2], None));
        let (p, next) = cut_page(found(&[1, 2]), Order::Asc, 2);
        assert_eq!((times(&p), next), (vec![1, 2], None));
    }
}
