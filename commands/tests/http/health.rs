//! Health, metrics, the OpenAPI document and the fallbacks.

use super::*;

#[tokio::test]
async fn health_metrics_openapi_and_fallbacks_answer() {
    // Proves: /healthz checks the database, /metrics counts commands,
    // /openapi.json describes the routes, unknown routes and methods answer
    // in the envelope.
    let app = spawn_app(None).await;
    let health = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok", "reads": "primary", "replica_answered": null})
    );

    app.add("c")
        .bearer_auth(&app.api_key)
        .header("idempotency-key", "m")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("ledger_commands_total{kind=\"add_to_counter\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ledger_command_duration_seconds_count{kind=\"add_to_counter\"} 1"),
        "{metrics}"
    );

    let openapi: Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/tenants",
        "/v1/tenants/{tenant_id}/api-keys",
        "/v1/tenants/{tenant_id}/api-keys/{key_id}/revoke",
        "/healthz",
        "/metrics",
    ] {
        assert!(
            openapi["paths"].get(path).is_some(),
            "{path} missing from {}",
            openapi["paths"]
        );
    }
    assert!(openapi["components"]["schemas"].get("ErrorBody").is_some());

    let unknown = app
        .client
        .get(format!("{}/v1/nothing", app.base))
        .send()
        .await
        .unwrap();
    error_of(unknown, StatusCode::NOT_FOUND, "not_found").await;
    let wrong_method = app
        .client
        .delete(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    error_of(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn metrics_scrapes_never_query_the_database_and_need_the_token_when_one_is_set() {
    // Proves: with a metrics token, /metrics answers 401 without it, with
    // another token or with the admin token; with it, the projection gauges
    // are there from the first scrape (computed before the server took a
    // connection); and 50 scrapes answer while the projection tables are
    // locked exclusively: no scrape queries them. Without a token /metrics
    // stays open.
    const METRICS_TOKEN: &str = "scrape-secret";
    let db = TestDatabase::new().await;
    projections::status::register(db.store().pool(), &commands::domains::projections())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = commands::server::ServeConfig {
        http: HttpConfig::new(Some(ADMIN_TOKEN), BODY_LIMIT_BYTES)
            .with_metrics_token(Some(METRICS_TOKEN)),
        bus: BusConfig::default(),
        workers: false,
        plans: aggregates::plan::PlanCatalog::builtin(),
        ticker: None,
        read_database_url: None,
        database_time: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let store = db.store().clone();
    let server = tokio::spawn(async move {
        commands::server::serve(
            store,
            listener,
            config,
            routes(),
            commands::domains::projections(),
            Vec::new(),
            async move {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
    });
    let client = reqwest::Client::new();
    let scrape = |token: Option<&'static str>| {
        let request = client.get(format!("{base}/metrics"));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    for token in [None, Some("wrong"), Some(ADMIN_TOKEN)] {
        let refused = scrape(token).await.unwrap();
        assert_eq!(
            error_of(refused, StatusCode::UNAUTHORIZED, "unauthorized").await["error"]["code"],
            "unauthorized"
        );
    }
    let first = scrape(Some(METRICS_TOKEN)).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let text = first.text().await.unwrap();
    assert!(
        text.contains("ledger_projection_state{projection=\"stream_index\",state=\"live\"} 1"),
        "{text}"
    );

    let mut lock = db.store().pool().begin().await.unwrap();
    sqlx::query(
        "LOCK TABLE projections, projection_checkpoints, chain_heads IN ACCESS EXCLUSIVE MODE",
    )
    .execute(&mut *lock)
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..50 {
            assert_eq!(
                scrape(Some(METRICS_TOKEN)).await.unwrap().status(),
                StatusCode::OK
            );
        }
    })
    .await
    .expect("50 scrapes did not answer within 10 s with the projection tables locked");
    lock.rollback().await.unwrap();
    let _ = stop.send(());
    server.await.unwrap();

    let open = spawn_app(None).await;
    let scraped = open
        .client
        .get(format!("{}/metrics", open.base))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_route_that_authenticates_documents_its_statuses_and_the_429_of_throttling() {
    // Proves: /openapi.json is served as application/json, the same bytes
    // each time; the tenant and key routes and /metrics document exactly
    // the statuses they answer; every operation that authenticates
    // documents 429 in the error envelope with Retry-After, added to the
    // domain reason where it already had one; /healthz, which does not
    // authenticate, has none.
    let app = spawn_app(Some(ADMIN_TOKEN)).await;
    let fetch = || async {
        let response = app
            .client
            .get(format!("{}/openapi.json", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        response.bytes().await.unwrap()
    };
    let bytes = fetch().await;
    assert_eq!(fetch().await, bytes);
    let openapi: Value = serde_json::from_slice(&bytes).unwrap();
    let statuses = |method: &str, path: &str| -> Vec<String> {
        let responses = openapi["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} undocumented"));
        responses.keys().cloned().collect()
    };
    for (method, path, expected) in [
        (
            "post",
            "/v1/tenants",
            vec!["201", "400", "401", "408", "413", "422", "429", "503"],
        ),
        (
            "post",
            "/v1/tenants/{tenant_id}/api-keys",
            vec!["201", "400", "401", "404", "408", "429", "503"],
        ),
        (
            "get",
            "/v1/tenants/{tenant_id}/api-keys",
            vec!["200", "400", "401", "404", "408", "429", "503"],
        ),
        (
            "post",
            "/v1/tenants/{tenant_id}/api-keys/{key_id}/revoke",
            vec!["200", "400", "401", "404", "408", "422", "429", "503"],
        ),
        ("get", "/metrics", vec!["200", "401", "408", "429"]),
        ("get", "/healthz", vec!["200", "400", "408", "503"]),
    ] {
        assert_eq!(statuses(method, path), expected, "{method} {path}");
    }
    let mut open = Vec::new();
    for (path, item) in openapi["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation["security"].as_array().is_none_or(Vec::is_empty) {
                open.push(format!("{method} {path}"));
                continue;
            }
            let throttled = &operation["responses"]["429"];
            assert_eq!(
                throttled["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path}"
            );
            assert!(
                throttled["description"]
                    .as_str()
                    .unwrap()
                    .contains("too_many_requests"),
                "{method} {path}: {throttled}"
            );
        }
    }
    assert_eq!(
        open,
        ["get /healthz"],
        "every other operation authenticates"
    );
    let consume = &openapi["paths"]["/v1/quota/{quota}/consume"]["post"]["responses"]["429"];
    assert!(
        consume["description"]
            .as_str()
            .unwrap()
            .starts_with("Not enough quota"),
        "{consume}"
    );
    assert!(
        openapi["paths"]["/v1/tenants"]["post"]["responses"]["429"]["headers"]
            .get("Retry-After")
            .is_some()
    );
    assert!(openapi["components"]["securitySchemes"]
        .get("metrics_token")
        .is_some());
}
