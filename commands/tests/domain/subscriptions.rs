//! Subscribing, changing plan, cancelling and renewing: the grants each issues and revokes.

use super::*;

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
    let before = acme.read("/v1/journal/balances?as_of=4", seq).await;
    assert_eq!(before["as_of_seq"], 4);
    assert!(before["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|row| row["account"] != "quota_consumed:credits"));
    server.stop().await;
}

#[tokio::test]
async fn changing_plan_revokes_and_reissues_exactly_once() {
    // Proves: a plan change revokes the old plan's subscription grants
    // (unused balance to breakage) and issues the new plan's (its credits
    // less the 100 the period consumed), once, even when the request is
    // sent again; purchases are untouched.
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
    assert_eq!(grant_of(&changed.body, "credits")["amount"], 99_900);
    assert_eq!(grant_of(&changed.body, "runs")["amount"], 1_000_000);
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
    assert_eq!(credits["available"], 99_950);
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

/// Changes the tenant's plan to `plan`; asserts 200.
async fn change_plan(client: &Client, key: &str, plan: &str) -> Value {
    let changed = client
        .post("/v1/subscription/change-plan", key, json!({ "plan": plan }))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    changed.body
}

#[tokio::test]
async fn a_periods_allowance_is_spent_once_across_plan_changes() {
    // Proves: a plan change issues the new plan's credits less what the
    // period has consumed on its subscription grants, whichever plan
    // issued them (seats and runs whole): team_v4 with 300 consumed,
    // changed to hobby_v3, issues 700 of its 1,000; with those used too,
    // back to team_v4 issues 19,000 of 20,000; to hobby_v3 again, no
    // credits grant at all, and a consume answers 429 with 0 available.
    // Under the fourth rules the same change issued the whole 20,000.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    acme.post("/v1/subscription", "sub", json!({"plan": "team_v4"}))
        .await;
    let consume = |key: &'static str, amount: i64| {
        acme.post(
            "/v1/quota/credits/consume",
            key,
            json!({ "amount": amount }),
        )
    };
    let used = consume("use-300", 300).await;
    assert_eq!(used.status, StatusCode::OK, "{}", used.body);
    let down = change_plan(&acme, "down", "hobby_v3").await;
    assert_eq!(grant_of(&down, "credits")["amount"], 700);
    assert_eq!(grant_of(&down, "runs")["amount"], 10_000);
    assert_eq!(grant_of(&down, "seats")["amount"], 1);
    let rest = consume("use-700", 700).await;
    assert_eq!(rest.status, StatusCode::OK, "{}", rest.body);
    assert_eq!(rest.body["available"], 0);
    let up = change_plan(&acme, "up", "team_v4").await;
    assert_eq!(grant_of(&up, "credits")["amount"], 19_000);
    let again = change_plan(&acme, "down-again", "hobby_v3").await;
    let issued: Vec<&str> = again["grants_issued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|grant| grant["quota"].as_str().unwrap())
        .collect();
    assert_eq!(issued, ["seats", "runs"]);
    let none = consume("use-1", 1).await;
    let error = none.assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    assert_eq!(error["details"]["available"], 0);
    // The same change decided under the fourth rules.
    let older = server.bus_under(aggregates::rules::Rules::FOURTH, commands::Clock::default());
    let whole = older
        .execute(
            acme.tenant_id.parse().unwrap(),
            eventstore::IdempotencyKey::parse("up-old").unwrap(),
            commands::requests::subscription::ChangePlan {
                plan: aggregates::plan::PlanCatalog::builtin()
                    .get("team_v4")
                    .unwrap()
                    .clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(grant_of(&whole.body, "credits")["amount"], 20_000);
    server.catch_up().await;
    assert_trial_balance_is_zero(&acme, seq_of(&whole.body)).await;
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
    // A promotion expired by the time of the cancel ends in the same
    // decision, but is no subscription grant: not in its answer.
    let promo_ends = period_end + chrono::Duration::hours(1);
    let promo = acme
        .post(
            "/v1/grants",
            "promo",
            json!({"quota": "credits", "amount": 70, "source": "promocode", "expires_at": promo_ends}),
        )
        .await;
    assert_eq!(promo.status, StatusCode::CREATED, "{}", promo.body);
    clock.set(promo_ends + chrono::Duration::hours(1));
    let now = acme
        .post(
            "/v1/subscription/cancel",
            "cancel-now",
            json!({"at": "now"}),
        )
        .await;
    let ended = now.body["grants_ended"].as_array().unwrap();
    assert_eq!(ended.len(), 3, "{}", now.body);
    assert!(ended
        .iter()
        .all(|grant| grant["grant_id"] != promo.body["grant_id"]));
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
    // where the last ended and ending two months after the first started
    // (on its day of the month, or the month's last); a trial ending after
    // the renewal is still shown.
    let clock = a_month_ago();
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    let trial_end = eventstore::chain::to_stored_precision(clock.now() + Duration::days(45));
    let subscribed = acme
        .post(
            "/v1/subscription",
            "sub",
            json!({"plan": "team_v4", "trial_ends_at": trial_end}),
        )
        .await;
    let period_start = time_of(&subscribed.body["period_start"]);
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
        period_start.checked_add_months(Months::new(2)).unwrap()
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
    let subscription = acme.read("/v1/subscription", seq).await;
    assert_eq!(time_of(&subscription["trial_ends_at"]), trial_end);
    assert_eq!(subscription["trialing"], true);
    assert_trial_balance_is_zero(&acme, seq).await;
    server.stop().await;
}

#[tokio::test]
async fn a_retry_gets_its_first_answer_though_the_catalog_changed_since() {
    // Proves: a subscribe and a plan change, retried under their keys
    // after a restart with a catalog that no longer has their plans (and
    // another plan's terms changed), get their first answers (replayed)
    // where they got 400 unknown_plan; the same key with another plan is
    // 422 idempotency_key_reused, with an unknown one 400 unknown_plan. A
    // plan change an older build answered (its fingerprint that of the
    // resolved request) is answered on retry while the plan resolves as it
    // did.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let subscribed = acme
        .post("/v1/subscription", "sub-1", json!({"plan": "hobby_v3"}))
        .await;
    assert_eq!(
        subscribed.status,
        StatusCode::CREATED,
        "{}",
        subscribed.body
    );
    let older = server.bus(commands::Clock::default());
    let team = aggregates::plan::PlanCatalog::builtin()
        .get("team_v4")
        .unwrap()
        .clone();
    let old = older
        .execute(
            acme.tenant_id.parse().unwrap(),
            eventstore::IdempotencyKey::parse("old-build").unwrap(),
            commands::requests::subscription::ChangePlan { plan: team },
        )
        .await
        .unwrap();
    assert!(old.accepted(), "{}", old.body);
    let retried = acme
        .post(
            "/v1/subscription/change-plan",
            "old-build",
            json!({"plan": "team_v4"}),
        )
        .await;
    assert_eq!(
        (retried.status, retried.replayed, &retried.body),
        (StatusCode::OK, true, old.body.as_ref())
    );
    let scaled = change_plan(&acme, "up-1", "scale_v1").await;
    let catalog = r#"{"plans": [{"id": "team_v4", "seats": 50, "runs": null, "credits": 1}]}"#;
    let server = server
        .restart_with(Options {
            plans: Some(aggregates::plan::PlanCatalog::from_json(catalog).unwrap()),
            ..Options::default()
        })
        .await;
    let acme = Client {
        base: server.base.clone(),
        ..acme
    };
    let again = acme
        .post("/v1/subscription", "sub-1", json!({"plan": "hobby_v3"}))
        .await;
    assert_eq!(
        (again.status, again.replayed, &again.body),
        (StatusCode::CREATED, true, &subscribed.body)
    );
    let again = acme
        .post(
            "/v1/subscription/change-plan",
            "up-1",
            json!({"plan": "scale_v1"}),
        )
        .await;
    assert_eq!(
        (again.status, again.replayed, &again.body),
        (StatusCode::OK, true, &scaled)
    );
    let other = acme
        .post("/v1/subscription", "sub-1", json!({"plan": "team_v4"}))
        .await;
    other.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    let unknown = acme
        .post("/v1/subscription", "sub-1", json!({"plan": "gone_v1"}))
        .await;
    unknown.assert_error(StatusCode::BAD_REQUEST, "unknown_plan");
    server.stop().await;
}
