//! Compensation requests for the history of every request kind: a plan
//! and a second version, a role, a payee assigned, work, an adjustment, a
//! commission held then payable, a clawback, and a pay run created,
//! approved, reopened and paid; and a tampered line amount found.

use super::Ledger;
use aggregates::compensation::{Rule, RunTerms, Work};
use aggregates::ids::{LineId, PayRunId};
use aggregates::{Amount, Asset};
use chrono::{DateTime, Duration, Utc};
use commands::requests::compensation::{
    AccrueCommission, AddPlanVersion, AdjustLine, ApprovePayRun, AssignPlan, CancelPayRun,
    ClawBack, CreatePayRun, CreatePayee, CreateRole, MakeLinePayable, PayPayRun, RecordWork,
    ReopenPayRun, ReverseClawBack,
};

fn usd() -> Asset {
    Asset::new("USD", 2).unwrap()
}

fn rules(rate: i64) -> Vec<Rule> {
    vec![
        Rule::Hourly {
            rate_per_hour: Amount::new(rate).unwrap(),
        },
        Rule::Commission {
            basis_points: 1_000,
            cap_per_period: None,
            holding_days: 14,
        },
    ]
}

/// Plan `sales` from `now`, role `rep`, payee `alice` assigned from
/// `now`, and 90 minutes of work (line `line(1)`).
pub(super) async fn payee_with_work(
    ledger: &Ledger,
    now: DateTime<Utc>,
    line: impl Fn(u128) -> LineId,
) {
    let plan = AddPlanVersion {
        plan_id: "sales".into(),
        asset: Some(usd()),
        effective_from: now,
        rules: rules(2_500),
    };
    ledger.run(0, "comp-plan", plan).await;
    let role = CreateRole {
        role_id: "rep".into(),
        name: "Sales rep".into(),
        plan_id: Some("sales".into()),
    };
    ledger.run(0, "comp-role", role).await;
    let payee = CreatePayee {
        payee_id: "alice".into(),
        name: "Alice".into(),
        asset: usd(),
        role_id: Some("rep".into()),
    };
    ledger.run(0, "comp-payee", payee).await;
    let assign = AssignPlan {
        payee_id: "alice".into(),
        plan_id: "sales".into(),
        from: now,
    };
    ledger.run(0, "comp-assign", assign).await;
    let work = RecordWork {
        payee_id: "alice".into(),
        line_id: line(1),
        work: Work::Time { minutes: 90 },
        worked_at: now,
        reference: Some("shift-1".into()),
        asset: usd(),
        plan_id: Some("sales".into()),
    };
    ledger.run(0, "comp-work", work).await;
}

/// A fresh ledger at 2026-12-01 with its clock two hours on, and alice's
/// plan, assignment and 90 minutes of work ([`payee_with_work`]), her
/// lines numbered from `base`.
async fn alice_two_hours_in(base: u128) -> (Ledger, DateTime<Utc>, impl Fn(u128) -> LineId) {
    let ledger = Ledger::new().await;
    let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 1, 0, 0, 0).unwrap();
    let line = move |n| LineId::from_uuid(uuid::Uuid::from_u128(base + n));
    ledger.set_clock(now + Duration::hours(2));
    payee_with_work(&ledger, now, line).await;
    (ledger, now, line)
}

/// Payment `id(100)`, attributed to alice: a card tender of 10,000
/// captured as `id(101)` at `at` (the clock set there, so the capture is
/// stamped then).
pub(super) async fn attributed_capture(
    ledger: &Ledger,
    id: impl Fn(u128) -> uuid::Uuid,
    at: DateTime<Utc>,
) {
    use aggregates::ids::{CaptureId, PaymentId, TenderId};
    use aggregates::payments::{CaptureMode, IntentTerms, TenderMethod, TenderSource};
    use commands::requests::payments::{AddTender, CapturePayment, CreatePayment};
    ledger.set_clock(at);
    let payment_id = PaymentId::from_uuid(id(100));
    let tender_id = TenderId::from_uuid(id(110));
    let amount = Amount::new(10_000).unwrap();
    let create = CreatePayment {
        payment_id,
        terms: IntentTerms {
            amount,
            asset: usd(),
            capture: CaptureMode::Manual,
            customer: None,
            description: None,
            authorization_ttl_seconds: 3_600,
            payee: Some("alice".into()),
        },
    };
    ledger.run(0, "comp-sale", create).await;
    let tender = AddTender {
        payment_id,
        tender_id,
        method: TenderMethod::Card,
        source: TenderSource::Processor {
            processor: "stripe".into(),
            reference: "ch_comp".into(),
        },
        amount,
        asset: usd(),
    };
    ledger.run(0, "comp-tender", tender).await;
    let capture = CapturePayment {
        payment_id,
        tender_id,
        capture_id: CaptureId::from_uuid(id(101)),
        amount,
        reference: Some("cap_comp".into()),
        last: true,
        processor: "stripe".into(),
        asset: usd(),
    };
    let captured = ledger.run(0, "comp-capture", capture).await;
    assert!(captured.accepted(), "{}", captured.body);
}

fn receivable() -> aggregates::journal::account::AccountCode {
    aggregates::journal::account::AccountCode::parse("receivable:stripe").unwrap()
}

/// Dispute `id(n)` of `amount` on capture `id(101)` of payment `id(100)`,
/// opened (under the key `comp-dispute-<n>`).
async fn open_dispute(ledger: &Ledger, id: impl Fn(u128) -> uuid::Uuid, n: u128, amount: i64) {
    use aggregates::ids::{CaptureId, DisputeId, PaymentId};
    let open = commands::requests::payments::OpenDispute {
        payment_id: PaymentId::from_uuid(id(100)),
        dispute_id: DisputeId::from_uuid(id(n)),
        capture_id: CaptureId::from_uuid(id(101)),
        amount: Amount::new(amount).unwrap(),
        fee: Amount::new(150).unwrap(),
        reference: Some(format!("dp_comp_{n}")),
        reason: None,
        account: receivable(),
        asset: usd(),
    };
    ledger.run(0, &format!("comp-dispute-{n}"), open).await;
}

/// [`open_dispute`], answered and lost.
async fn lost_dispute(ledger: &Ledger, id: impl Fn(u128) -> uuid::Uuid, n: u128, amount: i64) {
    use aggregates::ids::{DisputeId, PaymentId};
    use aggregates::payments::DisputeOutcome;
    use commands::requests::payments::{CloseDispute, SubmitEvidence};
    open_dispute(ledger, &id, n, amount).await;
    let payment_id = PaymentId::from_uuid(id(100));
    let dispute_id = DisputeId::from_uuid(id(n));
    let evidence = SubmitEvidence {
        payment_id,
        dispute_id,
    };
    ledger.run(0, &format!("comp-evidence-{n}"), evidence).await;
    let close = CloseDispute {
        payment_id,
        dispute_id,
        outcome: DisputeOutcome::Lost,
        entry_id: aggregates::EntryId::from_uuid(id(n + 1_000)),
        account: receivable(),
        asset: usd(),
    };
    ledger.run(0, &format!("comp-lost-{n}"), close).await;
}

/// Refund `id(n)` of `amount` from payment `id(100)` (under the key
/// `comp-refund-<n>`).
pub(super) async fn refund(ledger: &Ledger, id: impl Fn(u128) -> uuid::Uuid, n: u128, amount: i64) {
    let refund = commands::requests::payments::RefundPayment {
        payment_id: aggregates::ids::PaymentId::from_uuid(id(100)),
        refund_id: aggregates::ids::RefundId::from_uuid(id(n)),
        amount: Amount::new(amount).unwrap(),
        tender_id: None,
        reference: Some(format!("re_comp_{n}")),
        reason: None,
        accounts: vec![receivable()],
        asset: usd(),
    };
    ledger.run(0, &format!("comp-refund-{n}"), refund).await;
}

/// Refund `id(n)` failed, its entry reversed by `id(n + 1_000)`.
async fn failed_refund(ledger: &Ledger, id: impl Fn(u128) -> uuid::Uuid, n: u128) {
    let refunds = aggregates::journal::account::AccountCode::parse("refunds").unwrap();
    let fail = commands::requests::payments::FailRefund {
        payment_id: aggregates::ids::PaymentId::from_uuid(id(100)),
        refund_id: aggregates::ids::RefundId::from_uuid(id(n)),
        reversal_id: aggregates::EntryId::from_uuid(id(n + 1_000)),
        reason: None,
        accounts: vec![refunds, receivable()],
        asset: usd(),
    };
    ledger
        .run(0, &format!("comp-refund-failed-{n}"), fail)
        .await;
}

/// Runs `request` under `key`: refused `commission_source_mismatch`,
/// naming `payment_id`, `payee_id` and `source`.
async fn refused_as_not_its_source<R: commands::pipeline::Request>(
    ledger: &Ledger,
    key: &str,
    request: R,
    [payment_id, payee_id, source]: [String; 3],
) {
    let refused = ledger
        .bus
        .execute(
            ledger.tenants[0],
            eventstore::IdempotencyKey::parse(key).unwrap(),
            request,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            &refused.body["error"]["code"],
            &refused.body["error"]["details"]
        ),
        (
            &serde_json::json!("commission_source_mismatch"),
            &serde_json::json!({"payment_id": payment_id, "payee_id": payee_id, "source": source})
        ),
        "{key}: {}",
        refused.body
    );
}

/// Alice's commission (line `line`) on capture `id(101)` of payment
/// `id(100)` ([`attributed_capture`]): 10,000 captured at `captured_at`.
fn commission(
    id: impl Fn(u128) -> uuid::Uuid,
    line: LineId,
    captured_at: DateTime<Utc>,
) -> AccrueCommission {
    AccrueCommission {
        payee_id: "alice".into(),
        line_id: line,
        payment_id: id(100).to_string(),
        source: format!("capture:{}", id(101)),
        basis: Amount::new(10_000).unwrap(),
        currency: usd(),
        captured_at,
        asset: usd(),
        plan_id: Some("sales".into()),
    }
}

/// A clawback (line `line`) of `amount` refunded or lost of that capture,
/// for `source`.
fn clawed(id: impl Fn(u128) -> uuid::Uuid, line: LineId, source: String, amount: i64) -> ClawBack {
    ClawBack {
        payee_id: "alice".into(),
        line_id: line,
        payment_id: id(100).to_string(),
        source,
        captures: vec![format!("capture:{}", id(101))],
        amount: Amount::new(amount).unwrap(),
        asset: usd(),
    }
}

/// Every compensation request kind, in tenant 0 at `now` (and after).
pub(super) async fn compensation_requests(ledger: &Ledger, now: DateTime<Utc>) {
    let id = |n: u128| uuid::Uuid::from_u128(0xC0_0000 + n);
    let line = |n: u128| LineId::from_uuid(id(n));
    ledger.set_clock(now);
    payee_with_work(ledger, now, line).await;
    let version = AddPlanVersion {
        plan_id: "sales".into(),
        asset: None,
        effective_from: now + Duration::days(1),
        rules: rules(3_000),
    };
    ledger.run(0, "comp-version", version).await;
    let adjust = AdjustLine {
        payee_id: "alice".into(),
        line_id: line(2),
        amount: -500,
        reason: Some("late".into()),
        corrects: Some(line(1)),
        asset: usd(),
    };
    ledger.run(0, "comp-adjust", adjust).await;
    attributed_capture(ledger, id, now).await;
    ledger
        .run(0, "comp-commission", commission(id, line(3), now))
        .await;
    refund(ledger, &id, 102, 2_500).await;
    let claw_back = clawed(id, line(4), format!("refund:{}", id(102)), 2_500);
    ledger.run(0, "comp-claw-back", claw_back).await;
    failed_refund(ledger, &id, 102).await;
    let reverse = ReverseClawBack {
        payee_id: "alice".into(),
        line_id: line(5),
        clawback_source: format!("refund:{}", id(102)),
        source: format!("refund_failed:{}", id(102)),
        asset: usd(),
        payment_id: Some(id(100).to_string()),
    };
    ledger.run(0, "comp-reverse", reverse).await;
    lost_dispute(ledger, &id, 103, 2_500).await;
    let claw_back = clawed(id, line(6), format!("dispute:{}", id(103)), 2_500);
    ledger.run(0, "comp-claw-back-2", claw_back).await;
    let payable_at = now + Duration::days(14);
    ledger.set_clock(payable_at + Duration::minutes(1));
    // The commission and its clawbacks (held as long) become payable.
    for n in [3, 4, 5, 6] {
        let payable = MakeLinePayable {
            payee_id: "alice".into(),
            line_id: line(n),
            due_at: Some(payable_at),
        };
        ledger.run(0, &format!("comp-payable-{n}"), payable).await;
    }
    let run = PayRunId::from_uuid(id(200));
    let create = CreatePayRun {
        pay_run_id: run,
        terms: RunTerms {
            period_start: now,
            period_end: payable_at,
            cutoff: payable_at,
        },
        payees: vec!["alice".into()],
    };
    let created = ledger.run(0, "comp-run", create).await;
    assert_eq!(created.body["payees"][0]["net"], 4_000, "{}", created.body);
    ledger
        .run(0, "comp-approve", ApprovePayRun { pay_run_id: run })
        .await;
    let reopen = ReopenPayRun {
        pay_run_id: run,
        payees: vec!["alice".into()],
    };
    ledger.run(0, "comp-reopen", reopen).await;
    ledger
        .run(0, "comp-approve-2", ApprovePayRun { pay_run_id: run })
        .await;
    let pay = PayPayRun {
        pay_run_id: run,
        payees: vec![("alice".into(), usd())],
    };
    let paid = ledger.run(0, "comp-pay", pay).await;
    assert_eq!(paid.body["payees"][0]["paid"], 4_000, "{}", paid.body);
    // A run made by mistake (nothing payable is left), canceled.
    let spare = PayRunId::from_uuid(id(201));
    let create = CreatePayRun {
        pay_run_id: spare,
        terms: RunTerms {
            period_start: now,
            period_end: payable_at,
            cutoff: payable_at,
        },
        payees: vec!["alice".into()],
    };
    ledger.run(0, "comp-run-spare", create).await;
    let cancel = CancelPayRun {
        pay_run_id: spare,
        payees: vec!["alice".into()],
    };
    let canceled = ledger.run(0, "comp-cancel", cancel).await;
    assert_eq!(canceled.body["status"], "canceled", "{}", canceled.body);
}

#[tokio::test]
async fn a_work_line_rewritten_to_another_amount_is_found_at_its_seq() {
    // Proves: a work line's amount rewritten behind the triggers (3750 to
    // 3700, its entry left alone, the chain recomputed) is found by
    // deciding the recorded work again: one finding at the line's seq, on
    // the payee, naming the amount.
    use super::findings_of;
    let (ledger, _, _) = alice_two_hours_in(0xC1_0000).await;
    let seq = ledger
        .events(0)
        .await
        .iter()
        .find(|event| event.event_type == "LineAccrued")
        .unwrap()
        .tenant_seq;
    ledger
        .edit_payload(0, seq, Some("LineAccrued"), |payload| {
            assert_eq!(payload["LineAccrued"]["amount"], 3_750, "{payload}");
            payload["LineAccrued"]["amount"] = serde_json::json!(3_700);
        })
        .await;
    ledger.rechain(0).await;
    let report = ledger.verify().await;
    let findings = findings_of(&report, ledger.tenants[0]);
    let finding = super::first_replay_at(&findings, seq, "payee", "alice");
    assert!(finding.message.contains("amount"), "{findings:?}");
    assert!(!report.ok);
}

#[tokio::test]
async fn a_canceled_run_rewritten_as_reopened_is_found_at_its_seq() {
    // Proves: a cancel's `RunCanceled` rewritten as `RunReopened` (the run a
    // draft again, to be approved and paid; the chain recomputed) is found
    // by deciding the recorded cancel again: one finding at the event's
    // seq, on the pay run, naming both event types.
    use super::findings_of;
    let (ledger, now, _) = alice_two_hours_in(0xC2_0000).await;
    let run = PayRunId::from_uuid(uuid::Uuid::from_u128(0xC2_0200));
    let create = CreatePayRun {
        pay_run_id: run,
        terms: RunTerms {
            period_start: now,
            period_end: now + Duration::days(1),
            cutoff: now + Duration::hours(1),
        },
        payees: vec!["alice".into()],
    };
    let created = ledger.run(0, "comp-run", create).await;
    assert_eq!(created.body["payees"][0]["net"], 3_750, "{}", created.body);
    let cancel = CancelPayRun {
        pay_run_id: run,
        payees: vec!["alice".into()],
    };
    let canceled = ledger.run(0, "comp-cancel", cancel).await;
    assert_eq!(canceled.body["status"], "canceled", "{}", canceled.body);
    let events = ledger.events(0).await;
    let types: Vec<&str> = events
        .iter()
        .rev()
        .take(2)
        .map(|event| event.event_type.as_str())
        .collect();
    assert_eq!(types, ["LinesReleased", "RunCanceled"]);
    let seq = events[events.len() - 2].tenant_seq;
    ledger
        .edit_payload(0, seq, Some("RunReopened"), |payload| {
            let at = payload["RunCanceled"]["at"].clone();
            *payload = serde_json::json!({ "RunReopened": { "at": at } });
        })
        .await;
    ledger.rechain(0).await;
    let report = ledger.verify().await;
    let findings = findings_of(&report, ledger.tenants[0]);
    let finding = super::first_replay_at(&findings, seq, "pay_run", run.to_string().as_str());
    assert!(
        finding
            .message
            .starts_with("RunReopened where the pay_run decides RunCanceled"),
        "{findings:?}"
    );
    assert!(!report.ok);
}

#[tokio::test]
async fn a_commission_corrected_to_nothing_is_clawed_back_again_only_under_the_fifth_rules() {
    // Proves: a commission of 1,000 corrected by -1,000, its capture then
    // lost in a dispute: under the fifth rules the clawback takes 1,000
    // more (the payee docked twice), under the current rules it is a
    // refused line of nothing; verify decides each history again so, and
    // both are clean. The current history with the dispute's recorded
    // rules rewritten to 5 (the chain recomputed) is a finding at its seq.
    use aggregates::rules::Rules;
    use serde_json::{json, Value};
    let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 1, 0, 0, 0).unwrap();
    let id = |n: u128| uuid::Uuid::from_u128(0xC2_0000 + n);
    let line = |n: u128| LineId::from_uuid(id(n));
    let mut current = None;
    for (rules, amount, status) in [
        (Rules::FIFTH, -1_000, "held"),
        (Rules::CURRENT, 0, "refused"),
    ] {
        let ledger = Ledger::under(rules).await;
        ledger.set_clock(now + Duration::hours(3));
        payee_with_work(&ledger, now, line).await;
        let captured_at = now + Duration::hours(3);
        attributed_capture(&ledger, id, captured_at).await;
        ledger
            .run(0, "comp-commission", commission(id, line(3), captured_at))
            .await;
        let correct = AdjustLine {
            payee_id: "alice".into(),
            line_id: line(4),
            amount: -1_000,
            reason: Some("sale booked in error".into()),
            corrects: Some(line(3)),
            asset: usd(),
        };
        ledger.run(0, "comp-correct", correct).await;
        lost_dispute(&ledger, &id, 102, 10_000).await;
        let lost = clawed(id, line(5), format!("dispute:{}", id(102)), 10_000);
        ledger.run(0, "comp-lost", lost).await;
        let line_event = ledger
            .events(0)
            .await
            .into_iter()
            .rfind(|event| event.aggregate_type == "payee")
            .unwrap();
        let seq = line_event.tenant_seq;
        let event: Value = serde_json::from_str(&line_event.payload).unwrap();
        assert_eq!(
            (
                &event["LineAccrued"]["amount"],
                &event["LineAccrued"]["status"]
            ),
            (&json!(amount), &json!(status)),
            "rules {}",
            rules.version()
        );
        ledger.catch_up().await;
        let report = ledger.verify().await;
        assert!(report.ok, "rules {}: {:?}", rules.version(), report.lines());
        current = Some((ledger, seq));
    }
    let (ledger, seq) = current.unwrap();
    let tenant = ledger.tenants[0];
    ledger.rewrite_rules(0, seq, 5).await;
    let entry = line(5);
    let message = format!(
        "amount 0 where the payee decides -1000; cap_shares none where the payee decides \
         [{{\"amount\":-1000,\"period\":\"2026-12\"}}]; payable_at 2026-12-01T03:00:00Z where \
         the payee decides 2026-12-15T03:00:00Z; reason no_commission: nothing of the capture is \
         left to claw back where the payee decides none; status refused where the payee decides \
         held; the claw_back_commission request also decides Posted of \
         account/compensation_expense (asset USD/2, entry_id {entry}, movement \
         {{\"credit\":1000,\"debit\":0}}), which the history lacks; the claw_back_commission \
         request also decides Posted of account/compensation_payable:alice (asset USD/2, \
         entry_id {entry}, movement {{\"credit\":0,\"debit\":1000}}), which the history lacks; \
         the claw_back_commission request also decides EntryRecorded of entry/{entry} \
         (effective_at 2026-12-01T03:00:00Z, entry [debit compensation_payable:alice 1000 USD/2, \
         credit compensation_expense 1000 USD/2], reference payee:alice:line:{entry}, reverses \
         none), which the history lacks"
    );
    assert_eq!(
        super::findings_of(&ledger.verify().await, tenant),
        vec![replay::verify::Finding::Replay {
            finding: replay::state::ReplayFinding {
                tenant_seq: seq,
                aggregate_type: "payee".into(),
                aggregate_id: "alice".into(),
                message,
            },
            line: None,
        }]
    );
}

#[tokio::test]
async fn a_commission_not_made_from_its_capture_is_refused_since_the_seventh_rules() {
    // Proves: under the current rules a commission whose basis, capture
    // time, capture, payment, payee or currency is not its capture's is
    // refused
    // (commission_source_mismatch, naming the payment, payee and source),
    // and the one made from the capture is taken; a build of the sixth
    // rules took a basis of 20,000 on the same capture, and that history
    // verifies clean until its rules are rewritten to 7 (the chain
    // recomputed): then it is a finding at its seq. A clawback whose
    // amount, captures or payee is not its refund's, or that names a
    // dispute still open, or a refund whose failure was given back, is
    // refused so too.
    use aggregates::rules::Rules;
    let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 1, 0, 0, 0).unwrap();
    let id = |n: u128| uuid::Uuid::from_u128(0xC7_0000 + n);
    let line = |n: u128| LineId::from_uuid(id(n));
    let ledger = Ledger::new().await;
    ledger.set_clock(now);
    payee_with_work(&ledger, now, line).await;
    let captured_at = now + Duration::hours(1);
    attributed_capture(&ledger, id, captured_at).await;
    let right = commission(id, line(3), captured_at);
    let wrong: [(&str, AccrueCommission); 6] = [
        (
            "basis",
            AccrueCommission {
                basis: Amount::new(20_000).unwrap(),
                ..right.clone()
            },
        ),
        (
            "time",
            AccrueCommission {
                captured_at: captured_at + Duration::seconds(1),
                ..right.clone()
            },
        ),
        (
            "capture",
            AccrueCommission {
                source: format!("capture:{}", id(999)),
                ..right.clone()
            },
        ),
        (
            "payment",
            AccrueCommission {
                payment_id: id(998).to_string(),
                ..right.clone()
            },
        ),
        (
            "payee",
            AccrueCommission {
                payee_id: "bob".into(),
                ..right.clone()
            },
        ),
        (
            "currency",
            AccrueCommission {
                currency: Asset::new("EUR", 2).unwrap(),
                ..right.clone()
            },
        ),
    ];
    for (key, request) in wrong {
        let named = [&request.payment_id, &request.payee_id, &request.source].map(String::clone);
        refused_as_not_its_source(&ledger, key, request, named).await;
    }
    // A clawback takes from what a refund or a lost dispute names (the
    // refund a minute after the capture, so the capture is before it).
    ledger.set_clock(captured_at + Duration::minutes(1));
    refund(&ledger, &id, 102, 2_500).await;
    open_dispute(&ledger, &id, 103, 1_000).await;
    let refunded = clawed(id, line(4), format!("refund:{}", id(102)), 2_500);
    let clawbacks: [(&str, ClawBack); 5] = [
        (
            "refund-amount",
            clawed(id, line(4), format!("refund:{}", id(102)), 2_000),
        ),
        (
            "refund-captures",
            ClawBack {
                captures: vec![format!("capture:{}", id(999))],
                ..refunded.clone()
            },
        ),
        (
            "open-dispute",
            clawed(id, line(4), format!("dispute:{}", id(103)), 1_000),
        ),
        (
            "clawback-payee",
            ClawBack {
                payee_id: "bob".into(),
                ..refunded.clone()
            },
        ),
        (
            "refund-no-captures",
            ClawBack {
                captures: Vec::new(),
                ..refunded.clone()
            },
        ),
    ];
    for (key, request) in clawbacks {
        let named = [&request.payment_id, &request.payee_id, &request.source].map(String::clone);
        refused_as_not_its_source(&ledger, key, request, named).await;
    }
    ledger.run(0, "claw-back", refunded).await;
    // A refund that failed, its failure given back before any clawback:
    // a clawback of it then would take what the refund never paid.
    refund(&ledger, &id, 104, 500).await;
    failed_refund(&ledger, &id, 104).await;
    let reverse = ReverseClawBack {
        payee_id: "alice".into(),
        line_id: line(6),
        clawback_source: format!("refund:{}", id(104)),
        source: format!("refund_failed:{}", id(104)),
        asset: usd(),
        payment_id: Some(id(100).to_string()),
    };
    ledger.run(0, "reverse-2", reverse).await;
    let late = clawed(id, line(7), format!("refund:{}", id(104)), 500);
    let named = [&late.payment_id, &late.payee_id, &late.source].map(String::clone);
    refused_as_not_its_source(&ledger, "late", late, named).await;
    let inflated = AccrueCommission {
        basis: Amount::new(20_000).unwrap(),
        ..right
    };
    taken_under(&ledger, Rules::SIXTH, captured_at, "inflated", inflated).await;
    found_only_under(&ledger, "inflated", 7, "commission_source_mismatch").await;
}

/// Runs `request` under `key` in tenant 0 on a bus deciding under `rules`
/// at `at`: taken.
async fn taken_under<R: commands::pipeline::Request>(
    ledger: &Ledger,
    rules: aggregates::rules::Rules,
    at: DateTime<Utc>,
    key: &str,
    request: R,
) {
    let bus = commands::CommandBus::start(
        ledger.store().clone(),
        commands::BusConfig {
            rules,
            clock: commands::Clock::from_fn(move || at),
            ..commands::BusConfig::default()
        },
        std::sync::Arc::new(commands::Metrics::default()),
    );
    let taken = bus
        .execute(
            ledger.tenants[0],
            eventstore::IdempotencyKey::parse(key).unwrap(),
            request,
        )
        .await
        .unwrap();
    assert!(taken.accepted(), "{}", taken.body);
}

/// The ledger verifies clean; once tenant 0's request under `key` is
/// rewritten to rules `rules` (the chain recomputed), it is the one
/// finding, at its seq, refused with `code`.
async fn found_only_under(ledger: &Ledger, key: &str, rules: u32, code: &str) {
    let report = ledger.verify().await;
    assert!(report.ok, "{:?}", report.lines());
    let seq = ledger
        .events(0)
        .await
        .into_iter()
        .find(|event| event.idempotency_key == key)
        .unwrap()
        .tenant_seq;
    ledger.rewrite_rules(0, seq, rules).await;
    let findings = super::findings_of(&ledger.verify().await, ledger.tenants[0]);
    let [replay::verify::Finding::Replay { finding, .. }] = findings.as_slice() else {
        panic!("{findings:?}");
    };
    assert_eq!(finding.tenant_seq, seq, "{findings:?}");
    assert!(finding.message.contains(code), "{findings:?}");
}

#[tokio::test]
async fn a_run_cut_off_past_its_period_verifies_under_the_tenth_rules_only() {
    // Proves: a pay run whose cutoff is past its period and after it was
    // created, taken by a build of the tenth rules, verifies clean; with
    // its recorded rules rewritten to 11 (the chain recomputed) it is the
    // one finding, at its seq, refused `cutoff_outside_period`.
    let (ledger, now, _) = alice_two_hours_in(0xC3_0000).await;
    let create = CreatePayRun {
        pay_run_id: PayRunId::from_uuid(uuid::Uuid::from_u128(0xC3_0200)),
        terms: RunTerms {
            period_start: now,
            period_end: now + Duration::days(1),
            cutoff: now + Duration::days(3),
        },
        payees: vec!["alice".into()],
    };
    let at = now + Duration::hours(2);
    taken_under(
        &ledger,
        aggregates::rules::Rules::TENTH,
        at,
        "run-late-cutoff",
        create,
    )
    .await;
    found_only_under(&ledger, "run-late-cutoff", 11, "cutoff_outside_period").await;
}

#[tokio::test]
async fn a_run_cut_off_past_its_period_under_the_tenth_rules_claims_no_further_once_reopened() {
    // Proves: a run a build of the tenth rules created with its cutoff
    // three days past its period (a day long), reopened under the current
    // rules, claims the work done in the period (3750) and not an hour
    // worked after the period ended, before the run was created; the
    // history verifies clean.
    let (ledger, now, line) = alice_two_hours_in(0xC4_0000).await;
    let late = RecordWork {
        payee_id: "alice".into(),
        line_id: line(2),
        work: Work::Time { minutes: 60 },
        worked_at: now + Duration::minutes(90),
        reference: Some("shift-2".into()),
        asset: usd(),
        plan_id: Some("sales".into()),
    };
    ledger.run(0, "comp-work-late", late).await;
    let run = PayRunId::from_uuid(uuid::Uuid::from_u128(0xC4_0200));
    let create = CreatePayRun {
        pay_run_id: run,
        terms: RunTerms {
            period_start: now - Duration::days(1),
            period_end: now + Duration::hours(1),
            cutoff: now + Duration::days(3),
        },
        payees: vec!["alice".into()],
    };
    let at = now + Duration::hours(2);
    taken_under(
        &ledger,
        aggregates::rules::Rules::TENTH,
        at,
        "run-tenth",
        create,
    )
    .await;
    let reopen = ReopenPayRun {
        pay_run_id: run,
        payees: vec!["alice".into()],
    };
    let reopened = ledger.run(0, "run-tenth-reopen", reopen).await;
    let payee = &reopened.body["payees"][0];
    assert_eq!(
        (&payee["gross"], &payee["lines"]),
        (&serde_json::json!(3_750), &serde_json::json!([line(1)])),
        "{}",
        reopened.body
    );
    let report = ledger.verify().await;
    assert!(report.ok, "{:?}", report.lines());
}

#[tokio::test]
async fn a_clawback_given_back_without_its_failed_refund_is_refused_since_the_eighth_rules() {
    // Proves: under the current rules a clawback's reversal that names no
    // payment (details.payment_id null), another payee, a refund that
    // stands, or two different refunds in its sources is refused
    // (commission_source_mismatch, naming the payment, payee and source),
    // and the one made from the failed refund is taken; a build of the
    // seventh rules gave back a clawback whose refund stands (naming its
    // payment), and that history verifies clean until its rules are
    // rewritten to 8: then it is a finding at its seq.
    use aggregates::rules::Rules;
    let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 1, 0, 0, 0).unwrap();
    let id = |n: u128| uuid::Uuid::from_u128(0xC8_0000 + n);
    let line = |n: u128| LineId::from_uuid(id(n));
    let ledger = Ledger::new().await;
    ledger.set_clock(now);
    payee_with_work(&ledger, now, line).await;
    attributed_capture(&ledger, id, now).await;
    ledger
        .run(0, "commission", commission(id, line(3), now))
        .await;
    ledger.set_clock(now + Duration::minutes(1));
    for (n, refund_id) in [(4, 102), (5, 104)] {
        refund(&ledger, &id, refund_id, 2_500).await;
        let claw_back = clawed(id, line(n), format!("refund:{}", id(refund_id)), 2_500);
        ledger.run(0, &format!("claw-back-{n}"), claw_back).await;
    }
    let right = ReverseClawBack {
        payee_id: "alice".into(),
        line_id: line(6),
        clawback_source: format!("refund:{}", id(102)),
        source: format!("refund_failed:{}", id(102)),
        asset: usd(),
        payment_id: Some(id(100).to_string()),
    };
    let standing = right.clone();
    let named = |request: &ReverseClawBack| {
        let payment_id = request.payment_id.clone().unwrap();
        [payment_id, request.payee_id.clone(), request.source.clone()]
    };
    refused_as_not_its_source(&ledger, "standing", standing.clone(), named(&standing)).await;
    failed_refund(&ledger, &id, 102).await;
    let unnamed = ReverseClawBack {
        payment_id: None,
        ..right.clone()
    };
    let refused = ledger
        .bus
        .execute(
            ledger.tenants[0],
            eventstore::IdempotencyKey::parse("no-payment").unwrap(),
            unnamed,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            &refused.body["error"]["code"],
            &refused.body["error"]["details"]
        ),
        (
            &serde_json::json!("commission_source_mismatch"),
            &serde_json::json!({"payment_id": null, "payee_id": "alice", "source": right.source})
        ),
        "{}",
        refused.body
    );
    let wrong: [(&str, ReverseClawBack); 2] = [
        (
            "payee",
            ReverseClawBack {
                payee_id: "bob".into(),
                ..right.clone()
            },
        ),
        (
            "two-refunds",
            ReverseClawBack {
                clawback_source: format!("refund:{}", id(104)),
                ..right.clone()
            },
        ),
    ];
    for (key, request) in wrong {
        let details = named(&request);
        refused_as_not_its_source(&ledger, key, request, details).await;
    }
    let taken = ledger.run(0, "reverse", right).await;
    assert!(taken.accepted(), "{}", taken.body);
    // Refund id(104) stands: a seventh-rules build gave its clawback back.
    let forged = ReverseClawBack {
        line_id: line(7),
        clawback_source: format!("refund:{}", id(104)),
        source: format!("refund_failed:{}", id(104)),
        ..standing
    };
    taken_under(&ledger, Rules::SEVENTH, now, "forged", forged).await;
    found_only_under(&ledger, "forged", 8, "commission_source_mismatch").await;
}
