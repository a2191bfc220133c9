//! API keys listed and revoked by id, here and on other servers.

use super::*;

#[tokio::test]
async fn api_keys_are_listed_and_revoked_by_id_and_a_revoked_key_answers_401_at_once() {
    // Proves: issuing a key answers its id (replays too); the admin lists a
    // tenant's keys by id and hint, never a key; revoking answers 200 with
    // the time, the same again, 400/401/404 as documented (another tenant's
    // key is 404); the revoked key answers 401 on this server at once, the
    // key cache's clock unmoved, while the tenant's other key still works.
    let clock = TestInstant::new();
    let app = spawn_app_options(AppOptions {
        admin_token: Some(ADMIN_TOKEN),
        auth_clock: Some(clock.clock()),
        ..AppOptions::default()
    })
    .await;
    let openapi = app.openapi().await;
    let create = || {
        app.client
            .post(format!("{}/v1/tenants", app.base))
            .bearer_auth(ADMIN_TOKEN)
            .header("idempotency-key", "create-beta")
            .json(&json!({"name": "beta"}))
            .send()
    };
    let created = create().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        assert_documented(&openapi, "post", "/v1/tenants", 201, &created),
        "TenantCreated"
    );
    let tenant = created["tenant_id"].as_str().unwrap().to_string();
    let first_key = created["api_key"].as_str().unwrap().to_string();
    let first_id = created["key_id"].as_str().unwrap().to_string();
    let replayed: Value = create().await.unwrap().json().await.unwrap();
    assert_eq!(
        replayed,
        json!({"tenant_id": tenant, "name": "beta", "api_key": null, "key_id": first_id})
    );
    let issue = || {
        app.client
            .post(format!("{}/v1/tenants/{tenant}/api-keys", app.base))
            .bearer_auth(ADMIN_TOKEN)
            .header("idempotency-key", "rotate-1")
            .send()
    };
    let issued: Value = issue().await.unwrap().json().await.unwrap();
    let issue_path = "/v1/tenants/{tenant_id}/api-keys";
    assert_eq!(
        assert_documented(&openapi, "post", issue_path, 201, &issued),
        "ApiKeyIssued"
    );
    let second_key = issued["api_key"].as_str().unwrap().to_string();
    let second_id = issued["key_id"].as_str().unwrap().to_string();
    assert_ne!(second_id, first_id);
    let replayed: Value = issue().await.unwrap().json().await.unwrap();
    assert_eq!(
        replayed,
        json!({"tenant_id": tenant, "api_key": null, "key_id": second_id})
    );
    // The first key works, and is cached from now on.
    assert_eq!(app.add_with(&first_key, "use-1").await, StatusCode::OK);

    let listed = app.keys(&tenant).await;
    assert_eq!(listed.status(), StatusCode::OK);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(
        assert_documented(&openapi, "get", issue_path, 200, &listed),
        "ApiKeyList"
    );
    assert_eq!(listed["tenant_id"], tenant.as_str());
    let keys = listed["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for (key, id, text) in [
        (&keys[0], &second_id, &second_key),
        (&keys[1], &first_id, &first_key),
    ] {
        let mut fields: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["created_at", "hint", "key_id", "last_used_at", "revoked_at"]
        );
        assert_eq!(key["key_id"], id.as_str());
        assert_eq!(key["hint"], &text[text.len() - 4..]);
        assert_eq!(key["revoked_at"], Value::Null);
        assert!(
            !listed.to_string().contains(&text[36..]),
            "a key's secret was listed"
        );
    }
    assert_eq!(
        keys[0]["last_used_at"],
        Value::Null,
        "the second key was never used"
    );
    assert!(keys[1]["last_used_at"].is_string(), "{listed}");

    let revoke_path = "/v1/tenants/{tenant_id}/api-keys/{key_id}/revoke";
    let missing = app.revoke(&tenant, &first_id, None).await;
    assert_eq!(
        error_of(missing, StatusCode::BAD_REQUEST, "missing_idempotency_key").await["error"]
            ["code"],
        "missing_idempotency_key"
    );
    let malformed = error_of(
        app.revoke(&tenant, "nope", Some("r")).await,
        StatusCode::BAD_REQUEST,
        "invalid_path_parameter",
    )
    .await;
    assert_eq!(malformed["error"]["code"], "invalid_path_parameter");
    assert_eq!(
        malformed["error"]["details"],
        json!({"parameter": "key_id", "value": "nope"})
    );
    let as_tenant = app
        .client
        .post(format!(
            "{}/v1/tenants/{tenant}/api-keys/{first_id}/revoke",
            app.base
        ))
        .bearer_auth(&second_key)
        .header("idempotency-key", "r")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(as_tenant, StatusCode::UNAUTHORIZED, "unauthorized").await["error"]["message"],
        "this route needs the admin token"
    );
    let acme = tenant_of(&app.api_key);
    let acme_key_id = app.keys(&acme).await.json::<Value>().await.unwrap()["keys"][0]["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    for (tenant, key_id) in [
        (uuid::Uuid::now_v7().to_string(), first_id.clone()),
        (tenant.clone(), uuid::Uuid::now_v7().to_string()),
        (tenant.clone(), acme_key_id.clone()),
    ] {
        let unknown = app.revoke(&tenant, &key_id, Some("r")).await;
        assert_eq!(
            error_of(unknown, StatusCode::NOT_FOUND, "not_found").await["error"]["code"],
            "not_found"
        );
    }
    let unknown_tenant = app.keys(&uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(
        error_of(unknown_tenant, StatusCode::NOT_FOUND, "not_found").await["error"]["code"],
        "not_found"
    );
    assert_eq!(
        app.add_with(&app.api_key, "acme-1").await,
        StatusCode::OK,
        "acme's key untouched"
    );

    let revoked = app.revoke(&tenant, &first_id, Some("revoke-1")).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let revoked: Value = revoked.json().await.unwrap();
    assert_eq!(
        assert_documented(&openapi, "post", revoke_path, 200, &revoked),
        "ApiKeyRevoked"
    );
    let revoked_at = revoked["revoked_at"].as_str().unwrap().to_string();
    assert_eq!(
        revoked,
        json!({"tenant_id": tenant, "key_id": first_id, "revoked_at": revoked_at})
    );
    let again = app.revoke(&tenant, &first_id, Some("revoke-2")).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap(), revoked);
    // The first key again is a replay; naming the second key it is refused,
    // and the second key stays valid.
    let replayed = app.revoke(&tenant, &first_id, Some("revoke-1")).await;
    assert_eq!(
        (
            replayed.status(),
            replayed.headers().get("idempotent-replayed").cloned()
        ),
        (
            StatusCode::OK,
            Some(reqwest::header::HeaderValue::from_static("true"))
        )
    );
    assert_eq!(replayed.json::<Value>().await.unwrap(), revoked);
    let reused = app.revoke(&tenant, &second_id, Some("revoke-1")).await;
    assert_eq!(
        error_of(
            reused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused"
        )
        .await["error"]["code"],
        "idempotency_key_reused"
    );

    // The cache's clock has not moved: only the eviction explains the 401.
    let refused = app
        .add("c")
        .bearer_auth(&first_key)
        .header("idempotency-key", "use-2")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(refused, StatusCode::UNAUTHORIZED, "unauthorized").await["error"]["message"],
        "unknown API key"
    );
    assert_eq!(app.add_with(&second_key, "use-3").await, StatusCode::OK);
    let listed: Value = app.keys(&tenant).await.json().await.unwrap();
    assert_eq!(listed["keys"][1]["revoked_at"], revoked_at.as_str());
    assert_eq!(listed["keys"][0]["revoked_at"], Value::Null);
}

#[tokio::test]
async fn a_key_revoked_elsewhere_is_refused_once_announced_or_once_the_cache_lifetime_passes() {
    // Proves: a server listening for revocations refuses a key another
    // process revoked as soon as the announcement arrives, its cache clock
    // unmoved; a server that missed it keeps the cached key exactly until
    // AUTH_CACHE_TTL has passed, then refuses it.
    use commands::http::auth::{listen_for_revocations, AUTH_CACHE_TTL};
    let listening_clock = TestInstant::new();
    let deaf_clock = TestInstant::new();
    let listening = spawn_app_options(AppOptions {
        auth_clock: Some(listening_clock.clock()),
        ..AppOptions::default()
    })
    .await;
    let deaf = spawn_app_on(
        listening.db.clone(),
        listening.api_key.clone(),
        AppOptions {
            auth_clock: Some(deaf_clock.clock()),
            ..AppOptions::default()
        },
    )
    .await;
    let mut evictions = listening.state.auth.evictions();
    let (_stop_listener, listener_stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(listen_for_revocations(
        listening.db.store().clone(),
        listening.state.auth.clone(),
        listener_stopped,
    ));
    tokio::time::timeout(Duration::from_secs(10), evictions.changed())
        .await
        .expect("the revocation listener did not start listening within 10 s")
        .unwrap();
    let key = listening.api_key.clone();
    assert_eq!(listening.add_with(&key, "l-1").await, StatusCode::OK);
    assert_eq!(deaf.add_with(&key, "d-1").await, StatusCode::OK);

    // Another process (`ledger tenant revoke-key`, say) revokes the key.
    let store = listening.db.store();
    let tenant = eventstore::tenants::claimed_tenant(&key).unwrap();
    let key_id = store.api_keys(tenant).await.unwrap().unwrap()[0].key_id;
    let revoked = store.revoke_api_key(tenant, key_id, None).await.unwrap();
    assert!(
        matches!(revoked, eventstore::Revocation::Revoked(_)),
        "{revoked:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), evictions.changed())
        .await
        .expect("the revocation was not announced to the listening server within 10 s")
        .unwrap();
    assert_eq!(
        listening.add_with(&key, "l-2").await,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(deaf.add_with(&key, "d-2").await, StatusCode::OK, "cached");
    deaf_clock.advance(AUTH_CACHE_TTL - Duration::from_millis(1));
    assert_eq!(
        deaf.add_with(&key, "d-3").await,
        StatusCode::OK,
        "still cached"
    );
    deaf_clock.advance(Duration::from_millis(1));
    assert_eq!(deaf.add_with(&key, "d-4").await, StatusCode::UNAUTHORIZED);
}
