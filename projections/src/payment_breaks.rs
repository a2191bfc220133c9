//! The breaks of the `payments` projection: each break a settlement
//! import opens, a row of `payment_breaks`, open until it is resolved.
//! Applied per batch in two statements: the breaks opened, then those
//! resolved (a resolution always follows its import).

use crate::decode::decode;
use crate::runtime::ApplyError;
use aggregates::payments::settlement::{
    BreakClass, Outcome, Resolution, Settlement, SettlementEvent, SETTLEMENT_AGGREGATE,
};
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use eventstore::StoredEvent;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use utoipa::ToSchema;
use uuid::Uuid;

const INSERT: &str = "\
    INSERT INTO payment_breaks (tenant_id, break_id, settlement_id, processor, batch_id, asset, \
        line, class, line_type, reference, expected, actual, settled_at, opened_at, opened_seq, \
        status) \
    SELECT t, b, s, p, bi, a, l, c, lt, r, e, ac, sa, oa, os, 'open' \
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], \
                $7::int[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], \
                $13::timestamptz[], $14::timestamptz[], $15::bigint[]) \
        AS x(t, b, s, p, bi, a, l, c, lt, r, e, ac, sa, oa, os) \
    ON CONFLICT (tenant_id, break_id) DO NOTHING";

const RESOLVE: &str = "\
    UPDATE payment_breaks SET status = 'resolved', resolution = x.resolution, reason = x.reason, \
        resolved_at = x.at, resolved_seq = x.seq \
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::bigint[]) \
        AS x(tenant_id, break_id, resolution, reason, at, seq) \
    WHERE payment_breaks.tenant_id = x.tenant_id AND payment_breaks.break_id = x.break_id";

fn text_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[derive(Default)]
struct Opened {
    tenants: Vec<Uuid>,
    breaks: Vec<Uuid>,
    settlements: Vec<String>,
    processors: Vec<String>,
    batches: Vec<String>,
    assets: Vec<String>,
    lines: Vec<i32>,
    classes: Vec<String>,
    line_types: Vec<String>,
    references: Vec<String>,
    expected: Vec<Option<i64>>,
    actual: Vec<i64>,
    settled_at: Vec<DateTime<Utc>>,
    opened_at: Vec<DateTime<Utc>>,
    opened_seq: Vec<i64>,
}

#[derive(Default)]
struct Resolved {
    tenants: Vec<Uuid>,
    breaks: Vec<Uuid>,
    resolutions: Vec<String>,
    reasons: Vec<Option<String>>,
    at: Vec<DateTime<Utc>>,
    seqs: Vec<i64>,
}

/// Writes the breaks `events` open and resolve.
pub(crate) async fn apply(
    connection: &mut PgConnection,
    events: &[&StoredEvent],
) -> Result<(), ApplyError> {
    let (mut opened, mut resolved) = (Opened::default(), Resolved::default());
    for event in events
        .iter()
        .filter(|event| event.aggregate_type == SETTLEMENT_AGGREGATE)
    {
        match decode::<Settlement>(event)? {
            SettlementEvent::SettlementImported {
                processor,
                batch_id,
                asset,
                settled_at,
                lines,
                at,
            } => {
                for (index, settled) in lines.iter().enumerate() {
                    let Outcome::Break {
                        break_id,
                        class,
                        expected,
                    } = &settled.outcome
                    else {
                        continue;
                    };
                    opened.tenants.push(event.tenant_id.as_uuid());
                    opened.breaks.push(*break_id);
                    opened.settlements.push(event.aggregate_id.clone());
                    opened.processors.push(processor.clone());
                    opened.batches.push(batch_id.clone());
                    opened.assets.push(asset.to_string());
                    opened
                        .lines
                        .push(i32::try_from(index + 1).unwrap_or(i32::MAX));
                    opened.classes.push(text_of(class));
                    opened.line_types.push(text_of(&settled.line.line_type));
                    opened.references.push(settled.line.reference.clone());
                    opened.expected.push(*expected);
                    opened.actual.push(settled.line.gross);
                    opened.settled_at.push(settled_at);
                    opened.opened_at.push(at);
                    opened.opened_seq.push(event.tenant_seq);
                }
            }
            SettlementEvent::BreakResolved {
                break_id,
                resolution,
                reason,
                at,
                ..
            } => {
                resolved.tenants.push(event.tenant_id.as_uuid());
                resolved.breaks.push(break_id);
                resolved.resolutions.push(text_of(&resolution));
                resolved.reasons.push(reason);
                resolved.at.push(at);
                resolved.seqs.push(event.tenant_seq);
            }
            _ => {}
        }
    }
    if !opened.breaks.is_empty() {
        sqlx::query(INSERT)
            .bind(&opened.tenants)
            .bind(&opened.breaks)
            .bind(&opened.settlements)
            .bind(&opened.processors)
            .bind(&opened.batches)
            .bind(&opened.assets)
            .bind(&opened.lines)
            .bind(&opened.classes)
            .bind(&opened.line_types)
            .bind(&opened.references)
            .bind(&opened.expected)
            .bind(&opened.actual)
            .bind(&opened.settled_at)
            .bind(&opened.opened_at)
            .bind(&opened.opened_seq)
            .execute(&mut *connection)
            .await?;
    }
    if !resolved.breaks.is_empty() {
        sqlx::query(RESOLVE)
            .bind(&resolved.tenants)
            .bind(&resolved.breaks)
            .bind(&resolved.resolutions)
            .bind(&resolved.reasons)
            .bind(&resolved.at)
            .bind(&resolved.seqs)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// A break as read.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BreakView {
    pub break_id: Uuid,
    /// Its batch, `<processor>:<batch_id>`.
    pub settlement_id: String,
    pub processor: String,
    pub batch_id: String,
    pub asset: String,
    /// Its line in the batch, from 1.
    pub line: i32,
    pub class: BreakClass,
    /// The line's type.
    #[serde(rename = "type")]
    pub line_type: String,
    pub reference: String,
    /// The ledger's gross for the reference, when it has one.
    pub expected: Option<i64>,
    /// The processor's gross.
    pub actual: i64,
    pub settled_at: DateTime<Utc>,
    pub opened_at: DateTime<Utc>,
    pub opened_seq: i64,
    /// `open` or `resolved`.
    pub status: String,
    pub resolution: Option<Resolution>,
    pub reason: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_seq: Option<i64>,
}

const SELECT: &str = "\
    SELECT break_id, settlement_id, processor, batch_id, asset, line, class, line_type, \
        reference, expected, actual, settled_at, opened_at, opened_seq, status, resolution, \
        reason, resolved_at, resolved_seq \
    FROM payment_breaks WHERE tenant_id = $1";

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, sqlx::Error> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|error| sqlx::Error::Decode(format!("{text:?}: {error}").into()))
}

fn view(row: PgRow) -> Result<BreakView, sqlx::Error> {
    let class: String = row.try_get("class")?;
    let resolution: Option<String> = row.try_get("resolution")?;
    Ok(BreakView {
        break_id: row.try_get("break_id")?,
        settlement_id: row.try_get("settlement_id")?,
        processor: row.try_get("processor")?,
        batch_id: row.try_get("batch_id")?,
        asset: row.try_get("asset")?,
        line: row.try_get("line")?,
        class: parse(&class)?,
        line_type: row.try_get("line_type")?,
        reference: row.try_get("reference")?,
        expected: row.try_get("expected")?,
        actual: row.try_get("actual")?,
        settled_at: row.try_get("settled_at")?,
        opened_at: row.try_get("opened_at")?,
        opened_seq: row.try_get("opened_seq")?,
        status: row.try_get("status")?,
        resolution: resolution.as_deref().map(parse).transpose()?,
        reason: row.try_get("reason")?,
        resolved_at: row.try_get("resolved_at")?,
        resolved_seq: row.try_get("resolved_seq")?,
    })
}

/// The tenant's breaks (of `status`, when given) after `after`, by id, at
/// most `limit`, inside a tenant read transaction.
pub async fn list(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    status: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<BreakView>, sqlx::Error> {
    // A plain comparison of the status, when there is one, so that the
    // status index (partial, see migration 0018) may serve it.
    let of_status = if status.is_some() {
        "status = $2"
    } else {
        "$2::text IS NULL"
    };
    let rows = sqlx::query(&format!(
        "{SELECT} AND {of_status} AND ($3::uuid IS NULL OR break_id > $3) \
         ORDER BY break_id LIMIT $4"
    ))
    .bind(tenant_id.as_uuid())
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(connection)
    .await?;
    rows.into_iter().map(view).collect()
}

/// The breaks of settlement batch `settlement_id`, by line.
pub async fn of_settlement(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    settlement_id: &str,
) -> Result<Vec<BreakView>, sqlx::Error> {
    let rows = sqlx::query(&format!("{SELECT} AND settlement_id = $2 ORDER BY line"))
        .bind(tenant_id.as_uuid())
        .bind(settlement_id)
        .fetch_all(connection)
        .await?;
    rows.into_iter().map(view).collect()
}
