//! Reports from the read tables, in one tenant read transaction (row-level
//! security): the journal's entries and the accounts' own movements, each
//! summed as of the report's seq in the database, so a report reads what
//! its period needs, never the events.

use super::{trial_balance, Point, Report, ReportError, ReportName, Scope};
use aggregates::TenantId;
use projections::journal::request_end;
use sqlx::{PgConnection, Row};

/// The tenant's last seq.
pub async fn head(connection: &mut PgConnection, tenant_id: TenantId) -> Result<i64, sqlx::Error> {
    let (head,): (Option<i64>,) =
        sqlx::query_as("SELECT max(tenant_seq) FROM events WHERE tenant_id = $1")
            .bind(tenant_id.as_uuid())
            .fetch_one(connection)
            .await?;
    Ok(head.unwrap_or(0))
}

/// The seq `point` is taken at (refused beyond the tenant's last).
pub async fn seq_of(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    point: Point,
) -> Result<i64, ReportError> {
    let head = head(connection, tenant_id).await?;
    match point {
        Point::Head => Ok(head),
        Point::Seq(asked) if asked > head => Err(ReportError::Ahead { asked, head }),
        // Between requests, never inside one.
        Point::Seq(seq) => Ok(request_end(connection, tenant_id, seq).await?),
        Point::Time(to) => {
            let seq = projections::journal::seq_at(connection, tenant_id, to).await?;
            Ok(request_end(connection, tenant_id, seq).await?)
        }
        // A period is from `from` up to, not including, `to`: the next
        // period starts there.
        Point::Period { to, .. } => {
            let seq = projections::journal::seq_before(connection, tenant_id, to).await?;
            Ok(request_end(connection, tenant_id, seq).await?)
        }
    }
}

/// The scope of a report at `seq` for `point`: the chain hash at it read
/// from the events.
async fn scope(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    point: Point,
    seq: i64,
) -> Result<Scope, ReportError> {
    let row = sqlx::query(
        "SELECT hash, recorded_at FROM events WHERE tenant_id = $1 AND tenant_seq = $2",
    )
    .bind(tenant_id.as_uuid())
    .bind(seq)
    .fetch_optional(connection)
    .await?;
    let head: Option<(Vec<u8>, chrono::DateTime<chrono::Utc>)> = match row {
        Some(row) => Some((row.try_get(0)?, eventstore::timestamp_at(&row, 1)?)),
        None => None,
    };
    let hex = |bytes: &[u8]| bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(Scope {
        tenant_id: tenant_id.to_string(),
        as_of_seq: seq,
        chain_hash: head.as_ref().map(|(bytes, _)| hex(bytes)),
        from: point.from(),
        to: point.to(),
        to_included: point.to_included(),
        at: head.map(|(_, at)| at),
    })
}

type Totals = (String, String, String, String, String, String, String);

/// The trial balance's inputs: the journal's postings summed per account
/// and asset, before the period and in it, and the accounts' own posted
/// balances, as of `scope`'s seq.
async fn trial_balance_input(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    scope: &Scope,
) -> Result<trial_balance::Input, ReportError> {
    let rows: Vec<Totals> = sqlx::query_as(
        "SELECT p.posting->'account'->>'code', min(p.posting->'account'->>'type'), p.posting->>'asset', \
           coalesce(sum((p.posting->>'amount')::numeric) FILTER (WHERE p.posting->>'side' = 'debit' AND e.recorded_at < $3), 0)::text, \
           coalesce(sum((p.posting->>'amount')::numeric) FILTER (WHERE p.posting->>'side' = 'credit' AND e.recorded_at < $3), 0)::text, \
           coalesce(sum((p.posting->>'amount')::numeric) FILTER (WHERE p.posting->>'side' = 'debit' AND ($3 IS NULL OR e.recorded_at >= $3)), 0)::text, \
           coalesce(sum((p.posting->>'amount')::numeric) FILTER (WHERE p.posting->>'side' = 'credit' AND ($3 IS NULL OR e.recorded_at >= $3)), 0)::text \
         FROM journal_entries e CROSS JOIN LATERAL jsonb_array_elements(e.postings) AS p(posting) \
         WHERE e.tenant_id = $1 AND e.tenant_seq <= $2 \
         GROUP BY 1, 3 ORDER BY 1, 3",
    )
    .bind(tenant_id.as_uuid())
    .bind(scope.as_of_seq)
    .bind(scope.from)
    .fetch_all(&mut *connection)
    .await?;
    let mut input = trial_balance::Input::default();
    for (account, account_type, asset, opening_debits, opening_credits, debits, credits) in rows {
        input.totals.push(trial_balance::AccountTotals {
            account,
            account_type,
            asset,
            opening: (sum(&opening_debits)?, sum(&opening_credits)?),
            period: (sum(&debits)?, sum(&credits)?),
        });
    }
    let ledger: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT code, asset, (sum(debits_posted) - sum(credits_posted))::text, \
                sum(debits_pending)::text, sum(credits_pending)::text \
         FROM ledger_account_movements WHERE tenant_id = $1 AND tenant_seq <= $2 \
         GROUP BY 1, 2",
    )
    .bind(tenant_id.as_uuid())
    .bind(scope.as_of_seq)
    .fetch_all(connection)
    .await?;
    for (account, asset, balance, debits_pending, credits_pending) in ledger {
        let key = (account, asset);
        input.ledger.insert(key.clone(), sum(&balance)?);
        let pending = (sum(&debits_pending)?, sum(&credits_pending)?);
        if pending != (0, 0) {
            input.pending.insert(key, pending);
        }
    }
    Ok(input)
}

/// What the journal's own requests posted as of `seq`, per account and
/// asset (`trial_balance::Input::journal_own`): their entries' events name
/// them in their metadata (`command`), whatever the rules they were
/// decided under. Only the entries' events are read, and only for the
/// reports that tie out on accounts the journal may post to.
async fn journal_own(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    seq: i64,
) -> Result<std::collections::BTreeMap<(String, String), (i128, i128)>, ReportError> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT p.posting->'account'->>'code', p.posting->>'asset', \
           coalesce(sum((p.posting->>'amount')::numeric) FILTER (WHERE p.posting->>'side' = 'debit'), 0)::text, \
           coalesce(sum((p.posting->>'amount')::numeric) FILTER (WHERE p.posting->>'side' = 'credit'), 0)::text \
         FROM journal_entries e \
         JOIN events v ON v.tenant_id = e.tenant_id AND v.tenant_seq = e.tenant_seq \
         CROSS JOIN LATERAL jsonb_array_elements(e.postings) AS p(posting) \
         WHERE e.tenant_id = $1 AND e.tenant_seq <= $2 AND e.event_type = 'EntryRecorded' \
           AND v.metadata->>'command' = ANY($3) \
         GROUP BY 1, 2",
    )
    .bind(tenant_id.as_uuid())
    .bind(seq)
    .bind(&commands::requests::journal::OWN_ENTRY_KINDS[..])
    .fetch_all(connection)
    .await?;
    let mut own = std::collections::BTreeMap::new();
    for (account, asset, debits, credits) in rows {
        own.insert((account, asset), (sum(&debits)?, sum(&credits)?));
    }
    Ok(own)
}

/// A sum the database gave as text.
fn sum(text: &str) -> Result<i128, ReportError> {
    text.parse()
        .map_err(|_| ReportError::Corrupt(format!("a sum past 128 bits: {text}")))
}

/// Report `name` of `tenant_id` at `seq` (from [`seq_of`]) for `point`
/// and `options`,
/// on `connection` (a tenant read transaction whose projections have
/// reached `seq`).
pub async fn report(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    name: ReportName,
    (point, options): (Point, super::Options),
    seq: i64,
) -> Result<Report, ReportError> {
    let scope = scope(connection, tenant_id, point, seq).await?;
    let mut journal = trial_balance_input(connection, tenant_id, &scope).await?;
    match name {
        ReportName::TrialBalance => Ok(trial_balance::compute(scope, journal)),
        ReportName::Escrow => {
            journal.journal_own = journal_own(connection, tenant_id, seq).await?;
            let commitments = states_as_of::<aggregates::escrow::Commitment>(
                connection,
                tenant_id,
                (projections::escrow::TABLE, projections::escrow::KIND),
                seq,
            )
            .await?;
            Ok(super::escrow::compute(scope, &journal, &commitments))
        }
        ReportName::Payments => {
            journal.journal_own = journal_own(connection, tenant_id, seq).await?;
            let documents = |kind| (projections::payments::TABLE, kind);
            let payments = states_as_of(connection, tenant_id, documents("payment"), seq).await?;
            let settlements =
                states_as_of(connection, tenant_id, documents("settlement"), seq).await?;
            let payouts = states_as_of(connection, tenant_id, documents("payout"), seq).await?;
            let input = super::payments::Input {
                payments: &payments,
                settlements: &settlements,
                payouts: &payouts,
                window_days: options.settlement_window_days,
            };
            Ok(super::payments::compute(scope, &journal, input))
        }
        ReportName::Payroll => {
            journal.journal_own = journal_own(connection, tenant_id, seq).await?;
            let documents = |kind| (projections::compensation::TABLE, kind);
            let runs = states_as_of(
                connection,
                tenant_id,
                documents(projections::compensation::PAY_RUN),
                seq,
            )
            .await?;
            let payees = states_as_of(
                connection,
                tenant_id,
                documents(projections::compensation::PAYEE),
                seq,
            )
            .await?;
            Ok(super::payroll::compute(scope, &journal, &runs, &payees))
        }
    }
}

/// The states of the aggregates `A` of `tenant_id` as of `seq`, by id,
/// from the documents of `kind` in `table`: a document whose last event is
/// at or before `seq` as it is stored, one changed since folded again from
/// its own events up to `seq` (only those are read from the events).
pub async fn states_as_of<A>(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    (table, kind): (&str, &str),
    seq: i64,
) -> Result<std::collections::BTreeMap<String, A>, ReportError>
where
    A: aggregates::Decide + serde::de::DeserializeOwned,
    A::Error: aggregates::Rejection,
{
    let rows: Vec<(String, i64, serde_json::Value)> = sqlx::query_as(&format!(
        "SELECT id, last_tenant_seq, state FROM {table} \
         WHERE tenant_id = $1 AND kind = $2 AND created_seq <= $3"
    ))
    .bind(tenant_id.as_uuid())
    .bind(kind)
    .bind(seq)
    .fetch_all(&mut *connection)
    .await?;
    let mut states = std::collections::BTreeMap::new();
    let mut changed = Vec::new();
    for (id, last_seq, state) in rows {
        if last_seq <= seq {
            let state: A = serde_json::from_value(state)
                .map_err(|error| ReportError::Corrupt(format!("stored {kind} {id}: {error}")))?;
            states.insert(id, state);
        } else {
            changed.push(id);
        }
    }
    if changed.is_empty() {
        return Ok(states);
    }
    // Decoded as the aggregate reads them: through its upcasters (which
    // see the metadata too; read only when there are any).
    let upcasters = A::upcasters();
    type Row = (String, i64, String, String, String, String);
    let events: Vec<Row> = sqlx::query_as(
        "SELECT aggregate_id, aggregate_seq, event_type, event_version, payload::text, \
                CASE WHEN $5 THEN metadata::text ELSE '{}' END \
         FROM events \
         WHERE tenant_id = $1 AND aggregate_type = $2 AND aggregate_id = ANY($3) AND tenant_seq <= $4 \
         ORDER BY tenant_seq",
    )
    .bind(tenant_id.as_uuid())
    .bind(A::TYPE)
    .bind(&changed)
    .bind(seq)
    .bind(!upcasters.is_empty())
    .fetch_all(connection)
    .await?;
    for (id, sequence, event_type, event_version, payload, metadata) in events {
        let corrupt = |error: serde_json::Error| {
            ReportError::Corrupt(format!("an event of {kind} {id}: {error}"))
        };
        let event: A::Event = if upcasters
            .iter()
            .all(|upcaster| !upcaster.can_upcast(&event_type, &event_version))
        {
            serde_json::from_str(&payload).map_err(corrupt)?
        } else {
            let serialized = cqrs_es::persist::SerializedEvent {
                aggregate_id: id.clone(),
                sequence: usize::try_from(sequence).unwrap_or(usize::MAX),
                aggregate_type: A::TYPE.to_string(),
                event_type,
                event_version,
                payload: serde_json::from_str(&payload).map_err(corrupt)?,
                metadata: serde_json::from_str(&metadata).map_err(corrupt)?,
            };
            aggregates::decide::upcast_and_decode(&upcasters, serialized).map_err(corrupt)?
        };
        states.entry(id).or_insert_with(A::default).apply(event);
    }
    Ok(states)
}
