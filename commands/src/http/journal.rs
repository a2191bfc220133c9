//! `/v1/journal`: entries and account balances (as of any tenant_seq), with
//! the trial balance per asset.

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiPath, ApiQuery, AsOfPoint, PageLimit, Seq, Tenant};
use super::read::{as_of_seq, tenant_read};
use super::AppState;
use aggregates::journal::account::AccountCode;
use axum::extract::State;
use axum::Json;
use projections::accounts::{self, AccountView};
use projections::journal::{self, AccountBalance, Entry, TrialBalanceLine};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_entries))
        .routes(routes!(balances))
        .routes(routes!(get_account))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    /// Entries after this tenant_seq (from `next_after_seq`).
    #[param(inline)]
    pub after_seq: Option<Seq>,
    /// Page size, 1-1000 (default 100).
    #[param(inline)]
    pub limit: Option<PageLimit>,
    /// Wait until the projection has applied this tenant_seq.
    #[param(inline)]
    pub min_seq: Option<Seq>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntriesPage {
    pub entries: Vec<Entry>,
    /// Pass as `after_seq` for the next page; `null` on the last.
    pub next_after_seq: Option<i64>,
    pub projection_seq: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BalancesQuery {
    /// Balances as of a tenant_seq (digits only: after it) or a time (RFC
    /// 3339: the entries recorded at or before it), taken back to the end
    /// of the request it falls in (`as_of_seq` says where); waits until the
    /// projection has applied that point. Default: now.
    #[param(inline)]
    pub as_of: Option<AsOfPoint>,
    /// Wait until the projection has applied this tenant_seq.
    #[param(inline)]
    pub min_seq: Option<Seq>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BalancesView {
    /// The tenant_seq the balances are as of.
    pub as_of_seq: i64,
    pub accounts: Vec<AccountBalance>,
    /// Per asset, total debits and credits (equal in a sound ledger).
    pub trial_balance: Vec<TrialBalanceLine>,
}

/// The tenant's journal entries, in tenant_seq order.
#[utoipa::path(
    get,
    path = "/v1/journal/entries",
    tag = "journal",
    params(EntriesQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "A page of entries", body = EntriesPage),
        (status = 400, description = "Invalid query", body = ErrorBody),
    )
)]
async fn list_entries(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<EntriesQuery>,
) -> Result<Json<EntriesPage>, ApiError> {
    let limit = PageLimit::or_default(query.limit);
    let after_seq = query.after_seq.map_or(0, |seq| seq.0);
    let (entries, projection_seq) = tenant_read(
        &state,
        tenant_id,
        journal::NAME,
        query.min_seq,
        move |connection| Box::pin(journal::entries(connection, tenant_id, after_seq, limit)),
    )
    .await?;
    let next_after_seq = next_after_seq(&entries, limit);
    Ok(Json(EntriesPage {
        entries,
        next_after_seq,
        projection_seq,
    }))
}

/// Account balances per asset, now or as of a tenant_seq or a time (summed
/// from the journal's entries up to that point): posted debits and credits,
/// pending ones (reserved by holds open at that point) and what is
/// available; and the trial balance.
#[utoipa::path(
    get,
    path = "/v1/journal/balances",
    tag = "journal",
    params(BalancesQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Balances", body = BalancesView),
        (status = 422, description = "`as_of_open`: a time less than 5 s past (or in the future), which later requests could still be recorded at or before (details: as_of, closes_at); `as_of_seq_ahead`: a tenant_seq beyond the tenant's last (details: as_of_seq, tenant_seq)", body = ErrorBody),
        (status = 503, description = "The projection did not reach the seq in time", body = ErrorBody),
    )
)]
async fn balances(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<BalancesQuery>,
) -> Result<Json<BalancesView>, ApiError> {
    let as_of = match query.as_of {
        None => None,
        Some(point) => Some(as_of_seq(&state, tenant_id, point).await?),
    };
    let wait_for = query.min_seq.max(as_of.map(Seq));
    // The figures with the seq they are at (the live balances' checkpoint,
    // read with them, may be past the one the wait read).
    let ((accounts, read_at), _) = tenant_read(
        &state,
        tenant_id,
        journal::NAME,
        wait_for,
        move |connection| Box::pin(journal::balances(connection, tenant_id, as_of)),
    )
    .await?;
    // Pending amounts from the accounts projection, as of the same point.
    let pending_as_of = read_at;
    let (mut pending, _) = tenant_read(
        &state,
        tenant_id,
        accounts::NAME,
        Some(Seq(pending_as_of)),
        move |connection| Box::pin(accounts::pending(connection, tenant_id, pending_as_of)),
    )
    .await?;
    let mut accounts: Vec<AccountBalance> = accounts
        .into_iter()
        .map(
            |balance| match pending.remove(&(balance.account.clone(), balance.asset.clone())) {
                Some((_, debits, credits)) => balance.with_pending(&debits, &credits),
                None => balance,
            },
        )
        .collect();
    // The trial balance is of what is posted; then the journal accounts
    // with reservations (open or resolved) and nothing posted.
    let trial_balance = journal::trial_balance(&accounts);
    accounts.extend(pending.into_iter().map(
        |((account, asset), (account_type, debits, credits))| {
            AccountBalance::unposted(account, account_type, asset).with_pending(&debits, &credits)
        },
    ));
    accounts.sort_by(|a, b| (&a.account, &a.asset).cmp(&(&b.account, &b.asset)));
    Ok(Json(BalancesView {
        as_of_seq: read_at,
        accounts,
        trial_balance,
    }))
}

/// One account: its type and flags, what is posted, pending and available
/// per asset, and its entries, paged.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountPage {
    #[serde(flatten)]
    pub account: AccountView,
    /// The entries posting to the account, in tenant_seq order.
    pub entries: Vec<Entry>,
    /// Pass as `after_seq` for the next page of entries; `null` on the last.
    pub next_after_seq: Option<i64>,
    /// The tenant_seq both read tables had applied (the lower of the two).
    pub projection_seq: i64,
}

/// An account opened through the journal, and its entries, paged: balances
/// from the `accounts` read tables (posted and pending, per asset), entries
/// from the journal's.
#[utoipa::path(
    get,
    path = "/v1/journal/accounts/{code}",
    tag = "journal",
    params(("code" = inline(AccountCode), Path, description = "The account's code (a `/` in it is sent as `%2F`)"), EntriesQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The account", body = AccountPage),
        (status = 404, description = "No account of that code was opened (or the read tables have not applied its opening: pass `min_seq`)", body = ErrorBody),
    )
)]
async fn get_account(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(code): ApiPath<String>,
    ApiQuery(query): ApiQuery<EntriesQuery>,
) -> Result<Json<AccountPage>, ApiError> {
    let code = AccountCode::parse(&code).map_err(|error| ApiError::BadRequest {
        code: "invalid_path_parameter",
        message: format!("code: {error}"),
        details: serde_json::json!({"parameter": "code"}),
    })?;
    let limit = PageLimit::or_default(query.limit);
    let after_seq = query.after_seq.map_or(0, |seq| seq.0);
    let wanted = code.to_string();
    let (account, account_seq) = tenant_read(
        &state,
        tenant_id,
        accounts::NAME,
        query.min_seq,
        move |connection| {
            Box::pin(async move { accounts::account(connection, tenant_id, &wanted).await })
        },
    )
    .await?;
    let account = account.ok_or_else(|| ApiError::NotFound(format!("no account {code}")))?;
    let wanted = code.to_string();
    let (entries, entries_seq) = tenant_read(
        &state,
        tenant_id,
        journal::NAME,
        query.min_seq,
        move |connection| {
            Box::pin(async move {
                journal::entries_posting_to(connection, tenant_id, Some(&wanted), after_seq, limit)
                    .await
            })
        },
    )
    .await?;
    let next_after_seq = next_after_seq(&entries, limit);
    Ok(Json(AccountPage {
        account,
        entries,
        next_after_seq,
        projection_seq: account_seq.min(entries_seq),
    }))
}

/// Where the next page of `entries` starts (`limit` asked): `null` when
/// this page was the last.
fn next_after_seq(entries: &[Entry], limit: i64) -> Option<i64> {
    (entries.len() as i64 == limit)
        .then(|| entries.last().map(|entry| entry.tenant_seq))
        .flatten()
}
