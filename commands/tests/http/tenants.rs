//! Tenants, created through the admin routes only.

use super::*;

#[tokio::test]
async fn tenants_are_created_with_the_admin_token_only() {
    // Proves: POST /v1/tenants needs the admin token (a tenant key is
    // refused), answers the id and a working key, and is idempotent by key.
    let app = spawn_app(Some(ADMIN_TOKEN)).await;
    let create = |token: &str, key: &str, name: &str| {
        app.client
            .post(format!("{}/v1/tenants", app.base))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&json!({"name": name}))
            .send()
    };
    let refused = create(&app.api_key, "t1", "beta").await.unwrap();
    assert_eq!(
        error_of(refused, StatusCode::UNAUTHORIZED, "unauthorized").await["error"]["message"],
        "this route needs the admin token"
    );
    let created = create(ADMIN_TOKEN, "t1", "beta").await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let body: Value = created.json().await.unwrap();
    let api_key = body["api_key"].as_str().unwrap().to_string();
    assert_eq!(body["name"], "beta");

    let replayed = create(ADMIN_TOKEN, "t1", "beta").await.unwrap();
    assert_eq!(replayed.status(), StatusCode::CREATED);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let replayed: Value = replayed.json().await.unwrap();
    assert_eq!(replayed["tenant_id"], body["tenant_id"]);
    assert_eq!(replayed["api_key"], Value::Null);
    let reused = create(ADMIN_TOKEN, "t1", "gamma").await.unwrap();
    error_of(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    let empty = create(ADMIN_TOKEN, "t2", " ").await.unwrap();
    error_of(empty, StatusCode::BAD_REQUEST, "invalid_request").await;

    // The new tenant's key works on a tenant route.
    let added = app
        .add("c")
        .bearer_auth(&api_key)
        .header("idempotency-key", "k")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::OK);
    let issue = |key: Option<&'static str>| {
        let request = app
            .client
            .post(format!(
                "{}/v1/tenants/{}/api-keys",
                app.base,
                body["tenant_id"].as_str().unwrap()
            ))
            .bearer_auth(ADMIN_TOKEN);
        match key {
            Some(key) => request.header("idempotency-key", key),
            None => request,
        }
        .send()
    };
    let missing = issue(None).await.unwrap();
    error_of(missing, StatusCode::BAD_REQUEST, "missing_idempotency_key").await;
    let malformed = app
        .client
        .post(format!("{}/v1/tenants/not-a-uuid/api-keys", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("idempotency-key", "rotate-0")
        .send()
        .await
        .unwrap();
    let malformed = error_of(malformed, StatusCode::BAD_REQUEST, "invalid_path_parameter").await;
    assert_eq!(malformed["error"]["details"]["value"], "not-a-uuid");
    let issued = issue(Some("rotate-1")).await.unwrap();
    assert_eq!(issued.status(), StatusCode::CREATED);
    let issued: Value = issued.json().await.unwrap();
    let second_key = issued["api_key"].as_str().unwrap().to_string();
    assert_ne!(second_key, api_key);
    let replayed = issue(Some("rotate-1")).await.unwrap();
    assert_eq!(replayed.status(), StatusCode::CREATED);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let replayed: Value = replayed.json().await.unwrap();
    assert_eq!(replayed["api_key"], Value::Null);
    assert_eq!(replayed["tenant_id"], body["tenant_id"]);
    // Both issued keys work; the replay issued none.
    let (keys,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys WHERE tenant_id = $1")
        .bind(uuid::Uuid::parse_str(body["tenant_id"].as_str().unwrap()).unwrap())
        .fetch_one(app.db.store().pool())
        .await
        .unwrap();
    assert_eq!(keys, 2);
    let added = app
        .add("c")
        .bearer_auth(&second_key)
        .header("idempotency-key", "k2")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_an_admin_token_configured_admin_routes_are_closed() {
    // Proves: a server started without LEDGER_ADMIN_TOKEN creates no tenants.
    let app = spawn_app(None).await;
    let response = app
        .client
        .post(format!("{}/v1/tenants", app.base))
        .bearer_auth("anything")
        .header("idempotency-key", "t")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    error_of(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}
