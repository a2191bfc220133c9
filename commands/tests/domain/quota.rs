//! Consuming quota under concurrency, and once per idempotency key.

use super::*;

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
