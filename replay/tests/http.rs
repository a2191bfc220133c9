//! `GET /v1/replay` over HTTP: the calling tenant's state as of a seq or a
//! time, the same as the CLI's replay, and nothing of other tenants.

use chrono::{DateTime, Duration, TimeZone, Utc};
use commands::http::{app, routes, AppState, HttpConfig};
use commands::{BusConfig, Clock, CommandBus, Metrics};
use eventstore::testing::TestDatabase;
use eventstore::EventStore;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

#[path = "http/flood.rs"]
mod flood;
#[path = "http/reports.rs"]
mod reports;

/// The API with the replay route on port 0, its pipeline stamping `clock`;
/// answers its base URL.
async fn serve(store: &EventStore, clock: Clock) -> String {
    let bus = CommandBus::start(
        store.clone(),
        BusConfig {
            clock,
            ..BusConfig::default()
        },
        Arc::new(Metrics::default()),
    );
    let state = AppState::new(
        store.clone(),
        bus,
        HttpConfig::new(None, 1 << 20),
        tokio::sync::watch::channel(0).1,
        commands::domains::projections(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let application = app(routes().merge(replay::http::router()), state);
    tokio::spawn(async move { axum::serve(listener, application).await });
    base
}

/// A database with tenant `acme` and the API on a clock set at the start
/// of 2030 (moved by the test): the database, the tenant, the clock's
/// time and the base URL.
async fn at_the_start() -> (
    TestDatabase,
    eventstore::tenants::NewTenant,
    Arc<Mutex<DateTime<Utc>>>,
    String,
) {
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let acme = store.create_tenant("acme").await.unwrap();
    let start = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let now = Arc::new(Mutex::new(start));
    let reading = now.clone();
    let base = serve(&store, Clock::from_fn(move || *reading.lock().unwrap())).await;
    (db, acme, now, base)
}

/// Every projection caught up with every event.
async fn catch_up(store: &EventStore) {
    let catalog = commands::domains::projections();
    projections::status::register(store.pool(), &catalog)
        .await
        .unwrap();
    let running: Vec<&dyn projections::Projection> = catalog.iter().map(AsRef::as_ref).collect();
    projections::runtime::catch_up_all(store.pool(), &running, None, 1_000)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_replay_route_answers_the_tenants_state_as_of_a_seq() {
    // Proves: GET /v1/replay?as_of=N folds the caller's events up to N,
    // equals the direct replay, refuses ambiguous or invalid points, and
    // answers 422 naming the event when the history up to N does not verify.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let acme = store.create_tenant("acme").await.unwrap();
    let beta = store.create_tenant("beta").await.unwrap();
    let base = serve(&store, Clock::system()).await;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
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
    let at_five: Value = get(&acme.api_key, "?as_of=5")
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

    for query in ["?as_of=-1", "?as_of=5x", "?as_of_seq=1"] {
        let refused = get(&acme.api_key, query).await.unwrap();
        assert_eq!(refused.status(), 400, "{query}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_request", "{query}: {body}");
    }
    // A seq the tenant has not reached would answer otherwise later.
    let ahead = get(&acme.api_key, "?as_of=7").await.unwrap();
    assert_eq!(ahead.status(), 422);
    let body: Value = ahead.json().await.unwrap();
    assert_eq!(
        (&body["error"]["code"], &body["error"]["details"]),
        (
            &json!("as_of_seq_ahead"),
            &json!({"as_of_seq": 7, "tenant_seq": 6})
        ),
        "{body}"
    );

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
    let refused = get(&acme.api_key, "?as_of=6").await.unwrap();
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
    assert_eq!(get(&acme.api_key, "?as_of=5").await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_replay_route_answers_the_tenants_state_as_of_a_time() {
    // Proves: GET /v1/replay?as_of=TIME folds exactly the events recorded at
    // or before TIME (none before the first, the one at TIME itself
    // included), reports availability as of TIME (a grant past its expiry by
    // then no longer counts, though no event expired it), equals the direct
    // replay, and refuses a time that does not parse with 400.
    let (db, acme, now, base) = at_the_start().await;
    let (store, start) = (db.store().clone(), *now.lock().unwrap());
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let post = |key: &'static str, path: &'static str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(&acme.api_key)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let at = |hours: i64| start + Duration::hours(hours);
    let steps: [(DateTime<Utc>, &str, &str, Value); 4] = [
        (
            at(0),
            "sub",
            "/v1/subscription",
            json!({"plan": "hobby_v3"}),
        ),
        (
            at(1),
            "bought",
            "/v1/grants",
            json!({"quota": "credits", "amount": 100, "source": "purchase",
                   "expires_at": at(3).to_rfc3339()}),
        ),
        (
            at(2),
            "use",
            "/v1/quota/credits/consume",
            json!({"amount": 50}),
        ),
        (at(5), "run", "/v1/quota/runs/consume", json!({"amount": 7})),
    ];
    for (time, key, path, body) in steps {
        *now.lock().unwrap() = time;
        let answer = post(key, path, body).await.unwrap();
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
    }

    let replay_at = |time: DateTime<Utc>| {
        let url = format!(
            "{base}/v1/replay?as_of={}",
            time.to_rfc3339().replace('+', "%2B")
        );
        let request = client.get(url).bearer_auth(&acme.api_key).send();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), 200, "as of {time}");
            response.json::<Value>().await.unwrap()
        }
    };
    let quota = |state: &Value, name: &str| -> Value {
        state["quotas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|quota| quota["quota"] == name)
            .unwrap_or_else(|| panic!("no {name} quota in {state}"))
            .clone()
    };

    // Read 5 s after the last request: every time up to it is closed.
    *now.lock().unwrap() = at(5) + Duration::seconds(5);
    let before = replay_at(start - Duration::seconds(1)).await;
    assert_eq!(before["as_of_seq"], 0);
    assert_eq!(before["quotas"], json!([]));
    assert_eq!(before["subscription"], Value::Null);

    // After the consumption, the purchase still in effect.
    let half_past_two = at(2) + Duration::minutes(30);
    let state = replay_at(half_past_two).await;
    assert_eq!(state["as_of_seq"], 6);
    assert_eq!(state["as_of"], json!(half_past_two));
    let credits = quota(&state, "credits");
    assert_eq!(
        (credits["consumed"].clone(), credits["available"].clone()),
        (json!("50"), json!(1_050))
    );
    let mut connection = store.pool().acquire().await.unwrap();
    let direct = replay::as_of::replay_tenant(
        &mut connection,
        acme.tenant_id,
        replay::as_of::AsOf::Time(half_past_two),
    )
    .await
    .unwrap();
    assert_eq!(state, direct);

    // No event since, but the purchase expired at three.
    let state = replay_at(at(4)).await;
    assert_eq!(state["as_of_seq"], 6);
    let credits = quota(&state, "credits");
    assert_eq!(
        (credits["consumed"].clone(), credits["available"].clone()),
        (json!("50"), json!(1_000))
    );

    // The event recorded at exactly the time asked is in.
    let state = replay_at(at(5)).await;
    assert_eq!(state["as_of_seq"], 7);
    assert_eq!(quota(&state, "runs")["consumed"], "7");
    let state = replay_at(at(5) - Duration::microseconds(1)).await;
    assert_eq!(state["as_of_seq"], 6);
    assert_eq!(quota(&state, "runs")["consumed"], "0");

    // A time less than 5 s past could still gain events: refused.
    let body = refused_422(
        &client,
        format!("{base}/v1/replay?as_of=2030-01-01T05:00:00.000001Z"),
        &acme.api_key,
    )
    .await;
    assert_eq!(
        (&body["error"]["code"], &body["error"]["details"]),
        (
            &json!("as_of_open"),
            &json!({"as_of": "2030-01-01T05:00:00.000001Z", "closes_at": "2030-01-01T05:00:05.000001Z"})
        ),
        "{body}"
    );
    let refused = client
        .get(format!("{base}/v1/replay?as_of=yesterday"))
        .bearer_auth(&acme.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("as_of"),
        "{body}"
    );
}

#[tokio::test]
async fn balances_as_of_a_time_equal_a_replay_to_that_time_at_many_points() {
    // Proves: GET /v1/journal/balances?as_of=TIME, summed from the read
    // tables, equals the accounts and trial balance a replay of the events
    // recorded at or before TIME gives, at 40 points chosen at random (the
    // same every run) over a history of quota and journal requests an hour
    // apart, between and exactly at recorded times.
    let (db, acme, now, base) = at_the_start().await;
    let (store, start) = (db.store().clone(), *now.lock().unwrap());
    let client = reqwest::Client::new();
    let line = |account: &str, side: &str, amount: i64| json!({"account": account, "asset": "USD/2", "side": side, "amount": amount});
    let mut steps: Vec<(String, &str, Value)> = vec![
        ("sub".into(), "/v1/subscription", json!({"plan": "team_v4"})),
        (
            "cash".into(),
            "/v1/journal/accounts",
            json!({"code": "cash", "type": "asset"}),
        ),
        (
            "sales".into(),
            "/v1/journal/accounts",
            json!({"code": "sales", "type": "revenue"}),
        ),
    ];
    for n in 1..=12_i64 {
        let (path, body) = if n % 3 == 0 {
            ("/v1/quota/credits/consume", json!({"amount": n}))
        } else {
            (
                "/v1/journal/entries",
                json!({"lines": [line("cash", "debit", 100 * n), line("sales", "credit", 100 * n)]}),
            )
        };
        steps.push((format!("step-{n}"), path, body));
    }
    for (hour, (key, path, body)) in steps.into_iter().enumerate() {
        *now.lock().unwrap() = start + Duration::hours(hour as i64);
        let answer = client
            .post(format!("{base}{path}"))
            .bearer_auth(&acme.api_key)
            .header("idempotency-key", key.as_str())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
    }
    catch_up(&store).await;
    // Read once every time asked is closed.
    *now.lock().unwrap() = start + Duration::hours(17);

    let get = |path: String| {
        let request = client
            .get(format!("{base}{path}"))
            .bearer_auth(&acme.api_key)
            .send();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.json::<Value>().await.unwrap()
        }
    };
    let mut state: u64 = 0x005E_ED0F_BA1A_0CE5;
    for _ in 0..40 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // From before the first request to after the last, on the minute,
        // so that recorded times themselves are hit too.
        let minutes = (state % (17 * 60)) as i64 - 30;
        let time = (start + Duration::minutes(minutes))
            .to_rfc3339()
            .replace('+', "%2B");
        let balances = get(format!("/v1/journal/balances?as_of={time}")).await;
        let replayed = get(format!("/v1/replay?as_of={time}")).await;
        assert_eq!(balances["as_of_seq"], replayed["as_of_seq"], "as of {time}");
        assert_eq!(balances["accounts"], replayed["accounts"], "as of {time}");
        assert_eq!(
            balances["trial_balance"], replayed["trial_balance"],
            "as of {time}"
        );
    }
    // A time less than 5 s past could still gain events: refused.
    let body = refused_422(
        &client,
        format!("{base}/v1/journal/balances?as_of=2030-01-01T16:59:56Z"),
        &acme.api_key,
    )
    .await;
    assert_eq!(body["error"]["code"], "as_of_open", "{body}");
    assert_eq!(
        body["error"]["details"]["closes_at"], "2030-01-01T17:00:01Z",
        "{body}"
    );
}

/// GET `url` with `api_key`, answered 422: its body.
async fn refused_422(client: &reqwest::Client, url: String, api_key: &str) -> Value {
    let response = client.get(url).bearer_auth(api_key).send().await.unwrap();
    assert_eq!(response.status(), 422);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_read_as_of_a_closed_time_waits_for_an_append_in_flight() {
    // Proves: an append stamped before a closed time but still in flight
    // (held behind the tenant's head row) is waited for by a balance, a
    // replay and a report as of that time, which then include it: the
    // answer is the same before and after it commits (before, they
    // answered without it, and again with it once it committed).
    let (db, acme, now, base) = at_the_start().await;
    let (store, start) = (db.store().clone(), *now.lock().unwrap());
    let client = reqwest::Client::new();
    let post = |key: &'static str, path: &'static str, body: Value| {
        let request = client
            .post(format!("{base}{path}"))
            .bearer_auth(&acme.api_key)
            .header("idempotency-key", key)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            response.json::<Value>().await.unwrap()
        }
    };
    for (key, code, kind) in [("cash", "cash", "asset"), ("sales", "sales", "revenue")] {
        post(
            key,
            "/v1/journal/accounts",
            json!({"code": code, "type": kind}),
        )
        .await;
    }
    let entry = json!({"lines": [
        {"account": "cash", "asset": "USD/2", "side": "debit", "amount": 700},
        {"account": "sales", "asset": "USD/2", "side": "credit", "amount": 700}]});
    // The head row held, as a slow append ahead of it would.
    let mut holder = store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM chain_heads WHERE tenant_id = $1 FOR UPDATE")
        .bind(acme.tenant_id.as_uuid())
        .execute(&mut *holder)
        .await
        .unwrap();
    let in_flight = tokio::spawn(post("sale", "/v1/journal/entries", entry));
    // Stamped at the start, the append holds the tenant's append lock and
    // waits for the head row; an hour later the start is closed.
    let mut polls = 0;
    loop {
        let (held,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock' \
             AND granted AND classid::bigint = $1 AND objid::bigint = $2::int4::oid::bigint \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(i64::from(0x6c65_646a_i32))
        .bind(eventstore::append_lock_key(acme.tenant_id))
        .fetch_one(store.pool())
        .await
        .unwrap();
        if held == 1 {
            break;
        }
        polls += 1;
        assert!(polls < 500, "the append never took its tenant's lock");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    *now.lock().unwrap() = start + Duration::hours(1);
    let as_of = (start + Duration::seconds(1))
        .to_rfc3339()
        .replace('+', "%2B");
    let get = |path: String| {
        let request = client
            .get(format!("{base}{path}"))
            .bearer_auth(&acme.api_key)
            .send();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.json::<Value>().await.unwrap()
        }
    };
    let replayed = tokio::spawn(get(format!("/v1/replay?as_of={as_of}")));
    let report = tokio::spawn(get(format!(
        "/v1/reports/trial-balance?as_of={as_of}&format=json"
    )));
    // Until the append commits, neither answers.
    let waited = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        futures_wait(&replayed, &report),
    )
    .await;
    assert!(
        waited.is_err(),
        "a read as of the time answered before the append committed"
    );
    holder.commit().await.unwrap();
    let sale = in_flight.await.unwrap();
    let seq = sale["tenant_seq"].as_i64().unwrap();
    let replayed = replayed.await.unwrap();
    assert_eq!(replayed["as_of_seq"], seq, "{replayed}");
    catch_up(&store).await;
    let report = report.await.unwrap();
    assert_eq!(report["as_of_seq"], seq, "{report}");
    let balances = get(format!("/v1/journal/balances?as_of={as_of}")).await;
    assert_eq!(balances["as_of_seq"], seq, "{balances}");
    assert_eq!(balances["accounts"], replayed["accounts"]);
    // A seq the tenant has not reached: refused, as replays and reports do.
    let ahead = refused_422(
        &client,
        format!("{base}/v1/journal/balances?as_of={}", seq + 1),
        &acme.api_key,
    )
    .await;
    assert_eq!(
        (&ahead["error"]["code"], &ahead["error"]["details"]),
        (
            &json!("as_of_seq_ahead"),
            &json!({"as_of_seq": seq + 1, "tenant_seq": seq})
        )
    );
}

/// Waits until either task has finished.
async fn futures_wait<T>(a: &tokio::task::JoinHandle<T>, b: &tokio::task::JoinHandle<T>) {
    while !a.is_finished() && !b.is_finished() {
        tokio::task::yield_now().await;
    }
}
