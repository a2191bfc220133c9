//! The scheduler: period renewals, grant expiries and hold expiries happen
//! by themselves once their time has come, each exactly once, deciding at
//! their due time. The ticker is driven by its single step with an injected
//! clock; the projections by `catch_up`.

use super::*;
use commands::scheduler::{TickReport, Ticker};

/// The tenant's scheduled work (every piece, or the open ones).
async fn work(client: &Client, open: bool, seq: i64) -> Vec<Value> {
    let page = client
        .read(&format!("/v1/scheduler/work?open={open}"), seq)
        .await;
    page["work"].as_array().unwrap().clone()
}

/// How many events of `event_type` the tenant has.
async fn count_events(server: &TestServer, client: &Client, event_type: &str) -> i64 {
    let count: (i64,) = sqlx::query_as(
        "SELECT count(*) FROM events WHERE tenant_id = $1::uuid AND event_type = $2",
    )
    .bind(&client.tenant_id)
    .bind(event_type)
    .fetch_one(server.db.store().pool())
    .await
    .unwrap();
    count.0
}

/// A test server on `clock`, and a ticker reading it.
async fn started(clock: &TestClock) -> (TestServer, Ticker) {
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let ticker = server.ticker(clock.clock());
    (server, ticker)
}

/// Now, in whole seconds (the read tables keep microseconds).
fn whole_seconds_now() -> DateTime<Utc> {
    use chrono::DurationRound;
    Utc::now().duration_trunc(Duration::seconds(1)).unwrap()
}

fn report(leased: usize, accepted: usize, refused: usize) -> TickReport {
    TickReport {
        leased,
        accepted,
        refused,
        failed: 0,
        waiting: 0,
    }
}

#[tokio::test]
async fn a_subscription_renews_by_itself_at_its_period_end_exactly_once() {
    // Proves: the renewal is scheduled at the period end; a tick before it
    // submits nothing; the first tick after it renews the subscription as of
    // the period end (not the tick's time): the ending grants expire with
    // closed_at at the period end and the next period's grants take effect
    // then; ticking again submits nothing more; the next period's renewal
    // is scheduled in its place.
    let clock = a_month_ago();
    let (server, ticker) = started(&clock).await;
    let acme = server.tenant("acme").await;
    let subscribed = acme
        .post("/v1/subscription", "sub", json!({"plan": "team_v4"}))
        .await;
    assert_eq!(
        subscribed.status,
        StatusCode::CREATED,
        "{}",
        subscribed.body
    );
    let period_end = time_of(&subscribed.body["period_end"]);
    let runs_grant = grant_of(&subscribed.body, "runs")["grant_id"]
        .as_str()
        .unwrap()
        .to_string();
    server.catch_up().await;
    let scheduled = work(&acme, true, seq_of(&subscribed.body)).await;
    let renewal = scheduled
        .iter()
        .find(|work| work["work"] == "subscription:renewal")
        .unwrap();
    assert_eq!(time_of(&renewal["due_at"]), period_end);
    assert_eq!(renewal["request_kind"], "renew_subscription");
    assert_eq!(renewal["request"], json!({"due_at": renewal["due_at"]}));
    assert!(renewal["idempotency_key"]
        .as_str()
        .unwrap()
        .starts_with("pm:scheduler:"));
    // The renewal and the three grants' expiries, all at the period end.
    assert_eq!(scheduled.len(), 4, "{scheduled:?}");

    clock.set(period_end - Duration::seconds(1));
    assert_eq!(ticker.tick().await.unwrap(), report(0, 0, 0));
    clock.set(period_end + Duration::minutes(7));
    assert_eq!(ticker.tick().await.unwrap(), report(4, 4, 0));
    assert_eq!(ticker.tick().await.unwrap(), report(0, 0, 0));
    server.catch_up().await;
    assert_eq!(ticker.tick().await.unwrap(), report(0, 0, 0));

    let seq = head_seq(&server, &acme).await;
    let subscription = acme.read("/v1/subscription", seq).await;
    assert_eq!(time_of(&subscription["period_start"]), period_end);
    let next_end = period_end.checked_add_months(Months::new(1)).unwrap();
    assert_eq!(time_of(&subscription["period_end"]), next_end);
    assert_eq!(count_events(&server, &acme, "PeriodRenewed").await, 1);
    let ended = acme.read(&format!("/v1/grants/{runs_grant}"), seq).await;
    assert_eq!(ended["status"], "expired");
    assert_eq!(time_of(&ended["closed_at"]), period_end);
    let runs = acme.read("/v1/quota/runs", seq).await;
    let current: Vec<&Value> = runs["grants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|grant| grant["status"] == "active")
        .collect();
    assert_eq!(current.len(), 1, "{runs}");
    assert_eq!(time_of(&current[0]["effective_at"]), period_end);
    // Only the next period's work is open: its renewal and grant expiries.
    let open = work(&acme, true, seq).await;
    assert_eq!(open.len(), 4, "{open:?}");
    assert!(open.iter().all(|work| time_of(&work["due_at"]) == next_end));
    assert_trial_balance_is_zero(&acme, seq).await;
}

#[tokio::test]
async fn a_cancellation_at_period_end_ends_the_subscription_there_by_itself() {
    // Proves: with a cancellation scheduled, the renewal due at the period
    // end cancels the subscription as of the period end; nothing is
    // scheduled after it; a manual renew afterwards answers 404
    // not_subscribed.
    let clock = a_month_ago();
    let (server, ticker) = started(&clock).await;
    let acme = server.tenant("acme").await;
    let subscribed = acme
        .post("/v1/subscription", "sub", json!({"plan": "hobby_v3"}))
        .await;
    let period_end = time_of(&subscribed.body["period_end"]);
    let cancel = acme
        .post(
            "/v1/subscription/cancel",
            "cancel",
            json!({"at": "period_end"}),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.body);
    server.catch_up().await;
    clock.set(period_end + Duration::hours(3));
    let ticked = ticker.tick().await.unwrap();
    // The renewal and the three grants' expiries.
    assert_eq!((ticked.leased, ticked.refused), (4, 0), "{ticked:?}");
    server.catch_up().await;
    let seq = head_seq(&server, &acme).await;
    let subscription = acme.read("/v1/subscription", seq).await;
    assert_eq!(subscription["status"], "cancelled");
    assert_eq!(time_of(&subscription["cancelled_at"]), period_end);
    assert_eq!(work(&acme, true, seq).await, Vec::<Value>::new());
    assert_eq!(ticker.tick().await.unwrap(), report(0, 0, 0));
    let renew = acme
        .post("/v1/subscription/renew", "renew", json!({}))
        .await;
    renew.assert_error(StatusCode::NOT_FOUND, "not_subscribed");
}

#[tokio::test]
async fn a_grant_expires_by_itself_closed_at_its_expiry() {
    // Proves: a grant with an expiry expires once the ticker passes it,
    // closed at its expiry (not at the tick), its unused balance posted as
    // breakage; a tick before the expiry does nothing.
    let clock = TestClock::at(whole_seconds_now());
    let (server, ticker) = started(&clock).await;
    let acme = server.tenant("acme").await;
    let expires_at = clock.now() + Duration::hours(1);
    let bought = acme
        .post(
            "/v1/grants",
            "buy",
            json!({"quota": "credits", "amount": 40, "source": "purchase",
                   "expires_at": expires_at.to_rfc3339()}),
        )
        .await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    let grant_id = bought.body["grant_id"].as_str().unwrap().to_string();
    acme.post("/v1/quota/credits/consume", "use", json!({"amount": 15}))
        .await;
    server.catch_up().await;
    clock.set(expires_at - Duration::milliseconds(1));
    assert_eq!(ticker.tick().await.unwrap(), report(0, 0, 0));
    clock.set(expires_at + Duration::days(2));
    assert_eq!(ticker.tick().await.unwrap(), report(1, 1, 0));
    server.catch_up().await;
    let seq = head_seq(&server, &acme).await;
    let grant = acme.read(&format!("/v1/grants/{grant_id}"), seq).await;
    assert_eq!(grant["status"], "expired");
    assert_eq!(time_of(&grant["closed_at"]), expires_at);
    assert_eq!(grant["breakage"], 25);
    let all = work(&acme, false, seq).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["work"], format!("grant:{grant_id}:expiry"));
    assert_eq!(all[0]["outcome"], "accepted");
    assert_eq!(all[0]["attempts"], 1);
    assert!(all[0]["settled_seq"].is_i64(), "{}", all[0]);
    assert_trial_balance_is_zero(&acme, seq).await;
}

/// Opens `cash` and a no-overdraft `held` holding 500 USD/2 for `acme`.
async fn funded_accounts(acme: &Client) {
    for (key, code, account_type, flags) in [
        ("open-cash", "cash", "asset", json!({})),
        (
            "open-held",
            "held",
            "liability",
            json!({"debits_must_not_exceed_credits": true}),
        ),
    ] {
        let opened = acme
            .post(
                "/v1/journal/accounts",
                key,
                json!({"code": code, "type": account_type, "flags": flags}),
            )
            .await;
        assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    }
    let deposit = acme
        .post(
            "/v1/journal/entries",
            "deposit",
            json!({"lines": [
                {"account": "cash", "asset": "USD/2", "side": "debit", "amount": 500},
                {"account": "held", "asset": "USD/2", "side": "credit", "amount": 500},
            ]}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::CREATED, "{}", deposit.body);
}

/// Places a hold of `amount` on `held`, expiring at `expires_at`.
async fn hold(acme: &Client, key: &str, amount: i64, expires_at: DateTime<Utc>) -> String {
    let placed = acme
        .post(
            "/v1/journal/holds",
            key,
            json!({"debit": "held", "credit": "cash", "asset": "USD/2",
                   "amount": amount, "expires_at": expires_at.to_rfc3339()}),
        )
        .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
    placed.body["hold_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_hold_expires_by_itself_and_a_refusal_is_final() {
    // Proves: a hold past its expiry expires by the ticker, releasing what
    // it reserved; a hold posted before the scheduled expiry is projected as
    // settled is refused by its domain when the ticker submits the expiry
    // (hold_already_posted): a final, recorded outcome, never submitted
    // again.
    let clock = TestClock::at(whole_seconds_now());
    let (server, ticker) = started(&clock).await;
    let acme = server.tenant("acme").await;
    funded_accounts(&acme).await;
    let expires_at = clock.now() + Duration::minutes(30);
    let expiring = hold(&acme, "hold-1", 300, expires_at).await;
    let posted = hold(&acme, "hold-2", 100, expires_at).await;
    server.catch_up().await;
    let post = acme
        .post(
            &format!("/v1/journal/holds/{posted}/post"),
            "post-2",
            json!({}),
        )
        .await;
    assert_eq!(post.status, StatusCode::OK, "{}", post.body);
    clock.set(expires_at + Duration::seconds(5));
    assert_eq!(ticker.tick().await.unwrap(), report(2, 1, 1));
    assert_eq!(ticker.tick().await.unwrap(), report(0, 0, 0));
    let seq = head_seq(&server, &acme).await;
    server.catch_up().await;
    let refused = work(&acme, false, seq).await;
    let refused = refused
        .iter()
        .find(|work| work["work"] == format!("hold:{posted}:expiry"))
        .unwrap();
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["error_code"], "hold_already_posted");
    let held = acme.read("/v1/journal/accounts/held", seq).await;
    let usd = &held["balances"][0];
    assert_eq!(
        (
            &usd["debits_pending"],
            &usd["debits_posted"],
            &usd["available"]
        ),
        (&json!("0"), &json!("100"), &json!("400")),
        "{held}"
    );
    assert_eq!(count_events(&server, &acme, "HoldExpired").await, 1);
    let expired: (String,) = sqlx::query_as(
        "SELECT payload->'HoldExpired'->>'at' FROM events \
         WHERE tenant_id = $1::uuid AND aggregate_id = $2 AND event_type = 'HoldExpired'",
    )
    .bind(&acme.tenant_id)
    .bind(&expiring)
    .fetch_one(server.db.store().pool())
    .await
    .unwrap();
    assert_eq!(expired.0.parse::<DateTime<Utc>>().unwrap(), expires_at);
}

#[tokio::test]
async fn tickers_side_by_side_and_after_a_crash_submit_each_due_request_once() {
    // Proves: two tickers ticking at once over 24 due expiries lease each
    // once between them; a ticker that leased work and died leaves it to
    // another once its lease runs out, which submits it under the same
    // key: a request that took effect before the crash is answered from its
    // record, not applied twice.
    let clock = TestClock::at(whole_seconds_now());
    let (server, first) = started(&clock).await;
    let second = server.ticker(clock.clock());
    let acme = server.tenant("acme").await;
    let start = clock.now();
    for n in 0..24 {
        let bought = acme
            .post(
                "/v1/grants",
                &format!("buy-{n}"),
                json!({"quota": "credits", "amount": 10, "source": "purchase",
                       "expires_at": (start + Duration::minutes(n + 1)).to_rfc3339()}),
            )
            .await;
        assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    }
    server.catch_up().await;
    clock.set(start + Duration::hours(1));
    let (a, b) = tokio::join!(first.tick(), second.tick());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.leased + b.leased, 24, "{a:?} {b:?}");
    assert_eq!(a.accepted + b.accepted, 24, "{a:?} {b:?}");
    assert_eq!(count_events(&server, &acme, "GrantExpired").await, 24);

    // A crash: one more grant's expiry is leased by a ticker that submits
    // it and dies before recording the answer.
    let last = acme
        .post(
            "/v1/grants",
            "buy-last",
            json!({"quota": "credits", "amount": 10, "source": "purchase",
                   "expires_at": (start + Duration::hours(2)).to_rfc3339()}),
        )
        .await;
    server.catch_up().await;
    let seq = seq_of(&last.body);
    let due = work(&acme, true, seq).await;
    assert_eq!(due.len(), 1);
    clock.set(start + Duration::hours(3));
    let leased: (i64,) = sqlx::query_as(
        "INSERT INTO scheduler_runs (tenant_id, idempotency_key, work, leased_until, attempts) \
         VALUES ($1::uuid, $2, $3, $4, 1) RETURNING attempts::bigint",
    )
    .bind(&acme.tenant_id)
    .bind(due[0]["idempotency_key"].as_str().unwrap())
    .bind(due[0]["work"].as_str().unwrap())
    .bind(clock.now() + Duration::seconds(30))
    .fetch_one(server.db.store().pool())
    .await
    .unwrap();
    assert_eq!(leased.0, 1);
    let request: commands::requests::quota::ExpireGrants =
        serde_json::from_value(due[0]["request"].clone()).unwrap();
    let dead = server.bus(clock.clock());
    let before_crash = dead
        .execute(
            acme.tenant_id.parse().unwrap(),
            eventstore::IdempotencyKey::parse(due[0]["idempotency_key"].as_str().unwrap()).unwrap(),
            request,
        )
        .await
        .unwrap();
    assert_eq!(before_crash.status, 200, "{}", before_crash.body);
    // The lease holds until it runs out; then the work is taken over.
    assert_eq!(first.tick().await.unwrap(), report(0, 0, 0));
    clock.set(start + Duration::hours(3) + Duration::seconds(31));
    assert_eq!(second.tick().await.unwrap(), report(1, 1, 0));
    assert_eq!(count_events(&server, &acme, "GrantExpired").await, 25);
    let seq = head_seq(&server, &acme).await;
    server.catch_up().await;
    let taken_over = work(&acme, false, seq).await;
    let taken_over = taken_over
        .iter()
        .find(|work| work["work"] == due[0]["work"])
        .unwrap();
    assert_eq!(taken_over["attempts"], 2);
    assert_eq!(taken_over["outcome"], "accepted");
}

#[tokio::test]
async fn a_scheduled_request_before_its_due_time_is_refused_unrecorded_and_decided_once_due() {
    // Proves: a request carrying a due time later than the pipeline's clock
    // is refused not_due (with the due time) and not recorded. A ticker
    // whose pipeline's clock stepped back behind the one it leased by
    // counts the renewal waiting and leaves the work open, its lease given
    // back; once the clock has passed the due time, the next tick renews
    // the subscription under the same key, once.
    let clock = TestClock::at(whole_seconds_now());
    let (server, _) = started(&clock).await;
    let acme = server.tenant("acme").await;
    let subscribed = acme
        .post("/v1/subscription", "sub", json!({"plan": "team_v4"}))
        .await;
    let period_end = time_of(&subscribed.body["period_end"]);
    let renew = || commands::requests::subscription::RenewSubscription {
        due_at: Some(period_end),
    };
    let bus = server.bus(clock.clock());
    let tenant_id = acme.tenant_id.parse().unwrap();
    let key = || eventstore::IdempotencyKey::parse("early").unwrap();
    let early = bus.execute(tenant_id, key(), renew()).await;
    let Err(commands::pipeline::PipelineError::NotDue(not_due)) = early else {
        panic!("{early:?}");
    };
    assert_eq!(not_due.due_at, period_end);
    assert!(not_due.at < period_end, "{not_due:?}");
    // Not recorded: the same key is decided again once due.
    clock.set(period_end);
    let due = bus.execute(tenant_id, key(), renew()).await.unwrap();
    assert_eq!(due.status, 200, "{}", due.body);
    assert!(!due.replayed);
    assert_eq!(count_events(&server, &acme, "PeriodRenewed").await, 1);

    // The next renewal, leased by a ticker whose pipeline's clock is an
    // hour behind the clock it leases by.
    server.catch_up().await;
    let next_end = time_of(&due.body["period_end"]);
    let ahead = TestClock::at(next_end);
    clock.set(next_end - Duration::hours(1));
    let stepped_back = commands::scheduler::Ticker::new(
        server.db.store().pool().clone(),
        server.bus(clock.clock()),
        std::sync::Arc::new(commands::domains::Registry::new()),
        ahead.clock(),
        commands::scheduler::TickerConfig::default(),
    );
    // Due then: the renewal and the period's three grants' expiries.
    let failed = stepped_back.tick().await.unwrap();
    assert_eq!(
        failed,
        TickReport {
            leased: 4,
            accepted: 0,
            refused: 0,
            failed: 0,
            waiting: 4,
        }
    );
    assert_eq!(count_events(&server, &acme, "PeriodRenewed").await, 1);
    // The leases were given back: the next tick, at the same time, takes
    // them again, the pipeline's clock now at the due time.
    clock.set(next_end);
    let retried = stepped_back.tick().await.unwrap();
    assert_eq!(
        (retried.leased, retried.failed, retried.waiting),
        (4, 0, 0),
        "{retried:?}"
    );
    assert_eq!(count_events(&server, &acme, "PeriodRenewed").await, 2);
    // Each submitted twice under its key, accepted the second time.
    let runs: Vec<(i32, Option<String>)> =
        sqlx::query_as("SELECT attempts, outcome FROM scheduler_runs WHERE tenant_id = $1::uuid")
            .bind(&acme.tenant_id)
            .fetch_all(server.db.store().pool())
            .await
            .unwrap();
    assert_eq!(runs, vec![(2, Some("accepted".to_string())); 4]);
}

#[tokio::test]
async fn the_ledger_tells_time_by_the_database_server_s_clock_not_its_host_s() {
    // Proves: a server on a host whose clock runs ten minutes ahead of the
    // database server's tells time by the database's: a command is stamped
    // at the database's time, a hold due five minutes later is not leased
    // by a ticker on that clock (one on the host's own clock expires it
    // at once), /metrics shows the offset, and after the host's clock moved
    // the ledger still reads the database's time.
    // The host's clock runs on, `ahead` seconds ahead of the system's.
    let ahead = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(600));
    let host = {
        let ahead = ahead.clone();
        commands::Clock::from_fn(move || {
            Utc::now() + Duration::seconds(ahead.load(std::sync::atomic::Ordering::Relaxed))
        })
    };
    let server = TestServer::start_with(Options {
        clock: Some(host.clone()),
        database_time: true,
        ..Options::default()
    })
    .await;
    let time = server.database_time.clone().unwrap();
    let near = |offset: Duration, minutes: i64| (offset + Duration::minutes(minutes)).abs();
    assert!(
        near(time.offset(), 10) < Duration::seconds(5),
        "{}",
        time.offset()
    );
    let pool = server.db.store().pool().clone();
    let database_now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let acme = server.tenant("acme").await;
    funded_accounts(&acme).await;
    hold(&acme, "hold-1", 300, database_now + Duration::minutes(5)).await;
    let stamped: DateTime<Utc> =
        sqlx::query_scalar("SELECT max(recorded_at) FROM events WHERE tenant_id = $1::uuid")
            .bind(&acme.tenant_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        (stamped - database_now).abs() < Duration::seconds(5),
        "stamped {stamped}, the database's clock read {database_now}"
    );
    server.catch_up().await;
    assert_eq!(
        server.ticker(time.clock()).tick().await.unwrap(),
        report(0, 0, 0)
    );

    let metrics = server
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let shown: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("ledger_clock_offset_seconds "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .parse()
        .unwrap();
    assert!((shown + 600.0).abs() < 5.0, "{shown}");

    ahead.store(1_200, std::sync::atomic::Ordering::Relaxed);
    // The host's clock moved; the ledger's time did not.
    let database_now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!((time.now() - database_now).abs() < Duration::seconds(5));
    // A reading over a round trip slower than 100 ms (a loaded machine) is
    // not taken: read again.
    let mut moved = time.remeasure(&pool).await;
    for _ in 0..5 {
        if moved.is_ok() {
            break;
        }
        moved = time.remeasure(&pool).await;
    }
    let moved = moved.unwrap();
    assert!(near(moved, 20) < Duration::seconds(5), "{moved}");
    assert!(near(time.offset(), 20) < Duration::seconds(5));
    let database_now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!((time.now() - database_now).abs() < Duration::seconds(5));
    assert_eq!(server.ticker(host).tick().await.unwrap(), report(1, 1, 0));
}

/// Buys 10 credits expiring at `expires_at` for `acme`.
async fn buy_expiring(acme: &Client, key: &str, expires_at: DateTime<Utc>) -> Value {
    let bought = acme
        .post(
            "/v1/grants",
            key,
            json!({"quota": "credits", "amount": 10, "source": "purchase",
                   "expires_at": expires_at.to_rfc3339()}),
        )
        .await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    bought.body
}

/// A test server on a clock at now (whole seconds) with its ticker, and a
/// tenant with 10 credits expiring five minutes later, projected: with the
/// expiry's time and the purchase's answer.
struct ExpiringGrant {
    clock: TestClock,
    server: TestServer,
    ticker: Ticker,
    acme: Client,
    expires_at: DateTime<Utc>,
    bought: Value,
}

async fn expiring_grant() -> ExpiringGrant {
    let clock = TestClock::at(whole_seconds_now());
    let (server, ticker) = started(&clock).await;
    let acme = server.tenant("acme").await;
    let expires_at = clock.now() + Duration::minutes(5);
    let bought = buy_expiring(&acme, "buy", expires_at).await;
    server.catch_up().await;
    ExpiringGrant {
        clock,
        server,
        ticker,
        acme,
        expires_at,
        bought,
    }
}

#[tokio::test]
async fn work_whose_key_answered_an_older_form_of_its_request_ends_as_the_key_s_record_says() {
    // Proves: when the key of due work already answered the work's request
    // as an earlier build wrote it (here without its due time), the ticker
    // records what the key's record says (accepted, the grant expired
    // once), noted as such, not a refusal for a reused key.
    let ExpiringGrant {
        clock,
        server,
        ticker,
        acme,
        expires_at,
        bought,
    } = expiring_grant().await;
    let due = work(&acme, true, seq_of(&bought)).await;
    assert_eq!(due.len(), 1, "{due:?}");
    let mut older: commands::requests::quota::ExpireGrants =
        serde_json::from_value(due[0]["request"].clone()).unwrap();
    assert_eq!(older.due_at, Some(expires_at));
    older.due_at = None;
    clock.set(expires_at + Duration::seconds(1));
    let key = due[0]["idempotency_key"].as_str().unwrap();
    let answered = server
        .bus(clock.clock())
        .execute(
            acme.tenant_id.parse().unwrap(),
            eventstore::IdempotencyKey::parse(key).unwrap(),
            older,
        )
        .await
        .unwrap();
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(ticker.tick().await.unwrap(), report(1, 1, 0));
    assert_eq!(count_events(&server, &acme, "GrantExpired").await, 1);
    let seq = head_seq(&server, &acme).await;
    server.catch_up().await;
    let ended = work(&acme, false, seq).await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(
        (
            &ended[0]["outcome"],
            &ended[0]["error_code"],
            &ended[0]["last_error"]
        ),
        (
            &json!("accepted"),
            &Value::Null,
            &json!(commands::scheduler::ANSWERED_AS_RECORDED)
        )
    );
    let run: (Option<i32>, i64) = sqlx::query_as(
        "SELECT status, tenant_seq FROM scheduler_runs \
         WHERE tenant_id = $1::uuid AND idempotency_key = $2",
    )
    .bind(&acme.tenant_id)
    .bind(key)
    .fetch_one(server.db.store().pool())
    .await
    .unwrap();
    assert_eq!(run, (Some(200), answered.tenant_seq));
}

#[tokio::test]
async fn waiting_work_gives_back_only_its_own_lease() {
    // Proves: a ticker whose request cannot be decided yet (its pipeline's
    // clock behind the one it leased by) gives its lease back only if it
    // still holds it: when another ticker took the work over meanwhile
    // (simulated by the pipeline's first reading of its clock), that
    // ticker's lease stands and a third ticker leases nothing.
    let ExpiringGrant {
        server,
        acme,
        expires_at,
        ..
    } = expiring_grant().await;
    let leases = TestClock::at(expires_at + Duration::seconds(1));
    let taken_over_until = expires_at + Duration::hours(1);
    let url = server.db.url().to_string();
    let tenant = acme.tenant_id.clone();
    let taken = std::sync::Arc::new(std::sync::Once::new());
    let behind = expires_at - Duration::hours(1);
    let pipeline_clock = commands::Clock::from_fn(move || {
        taken.call_once(|| {
            let (url, tenant) = (url.clone(), tenant.clone());
            std::thread::spawn(move || take_over(&url, &tenant, taken_over_until))
                .join()
                .unwrap();
        });
        behind
    });
    let waiting = commands::scheduler::Ticker::new(
        server.db.store().pool().clone(),
        server.bus(pipeline_clock),
        std::sync::Arc::new(commands::domains::Registry::new()),
        leases.clock(),
        commands::scheduler::TickerConfig::default(),
    );
    let ticked = waiting.tick().await.unwrap();
    assert_eq!((ticked.leased, ticked.waiting), (1, 1), "{ticked:?}");
    let until: DateTime<Utc> =
        sqlx::query_scalar("SELECT leased_until FROM scheduler_runs WHERE tenant_id = $1::uuid")
            .bind(&acme.tenant_id)
            .fetch_one(server.db.store().pool())
            .await
            .unwrap();
    assert_eq!(until, taken_over_until);
    assert_eq!(
        server.ticker(leases.clock()).tick().await.unwrap(),
        report(0, 0, 0)
    );
    assert_eq!(count_events(&server, &acme, "GrantExpired").await, 0);
}

/// Another ticker taking over the tenant's leases until `until`, on a
/// connection and runtime of its own (the caller's thread is blocked).
fn take_over(url: &str, tenant: &str, until: DateTime<Utc>) {
    use sqlx::Connection;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(
            "UPDATE scheduler_runs SET leased_until = $2, attempts = attempts + 1 \
             WHERE tenant_id = $1::uuid",
        )
        .bind(tenant)
        .bind(until)
        .execute(&mut connection)
        .await
        .unwrap();
    });
}

#[tokio::test]
async fn reads_that_depend_on_the_time_tell_it_by_the_ledger_s_clock() {
    // Proves: with the ledger's clock a month behind the host's, a grant
    // whose expiry is past by the host's clock but not by the ledger's
    // still counts as available (as the pipeline would let it be
    // consumed), and a subscription whose trial ends between the two is
    // still trialing.
    let clock = a_month_ago();
    let (server, _) = started(&clock).await;
    let acme = server.tenant("acme").await;
    let week = clock.now() + Duration::days(7);
    let bought = buy_expiring(&acme, "buy", week).await;
    let other = server.tenant("other").await;
    let (_, subscribed) = super::payments_http::accepted(
        &other,
        "/v1/subscription",
        "sub",
        json!({"plan": "team_v4", "trial_ends_at": week.to_rfc3339()}),
        201,
    )
    .await;
    server.catch_up().await;
    let credits = acme.read("/v1/quota/credits", seq_of(&bought)).await;
    assert_eq!(credits["available"], 10, "{credits}");
    let subscription = other.read("/v1/subscription", subscribed).await;
    assert_eq!(subscription["trialing"], true, "{subscription}");
}

#[tokio::test]
async fn a_ticker_leases_nothing_from_a_schedule_built_by_another_version() {
    // Proves: while `scheduled_work` was built by another version of the
    // projection than the ticker's (an older table a newer build is
    // rebuilding, or a newer one an older ticker would read), the ticker
    // leases nothing; once the table is of its version, it takes the work,
    // deciding it at its due time.
    let ExpiringGrant {
        clock,
        server,
        ticker,
        acme,
        expires_at,
        ..
    } = expiring_grant().await;
    clock.set(expires_at + Duration::hours(1));
    let pool = server.db.store().pool().clone();
    let set_version = |version: i32| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO projections (projection, version, state, updated_at) \
                 VALUES ('scheduled_work', $1, 'rebuilding', now()) \
                 ON CONFLICT (projection) DO UPDATE SET version = $1, state = 'rebuilding'",
            )
            .bind(version)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    for other in [
        projections::scheduled::VERSION - 1,
        projections::scheduled::VERSION + 1,
    ] {
        set_version(other).await;
        assert_eq!(ticker.tick().await.unwrap(), report(0, 0, 0), "{other}");
    }
    set_version(projections::scheduled::VERSION).await;
    assert_eq!(ticker.tick().await.unwrap(), report(1, 1, 0));
    let expired: String = sqlx::query_scalar(
        "SELECT payload->'GrantExpired'->>'expired_at' FROM events \
         WHERE tenant_id = $1::uuid AND event_type = 'GrantExpired'",
    )
    .bind(&acme.tenant_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(expired.parse::<DateTime<Utc>>().unwrap(), expires_at);
}
