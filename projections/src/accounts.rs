//! The `accounts` projection: every account opened through the journal,
//! with its type and flags, and its balances per asset, posted and pending,
//! folded from the accounts' own events (the events that check their
//! flags); and the reads of one account.

use crate::decode::decoded;
use crate::runtime::{ApplyError, Projection};
use aggregates::journal::account::{AccountEvent, LedgerAccount, Movement, ACCOUNT_AGGREGATE};
use aggregates::journal::AccountType;
use aggregates::TenantId;
use async_trait::async_trait;
use eventstore::StoredEvent;
use serde::Serialize;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

pub const NAME: &str = "accounts";

pub struct Accounts;

const INSERT_ACCOUNTS: &str = "\
    INSERT INTO ledger_accounts (tenant_id, code, account_type, debits_must_not_exceed_credits, \
                                 credits_must_not_exceed_debits, opened_tenant_seq) \
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::bool[], $6::bigint[])";

const ADD_BALANCES: &str = "\
    INSERT INTO ledger_account_balances (tenant_id, code, asset, debits_posted, credits_posted, \
                                         debits_pending, credits_pending, last_tenant_seq) \
    SELECT b.tenant_id, b.code, b.asset, b.dp::numeric, b.cp::numeric, b.dq::numeric, b.cq::numeric, b.seq \
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[]) \
         AS b(tenant_id, code, asset, dp, cp, dq, cq, seq) \
    ON CONFLICT (tenant_id, code, asset) DO UPDATE SET \
        debits_posted = ledger_account_balances.debits_posted + EXCLUDED.debits_posted, \
        credits_posted = ledger_account_balances.credits_posted + EXCLUDED.credits_posted, \
        debits_pending = ledger_account_balances.debits_pending + EXCLUDED.debits_pending, \
        credits_pending = ledger_account_balances.credits_pending + EXCLUDED.credits_pending, \
        last_tenant_seq = EXCLUDED.last_tenant_seq";

/// The reservations of holds on accounts, by (tenant, account, hold), for
/// the holds' settlements (their events name only the hold): one lookup per
/// hold, all of a batch's in one statement.
const SELECT_HOLDS: &str = "\
    SELECT w.tenant_id, w.code, w.hold_id, r.asset, r.debit, r.credit \
    FROM unnest($1::uuid[], $2::text[], $3::text[]) AS w(tenant_id, code, hold_id) \
    CROSS JOIN LATERAL ( \
        SELECT payload #>> '{Reserved,asset}' AS asset, \
               (payload #>> '{Reserved,movement,debit}')::bigint AS debit, \
               (payload #>> '{Reserved,movement,credit}')::bigint AS credit \
        FROM events WHERE tenant_id = w.tenant_id AND aggregate_type = 'account' \
          AND aggregate_id = w.code AND event_type = 'Reserved' \
          AND payload #>> '{Reserved,hold_id}' = w.hold_id \
        ORDER BY tenant_seq LIMIT 1) r";

/// A batch's change of one account's balance in one asset.
#[derive(Default)]
struct Change {
    debits_posted: i128,
    credits_posted: i128,
    debits_pending: i128,
    credits_pending: i128,
    seq: i64,
}

impl Change {
    fn add(&mut self, posted: Movement, pending: (i128, i128), seq: i64) {
        self.debits_posted += i128::from(posted.debit.value());
        self.credits_posted += i128::from(posted.credit.value());
        self.debits_pending += pending.0;
        self.credits_pending += pending.1;
        self.seq = seq;
    }
}

type Changes = BTreeMap<(Uuid, String, String), Change>;

/// One event's change of one account's balance in one asset: (tenant,
/// code, asset, tenant_seq, debits posted, credits posted, change of debits
/// pending, change of credits pending).
type MovementRow = (Uuid, String, String, i64, i64, i64, i64, i64);

const INSERT_MOVEMENTS: &str = "\
    INSERT INTO ledger_account_movements (tenant_id, code, asset, tenant_seq, debits_posted, \
                                          credits_posted, debits_pending, credits_pending) \
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], \
                         $6::bigint[], $7::bigint[], $8::bigint[])";

/// Records `posted` and the change of pending `pending` of one event, in
/// the batch's sums and as a movement row.
fn record(
    changes: &mut Changes,
    movements: &mut Vec<MovementRow>,
    key: (Uuid, String, String),
    posted: Movement,
    pending: (i64, i64),
    seq: i64,
) {
    movements.push((
        key.0,
        key.1.clone(),
        key.2.clone(),
        seq,
        posted.debit.value(),
        posted.credit.value(),
        pending.0,
        pending.1,
    ));
    changes.entry(key).or_default().add(
        posted,
        (i128::from(pending.0), i128::from(pending.1)),
        seq,
    );
}

#[async_trait]
impl Projection for Accounts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i32 {
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "ledger_accounts",
            "ledger_account_balances",
            "ledger_account_movements",
        ]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ApplyError> {
        let ours: Vec<&StoredEvent> = events
            .iter()
            .copied()
            .filter(|event| event.aggregate_type == ACCOUNT_AGGREGATE)
            .collect();
        // The reservation of every hold: those of earlier batches read now,
        // those of this batch added as they come.
        let mut reserved = stored_reservations(connection, &ours).await?;
        let mut opened: Vec<(Uuid, String, &'static str, bool, bool, i64)> = Vec::new();
        let mut changes: Changes = BTreeMap::new();
        let mut movements: Vec<MovementRow> = Vec::new();
        for event in ours {
            let tenant = event.tenant_id.as_uuid();
            let code = event.aggregate_id.clone();
            let seq = event.tenant_seq;
            match &*decoded::<LedgerAccount>(event)? {
                AccountEvent::AccountOpened { spec } => opened.push((
                    tenant,
                    code,
                    spec.account_type.as_str(),
                    spec.flags.debits_must_not_exceed_credits,
                    spec.flags.credits_must_not_exceed_debits,
                    seq,
                )),
                AccountEvent::Posted {
                    asset, movement, ..
                } => record(
                    &mut changes,
                    &mut movements,
                    (tenant, code, asset.to_string()),
                    *movement,
                    (0, 0),
                    seq,
                ),
                AccountEvent::Reserved {
                    hold_id,
                    asset,
                    movement,
                } => {
                    let pending = (movement.debit.value(), movement.credit.value());
                    record(
                        &mut changes,
                        &mut movements,
                        (tenant, code.clone(), asset.to_string()),
                        Movement::default(),
                        pending,
                        seq,
                    );
                    reserved.insert(
                        (tenant, code, hold_id.to_string()),
                        (asset.to_string(), *movement),
                    );
                }
                AccountEvent::HoldSettled {
                    hold_id, posted, ..
                } => {
                    let key = (tenant, code.clone(), hold_id.to_string());
                    let Some((asset, held)) = reserved.get(&key).cloned() else {
                        return Err(ApplyError::Event {
                            tenant_seq: seq,
                            message: format!(
                                "hold {hold_id} settles on {code} without a reservation"
                            ),
                        });
                    };
                    let pending = (-held.debit.value(), -held.credit.value());
                    record(
                        &mut changes,
                        &mut movements,
                        (tenant, code, asset),
                        *posted,
                        pending,
                        seq,
                    );
                }
            }
        }
        write_movements(connection, movements).await?;
        write(connection, opened, changes).await
    }
}

/// A hold's reservation: its asset and amounts.
type Reservation = (String, Movement);

/// A row of [`SELECT_HOLDS`]: tenant, account, hold, asset, debit, credit.
type HoldRow = (
    Uuid,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

/// The reservations, from the event store, of the holds `events` settle
/// and do not reserve before settling (reserved in an earlier batch).
async fn stored_reservations(
    connection: &mut PgConnection,
    events: &[&StoredEvent],
) -> Result<BTreeMap<(Uuid, String, String), Reservation>, ApplyError> {
    let mut in_batch = std::collections::BTreeSet::new();
    let mut wanted: (Vec<Uuid>, Vec<&str>, Vec<String>) = Default::default();
    for event in events {
        let key = |hold_id: &aggregates::HoldId| {
            (
                event.tenant_id.as_uuid(),
                event.aggregate_id.as_str(),
                hold_id.to_string(),
            )
        };
        match &*decoded::<LedgerAccount>(event)? {
            AccountEvent::Reserved { hold_id, .. } => {
                in_batch.insert(key(hold_id));
            }
            AccountEvent::HoldSettled { hold_id, .. } if !in_batch.contains(&key(hold_id)) => {
                let (tenant, code, hold) = key(hold_id);
                wanted.0.push(tenant);
                wanted.1.push(code);
                wanted.2.push(hold);
            }
            _ => {}
        }
    }
    if wanted.0.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<HoldRow> = sqlx::query_as(SELECT_HOLDS)
        .bind(&wanted.0)
        .bind(&wanted.1)
        .bind(&wanted.2)
        .fetch_all(&mut *connection)
        .await?;
    // A reservation the store holds no readable amounts of is left out: its
    // settlement then fails as one without a reservation.
    let amount = |value: Option<i64>| value.and_then(|value| aggregates::Amount::new(value).ok());
    Ok(rows
        .into_iter()
        .filter_map(|(tenant, code, hold, asset, debit, credit)| {
            let movement = Movement {
                debit: amount(debit)?,
                credit: amount(credit)?,
            };
            Some(((tenant, code, hold), (asset?, movement)))
        })
        .collect())
}

async fn write_movements(
    connection: &mut PgConnection,
    movements: Vec<MovementRow>,
) -> Result<(), ApplyError> {
    if movements.is_empty() {
        return Ok(());
    }
    let mut columns: (Vec<Uuid>, Vec<String>, Vec<String>, Vec<i64>) = Default::default();
    let mut amounts: [Vec<i64>; 4] = Default::default();
    for (tenant, code, asset, seq, dp, cp, dq, cq) in movements {
        columns.0.push(tenant);
        columns.1.push(code);
        columns.2.push(asset);
        columns.3.push(seq);
        for (column, value) in amounts.iter_mut().zip([dp, cp, dq, cq]) {
            column.push(value);
        }
    }
    let [debits_posted, credits_posted, debits_pending, credits_pending] = amounts;
    sqlx::query(INSERT_MOVEMENTS)
        .bind(&columns.0)
        .bind(&columns.1)
        .bind(&columns.2)
        .bind(&columns.3)
        .bind(&debits_posted)
        .bind(&credits_posted)
        .bind(&debits_pending)
        .bind(&credits_pending)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

async fn write(
    connection: &mut PgConnection,
    opened: Vec<(Uuid, String, &'static str, bool, bool, i64)>,
    changes: Changes,
) -> Result<(), ApplyError> {
    if !opened.is_empty() {
        let mut columns = (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (tenant, code, account_type, debits_flag, credits_flag, seq) in opened {
            columns.0.push(tenant);
            columns.1.push(code);
            columns.2.push(account_type);
            columns.3.push(debits_flag);
            columns.4.push(credits_flag);
            columns.5.push(seq);
        }
        sqlx::query(INSERT_ACCOUNTS)
            .bind(&columns.0)
            .bind(&columns.1)
            .bind(&columns.2)
            .bind(&columns.3)
            .bind(&columns.4)
            .bind(&columns.5)
            .execute(&mut *connection)
            .await?;
    }
    if changes.is_empty() {
        return Ok(());
    }
    let mut keys = (vec![], vec![], vec![]);
    let mut sums: [Vec<String>; 4] = Default::default();
    let mut seqs = Vec::new();
    for ((tenant, code, asset), change) in changes {
        keys.0.push(tenant);
        keys.1.push(code);
        keys.2.push(asset);
        for (column, value) in sums.iter_mut().zip([
            change.debits_posted,
            change.credits_posted,
            change.debits_pending,
            change.credits_pending,
        ]) {
            column.push(value.to_string());
        }
        seqs.push(change.seq);
    }
    let [debits_posted, credits_posted, debits_pending, credits_pending] = sums;
    sqlx::query(ADD_BALANCES)
        .bind(&keys.0)
        .bind(&keys.1)
        .bind(&keys.2)
        .bind(&debits_posted)
        .bind(&credits_posted)
        .bind(&debits_pending)
        .bind(&credits_pending)
        .bind(&seqs)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// An account as read: its type and flags, and per asset what is posted,
/// pending and available.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AccountView {
    pub code: String,
    #[serde(rename = "type")]
    pub account_type: String,
    pub debits_must_not_exceed_credits: bool,
    pub credits_must_not_exceed_debits: bool,
    pub balances: Vec<AccountAssetBalance>,
}

/// One asset of an account. Sums are decimal strings (they may pass 64
/// bits).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AccountAssetBalance {
    pub asset: String,
    pub debits_posted: String,
    pub credits_posted: String,
    pub debits_pending: String,
    pub credits_pending: String,
    /// What the account can still give on its normal side: for a
    /// credit-normal account (liability, equity, revenue) posted credits
    /// less posted and pending debits; for a debit-normal one the mirror.
    pub available: String,
}

type BalanceRow = (String, String, String, String, String);

/// Account `code` of the tenant, inside a tenant read transaction; `None`
/// when it was never opened (or the projection has not applied it).
pub async fn account(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    code: &str,
) -> Result<Option<AccountView>, sqlx::Error> {
    let opened: Option<(String, bool, bool)> = sqlx::query_as(
        "SELECT account_type, debits_must_not_exceed_credits, credits_must_not_exceed_debits \
         FROM ledger_accounts WHERE tenant_id = $1 AND code = $2",
    )
    .bind(tenant_id.as_uuid())
    .bind(code)
    .fetch_optional(&mut *connection)
    .await?;
    let Some((account_type, debits_flag, credits_flag)) = opened else {
        return Ok(None);
    };
    let rows: Vec<BalanceRow> = sqlx::query_as(
        "SELECT asset, debits_posted::text, credits_posted::text, debits_pending::text, \
                credits_pending::text \
         FROM ledger_account_balances WHERE tenant_id = $1 AND code = $2 ORDER BY asset",
    )
    .bind(tenant_id.as_uuid())
    .bind(code)
    .fetch_all(&mut *connection)
    .await?;
    let kind = AccountType::parse(&account_type).ok_or_else(|| {
        sqlx::Error::Decode(format!("account {code} has an unknown type {account_type:?}").into())
    })?;
    let balances = rows
        .into_iter()
        .map(
            |(asset, debits_posted, credits_posted, debits_pending, credits_pending)| {
                let number = |text: &str| text.parse::<i128>().unwrap_or(0);
                let available = kind.available(
                    number(&debits_posted),
                    number(&credits_posted),
                    number(&debits_pending),
                    number(&credits_pending),
                );
                AccountAssetBalance {
                    asset,
                    debits_posted,
                    credits_posted,
                    debits_pending,
                    credits_pending,
                    available: available.to_string(),
                }
            },
        )
        .collect();
    Ok(Some(AccountView {
        code: code.to_string(),
        account_type,
        debits_must_not_exceed_credits: debits_flag,
        credits_must_not_exceed_debits: credits_flag,
        balances,
    }))
}

/// Pending debits and credits (decimal strings) of every journal account
/// per (code, asset) as of `as_of_seq` (summed from the movements), with
/// the account's type, inside a tenant read transaction.
pub async fn pending(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    as_of_seq: i64,
) -> Result<BTreeMap<(String, String), (String, String, String)>, sqlx::Error> {
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT m.code, m.asset, a.account_type, sum(m.debits_pending)::text, \
                sum(m.credits_pending)::text \
         FROM ledger_account_movements m \
         JOIN ledger_accounts a ON a.tenant_id = m.tenant_id AND a.code = m.code \
         WHERE m.tenant_id = $1 AND m.tenant_seq <= $2 \
         GROUP BY m.code, m.asset, a.account_type",
    )
    .bind(tenant_id.as_uuid())
    .bind(as_of_seq)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(code, asset, account_type, debits, credits)| {
            ((code, asset), (account_type, debits, credits))
        })
        .collect())
}
