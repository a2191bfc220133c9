//! Work a history owes itself: what its events scheduled, fell due an
//! hour before its last event, and nothing did.

use super::{findings_of, Ledger};
use aggregates::ids::{CommitmentId, DepositId, TransferId};
use aggregates::Amount;
use chrono::{DateTime, Duration, TimeZone, Utc};
use commands::requests::escrow::{
    CreateCommitment, DepositFunds, Parties, ReleaseMilestone, SubmitMilestone,
};
use replay::state::ReplayFinding;
use replay::verify::Finding;

fn id(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x0E_0000 + n)
}

/// Commitment `id(n)` of [`super::escrow::terms`] expiring at
/// `expires_at`, `amount` deposited.
async fn commitment(ledger: &Ledger, n: u128, expires_at: DateTime<Utc>, amount: i64) {
    let terms = super::escrow::terms(Some(expires_at));
    let create = CreateCommitment {
        commitment_id: CommitmentId::from_uuid(id(n)),
        terms,
    };
    ledger.run(0, &format!("create-{n}"), create).await;
    let deposit = DepositFunds {
        commitment_id: CommitmentId::from_uuid(id(n)),
        deposit_id: DepositId::from_uuid(id(n + 100)),
        amount: Amount::new(amount).unwrap(),
        reference: None,
        parties: Parties::of(&super::escrow::terms(None)),
    };
    ledger.run(0, &format!("deposit-{n}"), deposit).await;
}

/// Both milestones of commitment `id(n)` submitted and released whole: it
/// is completed.
async fn complete(ledger: &Ledger, n: u128) {
    let parties = Parties::of(&super::escrow::terms(None));
    for (m, milestone) in [(1, "m1"), (2, "m2")] {
        let submit = SubmitMilestone {
            commitment_id: CommitmentId::from_uuid(id(n)),
            milestone_id: milestone.into(),
            parties: parties.clone(),
        };
        ledger.run(0, &format!("submit-{n}-{m}"), submit).await;
        let release = ReleaseMilestone {
            commitment_id: CommitmentId::from_uuid(id(n)),
            milestone_id: milestone.into(),
            transfer_id: TransferId::from_uuid(id(n + 200 + m)),
            amount: None,
            accepted: true,
            parties: parties.clone(),
        };
        ledger.run(0, &format!("release-{n}-{m}"), release).await;
    }
}

/// The scheduler's ticker on the ledger's pipeline, at the ledger's clock.
fn ticker(ledger: &Ledger) -> commands::scheduler::Ticker {
    let now = ledger.now.clone();
    commands::scheduler::Ticker::new(
        ledger.store().pool().clone(),
        ledger.bus.clone(),
        std::sync::Arc::new(commands::domains::Registry::new()),
        commands::Clock::from_fn(move || now.lock().unwrap().unwrap_or_else(Utc::now)),
        commands::scheduler::TickerConfig::default(),
    )
}

#[tokio::test]
async fn work_the_scheduler_never_did_is_owed_an_hour_after_it_fell_due() {
    // Proves: a commitment's expiry that nothing submitted is not a finding
    // while the history's last event is less than an hour past its due
    // time, and is one (at the seq of the event that scheduled it, naming
    // the work, its request and key) from that hour on, in the database and
    // in an export (with its line); a run of it closed by hand in
    // `scheduler_runs` leaves it owed; a completed commitment's expiry,
    // which the domain refuses (a final answer), is never owed (decided
    // under rules 8: since rules 9 the completion settles the expiry, so
    // it is never submitted); once the ticker submits the expiry, the
    // history verifies clean.
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let due = t0 + Duration::hours(2);
    let ledger = Ledger::under(aggregates::rules::Rules::EIGHTH).await;
    ledger.set_clock(t0);
    commitment(&ledger, 1, due, 50_000).await;
    complete(&ledger, 1).await;
    commitment(&ledger, 2, due, 7_000).await;
    let scheduled = ledger
        .events(0)
        .await
        .into_iter()
        .find(|event| event.idempotency_key == "create-2")
        .unwrap();
    let key = format!("pm:scheduler:{}:0", scheduled.event_id);
    let later = |n: u128, at: DateTime<Utc>| {
        ledger.set_clock(at);
        commitment(&ledger, n, at + Duration::days(30), 1_000)
    };
    later(3, due + Duration::hours(1) - Duration::seconds(1)).await;
    let report = ledger.verify().await;
    assert!(report.ok, "{:?}", report.lines());
    later(4, due + Duration::hours(1)).await;
    let owed = ReplayFinding {
        tenant_seq: scheduled.tenant_seq,
        aggregate_type: "commitment".into(),
        aggregate_id: id(2).to_string(),
        message: format!(
            "work commitment:{}:expiry fell due at 2026-12-01T02:00:00Z and is owed: its \
             expire_commitment request (key {key}) is not recorded, and the domain takes it at \
             2026-12-01T03:00:00Z",
            id(2)
        ),
    };
    let found = |report: &replay::verify::VerifyReport| findings_of(report, ledger.tenants[0]);
    let expected = [Finding::Replay {
        finding: owed.clone(),
        line: None,
    }];
    assert_eq!(found(&ledger.verify().await), expected);
    let dir = std::env::temp_dir().join(format!("ledger-owed-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("acme.jsonl");
    replay::export::export(ledger.store(), ledger.tenants[0], &file, true)
        .await
        .unwrap();
    let offline = replay::export::verify_file(&file).unwrap();
    let line = u64::try_from(scheduled.tenant_seq).unwrap() + 1;
    assert_eq!(
        offline.tenants[0].findings,
        [Finding::Replay {
            finding: owed,
            line: Some(line),
        }]
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // Closed by hand: the ticker passes it by, and it stays owed.
    ledger.catch_up().await;
    let close = format!(
        "INSERT INTO scheduler_runs (tenant_id, idempotency_key, work, leased_until, attempts, \
         outcome) VALUES ('{}', '{key}', 'commitment:{}:expiry', now(), 1, 'accepted')",
        ledger.tenants[0],
        id(2)
    );
    ledger.tamper(&[close]).await;
    let ticker = ticker(&ledger);
    ticker.tick().await.unwrap();
    assert_eq!(found(&ledger.verify().await), expected);
    // The completed commitment's expiry was submitted and refused.
    let (code,): (Option<String>,) = sqlx::query_as(
        "SELECT r.error_code FROM scheduler_runs r JOIN scheduled_work w \
         ON w.tenant_id = r.tenant_id AND w.idempotency_key = r.idempotency_key \
         WHERE w.work = $1",
    )
    .bind(format!("commitment:{}:expiry", id(1)))
    .fetch_one(ledger.store().pool())
    .await
    .unwrap();
    assert_eq!(code.as_deref(), Some("commitment_completed"));

    // Opened again: the ticker expires it, and nothing is owed.
    ledger
        .tamper(&[format!(
            "DELETE FROM scheduler_runs WHERE idempotency_key = '{key}'"
        )])
        .await;
    ticker.tick().await.unwrap();
    let report = ledger.verify().await;
    assert!(report.ok, "{:?}", report.lines());
}

#[tokio::test]
async fn work_is_done_under_its_key_only_by_a_request_of_its_kind() {
    // Proves: another request relabelled with an owed expiry's scheduler
    // key (a deposit, its chain recomputed) does not do the work: the
    // expiry is still owed, named as before.
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let due = t0 + Duration::hours(2);
    let ledger = Ledger::new().await;
    ledger.set_clock(t0);
    commitment(&ledger, 2, due, 7_000).await;
    let scheduled = ledger
        .events(0)
        .await
        .into_iter()
        .find(|event| {
            event.idempotency_key == "create-2" && event.event_type == "CommitmentCreated"
        })
        .unwrap();
    let key = format!("pm:scheduler:{}:0", scheduled.event_id);
    ledger.set_clock(due + Duration::hours(1));
    commitment(&ledger, 3, due + Duration::days(30), 1_000).await;
    let owed = vec![Finding::Replay {
        finding: ReplayFinding {
            tenant_seq: scheduled.tenant_seq,
            aggregate_type: "commitment".into(),
            aggregate_id: id(2).to_string(),
            message: format!(
                "work commitment:{}:expiry fell due at 2026-12-01T02:00:00Z and is owed: its \
                 expire_commitment request (key {key}) is not recorded, and the domain takes it \
                 at 2026-12-01T03:00:00Z",
                id(2)
            ),
        },
        line: None,
    }];
    assert_eq!(findings_of(&ledger.verify().await, ledger.tenants[0]), owed);
    ledger
        .tamper(&[format!(
            "UPDATE events SET idempotency_key = '{key}' \
             WHERE tenant_id = '{}' AND idempotency_key = 'deposit-3'",
            ledger.tenants[0]
        )])
        .await;
    ledger.rechain(0).await;
    assert_eq!(findings_of(&ledger.verify().await, ledger.tenants[0]), owed);
}

/// Runs every process manager over what it has not reacted to yet.
async fn react(ledger: &Ledger) {
    let pool = ledger.store().pool();
    let reactors: Vec<_> = commands::domains::process_managers()
        .into_iter()
        .map(|build| build(ledger.bus.clone(), ledger.store().clone()))
        .collect();
    let names: Vec<&str> = reactors.iter().map(|reactor| reactor.name()).collect();
    projections::status::register_reactors(pool, &names)
        .await
        .unwrap();
    for reactor in &reactors {
        projections::reactor::react_catch_up(pool, reactor.as_ref())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_commission_the_process_manager_never_accrued_is_owed_an_hour_after_its_capture() {
    // Proves: a capture attributed to a payee whose commission the
    // process manager never submitted (its checkpoint moved past it, as it
    // were) is not a finding while the history's last event is less than
    // an hour after the capture, and is one from that hour on (at the
    // capture's seq, naming the process manager, the accrue_commission
    // request and its key); once the process manager catches up, nothing
    // is owed. A refund's clawback likewise, from an hour after the
    // refund.
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let capture_id = |n: u128| uuid::Uuid::from_u128(0x0E_1000 + n);
    let line = |n: u128| aggregates::ids::LineId::from_uuid(capture_id(n));
    let ledger = Ledger::new().await;
    ledger.set_clock(t0);
    super::compensation::payee_with_work(&ledger, t0, line).await;
    super::compensation::attributed_capture(&ledger, capture_id, t0).await;
    let captured = ledger
        .events(0)
        .await
        .into_iter()
        .find(|event| event.event_type == "Captured")
        .unwrap();
    let later = |n: u128, at: DateTime<Utc>| {
        ledger.set_clock(at);
        commitment(&ledger, n, at + Duration::days(30), 1_000)
    };
    later(1, t0 + Duration::hours(1) - Duration::seconds(1)).await;
    let report = ledger.verify().await;
    assert!(report.ok, "{:?}", report.lines());
    later(2, t0 + Duration::hours(1)).await;
    let owed = ReplayFinding {
        tenant_seq: captured.tenant_seq,
        aggregate_type: "payment".into(),
        aggregate_id: capture_id(100).to_string(),
        message: format!(
            "the commissions process manager's reaction fell due at 2026-12-01T00:00:00Z and is \
             owed: its accrue_commission request (key pm:commissions:{}:0) is not recorded, and \
             the domain takes it at 2026-12-01T01:00:00Z",
            captured.event_id
        ),
    };
    assert_eq!(
        findings_of(&ledger.verify().await, ledger.tenants[0]),
        [Finding::Replay {
            finding: owed,
            line: None,
        }]
    );
    ledger.catch_up().await;
    react(&ledger).await;
    let report = ledger.verify().await;
    assert!(report.ok, "{:?}", report.lines());
    let refunded_at = t0 + Duration::hours(2);
    ledger.set_clock(refunded_at);
    super::compensation::refund(&ledger, capture_id, 102, 2_500).await;
    let refunded = ledger
        .events(0)
        .await
        .into_iter()
        .find(|event| event.event_type == "Refunded")
        .unwrap();
    later(3, refunded_at + Duration::hours(1)).await;
    let findings = findings_of(&ledger.verify().await, ledger.tenants[0]);
    let [Finding::Replay { finding, .. }] = findings.as_slice() else {
        panic!("{findings:?}");
    };
    assert_eq!(finding.tenant_seq, refunded.tenant_seq, "{findings:?}");
    assert!(
        finding.message.contains(&format!(
            "its claw_back_commission request (key pm:commissions:{}:0)",
            refunded.event_id
        )),
        "{findings:?}"
    );
    ledger.catch_up().await;
    react(&ledger).await;
    let report = ledger.verify().await;
    assert!(report.ok, "{:?}", report.lines());
}

#[tokio::test]
async fn a_sale_for_a_payee_created_after_it_is_not_owed_a_commission() {
    // Proves: a capture attributed to a payee created only afterwards
    // (which the seventh rules allowed) is not owed its commission however
    // late the history runs: the process manager may have reacted at once
    // and been refused (unknown_payee, final and recorded beside the
    // chain), and the history cannot tell. A replay before the payee was
    // created lists no payee (the payment's decision read one that was not
    // there).
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let capture_id = |n: u128| uuid::Uuid::from_u128(0x0E_2000 + n);
    let ledger = Ledger::under(aggregates::rules::Rules::SEVENTH).await;
    ledger.set_clock(t0);
    super::compensation::attributed_capture(&ledger, capture_id, t0).await;
    let before = ledger.replay(0, replay::as_of::AsOf::Head).await;
    assert_eq!(before["payees"], serde_json::json!([]), "{before}");
    let payee = commands::requests::compensation::CreatePayee {
        payee_id: "alice".into(),
        name: "Alice".into(),
        asset: aggregates::Asset::new("USD", 2).unwrap(),
        role_id: None,
    };
    ledger.run(0, "payee", payee).await;
    ledger.set_clock(t0 + Duration::hours(2));
    commitment(&ledger, 1, t0 + Duration::days(30), 1_000).await;
    let report = ledger.verify().await;
    assert!(report.ok, "{:?}", report.lines());
}

#[tokio::test]
async fn a_renewal_the_ticker_did_schedules_the_next_under_a_key_of_its_own() {
    // Proves: the renewal the ticker submitted at the first period's end
    // settles the first period's work (nothing of it is owed however late
    // the history runs), and the next period's renewal, scheduled by the
    // renewal's own event under its own key, is owed from an hour after
    // the second period's end, with the second period's grant expiries;
    // the ticker catching up leaves nothing owed.
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let first_end = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
    let second_end = Utc.with_ymd_and_hms(2027, 2, 1, 0, 0, 0).unwrap();
    let ledger = Ledger::new().await;
    ledger.set_clock(t0);
    let subscribe = commands::requests::subscription::Subscribe {
        plan: aggregates::plan::PlanCatalog::builtin()
            .get("hobby_v3")
            .unwrap()
            .clone(),
        trial_ends_at: None,
    };
    ledger.run(0, "subscribe", subscribe).await;
    ledger.set_clock(first_end + Duration::minutes(1));
    ledger.catch_up().await;
    let ticker = ticker(&ledger);
    ticker.tick().await.unwrap();
    ledger.set_clock(second_end + Duration::hours(1));
    commitment(&ledger, 1, second_end + Duration::days(30), 1_000).await;
    let events = ledger.events(0).await;
    let renewed = events
        .iter()
        .find(|event| event.event_type == "PeriodRenewed")
        .unwrap();
    let findings = findings_of(&ledger.verify().await, ledger.tenants[0]);
    let owed: Vec<(i64, String)> = findings
        .iter()
        .map(|finding| match finding {
            Finding::Replay { finding, .. } => (finding.tenant_seq, finding.message.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    // The second period's grants are issued right after its renewal event,
    // in the renewal's own request.
    let issued: Vec<&replay::source::AuditEvent> = events
        .iter()
        .filter(|event| {
            event.idempotency_key == renewed.idempotency_key && event.event_type == "GrantIssued"
        })
        .collect();
    assert_eq!(owed.len(), 1 + issued.len(), "{owed:?}");
    assert_eq!(owed[0].0, renewed.tenant_seq, "{owed:?}");
    assert!(
        owed[0].1.starts_with(&format!(
            "work subscription:renewal fell due at 2027-02-01T00:00:00Z and is owed: its \
             renew_subscription request (key pm:scheduler:{}:0)",
            renewed.event_id
        )),
        "{owed:?}"
    );
    for (grant, (seq, message)) in issued.iter().zip(&owed[1..]) {
        assert_eq!(*seq, grant.tenant_seq, "{owed:?}");
        assert!(message.contains("expire_grants"), "{owed:?}");
    }
    ledger.catch_up().await;
    ticker.tick().await.unwrap();
    let report = ledger.verify().await;
    assert!(report.ok, "{:?}", report.lines());
}
