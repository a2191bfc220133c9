//! The `quota` projection: every grant with its balance, and running totals
//! per quota and holder; and the quota read queries.

use crate::decode::decoded;
use crate::runtime::{ApplyError, Projection};
use aggregates::quota::{
    parse_quota_aggregate_id, Allocation, GrantTerms, Quota, QuotaAccount, QuotaEvent, QuotaType,
    QUOTA_AGGREGATE,
};
use aggregates::{GrantId, TenantId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventstore::StoredEvent;
use serde::Serialize;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

pub const NAME: &str = "quota";

/// Most grants one page lists.
pub const PAGE_MAX: i64 = 1_000;

pub struct QuotaProjection;

struct NewGrant {
    tenant_id: Uuid,
    grant_id: Uuid,
    quota: &'static str,
    account: String,
    source: &'static str,
    amount: Option<i64>,
    priority: i16,
    effective_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    issued_at: DateTime<Utc>,
    /// tenant_seq of the issue: the grant's place in issue order.
    seq: i64,
}

impl NewGrant {
    /// The row of a grant `event` issued with `terms`.
    fn issued(event: &StoredEvent, quota: QuotaType, account: String, terms: GrantTerms) -> Self {
        Self {
            tenant_id: event.tenant_id.as_uuid(),
            grant_id: terms.grant_id.as_uuid(),
            quota: quota.as_str(),
            account,
            source: terms.source.as_str(),
            amount: terms.amount.map(i64::from),
            priority: i16::from(terms.priority),
            effective_at: terms.effective_at,
            expires_at: terms.expires_at,
            issued_at: event.recorded_at,
            seq: event.tenant_seq,
        }
    }
}

/// The quota type and holder (empty for the tenant's own) of a quota
/// event, from its aggregate id.
fn quota_of(event: &StoredEvent) -> Result<(QuotaType, String), ApplyError> {
    let (quota, account) =
        parse_quota_aggregate_id(&event.aggregate_id).ok_or_else(|| ApplyError::Event {
            tenant_seq: event.tenant_seq,
            message: format!("{:?} is not a quota aggregate id", event.aggregate_id),
        })?;
    Ok((quota, account.map(String::from).unwrap_or_default()))
}

#[derive(Default)]
struct Totals {
    granted: i128,
    consumed: i128,
    allocated: i128,
    breakage: i128,
    unlimited_grants: i32,
    seq: i64,
}

struct Closing {
    status: &'static str,
    closed_at: DateTime<Utc>,
    breakage: i64,
    seq: i64,
}

/// A batch's effect, folded in memory and written set-based: one statement
/// per table for every tenant of the batch.
#[derive(Default)]
struct Changes {
    new_grants: Vec<NewGrant>,
    /// (tenant, grant) -> (units used, last seq).
    used: BTreeMap<(Uuid, Uuid), (i64, i64)>,
    closings: BTreeMap<(Uuid, Uuid), Closing>,
    /// (tenant, quota, account) -> totals.
    totals: BTreeMap<(Uuid, &'static str, String), Totals>,
}

/// Which way units move between grants and what they were drawn for.
#[derive(Clone, Copy)]
enum Draw {
    Hold,
    Release,
}

impl Changes {
    fn use_units(
        &mut self,
        tenant: Uuid,
        grant_id: GrantId,
        delta: i64,
        seq: i64,
    ) -> Result<(), ApplyError> {
        let entry = self
            .used
            .entry((tenant, grant_id.as_uuid()))
            .or_insert((0, seq));
        entry.0 = entry.0.checked_add(delta).ok_or(ApplyError::Event {
            tenant_seq: seq,
            message: "grant usage overflows".into(),
        })?;
        entry.1 = seq;
        Ok(())
    }

    /// Units the grants of `allocations` give (`Draw::Hold`) or get back
    /// (`Draw::Release`).
    fn draw(
        &mut self,
        tenant: Uuid,
        allocations: &[Allocation],
        draw: Draw,
        seq: i64,
    ) -> Result<(), ApplyError> {
        for allocation in allocations {
            let units = allocation.amount.value();
            let delta = match draw {
                Draw::Hold => units,
                Draw::Release => -units,
            };
            self.use_units(tenant, allocation.grant_id, delta, seq)?;
        }
        Ok(())
    }

    fn fold(&mut self, event: &StoredEvent, decoded: &QuotaEvent) -> Result<(), ApplyError> {
        let (quota, account) = quota_of(event)?;
        let tenant = event.tenant_id.as_uuid();
        let seq = event.tenant_seq;
        let totals = self
            .totals
            .entry((tenant, quota.as_str(), account.clone()))
            .or_default();
        totals.seq = seq;
        match decoded {
            QuotaEvent::GrantIssued { terms, .. } => {
                match terms.amount {
                    Some(amount) => totals.granted += i128::from(amount.value()),
                    None => totals.unlimited_grants += 1,
                }
                self.new_grants
                    .push(NewGrant::issued(event, quota, account, terms.clone()));
            }
            QuotaEvent::QuotaConsumed {
                amount,
                allocations,
                ..
            } => {
                totals.consumed += i128::from(amount.value());
                self.draw(tenant, allocations, Draw::Hold, seq)?;
            }
            QuotaEvent::SeatsAllocated {
                amount,
                allocations,
                ..
            } => {
                totals.allocated += i128::from(amount.value());
                self.draw(tenant, allocations, Draw::Hold, seq)?;
            }
            QuotaEvent::SeatsReleased {
                amount,
                allocations,
                ..
            } => {
                // Includes seats released from the unbacked ones, which no
                // grant row holds.
                totals.allocated -= i128::from(amount.value());
                self.draw(tenant, allocations, Draw::Release, seq)?;
            }
            QuotaEvent::SeatsMoved {
                from,
                amount,
                allocations,
                ..
            } => {
                // Still allocated: only which grant holds them changes (the
                // part no grant takes is unbacked, held by no row).
                if let Some(grant_id) = from {
                    self.use_units(tenant, *grant_id, -amount.value(), seq)?;
                }
                self.draw(tenant, allocations, Draw::Hold, seq)?;
            }
            QuotaEvent::GrantRevoked {
                grant_id,
                revoked_at,
                breakage,
                ..
            } => {
                totals.breakage += i128::from(breakage.value());
                self.closings.insert(
                    (tenant, grant_id.as_uuid()),
                    Closing {
                        status: "revoked",
                        closed_at: *revoked_at,
                        breakage: breakage.value(),
                        seq,
                    },
                );
            }
            QuotaEvent::GrantExpired {
                grant_id,
                expired_at,
                breakage,
                ..
            } => {
                totals.breakage += i128::from(breakage.value());
                self.closings.insert(
                    (tenant, grant_id.as_uuid()),
                    Closing {
                        status: "expired",
                        closed_at: *expired_at,
                        breakage: breakage.value(),
                        seq,
                    },
                );
            }
        }
        Ok(())
    }
}

const INSERT_GRANTS: &str = "\
    INSERT INTO grants (tenant_id, grant_id, quota, account, source, amount, used, priority, effective_at, \
                        expires_at, issued_at, issued_seq, status, closed_at, breakage, last_tenant_seq) \
    SELECT g.tenant_id, g.grant_id, g.quota, g.account, g.source, g.amount, 0, g.priority, g.effective_at, \
           g.expires_at, g.issued_at, g.seq, 'active', NULL, 0, g.seq \
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::smallint[], \
                $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::bigint[]) \
         AS g(tenant_id, grant_id, quota, account, source, amount, priority, effective_at, expires_at, issued_at, seq)";

const USE_GRANTS: &str = "\
    UPDATE grants g SET used = g.used + d.delta, last_tenant_seq = greatest(g.last_tenant_seq, d.seq) \
    FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::bigint[]) AS d(tenant_id, grant_id, delta, seq) \
    WHERE g.tenant_id = d.tenant_id AND g.grant_id = d.grant_id";

const CLOSE_GRANTS: &str = "\
    UPDATE grants g SET status = c.status, closed_at = c.closed_at, breakage = c.breakage, \
                        last_tenant_seq = greatest(g.last_tenant_seq, c.seq) \
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::bigint[], $6::bigint[]) \
         AS c(tenant_id, grant_id, status, closed_at, breakage, seq) \
    WHERE g.tenant_id = c.tenant_id AND g.grant_id = c.grant_id";

const ADD_TOTALS: &str = "\
    INSERT INTO quota_totals (tenant_id, quota, account, granted, consumed, allocated, breakage, \
                              unlimited_grants, last_tenant_seq) \
    SELECT t.tenant_id, t.quota, t.account, t.granted::numeric, t.consumed::numeric, t.allocated::numeric, \
           t.breakage::numeric, t.unlimited, t.seq \
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[], $9::bigint[]) \
         AS t(tenant_id, quota, account, granted, consumed, allocated, breakage, unlimited, seq) \
    ON CONFLICT (tenant_id, quota, account) DO UPDATE SET \
        granted = quota_totals.granted + EXCLUDED.granted, \
        consumed = quota_totals.consumed + EXCLUDED.consumed, \
        allocated = quota_totals.allocated + EXCLUDED.allocated, \
        breakage = quota_totals.breakage + EXCLUDED.breakage, \
        unlimited_grants = quota_totals.unlimited_grants + EXCLUDED.unlimited_grants, \
        last_tenant_seq = EXCLUDED.last_tenant_seq";

impl Changes {
    /// Writes the batch's changes: one statement per table for every
    /// tenant of the batch (none for a table the batch leaves alone).
    async fn write(&self, connection: &mut PgConnection) -> Result<(), ApplyError> {
        if !self.new_grants.is_empty() {
            self.insert_grants(connection).await?;
        }
        if !self.used.is_empty() {
            self.use_grants(connection).await?;
        }
        if !self.closings.is_empty() {
            self.close_grants(connection).await?;
        }
        if !self.totals.is_empty() {
            self.add_totals(connection).await?;
        }
        Ok(())
    }

    /// Inserts the grants issued.
    async fn insert_grants(&self, connection: &mut PgConnection) -> Result<(), ApplyError> {
        let grants = &self.new_grants;
        sqlx::query(INSERT_GRANTS)
            .bind(
                grants
                    .iter()
                    .map(|grant| grant.tenant_id)
                    .collect::<Vec<_>>(),
            )
            .bind(
                grants
                    .iter()
                    .map(|grant| grant.grant_id)
                    .collect::<Vec<_>>(),
            )
            .bind(grants.iter().map(|grant| grant.quota).collect::<Vec<_>>())
            .bind(
                grants
                    .iter()
                    .map(|grant| grant.account.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(grants.iter().map(|grant| grant.source).collect::<Vec<_>>())
            .bind(grants.iter().map(|grant| grant.amount).collect::<Vec<_>>())
            .bind(
                grants
                    .iter()
                    .map(|grant| grant.priority)
                    .collect::<Vec<_>>(),
            )
            .bind(
                grants
                    .iter()
                    .map(|grant| grant.effective_at)
                    .collect::<Vec<_>>(),
            )
            .bind(
                grants
                    .iter()
                    .map(|grant| grant.expires_at)
                    .collect::<Vec<_>>(),
            )
            .bind(
                grants
                    .iter()
                    .map(|grant| grant.issued_at)
                    .collect::<Vec<_>>(),
            )
            .bind(grants.iter().map(|grant| grant.seq).collect::<Vec<_>>())
            .execute(&mut *connection)
            .await?;
        Ok(())
    }

    /// Adds the units each grant gave or took back.
    async fn use_grants(&self, connection: &mut PgConnection) -> Result<(), ApplyError> {
        sqlx::query(USE_GRANTS)
            .bind(
                self.used
                    .keys()
                    .map(|(tenant, _)| *tenant)
                    .collect::<Vec<_>>(),
            )
            .bind(
                self.used
                    .keys()
                    .map(|(_, grant)| *grant)
                    .collect::<Vec<_>>(),
            )
            .bind(
                self.used
                    .values()
                    .map(|(delta, _)| *delta)
                    .collect::<Vec<_>>(),
            )
            .bind(self.used.values().map(|(_, seq)| *seq).collect::<Vec<_>>())
            .execute(&mut *connection)
            .await?;
        Ok(())
    }

    /// Records the grants revoked or expired.
    async fn close_grants(&self, connection: &mut PgConnection) -> Result<(), ApplyError> {
        let closings = &self.closings;
        sqlx::query(CLOSE_GRANTS)
            .bind(
                closings
                    .keys()
                    .map(|(tenant, _)| *tenant)
                    .collect::<Vec<_>>(),
            )
            .bind(closings.keys().map(|(_, grant)| *grant).collect::<Vec<_>>())
            .bind(
                closings
                    .values()
                    .map(|closing| closing.status)
                    .collect::<Vec<_>>(),
            )
            .bind(
                closings
                    .values()
                    .map(|closing| closing.closed_at)
                    .collect::<Vec<_>>(),
            )
            .bind(
                closings
                    .values()
                    .map(|closing| closing.breakage)
                    .collect::<Vec<_>>(),
            )
            .bind(
                closings
                    .values()
                    .map(|closing| closing.seq)
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *connection)
            .await?;
        Ok(())
    }

    /// Adds to the totals of each quota and holder.
    async fn add_totals(&self, connection: &mut PgConnection) -> Result<(), ApplyError> {
        let totals = &self.totals;
        sqlx::query(ADD_TOTALS)
            .bind(
                totals
                    .keys()
                    .map(|(tenant, _, _)| *tenant)
                    .collect::<Vec<_>>(),
            )
            .bind(
                totals
                    .keys()
                    .map(|(_, quota, _)| *quota)
                    .collect::<Vec<_>>(),
            )
            .bind(
                totals
                    .keys()
                    .map(|(_, _, account)| account.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                totals
                    .values()
                    .map(|total| total.granted.to_string())
                    .collect::<Vec<_>>(),
            )
            .bind(
                totals
                    .values()
                    .map(|total| total.consumed.to_string())
                    .collect::<Vec<_>>(),
            )
            .bind(
                totals
                    .values()
                    .map(|total| total.allocated.to_string())
                    .collect::<Vec<_>>(),
            )
            .bind(
                totals
                    .values()
                    .map(|total| total.breakage.to_string())
                    .collect::<Vec<_>>(),
            )
            .bind(
                totals
                    .values()
                    .map(|total| total.unlimited_grants)
                    .collect::<Vec<_>>(),
            )
            .bind(totals.values().map(|total| total.seq).collect::<Vec<_>>())
            .execute(&mut *connection)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Projection for QuotaProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i32 {
        // 2: grants.issued_seq, SeatsMoved.
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["grants", "quota_totals"]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ApplyError> {
        let mut changes = Changes::default();
        for event in events
            .iter()
            .filter(|event| event.aggregate_type == QUOTA_AGGREGATE)
        {
            changes.fold(event, &*decoded::<Quota>(event)?)?;
        }
        changes.write(connection).await
    }
}

/// A grant as read.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GrantRow {
    pub grant_id: Uuid,
    pub quota: String,
    /// The quota account holding it; `null` for the tenant's own quota.
    pub account: Option<String>,
    pub source: String,
    /// `null` is unlimited.
    pub amount: Option<i64>,
    /// Units consumed, or seats allocated now.
    pub used: i64,
    /// Units left (`amount - used`); `null` for unlimited.
    pub balance: Option<i64>,
    pub priority: i16,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub issued_at: DateTime<Utc>,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    pub closed_at: Option<DateTime<Utc>>,
    pub breakage: i64,
}

type GrantTuple = (
    Uuid,
    String,
    String,
    String,
    Option<i64>,
    i64,
    i16,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    String,
    Option<DateTime<Utc>>,
    i64,
);

const GRANT_COLUMNS: &str =
    "grant_id, quota, account, source, amount, used, priority, effective_at, expires_at, \
                             issued_at, status, closed_at, breakage";

fn grant_from(tuple: GrantTuple) -> GrantRow {
    let (
        grant_id,
        quota,
        account,
        source,
        amount,
        used,
        priority,
        effective_at,
        expires_at,
        issued_at,
        status,
        closed_at,
        breakage,
    ) = tuple;
    GrantRow {
        grant_id,
        quota,
        account: (!account.is_empty()).then_some(account),
        source,
        amount,
        used,
        balance: amount.map(|amount| amount - used),
        priority,
        effective_at,
        expires_at,
        issued_at,
        status,
        closed_at,
        breakage,
    }
}

/// A page of grants in issue order (after `after`), optionally of one quota
/// type and holder. Inside a tenant read transaction.
pub async fn list_grants(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    quota: Option<QuotaType>,
    account: Option<&QuotaAccount>,
    after: Option<GrantId>,
    limit: i64,
) -> Result<Vec<GrantRow>, sqlx::Error> {
    let rows: Vec<GrantTuple> = sqlx::query_as(&format!(
        "SELECT {GRANT_COLUMNS} FROM grants \
         WHERE tenant_id = $1 AND ($2::text IS NULL OR quota = $2) AND ($3::text IS NULL OR account = $3) \
           AND ($4::uuid IS NULL OR (issued_at, grant_id) > \
                (SELECT issued_at, grant_id FROM grants WHERE tenant_id = $1 AND grant_id = $4)) \
         ORDER BY issued_at, grant_id LIMIT $5"
    ))
    .bind(tenant_id.as_uuid())
    .bind(quota.map(QuotaType::as_str))
    .bind(account.map(QuotaAccount::as_str))
    .bind(after.map(|grant_id| grant_id.as_uuid()))
    .bind(limit.clamp(1, PAGE_MAX))
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().map(grant_from).collect())
}

/// One grant of the tenant.
pub async fn get_grant(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    grant_id: GrantId,
) -> Result<Option<GrantRow>, sqlx::Error> {
    let row: Option<GrantTuple> = sqlx::query_as(&format!(
        "SELECT {GRANT_COLUMNS} FROM grants WHERE tenant_id = $1 AND grant_id = $2"
    ))
    .bind(tenant_id.as_uuid())
    .bind(grant_id.as_uuid())
    .fetch_optional(connection)
    .await?;
    Ok(row.map(grant_from))
}

/// Burn-down order of the active grants, as the quota aggregate ranks them:
/// priority, earliest expiry (none last), promotional before paid, issue
/// order, id.
const BURN_DOWN_ORDER: &str =
    "priority, expires_at NULLS LAST, source <> 'promocode', issued_seq, grant_id";

/// A quota of one type for one holder, as read.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct QuotaView {
    pub quota: String,
    pub account: Option<String>,
    /// Units usable now over the active grants in effect; `null` when unlimited.
    pub available: Option<i64>,
    pub unlimited: bool,
    /// Units consumed so far (runs, credits).
    pub consumed: i64,
    /// Seats allocated now.
    pub allocated: i64,
    /// Units of every finite grant ever issued.
    pub granted: i64,
    /// Units lost to expiry and revocation.
    pub breakage: i64,
    /// The active grants with their balances, in burn-down order.
    pub grants: Vec<GrantRow>,
}

type TotalsTuple = (String, String, String, String, String, String);

/// Every quota type of one holder (or one type), with available units as of
/// `now` (the ledger's clock) and the active grants.
pub async fn quota_views(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    quota: Option<QuotaType>,
    account: Option<&QuotaAccount>,
    now: DateTime<Utc>,
) -> Result<Vec<QuotaView>, sqlx::Error> {
    let account_text = account.map_or("", QuotaAccount::as_str);
    let totals: Vec<TotalsTuple> = sqlx::query_as(
        "SELECT quota, account, granted::text, consumed::text, allocated::text, breakage::text \
         FROM quota_totals WHERE tenant_id = $1 AND account = $2 AND ($3::text IS NULL OR quota = $3)",
    )
    .bind(tenant_id.as_uuid())
    .bind(account_text)
    .bind(quota.map(QuotaType::as_str))
    .fetch_all(&mut *connection)
    .await?;
    let active: Vec<GrantTuple> = sqlx::query_as(&format!(
        "SELECT {GRANT_COLUMNS} FROM grants \
         WHERE tenant_id = $1 AND account = $2 AND ($3::text IS NULL OR quota = $3) AND status = 'active' \
         ORDER BY {BURN_DOWN_ORDER}"
    ))
    .bind(tenant_id.as_uuid())
    .bind(account_text)
    .bind(quota.map(QuotaType::as_str))
    .fetch_all(&mut *connection)
    .await?;
    // Each total fits 64 bits: a quota's books keep their totals within
    // them, so what was ever granted to a holder does too. One that does
    // not is not read as another number.
    let number = |text: &str| {
        text.parse::<i64>()
            .map_err(|_| sqlx::Error::Protocol(format!("a quota total of {text}")))
    };
    let mut views = Vec::new();
    let types: Vec<QuotaType> = match quota {
        Some(quota) => vec![quota],
        None => QuotaType::ALL.to_vec(),
    };
    for quota in types {
        let grants: Vec<GrantRow> = active
            .iter()
            .filter(|grant| grant.1 == quota.as_str())
            .cloned()
            .map(grant_from)
            .collect();
        let totals = totals.iter().find(|row| row.0 == quota.as_str());
        let allocated = totals.map_or(Ok(0), |row| number(&row.4))?;
        let available = available_at(quota, &grants, allocated, now);
        views.push(QuotaView {
            quota: quota.as_str().to_string(),
            account: account.map(|account| account.as_str().to_string()),
            available,
            unlimited: available.is_none(),
            consumed: totals.map_or(Ok(0), |row| number(&row.3))?,
            allocated,
            granted: totals.map_or(Ok(0), |row| number(&row.2))?,
            breakage: totals.map_or(Ok(0), |row| number(&row.5))?,
            grants,
        });
    }
    Ok(views)
}

/// Units of `quota` usable at `now` over its active `grants` (`None` when
/// one in effect is unlimited), as the quota aggregate decides them at
/// `now`: a grant past its expiry counts for nothing even before the
/// scheduler expires it. For seats, `allocated` seats that no grant in
/// effect holds (over-allocated after a plan change, or still on a grant
/// past its expiry, which the next decision moves off it) use up room
/// first.
fn available_at(
    quota: QuotaType,
    grants: &[GrantRow],
    allocated: i64,
    now: DateTime<Utc>,
) -> Option<i64> {
    let usable: Vec<&GrantRow> = grants
        .iter()
        .filter(|grant| {
            grant.effective_at <= now && grant.expires_at.is_none_or(|expires| expires > now)
        })
        .collect();
    let mut available: i64 = 0;
    for grant in &usable {
        available = available.saturating_add(grant.balance?);
    }
    if quota == QuotaType::Seats {
        let held = usable
            .iter()
            .fold(0i64, |total, grant| total.saturating_add(grant.used));
        let unbacked = allocated.saturating_sub(held).max(0);
        available = available.saturating_sub(unbacked).max(0);
    }
    Some(available)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, 0, 0, 0).unwrap()
    }

    /// An active grant of `amount` (`None`: unlimited) with `used` drawn,
    /// in effect from day 1, expiring on `expires` when given.
    fn grant(quota: QuotaType, amount: Option<i64>, used: i64, expires: Option<u32>) -> GrantRow {
        GrantRow {
            grant_id: Uuid::nil(),
            quota: quota.as_str().to_string(),
            account: None,
            source: "purchase".to_string(),
            amount,
            used,
            balance: amount.map(|amount| amount - used),
            priority: 0,
            effective_at: at(1),
            expires_at: expires.map(at),
            issued_at: at(1),
            status: "active".to_string(),
            closed_at: None,
            breakage: 0,
        }
    }

    #[test]
    fn seats_on_a_grant_past_its_expiry_need_room_on_the_grants_in_effect() {
        // 8 seats on a grant that expired on day 10, not yet expired by the
        // scheduler; another grant has room for 5. The aggregate moves the
        // 8 first (5 onto the other grant, 3 unbacked) and has none left.
        let seats = QuotaType::Seats;
        let grants = [
            grant(seats, Some(10), 8, Some(10)),
            grant(seats, Some(5), 0, None),
        ];
        assert_eq!(available_at(seats, &grants, 8, at(9)), Some(7));
        assert_eq!(available_at(seats, &grants, 8, at(10)), Some(0));
        let roomier = [
            grant(seats, Some(10), 8, Some(10)),
            grant(seats, Some(12), 1, None),
        ];
        assert_eq!(available_at(seats, &roomier, 9, at(11)), Some(3));
        // Seats over-allocated after a plan change use up room first.
        let downgraded = [grant(seats, Some(5), 5, None)];
        assert_eq!(available_at(seats, &downgraded, 7, at(11)), Some(0));
        let upgraded = [grant(seats, Some(10), 5, None)];
        assert_eq!(available_at(seats, &upgraded, 7, at(11)), Some(3));
    }

    #[test]
    fn consumables_count_only_the_grants_in_effect() {
        let runs = QuotaType::Runs;
        let grants = [
            grant(runs, Some(100), 30, Some(10)),
            grant(runs, Some(50), 0, None),
        ];
        assert_eq!(available_at(runs, &grants, 0, at(9)), Some(120));
        assert_eq!(available_at(runs, &grants, 0, at(10)), Some(50));
        let mut later = grant(runs, Some(40), 0, None);
        later.effective_at = at(20);
        assert_eq!(available_at(runs, &[later], 0, at(19)), Some(0));
        let unlimited = [
            grant(runs, None, 7, Some(10)),
            grant(runs, Some(50), 0, None),
        ];
        assert_eq!(available_at(runs, &unlimited, 0, at(9)), None);
        assert_eq!(available_at(runs, &unlimited, 0, at(10)), Some(50));
    }
}
