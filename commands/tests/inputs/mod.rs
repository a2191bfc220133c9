//! Generated inputs for every route of `/openapi.json`: whatever a client
//! sends is either refused with a 4xx or accepted and then applied by every
//! projection. No accepted event may poison a projection.
//!
//! Requests are generated from the OpenAPI document itself (so a new route
//! is covered the day it is documented): bodies from their schemas, with
//! values drawn from pools of valid and hostile ones (times at and past the
//! storable range, control characters, strings at and past their length
//! bound, numbers past 64 bits, wrong types, missing and unknown fields).
//! The generator is seeded; `LEDGER_INPUTS_SEED` and `LEDGER_INPUTS_CASES`
//! change the seed and the number of requests, and a failure names both.

use super::support::app::{TestServer, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Map, Value};

/// Requests sent by default.
const CASES_DEFAULT: u64 = 600;

/// Seed used unless `LEDGER_INPUTS_SEED` is set.
const SEED_DEFAULT: u64 = 0x1ed9_e700_0000_0011;

/// A small, seeded generator (splitmix64): the same seed gives the same
/// requests on every machine.
struct Rng {
    state: u64,
    /// How often a value is hostile, in percent: each request is generated
    /// either mostly valid (to reach the projections) or mostly hostile.
    hostile_percent: u64,
}

impl Rng {
    fn new(seed: u64) -> Self {
        Self {
            state: seed,
            hostile_percent: 50,
        }
    }

    /// Whether the next value is a hostile one.
    fn hostile(&mut self) -> bool {
        let percent = self.hostile_percent;
        self.chance(percent)
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % bound as u64).unwrap_or(0)
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Words of the domain, so that many generated requests are valid.
const WORDS: &[&str] = &[
    "credits",
    "runs",
    "seats",
    "team_v4",
    "hobby_v3",
    "enterprise_v1",
    "now",
    "period_end",
    "purchase",
    "promocode",
    "user-42",
    "quota",
    "subscription",
];

/// Valid values of the fields and parameters whose schema does not list
/// them, by name.
fn hints(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "quota" => &["credits", "runs", "seats"],
        "plan" => &["team_v4", "hobby_v3", "scale_v1", "enterprise_v1"],
        "at" => &["now", "period_end"],
        "account" => &["user-42", "project.7"],
        "reference" => &["run-1", "run-2"],
        "name" => &["acme"],
        "processor" => &["stripe", "adyen"],
        "batch_id" | "settlements" => &["b_1", "b_2"],
        "bank_account" => &["main"],
        "code" | "gift_card" => &["GC-1", "GC-2"],
        "customer" | "payee" => &["c-1", "alice"],
        "payee_id" => &["alice", "bob"],
        "plan_id" => &["sales", "field"],
        "role_id" => &["rep", "lead"],
        "unit" => &["delivery"],
        _ => return None,
    })
}

/// Strings a careless or hostile client sends.
const HOSTILE_STRINGS: &[&str] = &[
    "",
    "a\u{0}b",
    "\u{0}",
    "\u{1b}[31mred",
    "tab\there",
    "del\u{7f}",
    "c1\u{85}",
    "日本語 ✓",
    "../../etc/passwd",
    "'; DROP TABLE events; --",
    "%00",
    "\\",
    "user 42",
    "\u{feff}bom",
];

/// Times valid, at the bounds of the storable range and past them, and
/// not times at all.
/// Times at the bounds of the edge's range and past them, past what
/// PostgreSQL holds, storable but refused at the edge, and not times at all.
fn hostile_times() -> Vec<Value> {
    let now = chrono::Utc::now();
    [
        (now + chrono::Duration::days(30)).to_rfc3339(),
        (now + chrono::Duration::hours(1)).to_rfc3339(),
        (now - chrono::Duration::days(1)).to_rfc3339(),
        "1970-01-01T00:00:00Z".to_string(),
        "9999-12-31T23:59:59.999999Z".to_string(),
        "1969-12-31T23:59:59.999999Z".to_string(),
        "-5000-01-01T00:00:00Z".to_string(),
        "+275760-09-13T00:00:00Z".to_string(),
        "+10000-01-01T00:00:00Z".to_string(),
        "0001-01-01T00:00:00Z".to_string(),
        "-4714-01-01T00:00:00Z".to_string(),
        "2027-01-01T00:00:00.123456789+05:30".to_string(),
        "2026-13-01T00:00:00Z".to_string(),
        "yesterday".to_string(),
    ]
    .into_iter()
    .map(Value::String)
    .collect()
}

fn times(rng: &mut Rng) -> Value {
    if !rng.hostile() {
        let now = chrono::Utc::now();
        return json!((now + chrono::Duration::days(1 + rng.below(60) as i64)).to_rfc3339());
    }
    rng.pick(&hostile_times()).clone()
}

/// Numbers of every kind a field of integers is sent.
fn hostile_integers() -> Vec<Value> {
    vec![
        json!(1),
        json!(2),
        json!(5),
        json!(100),
        json!(0),
        json!(-1),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1.5),
        json!("5"),
        json!(1_000_000_000_000_i64),
    ]
}

fn integers(rng: &mut Rng) -> Value {
    if !rng.hostile() {
        return json!(rng.pick(&[1, 2, 3, 5, 10, 100]));
    }
    rng.pick(&hostile_integers()).clone()
}

fn strings(rng: &mut Rng, schema: &Value, name: &str) -> Value {
    let max_length = schema["maxLength"].as_u64().map(|max| max as usize);
    if schema["format"] == "uuid" && !rng.hostile() {
        return json!(uuid::Uuid::now_v7().to_string());
    }
    if !rng.hostile() {
        return json!(rng.pick(hints(name).unwrap_or(WORDS)));
    }
    match rng.below(10) {
        0..=4 => json!(rng.pick(WORDS)),
        5..=7 => json!(rng.pick(HOSTILE_STRINGS)),
        8 => json!("x".repeat(max_length.unwrap_or(200))),
        _ => json!("é".repeat(max_length.unwrap_or(200) + 1)),
    }
}

/// Any JSON value of another shape, for type confusion.
fn any_value(rng: &mut Rng) -> Value {
    let values = [
        Value::Null,
        json!(true),
        json!([]),
        json!({}),
        json!([1, 2]),
        json!({"nested": "\u{0}"}),
    ];
    match rng.below(3) {
        0 => integers(rng),
        1 => json!(rng.pick(HOSTILE_STRINGS)),
        _ => rng.pick(&values).clone(),
    }
}

/// `reference`, resolved when it is a `$ref`.
fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            &document["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// The schema's types (`"string"` or `["string", "null"]`).
fn types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// A value for `schema`: mostly of its type, sometimes of another.
fn value_for(rng: &mut Rng, document: &Value, schema: &Value, name: &str, depth: u32) -> Value {
    let schema = resolve(document, schema);
    if (rng.hostile() && rng.chance(15)) || depth > 3 {
        return any_value(rng);
    }
    if let Some(choices) = schema["enum"].as_array() {
        if !choices.is_empty() && rng.chance(85) {
            return choices[rng.below(choices.len())].clone();
        }
    }
    if let Some(variants) = schema["oneOf"].as_array() {
        // `null` now and then where it is a variant, else one of the others.
        let others: Vec<&Value> = variants
            .iter()
            .filter(|variant| variant["type"] != "null")
            .collect();
        if others.is_empty() || (others.len() < variants.len() && rng.chance(15)) {
            return Value::Null;
        }
        let variant = others[rng.below(others.len())];
        return value_for(rng, document, variant, name, depth);
    }
    let kinds = types(schema);
    if kinds.contains(&"null") && rng.chance(15) {
        return Value::Null;
    }
    if schema["format"] == "date-time" {
        return times(rng);
    }
    match kinds.iter().find(|kind| **kind != "null").copied() {
        Some("integer") | Some("number") => integers(rng),
        Some("boolean") => json!(rng.chance(50)),
        Some("string") => strings(rng, schema, name),
        Some("object") => object_for(rng, document, schema, depth + 1),
        Some("array") => json!([value_for(rng, document, &schema["items"], name, depth + 1)]),
        _ => any_value(rng),
    }
}

/// An object for `schema`: its required fields mostly present, its optional
/// ones sometimes, now and then an unknown one.
fn object_for(rng: &mut Rng, document: &Value, schema: &Value, depth: u32) -> Value {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut object = Map::new();
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            let wanted = if required.contains(&name.as_str()) {
                !(rng.hostile() && rng.chance(15))
            } else {
                rng.chance(50)
            };
            if wanted {
                object.insert(
                    name.clone(),
                    value_for(rng, document, property, name, depth),
                );
            }
        }
    }
    if rng.hostile() && rng.chance(10) {
        object.insert("unexpected".into(), json!("field"));
    }
    Value::Object(object)
}

/// Every hostile value for a field of `schema`: the whole pool of its type.
fn hostile_values(document: &Value, schema: &Value) -> Vec<Value> {
    let schema = resolve(document, schema);
    let max_length = schema["maxLength"].as_u64().map_or(200, |max| max as usize);
    let mut values = if schema["format"] == "date-time" {
        hostile_times()
    } else {
        match types(schema).iter().find(|kind| **kind != "null").copied() {
            Some("integer") | Some("number") => hostile_integers(),
            _ => {
                let mut texts: Vec<Value> =
                    HOSTILE_STRINGS.iter().map(|text| json!(text)).collect();
                texts.push(json!("x".repeat(max_length)));
                texts.push(json!("é".repeat(max_length + 1)));
                texts
            }
        }
    };
    values.extend([
        Value::Null,
        json!(true),
        json!([]),
        json!({"nested": "\u{0}"}),
    ]);
    values
}

/// Replaces one field of `body` (of `schema`) by a hostile value of its
/// type.
fn spoil_one_field(rng: &mut Rng, document: &Value, schema: &Value, body: &mut Value) {
    let schema = resolve(document, schema);
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    let names: Vec<&String> = properties.keys().collect();
    if names.is_empty() {
        return;
    }
    let name = names[rng.below(names.len())];
    let kept = rng.hostile_percent;
    rng.hostile_percent = 100;
    let mut hostile = value_for(rng, document, &properties[name], name, 0);
    // `value_for` may answer null for a nullable field; a hostile one is
    // never null.
    for _ in 0..16 {
        if !hostile.is_null() {
            break;
        }
        hostile = value_for(rng, document, &properties[name], name, 0);
    }
    rng.hostile_percent = kept;
    if let Value::Object(object) = body {
        object.insert(name.clone(), hostile);
    }
}

/// A value for a path or query parameter, as text.
fn parameter_text(
    rng: &mut Rng,
    schema: &Value,
    name: &str,
    grants: &[String],
    tenant: &str,
) -> String {
    if schema["format"] == "uuid" {
        return match rng.below(4) {
            0 | 1 if !grants.is_empty() => rng.pick(grants).clone(),
            2 => tenant.to_string(),
            _ => uuid::Uuid::now_v7().to_string(),
        };
    }
    let value = match types(schema).iter().find(|kind| **kind != "null") {
        Some(&"integer") => integers(rng),
        _ if schema["format"] == "date-time" => times(rng),
        _ => strings(rng, schema, name),
    };
    match value {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

/// Percent-encodes every byte that is not unreserved (RFC 3986).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// Query parameters that wait for a projection to reach a seq.
const WAITING: &[&str] = &["min_seq", "as_of_seq"];

/// One documented operation.
struct Operation {
    method: Method,
    path: String,
    definition: Value,
}

fn operations(document: &Value) -> Vec<Operation> {
    let mut found = Vec::new();
    for (path, methods) in document["paths"].as_object().into_iter().flatten() {
        for (method, definition) in methods.as_object().into_iter().flatten() {
            let method = match method.as_str() {
                "get" => Method::GET,
                "post" => Method::POST,
                _ => continue,
            };
            found.push(Operation {
                method,
                path: path.clone(),
                definition: definition.clone(),
            });
        }
    }
    found
}

/// The request's URL: path parameters filled in, some query parameters
/// set (never `min_seq` nor `as_of_seq`, which wait for the projections,
/// driven by hand here).
fn url_for(
    rng: &mut Rng,
    operation: &Operation,
    base: &str,
    grants: &[String],
    tenant: &str,
) -> String {
    let mut path = operation.path.clone();
    let mut query = Vec::new();
    for parameter in operation.definition["parameters"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = parameter["name"].as_str().unwrap_or_default();
        let text = parameter_text(rng, &parameter["schema"], name, grants, tenant);
        match parameter["in"].as_str() {
            Some("path") => path = path.replace(&format!("{{{name}}}"), &encode(&text)),
            Some("query") if !WAITING.contains(&name) && rng.chance(40) => {
                query.push(format!("{name}={}", encode(&text)));
            }
            _ => {}
        }
    }
    if query.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{}", query.join("&"))
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// One request and what it answered.
struct Sent {
    status: reqwest::StatusCode,
    answer: Value,
}

async fn send(
    server: &TestServer,
    operation: &Operation,
    url: &str,
    token: &str,
    key: &str,
    body: Option<&Value>,
) -> Sent {
    let mut request = server
        .client
        .request(operation.method.clone(), url)
        .bearer_auth(token)
        .header("idempotency-key", key);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    Sent { status, answer }
}

/// Every field of every documented body, in turn, given every hostile
/// value of its type in an otherwise valid request: each value class is
/// sent to each field at least once, whatever the seed.
async fn sweep(
    server: &TestServer,
    document: &Value,
    operations: &[Operation],
    api_key: &str,
    tenant: &str,
) -> usize {
    let mut rng = Rng::new(SEED_DEFAULT);
    rng.hostile_percent = 0;
    let mut sent = 0;
    for operation in operations {
        let schema = &operation.definition["requestBody"]["content"]["application/json"]["schema"];
        let Some(properties) = resolve(document, schema)["properties"].as_object().cloned() else {
            continue;
        };
        let admin = operation.definition["security"]
            .to_string()
            .contains("admin_token");
        let token = if admin { ADMIN_TOKEN } else { api_key };
        for (name, property) in &properties {
            for hostile in hostile_values(document, property) {
                let url = url_for(&mut rng, operation, &server.base, &[], tenant);
                let mut body = value_for(&mut rng, document, schema, "", 0);
                if let Value::Object(object) = &mut body {
                    object.insert(name.clone(), hostile);
                }
                let key = format!("sweep-{sent}");
                let answered = send(server, operation, &url, token, &key, Some(&body)).await;
                assert!(
                    answered.status.is_success() || answered.status.is_client_error(),
                    "{} {url} with {body} answered {}: {}",
                    operation.method,
                    answered.status,
                    answered.answer
                );
                sent += 1;
            }
        }
    }
    sent
}

#[tokio::test]
async fn generated_inputs_are_refused_with_a_4xx_or_applied_by_every_projection() {
    // Proves: for every documented route, generated requests (valid and
    // hostile) answer 2xx or 4xx, never 5xx, and every accepted event is
    // applied by every projection: catching up fails on none, and each
    // projection's checkpoint reaches the head of every tenant.
    let seed = env_number("LEDGER_INPUTS_SEED", SEED_DEFAULT);
    let cases = env_number("LEDGER_INPUTS_CASES", CASES_DEFAULT);
    let server = TestServer::start().await;
    let client = server.tenant("inputs").await;
    let document = server.openapi().await;
    let operations = operations(&document);
    assert!(operations.len() >= 20, "{} operations", operations.len());
    let swept = sweep(
        &server,
        &document,
        &operations,
        &client.api_key,
        &client.tenant_id,
    )
    .await;
    assert!(swept >= 100, "the sweep sent {swept} requests");
    let mut rng = Rng::new(seed);
    let mut grants: Vec<String> = Vec::new();
    let (mut commands, mut accepted) = (0, 0);
    for case in 0..cases {
        // A third of the requests mostly valid, a third mostly hostile, a
        // third valid but for one hostile field (the shape that once let a
        // poisonous time through).
        let mode = rng.below(3);
        rng.hostile_percent = if mode == 1 { 60 } else { 0 };
        let operation = &operations[rng.below(operations.len())];
        let url = url_for(
            &mut rng,
            operation,
            &server.base,
            &grants,
            &client.tenant_id,
        );
        let admin = operation.definition["security"]
            .to_string()
            .contains("admin_token");
        let token = if admin { ADMIN_TOKEN } else { &client.api_key };
        let body_schema =
            &operation.definition["requestBody"]["content"]["application/json"]["schema"];
        let body = if body_schema.is_null() {
            None
        } else if rng.hostile() && rng.chance(8) {
            Some(any_value(&mut rng))
        } else {
            let mut body = value_for(&mut rng, &document, body_schema, "", 0);
            if mode == 2 {
                spoil_one_field(&mut rng, &document, body_schema, &mut body);
            }
            Some(body)
        };
        let key = format!("inputs-{case}");
        let Sent { status, answer } =
            send(&server, operation, &url, token, &key, body.as_ref()).await;
        assert!(
            status.is_success() || status.is_client_error(),
            "seed {seed:#x}, case {case}: {} {url} with {} answered {status}: {answer}",
            operation.method,
            body.map_or("no body".to_string(), |body| body.to_string()),
        );
        commands += u64::from(operation.method == Method::POST);
        if status.is_success() && operation.method == Method::POST {
            accepted += 1;
            // Ids the answer hands out, for later paths to name.
            for field in [
                "grant_id",
                "payment_id",
                "tender_id",
                "capture_id",
                "refund_id",
                "dispute_id",
                "payout_id",
                "pay_run_id",
                "line_id",
                "commitment_id",
                "claim_id",
            ] {
                if let Some(id) = answer[field].as_str() {
                    grants.push(id.to_string());
                }
            }
        }
    }
    // The generator must still reach the domains: a fifteenth of the
    // commands it sends accepted (seeds give about a tenth: at least 35 of
    // about 390 in the seeds tried; most need ids earlier ones handed out, and the
    // compensation routes state they rarely find: a payee with a plan
    // assigned before the work, a period that starts before it ends).
    assert!(
        accepted >= commands / 15,
        "seed {seed:#x}: only {accepted} of {commands} commands were accepted"
    );
    server.catch_up().await;
    let behind: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT c.projection, c.tenant_id::text, c.last_seq, h.last_seq \
         FROM projection_checkpoints c JOIN chain_heads h USING (tenant_id) \
         WHERE c.last_seq <> h.last_seq",
    )
    .fetch_all(server.db.store().pool())
    .await
    .unwrap();
    assert_eq!(
        behind,
        Vec::new(),
        "seed {seed:#x}: checkpoints behind the head"
    );
    let failed: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT projection, error FROM projections WHERE state <> 'live'")
            .fetch_all(server.db.store().pool())
            .await
            .unwrap();
    assert_eq!(failed, Vec::new(), "seed {seed:#x}");
}

#[tokio::test]
async fn times_and_texts_out_of_bounds_are_refused_with_400_naming_the_field() {
    // Proves: a time outside 1970..=9999 or a text with a control character
    // or past its bound answers 400 naming the field, and appends nothing.
    let server = TestServer::start().await;
    let client = server.tenant("bounds").await;
    let refused = [
        (
            "/v1/grants",
            json!({"quota": "runs", "amount": 5, "source": "purchase", "effective_at": "-5000-01-01T00:00:00Z"}),
            "effective_at: \"-5000-01-01T00:00:00Z\" is not a time in 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z",
        ),
        (
            "/v1/grants",
            json!({"quota": "runs", "amount": 5, "source": "purchase", "expires_at": "+10000-01-01T00:00:00Z"}),
            "expires_at: \"+10000-01-01T00:00:00Z\" is not a time in 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z",
        ),
        (
            "/v1/subscription",
            json!({"plan": "team_v4", "trial_ends_at": "1969-12-31T23:59:59Z"}),
            "trial_ends_at: \"1969-12-31T23:59:59Z\" is not a time in 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z",
        ),
        (
            "/v1/quota/credits/consume",
            json!({"amount": 1, "reference": "run\u{0}1"}),
            "reference: must not contain control characters (U+0000 at character 3)",
        ),
        (
            "/v1/quota/credits/consume",
            json!({"amount": 1, "reference": "r".repeat(201)}),
            "reference: must be at most 200 characters",
        ),
        (
            "/v1/subscription",
            json!({"plan": "team\u{1b}v4"}),
            "plan: must not contain control characters (U+001B at character 4)",
        ),
    ];
    for (index, (path, body, message)) in refused.iter().enumerate() {
        let answer = client
            .post(path, &format!("bounds-{index}"), body.clone())
            .await;
        assert_eq!(
            answer.status,
            reqwest::StatusCode::BAD_REQUEST,
            "{path} {body}: {}",
            answer.body
        );
        assert_eq!(
            answer.body["error"]["code"], "invalid_request",
            "{}",
            answer.body
        );
        let text = answer.body["error"]["message"].as_str().unwrap();
        assert!(
            text.contains(message),
            "{path} {body}: {text:?} does not say {message:?}"
        );
    }
    let answer = client.get("/v1/streams?aggregate_type=%00").await;
    assert_eq!(
        answer.status,
        reqwest::StatusCode::BAD_REQUEST,
        "{}",
        answer.body
    );
    assert_eq!(answer.body["error"]["code"], "invalid_request");
    assert!(answer.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("aggregate_type: must not contain control characters (U+0000 at character 0)"));
    let answer = server
        .client
        .post(format!("{}/v1/tenants", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("idempotency-key", "tenant-nul")
        .json(&json!({"name": "a\u{0}b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::BAD_REQUEST);
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(server.db.store().pool())
        .await
        .unwrap();
    assert_eq!(events, 0, "a refused request appended events");
}

#[tokio::test]
async fn a_route_whose_body_has_no_required_field_takes_an_empty_body() {
    // Proves: `POST /v1/quota/{quota}/expire` needs no body (as the README
    // shows), while a route with required fields answers 400 naming the
    // first missing one.
    let server = TestServer::start().await;
    let client = server.tenant("empty").await;
    let response = server
        .client
        .post(format!("{}/v1/quota/credits/expire", server.base))
        .bearer_auth(&client.api_key)
        .header("idempotency-key", "expire-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    // The same with an empty chunked body (no length known before it ends).
    let address = server.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST /v1/quota/credits/expire HTTP/1.1\r\nHost: ledger\r\n\
         Authorization: Bearer {}\r\nIdempotency-Key: expire-2\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        client.api_key
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let response = server
        .client
        .post(format!("{}/v1/quota/credits/consume", server.base))
        .bearer_auth(&client.api_key)
        .header("idempotency-key", "consume-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    assert_eq!(body["error"]["message"], "missing field `amount`");
}
