//! Payments through the pipeline, their money in the journal: an
//! authorization reserved on the processor's receivable, captures settling
//! it part by part, a last capture releasing the rest, refunds, cash taken
//! at once, cancel, an authorization expired by the scheduler, gift cards,
//! disputes, and settlement batches with their breaks. (The
//! payment routes come next; these submit the requests directly and read
//! the journal over HTTP.)

use super::*;
use aggregates::ids::{CaptureId, PaymentId, RefundId, TenderId};
use aggregates::money::{Amount, Asset};
use aggregates::payments::payout::PayoutTerms;
use aggregates::payments::settlement::Resolution;
use aggregates::payments::settlement::{Line, LineType};
use aggregates::payments::{CaptureMode, IntentTerms, TenderMethod, TenderSource};
use aggregates::rules::Rules;
use commands::requests::payments::{
    AddTender, CancelPayment, CapturePayment, CloseDispute, CreatePayment, CreatePayout,
    FailRefund, ImportSettlement, MarkPayoutFailed, MarkPayoutPaid, OpenDispute, RefundPayment,
    ResolveBreak, SubmitEvidence,
};
use commands::{CommandBus, Outcome, Request};

fn usd() -> Asset {
    Asset::new("USD", 2).unwrap()
}

fn cents(value: i64) -> Amount {
    Amount::new(value).unwrap()
}

fn id(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

/// A test server on `clock`, a pipeline of its own submitting to it, and
/// a tenant.
async fn ledger(clock: &TestClock) -> (TestServer, CommandBus, Client) {
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let bus = server.bus(clock.clock());
    let acme = server.tenant("acme").await;
    (server, bus, acme)
}

/// Submits `request` for `client`'s tenant under `key`.
async fn run<R: Request>(bus: &CommandBus, client: &Client, key: &str, request: R) -> Outcome {
    bus.execute(
        client.tenant_id.parse().unwrap(),
        eventstore::IdempotencyKey::parse(key).unwrap(),
        request,
    )
    .await
    .unwrap()
}

fn create(n: u128, capture: CaptureMode, ttl_seconds: i64) -> CreatePayment {
    CreatePayment {
        payment_id: PaymentId::from_uuid(id(n)),
        terms: IntentTerms {
            amount: cents(10_000),
            asset: usd(),
            capture,
            customer: Some("c-1".into()),
            description: None,
            authorization_ttl_seconds: ttl_seconds,
            payee: None,
        },
    }
}

fn card(payment: u128, tender: u128, amount: i64) -> AddTender {
    AddTender {
        payment_id: PaymentId::from_uuid(id(payment)),
        tender_id: TenderId::from_uuid(id(tender)),
        method: TenderMethod::Card,
        source: TenderSource::Processor {
            processor: "stripe".into(),
            reference: format!("ch_{tender}"),
        },
        amount: cents(amount),
        asset: usd(),
    }
}

fn capture(payment: u128, tender: u128, n: u128, amount: i64, last: bool) -> CapturePayment {
    CapturePayment {
        payment_id: PaymentId::from_uuid(id(payment)),
        tender_id: TenderId::from_uuid(id(tender)),
        capture_id: CaptureId::from_uuid(id(n)),
        amount: cents(amount),
        reference: Some(format!("cap_{n}")),
        last,
        processor: "stripe".into(),
        asset: usd(),
    }
}

/// `account`'s [debits, credits, debits_pending, credits_pending] as of
/// `seq`.
async fn sums(client: &Client, seq: i64, account: &str) -> [String; 4] {
    let balances = client
        .read(&format!("/v1/journal/balances?as_of={seq}"), seq)
        .await;
    let row = balance_of(&balances, account);
    ["debits", "credits", "debits_pending", "credits_pending"]
        .map(|field| row[field].as_str().unwrap().to_string())
}

fn strings(values: [i64; 4]) -> [String; 4] {
    values.map(|value| value.to_string())
}

#[tokio::test]
async fn a_card_payment_reserves_captures_in_parts_releases_the_rest_and_refunds() {
    // Proves: tendering 10000 by card reserves it (pending) on
    // receivable:stripe and revenue; capturing 4000 posts 4000 and keeps
    // 6000 reserved; a last capture of 5000 posts it and releases 1000;
    // a refund of 1000 posts Dr refunds / Cr receivable:stripe; the trial
    // balance is zero after every step.
    let clock = TestClock::at(Utc::now());
    let (server, bus, acme) = ledger(&clock).await;
    let created = run(&bus, &acme, "pay", create(1, CaptureMode::Manual, 3_600)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["status"], "requires_tender");
    let tendered = run(&bus, &acme, "tender", card(1, 10, 10_000)).await;
    assert_eq!(tendered.status, 201, "{}", tendered.body);
    assert_eq!(
        (&tendered.body["status"], &tendered.body["payment_status"]),
        (&json!("authorized"), &json!("authorized"))
    );
    server.catch_up().await;
    let seq = tendered.tenant_seq;
    assert_eq!(
        sums(&acme, seq, "receivable:stripe").await,
        strings([0, 0, 10_000, 0])
    );
    assert_eq!(
        sums(&acme, seq, "revenue").await,
        strings([0, 0, 0, 10_000])
    );

    let first = run(&bus, &acme, "cap-1", capture(1, 10, 100, 4_000, false)).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["status"], "partially_captured");
    let last = run(&bus, &acme, "cap-2", capture(1, 10, 101, 5_000, true)).await;
    assert_eq!(last.status, 201, "{}", last.body);
    assert_eq!(last.body["released"], 1_000);
    let over = run(&bus, &acme, "cap-3", capture(1, 10, 102, 1, false)).await;
    assert_eq!(over.status, 422, "{}", over.body);
    assert_eq!(over.body["error"]["code"], "authorization_closed");
    server.catch_up().await;
    assert_eq!(
        sums(&acme, first.tenant_seq, "receivable:stripe").await,
        strings([4_000, 0, 6_000, 0])
    );
    assert_eq!(
        sums(&acme, last.tenant_seq, "receivable:stripe").await,
        strings([9_000, 0, 0, 0])
    );
    assert_eq!(
        sums(&acme, last.tenant_seq, "revenue").await,
        strings([0, 9_000, 0, 0])
    );
    assert_trial_balance_is_zero(&acme, last.tenant_seq).await;

    let refund = RefundPayment {
        payment_id: PaymentId::from_uuid(id(1)),
        refund_id: RefundId::from_uuid(id(200)),
        amount: cents(1_000),
        tender_id: None,
        reference: Some("re_1".into()),
        reason: None,
        accounts: vec![
            aggregates::journal::account::AccountCode::parse("receivable:stripe").unwrap(),
        ],
        asset: usd(),
    };
    let refunded = run(&bus, &acme, "refund", refund).await;
    assert_eq!(refunded.status, 201, "{}", refunded.body);
    assert_eq!(refunded.body["status"], "partially_refunded");
    server.catch_up().await;
    assert_eq!(
        sums(&acme, refunded.tenant_seq, "receivable:stripe").await,
        strings([9_000, 1_000, 0, 0])
    );
    assert_eq!(
        sums(&acme, refunded.tenant_seq, "refunds").await,
        strings([1_000, 0, 0, 0])
    );
    assert_trial_balance_is_zero(&acme, refunded.tenant_seq).await;
    disputed_and_failed(&server, &bus, &acme).await;

    // A processor's references are unique: another payment naming charge
    // ch_10 or capture cap_100 of stripe is refused, and changes nothing.
    run(&bus, &acme, "pay-5", create(5, CaptureMode::Manual, 3_600)).await;
    let taken = run(&bus, &acme, "tender-5", card(5, 10, 100)).await;
    assert_eq!(taken.status, 422, "{}", taken.body);
    assert_eq!(taken.body["error"]["code"], "reference_taken");
    assert_eq!(
        taken.body["error"]["details"]["payment_id"],
        json!(PaymentId::from_uuid(id(1)))
    );
    let tendered = run(&bus, &acme, "tender-5b", card(5, 50, 100)).await;
    assert_eq!(tendered.status, 201, "{}", tendered.body);
    let reused = run(&bus, &acme, "cap-5", capture(5, 50, 100, 10, false)).await;
    assert_eq!(reused.body["error"]["code"], "reference_taken");
}

/// Payment 1 of the test above (9000 captured as 4000 and 5000, 1000
/// refunded): the refund fails (its entry reversed, and refundable again),
/// then a dispute of 2000 with a 1500 fee on the first capture is lost.
async fn disputed_and_failed(server: &TestServer, bus: &CommandBus, acme: &Client) {
    let receivable =
        || vec![aggregates::journal::account::AccountCode::parse("receivable:stripe").unwrap()];
    let fail = FailRefund {
        payment_id: PaymentId::from_uuid(id(1)),
        refund_id: RefundId::from_uuid(id(200)),
        reversal_id: aggregates::EntryId::from_uuid(id(201)),
        reason: Some("closed account".into()),
        accounts: vec![
            aggregates::journal::account::AccountCode::parse("refunds").unwrap(),
            receivable()[0].clone(),
        ],
        asset: usd(),
    };
    let failed = run(bus, acme, "fail", fail.clone()).await;
    assert_eq!(failed.status, 200, "{}", failed.body);
    // 9000 captured, the rest released, the refund given back.
    assert_eq!(failed.body["status"], "captured");
    let again = run(bus, acme, "fail-again", fail).await;
    assert_eq!(again.body["error"]["code"], "refund_not_pending");
    let open = OpenDispute {
        payment_id: PaymentId::from_uuid(id(1)),
        dispute_id: aggregates::ids::DisputeId::from_uuid(id(300)),
        capture_id: CaptureId::from_uuid(id(100)),
        amount: cents(2_000),
        fee: cents(1_500),
        reference: Some("dp_1".into()),
        reason: Some("fraudulent".into()),
        account: receivable()[0].clone(),
        asset: usd(),
    };
    let opened = run(bus, acme, "dispute", open).await;
    assert_eq!(opened.status, 201, "{}", opened.body);
    let evidence = SubmitEvidence {
        payment_id: PaymentId::from_uuid(id(1)),
        dispute_id: aggregates::ids::DisputeId::from_uuid(id(300)),
    };
    let reviewed = run(bus, acme, "evidence", evidence).await;
    assert_eq!(reviewed.body["dispute_status"], "under_review");
    let close = |outcome, entry: u128| CloseDispute {
        payment_id: PaymentId::from_uuid(id(1)),
        dispute_id: aggregates::ids::DisputeId::from_uuid(id(300)),
        outcome,
        entry_id: aggregates::EntryId::from_uuid(id(entry)),
        account: receivable()[0].clone(),
        asset: usd(),
    };
    let lost = run(
        bus,
        acme,
        "lost",
        close(aggregates::payments::DisputeOutcome::Lost, 301),
    )
    .await;
    assert_eq!(lost.status, 200, "{}", lost.body);
    let twice = run(
        bus,
        acme,
        "won",
        close(aggregates::payments::DisputeOutcome::Won, 302),
    )
    .await;
    assert_eq!(twice.body["error"]["code"], "dispute_closed");
    server.catch_up().await;
    let seq = lost.tenant_seq;
    // Refund reversed: 1000 debited and credited back to refunds.
    assert_eq!(
        sums(acme, seq, "refunds").await,
        strings([1_000, 1_000, 0, 0])
    );
    // 9000 captured; refund 1000 and its reversal; 2000 frozen + 1500 fee.
    assert_eq!(
        sums(acme, seq, "receivable:stripe").await,
        strings([10_000, 4_500, 0, 0])
    );
    assert_eq!(
        sums(acme, seq, "funds_in_dispute").await,
        strings([2_000, 2_000, 0, 0])
    );
    assert_eq!(
        sums(acme, seq, "dispute_fees").await,
        strings([1_500, 0, 0, 0])
    );
    assert_eq!(
        sums(acme, seq, "dispute_losses").await,
        strings([2_000, 0, 0, 0])
    );
    assert_trial_balance_is_zero(acme, seq).await;
    // The payments read table keeps the payment as its events left it.
    let tenant = aggregates::TenantId::from_uuid(acme.tenant_id.parse().unwrap());
    let mut read = projections::read::begin_tenant_read(server.db.store().pool(), tenant)
        .await
        .unwrap();
    let document = projections::payments::get(&mut read, tenant, "payment", &id(1).to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(document.status, "captured");
    assert_eq!(document.state["tenders"][0]["captured"], 9_000);
    assert_eq!(document.state["disputes"][0]["state"], "lost");
    assert_eq!(document.state["refunds"][0]["state"], "failed");
}

#[tokio::test]
async fn cash_is_taken_at_once_a_cancel_releases_and_an_authorization_expires_on_the_tick() {
    // Proves: a cash tender posts Dr cash / Cr revenue at once; canceling
    // an authorized payment releases its reservation; an authorization not
    // captured by its expiry is released by the scheduler's tick, as of
    // its expiry, and the payment is expired.
    let clock = TestClock::at(Utc::now());
    let (server, bus, acme) = ledger(&clock).await;
    let ticker = server.ticker(clock.clock());
    run(&bus, &acme, "pay-1", create(1, CaptureMode::Manual, 3_600)).await;
    let cash = AddTender {
        method: TenderMethod::Cash,
        source: TenderSource::Cash,
        ..card(1, 10, 2_500)
    };
    let taken = run(&bus, &acme, "cash", cash).await;
    assert_eq!(taken.status, 201, "{}", taken.body);
    assert_eq!(
        (&taken.body["status"], &taken.body["payment_status"]),
        (&json!("captured"), &json!("partially_captured"))
    );
    let canceled = run(
        &bus,
        &acme,
        "cancel-1",
        CancelPayment {
            payment_id: PaymentId::from_uuid(id(1)),
            processors: Vec::new(),
        },
    )
    .await;
    assert_eq!(canceled.status, 422, "{}", canceled.body);
    assert_eq!(canceled.body["error"]["code"], "payment_captured");

    run(&bus, &acme, "pay-2", create(2, CaptureMode::Manual, 3_600)).await;
    run(&bus, &acme, "tender-2", card(2, 20, 3_000)).await;
    let canceled = run(
        &bus,
        &acme,
        "cancel-2",
        CancelPayment {
            payment_id: PaymentId::from_uuid(id(2)),
            processors: vec!["stripe".into()],
        },
    )
    .await;
    assert_eq!(canceled.status, 200, "{}", canceled.body);
    assert_eq!(canceled.body["status"], "canceled");

    run(&bus, &acme, "pay-3", create(3, CaptureMode::Manual, 3_600)).await;
    let authorized = run(&bus, &acme, "tender-3", card(3, 30, 7_000)).await;
    server.catch_up().await;
    assert_eq!(
        sums(&acme, authorized.tenant_seq, "receivable:stripe").await,
        strings([0, 0, 7_000, 0])
    );
    let expires_at = clock.now() + Duration::hours(1);
    clock.set(expires_at - Duration::seconds(1));
    let early = ticker.tick().await.unwrap();
    assert_eq!(early.leased, 0);
    clock.set(expires_at + Duration::minutes(3));
    let ticked = ticker.tick().await.unwrap();
    assert_eq!((ticked.leased, ticked.accepted), (1, 1), "{ticked:?}");
    let seq = head_seq(&server, &acme).await;
    server.catch_up().await;
    assert_eq!(
        sums(&acme, seq, "receivable:stripe").await,
        strings([0, 0, 0, 0])
    );
    assert_eq!(sums(&acme, seq, "cash").await, strings([2_500, 0, 0, 0]));
    assert_eq!(sums(&acme, seq, "revenue").await, strings([0, 2_500, 0, 0]));
    assert_trial_balance_is_zero(&acme, seq).await;
    let status = run(&bus, &acme, "late", capture(3, 30, 300, 1, false)).await;
    assert_eq!(status.body["error"]["code"], "payment_expired");
}

#[tokio::test]
async fn a_gift_card_sold_and_loaded_is_never_overdrawn_by_32_concurrent_redemptions() {
    // Proves: a gift card sold for 5000 and loaded with 1000 (Dr cash / Cr
    // gift_cards:GC-1) pays 12 tenders of 500 out of 32 submitted at once,
    // the other 20 answering 422 gift_card_insufficient; its account ends at
    // zero, never below; an unknown card is 404, another currency 422.
    use commands::requests::payments::{IssueGiftCard, LoadGiftCard};
    let clock = TestClock::at(Utc::now());
    let (server, bus, acme) = ledger(&clock).await;
    let issue = IssueGiftCard {
        code: "GC-1".into(),
        asset: usd(),
        amount: cents(5_000),
        entry_id: aggregates::EntryId::from_uuid(id(900)),
    };
    let issued = run(&bus, &acme, "sell", issue.clone()).await;
    assert_eq!(issued.status, 201, "{}", issued.body);
    let again = run(&bus, &acme, "sell-again", issue).await;
    assert_eq!(again.body["error"]["code"], "gift_card_exists");
    let load = LoadGiftCard {
        code: "GC-1".into(),
        asset: usd(),
        amount: cents(1_000),
        entry_id: aggregates::EntryId::from_uuid(id(901)),
    };
    let loaded = run(&bus, &acme, "load", load).await;
    assert_eq!(loaded.status, 200, "{}", loaded.body);
    assert_eq!(loaded.body["balance"], 6_000);

    let gift = |payment: u128, code: &str| AddTender {
        method: TenderMethod::GiftCard,
        source: TenderSource::GiftCard { code: code.into() },
        ..card(payment, payment + 1_000, 500)
    };
    let mut redemptions = Vec::new();
    for n in 0..32u128 {
        run(
            &bus,
            &acme,
            &format!("pay-{n}"),
            create(n, CaptureMode::Manual, 3_600),
        )
        .await;
        let (bus, acme, tender) = (bus.clone(), acme.clone(), gift(n, "GC-1"));
        redemptions.push(tokio::spawn(async move {
            run(&bus, &acme, &format!("redeem-{n}"), tender).await
        }));
    }
    let mut paid = 0;
    let mut last_seq = 0;
    for redemption in redemptions {
        let answer = redemption.await.unwrap();
        last_seq = last_seq.max(answer.tenant_seq);
        match answer.status {
            201 => {
                assert_eq!(answer.body["status"], "captured");
                paid += 1;
            }
            _ => assert_eq!(
                answer.body["error"]["code"], "gift_card_insufficient",
                "{}",
                answer.body
            ),
        }
    }
    assert_eq!(paid, 12);
    server.catch_up().await;
    let seq = head_seq(&server, &acme).await;
    assert_eq!(
        sums(&acme, seq, "gift_cards:GC-1").await,
        strings([6_000, 6_000, 0, 0])
    );
    assert_eq!(sums(&acme, seq, "cash").await, strings([6_000, 0, 0, 0]));
    assert_trial_balance_is_zero(&acme, seq).await;
    let unknown = run(&bus, &acme, "unknown", gift(0, "GC-404")).await;
    assert_eq!(
        (unknown.status, &unknown.body["error"]["code"]),
        (404, &json!("unknown_gift_card"))
    );
    let euros = AddTender {
        asset: Asset::new("EUR", 2).unwrap(),
        ..gift(0, "GC-1")
    };
    let other = run(&bus, &acme, "euros", euros).await;
    assert_eq!(other.status, 422, "{}", other.body);
}

fn settlement_line(line_type: LineType, reference: &str, gross: i64, fee: i64) -> Line {
    Line {
        line_type,
        reference: reference.into(),
        gross,
        fee,
        net: gross - fee,
    }
}

fn import(
    batch: &str,
    lines: Vec<Line>,
    payments: Vec<Option<u128>>,
    entry: u128,
) -> ImportSettlement {
    ImportSettlement {
        processor: "stripe".into(),
        batch_id: batch.into(),
        asset: usd(),
        settled_at: Utc::now(),
        lines,
        payments: payments
            .into_iter()
            .map(|payment| payment.map(|n| PaymentId::from_uuid(id(n))))
            .collect(),
        entry_id: aggregates::EntryId::from_uuid(id(entry)),
    }
}

#[tokio::test]
async fn a_settlement_settles_what_matches_and_opens_exactly_its_breaks() {
    // Proves: a batch of the two captures (with fees) and the refund of a
    // payment matches all three and moves them from the receivable to the
    // processor's balance, fees to processing_fees; a second batch with
    // one capture already settled, one unknown reference and one amount
    // mismatch gives exactly those three breaks, the differences in
    // settlement_suspense; a batch is imported once; the trial balance is
    // zero.
    let clock = TestClock::at(Utc::now());
    let (server, bus, acme) = ledger(&clock).await;
    run(&bus, &acme, "pay", create(1, CaptureMode::Manual, 3_600)).await;
    run(&bus, &acme, "tender", card(1, 10, 10_000)).await;
    run(&bus, &acme, "cap-1", capture(1, 10, 100, 4_000, false)).await;
    run(&bus, &acme, "cap-2", capture(1, 10, 101, 5_000, true)).await;
    let refund = RefundPayment {
        payment_id: PaymentId::from_uuid(id(1)),
        refund_id: RefundId::from_uuid(id(200)),
        amount: cents(1_000),
        tender_id: None,
        reference: Some("re_1".into()),
        reason: None,
        accounts: vec![
            aggregates::journal::account::AccountCode::parse("receivable:stripe").unwrap(),
        ],
        asset: usd(),
    };
    assert_eq!(run(&bus, &acme, "refund", refund).await.status, 201);
    run(&bus, &acme, "pay-2", create(2, CaptureMode::Manual, 3_600)).await;
    run(&bus, &acme, "tender-2", card(2, 20, 2_000)).await;
    run(&bus, &acme, "cap-3", capture(2, 20, 300, 2_000, true)).await;

    let first = import(
        "b_1",
        vec![
            settlement_line(LineType::Capture, "cap_100", 4_000, 120),
            settlement_line(LineType::Capture, "cap_101", 5_000, 150),
            settlement_line(LineType::Refund, "re_1", -1_000, 0),
        ],
        vec![Some(1), Some(1), Some(1)],
        900,
    );
    let settled = run(&bus, &acme, "settle-1", first.clone()).await;
    assert_eq!(settled.status, 201, "{}", settled.body);
    assert_eq!(
        (&settled.body["matched"], &settled.body["breaks"]),
        (&json!(3), &json!([]))
    );
    let again = run(&bus, &acme, "settle-1-again", first).await;
    assert_eq!(again.body["error"]["code"], "settlement_already_imported");

    let second = import(
        "b_2",
        vec![
            settlement_line(LineType::Capture, "cap_100", 4_000, 0),
            settlement_line(LineType::Capture, "cap_999", 700, 20),
            settlement_line(LineType::Capture, "cap_300", 2_100, 60),
        ],
        vec![Some(1), None, Some(2)],
        901,
    );
    let broken = run(&bus, &acme, "settle-2", second).await;
    assert_eq!(broken.status, 201, "{}", broken.body);
    assert_eq!(broken.body["matched"], 0);
    let breaks: Vec<(Value, Value, Value, Value)> = broken.body["breaks"]
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
        [
            (
                json!("duplicate"),
                json!("cap_100"),
                json!(4_000),
                json!(4_000)
            ),
            (
                json!("unknown_reference"),
                json!("cap_999"),
                Value::Null,
                json!(700)
            ),
            (
                json!("amount_mismatch"),
                json!("cap_300"),
                json!(2_000),
                json!(2_100)
            ),
        ]
    );
    server.catch_up().await;
    let seq = broken.tenant_seq;
    // Captured 11000 and refunded 1000; a batch posts one line per
    // account: b_1 credits 4000 + 5000 - 1000, b_2 the 2000 expected of
    // cap_300. Nothing is left owed.
    assert_eq!(
        sums(&acme, seq, "receivable:stripe").await,
        strings([11_000, 11_000, 0, 0])
    );
    // b_1: 3880 + 4850 - 1000; b_2: 4000 + 680 + 2040.
    assert_eq!(
        sums(&acme, seq, "processor_balance:stripe").await,
        strings([14_450, 0, 0, 0])
    );
    assert_eq!(
        sums(&acme, seq, "processing_fees").await,
        strings([350, 0, 0, 0])
    );
    // The duplicate 4000, the unknown 700, the mismatch's 100.
    assert_eq!(
        sums(&acme, seq, "settlement_suspense").await,
        strings([0, 4_800, 0, 0])
    );
    assert_trial_balance_is_zero(&acme, seq).await;

    // The unknown reference written off, the mismatch adjusted, once each.
    let break_id = |index: usize| {
        broken.body["breaks"][index]["break_id"]
            .as_str()
            .unwrap()
            .parse::<uuid::Uuid>()
            .unwrap()
    };
    let resolve = |index: usize, resolution, entry: u128| ResolveBreak {
        processor: "stripe".into(),
        batch_id: "b_2".into(),
        break_id: break_id(index),
        resolution,
        reason: Some("checked with the processor".into()),
        asset: usd(),
        entry_id: aggregates::EntryId::from_uuid(id(entry)),
        claim: None,
    };
    let written = run(
        &bus,
        &acme,
        "write-off",
        resolve(1, Resolution::WriteOff, 910),
    )
    .await;
    assert_eq!(written.status, 200, "{}", written.body);
    assert_eq!(written.body["amount"], 700);
    let adjusted = run(&bus, &acme, "adjust", resolve(2, Resolution::Adjust, 911)).await;
    assert_eq!(adjusted.body["amount"], 100, "{}", adjusted.body);
    let twice = run(
        &bus,
        &acme,
        "write-off-2",
        resolve(1, Resolution::WriteOff, 912),
    )
    .await;
    assert_eq!(twice.body["error"]["code"], "break_already_resolved");
    server.catch_up().await;
    let seq = adjusted.tenant_seq;
    assert_eq!(
        sums(&acme, seq, "settlement_suspense").await,
        strings([800, 4_800, 0, 0])
    );
    assert_eq!(
        sums(&acme, seq, "settlement_write_offs").await,
        strings([0, 700, 0, 0])
    );
    assert_trial_balance_is_zero(&acme, seq).await;

    paid_out(&server, &bus, &acme).await;

    let mut wrong = settlement_line(LineType::Capture, "cap_1", 100, 1);
    wrong.net = 50;
    let refused = run(
        &bus,
        &acme,
        "settle-3",
        import("b_3", vec![wrong], vec![None], 902),
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(
        refused.body["error"]["code"],
        "settlement_line_does_not_add_up"
    );
    assert_eq!(refused.body["error"]["details"]["line"], 1);
}

fn payout(n: u128, amount: i64, batches: &[&str]) -> CreatePayout {
    CreatePayout {
        payout_id: id(n),
        terms: PayoutTerms {
            processor: "stripe".into(),
            asset: usd(),
            amount: cents(amount),
            bank_account: "main".into(),
            batches: batches
                .iter()
                .map(|batch| format!("stripe:{batch}"))
                .collect(),
        },
        entry_id: aggregates::EntryId::from_uuid(id(n + 1)),
    }
}

/// The batches of the test above (b_1 settled 7730 net, b_2 6720): paid
/// out for exactly their net, each once; a failed payout is reversed and
/// frees its batch.
async fn paid_out(server: &TestServer, bus: &CommandBus, acme: &Client) {
    let wrong = run(bus, acme, "payout-wrong", payout(800, 7_731, &["b_1"])).await;
    assert_eq!(
        wrong.body["error"]["code"], "payout_amount_mismatch",
        "{}",
        wrong.body
    );
    let first = run(bus, acme, "payout-1", payout(800, 7_730, &["b_1"])).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let twice = run(bus, acme, "payout-2", payout(810, 7_730, &["b_1"])).await;
    assert_eq!(twice.body["error"]["code"], "settlement_already_paid_out");
    let failed = MarkPayoutFailed {
        payout_id: id(800),
        reason: Some("account closed".into()),
        batches: vec!["stripe:b_1".into()],
        entry_id: aggregates::EntryId::from_uuid(id(801)),
        reversal_id: aggregates::EntryId::from_uuid(id(802)),
        processor: "stripe".into(),
        bank_account: "main".into(),
        asset: usd(),
        netting_id: None,
    };
    let failed = run(bus, acme, "payout-1-failed", failed).await;
    assert_eq!(failed.status, 200, "{}", failed.body);
    let both = run(bus, acme, "payout-3", payout(820, 14_450, &["b_1", "b_2"])).await;
    assert_eq!(both.status, 201, "{}", both.body);
    let paid = run(
        bus,
        acme,
        "payout-3-paid",
        MarkPayoutPaid { payout_id: id(820) },
    )
    .await;
    assert_eq!(paid.body["status"], "paid");
    let again = run(
        bus,
        acme,
        "payout-3-paid-again",
        MarkPayoutPaid { payout_id: id(820) },
    )
    .await;
    assert_eq!(again.body["error"]["code"], "payout_not_pending");
    server.catch_up().await;
    let seq = paid.tenant_seq;
    // 7730 out and back, then 14450 out: nothing left at the processor.
    assert_eq!(
        sums(acme, seq, "bank:main").await,
        strings([7_730 + 14_450, 7_730, 0, 0])
    );
    assert_eq!(
        sums(acme, seq, "processor_balance:stripe").await,
        strings([14_450 + 7_730, 7_730 + 14_450, 0, 0])
    );
    assert_trial_balance_is_zero(acme, seq).await;
}

#[tokio::test]
async fn automatic_captures_settle_under_their_charge_and_adjustments_are_the_processors() {
    // Proves: a card tender of an automatic-capture payment, captured as it
    // is taken, settles under its charge's reference; an adjustment line
    // (the processor's own) goes to processing_fees, not to suspense; a
    // payment in another scale of a currency already used is refused.
    let clock = TestClock::at(Utc::now());
    let (server, bus, acme) = ledger(&clock).await;
    run(&bus, &acme, "pay", create(1, CaptureMode::Automatic, 3_600)).await;
    let taken = run(&bus, &acme, "tender", card(1, 10, 3_000)).await;
    assert_eq!(taken.body["status"], "captured", "{}", taken.body);
    let batch = import(
        "b_1",
        vec![
            settlement_line(LineType::Capture, "ch_10", 3_000, 90),
            settlement_line(LineType::Adjustment, "reserve", -500, 0),
        ],
        vec![Some(1), None],
        900,
    );
    let settled = run(&bus, &acme, "settle", batch).await;
    assert_eq!(settled.status, 201, "{}", settled.body);
    assert_eq!(
        (&settled.body["matched"], &settled.body["breaks"]),
        (&json!(1), &json!([]))
    );
    server.catch_up().await;
    let seq = settled.tenant_seq;
    assert_eq!(
        sums(&acme, seq, "receivable:stripe").await,
        strings([3_000, 3_000, 0, 0])
    );
    // 2910 from the capture, 500 held back by the processor.
    assert_eq!(
        sums(&acme, seq, "processor_balance:stripe").await,
        strings([2_410, 0, 0, 0])
    );
    assert_eq!(
        sums(&acme, seq, "processing_fees").await,
        strings([590, 0, 0, 0])
    );
    assert_trial_balance_is_zero(&acme, seq).await;

    let mut thousandths = create(2, CaptureMode::Manual, 3_600);
    thousandths.terms.asset = Asset::new("USD", 3).unwrap();
    let refused = run(&bus, &acme, "pay-2", thousandths).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "asset_scale_mismatch");
}

#[tokio::test]
async fn a_charge_claimed_under_the_first_rules_is_still_its_own_tenders() {
    // Proves: a charge reference claimed under the first rules names its
    // payment only; under the third, another tender of the same payment
    // still cannot capture by it (422 reference_taken), which the second
    // rules let it.
    let clock = TestClock::at(Utc::now());
    let (server, current, acme) = ledger(&clock).await;
    let under = |rules| {
        CommandBus::start(
            server.db.store().clone(),
            commands::BusConfig {
                clock: clock.clock(),
                rules,
                ..commands::BusConfig::default()
            },
            std::sync::Arc::new(commands::Metrics::default()),
        )
    };
    let (first, second) = (under(Rules::FIRST), under(Rules::SECOND));
    // Two card tenders of 5000, ch_2 and ch_3, claimed under the first rules.
    run(&first, &acme, "pay", create(1, CaptureMode::Manual, 3_600)).await;
    for tender in [2, 3] {
        let added = run(
            &first,
            &acme,
            &format!("t-{tender}"),
            card(1, tender, 5_000),
        )
        .await;
        assert_eq!(added.status, 201, "{}", added.body);
    }
    let by_charge = |n: u128, tender: u128, charge: &str| CapturePayment {
        reference: Some(charge.to_string()),
        ..capture(1, tender, n, 1_000, false)
    };
    let refused = run(&current, &acme, "c-10", by_charge(10, 3, "ch_2")).await;
    assert_eq!(
        refused.body["error"]["code"], "reference_taken",
        "{}",
        refused.body
    );
    let taken = run(&second, &acme, "c-11", by_charge(11, 3, "ch_2")).await;
    assert_eq!(taken.status, 201, "{}", taken.body);
    server.stop().await;
}
