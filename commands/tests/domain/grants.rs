//! Grants revoked without the workers, and burnt in issue order.

use super::*;

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
async fn what_a_holder_was_ever_granted_stays_within_64_bits() {
    // Proves: a grant is refused when what the holder was ever granted of
    // the quota would pass 2^63-1, even with nothing open (the first grant
    // revoked), so the quota's totals always read as numbers.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let grant = |key: &'static str, amount: i64| {
        acme.post(
            "/v1/grants",
            key,
            json!({"quota": "credits", "amount": amount, "source": "purchase"}),
        )
    };
    let first = grant("first", i64::MAX).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let grant_id = first.body["grant_id"].as_str().unwrap();
    let revoked = acme
        .post(&format!("/v1/grants/{grant_id}/revoke"), "r", json!({}))
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    let second = grant("second", 1).await;
    let error = second.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "amount_overflow");
    assert_eq!(error["details"], json!({"max": i64::MAX}));
    let seq = seq_of(&revoked.body);
    server.catch_up().await;
    let credits = acme.read("/v1/quota/credits", seq).await;
    assert_eq!(
        [
            &credits["granted"],
            &credits["breakage"],
            &credits["available"]
        ],
        [&json!(i64::MAX), &json!(i64::MAX), &json!(0)]
    );
    server.stop().await;
}
