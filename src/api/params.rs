//! Request parsing for the admin API: query strings checked key by key (an unknown or
//! repeated key is an error naming it), JSON object bodies, RFC 3339 times.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Query, Request};
use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};

/// A query string's parameters, each given at most once and all known.
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// Sort order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

impl Params {
    pub fn new(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        allowed: &[&str],
    ) -> ApiResult<Params> {
        let Query(pairs) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
        for (i, (k, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::invalid(
                    k.clone(),
                    format!("unknown query parameter (known: {})", allowed.join(", ")),
                ));
            }
            if pairs[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(ApiError::invalid(k.clone(), "given more than once"));
            }
        }
        Ok(Params { pairs })
    }

    /// The value, `None` when absent or empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, key: &str) -> ApiResult<&str> {
        self.get(key)
            .ok_or_else(|| ApiError::invalid(key, "is required"))
    }

    /// An integer in `range`, `default` when absent.
    pub fn int_in(
        &self,
        key: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> ApiResult<u64> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        let n: u64 = v.parse().map_err(|_| {
            ApiError::invalid(
                key,
                format!(
                    "must be an integer {}..={}, got {v:?}",
                    range.start(),
                    range.end()
                ),
            )
        })?;
        if !range.contains(&n) {
            return Err(ApiError::invalid(
                key,
                format!("must be {}..={}, got {n}", range.start(), range.end()),
            ));
        }
        Ok(n)
    }

    pub fn order(&self) -> ApiResult<Order> {
        match self.get("order") {
            None | Some("asc") => Ok(Order::Asc),
            Some("desc") => Ok(Order::Desc),
            Some(v) => Err(ApiError::invalid(
                "order",
                format!("must be \"asc\" or \"desc\", got {v:?}"),
            )),
        }
    }

    pub fn bool(&self, key: &str) -> ApiResult<bool> {
        match self.get(key) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(v) => Err(ApiError::invalid(
                key,
                format!("must be true or false, got {v:?}"),
            )),
        }
    }

    /// A required RFC 3339 time, as Unix seconds.
    pub fn time(&self, key: &str) -> ApiResult<u64> {
        parse_time(key, self.required(key)?)
    }
}

/// Parses an RFC 3339 time (`2026-11-01T08:00:00Z`; an offset is converted to UTC,
/// fractions of a second are dropped) into Unix seconds; errors name `field`.
pub fn parse_time(field: &str, s: &str) -> ApiResult<u64> {
    if let Some(t) = crate::clock::parse_rfc3339(s) {
        return Ok(t);
    }
    if s.parse::<opendal::raw::Timestamp>().is_ok() {
        return Err(ApiError::invalid(field, format!("{s:?} is before 1970")));
    }
    Err(ApiError::invalid(
        field,
        format!("must be an RFC 3339 time like \"2026-11-01T08:00:00Z\", got {s:?}"),
    ))
}

/// A request body that must be one JSON object.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(axum::http::header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            if !ct.starts_with("application/json") {
                return Err(ApiError::bad_request(format!(
                    "the body must be JSON (Content-Type: application/json), got {ct:?}"
                )));
            }
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => Ok(JsonObject(m)),
            Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
            Err(e) => Err(ApiError::bad_request(format!(
                "the body is not valid JSON: {e}"
            ))),
        }
    }
}

/// A field of a JSON body: absent, `null`, or a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<T> {
    Absent,
    Null,
    Value(T),
}

impl JsonObject {
    /// Refuses keys outside `allowed`.
    pub fn only(&self, allowed: &[&str]) -> ApiResult<()> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(ApiError::invalid(
                k.clone(),
                format!("unknown field (known: {})", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    pub fn string(&self, key: &str) -> ApiResult<Field<String>> {
        match self.0.get(key) {
            None => Ok(Field::Absent),
            Some(Value::Null) => Ok(Field::Null),
            Some(Value::String(s)) => Ok(Field::Value(s.clone())),
            Some(other) => Err(ApiError::invalid(
                key,
                format!("must be a string, got {other}"),
            )),
        }
    }

    /// A field of any shape serde reads (`T`), e.g. an object.
    pub fn value<T: serde::de::DeserializeOwned>(&self, key: &str) -> ApiResult<Field<T>> {
        match self.0.get(key) {
            None => Ok(Field::Absent),
            Some(Value::Null) => Ok(Field::Null),
            Some(v) => serde_json::from_value(v.clone())
                .map(Field::Value)
                .map_err(|e| ApiError::invalid(key, e.to_string())),
        }
    }

    pub fn int(&self, key: &str) -> ApiResult<Field<i64>> {
        match self.0.get(key) {
            None => Ok(Field::Absent),
            Some(Value::Null) => Ok(Field::Null),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Field::Value)
                .ok_or_else(|| ApiError::invalid(key, format!("must be an integer, got {n}"))),
            Some(other) => Err(ApiError::invalid(
                key,
                format!("must be an integer, got {other}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(
            parse_time("t", "2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000
        );
        assert_eq!(
            parse_time("t", "2023-11-15T00:13:20+02:00").unwrap(),
            1_700_000_000
        );
        assert_eq!(
            parse_time("t", "2023-11-14T22:13:20.75Z").unwrap(),
            1_700_000_000
        );
        assert_eq!(crate::clock::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        let e = parse_time("start_time", "yesterday").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("start_time"));
        assert!(parse_time("t", "1969-12-31T23:59:59Z").is_err());
    }

    fn params(pairs: &[(&str, &str)], allowed: &[&str]) -> ApiResult<Params> {
        let q = Query(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        );
        Params::new(Ok(q), allowed)
    }

    #[test]
    fn unknown_and_repeated_keys_are_named() {
        let e = params(&[("limt", "5")], &["limit"]).err().unwrap();
        assert_eq!(e.field.as_deref(), Some("limt"));
        let e = params(&[("limit", "5"), ("limit", "6")], &["limit"])
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("limit"));
        let p = params(&[("limit", "500")], &["limit"]).unwrap();
        assert_eq!(
            p.int_in("limit", 10, 1..=100).unwrap_err().field.as_deref(),
            Some("limit")
        );
        assert_eq!(
            params(&[], &["limit"])
                .unwrap()
                .int_in("limit", 10, 1..=100)
                .unwrap(),
            10
        );
    }
}
