//! Request extractors shared by the routes: the Idempotency-Key header, JSON
//! bodies, queries and paths with errors in the API's envelope. The tenant
//! behind an API key and the admin token are [`super::auth`]'s.

use super::error::ApiError;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use eventstore::{IdempotencyKey, InvalidIdempotencyKey};
use serde::de::DeserializeOwned;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

pub use super::auth::{Admin, MetricsReader, Tenant};

/// Header carrying a mutating request's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The validated `Idempotency-Key` header of a mutating request.
#[derive(Debug, Clone)]
pub struct IdempotencyKeyHeader(pub IdempotencyKey);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY_HEADER) else {
            return Err(ApiError::BadRequest {
                code: "missing_idempotency_key",
                message: "mutating requests need an Idempotency-Key header (1-255 printable ASCII characters)".into(),
                details: serde_json::Value::Null,
            });
        };
        let text = value
            .to_str()
            .map_err(|_| invalid_key(InvalidIdempotencyKey::NotPrintableAscii))?;
        if text.starts_with(RESERVED_KEY_PREFIX) {
            return Err(ApiError::BadRequest {
                code: "invalid_idempotency_key",
                message: format!(
                    "invalid Idempotency-Key: keys starting with {RESERVED_KEY_PREFIX} are the process managers' and the scheduler's"
                ),
                details: serde_json::Value::Null,
            });
        }
        IdempotencyKey::parse(text).map(Self).map_err(invalid_key)
    }
}

/// Keys of this prefix are derived from events by the process managers
/// and the scheduler (`pm:<name>:<event_id>:<n>`); a client may not take
/// one first.
pub const RESERVED_KEY_PREFIX: &str = "pm:";

fn invalid_key(error: InvalidIdempotencyKey) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_idempotency_key",
        message: format!("invalid Idempotency-Key: {error}"),
        details: serde_json::Value::Null,
    }
}

/// A JSON body; every failure answers in the error envelope (400, or 413 over
/// the body limit).
///
/// An empty body reads as `{}`: a route whose body has no required field
/// needs none, and one with required fields answers 400 naming the first
/// missing one.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let limit_bytes = request
            .extensions()
            .get::<BodyLimit>()
            .map_or(0, |limit| limit.0);
        let json = json_content_type(request.headers());
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge { limit_bytes }
                } else {
                    ApiError::bad_request(rejection.body_text())
                }
            })?;
        // No body at all, however framed (no length, a length of 0, an
        // empty chunked one).
        if bytes.is_empty() {
            let empty = serde_json::Value::Object(serde_json::Map::new());
            return serde_path_to_error::deserialize(empty)
                .map(Self)
                .map_err(|error| ApiError::bad_request(error.to_string()));
        }
        if !json {
            return Err(ApiError::bad_request(
                "the body must be JSON with Content-Type: application/json",
            ));
        }
        // Every body is an object: a struct would also read from an array.
        if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection, limit_bytes)),
        }
    }
}

/// Whether the request says its body is JSON (`application/json`, or an
/// `application/*+json` type).
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The configured body limit, made visible to extractors.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

fn json_rejection(rejection: JsonRejection, limit_bytes: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge { limit_bytes };
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::bad_request("the body must be JSON with Content-Type: application/json")
        }
        JsonRejection::JsonDataError(error) => ApiError::bad_request(error.body_text()),
        JsonRejection::JsonSyntaxError(error) => ApiError::bad_request(error.body_text()),
        other => ApiError::bad_request(other.body_text()),
    }
}

/// Query parameters; failures answer 400 in the error envelope, naming the
/// parameter.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(error)) => {
                Err(ApiError::bad_request(error.body_text()))
            }
            Err(other) => Err(ApiError::bad_request(other.body_text())),
        }
    }
}

/// Path parameters; a malformed one answers 400 in the error envelope
/// (`invalid_path_parameter`), naming the parameter and the value.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(error)) => {
                let raw = axum::extract::RawPathParams::from_request_parts(parts, state)
                    .await
                    .ok();
                Err(path_error(error.into_kind(), raw))
            }
            // The route has no such parameters: a defect, not bad input.
            Err(other) => Err(ApiError::Internal(other.body_text())),
        }
    }
}

fn path_error(kind: ErrorKind, raw: Option<axum::extract::RawPathParams>) -> ApiError {
    let (message, details) = match &kind {
        ErrorKind::ParseErrorAtKey {
            key,
            value,
            expected_type,
        } => (
            format!("{key}: cannot parse {value:?} as {expected_type}"),
            serde_json::json!({"parameter": key, "value": value}),
        ),
        ErrorKind::DeserializeError {
            key,
            value,
            message,
        } => (
            format!("{key}: invalid value {value:?}: {message}"),
            serde_json::json!({"parameter": key, "value": value}),
        ),
        ErrorKind::InvalidUtf8InPathParam { key } => (
            format!("{key}: not valid UTF-8"),
            serde_json::json!({"parameter": key}),
        ),
        // A value's own refusal (a name, a report's name) says the value
        // but not its parameter: the route's only one, or the one whose
        // value it quotes.
        ErrorKind::Message(text) => {
            let params: Vec<(&str, &str)> = raw.iter().flat_map(|raw| raw.iter()).collect();
            let quoted: Vec<(&str, &str)> = params
                .iter()
                .filter(|(_, value)| text.contains(&format!("{value:?}")))
                .copied()
                .collect();
            let named = match (params.as_slice(), quoted.as_slice()) {
                ([only], _) | (_, [only]) => Some(*only),
                _ => None,
            };
            match named {
                Some((key, value)) => (
                    format!("{key}: invalid value {value:?}: {text}"),
                    serde_json::json!({"parameter": key, "value": value}),
                ),
                None => (
                    format!("invalid path parameter: {text}"),
                    serde_json::Value::Null,
                ),
            }
        }
        other => (
            format!("invalid path parameter: {other}"),
            serde_json::Value::Null,
        ),
    };
    ApiError::BadRequest {
        code: "invalid_path_parameter",
        message,
        details,
    }
}

/// A request body amount: a positive integer in minor units that fits 64
/// bits. Anything else is refused while the body is read, with the field
/// named in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PositiveAmount(pub aggregates::Amount);

/// A whole number in a JSON body, read from its text (never through a
/// float, so nothing is rounded) as JSON Schema reads it: `2`, `2.0`,
/// `2e0` and `0.2e1` are all the integer 2; `2.5` is not an integer.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let raw: &serde_json::value::RawValue = serde::Deserialize::deserialize(deserializer)?;
    let text = raw.get();
    whole_number_of(text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "invalid value: {text}, expected an integer of 64 bits"
        ))
    })
}

/// The integer a JSON number's text spells, if it is whole and fits 64
/// bits.
fn whole_number_of(text: &str) -> Option<i64> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty()
        || !(whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    // The value is the digits times 10^shift.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Some(0);
    }
    let shift = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
    let spelled = if shift >= 0 {
        // Zeros to append; past 19 digits nothing fits 64 bits.
        let zeros = usize::try_from(shift).ok()?;
        if digits.len().checked_add(zeros)? > 19 {
            return None;
        }
        format!("{digits}{}", "0".repeat(zeros))
    } else {
        // The digits the point passes must all be zero.
        let dropped = usize::try_from(shift.unsigned_abs()).ok()?;
        let kept = digits.len().checked_sub(dropped)?;
        let (integral, after) = digits.split_at(kept);
        if kept == 0 || after.bytes().any(|b| b != b'0') {
            return None;
        }
        integral.to_string()
    };
    let magnitude: i128 = spelled.parse().ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

impl<'de> serde::Deserialize<'de> for PositiveAmount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = whole_number(deserializer)?;
        if value <= 0 {
            return Err(serde::de::Error::custom(format!(
                "invalid value: {value}, expected a positive integer"
            )));
        }
        aggregates::Amount::new(value)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

impl PartialSchema for PositiveAmount {
    fn schema() -> RefOr<Schema> {
        aggregates::schema::integer(1)
            .description(Some("A positive integer in minor units"))
            .into()
    }
}

impl ToSchema for PositiveAmount {}

/// A signed amount in a body (a processor's figure: refunds negative), a
/// whole number of 64 bits read from its text as [`PositiveAmount`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct SignedAmount(pub i64);

impl<'de> serde::Deserialize<'de> for SignedAmount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        whole_number(deserializer).map(Self)
    }
}

impl PartialSchema for SignedAmount {
    fn schema() -> RefOr<Schema> {
        aggregates::schema::integer(i64::MIN)
            .description(Some("A signed integer in minor units"))
            .into()
    }
}

impl ToSchema for SignedAmount {}

/// A request body amount that may be zero: a non-negative integer in minor
/// units that fits 64 bits, read as [`PositiveAmount`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct NonNegativeAmount(pub aggregates::Amount);

impl<'de> serde::Deserialize<'de> for NonNegativeAmount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = whole_number(deserializer)?;
        aggregates::Amount::new(value).map(Self).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid value: {value}, expected a non-negative integer"
            ))
        })
    }
}

impl PartialSchema for NonNegativeAmount {
    fn schema() -> RefOr<Schema> {
        aggregates::schema::integer(0)
            .description(Some("A non-negative integer in minor units"))
            .into()
    }
}

impl ToSchema for NonNegativeAmount {}

/// A grant's priority in a body: 0 (burnt first) to
/// [`aggregates::quota::PRIORITY_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority(pub u8);

impl<'de> serde::Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let max = aggregates::quota::PRIORITY_MAX;
        let value = whole_number(deserializer)?;
        u8::try_from(value)
            .ok()
            .filter(|priority| *priority <= max)
            .map(Self)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("invalid value: {value}, expected 0 to {max}"))
            })
    }
}

impl PartialSchema for Priority {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(aggregates::quota::PRIORITY_MAX))
            .default(Some(aggregates::quota::PRIORITY_DEFAULT.into()))
            .into()
    }
}

impl ToSchema for Priority {}

/// A tenant_seq in a query (`min_seq`, `as_of_seq`, `after_seq`): 0 or
/// more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seq(pub i64);

impl<'de> serde::Deserialize<'de> for Seq {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        if value < 0 {
            return Err(serde::de::Error::custom(format!(
                "invalid value: {value}, expected a tenant_seq, 0 or more"
            )));
        }
        Ok(Self(value))
    }
}

impl PartialSchema for Seq {
    fn schema() -> RefOr<Schema> {
        aggregates::schema::integer(0).into()
    }
}

impl ToSchema for Seq {}

/// A point in a tenant's history in a query (`as_of`): a tenant_seq (digits
/// only: the state after it) or a time (the state of the events recorded at
/// or before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOfPoint {
    Seq(i64),
    Time(aggregates::time::BoundedTime),
}

impl<'de> serde::Deserialize<'de> for AsOfPoint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
            return text.parse().map(Self::Seq).map_err(|_| {
                serde::de::Error::custom(format!("{text} is past the largest tenant_seq"))
            });
        }
        text.parse().map(Self::Time).map_err(|error: String| {
            serde::de::Error::custom(format!("neither a tenant_seq nor a time: {error}"))
        })
    }
}

impl PartialSchema for AsOfPoint {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Seq::schema())
            .item(aggregates::time::BoundedTime::schema())
            .into()
    }
}

impl ToSchema for AsOfPoint {}

/// The largest page any list answers.
pub const PAGE_MAX: i64 = 1_000;

/// The page size a list answers without `limit`.
pub const PAGE_DEFAULT: i64 = 100;

/// A page size in a query: 1 to [`PAGE_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(pub i64);

impl PageLimit {
    /// The size asked for, or [`PAGE_DEFAULT`].
    pub fn or_default(limit: Option<Self>) -> i64 {
        limit.map_or(PAGE_DEFAULT, |limit| limit.0)
    }
}

impl<'de> serde::Deserialize<'de> for PageLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        if !(1..=PAGE_MAX).contains(&value) {
            return Err(serde::de::Error::custom(format!(
                "invalid value: {value}, expected 1 to {PAGE_MAX}"
            )));
        }
        Ok(Self(value))
    }
}

impl PartialSchema for PageLimit {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(PAGE_MAX))
            .default(Some(PAGE_DEFAULT.into()))
            .into()
    }
}

impl ToSchema for PageLimit {}

impl PartialSchema for IdempotencyKeyHeader {
    fn schema() -> RefOr<Schema> {
        // Printable ASCII; HTTP drops a header value's leading and trailing
        // spaces, so the key neither starts nor ends with one; and not
        // starting with `pm:` (spelt out without a lookahead, which not
        // every client's regex engine has): a first character other than
        // `p`; or `p` alone or followed by other than `m`; or `pm` alone or
        // followed by other than `:`.
        aggregates::schema::text(
            eventstore::idempotency::IDEMPOTENCY_KEY_LENGTH_MAX,
            concat!(
                r"^([\x21-\x6F\x71-\x7E]([\x20-\x7E]*[\x21-\x7E])?",
                r"|p|p([\x21-\x6C\x6E-\x7E]|[\x20-\x6C\x6E-\x7E][\x20-\x7E]*[\x21-\x7E])",
                r"|pm|pm([\x21-\x39\x3B-\x7E]|[\x20-\x39\x3B-\x7E][\x20-\x7E]*[\x21-\x7E]))$"
            ),
        )
        .into()
    }
}

impl ToSchema for IdempotencyKeyHeader {}

/// A quota type: seats, runs or credits.
// Paths and bodies take text, parsed by [`quota_type`], so that an unknown
// one answers `unknown_quota` listing the valid ones.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum QuotaName {
    Seats,
    Runs,
    Credits,
}

/// A consumable quota type: runs or credits (seats are allocated and
/// released).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ConsumableQuotaName {
    Runs,
    Credits,
}

/// The quota type named in a path or body, or 400 listing the valid ones.
pub fn quota_type(text: &str) -> Result<aggregates::quota::QuotaType, ApiError> {
    aggregates::quota::QuotaType::parse(text).map_err(|error| ApiError::BadRequest {
        code: "unknown_quota",
        message: error.to_string(),
        details: serde_json::json!({"valid": ["seats", "runs", "credits"]}),
    })
}

/// The optional quota account of a body or query, or 400.
pub fn quota_account(
    text: Option<&str>,
) -> Result<Option<aggregates::quota::QuotaAccount>, ApiError> {
    text.map(|text| {
        aggregates::quota::QuotaAccount::parse(text).map_err(|error| ApiError::BadRequest {
            code: "invalid_account",
            message: error.to_string(),
            details: serde_json::Value::Null,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::whole_number_of;

    #[test]
    fn whole_numbers_are_read_as_json_schema_reads_them() {
        for (text, value) in [
            ("2", Some(2)),
            ("-7", Some(-7)),
            ("2.0", Some(2)),
            ("2.000", Some(2)),
            ("2e0", Some(2)),
            ("2E3", Some(2_000)),
            ("0.2e1", Some(2)),
            ("1500e-3", None),
            ("1500e-2", Some(15)),
            ("25e-1", None),
            ("2.5", None),
            ("0", Some(0)),
            ("-0.0", Some(0)),
            ("0e999999", Some(0)),
            ("9223372036854775807", Some(i64::MAX)),
            ("9223372036854775807.0", Some(i64::MAX)),
            ("9223372036854775808", None),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9.223372036854775807e18", Some(i64::MAX)),
            ("1e19", None),
            ("1e-999999999999999999999", None),
            ("\"5\"", None),
            ("null", None),
        ] {
            assert_eq!(whole_number_of(text), value, "{text}");
        }
    }
}
