//! Bad input: 400 naming the field, 422 past 64 bits, nothing changed.

use super::*;

#[tokio::test]
async fn bad_input_answers_400_naming_the_field_and_changes_nothing() {
    // Proves: zero, negative, fractional and oversized amounts, unknown quota
    // types, unknown fields and malformed JSON answer 400 with their exact
    // code and a message naming the problem, and append nothing.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let granted = acme
        .post(
            "/v1/grants",
            "grant",
            json!({"quota": "credits", "amount": 10, "source": "purchase"}),
        )
        .await;
    let seq = granted.body["tenant_seq"].as_i64().unwrap();
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        (
            "/v1/quota/credits/consume",
            r#"{"amount": 0}"#,
            "amount",
            "invalid_request",
        ),
        (
            "/v1/quota/credits/consume",
            r#"{"amount": -3}"#,
            "amount",
            "invalid_request",
        ),
        (
            "/v1/quota/credits/consume",
            r#"{"amount": 1.5}"#,
            "amount",
            "invalid_request",
        ),
        (
            "/v1/quota/credits/consume",
            r#"{"amount": 9223372036854775808}"#,
            "amount",
            "invalid_request",
        ),
        (
            "/v1/quota/credits/consume",
            r#"{"amount": "5"}"#,
            "amount",
            "invalid_request",
        ),
        (
            "/v1/quota/credits/consume",
            r#"{"amount": 1, "extra": true}"#,
            "unknown field `extra`",
            "invalid_request",
        ),
        (
            "/v1/quota/credits/consume",
            r#"{"amount": 1,"#,
            "EOF",
            "invalid_request",
        ),
        (
            "/v1/quota/tokens/consume",
            r#"{"amount": 1}"#,
            "unknown quota type \"tokens\"",
            "unknown_quota",
        ),
        (
            "/v1/grants",
            r#"{"quota": "credits", "source": "purchase"}"#,
            "amount: required",
            "invalid_request",
        ),
        (
            "/v1/grants",
            r#"{"quota": "credits", "amount": 0, "source": "purchase"}"#,
            "amount",
            "invalid_request",
        ),
        (
            "/v1/grants",
            r#"{"quota": "gold", "amount": 5, "source": "purchase"}"#,
            "unknown quota type",
            "unknown_quota",
        ),
        (
            "/v1/grants",
            r#"{"quota": "credits", "amount": 5, "source": "subscription"}"#,
            "source",
            "invalid_request",
        ),
        (
            "/v1/grants",
            r#"{"quota": "credits", "amount": 5, "source": "purchase", "priority": 101}"#,
            "priority",
            "invalid_request",
        ),
        (
            "/v1/quota/seats/allocate",
            r#"{"amount": 1, "account": "has space"}"#,
            "invalid quota account",
            "invalid_account",
        ),
        (
            "/v1/subscription",
            r#"{"plan": "team_v4", "coupon": "x"}"#,
            "unknown field `coupon`",
            "invalid_request",
        ),
        (
            "/v1/subscription/cancel",
            r#"{"at": "tomorrow"}"#,
            "at",
            "invalid_request",
        ),
    ];
    for (index, (path, body, expected, code)) in cases.into_iter().enumerate() {
        let answer = acme.post_raw(path, &format!("bad-{index}"), body).await;
        let error = answer.assert_error(StatusCode::BAD_REQUEST, code);
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(expected), "{path} {body}: {message}");
    }
    server.catch_up().await;
    let credits = acme.read("/v1/quota/credits", seq).await;
    assert_eq!(credits["consumed"], 0);
    assert_eq!(credits["projection_seq"], seq);
    let head: (i64,) =
        sqlx::query_as("SELECT last_seq FROM chain_heads WHERE tenant_id = $1::uuid")
            .bind(&acme.tenant_id)
            .fetch_one(server.db.store().pool())
            .await
            .unwrap();
    assert_eq!(head.0, seq);
    assert_trial_balance_is_zero(&acme, seq).await;
    server.stop().await;
}

#[tokio::test]
async fn amounts_past_64_bits_answer_422_and_change_nothing() {
    // Proves: a grant taking the available total past i64 and a consumption
    // taking an unlimited grant's usage past i64 answer 422 amount_overflow
    // and append nothing; the read tables keep up (no stalled projection).
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let full = acme
        .post(
            "/v1/grants",
            "full",
            json!({"quota": "credits", "amount": i64::MAX, "source": "purchase"}),
        )
        .await;
    assert_eq!(full.status, StatusCode::CREATED, "{}", full.body);
    let over = acme
        .post(
            "/v1/grants",
            "one-more",
            json!({"quota": "credits", "amount": 1, "source": "purchase"}),
        )
        .await;
    over.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "amount_overflow");
    assert_eq!(head_seq(&server, &acme).await, seq_of(&full.body));

    let unlimited = acme
        .post(
            "/v1/grants",
            "unlimited",
            json!({"quota": "runs", "amount": null, "source": "promocode"}),
        )
        .await;
    assert_eq!(unlimited.status, StatusCode::CREATED, "{}", unlimited.body);
    let all = acme
        .post("/v1/quota/runs/consume", "all", json!({"amount": i64::MAX}))
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let more = acme
        .post("/v1/quota/runs/consume", "more", json!({"amount": 1}))
        .await;
    more.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "amount_overflow");
    let seq = seq_of(&all.body);
    assert_eq!(head_seq(&server, &acme).await, seq);
    // Every projection applies every event (catch_up fails on one that
    // cannot), so none is stalled on the large amounts.
    server.catch_up().await;
    let grant = acme
        .read(
            &format!(
                "/v1/grants/{}",
                unlimited.body["grant_id"].as_str().unwrap()
            ),
            seq,
        )
        .await;
    assert_eq!(grant["used"], i64::MAX);
    assert_trial_balance_is_zero(&acme, seq).await;
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_grant_id_in_the_path_answers_400_in_the_error_envelope() {
    // Proves: a grant_id that is not a UUID answers 400 with the JSON error
    // envelope naming the parameter, for reads and revokes, and appends
    // nothing.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let issued = acme
        .post(
            "/v1/grants",
            "g",
            json!({"quota": "credits", "amount": 10, "source": "purchase"}),
        )
        .await;
    let seq = seq_of(&issued.body);
    for answer in [
        acme.get("/v1/grants/not-a-uuid").await,
        acme.post("/v1/grants/not-a-uuid/revoke", "r", json!({}))
            .await,
    ] {
        let error = answer.assert_error(StatusCode::BAD_REQUEST, "invalid_path_parameter");
        assert!(
            error["message"].as_str().unwrap().contains("grant_id"),
            "{}",
            answer.body
        );
        assert_eq!(error["details"]["parameter"], "grant_id");
        assert_eq!(error["details"]["value"], "not-a-uuid");
    }
    // A name a route takes alone, or beside another parameter, is named
    // with its value too.
    for (path, parameter) in [
        ("/v1/gift-cards/-x", "code"),
        ("/v1/payees/-x/ledger", "payee_id"),
        (
            "/v1/commitments/00000000-0000-0000-0000-000000000001/milestones/-x/submit",
            "milestone_id",
        ),
    ] {
        let answer = if path.ends_with("submit") {
            acme.post(path, "s", json!({})).await
        } else {
            acme.get(path).await
        };
        let error = answer.assert_error(StatusCode::BAD_REQUEST, "invalid_path_parameter");
        assert_eq!(
            error["details"],
            json!({"parameter": parameter, "value": "-x"}),
            "{path}: {}",
            answer.body
        );
    }
    assert_eq!(head_seq(&server, &acme).await, seq);
    server.catch_up().await;
    assert_trial_balance_is_zero(&acme, seq).await;
    server.stop().await;
}
