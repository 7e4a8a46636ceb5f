//! The admin API's one error type: a kind with its HTTP status and a stable `code`,
//! a message, and the request field it is about. Every handler returns it; the body
//! is always `{"code": "...", "message": "...", "field": "..." | null}`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::Invalid;
use crate::rules::shared::StoreError;
use crate::storage::StorageError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400: a request field is missing, of the wrong type or out of range.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
        }
    }

    /// 400 about the request as a whole (not JSON, not an object).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    /// 401: no or a wrong bearer token.
    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403: the caller may not change this (a rule of the config file).
    pub fn read_only(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "permission_denied", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn already_exists(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "already_exists", message)
    }

    /// 409: the target is not in a state that allows the request (no keyframe yet).
    pub fn failed_precondition(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "failed_precondition", message)
    }

    /// 503: storage (or the rule store) cannot be reached or is busy; retry later.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        )
    }

    /// A rule validation error from `RuleSpec::validate("rule", ..)`: the key
    /// `rule.interval_secs` becomes the field `interval_secs`.
    pub fn from_rule_error(e: Invalid) -> ApiError {
        let field = e.key.strip_prefix("rule.").unwrap_or("overwrite_object");
        ApiError::invalid(field, e.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::unavailable(e.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        ApiError::unavailable(e.to_string())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "admin API error");
        }
        let body = Json(serde_json::json!({
            "code": self.code,
            "message": self.message,
            "field": self.field,
        }));
        if self.status == StatusCode::UNAUTHORIZED {
            (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_errors_name_the_field() {
        let e = ApiError::from_rule_error(crate::error::invalid(
            "rule.interval_secs",
            "must be 5..=3600, got 4",
        ));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.field.as_deref(), Some("interval_secs"));
        let whole = ApiError::from_rule_error(crate::error::invalid(
            "rule",
            "needs overwrite_object, sequence_object or both",
        ));
        assert_eq!(whole.field.as_deref(), Some("overwrite_object"));
    }
}
