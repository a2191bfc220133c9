//! A request's way in: the API key, the Idempotency-Key header, body limits, malformed bodies, replays.

use super::*;

#[tokio::test]
async fn requests_without_a_valid_api_key_are_refused_with_401() {
    // Proves: no key and a wrong key both answer 401 in the envelope, and
    // nothing is appended.
    let app = spawn_app(None).await;
    let missing = app
        .add("c")
        .header("idempotency-key", "k")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    error_of(missing, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let wrong_key = app
        .api_key
        .replace(&app.api_key[app.api_key.len() - 6..], "000000");
    let wrong = app
        .add("c")
        .bearer_auth(wrong_key)
        .header("idempotency-key", "k")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await["error"]["message"],
        "unknown API key"
    );
    let not_bearer = app
        .add("c")
        .header("authorization", "Basic abc")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    error_of(not_bearer, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(app.db.store().pool())
        .await
        .unwrap();
    assert_eq!(events, 0);
}

#[tokio::test]
async fn mutating_requests_need_a_valid_idempotency_key() {
    // Proves: a missing or invalid Idempotency-Key answers 400 with its own
    // code; so does one of the process managers' keys (`pm:`), which a
    // client could otherwise take before the scheduler.
    let app = spawn_app(None).await;
    let missing = app
        .add("c")
        .bearer_auth(&app.api_key)
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    error_of(missing, StatusCode::BAD_REQUEST, "missing_idempotency_key").await;
    for bad in [
        "",
        &"k".repeat(256),
        "pm:scheduler:0190a1b2-0000-7000-8000-000000000000:0",
    ] {
        let response = app
            .add("c")
            .bearer_auth(&app.api_key)
            .header("idempotency-key", bad)
            .json(&json!({"amount": 1}))
            .send()
            .await
            .unwrap();
        error_of(response, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413() {
    // Proves: a body over the configured limit answers 413 in the envelope.
    let app = spawn_app(None).await;
    let padding = "x".repeat(BODY_LIMIT_BYTES + 1);
    let response = app
        .add("c")
        .bearer_auth(&app.api_key)
        .header("idempotency-key", "k")
        .header("content-type", "application/json")
        .body(format!("{{\"amount\": 1, \"padding\": \"{padding}\"}}"))
        .send()
        .await
        .unwrap();
    let body = error_of(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(body["error"]["details"]["limit_bytes"], BODY_LIMIT_BYTES);
}

#[tokio::test]
async fn malformed_bodies_answer_400_naming_the_problem() {
    // Proves: bad JSON, an unknown field, a wrong type, a body that is not
    // an object and a missing content type each answer 400 with a message
    // naming the field or problem.
    let app = spawn_app(None).await;
    let cases = [
        ("{\"amount\": ", "EOF"),
        ("{\"amount\": 1, \"bogus\": 2}", "unknown field `bogus`"),
        ("{\"amount\": \"one\"}", "amount"),
        ("{\"amount\": 1.5}", "amount"),
        ("{\"amount\": 99999999999999999999}", "amount"),
        // A struct would read from an array too: only an object is a body.
        ("[1]", "the body must be a JSON object"),
        (" \"one\"", "the body must be a JSON object"),
    ];
    for (index, (body, expected)) in cases.into_iter().enumerate() {
        let response = app
            .add("c")
            .bearer_auth(&app.api_key)
            .header("idempotency-key", format!("k{index}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let error = error_of(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let no_content_type = app
        .add("c")
        .bearer_auth(&app.api_key)
        .header("idempotency-key", "plain")
        .body("{\"amount\": 1}")
        .send()
        .await
        .unwrap();
    let body = error_of(no_content_type, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Content-Type: application/json"),
        "{body}"
    );
}

#[tokio::test]
async fn a_replayed_key_answers_the_original_status_and_body_marked_replayed() {
    // Proves: a repeat returns the first answer verbatim with
    // Idempotent-Replayed: true; another body under the key answers 422.
    let app = spawn_app(None).await;
    let send = |amount: i64| {
        app.add("c")
            .bearer_auth(&app.api_key)
            .header("idempotency-key", "order-1")
            .json(&json!({"amount": amount}))
            .send()
    };
    let first = send(2).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body: Value = first.json().await.unwrap();
    assert_eq!(first_body["total"], 2);
    assert_eq!(first_body["tenant_seq"], 1);

    let again = send(2).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first_body);

    let reused = send(3).await.unwrap();
    error_of(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
}
