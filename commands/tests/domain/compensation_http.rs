//! Compensation over HTTP, end to end: a plan with all three rules and a
//! second version mid-period (work before and after valued by the right
//! one), a captured attributed payment (the commission accrued by the
//! process manager, held 14 days, payable after the scheduler's tick), a
//! refund clawing it back, pay runs approved and paid, a negative net
//! carried to the next run, an adjustment after payment; every account to
//! the unit and the trial balance zero; a commission in another currency
//! refused on the ledger, a failed refund giving its clawback back, a lost
//! dispute clawing back; two concurrent runs never claiming one line
//! twice; another tenant's ids.

use super::payments_http::{accepted, sums};
use super::*;

fn day(day: u32, hour: u32) -> DateTime<Utc> {
    chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, day, hour, 0, 0).unwrap()
}

fn rules(rate: i64, per_delivery: i64) -> Value {
    json!([
        {"kind": "hourly", "rate_per_hour": rate},
        {"kind": "per_unit", "unit": "delivery", "amount_per_unit": per_delivery},
        {"kind": "commission", "basis_points": 1000, "cap_per_period": 500_000, "holding_days": 14}
    ])
}

/// The tenant's compensation accounts as of `seq`: the expense, alice's
/// payable, the payroll bank (debits, credits).
async fn books(server: &TestServer, client: &Client, seq: i64) -> [[i64; 2]; 3] {
    server.catch_up().await;
    assert_trial_balance_is_zero(client, seq).await;
    let mut books = [[0; 2]; 3];
    for (n, account) in [
        "compensation_expense",
        "compensation_payable:alice",
        "bank:payroll",
    ]
    .iter()
    .enumerate()
    {
        let [debits, credits, _, _] = sums(client, seq, account).await;
        books[n] = [debits, credits];
    }
    books
}

/// Alice's ledger as of `seq`: (kind, amount, status) per line.
async fn ledger(server: &TestServer, client: &Client, seq: i64) -> Vec<(String, i64, String)> {
    server.catch_up().await;
    let read = client.read("/v1/payees/alice/ledger", seq).await;
    read["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| {
            (
                line["kind"].as_str().unwrap().to_string(),
                line["amount"].as_i64().unwrap(),
                line["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn lines(expected: &[(&str, i64, &str)]) -> Vec<(String, i64, String)> {
    expected
        .iter()
        .map(|(kind, amount, status)| (kind.to_string(), *amount, status.to_string()))
        .collect()
}

/// Sets up plan `sales` (from Dec 1), role `rep` and payee `alice`
/// assigned to the role's plan from Dec 1.
async fn alice(client: &Client) {
    let (plan, _) = accepted(
        client,
        "/v1/compensation/plans",
        "plan",
        json!({"plan_id": "sales", "currency": "USD", "effective_from": day(1, 0), "rules": rules(2_500, 350)}),
        201,
    )
    .await;
    assert_eq!(plan["version"], 1);
    accepted(
        client,
        "/v1/compensation/roles",
        "role",
        json!({"role_id": "rep", "name": "Sales rep", "plan_id": "sales"}),
        201,
    )
    .await;
    accepted(
        client,
        "/v1/payees",
        "payee",
        json!({"payee_id": "alice", "name": "Alice", "currency": "USD", "role_id": "rep"}),
        201,
    )
    .await;
    let (assigned, _) = accepted(
        client,
        "/v1/payees/alice/assignment",
        "assign",
        json!({"from": day(1, 0)}),
        200,
    )
    .await;
    assert_eq!(assigned["assignments"][0]["plan_id"], "sales");
}

async fn work(client: &Client, key: &str, body: Value) -> i64 {
    let (line, _) = accepted(client, "/v1/payees/alice/work", key, body, 201).await;
    line["amount"].as_i64().unwrap()
}

async fn pay_run(client: &Client, key: &str, cutoff: DateTime<Utc>) -> (Value, i64) {
    let (run, _) = accepted(
        client,
        "/v1/pay-runs",
        key,
        json!({"period_start": day(1, 0), "period_end": day(31, 0), "cutoff": cutoff}),
        201,
    )
    .await;
    let id = run["pay_run_id"].as_str().unwrap().to_string();
    accepted(
        client,
        &format!("/v1/pay-runs/{id}/approve"),
        &format!("{key}-approve"),
        json!({}),
        200,
    )
    .await;
    accepted(
        client,
        &format!("/v1/pay-runs/{id}/pay"),
        &format!("{key}-pay"),
        json!({}),
        200,
    )
    .await
}

#[tokio::test]
async fn work_commissions_clawbacks_and_pay_runs_move_every_account_to_the_unit() {
    let clock = TestClock::at(day(2, 12));
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    alice(&acme).await;
    // Version 1: 2500 an hour, 350 a delivery.
    let time = |minutes, at| json!({"kind": "time", "minutes": minutes, "worked_at": at});
    assert_eq!(work(&acme, "w1", time(90, day(2, 9))).await, 3_750);
    let units = json!({"kind": "units", "unit": "delivery", "count": 3, "worked_at": day(2, 10)});
    assert_eq!(work(&acme, "w2", units).await, 1_050);
    // Version 2 from Dec 10: work after it by v2, work before it still by
    // v1 even when recorded later.
    clock.set(day(11, 12));
    let (version, _) = accepted(
        &acme,
        "/v1/compensation/plans/sales/versions",
        "v2",
        json!({"effective_from": day(10, 0), "rules": rules(3_000, 400)}),
        201,
    )
    .await;
    assert_eq!(version["version"], 2);
    // A field of another kind of rule is a malformed body, named.
    let refused = acme
        .post(
            "/v1/compensation/plans/sales/versions",
            "v3",
            json!({"effective_from": day(12, 0), "rules": [{"kind": "hourly", "rate_per_hour": 1, "unit": "x"}]}),
        )
        .await;
    let error = refused.assert_error(StatusCode::BAD_REQUEST, "invalid_rules");
    assert_eq!(
        (&error["message"], &error["details"]),
        (
            &json!("rules[0]: unit is no field of a rule of kind \"hourly\""),
            &json!({"rule": 0})
        )
    );
    assert_eq!(work(&acme, "w3", time(30, day(11, 9))).await, 1_500);
    assert_eq!(work(&acme, "w4", time(60, day(5, 9))).await, 2_500);
    acme.post(
        "/v1/payees/alice/work",
        "w5",
        json!({"kind": "units", "unit": "garden", "count": 1, "worked_at": day(11, 9)}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "no_matching_rule");
    acme.post(
        "/v1/payees/alice/work",
        "w6",
        time(60, day(1, 0) - Duration::hours(1)),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "no_plan_assigned");

    // A cash sale of 10000 attributed to alice: 10% commission, held.
    let (payment, _) = accepted(
        &acme,
        "/v1/payments",
        "sale",
        json!({"amount": 10_000, "currency": "USD", "capture": "automatic", "attribution": {"payee": "alice"}}),
        201,
    )
    .await;
    let payment = payment["payment_id"].as_str().unwrap().to_string();
    let (_, seq) = accepted(
        &acme,
        &format!("/v1/payments/{payment}/tenders"),
        "sale-cash",
        json!({"method": "cash", "amount": 10_000}),
        201,
    )
    .await;
    server.react(clock.clock()).await;
    // Reacting again (a restart re-reading the events) accrues nothing more.
    server.react(clock.clock()).await;
    assert_eq!(
        ledger(&server, &acme, seq).await,
        lines(&[
            ("time", 3_750, "accrued"),
            ("units", 1_050, "accrued"),
            ("time", 1_500, "accrued"),
            ("time", 2_500, "accrued"),
            ("commission", 1_000, "held"),
        ])
    );
    // A refund of 2500 claws back a quarter.
    accepted(
        &acme,
        &format!("/v1/payments/{payment}/refunds"),
        "sale-refund",
        json!({"amount": 2_500}),
        201,
    )
    .await;
    server.react(clock.clock()).await;
    let seq = server.tenant_seq(&acme).await;
    assert_eq!(
        ledger(&server, &acme, seq).await[5],
        ("clawback".into(), -250, "held".into())
    );
    assert_eq!(
        books(&server, &acme, seq).await,
        [[9_800, 250], [250, 9_800], [0, 0]]
    );

    // The run on Dec 15 claims what is payable: not the held commission,
    // nor its clawback (held as long).
    clock.set(day(15, 12));
    let (paid, seq) = pay_run(&acme, "run-1", day(15, 0)).await;
    assert_eq!(paid["status"], "paid");
    let share = &paid["payees"][0];
    assert_eq!(
        (
            share["gross"].clone(),
            share["carried_in"].clone(),
            share["net"].clone(),
            share["paid"].clone()
        ),
        (json!(8_800), json!(0), json!(8_800), json!(8_800))
    );
    assert_eq!(
        books(&server, &acme, seq).await,
        [[9_800, 250], [9_050, 9_800], [0, 8_800]]
    );
    let run_1 = paid["pay_run_id"].as_str().unwrap().to_string();
    acme.post(
        &format!("/v1/pay-runs/{run_1}/reopen"),
        "run-1-reopen",
        json!({}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "pay_run_paid");

    // The sale was on Dec 11: its holding period ends on Dec 25, when the
    // scheduler's tick flips it.
    clock.set(day(26, 0));
    server.catch_up().await;
    let ticked = server.ticker(clock.clock()).tick().await.unwrap();
    assert_eq!((ticked.accepted, ticked.refused), (2, 0));
    // A correction after payment: the paid line never changes. Naming the
    // line of 3750 it corrects, it takes back 3750 at most (rules 6),
    // changing nothing; an adjustment naming no line takes 12000 back, so
    // the next run's net is negative.
    let first_line = acme.read("/v1/payees/alice/ledger", seq).await["lines"][0]["line_id"].clone();
    let past = acme
        .post(
            "/v1/payees/alice/adjustments",
            "adjust-0",
            json!({"amount": -3_751, "reason": "overpaid", "corrects": first_line}),
        )
        .await;
    assert_eq!(
        (
            past.status.as_u16(),
            &past.body["error"]["code"],
            &past.body["error"]["details"]
        ),
        (
            422,
            &json!("correction_exceeds_line"),
            &json!({"line_id": first_line, "left": 3_750})
        )
    );
    let (_, seq) = accepted(
        &acme,
        "/v1/payees/alice/adjustments",
        "adjust-1",
        json!({"amount": -12_000, "reason": "overpaid"}),
        201,
    )
    .await;
    let statuses: Vec<String> = ledger(&server, &acme, seq)
        .await
        .into_iter()
        .map(|line| line.2)
        .collect();
    assert_eq!(
        statuses,
        ["paid", "paid", "paid", "paid", "accrued", "accrued", "accrued"]
    );
    let (second, seq) = pay_run(&acme, "run-2", day(26, 0)).await;
    let share = &second["payees"][0];
    assert_eq!(
        (
            share["net"].clone(),
            share["paid"].clone(),
            share["carried_out"].clone()
        ),
        (json!(-11_250), json!(0), json!(-11_250))
    );
    assert_eq!(
        books(&server, &acme, seq).await,
        [[9_800, 12_250], [21_050, 9_800], [0, 8_800]]
    );
    // The next run recovers the carried 11250 first; reopened before
    // payment, it claims a correction made meanwhile.
    clock.set(day(28, 0));
    accepted(
        &acme,
        "/v1/payees/alice/adjustments",
        "adjust-2",
        json!({"amount": 15_000}),
        201,
    )
    .await;
    let (third, _) = accepted(
        &acme,
        "/v1/pay-runs",
        "run-3",
        json!({"period_start": day(16, 0), "period_end": day(31, 0), "cutoff": day(28, 0)}),
        201,
    )
    .await;
    let run_3 = third["pay_run_id"].as_str().unwrap().to_string();
    assert_eq!(third["payees"][0]["net"], 3_750);
    accepted(
        &acme,
        "/v1/payees/alice/adjustments",
        "adjust-3",
        json!({"amount": 100}),
        201,
    )
    .await;
    accepted(
        &acme,
        &format!("/v1/pay-runs/{run_3}/approve"),
        "run-3-approve",
        json!({}),
        200,
    )
    .await;
    let (reopened, _) = accepted(
        &acme,
        &format!("/v1/pay-runs/{run_3}/reopen"),
        "run-3-reopen",
        json!({}),
        200,
    )
    .await;
    assert_eq!(
        (
            reopened["status"].clone(),
            reopened["payees"][0]["net"].clone(),
            reopened["payees"][0]["carried_in"].clone()
        ),
        (json!("draft"), json!(3_850), json!(-11_250))
    );
    acme.post(
        &format!("/v1/pay-runs/{run_3}/pay"),
        "run-3-early",
        json!({}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "pay_run_not_approved");
    accepted(
        &acme,
        &format!("/v1/pay-runs/{run_3}/approve"),
        "run-3-approve-2",
        json!({}),
        200,
    )
    .await;
    let (paid, seq) = accepted(
        &acme,
        &format!("/v1/pay-runs/{run_3}/pay"),
        "run-3-pay",
        json!({}),
        200,
    )
    .await;
    assert_eq!(paid["payees"][0]["paid"], 3_850);
    assert_eq!(
        books(&server, &acme, seq).await,
        [[24_900, 12_250], [24_900, 24_900], [0, 12_650]]
    );
    let payee = acme.read("/v1/payees/alice", seq).await;
    assert_eq!(
        (
            payee["totals"]["paid"].clone(),
            payee["totals"]["carried"].clone(),
            payee["totals"]["payable"].clone()
        ),
        (json!(12_650), json!(0), json!(0))
    );
    // The journal's own routes do not move a payee's payable.
    acme.post(
        "/v1/journal/entries",
        "by-hand",
        json!({"lines": [
            {"account": "compensation_payable:alice", "asset": "USD/2", "side": "debit", "amount": 1},
            {"account": "bank:payroll", "asset": "USD/2", "side": "credit", "amount": 1}]}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_code_reserved");
    // Another tenant sees none of it.
    let other = server.tenant("other").await;
    other
        .get("/v1/payees/alice")
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    other
        .get(&format!("/v1/pay-runs/{run_3}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn refused_commissions_clawbacks_given_back_and_concurrent_runs_claiming_each_line_once() {
    let clock = TestClock::at(day(2, 12));
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    alice(&acme).await;
    let (payment, _) = accepted(
        &acme,
        "/v1/payments",
        "euro-sale",
        json!({"amount": 5_000, "currency": "EUR", "capture": "automatic", "attribution": {"payee": "alice"}}),
        201,
    )
    .await;
    let payment = payment["payment_id"].as_str().unwrap();
    let (_, seq) = accepted(
        &acme,
        &format!("/v1/payments/{payment}/tenders"),
        "euro-cash",
        json!({"method": "cash", "amount": 5_000}),
        201,
    )
    .await;
    server.react(clock.clock()).await;
    server.catch_up().await;
    let line = &acme.read("/v1/payees/alice/ledger", seq).await["lines"][0];
    assert_eq!(
        (
            line["status"].clone(),
            line["amount"].clone(),
            line["reason"].clone()
        ),
        (
            json!("refused"),
            json!(0),
            json!("currency_mismatch: the sale is in EUR, the payee is paid in USD")
        )
    );
    // A card sale of 20000: a refund of 5000 claws back 500, and gives it
    // back when it fails; a lost dispute of 10000 claws back 1000.
    let (sale, _) = accepted(
        &acme,
        "/v1/payments",
        "card-sale",
        json!({"amount": 20_000, "currency": "USD", "capture": "automatic", "attribution": {"payee": "alice"}}),
        201,
    )
    .await;
    let sale = sale["payment_id"].as_str().unwrap().to_string();
    let (tendered, _) = accepted(
        &acme,
        &format!("/v1/payments/{sale}/tenders"),
        "card-sale-card",
        json!({"method": "card", "amount": 20_000, "processor": "stripe", "reference": "ch_a"}),
        201,
    )
    .await;
    let capture_id = tendered["capture_id"].as_str().unwrap().to_string();
    let (refund, _) = accepted(
        &acme,
        &format!("/v1/payments/{sale}/refunds"),
        "card-sale-refund",
        json!({"amount": 5_000, "reference": "re_a"}),
        201,
    )
    .await;
    server.react(clock.clock()).await;
    let refund_id = refund["refund_id"].as_str().unwrap();
    accepted(
        &acme,
        &format!("/v1/refunds/{refund_id}/fail"),
        "card-sale-refund-fail",
        json!({"reason": "card closed"}),
        200,
    )
    .await;
    let (dispute, _) = accepted(
        &acme,
        &format!("/v1/payments/{sale}/disputes"),
        "card-sale-dispute",
        json!({"capture_id": capture_id, "amount": 10_000, "fee": 0, "reference": "dp_a"}),
        201,
    )
    .await;
    let dispute_id = dispute["dispute_id"].as_str().unwrap().to_string();
    for (path, key, body) in [
        ("evidence", "card-sale-evidence", json!({})),
        ("close", "card-sale-lost", json!({"outcome": "lost"})),
    ] {
        accepted(
            &acme,
            &format!("/v1/disputes/{dispute_id}/{path}"),
            key,
            body,
            200,
        )
        .await;
    }
    server.react(clock.clock()).await;
    let seq = server.tenant_seq(&acme).await;
    server.catch_up().await;
    let lines = acme.read("/v1/payees/alice/ledger", seq).await["lines"].clone();
    let sources: Vec<(String, i64)> = lines.as_array().unwrap()[1..]
        .iter()
        .map(|line| {
            let source = line["source"].as_str().unwrap();
            (
                source.split(':').next().unwrap().to_string(),
                line["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("capture".to_string(), 2_000),
            ("refund".to_string(), -500),
            ("refund_failed".to_string(), 500),
            ("dispute".to_string(), -1_000)
        ]
    );
    for n in 0..20 {
        let body = json!({"kind": "time", "minutes": 60, "worked_at": day(2, 1)});
        work(&acme, &format!("w{n}"), body).await;
    }
    let body = json!({"period_start": day(1, 0), "period_end": day(31, 0), "cutoff": day(2, 12)});
    let (first, second) = tokio::join!(
        acme.post("/v1/pay-runs", "run-a", body.clone()),
        acme.post("/v1/pay-runs", "run-b", body)
    );
    let mut claimed = Vec::new();
    for run in [&first.body, &second.body] {
        for payee in run["payees"].as_array().unwrap() {
            claimed.extend(payee["lines"].as_array().unwrap().iter().cloned());
        }
    }
    let distinct: std::collections::BTreeSet<String> =
        claimed.iter().map(|line| line.to_string()).collect();
    // The 20 hours, each claimed by one run (the commission and its
    // clawbacks are held).
    assert_eq!((claimed.len(), distinct.len()), (20, 20));
}

#[tokio::test]
async fn a_clawback_takes_the_captures_made_before_its_refund_however_late_it_reacts() {
    // A card sale of 1000 captured 400, refunded 400, then captured 600:
    // the refund's clawback is of the first capture's commission alone,
    // though the commissions process manager reacts only after the second
    // capture.
    let clock = TestClock::at(day(2, 12));
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    alice(&acme).await;
    let (payment, _) = accepted(
        &acme,
        "/v1/payments",
        "sale",
        json!({"amount": 1_000, "currency": "USD", "capture": "manual", "attribution": {"payee": "alice"}}),
        201,
    )
    .await;
    let payment = payment["payment_id"].as_str().unwrap().to_string();
    let (tender, _) = accepted(
        &acme,
        &format!("/v1/payments/{payment}/tenders"),
        "sale-card",
        json!({"method": "card", "amount": 1_000, "processor": "stripe", "reference": "ch_1"}),
        201,
    )
    .await;
    let tender = tender["tender_id"].as_str().unwrap().to_string();
    let capture = |key: &'static str, amount: i64, reference: &'static str| {
        let body = json!({"tender_id": tender, "amount": amount, "reference": reference, "final": amount == 600});
        let path = format!("/v1/payments/{payment}/captures");
        let acme = &acme;
        async move { accepted(acme, &path, key, body, 201).await.0 }
    };
    let first = capture("cap-1", 400, "cap_1").await;
    accepted(
        &acme,
        &format!("/v1/payments/{payment}/refunds"),
        "refund-1",
        json!({"amount": 400, "reference": "re_1"}),
        201,
    )
    .await;
    capture("cap-2", 600, "cap_2").await;
    server.react(clock.clock()).await;
    let seq = server.tenant_seq(&acme).await;
    server.catch_up().await;
    let read = acme.read("/v1/payees/alice/ledger", seq).await;
    let clawbacks: Vec<(Value, Value)> = read["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|line| line["kind"] == "clawback")
        .map(|line| (line["amount"].clone(), line["clawed_from"].clone()))
        .collect();
    let first = format!("capture:{}", first["capture_id"].as_str().unwrap());
    assert_eq!(clawbacks, [(json!(-40), json!([first]))]);
}

#[tokio::test]
async fn a_payees_runs_are_paid_in_turn_so_a_debt_is_recovered_from_the_next() {
    // Proves (tenth rules): while run A holds alice's -4000 carried in,
    // run B created meanwhile leaves her out (before, B paid her 5000 gross
    // and the debt outlived it); her read counts the debt A holds as not
    // yet recovered; once A is paid (-3000 carried out), the next run
    // recovers it from her 5000 and pays 2000.
    let clock = TestClock::at(day(2, 12));
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    alice(&acme).await;
    let adjust = |key: &'static str, amount: i64| {
        let acme = &acme;
        async move {
            accepted(
                acme,
                "/v1/payees/alice/adjustments",
                key,
                json!({"amount": amount}),
                201,
            )
            .await
        }
    };
    let create = |key: &'static str| {
        let (acme, cutoff) = (&acme, clock.now());
        async move {
            let body =
                json!({"period_start": day(1, 0), "period_end": day(31, 0), "cutoff": cutoff});
            accepted(acme, "/v1/pay-runs", key, body, 201).await.0
        }
    };
    let settle = |run: Value, key: &'static str| {
        let acme = &acme;
        async move {
            let id = run["pay_run_id"].as_str().unwrap().to_string();
            let approve = format!("{key}-approve");
            let path = format!("/v1/pay-runs/{id}/approve");
            accepted(acme, &path, &approve, json!({}), 200).await;
            let pay = format!("{key}-pay");
            let path = format!("/v1/pay-runs/{id}/pay");
            accepted(acme, &path, &pay, json!({}), 200).await
        }
    };
    adjust("owed", -4_000).await;
    let (paid, _) = settle(create("run-0").await, "run-0").await;
    assert_eq!(paid["payees"][0]["carried_out"], -4_000);
    clock.set(day(3, 12));
    adjust("one", 1_000).await;
    let run_a = create("run-a").await;
    assert_eq!(run_a["payees"][0]["carried_in"], -4_000);
    clock.set(day(4, 12));
    let (_, seq) = adjust("five", 5_000).await;
    let run_b = create("run-b").await;
    assert_eq!(run_b["payees"], json!([]), "{run_b}");
    assert_eq!(
        run_b["waiting"],
        json!([{"payee_id": "alice", "unpaid_runs": [run_a["pay_run_id"]]}])
    );
    server.catch_up().await;
    let payee = acme.read("/v1/payees/alice", seq).await;
    assert_eq!(
        (&payee["totals"]["carried"], &payee["totals"]["payable"]),
        (&json!(-4_000), &json!(5_000))
    );
    let (paid_a, _) = settle(run_a, "run-a").await;
    assert_eq!(
        (
            &paid_a["payees"][0]["paid"],
            &paid_a["payees"][0]["carried_out"]
        ),
        (&json!(0), &json!(-3_000))
    );
    let (paid_b, _) = settle(run_b, "run-b").await;
    assert_eq!(paid_b["payees"], json!([]));
    let run_c = create("run-c").await;
    assert!(run_c.get("waiting").is_none(), "{run_c}");
    let (paid_c, seq) = settle(run_c, "run-c").await;
    assert_eq!(
        (
            &paid_c["payees"][0]["carried_in"],
            &paid_c["payees"][0]["paid"]
        ),
        (&json!(-3_000), &json!(2_000))
    );
    server.catch_up().await;
    let payee = acme.read("/v1/payees/alice", seq).await;
    assert_eq!(
        (&payee["totals"]["carried"], &payee["totals"]["paid"]),
        (&json!(0), &json!(2_000))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_canceled_run_releases_its_lines_and_the_payees_it_held_back() {
    // Proves: canceling a draft run releases its lines (a run waiting on
    // it no longer waits: the next claims them), the canceled run reads
    // empty and `canceled`, and a canceled or paid run is not canceled.
    let clock = TestClock::at(day(2, 12));
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    alice(&acme).await;
    accepted(
        &acme,
        "/v1/payees/alice/adjustments",
        "one",
        json!({"amount": 1_000}),
        201,
    )
    .await;
    let body = json!({"period_start": day(1, 0), "period_end": day(31, 0), "cutoff": day(2, 12)});
    let (draft, _) = accepted(&acme, "/v1/pay-runs", "run-a", body.clone(), 201).await;
    let run_a = draft["pay_run_id"].as_str().unwrap().to_string();
    accepted(
        &acme,
        "/v1/payees/alice/adjustments",
        "two",
        json!({"amount": 500}),
        201,
    )
    .await;
    let (waiting, _) = accepted(&acme, "/v1/pay-runs", "run-b", body.clone(), 201).await;
    assert_eq!(waiting["waiting"][0]["payee_id"], "alice", "{waiting}");
    let (canceled, seq) = accepted(
        &acme,
        &format!("/v1/pay-runs/{run_a}/cancel"),
        "run-a-cancel",
        json!({}),
        200,
    )
    .await;
    assert_eq!(
        (&canceled["status"], &canceled["payees"]),
        (&json!("canceled"), &json!([]))
    );
    server.catch_up().await;
    let payee = acme.read("/v1/payees/alice", seq).await;
    assert_eq!(payee["totals"]["payable"], 1_500, "{payee}");
    let read = acme.read(&format!("/v1/pay-runs/{run_a}"), seq).await;
    assert_eq!(read["status"], "canceled", "{read}");
    for (path, key) in [("cancel", "run-a-cancel-2"), ("approve", "run-a-approve")] {
        acme.post(&format!("/v1/pay-runs/{run_a}/{path}"), key, json!({}))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "pay_run_canceled");
    }
    let (run_c, _) = accepted(&acme, "/v1/pay-runs", "run-c", body, 201).await;
    assert_eq!(run_c["payees"][0]["gross"], 1_500, "{run_c}");
    let id = run_c["pay_run_id"].as_str().unwrap().to_string();
    accepted(
        &acme,
        &format!("/v1/pay-runs/{id}/approve"),
        "run-c-approve",
        json!({}),
        200,
    )
    .await;
    accepted(
        &acme,
        &format!("/v1/pay-runs/{id}/pay"),
        "run-c-pay",
        json!({}),
        200,
    )
    .await;
    acme.post(
        &format!("/v1/pay-runs/{id}/cancel"),
        "run-c-cancel",
        json!({}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "pay_run_paid");
    server.stop().await;
}
