//! One tenant's flood of replays is bounded, and another tenant's reads
//! stay fast meanwhile.

use commands::http::{app, routes, AppState, HttpConfig};
use commands::{BusConfig, CommandBus, Metrics};
use eventstore::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound of every wait in this test.
const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn one_tenants_replay_flood_gets_429_and_another_tenants_reads_stay_fast() {
    // Proves: with replays bounded to 2 per tenant, 64 concurrent replays
    // of one tenant (held in flight by a lock on the events) answer 429
    // too_many_requests with Retry-After for all but 2, at once; another
    // tenant's reads meanwhile answer in well under a second (they once
    // took 9.8 s); once the lock goes, the 2 replays and the other
    // tenant's replay answer 200.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let acme = store.create_tenant("acme").await.unwrap();
    let beta = store.create_tenant("beta").await.unwrap();
    let bus = CommandBus::start(
        store.clone(),
        BusConfig::default(),
        Arc::new(Metrics::default()),
    );
    let mut config = HttpConfig::new(None, 1 << 20);
    config.replays_per_tenant_max = 2;
    config.replays_max = 4;
    let state = AppState::new(
        store.clone(),
        bus,
        config,
        tokio::sync::watch::channel(0).1,
        commands::domains::projections(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let application = app(routes().merge(replay::http::router()), state);
    tokio::spawn(async move { axum::serve(listener, application).await });
    let client = reqwest::Client::new();
    for (tenant, key) in [(&acme, "acme-sub"), (&beta, "beta-sub")] {
        let response = client
            .post(format!("{base}/v1/subscription"))
            .bearer_auth(&tenant.api_key)
            .header("idempotency-key", key)
            .json(&json!({"plan": "team_v4"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let catalog = commands::domains::projections();
    let all: Vec<&dyn projections::Projection> = catalog.iter().map(AsRef::as_ref).collect();
    projections::runtime::catch_up_all(store.pool(), &all, None, 1_000)
        .await
        .unwrap();

    // Replays read the events: a lock on them holds every replay in flight.
    let mut lock = store.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..64 {
        let request = client
            .get(format!("{base}/v1/replay"))
            .bearer_auth(&acme.api_key);
        let answers = answers.clone();
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|value| value.to_str().unwrap().to_string());
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let _ = answers.send((status, retry_after, body));
        });
    }
    for index in 0..62 {
        let (status, retry_after, body) = tokio::time::timeout(DEADLINE, answered.recv())
            .await
            .unwrap_or_else(|_| panic!("only {index} of 62 refused replays answered in time"))
            .unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"]["code"], "too_many_requests");
        assert_eq!(
            body["error"]["message"],
            "this tenant has 2 replays in flight, the most it may; retry shortly"
        );
    }
    for _ in 0..10 {
        let started = Instant::now();
        let response = client
            .get(format!("{base}/v1/quota/seats?min_seq=1"))
            .bearer_auth(&beta.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(1),
            "another tenant's read took {elapsed:?} during the flood"
        );
    }
    lock.rollback().await.unwrap();
    for index in 0..2 {
        let (status, _, body) = tokio::time::timeout(DEADLINE, answered.recv())
            .await
            .unwrap_or_else(|_| panic!("only {index} of the 2 replays in flight answered"))
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["as_of_seq"], 4, "{body}");
    }
    let response = client
        .get(format!("{base}/v1/replay"))
        .bearer_auth(&beta.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
