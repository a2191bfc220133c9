//! Payments over HTTP, end to end: the life of a card payment with every
//! account asserted to the unit and the trial balance zero after every
//! step; a settlement file's breaks (JSON and CSV); cash and gift-card
//! tenders, with concurrent redemptions of one card; an authorization
//! expired by the scheduler's tick; the reads, and another tenant's ids.

use super::*;

/// `account`'s [debits, credits, debits_pending, credits_pending] as of
/// `seq`, as numbers.
pub(super) async fn sums(client: &Client, seq: i64, account: &str) -> [i64; 4] {
    let balances = client
        .read(&format!("/v1/journal/balances?as_of={seq}"), seq)
        .await;
    let found = balances["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["account"] == account);
    let Some(row) = found else {
        return [0; 4];
    };
    ["debits", "credits", "debits_pending", "credits_pending"]
        .map(|field| row[field].as_str().unwrap().parse().unwrap())
}

/// Every payments account the card's life touches, in order.
const ACCOUNTS: [&str; 10] = [
    "receivable:stripe",
    "revenue",
    "refunds",
    "funds_in_dispute",
    "dispute_fees",
    "dispute_losses",
    "processor_balance:stripe",
    "processing_fees",
    "settlement_suspense",
    "bank:main",
];

/// Asserts each of [`ACCOUNTS`] as of `seq` is `expected` (same order),
/// and the trial balance zero.
async fn assert_books(server: &TestServer, client: &Client, seq: i64, expected: [[i64; 4]; 10]) {
    server.catch_up().await;
    for (account, expected) in ACCOUNTS.iter().zip(expected) {
        assert_eq!(
            sums(client, seq, account).await,
            expected,
            "{account} at {seq}"
        );
    }
    assert_trial_balance_is_zero(client, seq).await;
}

/// Posts and asserts the status, returning the body and tenant_seq.
pub(super) async fn accepted(
    client: &Client,
    path: &str,
    key: &str,
    body: Value,
    status: u16,
) -> (Value, i64) {
    let answer = client.post(path, key, body).await;
    assert_eq!(answer.status.as_u16(), status, "{path}: {}", answer.body);
    let seq = answer.body["tenant_seq"].as_i64().unwrap();
    (answer.body, seq)
}

#[tokio::test]
async fn the_life_of_a_card_payment_moves_every_account_to_the_unit() {
    // Proves: authorize 10000, capture 4000 then a final 5000 (1000
    // released), refund 1000, a dispute of 2000 with a 1500 fee lost, the
    // processor's batch settling both captures, the refund and the dispute
    // with fees, and a payout of its net: every account exact and the
    // trial balance zero after each step; the reads show the same. A sale
    // is attributed to a payee once the payee is created (unknown_payee
    // before).
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let early = acme
        .post(
            "/v1/payments",
            "pay-early",
            json!({"amount": 10_000, "currency": "USD", "attribution": {"payee": "alice"}}),
        )
        .await;
    let error = early.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unknown_payee");
    assert_eq!(error["details"], json!({"payee_id": "alice"}));
    let payee = acme
        .post(
            "/v1/payees",
            "alice",
            json!({"payee_id": "alice", "name": "Alice", "currency": "USD"}),
        )
        .await;
    assert_eq!(payee.status, StatusCode::CREATED, "{}", payee.body);
    let (created, _) = accepted(
        &acme,
        "/v1/payments",
        "pay",
        json!({"amount": 10_000, "currency": "USD", "capture": "manual", "customer": "c-1",
               "description": "Order 1", "attribution": {"payee": "alice"}}),
        201,
    )
    .await;
    assert_eq!(created["status"], "requires_tender");
    let payment = created["payment_id"].as_str().unwrap().to_string();
    let path = |tail: &str| format!("/v1/payments/{payment}{tail}");
    let (tender, seq) = accepted(
        &acme,
        &path("/tenders"),
        "tender",
        json!({"method": "card", "amount": 10_000, "processor": "stripe", "reference": "ch_1"}),
        201,
    )
    .await;
    assert_eq!(
        (&tender["status"], &tender["payment_status"]),
        (&json!("authorized"), &json!("authorized"))
    );
    let tender_id = tender["tender_id"].as_str().unwrap().to_string();
    let zero = [0; 4];
    let mut books = [zero; 10];
    books[0] = [0, 0, 10_000, 0];
    books[1] = [0, 0, 0, 10_000];
    assert_books(&server, &acme, seq, books).await;

    let (first, seq) = accepted(
        &acme,
        &path("/captures"),
        "cap-1",
        json!({"tender_id": tender_id, "amount": 4_000, "reference": "cap_1"}),
        201,
    )
    .await;
    assert_eq!(first["status"], "partially_captured");
    books[0] = [4_000, 0, 6_000, 0];
    books[1] = [0, 4_000, 0, 6_000];
    assert_books(&server, &acme, seq, books).await;
    let (last, seq) = accepted(
        &acme,
        &path("/captures"),
        "cap-2",
        json!({"tender_id": tender_id, "amount": 5_000, "reference": "cap_2", "final": true}),
        201,
    )
    .await;
    assert_eq!(
        (last["released"].as_i64(), &last["status"]),
        (Some(1_000), &json!("captured"))
    );
    books[0] = [9_000, 0, 0, 0];
    books[1] = [0, 9_000, 0, 0];
    assert_books(&server, &acme, seq, books).await;

    let (refund, seq) = accepted(
        &acme,
        &path("/refunds"),
        "refund",
        json!({"amount": 1_000, "reference": "re_1", "reason": "damaged"}),
        201,
    )
    .await;
    assert_eq!(
        (&refund["refund_status"], &refund["status"]),
        (&json!("pending"), &json!("partially_refunded"))
    );
    books[0] = [9_000, 1_000, 0, 0];
    books[2] = [1_000, 0, 0, 0];
    assert_books(&server, &acme, seq, books).await;

    let capture_id = first["capture_id"].as_str().unwrap();
    let (dispute, seq) = accepted(
        &acme,
        &path("/disputes"),
        "dispute",
        json!({"capture_id": capture_id, "amount": 2_000, "fee": 1_500, "reference": "dp_1",
               "reason": "fraudulent"}),
        201,
    )
    .await;
    assert_eq!(dispute["dispute_status"], "needs_response");
    let dispute_id = dispute["dispute_id"].as_str().unwrap().to_string();
    books[0] = [9_000, 4_500, 0, 0];
    books[3] = [2_000, 0, 0, 0];
    books[4] = [1_500, 0, 0, 0];
    assert_books(&server, &acme, seq, books).await;
    let (reviewed, _) = accepted(
        &acme,
        &format!("/v1/disputes/{dispute_id}/evidence"),
        "evidence",
        json!({}),
        200,
    )
    .await;
    assert_eq!(reviewed["dispute_status"], "under_review");
    let (lost, seq) = accepted(
        &acme,
        &format!("/v1/disputes/{dispute_id}/close"),
        "lost",
        json!({"outcome": "lost"}),
        200,
    )
    .await;
    assert_eq!(lost["dispute_status"], "lost");
    books[3] = [2_000, 2_000, 0, 0];
    books[5] = [2_000, 0, 0, 0];
    assert_books(&server, &acme, seq, books).await;
    acme.post(
        &format!("/v1/disputes/{dispute_id}/close"),
        "won",
        json!({"outcome": "won"}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "dispute_closed");

    let (settled, seq) = accepted(
        &acme,
        "/v1/settlements",
        "batch-1",
        json!({"processor": "stripe", "batch_id": "b_1", "settled_at": "2026-12-03T00:00:00Z",
               "currency": "USD", "lines": [
                   {"type": "capture", "reference": "cap_1", "gross": 4_000, "fee": 120, "net": 3_880},
                   {"type": "capture", "reference": "cap_2", "gross": 5_000, "fee": 150, "net": 4_850},
                   {"type": "refund", "reference": "re_1", "gross": -1_000, "fee": 0, "net": -1_000},
                   {"type": "dispute", "reference": "dp_1", "gross": -2_000, "fee": 1_500, "net": -3_500}],
               "total": {"gross": 6_000, "fee": 1_770, "net": 4_230}}),
        201,
    )
    .await;
    assert_eq!(
        (
            &settled["settlement_id"],
            &settled["matched"],
            &settled["breaks"]
        ),
        (&json!("stripe:b_1"), &json!(4), &json!([]))
    );
    books[0] = [9_000, 9_000, 0, 0];
    books[6] = [4_230, 0, 0, 0];
    books[7] = [270, 0, 0, 0];
    assert_books(&server, &acme, seq, books).await;

    let (payout, seq) = accepted(
        &acme,
        "/v1/payouts",
        "payout",
        json!({"processor": "stripe", "currency": "USD", "amount": 4_230, "bank_account": "main",
               "settlements": ["b_1"]}),
        201,
    )
    .await;
    assert_eq!(payout["status"], "pending");
    books[6] = [4_230, 4_230, 0, 0];
    books[9] = [4_230, 0, 0, 0];
    assert_books(&server, &acme, seq, books).await;
    let payout_id = payout["payout_id"].as_str().unwrap().to_string();
    let (paid, seq) = accepted(
        &acme,
        &format!("/v1/payouts/{payout_id}/paid"),
        "paid",
        json!({}),
        200,
    )
    .await;
    assert_eq!(paid["status"], "paid");
    assert_books(&server, &acme, seq, books).await;

    the_reads_show_the_same(&server, &acme, &payment, &dispute_id, &payout_id, seq).await;
}

/// The reads of the card payment's life, and another tenant's 404s.
async fn the_reads_show_the_same(
    server: &TestServer,
    acme: &Client,
    payment: &str,
    dispute_id: &str,
    payout_id: &str,
    seq: i64,
) {
    let read = acme.read(&format!("/v1/payments/{payment}"), seq).await;
    assert_eq!(read["status"], "partially_refunded");
    assert_eq!(
        read["amounts"],
        json!({"authorized": 10_000, "captured": 9_000, "released": 1_000, "refunded": 1_000,
               "in_dispute": 0, "dispute_losses": 2_000, "refundable": 6_000})
    );
    assert_eq!(
        (&read["currency"], &read["payee"]),
        (&json!("USD"), &json!("alice"))
    );
    let captures = read["tenders"][0]["captures"].as_array().unwrap();
    assert_eq!(
        captures
            .iter()
            .map(|capture| capture["settled_in"].clone())
            .collect::<Vec<_>>(),
        vec![json!("stripe:b_1"), json!("stripe:b_1")]
    );
    assert_eq!(read["refunds"][0]["state"], "settled");
    let dispute = acme.read(&format!("/v1/disputes/{dispute_id}"), seq).await;
    assert_eq!(
        (&dispute["state"], &dispute["amount"]),
        (&json!("lost"), &json!(2_000))
    );
    let listed = acme
        .read("/v1/payments?status=partially_refunded", seq)
        .await;
    assert_eq!(listed["payments"].as_array().unwrap().len(), 1);
    let none = acme.read("/v1/payments?status=canceled", seq).await;
    assert_eq!(none["payments"], json!([]));
    let batch = acme.read("/v1/settlements/stripe:b_1", seq).await;
    assert_eq!(
        (&batch["status"], &batch["matched"], &batch["totals"]),
        (
            &json!("paid_out"),
            &json!(4),
            &json!({"gross": 6_000, "fee": 1_770, "net": 4_230})
        )
    );
    assert_eq!(batch["lines"][3]["item"]["item"], "dispute");
    let payout = acme.read(&format!("/v1/payouts/{payout_id}"), seq).await;
    assert_eq!(
        (&payout["status"], &payout["amount"]),
        (&json!("paid"), &json!(4_230))
    );
    // Each batch in sum: its lines are the batch's own read.
    let mut batch = payout["batches"][0].clone();
    batch.as_object_mut().unwrap().remove("settled_at");
    assert_eq!(
        batch,
        json!({"settlement_id": "stripe:b_1", "batch_id": "b_1", "status": "paid_out",
               "lines": 4, "matched": 4, "breaks": 0,
               "totals": {"gross": 6_000, "fee": 1_770, "net": 4_230}})
    );

    let other = server.tenant("other").await;
    for path in [
        format!("/v1/payments/{payment}"),
        format!("/v1/disputes/{dispute_id}"),
        "/v1/settlements/stripe:b_1".to_string(),
        format!("/v1/payouts/{payout_id}"),
    ] {
        other
            .get(&path)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    other
        .post(
            &format!("/v1/payments/{payment}/refunds"),
            "steal",
            json!({"amount": 1}),
        )
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

/// A payment of `amount` USD (`capture` automatic or manual) tendered by
/// card through stripe under `reference`; returns its id and the tender.
async fn card_payment(
    client: &Client,
    key: &str,
    amount: i64,
    capture: &str,
    reference: &str,
) -> (String, Value) {
    let (created, _) = accepted(
        client,
        "/v1/payments",
        &format!("{key}-pay"),
        json!({"amount": amount, "currency": "USD", "capture": capture}),
        201,
    )
    .await;
    let payment = created["payment_id"].as_str().unwrap().to_string();
    let (tender, _) = accepted(
        client,
        &format!("/v1/payments/{payment}/tenders"),
        &format!("{key}-tender"),
        json!({"method": "card", "amount": amount, "processor": "stripe", "reference": reference}),
        201,
    )
    .await;
    (payment, tender)
}

/// A payment of `amount` USD tendered in cash (captured as it is taken):
/// its id, the tender's answer and its tenant_seq.
async fn cash_payment(client: &Client, key: &str, amount: i64) -> (String, Value, i64) {
    let (created, _) = accepted(
        client,
        "/v1/payments",
        &format!("{key}-pay"),
        json!({"amount": amount, "currency": "USD"}),
        201,
    )
    .await;
    let payment = created["payment_id"].as_str().unwrap().to_string();
    let (tender, seq) = accepted(
        client,
        &format!("/v1/payments/{payment}/tenders"),
        &format!("{key}-tender"),
        json!({"method": "cash", "amount": amount}),
        201,
    )
    .await;
    (payment, tender, seq)
}

/// Stripe's settlement batch `batch_id` of `lines` in USD, settled on
/// 2026-12-03.
fn batch(batch_id: &str, lines: Value) -> Value {
    json!({"processor": "stripe", "batch_id": batch_id, "settled_at": "2026-12-03T00:00:00Z",
           "currency": "USD", "lines": lines})
}

fn line(kind: &str, reference: &str, gross: i64, fee: i64) -> Value {
    json!({"type": kind, "reference": reference, "gross": gross, "fee": fee, "net": gross - fee})
}

#[tokio::test]
async fn a_settlement_file_gives_exactly_its_breaks_and_each_resolves_once() {
    // Proves: a batch with one unknown reference, one amount mismatch and
    // one duplicate gives exactly those three breaks (the fourth line
    // matches); the breaks list shows them open; a break resolves once; the
    // same batch again is settlement_already_imported; a CSV batch with a
    // processor fee imports the same way; a line that does not add up, or
    // lines that do not add up to the stated total, are 400 naming them and
    // change nothing.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let (_, tender_a) = card_payment(&acme, "a", 5_000, "automatic", "ch_a").await;
    assert_eq!(tender_a["status"], "captured");
    card_payment(&acme, "b", 3_000, "automatic", "ch_b").await;
    let lines = json!([
        line("capture", "ch_a", 5_000, 150),
        line("capture", "ch_b", 2_900, 90),
        line("capture", "ch_zzz", 1_000, 30),
        line("capture", "ch_a", 5_000, 150),
    ]);
    let (imported, seq) = accepted(
        &acme,
        "/v1/settlements",
        "b-2",
        batch("b_2", lines.clone()),
        201,
    )
    .await;
    assert_eq!(imported["matched"], 1);
    let breaks: Vec<(Value, Value, Value, Value)> = imported["breaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|found| {
            (
                found["class"].clone(),
                found["reference"].clone(),
                found["expected"].clone(),
                found["actual"].clone(),
            )
        })
        .collect();
    assert_eq!(
        breaks,
        vec![
            (
                json!("amount_mismatch"),
                json!("ch_b"),
                json!(3_000),
                json!(2_900)
            ),
            (
                json!("unknown_reference"),
                json!("ch_zzz"),
                Value::Null,
                json!(1_000)
            ),
            (
                json!("duplicate"),
                json!("ch_a"),
                json!(5_000),
                json!(5_000)
            ),
        ]
    );
    acme.post("/v1/settlements", "b-2-again", batch("b_2", lines))
        .await
        .assert_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "settlement_already_imported",
        );
    server.catch_up().await;
    let open = acme.read("/v1/breaks?status=open", seq).await;
    assert_eq!(open["breaks"].as_array().unwrap().len(), 3, "{open}");
    // The mismatch left 100 in suspense (the ledger's 3000 less the
    // processor's 2900), the unknown and the duplicate their gross: one
    // entry nets them to a credit of 5900.
    assert_eq!(
        sums(&acme, seq, "settlement_suspense").await,
        [0, 5_900, 0, 0]
    );
    let mismatch = imported["breaks"][0]["break_id"].as_str().unwrap();
    let (resolved, seq) = accepted(
        &acme,
        &format!("/v1/breaks/{mismatch}/resolve"),
        "resolve",
        json!({"resolution": "write_off", "reason": "the processor's fee"}),
        200,
    )
    .await;
    assert_eq!(resolved["amount"], 100);
    acme.post(
        &format!("/v1/breaks/{mismatch}/resolve"),
        "resolve-again",
        json!({"resolution": "adjust", "reason": "again"}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "break_already_resolved");
    server.catch_up().await;
    assert_eq!(
        sums(&acme, seq, "settlement_suspense").await,
        [0, 6_000, 0, 0]
    );
    assert_eq!(
        sums(&acme, seq, "settlement_write_offs").await,
        [100, 0, 0, 0]
    );
    let open = acme.read("/v1/breaks?status=open", seq).await;
    assert_eq!(open["breaks"].as_array().unwrap().len(), 2);
    let closed = acme.read("/v1/breaks?status=resolved", seq).await;
    assert_eq!(
        (
            &closed["breaks"][0]["resolution"],
            &closed["breaks"][0]["line"]
        ),
        (&json!("write_off"), &json!(2))
    );
    assert_trial_balance_is_zero(&acme, seq).await;
    csv_batches(&server, &acme).await;
}

async fn post_csv(client: &Client, query: &str, key: &str, body: &str) -> (StatusCode, Value) {
    let response = support::app::http_client()
        .post(format!("{}/v1/settlements?{query}", client.base))
        .bearer_auth(&client.api_key)
        .header("idempotency-key", key)
        .header("content-type", "text/csv")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// CSV batches: one that imports (a capture and a processor fee), and
/// files refused whole, naming the line.
async fn csv_batches(server: &TestServer, acme: &Client) {
    card_payment(acme, "c", 2_000, "automatic", "ch_c").await;
    let query = "processor=stripe&batch_id=b_3&settled_at=2026-12-03T00:00:00Z&currency=USD";
    let file = "type,reference,gross,fee,net\ncapture,ch_c,2000,60,1940\nfee,monthly,0,25,-25\ntotal,,2000,85,1915\n";
    let (status, body) = post_csv(acme, query, "b-3", file).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((&body["matched"], &body["breaks"]), (&json!(1), &json!([])));
    let seq = body["tenant_seq"].as_i64().unwrap();
    server.catch_up().await;
    let batch = acme.read("/v1/settlements/stripe:b_3", seq).await;
    assert_eq!(
        (&batch["totals"], &batch["lines"][1]["outcome"]),
        (
            &json!({"gross": 2_000, "fee": 85, "net": 1_915}),
            &json!("processor")
        )
    );

    let query = "processor=stripe&batch_id=b_4&settled_at=2026-12-03T00:00:00Z&currency=USD";
    let (status, body) = post_csv(
        acme,
        query,
        "b-4",
        "type,reference,gross,fee,net\ncapture,ch_c,2000,60,1940\ncapture,ch_x,100,3,90\n",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "settlement_line_does_not_add_up");
    // The file's row: the header is row 1.
    assert_eq!(body["error"]["details"]["line"], 3);
    let (status, body) = post_csv(
        acme,
        query,
        "b-4b",
        "type,reference,gross,fee,net\ncapture,ch_c,2000,60,1940\ntotal,,2000,60,1900\n",
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("settlement_total_mismatch"))
    );
    let (status, body) = post_csv(acme, query, "b-4c", "type;reference\n").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_settlement_file"))
    );
    let (status, body) = post_csv(
        acme,
        "processor=stripe",
        "b-4d",
        "type,reference,gross,fee,net\ncapture,ch_c,1,0,1\n",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    server.catch_up().await;
    acme.get("/v1/settlements/stripe:b_4")
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn cash_and_gift_cards_are_taken_at_once_and_a_card_never_goes_below_zero() {
    // Proves: a cash tender is captured as it is taken (Dr cash); a gift
    // card issued with 5000 and loaded with 1000 holds 6000; 32 concurrent
    // redemptions of 300 take exactly 20 and refuse 12 with
    // gift_card_insufficient, leaving it at zero; a gift card tender naming
    // a processor is 400.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let (_, cash, seq) = cash_payment(&acme, "cash", 2_000).await;
    assert_eq!(
        (&cash["status"], &cash["payment_status"]),
        (&json!("captured"), &json!("captured"))
    );
    server.catch_up().await;
    assert_eq!(sums(&acme, seq, "cash").await, [2_000, 0, 0, 0]);

    let (issued, _) = accepted(
        &acme,
        "/v1/gift-cards",
        "sell",
        json!({"code": "GC-1", "currency": "USD", "amount": 5_000}),
        201,
    )
    .await;
    assert_eq!(issued["balance"], 5_000);
    let (loaded, seq) = accepted(
        &acme,
        "/v1/gift-cards/GC-1/load",
        "load",
        json!({"amount": 1_000}),
        200,
    )
    .await;
    assert_eq!(loaded["balance"], 6_000);
    server.catch_up().await;
    let card = acme.read("/v1/gift-cards/GC-1", seq).await;
    assert_eq!(
        (&card["balance"], &card["loaded"]),
        (&json!("6000"), &json!(6_000))
    );

    let mut payments = Vec::new();
    for n in 0..32 {
        let (created, _) = accepted(
            &acme,
            "/v1/payments",
            &format!("gift-{n}"),
            json!({"amount": 300, "currency": "USD"}),
            201,
        )
        .await;
        payments.push(created["payment_id"].as_str().unwrap().to_string());
    }
    let mut redemptions = tokio::task::JoinSet::new();
    for (n, payment) in payments.iter().enumerate() {
        let (acme, payment) = (acme.clone(), payment.clone());
        redemptions.spawn(async move {
            acme.post(
                &format!("/v1/payments/{payment}/tenders"),
                &format!("redeem-{n}"),
                json!({"method": "gift_card", "amount": 300, "gift_card": "GC-1"}),
            )
            .await
        });
    }
    let answers = redemptions.join_all().await;
    let taken = answers
        .iter()
        .filter(|answer| answer.status == StatusCode::CREATED)
        .count();
    let refused = answers
        .iter()
        .filter(|answer| answer.body["error"]["code"] == "gift_card_insufficient")
        .count();
    assert_eq!((taken, refused), (20, 12));
    let seq = head_seq(&server, &acme).await;
    server.catch_up().await;
    let card = acme.read("/v1/gift-cards/GC-1", seq).await;
    assert_eq!(card["balance"], "0");
    assert_trial_balance_is_zero(&acme, seq).await;
    acme.post(
        &format!("/v1/payments/{}/tenders", payments[0]),
        "mixed",
        json!({"method": "gift_card", "amount": 1, "gift_card": "GC-1", "processor": "stripe"}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn an_authorization_expires_on_the_tick_and_a_retry_gets_its_first_answer() {
    // Proves: an authorization not captured by its expiry is voided by the
    // scheduler's tick (the payment expired, the reservation released); a
    // refused refund retried under its key after the payment moved (a new
    // tender through another processor) answers its first refusal, not
    // idempotency_key_reused.
    let clock = TestClock::at(Utc::now());
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    let (created, _) = accepted(
        &acme,
        "/v1/payments",
        "pay",
        json!({"amount": 1_000, "currency": "USD", "capture": "manual", "authorization_ttl_seconds": 60}),
        201,
    )
    .await;
    let payment = created["payment_id"].as_str().unwrap().to_string();
    accepted(
        &acme,
        &format!("/v1/payments/{payment}/tenders"),
        "tender",
        json!({"method": "card", "amount": 1_000, "processor": "stripe", "reference": "ch_e"}),
        201,
    )
    .await;
    server.catch_up().await;
    clock.set(clock.now() + Duration::seconds(61));
    let ticker = server.ticker(clock.clock());
    ticker.tick().await.unwrap();
    let seq = head_seq(&server, &acme).await;
    server.catch_up().await;
    let read = acme.read(&format!("/v1/payments/{payment}"), seq).await;
    assert_eq!(
        (&read["status"], &read["tenders"][0]["state"]),
        (&json!("expired"), &json!("expired"))
    );
    assert_eq!(sums(&acme, seq, "receivable:stripe").await, [0, 0, 0, 0]);

    let (created, _) = accepted(
        &acme,
        "/v1/payments",
        "pay-2",
        json!({"amount": 1_000, "currency": "USD"}),
        201,
    )
    .await;
    let payment = created["payment_id"].as_str().unwrap().to_string();
    let refund = json!({"amount": 100});
    let first = acme
        .post(
            &format!("/v1/payments/{payment}/refunds"),
            "refund",
            refund.clone(),
        )
        .await;
    first.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "refund_exceeds_captured");
    accepted(
        &acme,
        &format!("/v1/payments/{payment}/tenders"),
        "tender-2",
        json!({"method": "card", "amount": 1_000, "processor": "adyen", "reference": "psp_1"}),
        201,
    )
    .await;
    let again = acme
        .post(&format!("/v1/payments/{payment}/refunds"), "refund", refund)
        .await;
    assert_eq!(
        (again.status, again.replayed, &again.body),
        (first.status, true, &first.body)
    );
}

#[tokio::test]
async fn a_fee_rebate_and_a_dispute_fee_other_than_booked_settle_the_receivable_exactly() {
    // Proves: a refund line with a negative fee (the processor's rebate)
    // credits processing_fees, and a dispute line whose fee (1000) is less
    // than the fee booked when the dispute opened (1500) gives the booked
    // fee back to the receivable and the 500 back to dispute_fees: the
    // processor's receivable ends at exactly zero, and the trial balance
    // is zero.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let (refunded, _) = card_payment(&acme, "r", 5_000, "automatic", "ch_r").await;
    let refunded = refunded.to_string();
    accepted(
        &acme,
        &format!("/v1/payments/{refunded}/refunds"),
        "refund",
        json!({"amount": 1_000, "reference": "re_r"}),
        201,
    )
    .await;
    let (disputed, tender) = card_payment(&acme, "d", 3_000, "automatic", "ch_d").await;
    let (dispute, _) = accepted(
        &acme,
        &format!("/v1/payments/{disputed}/disputes"),
        "dispute",
        json!({"capture_id": tender["capture_id"], "amount": 3_000, "fee": 1_500, "reference": "dp_d"}),
        201,
    )
    .await;
    let dispute = dispute["dispute_id"].as_str().unwrap();
    accepted(
        &acme,
        &format!("/v1/disputes/{dispute}/close"),
        "lost",
        json!({"outcome": "lost"}),
        200,
    )
    .await;
    let (settled, seq) = accepted(
        &acme,
        "/v1/settlements",
        "batch",
        json!({"processor": "stripe", "batch_id": "b_9", "settled_at": "2026-12-03T00:00:00Z",
               "currency": "USD", "lines": [
                   line("capture", "ch_r", 5_000, 150),
                   line("refund", "re_r", -1_000, -30),
                   line("capture", "ch_d", 3_000, 90),
                   line("dispute", "dp_d", -3_000, 1_000)]}),
        201,
    )
    .await;
    assert_eq!(
        (&settled["matched"], &settled["breaks"]),
        (&json!(4), &json!([]))
    );
    server.catch_up().await;
    let [debits, credits, _, _] = sums(&acme, seq, "receivable:stripe").await;
    assert_eq!(debits, credits, "the receivable is settled exactly");
    assert_eq!(sums(&acme, seq, "processing_fees").await, [210, 0, 0, 0]);
    assert_eq!(sums(&acme, seq, "dispute_fees").await, [1_500, 500, 0, 0]);
    assert_eq!(
        sums(&acme, seq, "processor_balance:stripe").await,
        [4_850 - 970 + 2_910 - 4_000, 0, 0, 0]
    );
    assert_trial_balance_is_zero(&acme, seq).await;
}

#[tokio::test]
async fn a_first_capture_without_a_reference_settles_by_its_charge() {
    // Proves: a manual capture sent without a reference is known by the
    // charge's (the processor's capture line names it), so the batch
    // matches it; a second capture of the tender without a reference is
    // refused (422 capture_reference_required: its line could never
    // match), as is one naming another payment's charge (422
    // reference_taken); a capture's own reference still wins; a second
    // tender of a payment cannot claim its first tender's charge.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let (payment, tender) = card_payment(&acme, "m", 5_000, "manual", "ch_m").await;
    let tender_id = tender["tender_id"].as_str().unwrap();
    let path = format!("/v1/payments/{payment}/captures");
    let capture = |key: &'static str, body: Value| {
        let (acme, path) = (&acme, path.clone());
        async move { accepted(acme, &path, key, body, 201).await }
    };
    // The processor references a capture's answer claims.
    let claimed = |answer: &Value| -> Vec<String> {
        answer["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["aggregate_type"] == "processor_reference")
            .map(|event| event["aggregate_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (first, _) = capture("c1", json!({"tender_id": tender_id, "amount": 3_000})).await;
    assert_eq!(claimed(&first), ["capture/stripe/ch_m"], "{first}");
    acme.post(
        &path,
        "c2",
        json!({"tender_id": tender_id, "amount": 1_000}),
    )
    .await
    .assert_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "capture_reference_required",
    );
    let (other, _) = card_payment(&acme, "other", 2_000, "manual", "ch_other").await;
    let details = acme
        .post(
            &path,
            "c2-other",
            json!({"tender_id": tender_id, "amount": 1_000, "reference": "ch_other"}),
        )
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "reference_taken")["details"]
        .clone();
    assert_eq!(details["payment_id"], json!(other), "{details}");
    let (own, _) = capture(
        "c3",
        json!({"tender_id": tender_id, "amount": 1_000, "reference": "cap_own", "final": true}),
    )
    .await;
    assert_eq!(claimed(&own), ["capture/stripe/cap_own"], "{own}");
    let batch = json!({"processor": "stripe", "batch_id": "b_m", "settled_at": "2026-12-03T00:00:00Z",
                       "currency": "USD",
                       "lines": [line("capture", "ch_m", 3_000, 90), line("capture", "cap_own", 1_000, 30)]});
    let (imported, _) = accepted(&acme, "/v1/settlements", "b-m", batch, 201).await;
    assert_eq!(imported["matched"], 2, "{imported}");
    assert_eq!(imported["breaks"], json!([]), "{imported}");
    // Two tenders of one payment never share a charge reference, nor take
    // another payment's.
    card_payment(&acme, "split", 2_000, "manual", "ch_split").await;
    let (created, _) = accepted(
        &acme,
        "/v1/payments",
        "two-pay",
        json!({"amount": 2_000, "currency": "USD", "capture": "manual"}),
        201,
    )
    .await;
    let tenders = format!(
        "/v1/payments/{}/tenders",
        created["payment_id"].as_str().unwrap()
    );
    let tender = |reference: &str| json!({"method": "card", "amount": 1_000, "processor": "stripe", "reference": reference});
    accepted(&acme, &tenders, "two-1", tender("ch_two"), 201).await;
    for (key, reference) in [("two-2", "ch_two"), ("two-3", "ch_split")] {
        acme.post(&tenders, key, tender(reference))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "reference_taken");
    }
}

#[tokio::test]
async fn a_break_resolves_by_matching_once_its_item_expects_the_line() {
    // Proves: a dispute line imported before the dispute was opened, and a
    // reversal line imported before the dispute was won, are breaks; a
    // match is refused while the item does not expect the line (422
    // break_not_matched, naming both amounts), and settles the item once
    // it does (a write-off or adjustment then refused: break_matchable):
    // what the break suspended goes to the receivable (the
    // dispute's booked fee given back to it, the processor's fee moved
    // from processing_fees to dispute_fees as a matched line's is), so the
    // receivable and the suspense end at exactly zero, and nothing is
    // booked to revenue twice.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let (payment, tender) = card_payment(&acme, "w", 10_000, "automatic", "ch_w").await;
    let lines = json!([
        line("capture", "ch_w", 10_000, 290),
        line("dispute", "dp_w", -3_000, 1_000)
    ]);
    let (early, _) = accepted(&acme, "/v1/settlements", "b-w1", batch("b_w1", lines), 201).await;
    assert_eq!(early["breaks"][0]["class"], "unknown_reference", "{early}");
    let resolve = |break_id: &Value| format!("/v1/breaks/{}/resolve", break_id.as_str().unwrap());
    let matching = json!({"resolution": "match", "reason": "the dispute came later"});
    let dispute_break = resolve(&early["breaks"][0]["break_id"]);
    let refused = acme.post(&dispute_break, "m-1", matching.clone()).await;
    let details = refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "break_not_matched")
        ["details"]
        .clone();
    assert_eq!(details, json!({"expected": null, "actual": -3_000}));
    let (dispute, _) = accepted(
        &acme,
        &format!("/v1/payments/{payment}/disputes"),
        "dispute",
        json!({"capture_id": tender["capture_id"], "amount": 3_000, "fee": 1_500, "reference": "dp_w"}),
        201,
    )
    .await;
    let dispute = dispute["dispute_id"].as_str().unwrap().to_string();
    // A write-off and an adjustment of `path` each refused with `code`
    // and `details`.
    let neither = |path: String, code: &'static str, details: Value| {
        let acme = &acme;
        async move {
            for resolution in ["write_off", "adjust"] {
                let refused = acme
                    .post(
                        &path,
                        &format!("{resolution}-{code}"),
                        json!({"resolution": resolution, "reason": "cleanup"}),
                    )
                    .await;
                let error = refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, code);
                assert_eq!(error["details"], details);
            }
        }
    };
    // Now the dispute expects the line: writing it off or adjusting it
    // would leave the dispute unsettled, so only a match resolves it.
    neither(
        dispute_break.clone(),
        "break_matchable",
        json!({"expected": -3_000}),
    )
    .await;
    let (matched, _) = accepted(&acme, &dispute_break, "m-2", matching.clone(), 200).await;
    assert_eq!(
        (&matched["resolution"], &matched["amount"]),
        (&json!("match"), &json!(3_000))
    );
    acme.post(&dispute_break, "m-3", matching.clone())
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "break_already_resolved");

    let lines = json!([line("dispute_reversal", "dp_w", 3_000, 0)]);
    let (late, _) = accepted(&acme, "/v1/settlements", "b-w2", batch("b_w2", lines), 201).await;
    assert_eq!(
        (&late["breaks"][0]["class"], &late["breaks"][0]["expected"]),
        (&json!("amount_mismatch"), &json!(0))
    );
    let reversal_break = resolve(&late["breaks"][0]["break_id"]);
    let refused = acme.post(&reversal_break, "r-1", matching.clone()).await;
    let details = refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "break_not_matched")
        ["details"]
        .clone();
    assert_eq!(details, json!({"expected": 0, "actual": 3_000}));
    // While the dispute is open it may still be won, when the line
    // matches: not written off or adjusted before it closes.
    let awaits = json!({"dispute_id": dispute});
    neither(reversal_break.clone(), "break_awaits_dispute", awaits).await;
    for resolution in ["write_off", "adjust"] {
        // And never without a reason.
        let unexplained = acme
            .post(
                &reversal_break,
                &format!("r-{resolution}-bare"),
                json!({"resolution": resolution}),
            )
            .await;
        let error = unexplained.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(
            error["details"],
            json!({"field": "reason", "resolution": resolution})
        );
    }
    accepted(
        &acme,
        &format!("/v1/disputes/{dispute}/close"),
        "won",
        json!({"outcome": "won"}),
        200,
    )
    .await;
    let (_, seq) = accepted(&acme, &reversal_break, "r-2", matching, 200).await;

    server.catch_up().await;
    for account in ["receivable:stripe", "settlement_suspense"] {
        let [debits, credits, _, _] = sums(&acme, seq, account).await;
        assert_eq!(debits, credits, "{account} is settled exactly");
    }
    assert_eq!(
        sums(&acme, seq, "processing_fees").await,
        [1_290, 1_000, 0, 0]
    );
    assert_eq!(sums(&acme, seq, "dispute_fees").await, [1_500, 500, 0, 0]);
    assert_eq!(sums(&acme, seq, "revenue").await, [0, 10_000, 0, 0]);
    let read = acme.read(&format!("/v1/payments/{payment}"), seq).await;
    assert_eq!(
        (
            &read["disputes"][0]["settled_in"],
            &read["disputes"][0]["reversal_settled_in"]
        ),
        (&json!("stripe:b_w1"), &json!("stripe:b_w2")),
        "{read}"
    );
    let resolved = acme.read("/v1/breaks?status=resolved", seq).await;
    let resolutions: Vec<&Value> = resolved["breaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|found| &found["resolution"])
        .collect();
    assert_eq!(resolutions, [&json!("match"), &json!("match")]);
    assert_trial_balance_is_zero(&acme, seq).await;
}

#[tokio::test]
async fn the_journals_own_routes_never_move_money_on_payments_accounts() {
    // Proves: an account payments own (a processor's receivable and
    // balance, a gift card, the funds in dispute, the settlement suspense)
    // is not the journal's to open or post to (422 account_code_reserved),
    // and a payment's entry is not the journal's to reverse (422
    // entry_recorded_by_domain, from the route whatever its rules); an
    // account payments post to (revenue, a bank account) opens through the
    // journal only as payments open it (422 account_spec_reserved, since
    // the fourth rules); the payment's own refund still goes through.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let (payment, tender) = card_payment(&acme, "sale", 10_000, "automatic", "ch_1").await;
    // Captured as it was taken: its entry shares the tender's id.
    let entry = tender["tender_id"].as_str().unwrap();
    acme.post(
        &format!("/v1/journal/entries/{entry}/reverse"),
        "reverse-capture",
        json!({}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "entry_recorded_by_domain");
    let lines = json!({"lines": [
        {"account": "revenue", "asset": "USD/2", "side": "debit", "amount": 100},
        {"account": "receivable:stripe", "asset": "USD/2", "side": "credit", "amount": 100},
    ]});
    acme.post("/v1/journal/entries", "post-receivable", lines)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_code_reserved");
    for code in [
        "processor_balance:stripe",
        "gift_cards:GC-9",
        "funds_in_dispute",
        "settlement_suspense",
    ] {
        acme.post(
            "/v1/journal/accounts",
            &format!("open-{code}"),
            json!({"code": code, "type": "asset", "flags": {}}),
        )
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_code_reserved");
    }
    let hold =
        json!({"debit": "receivable:stripe", "credit": "revenue", "asset": "USD/2", "amount": 100});
    acme.post("/v1/journal/holds", "hold", hold)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_code_reserved");
    // A hold the second rules let the journal place there is voided, never
    // posted, under the third.
    let older = commands::CommandBus::start(
        server.db.store().clone(),
        commands::BusConfig {
            rules: aggregates::rules::Rules::SECOND,
            ..commands::BusConfig::default()
        },
        std::sync::Arc::new(commands::Metrics::default()),
    );
    // An account payments post to opens only as payments open it; the
    // second rules opened it otherwise.
    let open_as = |code: &str, kind: &str| json!({"code": code, "type": kind, "flags": {}});
    let refused = acme
        .post(
            "/v1/journal/accounts",
            "open-revenue-asset",
            open_as("revenue", "asset"),
        )
        .await;
    refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_spec_reserved");
    assert_eq!(
        refused.body["error"]["details"],
        json!({"code": "revenue", "type": "revenue",
               "flags": {"debits_must_not_exceed_credits": false}}),
        "{}",
        refused.body
    );
    acme.post(
        "/v1/journal/accounts",
        "open-bank-liability",
        open_as("bank:ops", "liability"),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_spec_reserved");
    for (key, code, kind) in [
        ("open-bank", "bank:ops", "asset"),
        ("open-fees", "processing_fees", "expense"),
    ] {
        let opened = acme
            .post("/v1/journal/accounts", key, open_as(code, kind))
            .await;
        assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    }
    let older_open = commands::requests::journal::OpenAccount {
        code: aggregates::journal::account::AccountCode::parse("dispute_losses").unwrap(),
        spec: aggregates::journal::account::AccountSpec::new(
            aggregates::journal::AccountType::Asset,
        ),
    };
    let hold_id = aggregates::HoldId::from_uuid(uuid::Uuid::from_u128(77));
    let placed = older
        .execute(
            acme.tenant_id.parse().unwrap(),
            eventstore::IdempotencyKey::parse("old-hold").unwrap(),
            commands::requests::journal::PlaceHold {
                hold_id,
                transfer: aggregates::journal::hold::PendingTransfer {
                    debit: aggregates::journal::account::AccountCode::parse("receivable:stripe")
                        .unwrap(),
                    credit: aggregates::journal::account::AccountCode::parse("revenue").unwrap(),
                    asset: aggregates::Asset::new("USD", 2).unwrap(),
                    amount: aggregates::Amount::new(100).unwrap(),
                },
                expires_at: None,
            },
        )
        .await
        .unwrap();
    assert!(placed.accepted(), "{}", placed.body);
    let opened = older
        .execute(
            acme.tenant_id.parse().unwrap(),
            eventstore::IdempotencyKey::parse("old-open").unwrap(),
            older_open,
        )
        .await
        .unwrap();
    assert!(opened.accepted(), "{}", opened.body);
    let path = |action: &str| format!("/v1/journal/holds/{hold_id}/{action}");
    acme.post(&path("post"), "post-old-hold", json!({"amount": 100}))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_code_reserved");
    let voided = acme.post(&path("void"), "void-old-hold", json!({})).await;
    assert_eq!(voided.status, StatusCode::OK, "{}", voided.body);
    // Resolved already: a late post says how, as on any account.
    acme.post(&path("post"), "post-voided-hold", json!({"amount": 100}))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "hold_already_voided");
    accepted(
        &acme,
        &format!("/v1/payments/{payment}/refunds"),
        "refund",
        json!({"amount": 1_000, "reference": "re_1"}),
        201,
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_dispute_reversals_break_waits_for_its_dispute_since_the_seventh_rules() {
    // Proves: a reversal line imported while its dispute is open is a
    // break (expected 0); the current rules refuse writing it off
    // (break_awaits_dispute); a server of the sixth rules takes the same
    // write-off, without a reason too (the reason is required since the
    // seventh).
    use aggregates::payments::reference::{reference_id, ReferenceKind};
    use aggregates::payments::settlement::Resolution;
    let server = TestServer::start_with(Options {
        rules: Some(aggregates::rules::Rules::SIXTH),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    let (payment, tender) = card_payment(&acme, "w", 10_000, "automatic", "ch_w").await;
    let lines = json!([line("capture", "ch_w", 10_000, 290)]);
    accepted(&acme, "/v1/settlements", "b-1", batch("b_1", lines), 201).await;
    let (dispute, _) = accepted(
        &acme,
        &format!("/v1/payments/{payment}/disputes"),
        "dispute",
        json!({"capture_id": tender["capture_id"], "amount": 3_000, "fee": 1_500, "reference": "dp_w"}),
        201,
    )
    .await;
    let dispute = dispute["dispute_id"].as_str().unwrap();
    let lines = json!([line("dispute_reversal", "dp_w", 3_000, 0)]);
    let (early, _) = accepted(&acme, "/v1/settlements", "b-2", batch("b_2", lines), 201).await;
    let break_id = early["breaks"][0]["break_id"].as_str().unwrap();
    let tenant_id = acme.tenant_id.parse().unwrap();
    let write_off = |key: &str| {
        let key = eventstore::IdempotencyKey::parse(key).unwrap();
        let request = commands::requests::payments::ResolveBreak {
            processor: "stripe".into(),
            batch_id: "b_2".into(),
            break_id: break_id.parse().unwrap(),
            resolution: Resolution::WriteOff,
            reason: Some("cleanup".into()),
            asset: aggregates::Asset::new("USD", 2).unwrap(),
            entry_id: aggregates::EntryId::from_uuid(commands::pipeline::derive_id(
                tenant_id, &key, "entry",
            )),
            claim: Some((
                reference_id(ReferenceKind::Dispute, "stripe", "dp_w"),
                Some(payment.parse().unwrap()),
            )),
        };
        (key, request)
    };
    let current = server.bus_under(
        aggregates::rules::Rules::CURRENT,
        commands::Clock::default(),
    );
    let (key, request) = write_off("w-7");
    let refused = current.execute(tenant_id, key, request).await.unwrap();
    assert_eq!(
        (
            &refused.body["error"]["code"],
            &refused.body["error"]["details"]
        ),
        (
            &json!("break_awaits_dispute"),
            &json!({"dispute_id": dispute})
        ),
        "{}",
        refused.body
    );
    let (taken, _) = accepted(
        &acme,
        &format!("/v1/breaks/{break_id}/resolve"),
        "w-6",
        json!({"resolution": "write_off"}),
        200,
    )
    .await;
    assert_eq!(taken["amount"], 3_000, "{taken}");
    server.stop().await;
}

#[tokio::test]
async fn a_cash_payments_entries_are_reversed_by_payments_only() {
    // Proves: a cash tender's capture (Dr cash / Cr revenue) and a cash
    // refund touch no account payments own alone, yet the journal does not
    // reverse them (422 entry_recorded_by_domain, naming the request kind
    // that recorded them); the refund's own failure reverses its entry.
    // Under rules 7 the decision refuses it too (its entry names the
    // request); under rules 6 the same request was taken.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let (payment, cash, _) = cash_payment(&acme, "cash", 2_000).await;
    let capture = cash["capture_id"].as_str().unwrap();
    let reverse = |entry: &str, key: &str| {
        let path = format!("/v1/journal/entries/{entry}/reverse");
        let key = key.to_string();
        let acme = &acme;
        async move { acme.post(&path, &key, json!({})).await }
    };
    // Refused over HTTP, naming the request kind that recorded it.
    let refused_as = |entry: String, key: &'static str, kind: &'static str| async move {
        let refused = reverse(&entry, key).await;
        let error =
            refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "entry_recorded_by_domain");
        assert_eq!(
            error["details"],
            json!({"entry_id": entry, "recorded_by": kind})
        );
    };
    refused_as(capture.to_string(), "reverse-capture", "add_tender").await;
    let (refund, _) = accepted(
        &acme,
        &format!("/v1/payments/{payment}/refunds"),
        "refund",
        json!({"amount": 500}),
        201,
    )
    .await;
    let refund = refund["refund_id"].as_str().unwrap();
    refused_as(refund.to_string(), "reverse-refund", "refund_payment").await;
    let (_, seq) = accepted(
        &acme,
        &format!("/v1/refunds/{refund}/fail"),
        "fail",
        json!({}),
        200,
    )
    .await;
    server.catch_up().await;
    assert_eq!(sums(&acme, seq, "cash").await, [2_500, 500, 0, 0]);
    assert_eq!(sums(&acme, seq, "revenue").await, [0, 2_000, 0, 0]);

    // The decision itself, past the route.
    let usd = aggregates::Asset::new("USD", 2).unwrap();
    let code = |code: &str| aggregates::journal::account::AccountCode::parse(code).unwrap();
    let tenant_id = acme.tenant_id.parse().unwrap();
    let key = |key: &str| eventstore::IdempotencyKey::parse(key).unwrap();
    // As the route builds it for `key`.
    let request = |key: &eventstore::IdempotencyKey| commands::requests::journal::ReverseEntry {
        entry_id: capture.parse().unwrap(),
        reversal_id: aggregates::EntryId::from_uuid(commands::pipeline::derive_id(
            tenant_id, key, "reversal",
        )),
        lines: commands::requests::books::transfer_lines(
            &code("cash"),
            &code("revenue"),
            &usd,
            aggregates::Amount::new(2_000).unwrap(),
        )
        .to_vec(),
        reference: None,
    };
    let rules = aggregates::rules::Rules::CURRENT;
    let current = server.bus_under(rules, commands::Clock::default());
    let refused = current
        .execute(tenant_id, key("direct-7"), request(&key("direct-7")))
        .await
        .unwrap();
    assert_eq!(
        (
            &refused.body["error"]["code"],
            &refused.body["error"]["details"]
        ),
        (
            &json!("entry_recorded_by_domain"),
            &json!({"entry_id": capture, "recorded_by": "add_tender"})
        ),
        "{}",
        refused.body
    );
    let sixth = aggregates::rules::Rules::SIXTH;
    let older = server.bus_under(sixth, commands::Clock::default());
    let taken = older
        .execute(tenant_id, key("direct-6"), request(&key("direct-6")))
        .await
        .unwrap();
    assert!(taken.accepted(), "{}", taken.body);
    // Its key retried over HTTP gets that answer, not the route's refusal.
    let retried = reverse(capture, "direct-6").await;
    assert_eq!(
        (retried.status, retried.replayed, &retried.body),
        (StatusCode::CREATED, true, &*taken.body),
    );
    server.stop().await;
}

/// `processor_balance:stripe`'s and `processor_payable:stripe`'s
/// [debits, credits] as of `seq`, nothing pending on either.
async fn balance_and_payable(client: &Client, seq: i64) -> [[i64; 2]; 2] {
    let mut found = [[0; 2]; 2];
    for (place, account) in ["processor_balance:stripe", "processor_payable:stripe"]
        .into_iter()
        .enumerate()
    {
        let [debits, credits, debits_pending, credits_pending] = sums(client, seq, account).await;
        assert_eq!((debits_pending, credits_pending), (0, 0), "{account}");
        found[place] = [debits, credits];
    }
    found
}

/// Pays out `batches` of stripe for `amount`, answering the status and body.
async fn pay_out(client: &Client, key: &str, amount: i64, batches: &[&str]) -> (StatusCode, Value) {
    let answer = client
        .post(
            "/v1/payouts",
            key,
            json!({"processor": "stripe", "currency": "USD", "amount": amount,
                   "bank_account": "main", "settlements": batches}),
        )
        .await;
    (answer.status, answer.body)
}

#[tokio::test]
async fn a_batch_taking_more_than_the_processor_holds_is_owed_and_paid_down_by_the_next() {
    // Proves: after a payout emptied the processor's balance, a batch of a
    // refund (negative net) is accepted and its shortfall owed to the
    // processor (processor_payable:stripe), to the unit; the next batch
    // pays that down before adding to the balance; a payout of that batch
    // alone is refused (credits_exceed_debits), with the batch that left
    // the shortfall it is exactly what the balance holds; a payout that
    // fails after another shortfall pays that down at once from the money
    // back; in part, a shortfall takes what the balance holds first and a
    // batch pays down what it can; the trial balance stays zero. The same
    // import under the third rules is refused as before
    // (credits_exceed_debits), and the journal cannot open the payable.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let (payment, _) = card_payment(&acme, "a", 1_000, "automatic", "ch_a").await;
    let settle = |key: &'static str, body: Value| {
        let acme = &acme;
        async move { accepted(acme, "/v1/settlements", key, body, 201).await }
    };
    settle(
        "b-1",
        batch("b_1", json!([line("capture", "ch_a", 1_000, 30)])),
    )
    .await;
    let (status, first_payout) = pay_out(&acme, "payout-1", 970, &["b_1"]).await;
    assert_eq!(status, StatusCode::CREATED, "{first_payout}");
    accepted(
        &acme,
        &format!("/v1/payments/{payment}/refunds"),
        "refund",
        json!({"amount": 400, "reference": "re_1"}),
        201,
    )
    .await;
    let refund_batch = batch("b_2", json!([line("refund", "re_1", -400, 0)]));
    // Under the third rules the processor's balance refuses the batch.
    let older = server.bus_under(aggregates::rules::Rules::THIRD, commands::Clock::default());
    let refused = older
        .execute(
            acme.tenant_id.parse().unwrap(),
            eventstore::IdempotencyKey::parse("b-2-old").unwrap(),
            commands::requests::payments::ImportSettlement {
                processor: "stripe".into(),
                batch_id: "b_2".into(),
                asset: aggregates::Asset::new("USD", 2).unwrap(),
                settled_at: "2026-12-03T00:00:00Z".parse().unwrap(),
                lines: serde_json::from_value(refund_batch["lines"].clone()).unwrap(),
                payments: vec![Some(payment.parse().unwrap())],
                entry_id: aggregates::EntryId::from_uuid(uuid::Uuid::from_u128(78)),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        refused.body["error"]["code"], "credits_exceed_debits",
        "{}",
        refused.body
    );
    let (imported, seq) = settle("b-2", refund_batch).await;
    assert_eq!(imported["matched"], 1);
    server.catch_up().await;
    assert_eq!(
        balance_and_payable(&acme, seq).await,
        [[970, 970], [0, 400]]
    );
    assert_eq!(
        sums(&acme, seq, "receivable:stripe").await,
        [1_400, 1_400, 0, 0]
    );
    assert_trial_balance_is_zero(&acme, seq).await;
    card_payment(&acme, "b", 500, "automatic", "ch_b").await;
    let (_, seq) = settle(
        "b-3",
        batch("b_3", json!([line("capture", "ch_b", 500, 15)])),
    )
    .await;
    server.catch_up().await;
    assert_eq!(
        balance_and_payable(&acme, seq).await,
        [[1_055, 970], [400, 400]]
    );
    let (status, body) = pay_out(&acme, "payout-3", 485, &["b_3"]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("credits_exceed_debits")
        ),
        "{body}"
    );
    let (status, body) = pay_out(&acme, "payout-2-3", 85, &["b_2", "b_3"]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let seq = body["tenant_seq"].as_i64().unwrap();
    server.catch_up().await;
    assert_eq!(
        balance_and_payable(&acme, seq).await,
        [[1_055, 1_055], [400, 400]]
    );
    assert_eq!(sums(&acme, seq, "bank:main").await, [1_055, 0, 0, 0]);
    assert_trial_balance_is_zero(&acme, seq).await;
    // Another shortfall, then the first payout fails: the money back at
    // the processor pays down what is owed at once.
    let (payment_b, _) = card_payment(&acme, "c", 300, "automatic", "ch_c").await;
    accepted(
        &acme,
        &format!("/v1/payments/{payment_b}/refunds"),
        "refund-c",
        json!({"amount": 300, "reference": "re_c"}),
        201,
    )
    .await;
    settle(
        "b-4",
        batch("b_4", json!([line("refund", "re_c", -300, 0)])),
    )
    .await;
    let payout_1 = first_payout["payout_id"].as_str().unwrap();
    let (_, seq) = accepted(
        &acme,
        &format!("/v1/payouts/{payout_1}/failed"),
        "payout-1-failed",
        json!({"reason": "account closed"}),
        200,
    )
    .await;
    server.catch_up().await;
    assert_eq!(
        balance_and_payable(&acme, seq).await,
        [[2_025, 1_355], [700, 700]]
    );
    assert_trial_balance_is_zero(&acme, seq).await;
    let (status, body) = pay_out(&acme, "payout-1-again", 970, &["b_1"]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("credits_exceed_debits")
        ),
        "{body}"
    );
    let (status, body) = pay_out(&acme, "payout-1-4", 670, &["b_1", "b_4"]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // In part: a shortfall beyond what the balance holds (300 of 400),
    // then a batch paying down part of what is owed (50 of 100).
    let (payment_d, _) = card_payment(&acme, "d", 700, "automatic", "ch_d").await;
    settle(
        "b-5",
        batch("b_5", json!([line("capture", "ch_d", 700, 400)])),
    )
    .await;
    accepted(
        &acme,
        &format!("/v1/payments/{payment_d}/refunds"),
        "refund-d",
        json!({"amount": 400, "reference": "re_d"}),
        201,
    )
    .await;
    let (_, seq) = settle(
        "b-6",
        batch("b_6", json!([line("refund", "re_d", -400, 0)])),
    )
    .await;
    server.catch_up().await;
    assert_eq!(
        balance_and_payable(&acme, seq).await,
        [[2_325, 2_325], [700, 800]]
    );
    card_payment(&acme, "e", 50, "automatic", "ch_e").await;
    let (_, seq) = settle("b-7", batch("b_7", json!([line("capture", "ch_e", 50, 0)]))).await;
    server.catch_up().await;
    assert_eq!(
        balance_and_payable(&acme, seq).await,
        [[2_325, 2_325], [750, 800]]
    );
    assert_trial_balance_is_zero(&acme, seq).await;
    acme.post(
        "/v1/journal/accounts",
        "open-payable",
        json!({"code": "processor_payable:adyen", "type": "liability", "flags": {}}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_code_reserved");
    server.stop().await;
}

/// A server deciding under `rules` whose tenant has a card payment of
/// 1000 settled in stripe's batch b_1 (a fee of 30) and paid out (970):
/// the server, the tenant and the payout's id.
async fn paid_out_batch(rules: aggregates::rules::Rules) -> (TestServer, Client, String) {
    let server = TestServer::start_with(Options {
        rules: Some(rules),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    card_payment(&acme, "a", 1_000, "automatic", "ch_a").await;
    accepted(
        &acme,
        "/v1/settlements",
        "b-1",
        json!({"processor": "stripe", "batch_id": "b_1", "settled_at": "2026-12-03T00:00:00Z",
               "currency": "USD", "lines": [line("capture", "ch_a", 1_000, 30)]}),
        201,
    )
    .await;
    let (status, payout) = pay_out(&acme, "payout", 970, &["b_1"]).await;
    assert_eq!(status, StatusCode::CREATED, "{payout}");
    let payout = payout["payout_id"].as_str().unwrap().to_string();
    (server, acme, payout)
}

#[tokio::test]
async fn a_failed_payout_under_older_rules_records_no_netting_entry() {
    // Proves: a server deciding under the third rules leaves out of a
    // failed payout's recorded request the netting entry the fourth rules
    // brought (so a build of the third rules reads the request back);
    // under the current rules the request names it.
    use aggregates::rules::Rules;
    for (rules, named) in [(Rules::THIRD, false), (Rules::CURRENT, true)] {
        let (server, acme, payout) = paid_out_batch(rules).await;
        let payout = payout.as_str();
        accepted(
            &acme,
            &format!("/v1/payouts/{payout}/failed"),
            "payout-failed",
            json!({"reason": "account closed"}),
            200,
        )
        .await;
        let (metadata,): (Value,) = sqlx::query_as(
            "SELECT metadata FROM events \
             WHERE tenant_id = $1::uuid AND metadata ->> 'command' = 'mark_payout_failed' \
               AND metadata ? 'request'",
        )
        .bind(&acme.tenant_id)
        .fetch_one(server.db.store().pool())
        .await
        .unwrap();
        let request = &metadata["request"];
        assert_eq!(
            request.get("netting_id").is_some(),
            named,
            "rules {}: {request}",
            rules.version()
        );
        assert_eq!(request["payout_id"], json!(payout), "{metadata}");
        server.stop().await;
    }
}

#[tokio::test]
async fn a_payout_naming_a_batch_twice_is_400_unless_its_key_was_answered_before() {
    // Proves: a payout naming a batch twice is 400 at the route; under a
    // key answered by a build before that check (the request's own
    // refusal, invalid_batches, recorded) the same body gets that answer
    // replayed instead: a check added to a route does not stand in front
    // of a recorded answer.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let (status, body) = pay_out(&acme, "twice", 100, &["b_1", "b_1"]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_request")),
        "{body}"
    );
    let tenant_id: aggregates::TenantId = acme.tenant_id.parse().unwrap();
    let key = eventstore::IdempotencyKey::parse("older").unwrap();
    let payout_id = commands::pipeline::derive_id(tenant_id, &key, "payout");
    let batch = commands::requests::payments::settlement_id("stripe", "b_1");
    let request = commands::requests::payments::CreatePayout {
        payout_id,
        terms: aggregates::payments::payout::PayoutTerms {
            asset: aggregates::Asset::new("USD", 2).unwrap(),
            amount: aggregates::Amount::new(100).unwrap(),
            bank_account: "main".into(),
            batches: vec![batch.clone(), batch],
            processor: "stripe".into(),
        },
        entry_id: aggregates::EntryId::from_uuid(payout_id),
    };
    let older = server.bus(commands::Clock::default());
    let recorded = older.execute(tenant_id, key, request).await.unwrap();
    assert_eq!(recorded.body["error"]["code"], "invalid_batches");
    let retried = acme
        .post(
            "/v1/payouts",
            "older",
            json!({"processor": "stripe", "currency": "USD", "amount": 100,
                   "bank_account": "main", "settlements": ["b_1", "b_1"]}),
        )
        .await;
    assert_eq!(
        (retried.status.as_u16(), retried.replayed, &retried.body),
        (recorded.status, true, recorded.body.as_ref())
    );
    server.stop().await;
}

#[tokio::test]
async fn a_payments_authorized_and_released_read_past_64_bits() {
    // Proves: a tender taken for what a final capture released takes the
    // payment's authorizations past its amount; at i64::MAX they pass 64
    // bits and the reads give their digits (before: 500), with the
    // payment still being captured while that tender is open.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let (created, _) = accepted(
        &acme,
        "/v1/payments",
        "pay",
        json!({"amount": i64::MAX, "currency": "EUR", "capture": "manual"}),
        201,
    )
    .await;
    let payment = created["payment_id"].as_str().unwrap().to_string();
    let path = |tail: &str| format!("/v1/payments/{payment}{tail}");
    let tender = |key: &'static str, amount: i64| {
        let body = json!({"method": "card", "amount": amount, "processor": "ov", "reference": key});
        let (client, path) = (&acme, path("/tenders"));
        async move { accepted(client, &path, key, body, 201).await.0 }
    };
    let first = tender("ov1", i64::MAX).await;
    let (capture, _) = accepted(
        &acme,
        &path("/captures"),
        "cap",
        json!({"tender_id": first["tender_id"], "amount": 1, "final": true}),
        201,
    )
    .await;
    assert_eq!(capture["status"], "captured");
    let second = tender("ov2", i64::MAX - 1).await;
    assert_eq!(second["payment_status"], "partially_captured");
    let seq = second["tenant_seq"].as_i64().unwrap();
    server.catch_up().await;
    let read = acme.read(&path(""), seq).await;
    assert_eq!(read["status"], "partially_captured", "{read}");
    assert_eq!(
        (&read["amounts"]["authorized"], &read["amounts"]["released"]),
        (&json!("18446744073709551613"), &json!(i64::MAX - 1))
    );
    let listed = acme
        .read("/v1/payments?status=partially_captured", seq)
        .await;
    assert_eq!(
        listed["payments"][0]["amounts"], read["amounts"],
        "{listed}"
    );
}

#[tokio::test]
async fn a_paid_payout_returned_by_the_bank_fails_since_the_tenth_rules() {
    // Proves: under the tenth rules a payout marked paid may still fail
    // (the bank returned it): its entry is reversed, the money is back at
    // the processor and its batch is paid out again; under the ninth it is
    // 422 `payout_not_pending` and changes nothing. Failed twice is refused
    // under either.
    use aggregates::rules::Rules;
    for rules in [Rules::NINTH, Rules::TENTH] {
        let (server, acme, payout) = paid_out_batch(rules).await;
        let (_, paid_seq) = accepted(
            &acme,
            &format!("/v1/payouts/{payout}/paid"),
            "payout-paid",
            json!({}),
            200,
        )
        .await;
        let returned = acme
            .post(
                &format!("/v1/payouts/{payout}/failed"),
                "payout-returned",
                json!({"reason": "account closed"}),
            )
            .await;
        let again = pay_out(&acme, "payout-again", 970, &["b_1"]).await;
        if rules == Rules::NINTH {
            let error =
                returned.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "payout_not_pending");
            assert_eq!(error["details"], json!({"status": "paid"}));
            assert_eq!(again.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", again.1);
            server.catch_up().await;
            assert_eq!(sums(&acme, paid_seq, "bank:main").await, [970, 0, 0, 0]);
            server.stop().await;
            continue;
        }
        assert_eq!(returned.status, StatusCode::OK, "{}", returned.body);
        assert_eq!(returned.body["status"], "failed");
        let seq = returned.body["tenant_seq"].as_i64().unwrap();
        server.catch_up().await;
        assert_eq!(sums(&acme, seq, "bank:main").await, [970, 970, 0, 0]);
        assert_eq!(
            balance_and_payable(&acme, seq).await,
            [[1_940, 970], [0, 0]]
        );
        let read = acme.read(&format!("/v1/payouts/{payout}"), seq).await;
        assert_eq!(read["status"], "failed", "{read}");
        assert!(read["paid_at"].is_string(), "{read}");
        assert!(
            read["paid_at"].as_str() <= read["failed_at"].as_str(),
            "{read}"
        );
        let twice = acme
            .post(
                &format!("/v1/payouts/{payout}/failed"),
                "payout-returned-twice",
                json!({}),
            )
            .await;
        let error = twice.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "payout_not_pending");
        assert_eq!(error["details"], json!({"status": "failed"}));
        assert_eq!(again.0, StatusCode::CREATED, "{}", again.1);
        assert_trial_balance_is_zero(&acme, seq).await;
        server.stop().await;
    }
}
