//! Subscriptions, grants, quota consumption, the journal and the scheduler,
//! end to end over
//! HTTP against the real server and a real PostgreSQL. The projection
//! workers are off: each test applies the events with `catch_up` before it
//! reads.
//!
//! The tests are in `domain/`, one file per theme; the helpers they share
//! are here.

#[path = "inputs/mod.rs"]
mod inputs;
#[path = "limits/mod.rs"]
mod limits;
mod support;

use chrono::{DateTime, Duration, Months, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use support::app::{Client, Options, TestClock, TestServer};

#[path = "domain/compensation_http.rs"]
mod compensation_http;
#[path = "domain/escrow_http.rs"]
mod escrow_http;
#[path = "domain/grants.rs"]
mod grants;
#[path = "domain/journal.rs"]
mod journal;
#[path = "domain/ledger.rs"]
mod ledger;
#[path = "domain/openapi.rs"]
mod openapi;
#[path = "domain/payments.rs"]
mod payments;
#[path = "domain/payments_http.rs"]
mod payments_http;
#[path = "domain/quota.rs"]
mod quota;
#[path = "domain/scheduler.rs"]
mod scheduler;
#[path = "domain/seats.rs"]
mod seats;
#[path = "domain/subscriptions.rs"]
mod subscriptions;
#[path = "domain/tenancy.rs"]
mod tenancy;
#[path = "domain/validation.rs"]
mod validation;

/// The tenant_seq a command answered with.
fn seq_of(answer: &Value) -> i64 {
    answer["tenant_seq"]
        .as_i64()
        .unwrap_or_else(|| panic!("no tenant_seq in {answer}"))
}

/// Asserts, once the journal has applied `seq`, that every asset sums to
/// zero: per asset, the accounts' debits minus credits add up to 0, and the
/// trial balance has a balanced line for exactly those assets. A ledger
/// with journal entries must have lines (an empty trial balance passes
/// nothing).
async fn assert_trial_balance_is_zero(client: &Client, seq: i64) -> Value {
    let balances = client.read("/v1/journal/balances", seq).await;
    let entries = client.read("/v1/journal/entries?limit=1", seq).await;
    let has_entries = !entries["entries"].as_array().unwrap().is_empty();
    let mut sums: BTreeMap<String, i128> = BTreeMap::new();
    for account in balances["accounts"].as_array().unwrap() {
        let number = |field: &str| account[field].as_str().unwrap().parse::<i128>().unwrap();
        // An account with only pending amounts (a reservation) has no
        // posted line in the trial balance.
        if number("debits") == 0 && number("credits") == 0 {
            continue;
        }
        *sums
            .entry(account["asset"].as_str().unwrap().to_string())
            .or_default() += number("debits") - number("credits");
    }
    for (asset, sum) in &sums {
        assert_eq!(*sum, 0, "{asset} does not sum to zero: {balances}");
    }
    let lines = balances["trial_balance"].as_array().unwrap();
    assert_eq!(!lines.is_empty(), has_entries, "{balances}");
    let assets: Vec<&str> = lines
        .iter()
        .map(|line| line["asset"].as_str().unwrap())
        .collect();
    assert_eq!(assets, sums.keys().map(String::as_str).collect::<Vec<_>>());
    for line in lines {
        assert_eq!(line["debits"], line["credits"], "{line}");
        assert_eq!(line["balanced"], true);
    }
    balances
}

/// The ledger's last tenant_seq, from the chain head.
async fn head_seq(server: &TestServer, client: &Client) -> i64 {
    let head: (i64,) =
        sqlx::query_as("SELECT last_seq FROM chain_heads WHERE tenant_id = $1::uuid")
            .bind(&client.tenant_id)
            .fetch_one(server.db.store().pool())
            .await
            .unwrap();
    head.0
}

/// A clock a month and a day in the past: a subscription started there has
/// its period end a day ago, and the next period runs past now, so the read
/// side (which judges "usable" by the real clock) agrees with the commands.
fn a_month_ago() -> TestClock {
    let start = Utc::now()
        .checked_sub_months(Months::new(1))
        .unwrap()
        .checked_sub_signed(Duration::days(1))
        .unwrap();
    TestClock::at(start)
}

fn time_of(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .parse()
        .unwrap()
}

fn grant_of<'a>(answer: &'a Value, quota: &str) -> &'a Value {
    answer["grants_issued"]
        .as_array()
        .unwrap()
        .iter()
        .find(|grant| grant["quota"] == quota)
        .unwrap_or_else(|| panic!("no {quota} grant in {answer}"))
}

fn balance_of(balances: &Value, account: &str) -> Value {
    balances["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["account"] == account)
        .unwrap_or_else(|| panic!("no account {account} in {balances}"))
        .clone()
}
