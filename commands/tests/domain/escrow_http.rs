//! Escrow over HTTP, end to end: a commitment funded by three deposits,
//! partial releases with FIFO lineage (and LIFO), a rejected milestone
//! split 60/40 with an odd amount, inspection windows timing out on the
//! scheduler's tick (release and refund), a cancel; every account to the
//! unit and the trial balance zero after each step; concurrent releases
//! that never pass their milestone; another tenant's ids.

use super::payments_http::{accepted, sums};
use super::*;

fn commitment_body(allocation: &str, expires_at: Option<String>) -> Value {
    json!({"payer": "buyer-1", "payee": "seller-9", "currency": "USD", "allocation": allocation,
           "milestones": [
               {"milestone_id": "m1", "amount": 30_000, "inspection_seconds": 3_600, "on_timeout": "release"},
               {"milestone_id": "m2", "amount": 20_000, "inspection_seconds": 3_600, "on_timeout": "refund"}],
           "expires_at": expires_at})
}

/// A commitment of `allocation` funded by 20000, 15000 and 15000: its id.
async fn funded(client: &Client, key: &str, allocation: &str) -> String {
    let (created, _) = accepted(
        client,
        "/v1/commitments",
        key,
        commitment_body(allocation, None),
        201,
    )
    .await;
    assert_eq!(created["status"], "awaiting_funding");
    let id = created["commitment_id"].as_str().unwrap().to_string();
    for (n, amount) in [(1, 20_000), (2, 15_000), (3, 15_000)] {
        let (deposited, _) = accepted(
            client,
            &format!("/v1/commitments/{id}/deposits"),
            &format!("{key}-deposit-{n}"),
            json!({"amount": amount, "reference": format!("wire-{n}")}),
            201,
        )
        .await;
        let status = if n == 3 { "funded" } else { "awaiting_funding" };
        assert_eq!(deposited["status"], status, "{deposited}");
    }
    id
}

/// The deposit ids of commitment `id`, in order, as of `seq`.
async fn deposits(server: &TestServer, client: &Client, id: &str, seq: i64) -> Vec<Value> {
    server.catch_up().await;
    let read = client.read(&format!("/v1/commitments/{id}"), seq).await;
    read["deposits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|deposit| deposit["deposit_id"].clone())
        .collect()
}

/// The four accounts of commitment `id` as of `seq`: cash, held, the
/// payee's payable, the payer's refunds.
async fn books(server: &TestServer, client: &Client, id: &str, seq: i64) -> [[i64; 4]; 4] {
    server.catch_up().await;
    assert_trial_balance_is_zero(client, seq).await;
    [
        sums(client, seq, "escrow_cash").await,
        sums(client, seq, &format!("escrow_held:{id}")).await,
        sums(client, seq, "payee_payable:seller-9").await,
        sums(client, seq, "payer_refunds:buyer-1").await,
    ]
}

#[tokio::test]
async fn a_commitment_releases_with_lineage_splits_a_claim_and_times_out_on_the_tick() {
    let clock = TestClock::at(Utc::now());
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    let id = funded(&acme, "c1", "fifo").await;
    let path = |tail: &str| format!("/v1/commitments/{id}{tail}");
    let (released, seq) = accepted(
        &acme,
        &path("/milestones/m1/release"),
        "c1-release",
        json!({"amount": 25_000}),
        201,
    )
    .await;
    let ids = deposits(&server, &acme, &id, seq).await;
    assert_eq!(
        released["transfers"][0]["lineage"],
        json!([{"deposit_id": ids[0], "amount": 20_000}, {"deposit_id": ids[1], "amount": 5_000}])
    );
    assert_eq!(
        books(&server, &acme, &id, seq).await,
        [
            [50_000, 0, 0, 0],
            [25_000, 50_000, 0, 0],
            [0, 25_000, 0, 0],
            [0; 4]
        ]
    );

    // The payer rejects part of m2 once it is submitted: the rest stays
    // under its window.
    acme.post(
        &path("/milestones/m2/reject"),
        "c1-reject-early",
        json!({"amount": 5_001, "reason": "damaged"}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "no_inspection_window");
    accepted(
        &acme,
        &path("/milestones/m2/submit"),
        "c1-submit-m2",
        json!({}),
        200,
    )
    .await;
    let (rejected, seq) = accepted(
        &acme,
        &path("/milestones/m2/reject"),
        "c1-reject",
        json!({"amount": 5_001, "reason": "damaged"}),
        201,
    )
    .await;
    let claim = rejected["claim_id"].as_str().unwrap().to_string();
    assert_eq!(rejected["frozen"], 5_001);
    assert_eq!(
        books(&server, &acme, &id, seq).await,
        [
            [50_000, 0, 0, 0],
            [25_000, 50_000, 5_001, 0],
            [0, 25_000, 0, 5_001],
            [0; 4]
        ]
    );
    // Frozen funds move neither way: 25000 held unfrozen is 19999.
    acme.post(
        &path("/milestones/m2/release"),
        "c1-too-much",
        json!({"amount": 20_000}),
    )
    .await
    .assert_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "release_exceeds_milestone",
    );
    // A share is a split's only: named with a release it is refused, not
    // dropped (a retry naming another share would replay it).
    acme.post(
        &format!("/v1/claims/{claim}/resolve"),
        "c1-release-with-share",
        json!({"outcome": "release", "payee_bps": 6_000}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "payee_bps_without_split");
    let (split, seq) = accepted(
        &acme,
        &format!("/v1/claims/{claim}/resolve"),
        "c1-split",
        json!({"outcome": "split", "payee_bps": 6_000}),
        200,
    )
    .await;
    let sides: Vec<(Value, Value)> = split["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|transfer| (transfer["direction"].clone(), transfer["amount"].clone()))
        .collect();
    assert_eq!(
        sides,
        vec![
            (json!("release"), json!(3_001)),
            (json!("refund"), json!(2_000))
        ]
    );
    assert_eq!(
        books(&server, &acme, &id, seq).await,
        [
            [50_000, 0, 0, 0],
            [30_001, 50_000, 0, 0],
            [0, 28_001, 0, 0],
            [0, 2_000, 0, 0]
        ]
    );
    // The journal's own routes do not move a commitment's held funds.
    acme.post(
        "/v1/journal/entries",
        "c1-by-hand",
        json!({"lines": [
            {"account": format!("escrow_held:{id}"), "asset": "USD/2", "side": "debit", "amount": 1},
            {"account": "escrow_cash", "asset": "USD/2", "side": "credit", "amount": 1}]}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_code_reserved");
    let again = acme
        .post(
            &format!("/v1/claims/{claim}/resolve"),
            "c1-again",
            json!({"outcome": "refund"}),
        )
        .await;
    again.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "claim_already_resolved");
    // The key is the body's: the same body again is a replay; with a share
    // the route would drop, it is another request.
    let replayed = acme
        .post(
            &format!("/v1/claims/{claim}/resolve"),
            "c1-again",
            json!({"outcome": "refund"}),
        )
        .await;
    assert_eq!(
        (replayed.replayed, &replayed.body),
        (true, &again.body),
        "{}",
        replayed.body
    );
    acme.post(
        &format!("/v1/claims/{claim}/resolve"),
        "c1-again",
        json!({"outcome": "refund", "payee_bps": 6_000}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");

    // m1's window times out to a release, m2's (open over the rest of the
    // partial rejection) to a refund, on the tick.
    accepted(
        &acme,
        &path("/milestones/m1/submit"),
        "c1-submit-m1",
        json!({}),
        200,
    )
    .await;
    acme.post(&path("/milestones/m1/submit"), "c1-submit-again", json!({}))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "inspection_window_open");
    // Another commitment's m1, in the same tenant, times out on its own.
    let second = funded(&acme, "c9", "fifo").await;
    accepted(
        &acme,
        &format!("/v1/commitments/{second}/milestones/m1/submit"),
        "c9-submit-m1",
        json!({}),
        200,
    )
    .await;
    server.catch_up().await;
    clock.set(clock.now() + Duration::seconds(3_601));
    // Both windows ended together: m1's times out first (milestone order),
    // so m2's, leased first (scheduled first), waits for the next tick.
    let ticker = server.ticker(clock.clock());
    ticker.tick().await.unwrap();
    server.catch_up().await;
    ticker.tick().await.unwrap();
    let seq = head_seq(&server, &acme).await;
    // escrow_cash and the payee's payable count the other commitment too.
    assert_eq!(
        books(&server, &acme, &id, seq).await,
        [
            [100_000, 0, 0, 0],
            [50_000, 50_000, 0, 0],
            [0, 63_001, 0, 0],
            [0, 16_999, 0, 0]
        ]
    );
    let other_read = acme.read(&format!("/v1/commitments/{second}"), seq).await;
    assert_eq!(
        (
            &other_read["released"],
            &other_read["milestones"][0]["remaining"]
        ),
        (&json!(30_000), &json!(0))
    );
    let read = acme.read(&path(""), seq).await;
    assert_eq!(
        (
            &read["status"],
            &read["held"],
            &read["released"],
            &read["refunded"]
        ),
        (
            &json!("completed"),
            &json!(0),
            &json!(33_001),
            &json!(16_999)
        )
    );
    assert_eq!(read["milestones"][1]["remaining"], 0);
    let claim_read = acme.read(&format!("/v1/claims/{claim}"), seq).await;
    assert_eq!(claim_read["transfers"].as_array().unwrap().len(), 2);

    let other = server.tenant("other").await;
    for path in [
        format!("/v1/commitments/{id}"),
        format!("/v1/claims/{claim}"),
    ] {
        other
            .get(&path)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    other
        .post(
            &format!("/v1/commitments/{id}/deposits"),
            "steal",
            json!({"amount": 1}),
        )
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn lifo_draws_newest_first_a_cancel_refunds_and_concurrent_releases_stop_at_the_milestone() {
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let lifo = funded(&acme, "c2", "lifo").await;
    let (released, seq) = accepted(
        &acme,
        &format!("/v1/commitments/{lifo}/milestones/m1/release"),
        "c2-release",
        json!({"amount": 25_000}),
        201,
    )
    .await;
    let ids = deposits(&server, &acme, &lifo, seq).await;
    assert_eq!(
        released["transfers"][0]["lineage"],
        json!([{"deposit_id": ids[2], "amount": 15_000}, {"deposit_id": ids[1], "amount": 10_000}])
    );
    let (canceled, seq) = accepted(
        &acme,
        &format!("/v1/commitments/{lifo}/cancel"),
        "c2-cancel",
        json!({}),
        200,
    )
    .await;
    assert_eq!(
        (&canceled["status"], &canceled["transfers"][0]["amount"]),
        (&json!("canceled"), &json!(25_000))
    );
    // The refund names no milestone: nothing of either remains.
    server.catch_up().await;
    let read = acme.read(&format!("/v1/commitments/{lifo}"), seq).await;
    assert_eq!(
        (
            &read["milestones"][0]["remaining"],
            &read["milestones"][1]["remaining"],
            &read["milestones"][0]["released"]
        ),
        (&json!(0), &json!(0), &json!(25_000))
    );
    assert_eq!(
        books(&server, &acme, &lifo, seq).await,
        [
            [50_000, 0, 0, 0],
            [50_000, 50_000, 0, 0],
            [0, 25_000, 0, 0],
            [0, 25_000, 0, 0]
        ]
    );
    acme.post(
        &format!("/v1/commitments/{lifo}/deposits"),
        "c2-late",
        json!({"amount": 1}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "commitment_canceled");

    let raced = funded(&acme, "c3", "fifo").await;
    let mut releases = tokio::task::JoinSet::new();
    for n in 0..32 {
        let (acme, raced) = (acme.clone(), raced.clone());
        releases.spawn(async move {
            acme.post(
                &format!("/v1/commitments/{raced}/milestones/m2/release"),
                &format!("race-{n}"),
                json!({"amount": 1_000}),
            )
            .await
        });
    }
    let answers = releases.join_all().await;
    let taken = answers
        .iter()
        .filter(|answer| answer.status == StatusCode::CREATED)
        .count();
    let refused = answers
        .iter()
        .filter(|answer| {
            answer.body["error"]["code"] == "release_exceeds_milestone"
                || answer.body["error"]["code"] == "milestone_already_released"
        })
        .count();
    assert_eq!((taken, refused), (20, 12));
    let seq = head_seq(&server, &acme).await;
    server.catch_up().await;
    let read = acme.read(&format!("/v1/commitments/{raced}"), seq).await;
    assert_eq!(
        (
            &read["milestones"][1]["released"],
            &read["milestones"][1]["remaining"]
        ),
        (&json!(20_000), &json!(0))
    );
    server.catch_up().await;
    assert_trial_balance_is_zero(&acme, seq).await;
}

/// A test server on a clock the test moves, starting now in whole seconds.
async fn clocked() -> (TestClock, TestServer) {
    use chrono::DurationRound;
    let clock = TestClock::at(Utc::now().duration_trunc(Duration::seconds(1)).unwrap());
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    (clock, server)
}

#[tokio::test]
async fn an_expiry_submitted_before_an_ended_windows_timeout_times_it_out_first() {
    // Proves: m1's window (released on timeout) ends an hour before the
    // commitment expires; when the expiry is submitted before the window's
    // timeout (a second ticker, or a schedule not yet caught up), it
    // releases m1 to the payee as of the window's end and refunds only the
    // rest; the timeout is then refused and nothing moves twice.
    let (clock, server) = clocked().await;
    let acme = server.tenant("acme").await;
    let expires_at = clock.now() + Duration::hours(2);
    let body = commitment_body("fifo", Some(expires_at.to_rfc3339()));
    let (created, _) = accepted(&acme, "/v1/commitments", "c5", body, 201).await;
    let id = created["commitment_id"].as_str().unwrap().to_string();
    accepted(
        &acme,
        &format!("/v1/commitments/{id}/deposits"),
        "c5-deposit",
        json!({"amount": 50_000}),
        201,
    )
    .await;
    accepted(
        &acme,
        &format!("/v1/commitments/{id}/milestones/m1/submit"),
        "c5-submit",
        json!({}),
        200,
    )
    .await;
    server.catch_up().await;
    clock.set(expires_at + Duration::seconds(1));
    let bus = server.bus(clock.clock());
    let expired = submit_scheduled(&server, &bus, &acme, &format!("commitment:{id}:expiry")).await;
    assert_eq!(expired.status, 200, "{}", expired.body);
    server.catch_up().await;
    // The expiry closed the window: neither piece of work is open.
    let ticked = server.ticker(clock.clock()).tick().await.unwrap();
    assert_eq!((ticked.leased, ticked.accepted), (0, 0));
    // A ticker that had leased the timeout before submits it now: refused.
    let timeout = format!("commitment:{id}:milestone:m1:window:1");
    let late = submit_scheduled(&server, &bus, &acme, &timeout).await;
    assert_eq!(late.status, 422, "{}", late.body);
    assert_eq!(late.body["error"]["code"], "commitment_expired");
    bus.shutdown().await;
    server.catch_up().await;
    let seq = head_seq(&server, &acme).await;
    assert_eq!(
        books(&server, &acme, &id, seq).await,
        [
            [50_000, 0, 0, 0],
            [50_000, 50_000, 0, 0],
            [0, 30_000, 0, 0],
            [0, 20_000, 0, 0]
        ]
    );
    let read = acme.read(&format!("/v1/commitments/{id}"), seq).await;
    assert_eq!(
        (&read["status"], &read["released"], &read["refunded"]),
        (&json!("expired"), &json!(30_000), &json!(20_000)),
        "{read}"
    );
    let window_end = (expires_at - Duration::hours(1)).to_rfc3339();
    let timed_out = &read["releases"][0];
    assert_eq!(
        (&timed_out["cause"], &timed_out["amount"]),
        (&json!("timed_out"), &json!(30_000)),
        "{read}"
    );
    let at: DateTime<Utc> = timed_out["at"].as_str().unwrap().parse().unwrap();
    assert_eq!(at.to_rfc3339(), window_end);
}

/// Submits the request scheduled as `work` of `client`'s tenant through
/// `bus`, under its scheduled key (as a ticker does).
async fn submit_scheduled(
    server: &TestServer,
    bus: &commands::CommandBus,
    client: &Client,
    work: &str,
) -> commands::pipeline::Outcome {
    try_scheduled(server, bus, client, work).await.unwrap()
}

/// [`submit_scheduled`], answering the pipeline's error too.
async fn try_scheduled(
    server: &TestServer,
    bus: &commands::CommandBus,
    client: &Client,
    work: &str,
) -> Result<commands::pipeline::Outcome, commands::pipeline::PipelineError> {
    let (key, kind, request): (String, String, Value) = sqlx::query_as(
        "SELECT idempotency_key, request_kind, request FROM scheduled_work \
         WHERE tenant_id = $1::uuid AND work = $2",
    )
    .bind(&client.tenant_id)
    .bind(work)
    .fetch_one(server.db.store().pool())
    .await
    .unwrap();
    let registry = commands::domains::Registry::new();
    let request = registry.request(&kind).unwrap().decode(&request).unwrap();
    bus.execute_any(
        client.tenant_id.parse().unwrap(),
        eventstore::IdempotencyKey::parse(&key).unwrap(),
        request,
    )
    .await
}

/// A commitment of m1 (30000, released on timeout) and m2 (20000,
/// refunded), funded with 30000 only; m1 submitted now, m2 half an hour
/// later, each for an hour's inspection: its id.
async fn two_windows(client: &Client, clock: &TestClock, key: &str) -> String {
    let started = clock.now();
    let body = commitment_body("fifo", None);
    let (created, _) = accepted(client, "/v1/commitments", key, body, 201).await;
    let id = created["commitment_id"].as_str().unwrap().to_string();
    let path = |tail: &str| format!("/v1/commitments/{id}/{tail}");
    let deposit = json!({"amount": 30_000});
    accepted(client, &path("deposits"), &format!("{key}-d"), deposit, 201).await;
    let m1 = path("milestones/m1/submit");
    accepted(client, &m1, &format!("{key}-m1"), json!({}), 200).await;
    clock.set(started + Duration::minutes(30));
    let m2 = path("milestones/m2/submit");
    accepted(client, &m2, &format!("{key}-m2"), json!({}), 200).await;
    clock.set(started);
    id
}

#[tokio::test]
async fn windows_time_out_in_the_order_they_ended_whatever_order_they_are_submitted_in() {
    // Proves: with m1's window (release on timeout) ending before m2's
    // (refund on timeout) and only m1's amount held, m2's timeout
    // submitted first (two tickers, or one retried) is answered stale and
    // not recorded; m1's then releases the 30000 to the payee, and m2's,
    // submitted again, refunds nothing. Under the fourth rules m2's went
    // first: 20000 back to the payer and only 10000 to the payee.
    let (clock, server) = clocked().await;
    let acme = server.tenant("acme").await;
    let beta = server.tenant("beta").await;
    let current = two_windows(&acme, &clock, "c6").await;
    let older = two_windows(&beta, &clock, "c7").await;
    server.catch_up().await;
    clock.set(clock.now() + Duration::hours(3));
    let timeout =
        |id: &str, milestone: &str| format!("commitment:{id}:milestone:{milestone}:window:1");
    let bus = server.bus(clock.clock());
    let early = try_scheduled(&server, &bus, &acme, &timeout(&current, "m2")).await;
    let Err(commands::pipeline::PipelineError::Stale(why)) = early else {
        panic!("{early:?}");
    };
    assert!(
        why.starts_with("the window of milestone m1 ended first"),
        "{why}"
    );
    for milestone in ["m1", "m2"] {
        let done = submit_scheduled(&server, &bus, &acme, &timeout(&current, milestone)).await;
        assert_eq!((done.status, done.replayed), (200, false), "{}", done.body);
    }
    let fourth = server.bus_under(aggregates::rules::Rules::FOURTH, clock.clock());
    for milestone in ["m2", "m1"] {
        let done = submit_scheduled(&server, &fourth, &beta, &timeout(&older, milestone)).await;
        assert_eq!(done.status, 200, "{}", done.body);
    }
    bus.shutdown().await;
    fourth.shutdown().await;
    let seq = head_seq(&server, &acme).await;
    assert_eq!(
        books(&server, &acme, &current, seq).await,
        [
            [30_000, 0, 0, 0],
            [30_000, 30_000, 0, 0],
            [0, 30_000, 0, 0],
            [0, 0, 0, 0]
        ]
    );
    let seq = head_seq(&server, &beta).await;
    assert_eq!(
        books(&server, &beta, &older, seq).await,
        [
            [30_000, 0, 0, 0],
            [30_000, 30_000, 0, 0],
            [0, 10_000, 0, 0],
            [0, 20_000, 0, 0]
        ]
    );
}

/// Creates a commitment expiring at `expires_at`, funds it whole and
/// releases both milestones by hand: the commitment's id and the last
/// release's answer.
async fn released_whole(client: &Client, key: &str, expires_at: DateTime<Utc>) -> (String, Value) {
    let body = commitment_body("fifo", Some(expires_at.to_rfc3339()));
    let (created, _) = accepted(client, "/v1/commitments", key, body, 201).await;
    let id = created["commitment_id"].as_str().unwrap().to_string();
    accepted(
        client,
        &format!("/v1/commitments/{id}/deposits"),
        &format!("{key}-deposit"),
        json!({"amount": 50_000}),
        201,
    )
    .await;
    let mut last = Value::Null;
    for (milestone, amount) in [("m1", 30_000), ("m2", 20_000)] {
        (last, _) = accepted(
            client,
            &format!("/v1/commitments/{id}/milestones/{milestone}/release"),
            &format!("{key}-release-{milestone}"),
            json!({"amount": amount}),
            201,
        )
        .await;
    }
    (id, last)
}

#[tokio::test]
async fn a_completed_commitment_settles_its_expiry_since_the_ninth_rules() {
    // Proves: the release that completes a commitment records
    // CommitmentCompleted after its transfer, which settles the
    // commitment's expiry: past it, the ticker leases nothing and the work
    // shows settled. Under the eighth rules the expiry stays open, is
    // refused commitment_completed when it comes, and stays unsettled.
    for (rules, completes) in [
        (aggregates::rules::Rules::NINTH, true),
        (aggregates::rules::Rules::EIGHTH, false),
    ] {
        use chrono::DurationRound;
        let clock = TestClock::at(Utc::now().duration_trunc(Duration::seconds(1)).unwrap());
        let server = TestServer::start_with(Options {
            clock: Some(clock.clock()),
            rules: Some(rules),
            ..Options::default()
        })
        .await;
        let acme = server.tenant("acme").await;
        let expires_at = clock.now() + Duration::hours(2);
        let (id, last) = released_whole(&acme, "c7", expires_at).await;
        let types: Vec<&str> = last["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["aggregate_type"] == "commitment")
            .map(|event| event["type"].as_str().unwrap())
            .collect();
        let expected = if completes {
            vec!["Transferred", "CommitmentCompleted"]
        } else {
            vec!["Transferred"]
        };
        assert_eq!(types, expected, "rules {rules:?}: {last}");
        server.catch_up().await;
        clock.set(expires_at + Duration::seconds(1));
        let ticked = server.ticker(clock.clock()).tick().await.unwrap();
        let seq = head_seq(&server, &acme).await;
        server.catch_up().await;
        let work: Vec<Value> = acme.read("/v1/scheduler/work", seq).await["work"]
            .as_array()
            .unwrap()
            .clone();
        let expiry = work
            .iter()
            .find(|work| work["work"] == format!("commitment:{id}:expiry"))
            .unwrap();
        if completes {
            assert_eq!((ticked.leased, ticked.refused), (0, 0), "{ticked:?}");
            let completed = last["events"]
                .as_array()
                .unwrap()
                .iter()
                .find(|event| event["type"] == "CommitmentCompleted")
                .unwrap();
            assert_eq!(expiry["settled_seq"], completed["tenant_seq"], "{expiry}");
            assert_eq!(expiry["outcome"], Value::Null);
        } else {
            assert_eq!((ticked.leased, ticked.refused), (1, 1), "{ticked:?}");
            assert_eq!(expiry["settled_seq"], Value::Null, "{expiry}");
            assert_eq!(expiry["error_code"], "commitment_completed");
        }
        let read = acme.read(&format!("/v1/commitments/{id}"), seq).await;
        assert_eq!(read["status"], "completed");
    }
}
