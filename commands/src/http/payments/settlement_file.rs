//! A settlement file as a processor sends it: its lines (from JSON or
//! CSV), each checked to add up (`gross - fee = net`), and the file's
//! totals when it states them; anything else is 400 naming the line.

use super::settlements::{SettlementBody, SettlementQuery};
use crate::http::error::ApiError;
use crate::http::extract::{BodyLimit, SignedAmount};
use crate::http::AppState;
use aggregates::payments::settlement::{Line, LineType, LINES_MAX};
use aggregates::text::Name;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// One line of a batch, signed as the processor signs it.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettlementLine {
    #[serde(rename = "type")]
    pub line_type: LineType,
    /// The processor's reference of the capture, refund or dispute it
    /// settles (a fee or adjustment line's own).
    pub reference: Name,
    pub gross: SignedAmount,
    pub fee: SignedAmount,
    /// `gross - fee`.
    pub net: SignedAmount,
}

/// A file's stated totals.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    pub gross: SignedAmount,
    pub fee: SignedAmount,
    pub net: SignedAmount,
}

/// The CSV header.
const HEADER: &str = "type,reference,gross,fee,net";

/// What a CSV batch looks like: the header, one line per row, an optional
/// total row (whether its figures add up is checked on arrival).
pub const CSV_PATTERN: &str = "^type,reference,gross,fee,net\\r?\\n\
    ((capture|refund|dispute|dispute_reversal|fee|adjustment),[A-Za-z0-9][A-Za-z0-9_.-]{0,63},\
    -?[0-9]{1,18},-?[0-9]{1,18},-?[0-9]{1,18}\\r?\\n)+\
    (total,,-?[0-9]{1,18},-?[0-9]{1,18},-?[0-9]{1,18}\\r?\\n)?$";

/// The schema of a CSV batch.
pub struct SettlementCsv;

impl utoipa::PartialSchema for SettlementCsv {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(CSV_PATTERN))
            .description(Some(
                "A settlement batch as CSV: the header `type,reference,gross,fee,net`, a line \
                 per row (gross - fee = net), and optionally a last row `total,,gross,fee,net`",
            ))
            .into()
    }
}

impl ToSchema for SettlementCsv {}

/// Whether the body is CSV (`text/csv`).
pub fn is_csv(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/csv"))
}

/// The body as UTF-8 text, within the body limit.
pub async fn text(request: Request, state: &AppState) -> Result<String, ApiError> {
    let limit_bytes = request
        .extensions()
        .get::<BodyLimit>()
        .map_or(0, |limit| limit.0);
    let bytes = axum::body::Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit_bytes }
            } else {
                ApiError::bad_request(rejection.body_text())
            }
        })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("the CSV body is not UTF-8"))
}

fn bad_line(number: usize, message: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_settlement_file",
        message: format!("line {number}: {message}"),
        details: json!({ "line": number }),
    }
}

/// A CSV batch: the header, then `type,reference,gross,fee,net` per line
/// (a last line of type `total`, with no reference, states the totals),
/// with the rest of the batch from the query; and the row of the file each
/// line stands on (the header is row 1), which errors name.
pub fn from_csv(
    text: &str,
    query: SettlementQuery,
) -> Result<(SettlementBody, Vec<usize>), ApiError> {
    let missing = |name: &str| ApiError::BadRequest {
        code: "settlement_query_missing",
        message: format!("a text/csv batch needs the query parameter {name}"),
        details: json!({ "parameter": name }),
    };
    let mut rows = text
        .lines()
        .enumerate()
        .map(|(index, row)| (index + 1, row.trim()));
    match rows.next() {
        Some((_, header)) if header.trim_start_matches('\u{feff}') == HEADER => {}
        _ => return Err(bad_line(1, format!("the header must be {HEADER}"))),
    }
    let (mut lines, mut numbers, mut total) = (Vec::new(), Vec::new(), None);
    for (number, row) in rows.filter(|(_, row)| !row.is_empty()) {
        if total.is_some() {
            return Err(bad_line(number, "nothing may follow the total"));
        }
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        let [kind, reference, gross, fee, net] = fields[..] else {
            return Err(bad_line(number, format!("expected 5 fields ({HEADER})")));
        };
        let amount = |name: &str, text: &str| {
            text.parse::<i64>()
                .map_err(|_| bad_line(number, format!("{name} {text:?} is not an integer")))
        };
        let (gross, fee, net) = (
            amount("gross", gross)?,
            amount("fee", fee)?,
            amount("net", net)?,
        );
        if kind == "total" && reference.is_empty() {
            total = Some(Totals {
                gross: SignedAmount(gross),
                fee: SignedAmount(fee),
                net: SignedAmount(net),
            });
            continue;
        }
        let line_type: LineType = serde_json::from_value(json!(kind))
            .map_err(|_| bad_line(number, format!("type {kind:?} is not a line type")))?;
        let reference = Name::parse(reference).map_err(|error| bad_line(number, error))?;
        lines.push(SettlementLine {
            line_type,
            reference,
            gross: SignedAmount(gross),
            fee: SignedAmount(fee),
            net: SignedAmount(net),
        });
        numbers.push(number);
    }
    let body = SettlementBody {
        processor: query.processor.ok_or_else(|| missing("processor"))?,
        batch_id: query.batch_id.ok_or_else(|| missing("batch_id"))?,
        settled_at: query.settled_at.ok_or_else(|| missing("settled_at"))?,
        currency: query.currency.ok_or_else(|| missing("currency"))?,
        lines,
        total,
    };
    Ok((body, numbers))
}

/// The lines, each checked (`gross - fee = net`) and all adding up to
/// `total` when it is stated: else 400 naming the first line that does
/// not, by its row in the file (`rows`, a CSV's) or from 1 (a JSON
/// batch's `lines`).
pub fn checked(
    lines: &[SettlementLine],
    total: Option<&Totals>,
    rows: Option<&[usize]>,
) -> Result<Vec<Line>, ApiError> {
    if lines.is_empty() || lines.len() > LINES_MAX {
        return Err(ApiError::bad_request(format!(
            "a batch has 1 to {LINES_MAX} lines, not {}",
            lines.len()
        )));
    }
    let number = |index: usize| {
        rows.and_then(|rows| rows.get(index).copied())
            .unwrap_or(index + 1)
    };
    let mut sums = [0_i128; 3];
    for (index, line) in lines.iter().enumerate() {
        let (gross, fee, net) = (
            i128::from(line.gross.0),
            i128::from(line.fee.0),
            i128::from(line.net.0),
        );
        if gross - fee != net {
            return Err(ApiError::BadRequest {
                code: "settlement_line_does_not_add_up",
                message: format!(
                    "line {}: gross {gross} - fee {fee} is {}, not net {net}",
                    number(index),
                    gross - fee
                ),
                details: json!({"line": number(index), "reference": line.reference}),
            });
        }
        for (sum, amount) in sums.iter_mut().zip([gross, fee, net]) {
            *sum += amount;
        }
    }
    if sums.iter().any(|sum| i64::try_from(*sum).is_err()) {
        return Err(ApiError::Unprocessable {
            code: "amount_overflow",
            message: "the lines' gross, fee or net add up past 64 bits".into(),
            details: json!({}),
        });
    }
    if let Some(total) = total {
        let stated = [total.gross.0, total.fee.0, total.net.0].map(i128::from);
        if stated != sums {
            return Err(ApiError::BadRequest {
                code: "settlement_total_mismatch",
                message: format!(
                    "the lines add up to gross {}, fee {}, net {}; the file states {}, {}, {}",
                    sums[0], sums[1], sums[2], stated[0], stated[1], stated[2]
                ),
                details: json!({"lines": {"gross": sums[0].to_string(), "fee": sums[1].to_string(), "net": sums[2].to_string()}, "total": total}),
            });
        }
    }
    Ok(lines
        .iter()
        .map(|line| Line {
            line_type: line.line_type,
            reference: line.reference.to_string(),
            gross: line.gross.0,
            fee: line.fee.0,
            net: line.net.0,
        })
        .collect())
}
