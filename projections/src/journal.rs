//! The `journal` projection: every journal entry and posting, and account
//! balances; and the journal read queries (entries, balances as of any
//! tenant_seq, trial balance).

use crate::decode::decoded;
use crate::event_rows::{Column, EventRow, EventRows};
use crate::runtime::{ApplyError, Projection};
use aggregates::decide::{Decide, Rejection};
use aggregates::journal::JournalEntry;
use aggregates::journal::Side;
use aggregates::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventstore::{timestamp_at, StoredEvent, TenantRange};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

pub const NAME: &str = "journal";

/// Most entries one page lists.
pub const PAGE_MAX: i64 = 1_000;

/// The journal projection, reading the entries of every aggregate type it
/// is given a reader for (the domain registry gives one per registered
/// aggregate).
pub struct Journal {
    readers: Vec<EntryReader>,
}

impl Journal {
    pub fn new(readers: Vec<EntryReader>) -> Self {
        Self { readers }
    }
}

/// Reads the journal entry (and its reference) an event of one aggregate
/// type records.
#[derive(Clone, Copy)]
pub struct EntryReader {
    pub aggregate_type: &'static str,
    read: fn(&StoredEvent) -> Result<Option<ReadEntry>, ApplyError>,
}

/// An entry an event records, and its reference.
type ReadEntry = (JournalEntry, Option<String>);

impl EntryReader {
    /// The reader of aggregate `A`'s events.
    pub fn of<A>() -> Self
    where
        A: Decide,
        A::Error: Rejection,
        A::Event: 'static,
    {
        Self {
            aggregate_type: A::TYPE,
            read: |event| {
                let decoded = decoded::<A>(event)?;
                Ok(A::journal_entry(&decoded).map(|entry| {
                    (
                        entry.clone(),
                        A::journal_reference(&decoded).map(str::to_string),
                    )
                }))
            },
        }
    }
}

struct EntryRow<'a> {
    event: &'a StoredEvent,
    reference: Option<String>,
    entry: JournalEntry,
}

impl EntryRow<'_> {
    /// The row as [`EventRows`] compares it.
    fn event_row(&self) -> Result<EventRow, ApplyError> {
        let event = self.event;
        Ok(EventRow {
            tenant_id: event.tenant_id.as_uuid(),
            tenant_seq: event.tenant_seq,
            columns: vec![
                Column::Plain(Value::from(event.aggregate_type.as_str())),
                Column::Plain(Value::from(event.aggregate_id.as_str())),
                Column::Plain(Value::from(event.event_type.as_str())),
                Column::Plain(self.reference.as_deref().map_or(Value::Null, Value::from)),
                Column::Plain(Value::from(event.recorded_at.timestamp_micros())),
                Column::Json(
                    eventstore::canonical::to_canonical_json(self.entry.postings())
                        .map_err(|error| unserializable(event, &error))?,
                ),
            ],
        })
    }
}

/// A live time as its microseconds; at either end of what a `DateTime`
/// holds (where a time none holds, `infinity`, reads too), undecided: the
/// database decides.
fn micros_within_range(at: DateTime<Utc>) -> Column {
    if at == DateTime::<Utc>::MAX_UTC || at == DateTime::<Utc>::MIN_UTC {
        Column::Undecided
    } else {
        Column::Plain(Value::from(at.timestamp_micros()))
    }
}

/// `event`'s postings that have no JSON text.
fn unserializable(event: &StoredEvent, error: &dyn std::fmt::Display) -> ApplyError {
    ApplyError::Event {
        tenant_seq: event.tenant_seq,
        message: error.to_string(),
    }
}

#[derive(Default)]
struct BalanceDelta {
    account_type: &'static str,
    debits: i128,
    credits: i128,
    seq: i64,
}

const INSERT_ENTRIES: &str = "\
    INSERT INTO journal_entries (tenant_id, tenant_seq, aggregate_type, aggregate_id, event_type, reference, recorded_at, postings) \
    SELECT e.tenant_id, e.seq, e.aggregate_type, e.aggregate_id, e.event_type, e.reference, e.recorded_at, e.postings::jsonb \
    FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[]) \
         AS e(tenant_id, seq, aggregate_type, aggregate_id, event_type, reference, recorded_at, postings)";

const ADD_BALANCES: &str = "\
    INSERT INTO account_balances (tenant_id, account, asset, account_type, debits, credits, last_tenant_seq) \
    SELECT b.tenant_id, b.account, b.asset, b.account_type, b.debits::numeric, b.credits::numeric, b.seq \
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[]) \
         AS b(tenant_id, account, asset, account_type, debits, credits, seq) \
    ON CONFLICT (tenant_id, account, asset) DO UPDATE SET \
        debits = account_balances.debits + EXCLUDED.debits, \
        credits = account_balances.credits + EXCLUDED.credits, \
        last_tenant_seq = EXCLUDED.last_tenant_seq \
    WHERE account_balances.account_type = EXCLUDED.account_type";

#[async_trait]
impl Projection for Journal {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["journal_entries", "account_balances"]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ApplyError> {
        let (entries, balances) = collect(&self.readers, events)?;
        if entries.is_empty() {
            return Ok(());
        }
        EntryColumns::of_entries(&entries)?
            .insert(&mut *connection)
            .await?;
        add_balances(connection, &balances).await?;
        Ok(())
    }

    fn event_rows(&self) -> Option<&dyn EventRows> {
        Some(self)
    }
}

/// The live entries of some ranges, read back for a comparison.
const LIVE_ENTRIES: &str = "\
    SELECT j.tenant_id, j.tenant_seq, j.aggregate_type, j.aggregate_id, j.event_type, j.reference, j.recorded_at, j.postings::text \
    FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS r(tenant_id, after_seq, until_seq) \
    CROSS JOIN LATERAL ( \
        SELECT * FROM public.journal_entries e \
        WHERE e.tenant_id = r.tenant_id AND e.tenant_seq > r.after_seq AND e.tenant_seq <= r.until_seq \
    ) j \
    ORDER BY j.tenant_id, j.tenant_seq";

/// An entry is its event's alone, written once: a comparison sets the
/// entries a replay gives beside the live ones in memory.
#[async_trait]
impl EventRows for Journal {
    fn table(&self) -> &'static str {
        "journal_entries"
    }

    fn columns(&self) -> &'static [&'static str] {
        &[
            "tenant_id",
            "tenant_seq",
            "aggregate_type",
            "aggregate_id",
            "event_type",
            "reference",
            "recorded_at",
            "postings",
        ]
    }

    async fn apply_rest(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<Vec<EventRow>, ApplyError> {
        let (entries, balances) = collect(&self.readers, events)?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        add_balances(connection, &balances).await?;
        entries.iter().map(EntryRow::event_row).collect()
    }

    async fn live(
        &self,
        connection: &mut PgConnection,
        ranges: &[TenantRange],
    ) -> Result<Vec<EventRow>, sqlx::Error> {
        let rows = sqlx::query(LIVE_ENTRIES)
            .bind(
                ranges
                    .iter()
                    .map(|range| range.tenant_id.as_uuid())
                    .collect::<Vec<_>>(),
            )
            .bind(
                ranges
                    .iter()
                    .map(|range| range.after_seq)
                    .collect::<Vec<_>>(),
            )
            .bind(
                ranges
                    .iter()
                    .map(|range| range.until_seq)
                    .collect::<Vec<_>>(),
            )
            .fetch_all(connection)
            .await?;
        rows.iter()
            .map(|row| {
                let text = |index| row.try_get::<String, _>(index).map(Value::from);
                let reference: Option<String> = row.try_get(5)?;
                Ok(EventRow {
                    tenant_id: row.try_get(0)?,
                    tenant_seq: row.try_get(1)?,
                    columns: vec![
                        Column::Plain(text(2)?),
                        Column::Plain(text(3)?),
                        Column::Plain(text(4)?),
                        Column::Plain(reference.map_or(Value::Null, Value::from)),
                        micros_within_range(timestamp_at(row, 6)?),
                        Column::Json(row.try_get(7)?),
                    ],
                })
            })
            .collect()
    }

    async fn write(
        &self,
        connection: &mut PgConnection,
        rows: &[EventRow],
    ) -> Result<(), sqlx::Error> {
        EntryColumns::of_event_rows(rows).insert(connection).await
    }
}

/// A batch's changes of balances: (tenant, account, asset) -> change.
type BalanceDeltas = BTreeMap<(Uuid, String, String), BalanceDelta>;

/// The journal entries of a batch's events, and the balance changes they
/// post.
fn collect<'a>(
    readers: &[EntryReader],
    events: &'a [&'a StoredEvent],
) -> Result<(Vec<EntryRow<'a>>, BalanceDeltas), ApplyError> {
    let mut entries = Vec::new();
    let mut balances: BalanceDeltas = BTreeMap::new();
    for event in events {
        let Some(reader) = readers
            .iter()
            .find(|reader| reader.aggregate_type == event.aggregate_type)
        else {
            continue;
        };
        let Some((entry, reference)) = (reader.read)(event)? else {
            continue;
        };
        for posting in entry.postings() {
            let balance = balances
                .entry((
                    event.tenant_id.as_uuid(),
                    posting.account.code.clone(),
                    posting.asset.to_string(),
                ))
                .or_default();
            let account_type = posting.account.account_type.as_str();
            if !balance.account_type.is_empty() && balance.account_type != account_type {
                return Err(ApplyError::Event {
                    tenant_seq: event.tenant_seq,
                    message: format!(
                        "account {} posted as {account_type}, earlier as {}",
                        posting.account.code, balance.account_type
                    ),
                });
            }
            balance.account_type = account_type;
            balance.seq = event.tenant_seq;
            match posting.side {
                Side::Debit => balance.debits += i128::from(posting.amount.value()),
                Side::Credit => balance.credits += i128::from(posting.amount.value()),
            }
        }
        entries.push(EntryRow {
            event,
            reference,
            entry,
        });
    }
    Ok((entries, balances))
}

/// A batch's entries, column by column.
#[derive(Default)]
struct EntryColumns<'a> {
    tenants: Vec<Uuid>,
    seqs: Vec<i64>,
    aggregate_types: Vec<&'a str>,
    aggregate_ids: Vec<&'a str>,
    event_types: Vec<&'a str>,
    references: Vec<Option<&'a str>>,
    recorded_at: Vec<DateTime<Utc>>,
    postings: Vec<String>,
}

impl<'a> EntryColumns<'a> {
    fn of_entries(entries: &'a [EntryRow<'a>]) -> Result<Self, ApplyError> {
        let mut columns = Self::default();
        for row in entries {
            let event = row.event;
            columns.tenants.push(event.tenant_id.as_uuid());
            columns.seqs.push(event.tenant_seq);
            columns.aggregate_types.push(&event.aggregate_type);
            columns.aggregate_ids.push(&event.aggregate_id);
            columns.event_types.push(&event.event_type);
            columns.references.push(row.reference.as_deref());
            columns.recorded_at.push(event.recorded_at);
            columns.postings.push(
                serde_json::to_string(row.entry.postings())
                    .map_err(|error| unserializable(event, &error))?,
            );
        }
        Ok(columns)
    }

    /// The columns of rows [`EntryRow::event_row`] gave.
    fn of_event_rows(rows: &'a [EventRow]) -> Self {
        let mut columns = Self::default();
        // A replay's row: every column but the postings plain.
        let plain = |row: &'a EventRow, index: usize| match &row.columns[index] {
            Column::Plain(value) => value,
            Column::Json(_) | Column::Undecided => &Value::Null,
        };
        for row in rows {
            columns.tenants.push(row.tenant_id);
            columns.seqs.push(row.tenant_seq);
            columns
                .aggregate_types
                .push(plain(row, 0).as_str().unwrap_or_default());
            columns
                .aggregate_ids
                .push(plain(row, 1).as_str().unwrap_or_default());
            columns
                .event_types
                .push(plain(row, 2).as_str().unwrap_or_default());
            columns.references.push(plain(row, 3).as_str());
            columns.recorded_at.push(
                plain(row, 4)
                    .as_i64()
                    .and_then(DateTime::from_timestamp_micros)
                    .unwrap_or_default(),
            );
            columns.postings.push(match &row.columns[5] {
                Column::Json(text) => text.clone(),
                Column::Plain(value) => value.to_string(),
                Column::Undecided => String::new(),
            });
        }
        columns
    }

    /// Writes them: one statement for every tenant of the batch.
    async fn insert(self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(INSERT_ENTRIES)
            .bind(self.tenants)
            .bind(self.seqs)
            .bind(self.aggregate_types)
            .bind(self.aggregate_ids)
            .bind(self.event_types)
            .bind(self.references)
            .bind(self.recorded_at)
            .bind(self.postings)
            .execute(connection)
            .await?;
        Ok(())
    }
}

/// Adds a batch's balance changes: one statement for every tenant of the
/// batch.
async fn add_balances(
    connection: &mut PgConnection,
    balances: &BalanceDeltas,
) -> Result<(), ApplyError> {
    let added = sqlx::query(ADD_BALANCES)
        .bind(
            balances
                .keys()
                .map(|(tenant, _, _)| *tenant)
                .collect::<Vec<_>>(),
        )
        .bind(
            balances
                .keys()
                .map(|(_, account, _)| account.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            balances
                .keys()
                .map(|(_, _, asset)| asset.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            balances
                .values()
                .map(|balance| balance.account_type)
                .collect::<Vec<_>>(),
        )
        .bind(
            balances
                .values()
                .map(|balance| balance.debits.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(
            balances
                .values()
                .map(|balance| balance.credits.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(
            balances
                .values()
                .map(|balance| balance.seq)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *connection)
        .await?;
    // A row not inserted nor updated is an account posted as another type
    // than its earlier postings: every code keeps one type in a tenant.
    if added.rows_affected() != balances.len() as u64 {
        return Err(type_changed(connection, balances).await);
    }
    Ok(())
}

/// The error naming the account of `balances` posted as another type than
/// the balances table has it.
async fn type_changed(connection: &mut PgConnection, balances: &BalanceDeltas) -> ApplyError {
    for ((tenant, account, asset), balance) in balances {
        let stored: Result<Option<(String,)>, sqlx::Error> = sqlx::query_as(
            "SELECT account_type FROM account_balances \
             WHERE tenant_id = $1 AND account = $2 AND asset = $3",
        )
        .bind(tenant)
        .bind(account)
        .bind(asset)
        .fetch_optional(&mut *connection)
        .await;
        match stored {
            Ok(Some((stored,))) if stored != balance.account_type => {
                return ApplyError::Event {
                    tenant_seq: balance.seq,
                    message: format!(
                        "account {account} posted as {}, earlier as {stored}",
                        balance.account_type
                    ),
                }
            }
            Ok(_) => {}
            Err(error) => return error.into(),
        }
    }
    ApplyError::Event {
        tenant_seq: 0,
        message: "an account balance was neither added nor updated".into(),
    }
}

/// A journal entry as read.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Entry {
    pub tenant_seq: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub reference: Option<String>,
    pub recorded_at: DateTime<Utc>,
    #[schema(value_type = Vec<Object>)]
    pub postings: Value,
}

type EntryTuple = (
    i64,
    String,
    String,
    String,
    Option<String>,
    DateTime<Utc>,
    Value,
);

/// Entries after `after_seq`, in order, at most `limit`.
pub async fn entries(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    entries_posting_to(connection, tenant_id, None, after_seq, limit).await
}

/// Entries after `after_seq` (of one account only, when `account` is
/// given), in order, at most `limit`.
pub async fn entries_posting_to(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    account: Option<&str>,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    // An account's entries: those with a posting to it (jsonb containment).
    let posting = account.map(|code| serde_json::json!([{"account": {"code": code}}]));
    let rows: Vec<EntryTuple> = sqlx::query_as(
        "SELECT tenant_seq, aggregate_type, aggregate_id, event_type, reference, recorded_at, postings \
         FROM journal_entries WHERE tenant_id = $1 AND tenant_seq > $2 \
           AND ($4::jsonb IS NULL OR postings @> $4::jsonb) \
         ORDER BY tenant_seq LIMIT $3",
    )
    .bind(tenant_id.as_uuid())
    .bind(after_seq)
    .bind(limit.clamp(1, PAGE_MAX))
    .bind(posting)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                tenant_seq,
                aggregate_type,
                aggregate_id,
                event_type,
                reference,
                recorded_at,
                postings,
            )| Entry {
                tenant_seq,
                aggregate_type,
                aggregate_id,
                event_type,
                reference,
                recorded_at,
                postings,
            },
        )
        .collect())
}

/// An account's totals in one asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AccountBalance {
    pub account: String,
    #[serde(rename = "type")]
    pub account_type: String,
    pub asset: String,
    /// Sums as decimal strings (they may exceed 64 bits).
    pub debits: String,
    pub credits: String,
    /// Credits minus debits, whatever the account's type (an asset holding
    /// 8410 reads -8410; the trial balance and reports show debits minus
    /// credits; `available` follows the account's normal side).
    pub balance: String,
    /// Debits and credits reserved by open holds (journal accounts only;
    /// `"0"` for the others).
    pub debits_pending: String,
    pub credits_pending: String,
    /// What the account can still give on its normal side: for a
    /// debit-normal account (asset, expense) debits less credits less
    /// pending credits; for a credit-normal one the mirror.
    pub available: String,
}

impl AccountBalance {
    /// An account with nothing posted in `asset`.
    pub fn unposted(account: String, account_type: String, asset: String) -> Self {
        Self {
            account,
            account_type,
            asset,
            debits: "0".into(),
            credits: "0".into(),
            balance: "0".into(),
            debits_pending: String::new(),
            credits_pending: String::new(),
            available: String::new(),
        }
        .with_pending("0", "0")
    }

    /// Sets the pending amounts (decimal strings) and the available
    /// balance they leave.
    pub fn with_pending(mut self, debits_pending: &str, credits_pending: &str) -> Self {
        self.debits_pending = debits_pending.to_string();
        self.credits_pending = credits_pending.to_string();
        self.available = available(
            &self.account_type,
            [
                &self.debits,
                &self.credits,
                &self.debits_pending,
                &self.credits_pending,
            ],
        );
        self
    }
}

/// The available balance of an account of type `account_type` with
/// `[debits, credits, debits_pending, credits_pending]`.
fn available(account_type: &str, sums: [&str; 4]) -> String {
    let [debits, credits, debits_pending, credits_pending] = sums.map(parse);
    match aggregates::journal::AccountType::parse(account_type) {
        Some(account_type) => account_type
            .available(debits, credits, debits_pending, credits_pending)
            .to_string(),
        None => (credits - debits).to_string(),
    }
}

/// Per asset, the sum of all debits and of all credits: equal in a sound ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TrialBalanceLine {
    pub asset: String,
    pub debits: String,
    pub credits: String,
    /// Whether debits equal credits.
    pub balanced: bool,
}

type BalanceTuple = (String, String, String, String, String);

/// The tenant_seq of the tenant's last event recorded at or before `at`
/// (0 before its first): the point a balance as of `at` is taken at.
pub async fn seq_at(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    at: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    last_seq(connection, tenant_id, at, "<=").await
}

/// The tenant_seq of the tenant's last event recorded before `at` (0
/// before its first): where a period ending at `at` ends.
pub async fn seq_before(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    at: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    last_seq(connection, tenant_id, at, "<").await
}

async fn last_seq(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    at: DateTime<Utc>,
    compared: &'static str,
) -> Result<i64, sqlx::Error> {
    let query = format!(
        "SELECT max(tenant_seq) FROM events WHERE tenant_id = $1 AND recorded_at {compared} $2"
    );
    let (seq,): (Option<i64>,) = sqlx::query_as(&query)
        .bind(tenant_id.as_uuid())
        .bind(at)
        .fetch_one(connection)
        .await?;
    Ok(seq.unwrap_or(0))
}

/// The last seq at or before `seq` that ends a request (its next event is
/// another request's, or there is none): a point in the history taken
/// between requests, never inside one, whose entries, holds and account
/// movements are one decision.
pub async fn request_end(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    seq: i64,
) -> Result<i64, sqlx::Error> {
    let (end,): (Option<i64>,) = sqlx::query_as(
        "SELECT (SELECT e.tenant_seq FROM events e \
                 LEFT JOIN events n ON n.tenant_id = e.tenant_id AND n.tenant_seq = e.tenant_seq + 1 \
                 WHERE e.tenant_id = $1 AND e.tenant_seq <= $2 \
                   AND (n.tenant_seq IS NULL OR n.idempotency_key <> e.idempotency_key) \
                 ORDER BY e.tenant_seq DESC LIMIT 1)",
    )
    .bind(tenant_id.as_uuid())
    .bind(seq)
    .fetch_one(connection)
    .await?;
    Ok(end.unwrap_or(0))
}

pub async fn balances(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    as_of_seq: Option<i64>,
) -> Result<(Vec<AccountBalance>, i64), sqlx::Error> {
    let (rows, seq): (Vec<BalanceTuple>, i64) = match as_of_seq {
        None => {
            // The live balances with the checkpoint they are at, read in
            // one statement (one snapshot: a batch commits both at once),
            // so the seq names exactly what the figures include.
            type Row = (
                i64,
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
            );
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT r.last_seq, b.account, b.account_type, b.asset, b.debits::text, b.credits::text \
                 FROM (SELECT coalesce(max(last_seq), 0) AS last_seq FROM projection_checkpoints \
                       WHERE tenant_id = $1 AND projection = $2) r \
                 LEFT JOIN account_balances b ON b.tenant_id = $1 \
                 ORDER BY b.account, b.asset",
            )
            .bind(tenant_id.as_uuid())
            .bind(NAME)
            .fetch_all(connection)
            .await?;
            let seq = rows.first().map_or(0, |row| row.0);
            let balances = rows
                .into_iter()
                .filter_map(|(_, account, account_type, asset, debits, credits)| {
                    Some((account?, account_type?, asset?, debits?, credits?))
                })
                .collect();
            (balances, seq)
        }
        Some(seq) => {
            let rows = sqlx::query_as(
                "SELECT p.posting->'account'->>'code', min(p.posting->'account'->>'type'), p.posting->>'asset', \
                        coalesce(sum((p.posting->>'amount')::numeric) FILTER (WHERE p.posting->>'side' = 'debit'), 0)::text, \
                        coalesce(sum((p.posting->>'amount')::numeric) FILTER (WHERE p.posting->>'side' = 'credit'), 0)::text \
                 FROM journal_entries e CROSS JOIN LATERAL jsonb_array_elements(e.postings) AS p(posting) \
                 WHERE e.tenant_id = $1 AND e.tenant_seq <= $2 \
                 GROUP BY 1, 3 ORDER BY 1, 3",
            )
            .bind(tenant_id.as_uuid())
            .bind(seq)
            .fetch_all(connection)
            .await?;
            (rows, seq)
        }
    };
    let balances = rows
        .into_iter()
        .map(|(account, account_type, asset, debits, credits)| {
            let balance = parse(&credits) - parse(&debits);
            AccountBalance {
                account,
                account_type,
                asset,
                debits,
                credits,
                balance: balance.to_string(),
                debits_pending: String::new(),
                credits_pending: String::new(),
                available: String::new(),
            }
            .with_pending("0", "0")
        })
        .collect();
    Ok((balances, seq))
}

fn parse(text: &str) -> i128 {
    // Sums of i64 postings over any realistic ledger fit an i128.
    text.parse().unwrap_or(i128::MAX)
}

/// The trial balance of a set of account balances.
pub fn trial_balance(balances: &[AccountBalance]) -> Vec<TrialBalanceLine> {
    let mut per_asset: BTreeMap<&str, (i128, i128)> = BTreeMap::new();
    for balance in balances {
        let totals = per_asset.entry(&balance.asset).or_insert((0, 0));
        totals.0 += parse(&balance.debits);
        totals.1 += parse(&balance.credits);
    }
    per_asset
        .into_iter()
        .map(|(asset, (debits, credits))| TrialBalanceLine {
            asset: asset.to_string(),
            debits: debits.to_string(),
            credits: credits.to_string(),
            balanced: debits == credits,
        })
        .collect()
}
