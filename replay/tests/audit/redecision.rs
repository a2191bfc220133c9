//! Tampering that keeps the hash chain whole (it is recomputed after each
//! edit), so that only deciding every recorded request again can find it:
//! each finding names the tenant and the seq.

use super::{domain, findings_of, Ledger};
use replay::state::ReplayFinding;
use replay::verify::Finding;
use serde_json::{json, Value};

/// The payload of event `seq` of tenant 0.
async fn payload(ledger: &Ledger, seq: i64) -> Value {
    serde_json::from_str(&ledger.event(0, seq).await.payload).unwrap()
}

#[tokio::test]
async fn a_subscription_grant_of_another_amount_than_the_recorded_plan_is_found() {
    // Proves: the runs grant a subscribe issued, rewritten to 99 (its entry
    // too, so the journal balances), is found at its seq: the subscribe's
    // recorded plan gives 10000 runs; the request's other events agree.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    let tenant = ledger.tenants[0];
    let original = payload(&ledger, 3).await;
    assert_eq!(original["GrantIssued"]["terms"]["amount"], json!(10_000));
    ledger
        .edit_payload(0, 3, None, |payload| {
            payload["GrantIssued"]["terms"]["amount"] = json!(99);
            for posting in payload["GrantIssued"]["entry"]["postings"]
                .as_array_mut()
                .unwrap()
            {
                posting["amount"] = json!(99);
            }
        })
        .await;
    ledger.rechain(0).await;
    let report = ledger.verify().await;
    let edited = payload(&ledger, 3).await;
    let findings = findings_of(&report, tenant);
    assert_eq!(findings.len(), 1, "{findings:?}");
    let finding = super::first_replay_at(&findings, 3, "quota", "runs");
    let grant = original["GrantIssued"]["terms"]["grant_id"]
        .as_str()
        .unwrap();
    assert_eq!(
        finding.message,
        format!(
            "entry [debit quota_issued:runs 99 RUNS/0, credit grant:{grant} 99 RUNS/0] where the quota decides \
             [debit quota_issued:runs 10000 RUNS/0, credit grant:{grant} 10000 RUNS/0]; \
             terms {} where the quota decides {}",
            edited["GrantIssued"]["terms"], original["GrantIssued"]["terms"]
        )
    );
}

#[tokio::test]
async fn an_event_of_an_aggregate_type_no_domain_registers_is_found_at_the_tail() {
    // Proves: an event appended at the tail (head moved, chain recomputed)
    // for an aggregate type and a request kind no domain registers is a
    // finding at its seq naming both; nothing before it is.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    let tenant = ledger.tenants[0];
    ledger
        .tamper(&[
            format!(
                "INSERT INTO events (tenant_id, tenant_seq, aggregate_type, aggregate_id, aggregate_seq, \
                 event_id, event_type, event_version, payload, metadata, idempotency_key, recorded_at, \
                 prev_hash, hash) \
                 SELECT tenant_id, 17, 'loyalty', 'points', 1, gen_random_uuid(), 'PointsAwarded', '1', \
                 '{{\"PointsAwarded\": {{\"points\": 500}}}}', \
                 '{{\"command\": \"award_points\", \"request\": {{\"points\": 500}}}}', 'award-1', \
                 recorded_at, hash, hash FROM events WHERE tenant_id = '{tenant}' AND tenant_seq = 16"
            ),
            format!("UPDATE chain_heads SET last_seq = 17 WHERE tenant_id = '{tenant}'"),
        ])
        .await;
    ledger.rechain(0).await;
    let report = ledger.verify().await;
    assert_eq!(
        findings_of(&report, tenant),
        vec![Finding::Replay {
            finding: ReplayFinding {
                tenant_seq: 17,
                aggregate_type: "loyalty".into(),
                aggregate_id: "points".into(),
                message: "request kind \"award_points\" is registered by no domain; \
                          aggregate type \"loyalty\" is registered by no domain"
                    .into(),
            },
            line: None,
        }]
    );
}

#[tokio::test]
async fn a_request_removed_from_its_first_event_is_found_and_the_events_are_still_folded() {
    // Proves: the subscribe's first event stripped of the request it
    // records (chain recomputed) is a finding at seq 1; its events are
    // folded as stored, so everything after it still decides alike.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    let tenant = ledger.tenants[0];
    ledger
        .tamper(&[format!(
            "UPDATE events SET metadata = metadata - 'request' \
             WHERE tenant_id = '{tenant}' AND tenant_seq = 1"
        )])
        .await;
    ledger.rechain(0).await;
    let report = ledger.verify().await;
    assert_eq!(
        findings_of(&report, tenant),
        vec![domain(
            1,
            "subscription",
            "no recorded request: the first event of a request must carry it"
        )]
    );
}

#[tokio::test]
async fn a_subscription_grant_removed_and_the_rest_renumbered_is_found_at_its_seq() {
    // Proves: one of a subscribe's grant events deleted, every later seq
    // renumbered and the chain recomputed (a history that chains), is found
    // at the seq where the request's events stop matching its decision:
    // the credits grant stands where the runs grant is decided, and the
    // decided credits grant is what the history lacks.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    let tenant = ledger.tenants[0];
    let at = format!("tenant_id = '{tenant}'");
    ledger
        .tamper(&[
            format!("DELETE FROM events WHERE {at} AND tenant_seq = 3"),
            format!("UPDATE events SET tenant_seq = tenant_seq + 1000000 WHERE {at} AND tenant_seq > 3"),
            format!("UPDATE events SET tenant_seq = tenant_seq - 1000001 WHERE {at} AND tenant_seq > 1000000"),
            "ALTER TABLE chain_heads DISABLE TRIGGER USER".to_string(),
            format!("UPDATE chain_heads SET last_seq = last_seq - 1 WHERE {at}"),
            "ALTER TABLE chain_heads ENABLE TRIGGER USER".to_string(),
        ])
        .await;
    ledger.rechain(0).await;
    let report = ledger.verify().await;
    let findings = findings_of(&report, tenant);
    assert!(
        findings
            .iter()
            .all(|finding| matches!(finding, Finding::Replay { .. })),
        "{findings:?}"
    );
    let Finding::Replay { finding, .. } = &findings[0] else {
        panic!("{findings:?}");
    };
    assert_eq!(
        (finding.tenant_seq, finding.aggregate_id.as_str()),
        (3, "credits")
    );
    assert!(
        finding.message.starts_with(
            "GrantIssued of quota/credits where the request decides GrantIssued of quota/runs ("
        ),
        "{finding:?}"
    );
    assert!(
        finding
            .message
            .contains("; the subscribe request also decides GrantIssued of quota/credits (")
            && finding.message.ends_with(", which the history lacks"),
        "{finding:?}"
    );
}

#[tokio::test]
async fn a_history_of_every_request_kind_verifies_clean_and_replays() {
    // Proves: a tenant's history holding every request kind the domains
    // register (quota accounts, seats both ways, revocation, expiry, a
    // cancellation and a renewal among them; journal accounts, entries, a
    // reversal, holds posted in part, voided and expired), each recorded on its first
    // event, is re-decided by verify with no finding and replays to the
    // head; a kind a new domain adds fails this test until it is covered.
    use aggregates::plan::PlanCatalog;
    use aggregates::quota::{GrantSource, QuotaAccount, QuotaType};
    use aggregates::subscription::CancelAt;
    use aggregates::Amount;
    use chrono::{TimeZone, Utc};
    use commands::requests::quota::{ChangeSeats, ExpireGrants, IssueGrant, RevokeGrant};
    use commands::requests::subscription::{
        CancelSubscription, ChangePlan, RenewSubscription, Subscribe,
    };
    use replay::as_of::AsOf;
    let ledger = Ledger::new().await;
    let plans = PlanCatalog::builtin();
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    ledger.set_clock(start);
    let account = Some(QuotaAccount::parse("user-7").unwrap());
    let units = |value: i64| Amount::new(value).unwrap();
    ledger
        .run(
            0,
            "sub",
            Subscribe {
                plan: plans.get("hobby_v3").unwrap().clone(),
                trial_ends_at: None,
            },
        )
        .await;
    let bought = ledger
        .run(
            0,
            "buy",
            IssueGrant {
                quota: QuotaType::Credits,
                account: account.clone(),
                source: GrantSource::Promocode,
                amount: Some(units(50)),
                priority: 10,
                effective_at: None,
                expires_at: Some(start + chrono::Duration::days(2)),
            },
        )
        .await;
    let doomed = ledger
        .run(
            0,
            "doomed",
            IssueGrant {
                quota: QuotaType::Runs,
                account: None,
                source: GrantSource::Purchase,
                amount: Some(units(5)),
                priority: 50,
                effective_at: None,
                expires_at: None,
            },
        )
        .await;
    ledger.run(0, "use", super::consume(3)).await;
    ledger
        .run(
            0,
            "seat",
            ChangeSeats {
                account: None,
                amount: units(1),
                release: false,
            },
        )
        .await;
    ledger
        .run(
            0,
            "unseat",
            ChangeSeats {
                account: None,
                amount: units(1),
                release: true,
            },
        )
        .await;
    let doomed: aggregates::GrantId =
        serde_json::from_value(doomed.body["grant_id"].clone()).unwrap();
    ledger
        .run(
            0,
            "revoke",
            RevokeGrant {
                grant_id: doomed,
                quota: QuotaType::Runs,
                account: None,
            },
        )
        .await;
    ledger
        .run(
            0,
            "upgrade",
            ChangePlan {
                plan: plans.get("team_v4").unwrap().clone(),
            },
        )
        .await;
    ledger.set_clock(start + chrono::Duration::days(3));
    let expired = ledger
        .run(
            0,
            "expire",
            ExpireGrants {
                quota: QuotaType::Credits,
                account: account.clone(),
                due_at: None,
            },
        )
        .await;
    assert_eq!(
        expired.body["expired"][0]["grant_id"],
        bought.body["grant_id"]
    );
    ledger
        .run(
            0,
            "cancel",
            CancelSubscription {
                at: CancelAt::PeriodEnd,
            },
        )
        .await;
    ledger.set_clock(start + chrono::Duration::days(40));
    ledger.run(0, "renew", RenewSubscription::default()).await;
    assert_eq!(bought.body["quota"], "credits");
    journal_requests(&ledger, start + chrono::Duration::days(40)).await;
    payment_requests(&ledger, start + chrono::Duration::days(40)).await;
    super::escrow::escrow_requests(&ledger, start + chrono::Duration::days(41)).await;
    super::compensation::compensation_requests(&ledger, start + chrono::Duration::days(42)).await;

    let report = ledger.verify().await;
    assert_eq!(findings_of(&report, ledger.tenants[0]), Vec::new());
    assert!(report.ok, "{}", report.render());
    let recorded: std::collections::BTreeSet<String> = ledger
        .events(0)
        .await
        .iter()
        .filter_map(|event| {
            let metadata: Value = serde_json::from_str(&event.metadata).unwrap();
            metadata.get("request")?;
            Some(metadata["command"].as_str()?.to_string())
        })
        .collect();
    let registered: std::collections::BTreeSet<String> = commands::domains::domains()
        .iter()
        .flat_map(|domain| domain.requests.iter().map(|kind| kind.kind.to_string()))
        .collect();
    assert_eq!(recorded, registered);
    let head = ledger.replay(0, AsOf::Head).await;
    assert_eq!(head["subscription"]["status"], "cancelled");
}

/// Runs every journal request on tenant 0 from `now` on: two accounts
/// opened, two entries posted and one of them reversed, holds posted in
/// part, voided and expired, and three ETH entries taking the accounts'
/// totals past 64 bits (which verify, like the ledger, totals in 128).
async fn journal_requests(ledger: &Ledger, now: chrono::DateTime<chrono::Utc>) {
    use aggregates::journal::account::{AccountCode, AccountSpec};
    use aggregates::journal::hold::PendingTransfer;
    use aggregates::journal::{AccountType, Side};
    use aggregates::{Amount, Asset, EntryId, HoldId};
    use commands::requests::journal::{
        EntryLine, OpenAccount, PlaceHold, PostEntry, Resolve, ResolveHold, ReverseEntry,
    };
    let code = |text: &str| AccountCode::parse(text).unwrap();
    let units = |value: i64| Amount::new(value).unwrap();
    let usd = Asset::new("USD", 2).unwrap();
    let tenant = ledger.tenants[0];
    let id = |key: &str, label: &str| {
        commands::pipeline::derive_id(
            tenant,
            &eventstore::IdempotencyKey::parse(key).unwrap(),
            label,
        )
    };
    let cash = AccountSpec::new(AccountType::Asset);
    let held = AccountSpec::new(AccountType::Liability).debits_must_not_exceed_credits();
    for (key, account, spec) in [("open-cash", "cash", cash), ("open-held", "held", held)] {
        let open = OpenAccount {
            code: code(account),
            spec,
        };
        ledger.run(0, key, open).await;
    }
    let lines = |amount: i64| {
        vec![
            EntryLine {
                account: code("cash"),
                asset: usd.clone(),
                side: Side::Debit,
                amount: units(amount),
            },
            EntryLine {
                account: code("held"),
                asset: usd.clone(),
                side: Side::Credit,
                amount: units(amount),
            },
        ]
    };
    for (key, amount) in [("deposit", 500), ("fee", 50)] {
        let entry = PostEntry {
            entry_id: EntryId::from_uuid(id(key, "entry")),
            lines: lines(amount),
            effective_at: None,
            reference: Some(key.to_string()),
        };
        ledger.run(0, key, entry).await;
    }
    let reverse = ReverseEntry {
        entry_id: EntryId::from_uuid(id("fee", "entry")),
        reversal_id: EntryId::from_uuid(id("unfee", "reversal")),
        lines: lines(50),
        reference: None,
    };
    ledger.run(0, "unfee", reverse).await;
    let transfer = PendingTransfer {
        debit: code("held"),
        credit: code("cash"),
        asset: usd.clone(),
        amount: units(100),
    };
    let holds = [
        (
            "hold-post",
            Resolve::Post {
                amount: Some(units(30)),
                entry_id: EntryId::from_uuid(id("resolve-hold-post", "entry")),
            },
        ),
        ("hold-void", Resolve::Void),
        ("hold-expire", Resolve::Expire),
    ];
    for (key, _) in &holds {
        let hold = PlaceHold {
            hold_id: HoldId::from_uuid(id(key, "hold")),
            transfer: transfer.clone(),
            expires_at: Some(now + chrono::Duration::hours(1)),
        };
        ledger.run(0, key, hold).await;
    }
    for (key, resolve) in holds {
        if resolve == Resolve::Expire {
            ledger.set_clock(now + chrono::Duration::hours(2));
        }
        let resolution = ResolveHold {
            hold_id: HoldId::from_uuid(id(key, "hold")),
            transfer: transfer.clone(),
            resolve,
            due_at: None,
        };
        ledger.run(0, &format!("resolve-{key}"), resolution).await;
    }
    // Accounts whose totals pass 64 bits: three entries of 4 ETH in wei.
    let eth = Asset::new("ETH", 18).unwrap();
    for key in ["eth-1", "eth-2", "eth-3"] {
        let entry = PostEntry {
            entry_id: EntryId::from_uuid(id(key, "entry")),
            lines: [(code("cash"), Side::Debit), (code("held"), Side::Credit)]
                .map(|(account, side)| EntryLine {
                    account,
                    asset: eth.clone(),
                    side,
                    amount: units(4_000_000_000_000_000_000),
                })
                .to_vec(),
            effective_at: None,
            reference: None,
        };
        ledger.run(0, key, entry).await;
    }
}

/// Runs every payment request on tenant 0 from two hours after `now` (the
/// ledger's clock after [`journal_requests`]): a card payment captured in
/// two parts, refunded, the refund failed, and disputed twice (lost, won);
/// cash taken at once, a payment canceled, and an authorization expired at
/// its time.
async fn payment_requests(ledger: &Ledger, now: chrono::DateTime<chrono::Utc>) {
    use aggregates::ids::{CaptureId, DisputeId, PaymentId, RefundId, TenderId};
    use aggregates::journal::account::AccountCode;
    use aggregates::payments::payout::PayoutTerms;
    use aggregates::payments::settlement::{Line, LineType};
    use aggregates::payments::{
        CaptureMode, DisputeOutcome, IntentTerms, TenderMethod, TenderSource,
    };
    use aggregates::{Amount, Asset};
    use commands::requests::payments::{
        AddTender, CancelPayment, CapturePayment, CloseDispute, CreatePayment, CreatePayout,
        ExpireAuthorization, FailRefund, ImportSettlement, IssueGiftCard, LoadGiftCard,
        MarkPayoutFailed, MarkPayoutPaid, OpenDispute, RefundPayment, ResolveBreak, SubmitEvidence,
    };
    let usd = Asset::new("USD", 2).unwrap();
    let cents = |value: i64| Amount::new(value).unwrap();
    let id = |n: u128| uuid::Uuid::from_u128(n);
    let payment = |n: u128| PaymentId::from_uuid(id(n));
    let stripe = |tender: u128| TenderSource::Processor {
        processor: "stripe".into(),
        reference: format!("ch_{tender}"),
    };
    let tender = |n: u128, tender: u128, method, source, amount: i64| AddTender {
        payment_id: payment(n),
        tender_id: TenderId::from_uuid(id(tender)),
        method,
        source,
        amount: cents(amount),
        asset: usd.clone(),
    };
    for n in 1..=4 {
        let create = CreatePayment {
            payment_id: payment(n),
            terms: IntentTerms {
                amount: cents(10_000),
                asset: usd.clone(),
                capture: CaptureMode::Manual,
                customer: None,
                description: None,
                authorization_ttl_seconds: 3_600,
                payee: None,
            },
        };
        ledger.run(0, &format!("payment-{n}"), create).await;
    }
    ledger
        .run(
            0,
            "tender-1",
            tender(1, 10, TenderMethod::Card, stripe(10), 10_000),
        )
        .await;
    for (n, amount, last) in [(100, 4_000, false), (101, 5_000, true)] {
        let capture = CapturePayment {
            payment_id: payment(1),
            tender_id: TenderId::from_uuid(id(10)),
            capture_id: CaptureId::from_uuid(id(n)),
            amount: cents(amount),
            reference: Some(format!("cap_{n}")),
            last,
            processor: "stripe".into(),
            asset: usd.clone(),
        };
        ledger.run(0, &format!("capture-{n}"), capture).await;
    }
    let refund = RefundPayment {
        payment_id: payment(1),
        refund_id: RefundId::from_uuid(id(200)),
        amount: cents(1_000),
        tender_id: None,
        reference: Some("re_1".into()),
        reason: None,
        accounts: vec![AccountCode::parse("receivable:stripe").unwrap()],
        asset: usd.clone(),
    };
    ledger.run(0, "refund-1", refund).await;
    let fail = FailRefund {
        payment_id: payment(1),
        refund_id: RefundId::from_uuid(id(200)),
        reversal_id: aggregates::EntryId::from_uuid(id(201)),
        reason: None,
        accounts: vec![
            AccountCode::parse("refunds").unwrap(),
            AccountCode::parse("receivable:stripe").unwrap(),
        ],
        asset: usd.clone(),
    };
    ledger.run(0, "fail-1", fail).await;
    for (n, capture, outcome) in [
        (300, 100, DisputeOutcome::Lost),
        (310, 101, DisputeOutcome::Won),
    ] {
        let dispute_id = DisputeId::from_uuid(id(n));
        let open = OpenDispute {
            payment_id: payment(1),
            dispute_id,
            capture_id: CaptureId::from_uuid(id(capture)),
            amount: cents(1_000),
            fee: cents(150),
            reference: Some(format!("dp_{n}")),
            reason: None,
            account: AccountCode::parse("receivable:stripe").unwrap(),
            asset: usd.clone(),
        };
        ledger.run(0, &format!("dispute-{n}"), open).await;
        let evidence = SubmitEvidence {
            payment_id: payment(1),
            dispute_id,
        };
        ledger.run(0, &format!("evidence-{n}"), evidence).await;
        let close = CloseDispute {
            payment_id: payment(1),
            dispute_id,
            outcome,
            entry_id: aggregates::EntryId::from_uuid(id(n + 1)),
            account: AccountCode::parse("receivable:stripe").unwrap(),
            asset: usd.clone(),
        };
        ledger.run(0, &format!("close-{n}"), close).await;
    }
    ledger
        .run(
            0,
            "tender-2",
            tender(2, 20, TenderMethod::Cash, TenderSource::Cash, 2_500),
        )
        .await;
    let issue = IssueGiftCard {
        code: "GC-1".into(),
        asset: usd.clone(),
        amount: cents(1_000),
        entry_id: aggregates::EntryId::from_uuid(id(900)),
    };
    ledger.run(0, "sell-card", issue).await;
    let load = LoadGiftCard {
        code: "GC-1".into(),
        asset: usd.clone(),
        amount: cents(500),
        entry_id: aggregates::EntryId::from_uuid(id(901)),
    };
    ledger.run(0, "load-card", load).await;
    let card = TenderSource::GiftCard {
        code: "GC-1".into(),
    };
    ledger
        .run(
            0,
            "tender-2-card",
            tender(2, 21, TenderMethod::GiftCard, card, 1_500),
        )
        .await;
    ledger
        .run(
            0,
            "tender-3",
            tender(3, 30, TenderMethod::Card, stripe(30), 3_000),
        )
        .await;
    let cancel = CancelPayment {
        payment_id: payment(3),
        processors: vec!["stripe".into()],
    };
    ledger.run(0, "cancel-3", cancel).await;
    ledger
        .run(
            0,
            "tender-4",
            tender(4, 40, TenderMethod::Card, stripe(40), 2_000),
        )
        .await;
    let expires_at = now + chrono::Duration::hours(3);
    ledger.set_clock(now + chrono::Duration::hours(4));
    let expire = ExpireAuthorization {
        payment_id: payment(4),
        tender_id: TenderId::from_uuid(id(40)),
        processor: "stripe".into(),
        due_at: Some(expires_at),
    };
    let expired = ledger.run(0, "expire-4", expire).await;
    assert_eq!(expired.body["status"], "expired", "{}", expired.body);
    let line = |line_type, reference: &str, gross: i64, fee: i64| Line {
        line_type,
        reference: reference.into(),
        gross,
        fee,
        net: gross - fee,
    };
    let import = ImportSettlement {
        processor: "stripe".into(),
        batch_id: "b_1".into(),
        asset: usd.clone(),
        settled_at: now + chrono::Duration::hours(4),
        lines: vec![
            line(LineType::Capture, "cap_100", 4_000, 120),
            line(LineType::Capture, "cap_999", 700, 20),
        ],
        payments: vec![Some(payment(1)), None],
        entry_id: aggregates::EntryId::from_uuid(id(950)),
    };
    let settled = ledger.run(0, "settle-1", import).await;
    assert_eq!(settled.body["matched"], 1, "{}", settled.body);
    let resolve = ResolveBreak {
        processor: "stripe".into(),
        batch_id: "b_1".into(),
        break_id: settled.body["breaks"][0]["break_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        resolution: aggregates::payments::settlement::Resolution::WriteOff,
        reason: None,
        asset: usd.clone(),
        entry_id: aggregates::EntryId::from_uuid(id(951)),
        claim: None,
    };
    ledger.run(0, "resolve-1", resolve).await;
    let payout = |n: u128, amount: i64, batches: &[&str]| CreatePayout {
        payout_id: id(n),
        terms: PayoutTerms {
            processor: "stripe".into(),
            asset: usd.clone(),
            amount: cents(amount),
            bank_account: "main".into(),
            batches: batches.iter().map(|batch| batch.to_string()).collect(),
        },
        entry_id: aggregates::EntryId::from_uuid(id(n + 1)),
    };
    ledger
        .run(0, "payout-1", payout(960, 4_560, &["stripe:b_1"]))
        .await;
    // The processor's own adjustment takes 300 from a balance paid out:
    // owed to it, and paid down when the payout fails.
    let short = ImportSettlement {
        processor: "stripe".into(),
        batch_id: "b_short".into(),
        asset: usd.clone(),
        settled_at: now + chrono::Duration::hours(4),
        lines: vec![line(LineType::Adjustment, "adj_1", -300, 0)],
        payments: vec![None],
        entry_id: aggregates::EntryId::from_uuid(id(955)),
    };
    ledger.run(0, "settle-short", short).await;
    let failed = MarkPayoutFailed {
        payout_id: id(960),
        reason: None,
        batches: vec!["stripe:b_1".into()],
        entry_id: aggregates::EntryId::from_uuid(id(961)),
        reversal_id: aggregates::EntryId::from_uuid(id(962)),
        processor: "stripe".into(),
        bank_account: "main".into(),
        asset: usd.clone(),
        netting_id: Some(aggregates::EntryId::from_uuid(id(963))),
    };
    let failed = ledger.run(0, "payout-1-failed", failed).await;
    let netting = id(963).to_string();
    assert!(
        failed.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["aggregate_type"] == "entry" && event["aggregate_id"] == netting),
        "{}",
        failed.body
    );
    ledger
        .run(
            0,
            "payout-2",
            payout(970, 4_260, &["stripe:b_1", "stripe:b_short"]),
        )
        .await;
    let paid = MarkPayoutPaid { payout_id: id(970) };
    ledger.run(0, "payout-2-paid", paid).await;
    // A dispute line before its dispute: a break, matched once it opened.
    let import = ImportSettlement {
        processor: "stripe".into(),
        batch_id: "b_2".into(),
        asset: usd.clone(),
        settled_at: now + chrono::Duration::hours(4),
        lines: vec![
            line(LineType::Capture, "cap_101", 5_000, 150),
            line(LineType::Dispute, "dp_late", -500, 150),
        ],
        payments: vec![Some(payment(1)), None],
        entry_id: aggregates::EntryId::from_uuid(id(980)),
    };
    let late = ledger.run(0, "settle-2", import).await;
    assert_eq!(late.body["breaks"][0]["class"], "unknown_reference");
    let open = OpenDispute {
        payment_id: payment(1),
        dispute_id: DisputeId::from_uuid(id(320)),
        capture_id: CaptureId::from_uuid(id(101)),
        amount: cents(500),
        fee: cents(150),
        reference: Some("dp_late".into()),
        reason: None,
        account: AccountCode::parse("receivable:stripe").unwrap(),
        asset: usd.clone(),
    };
    ledger.run(0, "dispute-late", open).await;
    let matched = ResolveBreak {
        processor: "stripe".into(),
        batch_id: "b_2".into(),
        break_id: late.body["breaks"][0]["break_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        resolution: aggregates::payments::settlement::Resolution::Match,
        reason: None,
        asset: usd.clone(),
        entry_id: aggregates::EntryId::from_uuid(id(981)),
        claim: Some(("dispute/stripe/dp_late".into(), Some(payment(1)))),
    };
    ledger.run(0, "match-2", matched).await;
}

#[tokio::test]
async fn a_capture_rewritten_to_another_amount_is_found_at_its_seq() {
    // Proves: a payment's capture rewritten from 4000 to 3000 behind the
    // triggers (the chain recomputed) is found by deciding the recorded
    // capture again: a finding at the capture's seq, on the payment.
    use aggregates::ids::{CaptureId, PaymentId, TenderId};
    use aggregates::payments::{CaptureMode, IntentTerms, TenderMethod, TenderSource};
    use aggregates::{Amount, Asset};
    use commands::requests::payments::{AddTender, CapturePayment, CreatePayment};
    let ledger = Ledger::new().await;
    let usd = Asset::new("USD", 2).unwrap();
    let cents = |value: i64| Amount::new(value).unwrap();
    let payment_id = PaymentId::from_uuid(uuid::Uuid::from_u128(1));
    let tender_id = TenderId::from_uuid(uuid::Uuid::from_u128(10));
    let create = CreatePayment {
        payment_id,
        terms: IntentTerms {
            amount: cents(10_000),
            asset: usd.clone(),
            capture: CaptureMode::Manual,
            customer: None,
            description: None,
            authorization_ttl_seconds: 3_600,
            payee: None,
        },
    };
    ledger.run(0, "pay", create).await;
    let tender = AddTender {
        payment_id,
        tender_id,
        method: TenderMethod::Card,
        source: TenderSource::Processor {
            processor: "stripe".into(),
            reference: "ch_1".into(),
        },
        amount: cents(10_000),
        asset: usd.clone(),
    };
    ledger.run(0, "tender", tender).await;
    let capture = CapturePayment {
        payment_id,
        tender_id,
        capture_id: CaptureId::from_uuid(uuid::Uuid::from_u128(100)),
        amount: cents(4_000),
        reference: Some("cap_1".into()),
        last: false,
        processor: "stripe".into(),
        asset: usd,
    };
    let captured = ledger.run(0, "capture", capture).await;
    let seq = ledger
        .events(0)
        .await
        .iter()
        .find(|event| event.event_type == "Captured")
        .unwrap()
        .tenant_seq;
    assert!(seq <= captured.tenant_seq);
    ledger
        .edit_payload(0, seq, Some("Captured"), |payload| {
            payload["Captured"]["amount"] = json!(3_000);
        })
        .await;
    ledger.rechain(0).await;
    let report = ledger.verify().await;
    let findings = findings_of(&report, ledger.tenants[0]);
    let finding = super::first_replay_at(&findings, seq, "payment", &payment_id.to_string());
    assert_eq!(
        finding.message, "amount 3000 where the payment decides 4000",
        "{findings:?}"
    );
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(!report.ok);
}

#[tokio::test]
async fn a_history_recorded_under_older_rules_is_decided_again_under_them() {
    // Proves: requests recorded under the first rules (a processor tender's
    // second capture without a reference, and one going by another
    // payment's charge reference, both taken then) verify clean, each
    // decided again under the rules its first event records (none: the
    // first); the current rules refuse the same captures, and record
    // the current version; the rules are covered by the chain, and a request's
    // rules rewritten to the current ones (the chain recomputed) is found
    // at its seq. A commitment created under the first rules has its expiry
    // scheduled as then, without timing out ended windows first.
    use aggregates::ids::{CaptureId, PaymentId, TenderId};
    use aggregates::payments::{CaptureMode, IntentTerms, TenderMethod, TenderSource};
    use aggregates::rules::Rules;
    use aggregates::{Amount, Asset};
    use commands::requests::payments::{AddTender, CapturePayment, CreatePayment};
    let usd = Asset::new("USD", 2).unwrap();
    let cents = |value: i64| Amount::new(value).unwrap();
    let payment = |n: u128| PaymentId::from_uuid(uuid::Uuid::from_u128(n));
    let tender = |n: u128| TenderId::from_uuid(uuid::Uuid::from_u128(10 + n));
    let capture = |n: u128, amount: i64, reference: Option<&str>| CapturePayment {
        payment_id: payment(1),
        tender_id: tender(1),
        capture_id: CaptureId::from_uuid(uuid::Uuid::from_u128(100 + n)),
        amount: cents(amount),
        reference: reference.map(str::to_string),
        last: false,
        processor: "stripe".into(),
        asset: usd.clone(),
    };
    async fn set_up(ledger: &Ledger, usd: &Asset) {
        let cents = |value: i64| Amount::new(value).unwrap();
        for n in [1, 2] {
            let payment_id = PaymentId::from_uuid(uuid::Uuid::from_u128(n));
            let create = CreatePayment {
                payment_id,
                terms: IntentTerms {
                    amount: cents(10_000),
                    asset: usd.clone(),
                    capture: CaptureMode::Manual,
                    customer: None,
                    description: None,
                    authorization_ttl_seconds: 3_600,
                    payee: None,
                },
            };
            ledger.run(0, &format!("pay-{n}"), create).await;
            let card = AddTender {
                payment_id,
                tender_id: TenderId::from_uuid(uuid::Uuid::from_u128(10 + n)),
                method: TenderMethod::Card,
                source: TenderSource::Processor {
                    processor: "stripe".into(),
                    reference: format!("ch_{n}"),
                },
                amount: cents(10_000),
                asset: usd.clone(),
            };
            ledger.run(0, &format!("tender-{n}"), card).await;
        }
        let commitment = commands::requests::escrow::CreateCommitment {
            commitment_id: aggregates::ids::CommitmentId::from_uuid(uuid::Uuid::from_u128(50)),
            terms: super::escrow::terms(Some(chrono::Utc::now() + chrono::Duration::days(30))),
        };
        ledger.run(0, "commitment", commitment).await;
    }
    // The timeouts the scheduled expiry of the commitment names.
    async fn expiry_timeouts(ledger: &Ledger) -> Value {
        ledger.catch_up().await;
        let (request,): (Value,) = sqlx::query_as(
            "SELECT request FROM scheduled_work WHERE work LIKE 'commitment:%:expiry'",
        )
        .fetch_one(ledger.store().pool())
        .await
        .unwrap();
        request["timeouts"].clone()
    }
    let old = Ledger::under(Rules::FIRST).await;
    set_up(&old, &usd).await;
    old.run(0, "capture-1", capture(1, 4_000, None)).await;
    old.run(0, "capture-2", capture(2, 1_000, None)).await;
    old.run(0, "capture-3", capture(3, 1_000, Some("ch_2")))
        .await;
    let report = old.verify().await;
    assert_eq!(findings_of(&report, old.tenants[0]), vec![]);
    assert!(report.ok);
    // A commitment created under the first rules expires as it did then.
    assert_eq!(expiry_timeouts(&old).await, Value::Null);
    let events = old.events(0).await;
    assert!(events
        .iter()
        .all(|event| !event.metadata.contains("\"rules\"")));

    let current = Ledger::new().await;
    set_up(&current, &usd).await;
    current.run(0, "capture-1", capture(1, 4_000, None)).await;
    for (key, request, code) in [
        (
            "capture-2",
            capture(2, 1_000, None),
            "capture_reference_required",
        ),
        (
            "capture-3",
            capture(3, 1_000, Some("ch_2")),
            "reference_taken",
        ),
    ] {
        let refused = current
            .bus
            .execute(
                current.tenants[0],
                eventstore::IdempotencyKey::parse(key).unwrap(),
                request,
            )
            .await
            .unwrap();
        assert_eq!(refused.body["error"]["code"], code, "{}", refused.body);
    }
    let timeouts = expiry_timeouts(&current).await;
    assert_eq!(timeouts.as_array().map(Vec::len), Some(2), "{timeouts}");
    let first = current.events(0).await;
    assert!(
        first[0]
            .metadata
            .starts_with(&format!("{{\"rules\": {}, ", Rules::CURRENT.version())),
        "{}",
        first[0].metadata
    );

    // The second capture's first event made to claim the current rules.
    let seq = events
        .iter()
        .filter(|event| event.event_type == "Captured")
        .nth(1)
        .unwrap()
        .tenant_seq;
    let tenant = old.tenants[0];
    old.rewrite_rules(0, seq, 2).await;
    let findings = findings_of(&old.verify().await, tenant);
    let Some(Finding::Replay { finding, .. }) = findings.first() else {
        panic!("{findings:?}");
    };
    assert_eq!(finding.tenant_seq, seq, "{findings:?}");
    assert!(
        finding.message.contains("capture_reference_required"),
        "{findings:?}"
    );
}

#[tokio::test]
async fn a_history_recorded_under_the_second_rules_is_decided_again_under_them() {
    // Proves: under the second rules, a refund of a processor's tender and
    // a dispute without the processor's reference, a deposit into a
    // commitment whose inspection window has ended untimed-out, and an
    // entry of the journal's own on a processor's receivable, and work
    // dated after it was recorded, were taken; such a history verifies
    // clean. The third rules refuse the same five.
    use aggregates::ids::TenderId;
    use aggregates::ids::{CaptureId, CommitmentId, DepositId, DisputeId, PaymentId, RefundId};
    use aggregates::journal::account::AccountCode;
    use aggregates::journal::Side;
    use aggregates::payments::{CaptureMode, IntentTerms, TenderMethod, TenderSource};
    use aggregates::rules::Rules;
    use aggregates::{Amount, Asset};
    use chrono::{DateTime, Duration, Utc};
    use commands::pipeline::AnyRequest;
    use commands::requests::compensation::RecordWork;
    use commands::requests::escrow::{CreateCommitment, DepositFunds, Parties, SubmitMilestone};
    use commands::requests::journal::{EntryLine, PostEntry};
    use commands::requests::payments::{
        AddTender, CapturePayment, CreatePayment, OpenDispute, RefundPayment,
    };
    fn id(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(0x3000 + n)
    }
    fn cents(value: i64) -> Amount {
        Amount::new(value).unwrap()
    }
    fn usd() -> Asset {
        Asset::new("USD", 2).unwrap()
    }
    fn parties() -> Parties {
        Parties::of(&super::escrow::terms(None))
    }
    let payment = PaymentId::from_uuid(id(1));
    let commitment = CommitmentId::from_uuid(id(2));
    // A card payment of 10000 captured 4000, and a commitment with 20000
    // deposited and m1 submitted, its window ending an hour later; then
    // an hour and a half passes (the tender's expiry and the window's
    // timeout, due after an hour, are not owed yet: the scheduler has an
    // hour to catch up).
    async fn set_up(ledger: &Ledger, start: DateTime<Utc>) {
        let payment = PaymentId::from_uuid(id(1));
        let commitment = CommitmentId::from_uuid(id(2));
        ledger.set_clock(start);
        let create = CreatePayment {
            payment_id: payment,
            terms: IntentTerms {
                amount: cents(10_000),
                asset: usd(),
                capture: CaptureMode::Manual,
                customer: None,
                description: None,
                authorization_ttl_seconds: 3_600,
                payee: None,
            },
        };
        ledger.run(0, "pay", create).await;
        let card = AddTender {
            payment_id: payment,
            tender_id: TenderId::from_uuid(id(3)),
            method: TenderMethod::Card,
            source: TenderSource::Processor {
                processor: "stripe".into(),
                reference: "ch_1".into(),
            },
            amount: cents(10_000),
            asset: usd(),
        };
        ledger.run(0, "tender", card).await;
        let capture = CapturePayment {
            payment_id: payment,
            tender_id: TenderId::from_uuid(id(3)),
            capture_id: CaptureId::from_uuid(id(4)),
            amount: cents(4_000),
            reference: None,
            last: false,
            processor: "stripe".into(),
            asset: usd(),
        };
        ledger.run(0, "capture", capture).await;
        let create = CreateCommitment {
            commitment_id: commitment,
            terms: super::escrow::terms(None),
        };
        ledger.run(0, "commitment", create).await;
        let deposit = DepositFunds {
            commitment_id: commitment,
            deposit_id: DepositId::from_uuid(id(5)),
            amount: cents(20_000),
            reference: None,
            parties: parties(),
        };
        ledger.run(0, "deposit-1", deposit).await;
        let submit = SubmitMilestone {
            commitment_id: commitment,
            milestone_id: "m1".into(),
            parties: parties(),
        };
        ledger.run(0, "submit", submit).await;
        let line = |n: u128| aggregates::ids::LineId::from_uuid(id(0x100 + n));
        super::compensation::payee_with_work(ledger, start, line).await;
        ledger.set_clock(start + Duration::minutes(90));
    }
    let start = Utc::now();
    let stripe = AccountCode::parse("receivable:stripe").unwrap();
    let requests = || -> Vec<(&'static str, Box<dyn AnyRequest>, &'static str)> {
        vec![
            (
                "refund",
                Box::new(RefundPayment {
                    payment_id: payment,
                    refund_id: RefundId::from_uuid(id(6)),
                    amount: cents(1_000),
                    tender_id: None,
                    reference: None,
                    reason: None,
                    accounts: vec![stripe.clone()],
                    asset: usd(),
                }),
                "refund_reference_required",
            ),
            (
                "dispute",
                Box::new(OpenDispute {
                    payment_id: payment,
                    dispute_id: DisputeId::from_uuid(id(7)),
                    capture_id: CaptureId::from_uuid(id(4)),
                    amount: cents(1_000),
                    fee: cents(150),
                    reference: None,
                    reason: None,
                    account: stripe.clone(),
                    asset: usd(),
                }),
                "dispute_reference_required",
            ),
            (
                "deposit-2",
                Box::new(DepositFunds {
                    commitment_id: commitment,
                    deposit_id: DepositId::from_uuid(id(8)),
                    amount: cents(5_000),
                    reference: None,
                    parties: parties(),
                }),
                "inspection_window_ended",
            ),
            (
                "journal",
                Box::new(PostEntry {
                    entry_id: aggregates::EntryId::from_uuid(id(9)),
                    lines: vec![
                        EntryLine {
                            account: AccountCode::parse("revenue").unwrap(),
                            asset: usd(),
                            side: Side::Debit,
                            amount: cents(100),
                        },
                        EntryLine {
                            account: stripe.clone(),
                            asset: usd(),
                            side: Side::Credit,
                            amount: cents(100),
                        },
                    ],
                    effective_at: None,
                    reference: None,
                }),
                "account_code_reserved",
            ),
            (
                "work",
                Box::new(RecordWork {
                    payee_id: "alice".into(),
                    line_id: aggregates::ids::LineId::from_uuid(id(0x200)),
                    work: aggregates::compensation::Work::Time { minutes: 30 },
                    worked_at: start + Duration::hours(3),
                    reference: None,
                    asset: usd(),
                    plan_id: Some("sales".into()),
                }),
                "work_in_future",
            ),
        ]
    };
    let old = Ledger::under(Rules::SECOND).await;
    set_up(&old, start).await;
    for (key, request, _) in requests() {
        let key = eventstore::IdempotencyKey::parse(key).unwrap();
        let outcome = old.bus.execute_any(old.tenants[0], key, request).await;
        let outcome = outcome.unwrap();
        assert!(outcome.accepted(), "{}", outcome.body);
    }
    let report = old.verify().await;
    assert_eq!(findings_of(&report, old.tenants[0]), vec![]);
    assert!(report.ok);

    let current = Ledger::new().await;
    set_up(&current, start).await;
    for (key, request, code) in requests() {
        let key = eventstore::IdempotencyKey::parse(key).unwrap();
        let refused = current
            .bus
            .execute_any(current.tenants[0], key, request)
            .await;
        let refused = refused.unwrap();
        assert_eq!(refused.body["error"]["code"], code, "{}", refused.body);
    }
    assert!(current.verify().await.ok);
}

#[tokio::test]
async fn a_scheduled_request_rewritten_to_fall_due_after_it_was_recorded_is_found() {
    // Proves: a grant expiry whose recorded due time is rewritten (chain
    // recomputed) to an hour after the time it was recorded at is found at
    // its seq: the domain refuses it not_due, naming both times. (The
    // pipeline refuses such a request without recording it; verify reports
    // the recorded one.)
    use chrono::{DurationRound, Utc};
    let ledger = Ledger::new().await;
    let start = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    ledger.set_clock(start);
    let expires_at = start + chrono::Duration::hours(1);
    let grant = commands::requests::quota::IssueGrant {
        expires_at: Some(expires_at),
        ..super::purchase(100, 50)
    };
    ledger.run(0, "buy", grant).await;
    ledger.set_clock(start + chrono::Duration::hours(2));
    let expire = commands::requests::quota::ExpireGrants {
        quota: aggregates::quota::QuotaType::Credits,
        account: None,
        due_at: Some(expires_at),
    };
    let expired = ledger.run(0, "expire", expire).await;
    let seq = expired.tenant_seq;
    let recorded_at = ledger.event(0, seq).await.recorded_at;
    let late = start + chrono::Duration::hours(3);
    let tenant = ledger.tenants[0];
    ledger
        .tamper(&[format!(
            "UPDATE events SET metadata = jsonb_set(metadata, '{{request,due_at}}', '\"{}\"') \
             WHERE tenant_id = '{tenant}' AND tenant_seq = {seq}",
            late.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )])
        .await;
    ledger.rechain(0).await;
    let findings = findings_of(&ledger.verify().await, tenant);
    assert_eq!(
        findings,
        vec![domain(
            seq,
            "credits",
            &format!(
                "the domain refuses the recorded expire_grants request: not_due: \
                 this request is due at {late}; it is {recorded_at}"
            )
        )]
    );
}

#[tokio::test]
async fn a_plan_change_under_the_fourth_rules_issues_whole_amounts_and_verifies() {
    // Proves: the scenario's plan change (after 1,000 credits consumed in
    // the period) decided under the fourth rules issues team_v4's whole
    // 20,000 credits, and verify decides it again so; under the current
    // rules the same history issues 19,000, and each verifies clean.
    use aggregates::rules::Rules;
    for (rules, credits) in [(Rules::FOURTH, 20_000), (Rules::CURRENT, 19_000)] {
        let ledger = Ledger::under(rules).await;
        ledger.scenario().await;
        let issued = payload(&ledger, 15).await;
        assert_eq!(
            issued["GrantIssued"]["terms"]["amount"],
            json!(credits),
            "rules {}",
            rules.version()
        );
        ledger.catch_up().await;
        let report = ledger.verify().await;
        assert_eq!(findings_of(&report, ledger.tenants[0]), vec![]);
        assert!(report.ok, "rules {}", rules.version());
    }
}

#[tokio::test]
async fn a_history_recorded_under_the_sixth_rules_is_decided_again_under_them() {
    // Proves: a build of the sixth rules (a rolling upgrade) reversed a
    // cash tender's capture that the current rules recorded (naming
    // add_tender), and took USD/3 as a tenant's first use of USD; such a
    // history verifies clean. Each request's recorded rules rewritten to 7
    // (the chain recomputed) is a finding at its seq: the seventh rules
    // refuse both.
    use aggregates::ids::{PaymentId, TenderId};
    use aggregates::journal::account::{AccountCode, AccountSpec};
    use aggregates::journal::{AccountType, Side};
    use aggregates::payments::{CaptureMode, IntentTerms, TenderMethod, TenderSource};
    use aggregates::rules::Rules;
    use aggregates::{Amount, Asset, EntryId};
    use commands::requests::journal::{EntryLine, OpenAccount, PostEntry, ReverseEntry};
    use commands::requests::payments::{AddTender, CreatePayment};
    let usd = Asset::new("USD", 2).unwrap();
    let cents = |value: i64| Amount::new(value).unwrap();
    let code = |text: &str| AccountCode::parse(text).unwrap();
    let id = |n: u128| uuid::Uuid::from_u128(0x7_0000 + n);
    let ledger = Ledger::new().await;
    let sixth = commands::CommandBus::start(
        ledger.store().clone(),
        commands::BusConfig {
            rules: Rules::SIXTH,
            ..commands::BusConfig::default()
        },
        std::sync::Arc::new(commands::Metrics::default()),
    );
    let older =
        |tenant: usize, key: &'static str, request: Box<dyn commands::pipeline::AnyRequest>| {
            let sixth = &sixth;
            let tenant_id = ledger.tenants[tenant];
            async move {
                let outcome = sixth
                    .execute_any(
                        tenant_id,
                        eventstore::IdempotencyKey::parse(key).unwrap(),
                        request,
                    )
                    .await
                    .unwrap();
                assert!(outcome.accepted(), "{key}: {}", outcome.body);
            }
        };
    let payment_id = PaymentId::from_uuid(id(1));
    let create = CreatePayment {
        payment_id,
        terms: IntentTerms {
            amount: cents(2_000),
            asset: usd.clone(),
            capture: CaptureMode::Automatic,
            customer: None,
            description: None,
            authorization_ttl_seconds: 3_600,
            payee: None,
        },
    };
    ledger.run(0, "pay", create).await;
    let cash = AddTender {
        payment_id,
        tender_id: TenderId::from_uuid(id(2)),
        method: TenderMethod::Cash,
        source: TenderSource::Cash,
        amount: cents(2_000),
        asset: usd.clone(),
    };
    let tendered = ledger.run(0, "cash", cash).await;
    let capture: EntryId = tendered.body["capture_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let reverse = ReverseEntry {
        entry_id: capture,
        reversal_id: EntryId::from_uuid(id(3)),
        lines: commands::requests::books::transfer_lines(
            &code("cash"),
            &code("revenue"),
            &usd,
            cents(2_000),
        )
        .to_vec(),
        reference: None,
    };
    older(0, "reverse-capture", Box::new(reverse)).await;
    for (key, account) in [("open-a", "a"), ("open-b", "b")] {
        let open = OpenAccount {
            code: code(account),
            spec: AccountSpec::new(AccountType::Asset),
        };
        ledger.run(1, key, open).await;
    }
    let thousandths = Asset::new("USD", 3).unwrap();
    let line = |account: &str, side| EntryLine {
        account: code(account),
        asset: thousandths.clone(),
        side,
        amount: cents(5),
    };
    let post = PostEntry {
        entry_id: EntryId::from_uuid(id(4)),
        lines: vec![line("a", Side::Debit), line("b", Side::Credit)],
        effective_at: None,
        reference: None,
    };
    older(1, "usd-3", Box::new(post)).await;
    let report = ledger.verify().await;
    assert!(report.ok, "{:?}", report.lines());
    // The capture's entry names its request; the sixth rules' reversal
    // names none, as that build wrote it.
    let recorded_by: Vec<Value> = ledger
        .events(0)
        .await
        .iter()
        .filter(|event| event.event_type == "EntryRecorded")
        .map(|event| {
            let payload: Value = serde_json::from_str(&event.payload).unwrap();
            payload["EntryRecorded"]["recorded_by"].clone()
        })
        .collect();
    assert_eq!(recorded_by, [json!("add_tender"), Value::Null]);

    let mut tampered = Vec::new();
    for (tenant, command, code) in [
        (0, "reverse_entry", "entry_recorded_by_domain"),
        (1, "post_entry", "asset_scale_mismatch"),
    ] {
        let seq = ledger
            .events(tenant)
            .await
            .into_iter()
            .find(|event| {
                event
                    .metadata
                    .contains(&format!("\"command\": \"{command}\", \"request\""))
            })
            .unwrap()
            .tenant_seq;
        let tenant_id = ledger.tenants[tenant];
        ledger.rewrite_rules(tenant, seq, 7).await;
        tampered.push((tenant_id, seq, code));
    }
    let report = ledger.verify().await;
    for (tenant_id, seq, code) in tampered {
        let findings = &report
            .tenants
            .iter()
            .find(|tenant| tenant.tenant_id == tenant_id)
            .unwrap()
            .findings;
        let [Finding::Replay { finding, .. }] = findings.as_slice() else {
            panic!("{code}: {findings:?}");
        };
        assert_eq!(finding.tenant_seq, seq, "{findings:?}");
        assert!(finding.message.contains(code), "{findings:?}");
    }
}

#[tokio::test]
async fn an_event_rewritten_to_another_variant_or_time_within_its_request_is_found() {
    // Proves: a hold's HoldVoided payload rewritten to HoldExpired with the
    // same fields (its event_type column left as it was), and a later
    // event of the same request moved a second later (the chain
    // recomputed), are each a finding at its seq: the payload's variant is
    // compared with the decision's, and a request's events are recorded
    // at one time.
    let ledger = Ledger::new().await;
    let now = chrono::Utc::now() - chrono::Duration::days(1);
    ledger.set_clock(now);
    journal_requests(&ledger, now).await;
    let events = ledger.events(0).await;
    let at = events
        .iter()
        .position(|event| event.event_type == "HoldVoided")
        .unwrap();
    // The request's last event: moved later, it still precedes the next
    // request's.
    let members = events[at + 1..]
        .iter()
        .take_while(|event| !event.metadata.contains("\"request\""))
        .count();
    assert!(members >= 1);
    let (voided, next) = (&events[at], &events[at + members]);
    assert_eq!(next.recorded_at, voided.recorded_at);
    ledger
        .edit_payload(0, voided.tenant_seq, None, |payload| {
            *payload = json!({"HoldExpired": payload["HoldVoided"].clone()});
        })
        .await;
    let tenant = ledger.tenants[0];
    ledger
        .tamper(&[format!(
            "UPDATE events SET recorded_at = recorded_at + interval '1 second' \
             WHERE tenant_id = '{tenant}' AND tenant_seq = {}",
            next.tenant_seq
        )])
        .await;
    ledger.rechain(0).await;
    let findings = findings_of(&ledger.verify().await, tenant);
    let located: Vec<(i64, String)> = findings
        .iter()
        .map(|finding| match finding {
            Finding::Replay { finding, .. } => (finding.tenant_seq, finding.message.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    let time =
        |at: chrono::DateTime<chrono::Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    assert_eq!(
        located,
        [
            (
                voided.tenant_seq,
                "payload variant HoldExpired where the hold decides HoldVoided".to_string()
            ),
            (
                next.tenant_seq,
                format!(
                    "recorded_at {} where its request's other events record {}",
                    time(next.recorded_at + chrono::Duration::seconds(1)),
                    time(voided.recorded_at)
                )
            ),
        ]
    );
}
