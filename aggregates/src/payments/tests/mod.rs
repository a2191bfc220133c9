//! Given/when/then for every transition of a payment and every rejection.

mod captures;
mod disputes;
mod refunds;
mod settles;
mod tenders;

use super::*;
use crate::money::Asset;
use crate::rules::Rules;
use chrono::TimeZone;
use cqrs_es::test::TestFramework;

type Given = TestFramework<Payment>;

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, hour, 0, 0).unwrap()
}

fn cents(value: i64) -> Amount {
    Amount::new(value).unwrap()
}

fn usd() -> Asset {
    Asset::new("USD", 2).unwrap()
}

fn tender_id(n: u128) -> TenderId {
    TenderId::from_uuid(uuid::Uuid::from_u128(n))
}

fn capture_id(n: u128) -> CaptureId {
    CaptureId::from_uuid(uuid::Uuid::from_u128(0x100 + n))
}

fn refund_id(n: u128) -> RefundId {
    RefundId::from_uuid(uuid::Uuid::from_u128(0x200 + n))
}

/// The reservation of tender `tender` after its `generation`th capture (0:
/// the authorization's first).
fn hold(tender: u128, generation: u128) -> crate::ids::HoldId {
    crate::ids::HoldId::from_uuid(uuid::Uuid::from_u128(0x400 + tender * 1_000 + generation))
}

/// `event` (a capture) settling reservation `settled` of its tender and
/// reserving `next` after it (generations, see [`hold`]).
fn with_holds(event: PaymentEvent, settled: Option<u128>, next: Option<u128>) -> PaymentEvent {
    match event {
        PaymentEvent::Captured {
            tender_id: tender,
            capture_id,
            amount,
            reference,
            released,
            at,
            ..
        } => {
            let n = tender.as_uuid().as_u128();
            PaymentEvent::Captured {
                tender_id: tender,
                capture_id,
                amount,
                reference,
                released,
                settled_hold_id: settled.map(|generation| hold(n, generation)),
                next_hold_id: next.map(|generation| hold(n, generation)),
                at,
            }
        }
        other => other,
    }
}

fn dispute_id(n: u128) -> DisputeId {
    DisputeId::from_uuid(uuid::Uuid::from_u128(0x300 + n))
}

/// A payment of `amount`, captured `capture`, authorizations living 5
/// hours.
fn terms(amount: i64, capture: CaptureMode) -> IntentTerms {
    IntentTerms {
        amount: cents(amount),
        asset: usd(),
        capture,
        customer: Some("c-1".into()),
        description: None,
        authorization_ttl_seconds: 5 * 3_600,
        payee: Some("alice".into()),
    }
}

/// Created at 1:00: 10000, manual capture.
fn created() -> PaymentEvent {
    PaymentEvent::PaymentCreated {
        terms: terms(10_000, CaptureMode::Manual),
        at: at(1),
    }
}

fn card() -> TenderSource {
    TenderSource::Processor {
        processor: "stripe".into(),
        reference: "ch_1".into(),
    }
}

/// Tender `n` of `amount` by card, authorized at 2:00 (expiring at 7:00).
fn authorized(n: u128, amount: i64) -> PaymentEvent {
    PaymentEvent::TenderAuthorized {
        tender_id: tender_id(n),
        method: TenderMethod::Card,
        source: card(),
        amount: cents(amount),
        expires_at: at(7),
        hold_id: Some(hold(n, 0)),
        at: at(2),
    }
}

/// Capture `capture` of `amount` on tender `tender` at 3:00.
fn captured(tender: u128, capture: u128, amount: i64, released: i64) -> PaymentEvent {
    PaymentEvent::Captured {
        tender_id: tender_id(tender),
        capture_id: capture_id(capture),
        amount: cents(amount),
        reference: Some(format!("cap_{capture}")),
        released: cents(released),
        settled_hold_id: None,
        next_hold_id: None,
        at: at(3),
    }
}

fn capture(tender: u128, capture: u128, amount: i64, last: bool, hour: u32) -> PaymentCommand {
    PaymentCommand::Capture {
        tender_id: tender_id(tender),
        capture_id: capture_id(capture),
        amount: cents(amount),
        reference: Some(format!("cap_{capture}")),
        last,
        next_hold_id: hold(tender, capture),
        rules: Rules::CURRENT,
        at: at(hour),
    }
}

/// The state after `events`.
fn state(events: Vec<PaymentEvent>) -> Payment {
    let mut payment = Payment::default();
    for event in events {
        payment.apply(event);
    }
    payment
}

#[test]
fn a_payment_is_created_once_for_a_positive_amount_and_a_bounded_ttl() {
    Given::with(())
        .given_no_previous_events()
        .when(PaymentCommand::Create {
            terms: terms(10_000, CaptureMode::Manual),
            at: at(1),
        })
        .then_expect_events(vec![created()]);
    Given::with(())
        .given(vec![created()])
        .when(PaymentCommand::Create {
            terms: terms(10_000, CaptureMode::Manual),
            at: at(1),
        })
        .then_expect_error(PaymentError::Exists);
    Given::with(())
        .given_no_previous_events()
        .when(PaymentCommand::Create {
            terms: terms(0, CaptureMode::Manual),
            at: at(1),
        })
        .then_expect_error(PaymentError::NonPositiveAmount);
    for ttl in [0, decide::AUTHORIZATION_TTL_SECONDS_MAX + 1] {
        let mut long = terms(10_000, CaptureMode::Manual);
        long.authorization_ttl_seconds = ttl;
        Given::with(())
            .given_no_previous_events()
            .when(PaymentCommand::Create {
                terms: long,
                at: at(1),
            })
            .then_expect_error(PaymentError::InvalidTtl);
    }
    assert_eq!(
        state(vec![created()]).status(),
        Some(PaymentStatus::RequiresTender)
    );
    assert_eq!(Payment::default().status(), None);
}

#[test]
fn nothing_happens_to_a_payment_never_created() {
    let commands = vec![
        capture(1, 1, 100, false, 3),
        PaymentCommand::Cancel { at: at(3) },
        PaymentCommand::ExpireAuthorization {
            tender_id: tender_id(1),
            at: at(9),
        },
        PaymentCommand::Refund {
            refund_id: refund_id(1),
            amount: cents(1),
            tender_id: None,
            reference: None,
            reason: None,
            rules: Rules::CURRENT,
            at: at(3),
        },
    ];
    for command in commands {
        Given::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(PaymentError::Unknown);
    }
}

#[test]
fn the_status_follows_tenders_captures_and_refunds() {
    let mut events = vec![created(), authorized(1, 6_000)];
    assert_eq!(
        state(events.clone()).status(),
        Some(PaymentStatus::PartiallyAuthorized)
    );
    events.push(authorized(2, 4_000));
    assert_eq!(
        state(events.clone()).status(),
        Some(PaymentStatus::Authorized)
    );
    events.push(captured(1, 1, 6_000, 0));
    assert_eq!(
        state(events.clone()).status(),
        Some(PaymentStatus::PartiallyCaptured)
    );
    events.push(captured(2, 2, 4_000, 0));
    assert_eq!(
        state(events.clone()).status(),
        Some(PaymentStatus::Captured)
    );
    events.push(PaymentEvent::Refunded {
        refund_id: refund_id(1),
        amount: cents(1_000),
        parts: vec![RefundPart {
            tender_id: tender_id(2),
            amount: cents(1_000),
        }],
        reference: None,
        reason: None,
        at: at(4),
    });
    assert_eq!(
        state(events.clone()).status(),
        Some(PaymentStatus::PartiallyRefunded)
    );
    events.push(PaymentEvent::Refunded {
        refund_id: refund_id(2),
        amount: cents(9_000),
        parts: vec![
            RefundPart {
                tender_id: tender_id(2),
                amount: cents(3_000),
            },
            RefundPart {
                tender_id: tender_id(1),
                amount: cents(6_000),
            },
        ],
        reference: None,
        reason: None,
        at: at(4),
    });
    assert_eq!(state(events).status(), Some(PaymentStatus::Refunded));
}

#[test]
fn a_payment_with_an_authorization_open_is_still_being_captured() {
    let refunded = |n, tender, amount| PaymentEvent::Refunded {
        refund_id: refund_id(n),
        amount: cents(amount),
        parts: vec![RefundPart {
            tender_id: tender_id(tender),
            amount: cents(amount),
        }],
        reference: None,
        reason: None,
        at: at(4),
    };
    // 4,000 of 10,000 captured and refunded: 6,000 may still be captured.
    let mut events = vec![created(), authorized(1, 10_000), captured(1, 1, 4_000, 0)];
    events.push(refunded(1, 1, 4_000));
    assert_eq!(
        state(events.clone()).status(),
        Some(PaymentStatus::PartiallyCaptured)
    );
    events.push(captured(1, 2, 6_000, 0));
    assert_eq!(
        state(events).status(),
        Some(PaymentStatus::PartiallyRefunded)
    );
    // A final capture of 4,000 releases 6,000: captured, until a tender
    // for that rest is open; finally captured short (1,000, releasing
    // 5,000), the releases (11,000) pass the payment's amount.
    let mut events = vec![
        created(),
        authorized(1, 10_000),
        captured(1, 1, 4_000, 6_000),
    ];
    assert_eq!(
        state(events.clone()).status(),
        Some(PaymentStatus::Captured)
    );
    events.push(authorized(2, 6_000));
    assert_eq!(
        state(events.clone()).status(),
        Some(PaymentStatus::PartiallyCaptured)
    );
    events.push(captured(2, 2, 1_000, 5_000));
    assert_eq!(state(events).status(), Some(PaymentStatus::Captured));
}
