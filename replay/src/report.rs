//! What a replay reports: a tenant's state as of a point, section by
//! section as the domains declare them (`commands::domains::Section`), then
//! the tenant's journal (every account, and a trial balance per asset);
//! and the same as readable text.

use crate::state::{registry, TenantState};
use aggregates::journal::account::{LedgerAccount, ACCOUNT_AGGREGATE};
use aggregates::journal::{AccountType, Balances};
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The state as an auditor reads it, as of `at` (the last event's time when
/// `None`): each domain's sections, the accounts and the trial balance.
/// Call [`TenantState::settle`] first.
pub fn report(state: &TenantState, tenant_id: TenantId, at: Option<DateTime<Utc>>) -> Value {
    debug_assert!(state.is_settled(), "a report of a state not settled");
    let at = at.or(state.last_recorded_at());
    let mut report = Map::new();
    report.insert("tenant_id".into(), json!(tenant_id));
    report.insert("as_of_seq".into(), json!(state.last_seq()));
    report.insert("as_of".into(), json!(at));
    report.insert("hash".into(), json!(state.last_hash()));
    for section in registry().sections() {
        let mut aggregates: Vec<(&str, Value)> = state
            .fold()
            .into_iter()
            .flat_map(|fold| fold.states())
            .filter(|(key, _)| key.aggregate_type == section.aggregate_type)
            .map(|(key, aggregate)| {
                let id = key.aggregate_id.as_str();
                (id, (section.report)(id, aggregate, at))
            })
            // An aggregate a decision only read, never created (a payee a
            // payment names, looked up before it existed), reports nothing.
            .filter(|(_, value)| !value.is_null())
            .collect();
        aggregates.sort_by_key(|(id, _)| *id);
        let value = if section.one {
            aggregates
                .into_iter()
                .next()
                .map_or(Value::Null, |(_, value)| value)
        } else {
            Value::Array(aggregates.into_iter().map(|(_, value)| value).collect())
        };
        report.insert(section.name.to_string(), value);
    }
    let (accounts, trial_balance) = balances_report(state.balances(), pending(state));
    report.insert("accounts".into(), Value::Array(accounts));
    report.insert("trial_balance".into(), Value::Array(trial_balance));
    Value::Object(report)
}

/// What the open holds reserve on each journal account, per (code, asset):
/// (pending debits, pending credits), from the folded accounts.
fn pending(state: &TenantState) -> BTreeMap<(String, String), (AccountType, i128, i128)> {
    let mut pending = BTreeMap::new();
    for (key, aggregate) in state.fold().into_iter().flat_map(|fold| fold.states()) {
        if key.aggregate_type != ACCOUNT_AGGREGATE {
            continue;
        }
        let Some(account) = aggregate.as_any().downcast_ref::<LedgerAccount>() else {
            continue;
        };
        let Some(spec) = account.spec else {
            continue;
        };
        for (asset, balance) in &account.balances {
            pending.insert(
                (key.aggregate_id.clone(), asset.to_string()),
                (
                    spec.account_type,
                    balance.debits_pending.value(),
                    balance.credits_pending.value(),
                ),
            );
        }
    }
    pending
}

fn balances_report(
    balances: &Balances,
    mut pending: BTreeMap<(String, String), (AccountType, i128, i128)>,
) -> (Vec<Value>, Vec<Value>) {
    let mut accounts = Vec::new();
    let mut per_asset: BTreeMap<String, (i128, i128)> = BTreeMap::new();
    for (account, account_type, asset, debits, credits) in balances.entries() {
        let totals = per_asset.entry(asset.to_string()).or_insert((0, 0));
        totals.0 = totals.0.saturating_add(debits);
        totals.1 = totals.1.saturating_add(credits);
        let (debits_pending, credits_pending) = pending
            .remove(&(account.to_string(), asset.to_string()))
            .map_or((0, 0), |(_, debits, credits)| (debits, credits));
        let available = account_type.available(debits, credits, debits_pending, credits_pending);
        accounts.push(json!({
            "account": account,
            "type": account_type.as_str(),
            "asset": asset,
            "debits": debits.to_string(),
            "credits": credits.to_string(),
            "balance": credits.saturating_sub(debits).to_string(),
            "debits_pending": debits_pending.to_string(),
            "credits_pending": credits_pending.to_string(),
            "available": available.to_string(),
        }));
    }
    // Journal accounts with reservations (open or resolved) and nothing
    // posted.
    for ((account, asset), (account_type, debits_pending, credits_pending)) in pending {
        accounts.push(json!({
            "account": account,
            "type": account_type.as_str(),
            "asset": asset,
            "debits": "0",
            "credits": "0",
            "balance": "0",
            "debits_pending": debits_pending.to_string(),
            "credits_pending": credits_pending.to_string(),
            "available": account_type.available(0, 0, debits_pending, credits_pending).to_string(),
        }));
    }
    accounts.sort_by(|a, b| {
        let key = |value: &Value| (value["account"].to_string(), value["asset"].to_string());
        key(a).cmp(&key(b))
    });
    let trial_balance = per_asset
        .into_iter()
        .map(|(asset, (debits, credits))| {
            json!({"asset": asset, "debits": debits.to_string(), "credits": credits.to_string(), "balanced": debits == credits})
        })
        .collect();
    (accounts, trial_balance)
}

/// A replay report as readable text.
pub fn render(report: &Value) -> String {
    let mut out = String::new();
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    out.push_str(&format!(
        "tenant {} as of tenant_seq {} ({}), hash {}\n",
        text(&report["tenant_id"]),
        text(&report["as_of_seq"]),
        text(&report["as_of"]),
        text(&report["hash"])
    ));
    let subscription = &report["subscription"];
    if subscription.is_null() {
        out.push_str("subscription: none\n");
    } else {
        out.push_str(&format!(
            "subscription: {} {} (period {} to {}{})\n",
            text(&subscription["status"]),
            text(&subscription["plan"]),
            text(&subscription["period_start"]),
            text(&subscription["period_end"]),
            if subscription["cancel_at_period_end"] == true {
                ", cancels at period end"
            } else {
                ""
            }
        ));
    }
    out.push_str("quotas:\n");
    for quota in report["quotas"].as_array().into_iter().flatten() {
        let holder = if quota["account"].is_null() {
            String::new()
        } else {
            format!(" of {}", text(&quota["account"]))
        };
        let available = if quota["unlimited"] == true {
            "unlimited".to_string()
        } else {
            text(&quota["available"])
        };
        let unbacked = if quota["unbacked"].is_null() || quota["unbacked"] == "0" {
            String::new()
        } else {
            format!(" ({} unbacked)", text(&quota["unbacked"]))
        };
        out.push_str(&format!(
            "  {}{holder}: available {available}, consumed {}, allocated {}{unbacked}, {} grants\n",
            text(&quota["quota"]),
            text(&quota["consumed"]),
            text(&quota["allocated"]),
            quota["grants"].as_array().map_or(0, Vec::len)
        ));
    }
    out.push_str("accounts:\n");
    for account in report["accounts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<50} {:<9} {:<10} debits {:>12} credits {:>12} balance {:>12}\n",
            text(&account["account"]),
            text(&account["type"]),
            text(&account["asset"]),
            text(&account["debits"]),
            text(&account["credits"]),
            text(&account["balance"])
        ));
    }
    out.push_str("trial balance:\n");
    for line in report["trial_balance"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<10} debits {:>12} credits {:>12} {}\n",
            text(&line["asset"]),
            text(&line["debits"]),
            text(&line["credits"]),
            if line["balanced"] == true {
                "balanced"
            } else {
                "UNBALANCED"
            }
        ));
    }
    out
}
