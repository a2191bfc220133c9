//! Seats allocated across plan changes, downgrades and renewals.

use super::*;

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
