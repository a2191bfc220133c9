//! The API's one error type and its mapping to status codes.
//!
//! Every error answer is `{"error": {"code", "message", "details"}}`.
//! Internal errors are logged with their cause and answered with a generic
//! message; their details are never sent.

use crate::pipeline::{error_body, Outcome, PipelineError};
use aggregates::RejectionKind;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use eventstore::StoreError;
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;
use utoipa::ToSchema;

/// Header marking an answer replayed for a repeated Idempotency-Key.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// One error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `quota_exceeded`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Structured details (e.g. `{"available": 3}`); `{}` when none.
    #[schema(value_type = Object)]
    pub details: Value,
}

/// Everything an API call can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// 400: malformed or invalid input.
    BadRequest {
        code: &'static str,
        message: String,
        details: Value,
    },
    /// 401: no, malformed or unknown credentials.
    Unauthorized(String),
    /// 404: unknown route or resource, or another tenant's.
    NotFound(String),
    /// 405: the route exists with other methods.
    MethodNotAllowed,
    /// 408: the request was not received and answered within the request
    /// timeout.
    RequestTimeout { timeout_ms: u64 },
    /// 409: concurrency conflict or request in flight.
    Conflict { code: &'static str, message: String },
    /// 413: body over the limit.
    PayloadTooLarge { limit_bytes: usize },
    /// 422: key reused with another request (domain rules come as outcomes).
    Unprocessable {
        code: &'static str,
        message: String,
        details: Value,
    },
    /// 429: a bound reached (failed authentications from the client's
    /// address, work in flight); answered with `Retry-After` (whole
    /// seconds).
    TooManyRequests {
        message: String,
        retry_after: Duration,
    },
    /// 503: the database is out of reach, or a read could not catch up.
    Unavailable {
        code: &'static str,
        message: String,
        details: Value,
    },
    /// 500: a defect; logged, never detailed to the caller.
    Internal(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            code: "invalid_request",
            message: message.into(),
            details: Value::Null,
        }
    }

    fn parts(&self) -> (StatusCode, &str, String, Value) {
        match self {
            Self::BadRequest {
                code,
                message,
                details,
            } => (
                StatusCode::BAD_REQUEST,
                code,
                message.clone(),
                details.clone(),
            ),
            Self::Unauthorized(message) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                message.clone(),
                Value::Null,
            ),
            Self::NotFound(message) => (
                StatusCode::NOT_FOUND,
                "not_found",
                message.clone(),
                Value::Null,
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method".into(),
                Value::Null,
            ),
            Self::RequestTimeout { timeout_ms } => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request was not received and answered within {timeout_ms} ms"),
                json!({"timeout_ms": timeout_ms}),
            ),
            Self::Conflict { code, message } => {
                (StatusCode::CONFLICT, code, message.clone(), Value::Null)
            }
            Self::PayloadTooLarge { limit_bytes } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body exceeds the limit of {limit_bytes} bytes"),
                json!({"limit_bytes": limit_bytes}),
            ),
            Self::Unprocessable {
                code,
                message,
                details,
            } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                message.clone(),
                details.clone(),
            ),
            Self::TooManyRequests { message, .. } => {
                let seconds = self.retry_after_seconds().unwrap_or(1);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    message.clone(),
                    json!({"retry_after_s": seconds}),
                )
            }
            Self::Unavailable {
                code,
                message,
                details,
            } => (
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                message.clone(),
                details.clone(),
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; it has been logged".into(),
                Value::Null,
            ),
        }
    }
}

impl ApiError {
    /// `Retry-After` of a 429, in whole seconds, rounded up (a client that
    /// waits exactly that long finds the window over).
    fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Self::TooManyRequests { retry_after, .. } => {
                let whole = retry_after.as_secs();
                Some(if retry_after.subsec_nanos() > 0 {
                    whole + 1
                } else {
                    whole
                })
            }
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(%cause, "internal error");
        }
        let retry_after = self.retry_after_seconds();
        let (status, code, message, details) = self.parts();
        let mut response = (status, Json(error_body(code, &message, details))).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<PipelineError> for ApiError {
    fn from(error: PipelineError) -> Self {
        if let PipelineError::Unavailable(cause) = &error {
            tracing::warn!(%cause, "database unavailable");
        }
        Self::of_pipeline(error)
    }
}

/// The status a domain rejection of `kind` answers: the one mapping of
/// rejections to statuses, for every route (and the command metrics).
pub fn rejection_status(kind: RejectionKind) -> StatusCode {
    match kind {
        RejectionKind::Invalid => StatusCode::BAD_REQUEST,
        RejectionKind::NotFound => StatusCode::NOT_FOUND,
        RejectionKind::RuleBroken => StatusCode::UNPROCESSABLE_ENTITY,
        RejectionKind::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
    }
}

/// The status `error` answers (what [`ApiError::from`] gives), for the
/// command metrics.
pub fn pipeline_error_status(error: &PipelineError) -> StatusCode {
    ApiError::of_pipeline(error.clone()).parts().0
}

impl ApiError {
    /// The answer to a pipeline error, without logging it.
    fn of_pipeline(error: PipelineError) -> Self {
        match error {
            PipelineError::KeyReused => Self::Unprocessable {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was already used for a different request".into(),
                details: Value::Null,
            },
            PipelineError::Conflict { attempts } => Self::Conflict {
                code: "conflict",
                message: format!(
                    "the request conflicted with concurrent writes {attempts} times; retry it"
                ),
            },
            PipelineError::Unavailable(_) => Self::unavailable(),
            PipelineError::Late { rounds, within } => Self::Unavailable {
                code: "database_slow",
                message: format!(
                    "the database did not take the request within {} ms of its decision, {rounds} times in a row; nothing was recorded; retry it",
                    within.as_millis()
                ),
                details: json!({ "rounds": rounds, "within_ms": within.as_millis() }),
            },
            PipelineError::Stopped => Self::Unavailable {
                code: "shutting_down",
                message: "the server is shutting down; retry on another instance".into(),
                details: Value::Null,
            },
            PipelineError::UnknownTenant => Self::Unauthorized("unknown tenant".into()),
            PipelineError::Invalid(message) => Self::bad_request(message),
            PipelineError::Internal(cause) => Self::Internal(cause),
            PipelineError::Stale(cause) => Self::Conflict {
                code: "conflict",
                message: format!("the request raced concurrent changes ({cause}); retry it"),
            },
            // Only the scheduler submits requests with a due time; answered
            // as the rejection it is, though not recorded.
            PipelineError::NotDue(not_due) => {
                use aggregates::decide::Rejection;
                Self::Unprocessable {
                    code: not_due.code(),
                    message: not_due.to_string(),
                    details: not_due.details(),
                }
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            tracing::warn!(%error, "database unavailable");
            Self::unavailable()
        } else {
            Self::Internal(error.to_string())
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::from(error).into()
    }
}

impl ApiError {
    /// 503 for an unreachable database.
    pub fn unavailable() -> Self {
        Self::Unavailable {
            code: "database_unavailable",
            message: "the database is unavailable; retry shortly".into(),
            details: Value::Null,
        }
    }
}

/// The HTTP answer to a command's outcome: its status and body, marked when
/// replayed for a repeated key.
pub fn outcome_response(outcome: Outcome) -> Response {
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    replayed_if(
        (status, Json(outcome.body.as_ref())).into_response(),
        outcome.replayed,
    )
}

/// `response`, marked `Idempotent-Replayed: true` when it is the stored
/// answer of an earlier request under the same key.
pub fn replayed_if(mut response: Response, replayed: bool) -> Response {
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}
