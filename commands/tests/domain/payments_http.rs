//! Payments over HTTP, end to end: the life of a card payment with every
//! account asserted to the unit and the trial balance zero after every
//! step; a settlement file's breaks (JSON and CSV); cash and gift-card
//! tenders, with concurrent redemptions of one card; an authorization
//! expired by the scheduler's tick; the reads, and another tenant's ids.

use super::*;

/// `account`'s [debits, credits, debits_pending, credits_pending] as of
/// `seq`, as numbers.
async fn sums(client: &Client, seq: i64, account: &str) -> [i64; 4] {
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
async fn accepted(
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
    // trial balance zero after each step; the reads show the same.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
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
        (
            &payout["status"],
            &payout["amount"],
            payout["batches"][0]["lines"].as_array().unwrap().len()
        ),
        (&json!("paid"), &json!(4_230), 4)
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
