//! Given/when/then: a batch imported once, its lines checked, matched or
//! broken by class; a break resolved once; a batch paid out once.

use super::*;
use chrono::TimeZone;
use cqrs_es::test::TestFramework;

type Given = TestFramework<Settlement>;

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, hour, 0, 0).unwrap()
}

fn usd() -> Asset {
    Asset::new("USD", 2).unwrap()
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn line(line_type: LineType, reference: &str, gross: i64, fee: i64) -> Line {
    Line {
        line_type,
        reference: reference.into(),
        gross,
        fee,
        net: gross - fee,
    }
}

fn capture(n: u128, gross: i64) -> Expected {
    Expected {
        payment_id: PaymentId::from_uuid(id(1)),
        item: Item::Capture {
            capture_id: CaptureId::from_uuid(id(n)),
        },
        asset: usd(),
        gross,
        fee: 0,
        settled: false,
    }
}

fn import(lines: Vec<Line>, expected: Vec<Option<Expected>>) -> SettlementCommand {
    let break_ids = (0..lines.len() as u128).map(|n| id(1_000 + n)).collect();
    SettlementCommand::Import {
        processor: "stripe".into(),
        batch_id: "b_1".into(),
        asset: usd(),
        settled_at: at(0),
        lines,
        expected,
        break_ids,
        at: at(1),
    }
}

fn imported(lines: Vec<SettledLine>) -> SettlementEvent {
    SettlementEvent::SettlementImported {
        processor: "stripe".into(),
        batch_id: "b_1".into(),
        asset: usd(),
        settled_at: at(0),
        lines,
        at: at(1),
    }
}

fn matched(line: Line, n: u128) -> SettledLine {
    SettledLine {
        line,
        outcome: Outcome::Matched {
            payment_id: PaymentId::from_uuid(id(1)),
            item: Item::Capture {
                capture_id: CaptureId::from_uuid(id(n)),
            },
        },
    }
}

fn broken(line: Line, index: u128, class: BreakClass, expected: Option<i64>) -> SettledLine {
    SettledLine {
        line,
        outcome: Outcome::Break {
            break_id: id(1_000 + index),
            class,
            expected,
        },
    }
}

#[test]
fn a_batch_matches_its_lines_and_opens_a_break_for_each_disagreement() {
    // One match, one unknown reference, one amount mismatch, one duplicate
    // (the same capture twice in the file), a fee line of the processor's.
    let lines = vec![
        line(LineType::Capture, "cap_1", 4_000, 120),
        line(LineType::Capture, "cap_x", 700, 20),
        line(LineType::Capture, "cap_2", 5_100, 150),
        line(LineType::Capture, "cap_1", 4_000, 120),
        line(LineType::Fee, "monthly", 0, 300),
    ];
    let expected = vec![
        Some(capture(1, 4_000)),
        None,
        Some(capture(2, 5_000)),
        Some(capture(1, 4_000)),
        None,
    ];
    Given::with(())
        .given_no_previous_events()
        .when(import(lines.clone(), expected))
        .then_expect_events(vec![imported(vec![
            matched(lines[0].clone(), 1),
            broken(lines[1].clone(), 1, BreakClass::UnknownReference, None),
            broken(lines[2].clone(), 2, BreakClass::AmountMismatch, Some(5_000)),
            broken(lines[3].clone(), 3, BreakClass::Duplicate, Some(4_000)),
            SettledLine {
                line: lines[4].clone(),
                outcome: Outcome::Processor,
            },
        ])]);
}

#[test]
fn an_item_settled_before_or_in_another_currency_is_a_break() {
    let mut settled = capture(1, 4_000);
    settled.settled = true;
    let mut euros = capture(2, 4_000);
    euros.asset = Asset::new("EUR", 2).unwrap();
    let lines = vec![
        line(LineType::Capture, "cap_1", 4_000, 0),
        line(LineType::Capture, "cap_2", 4_000, 0),
    ];
    Given::with(())
        .given_no_previous_events()
        .when(import(lines.clone(), vec![Some(settled), Some(euros)]))
        .then_expect_events(vec![imported(vec![
            broken(lines[0].clone(), 0, BreakClass::Duplicate, Some(4_000)),
            broken(
                lines[1].clone(),
                1,
                BreakClass::CurrencyMismatch,
                Some(4_000),
            ),
        ])]);
}

#[test]
fn a_batch_is_imported_once_and_its_lines_must_add_up() {
    let lines = vec![line(LineType::Capture, "cap_1", 4_000, 120)];
    let once = imported(vec![matched(lines[0].clone(), 1)]);
    Given::with(())
        .given(vec![once])
        .when(import(lines, vec![Some(capture(1, 4_000))]))
        .then_expect_error(SettlementError::AlreadyImported {
            processor: "stripe".into(),
            batch_id: "b_1".into(),
        });
    let mut wrong = line(LineType::Capture, "cap_1", 4_000, 120);
    wrong.net = 3_000;
    Given::with(())
        .given_no_previous_events()
        .when(import(
            vec![line(LineType::Capture, "cap_0", 1, 0), wrong],
            vec![None, None],
        ))
        .then_expect_error(SettlementError::LineDoesNotAddUp {
            line: 2,
            gross: 4_000,
            fee: 120,
            net: 3_000,
        });
    Given::with(())
        .given_no_previous_events()
        .when(import(Vec::new(), Vec::new()))
        .then_expect_error(SettlementError::LineCount { max: LINES_MAX });
    Given::with(())
        .given_no_previous_events()
        .when(import(vec![line(LineType::Capture, "", 1, 0)], vec![None]))
        .then_expect_error(SettlementError::InvalidReference { line: 1 });
    Given::with(())
        .given_no_previous_events()
        .when(import(
            vec![
                line(LineType::Adjustment, "a", i64::MAX, 0),
                line(LineType::Adjustment, "b", 1, 0),
            ],
            vec![None, None],
        ))
        .then_expect_error(SettlementError::Overflow);
}

#[test]
fn a_break_is_resolved_once() {
    let lines = [line(LineType::Capture, "cap_x", 700, 20)];
    let given = vec![imported(vec![broken(
        lines[0].clone(),
        0,
        BreakClass::UnknownReference,
        None,
    )])];
    let resolve = |break_id| SettlementCommand::ResolveBreak {
        break_id,
        resolution: Resolution::WriteOff,
        matched: None,
        reason: Some("not ours".into()),
        at: at(2),
    };
    let resolved = SettlementEvent::BreakResolved {
        break_id: id(1_000),
        resolution: Resolution::WriteOff,
        matched: None,
        reason: Some("not ours".into()),
        at: at(2),
    };
    Given::with(())
        .given(given.clone())
        .when(resolve(id(1_000)))
        .then_expect_events(vec![resolved.clone()]);
    let mut after = given.clone();
    after.push(resolved);
    Given::with(())
        .given(after)
        .when(resolve(id(1_000)))
        .then_expect_error(SettlementError::BreakResolved);
    Given::with(())
        .given(given)
        .when(resolve(id(7)))
        .then_expect_error(SettlementError::UnknownBreak(id(7)));
    Given::with(())
        .given_no_previous_events()
        .when(resolve(id(1_000)))
        .then_expect_error(SettlementError::Unknown);
}

#[test]
fn a_batch_is_paid_out_once() {
    let given = vec![imported(vec![matched(
        line(LineType::Capture, "cap_1", 4_000, 120),
        1,
    )])];
    let pay = SettlementCommand::PayOut {
        payout_id: id(50),
        at: at(3),
    };
    let paid = SettlementEvent::PaidOut {
        payout_id: id(50),
        at: at(3),
    };
    Given::with(())
        .given(given.clone())
        .when(pay.clone())
        .then_expect_events(vec![paid.clone()]);
    let mut after = given;
    after.push(paid);
    Given::with(())
        .given(after)
        .when(pay.clone())
        .then_expect_error(SettlementError::AlreadyPaidOut);
    Given::with(())
        .given_no_previous_events()
        .when(pay)
        .then_expect_error(SettlementError::Unknown);
}

#[test]
fn a_failed_payout_releases_its_batch_and_only_its_own() {
    let given = vec![
        imported(vec![matched(
            line(LineType::Capture, "cap_1", 4_000, 120),
            1,
        )]),
        SettlementEvent::PaidOut {
            payout_id: id(50),
            at: at(3),
        },
    ];
    let release = |payout| SettlementCommand::ReleasePayout {
        payout_id: id(payout),
        at: at(4),
    };
    Given::with(())
        .given(given.clone())
        .when(release(50))
        .then_expect_events(vec![SettlementEvent::PayoutReleased {
            payout_id: id(50),
            at: at(4),
        }]);
    Given::with(())
        .given(given)
        .when(release(51))
        .then_expect_error(SettlementError::NotPaidOutBy);
    let mut settlement = Settlement::default();
    settlement.apply(imported(vec![
        matched(line(LineType::Capture, "cap_1", 4_000, 120), 1),
        matched(line(LineType::Refund, "re_1", -1_000, 0), 2),
    ]));
    assert_eq!(settlement.net(), 2_880);
}
