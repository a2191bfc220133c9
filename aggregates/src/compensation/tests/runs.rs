//! Pay runs: claiming payable lines once, reopening, paying a positive
//! net and carrying a negative one; the run's own transitions; and a
//! property over random sequences of work, adjustments and runs.

use super::*;

fn adjusted(n: u128, amount: i64, at: u32) -> PayeeEvent {
    let mut line = Line::new(line_id(n), LineKind::Adjustment, amount, day(at), day(at));
    line.payable_at = Some(day(at));
    PayeeEvent::LineAccrued(Box::new(line))
}

fn claim(run: u128, cutoff: u32) -> PayeeCommand {
    PayeeCommand::Claim {
        run_id: run_id(run),
        cutoff: day(cutoff),
        rules: crate::rules::Rules::CURRENT,
        at: day(cutoff),
    }
}

#[test]
fn a_run_claims_payable_lines_up_to_its_cutoff_once() {
    let mut history = vec![
        created(),
        assigned(),
        adjusted(1, 500, 2),
        adjusted(2, 700, 9),
    ];
    let mut held = Line::new(line_id(3), LineKind::Commission, 100, day(2), day(2));
    held.status = LineStatus::Held;
    history.push(PayeeEvent::LineAccrued(Box::new(held)));
    let claimed = decide(&state(history.clone()), claim(1, 5));
    assert_eq!(
        claimed,
        vec![PayeeEvent::LinesClaimed {
            run_id: run_id(1),
            lines: vec![line_id(1)],
            gross: 500,
            carried_in: 0,
            at: day(5),
        }]
    );
    history.extend(claimed);
    // Another run finds only what the first did not claim (under the
    // ninth rules: since the tenth it waits for the first to be paid).
    let mut under_ninth = claim(2, 10);
    if let PayeeCommand::Claim { rules, .. } = &mut under_ninth {
        *rules = crate::rules::Rules::NINTH;
    }
    let second = decide(&state(history.clone()), under_ninth);
    assert!(
        matches!(&second[..], [PayeeEvent::LinesClaimed { lines, gross: 700, .. }] if lines == &vec![line_id(2)])
    );
    GivenPayee::with(())
        .given(history.clone())
        .when(claim(1, 10))
        .then_expect_error(CompensationError::Exists);
    // Nothing payable: nothing claimed.
    assert!(decide(&state(vec![created()]), claim(1, 5)).is_empty());
    // Released (reopened), the lines are payable again.
    history.push(PayeeEvent::LinesReleased {
        run_id: run_id(1),
        at: day(6),
    });
    let payee = state(history);
    assert_eq!(payee.line(line_id(1)).unwrap().status, LineStatus::Accrued);
    assert_eq!(payee.unpaid_payable().unwrap(), 1_200);
}

#[test]
fn a_negative_net_pays_nothing_and_is_recovered_first_next_time() {
    let mut history = vec![created(), assigned(), adjusted(1, -800, 2)];
    history.extend(decide(&state(history.clone()), claim(1, 5)));
    let paid = decide(
        &state(history.clone()),
        PayeeCommand::Pay {
            run_id: run_id(1),
            at: day(6),
        },
    );
    assert_eq!(
        paid,
        vec![PayeeEvent::RunPaid {
            run_id: run_id(1),
            paid: Amount::ZERO,
            carried_out: -800,
            at: day(6),
        }]
    );
    history.extend(paid);
    assert_eq!(state(history.clone()).carried, -800);
    GivenPayee::with(())
        .given(history.clone())
        .when(PayeeCommand::Pay {
            run_id: run_id(1),
            at: day(7),
        })
        .then_expect_error(CompensationError::PayRunPaid);
    GivenPayee::with(())
        .given(history.clone())
        .when(PayeeCommand::Release {
            run_id: run_id(1),
            at: day(7),
        })
        .then_expect_error(CompensationError::PayRunPaid);
    history.push(adjusted(2, 3_000, 8));
    history.extend(decide(&state(history.clone()), claim(2, 10)));
    assert_eq!(state(history.clone()).carried, 0);
    let paid = decide(
        &state(history.clone()),
        PayeeCommand::Pay {
            run_id: run_id(2),
            at: day(11),
        },
    );
    assert!(
        matches!(&paid[..], [PayeeEvent::RunPaid { paid, carried_out: 0, .. }] if *paid == cents(2_200))
    );
    history.extend(paid);
    let payee = state(history);
    assert_eq!(payee.line(line_id(1)).unwrap().status, LineStatus::Paid);
    assert_eq!(payee.line(line_id(2)).unwrap().run, Some(run_id(2)));
    GivenPayee::with(())
        .given(vec![created()])
        .when(PayeeCommand::Pay {
            run_id: run_id(3),
            at: day(7),
        })
        .then_expect_error(CompensationError::NotInRun(run_id(3)));
}

#[test]
fn a_runs_cutoff_lies_within_its_period_and_not_after_it_is_created_since_the_eleventh_rules() {
    use crate::decide::Rejection;
    use crate::rules::Rules;
    let terms = |period_start: u32, period_end: u32, cutoff: u32| RunTerms {
        period_start: day(period_start),
        period_end: day(period_end),
        cutoff: day(cutoff),
    };
    let create = |terms: RunTerms, rules: Rules, at: u32| {
        TestFramework::<PayRun>::with(())
            .given_no_previous_events()
            .when(PayRunCommand::Create {
                terms,
                rules,
                at: day(at),
            })
    };
    // Within the period, at either end, by the time it is created: taken.
    for (cutoff, at) in [(2, 2), (10, 12), (15, 15), (15, 20)] {
        create(terms(2, 15, cutoff), Rules::ELEVENTH, at).then_expect_events(vec![
            PayRunEvent::RunCreated {
                terms: terms(2, 15, cutoff),
                at: day(at),
            },
        ]);
    }
    // Past the period's end, or before its start.
    for cutoff in [16, 1] {
        let outside = CompensationError::CutoffOutsidePeriod {
            cutoff: day(cutoff),
            period_start: day(2),
            period_end: day(15),
        };
        create(terms(2, 15, cutoff), Rules::ELEVENTH, 20).then_expect_error(outside.clone());
        assert_eq!(outside.code(), "cutoff_outside_period");
    }
    // After the run is created.
    let future = CompensationError::CutoffInFuture {
        cutoff: day(15),
        at: day(10),
    };
    assert_eq!(
        (future.code(), future.details()),
        (
            "cutoff_in_future",
            serde_json::json!({"cutoff": day(15), "at": day(10)})
        )
    );
    create(terms(2, 15, 15), Rules::ELEVENTH, 10).then_expect_error(future);
    // Under rules 10 each of them was taken.
    for (cutoff, at) in [(16, 20), (1, 20), (15, 10)] {
        create(terms(2, 15, cutoff), Rules::TENTH, at).then_expect_events(vec![
            PayRunEvent::RunCreated {
                terms: terms(2, 15, cutoff),
                at: day(at),
            },
        ]);
    }
}

#[test]
fn a_run_is_approved_then_paid_and_reopens_only_before() {
    let terms = RunTerms {
        period_start: day(1),
        period_end: day(15),
        cutoff: day(15),
    };
    let created = PayRunEvent::RunCreated {
        terms: terms.clone(),
        at: day(15),
    };
    let given = |events: Vec<PayRunEvent>, command, result: Result<Vec<PayRunEvent>, _>| {
        let framework = TestFramework::<PayRun>::with(())
            .given(events)
            .when(command);
        match result {
            Ok(events) => framework.then_expect_events(events),
            Err(error) => framework.then_expect_error(error),
        }
    };
    let mut backwards = terms.clone();
    backwards.period_end = day(1);
    given(
        Vec::new(),
        PayRunCommand::Create {
            terms: backwards,
            rules: crate::rules::Rules::CURRENT,
            at: day(1),
        },
        Err(CompensationError::InvalidPeriod),
    );
    given(
        vec![created.clone()],
        PayRunCommand::Pay {
            paid: Vec::new(),
            at: day(16),
        },
        Err(CompensationError::PayRunNotApproved),
    );
    let approved = PayRunEvent::RunApproved { at: day(16) };
    given(
        vec![created.clone(), approved.clone()],
        PayRunCommand::Approve { at: day(16) },
        Err(CompensationError::PayRunApproved),
    );
    given(
        vec![created.clone(), approved.clone()],
        PayRunCommand::Reopen { at: day(17) },
        Ok(vec![PayRunEvent::RunReopened { at: day(17) }]),
    );
    let paid = PayRunEvent::RunPaid {
        paid: Vec::new(),
        at: day(17),
    };
    given(
        vec![created.clone(), approved, paid],
        PayRunCommand::Reopen { at: day(18) },
        Err(CompensationError::PayRunPaid),
    );
    given(
        Vec::new(),
        PayRunCommand::Approve { at: day(16) },
        Err(CompensationError::UnknownPayRun),
    );
}

/// A seeded sequence (xorshift).
struct Sequence(u64);

impl Sequence {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// For any sequence of work, adjustments, runs claimed, reopened and paid:
/// paid + carried + unpaid payable = the sum of the lines, and no line is
/// paid twice.
#[test]
fn paid_plus_carried_plus_unpaid_is_every_line_and_no_line_is_paid_twice() {
    for seed in 1..=200_u64 {
        let mut sequence = Sequence(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut payee = state(vec![created(), assigned()]);
        let mut open_run: Option<PayRunId> = None;
        let mut paid_lines = std::collections::BTreeSet::new();
        let mut paid_total = 0i64;
        for step in 0..60u128 {
            let at = day(2 + (step / 4) as u32 % 26);
            let command = match (sequence.below(6), open_run) {
                (0 | 1, _) => PayeeCommand::RecordWork {
                    line_id: line_id(1_000 + step),
                    work: Work::Time {
                        minutes: 1 + sequence.below(600) as u32,
                    },
                    worked_at: at,
                    reference: None,
                    plan: Some(in_effect(1, 1, 2_501)),
                    rules: crate::rules::Rules::CURRENT,
                    at,
                },
                (2, _) => PayeeCommand::Adjust {
                    line_id: line_id(1_000 + step),
                    amount: sequence.below(20_000) as i64 - 12_000,
                    reason: None,
                    corrects: None,
                    rules: crate::rules::Rules::CURRENT,
                    at,
                },
                (3, None) => PayeeCommand::Claim {
                    run_id: run_id(step),
                    cutoff: at,
                    rules: crate::rules::Rules::CURRENT,
                    at,
                },
                (3 | 4, Some(run)) => PayeeCommand::Pay { run_id: run, at },
                (_, Some(run)) => PayeeCommand::Release { run_id: run, at },
                (_, None) => continue,
            };
            let Ok(events) = crate::decide::Decide::decide(&payee, command) else {
                continue;
            };
            for event in events {
                match &event {
                    PayeeEvent::LinesClaimed { run_id, .. } => open_run = Some(*run_id),
                    PayeeEvent::LinesReleased { .. } => open_run = None,
                    PayeeEvent::RunPaid { run_id, paid, .. } => {
                        for line in &payee.runs[run_id].lines {
                            assert!(paid_lines.insert(*line), "seed {seed}: {line} paid twice");
                        }
                        paid_total += paid.value();
                        open_run = None;
                    }
                    _ => {}
                }
                cqrs_es::Aggregate::apply(&mut payee, event);
            }
            let lines = payee.sum(|_| true).unwrap();
            let in_flight = payee.sum(|line| line.status == LineStatus::InRun).unwrap()
                + open_run.map_or(0, |run| payee.runs[&run].carried_in);
            let unpaid = payee.unpaid_payable().unwrap();
            assert!(payee.carried <= 0, "seed {seed}");
            assert_eq!(
                paid_total + payee.carried + unpaid + in_flight,
                lines,
                "seed {seed} step {step}"
            );
        }
    }
}

#[test]
fn since_the_tenth_rules_a_payees_runs_are_paid_in_turn() {
    use crate::rules::Rules;
    let claim_under = |run: u128, rules: Rules| PayeeCommand::Claim {
        run_id: run_id(run),
        cutoff: day(10),
        rules,
        at: day(10),
    };
    let pay = |run: u128| PayeeCommand::Pay {
        run_id: run_id(run),
        at: day(11),
    };
    // A run paid -4,000 carried out; run 1 takes it in with 1,000 of work.
    let mut history = vec![created(), assigned(), adjusted(1, -4_000, 1)];
    history.extend(decide(&state(history.clone()), claim(9, 1)));
    history.extend(decide(&state(history.clone()), pay(9)));
    history.push(adjusted(2, 1_000, 2));
    history.extend(decide(
        &state(history.clone()),
        claim_under(1, Rules::TENTH),
    ));
    assert_eq!(state(history.clone()).carried, 0);
    assert_eq!(state(history.clone()).unrecovered(), Ok(-4_000));
    // 5,000 more: run 2 leaves the payee out while run 1 is unpaid (under
    // the ninth rules it claimed the 5,000 with nothing carried in).
    history.push(adjusted(3, 5_000, 3));
    assert!(decide(&state(history.clone()), claim_under(2, Rules::TENTH)).is_empty());
    assert!(matches!(
        &decide(&state(history.clone()), claim_under(2, Rules::NINTH))[..],
        [PayeeEvent::LinesClaimed {
            gross: 5_000,
            carried_in: 0,
            ..
        }]
    ));
    // Run 1 paid carries -3,000 out; the next run recovers it from the
    // 5,000.
    history.extend(decide(&state(history.clone()), pay(1)));
    assert_eq!(state(history.clone()).unrecovered(), Ok(-3_000));
    let claimed = decide(&state(history.clone()), claim_under(3, Rules::TENTH));
    assert!(matches!(
        &claimed[..],
        [PayeeEvent::LinesClaimed {
            gross: 5_000,
            carried_in: -3_000,
            ..
        }]
    ));
    history.extend(claimed);
    assert!(matches!(
        &decide(&state(history), pay(3))[..],
        [PayeeEvent::RunPaid { paid, carried_out: 0, .. }] if *paid == cents(2_000)
    ));
}

#[test]
fn a_run_is_canceled_once_before_payment_and_nothing_follows() {
    let terms = RunTerms {
        period_start: day(1),
        period_end: day(15),
        cutoff: day(15),
    };
    let created = PayRunEvent::RunCreated { terms, at: day(15) };
    let share = RunPayee {
        payee_id: "alice".into(),
        asset: usd(),
        lines: vec![line_id(1)],
        gross: 500,
        carried_in: 0,
        net: 500,
        paid: None,
        carried_out: None,
    };
    let approved = PayRunEvent::RunApproved { at: day(16) };
    let canceled = PayRunEvent::RunCanceled { at: day(17) };
    let cancel = PayRunCommand::Cancel { at: day(17) };
    // A draft and an approved run are canceled.
    for history in [
        vec![created.clone(), PayRunEvent::PayeeIncluded(share.clone())],
        vec![
            created.clone(),
            PayRunEvent::PayeeIncluded(share.clone()),
            approved.clone(),
        ],
    ] {
        TestFramework::<PayRun>::with(())
            .given(history)
            .when(cancel.clone())
            .then_expect_events(vec![canceled.clone()]);
    }
    let mut run = PayRun::default();
    for event in [
        created.clone(),
        PayRunEvent::PayeeIncluded(share),
        approved.clone(),
        canceled.clone(),
    ] {
        cqrs_es::Aggregate::apply(&mut run, event);
    }
    assert_eq!(
        (
            run.status,
            run.payees.len(),
            run.approved_at,
            run.canceled_at
        ),
        (Some(RunStatus::Canceled), 0, None, Some(day(17)))
    );
    // Canceled: nothing more, a cancel included.
    let after = vec![created.clone(), canceled];
    for command in [
        PayRunCommand::Approve { at: day(18) },
        PayRunCommand::Reopen { at: day(18) },
        PayRunCommand::Pay {
            paid: Vec::new(),
            at: day(18),
        },
        cancel.clone(),
    ] {
        TestFramework::<PayRun>::with(())
            .given(after.clone())
            .when(command)
            .then_expect_error(CompensationError::PayRunCanceled);
    }
    // Paid: not canceled.
    TestFramework::<PayRun>::with(())
        .given(vec![
            created,
            approved,
            PayRunEvent::RunPaid {
                paid: Vec::new(),
                at: day(17),
            },
        ])
        .when(cancel)
        .then_expect_error(CompensationError::PayRunPaid);
}
