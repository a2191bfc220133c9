//! The OpenAPI document: every route, and every command answer as documented.

use super::*;

#[tokio::test]
async fn every_route_is_in_the_openapi_document_with_its_schemas() {
    // Proves: /openapi.json lists every route with request and response
    // schemas.
    let server = TestServer::start().await;
    let openapi = server.openapi().await;
    let paths = &openapi["paths"];
    let expected = [
        ("/v1/subscription", "post"),
        ("/v1/subscription", "get"),
        ("/v1/subscription/change-plan", "post"),
        ("/v1/subscription/cancel", "post"),
        ("/v1/subscription/renew", "post"),
        ("/v1/grants", "post"),
        ("/v1/grants", "get"),
        ("/v1/grants/{grant_id}", "get"),
        ("/v1/grants/{grant_id}/revoke", "post"),
        ("/v1/quota", "get"),
        ("/v1/quota/{quota}", "get"),
        ("/v1/quota/{quota}/consume", "post"),
        ("/v1/quota/seats/allocate", "post"),
        ("/v1/quota/seats/release", "post"),
        ("/v1/journal/entries", "get"),
        ("/v1/journal/balances", "get"),
    ];
    for (path, method) in expected {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} missing");
        assert!(
            operation["responses"]["200"].is_object() || operation["responses"]["201"].is_object(),
            "{method} {path}"
        );
        if method == "post" && !path.ends_with("/revoke") && !path.ends_with("/renew") {
            assert!(
                operation["requestBody"]["content"]["application/json"]["schema"].is_object(),
                "{method} {path} has no request schema"
            );
        }
    }
    for schema in [
        "ConsumeBody",
        "Accepted_Consumed",
        "GrantBody",
        "GrantRow",
        "QuotaView",
        "SubscribeBody",
        "BalancesView",
        "ErrorBody",
    ] {
        assert!(
            openapi["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
    server.stop().await;
}

/// The shapes an object of `schema` may take: for each, its properties and
/// the required ones (`$ref` followed, `allOf` merged, one shape per `oneOf`
/// variant).
fn shapes(openapi: &Value, schema: &Value) -> Vec<(Vec<String>, Vec<String>)> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return shapes(openapi, &openapi["components"]["schemas"][name]);
    }
    if let Some(variants) = schema["oneOf"].as_array() {
        return variants
            .iter()
            .flat_map(|variant| shapes(openapi, variant))
            .collect();
    }
    let names = |field: &str| -> Vec<String> {
        match &schema[field] {
            Value::Object(map) => map.keys().cloned().collect(),
            Value::Array(items) => items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut merged = vec![(names("properties"), names("required"))];
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let parts = shapes(openapi, part);
        merged = merged
            .iter()
            .flat_map(|(properties, required)| {
                parts.iter().map(move |(more, more_required)| {
                    let mut properties = properties.clone();
                    properties.extend(more.iter().cloned());
                    let mut required = required.clone();
                    required.extend(more_required.iter().cloned());
                    (properties, required)
                })
            })
            .collect();
    }
    merged
}

/// Asserts that `body`, answered by `method path` with `status`, has exactly
/// the fields one shape of its documented schema allows: none undocumented,
/// none of the required ones missing. Answers the schema's name.
fn assert_documented(
    openapi: &Value,
    path: &str,
    method: &str,
    status: u16,
    body: &Value,
) -> String {
    let schema = &openapi["paths"][path][method]["responses"][status.to_string()]["content"]
        ["application/json"]["schema"];
    let name = schema["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path} {status}: no schema reference"))
        .trim_start_matches("#/components/schemas/")
        .to_string();
    let fields = body.as_object().unwrap();
    let shapes = shapes(openapi, schema);
    assert!(!shapes.is_empty(), "{name} has no shape");
    let fits = shapes.iter().any(|(properties, required)| {
        fields.keys().all(|field| properties.contains(field))
            && required.iter().all(|field| fields.contains_key(field))
    });
    assert!(
        fits,
        "{method} {path}: {body} fits no shape of {name}: {shapes:?}"
    );
    name
}

#[tokio::test]
async fn every_command_answer_has_the_fields_its_documented_schema_gives() {
    // Proves: the answer of each command route carries exactly the fields
    // of the schema /openapi.json documents for it.
    let clock = a_month_ago();
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let openapi = server.openapi().await;
    let acme = server.tenant("acme").await;
    let mut checked = Vec::new();
    let mut check = |path: &str, route: &str, answer: &support::app::Answer| {
        assert!(answer.status.is_success(), "{path}: {}", answer.body);
        checked.push((
            route.to_string(),
            assert_documented(
                &openapi,
                route,
                "post",
                answer.status.as_u16(),
                &answer.body,
            ),
        ));
    };
    let subscribed = acme
        .post("/v1/subscription", "sub", json!({"plan": "team_v4"}))
        .await;
    check("/v1/subscription", "/v1/subscription", &subscribed);
    let period_end = time_of(&subscribed.body["period_end"]);
    let issued = acme
        .post(
            "/v1/grants",
            "grant",
            json!({"quota": "credits", "amount": 50, "source": "purchase",
                   "expires_at": (period_end - Duration::hours(1)).to_rfc3339()}),
        )
        .await;
    check("/v1/grants", "/v1/grants", &issued);
    let grant_id = issued.body["grant_id"].as_str().unwrap().to_string();
    let consumed = acme
        .post("/v1/quota/credits/consume", "use", json!({"amount": 5}))
        .await;
    check("consume", "/v1/quota/{quota}/consume", &consumed);
    let allocated = acme
        .post("/v1/quota/seats/allocate", "seat", json!({"amount": 2}))
        .await;
    check("allocate", "/v1/quota/seats/allocate", &allocated);
    let released = acme
        .post("/v1/quota/seats/release", "unseat", json!({"amount": 1}))
        .await;
    check("release", "/v1/quota/seats/release", &released);
    let changed = acme
        .post(
            "/v1/subscription/change-plan",
            "change",
            json!({"plan": "scale_v1"}),
        )
        .await;
    check("change-plan", "/v1/subscription/change-plan", &changed);
    let promo = acme
        .post(
            "/v1/grants",
            "promo",
            json!({"quota": "runs", "amount": 10, "source": "promocode"}),
        )
        .await;
    let revoked = acme
        .post(
            &format!(
                "/v1/grants/{}/revoke",
                promo.body["grant_id"].as_str().unwrap()
            ),
            "revoke",
            json!({}),
        )
        .await;
    check("revoke", "/v1/grants/{grant_id}/revoke", &revoked);
    clock.set(period_end - Duration::minutes(30));
    let expired = acme
        .post("/v1/quota/credits/expire", "expire", json!({}))
        .await;
    check("expire", "/v1/quota/{quota}/expire", &expired);
    assert_eq!(expired.body["expired"][0]["grant_id"], grant_id.as_str());
    clock.set(period_end);
    let renewed = acme
        .post("/v1/subscription/renew", "renew", json!({}))
        .await;
    check("renew", "/v1/subscription/renew", &renewed);
    let cancelled = acme
        .post("/v1/subscription/cancel", "cancel", json!({"at": "now"}))
        .await;
    check("cancel", "/v1/subscription/cancel", &cancelled);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(
        checked
            .iter()
            .map(|(_, schema)| schema.as_str())
            .collect::<Vec<_>>(),
        [
            "Accepted_SubscriptionAnswer",
            "Accepted_GrantIssued",
            "Accepted_Consumed",
            "Accepted_SeatsChanged",
            "Accepted_SeatsChanged",
            "Accepted_SubscriptionAnswer",
            "Accepted_GrantRevoked",
            "Accepted_GrantsExpired",
            "Accepted_SubscriptionAnswer",
            "Accepted_SubscriptionAnswer",
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn the_document_declares_what_the_parsers_accept_and_every_status() {
    // Proves: the constraints of the types that parse input are in the
    // document (amounts, accounts, texts, keys, pages, seqs, the served
    // plans), and the statuses every kind of route answers are declared.
    let server = TestServer::start().await;
    let openapi = server.openapi().await;
    let schemas = &openapi["components"]["schemas"];
    let amount = &schemas["PositiveAmount"];
    assert_eq!(
        (&amount["type"], &amount["minimum"], &amount["maximum"]),
        (&json!("integer"), &json!(1), &json!(i64::MAX))
    );
    assert_eq!(
        schemas["PlanId"]["enum"],
        json!(["enterprise_v1", "hobby_v3", "scale_v1", "team_v4"])
    );
    assert_eq!(schemas["QuotaAccount"]["pattern"], "^[A-Za-z0-9_.-]{1,64}$");
    assert_eq!(schemas["QuotaAccount"]["maxLength"], 64);
    let grant = &schemas["GrantBody"]["properties"];
    assert_eq!(grant["priority"]["oneOf"][1]["maximum"], 100);
    assert_eq!(grant["quota"]["$ref"], "#/components/schemas/QuotaName");
    assert_eq!(
        grant["expires_at"]["oneOf"][1]["pattern"],
        aggregates::schema::TIME_YEAR_PATTERN
    );
    let parameter = |path: &str, method: &str, name: &str| -> Value {
        openapi["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|parameter| parameter["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path}: no parameter {name}"))["schema"]
            .clone()
    };
    let key = parameter("/v1/quota/{quota}/consume", "post", "Idempotency-Key");
    assert_eq!(
        (&key["minLength"], &key["maxLength"]),
        (&json!(1), &json!(255))
    );
    assert_eq!(
        parameter("/v1/quota/{quota}/consume", "post", "quota")["enum"],
        json!(["runs", "credits"])
    );
    let limit = parameter("/v1/journal/entries", "get", "limit");
    assert_eq!(
        (&limit["minimum"], &limit["maximum"]),
        (&json!(1), &json!(1000))
    );
    assert_eq!(parameter("/v1/grants", "get", "min_seq")["minimum"], 0);

    for (path, methods) in openapi["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let responses = &operation["responses"];
            let has = |status: &str| responses.get(status).is_some();
            assert!(has("408"), "{method} {path}: no 408");
            if operation["security"]
                .as_array()
                .is_some_and(|security| !security.is_empty())
            {
                assert!(has("401") && has("429"), "{method} {path}: no 401 or 429");
            }
            if operation["parameters"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
                || operation.get("requestBody").is_some()
            {
                assert!(has("400"), "{method} {path}: no 400");
            }
            if operation.get("requestBody").is_some() {
                assert!(has("413"), "{method} {path}: no 413");
            }
            let reads_min_seq = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|parameter| parameter["name"] == "min_seq");
            if reads_min_seq {
                assert!(has("503"), "{method} {path}: no 503");
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn whole_numbers_are_read_from_their_text_as_json_schema_reads_them() {
    // Proves: an amount written `2.0` or `1e0` is an integer (as the
    // document's JSON Schema reads it), and `2.5`, `25e-1` and a number past
    // 64 bits are refused naming the field, with nothing more consumed.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let granted = acme
        .post_raw(
            "/v1/grants",
            "grant",
            r#"{"quota": "runs", "amount": 10.00, "source": "purchase", "priority": 7.0}"#,
        )
        .await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.body);
    assert_eq!(granted.body["amount"], 10);
    assert_eq!(granted.body["priority"], 7);
    let consumed = acme
        .post_raw("/v1/quota/runs/consume", "two", r#"{"amount": 2.0}"#)
        .await;
    assert_eq!(consumed.status, StatusCode::OK, "{}", consumed.body);
    assert_eq!(consumed.body["consumed"], 2);
    assert_eq!(consumed.body["available"], 8);
    let exponent = acme
        .post_raw("/v1/quota/runs/consume", "one", r#"{"amount": 1e0}"#)
        .await;
    assert_eq!(exponent.status, StatusCode::OK, "{}", exponent.body);
    assert_eq!(exponent.body["available"], 7);
    for (key, amount) in [
        ("half", "2.5"),
        ("exponent", "25e-1"),
        ("wide", "9223372036854775808"),
        ("wide-float", "9223372036854775808.0"),
    ] {
        let refused = acme
            .post_raw(
                "/v1/quota/runs/consume",
                key,
                &format!(r#"{{"amount": {amount}}}"#),
            )
            .await;
        let error = refused.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(
            error["message"].as_str().unwrap().contains("amount"),
            "{amount}: {}",
            refused.body
        );
    }
    server.catch_up().await;
    let quota = acme
        .read(
            "/v1/quota/runs",
            exponent.body["tenant_seq"].as_i64().unwrap(),
        )
        .await;
    assert_eq!(quota["available"], 7);
    server.stop().await;
}

#[tokio::test]
async fn a_min_seq_beyond_the_tenants_history_is_refused_at_once() {
    // Proves: a read whose min_seq is past the tenant's last tenant_seq
    // answers 400 min_seq_ahead with both seqs, without waiting (the wait
    // bound here is far longer than the test's own bound), and a min_seq
    // equal to it reads.
    let server = TestServer::start_with(Options {
        read_wait: Some(std::time::Duration::from_secs(600)),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    let granted = acme
        .post(
            "/v1/grants",
            "grant",
            json!({"quota": "runs", "amount": 10, "source": "purchase"}),
        )
        .await;
    let seq = granted.body["tenant_seq"].as_i64().unwrap();
    let ahead = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        acme.get(&format!("/v1/quota?min_seq={}", seq + 1)),
    )
    .await
    .expect("a min_seq past the history waited");
    let error = ahead.assert_error(StatusCode::BAD_REQUEST, "min_seq_ahead");
    assert_eq!(
        error["details"],
        json!({"min_seq": seq + 1, "tenant_seq": seq})
    );
    server.catch_up().await;
    assert_eq!(acme.read("/v1/quota/runs", seq).await["available"], 10);
    server.stop().await;
}
