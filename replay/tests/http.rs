//! `GET /v1/replay` over HTTP: the calling tenant's state as of a seq or a
//! time, the same as the CLI's replay, and nothing of other tenants.

use commands::http::{app, routes, AppState, HttpConfig};
use commands::{BusConfig, CommandBus, Metrics};
use eventstore::testing::TestDatabase;
use serde_json::{json, Value};
use std::sync::Arc;

#[path = "http/flood.rs"]
mod flood;

#[tokio::test]
async fn the_replay_route_answers_the_tenants_state_as_of_a_seq() {
    // Proves: GET /v1/replay?as_of_seq=N folds the caller's events up to N,
    // equals the direct replay, refuses ambiguous or invalid points, and
    // answers 422 naming the event when the history up to N does not verify.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let acme = store.create_tenant("acme").await.unwrap();
    let beta = store.create_tenant("beta").await.unwrap();
    let bus = CommandBus::start(
        store.clone(),
        BusConfig::default(),
        Arc::new(Metrics::default()),
    );
    let state = AppState::new(
        store.clone(),
        bus,
        HttpConfig::new(None, 1 << 20),
        tokio::sync::watch::channel(0).1,
        projections::catalog(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let application = app(routes().merge(replay::http::router()), state);
    tokio::spawn(async move { axum::serve(listener, application).await });
    let client = reqwest::Client::new();
    let post = |key: &'static str, path: &'static str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(&acme.api_key)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    post("sub", "/v1/subscription", json!({"plan": "hobby_v3"}))
        .await
        .unwrap();
    let consumed: Value = post("use", "/v1/quota/runs/consume", json!({"amount": 7}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(consumed["tenant_seq"], 5);
    post("more", "/v1/quota/runs/consume", json!({"amount": 3}))
        .await
        .unwrap();

    let get = |key: &str, query: &str| {
        client
            .get(format!("{base}/v1/replay{query}"))
            .bearer_auth(key.to_string())
            .send()
    };
    let at_five: Value = get(&acme.api_key, "?as_of_seq=5")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(at_five["as_of_seq"], 5);
    let runs = at_five["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|quota| quota["quota"] == "runs")
        .unwrap()
        .clone();
    assert_eq!(runs["consumed"], "7");
    assert_eq!(runs["available"], consumed["available"]);
    let mut connection = store.pool().acquire().await.unwrap();
    let direct =
        replay::as_of::replay_tenant(&mut connection, acme.tenant_id, replay::as_of::AsOf::Seq(5))
            .await
            .unwrap();
    assert_eq!(at_five, direct);
    let head: Value = get(&acme.api_key, "").await.unwrap().json().await.unwrap();
    assert_eq!(head["as_of_seq"], 6);

    let other: Value = get(&beta.api_key, "").await.unwrap().json().await.unwrap();
    assert_eq!(other["as_of_seq"], 0);
    assert_eq!(other["quotas"], json!([]));
    assert_eq!(other["subscription"], Value::Null);

    let both = get(&acme.api_key, "?as_of_seq=1&as_of=2026-01-01T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(both.status(), 400);
    let negative = get(&acme.api_key, "?as_of_seq=-1").await.unwrap();
    assert_eq!(negative.status(), 400);

    // An event edited behind the triggers: the replay refuses it, naming it.
    let mut connection = store.pool().acquire().await.unwrap();
    for statement in [
        "ALTER TABLE events DISABLE TRIGGER events_append_only".to_string(),
        format!(
            "UPDATE events SET payload = jsonb_set(payload, '{{QuotaConsumed,amount}}', '4') \
             WHERE tenant_id = '{}' AND tenant_seq = 6",
            acme.tenant_id
        ),
        "ALTER TABLE events ENABLE TRIGGER events_append_only".to_string(),
    ] {
        sqlx::query(&statement)
            .execute(&mut *connection)
            .await
            .unwrap();
    }
    let refused = get(&acme.api_key, "?as_of_seq=6").await.unwrap();
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "history_does_not_verify");
    assert_eq!(body["error"]["details"]["finding"]["check"], "chain");
    assert_eq!(body["error"]["details"]["finding"]["tenant_seq"], 6);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the history does not verify: "),
        "{body}"
    );
    // The point before it still answers.
    assert_eq!(
        get(&acme.api_key, "?as_of_seq=5").await.unwrap().status(),
        200
    );
}
