//! Subscriptions, grants, quota consumption and the journal, end to end over
//! HTTP against the real server and a real PostgreSQL. The projection
//! workers are off: each test applies the events with `catch_up` before it
//! reads.

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

#[tokio::test]
async fn subscribing_issues_grants_that_a_consume_right_after_can_use() {
    // Proves: the subscribe answer returns with the plan's grants in effect;
    // the consumption burns them, the reads show it, the journal balances.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let subscribed = acme
        .post(
            "/v1/subscription",
            "sub-1",
            json!({"plan": "team_v4", "trial_ends_at": null}),
        )
        .await;
    assert_eq!(
        subscribed.status,
        StatusCode::CREATED,
        "{}",
        subscribed.body
    );
    assert_eq!(subscribed.body["plan"], "team_v4");
    assert_eq!(subscribed.body["status"], "active");
    let grants = subscribed.body["grants_issued"].as_array().unwrap().clone();
    assert_eq!(grants.len(), 3);
    let event_types: Vec<&str> = subscribed.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        event_types,
        ["Subscribed", "GrantIssued", "GrantIssued", "GrantIssued"]
    );
    let credits_grant = grants
        .iter()
        .find(|grant| grant["quota"] == "credits")
        .unwrap()["grant_id"]
        .clone();

    let consumed = acme
        .post(
            "/v1/quota/credits/consume",
            "run-1",
            json!({"amount": 5, "reference": "run-123"}),
        )
        .await;
    assert_eq!(consumed.status, StatusCode::OK, "{}", consumed.body);
    assert_eq!(consumed.body["consumed"], 5);
    assert_eq!(
        consumed.body["allocations"],
        json!([{"grant_id": credits_grant, "amount": 5}])
    );
    assert_eq!(consumed.body["available"], 19_995);
    assert_eq!(consumed.body["unlimited"], false);
    assert_eq!(consumed.body["tenant_seq"], 5);
    let seq = seq_of(&consumed.body);

    server.catch_up().await;
    let subscription = acme.read("/v1/subscription", seq).await;
    assert_eq!(subscription["plan"], "team_v4");
    assert_eq!(subscription["status"], "active");
    assert_eq!(subscription["trialing"], false);
    let credits = acme.read("/v1/quota/credits", seq).await;
    assert_eq!(credits["available"], 19_995);
    assert_eq!(credits["consumed"], 5);
    assert_eq!(credits["grants"][0]["balance"], 19_995);
    let quotas = acme.read("/v1/quota", seq).await;
    let available: Vec<Value> = quotas["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|quota| json!([quota["quota"], quota["available"]]))
        .collect();
    assert_eq!(
        available,
        [
            json!(["seats", 10]),
            json!(["runs", 100_000]),
            json!(["credits", 19_995])
        ]
    );

    let balances = assert_trial_balance_is_zero(&acme, seq).await;
    let grant_account = balance_of(
        &balances,
        &format!("grant:{}", credits_grant.as_str().unwrap()),
    );
    assert_eq!(
        (
            grant_account["debits"].clone(),
            grant_account["credits"].clone(),
            grant_account["balance"].clone()
        ),
        (json!("5"), json!("20000"), json!("19995"))
    );
    assert_eq!(
        balance_of(&balances, "quota_consumed:credits")["credits"],
        "5"
    );
    let entries = acme.read("/v1/journal/entries", seq).await;
    assert_eq!(entries["entries"].as_array().unwrap().len(), 4);
    assert_eq!(entries["entries"][3]["reference"], "run-123");
    // Balances as of the subscription alone: nothing consumed yet.
    let before = acme.read("/v1/journal/balances?as_of_seq=4", seq).await;
    assert_eq!(before["as_of_seq"], 4);
    assert!(before["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|row| row["account"] != "quota_consumed:credits"));
    server.stop().await;
}

#[tokio::test]
async fn fifty_parallel_consumes_against_forty_available_succeed_exactly_forty_times() {
    // Proves: consumption never overdraws under concurrency: 40 of 50
    // parallel consumes of 1 succeed, 10 get 429 with details.available, and
    // nothing is left.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let grant = acme
        .post(
            "/v1/grants",
            "grant-40",
            json!({"quota": "runs", "amount": 40, "source": "purchase"}),
        )
        .await;
    assert_eq!(grant.status, StatusCode::CREATED, "{}", grant.body);
    let mut calls = Vec::new();
    for index in 0..50 {
        let client = Client {
            base: acme.base.clone(),
            client: acme.client.clone(),
            api_key: acme.api_key.clone(),
            tenant_id: acme.tenant_id.clone(),
        };
        calls.push(tokio::spawn(async move {
            client
                .post(
                    "/v1/quota/runs/consume",
                    &format!("consume-{index}"),
                    json!({"amount": 1}),
                )
                .await
        }));
    }
    let mut accepted = 0;
    let mut exceeded = 0;
    let mut last_seq = 0;
    for call in calls {
        let answer = call.await.unwrap();
        match answer.status {
            StatusCode::OK => {
                accepted += 1;
                last_seq = last_seq.max(answer.body["tenant_seq"].as_i64().unwrap());
            }
            StatusCode::TOO_MANY_REQUESTS => {
                exceeded += 1;
                let error = answer.assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
                assert_eq!(error["details"]["available"], 0);
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    assert_eq!((accepted, exceeded), (40, 10));
    server.catch_up().await;
    let runs = acme.read("/v1/quota/runs", last_seq).await;
    assert_eq!(runs["available"], 0);
    assert_eq!(runs["consumed"], 40);
    assert_trial_balance_is_zero(&acme, last_seq).await;
    server.stop().await;
}

#[tokio::test]
async fn twenty_parallel_requests_with_one_key_consume_once() {
    // Proves: 20 concurrent submissions of one key consume once; all answer
    // the same body, all but one marked replayed.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let grant = acme
        .post(
            "/v1/grants",
            "grant",
            json!({"quota": "credits", "amount": 100, "source": "purchase"}),
        )
        .await;
    assert_eq!(grant.status, StatusCode::CREATED, "{}", grant.body);
    let mut calls = Vec::new();
    for _ in 0..20 {
        let client = Client {
            base: acme.base.clone(),
            client: acme.client.clone(),
            api_key: acme.api_key.clone(),
            tenant_id: acme.tenant_id.clone(),
        };
        calls.push(tokio::spawn(async move {
            client
                .post("/v1/quota/credits/consume", "the-one", json!({"amount": 7}))
                .await
        }));
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    assert!(answers.iter().all(|answer| answer.status == StatusCode::OK));
    assert_eq!(answers.iter().filter(|answer| !answer.replayed).count(), 1);
    let body = answers[0].body.clone();
    assert!(answers.iter().all(|answer| answer.body == body));
    server.catch_up().await;
    let credits = acme
        .read("/v1/quota/credits", body["tenant_seq"].as_i64().unwrap())
        .await;
    assert_eq!(credits["consumed"], 7);
    assert_eq!(credits["available"], 93);
    assert_trial_balance_is_zero(&acme, body["tenant_seq"].as_i64().unwrap()).await;
    server.stop().await;
}

#[tokio::test]
async fn another_tenants_grant_is_not_found() {
    // Proves: tenant B's key on tenant A's grant id answers 404 for reading
    // and for revoking, and A's grant is untouched.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let beta = server.tenant("beta").await;
    let issued = acme
        .post(
            "/v1/grants",
            "g",
            json!({"quota": "credits", "amount": 10, "source": "promocode"}),
        )
        .await;
    let grant_id = issued.body["grant_id"].as_str().unwrap().to_string();
    let seq = issued.body["tenant_seq"].as_i64().unwrap();
    server.catch_up().await;
    let own = acme.read(&format!("/v1/grants/{grant_id}"), seq).await;
    assert_eq!(own["status"], "active");
    let read = beta.get(&format!("/v1/grants/{grant_id}")).await;
    read.assert_error(StatusCode::NOT_FOUND, "not_found");
    let revoke = beta
        .post(&format!("/v1/grants/{grant_id}/revoke"), "r", json!({}))
        .await;
    revoke.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(head_seq(&server, &beta).await, 0);
    let listed = beta.read("/v1/grants", 0).await;
    assert_eq!(listed["grants"], json!([]));
    let still = acme.read(&format!("/v1/grants/{grant_id}"), seq).await;
    assert_eq!(still["status"], "active");
    assert_eq!(still["balance"], 10);
    assert_trial_balance_is_zero(&acme, seq).await;
    // Beta has no entries: its trial balance is empty, and still checked.
    assert_trial_balance_is_zero(&beta, 0).await;
    server.stop().await;
}

/// The SQLSTATE of a database error (`None` for any other error).
fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|database| database.code())
        .map(|code| code.into_owned())
}

#[tokio::test]
async fn every_read_table_shows_a_tenant_only_its_own_rows_and_refuses_it_writes() {
    // Proves: every table of every projection in the catalog (a new one is
    // covered by itself) has row-level security enabled and forced; in a
    // tenant read (the API's reader role, here on a superuser connection) a
    // query with no tenant filter sees exactly that tenant's rows and none
    // of the other's; INSERT, UPDATE and DELETE are refused, SQLSTATE 42501.
    let server = TestServer::start().await;
    let tenants = [server.tenant("acme").await, server.tenant("beta").await];
    for (index, client) in tenants.iter().enumerate() {
        for (path, key, body) in [
            ("/v1/subscription", "sub", json!({"plan": "team_v4"})),
            (
                "/v1/grants",
                "grant",
                json!({"quota": "runs", "amount": 50 + index, "source": "purchase",
                       "account": "user-1"}),
            ),
            ("/v1/quota/credits/consume", "use", json!({"amount": 5})),
            (
                "/v1/quota/runs/consume",
                "use-user-1",
                json!({"amount": 3, "account": "user-1"}),
            ),
            ("/v1/quota/seats/allocate", "seat", json!({"amount": 2})),
        ] {
            let answer = client.post(path, key, body).await;
            assert!(answer.status.is_success(), "{path}: {}", answer.body);
        }
    }
    server.catch_up().await;
    let pool = server.db.store().pool();
    let mut checked = Vec::new();
    for projection in commands::domains::projections() {
        for table in projection.tables() {
            let (enabled, forced): (bool, bool) = sqlx::query_as(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = $1::regclass",
            )
            .bind(table)
            .fetch_one(pool)
            .await
            .unwrap();
            assert_eq!(
                (enabled, forced),
                (true, true),
                "row-level security of {table}"
            );
            for client in &tenants {
                let tenant = uuid::Uuid::parse_str(&client.tenant_id).unwrap();
                let tenant_id = aggregates::TenantId::from_uuid(tenant);
                let (own,): (i64,) = sqlx::query_as(&format!(
                    "SELECT count(*) FROM {table} WHERE tenant_id = $1"
                ))
                .bind(tenant)
                .fetch_one(pool)
                .await
                .unwrap();
                assert!(
                    own > 0,
                    "{table} has no row of tenant {tenant}: give every read table rows of \
                     both tenants, or this test proves nothing of it"
                );
                let mut read = projections::read::begin_tenant_read(pool, tenant_id)
                    .await
                    .unwrap();
                let (seen, others): (i64, i64) = sqlx::query_as(&format!(
                    "SELECT count(*), count(*) FILTER (WHERE tenant_id <> $1) FROM {table}"
                ))
                .bind(tenant)
                .fetch_one(&mut *read)
                .await
                .unwrap();
                read.rollback().await.unwrap();
                assert_eq!((seen, others), (own, 0), "{table} read as tenant {tenant}");
                for statement in [
                    format!("INSERT INTO {table} SELECT * FROM {table}"),
                    format!("UPDATE {table} SET tenant_id = tenant_id"),
                    format!("DELETE FROM {table}"),
                ] {
                    let mut write = projections::read::begin_tenant_read(pool, tenant_id)
                        .await
                        .unwrap();
                    let error = sqlx::query(&statement)
                        .execute(&mut *write)
                        .await
                        .expect_err(&statement);
                    assert_eq!(
                        sqlstate(&error).as_deref(),
                        Some("42501"),
                        "{statement} as tenant {tenant}: {error}"
                    );
                }
            }
            checked.push(*table);
        }
    }
    assert!(checked.contains(&"stream_index"), "{checked:?}");
    assert!(
        checked.len() >= commands::domains::projections().len(),
        "{checked:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn changing_plan_revokes_and_reissues_exactly_once() {
    // Proves: a plan change revokes the old plan's subscription grants
    // (unused balance to breakage) and issues the new plan's, once, even when
    // the request is sent again; purchases are untouched.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    acme.post("/v1/subscription", "sub", json!({"plan": "hobby_v3"}))
        .await;
    acme.post(
        "/v1/grants",
        "bought",
        json!({"quota": "credits", "amount": 50, "source": "purchase", "priority": 90}),
    )
    .await;
    acme.post("/v1/quota/credits/consume", "use", json!({"amount": 100}))
        .await;
    let changed = acme
        .post(
            "/v1/subscription/change-plan",
            "upgrade",
            json!({"plan": "scale_v1"}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let again = acme
        .post(
            "/v1/subscription/change-plan",
            "upgrade",
            json!({"plan": "scale_v1"}),
        )
        .await;
    assert!(again.replayed);
    assert_eq!(again.body, changed.body);
    let ended = changed.body["grants_ended"].as_array().unwrap();
    assert_eq!(ended.len(), 3);
    let credits_ended = ended
        .iter()
        .find(|grant| grant["quota"] == "credits")
        .unwrap();
    assert_eq!(credits_ended["ended"], "revoked");
    assert_eq!(credits_ended["breakage"], 900);
    assert_eq!(changed.body["grants_issued"].as_array().unwrap().len(), 3);
    let seq = changed.body["tenant_seq"].as_i64().unwrap();

    server.catch_up().await;
    let grants = acme.read("/v1/grants", seq).await;
    let rows = grants["grants"].as_array().unwrap();
    let count = |source: &str, status: &str| {
        rows.iter()
            .filter(|row| row["source"] == source && row["status"] == status)
            .count()
    };
    assert_eq!(count("subscription", "revoked"), 3);
    assert_eq!(count("subscription", "active"), 3);
    assert_eq!(count("purchase", "active"), 1);
    let credits = acme.read("/v1/quota/credits", seq).await;
    assert_eq!(credits["available"], 100_050);
    assert_eq!(credits["breakage"], 900);
    let balances = assert_trial_balance_is_zero(&acme, seq).await;
    assert_eq!(
        balance_of(&balances, "quota_breakage:credits")["credits"],
        "900"
    );
    let unknown = acme
        .post(
            "/v1/subscription/change-plan",
            "gold",
            json!({"plan": "gold_v1"}),
        )
        .await;
    let error = unknown.assert_error(StatusCode::BAD_REQUEST, "unknown_plan");
    assert_eq!(
        error["details"]["plans"],
        json!(["enterprise_v1", "hobby_v3", "scale_v1", "team_v4"])
    );
    server.stop().await;
}

#[tokio::test]
async fn cancelling_renewing_seats_and_revoking_follow_the_rules() {
    // Proves: seats allocate and release; a purchase revoked posts breakage;
    // cancel at period end keeps the grants until renewal at the period end
    // ends it (as of the period end); cancel now revokes them; the trial
    // balance stays zero throughout.
    let clock = a_month_ago();
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    let subscribed = acme
        .post("/v1/subscription", "sub", json!({"plan": "team_v4"}))
        .await;
    let period_end = time_of(&subscribed.body["period_end"]);
    let allocated = acme
        .post("/v1/quota/seats/allocate", "seat-1", json!({"amount": 3}))
        .await;
    assert_eq!(allocated.status, StatusCode::OK, "{}", allocated.body);
    assert_eq!(allocated.body["allocated"], 3);
    assert_eq!(allocated.body["available"], 7);
    let released = acme
        .post("/v1/quota/seats/release", "seat-2", json!({"amount": 2}))
        .await;
    assert_eq!(released.body["allocated"], 1);
    let too_many = acme
        .post("/v1/quota/seats/release", "seat-3", json!({"amount": 5}))
        .await;
    too_many.assert_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "release_exceeds_allocated",
    );
    let seats_consume = acme
        .post("/v1/quota/seats/consume", "seat-4", json!({"amount": 1}))
        .await;
    seats_consume.assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    let bought = acme
        .post(
            "/v1/grants",
            "buy",
            json!({"quota": "runs", "amount": 30, "source": "purchase"}),
        )
        .await;
    let grant_id = bought.body["grant_id"].as_str().unwrap().to_string();
    let revoked = acme
        .post(
            &format!("/v1/grants/{grant_id}/revoke"),
            "revoke",
            json!({}),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.body["breakage"], 30);
    let twice = acme
        .post(
            &format!("/v1/grants/{grant_id}/revoke"),
            "revoke-2",
            json!({}),
        )
        .await;
    twice.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "grant_closed");

    let scheduled = acme
        .post(
            "/v1/subscription/cancel",
            "cancel",
            json!({"at": "period_end"}),
        )
        .await;
    assert_eq!(scheduled.status, StatusCode::OK);
    assert_eq!(scheduled.body["cancel_at_period_end"], true);
    assert_eq!(scheduled.body["grants_ended"], json!([]));
    let early = acme
        .post("/v1/subscription/renew", "renew-early", json!({}))
        .await;
    early.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "period_not_ended");
    clock.set(period_end);
    let renewed = acme
        .post("/v1/subscription/renew", "renew", json!({}))
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    assert_eq!(renewed.body["status"], "cancelled");
    assert_eq!(time_of(&renewed.body["cancelled_at"]), period_end);
    assert_eq!(renewed.body["grants_ended"].as_array().unwrap().len(), 3);
    assert_eq!(renewed.body["grants_issued"], json!([]));
    let seq = renewed.body["tenant_seq"].as_i64().unwrap();
    server.catch_up().await;
    assert_eq!(
        acme.read("/v1/subscription", seq).await["status"],
        "cancelled"
    );
    assert_trial_balance_is_zero(&acme, seq).await;

    let again = acme
        .post("/v1/subscription", "sub-2", json!({"plan": "hobby_v3"}))
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    let now = acme
        .post(
            "/v1/subscription/cancel",
            "cancel-now",
            json!({"at": "now"}),
        )
        .await;
    assert_eq!(now.body["grants_ended"].as_array().unwrap().len(), 3);
    let seq = now.body["tenant_seq"].as_i64().unwrap();
    server.catch_up().await;
    let credits = acme.read("/v1/quota/credits", seq).await;
    assert_eq!(credits["available"], 0);
    assert_trial_balance_is_zero(&acme, seq).await;
    let none = acme
        .post(
            "/v1/subscription/cancel",
            "cancel-again",
            json!({"at": "now"}),
        )
        .await;
    none.assert_error(StatusCode::NOT_FOUND, "not_subscribed");
    assert_eq!(head_seq(&server, &acme).await, seq);
    assert_trial_balance_is_zero(&acme, seq).await;
    server.stop().await;
}

#[tokio::test]
async fn unlimited_seats_and_runs_cover_any_amount_and_renewal_reissues_them() {
    // Proves: an enterprise subscription's unlimited seats and runs cover
    // any amount (9e12 runs consumed, a billion seats allocated), answering
    // and reading `unlimited` with no `available`; renewing at the period end
    // expires the period's grants and issues new ones for the next period,
    // the allocated seats moving onto the new unlimited seat grant.
    let clock = a_month_ago();
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    let subscribed = acme
        .post("/v1/subscription", "sub", json!({"plan": "enterprise_v1"}))
        .await;
    assert_eq!(
        subscribed.status,
        StatusCode::CREATED,
        "{}",
        subscribed.body
    );
    let period_end = time_of(&subscribed.body["period_end"]);
    let big = acme
        .post(
            "/v1/quota/runs/consume",
            "big",
            json!({"amount": 9_000_000_000_000i64}),
        )
        .await;
    assert_eq!(big.status, StatusCode::OK, "{}", big.body);
    assert_eq!(big.body["unlimited"], true);
    assert_eq!(big.body["available"], Value::Null);
    let seats = acme
        .post(
            "/v1/quota/seats/allocate",
            "seats",
            json!({"amount": 1_000_000_000}),
        )
        .await;
    assert_eq!(seats.status, StatusCode::OK, "{}", seats.body);
    assert_eq!(
        (
            seats.body["allocated"].clone(),
            seats.body["available"].clone(),
            seats.body["unlimited"].clone()
        ),
        (json!(1_000_000_000), Value::Null, json!(true))
    );
    assert_eq!(
        seats.body["allocations"],
        json!([{"grant_id": grant_of(&subscribed.body, "seats")["grant_id"], "amount": 1_000_000_000}])
    );
    // (The reads judge usable grants by the real clock, past this period's
    // end: they are checked in the next period.)
    clock.set(period_end);
    let renewed = acme
        .post("/v1/subscription/renew", "renew", json!({}))
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    let ended: Vec<&str> = renewed.body["grants_ended"]
        .as_array()
        .unwrap()
        .iter()
        .map(|grant| grant["ended"].as_str().unwrap())
        .collect();
    assert_eq!(ended, ["expired", "expired", "expired"]);
    assert_eq!(renewed.body["grants_issued"].as_array().unwrap().len(), 3);
    let next_seats = grant_of(&renewed.body, "seats")["grant_id"].clone();
    let seq = renewed.body["tenant_seq"].as_i64().unwrap();
    server.catch_up().await;
    let credits = acme.read("/v1/quota/credits", seq).await;
    assert_eq!(credits["available"], 500_000);
    assert_eq!(credits["breakage"], 500_000);
    let seats = acme.read("/v1/quota/seats", seq).await;
    assert_eq!(
        (
            seats["allocated"].clone(),
            seats["available"].clone(),
            seats["unlimited"].clone()
        ),
        (json!(1_000_000_000), Value::Null, json!(true))
    );
    let next = acme
        .read(&format!("/v1/grants/{}", next_seats.as_str().unwrap()), seq)
        .await;
    assert_eq!(next["used"], 1_000_000_000);
    assert_trial_balance_is_zero(&acme, seq).await;
    server.stop().await;
}

#[tokio::test]
async fn bad_input_answers_400_naming_the_field_and_changes_nothing() {
    // Proves: zero, negative, fractional and oversized amounts, unknown quota
    // types, unknown fields and malformed JSON answer 400 with their exact
    // code and a message naming the problem, and append nothing.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let granted = acme
        .post(
            "/v1/grants",
            "grant",
            json!({"quota": "credits", "amount": 10, "source": "purchase"}),
        )
        .await;
    let seq = granted.body["tenant_seq"].as_i64().unwrap();
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        (
            "/v1/quota/credits/consume",
            r#"{"amount": 0}"#,
            "amount",
            "invalid_request",
        ),
        (
            "/v1/quota/credits/consume",
            r#"{"amount": -3}"#,
            "amount",
            "invalid_request",
        ),
        (
            "/v1/quota/credits/consume",
            r#"{"amount": 1.5}"#,
            "amount",
            "invalid_request",
        ),
        (
            "/v1/quota/credits/consume",
            r#"{"amount": 9223372036854775808}"#,
            "amount",
            "invalid_request",
        ),
        (
            "/v1/quota/credits/consume",
            r#"{"amount": "5"}"#,
            "amount",
            "invalid_request",
        ),
        (
            "/v1/quota/credits/consume",
            r#"{"amount": 1, "extra": true}"#,
            "unknown field `extra`",
            "invalid_request",
        ),
        (
            "/v1/quota/credits/consume",
            r#"{"amount": 1,"#,
            "EOF",
            "invalid_request",
        ),
        (
            "/v1/quota/tokens/consume",
            r#"{"amount": 1}"#,
            "unknown quota type \"tokens\"",
            "unknown_quota",
        ),
        (
            "/v1/grants",
            r#"{"quota": "credits", "source": "purchase"}"#,
            "amount: required",
            "invalid_request",
        ),
        (
            "/v1/grants",
            r#"{"quota": "credits", "amount": 0, "source": "purchase"}"#,
            "amount",
            "invalid_request",
        ),
        (
            "/v1/grants",
            r#"{"quota": "gold", "amount": 5, "source": "purchase"}"#,
            "unknown quota type",
            "unknown_quota",
        ),
        (
            "/v1/grants",
            r#"{"quota": "credits", "amount": 5, "source": "subscription"}"#,
            "source",
            "invalid_request",
        ),
        (
            "/v1/grants",
            r#"{"quota": "credits", "amount": 5, "source": "purchase", "priority": 101}"#,
            "priority",
            "invalid_request",
        ),
        (
            "/v1/quota/seats/allocate",
            r#"{"amount": 1, "account": "has space"}"#,
            "invalid quota account",
            "invalid_account",
        ),
        (
            "/v1/subscription",
            r#"{"plan": "team_v4", "coupon": "x"}"#,
            "unknown field `coupon`",
            "invalid_request",
        ),
        (
            "/v1/subscription/cancel",
            r#"{"at": "tomorrow"}"#,
            "at",
            "invalid_request",
        ),
    ];
    for (index, (path, body, expected, code)) in cases.into_iter().enumerate() {
        let answer = acme.post_raw(path, &format!("bad-{index}"), body).await;
        let error = answer.assert_error(StatusCode::BAD_REQUEST, code);
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(expected), "{path} {body}: {message}");
    }
    server.catch_up().await;
    let credits = acme.read("/v1/quota/credits", seq).await;
    assert_eq!(credits["consumed"], 0);
    assert_eq!(credits["projection_seq"], seq);
    let head: (i64,) =
        sqlx::query_as("SELECT last_seq FROM chain_heads WHERE tenant_id = $1::uuid")
            .bind(&acme.tenant_id)
            .fetch_one(server.db.store().pool())
            .await
            .unwrap();
    assert_eq!(head.0, seq);
    assert_trial_balance_is_zero(&acme, seq).await;
    server.stop().await;
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document_with_its_schemas() {
    // Proves: /openapi.json lists every route with request and response
    // schemas.
    let server = TestServer::start().await;
    let openapi = server.openapi().await;
    let paths = &openapi["paths"];
    let expected = [
        ("/v1/subscription", "post"),
        ("/v1/subscription", "get"),
        ("/v1/subscription/change-plan", "post"),
        ("/v1/subscription/cancel", "post"),
        ("/v1/subscription/renew", "post"),
        ("/v1/grants", "post"),
        ("/v1/grants", "get"),
        ("/v1/grants/{grant_id}", "get"),
        ("/v1/grants/{grant_id}/revoke", "post"),
        ("/v1/quota", "get"),
        ("/v1/quota/{quota}", "get"),
        ("/v1/quota/{quota}/consume", "post"),
        ("/v1/quota/seats/allocate", "post"),
        ("/v1/quota/seats/release", "post"),
        ("/v1/journal/entries", "get"),
        ("/v1/journal/balances", "get"),
    ];
    for (path, method) in expected {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} missing");
        assert!(
            operation["responses"]["200"].is_object() || operation["responses"]["201"].is_object(),
            "{method} {path}"
        );
        if method == "post" && !path.ends_with("/revoke") && !path.ends_with("/renew") {
            assert!(
                operation["requestBody"]["content"]["application/json"]["schema"].is_object(),
                "{method} {path} has no request schema"
            );
        }
    }
    for schema in [
        "ConsumeBody",
        "ConsumeAnswer",
        "GrantBody",
        "GrantRow",
        "QuotaView",
        "SubscribeBody",
        "BalancesView",
        "ErrorBody",
    ] {
        assert!(
            openapi["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_consume_right_after_the_change_plan_answer_draws_on_the_new_plans_grants() {
    // Proves: when change-plan answers, the new plan's grants are in effect:
    // a consume sent right after succeeds, drawing on the new credits grant.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    acme.post("/v1/subscription", "sub", json!({"plan": "hobby_v3"}))
        .await;
    let changed = acme
        .post(
            "/v1/subscription/change-plan",
            "upgrade",
            json!({"plan": "team_v4"}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let credits_grant = grant_of(&changed.body, "credits")["grant_id"].clone();
    let consumed = acme
        .post(
            "/v1/quota/credits/consume",
            "right-after",
            json!({"amount": 1_500}),
        )
        .await;
    assert_eq!(consumed.status, StatusCode::OK, "{}", consumed.body);
    assert_eq!(
        consumed.body["allocations"],
        json!([{"grant_id": credits_grant, "amount": 1_500}])
    );
    assert_eq!(consumed.body["available"], 18_500);
    server.catch_up().await;
    assert_trial_balance_is_zero(&acme, seq_of(&consumed.body)).await;
    server.stop().await;
}

#[tokio::test]
async fn renewing_is_refused_until_the_period_ends_and_then_starts_the_next_period() {
    // Proves: renew before the period end answers 422 period_not_ended with
    // the period end and appends nothing; at the period end it expires the
    // period's grants and issues the plan's again, the next period starting
    // where the last ended.
    let clock = a_month_ago();
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    let subscribed = acme
        .post("/v1/subscription", "sub", json!({"plan": "team_v4"}))
        .await;
    let period_end = time_of(&subscribed.body["period_end"]);
    acme.post("/v1/quota/credits/consume", "use", json!({"amount": 5_000}))
        .await;
    let before = head_seq(&server, &acme).await;
    clock.set(period_end - Duration::seconds(1));
    let early = acme
        .post("/v1/subscription/renew", "renew-early", json!({}))
        .await;
    let error = early.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "period_not_ended");
    assert_eq!(time_of(&error["details"]["period_end"]), period_end);
    assert_eq!(head_seq(&server, &acme).await, before);

    clock.set(period_end);
    let renewed = acme
        .post("/v1/subscription/renew", "renew", json!({}))
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    assert_eq!(time_of(&renewed.body["period_start"]), period_end);
    assert_eq!(
        time_of(&renewed.body["period_end"]),
        period_end.checked_add_months(Months::new(1)).unwrap()
    );
    let credits_ended = renewed.body["grants_ended"]
        .as_array()
        .unwrap()
        .iter()
        .find(|grant| grant["quota"] == "credits")
        .unwrap()
        .clone();
    assert_eq!(credits_ended["ended"], "expired");
    assert_eq!(credits_ended["breakage"], 15_000);
    let seq = seq_of(&renewed.body);
    server.catch_up().await;
    let credits = acme.read("/v1/quota/credits", seq).await;
    assert_eq!(credits["available"], 20_000);
    assert_eq!(credits["breakage"], 15_000);
    assert_eq!(credits["consumed"], 5_000);
    assert_trial_balance_is_zero(&acme, seq).await;
    server.stop().await;
}

#[tokio::test]
async fn seats_allocated_before_a_plan_change_stay_allocated_on_the_new_plan() {
    // Proves: hobby (1 seat) with its seat allocated, changed to team (10),
    // has 9 seats left, not 10; releasing after the change credits the team
    // grant; the journal and the read tables agree.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    acme.post("/v1/subscription", "sub", json!({"plan": "hobby_v3"}))
        .await;
    let seat = acme
        .post("/v1/quota/seats/allocate", "seat", json!({"amount": 1}))
        .await;
    assert_eq!(seat.status, StatusCode::OK, "{}", seat.body);
    let hobby_seats = seat.body["allocations"][0]["grant_id"].clone();
    let changed = acme
        .post(
            "/v1/subscription/change-plan",
            "upgrade",
            json!({"plan": "team_v4"}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let team_seats = grant_of(&changed.body, "seats")["grant_id"].clone();
    let types: Vec<&str> = changed.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .filter(|kind| kind.starts_with("Seats"))
        .collect();
    assert_eq!(types, ["SeatsMoved", "SeatsMoved"]);
    let too_many = acme
        .post("/v1/quota/seats/allocate", "ten", json!({"amount": 10}))
        .await;
    let error = too_many.assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    assert_eq!(error["details"]["available"], 9);
    let nine = acme
        .post("/v1/quota/seats/allocate", "nine", json!({"amount": 9}))
        .await;
    assert_eq!(nine.status, StatusCode::OK, "{}", nine.body);
    assert_eq!(nine.body["allocated"], 10);
    assert_eq!(nine.body["available"], 0);
    let released = acme
        .post("/v1/quota/seats/release", "release", json!({"amount": 1}))
        .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    assert_eq!(
        released.body["allocations"],
        json!([{"grant_id": team_seats, "amount": 1}])
    );
    let seq = seq_of(&released.body);
    server.catch_up().await;
    let seats = acme.read("/v1/quota/seats", seq).await;
    assert_eq!(seats["allocated"], 9);
    assert_eq!(seats["available"], 1);
    let hobby = acme
        .read(
            &format!("/v1/grants/{}", hobby_seats.as_str().unwrap()),
            seq,
        )
        .await;
    assert_eq!(
        (hobby["status"].clone(), hobby["used"].clone()),
        (json!("revoked"), json!(0))
    );
    let team = acme
        .read(&format!("/v1/grants/{}", team_seats.as_str().unwrap()), seq)
        .await;
    assert_eq!(team["used"], 9);
    let balances = assert_trial_balance_is_zero(&acme, seq).await;
    let hobby_account = balance_of(
        &balances,
        &format!("grant:{}", hobby_seats.as_str().unwrap()),
    );
    assert_eq!(hobby_account["balance"], "0");
    assert_eq!(balance_of(&balances, "seats_allocated")["balance"], "9");
    assert_eq!(balance_of(&balances, "seats_unbacked")["balance"], "0");
    server.stop().await;
}

#[tokio::test]
async fn a_downgrade_below_the_seats_allocated_refuses_allocation_until_releases_catch_up() {
    // Proves: team (10 seats, all allocated) changed to hobby (1) is
    // over-allocated: 9 seats unbacked, available 0, allocation refused;
    // releases give back the unbacked seats first.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    acme.post("/v1/subscription", "sub", json!({"plan": "team_v4"}))
        .await;
    acme.post("/v1/quota/seats/allocate", "ten", json!({"amount": 10}))
        .await;
    let changed = acme
        .post(
            "/v1/subscription/change-plan",
            "downgrade",
            json!({"plan": "hobby_v3"}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let refused = acme
        .post("/v1/quota/seats/allocate", "one", json!({"amount": 1}))
        .await;
    let error = refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    assert_eq!(error["details"]["available"], 0);
    server.catch_up().await;
    let seats = acme.read("/v1/quota/seats", seq_of(&changed.body)).await;
    assert_eq!(
        (seats["allocated"].clone(), seats["available"].clone()),
        (json!(10), json!(0))
    );
    let released = acme
        .post("/v1/quota/seats/release", "nine", json!({"amount": 9}))
        .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    assert_eq!(released.body["allocations"], json!([]));
    assert_eq!(released.body["allocated"], 1);
    assert_eq!(released.body["available"], 0);
    let still = acme
        .post(
            "/v1/quota/seats/allocate",
            "one-again",
            json!({"amount": 1}),
        )
        .await;
    still.assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    acme.post("/v1/quota/seats/release", "last", json!({"amount": 1}))
        .await;
    let fits = acme
        .post("/v1/quota/seats/allocate", "fits", json!({"amount": 1}))
        .await;
    assert_eq!(fits.status, StatusCode::OK, "{}", fits.body);
    let seq = seq_of(&fits.body);
    server.catch_up().await;
    let balances = assert_trial_balance_is_zero(&acme, seq).await;
    assert_eq!(balance_of(&balances, "seats_unbacked")["balance"], "0");
    assert_eq!(balance_of(&balances, "seats_allocated")["balance"], "1");
    server.stop().await;
}

#[tokio::test]
async fn seats_allocated_at_a_renewal_stay_allocated_on_the_next_periods_grant() {
    // Proves: renewing expires the period's seat grant but its allocated
    // seats move onto the next period's grant (7 of 10 left, not 10).
    let clock = a_month_ago();
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    let subscribed = acme
        .post("/v1/subscription", "sub", json!({"plan": "team_v4"}))
        .await;
    acme.post("/v1/quota/seats/allocate", "three", json!({"amount": 3}))
        .await;
    clock.set(time_of(&subscribed.body["period_end"]));
    let renewed = acme
        .post("/v1/subscription/renew", "renew", json!({}))
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    let next_seats = grant_of(&renewed.body, "seats")["grant_id"].clone();
    let released = acme
        .post("/v1/quota/seats/release", "one", json!({"amount": 1}))
        .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    assert_eq!(
        released.body["allocations"],
        json!([{"grant_id": next_seats, "amount": 1}])
    );
    assert_eq!(released.body["allocated"], 2);
    assert_eq!(released.body["available"], 8);
    let seq = seq_of(&released.body);
    server.catch_up().await;
    let seats = acme.read("/v1/quota/seats", seq).await;
    assert_eq!(
        (seats["allocated"].clone(), seats["available"].clone()),
        (json!(2), json!(8))
    );
    assert_trial_balance_is_zero(&acme, seq).await;
    server.stop().await;
}

#[tokio::test]
async fn amounts_past_64_bits_answer_422_and_change_nothing() {
    // Proves: a grant taking the available total past i64 and a consumption
    // taking an unlimited grant's usage past i64 answer 422 amount_overflow
    // and append nothing; the read tables keep up (no stalled projection).
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let full = acme
        .post(
            "/v1/grants",
            "full",
            json!({"quota": "credits", "amount": i64::MAX, "source": "purchase"}),
        )
        .await;
    assert_eq!(full.status, StatusCode::CREATED, "{}", full.body);
    let over = acme
        .post(
            "/v1/grants",
            "one-more",
            json!({"quota": "credits", "amount": 1, "source": "purchase"}),
        )
        .await;
    over.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "amount_overflow");
    assert_eq!(head_seq(&server, &acme).await, seq_of(&full.body));

    let unlimited = acme
        .post(
            "/v1/grants",
            "unlimited",
            json!({"quota": "runs", "amount": null, "source": "promocode"}),
        )
        .await;
    assert_eq!(unlimited.status, StatusCode::CREATED, "{}", unlimited.body);
    let all = acme
        .post("/v1/quota/runs/consume", "all", json!({"amount": i64::MAX}))
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let more = acme
        .post("/v1/quota/runs/consume", "more", json!({"amount": 1}))
        .await;
    more.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "amount_overflow");
    let seq = seq_of(&all.body);
    assert_eq!(head_seq(&server, &acme).await, seq);
    // Every projection applies every event (catch_up fails on one that
    // cannot), so none is stalled on the large amounts.
    server.catch_up().await;
    let grant = acme
        .read(
            &format!(
                "/v1/grants/{}",
                unlimited.body["grant_id"].as_str().unwrap()
            ),
            seq,
        )
        .await;
    assert_eq!(grant["used"], i64::MAX);
    assert_trial_balance_is_zero(&acme, seq).await;
    server.stop().await;
}

#[tokio::test]
async fn revoking_a_grant_works_with_the_projection_workers_stopped() {
    // Proves: revoke finds the grant in the event store, not the read tables:
    // with no worker running it answers 200 (not 503); another tenant's key
    // still gets 404; the read tables agree once caught up.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let beta = server.tenant("beta").await;
    let issued = acme
        .post(
            "/v1/grants",
            "g",
            json!({"quota": "runs", "amount": 30, "source": "purchase", "account": "user-42"}),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    let grant_id = issued.body["grant_id"].as_str().unwrap().to_string();
    let foreign = beta
        .post(&format!("/v1/grants/{grant_id}/revoke"), "r", json!({}))
        .await;
    foreign.assert_error(StatusCode::NOT_FOUND, "not_found");
    let revoked = acme
        .post(&format!("/v1/grants/{grant_id}/revoke"), "r", json!({}))
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.body["breakage"], 30);
    assert_eq!(revoked.body["aggregate_id"], grant_id.as_str());
    let seq = seq_of(&revoked.body);
    assert_eq!(seq, 2);

    server.catch_up().await;
    let grant = acme.read(&format!("/v1/grants/{grant_id}"), seq).await;
    assert_eq!(grant["status"], "revoked");
    assert_eq!(grant["account"], "user-42");
    let balances = assert_trial_balance_is_zero(&acme, seq).await;
    assert_eq!(
        balance_of(&balances, "quota_breakage:runs@user-42")["credits"],
        "30"
    );
    assert_trial_balance_is_zero(&beta, 0).await;
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_grant_id_in_the_path_answers_400_in_the_error_envelope() {
    // Proves: a grant_id that is not a UUID answers 400 with the JSON error
    // envelope naming the parameter, for reads and revokes, and appends
    // nothing.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let issued = acme
        .post(
            "/v1/grants",
            "g",
            json!({"quota": "credits", "amount": 10, "source": "purchase"}),
        )
        .await;
    let seq = seq_of(&issued.body);
    for answer in [
        acme.get("/v1/grants/not-a-uuid").await,
        acme.post("/v1/grants/not-a-uuid/revoke", "r", json!({}))
            .await,
    ] {
        let error = answer.assert_error(StatusCode::BAD_REQUEST, "invalid_path_parameter");
        assert!(
            error["message"].as_str().unwrap().contains("grant_id"),
            "{}",
            answer.body
        );
        assert_eq!(error["details"]["parameter"], "grant_id");
        assert_eq!(error["details"]["value"], "not-a-uuid");
    }
    assert_eq!(head_seq(&server, &acme).await, seq);
    server.catch_up().await;
    assert_trial_balance_is_zero(&acme, seq).await;
    server.stop().await;
}

#[tokio::test]
async fn the_oldest_grant_by_issue_burns_first_even_against_a_backdated_one() {
    // Proves: "oldest" in the burn-down order is issue order: a grant issued
    // later with a backdated effective_at does not jump the queue, in the
    // consumption and in the read side's grant order.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let first = acme
        .post(
            "/v1/grants",
            "first",
            json!({"quota": "credits", "amount": 10, "source": "purchase"}),
        )
        .await;
    let backdated = acme
        .post(
            "/v1/grants",
            "backdated",
            json!({"quota": "credits", "amount": 10, "source": "purchase",
                   "effective_at": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(backdated.status, StatusCode::CREATED, "{}", backdated.body);
    let seq = seq_of(&backdated.body);
    server.catch_up().await;
    let listed = acme.read("/v1/quota/credits", seq).await;
    let order: Vec<Value> = listed["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|grant| grant["grant_id"].clone())
        .collect();
    assert_eq!(
        order,
        [
            first.body["grant_id"].clone(),
            backdated.body["grant_id"].clone()
        ]
    );
    let consumed = acme
        .post("/v1/quota/credits/consume", "use", json!({"amount": 12}))
        .await;
    assert_eq!(
        consumed.body["allocations"],
        json!([
            {"grant_id": first.body["grant_id"], "amount": 10},
            {"grant_id": backdated.body["grant_id"], "amount": 2},
        ])
    );
    server.catch_up().await;
    assert_trial_balance_is_zero(&acme, seq_of(&consumed.body)).await;
    server.stop().await;
}

#[tokio::test]
async fn journal_entries_and_grants_page_in_order_and_filter_by_quota() {
    // Proves: /v1/journal/entries pages by tenant_seq (`next_after_seq` is
    // the last seq of a full page, null on the last page) and /v1/grants
    // filters by quota and pages in issue order through `next` (not by
    // `effective_at`: the later grants are backdated further).
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let mut grants = Vec::new();
    let mut seq = 0;
    for (index, (quota, amount, effective_at)) in [
        ("credits", 10, None),
        ("runs", 20, None),
        ("credits", 30, Some("2001-01-01T00:00:00Z")),
        ("credits", 40, Some("2000-01-01T00:00:00Z")),
    ]
    .into_iter()
    .enumerate()
    {
        let issued = acme
            .post(
                "/v1/grants",
                &format!("g{index}"),
                json!({"quota": quota, "amount": amount, "source": "purchase",
                       "effective_at": effective_at}),
            )
            .await;
        assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
        seq = seq_of(&issued.body);
        grants.push((quota, issued.body["grant_id"].as_str().unwrap().to_string()));
    }
    assert_eq!(seq, 4);
    server.catch_up().await;

    let seqs = |page: &Value| -> Vec<i64> {
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["tenant_seq"].as_i64().unwrap())
            .collect()
    };
    let first = acme.read("/v1/journal/entries?limit=3", seq).await;
    assert_eq!(seqs(&first), [1, 2, 3]);
    assert_eq!(first["next_after_seq"], 3);
    let second = acme
        .read("/v1/journal/entries?limit=3&after_seq=3", seq)
        .await;
    assert_eq!(seqs(&second), [4]);
    assert_eq!(second["next_after_seq"], Value::Null);
    assert_eq!(second["entries"][0]["event_type"], "GrantIssued");
    let too_few = acme.get("/v1/journal/entries?limit=0").await;
    too_few.assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    let ids = |page: &Value| -> Vec<String> {
        page["grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|grant| grant["grant_id"].as_str().unwrap().to_string())
            .collect()
    };
    let credits: Vec<String> = grants
        .iter()
        .filter(|(quota, _)| *quota == "credits")
        .map(|(_, id)| id.clone())
        .collect();
    // The whole list: the credits grants only, in the order they were
    // issued; its pages, concatenated, are the same list.
    let all = ids(&acme.read("/v1/grants?quota=credits", seq).await);
    assert_eq!(all, credits);
    let page = acme.read("/v1/grants?quota=credits&limit=2", seq).await;
    assert_eq!(ids(&page), all[..2]);
    assert_eq!(page["next"], all[1].as_str());
    let rest = acme
        .read(
            &format!("/v1/grants?quota=credits&limit=2&after={}", all[1]),
            seq,
        )
        .await;
    assert_eq!(ids(&rest), all[2..]);
    assert_eq!(rest["next"], Value::Null);
    let runs = acme.read("/v1/grants?quota=runs", seq).await;
    assert_eq!(ids(&runs), [grants[1].1.clone()]);
    server.stop().await;
}

/// Asserts that `body`, answered by `method path` with `status`, has exactly
/// the fields its documented schema allows: none undocumented, none of the
/// required ones missing. Answers the schema's name.
fn assert_documented(
    openapi: &Value,
    path: &str,
    method: &str,
    status: u16,
    body: &Value,
) -> String {
    let reference = openapi["paths"][path][method]["responses"][status.to_string()]["content"]
        ["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path} {status}: no schema reference"))
        .to_string();
    let name = reference
        .trim_start_matches("#/components/schemas/")
        .to_string();
    let schema = &openapi["components"]["schemas"][&name];
    let properties = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{name} has no properties"));
    let fields = body.as_object().unwrap();
    for field in fields.keys() {
        assert!(
            properties.contains_key(field),
            "{method} {path}: `{field}` is not in {name}: {body}"
        );
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        let required = required.as_str().unwrap();
        assert!(
            fields.contains_key(required),
            "{method} {path}: required `{required}` of {name} missing: {body}"
        );
    }
    name
}

#[tokio::test]
async fn every_command_answer_has_the_fields_its_documented_schema_gives() {
    // Proves: the answer of each command route carries exactly the fields
    // of the schema /openapi.json documents for it.
    let clock = a_month_ago();
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let openapi = server.openapi().await;
    let acme = server.tenant("acme").await;
    let mut checked = Vec::new();
    let mut check = |path: &str, route: &str, answer: &support::app::Answer| {
        assert!(answer.status.is_success(), "{path}: {}", answer.body);
        checked.push((
            route.to_string(),
            assert_documented(
                &openapi,
                route,
                "post",
                answer.status.as_u16(),
                &answer.body,
            ),
        ));
    };
    let subscribed = acme
        .post("/v1/subscription", "sub", json!({"plan": "team_v4"}))
        .await;
    check("/v1/subscription", "/v1/subscription", &subscribed);
    let period_end = time_of(&subscribed.body["period_end"]);
    let issued = acme
        .post(
            "/v1/grants",
            "grant",
            json!({"quota": "credits", "amount": 50, "source": "purchase",
                   "expires_at": (period_end - Duration::hours(1)).to_rfc3339()}),
        )
        .await;
    check("/v1/grants", "/v1/grants", &issued);
    let grant_id = issued.body["grant_id"].as_str().unwrap().to_string();
    let consumed = acme
        .post("/v1/quota/credits/consume", "use", json!({"amount": 5}))
        .await;
    check("consume", "/v1/quota/{quota}/consume", &consumed);
    let allocated = acme
        .post("/v1/quota/seats/allocate", "seat", json!({"amount": 2}))
        .await;
    check("allocate", "/v1/quota/seats/allocate", &allocated);
    let released = acme
        .post("/v1/quota/seats/release", "unseat", json!({"amount": 1}))
        .await;
    check("release", "/v1/quota/seats/release", &released);
    let changed = acme
        .post(
            "/v1/subscription/change-plan",
            "change",
            json!({"plan": "scale_v1"}),
        )
        .await;
    check("change-plan", "/v1/subscription/change-plan", &changed);
    let promo = acme
        .post(
            "/v1/grants",
            "promo",
            json!({"quota": "runs", "amount": 10, "source": "promocode"}),
        )
        .await;
    let revoked = acme
        .post(
            &format!(
                "/v1/grants/{}/revoke",
                promo.body["grant_id"].as_str().unwrap()
            ),
            "revoke",
            json!({}),
        )
        .await;
    check("revoke", "/v1/grants/{grant_id}/revoke", &revoked);
    clock.set(period_end - Duration::minutes(30));
    let expired = acme
        .post("/v1/quota/credits/expire", "expire", json!({}))
        .await;
    check("expire", "/v1/quota/{quota}/expire", &expired);
    assert_eq!(expired.body["expired"][0]["grant_id"], grant_id.as_str());
    clock.set(period_end);
    let renewed = acme
        .post("/v1/subscription/renew", "renew", json!({}))
        .await;
    check("renew", "/v1/subscription/renew", &renewed);
    let cancelled = acme
        .post("/v1/subscription/cancel", "cancel", json!({"at": "now"}))
        .await;
    check("cancel", "/v1/subscription/cancel", &cancelled);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(
        checked
            .iter()
            .map(|(_, schema)| schema.as_str())
            .collect::<Vec<_>>(),
        [
            "SubscriptionAnswer",
            "GrantIssuedAnswer",
            "ConsumeAnswer",
            "SeatsAnswer",
            "SeatsAnswer",
            "SubscriptionAnswer",
            "RevokeAnswer",
            "ExpireAnswer",
            "SubscriptionAnswer",
            "SubscriptionAnswer",
        ]
    );
    server.stop().await;
}
