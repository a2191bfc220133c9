//! The `subscriptions` projection: the tenant's subscription, one row.

use crate::decode::decode;
use crate::runtime::{ApplyError, Projection};
use aggregates::subscription::{Subscription, SubscriptionEvent, SUBSCRIPTION_AGGREGATE};
use aggregates::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventstore::StoredEvent;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use utoipa::ToSchema;

pub const NAME: &str = "subscriptions";

pub struct Subscriptions;

/// The subscription as read.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SubscriptionRow {
    pub plan: String,
    /// The plan's terms as recorded (limits, period).
    #[schema(value_type = Object)]
    pub terms: Value,
    /// `active` or `cancelled`.
    pub status: String,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub cancel_at_period_end: bool,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub subscribed_at: DateTime<Utc>,
    /// tenant_seq of the last subscription event.
    pub last_tenant_seq: i64,
}

type Row = (
    String,
    Value,
    String,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    DateTime<Utc>,
    bool,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    i64,
);

const SELECT: &str = "\
    SELECT plan_id, plan, status, trial_ends_at, period_start, period_end, cancel_at_period_end, \
           cancelled_at, subscribed_at, last_tenant_seq \
    FROM subscriptions WHERE tenant_id = $1";

const UPSERT: &str = "\
    INSERT INTO subscriptions (tenant_id, plan_id, plan, status, trial_ends_at, period_start, period_end, \
                               cancel_at_period_end, cancelled_at, subscribed_at, last_tenant_seq) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
    ON CONFLICT (tenant_id) DO UPDATE SET plan_id = EXCLUDED.plan_id, plan = EXCLUDED.plan, \
        status = EXCLUDED.status, trial_ends_at = EXCLUDED.trial_ends_at, \
        period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end, \
        cancel_at_period_end = EXCLUDED.cancel_at_period_end, cancelled_at = EXCLUDED.cancelled_at, \
        subscribed_at = EXCLUDED.subscribed_at, last_tenant_seq = EXCLUDED.last_tenant_seq";

fn from_row(row: Row) -> SubscriptionRow {
    let (
        plan,
        terms,
        status,
        trial_ends_at,
        period_start,
        period_end,
        cancel_at_period_end,
        cancelled_at,
        subscribed_at,
        last_tenant_seq,
    ) = row;
    SubscriptionRow {
        plan,
        terms,
        status,
        trial_ends_at,
        period_start,
        period_end,
        cancel_at_period_end,
        cancelled_at,
        subscribed_at,
        last_tenant_seq,
    }
}

/// The tenant's subscription, inside a tenant read transaction.
pub async fn get(
    connection: &mut PgConnection,
    tenant_id: TenantId,
) -> Result<Option<SubscriptionRow>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(SELECT)
        .bind(tenant_id.as_uuid())
        .fetch_optional(connection)
        .await?;
    Ok(row.map(from_row))
}

fn fold(
    row: Option<SubscriptionRow>,
    event: &StoredEvent,
    decoded: SubscriptionEvent,
) -> Result<Option<SubscriptionRow>, ApplyError> {
    let missing = || ApplyError::Event {
        tenant_seq: event.tenant_seq,
        message: format!("{} before any Subscribed", event.event_type),
    };
    let mut row = match decoded {
        SubscriptionEvent::Subscribed {
            plan,
            trial_ends_at,
            period_start,
            period_end,
        } => {
            return Ok(Some(SubscriptionRow {
                plan: plan.id.clone(),
                terms: serde_json::to_value(&plan).map_err(|error| ApplyError::Event {
                    tenant_seq: event.tenant_seq,
                    message: error.to_string(),
                })?,
                status: "active".into(),
                trial_ends_at,
                period_start,
                period_end,
                cancel_at_period_end: false,
                cancelled_at: None,
                subscribed_at: event.recorded_at,
                last_tenant_seq: event.tenant_seq,
            }));
        }
        other => {
            let mut row = row.ok_or_else(missing)?;
            match other {
                SubscriptionEvent::PlanChanged { plan, .. } => {
                    row.plan = plan.id.clone();
                    row.terms = serde_json::to_value(&plan).map_err(|error| ApplyError::Event {
                        tenant_seq: event.tenant_seq,
                        message: error.to_string(),
                    })?;
                }
                SubscriptionEvent::CancellationScheduled { .. } => row.cancel_at_period_end = true,
                SubscriptionEvent::Cancelled { cancelled_at } => {
                    row.status = "cancelled".into();
                    row.cancelled_at = Some(cancelled_at);
                }
                SubscriptionEvent::PeriodRenewed {
                    period_start,
                    period_end,
                } => {
                    row.period_start = period_start;
                    row.period_end = period_end;
                    // A trial runs on past a renewal until its own end.
                    if row
                        .trial_ends_at
                        .is_some_and(|trial_end| trial_end <= period_start)
                    {
                        row.trial_ends_at = None;
                    }
                }
                SubscriptionEvent::Subscribed { .. } => {}
            }
            row
        }
    };
    row.last_tenant_seq = event.tenant_seq;
    Ok(Some(row))
}

#[async_trait]
impl Projection for Subscriptions {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i32 {
        // 2: a trial is kept past a renewal until its own end.
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["subscriptions"]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ApplyError> {
        // Subscription events are rare: fold each tenant's row in memory,
        // from its stored row, and write it back.
        let mut by_tenant: BTreeMap<TenantId, Vec<&StoredEvent>> = BTreeMap::new();
        for event in events
            .iter()
            .filter(|event| event.aggregate_type == SUBSCRIPTION_AGGREGATE)
        {
            by_tenant.entry(event.tenant_id).or_default().push(event);
        }
        for (tenant_id, events) in by_tenant {
            let mut row = get(connection, tenant_id).await?;
            for event in events {
                row = fold(row, event, decode::<Subscription>(event)?)?;
            }
            let Some(row) = row else { continue };
            sqlx::query(UPSERT)
                .bind(tenant_id.as_uuid())
                .bind(&row.plan)
                .bind(&row.terms)
                .bind(&row.status)
                .bind(row.trial_ends_at)
                .bind(row.period_start)
                .bind(row.period_end)
                .bind(row.cancel_at_period_end)
                .bind(row.cancelled_at)
                .bind(row.subscribed_at)
                .bind(row.last_tenant_seq)
                .execute(&mut *connection)
                .await?;
        }
        Ok(())
    }
}
