//! Given/when/then for compensation: plans and their versions, roles,
//! payees and assignments, work valued by the version in effect,
//! commissions (held, capped, refused when they cannot accrue) and their
//! clawbacks, adjustments, and pay runs (`runs`), with a property over
//! random sequences.

mod runs;

use super::*;
use crate::ids::{LineId, PayRunId};
use crate::money::{Amount, AmountError, Asset};
use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;

type GivenPayee = TestFramework<Payee>;
type GivenPlan = TestFramework<Plan>;

fn day(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, day, 9, 0, 0).unwrap()
}

fn usd() -> Asset {
    crate::money::currency("USD").unwrap()
}

fn cents(value: i64) -> Amount {
    Amount::new(value).unwrap()
}

fn line_id(n: u128) -> LineId {
    LineId::from_uuid(uuid::Uuid::from_u128(0x200 + n))
}

fn run_id(n: u128) -> PayRunId {
    PayRunId::from_uuid(uuid::Uuid::from_u128(0x300 + n))
}

fn rules(rate: i64, basis_points: u32) -> Vec<Rule> {
    vec![
        Rule::Hourly {
            rate_per_hour: cents(rate),
        },
        Rule::PerUnit {
            unit: "delivery".into(),
            amount_per_unit: cents(350),
        },
        Rule::Commission {
            basis_points,
            cap_per_period: Some(cents(500_000)),
            holding_days: 14,
        },
    ]
}

fn version(number: u32, from: u32, rate: i64) -> PlanVersion {
    PlanVersion {
        version: number,
        effective_from: day(from),
        rules: rules(rate, 1_000),
        added_at: day(1),
    }
}

fn in_effect(number: u32, from: u32, rate: i64) -> PlanInEffect {
    PlanInEffect {
        plan_id: "sales".into(),
        asset: usd(),
        version: version(number, from, rate),
    }
}

fn created() -> PayeeEvent {
    PayeeEvent::PayeeCreated {
        name: "Alice".into(),
        asset: usd(),
        role_id: Some("rep".into()),
        at: day(1),
    }
}

fn assigned() -> PayeeEvent {
    PayeeEvent::PlanAssigned {
        plan_id: "sales".into(),
        from: day(1),
        at: day(1),
    }
}

fn state(events: Vec<PayeeEvent>) -> Payee {
    let mut payee = Payee::default();
    for event in events {
        cqrs_es::Aggregate::apply(&mut payee, event);
    }
    payee
}

fn decide(payee: &Payee, command: PayeeCommand) -> Vec<PayeeEvent> {
    crate::decide::Decide::decide(payee, command).unwrap()
}

fn work(n: u128, work: Work, worked_at: u32, plan: Option<PlanInEffect>) -> PayeeCommand {
    PayeeCommand::RecordWork {
        line_id: line_id(n),
        work,
        worked_at: day(worked_at),
        reference: Some(format!("shift-{n}")),
        plan,
        rules: crate::rules::Rules::CURRENT,
        at: day(worked_at),
    }
}

fn commission(n: u128, basis: i64, captured: u32, plan: Option<PlanInEffect>) -> PayeeCommand {
    PayeeCommand::AccrueCommission {
        line_id: line_id(n),
        payment_id: "pay-1".into(),
        source: format!("capture:{n}"),
        basis: cents(basis),
        asset: usd(),
        plan,
        captured_at: day(captured),
        rules: crate::rules::Rules::CURRENT,
        at: day(captured),
    }
}

fn accrued(events: &[PayeeEvent]) -> &Line {
    match events {
        [PayeeEvent::LineAccrued(line)] => line,
        other => panic!("one line expected: {other:?}"),
    }
}

#[test]
fn a_plan_is_created_once_and_versions_follow_from_its_last_date() {
    let added = |number, from| PlanEvent::VersionAdded(version(number, from, 2_500));
    let add = |asset: Option<Asset>, from| PlanCommand::AddVersion {
        asset,
        effective_from: day(from),
        rules: rules(2_500, 1_000),
        at: day(1),
    };
    GivenPlan::with(())
        .given_no_previous_events()
        .when(add(Some(usd()), 1))
        .then_expect_events(vec![
            PlanEvent::PlanCreated {
                asset: usd(),
                at: day(1),
            },
            added(1, 1),
        ]);
    let created = PlanEvent::PlanCreated {
        asset: usd(),
        at: day(1),
    };
    GivenPlan::with(())
        .given(vec![created.clone(), added(1, 1)])
        .when(add(None, 10))
        .then_expect_events(vec![added(2, 10)]);
    GivenPlan::with(())
        .given(vec![created.clone(), added(1, 10)])
        .when(add(None, 9))
        .then_expect_error(CompensationError::VersionBeforeLast {
            last: day(10),
            asked: day(9),
        });
    GivenPlan::with(())
        .given(vec![created.clone(), added(1, 1)])
        .when(add(Some(usd()), 2))
        .then_expect_error(CompensationError::Exists);
    GivenPlan::with(())
        .given_no_previous_events()
        .when(add(None, 2))
        .then_expect_error(CompensationError::UnknownPlan);
    let mut plan = Plan::default();
    for event in [created, added(1, 1), added(2, 10), added(3, 10)] {
        cqrs_es::Aggregate::apply(&mut plan, event);
    }
    assert_eq!(plan.in_effect("sales", day(9)).unwrap().version.version, 1);
    assert_eq!(plan.in_effect("sales", day(10)).unwrap().version.version, 3);
    assert!(plan
        .in_effect(
            "sales",
            Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap()
        )
        .is_none());
}

#[test]
fn rules_are_checked() {
    let invalid = |rules: Vec<Rule>, why: &str| {
        GivenPlan::with(())
            .given_no_previous_events()
            .when(PlanCommand::AddVersion {
                asset: Some(usd()),
                effective_from: day(1),
                rules,
                at: day(1),
            })
            .then_expect_error(CompensationError::InvalidRules(why.into()));
    };
    invalid(Vec::new(), "a plan version has 1 to 20 rules");
    let hourly = |rate| Rule::Hourly {
        rate_per_hour: cents(rate),
    };
    invalid(vec![hourly(0)], "an hourly rate is positive");
    invalid(
        vec![hourly(1), hourly(2)],
        "at most one hourly and one commission rule",
    );
    let unit = |unit: &str, amount| Rule::PerUnit {
        unit: unit.into(),
        amount_per_unit: cents(amount),
    };
    invalid(
        vec![unit("delivery", 1), unit("delivery", 2)],
        "one per_unit rule per unit",
    );
    invalid(
        vec![unit("two words", 1)],
        "a per_unit rule names its unit and a positive amount",
    );
    let commission = |basis_points, cap: Option<i64>, holding_days| Rule::Commission {
        basis_points,
        cap_per_period: cap.map(cents),
        holding_days,
    };
    invalid(
        vec![commission(10_001, None, 0)],
        "a commission is 0 to 10000 basis points held 0 to 365 days",
    );
    invalid(
        vec![commission(100, None, 366)],
        "a commission is 0 to 10000 basis points held 0 to 365 days",
    );
    invalid(
        vec![commission(100, Some(0), 0)],
        "a commission cap is positive",
    );
}

#[test]
fn a_role_and_a_payee_are_created_once_and_assigned_from_a_date() {
    TestFramework::<Role>::with(())
        .given(vec![RoleEvent::RoleCreated {
            name: "Sales rep".into(),
            plan_id: Some("sales".into()),
            at: day(1),
        }])
        .when(RoleCommand::Create {
            name: "x".into(),
            plan_id: None,
            at: day(1),
        })
        .then_expect_error(CompensationError::Exists);
    GivenPayee::with(())
        .given(vec![created()])
        .when(PayeeCommand::Create {
            name: "Alice".into(),
            asset: usd(),
            role_id: None,
            at: day(1),
        })
        .then_expect_error(CompensationError::Exists);
    GivenPayee::with(())
        .given_no_previous_events()
        .when(PayeeCommand::Assign {
            plan_id: "sales".into(),
            from: day(1),
            at: day(1),
        })
        .then_expect_error(CompensationError::UnknownPayee);
    let later = PayeeEvent::PlanAssigned {
        plan_id: "field".into(),
        from: day(15),
        at: day(2),
    };
    let payee = state(vec![created(), assigned(), later]);
    assert_eq!(payee.assignment_at(day(14)).unwrap().plan_id, "sales");
    assert_eq!(payee.assignment_at(day(15)).unwrap().plan_id, "field");
    assert!(payee
        .assignment_at(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap())
        .is_none());
}

#[test]
fn work_is_valued_once_by_the_version_in_effect_rounded_half_to_even() {
    let payee = state(vec![created(), assigned()]);
    // 2501 an hour for 90 minutes: 3751.5, half to even 3752; for 30
    // minutes: 1250.5, half to even 1250.
    let line = decide(
        &payee,
        work(
            1,
            Work::Time { minutes: 90 },
            2,
            Some(in_effect(1, 1, 2_501)),
        ),
    );
    let line = accrued(&line);
    assert_eq!(
        (line.kind, line.amount, line.status, line.plan_version),
        (LineKind::Time, 3_752, LineStatus::Accrued, Some(1))
    );
    let half = decide(
        &payee,
        work(
            2,
            Work::Time { minutes: 30 },
            2,
            Some(in_effect(1, 1, 2_501)),
        ),
    );
    assert_eq!(accrued(&half).amount, 1_250);
    let units = Work::Units {
        unit: "delivery".into(),
        count: 3,
    };
    let line = decide(&payee, work(3, units, 12, Some(in_effect(2, 10, 3_000))));
    assert_eq!(
        (accrued(&line).amount, accrued(&line).plan_version),
        (1_050, Some(2))
    );
}

#[test]
fn work_without_a_plan_rule_or_currency_in_effect_is_refused_naming_it() {
    let reject = |events: Vec<PayeeEvent>, command, error| {
        GivenPayee::with(())
            .given(events)
            .when(command)
            .then_expect_error(error)
    };
    let time = Work::Time { minutes: 60 };
    reject(
        vec![created()],
        work(1, time.clone(), 2, None),
        CompensationError::NoAssignment { at: day(2) },
    );
    reject(
        vec![created(), assigned()],
        work(1, time.clone(), 2, None),
        CompensationError::NoVersion {
            plan_id: "sales".into(),
            at: day(2),
        },
    );
    let mut no_hourly = in_effect(1, 1, 2_500);
    no_hourly.version.rules.remove(0);
    reject(
        vec![created(), assigned()],
        work(1, time.clone(), 2, Some(no_hourly)),
        CompensationError::NoRule {
            rule: "hourly".into(),
        },
    );
    let gardening = Work::Units {
        unit: "garden".into(),
        count: 1,
    };
    reject(
        vec![created(), assigned()],
        work(1, gardening, 2, Some(in_effect(1, 1, 2_500))),
        CompensationError::NoRule {
            rule: "per_unit garden".into(),
        },
    );
    let mut euros = in_effect(1, 1, 2_500);
    euros.asset = crate::money::currency("EUR").unwrap();
    reject(
        vec![created(), assigned()],
        work(1, time.clone(), 2, Some(euros)),
        CompensationError::CurrencyMismatch {
            plan: "EUR".into(),
            payee: "USD".into(),
        },
    );
    reject(
        vec![created(), assigned()],
        work(
            1,
            Work::Time { minutes: 0 },
            2,
            Some(in_effect(1, 1, 2_500)),
        ),
        CompensationError::InvalidQuantity,
    );
    let first = decide(
        &state(vec![created(), assigned()]),
        work(1, time.clone(), 2, Some(in_effect(1, 1, 2_500))),
    );
    let mut events = vec![created(), assigned()];
    events.extend(first);
    reject(
        events,
        work(1, time, 3, Some(in_effect(1, 1, 2_500))),
        CompensationError::LineTaken(line_id(1)),
    );
}

#[test]
fn a_commission_is_held_capped_per_month_and_accrues_once() {
    let payee = state(vec![created(), assigned()]);
    // 10% of 12345: 1234.5, half to even 1234; held 14 days.
    let events = decide(
        &payee,
        commission(1, 12_345, 2, Some(in_effect(1, 1, 2_500))),
    );
    let line = accrued(&events);
    assert_eq!(
        (line.amount, line.status, line.payable_at, line.capped),
        (1_234, LineStatus::Held, Some(day(16)), Amount::ZERO)
    );
    let mut history = vec![created(), assigned()];
    history.extend(events);
    GivenPayee::with(())
        .given(history.clone())
        .when(commission(1, 5, 3, Some(in_effect(1, 1, 2_500))))
        .then_expect_error(CompensationError::LineTaken(line_id(1)));
    let mut again = commission(2, 5, 3, Some(in_effect(1, 1, 2_500)));
    if let PayeeCommand::AccrueCommission { source, .. } = &mut again {
        *source = "capture:1".into();
    }
    GivenPayee::with(())
        .given(history.clone())
        .when(again)
        .then_expect_error(CompensationError::AccruedAlready {
            origin: "capture:1".into(),
        });
    // The cap is 5000.00 a month: 4,990,000 earns 499,000 (1,234 used),
    // of which 498,766 is payable and 234 capped.
    let payee = state(history.clone());
    let big = decide(
        &payee,
        commission(3, 4_990_000, 20, Some(in_effect(1, 1, 2_500))),
    );
    assert_eq!(
        (accrued(&big).amount, accrued(&big).capped),
        (498_766, cents(234))
    );
    history.extend(big);
    let full = decide(
        &state(history.clone()),
        commission(4, 100, 21, Some(in_effect(1, 1, 2_500))),
    );
    assert_eq!(
        (accrued(&full).amount, accrued(&full).capped),
        (0, cents(10))
    );
    // A new month has a new cap.
    let january = PayeeCommand::AccrueCommission {
        line_id: line_id(5),
        payment_id: "pay-2".into(),
        source: "capture:5".into(),
        basis: cents(100),
        asset: usd(),
        plan: Some(in_effect(1, 1, 2_500)),
        captured_at: Utc.with_ymd_and_hms(2027, 1, 2, 0, 0, 0).unwrap(),
        rules: crate::rules::Rules::CURRENT,
        at: Utc.with_ymd_and_hms(2027, 1, 2, 0, 0, 0).unwrap(),
    };
    assert_eq!(accrued(&decide(&state(history), january)).amount, 10);
}

#[test]
fn a_commission_that_cannot_accrue_is_a_refused_line_saying_why() {
    let refused = |events: Vec<PayeeEvent>, command| {
        let events = decide(&state(events), command);
        let line = accrued(&events);
        assert_eq!((line.status, line.amount), (LineStatus::Refused, 0));
        line.reason.clone().unwrap()
    };
    let mut euros = commission(1, 1_000, 2, Some(in_effect(1, 1, 2_500)));
    if let PayeeCommand::AccrueCommission { asset, .. } = &mut euros {
        *asset = crate::money::currency("EUR").unwrap();
    }
    assert_eq!(
        refused(vec![created(), assigned()], euros),
        "currency_mismatch: the sale is in EUR, the payee is paid in USD"
    );
    assert!(refused(vec![created()], commission(1, 1_000, 2, None)).starts_with("no_plan_assigned"));
    let mut no_commission = in_effect(1, 1, 2_500);
    no_commission.version.rules.truncate(1);
    assert_eq!(
        refused(
            vec![created(), assigned()],
            commission(1, 1_000, 2, Some(no_commission))
        ),
        "no_matching_rule: the plan in effect has no commission rule"
    );
}

#[test]
fn a_refund_claws_back_the_same_share_never_more_than_was_accrued() {
    let payee = state(vec![created(), assigned()]);
    let mut history = vec![created(), assigned()];
    history.extend(decide(
        &payee,
        commission(1, 10_000, 2, Some(in_effect(1, 1, 2_500))),
    ));
    let claw = |n: u128, amount: i64| PayeeCommand::ClawBack {
        line_id: line_id(n),
        payment_id: "pay-1".into(),
        source: format!("refund:{n}"),
        captures: vec!["capture:1".into()],
        amount: cents(amount),
        rules: crate::rules::Rules::CURRENT,
        at: day(5),
    };
    // 1000 accrued on 10000: a refund of 3333 claws back 333.3 -> 333,
    // held as long as the commission is.
    let first = decide(&state(history.clone()), claw(2, 3_333));
    assert_eq!(
        (
            accrued(&first).amount,
            accrued(&first).kind,
            accrued(&first).status,
            accrued(&first).payable_at
        ),
        (-333, LineKind::Clawback, LineStatus::Held, Some(day(16)))
    );
    history.extend(first);
    let rest = decide(&state(history.clone()), claw(3, 10_000));
    assert_eq!(accrued(&rest).amount, -667);
    history.extend(rest);
    let nothing = decide(&state(history.clone()), claw(4, 1));
    assert_eq!(accrued(&nothing).status, LineStatus::Refused);
    // The first refund failed: its clawback is given back, once.
    let reverse = |n: u128, refund: u128| PayeeCommand::ReverseClawBack {
        line_id: line_id(n),
        clawback_source: format!("refund:{refund}"),
        source: format!("refund_failed:{refund}"),
        rules: crate::rules::Rules::CURRENT,
        at: day(6),
    };
    let given_back = decide(&state(history.clone()), reverse(5, 2));
    assert_eq!(
        (accrued(&given_back).amount, accrued(&given_back).corrects),
        (333, Some(line_id(2)))
    );
    let mut reversed = history.clone();
    reversed.extend(given_back);
    GivenPayee::with(())
        .given(reversed)
        .when(reverse(6, 2))
        .then_expect_error(CompensationError::AccruedAlready {
            origin: "refund_failed:2".into(),
        });
    // Partial refunds add up: the share of all refunded so far, rounded
    // once, less what was clawed (5 on 50, refunded 25 and 25: 2 then 3).
    let mut small = vec![created(), assigned()];
    small.extend(decide(
        &state(small.clone()),
        commission(8, 50, 2, Some(in_effect(1, 1, 2_500))),
    ));
    for (n, expected) in [(9, -2), (10, -3)] {
        let command = PayeeCommand::ClawBack {
            line_id: line_id(n),
            payment_id: "pay-1".into(),
            source: format!("refund:{n}"),
            captures: vec!["capture:8".into()],
            amount: cents(25),
            rules: crate::rules::Rules::CURRENT,
            at: day(5),
        };
        let events = decide(&state(small.clone()), command);
        assert_eq!(accrued(&events).amount, expected);
        small.extend(events);
    }
    let unknown = decide(&state(history.clone()), reverse(7, 9));
    assert_eq!(
        (accrued(&unknown).status, accrued(&unknown).amount),
        (LineStatus::Refused, 0)
    );
    GivenPayee::with(())
        .given(history)
        .when(claw(2, 1))
        .then_expect_error(CompensationError::LineTaken(line_id(2)));
}

#[test]
fn adjustments_correct_existing_lines_and_held_lines_become_payable_once() {
    let mut history = vec![created(), assigned()];
    history.extend(decide(
        &state(history.clone()),
        commission(1, 10_000, 2, Some(in_effect(1, 1, 2_500))),
    ));
    let adjust = |amount, corrects| PayeeCommand::Adjust {
        line_id: line_id(9),
        amount,
        reason: Some("overpaid".into()),
        corrects,
        rules: crate::rules::Rules::CURRENT,
        at: day(3),
    };
    let events = decide(&state(history.clone()), adjust(-800, Some(line_id(1))));
    assert_eq!(
        (accrued(&events).amount, accrued(&events).corrects),
        (-800, Some(line_id(1)))
    );
    GivenPayee::with(())
        .given(history.clone())
        .when(adjust(0, None))
        .then_expect_error(CompensationError::ZeroAdjustment);
    GivenPayee::with(())
        .given(history.clone())
        .when(adjust(5, Some(line_id(7))))
        .then_expect_error(CompensationError::UnknownLine(line_id(7)));
    // No line takes the sizes of the payee's lines past i64::MAX, so no sum
    // of them (accrued, payable, paid) overflows: in either direction.
    for huge in [i64::MAX - 999, -(i64::MAX - 999)] {
        GivenPayee::with(())
            .given(history.clone())
            .when(adjust(huge, None))
            .then_expect_error(CompensationError::Amount(AmountError::Overflow));
    }
    let fits = decide(&state(history.clone()), adjust(i64::MAX - 1_000, None));
    assert_eq!(accrued(&fits).amount, i64::MAX - 1_000);
    // Not before its holding period is over (payable from day 16).
    GivenPayee::with(())
        .given(history.clone())
        .when(PayeeCommand::MakePayable {
            line_id: line_id(1),
            at: day(15),
        })
        .then_expect_error(CompensationError::StillHeld {
            payable_at: day(16),
        });
    let payable = PayeeCommand::MakePayable {
        line_id: line_id(1),
        at: day(16),
    };
    GivenPayee::with(())
        .given(history.clone())
        .when(payable.clone())
        .then_expect_events(vec![PayeeEvent::LinePayable {
            line_id: line_id(1),
            at: day(16),
        }]);
    history.push(PayeeEvent::LinePayable {
        line_id: line_id(1),
        at: day(16),
    });
    GivenPayee::with(())
        .given(history)
        .when(payable)
        .then_expect_error(CompensationError::NotHeld);
}

/// A commission of `basis` on capture `source`, captured at `at`.
fn commission_at(n: u128, source: &str, basis: i64, at: DateTime<Utc>) -> PayeeCommand {
    PayeeCommand::AccrueCommission {
        line_id: line_id(n),
        payment_id: "pay-1".into(),
        source: source.into(),
        basis: cents(basis),
        asset: usd(),
        plan: Some(in_effect(1, 1, 2_500)),
        captured_at: at,
        rules: crate::rules::Rules::CURRENT,
        at,
    }
}

/// A clawback of `amount` refunded or lost on `captures`.
fn claw_back(n: u128, source: &str, captures: &[&str], amount: i64) -> PayeeCommand {
    PayeeCommand::ClawBack {
        line_id: line_id(n),
        payment_id: "pay-1".into(),
        source: source.into(),
        captures: captures.iter().map(|capture| capture.to_string()).collect(),
        amount: cents(amount),
        rules: crate::rules::Rules::CURRENT,
        at: day(20),
    }
}

/// `history` with what `command` decides on it appended; the line decided.
fn accrue(history: &mut Vec<PayeeEvent>, command: PayeeCommand) -> Line {
    let events = decide(&state(history.clone()), command);
    let line = accrued(&events).clone();
    history.extend(events);
    line
}

#[test]
fn a_refund_and_a_dispute_of_one_capture_never_claw_back_more_than_it_accrued() {
    // Two captures of one tender in one month: the first earns the whole
    // cap (500,000), the second nothing (capped).
    let mut history = vec![created(), assigned()];
    let first = accrue(
        &mut history,
        commission_at(1, "capture:1", 5_000_000, day(2)),
    );
    let second = accrue(
        &mut history,
        commission_at(2, "capture:2", 5_000_000, day(3)),
    );
    assert_eq!((first.amount, second.amount), (500_000, 0));
    // A refund of half the tender names both captures: half of what they
    // accrued together.
    let refund = accrue(
        &mut history,
        claw_back(3, "refund:3", &["capture:1", "capture:2"], 5_000_000),
    );
    assert_eq!(refund.amount, -250_000);
    // The first capture is then lost in a dispute whole: its own share
    // would be all it accrued, but half of that is clawed back already.
    let dispute = accrue(
        &mut history,
        claw_back(4, "dispute:4", &["capture:1"], 5_000_000),
    );
    assert_eq!(dispute.amount, -250_000);
    // Nothing is left: another loss claws back nothing.
    let nothing = accrue(&mut history, claw_back(5, "dispute:5", &["capture:2"], 1));
    assert_eq!((nothing.status, nothing.amount), (LineStatus::Refused, 0));
}

#[test]
fn a_month_clawed_back_below_nothing_leaves_no_more_room_than_its_cap() {
    let month = |month, day| Utc.with_ymd_and_hms(2027, month, day, 9, 0, 0).unwrap();
    // One tender captured on 31 January and on 1 February, 100,000 each;
    // the February capture's name sorts first.
    let mut history = vec![created(), assigned()];
    accrue(
        &mut history,
        commission_at(1, "capture:b", 1_000_000, month(1, 31)),
    );
    accrue(
        &mut history,
        commission_at(2, "capture:a", 1_000_000, month(2, 1)),
    );
    // Refunded whole: both commissions clawed back (-200,000).
    let refund = accrue(
        &mut history,
        claw_back(3, "refund:3", &["capture:a", "capture:b"], 2_000_000),
    );
    assert_eq!(refund.amount, -200_000);
    // February earns 600,000: the cap (500,000) is payable, never more.
    let february = accrue(
        &mut history,
        commission_at(4, "capture:c", 6_000_000, month(2, 10)),
    );
    assert_eq!(
        (february.amount, february.capped),
        (500_000, cents(100_000))
    );
}

#[test]
fn a_clawback_given_back_never_takes_its_month_past_the_cap() {
    // December: the first capture earns the whole cap (500,000); a
    // refund of 40% of it claws back 200,000, which frees room a second
    // capture then earns 150,000 of. The refund fails: giving its
    // clawback back whole would pay 650,000 for December. What the month
    // has room for (50,000) is given back, the rest recorded as capped.
    let reverse = |n: u128, refund: &str| PayeeCommand::ReverseClawBack {
        line_id: line_id(n),
        clawback_source: format!("refund:{refund}"),
        source: format!("refund_failed:{refund}"),
        rules: crate::rules::Rules::CURRENT,
        at: day(25),
    };
    // The clawback recorded under the second rules (one month, no
    // `cap_shares`) or the third (its month's share), alike.
    for rules in [crate::rules::Rules::SECOND, crate::rules::Rules::CURRENT] {
        let mut history = vec![created(), assigned()];
        let first = accrue(
            &mut history,
            commission_at(1, "capture:1", 5_000_000, day(2)),
        );
        assert_eq!((first.amount, first.cap), (500_000, Some(cents(500_000))));
        let mut command = claw_back(2, "refund:2", &["capture:1"], 2_000_000);
        if let PayeeCommand::ClawBack { rules: decided, .. } = &mut command {
            *decided = rules;
        }
        let refund = accrue(&mut history, command);
        assert_eq!(refund.amount, -200_000);
        assert_eq!(
            refund.cap_shares.len(),
            usize::from(rules.since(crate::rules::Rules::THIRD))
        );
        let mut before_second = history.clone();
        let second = accrue(
            &mut history,
            commission_at(3, "capture:3", 1_500_000, day(10)),
        );
        assert_eq!(second.amount, 150_000);
        if refund.cap_shares.is_empty() {
            // Given back under the first rules (by an older process), whole.
            let mut old = reverse(4, "2");
            if let PayeeCommand::ReverseClawBack { rules, .. } = &mut old {
                *rules = crate::rules::Rules::FIRST;
            }
            let events = decide(&state(history.clone()), old);
            assert_eq!(
                (accrued(&events).amount, accrued(&events).capped),
                (200_000, Amount::ZERO)
            );
        }
        let given_back = accrue(&mut history, reverse(4, "2"));
        assert_eq!(
            (given_back.amount, given_back.capped, given_back.corrects),
            (50_000, cents(150_000), Some(line_id(2)))
        );
        assert_eq!(state(history).cap_used["2026-12"], 500_000);
        // Without the second capture, all of it is given back.
        let whole = accrue(&mut before_second, reverse(4, "2"));
        assert_eq!((whole.amount, whole.capped), (200_000, Amount::ZERO));
    }
    // A commission accrued under the first rules records no cap: its
    // clawback given back is given back whole, as it was then.
    let mut first_rules = vec![created(), assigned()];
    let mut command = commission_at(1, "capture:1", 5_000_000, day(2));
    if let PayeeCommand::AccrueCommission { rules, .. } = &mut command {
        *rules = crate::rules::Rules::FIRST;
    }
    assert_eq!(accrue(&mut first_rules, command).cap, None);
    accrue(
        &mut first_rules,
        claw_back(2, "refund:2", &["capture:1"], 2_000_000),
    );
    accrue(
        &mut first_rules,
        commission_at(3, "capture:3", 1_500_000, day(10)),
    );
    let whole = accrue(&mut first_rules, reverse(4, "2"));
    assert_eq!((whole.amount, whole.capped), (200_000, Amount::ZERO));
    // A commission valued without a cap gives back whole, as before.
    let mut uncapped = vec![created(), assigned()];
    let mut plan = in_effect(1, 1, 2_500);
    plan.version.rules = vec![Rule::Commission {
        basis_points: 1_000,
        cap_per_period: None,
        holding_days: 0,
    }];
    let mut command = commission_at(1, "capture:1", 5_000_000, day(2));
    if let PayeeCommand::AccrueCommission {
        plan: in_effect, ..
    } = &mut command
    {
        *in_effect = Some(plan);
    }
    assert_eq!(accrue(&mut uncapped, command).cap, None);
    accrue(
        &mut uncapped,
        claw_back(2, "refund:2", &["capture:1"], 2_000_000),
    );
    assert_eq!(accrue(&mut uncapped, reverse(4, "2")).amount, 200_000);
}

#[test]
fn under_the_third_rules_a_clawback_frees_each_month_what_it_takes_of_it() {
    use super::ledger::CapShare;
    use crate::rules::Rules;
    let month = |month, day| Utc.with_ymd_and_hms(2027, month, day, 9, 0, 0).unwrap();
    let share = |period: &str, amount| CapShare {
        period: period.into(),
        amount,
    };
    // Each month's cap (500,000) is used up: 31 January and 1 February
    // earn 500,000 each, whichever capture's name sorts first.
    for (january, february) in [("capture:b", "capture:a"), ("capture:a", "capture:b")] {
        let mut history = vec![created(), assigned()];
        accrue(
            &mut history,
            commission_at(1, january, 5_000_000, month(1, 31)),
        );
        accrue(
            &mut history,
            commission_at(2, february, 5_000_000, month(2, 1)),
        );
        // A refund of 40% of the tender claws back 400,000: 200,000 of
        // each month's commission, so each month has 200,000 of room again.
        let captures = [january, february];
        let refund = accrue(&mut history, claw_back(3, "refund:3", &captures, 4_000_000));
        assert_eq!(refund.amount, -400_000);
        assert_eq!(
            refund.cap_shares,
            [share("2027-01", -200_000), share("2027-02", -200_000)]
        );
        let payee = state(history.clone());
        assert_eq!(
            (payee.cap_used["2027-01"], payee.cap_used["2027-02"]),
            (300_000, 300_000)
        );
        // February earns 300,000 more: 200,000 of it is under the cap.
        let later = accrue(
            &mut history,
            commission_at(4, "capture:c", 3_000_000, month(2, 10)),
        );
        assert_eq!((later.amount, later.capped), (200_000, cents(100_000)));
        // The refund fails: January's room is given back whole, February
        // has none left.
        let reverse = PayeeCommand::ReverseClawBack {
            line_id: line_id(5),
            clawback_source: "refund:3".into(),
            source: "refund_failed:3".into(),
            rules: Rules::CURRENT,
            at: month(2, 20),
        };
        let given_back = accrue(&mut history, reverse);
        assert_eq!(
            (given_back.amount, given_back.capped),
            (200_000, cents(200_000))
        );
        assert_eq!(given_back.cap_shares, [share("2027-01", 200_000)]);
        let payee = state(history);
        assert_eq!(
            (payee.cap_used["2027-01"], payee.cap_used["2027-02"]),
            (500_000, 500_000)
        );
    }
    // Under the second rules the whole clawback frees the month of the
    // capture whose name sorts first.
    let mut history = vec![created(), assigned()];
    accrue(
        &mut history,
        commission_at(1, "capture:b", 5_000_000, month(1, 31)),
    );
    accrue(
        &mut history,
        commission_at(2, "capture:a", 5_000_000, month(2, 1)),
    );
    let mut command = claw_back(3, "refund:3", &["capture:a", "capture:b"], 4_000_000);
    if let PayeeCommand::ClawBack { rules, .. } = &mut command {
        *rules = Rules::SECOND;
    }
    let refund = accrue(&mut history, command);
    assert_eq!(refund.cap_shares, []);
    let payee = state(history);
    assert_eq!(
        (payee.cap_used["2027-01"], payee.cap_used["2027-02"]),
        (500_000, 100_000)
    );
}

#[test]
fn a_clawback_splits_its_months_in_exact_units() {
    use super::ledger::CapShare;
    let month = |month, day| Utc.with_ymd_and_hms(2027, month, day, 9, 0, 0).unwrap();
    // 250 and 500 accrued in two months: a clawback of 301 frees 100.33
    // and 200.67, so 100 and 201 (the larger remainder takes the unit).
    let mut history = vec![created(), assigned()];
    accrue(
        &mut history,
        commission_at(1, "capture:1", 2_500, month(1, 31)),
    );
    accrue(
        &mut history,
        commission_at(2, "capture:2", 5_000, month(2, 1)),
    );
    let refund = accrue(
        &mut history,
        claw_back(3, "refund:3", &["capture:1", "capture:2"], 3_010),
    );
    assert_eq!(refund.amount, -301);
    let shares: Vec<(String, i64)> = refund
        .cap_shares
        .iter()
        .map(|CapShare { period, amount }| (period.clone(), *amount))
        .collect();
    assert_eq!(
        shares,
        [("2027-01".to_string(), -100), ("2027-02".to_string(), -201)]
    );
}

#[test]
fn a_clawback_frees_the_months_whose_commissions_are_left() {
    use super::ledger::CapShare;
    let month = |month, day| Utc.with_ymd_and_hms(2027, month, day, 9, 0, 0).unwrap();
    // 500,000 accrued on 31 January (capture a) and on 1 February
    // (capture b). A dispute of a, lost, claws back all of January's; the
    // refund of the rest of the tender then claws back February's alone.
    let mut history = vec![created(), assigned()];
    accrue(
        &mut history,
        commission_at(1, "capture:a", 5_000_000, month(1, 31)),
    );
    accrue(
        &mut history,
        commission_at(2, "capture:b", 5_000_000, month(2, 1)),
    );
    let dispute = accrue(
        &mut history,
        claw_back(3, "dispute:3", &["capture:a"], 5_000_000),
    );
    assert_eq!(dispute.amount, -500_000);
    let captures = ["capture:a", "capture:b"];
    let refund = accrue(&mut history, claw_back(4, "refund:4", &captures, 5_000_000));
    assert_eq!(refund.amount, -500_000);
    assert_eq!(
        refund.cap_shares,
        [CapShare {
            period: "2027-02".into(),
            amount: -500_000
        }]
    );
    let payee = state(history);
    assert_eq!(
        (payee.cap_used["2027-01"], payee.cap_used["2027-02"]),
        (0, 0)
    );
}

#[test]
fn under_the_third_rules_work_is_recorded_once_it_is_done() {
    use crate::rules::Rules;
    let at = |rules, worked_at: u32, recorded: u32| PayeeCommand::RecordWork {
        line_id: line_id(1),
        work: Work::Time { minutes: 60 },
        worked_at: day(worked_at),
        reference: Some("shift-1".into()),
        plan: Some(in_effect(1, 1, 2_500)),
        rules,
        at: day(recorded),
    };
    GivenPayee::with(())
        .given(vec![created(), assigned()])
        .when(at(Rules::THIRD, 6, 5))
        .then_expect_error(CompensationError::WorkInFuture { worked_at: day(6) });
    // Done by the time it is recorded, it accrues: to the microsecond, what
    // the ledger keeps of a time (a submitter's nanoseconds past it too).
    let events = decide(&state(vec![created(), assigned()]), at(Rules::THIRD, 5, 5));
    assert_eq!(accrued(&events).amount, 2_500);
    let mut same_microsecond = at(Rules::THIRD, 5, 5);
    if let PayeeCommand::RecordWork { worked_at, .. } = &mut same_microsecond {
        *worked_at += chrono::Duration::nanoseconds(999);
    }
    let events = decide(&state(vec![created(), assigned()]), same_microsecond);
    assert_eq!(accrued(&events).amount, 2_500);
    // The second rules took it, payable at once.
    let events = decide(&state(vec![created(), assigned()]), at(Rules::SECOND, 6, 5));
    assert_eq!(
        (accrued(&events).amount, accrued(&events).payable_at),
        (2_500, Some(day(6)))
    );
}

#[test]
fn since_the_fifth_rules_a_work_reference_accrues_once() {
    use crate::rules::Rules;
    let shift = |n, rules| PayeeCommand::RecordWork {
        line_id: line_id(n),
        work: Work::Time { minutes: 60 },
        worked_at: day(5),
        reference: Some("shift-1".into()),
        plan: Some(in_effect(1, 1, 2_500)),
        rules,
        at: day(5),
    };
    let first = decide(&state(vec![created(), assigned()]), shift(1, Rules::FIFTH));
    assert_eq!(accrued(&first).amount, 2_500);
    let mut history = vec![created(), assigned()];
    history.extend(first);
    GivenPayee::with(())
        .given(history.clone())
        .when(shift(2, Rules::FIFTH))
        .then_expect_error(CompensationError::AccruedAlready {
            origin: "shift-1".into(),
        });
    // The fourth rules booked it twice.
    let again = decide(&state(history), shift(2, Rules::FOURTH));
    assert_eq!(accrued(&again).amount, 2_500);
}

#[test]
fn since_the_fifth_rules_refunds_whose_share_rounds_to_nothing_still_add_up() {
    use crate::rules::Rules;
    // 5 accrued on a capture of 50; ten refunds of 5, each share 0.5.
    let refund = |n: u128, rules| PayeeCommand::ClawBack {
        line_id: line_id(n),
        payment_id: "pay-1".into(),
        source: format!("refund:{n}"),
        captures: vec!["capture:8".into()],
        amount: cents(5),
        rules,
        at: day(5),
    };
    let start = || {
        let mut history = vec![created(), assigned()];
        history.extend(decide(
            &state(history.clone()),
            commission(8, 50, 2, Some(in_effect(1, 1, 2_500))),
        ));
        history
    };
    let clawed = |rules| {
        let mut history = start();
        (10..20)
            .map(|n| accrue(&mut history, refund(n, rules)).amount)
            .collect::<Vec<i64>>()
    };
    // The share of all refunded so far, rounded half to even once, less
    // what was clawed: 0, 1, 2, 2, 2, 3, 4, 4, 4, 5 in all.
    assert_eq!(clawed(Rules::FIFTH), [0, -1, -1, 0, 0, -1, -1, 0, 0, -1]);
    // The fourth rules forgot each refund that clawed nothing.
    assert_eq!(clawed(Rules::FOURTH), [0; 10]);
    // A refund that clawed nothing and then failed is taken off again.
    let mut history = start();
    let first = accrue(&mut history, refund(10, Rules::FIFTH));
    assert_eq!((first.status, first.amount), (LineStatus::Refused, 0));
    let failed = accrue(
        &mut history,
        PayeeCommand::ReverseClawBack {
            line_id: line_id(11),
            clawback_source: "refund:10".into(),
            source: "refund_failed:10".into(),
            rules: Rules::FIFTH,
            at: day(6),
        },
    );
    assert_eq!(
        (failed.status, failed.amount, failed.corrects, failed.basis),
        (LineStatus::Refused, 0, Some(line_id(10)), Some(cents(5)))
    );
    let second = accrue(&mut history, refund(12, Rules::FIFTH));
    assert_eq!((second.status, second.amount), (LineStatus::Refused, 0));
    // One refused and failed under the fourth rules (its reversal, finding
    // no clawback, names none) is not counted by a later one either.
    let mut mixed = start();
    accrue(&mut mixed, refund(10, Rules::FOURTH));
    let unlinked = accrue(
        &mut mixed,
        PayeeCommand::ReverseClawBack {
            line_id: line_id(11),
            clawback_source: "refund:10".into(),
            source: "refund_failed:10".into(),
            rules: Rules::FOURTH,
            at: day(6),
        },
    );
    assert_eq!(
        (unlinked.status, unlinked.corrects),
        (LineStatus::Refused, None)
    );
    let later = accrue(&mut mixed, refund(12, Rules::FIFTH));
    assert_eq!((later.status, later.amount), (LineStatus::Refused, 0));
    let next = accrue(&mut mixed, refund(13, Rules::FIFTH));
    assert_eq!(next.amount, -1);
}

/// An adjustment of `amount` correcting line `corrects`, under `rules`.
fn correct(n: u128, corrects: u128, amount: i64, rules: crate::rules::Rules) -> PayeeCommand {
    PayeeCommand::Adjust {
        line_id: line_id(n),
        amount,
        reason: Some("corrected".into()),
        corrects: Some(line_id(corrects)),
        rules,
        at: day(4),
    }
}

#[test]
fn since_the_sixth_rules_a_correction_stops_at_nothing() {
    use crate::rules::Rules;
    let exceeds = |line: u128, left| CompensationError::CorrectionExceedsLine {
        line_id: line_id(line),
        left,
    };
    // A commission of 1,000 (10% of 10,000).
    let mut history = vec![created(), assigned()];
    let commission = accrue(&mut history, commission_at(1, "capture:1", 10_000, day(2)));
    assert_eq!(commission.amount, 1_000);
    GivenPayee::with(())
        .given(history.clone())
        .when(correct(2, 1, -1_001, Rules::SIXTH))
        .then_expect_error(exceeds(1, 1_000));
    // Under the fifth rules any amount.
    assert_eq!(
        decide(&state(history.clone()), correct(2, 1, -5_000, Rules::FIFTH)).len(),
        1
    );
    // Down by 600, up by 200, then down by what is left: 600.
    accrue(&mut history, correct(2, 1, -600, Rules::SIXTH));
    accrue(&mut history, correct(3, 1, 200, Rules::SIXTH));
    GivenPayee::with(())
        .given(history.clone())
        .when(correct(4, 1, -601, Rules::SIXTH))
        .then_expect_error(exceeds(1, 600));
    // A correction of a correction counts toward the line it corrects.
    GivenPayee::with(())
        .given(history.clone())
        .when(correct(4, 3, -601, Rules::SIXTH))
        .then_expect_error(exceeds(1, 600));
    let last = accrue(&mut history, correct(4, 3, -600, Rules::SIXTH));
    assert_eq!((last.amount, last.corrects), (-600, Some(line_id(3))));
    // A commission clawed back whole is corrected down no further (the
    // payee would be docked twice), until the refund fails.
    let mut clawed = vec![created(), assigned()];
    accrue(&mut clawed, commission_at(1, "capture:1", 10_000, day(2)));
    let refund = accrue(
        &mut clawed,
        claw_back(2, "refund:2", &["capture:1"], 10_000),
    );
    assert_eq!(refund.amount, -1_000);
    GivenPayee::with(())
        .given(clawed.clone())
        .when(correct(3, 1, -1, Rules::SIXTH))
        .then_expect_error(exceeds(1, 0));
    let failed = accrue(
        &mut clawed,
        PayeeCommand::ReverseClawBack {
            line_id: line_id(3),
            clawback_source: "refund:2".into(),
            source: "refund_failed:2".into(),
            rules: Rules::SIXTH,
            at: day(21),
        },
    );
    assert_eq!(failed.amount, 1_000);
    // A clawback and its reversal are not corrected by an adjustment
    // (their refund's failure, or a correction of the commission, is);
    // nor is a refused line, which has nothing to correct.
    for line in [2, 3] {
        GivenPayee::with(())
            .given(clawed.clone())
            .when(correct(4, line, 1, Rules::SIXTH))
            .then_expect_error(CompensationError::NotCorrectable {
                line_id: line_id(line),
            });
    }
    let refused = accrue(&mut clawed, claw_back(4, "dispute:4", &["capture:9"], 1));
    assert_eq!(refused.status, LineStatus::Refused);
    GivenPayee::with(())
        .given(clawed.clone())
        .when(correct(5, 4, 1, Rules::SIXTH))
        .then_expect_error(CompensationError::NotCorrectable {
            line_id: line_id(4),
        });
    let corrected = accrue(&mut clawed, correct(5, 1, -1_000, Rules::SIXTH));
    assert_eq!(
        corrected.cap_shares,
        vec![super::ledger::CapShare {
            period: "2026-12".into(),
            amount: -1_000
        }]
    );
    // Under the fifth rules a clawback was corrected like any line.
    assert_eq!(
        decide(&state(clawed), correct(6, 2, 5_000, Rules::FIFTH)).len(),
        1
    );
}

#[test]
fn since_the_sixth_rules_a_commissions_corrections_count_in_its_months_cap() {
    use crate::rules::Rules;
    // The cap is 500,000 a month: a commission of 500,000 uses all of it.
    let mut history = vec![created(), assigned()];
    let first = accrue(
        &mut history,
        commission_at(1, "capture:1", 5_000_000, day(2)),
    );
    assert_eq!(first.amount, 500_000);
    // Corrected down by 200,000: a later commission that month has room
    // for 200,000 again. Under the fifth rules it had none.
    let mut fifth = history.clone();
    accrue(&mut fifth, correct(2, 1, -200_000, Rules::FIFTH));
    accrue(&mut history, correct(2, 1, -200_000, Rules::SIXTH));
    let second = |history: &mut Vec<PayeeEvent>| {
        let line = accrue(history, commission_at(3, "capture:3", 5_000_000, day(3)));
        (line.amount, line.capped.value())
    };
    assert_eq!(second(&mut fifth), (0, 500_000));
    assert_eq!(second(&mut history), (200_000, 300_000));
    // Corrected up past the cap, it takes the month's room: a full refund
    // of the first capture then frees what it claws back (700,000), no
    // more room than the cap leaves.
    let mut upward = vec![created(), assigned()];
    accrue(
        &mut upward,
        commission_at(1, "capture:1", 5_000_000, day(2)),
    );
    accrue(&mut upward, correct(2, 1, 500_000, Rules::SIXTH));
    let refund = accrue(
        &mut upward,
        claw_back(3, "refund:3", &["capture:1"], 5_000_000),
    );
    assert_eq!(refund.amount, -1_000_000);
    let payee = state(upward.clone());
    assert_eq!(payee.cap_used.get("2026-12"), Some(&0));
    let next = accrue(
        &mut upward,
        commission_at(4, "capture:4", 5_000_000, day(4)),
    );
    assert_eq!(next.amount, 500_000);
    let after = accrue(
        &mut upward,
        commission_at(5, "capture:5", 5_000_000, day(5)),
    );
    assert_eq!(after.amount, 0);
}

#[test]
fn a_correction_chain_that_loops_in_a_stored_history_ends() {
    use crate::rules::Rules;
    // No decision makes an adjustment correct itself; a rewritten history
    // may. Deciding on it still ends.
    let mut history = vec![created(), assigned()];
    accrue(&mut history, commission_at(1, "capture:1", 10_000, day(2)));
    let mut looped = Line::new(line_id(2), LineKind::Adjustment, -10, day(3), day(3));
    looped.corrects = Some(line_id(2));
    history.push(PayeeEvent::LineAccrued(Box::new(looped)));
    let clawback = accrue(
        &mut history,
        claw_back(3, "refund:3", &["capture:1"], 10_000),
    );
    assert_eq!(clawback.amount, -1_000);
    let next = accrue(&mut history, correct(4, 2, 1, Rules::SIXTH));
    assert_eq!((next.amount, next.corrects), (1, Some(line_id(2))));
}

#[test]
fn since_the_sixth_rules_clawbacks_see_the_corrections() {
    use crate::rules::Rules;
    let claw = |n: u128, source: &str, amount, rules| PayeeCommand::ClawBack {
        line_id: line_id(n),
        payment_id: "pay-1".into(),
        source: source.into(),
        captures: vec!["capture:1".into()],
        amount: cents(amount),
        rules,
        at: day(20),
    };
    // A commission of 1,000 corrected to nothing, then its sale lost
    // whole in a dispute: nothing is left to claw back. Before, -1,000
    // more: the payee docked twice.
    let mut zeroed = vec![created(), assigned()];
    accrue(&mut zeroed, commission_at(1, "capture:1", 10_000, day(2)));
    accrue(&mut zeroed, correct(2, 1, -1_000, Rules::SIXTH));
    let lost = |rules| {
        let line = accrue(&mut zeroed.clone(), claw(3, "dispute:3", 10_000, rules));
        (line.status, line.amount)
    };
    assert_eq!(lost(Rules::SIXTH), (LineStatus::Refused, 0));
    assert_eq!(lost(Rules::FIFTH), (LineStatus::Held, -1_000));
    // Corrected to 600: half refunded claws back half of 600, the rest
    // the other 300, and a third refund nothing.
    let mut lowered = vec![created(), assigned()];
    accrue(&mut lowered, commission_at(1, "capture:1", 10_000, day(2)));
    accrue(&mut lowered, correct(2, 1, -400, Rules::SIXTH));
    let under_fifth = accrue(
        &mut lowered.clone(),
        claw(3, "refund:3", 5_000, Rules::FIFTH),
    );
    assert_eq!(under_fifth.amount, -500);
    let half = accrue(&mut lowered, claw(3, "refund:3", 5_000, Rules::SIXTH));
    let rest = accrue(&mut lowered, claw(4, "refund:4", 5_000, Rules::SIXTH));
    let more = accrue(&mut lowered, claw(5, "refund:5", 1, Rules::SIXTH));
    assert_eq!(
        (half.amount, rest.amount, more.status),
        (-300, -300, LineStatus::Refused)
    );
    // A clawback of 1,000 corrected by +400 (under the fifth rules, which
    // let an adjustment correct a clawback): its refund failing under the
    // sixth gives back 600 (1,000 under the fifth), split over its months
    // as it was shared.
    let mut corrected = vec![created(), assigned()];
    accrue(
        &mut corrected,
        commission_at(1, "capture:1", 10_000, day(2)),
    );
    let clawback = accrue(&mut corrected, claw(2, "refund:2", 10_000, Rules::SIXTH));
    assert_eq!(clawback.amount, -1_000);
    accrue(&mut corrected, correct(3, 2, 400, Rules::FIFTH));
    let failed = |rules| PayeeCommand::ReverseClawBack {
        line_id: line_id(4),
        clawback_source: "refund:2".into(),
        source: "refund_failed:2".into(),
        rules,
        at: day(21),
    };
    let given = accrue(&mut corrected.clone(), failed(Rules::SIXTH));
    assert_eq!(
        (given.amount, given.corrects, given.cap_shares.clone()),
        (
            600,
            Some(line_id(2)),
            vec![super::ledger::CapShare {
                period: "2026-12".into(),
                amount: 600
            }]
        )
    );
    assert_eq!(
        accrue(&mut corrected.clone(), failed(Rules::FIFTH)).amount,
        1_000
    );
    // Corrected further down, by -500: it gives back 1,500.
    let mut deeper = corrected.clone();
    deeper.pop();
    accrue(&mut deeper, correct(5, 2, -500, Rules::FIFTH));
    let whole = accrue(&mut deeper, failed(Rules::SIXTH));
    assert_eq!(
        (whole.amount, whole.capped.value(), whole.cap_shares.len()),
        (1_500, 0, 1)
    );
    // Corrected to nothing: it gives back nothing, a refused line naming it.
    accrue(&mut corrected, correct(5, 2, 600, Rules::FIFTH));
    let nothing = accrue(&mut corrected, failed(Rules::SIXTH));
    assert_eq!(
        (nothing.status, nothing.amount, nothing.corrects),
        (LineStatus::Refused, 0, Some(line_id(2)))
    );
}

#[test]
fn since_the_sixth_rules_a_commission_is_corrected_down_within_what_its_clawbacks_left() {
    use crate::rules::Rules;
    // A and B earn 1,000 each on two captures of one tender. A's capture
    // is lost whole (-1,000), then a refund of the tender claws -200.
    let mut history = vec![created(), assigned()];
    accrue(&mut history, commission_at(1, "capture:1", 10_000, day(2)));
    accrue(&mut history, commission_at(2, "capture:2", 10_000, day(2)));
    let lost = accrue(
        &mut history,
        claw_back(3, "dispute:3", &["capture:1"], 10_000),
    );
    let refund = accrue(
        &mut history,
        claw_back(4, "refund:4", &["capture:1", "capture:2"], 2_000),
    );
    assert_eq!((lost.amount, refund.amount), (-1_000, -200));
    // A clawback of several captures counts whole against each: A has
    // -200 left, B 800, and both together 800.
    GivenPayee::with(())
        .given(history.clone())
        .when(correct(5, 1, -1, Rules::SIXTH))
        .then_expect_error(CompensationError::CorrectionExceedsLine {
            line_id: line_id(1),
            left: -200,
        });
    GivenPayee::with(())
        .given(history.clone())
        .when(correct(5, 2, -801, Rules::SIXTH))
        .then_expect_error(CompensationError::CorrectionExceedsLine {
            line_id: line_id(2),
            left: 800,
        });
    // Up is not bounded, however little is left.
    assert_eq!(
        accrue(&mut history.clone(), correct(5, 1, 50, Rules::SIXTH)).amount,
        50
    );
    assert_eq!(
        accrue(&mut history, correct(5, 2, -800, Rules::SIXTH)).amount,
        -800
    );
    // Corrected first, the refund claws back its share of the two as
    // corrected (120 of 1,200), which counts whole against B: 80 left.
    let mut first = vec![created(), assigned()];
    accrue(&mut first, commission_at(1, "capture:1", 10_000, day(2)));
    accrue(&mut first, commission_at(2, "capture:2", 10_000, day(2)));
    accrue(&mut first, correct(5, 2, -800, Rules::SIXTH));
    let refund = accrue(
        &mut first,
        claw_back(4, "refund:4", &["capture:1", "capture:2"], 2_000),
    );
    assert_eq!(refund.amount, -120);
    GivenPayee::with(())
        .given(first)
        .when(correct(6, 2, -81, Rules::SIXTH))
        .then_expect_error(CompensationError::CorrectionExceedsLine {
            line_id: line_id(2),
            left: 80,
        });
}

#[test]
fn since_the_sixth_rules_a_correction_down_frees_no_more_cap_than_its_commission_counts_for() {
    use crate::rules::Rules;
    // 100,000 and 400,000 fill the month's cap of 500,000; the first is
    // corrected up by 50,000 under the fifth rules, which counted no
    // correction in the cap.
    let mut history = vec![created(), assigned()];
    accrue(
        &mut history,
        commission_at(1, "capture:1", 1_000_000, day(2)),
    );
    accrue(
        &mut history,
        commission_at(2, "capture:2", 4_000_000, day(2)),
    );
    accrue(&mut history, correct(3, 1, 50_000, Rules::FIFTH));
    // Corrected down to nothing under the sixth: it frees the 100,000 it
    // counted for.
    let down = accrue(&mut history, correct(4, 1, -150_000, Rules::SIXTH));
    assert_eq!(
        down.cap_shares,
        vec![super::ledger::CapShare {
            period: "2026-12".into(),
            amount: -100_000
        }]
    );
    let next = accrue(
        &mut history,
        commission_at(5, "capture:5", 5_000_000, day(3)),
    );
    assert_eq!((next.amount, next.capped.value()), (100_000, 400_000));
}

#[test]
fn since_the_sixth_rules_a_correction_down_first_takes_off_what_never_counted_in_the_cap() {
    use crate::rules::Rules;
    // 500,000 fills the month's cap; the fifth rules correct it up by
    // 100,000, paid but counted in no cap.
    let mut history = vec![created(), assigned()];
    accrue(
        &mut history,
        commission_at(1, "capture:1", 5_000_000, day(2)),
    );
    accrue(&mut history, correct(2, 1, 100_000, Rules::FIFTH));
    // Down by 100,000 under the sixth: that comes off the part outside
    // the cap, which frees nothing.
    let down = accrue(&mut history, correct(3, 1, -100_000, Rules::SIXTH));
    assert_eq!(down.cap_shares, vec![]);
    let next = accrue(
        &mut history,
        commission_at(4, "capture:4", 1_000_000, day(3)),
    );
    assert_eq!((next.amount, next.capped.value()), (0, 100_000));
    // Down by 200,000 more: now it frees 200,000.
    let more = accrue(&mut history, correct(5, 1, -200_000, Rules::SIXTH));
    assert_eq!(
        more.cap_shares,
        vec![super::ledger::CapShare {
            period: "2026-12".into(),
            amount: -200_000
        }]
    );
}

#[test]
fn since_the_tenth_rules_a_correction_of_a_held_line_is_held_with_it() {
    use crate::rules::Rules;
    // A commission held until day 16, corrected on day 4.
    let mut history = vec![created(), assigned()];
    history.extend(decide(
        &state(history.clone()),
        commission(1, 10_000, 2, Some(in_effect(1, 1, 2_500))),
    ));
    let held = |events: &[PayeeEvent]| {
        let line = accrued(events);
        (line.amount, line.status, line.payable_at)
    };
    let tenth = decide(&state(history.clone()), correct(2, 1, 400, Rules::TENTH));
    assert_eq!(held(&tenth), (400, LineStatus::Held, Some(day(16))));
    let ninth = decide(&state(history.clone()), correct(2, 1, 400, Rules::NINTH));
    assert_eq!(held(&ninth), (400, LineStatus::Accrued, Some(day(4))));
    // A correction of a payable line is payable at once under either.
    history.push(PayeeEvent::LinePayable {
        line_id: line_id(1),
        at: day(16),
    });
    let later = decide(&state(history.clone()), correct(3, 1, -100, Rules::TENTH));
    assert_eq!(held(&later), (-100, LineStatus::Accrued, Some(day(4))));
    // Held, it is made payable once the corrected line's period is over.
    history.extend(tenth);
    GivenPayee::with(())
        .given(history.clone())
        .when(PayeeCommand::MakePayable {
            line_id: line_id(2),
            at: day(15),
        })
        .then_expect_error(CompensationError::StillHeld {
            payable_at: day(16),
        });
    GivenPayee::with(())
        .given(history)
        .when(PayeeCommand::MakePayable {
            line_id: line_id(2),
            at: day(16),
        })
        .then_expect_events(vec![PayeeEvent::LinePayable {
            line_id: line_id(2),
            at: day(16),
        }]);
}
