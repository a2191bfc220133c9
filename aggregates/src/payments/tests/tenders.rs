//! Tenders: authorized up to the payment's amount; cash, gift cards and
//! automatic capture captured at once; cancel before any capture; expiry
//! of an authorization at its time.

use super::*;

fn tender(n: u128, method: TenderMethod, source: TenderSource, amount: i64) -> PaymentCommand {
    PaymentCommand::Tender {
        tender_id: tender_id(n),
        method,
        source,
        amount: cents(amount),
        capture_id: capture_id(n),
        hold_id: hold(n, 0),
        at: at(2),
    }
}

fn card_tender(n: u128, amount: i64) -> PaymentCommand {
    tender(n, TenderMethod::Card, card(), amount)
}

#[test]
fn a_card_tender_is_authorized_for_the_ttl_and_not_captured_under_manual_capture() {
    Given::with(())
        .given(vec![created()])
        .when(card_tender(1, 6_000))
        .then_expect_events(vec![authorized(1, 6_000)]);
}

#[test]
fn tenders_never_cover_more_than_the_payment() {
    Given::with(())
        .given(vec![created(), authorized(1, 6_000)])
        .when(card_tender(2, 4_001))
        .then_expect_error(PaymentError::TenderExceedsAmount {
            amount: cents(10_000),
            tendered: cents(10_001),
        });
    // What an authorization released no longer counts.
    Given::with(())
        .given(vec![
            created(),
            authorized(1, 6_000),
            captured(1, 1, 1_000, 5_000),
        ])
        .when(card_tender(2, 9_000))
        .then_expect_events(vec![authorized(2, 9_000)]);
}

#[test]
fn cash_gift_cards_and_automatic_capture_are_captured_as_they_are_taken() {
    let captured_at_once = |n: u128, method, source: TenderSource| {
        vec![
            PaymentEvent::TenderAuthorized {
                tender_id: tender_id(n),
                method,
                source: source.clone(),
                amount: cents(2_500),
                expires_at: at(7),
                hold_id: None,
                at: at(2),
            },
            PaymentEvent::Captured {
                tender_id: tender_id(n),
                capture_id: capture_id(n),
                amount: cents(2_500),
                reference: None,
                released: Amount::ZERO,
                settled_hold_id: None,
                next_hold_id: None,
                at: at(2),
            },
        ]
    };
    Given::with(())
        .given(vec![created()])
        .when(tender(1, TenderMethod::Cash, TenderSource::Cash, 2_500))
        .then_expect_events(captured_at_once(1, TenderMethod::Cash, TenderSource::Cash));
    let gift = TenderSource::GiftCard {
        code: "GC-1".into(),
    };
    Given::with(())
        .given(vec![created()])
        .when(tender(2, TenderMethod::GiftCard, gift.clone(), 2_500))
        .then_expect_events(captured_at_once(2, TenderMethod::GiftCard, gift));
    Given::with(())
        .given(vec![PaymentEvent::PaymentCreated {
            terms: terms(10_000, CaptureMode::Automatic),
            at: at(1),
        }])
        .when(card_tender(3, 2_500))
        .then_expect_events(captured_at_once(3, TenderMethod::Card, card()));
}

#[test]
fn a_tender_names_what_its_method_pays_from() {
    let cases = [
        (TenderMethod::Card, TenderSource::Cash, "card"),
        (
            TenderMethod::BankTransfer,
            TenderSource::GiftCard { code: "G".into() },
            "bank_transfer",
        ),
        (TenderMethod::Cash, card(), "cash"),
        (TenderMethod::GiftCard, card(), "gift_card"),
    ];
    for (method, source, name) in cases {
        let needs = match method {
            TenderMethod::Card | TenderMethod::BankTransfer => "a processor and its reference",
            TenderMethod::Cash => "nothing else",
            TenderMethod::GiftCard => "a gift card code",
        };
        Given::with(())
            .given(vec![created()])
            .when(tender(1, method, source, 100))
            .then_expect_error(PaymentError::TenderSourceMismatch {
                method: name,
                needs,
            });
    }
}

#[test]
fn a_tender_is_positive_unique_and_one_of_at_most_twenty() {
    Given::with(())
        .given(vec![created()])
        .when(card_tender(1, 0))
        .then_expect_error(PaymentError::NonPositive);
    Given::with(())
        .given(vec![created(), authorized(1, 100)])
        .when(card_tender(1, 100))
        .then_expect_error(PaymentError::TenderExists);
    let mut many = vec![created()];
    many.extend((1..=TENDERS_MAX as u128).map(|n| authorized(n, 100)));
    Given::with(())
        .given(many)
        .when(card_tender(99, 100))
        .then_expect_error(PaymentError::TooManyTenders { max: TENDERS_MAX });
}

#[test]
fn cancel_voids_every_open_authorization_before_any_capture_and_ends_the_payment() {
    let canceled = PaymentEvent::PaymentCanceled {
        released: vec![(tender_id(1), cents(6_000)), (tender_id(2), cents(4_000))],
        at: at(3),
    };
    Given::with(())
        .given(vec![created(), authorized(1, 6_000), authorized(2, 4_000)])
        .when(PaymentCommand::Cancel { at: at(3) })
        .then_expect_events(vec![canceled.clone()]);
    let after = vec![
        created(),
        authorized(1, 6_000),
        authorized(2, 4_000),
        canceled,
    ];
    assert_eq!(state(after.clone()).status(), Some(PaymentStatus::Canceled));
    for command in [
        PaymentCommand::Cancel { at: at(4) },
        card_tender(3, 100),
        capture(1, 1, 100, false, 4),
    ] {
        Given::with(())
            .given(after.clone())
            .when(command)
            .then_expect_error(PaymentError::Canceled);
    }
    Given::with(())
        .given(vec![created(), authorized(1, 6_000), captured(1, 1, 10, 0)])
        .when(PaymentCommand::Cancel { at: at(4) })
        .then_expect_error(PaymentError::AlreadyCaptured);
}

#[test]
fn an_authorization_expires_at_its_time_and_not_before_and_the_payment_with_it() {
    let expire = |hour| PaymentCommand::ExpireAuthorization {
        tender_id: tender_id(1),
        at: at(hour),
    };
    let expired = PaymentEvent::AuthorizationExpired {
        tender_id: tender_id(1),
        released: cents(6_000),
        at: at(7),
    };
    Given::with(())
        .given(vec![created(), authorized(1, 6_000)])
        .when(expire(6))
        .then_expect_error(PaymentError::AuthorizationNotExpired { expires_at: at(7) });
    Given::with(())
        .given(vec![created(), authorized(1, 6_000)])
        .when(expire(7))
        .then_expect_events(vec![expired.clone()]);
    let after = vec![created(), authorized(1, 6_000), expired];
    assert_eq!(state(after.clone()).status(), Some(PaymentStatus::Expired));
    Given::with(())
        .given(after.clone())
        .when(expire(8))
        .then_expect_error(PaymentError::AuthorizationExpired { expires_at: at(7) });
    Given::with(())
        .given(after)
        .when(card_tender(2, 100))
        .then_expect_error(PaymentError::Expired);
    // Part captured: the rest is released, and the payment stays captured.
    let part = vec![created(), authorized(1, 6_000), captured(1, 1, 1_000, 0)];
    Given::with(())
        .given(part.clone())
        .when(expire(7))
        .then_expect_events(vec![PaymentEvent::AuthorizationExpired {
            tender_id: tender_id(1),
            released: cents(5_000),
            at: at(7),
        }]);
    // Closed or voided authorizations do not expire.
    Given::with(())
        .given(vec![
            created(),
            authorized(1, 6_000),
            captured(1, 1, 6_000, 0),
        ])
        .when(expire(8))
        .then_expect_error(PaymentError::AuthorizationClosed);
    Given::with(())
        .given(vec![
            created(),
            authorized(1, 6_000),
            PaymentEvent::PaymentCanceled {
                released: vec![(tender_id(1), cents(6_000))],
                at: at(3),
            },
        ])
        .when(expire(8))
        .then_expect_error(PaymentError::AuthorizationVoided);
    Given::with(())
        .given(vec![created()])
        .when(expire(8))
        .then_expect_error(PaymentError::UnknownTender(tender_id(1)));
}
