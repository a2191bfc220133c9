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
        "ConsumeAnswer",
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

/// Asserts that `body`, answered by `method path` with `status`, has exactly
/// the fields its documented schema allows: none undocumented, none of the
/// required ones missing. Answers the schema's name.
fn assert_documented(
    openapi: &Value,
    path: &str,
    method: &str,
    status: u16,
    body: &Value,
) -> String {
    let reference = openapi["paths"][path][method]["responses"][status.to_string()]["content"]
        ["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path} {status}: no schema reference"))
        .to_string();
    let name = reference
        .trim_start_matches("#/components/schemas/")
        .to_string();
    let schema = &openapi["components"]["schemas"][&name];
    let properties = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{name} has no properties"));
    let fields = body.as_object().unwrap();
    for field in fields.keys() {
        assert!(
            properties.contains_key(field),
            "{method} {path}: `{field}` is not in {name}: {body}"
        );
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        let required = required.as_str().unwrap();
        assert!(
            fields.contains_key(required),
            "{method} {path}: required `{required}` of {name} missing: {body}"
        );
    }
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
            "SubscriptionAnswer",
            "GrantIssuedAnswer",
            "ConsumeAnswer",
            "SeatsAnswer",
            "SeatsAnswer",
            "SubscriptionAnswer",
            "RevokeAnswer",
            "ExpireAnswer",
            "SubscriptionAnswer",
            "SubscriptionAnswer",
        ]
    );
    server.stop().await;
}
